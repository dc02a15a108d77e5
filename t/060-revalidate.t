#!/usr/bin/perl

# Revalidation through nginx with two workers (pagespeed_cache_revalidate, on by default).
#
# A stored original that expired (max-age passed) or was soft-purged is refilled by asking
# the location's content handler conditionally, with If-None-Match / If-Modified-Since from
# the stored entry (never the client's own). A 304, or a 200 with the stored bytes, keeps
# the original and every variant built from it (builds_done flat) and refreshes their
# freshness: X-Cache and $pagespeed_cache_status REVALIDATED. A 200 with other bytes
# replaces the original and drops its variants (EXPIRED, X-Cache MISS; rebuilt later).
# A hard purge racing a slow revalidation wins: after its receipt the old bytes are never
# served. With pagespeed_cache_revalidate off a soft-purged entry is refilled
# unconditionally (EXPIRED).
#
# Also: variants expiring with their original, the client's conditionals, HEAD and Range on
# a stale entry, a hard tag purge racing a digest revalidation, soft purges landing during a
# slow revalidation (not absorbed by it), collapsed revalidation across workers, a 304 whose
# strong ETag is not the stored one (RFC 9111 4.3.4), a soft purge of everything.
#
# The scripted origin writes down, per request, the conditional headers it got (routes run
# in forked children: a file in the test dir); the static origin logs them with log_format.

use strict;
use warnings;

use Test::More;
use JSON::PP qw/decode_json/;
use Fcntl qw/O_WRONLY O_APPEND O_CREAT/;
use List::Util ();
use Time::HiRes qw/time sleep/;

use lib 't/lib';
use Test::Nginx;
use Test::Nginx::Images qw(jpeg);

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(158);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    # The static files here carry no explicit freshness; the default reuses such responses
    # only under heuristic freshness (RFC 9111 4.2.2), so these tests give them a lifetime.
    pagespeed_cache_valid 10m;
    types {
        text/html html;
        image/jpeg jpg;
    }
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=32m max_object=4m;
    pagespeed_build_threads 1;

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        add_header X-Worker $pid always;
        add_header X-Cache-Status $pagespeed_cache_status always;

        # The scripted origin.
        location /p/ {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081;
        }
        # nginx's static handler as the content handler (no proxy).
        location /s/ {
            pagespeed_cache on;
            root %%TESTDIR%%/site;
        }
        # Image variants over a static origin (its own ETag, Last-Modified and 304s).
        location /img/ {
            pagespeed_cache on;
            pagespeed_variants webp avif;
            proxy_pass http://127.0.0.1:8082;
        }
        # Image variants over the scripted origin (max-age=1 on its 200s).
        location /pv/ {
            pagespeed_cache on;
            pagespeed_variants webp avif;
            proxy_pass http://127.0.0.1:8081;
        }
        location /off/ {
            pagespeed_cache on;
            pagespeed_cache_revalidate off;
            proxy_pass http://127.0.0.1:8081;
        }
        location = /purge { pagespeed_purge; }
        location = /status { pagespeed_status; }
    }

    log_format cond escape=none '$request_method $uri $status inm=$http_if_none_match ims=$http_if_modified_since';
    server {
        listen 127.0.0.1:8082;
        root %%TESTDIR%%/origin;
        expires 1h;
        access_log %%TESTDIR%%/static.log cond;
    }
}
EOF

my $dir = $t->testdir;

# Per-path state read by the origin at request time (atomic writes).
sub set_state {
    my ($name, $value) = @_;
    open my $fh, '>', "$dir/$name.tmp" or die $!;
    print $fh $value;
    close $fh;
    rename "$dir/$name.tmp", "$dir/$name" or die $!;
}

sub state_of {
    my ($name) = @_;
    open my $fh, '<', "$dir/$name" or return '';
    local $/;
    return <$fh> // '';
}

my $jpg1 = jpeg(640, 480, 1);
my $jpg2 = jpeg(640, 480, 7);
# Valid HTTP dates (the module reformats what it stores): 1..9 January 2024, 10:00 GMT.
my @DAY = qw/Mon Tue Wed Thu Fri Sat Sun/;
my %LM = map { $_ => "$DAY[$_ - 1], 0$_ Jan 2024 10:00:00 GMT" } 1 .. 7;

start_origin(port => 8081, routes => { '*' => sub {
    my ($r) = @_;
    my $h = $r->{headers};
    my ($inm, $ims) = ($h->{'if-none-match'} // '-', $h->{'if-modified-since'} // '-');
    if (sysopen my $log, "$dir/cond.log", O_WRONLY | O_APPEND | O_CREAT) {
        syswrite $log, "$r->{path} inm=$inm ims=$ims\n";
        close $log;
    }
    (my $name = $r->{path}) =~ s{^/}{};
    $name =~ s{/}{_}g;
    my $v = state_of("v_$name") || 1;
    my $body = "$r->{path} v=$v\n";

    if ($r->{path} eq '/p/a') {
        # max-age=1 on the 200, an hour on the 304: the 304's headers refresh freshness.
        my @h = (ETag => "\"a-v$v\"", 'Last-Modified' => $LM{$v});
        return (304, [@h, 'Cache-Control' => 'max-age=3600'], '')
            if $inm eq "\"a-v$v\"";
        return (200, [@h, 'Cache-Control' => 'max-age=1'], $body);
    }
    if ($r->{path} eq '/p/nv') {
        # No validator at all: only the bytes can tell.
        return (200, ['Cache-Control' => 'max-age=3600'], $body);
    }
    if ($r->{path} eq '/pv/photo.jpg') {
        my @h = ('Content-Type' => 'image/jpeg', ETag => '"photo-1"',
            'Last-Modified' => $LM{1});
        return (304, [@h, 'Cache-Control' => 'max-age=3600'], '') if $inm eq '"photo-1"';
        return (200, [@h, 'Cache-Control' => 'max-age=4'], $jpg1);
    }
    if ($r->{path} eq '/p/slow') {
        # A conditional request is answered 304 as soon as it arrives (the version then),
        # and the answer held for a while.
        my @h = ('Cache-Control' => 'max-age=3600', ETag => "\"slow-v$v\"");
        return (304, \@h, '', 1.2) if $inm ne '-';
        return (200, \@h, $body);
    }
    if ($r->{path} eq '/p/slownv' || $r->{path} eq '/p/slowch') {
        # While "hold" is set: the answer is decided now (the version now) and held.
        my @h = ('Cache-Control' => 'max-age=3600', 'Surrogate-Key' => "t-$name");
        push @h, (ETag => "\"$name-v$v\"") if $name eq 'p_slowch';
        return (200, \@h, $body, state_of("hold_$name") ? 1.2 : 0);
    }
    if ($r->{path} eq '/p/coll') {
        my @h = ('Cache-Control' => 'max-age=3600', ETag => '"coll"');
        return (304, \@h, '', 0.6) if $inm eq '"coll"';
        return (200, \@h, $body);
    }
    if ($r->{path} eq '/p/mm') {
        # Its 304 (decided on Last-Modified) carries the current ETag, whatever was asked.
        my @h = ('Cache-Control' => 'max-age=3600', ETag => "\"mm-v$v\"",
            'Last-Modified' => $LM{1});
        return (304, \@h, '') if $ims eq $LM{1};
        return (200, \@h, $body);
    }
    # /p/b, /off/x: ETag, Last-Modified, an hour, a tag.
    my @h = (ETag => "\"$name-v$v\"", 'Last-Modified' => $LM{$v},
        'Cache-Control' => 'max-age=3600', 'Surrogate-Key' => "t-$name");
    return (304, \@h, '') if $inm eq "\"$name-v$v\""
        || ($inm eq '-' && $ims eq $LM{$v});
    return (200, \@h, $body);
} });

my $page1 = "<html><body>" . ("static page one " x 40) . "</body></html>\n";
my $page2 = "<html><body>" . ("static page two " x 40) . "</body></html>\n";
$t->write_file('site/s/page.html', $page1);
$t->write_file('origin/img/photo.jpg', $jpg1);
utime time() - 100, time() - 100, "$dir/origin/img/photo.jpg";

$t->run();

###############################################################################
# helpers

sub get {
    my ($uri, %h) = @_;
    my $r = parse_response(http_get($uri, headers => \%h))
        // { status => 0, headers => {}, body => '' };
    $r->{xc} = $r->{headers}{'x-cache'} // '';
    $r->{cs} = $r->{headers}{'x-cache-status'} // '';
    $r->{worker} = $r->{headers}{'x-worker'} // '?';
    return $r;
}

sub json_of { my $r = shift; return eval { decode_json($r->{body}) } // {} }

sub status { json_of(get('/status')) }

sub purge {
    my ($body) = @_;
    my $r = parse_response(http_post('/purge', $body,
        headers => { 'Content-Type' => 'application/json' }))
        // { status => 0, headers => {}, body => '' };
    return ($r, json_of($r));
}

# The conditional headers the scripted origin got for $path, in order.
sub cond_of {
    my ($path) = @_;
    my @l = grep { /^\Q$path\E / } split /\n/, $t->read_file('cond.log') // '';
    return map { s/^\S+ //r } @l;
}

sub static_log { $t->read_file('static.log') // '' }

sub variants_of {
    my ($uri) = @_;
    my @v = get("/status?url=$uri")->{body} =~ /"variant":"([^"]+)"/g;
    return join ',', sort @v;
}

sub eventually {
    my ($cond, $secs) = @_;
    my $deadline = time() + ($secs // 20) * Test::Nginx::timeout_scale();
    while (time() < $deadline) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return 0;
}

# $n requests on new connections (reuseport spreads them over both workers): how many got
# each "X-Cache-Status body" and which workers answered.
sub many {
    my ($uri, $n, %h) = @_;
    my (%seen, %workers);
    for (1 .. $n) {
        my $r = get($uri, %h);
        $seen{"$r->{cs} $r->{body}"}++;
        $workers{$r->{worker}}++;
    }
    return (\%seen, scalar keys %workers);
}

###############################################################################
# 1. Expiry: ETag + Last-Modified + max-age=1, refilled conditionally, 304 -> REVALIDATED.

my $AVIF = 'image/avif,image/webp,*/*;q=0.8';
my $WEBP = 'image/webp,*/*;q=0.8';

# An image whose variants expire with it (max-age=4, time for the builds): filled and built
# first, checked after the wait below.
my $pv_t0 = time();
my $r = get('/pv/photo.jpg', Accept => $AVIF);
is($r->{xc}, 'MISS', 'expiry, variants: the original filled');
ok(eventually(sub { variants_of('/pv/photo.jpg') eq 'avif,original,webp' }),
    'expiry, variants: webp and avif built')
    or diag('variants: ' . variants_of('/pv/photo.jpg'));
my $pv_avif = get('/pv/photo.jpg', Accept => $AVIF);
my $pv_webp = get('/pv/photo.jpg', Accept => $WEBP);
my $pv_builds = status()->{builds_done};
is("$pv_avif->{cs} $pv_webp->{cs}", 'HIT HIT', 'expiry, variants: both served fresh first')
    or diag(sprintf 'built after %.1f s', time() - $pv_t0);

my $s0 = status();
$r = get('/p/a');
is($r->{xc}, 'MISS', 'expiry: first request fills');
my $etag_a = $r->{headers}{etag};
is($etag_a, '"a-v1"', 'expiry: the origin\'s ETag');
is(get('/p/a')->{xc}, 'HIT', 'expiry: a HIT while fresh');
# max-age=1 of /p/a and max-age=4 of /pv/photo.jpg (whole seconds) have passed.
sleep(List::Util::max(2.2, $pv_t0 + 5.2 - time()));
$r = get('/p/a', 'If-None-Match' => '"client-etag"',
    'If-Modified-Since' => 'Sat, 01 Jan 2000 00:00:00 GMT');
is($r->{status}, 200, 'expiry: the client\'s own (unmatched) conditional gets a 200');
is($r->{cs}, 'REVALIDATED', 'expiry: $pagespeed_cache_status REVALIDATED');
is($r->{xc}, 'REVALIDATED', 'expiry: X-Cache REVALIDATED');
is($r->{body}, "/p/a v=1\n", 'expiry: the stored bytes');
is($r->{headers}{etag}, $etag_a, 'expiry: the stored ETag');
is_deeply([cond_of('/p/a')],
    ['inm=- ims=-', "inm=\"a-v1\" ims=$LM{1}"],
    'expiry: the origin got the stored validators, not the client\'s');
my $s1 = status();
is($s1->{revalidations} - $s0->{revalidations}, 1, 'expiry: revalidations +1');
is($s1->{revalidated_unchanged} - $s0->{revalidated_unchanged}, 1,
    'expiry: revalidated_unchanged +1');
is($s1->{revalidated_changed} - $s0->{revalidated_changed}, 0,
    'expiry: revalidated_changed flat');
# The 304 said max-age=3600: fresh in every worker from now on, without the origin.
my ($seen, $workers) = many('/p/a', 16);
is_deeply($seen, { "HIT /p/a v=1\n" => 16 }, 'expiry: then HITs (the 304 refreshed freshness)');
is($workers, 2, 'expiry: from both workers');
is(scalar(cond_of('/p/a')), 2, 'expiry: no further origin request');
$r = get('/p/a', 'If-None-Match' => $etag_a);
is($r->{status}, 304, 'expiry: the client\'s matching If-None-Match: 304 from the store');
is($r->{xc}, 'HIT', 'expiry: the 304 is a HIT');
$r = get('/p/a', 'If-Modified-Since' => $LM{1});
is($r->{status}, 304, 'expiry: the client\'s If-Modified-Since: 304 from the store');

# The variants expired with their original: one conditional request keeps them all.
$s0 = status();
$r = get('/pv/photo.jpg', Accept => $AVIF);
is("$r->{cs} $r->{headers}{'content-type'}", 'REVALIDATED image/avif',
    'expiry, variants: the AVIF request REVALIDATED, served the kept AVIF');
ok($r->{body} eq $pv_avif->{body}, 'expiry, variants: the same AVIF bytes');
is($r->{headers}{etag}, $pv_avif->{headers}{etag}, 'expiry, variants: the same AVIF ETag');
is((cond_of('/pv/photo.jpg'))[-1], "inm=\"photo-1\" ims=$LM{1}",
    'expiry, variants: asked with the original\'s validators');
$r = get('/pv/photo.jpg', Accept => $WEBP);
is("$r->{cs} $r->{headers}{'content-type'}", 'HIT image/webp',
    'expiry, variants: the WebP variant was refreshed too (a HIT)');
ok($r->{body} eq $pv_webp->{body}, 'expiry, variants: the same WebP bytes');
is(scalar(cond_of('/pv/photo.jpg')), 2, 'expiry, variants: one origin request in all');
sleep 0.3;
is(status()->{builds_done}, $pv_builds, 'expiry, variants: builds_done flat');

###############################################################################
# 1b. Soft purge (URL, prefix, tag) instead of waiting.

$r = get('/p/b');
is($r->{xc}, 'MISS', 'soft: /p/b filled');
my $etag_b = $r->{headers}{etag};
my ($p, $j) = purge('{"url": "/p/b", "soft": true}');
is($p->{status}, 200, 'soft url purge: 200');
is($j->{soft}, JSON::PP::true, 'soft url purge: the receipt says soft');
$s0 = status();
$r = get('/p/b');
is($r->{cs}, 'REVALIDATED', 'soft url purge: REVALIDATED');
is($r->{body}, "/p/b v=1\n", 'soft url purge: the stored bytes');
is($r->{headers}{etag}, $etag_b, 'soft url purge: the stored ETag');
is((cond_of('/p/b'))[-1], "inm=\"p_b-v1\" ims=$LM{1}", 'soft url purge: asked conditionally');
($seen, $workers) = many('/p/b', 16);
is_deeply($seen, { "HIT /p/b v=1\n" => 16 }, 'soft url purge: then HITs only');
is($workers, 2, 'soft url purge: in both workers');
$s1 = status();
is($s1->{revalidated_unchanged} - $s0->{revalidated_unchanged}, 1,
    'soft url purge: one revalidation for both workers');

($p, $j) = purge('{"url": "/p/*", "soft": true}');
is($p->{status}, 200, 'soft prefix purge: 200');
$r = get('/p/b');
is($r->{cs}, 'REVALIDATED', 'soft prefix purge: REVALIDATED');
is($r->{body}, "/p/b v=1\n", 'soft prefix purge: the stored bytes');
($p, $j) = purge('{"tag": "t-p_b", "soft": true}');
is($p->{status}, 200, 'soft tag purge: 200');
$r = get('/p/b');
is($r->{cs}, 'REVALIDATED', 'soft tag purge: REVALIDATED');
is($r->{body}, "/p/b v=1\n", 'soft tag purge: the stored bytes');
is(scalar(cond_of('/p/b')), 4, 'soft: one origin request per purge');

# The client's matching conditional on a soft-purged entry: revalidated, then its 304.
purge('{"url": "/p/b", "soft": true}');
$r = get('/p/b', 'If-None-Match' => $etag_b);
is("$r->{status} $r->{xc}", '304 REVALIDATED',
    'soft, client If-None-Match: a 304 after the revalidation');
is((cond_of('/p/b'))[-1], "inm=\"p_b-v1\" ims=$LM{1}",
    'soft, client If-None-Match: the origin got the stored validators');
# HEAD on a soft-purged entry.
purge('{"url": "/p/b", "soft": true}');
$r = parse_response(http_head('/p/b')) // { headers => {} };
is(($r->{status} // 0) . ' ' . ($r->{headers}{'x-cache-status'} // ''), '200 REVALIDATED',
    'soft, HEAD: REVALIDATED');
is($r->{body}, '', 'soft, HEAD: no body');
is(get('/p/b')->{xc}, 'HIT', 'soft, HEAD: then a GET HIT');
is(scalar(cond_of('/p/b')), 6, 'soft: one origin request per purge, still');

# Changed at the origin: new bytes replace the entry, even for a client holding the old
# ETag (its If-None-Match must not turn into a 304 of the old version).
set_state('v_p_b', 2);
($p, $j) = purge('{"url": "/p/b", "soft": true}');
$s0 = status();
$r = get('/p/b', 'If-None-Match' => $etag_b);
is($r->{status}, 200, 'soft, changed: the client\'s old ETag gets a 200');
is($r->{body}, "/p/b v=2\n", 'soft, changed: the new bytes');
is($r->{cs}, 'EXPIRED', 'soft, changed: EXPIRED');
is($r->{xc}, 'MISS', 'soft, changed: X-Cache MISS');
is($r->{headers}{etag}, '"p_b-v2"', 'soft, changed: the new ETag');
$s1 = status();
is($s1->{revalidated_changed} - $s0->{revalidated_changed}, 1, 'soft, changed: revalidated_changed +1');
($seen) = many('/p/b', 6);
is_deeply($seen, { "HIT /p/b v=2\n" => 6 }, 'soft, changed: then HITs of the new bytes');

###############################################################################
# 2. A static root: nginx's static handler is the content handler.

$r = get('/s/page.html');
is($r->{xc}, 'MISS', 'static: filled');
my $etag_s = $r->{headers}{etag};
like($etag_s // '', qr/^"[0-9a-f]+-[0-9a-f]+"$/, 'static: nginx\'s ETag');
($p) = purge('{"url": "/s/page.html", "soft": true}');
$s0 = status();
$r = get('/s/page.html');
is($r->{cs}, 'REVALIDATED', 'static, unchanged: REVALIDATED');
is($r->{body}, $page1, 'static, unchanged: the stored bytes');
is($r->{headers}{etag}, $etag_s, 'static, unchanged: the same ETag');
$s1 = status();
is($s1->{revalidated_unchanged} - $s0->{revalidated_unchanged}, 1,
    'static, unchanged: revalidated_unchanged +1');
is(get('/s/page.html')->{xc}, 'HIT', 'static, unchanged: then a HIT');
purge('{"url": "/s/page.html", "soft": true}');
$r = get('/s/page.html', Range => 'bytes=0-11');
is("$r->{status} $r->{cs}", '206 REVALIDATED', 'static, Range: a 206 after the revalidation');
is($r->{body}, substr($page1, 0, 12), 'static, Range: of the stored bytes');

$t->write_file('site/s/page.html', $page2);
utime time() + 10, time() + 10, "$dir/site/s/page.html";
($p) = purge('{"url": "/s/page.html", "soft": true}');
$s0 = status();
$r = get('/s/page.html');
is($r->{body}, $page2, 'static, changed: the new bytes');
is($r->{cs}, 'EXPIRED', 'static, changed: EXPIRED');
isnt($r->{headers}{etag}, $etag_s, 'static, changed: a new ETag');
$s1 = status();
is($s1->{revalidated_changed} - $s0->{revalidated_changed}, 1,
    'static, changed: revalidated_changed +1');
$r = get('/s/page.html');
is("$r->{xc} $r->{body}", "HIT $page2", 'static, changed: then a HIT of the new bytes');

###############################################################################
# 3. Variants are kept by an unchanged revalidation, replaced by a changed one.

$r = get('/img/photo.jpg', Accept => $AVIF);
is($r->{xc}, 'MISS', 'variants: the original filled');
my $etag_img = $r->{headers}{etag};
ok(eventually(sub { variants_of('/img/photo.jpg') eq 'avif,original,webp' }),
    'variants: webp and avif built')
    or diag('variants: ' . variants_of('/img/photo.jpg'));
my $avif = get('/img/photo.jpg', Accept => $AVIF);
my $webp = get('/img/photo.jpg', Accept => $WEBP);
is($avif->{headers}{'content-type'}, 'image/avif', 'variants: an AVIF client gets AVIF');
is($webp->{headers}{'content-type'}, 'image/webp', 'variants: a WebP client gets WebP');
my $builds = status()->{builds_done};

($p) = purge('{"url": "/img/photo.jpg", "soft": true}');
my $log_before = length static_log();
$r = get('/img/photo.jpg', Accept => $AVIF);
is($r->{cs}, 'REVALIDATED', 'variants, unchanged: the AVIF request REVALIDATED');
is($r->{headers}{'content-type'}, 'image/avif', 'variants, unchanged: served the kept AVIF');
ok($r->{body} eq $avif->{body}, 'variants, unchanged: the same AVIF bytes');
is($r->{headers}{etag}, $avif->{headers}{etag}, 'variants, unchanged: the same AVIF ETag');
like(substr(static_log(), $log_before),
    qr{^GET /img/photo\.jpg 304 inm=\Q$etag_img\E ims=\S}m,
    'variants, unchanged: the origin was asked with the original\'s validators, answered 304');
($seen, $workers) = many('/img/photo.jpg', 16, Accept => $WEBP);
is_deeply([map { s/ .*//sr } keys %$seen], ['HIT'], 'variants, unchanged: WebP clients HIT');
ok((keys %$seen) == 1 && (keys %$seen)[0] eq "HIT $webp->{body}",
    'variants, unchanged: the same WebP bytes in both workers');
sleep 0.5;    # a rebuild, if one were queued, would be done by now
is(status()->{builds_done}, $builds, 'variants, unchanged: builds_done flat');
is(variants_of('/img/photo.jpg'), 'avif,original,webp', 'variants, unchanged: all three stored');

$t->write_file('origin/img/photo.jpg', $jpg2);
utime time() + 10, time() + 10, "$dir/origin/img/photo.jpg";
($p) = purge('{"url": "/img/photo.jpg", "soft": true}');
$s0 = status();
$r = get('/img/photo.jpg', Accept => $AVIF);
is($r->{cs}, 'EXPIRED', 'variants, changed: EXPIRED');
is($r->{headers}{'content-type'}, 'image/jpeg',
    'variants, changed: the new original served while the variants are rebuilt');
ok($r->{body} eq $jpg2, 'variants, changed: the new original\'s bytes');
$s1 = status();
is($s1->{revalidated_changed} - $s0->{revalidated_changed}, 1,
    'variants, changed: revalidated_changed +1');
ok(eventually(sub { variants_of('/img/photo.jpg') eq 'avif,original,webp' }),
    'variants, changed: rebuilt')
    or diag('variants: ' . variants_of('/img/photo.jpg'));
my $avif2 = get('/img/photo.jpg', Accept => $AVIF);
is("$avif2->{xc} $avif2->{headers}{'content-type'}", 'HIT image/avif',
    'variants, changed: an AVIF HIT again');
ok($avif2->{body} ne $avif->{body}, 'variants, changed: other AVIF bytes');
isnt($avif2->{headers}{etag}, $avif->{headers}{etag}, 'variants, changed: another AVIF ETag');
cmp_ok(status()->{builds_done}, '>=', $builds + 2, 'variants, changed: builds_done moved');

###############################################################################
# 4. No validator: the bytes decide.

$r = get('/p/nv');
is($r->{xc}, 'MISS', 'no validator: filled');
($p) = purge('{"url": "/p/nv", "soft": true}');
$s0 = status();
$r = get('/p/nv');
is($r->{cs}, 'REVALIDATED', 'no validator, same bytes: REVALIDATED');
is($r->{body}, "/p/nv v=1\n", 'no validator, same bytes: the body');
is((cond_of('/p/nv'))[-1], 'inm=- ims=-', 'no validator: nothing conditional to send');
$s1 = status();
is($s1->{revalidated_unchanged} - $s0->{revalidated_unchanged}, 1,
    'no validator, same bytes: revalidated_unchanged +1');
is($s1->{revalidated_changed} - $s0->{revalidated_changed}, 0,
    'no validator, same bytes: revalidated_changed flat');
set_state('v_p_nv', 2);
($p) = purge('{"url": "/p/nv", "soft": true}');
$s0 = status();
$r = get('/p/nv');
is($r->{body}, "/p/nv v=2\n", 'no validator, other bytes: the new body');
is($r->{cs}, 'EXPIRED', 'no validator, other bytes: EXPIRED');
$s1 = status();
is($s1->{revalidated_changed} - $s0->{revalidated_changed}, 1,
    'no validator, other bytes: revalidated_changed +1');
is($s1->{revalidated_unchanged} - $s0->{revalidated_unchanged}, 0,
    'no validator, other bytes: revalidated_unchanged flat');
is(get('/p/nv')->{body}, "/p/nv v=2\n", 'no validator: then the new body from the store');

###############################################################################
# 5. A hard purge racing a slow revalidation wins.

$r = get('/p/slow');
is("$r->{xc} $r->{body}", "MISS /p/slow v=1\n", 'race: v1 filled');
($p) = purge('{"url": "/p/slow", "soft": true}');
my $slow = http_start("GET /p/slow HTTP/1.0\r\nHost: localhost\r\n\r\n");
ok(eventually(sub { grep { /^inm=/ && !/^inm=- / } cond_of('/p/slow') }, 5),
    'race: the origin holds a conditional request (its 304 comes in 1.2 s)');
set_state('v_p_slow', 2);
my $t0 = time();
($p, $j) = purge('{"url": "/p/slow"}');
is($p->{status}, 200, 'race: the hard purge\'s receipt');
is($j->{soft}, JSON::PP::false, 'race: a hard purge');
my $receipt_early = time() - $t0 < 1.0;
ok($receipt_early, 'race: the receipt came before the held 304');
my (@bad, %w);
my ($before, $before_workers) = race_after('/p/slow', 16);
my $before_done = time() - $t0;
my $slow_r = parse_response(http_end($slow)) // { headers => {}, body => '' };
for (1 .. 16) {
    my $x = get('/p/slow');
    push @bad, "$x->{cs} $x->{body}" if $x->{body} ne "/p/slow v=2\n";
    $w{$x->{worker}}++;
}
is_deeply([grep { !/ \/p\/slow v=2\n$/ } keys %$before], [],
    'race: requests after the receipt (before the 304 is in) get the new bytes')
    or diag(explain($before));
is($before_workers, 2, 'race: those came from both workers');
is($slow_r->{body}, "/p/slow v=2\n",
    'race: the revalidating request, fenced, looked up afresh: the new bytes')
    or diag("got " . ($slow_r->{headers}{'x-cache-status'} // '') . " $slow_r->{body}");
is_deeply(\@bad, [], 'race: after the slow 304 came back, never the old bytes');
is(scalar keys %w, 2, 'race: checked in both workers');
is(variants_of('/p/slow'), 'original', 'race: one original stored');
is(get('/p/slow')->{body}, "/p/slow v=2\n", 'race: and it is the new one');

# Several requests after the receipt, at once on new connections (both workers), while the
# old 304 is still held: none gets the old bytes.
sub race_after {
    my ($uri, $n) = @_;
    my @socks = map { http_start("GET $uri HTTP/1.0\r\nHost: localhost\r\n\r\n") } 1 .. $n;
    my (%seen, %w);
    for (@socks) {
        my $x = parse_response(http_end($_)) // { headers => {}, body => '' };
        $seen{($x->{headers}{'x-cache-status'} // '') . " $x->{body}"}++;
        $w{$x->{headers}{'x-worker'} // '?'}++;
    }
    return (\%seen, scalar keys %w);
}

sub held_conditional {
    my ($path, $n) = @_;
    return eventually(sub { cond_of($path) >= $n }, 5);
}

###############################################################################
# 5b. A hard tag purge racing a slow revalidation without validators (a 200 of the old
# bytes, held): the tag purge deletes nothing at once, the fence alone must hold.

$r = get('/p/slownv');
is("$r->{xc} $r->{body}", "MISS /p/slownv v=1\n", 'tag race: v1 filled');
purge('{"url": "/p/slownv", "soft": true}');
set_state('hold_p_slownv', 1);
$slow = http_start("GET /p/slownv HTTP/1.0\r\nHost: localhost\r\n\r\n");
ok(held_conditional('/p/slownv', 2), 'tag race: the origin holds the old bytes');
set_state('hold_p_slownv', 0);
set_state('v_p_slownv', 2);
($p, $j) = purge('{"tag": "t-p_slownv"}');
is("$p->{status} $j->{scope}", '200 tag', 'tag race: the hard tag purge\'s receipt');
($seen, $workers) = race_after('/p/slownv', 8);
is_deeply([grep { !/ \/p\/slownv v=2\n$/ } keys %$seen], [],
    'tag race: requests after the receipt never get the old bytes')
    or diag(explain($seen));
$slow_r = parse_response(http_end($slow)) // { headers => {}, body => '' };
is($slow_r->{body}, "/p/slownv v=2\n", 'tag race: nor does the revalidating request');
($seen) = many('/p/slownv', 8);
is_deeply([grep { !/ \/p\/slownv v=2\n$/ } keys %$seen], [],
    'tag race: nor any request after it')
    or diag(explain($seen));

###############################################################################
# 5c. A soft purge during a slow unchanged revalidation is not absorbed by it: the 304 was
# decided before that purge, so the next request asks again.

purge('{"url": "/p/slow", "soft": true}');
my $n_slow = () = cond_of('/p/slow');
$slow = http_start("GET /p/slow HTTP/1.0\r\nHost: localhost\r\n\r\n");
ok(held_conditional('/p/slow', $n_slow + 1), 'soft race: the origin holds a 304');
($p, $j) = purge('{"url": "/p/slow", "soft": true}');
is($p->{status}, 200, 'soft race: the second soft purge\'s receipt');
$slow_r = parse_response(http_end($slow)) // { headers => {}, body => '' };
is(($slow_r->{headers}{'x-cache-status'} // '') . " $slow_r->{body}",
    "REVALIDATED /p/slow v=2\n", 'soft race: the slow request REVALIDATED');
# The slow request itself asked again (its 304 predates the second purge); then the entry
# is fresh.
$r = get('/p/slow');
is($r->{cs}, 'HIT', 'soft race: the slow request revalidated again, so the next one hits');
is(scalar(cond_of('/p/slow')), $n_slow + 2, 'soft race: the origin was asked again');

###############################################################################
# 5d. The same with a changed answer (the revalidation replaces the entry): a soft purge
# while the new bytes are on their way still marks them stale.

$r = get('/p/slowch');
is("$r->{xc} $r->{body}", "MISS /p/slowch v=1\n", 'soft race, changed: v1 filled');
set_state('v_p_slowch', 2);
set_state('hold_p_slowch', 1);
purge('{"url": "/p/slowch", "soft": true}');
$slow = http_start("GET /p/slowch HTTP/1.0\r\nHost: localhost\r\n\r\n");
ok(held_conditional('/p/slowch', 2), 'soft race, changed: the origin holds v2');
set_state('hold_p_slowch', 0);
set_state('v_p_slowch', 3);
($p, $j) = purge('{"url": "/p/slowch", "soft": true}');
is($p->{status}, 200, 'soft race, changed: the second soft purge\'s receipt');
$slow_r = parse_response(http_end($slow)) // { headers => {}, body => '' };
# The replacement it brought is stale at once (the second soft purge came after the origin
# was asked), so the slow request itself revalidates once more, against v2, and gets v3.
is("$slow_r->{headers}{'x-cache-status'} $slow_r->{body}", "EXPIRED /p/slowch v=3\n",
    'soft race, changed: the slow request revalidates its stale replacement and gets v3');
$r = get('/p/slowch');
is("$r->{cs} $r->{body}", "HIT /p/slowch v=3\n",
    'soft race, changed: then v3 is fresh, never a HIT of v2');
is((cond_of('/p/slowch'))[-1] // '', 'inm="p_slowch-v2" ims=-',
    'soft race, changed: asked with the v2 validator');

###############################################################################
# 7. Collapsed revalidation: many requests, both workers, one conditional request.

$r = get('/p/coll');
is($r->{xc}, 'MISS', 'collapse: filled');
purge('{"url": "/p/coll", "soft": true}');
$s0 = status();
($seen, $workers) = race_after('/p/coll', 16);
is_deeply($seen, { "REVALIDATED /p/coll v=1\n" => 1, "COLLAPSED /p/coll v=1\n" => 15 },
    'collapse: one REVALIDATED, the others COLLAPSED on it, all the stored bytes')
    or diag(explain($seen));
is($workers, 2, 'collapse: in both workers');
is_deeply([cond_of('/p/coll')], ['inm=- ims=-', 'inm="coll" ims=-'],
    'collapse: one conditional origin request');
$s1 = status();
is($s1->{revalidations} - $s0->{revalidations}, 1, 'collapse: revalidations +1');

###############################################################################
# 8. A 304 whose strong ETag is not the stored one updates nothing (RFC 9111 4.3.4): the
# stored bytes are not confirmed by it.

$r = get('/p/mm');
is("$r->{xc} $r->{headers}{etag}", 'MISS "mm-v1"', 'mismatched 304: v1 filled');
set_state('v_p_mm', 2);
purge('{"url": "/p/mm", "soft": true}');
$r = get('/p/mm');
isnt($r->{cs}, 'REVALIDATED', 'mismatched 304: not REVALIDATED');
is($r->{body}, "/p/mm v=2\n", 'mismatched 304: the current bytes, fetched unconditionally');

###############################################################################
# 6. pagespeed_cache_revalidate off: a soft-purged entry is refilled unconditionally.

$r = get('/off/x');
is($r->{xc}, 'MISS', 'revalidate off: filled');
($p) = purge('{"url": "/off/x", "soft": true}');
$s0 = status();
$r = get('/off/x');
is($r->{cs}, 'EXPIRED', 'revalidate off: EXPIRED');
is($r->{xc}, 'MISS', 'revalidate off: X-Cache MISS');
is($r->{body}, "/off/x v=1\n", 'revalidate off: the body');
is_deeply([cond_of('/off/x')], ['inm=- ims=-', 'inm=- ims=-'],
    'revalidate off: the origin was asked unconditionally');
$s1 = status();
is($s1->{revalidations} - $s0->{revalidations}, 0, 'revalidate off: no revalidation counted');
is(get('/off/x')->{xc}, 'HIT', 'revalidate off: then a HIT');
###############################################################################
# 9. A soft purge of everything: every entry revalidates, none is rebuilt or refetched.

($p, $j) = purge('{"scope": "all", "confirm": "purge-all", "soft": true}');
is("$p->{status} $j->{soft}", '200 1', 'soft all: 200, soft');
$s0 = status();
$r = get('/p/b');
is("$r->{cs} $r->{body}", "REVALIDATED /p/b v=2\n", 'soft all: /p/b REVALIDATED');
is((cond_of('/p/b'))[-1], "inm=\"p_b-v2\" ims=$LM{2}", 'soft all: asked conditionally');
$r = get('/s/page.html');
is("$r->{cs} $r->{body}", "REVALIDATED $page2", 'soft all: the static page REVALIDATED');
$r = get('/img/photo.jpg', Accept => $AVIF);
is("$r->{cs} $r->{headers}{'content-type'}", 'REVALIDATED image/avif',
    'soft all: the AVIF variant REVALIDATED');
ok($r->{body} eq $avif2->{body}, 'soft all: the same AVIF bytes');
$s1 = status();
is($s1->{revalidated_unchanged} - $s0->{revalidated_unchanged}, 3,
    'soft all: three unchanged revalidations');
is($s1->{builds_done}, $s0->{builds_done}, 'soft all: nothing rebuilt');
