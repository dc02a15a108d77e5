#!/usr/bin/perl

# The tier race (DESIGN.md invariant 10): edge -> shield -> origin, the shield
# behind in applying purges (here it never sees the edge's stream). After a
# fleet purge through the edge, the edge's refills carry its applied id in
# Pagespeed-Purge-Seq; the shield, behind it, bypasses its cache, and the edge
# does not store an answer from a node behind it: no old bytes come back. The
# same setup with a shield outside the fleet (no tier header) reproduces the
# race: the edge caches the shield's old bytes again, showing the test can fail.
# A shield only briefly behind (its applier stopped, then continued) waits to catch
# up and answers from, and fills, its own cache; past 1 s it bypasses.

use strict;
use warnings;

use Test::More;
use JSON::PP qw/decode_json encode_json/;
use Time::HiRes qw/sleep time/;
use IO::Socket::INET;

use lib 't/lib';
use Test::Nginx;

my $redis_bin = `command -v redis-server 2>/dev/null`;
chomp $redis_bin;
plan(skip_all => 'redis-server not installed') unless $redis_bin;

my $redis_port = port(8099);
my $origin_port = port(8081);
my $redis_pid;

sub node {
    my ($listen, $upstream, $fleet, $reuse) = @_;
    $reuse //= 'reuseport';
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
        listen 127.0.0.1:$listen $reuse;
        server_name localhost;
        location / {
            pagespeed_cache on;
            # The client's Host upstream too, so that a purge's URLs name the same keys
            # on every tier (proxy_pass would send 127.0.0.1:PORT).
            proxy_set_header Host \$host;
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
# A shield on its edge's stream, whose applier the test stops and continues. Without
# reuseport, so that its other worker accepts every connection meanwhile.
my ($p_edge3, $p_shield3) = map { port($_) } 8094, 8095;
my $shield3 = node($p_shield3, $origin_port, 'node=shield-3 tier=shield stream=tiers:three', '');
my $edge3 = node($p_edge3, $p_shield3, 'node=edge-3 tier=edge stream=tiers:three');

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
$_->{t}->run() for $shield, $edge, $shield2, $edge2, $shield3, $edge3;

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

# Whether $node has applied the stream entry $seq ("ms-n") or a later one.
sub applied {
    my ($node, $seq) = @_;
    my $r = parse_response(http_get('/status', port => $node->{port})) // {};
    my $f = (eval { decode_json($r->{body}) } // {})->{fleet} // {};
    my ($ms, $n) = ($f->{applied} // '0-0') =~ /^(\d+)-(\d+)$/ or return 0;
    my ($want_ms, $want_n) = ($seq // '') =~ /^(\d+)-(\d+)$/ or return 0;
    return $ms > $want_ms || ($ms == $want_ms && $n >= $want_n);
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

my @with = map { get($edge, '/r')->{ver} } 1 .. 4;
ok(!grep({ $_ < 2 } @with), 'with the tier header the edge never gets old bytes again')
    or diag("versions: @with");
isnt(get($edge, '/r')->{xc}, 'HIT', 'nor stores the lagging shield\'s answer');

my @without = map { get($edge2, '/r')->{ver} } 1 .. 3;
ok((grep { $_ == 1 } @without) > 0,
    'without it (shield outside the fleet) the race reproduces: old bytes again')
    or diag("versions: @without");

# A shield behind its edge waits (up to 1 s) for its applier to catch up, then answers
# from, and fills, its own cache; past the bound it bypasses as above.
sub flock_holder {
    my ($file) = @_;
    my $ino = (stat $file)[1] or return;
    open my $fh, '<', '/proc/locks' or return;
    while (<$fh>) {
        return $1 if /FLOCK\s+\S+\s+WRITE\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:$ino\s/;
    }
    return;
}

sub purge_through {
    my ($node, $wait) = @_;
    my $r = parse_response(http_post('/purge',
        encode_json({ url => '/w', fleet => JSON::PP::true, wait => $wait }),
        port => $node->{port}, headers => { 'Content-Type' => 'application/json' })) // {};
    return (eval { decode_json($r->{body}) } // {});
}

# Sends GET $uri to $node now; the returned sub reads the answer.
sub later {
    my ($node, $uri) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $node->{port},
        Proto => 'tcp', Timeout => 5) or die "connect: $@";
    print $s "GET $uri HTTP/1.0\r\nHost: localhost\r\n\r\n";
    return sub {
        local $/;
        my $raw = <$s>;
        my $r = parse_response($raw // '') // { headers => {}, body => '' };
        ($r->{ver}) = $r->{body} =~ / v=(\d+)$/;
        $r->{ver} //= -1;
        return $r;
    };
}

ok(wait_for(10, sub { serving($edge3) && serving($shield3) }), 'edge-3 and shield-3 caught up');
get($edge3, '/w');
is(get($edge3, '/w')->{xc}, 'HIT', 'edge-3 cached /w through shield-3');
my $applier = flock_holder($shield3->{t}->testdir . '/cache.bin.fleet-lock');
ok($applier, 'shield-3\'s applier worker found (' . ($applier // 'none') . ')');
SKIP: {
    skip 'no applier worker found', 6 unless $applier;

    kill STOP => $applier;
    set_version(3);
    my $pj = purge_through($edge3, 0.3);
    ok(grep({ $_ eq 'shield-3' } @{$pj->{pending} // []}), 'shield-3 stopped: it is pending');
    my $answer = later($edge3, '/w');
    sleep 0.3;
    kill CONT => $applier;
    my $got = $answer->();
    is($got->{ver}, 3, 'caught up within the wait: the new version')
        or diag(explain $got->{headers});
    my $direct = get($shield3, '/w');
    is("$direct->{xc} v=$direct->{ver}", 'HIT v=3',
        'and the shield stored it: its next request is a HIT');

    kill STOP => $applier;
    set_version(4);
    my $seq = purge_through($edge3, 0.1)->{seq};
    my $t0 = time;
    my $slow = later($edge3, '/w')->();
    my $took = time - $t0;
    kill CONT => $applier;
    is($slow->{ver}, 4, sprintf('still behind after the wait: the origin\'s bytes (%.2f s)', $took));
    # "Connected" alone is not enough: the applier may still be about to apply the purge.
    ok(wait_for(10, sub { serving($shield3) && applied($shield3, $seq) }),
        'shield-3 caught up after SIGCONT (applied ' . ($seq // 'no seq') . ')');
    isnt(get($shield3, '/w')->{xc}, 'HIT', 'the bypassed answer was not stored');
}

$_->{t}->stop() for $edge3, $shield3, $edge2, $shield2, $edge, $shield;
done_testing();
