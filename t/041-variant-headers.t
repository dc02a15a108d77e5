#!/usr/bin/perl

# What every response of a variants location carries, for every client profile and every
# alternate kind it is served (original, WebP, AVIF, resized, Save-Data, re-encoded, br,
# gzip, identity): status, Content-Type, Content-Encoding, Vary, ETag, and a body that
# decodes as what its type says, at the width its variant promises. The same Vary on the
# MISS, on every HIT, on 304, HEAD and 206. A location without variants carries only the
# origin's own Vary.
#
# Bodies are decoded by real decoders (djpeg, dwebp, avifdec, brotli; PNG and gzip in Perl).

use strict;
use warnings;

use Test::More;
use Compress::Zlib qw(memGunzip uncompress);
use File::Temp qw(tempfile);
use Time::HiRes qw(sleep time);

use lib 't/lib';
use Test::Nginx;
use Test::Nginx::Images qw(png jpeg);

for my $tool (qw(djpeg dwebp avifdec brotli)) {
    next if grep { -x "$_/$tool" } split /:/, $ENV{PATH};
    BAIL_OUT("$tool is missing: install libjpeg-turbo-progs webp libavif-bin brotli");
}

my $IMAGE_VARY = 'Accept, Save-Data, User-Agent, Sec-CH-Viewport-Width, Viewport-Width, '
    . 'Sec-CH-DPR, DPR';
my $TEXT_VARY = 'Accept-Encoding';

my $CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36';
my $IPHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1';
my $IPAD = 'Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1';
my $ANDROID = 'Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36';
my $SAFARI_ACCEPT = 'image/webp,image/avif,image/jxl,image/heic,video/*;q=0.8,image/png,'
    . 'image/svg+xml,image/*;q=0.8,*/*;q=0.5';
my $BROWSER_AE = 'gzip, deflate, br';

# name => [request headers, ideal image variant label, ideal text label]
my @PROFILES = (
    ['desktop avif+webp', { Accept => 'image/avif,image/webp,*/*', 'User-Agent' => $CHROME,
        'Accept-Encoding' => $BROWSER_AE }, 'avif', 'br'],
    ['webp only', { Accept => 'image/webp,*/*', 'User-Agent' => $CHROME }, 'webp', 'original'],
    ['no Accept', { 'User-Agent' => $CHROME }, 'original', 'original'],
    ['iPhone', { Accept => $SAFARI_ACCEPT, 'User-Agent' => $IPHONE,
        'Accept-Encoding' => $BROWSER_AE }, 'avif-480', 'br'],
    ['iPad', { Accept => $SAFARI_ACCEPT, 'User-Agent' => $IPAD }, 'avif-768', 'original'],
    ['phone without modern formats', { Accept => '*/*', 'User-Agent' => $ANDROID },
        'SRC-480', 'original'],
    ['viewport hint, DPR 2', { Accept => 'image/webp,*/*', 'Sec-CH-Viewport-Width' => '400',
        'Sec-CH-DPR' => '2' }, 'webp-480-2x', 'original'],
    ['Save-Data', { Accept => 'image/webp,*/*', 'Save-Data' => 'on' }, 'webp-sd', 'original'],
    ['Save-Data without WebP', { Accept => '*/*', 'Save-Data' => 'on' }, 'SRC-sd', 'original'],
    ['Accept-Encoding: br', { 'Accept-Encoding' => 'br' }, 'original', 'br'],
    ['Accept-Encoding: gzip', { 'Accept-Encoding' => 'gzip' }, 'original', 'gzip'],
    ['no Accept-Encoding', {}, 'original', 'original'],
);

# url => [kind, source format, width]
my %URLS = (
    '/photo.png' => ['image', 'png', 1200],
    '/photo.jpg' => ['image', 'jpeg', 1200],
    '/site.css'  => ['text'],
    # The module in front of a static root (no proxy): the same promises.
    '/static/photo.jpg' => ['image', 'jpeg', 1200],
    # Narrower than every viewport class: those clients get the full-size variants.
    '/thumb.jpg' => ['image', 'jpeg', 400],
);

my $per_profile = 12;
my $t = Test::Nginx->new()->has(qw/http proxy/)
    ->plan(4 * keys(%URLS) + keys(%URLS) * @PROFILES * $per_profile + 6);

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
        image/jpeg jpg;
        text/css css;
    }
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=64m max_object=8m;
    pagespeed_build_threads 1;

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        location / {
            pagespeed_cache on;
            pagespeed_variants webp avif resize save-data gzip br;
            proxy_pass http://127.0.0.1:8081;
        }
        location /static/ {
            pagespeed_cache on;
            pagespeed_variants webp avif resize save-data gzip br;
            alias %%TESTDIR%%/site/;
        }
        location /plain/ {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081/flavoured/;
        }
        location = /status { pagespeed_status; }
    }

    server {
        listen 127.0.0.1:8081;
        root %%TESTDIR%%/site;
        expires 1h;
        location /static/ {
            alias %%TESTDIR%%/site/;
        }
        location /flavoured/ {
            alias %%TESTDIR%%/site/;
            add_header Vary X-Flavour;
        }
    }
}
EOF

my $css = join '', map { ".card-$_ { margin: ${_}px; padding: 4px; color: #333; }\n" } 1 .. 300;
my %source = (
    '/photo.png' => png(1200, 900, 1),
    '/photo.jpg' => jpeg(1200, 900, 1),
    '/thumb.jpg' => jpeg(400, 300, 3),
    '/site.css'  => $css,
);
$t->write_file("site$_", $source{$_}) for keys %source;
$source{'/static/photo.jpg'} = $source{'/photo.jpg'};
$t->run();

###############################################################################
# decoding

sub run_decoder {
    my ($body, $suffix, @cmd) = @_;
    my ($fh, $in) = tempfile(SUFFIX => $suffix, UNLINK => 1, DIR => $t->testdir);
    binmode $fh;
    print $fh $body;
    close $fh;
    my $out = "$in.out.png";
    my $cmd = join ' ', map { s/IN/$in/r =~ s/OUT/$out/r } @cmd;
    my $pnm = `$cmd 2>/dev/null`;
    return ($pnm, $out);
}

sub png_size {
    my ($png) = @_;
    return () unless defined $png && substr($png, 0, 8) eq "\x89PNG\r\n\x1a\n";
    return unpack('NN', substr($png, 16, 8));
}

# Decodes a PNG fully in Perl: every IDAT inflates to height rows of pixels plus filter bytes.
sub png_decodes {
    my ($png) = @_;
    my ($w, $h) = png_size($png) or return;
    my ($pos, $idat, $type) = (8, '', '');
    while ($pos + 8 <= length $png) {
        my ($len, $t) = unpack('Na4', substr($png, $pos, 8));
        $idat .= substr($png, $pos + 8, $len) if $t eq 'IDAT';
        $type = $t;
        $pos += 12 + $len;
    }
    my $raw = uncompress($idat);
    my $bpp = { 0 => 1, 2 => 3, 3 => 1, 4 => 2, 6 => 4 }->{ord substr($png, 25, 1)} // 0;
    return () unless $type eq 'IEND' && defined $raw && length($raw) == $h * (1 + $w * $bpp);
    return ($w, $h);
}

sub pnm_size {
    my ($pnm) = @_;
    my ($w, $h) = ($pnm // '') =~ /^P[56]\s+(?:#[^\n]*\n\s*)*(\d+)\s+(\d+)\s+\d+\s/;
    return defined $w ? ($w, $h) : ();
}

# (width, height) of an image body decoded as $type, or () if it does not decode.
sub image_size {
    my ($type, $body) = @_;
    if ($type eq 'image/png') {
        return png_decodes($body);
    } elsif ($type eq 'image/jpeg') {
        return pnm_size((run_decoder($body, '.jpg', 'djpeg', '-pnm', 'IN'))[0]);
    } elsif ($type eq 'image/webp') {
        return pnm_size((run_decoder($body, '.webp', 'dwebp', '-quiet', '-ppm', 'IN', '-o', '-'))[0]);
    } elsif ($type eq 'image/avif') {
        my (undef, $out) = run_decoder($body, '.avif', 'avifdec', 'IN', 'OUT');
        open my $fh, '<:raw', $out or return ();
        local $/;
        my $png = <$fh>;
        return png_decodes($png);
    }
    return ();
}

sub brotli_decode {
    my ($body) = @_;
    my ($out) = run_decoder($body, '.br', 'brotli', '-d', '-c', 'IN');
    return $out;
}

###############################################################################
# what a response must carry

my %origin_etag;
for my $u (keys %URLS) {
    my $r = parse_response(http_get($u, port => port(8081)));
    $origin_etag{$u} = $r->{headers}{etag};
}

my %TYPE = (webp => 'image/webp', avif => 'image/avif', png => 'image/png', jpeg => 'image/jpeg');

# The variant label a response claims, from its ETag: "original" for the origin's own.
sub label_of {
    my ($u, $r) = @_;
    my $etag = $r->{headers}{etag} // return undef;
    return 'original' if $etag eq $origin_etag{$u};
    my $base = $origin_etag{$u} =~ s/"$//r;
    return $etag =~ /^\Q$base\E-([a-z0-9-]+)"$/ ? $1 : undef;
}

# Problems with one response to $u (empty list: it carries what it must).
sub problems {
    my ($u, $r, %o) = @_;
    my ($kind, $src, $width) = @{$URLS{$u}};
    my @p;
    my $h = $r->{headers};
    my $want_status = $o{status} // 200;
    push @p, "status $r->{status}" unless $r->{status} == $want_status;
    my $vary = $h->{vary} // '';
    my $want_vary = $kind eq 'image' ? $IMAGE_VARY : $TEXT_VARY;
    push @p, "Vary '$vary'" unless $vary eq $want_vary;
    my $label = label_of($u, $r);
    return (@p, "ETag '" . ($h->{etag} // '') . "' names no variant") unless defined $label;
    return @p if $want_status == 304;
    if ($kind eq 'image') {
        push @p, 'Accept-CH missing' unless ($h->{'accept-ch'} // '') =~ /Sec-CH-DPR/;
        push @p, 'Content-Encoding on an image' if exists $h->{'content-encoding'};
        my ($format) = $label =~ /^(webp|avif|png|jpeg)/;
        $format //= $src;
        my $type = $TYPE{$format};
        push @p, "Content-Type '" . ($h->{'content-type'} // '') . "' for $label"
            unless ($h->{'content-type'} // '') eq $type;
        return @p if $o{head} || $want_status == 206;
        my ($w) = image_size($type, $r->{body});
        my $want_w = $label =~ /-480-2x/ ? 960 : $label =~ /-480/ ? 480 : $label =~ /-768/ ? 768
            : $width;
        push @p, "body does not decode as $type" unless defined $w;
        push @p, "$label is $w px wide, not $want_w" if defined $w && $w != $want_w;
    } else {
        my $enc = $h->{'content-encoding'} // 'identity';
        my $want_enc = $label eq 'original' ? 'identity' : $label;
        push @p, "Content-Encoding $enc for $label" unless $enc eq $want_enc;
        push @p, "Content-Type " . ($h->{'content-type'} // '') unless
            ($h->{'content-type'} // '') =~ m{^text/css};
        return @p if $o{head} || $want_status == 206;
        my $plain = $enc eq 'br' ? brotli_decode($r->{body})
            : $enc eq 'gzip' ? memGunzip($r->{body}) : $r->{body};
        push @p, "$enc body does not decode to the stylesheet" unless ($plain // '') eq $css;
    }
    return @p;
}

sub get {
    my ($u, $headers, %o) = @_;
    my $raw = $o{method} && $o{method} eq 'HEAD' ? http_head($u, headers => $headers)
        : http_get($u, headers => $headers);
    return parse_response($raw) // { status => 0, headers => {}, body => '' };
}

sub ideal {
    my ($u, $image_label, $text_label) = @_;
    my ($kind, $src, $width) = @{$URLS{$u}};
    return $text_label if $kind eq 'text';
    my $label = $image_label =~ s/SRC/$src/r;
    # A class at least as wide as the image is served the full-size variant (never resized
    # up); the source's own format at full size is the original itself.
    if ($label =~ /-(480|768)(-2x)?/ && $1 * ($2 ? 2 : 1) >= $width) {
        $label =~ s/-(480|768)(-2x)?//;
        $label = 'original' if $label eq $src;
    }
    return $label;
}

###############################################################################
# the MISS carries the Vary of its kind

for my $u (sort keys %URLS) {
    my $r = get($u, $PROFILES[0][1]);
    is($r->{headers}{'x-cache'}, 'MISS', "$u: the first request is a MISS");
    is($r->{headers}{etag}, $origin_etag{$u}, "$u: the MISS carries the origin's ETag");
    is_deeply([problems($u, $r)], [], "$u: the MISS carries what it must");
    my $hit = get($u, { 'User-Agent' => $CHROME });
    is_deeply([problems($u, $hit)], [], "$u: a HIT of the original carries what it must");
}

###############################################################################
# every profile, every alternate it is served on the way to its ideal one

for my $u (sort keys %URLS) {
    for my $p (@PROFILES) {
        my ($name, $headers, $image_label, $text_label) = @$p;
        my $want = ideal($u, $image_label, $text_label);
        my (%served, @bad, $r);
        my $deadline = time() + 90;
        while (1) {
            $r = get($u, $headers);
            my $label = label_of($u, $r) // '?';
            $served{$label}++;
            push @bad, map { "$label: $_" } problems($u, $r);
            last if $label eq $want || time() > $deadline;
            sleep 0.2;
        }
        my $ctx = "$u, $name";
        is(label_of($u, $r), $want, "$ctx: served $want once built");
        is($r->{headers}{'x-cache'}, 'HIT', "$ctx: as a HIT");
        is_deeply(\@bad, [], "$ctx: every response on the way ("
            . join(', ', map { "$_ x$served{$_}" } sort keys %served) . ") carries what it must");

        # The same alternate again, conditionally, partially and as HEAD.
        my $etag = $r->{headers}{etag} // 'none';
        my $again = get($u, $headers);
        is_deeply([problems($u, $again)], [], "$ctx: a repeated HIT carries what it must");
        is($again->{headers}{etag}, $etag, "$ctx: with the same ETag");

        my $nm = get($u, { %$headers, 'If-None-Match' => $etag });
        is($nm->{status}, 304, "$ctx: If-None-Match with its ETag is a 304");
        is_deeply([problems($u, $nm, status => 304)], [], "$ctx: the 304 carries Vary and ETag");

        my $other = get($u, { %$headers, 'If-None-Match' => '"some-other-etag"' });
        is($other->{status}, 200, "$ctx: another ETag gets the full response");

        my $head = get($u, $headers, method => 'HEAD');
        is_deeply([problems($u, $head, head => 1)], [], "$ctx: HEAD carries what the GET does");
        is($head->{body}, '', "$ctx: HEAD has no body");

        my $range = get($u, { %$headers, Range => 'bytes=0-99' });
        is_deeply([problems($u, $range, status => 206)], [], "$ctx: a 206 carries Vary and ETag");
        is(length $range->{body}, 100, "$ctx: and the range asked for");
    }
}

###############################################################################
# a location without variants: only the origin's own Vary

my $miss = get('/plain/photo.png', $PROFILES[0][1]);
is($miss->{headers}{'x-cache'}, 'MISS', 'plain location: MISS');
is($miss->{headers}{vary}, 'X-Flavour', 'plain location: the MISS carries only the origin Vary');
my $hit = get('/plain/photo.png', $PROFILES[0][1]);
is($hit->{headers}{'x-cache'}, 'HIT', 'plain location: HIT');
is($hit->{headers}{vary}, 'X-Flavour', 'plain location: the HIT carries only the origin Vary');
is($hit->{headers}{'content-type'}, 'image/png', 'plain location: the original type');
ok(!exists $hit->{headers}{'accept-ch'}, 'plain location: no Accept-CH');
