#!/usr/bin/perl

# Which responses are stored, and for how long (RFC 9111 sections 3 and
# 4.2): every rule is one test that asks twice and checks whether the
# second answer came from the cache or from the origin again.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw/time sleep/;
use POSIX qw/strftime/;

use lib 't/lib';
use Test::Nginx;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(44);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    # The origin here sends no explicit freshness; the default reuses such responses only
    # under heuristic freshness (RFC 9111 4.2.2), so these tests give them a lifetime.
    pagespeed_cache_valid 10m;
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=8m max_object=64k;

    log_format cache '$request_uri $status $pagespeed_cache_status';

    server {
        listen 127.0.0.1:8080;
        server_name localhost;
        access_log %%TESTDIR%%/cache.log cache;

        pagespeed_cache on;
        proxy_http_version 1.1;

        location / {
            proxy_pass http://127.0.0.1:8081;
        }

        location /small/ {
            pagespeed_cache_max_object_size 1k;
            proxy_pass http://127.0.0.1:8081;
        }

        location /with404/ {
            pagespeed_cache_statuses 200 404;
            proxy_pass http://127.0.0.1:8081;
        }

        location /short/ {
            pagespeed_cache_valid 1s;
            proxy_pass http://127.0.0.1:8081;
        }

        location /status {
            pagespeed_status;
        }
    }
}
EOF

sub http_date { strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime($_[0])) }

# path => [status, headers] or a sub returning them; the body always says
# how many times the origin has seen the path ("n=1" first).
my %cases = (
    '/no-store' => [200, { 'Cache-Control' => 'no-store' }],
    '/no-store-2nd-line' => [200,
        ['Cache-Control' => 'max-age=60', 'Cache-Control' => 'no-store']],
    '/private' => [200, { 'Cache-Control' => 'private, max-age=60' }],
    '/no-cache' => [200, { 'Cache-Control' => 'no-cache' }],
    '/max-age-0' => [200, { 'Cache-Control' => 'max-age=0' }],
    '/set-cookie' => [200, { 'Set-Cookie' => 'id=1; Path=/' }],
    '/vary-star' => [200, { 'Vary' => '*' }],
    '/plain' => [200, {}],
    # Says 1000 bytes, sends 500 and closes.
    '/truncated' => [200, { 'Content-Length' => 1000 }, 'x' x 500],
    '/auth-plain' => [200, { 'Cache-Control' => 'max-age=60' }],
    '/auth-public' => [200, { 'Cache-Control' => 'public' }],
    '/auth-s-maxage' => [200, { 'Cache-Control' => 's-maxage=60' }],
    '/auth-must-revalidate' => [200,
        { 'Cache-Control' => 'must-revalidate, max-age=60' }],
    '/req-no-store' => [200, {}],
    '/small/1024' => [200, {}, 'x' x 1024],
    '/small/1025' => [200, {}, 'x' x 1025],
    '/small/chunked' => [200, { 'Transfer-Encoding' => 'chunked' },
        "400\r\n" . ('y' x 1024) . "\r\n400\r\n" . ('y' x 1024) . "\r\n0\r\n\r\n"],
    '/big-segment-limit' => [200, {}, 'z' x 70_000],
    '/not-found' => [404, {}],
    '/with404/not-found' => [404, {}],
    '/with404/moved' => [301, { 'Location' => '/elsewhere' }],
    '/with404/ok' => [200, {}],
    '/s-maxage-over-max-age' => [200,
        { 'Cache-Control' => 'max-age=1, s-maxage=100' }],
    '/s-maxage-short' => [200,
        { 'Cache-Control' => 's-maxage=1, max-age=100' }],
    '/max-age-over-expires' => sub {
        [200, { 'Cache-Control' => 'max-age=100',
            'Expires' => http_date(time - 3600) }];
    },
    '/max-age-short-expires-far' => sub {
        [200, { 'Cache-Control' => 'max-age=1',
            'Expires' => http_date(time + 3600) }];
    },
    '/expires-soon' => sub { [200, { 'Expires' => http_date(time + 1) }] },
    '/expires-far' => sub { [200, { 'Expires' => http_date(time + 3600) }] },
    '/expires-past' => sub { [200, { 'Expires' => http_date(time - 3600) }] },
    '/expires-invalid' => [200, { 'Expires' => '0' }],
    '/origin-age-used-up' => [200,
        { 'Cache-Control' => 'max-age=100', 'Age' => '100' }],
    '/origin-age-short' => [200,
        { 'Cache-Control' => 'max-age=2', 'Age' => '1' }],
    '/short/default' => [200, {}],
    '/default-10m' => [200, {}],
);

my %routes;
for my $path (keys %cases) {
    my $c = $cases{$path};
    $routes{$path} = sub {
        my ($status, $headers, $body) = @{ref $c eq 'CODE' ? $c->() : $c};
        $body //= "$path n=" . $t->origin_hits($path);
        return ($status, $headers, $body);
    };
}
start_origin(port => 8081, routes => \%routes);

$t->run();

###############################################################################

sub get {
    my ($uri, %h) = @_;
    return parse_response(http_get($uri, headers => \%h));
}

sub xcache { $_[0] ? $_[0]{headers}{'x-cache'} // '-' : 'no response' }

# "X-Cache of the first, X-Cache of the second, origin requests" for two
# GETs of $uri: 'BYPASS MISS 2' / 'MISS MISS 2' = not stored,
# 'MISS HIT 1' = stored.
sub twice {
    my ($uri, %h) = @_;
    my @r = map { get($uri, %h) } 1 .. 2;
    return join ' ', (map { xcache($_) } @r), $t->origin_hits($uri);
}

sub log_status {
    my ($uri, $nth) = @_;
    my @l = grep { $_->[0] eq $uri }
        map { [split / /] } split /\n/, $t->read_file('cache.log') // '';
    return @l >= $nth ? $l[$nth - 1][2] : 'no log line';
}

my @auth = (Authorization => 'Basic dXNlcjpwYXNz');

###############################################################################
# response Cache-Control and friends

is(twice('/plain'), 'MISS HIT 1', 'a plain 200 is stored');
is(twice('/no-store'), 'BYPASS BYPASS 2', 'Cache-Control: no-store: not stored');
is(twice('/no-store-2nd-line'), 'BYPASS BYPASS 2',
    'no-store in a second Cache-Control line: not stored');
is(twice('/private'), 'BYPASS BYPASS 2', 'Cache-Control: private: not stored');
is(twice('/no-cache'), 'BYPASS BYPASS 2', 'Cache-Control: no-cache: not stored');
is(twice('/max-age-0'), 'BYPASS BYPASS 2', 'max-age=0: not stored');
is(twice('/set-cookie'), 'BYPASS BYPASS 2', 'Set-Cookie: not stored');
is(twice('/vary-star'), 'BYPASS BYPASS 2', 'Vary: *: not stored');
is(log_status('/no-store', 1), 'BYPASS', 'not stored: logged as BYPASS');
is(twice('/truncated'), 'MISS MISS 2',
    'a response cut short by the origin is not stored');
like(get('/set-cookie')->{headers}{'set-cookie'}, qr/^id=1/,
    'Set-Cookie still reaches the client');

###############################################################################
# request side: Authorization, Cache-Control: no-store

is(twice('/auth-plain', @auth), 'BYPASS BYPASS 2',
    'Authorization, response with max-age only: not stored');
is(twice('/auth-public', @auth), 'MISS HIT 1',
    'Authorization, response public: stored');
is(twice('/auth-s-maxage', @auth), 'MISS HIT 1',
    'Authorization, response s-maxage: stored');
is(twice('/auth-must-revalidate', @auth), 'MISS HIT 1',
    'Authorization, response must-revalidate: stored');
is(twice('/req-no-store', 'Cache-Control' => 'no-store'), 'BYPASS BYPASS 2',
    'request Cache-Control: no-store: not stored');
is(xcache(get('/req-no-store')), 'MISS',
    'request no-store left nothing behind');

###############################################################################
# size limits

is(twice('/small/1024'), 'MISS HIT 1',
    'pagespeed_cache_max_object_size 1k: 1024 bytes stored');
is(twice('/small/1025'), 'BYPASS BYPASS 2',
    'pagespeed_cache_max_object_size 1k: 1025 bytes not stored');

# Without Content-Length the limit is found while capturing the body:
# the header already said MISS, the body is sent in full, nothing stored,
# and requests for the URL pass to the origin for a few seconds without
# waiting for one another (a hit-for-pass).
{
    my $r = get('/small/chunked');
    is(length $r->{body}, 2048, 'chunked over the limit: whole body sent');
    is(twice('/small/chunked'), 'BYPASS BYPASS 3',
        'chunked over the limit: not stored, then passed');
}

is(twice('/big-segment-limit'), 'BYPASS BYPASS 2',
    'over pagespeed_cache_path max_object=64k: not stored');
like(http_get('/status'), qr/"max_object":65536\b/,
    'status reports max_object 64k');

###############################################################################
# statuses

is(twice('/not-found'), 'BYPASS BYPASS 2', '404 not stored by default');
{
    my $r1 = get('/with404/not-found');
    my $r2 = get('/with404/not-found');
    is(xcache($r1) . ' ' . xcache($r2), 'MISS HIT',
        'pagespeed_cache_statuses 200 404: 404 stored');
    is($r2->{status} . ' ' . $r2->{body}, '404 /with404/not-found n=1',
        'stored 404 served with its status and body');
}
is(twice('/with404/moved'), 'BYPASS BYPASS 2',
    'pagespeed_cache_statuses 200 404: 301 not stored');
is(twice('/with404/ok'), 'MISS HIT 1', 'pagespeed_cache_statuses 200 404: 200 stored');

###############################################################################
# lifetime: s-maxage over max-age over Expires, else the default; the
# origin's Age is used up first

is(twice('/expires-past'), 'BYPASS BYPASS 2', 'Expires in the past: not stored');
is(twice('/expires-invalid'), 'BYPASS BYPASS 2',
    'invalid Expires (already expired): not stored');
is(twice('/origin-age-used-up'), 'BYPASS BYPASS 2',
    'origin Age equal to max-age: not stored');

my @timed = qw{/s-maxage-over-max-age /s-maxage-short /max-age-over-expires
    /max-age-short-expires-far /expires-soon /expires-far /origin-age-short
    /short/default /default-10m};
is(join(',', map { twice($_) } @timed), join(',', ('MISS HIT 1') x @timed),
    'time-limited responses are stored while fresh');

sleep 2.2;

sub after {
    my ($uri) = @_;
    my $r = get($uri);
    return xcache($r) . ' ' . $t->origin_hits($uri);
}

is(after('/s-maxage-over-max-age'), 'HIT 1', 's-maxage=100 wins over max-age=1');
is(after('/s-maxage-short'), 'MISS 2', 's-maxage=1 wins over max-age=100');
is(log_status('/s-maxage-short', 3), 'EXPIRED', 'expired entry logged as EXPIRED');
is(after('/max-age-over-expires'), 'HIT 1',
    'max-age=100 wins over an Expires in the past');
is(after('/max-age-short-expires-far'), 'MISS 2',
    'max-age=1 wins over an Expires an hour ahead');
is(after('/expires-soon'), 'MISS 2', 'Expires in 1 s: expired after 2 s');
is(after('/expires-far'), 'HIT 1', 'Expires in an hour: still fresh');
is(after('/origin-age-short'), 'MISS 2',
    'max-age=2 with origin Age 1: expired after 2 s');
is(after('/short/default'), 'MISS 2',
    'no freshness information, pagespeed_cache_valid 1s: expired');
is(log_status('/short/default', 3), 'EXPIRED', 'default lifetime: EXPIRED logged');
is(after('/short/default'), 'HIT 2', 'default lifetime: refreshed');
is(after('/default-10m'), 'HIT 1',
    'no freshness information, pagespeed_cache_valid 10m at http level: still fresh');

###############################################################################
