#!/usr/bin/perl

# Revalidate-first purges and the soft PURGE method, through nginx with two workers:
#
#   POST /purge {"url": "/x", "revalidate": true}
#
# asks the origin (through the location serving /x in the purge's server, conditionally)
# before anything is purged. An unchanged origin keeps the original and every variant
# (builds_done flat); a changed one replaces them; an origin error or timeout answers 502 or
# 504, purges nothing and leaves the entry marked stale. The origin sees only the Host and the
# conditionals, never the purge request's body or credentials.
#
#   PURGE /x with Pagespeed-Soft-Purge: 1
#
# marks the URL stale: the next request revalidates and, unchanged, keeps the variants.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use Time::HiRes qw/time sleep/;

use lib 't/lib';
use Test::Nginx;
use Test::Pagespeed qw/purge_json status_json variants_of eventually/;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(60);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    # The origin here sends no explicit freshness; the default reuses such responses only
    # under heuristic freshness (RFC 9111 4.2.2), so these tests give them a lifetime.
    pagespeed_cache_valid 10m;
    types { text/css css; }
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=16m;
    pagespeed_build_threads 1;

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        add_header X-Worker $pid always;
        add_header X-Cache-Status $pagespeed_cache_status always;

        # A static origin (nginx's own ETag, and its own 304s).
        location / {
            pagespeed_cache on;
            pagespeed_variants gzip br;
            pagespeed_purge_method PURGE;
            proxy_pass http://127.0.0.1:8082;
        }
        # A scripted origin that can fail.
        location /f/ {
            pagespeed_cache on;
            proxy_read_timeout 1s;
            proxy_pass http://127.0.0.1:8081;
        }
        location = /purge {
            pagespeed_purge;
            pagespeed_purge_token s3cret;
        }
        location = /status { pagespeed_status; }
    }

    log_format cond escape=none '$request_method $uri inm=$http_if_none_match ims=$http_if_modified_since';
    server {
        listen 127.0.0.1:8082;
        root %%TESTDIR%%/site;
        expires 1h;
        access_log %%TESTDIR%%/static.log cond;
    }
}
EOF

my $dir = $t->testdir;
my $css = join '', map { ".card-$_ { margin: ${_}px; padding: 4px; color: #333; }\n" } 1 .. 300;
$t->write_file('site/site.css', $css);
$t->write_file('site/other.css', $css);

# /f/x: its mode file says how to answer; the headers it got are written down.
sub set_mode {
    open my $fh, '>', "$dir/mode.tmp" or die $!;
    print $fh shift;
    close $fh;
    rename "$dir/mode.tmp", "$dir/mode" or die $!;
}
set_mode('ok');
start_origin(port => 8081, routes => { '*' => sub {
    my ($r) = @_;
    open my $fh, '<', "$dir/mode" or die "mode: $!";
    my $mode = <$fh>;
    my $h = $r->{headers};
    if (open my $log, '>>', "$dir/f.headers") {
        print $log join(' ', map { "$_=" . ($h->{$_} // '-') }
            qw/if-none-match authorization content-type content-length/), "\n";
        close $log;
    }
    my %out = ('Cache-Control' => 'max-age=3600', 'ETag' => '"f1"');
    return (503, {}, "down\n") if $mode eq '503';
    return (200, \%out, "f body\n", 3) if $mode eq 'slow';
    return (304, \%out, '') if ($h->{'if-none-match'} // '') eq '"f1"';
    return (200, \%out, "f body\n");
} });

$t->run();

###############################################################################

sub get {
    my ($uri, %h) = @_;
    return parse_response(http_get($uri, headers => \%h)) // { headers => {}, body => '' };
}

sub status { status_json() }

sub purge { purge_json(shift, headers => { Authorization => 'Bearer s3cret' }) }

sub static_log { $t->read_file('static.log') // '' }

###############################################################################
# Unchanged origin: everything kept, nothing rebuilt.

my $r = get('/site.css', 'Accept-Encoding' => 'gzip, br');
is($r->{headers}{'x-cache'}, 'MISS', 'first request fills');
my $etag = $r->{headers}{etag};
ok(eventually(sub { variants_of('/site.css') eq 'br,gzip,original' }),
    'gzip and br built on fill');
my $br = get('/site.css', 'Accept-Encoding' => 'br');
is($br->{headers}{'content-encoding'}, 'br', 'a br client gets br');
my $builds = status()->{builds_done};
my $unchanged = status()->{revalidated_unchanged};

my ($p, $j) = purge('{"url": "/site.css", "revalidate": true}');
is($p->{status}, 200, 'unchanged: 200');
is($j->{changed}, JSON::PP::false, 'unchanged: "changed": false');
is($j->{kept}, 3, 'unchanged: all three alternates kept');
is($j->{deleted}, 0, 'unchanged: nothing deleted');
is($j->{revalidate}, JSON::PP::true, 'the receipt says it revalidated');
is_deeply($j->{urls}, ['http://localhost/site.css'], 'the receipt names the URL');
like(static_log(), qr{^GET /site\.css inm=\Q$etag\E ims=\S+}m,
    'the static origin was asked with If-None-Match and If-Modified-Since');
is(variants_of('/site.css'), 'br,gzip,original', 'every variant still stored');
is(status()->{builds_done}, $builds, 'builds_done flat');
is(status()->{revalidated_unchanged}, $unchanged + 1, 'revalidated_unchanged counted');
$r = get('/site.css', 'Accept-Encoding' => 'br');
is($r->{headers}{'x-cache'}, 'HIT', 'then a HIT');
is($r->{body}, $br->{body}, 'of the same br bytes');
is($r->{headers}{etag}, $br->{headers}{etag}, 'with the same ETag');

###############################################################################
# Changed origin: replaced, variants gone and rebuilt from the new bytes.

my $css2 = $css . ".new { color: red; }\n" x 20;
$t->write_file('site/site.css', $css2);
utime time() + 5, time() + 5, "$dir/site/site.css";
my $changed = status()->{revalidated_changed};
my $clock = status()->{purge_clock};
($p, $j) = purge('{"url": "/site.css", "revalidate": true}');
is($p->{status}, 200, 'changed: 200');
is($j->{changed}, JSON::PP::true, 'changed: "changed": true');
is($j->{deleted}, 3, 'changed: the three old alternates deleted');
ok($j->{generation} > $clock, 'changed: the purge clock moved');
is(status()->{revalidated_changed}, $changed + 1, 'revalidated_changed counted');
$r = get('/site.css');
is($r->{headers}{'x-cache'}, 'HIT', 'the new original is stored already');
is($r->{body}, $css2, 'with the new bytes');
$r = get('/site.css', 'Accept-Encoding' => 'br');
ok(eventually(sub { variants_of('/site.css') eq 'br,gzip,original' }),
    'variants rebuilt from the new original');
$r = get('/site.css', 'Accept-Encoding' => 'gzip');
is($r->{headers}{'content-encoding'}, 'gzip', 'a gzip client gets gzip');
isnt($r->{headers}{etag}, $etag, 'of the new bytes (a new ETag)');

###############################################################################
# Nothing cached: a plain purge, said so.

($p, $j) = purge('{"url": "/nothing.css", "revalidate": true}');
is($p->{status}, 200, 'uncached: 200');
is($j->{cached}, JSON::PP::false, 'uncached: "cached": false');
is($j->{deleted}, 0, 'uncached: nothing deleted');

###############################################################################
# Refusals.

($p, $j) = purge('{"url": "http://elsewhere.test/site.css", "revalidate": true}');
is($p->{status}, 400, 'another host: 400');
like($j->{error} // '', qr/host must be localhost/, 'another host: says why');
($p, $j) = purge('{"urls": ["/a", "/b"], "revalidate": true}');
is($p->{status}, 400, 'a list: 400');
($p, $j) = purge('{"url": "/site.css", "revalidate": true, "soft": true}');
is($p->{status}, 400, 'with soft: 400');

###############################################################################
# The scripted origin: what it is sent, and its failures.

$r = get('/f/x');
is($r->{headers}{'x-cache'}, 'MISS', '/f/x filled');
unlink "$dir/f.headers";
($p, $j) = purge('{"url": "/f/x", "revalidate": true}');
is($j->{changed}, JSON::PP::false, '/f/x: a 304 is unchanged');
my $seen = $t->read_file('f.headers') // '';
is($seen, "if-none-match=\"f1\" authorization=- content-type=- content-length=-\n",
    'the origin got the conditional and none of the purge request\'s headers');

set_mode('503');
($p, $j) = purge('{"url": "/f/x", "revalidate": true}');
is($p->{status}, 502, 'origin 503: 502');
like($j->{error} // '', qr/answered 503.*nothing purged/, 'origin 503: says so');
is($j->{stale}, JSON::PP::true, 'origin 503: the entry is marked stale');
is(variants_of('/f/x'), 'original', 'origin 503: the entry is still stored');

set_mode('slow');
my $t0 = time();
($p, $j) = purge('{"url": "/f/x", "revalidate": true}');
is($p->{status}, 504, 'origin timeout: 504');
like($j->{error} // '', qr/timed out/, 'origin timeout: says so');
ok(time() - $t0 < 3, 'answered at the proxy timeout, not the origin\'s delay');
is(variants_of('/f/x'), 'original', 'origin timeout: the entry is still stored');

set_mode('ok');
$r = get('/f/x');
is($r->{headers}{'x-cache-status'}, 'REVALIDATED',
    'the stale-marked entry revalidates on the next request');
is($r->{body}, "f body\n", 'with its bytes');
$r = get('/f/x');
is($r->{headers}{'x-cache'}, 'HIT', 'and is fresh again');

###############################################################################
# PURGE with Pagespeed-Soft-Purge: 1.

get('/other.css', 'Accept-Encoding' => 'gzip, br');
ok(eventually(sub { variants_of('/other.css') eq 'br,gzip,original' }),
    'other.css and its variants stored');
$builds = status()->{builds_done};
$r = parse_response(http("PURGE /other.css HTTP/1.0\r\nHost: localhost\r\n"
    . "Pagespeed-Soft-Purge: 1\r\n\r\n"));
is($r->{status}, 200, 'soft PURGE: 200');
like($r->{body}, qr/"soft":true/, 'soft PURGE: the receipt says soft');
is(variants_of('/other.css'), 'br,gzip,original', 'soft PURGE: nothing deleted');
my $before = static_log();
$r = get('/other.css', 'Accept-Encoding' => 'br');
is($r->{headers}{'x-cache'}, 'REVALIDATED', 'after a soft PURGE: REVALIDATED');
is($r->{headers}{'content-encoding'}, 'br', 'served the kept br variant');
like($r->{headers}{vary} // '', qr/Accept-Encoding/, 'a revalidated variant says what it varies on');
like($r->{headers}{etag} // '', qr/-br"$/, 'and carries its own ETag');
like(substr(static_log(), length $before), qr{^GET /other\.css inm="}m,
    'the origin was asked conditionally');
is(status()->{builds_done}, $builds, 'nothing rebuilt');
$r = parse_response(http("PURGE /other.css HTTP/1.0\r\nHost: localhost\r\n\r\n"));
like($r->{body}, qr/"soft":false/, 'PURGE without the header is hard');
is(variants_of('/other.css'), '', 'and deletes every alternate');
$r = get('/other.css');
is($r->{headers}{'x-cache'}, 'MISS', 'then a MISS');
