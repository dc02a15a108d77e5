#!/usr/bin/perl

# Purge scopes through a real nginx with two workers and a file-backed cache:
# every scope and request form removes what it should and nothing else, and
# once the receipt is back no worker serves the purged bytes (DESIGN.md,
# invariants 1 and 4).
#
# The origin's body carries a version read from a file at request time, so
# "old" (cached before the purge) and "new" bytes are told apart.

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Test::Nginx;
use Test::Pagespeed qw/versioned_route vget json_of status_json/;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(132);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    # The origin here sends no explicit freshness; the default reuses such responses only
    # under heuristic freshness (RFC 9111 4.2.2), so these tests give them a lifetime.
    pagespeed_cache_valid 10m;
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=8m;

    server {
        # reuseport spreads new connections over both workers by 4-tuple.
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        add_header X-Worker $pid always;
        add_header X-Cache-Status $pagespeed_cache_status always;

        location / {
            pagespeed_cache on;
            pagespeed_purge_method PURGE;
            proxy_pass http://127.0.0.1:8081;
        }
        location = /purge { pagespeed_purge; }
        location = /status { pagespeed_status; }
    }
}
EOF

my $version = 0;

sub set_version { $version = Test::Pagespeed::set_version(shift) }

# Response tags by path: Surrogate-Key is space separated, Cache-Tag comma
# separated; a path (or absolute URL) as a tag declares a dependency.
my %TAGS = (
    '/sk/1' => ['Surrogate-Key' => 'ka kb'],
    '/sk/2' => ['Surrogate-Key' => 'kc'],
    '/ct/1' => ['Cache-Tag' => 'ca, cb'],
    '/ct/2' => ['Cache-Tag' => 'cc'],
    '/page.html' => ['Cache-Tag' => 'home, /css/site.css'],
    '/page2.html' => ['Cache-Tag' => 'http://localhost/css/site.css'],
    '/other.html' => ['Cache-Tag' => '/css/other.css'],
);

start_origin(port => 8081, routes => {
    '*' => versioned_route(headers => sub { @{$TAGS{$_[0]{path}} // []} }) });

set_version(1);
$t->run();

###############################################################################

sub get { vget(@_) }

our $gen;
sub purge {
    my ($body) = @_;
    # A revalidation that found changed bytes advanced the clock too (it replaces the entry
    # as a URL purge would): each purge is the next value after what the status says now.
    $gen = status()->{purge_clock} // $gen;
    my $r = parse_response(http_post('/purge', $body,
        headers => { 'Content-Type' => 'application/json' }));
    return ($r // {}, json_of($r) // {});
}

sub status { status_json() }

# Fills $uri (MISS then HIT) with the current origin version.
sub cached {
    my ($uri) = @_;
    my $a = get($uri);
    my $b = get($uri);
    return $a->{xc} eq 'MISS' && $b->{xc} eq 'HIT' && $b->{ver} == $version;
}

# A cached entry still served from the cache, with the bytes of $v.
sub still_hit {
    my ($uri, $v) = @_;
    my $r = get($uri);
    my $ok = $r->{xc} eq 'HIT' && $r->{ver} == $v;
    diag("$uri: $r->{xc} v=$r->{ver}, wanted HIT v=$v") unless $ok;
    return $ok;
}

# After a purge: ~20 requests on new connections (both workers, by
# reuseport) all get the current version; none is a HIT with old bytes.
# The first one refills, so exactly one MISS is expected.
sub all_new {
    my ($uri) = @_;
    my (%workers, @bad, $misses);
    for (1 .. 20) {
        my $r = get($uri);
        $workers{$r->{headers}{'x-worker'} // '?'}++;
        $misses++ if $r->{xc} eq 'MISS';
        push @bad, "$r->{xc} v=$r->{ver}" if $r->{ver} != $version;
    }
    diag("$uri: old bytes served: @bad") if @bad;
    diag("$uri: only one worker answered") if keys %workers < 2;
    return !@bad && ($misses // 0) == 1 && keys %workers == 2;
}

$gen = status()->{purge_clock};
is($gen, 0, 'fresh cache: purge clock 0');

sub next_gen {
    my ($j) = @_;
    my $ok = defined $j->{generation} && $j->{generation} == $gen + 1;
    $gen = $j->{generation} if defined $j->{generation};
    return $ok;
}

###############################################################################
# URL, path + hostname: both schemes

ok(cached($_), "$_ cached") for qw(/u/a /u/b /u/c /u/d /u/e);
set_version(2);

my ($r, $j) = purge('{"url": "/u/a", "hostname": "localhost"}');
is($r->{status}, 200, 'url purge: 200');
like($r->{headers}{'content-type'} // '', qr{^application/json}, 'JSON');
is($j->{scope}, 'url', 'receipt scope url');
is_deeply($j->{urls}, ['http://localhost/u/a', 'https://localhost/u/a'],
    'receipt lists both schemes');
is($j->{deleted}, 1, 'one alternate deleted');
ok(next_gen($j), 'generation +1');
ok(all_new('/u/a'), 'purged url: new bytes from both workers');
ok(still_hit('/u/b', 1), 'other url untouched');

# Absolute https URL: only https, so the plain http entry stays.
($r, $j) = purge('{"url": "https://localhost/u/b"}');
is_deeply($j->{urls}, ['https://localhost/u/b'], 'absolute https: one scheme');
is($j->{deleted}, 0, 'nothing deleted over https');
ok(next_gen($j), 'generation +1');
ok(still_hit('/u/b', 1), 'http entry not purged by an https purge');

# No port in the URL: deleted under the purge request's own listener (and port 80).
($r, $j) = purge('{"url": "http://LOCALHOST./u/b"}');
is_deeply($j->{urls}, ['http://localhost/u/b'], 'absolute http, host normalized');
is($j->{deleted}, 1, 'http entry deleted');
ok(next_gen($j), 'generation +1');
ok(all_new('/u/b'), 'absolute http purge: new bytes');

# No hostname: the purge request's own Host.
($r, $j) = purge('{"url": "/u/c"}');
is_deeply($j->{urls}, ['http://localhost/u/c', 'https://localhost/u/c'],
    'default host is the request host');
ok(next_gen($j), 'generation +1');
ok(all_new('/u/c'), 'default-host purge: new bytes');

# Several URLs at once.
($r, $j) = purge('{"urls": ["/u/d", "http://localhost/u/e"]}');
is($r->{status}, 200, 'urls list: 200');
is(scalar @{$j->{urls} // []}, 3, 'urls list: 3 URLs in the receipt');
is($j->{deleted}, 2, 'urls list: both deleted');
ok(next_gen($j), 'generation +1');
ok(all_new('/u/d'), 'urls list: first purged');
ok(all_new('/u/e'), 'urls list: second purged');

# A URL never cached: still a receipt and a new generation (invariant 4).
($r, $j) = purge('{"url": "/never/cached"}');
is($r->{status}, 200, 'uncached url: 200');
is($j->{deleted}, 0, 'uncached url: nothing deleted');
ok(next_gen($j), 'uncached url: generation +1');
is(status()->{purge_clock}, $gen, 'status purge_clock matches receipt');

###############################################################################
# prefix

ok(cached($_), "$_ cached") for qw(/img/a /img/sub/b /img/ab /css/c /imgx);
set_version(3);

($r, $j) = purge('{"url": "/img/*"}');
is($r->{status}, 200, 'prefix purge: 200');
is($j->{scope}, 'prefix', 'receipt scope prefix');
is_deeply($j->{prefixes},
    ['http://localhost/img/*', 'https://localhost/img/*'], 'receipt prefixes');
ok(next_gen($j), 'generation +1');
ok(all_new('/img/a'), 'prefix: /img/a purged');
ok(all_new('/img/sub/b'), 'prefix: /img/sub/b purged');
ok(all_new('/img/ab'), 'prefix: /img/ab purged');
ok(still_hit('/css/c', 2), 'prefix: /css/c untouched');
ok(still_hit('/imgx', 2), 'prefix: /imgx (no slash) untouched');

# A prefix that does not end at '/': covers at least what it names.
set_version(4);
($r, $j) = purge('{"url": "/img/a*"}');
is($j->{scope}, 'prefix', '/img/a*: prefix');
ok(next_gen($j), 'generation +1');
ok(all_new('/img/a'), '/img/a*: /img/a purged');
ok(all_new('/img/ab'), '/img/a*: /img/ab purged');
ok(still_hit('/css/c', 2), '/img/a*: /css/c untouched');

###############################################################################
# tags: Surrogate-Key (spaces) and Cache-Tag (commas)

ok(cached($_), "$_ cached") for qw(/sk/1 /sk/2 /ct/1 /ct/2);
my $vt = $version;
set_version(5);

($r, $j) = purge('{"tag": "kb"}');
is($r->{status}, 200, 'tag purge: 200');
is($j->{scope}, 'tag', 'receipt scope tag');
is_deeply($j->{tags}, ['kb'], 'receipt tags');
ok(next_gen($j), 'generation +1');
ok(all_new('/sk/1'), 'Surrogate-Key second key purges');
ok(still_hit('/sk/2', $vt), 'other surrogate key untouched');
ok(still_hit('/ct/1', $vt), 'cache-tag entry untouched by surrogate key');

($r, $j) = purge('{"tags": ["zz", "ca"]}');
is_deeply($j->{tags}, ['zz', 'ca'], 'tags list');
ok(next_gen($j), 'generation +1');
ok(all_new('/ct/1'), 'Cache-Tag first tag purges');
ok(still_hit('/ct/2', $vt), 'other cache tag untouched');
ok(still_hit('/sk/2', $vt), 'surrogate key untouched by cache tag');

# the second Cache-Tag value (after ", ") is a tag of its own too
set_version(6);
($r, $j) = purge('{"tag": "cb"}');
ok(next_gen($j), 'generation +1');
ok(all_new('/ct/1'), 'Cache-Tag second tag purges');

###############################################################################
# dependencies: purging a URL purges pages that declared it as a tag

ok(cached($_), "$_ cached")
    for qw(/css/site.css /page.html /page2.html /other.html /css/other.css);
my $vd = $version;
set_version(7);

($r, $j) = purge('{"url": "/css/site.css"}');
is($j->{scope}, 'url', 'dependency: url scope');
is($j->{deleted}, 1, 'dependency: only the URL itself deleted at once');
ok(next_gen($j), 'generation +1');
ok(all_new('/css/site.css'), 'dependency: the stylesheet purged');
ok(all_new('/page.html'), 'dependency: page tagged with its path purged');
ok(all_new('/page2.html'), 'dependency: page tagged with its URL purged');
ok(still_hit('/other.html', $vd), 'dependency: unrelated page untouched');
ok(still_hit('/css/other.css', $vd), 'dependency: other stylesheet untouched');

# a page nobody declared as a dependency is purged alone
set_version(8);
($r, $j) = purge('{"url": "/page.html"}');
ok(next_gen($j), 'generation +1');
ok(all_new('/page.html'), 'strict: page purged');
ok(still_hit('/css/site.css', 7), 'strict: its stylesheet stays');

# and the page's own tag purges it
set_version(9);
($r, $j) = purge('{"tag": "home"}');
ok(next_gen($j), 'generation +1');
ok(all_new('/page.html'), 'page tag purges');

###############################################################################
# PURGE method on the cached location

ok(cached($_), "$_ cached") for qw(/m/a /m/b /n/c);
my $vm = $version;
set_version(10);

$r = parse_response(http_req('PURGE', '/m/a'));
$j = json_of($r) // {};
is($r->{status}, 200, 'PURGE: 200');
is_deeply($j->{urls}, ['http://localhost/m/a', 'https://localhost/m/a'],
    'PURGE: both schemes');
is($j->{deleted}, 1, 'PURGE: deleted');
ok(next_gen($j), 'generation +1');
ok(all_new('/m/a'), 'PURGE: url purged');
ok(still_hit('/m/b', $vm), 'PURGE: sibling untouched');

$r = parse_response(http_req('PURGE', '/m/*'));
$j = json_of($r) // {};
is($j->{scope}, 'prefix', 'PURGE /m/*: prefix');
ok(next_gen($j), 'generation +1');
ok(all_new('/m/b'), 'PURGE prefix: purged');
ok(still_hit('/n/c', $vm), 'PURGE prefix: other dir untouched');
is($t->origin_hits('/m/a', method => 'PURGE'), 0, 'PURGE never reaches the origin');

###############################################################################
# soft purge: stale, never served as a HIT; the next request revalidates (the origin has
# other bytes here: EXPIRED, the new bytes stored), then fresh again

ok(cached($_), "$_ cached") for qw(/soft/a /soft/b);
set_version(11);

($r, $j) = purge('{"url": "/soft/a", "soft": true}');
is($r->{status}, 200, 'soft: 200');
ok($j->{soft}, 'soft: receipt says soft');
ok(next_gen($j), 'generation +1');
$r = get('/soft/a');
is($r->{xc}, 'MISS', 'soft: next request is not a HIT');
is($r->{headers}{'x-cache-status'}, 'EXPIRED', 'soft: revalidated, changed: EXPIRED');
is($r->{ver}, 11, 'soft: new bytes');
$r = get('/soft/a');
ok($r->{xc} eq 'HIT' && $r->{ver} == 11, 'soft: refilled entry is a HIT');
is($r->{headers}{'x-cache-status'}, 'HIT', 'soft: status HIT again');
ok(still_hit('/soft/b', 10), 'soft: other url untouched');

# soft prefix
set_version(12);
($r, $j) = purge('{"url": "/soft/*", "soft": true}');
ok(next_gen($j), 'generation +1');
$r = get('/soft/b');
ok($r->{xc} ne 'HIT' && $r->{ver} == 12, 'soft prefix: new bytes, not a HIT');
is($r->{headers}{'x-cache-status'}, 'EXPIRED', 'soft prefix: revalidated, changed: EXPIRED');
ok(all_new('/soft/a'), 'soft prefix: other url stale, refilled');

my $s = status();
is($s->{purges_soft}, 2, 'status counts soft purges');

###############################################################################
# full flush

ok(cached($_), "$_ cached") for qw(/f/a /f/b/c);
set_version(13);

($r, $j) = purge('{"scope": "all", "confirm": "purge-all"}');
is($r->{status}, 200, 'flush: 200');
is($j->{scope}, 'all', 'flush: scope all');
cmp_ok($j->{deleted}, '>=', 2, 'flush: deleted everything cached');
ok(next_gen($j), 'generation +1');
is(status()->{entries}, 0, 'flush: no entries left');
ok(all_new('/f/a'), 'flush: /f/a purged');
ok(all_new('/f/b/c'), 'flush: /f/b/c purged');
ok(all_new('/css/other.css'), 'flush: older entries purged');

$s = status();
is($s->{purge_clock}, $gen, 'final purge clock');
is($s->{purges_url} + $s->{purges_prefix} + $s->{purges_tag}
    + $s->{purges_all} + $s->{revalidated_changed}, $gen,
    'every purge (and every changed revalidation) counted once');
