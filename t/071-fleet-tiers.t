#!/usr/bin/perl

# The tier race (DESIGN.md invariant 10): edge -> shield -> origin, the shield
# behind in applying purges (here it never sees the edge's stream). After a
# fleet purge through the edge, the edge's refills carry its applied id in
# Pagespeed-Purge-Seq; the shield, behind it, bypasses its cache, and the edge
# does not store an answer from a node behind it: no old bytes come back. The
# same setup with a shield outside the fleet (no tier header) reproduces the
# race: the edge caches the shield's old bytes again, showing the test can fail.

use strict;
use warnings;

use Test::More;
use JSON::PP qw/decode_json encode_json/;
use Time::HiRes qw/sleep time/;

use lib 't/lib';
use Test::Nginx;

my $redis_bin = `command -v redis-server 2>/dev/null`;
chomp $redis_bin;
plan(skip_all => 'redis-server not installed') unless $redis_bin;

my $redis_port = port(8099);
my $origin_port = port(8081);
my $redis_pid;

sub node {
    my ($listen, $upstream, $fleet) = @_;
    my $t = Test::Nginx->new()->has(qw/http proxy/);
    my $fl = $fleet ? "pagespeed_fleet redis://127.0.0.1:$redis_port $fleet max_lag=5s;" : '';
    $t->write_file_expand('nginx.conf', <<"CONF");
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=8m;
    $fl
    server {
        listen 127.0.0.1:$listen reuseport;
        server_name localhost;
        location / {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:$upstream;
        }
        location = /purge { pagespeed_purge; }
        location = /status { pagespeed_status; }
    }
}
CONF
    return { t => $t, port => $listen };
}

my ($p_edge, $p_shield, $p_edge2, $p_shield2) = map { port($_) } 8090 .. 8093;
my $shield = node($p_shield, $origin_port, 'node=shield-1 tier=shield stream=tiers:shield');
my $edge = node($p_edge, $p_shield, 'node=edge-1 tier=edge stream=tiers:edge');
my $shield2 = node($p_shield2, $origin_port, undef);
my $edge2 = node($p_edge2, $p_shield2, 'node=edge-2 tier=edge stream=tiers:edge2');

my $dir = $shield->{t}->testdir;
my $version;
sub set_version {
    $version = shift;
    open my $fh, '>', "$dir/version.tmp" or die $!;
    print $fh $version;
    close $fh;
    rename "$dir/version.tmp", "$dir/version" or die $!;
}
set_version(1);
$shield->{t}->start_origin(port => 8081, routes => { '*' => sub {
    my ($r) = @_;
    open my $fh, '<', "$dir/version" or die "version: $!";
    my $v = <$fh>;
    return (200, ['Cache-Control' => 'max-age=3600'], "$r->{path} v=$v\n");
} });

$redis_pid = fork // die "fork: $!";
if ($redis_pid == 0) {
    open STDOUT, '>>', "$dir/redis.log";
    open STDERR, '>&', \*STDOUT;
    { no warnings 'exec'; exec $redis_bin, '--port', $redis_port, '--bind', '127.0.0.1',
        '--save', '', '--appendonly', 'no', '--dir', $dir; }
    POSIX::_exit(127);
}
END { if ($redis_pid) { kill TERM => $redis_pid; waitpid($redis_pid, 0) } }
Test::Nginx::waitforsocket("127.0.0.1:$redis_port") or die "redis did not start";
$_->{t}->run() for $shield, $edge, $shield2, $edge2;

sub get {
    my ($node, $uri) = @_;
    my $r = parse_response(http_get($uri, port => $node->{port}))
        // { headers => {}, body => '' };
    ($r->{ver}) = $r->{body} =~ / v=(\d+)$/;
    $r->{ver} //= -1;
    $r->{xc} = $r->{headers}{'x-cache'} // '';
    return $r;
}

sub serving {
    my ($node) = @_;
    my $r = parse_response(http_get('/status', port => $node->{port})) // {};
    my $f = (eval { decode_json($r->{body}) } // {})->{fleet} // {};
    return $f->{connected} && !$f->{self_fenced};
}

sub wait_for {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) { return 1 if $cond->(); sleep 0.05 }
    return $cond->();
}

ok(wait_for(10, sub { serving($edge) && serving($shield) && serving($edge2) }),
    'the fleet nodes are caught up');

for my $e ($edge, $edge2) {
    get($e, '/r');
    is(get($e, '/r')->{xc}, 'HIT', "edge on $e->{port} cached /r (v1, via its shield)");
}
like(get($edge, '/r')->{headers}{'pagespeed-purge-seq'} // '', qr/^\d+-\d+$/,
    'every response carries the node\'s applied id');

set_version(2);
for my $e ($edge, $edge2) {
    my $r = parse_response(http_post('/purge',
        encode_json({ url => '/r', fleet => JSON::PP::true }), port => $e->{port},
        headers => { 'Content-Type' => 'application/json' })) // {};
    is($r->{status}, 200, "fleet purge through edge on $e->{port}");
}

my @with = map { get($edge, '/r')->{ver} } 1 .. 8;
ok(!grep({ $_ < 2 } @with), 'with the tier header the edge never gets old bytes again')
    or diag("versions: @with");
isnt(get($edge, '/r')->{xc}, 'HIT', 'nor stores the lagging shield\'s answer');

my @without = map { get($edge2, '/r')->{ver} } 1 .. 3;
ok((grep { $_ == 1 } @without) > 0,
    'without it (shield outside the fleet) the race reproduces: old bytes again')
    or diag("versions: @without");

$_->{t}->stop() for $edge2, $shield2, $edge, $shield;
done_testing();
