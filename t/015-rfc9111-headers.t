#!/usr/bin/perl

# RFC 9111 defaults and header rules through nginx with two workers: what is reused
# without explicit freshness (heuristic freshness only, or the operator's lifetime),
# which statuses are stored, Age parsing, the stored Date on hits, Connection-listed
# fields, If-None-Match precedence, invalidation by unknown methods, targeted fields
# (Pagespeed-Cache-Control, CDN-Cache-Control), interim responses and Vary
# normalisation. The public HTTP cache test suite (scripts/conformance) checks the
# same rules more widely; these pin each one down in the project's own tests.

use strict;
use warnings;

use Test::More;
use POSIX qw/strftime/;
use IO::Socket::INET;

use lib 't/lib';
use Test::Nginx;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(47);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=8m;

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        proxy_http_version 1.1;
        pagespeed_cache on;

        location / {
            proxy_pass http://127.0.0.1:8081;
        }
        location /narrow/ {
            pagespeed_cache_statuses 200;
            proxy_pass http://127.0.0.1:8081;
        }
        location /valid/ {
            pagespeed_cache_valid 1m;
            proxy_pass http://127.0.0.1:8081;
        }
        location /interim/ {
            proxy_pass http://127.0.0.1:8082;
        }
    }
}
EOF

sub http_date { strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime($_[0])) }

my $date5 = http_date(time() - 5);

my %routes = (
    '/none' => [200, []],
    '/heuristic' => sub { [200, ['Last-Modified' => http_date(time() - 10 * 86400)]] },
    '/heuristic-403' => sub { [403, ['Last-Modified' => http_date(time() - 10 * 86400)]] },
    '/s404' => [404, ['Cache-Control' => 'max-age=60']],
    '/s503' => [503, ['Cache-Control' => 'max-age=60']],
    '/narrow/s404' => [404, ['Cache-Control' => 'max-age=60']],
    '/valid/none' => [200, []],
    '/age-list' => [200, ['Cache-Control' => 'max-age=3600', 'Age' => '7200, 0']],
    '/age-garbage' => [200, ['Cache-Control' => 'max-age=3600', 'Age' => 'abc']],
    '/age-lines' => [200, ['Cache-Control' => 'max-age=3600', 'Age' => '0', 'Age' => '7200']],
    '/date' => [200, ['Cache-Control' => 'max-age=3600', 'Date' => $date5]],
    '/old-date' => sub {
        [200, ['Date' => http_date(time() + 400), 'Expires' => http_date(time() + 300)]]
    },
    '/connection' => [200, ['Cache-Control' => 'max-age=3600', 'Connection' => 'close, X-Hop',
        'X-Hop' => '1', 'X-Keep' => '1']],
    '/cond' => [200, ['Cache-Control' => 'max-age=3600', 'ETag' => '"v1"',
        'Last-Modified' => 'Mon, 01 Jan 2024 00:00:00 GMT']],
    '/unsafe' => [200, ['Cache-Control' => 'max-age=3600']],
    '/cdn-over-cc' => [200, ['Cache-Control' => 'no-store', 'CDN-Cache-Control' => 'max-age=60']],
    '/cdn-no-store' => [200, ['Cache-Control' => 'max-age=60', 'CDN-Cache-Control' => 'no-store']],
    '/ps-over-cdn' => [200, ['CDN-Cache-Control' => 'max-age=60',
        'Pagespeed-Cache-Control' => 'no-store']],
    '/cdn-invalid' => [200, ['Cache-Control' => 'no-store',
        'CDN-Cache-Control' => 'max-age="60"']],
    '/vary-foo' => [200, ['Cache-Control' => 'max-age=3600', 'Vary' => 'Foo']],
    '/vary-lang' => [200, ['Cache-Control' => 'max-age=3600', 'Vary' => 'Accept-Language']],
);
start_origin(port => 8081, routes => { map {
    my $spec = $routes{$_};
    my $path = $_;
    ($path => sub {
        my ($req) = @_;
        my ($status, $h) = @{ ref $spec eq 'CODE' ? $spec->() : $spec };
        return ($status, $h, "$path $req->{method}\n");
    })
} keys %routes });

# An origin that sends an interim 103 before its final response, then closes.
my $interim_log = $t->testdir . '/interim.log';
my $interim_port = port(8082);
$t->run_daemon(sub {
    my $interim_srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => $interim_port, Proto => 'tcp', Listen => 16, ReuseAddr => 1)
        or die "cannot listen: $@\n";
    $SIG{PIPE} = 'IGNORE';
    while (my $c = $interim_srv->accept) {
        my $buf = '';
        while ($buf !~ /\r\n\r\n/) {
            my $n = sysread($c, $buf, 4096, length $buf);
            last unless $n;
        }
        next unless $buf =~ /\r\n\r\n/;    # a connection that only probed the port
        if (open my $fh, '>>', $interim_log) { print $fh "request\n"; close $fh }
        print $c "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
            . "HTTP/1.1 200 OK\r\nCache-Control: max-age=3600\r\nContent-Length: 3\r\n"
            . "Connection: close\r\n\r\nok\n";
        close $c;
    }
});

$t->run();
$t->waitforsocket('127.0.0.1:8082');

###############################################################################

sub get {
    my ($uri, @h) = @_;
    return parse_response(http_get($uri, headers => [@h])) // { headers => {} };
}

sub xc { $_[0]{headers}{'x-cache'} // '-' }

# "X-Cache X-Cache origin-hits" of two GETs.
sub twice {
    my ($uri, @h) = @_;
    my $a = xc(get($uri, @h));
    my $b = xc(get($uri, @h));
    return "$a $b " . $t->origin_hits($uri);
}

# Freshness defaults (RFC 9111 4.2.2) and statuses (RFC 9111 3).
is(twice('/none'), 'BYPASS BYPASS 2', 'no explicit freshness, no Last-Modified: not reused');
is(twice('/heuristic'), 'MISS HIT 1', 'Last-Modified 10 days ago: heuristic freshness');
is(twice('/heuristic-403'), 'BYPASS BYPASS 2',
    'a 403 is not heuristically cacheable: not reused');
is(twice('/valid/none'), 'MISS HIT 1', 'pagespeed_cache_valid set: its lifetime applies');
is(twice('/s404'), 'MISS HIT 1', 'a 404 with max-age is stored by default');
my $r = get('/s404');
is("$r->{status} $r->{body}", "404 /s404 GET\n", 'the stored 404 is served with its status');
is(twice('/s503'), 'MISS HIT 1', 'a 503 with max-age is stored by default');
is(twice('/narrow/s404'), 'BYPASS BYPASS 2', 'pagespeed_cache_statuses 200 narrows it');

# Age (RFC 9111 5.1): the first member of the first line; an invalid value is ignored.
is(twice('/age-list'), 'BYPASS BYPASS 2', 'Age: 7200, 0 is 7200: stale at once');
is(twice('/age-garbage'), 'MISS HIT 1', 'Age: abc is ignored');
is(twice('/age-lines'), 'MISS HIT 1', 'Age lines 0 and 7200: the first counts');
$r = get('/age-lines');
like($r->{headers}{age} // '', qr/^\d$/, 'the hit counts its Age from the first line');

# Date (RFC 9111 4.2.3; RFC 9110 6.6.1): the origin's Date counts toward the age and a
# hit carries the stored Date.
get('/date');
my $hit = get('/date');
is(xc($hit), 'HIT', 'an origin Date 5 s ago: stored');
is($hit->{headers}{date}, $date5, 'the hit carries the stored Date, not the current time');
like($hit->{headers}{age} // '', qr/^([5-9]|1\d)$/, 'Age counts from the origin Date');
is(scalar(grep { lc $_->[0] eq 'date' } @{ $hit->{header_list} }), 1, 'one Date line');
is(twice('/old-date'), 'BYPASS BYPASS 2', 'Expires before Date: no lifetime');

# Connection-listed fields are hop-by-hop: never stored or replayed (RFC 9111 3.1).
get('/connection');
$hit = get('/connection');
is(xc($hit), 'HIT', 'Connection-listed: stored');
ok(!exists $hit->{headers}{'x-hop'}, 'a field Connection listed is not replayed');
is($hit->{headers}{'x-keep'}, '1', 'the other fields are');

# Conditional requests on a hit (RFC 9110 13.2.2).
get('/cond');
my $early = 'Sat, 01 Jan 2000 00:00:00 GMT';
my $late = 'Tue, 01 Jan 2030 00:00:00 GMT';
$r = get('/cond', 'If-None-Match' => '"v1"', 'If-Modified-Since' => $early);
is("$r->{status} " . xc($r), '304 HIT',
    'If-None-Match matches: 304, whatever If-Modified-Since says');
is($r->{body}, '', 'the 304 has no body');
is($r->{headers}{etag}, '"v1"', 'the 304 carries the ETag');
$r = get('/cond', 'If-None-Match' => '"v0"', 'If-Modified-Since' => $late);
is("$r->{status} " . xc($r), '200 HIT', 'If-None-Match fails: 200, If-Modified-Since ignored');
$r = get('/cond', 'If-None-Match' => 'W/"v1"');
is($r->{status}, 304, 'If-None-Match compares weakly');
$r = get('/cond', 'If-Modified-Since' => $late);
is($r->{status}, 304, 'If-Modified-Since after Last-Modified: 304');
$r = get('/cond', 'If-Modified-Since' => $early);
is($r->{status}, 200, 'If-Modified-Since before Last-Modified: 200');
is($t->origin_hits('/cond'), 1, 'conditionals answered from the cache');

# Invalidation by any unsafe or unknown method (RFC 9111 4.4).
is(twice('/unsafe'), 'MISS HIT 1', 'stored');
$r = parse_response(http_req('OPTIONS', '/unsafe'));
is(xc(get('/unsafe')), 'HIT', 'OPTIONS (safe) does not invalidate');
$r = parse_response(http_req('M-SEARCH', '/unsafe'));
is($r->{status}, 200, 'M-SEARCH reaches the origin');
is(xc(get('/unsafe')), 'MISS', 'M-SEARCH (unknown) invalidated the URL');
$r = parse_response(http_req('FOO-BAR', '/unsafe'));
is(xc(get('/unsafe')), 'MISS', 'any unknown method invalidates');

# Targeted fields (RFC 9213) take precedence over Cache-Control for this cache.
is(twice('/cdn-over-cc'), 'MISS HIT 1', 'CDN-Cache-Control max-age over CC no-store');
is(twice('/cdn-no-store'), 'BYPASS BYPASS 2', 'CDN-Cache-Control no-store over CC max-age');
is(twice('/ps-over-cdn'), 'BYPASS BYPASS 2',
    'Pagespeed-Cache-Control takes precedence over CDN-Cache-Control');
is(twice('/cdn-invalid'), 'BYPASS BYPASS 2',
    'an invalid targeted field is ignored: Cache-Control applies');
$hit = get('/cdn-over-cc');
is($hit->{headers}{'cdn-cache-control'}, 'max-age=60', 'the targeted field is replayed');

# Vary matching after normalising the listed request headers (RFC 9111 4.1).
is(xc(get('/vary-foo', Foo => '1,2')), 'MISS', 'Vary: Foo stored for 1,2');
is(xc(get('/vary-foo', Foo => ' 1, 2 ')), 'HIT', 'whitespace around commas does not matter');
is(xc(get('/vary-foo', Foo => '2,1')), 'MISS', 'the order of other fields does');
is(xc(get('/vary-lang', 'Accept-Language' => 'en, de')), 'MISS', 'Accept-Language stored');
is(xc(get('/vary-lang', 'Accept-Language' => 'De, EN')), 'HIT',
    'Accept-Language: case and order of equal weights do not matter');
is(xc(get('/vary-lang', 'Accept-Language' => 'fr')), 'MISS', 'another language does');

# Interim responses are never stored (nginx 1.28 takes an upstream 103 for the final
# response: it is passed on and never stored).
my $i1 = parse_response(http_get('/interim/x', timeout => 5));
my $i2 = parse_response(http_get('/interim/x', timeout => 5));
ok(defined $i1 && defined $i2, 'an origin sending a 103 is answered');
is(xc($i2), 'BYPASS', 'the 103 is not stored');
my $interim_requests = () = ($t->read_file('interim.log') // '') =~ /request/g;
is($interim_requests, 2, 'both requests reached the origin');

###############################################################################
