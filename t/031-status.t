#!/usr/bin/perl

# pagespeed_status: JSON counters that move as the cache works, the same
# numbers in Prometheus text, ?url= inspection of one URL's alternates, and
# GET/HEAD only.

use strict;
use warnings;

use Test::More;
use JSON::PP qw/decode_json/;

use lib 't/lib';
use Test::Nginx;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(78);

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
        listen 127.0.0.1:8080;
        server_name localhost;

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

start_origin(port => 8081, routes => { '*' => sub {
    my ($r) = @_;
    my @h = ('Cache-Control' => 'max-age=3600');
    @h = ('Cache-Control' => 'no-store') if $r->{path} eq '/nostore';
    push @h, 'Surrogate-Key' => 'k1' if $r->{path} =~ m{^/t/};
    # /v: a gzip response for clients that take it, identity otherwise
    if ($r->{path} eq '/v' && ($r->{headers}{'accept-encoding'} // '') =~ /gzip/) {
        return (200, [@h, 'Content-Encoding' => 'gzip', 'Vary' => 'Accept-Encoding'],
            "gzipped-bytes-$r->{path}");
    }
    push @h, 'Vary' => 'Accept-Encoding' if $r->{path} eq '/v';
    return (200, \@h, "body of $r->{path}\n");
} });

$t->run();

###############################################################################

sub json_of { my ($r) = @_; $r && eval { decode_json($r->{body}) } }

sub status {
    my ($q) = @_;
    return json_of(parse_response(http_get('/status' . ($q // '')))) // {};
}

sub xcache {
    my ($uri, %o) = @_;
    my $r = parse_response(http_get($uri, %o)) // { headers => {} };
    return $r->{headers}{'x-cache'} // '';
}

sub purge {
    my ($body) = @_;
    return json_of(parse_response(http_post('/purge', $body,
        headers => { 'Content-Type' => 'application/json' }))) // {};
}

# Counters changed since $before, as { name => delta } for nonzero deltas.
sub moved {
    my ($before, $after) = @_;
    my %d;
    for (keys %$after) {
        my $d = ($after->{$_} // 0) - ($before->{$_} // 0);
        $d{$_} = $d if $d;
    }
    return \%d;
}

###############################################################################
# JSON

my $r = parse_response(http_get('/status'));
is($r->{status}, 200, 'status: 200');
like($r->{headers}{'content-type'} // '', qr{^application/json}, 'JSON');
is($r->{headers}{'cache-control'}, 'no-store', 'not cacheable');
my $s = json_of($r) // {};

my @counters = qw/hits stale_hits misses stored fenced rejected_reads
    checksum_failures evictions too_large replaced lock_recoveries
    corrupt_resets purges_url purges_prefix purges_tag purges_all purges_soft
    builds_started builds_done builds_declined builds_failed builds_dropped builds_fenced
    revalidations revalidated_unchanged revalidated_changed collapsed lock_timeouts
    stale_updating stale_on_error/;
my @gauges = qw/purge_clock entries alternates bytes_used bytes_capacity
    shards/;
is_deeply([grep { !exists $s->{$_} } @counters, @gauges, 'max_object'], [],
    'every field present');
is_deeply([grep { $s->{$_} } @counters, qw/purge_clock entries alternates
    bytes_used/], [], 'fresh cache: all counters zero');
ok($s->{bytes_capacity} > 0 && $s->{bytes_capacity} <= 8 << 20,
    'capacity within the 8m segment');
ok($s->{shards} >= 1 && $s->{max_object} > 0, 'shards, max_object');

# a miss that is stored, then a hit
my $pre = status();
is(xcache('/a'), 'MISS', '/a MISS');
my $post = status();
is_deeply([sort keys %{moved($pre, $post)}],
    [qw/alternates bytes_used entries misses stored/],
    'miss: misses, stored, entries, alternates, bytes_used moved');
is($post->{misses} - $pre->{misses}, 1, 'misses +1');
is($post->{stored} - $pre->{stored}, 1, 'stored +1');
is($post->{entries}, 1, 'one entry');
is($post->{alternates}, 1, 'one alternate');
cmp_ok($post->{bytes_used}, '>=', length "body of /a\n", 'bytes used');

$pre = $post;
is(xcache('/a'), 'HIT', '/a HIT');
$post = status();
is_deeply(moved($pre, $post), { hits => 1 }, 'hit: only hits +1');

# a response not stored: a miss, nothing stored
$pre = $post;
is(xcache('/nostore'), 'BYPASS', 'no-store: BYPASS');
$post = status();
is_deeply(moved($pre, $post), { misses => 1 }, 'no-store: a miss, not stored');

# POST bypasses the cache without a lookup, and a non-error answer invalidates its target
# (RFC 9111 4.4): a URL purge of /a, which deletes the entry at once
$pre = $post;
http_post('/a', 'x');
$post = status();
is_deeply(moved($pre, $post), { purges_url => 1, purge_clock => 1, entries => -1,
    alternates => -1, bytes_used => $post->{bytes_used} - $pre->{bytes_used} },
    'POST: no lookup, its target invalidated');

###############################################################################
# purge counters

xcache($_) for qw(/a /b /p/x /t/x /s/x);
$pre = status();
is($pre->{entries}, 5, 'five entries');

is(purge('{"url": "/a"}')->{generation}, 2, 'url purge');
$post = status();
is_deeply(moved($pre, $post), { purges_url => 1, purge_clock => 1, entries => -1,
    alternates => -1, bytes_used => $post->{bytes_used} - $pre->{bytes_used} },
    'url purge: purges_url, clock +1, entry deleted at once');
cmp_ok($post->{bytes_used}, '<', $pre->{bytes_used}, 'url purge frees bytes');

$pre = $post;
purge('{"url": "/p/*"}');
$post = status();
is_deeply(moved($pre, $post), { purges_prefix => 1, purge_clock => 1 },
    'prefix purge: purges_prefix, clock +1 (reclaimed lazily)');

# the lazily purged entry is found purged and dropped at its next lookup
$pre = $post;
is(xcache('/p/x'), 'MISS', 'prefix-purged entry: MISS');
$post = status();
is($post->{rejected_reads} - $pre->{rejected_reads}, 1, 'rejected_reads +1');
is($post->{misses} - $pre->{misses}, 1, 'and a miss');
is($post->{stored} - $pre->{stored}, 1, 'refilled');

$pre = $post;
purge('{"tags": ["k1", "k2"]}');
$post = status();
is_deeply(moved($pre, $post), { purges_tag => 1, purge_clock => 1 },
    'tag purge: purges_tag +1 (one purge, two tags)');

$pre = $post;
purge('{"url": "/s/x", "soft": true}');
$post = status();
is_deeply(moved($pre, $post), { purges_url => 1, purges_soft => 1,
    purge_clock => 1 }, 'soft url purge: purges_url and purges_soft');

$pre = $post;
is(xcache('/s/x'), 'REVALIDATED', 'soft-purged entry, origin unchanged: revalidated');
$post = status();
is($post->{stale_hits} - $pre->{stale_hits}, 1, 'stale_hits +1');
is($post->{revalidations} - $pre->{revalidations}, 1, 'revalidations +1');
is($post->{revalidated_unchanged} - $pre->{revalidated_unchanged}, 1,
    'revalidated_unchanged +1');
is($post->{hits} - $pre->{hits}, 1, 'then answered from the cache: a hit');

$pre = $post;
http_req('PURGE', '/b');
$post = status();
is($post->{purges_url} - $pre->{purges_url}, 1, 'PURGE method: purges_url +1');
is($post->{entries} - $pre->{entries}, -1, 'PURGE method: entry deleted');

$pre = $post;
purge('{"url": "/nothing"}');
$post = status();
is_deeply(moved($pre, $post), { purges_url => 1, purge_clock => 1 },
    'purging an uncached url: counted, clock +1');

$pre = $post;
purge('{"scope": "all", "confirm": "purge-all"}');
$post = status();
is($post->{purges_all} - $pre->{purges_all}, 1, 'flush: purges_all +1');
is($post->{purge_clock} - $pre->{purge_clock}, 1, 'flush: clock +1');
ok($post->{entries} == 0 && $post->{alternates} == 0 && $post->{bytes_used} == 0,
    'flush: empty');
is($post->{purge_clock}, 8, 'purge clock counts every purge (and the POST)');

$pre = $post;
purge('{"url": "/a*"}') for 1 .. 3;
is(status()->{purges_prefix} - $pre->{purges_prefix}, 3, 'repeated purges count');

###############################################################################
# Prometheus

xcache('/a');
xcache('/a');
$s = status();
$r = parse_response(http_get('/status?format=prometheus'));
is($r->{status}, 200, 'prometheus: 200');
like($r->{headers}{'content-type'} // '', qr{^text/plain; version=0\.0\.4},
    'prometheus content type');
my $text = $r->{body};
my @lines = split /\n/, $text;
is_deeply([grep { !/^# (HELP|TYPE) pagespeed_cache_\w+ \S.*$|^pagespeed_cache_\w+ \d+$/ }
    @lines], [], 'every line is HELP, TYPE or a sample');

my (%type, %value);
for my $i (0 .. $#lines) {
    my ($name, $v) = $lines[$i] =~ /^(\w+) (\d+)$/ or next;
    $value{$name} = $v;
    # each sample follows its own HELP and TYPE
    next unless $i >= 2 && $lines[$i - 2] =~ /^# HELP \Q$name\E \S/;
    ($type{$name}) = $lines[$i - 1] =~ /^# TYPE \Q$name\E (\w+)$/;
}
like($text, qr/^# HELP pagespeed_cache_hits_total \S.*\n# TYPE pagespeed_cache_hits_total counter\npagespeed_cache_hits_total $s->{hits}$/m,
    'pagespeed_cache_hits_total with HELP and TYPE');
is(scalar(grep { !defined $type{$_} } keys %value), 0,
    'every sample has HELP and TYPE');
is($value{pagespeed_cache_hits_total}, $s->{hits}, 'hits match JSON');
cmp_ok($s->{hits}, '>=', 1, 'hits nonzero');
is($value{pagespeed_cache_misses_total}, $s->{misses}, 'misses match JSON');
is($value{pagespeed_cache_purges_url_total}, $s->{purges_url},
    'purges_url match JSON');
is($value{pagespeed_cache_entries}, $s->{entries}, 'entries gauge');
is($type{pagespeed_cache_entries}, 'gauge', 'entries is a gauge');
is($type{pagespeed_cache_purge_clock}, 'gauge', 'purge_clock is a gauge');
is($type{pagespeed_cache_stored_total}, 'counter', 'stored is a counter');
is($value{pagespeed_cache_purge_clock}, $s->{purge_clock}, 'clock matches');
is(scalar(grep { /_total$/ } keys %value), scalar @counters,
    'one _total per counter');

###############################################################################
# ?url= inspection

is(xcache('/v', headers => { 'Accept-Encoding' => 'gzip' }), 'MISS',
    '/v gzip: MISS');
is(xcache('/v'), 'MISS', '/v identity: MISS (gzip not acceptable)');
is(xcache('/v', headers => { 'Accept-Encoding' => 'gzip' }), 'HIT',
    '/v gzip: HIT');
is(xcache('/v'), 'HIT', '/v identity: HIT');

my $i = status('?url=/v');
my @e = @{$i->{entries} // []};
my $p = port(8080);
is_deeply([map { $_->{url} } @e],
    ["http://localhost:$p/v", "https://localhost:$p/v"],
    'path: both schemes listed, on this listener');
my @alt = @{$e[0]{alternates} // []};
is_deeply([sort map { $_->{encoding} } @alt], ['gzip', 'identity'],
    'two alternates: gzip and identity');
is_deeply([sort { $a <=> $b } map { $_->{body_bytes} } @alt],
    [length "body of /v\n", length 'gzipped-bytes-/v'], 'body sizes');
ok(!grep({ $_->{sentinel} } @alt), 'no sentinels');
is(scalar @{$e[1]{alternates} // [1]}, 0, 'https: nothing cached');
like($e[0]{key} // '', qr/^[0-9a-f]{64}$/, 'key shown');

$i = status('?url=' . 'http%3A%2F%2Flocalhost%2Fv');
is(scalar @{$i->{entries} // []}, 1, 'absolute URL: one entry');
is(scalar @{$i->{entries}[0]{alternates} // []}, 2, 'absolute URL: both alternates');

$i = status('?url=/never');
is(scalar @{$i->{entries}[0]{alternates} // [1]}, 0, 'uncached: no alternates');

$r = parse_response(http_get('/status?url=/img/*'));
is($r->{status}, 400, 'prefix inspection: 400');
$r = parse_response(http_get('/status?url=relative'));
is($r->{status}, 400, 'relative url: 400');

purge('{"url": "/v"}');
is(scalar @{status('?url=/v')->{entries}[0]{alternates} // [1]}, 0,
    'purge removes every alternate');

###############################################################################
# methods

$r = parse_response(http_post('/status', ''));
is($r->{status}, 405, 'POST /status: 405');
is($r->{headers}{allow}, 'GET, HEAD', 'Allow: GET, HEAD');
$r = parse_response(http_req('PUT', '/status', body => '{}'));
is($r->{status}, 405, 'PUT /status: 405');
$r = parse_response(http_head('/status'));
ok($r->{status} == 200 && $r->{body} eq '', 'HEAD /status: 200, no body');
