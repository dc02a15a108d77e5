#!/usr/bin/perl

# A segment whose space the filesystem cannot give: `nginx -t`, a start and a reload fail with
# one [emerg] line naming the directive, the path, the size asked and the reason, never a
# SIGBUS (exit 135); a refused reload leaves the running cache serving hits. The segment is
# put on a 4 MiB tmpfs, which needs root to mount.

use strict;
use warnings;

use Test::More;
use POSIX ();

use lib 't/lib';
use Test::Nginx;

plan(skip_all => 'mounting a small tmpfs needs root') if $> != 0;

my $t = Test::Nginx->new()->has(qw/http proxy/);
my $tiny = $t->testdir . '/tiny';
mkdir $tiny or die "mkdir $tiny: $!";
system('mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', $tiny) == 0
    or plan(skip_all => 'cannot mount a tmpfs here');
$t->plan(14);

sub conf {
    my ($cache) = @_;
    return <<"EOF";
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    # The origin here sends no explicit freshness; the default reuses such responses only
    # under heuristic freshness (RFC 9111 4.2.2), so these tests give them a lifetime.
    pagespeed_cache_valid 10m;
    pagespeed_cache_path $cache;
    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        location / {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081;
        }
    }
}
EOF
}

my $good = $t->testdir . '/cache.bin size=8m';
my $too_big = "$tiny/ps.seg size=32m";
my $emerg = qr/\[emerg\].*"pagespeed_cache_path": cannot reserve 33554432 bytes for \Q$tiny\E\/ps\.seg: No space left on device/;

$t->write_file_expand('tiny.conf', conf($too_big));
$t->write_file_expand('nginx.conf', conf($good));

###############################################################################
# nginx -t and a start

my ($rc, $out) = $t->test_config(conf => 'tiny.conf');
is($rc, 1, 'nginx -t exits with 1, not a signal');
like($out, $emerg, 'nginx -t names the directive, the path, the size and the reason');
is(scalar(() = $out =~ /\[emerg\]/g), 1, 'in one [emerg] line');
ok(!-e "$tiny/ps.seg", 'no file is left on the full filesystem');

# A start (not -t) with the same configuration: exits at once with the same message.
my $log = $t->testdir . '/start.log';
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    open STDOUT, '>', '/dev/null';
    open STDERR, '>', '/dev/null';
    { no warnings 'exec'; exec $t->binary, '-p', $t->testdir . '/', '-c', 'tiny.conf',
        '-e', $log, '-g', 'daemon off;'; }
    POSIX::_exit(127);
}
my $status;
for (1 .. 100) {
    last if waitpid($pid, POSIX::WNOHANG()) == $pid && defined($status = $?);
    select undef, undef, undef, 0.1;
}
unless (defined $status) {
    kill KILL => $pid;
    waitpid $pid, 0;
}
is(defined $status ? $status >> 8 : 'still running', 1, 'a start exits with 1');
is(defined $status ? $status & 127 : -1, 0, 'and not by a signal');
like($t->read_file('start.log') // '', $emerg, 'a start logs the same reason');

###############################################################################
# a running cache, then a reload to the configuration that cannot have its space

start_origin(port => 8081, routes => { '*' => sub {
    my ($r) = @_;
    return (200, { 'Cache-Control' => 'max-age=3600' }, "body of $r->{path}\n");
} });
$t->run();

sub xcache { parse_response(http_get($_[0]))->{headers}{'x-cache'} // '' }

is(xcache('/a'), 'MISS', 'a running cache: MISS');
is(xcache('/a'), 'HIT', 'then HIT');

$t->write_file_expand('nginx.conf', conf($too_big));
$t->ignore_log(qr/cannot reserve 33554432 bytes/);
my @workers = $t->worker_pids;
ok(!defined $t->reload, 'the reload is refused');
like($t->read_file('error.log'), $emerg, 'with the same [emerg] line');
is_deeply([sort $t->worker_pids], [sort @workers], 'the old workers keep running');
is(xcache('/a'), 'HIT', 'and keep serving hits from the old cache');
ok(!-e "$tiny/ps.seg", 'the full filesystem is left as it was');

$t->done;
system('umount', $tiny);
