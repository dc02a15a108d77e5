#!/usr/bin/perl

# HTTP semantics of cached responses: conditional requests and ranges
# answered from a HIT (by nginx's own filters below the cache), ranges on
# a MISS, the origin's Vary (one alternate per request value) and
# Content-Encoding (gzip bytes only to clients that accept them).

use strict;
use warnings;

use Test::More;
use IO::Compress::Gzip qw/gzip $GzipError/;
use IO::Uncompress::Gunzip qw/gunzip $GunzipError/;

use lib 't/lib';
use Test::Nginx;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(74);

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

        location /p/ {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081;
        }

        location /static/ {
            pagespeed_cache on;
            root %%TESTDIR%%;
        }

        # nginx's gzip filter sits below the cache: it must compress a
        # HIT as it compressed the MISS.
        location /zip/ {
            pagespeed_cache on;
            gzip on;
            gzip_min_length 1;
            proxy_pass http://127.0.0.1:8081;
        }

        location /redir/ {
            pagespeed_cache on;
            pagespeed_cache_statuses 200 301 302;
            proxy_pass http://127.0.0.1:8081;
        }

        location /status {
            pagespeed_status;
        }
    }
}
EOF

my $LM = 'Mon, 01 Jan 2024 00:00:00 GMT';
my $body = join '', map { chr(ord('a') + $_ % 26) } 0 .. 99;   # "abc...v"
$t->write_file('static/range.txt', $body);
$t->write_file('static/range-miss.txt', $body);

my $text = "hello, compressible world\n" x 40;
gzip(\$text => \my $gz) or die "gzip: $GzipError";

# Whether an Accept-Encoding value accepts gzip (q=0 refuses), the way a
# correct origin decides.
sub accepts_gzip {
    my ($ae) = @_;
    for (split /,/, $ae // '') {
        my ($name, @params) = split /;/;
        next unless $name =~ /^\s*(?:x-)?gzip\s*$/i;
        my ($q) = map { /^\s*q\s*=\s*([\d.]+)/i ? $1 : () } @params;
        return !defined $q || $q > 0;
    }
    return 0;
}

start_origin(port => 8081, routes => {
    '/p/cond' => sub {
        (200, { 'ETag' => '"v1"', 'Last-Modified' => $LM }, $body);
    },
    '/p/range' => sub { (200, { 'ETag' => '"r"' }, $body) },
    '/p/range-ignored' => sub { (200, {}, $body) },
    # An origin that honours Range itself: its 206 passes through.
    '/p/range-origin' => sub {
        my ($r) = @_;
        if (($r->{headers}{range} // '') =~ /^bytes=(\d+)-(\d+)$/) {
            return (206, { 'Content-Range' => "bytes $1-$2/100" },
                substr($body, $1, $2 - $1 + 1));
        }
        return (200, {}, $body);
    },
    '/p/lang' => sub {
        my $l = $_[0]{headers}{'accept-language'} // 'none';
        (200, { 'Vary' => 'Accept-Language' },
            "lang=$l n=" . $t->origin_hits('/p/lang'));
    },
    '/p/gz' => sub {
        my $g = accepts_gzip($_[0]{headers}{'accept-encoding'});
        (200, { 'Vary' => 'Accept-Encoding', 'Content-Type' => 'text/plain',
            ($g ? ('Content-Encoding' => 'gzip') : ()) }, $g ? $gz : $text);
    },
    '/p/many' => sub {
        my $l = $_[0]{headers}{'accept-language'} // 'none';
        (200, { 'Vary' => 'Accept-Language' }, "many lang=$l");
    },
    '/zip/page' => sub {
        (200, { 'Content-Type' => 'text/html; charset=utf-8' }, $text);
    },
    '/redir/relative' => sub { (301, { 'Location' => '/target' }, 'moved') },
    '/redir/absolute' => sub {
        (302, { 'Location' => 'https://example.test/x' }, 'found');
    },
    '/p/gz-identity-first' => sub {
        my $g = accepts_gzip($_[0]{headers}{'accept-encoding'});
        (200, { 'Vary' => 'Accept-Encoding',
            ($g ? ('Content-Encoding' => 'gzip') : ()) }, $g ? $gz : $text);
    },
});

$t->run();

###############################################################################

sub get {
    my ($uri, @h) = @_;
    return parse_response(http_get($uri, headers => [@h]));
}

sub xcache { $_[0] ? $_[0]{headers}{'x-cache'} // '-' : 'no response' }
sub summary { my ($r) = @_; "$r->{status} " . xcache($r) }

sub gunzipped {
    my ($r) = @_;
    return 'not gzip' unless ($r->{headers}{'content-encoding'} // '') eq 'gzip';
    my $out;
    gunzip(\$r->{body} => \$out) or return "gunzip: $GunzipError";
    return $out;
}

# What a response carries: 'gzip' (gzip bytes of $text), 'identity' ($text
# as is) or 'wrong bytes'.
sub carries {
    my ($r) = @_;
    return ($r->{headers}{'content-encoding'} // '') eq 'gzip'
        ? (gunzipped($r) eq $text ? 'gzip' : 'wrong bytes')
        : ($r->{body} eq $text ? 'identity' : 'wrong bytes');
}

###############################################################################
# conditional requests on a HIT

is(xcache(get('/p/cond')), 'MISS', 'conditional: fill');

{
    my $r = get('/p/cond', 'If-None-Match' => '"v1"');
    is(summary($r), '304 HIT', 'If-None-Match with the stored ETag: 304 HIT');
    is($r->{body}, '', '304: no body');
    is($r->{headers}{etag}, '"v1"', '304: carries the ETag');

    $r = get('/p/cond', 'If-None-Match' => '"other", "v1"');
    is(summary($r), '304 HIT', 'If-None-Match list containing the ETag: 304');

    $r = get('/p/cond', 'If-None-Match' => '"v0"');
    is(summary($r) . " $r->{body}", "200 HIT $body",
        'If-None-Match with another ETag: full 200 HIT');

    $r = get('/p/cond', 'If-Modified-Since' => $LM);
    is(summary($r), '304 HIT', 'If-Modified-Since = Last-Modified: 304 HIT');
    is($r->{body}, '', 'If-Modified-Since 304: no body');

    $r = get('/p/cond', 'If-Modified-Since' => 'Sun, 31 Dec 2023 00:00:00 GMT');
    is(summary($r) . " $r->{body}", "200 HIT $body",
        'If-Modified-Since before Last-Modified: full 200 HIT');

    is($t->origin_hits('/p/cond'), 1, 'conditional: origin contacted once');
}

###############################################################################
# Range on a HIT: 206 with exactly those bytes

is(xcache(get('/p/range')), 'MISS', 'range: fill');

{
    my $r = get('/p/range', Range => 'bytes=0-9');
    is(summary($r), '206 HIT', 'Range bytes=0-9 on a HIT: 206');
    is($r->{body}, substr($body, 0, 10), 'Range bytes=0-9: those 10 bytes');
    is($r->{headers}{'content-range'}, 'bytes 0-9/100', 'Content-Range');
    is($r->{headers}{'content-length'}, 10, 'Content-Length of the range');

    $r = get('/p/range', Range => 'bytes=-5');
    is(summary($r) . " $r->{body}", '206 HIT ' . substr($body, -5),
        'suffix range on a HIT');

    $r = get('/p/range', Range => 'bytes=95-200');
    is(summary($r) . " $r->{body}", '206 HIT ' . substr($body, 95),
        'range past the end is clipped');

    $r = get('/p/range', Range => 'bytes=500-');
    is($r->{status}, 416, 'unsatisfiable range on a HIT: 416');
    is($r->{headers}{'content-range'}, 'bytes */100', '416 Content-Range');

    $r = get('/p/range', Range => 'bytes=10-19', 'If-Range' => '"r"');
    is(summary($r) . " $r->{body}", '206 HIT ' . substr($body, 10, 10),
        'If-Range with the stored ETag: 206');

    $r = get('/p/range', Range => 'bytes=10-19', 'If-Range' => '"old"');
    is(summary($r) . " $r->{body}", "200 HIT $body",
        'If-Range with another ETag: full 200');

    is($t->origin_hits('/p/range'), 1, 'range: origin contacted once');
}

# static file, first request with Range: nginx's range filter (below the
# cache) answers 206; the cache still stores the whole file.
{
    my $r = get('/static/range-miss.txt', Range => 'bytes=0-9');
    is(summary($r) . " $r->{body}", '206 MISS ' . substr($body, 0, 10),
        'Range on a static MISS: 206 with the right bytes');
    $r = get('/static/range-miss.txt');
    is(summary($r) . " $r->{body}", "200 HIT $body",
        'the MISS stored the whole file');
    $r = get('/static/range-miss.txt', Range => 'bytes=90-99');
    is(summary($r) . " $r->{body}", '206 HIT ' . substr($body, 90),
        'range from the stored file');
}

# proxied origin that ignores Range: nginx does not cut proxied
# responses (no proxy_force_ranges), so the MISS is a full 200; either a
# 206 with the right bytes or the whole body would be correct, anything
# else is not.  The whole body is stored and serves ranges afterwards.
{
    my $r = get('/p/range-ignored', Range => 'bytes=0-9');
    my $ok = $r->{status} == 206 ? $r->{body} eq substr($body, 0, 10)
        : $r->{status} == 200 && $r->{body} eq $body;
    ok($ok, 'Range on a proxied MISS: right bytes')
        or diag("$r->{status} $r->{body}");
    is(xcache($r), 'MISS', 'Range on a proxied MISS: MISS');
    $r = get('/p/range-ignored', Range => 'bytes=0-9');
    is(summary($r) . " $r->{body}", '206 HIT ' . substr($body, 0, 10),
        'the full 200 was stored and serves ranges');
}

# proxied origin that honours Range: its 206 passes through untouched
# and is not stored (206 is never cached).
{
    my $r = get('/p/range-origin', Range => 'bytes=5-14');
    is($r->{status}, 206, 'origin 206 on a MISS: 206');
    is($r->{body}, substr($body, 5, 10), 'origin 206: the right bytes');
    is($r->{headers}{'content-range'}, 'bytes 5-14/100',
        'origin 206: its Content-Range');
    is(xcache($r), 'BYPASS', 'origin 206: not stored');
    $r = get('/p/range-origin');
    is(summary($r) . " $r->{body}", "200 MISS $body",
        'next GET without Range: full 200 from the origin');
    is(xcache(get('/p/range-origin')), 'HIT', 'and that 200 was stored');
}

###############################################################################
# a cached redirect keeps the Location the origin sent: nginx leaves a
# proxied relative Location alone (it does not know the public scheme,
# host and port), so a HIT must not turn it into an absolute URL either.

for my $uri ('/redir/relative', '/redir/absolute') {
    my $m = get($uri);
    my $h = get($uri);
    is(xcache($m) . ' ' . xcache($h), 'MISS HIT', "$uri: cached");
    is("$h->{status} $h->{headers}{location}",
        "$m->{status} $m->{headers}{location}",
        "$uri: HIT has the status and Location of the MISS");
}

###############################################################################
# Vary: Accept-Language -> one alternate per value

{
    my @seq = (['de', 'MISS', 'lang=de n=1'], ['fr', 'MISS', 'lang=fr n=2'],
        ['de', 'HIT', 'lang=de n=1'], ['fr', 'HIT', 'lang=fr n=2']);
    my @got = map { my $r = get('/p/lang', 'Accept-Language' => $_->[0]);
        xcache($r) . " $r->{body}" } @seq;
    is_deeply(\@got, [map { "$_->[1] $_->[2]" } @seq],
        'Vary: each Accept-Language value has its own entry');

    my $s = http_get('/status?url=/p/lang');
    my ($http) = $s =~ /(\{"alternates":\[.*?\]),"key":"[0-9a-f]+","url":"http:/;
    is(() = ($http // '') =~ /"origin_vary":true/g, 2,
        'Vary: the status location lists 2 alternates for the URL')
        or diag($s);

    my $r = get('/p/lang');
    is(xcache($r) . " $r->{body}", 'MISS lang=none n=3',
        'Vary: a request without the header matches neither');
    $r = get('/p/lang', 'Accept-Language' => 'en');
    is(xcache($r) . " $r->{body}", 'MISS lang=en n=4',
        'Vary: another value matches neither');
    $r = get('/p/lang');
    is(xcache($r) . " $r->{body}", 'HIT lang=none n=3',
        'Vary: no header has its own entry too');
    is(get('/p/lang', 'Accept-Language' => 'de')->{headers}{vary},
        'Accept-Language', 'Vary header replayed on hits');
}

# More Vary values than a key holds alternates (64): older ones are
# evicted, but no request is ever answered with another value's bytes.
{
    my (@wrong, %seen);
    for my $round (1 .. 2) {
        for my $i (1 .. 70) {
            my $r = get('/p/many', 'Accept-Language' => "l$i");
            push @wrong, "l$i" unless $r->{body} eq "many lang=l$i";
            $seen{xcache($r)}++;
        }
    }
    is("@wrong", '', 'Vary: 70 values, every answer for its own value')
        or diag(explain \%seen);
    my $s = http_get('/status?url=/p/many');
    my ($http) = $s =~ /(\{"alternates":\[.*?\]),"key":"[0-9a-f]+","url":"http:/;
    my $n = () = ($http // '') =~ /"descriptor"/g;
    ok($n > 0 && $n <= 64, "Vary: alternates per key capped ($n)") or diag($s);
}

###############################################################################
# nginx's gzip filter below the cache (HTTP/1.1, as gzip_http_version
# wants): the stored copy is the uncompressed body, and a HIT is
# compressed for gzip clients just like the MISS was, also for a
# Content-Type with a charset parameter.

{
    my @h = (headers => ['Accept-Encoding' => 'gzip'], version => '1.1');
    my $m = parse_response(http_get('/zip/page', @h));
    my $h = parse_response(http_get('/zip/page', @h));
    is(xcache($m) . ' ' . carries($m), 'MISS gzip',
        'gzip filter: MISS compressed by nginx');
    is(xcache($h) . ' ' . carries($h), 'HIT gzip',
        'gzip filter: HIT compressed by nginx too');
    my $p = parse_response(http_get('/zip/page', version => '1.1'));
    is(xcache($p) . ' ' . carries($p), 'HIT identity',
        'gzip filter: plain HIT for a client without gzip');
    is($t->origin_hits('/zip/page'), 1, 'gzip filter: origin contacted once');
}

###############################################################################
# Content-Encoding: gzip only to clients that accept it


{
    my $r = get('/p/gz', 'Accept-Encoding' => 'gzip, deflate');
    is(xcache($r), 'MISS', 'gzip client: MISS');
    is(gunzipped($r), $text, 'gzip client: gzip bytes from the origin');

    $r = get('/p/gz', 'Accept-Encoding' => 'gzip, deflate');
    is(xcache($r), 'HIT', 'gzip client: HIT');
    ok($r->{body} eq $gz && gunzipped($r) eq $text, 'gzip client: gzip bytes from the cache');
    like($r->{headers}{vary}, qr/Accept-Encoding/i, 'gzip HIT: Vary: Accept-Encoding');

    $r = get('/p/gz');
    is(xcache($r), 'MISS', 'client without Accept-Encoding: not the gzip entry');
    ok(!defined $r->{headers}{'content-encoding'} && $r->{body} eq $text,
        'client without Accept-Encoding: identity bytes');
    is($t->origin_hits('/p/gz'), 2, 'origin asked for the identity variant');

    $r = get('/p/gz');
    ok(xcache($r) eq 'HIT' && !defined $r->{headers}{'content-encoding'}
        && $r->{body} eq $text, 'client without Accept-Encoding: identity HIT');

    my $s = http_get('/status?url=/p/gz');
    my ($http) = $s =~ /(\{"alternates":\[.*?\]),"key":"[0-9a-f]+","url":"http:/;
    is(join(',', sort(($http // '') =~ /"encoding":"(\w+)"/g)), 'gzip,identity',
        'status lists a gzip and an identity alternate') or diag($s);

    # Accept-Encoding forms: casing, q-values, wildcards.
    my @cases = (
        ['gzip;q=0', 'identity'],
        ['GZIP', 'gzip'],
        ['Gzip;Q=0.5', 'gzip'],
        ['deflate, gzip;q=0', 'identity'],
        ['gzip;q=0.001', 'gzip'],
        ['*', 'gzip'],
        ['*, gzip;q=0', 'identity'],
        ['br', 'identity'],
        ['identity', 'identity'],
        ['x-gzip', 'gzip'],
    );
    for my $c (@cases) {
        my ($ae, $want) = @$c;
        my $r = get('/p/gz', 'Accept-Encoding' => $ae);
        is(xcache($r) . ' ' . carries($r), "HIT $want",
            "Accept-Encoding '$ae': $want from the cache");
    }
    is($t->origin_hits('/p/gz'), 2, 'encodings: no further origin requests');
}

# The other order: an identity entry first.  It is acceptable to every
# client (identity is always acceptable unless refused), so a gzip client
# gets it as a HIT instead of asking the origin for gzip.
{
    my $r = get('/p/gz-identity-first');
    is(xcache($r) . ' ' . ($r->{headers}{'content-encoding'} // 'identity'),
        'MISS identity', 'identity first: MISS');
    $r = get('/p/gz-identity-first', 'Accept-Encoding' => 'gzip');
    ok(xcache($r) eq 'HIT' && !defined $r->{headers}{'content-encoding'}
        && $r->{body} eq $text, 'identity first: gzip client gets the identity HIT');
    $r = get('/p/gz-identity-first', 'Accept-Encoding' => 'identity;q=0, gzip');
    is(xcache($r) . ' ' . gunzipped($r), "MISS $text",
        'identity refused: MISS, gzip from the origin');
}

###############################################################################
