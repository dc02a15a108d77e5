#!/usr/bin/perl

# Self-test of t/lib/Test/Nginx.pm against plain nginx (the module under
# test is deliberately not loaded, so this runs before the module builds):
#   TEST_NGINX_BINARY=/usr/sbin/nginx prove -v -I t/lib t/000-harness.t

use strict;
use warnings;

use Test::More;
use Time::HiRes qw/time/;

use lib 't/lib';
use Test::Nginx;

my $t = Test::Nginx->new(no_module => 1)->has(qw/http proxy rewrite/)
    ->plan(34);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:8080;
        location / { return 200 "hello"; }
        location /file { alias %%TESTDIR%%/index.html; }
    }
    server {
        listen 127.0.0.1:8081;
        location / { proxy_pass http://127.0.0.1:8082; }
    }
}
EOF
$t->write_file('index.html', 'from file');

start_origin(port => 8082, routes => {
    '/fast' => sub {
        (200, { 'X-Origin' => 'yes', 'Vary' => ['Accept', 'Cookie'] }, 'fast');
    },
    '/slow' => sub { (200, {}, 'slow', 1) },
    '/echo' => sub {
        my ($r) = @_;
        (200, {}, "$r->{method} $r->{uri} accept="
            . ($r->{headers}{accept} // '-') . " body=$r->{body}");
    },
});

# A bare daemon: answers anything with a fixed response.
$t->run_daemon(sub {
    my ($port) = @_;
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => $port, Listen => 5, ReuseAddr => 1) or die $@;
    while (my $c = $srv->accept) {
        sysread $c, my $buf, 1024;
        print $c "HTTP/1.0 204 No Content\r\nX-Daemon: 1\r\n\r\n";
        close $c;
    }
}, port(8083));

$t->run();

# config expansion

my $conf = $t->read_file('nginx.conf');
unlike($conf, qr/load_module/, 'no_module: no load_module line');
unlike($conf, qr/127\.0\.0\.1:80[89]\d(?!\d)/, 'all test ports remapped');
like($conf, qr/listen 127\.0\.0\.1:${\ port(8080) };/, 'port() matches config');
isnt(port(8080), port(8081), 'distinct ports');

# nginx itself

like(http_get('/'), qr/^HTTP\/1\.1 200 .*\r\n\r\nhello\z/s, 'return 200 body');
like(http_get('/file'), qr/\r\n\r\nfrom file\z/, 'file from testdir');
like(http_head('/file'), qr/^HTTP\/1\.1 200 .*\r\n\r\n\z/s, 'HEAD: no body');
is(scalar(my @w = $t->worker_pids), 2, 'two workers');

# proxying to the Perl origin

my $r = parse_response(http_get('/fast', port => 8081));
is($r->{status}, 200, 'proxied status');
is($r->{headers}{'x-origin'}, 'yes', 'proxied header');
is($r->{headers}{vary}, 'Accept, Cookie', 'repeated header joined');
is($r->{body}, 'fast', 'proxied body');

like(http_get('/echo?a=1', port => 8081,
        headers => { Accept => 'image/webp' }),
    qr/\r\n\r\nGET \/echo\?a=1 accept=image\/webp body=\z/,
    'request headers reach the origin');
like(http_post('/echo', 'payload', port => 8081),
    qr/\r\n\r\nPOST \/echo accept=- body=payload\z/, 'POST body');
is(parse_response(http_get('/nope', port => 8081))->{status}, 404,
    'unknown origin path is 404');

# a delayed route must not hold up others

my $t0 = time;
my $slow = http_get('/slow', port => 8081, start => 1);
like(http_get('/fast', port => 8081), qr/fast\z/, 'fast while slow pending');
cmp_ok(time - $t0, '<', 0.8, 'fast not blocked by slow');
like(http_end($slow), qr/\r\n\r\nslow\z/, 'slow response');
cmp_ok(time - $t0, '>=', 0.9, 'slow was delayed');

is($t->origin_hits('/fast'), 2, 'origin_hits path');
is($t->origin_hits('/echo', method => 'POST'), 1, 'origin_hits method');
is($t->origin_hits(qr/^\/echo/), 2, 'origin_hits regex');

# run_daemon / waitforsocket / raw http

ok($t->waitforsocket('127.0.0.1:' . port(8083)), 'waitforsocket');
like(http("ping\r\n\r\n", port => 8083), qr/^HTTP\/1\.0 204.*X-Daemon: 1/s,
    'raw http() to daemon');

# reload

my @before = $t->worker_pids;
ok($t->reload(), 'reload');
my %old = map { $_ => 1 } @before;
my @after = $t->worker_pids;
ok(@after == 2 && !grep({ $old{$_} } @after), 'all workers replaced');
like(http_get('/'), qr/hello\z/, 'serving after reload');

# stop + run keeps the test dir and restarts the origin

my $master = $t->master_pid;
$t->stop();
ok(!kill(0, $master) && !IO::Socket::INET->new(PeerAddr => '127.0.0.1',
    PeerPort => port(8080)), 'stopped');
$t->run();
like(http_get('/fast', port => 8081), qr/fast\z/, 'origin back after run');
is($t->origin_hits('/fast'), 3, 'origin.log kept across restart');

# nginx -t

$t->write_file('bad.conf', "events {}\nbogus_directive;\n");
my ($rc, $out) = $t->test_config(conf => 'bad.conf');
ok($rc != 0 && $out =~ /unknown directive "bogus_directive"/,
    'test_config reports errors');
is(($t->test_config())[0], 0, 'test_config ok on good config');

# files

$t->write_file('sub/dir/bin', "\0\xff\r\n");
is($t->read_file('sub/dir/bin'), "\0\xff\r\n", 'binary-safe write_file');

# parse_response edge cases

$r = parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    . "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n3\r\nabc\r\n2\r\nde\r\n"
    . "0\r\n\r\n");
ok($r->{body} eq 'abcde' && $r->{headers}{'set-cookie'} eq 'a=1, b=2'
    && @{$r->{header_list}} == 3, 'chunked body, header_list');

###############################################################################
