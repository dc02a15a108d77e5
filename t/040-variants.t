#!/usr/bin/perl

# Variants through nginx: one URL, many cached outputs (WebP, AVIF, resized, Save-Data,
# gzip, br), each served only to the clients it suits, with the right Content-Type,
# Content-Encoding and Vary; one purge removes them all from both workers; a purge while a
# build runs fences it; broken and hostile images leave the original served.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use lib 't/lib';
use Test::Nginx;
use Test::Nginx::Images qw(png truncated_png bomb_png);

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(54);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    # The origin here sends no explicit freshness; the default reuses such responses only
    # under heuristic freshness (RFC 9111 4.2.2), so these tests give them a lifetime.
    pagespeed_cache_valid 10m;
    types {
        image/png png;
        text/css css;
    }
    # max_object fits the 3-megapixel source of the fence test (shards grow to hold four).
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=64m max_object=8m;
    pagespeed_build_threads 1;

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        add_header X-Worker $pid;
        location / {
            pagespeed_cache on;
            pagespeed_variants webp avif resize save-data gzip br;
            proxy_pass http://127.0.0.1:8081;
        }
        location /plain/ {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081/;
        }
        # Only AVIF, the slowest encoder: a purge lands while it runs.
        location /avif-only/ {
            pagespeed_cache on;
            pagespeed_variants avif;
            proxy_pass http://127.0.0.1:8081/;
        }
        location = /status { pagespeed_status; }
        location = /purge { pagespeed_purge; }
    }

    server {
        listen 127.0.0.1:8081;
        root %%TESTDIR%%/site;
        expires 1h;
    }
}
EOF

my $css = join '', map { ".card-$_ { margin: ${_}px; padding: 4px; color: #333; }\n" } 1 .. 300;
$t->write_file('site/photo.png', png(800, 600, 1));
$t->write_file('site/slow.png', png(2000, 1500, 2));
$t->write_file('site/broken.png', truncated_png(400, 300, 3));
$t->write_file('site/bomb.png', bomb_png());
$t->write_file('site/site.css', $css);
$t->run();

my $AVIF_WEBP = 'image/avif,image/webp,image/apng,*/*;q=0.8';
my $PHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148';

sub get {
    my ($uri, %h) = @_;
    return parse_response(http_get($uri, headers => \%h));
}

sub status {
    my ($q) = @_;
    return parse_response(http_get('/status' . ($q // '')))->{body};
}

sub counter {
    my ($name) = @_;
    my ($v) = status() =~ /"$name":(\d+)/;
    return $v // -1;
}

# Builds run in the background: wait (bounded) until `cond` holds.
sub eventually {
    my ($cond) = @_;
    my $deadline = time() + 30 * Test::Nginx::timeout_scale();
    while (time() < $deadline) {
        return 1 if $cond->();
        sleep 0.1;
    }
    return 0;
}

sub variants_of {
    my ($uri) = @_;
    my @v = status("?url=$uri") =~ /"variant":"([^"]+)"/g;
    return [sort @v];
}

sub has_variant {
    my ($uri, @want) = @_;
    my %v = map { $_ => 1 } @{variants_of($uri)};
    return !grep { !$v{$_} } @want;
}

###############################################################################
# images: formats by Accept

my $r = get('/photo.png', Accept => $AVIF_WEBP);
is($r->{headers}{'x-cache'}, 'MISS', 'first request is a MISS');
is($r->{headers}{'content-type'}, 'image/png', 'the MISS serves the original');
like($r->{headers}{vary} // '', qr/^Accept, Save-Data, User-Agent/,
    'the original already says what it varies on');
my $orig_len = length $r->{body};

ok(eventually(sub { has_variant('/photo.png', 'avif', 'webp') }),
    'full-size WebP and AVIF built on fill');

$r = get('/photo.png', Accept => 'image/webp,*/*');
is($r->{headers}{'x-cache'}, 'HIT', 'webp client: HIT');
is($r->{headers}{'content-type'}, 'image/webp', 'webp client gets WebP');
ok(length($r->{body}) < $orig_len, 'the WebP is smaller than the original');
is(substr($r->{body}, 8, 4), 'WEBP', 'the bytes are WebP');
like($r->{headers}{etag} // '', qr/-webp"$/, 'the WebP has its own ETag');

$r = get('/photo.png', Accept => $AVIF_WEBP);
is($r->{headers}{'content-type'}, 'image/avif', 'avif client gets AVIF');
is(substr($r->{body}, 4, 8), 'ftypavif', 'the bytes are AVIF');

$r = get('/photo.png', Accept => '*/*');
is($r->{headers}{'content-type'}, 'image/png', 'a client naming no modern format gets the original');
is(length $r->{body}, $orig_len, 'the original bytes');

$r = get('/photo.png', Accept => 'image/avif;q=0,image/webp');
is($r->{headers}{'content-type'}, 'image/webp', 'q=0 refuses AVIF');

###############################################################################
# images: viewport by User-Agent and hints, density, Save-Data (built on demand)

$r = get('/photo.png', Accept => 'image/webp', 'User-Agent' => $PHONE);
like($r->{headers}{etag} // '', qr/-webp"$/, 'phone: served at once with the best stored variant');
ok(eventually(sub { has_variant('/photo.png', 'webp-480') }), 'phone: 480 px WebP built on demand');
$r = get('/photo.png', Accept => 'image/webp', 'User-Agent' => $PHONE);
like($r->{headers}{etag} // '', qr/-webp-480"$/, 'phone gets the 480 px variant');
ok(length($r->{body}) < $orig_len / 4, 'and it is small');

# DPR 2 on a 400 px viewport asks 960 px, wider than this 800 px image: nothing to resize, so
# the full-size WebP built on fill serves it, and no second copy of its pixels is encoded.
# (t/041 has a 2x variant of an image wide enough for one.)
my ($done, $declined) = (counter('builds_done'), counter('builds_declined'));
get('/photo.png', Accept => 'image/webp', 'Sec-CH-Viewport-Width' => '400', 'Sec-CH-DPR' => '2');
ok(eventually(sub { counter('builds_declined') > $declined }),
    '2x: a 960 px variant of an 800 px image is declined');
$r = get('/photo.png', Accept => 'image/webp', 'Sec-CH-Viewport-Width' => '400', 'Sec-CH-DPR' => '2');
like($r->{headers}{etag} // '', qr/-webp"$/, '2x: the full-size WebP serves it');
is(counter('builds_done'), $done, '2x: without encoding the image again');
ok(!has_variant('/photo.png', 'webp-480-2x'), '2x: no 960 px copy of the 800 px image stored');
$r = get('/photo.png', Accept => 'image/webp', 'User-Agent' => $PHONE,
    'Sec-CH-Viewport-Width' => '1400');
like($r->{headers}{etag} // '', qr/-webp"$/, 'a viewport hint wins over the User-Agent');
like($r->{headers}{'accept-ch'} // '', qr/Sec-CH-Viewport-Width/, 'Accept-CH asks for the hints');

get('/photo.png', Accept => 'image/webp', 'Save-Data' => 'on');
ok(eventually(sub { has_variant('/photo.png', 'webp-sd') }), 'Save-Data variant built');
$r = get('/photo.png', Accept => 'image/webp', 'Save-Data' => 'on');
my $sd_len = length $r->{body};
$r = get('/photo.png', Accept => 'image/webp');
ok($sd_len < length($r->{body}), 'a Save-Data client gets a lighter WebP; others do not');

###############################################################################
# text: gzip and br alternates by Accept-Encoding

$r = get('/site.css', 'Accept-Encoding' => 'gzip, br');
is($r->{headers}{'x-cache'}, 'MISS', 'css: MISS');
ok(eventually(sub { has_variant('/site.css', 'br', 'gzip') }), 'css: gzip and br built on fill');
$r = get('/site.css', 'Accept-Encoding' => 'gzip, br');
is($r->{headers}{'content-encoding'}, 'br', 'a br client gets br');
is($r->{headers}{vary}, 'Accept-Encoding', 'Vary: Accept-Encoding');
ok(length($r->{body}) < length($css) / 4, 'br is much smaller');
$r = get('/site.css', 'Accept-Encoding' => 'gzip');
is($r->{headers}{'content-encoding'}, 'gzip', 'a gzip client gets gzip');
$r = get('/site.css', 'Accept-Encoding' => 'br;q=0, gzip;q=0');
ok(!$r->{headers}{'content-encoding'} && $r->{body} eq $css,
    'a client refusing both gets the identity bytes');

###############################################################################
# a location without variants stores the original only

get('/plain/photo.png', Accept => $AVIF_WEBP);
$r = get('/plain/photo.png', Accept => $AVIF_WEBP);
is($r->{headers}{'content-type'}, 'image/png', 'no variants where pagespeed_variants is not set');
ok(!$r->{headers}{vary}, 'and no Vary added');

###############################################################################
# one purge removes every variant, from both workers

my $before = scalar @{variants_of('/photo.png')};
ok($before >= 5, "photo has $before alternates");
my $p = parse_response(http_post('/purge', '{"url": "/photo.png"}', headers => { 'Content-Type' => 'application/json' }));
like($p->{body}, qr/"deleted":$before\b/, 'the purge deleted every alternate at once');
is_deeply(variants_of('/photo.png'), [], 'nothing left under the key');
my (%workers, $variant_served);
for (1 .. 20) {
    my $x = get('/photo.png', Accept => $AVIF_WEBP);
    $workers{$x->{headers}{'x-worker'} // ''} = 1;
    $variant_served++ if $_ == 1 && ($x->{headers}{'content-type'} // '') ne 'image/png';
}
ok(!$variant_served, 'the first request after the purge gets the original, not a variant');
ok(keys %workers >= 1, 'answered by ' . scalar(keys %workers) . ' worker(s)');

###############################################################################
# a purge while a build runs fences the build

# The requests above rebuilt the photo's variants; let the builders go idle so the next
# build starts at once and is still running when the purge lands.
ok(eventually(sub { has_variant('/photo.png', 'avif', 'webp') }), 'builders idle again');
my $fenced_before = counter('builds_fenced');
my $started = counter('builds_started');
$r = get('/avif-only/slow.png', Accept => $AVIF_WEBP);
is($r->{headers}{'x-cache'}, 'MISS', 'slow image: the MISS queues its AVIF build');
# Purge once the build has read its source: an AVIF encode of 3 megapixels takes a second.
ok(eventually(sub { counter('builds_started') > $started }), 'the build started');
$p = parse_response(http_post('/purge', '{"url": "/avif-only/slow.png"}',
    headers => { 'Content-Type' => 'application/json' }));
is($p->{status}, 200, 'purged while the build runs');
ok(eventually(sub { counter('builds_fenced') > $fenced_before }), 'the running build was fenced');
is_deeply(variants_of('/avif-only/slow.png'), [], 'no variant of the purged original appeared');
$r = get('/avif-only/slow.png', Accept => $AVIF_WEBP);
is($r->{headers}{'content-type'}, 'image/png', 'the next request gets the new original');

###############################################################################
# broken and hostile images: refused with a log line, the original keeps being served

my $failed = counter('builds_failed');
$r = get('/broken.png', Accept => $AVIF_WEBP);
is($r->{status}, 200, 'truncated image: served');
ok(eventually(sub { counter('builds_failed') >= $failed + 1 }), 'truncated image: build refused');
$r = get('/broken.png', Accept => $AVIF_WEBP);
is($r->{headers}{'content-type'}, 'image/png', 'truncated image: the original is served');

$r = get('/bomb.png', Accept => $AVIF_WEBP);
is($r->{status}, 200, 'bomb: served');
ok(eventually(sub { $t->grep_log(qr/pagespeed build of \/bomb\.png as \S+ refused: over limits/) }),
    'bomb: build refused from its header, with a log line saying why');
ok(counter('builds_failed') >= $failed + 3, 'bomb: counted as a failed build');
$r = get('/bomb.png', Accept => $AVIF_WEBP);
is($r->{headers}{'content-type'}, 'image/png', 'bomb: the original is served');
