#!/usr/bin/perl

# Variants never outlive the bytes they were built from, through nginx with two workers.
#
# An original can be evicted while the variants built from it stay: FIFO eviction takes the
# oldest record first, and the original is always older than what is built from it. The next
# client that cannot take those variants fills the original again, and by then the origin may
# have new bytes; the old variants, soft-purged, are still stored beside the new original.
# A client that can take them finds one stale, and it is revalidated through the original it
# would be built from: the new one, which the origin confirms with a 304. That 304 says
# nothing about bytes built from the old original; making them fresh again served the old
# version as REVALIDATED (the soak's "old version served as fresh"). They are dropped
# instead, the client gets the new original, and the variant is built again from it.
#
# A 1 MiB segment has one shard, so small responses to other URLs evict in a known order.
# One member of each family: gzip of a stylesheet, WebP of a JPEG.

use strict;
use warnings;

use Test::More;
use IO::Uncompress::Gunzip qw/gunzip $GunzipError/;

use lib 't/lib';
use Test::Nginx;
use Test::Nginx::Images qw/jpeg/;
use Test::Pagespeed qw/purge_json status_json variants_of eventually/;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(22);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    pagespeed_cache_valid 10m;
    types { text/css css; text/plain txt; image/jpeg jpg; }
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=1m max_object=128k;
    pagespeed_build_threads 1;

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        add_header X-Cache-Status $pagespeed_cache_status always;

        location / {
            pagespeed_cache on;
            pagespeed_variants gzip webp;
            # Built on a hit only: a build on fill would replace the old variants before
            # the client below could find them (in production a full build queue drops it).
            pagespeed_build_on_fill off;
            proxy_pass http://127.0.0.1:8082;
        }
        # Small responses that evict, with nothing built from them.
        location /fill/ {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8082;
        }
        location = /purge { pagespeed_purge; }
        location = /status { pagespeed_status; }
    }

    # A static origin: nginx's own ETags (size and mtime) and its own 304s.
    server {
        listen 127.0.0.1:8082;
        root %%TESTDIR%%/site;
        expires 1h;
    }
}
EOF

my $css_v1 = join '', map { ".old-$_ { margin: ${_}px; padding: 4px; }\n" } 1 .. 1500;
my $css_v2 = join '', map { ".new-$_ { margin: ${_}px; color: #123; }\n" } 1 .. 1400;
my ($jpg_v1, $jpg_v2) = (jpeg(320, 240, 1), jpeg(336, 256, 2));
$t->write_file('site/a.css', $css_v1);
$t->write_file('site/photo.jpg', $jpg_v1);
$t->write_file("site/fill/$_.txt", "filler $_\n" . ('x' x 1500)) for 1 .. 1500;

$t->run();

###############################################################################

sub get {
    my ($uri, %h) = @_;
    return parse_response(http_get($uri, headers => \%h)) // { headers => {}, body => '' };
}

sub plain {
    my ($r) = @_;
    return $r->{body} unless ($r->{headers}{'content-encoding'} // '') eq 'gzip';
    my $out;
    gunzip(\$r->{body} => \$out) or return "gunzip: $GunzipError";
    return $out;
}

my @GZ = ('Accept-Encoding' => 'gzip');
my @WEBP = ('Accept' => 'image/webp,*/*');

###############################################################################
# The originals, and their variants built on the first hits.

is(get('/a.css', @GZ)->{headers}{'x-cache'}, 'MISS', 'stylesheet filled');
is(get('/photo.jpg', @WEBP)->{headers}{'x-cache'}, 'MISS', 'photo filled');
# Room between the originals and their variants in the ring: once the originals are evicted,
# the new ones below evict these, not the variants.
get("/fill/$_.txt") for 1 .. 150;
get('/a.css', @GZ);
get('/photo.jpg', @WEBP);
ok(eventually(sub { variants_of('/a.css') eq 'gzip,original' }), 'gzip built')
    or diag(variants_of('/a.css'));
ok(eventually(sub { variants_of('/photo.jpg') eq 'original,webp' }), 'WebP built')
    or diag(variants_of('/photo.jpg'));
my $old_gz = get('/a.css', @GZ);
my $old_webp = get('/photo.jpg', @WEBP);
is($old_gz->{headers}{'content-encoding'}, 'gzip', 'a gzip client gets the gzip variant');
is($old_webp->{headers}{'content-type'}, 'image/webp', 'a WebP client gets the WebP variant');

# Other URLs until both originals are evicted and both variants are still stored.
my ($css, $photo) = ('', '');
for my $i (151 .. 1500) {
    get("/fill/$i.txt");
    ($css, $photo) = (variants_of('/a.css'), variants_of('/photo.jpg'));
    last if $css ne 'gzip,original' && $photo ne 'original,webp';
}
is("$css $photo", 'gzip webp', 'the originals are evicted before their variants');

###############################################################################
# New bytes at the origin, a soft purge, and a client that takes no variant fills the
# originals again.

$t->write_file('site/a.css', $css_v2);
$t->write_file('site/photo.jpg', $jpg_v2);
my ($p) = purge_json('{"urls": ["/a.css", "/photo.jpg"], "soft": true}');
is($p->{status}, 200, 'soft purge');

my $r = get('/a.css');
is(($r->{headers}{'x-cache'} // '') . ' ' . ($r->{body} eq $css_v2 ? 'v2' : 'not v2'),
    'MISS v2', 'an identity client fills the new stylesheet');
$r = get('/photo.jpg');
is(($r->{headers}{'x-cache'} // '') . ' ' . ($r->{body} eq $jpg_v2 ? 'v2' : 'not v2'),
    'MISS v2', 'a JPEG-only client fills the new photo');
is(variants_of('/a.css') . ' ' . variants_of('/photo.jpg'), 'gzip,original original,webp',
    'the old variants are still stored beside the new originals');

###############################################################################
# A client that takes the old variants: never their bytes again.

$r = get('/a.css', @GZ);
ok(plain($r) eq $css_v2, 'gzip client: the new stylesheet, not the old gzip variant');
isnt($r->{headers}{etag}, $old_gz->{headers}{etag}, 'gzip client: not the old variant\'s ETag');
is($r->{headers}{'x-cache-status'}, 'REVALIDATED', 'gzip client: the new original revalidated');

$r = get('/photo.jpg', @WEBP);
ok($r->{body} eq $jpg_v2, 'WebP client: the new photo, not the old WebP variant');
isnt($r->{headers}{etag}, $old_webp->{headers}{etag}, 'WebP client: not the old variant\'s ETag');
is($r->{headers}{'x-cache-status'}, 'REVALIDATED', 'WebP client: the new original revalidated');

###############################################################################
# The variants are built again, from the new originals (on those hits).

ok(eventually(sub { variants_of('/a.css') eq 'gzip,original' }), 'gzip built again');
ok(eventually(sub { variants_of('/photo.jpg') eq 'original,webp' }), 'WebP built again');
$r = get('/a.css', @GZ);
is(($r->{headers}{'content-encoding'} // '') . ' ' . (plain($r) eq $css_v2 ? 'v2' : 'not v2'),
    'gzip v2', 'gzip client: the gzip variant of the new stylesheet');
$r = get('/photo.jpg', @WEBP);
is($r->{headers}{'content-type'}, 'image/webp', 'WebP client: a WebP again');
ok($r->{body} ne $old_webp->{body}, 'WebP client: built from the new photo');

###############################################################################
