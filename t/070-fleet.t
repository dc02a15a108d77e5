#!/usr/bin/perl

# Fleet purge on Redis Streams through three real nginx nodes (2 workers each,
# their own segment and port) and a real redis-server on a free port: a purge
# through edge-1 is answered with every node's receipt and no node serves the
# old bytes afterwards, also under load from 16 clients with every node reloaded
# once (a linearizability check on every response); a node stopped through 50
# purges serves none of the purged entries when it starts again; Redis unreachable answers 503 with the local purge applied;
# a SIGSTOPped Redis self-fences every node within max_lag, and SIGCONT brings
# hits back; a redis-server killed and restarted on its append-only file loses no
# acknowledged purge (DESIGN.md, invariant 9).

use strict;
use warnings;

use Test::More;
use JSON::PP qw/decode_json encode_json/;
use Time::HiRes qw/sleep time/;
use FindBin;

use lib 't/lib';
use Test::Nginx;

my $redis_bin = `command -v redis-server 2>/dev/null`;
chomp $redis_bin;
plan(skip_all => 'redis-server not installed') unless $redis_bin;

my $redis_port = port(8099);
my $origin_port = port(8081);
my ($redis_pid, $redis_dir);

sub start_redis {
    $redis_pid = fork // die "fork: $!";
    if ($redis_pid == 0) {
        open STDOUT, '>>', "$redis_dir/redis.log";
        open STDERR, '>&', \*STDOUT;
        { no warnings "exec"; exec $redis_bin, '--port', $redis_port, '--bind', '127.0.0.1',
            '--save', '', '--appendonly', 'yes', '--appendfsync', 'always',
            "--dir", $redis_dir, "--daemonize", "no"; }
        POSIX::_exit(127);
    }
    Test::Nginx::waitforsocket("127.0.0.1:$redis_port") or die "redis did not start";
}

sub stop_redis {
    return unless $redis_pid;
    kill CONT => $redis_pid;
    kill TERM => $redis_pid;
    waitpid($redis_pid, 0);
    undef $redis_pid;
}
END { stop_redis() }

my @nodes;
for my $n (1 .. 3) {
    my $t = Test::Nginx->new()->has(qw/http proxy/);
    my $listen = port(8089 + $n);
    $t->write_file_expand('nginx.conf', <<"CONF");
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=8m;
    pagespeed_fleet redis://127.0.0.1:$redis_port node=edge-$n max_lag=2s;

    server {
        listen 127.0.0.1:$listen reuseport;
        server_name localhost;
        add_header X-Worker \$pid always;

        location / {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:$origin_port;
        }
        location = /purge { pagespeed_purge; }
        location = /status { pagespeed_status; }
    }
}
CONF
    push @nodes, { t => $t, port => $listen, name => "edge-$n" };
}
$redis_dir = $nodes[0]{t}->testdir;

my $dir = $nodes[0]{t}->testdir;
my $version = 0;
sub set_version {
    $version = shift;
    open my $fh, '>', "$dir/version.tmp" or die $!;
    print $fh $version;
    close $fh;
    rename "$dir/version.tmp", "$dir/version" or die $!;
}
set_version(1);

$nodes[0]{t}->start_origin(port => 8081, routes => { '*' => sub {
    my ($r) = @_;
    open my $fh, '<', "$dir/version" or die "version: $!";
    my $v = <$fh>;
    return (200, ['Cache-Control' => 'max-age=3600'], "$r->{path} v=$v\n");
} });

start_redis();
$_->{t}->run() for @nodes;

###############################################################################

sub get {
    my ($node, $uri) = @_;
    my $r = parse_response(http_get($uri, port => $node->{port}))
        // { headers => {}, body => '' };
    ($r->{ver}) = $r->{body} =~ / v=(\d+)$/;
    $r->{ver} //= -1;
    $r->{xc} = $r->{headers}{'x-cache'} // '';
    return $r;
}

sub status {
    my ($node) = @_;
    my $r = parse_response(http_get('/status', port => $node->{port})) // {};
    return (eval { decode_json($r->{body}) } // {});
}

sub fleet_purge {
    my ($node, $body) = @_;
    my $r = parse_response(http_post('/purge', encode_json($body),
        port => $node->{port},
        headers => { 'Content-Type' => 'application/json' })) // {};
    my $j = eval { decode_json($r->{body}) } // {};
    return ($r, $j);
}

sub wait_for {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return $cond->();
}

sub serving {
    my ($node) = @_;
    my $f = status($node)->{fleet} // {};
    return $f->{connected} && !$f->{self_fenced};
}

sub cmp_id {
    my ($a, $b) = @_;
    my ($am, $as) = split /-/, $a // '0-0';
    my ($bm, $bs) = split /-/, $b // '0-0';
    return $am <=> $bm || $as <=> $bs;
}

# Fills $uri on $node (MISS then HIT with the current version).
sub cached {
    my ($node, $uri) = @_;
    get($node, $uri);
    my $b = get($node, $uri);
    return $b->{xc} eq 'HIT' && $b->{ver} == $version;
}

# No request on new connections (both workers) gets bytes older than $v.
sub never_older {
    my ($node, $uri, $v) = @_;
    for (1 .. 12) {
        my $r = get($node, $uri);
        if ($r->{ver} < $v) {
            diag("$node->{name} $uri: $r->{xc} v=$r->{ver}, wanted >= $v");
            return 0;
        }
    }
    return 1;
}

ok(wait_for(10, sub { !grep { !serving($_) } @nodes }),
    'every node connects and confirms it is caught up');
my $st = status($nodes[0])->{fleet} // {};
is_deeply([@$st{qw/node tier/}], ['edge-1', 'edge'], 'status names node and tier');

ok(!grep({ !cached($_, '/a') } @nodes), '/a is cached on every node');

# 1. A purge through edge-1 is answered with all three receipts.
set_version(2);
my ($r, $j) = fleet_purge($nodes[0], { url => '/a', fleet => JSON::PP::true });
is($r->{status}, 200, 'fleet purge answered 200');
like($j->{seq} // '', qr/^\d+-\d+$/, 'the answer carries the stream id');
is_deeply([sort keys %{$j->{nodes} // {}}], [qw/edge-1 edge-2 edge-3/],
    'receipts from all three nodes');
is_deeply($j->{pending}, [], 'nothing pending');
ok(!grep({ cmp_id($j->{nodes}{$_}{applied}, $j->{seq}) < 0 } keys %{$j->{nodes} // {}}),
    'every receipt is at or past the purge');
is($j->{scope}, 'url', 'the local receipt fields are there');
ok(!grep({ !never_older($_, '/a', 2) } @nodes),
    'after the receipt no node serves the old bytes');

# Under load: 16 clients on all three nodes (new connections, so both workers of
# each) while ten purges go through the nodes in turn and each node is reloaded
# once. A request that started after a purge's receipt never gets a version older
# than the one set before that purge.
{
    my $secs = 4;
    my $logdir = "$dir/load";
    mkdir $logdir;
    my @kids;
    for my $c (1 .. 16) {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            open my $log, '>', "$logdir/$c" or POSIX::_exit(1);
            my $end = time + $secs;
            my $k = $c;
            while (time < $end) {
                my $node = $nodes[$k++ % 3];
                my $start = time;
                my $r = get($node, '/load');
                printf $log "%.6f %d %s %s %s\n", $start, $r->{ver}, $node->{name},
                    $r->{headers}{'x-worker'} // '-', $r->{xc} || '-';
            }
            close $log;
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    my @receipts;
    for my $round (1 .. 10) {
        sleep $secs / 12;
        # A reload of each node in turn, under the load, between purges: its applier
        # carries on (the next receipts need it) and its new workers serve nothing older.
        $nodes[$round % 3]{t}->reload() if $round == 2 || $round == 4 || $round == 6;
        set_version(100 + $round);
        my ($pr, $pj) = fleet_purge($nodes[$round % 3], { url => '/load', fleet => JSON::PP::true });
        push @receipts, [time, 100 + $round]
            if $pr->{status} == 200 && !@{$pj->{pending} // ['?']};
    }
    waitpid($_, 0) for @kids;
    my (@bad, %seen, $n, $hits);
    for my $c (1 .. 16) {
        open my $log, '<', "$logdir/$c" or next;
        while (<$log>) {
            my ($start, $ver, $node, $worker, $xc) = split;
            $n++;
            $hits++ if $xc eq 'HIT';
            $seen{"$node/$worker"}++;
            my ($floor) = map { $_->[1] } grep { $_->[0] < $start } reverse @receipts;
            push @bad, "$node $worker $xc v=$ver after the receipt of v=$floor"
                if defined $floor && $ver < $floor;
        }
    }
    is(scalar @receipts, 10, 'ten purges under load, each with every receipt');
    my %workers;
    $workers{(split m{/}, $_)[0]}++ for keys %seen;
    is(join(' ', map { "$_:" . ($workers{$_} >= 2 ? 'ok' : 'one worker') } sort keys %workers),
        'edge-1:ok edge-2:ok edge-3:ok', "the load reached two workers or more of every node "
        . "($n requests, " . ($hits // 0) . ' hits)');
    is("@bad[0 .. ($#bad < 4 ? $#bad : 4)]", '',
        'no request started after a receipt got an older version (' . scalar(@bad) . ' did)');
    set_version(2);
}

# The command-line tool publishes the same entry and prints the receipts.
SKIP: {
    my $tool = "$FindBin::Bin/../target/release/pagespeed-purge";
    skip 'pagespeed-purge not built (cargo build --release -p pagespeed-purge)', 2
        unless -x $tool;
    set_version(5);
    my $out = `$tool redis://127.0.0.1:$redis_port --host localhost '{"url": "/a"}'`;
    is($? >> 8, 0, 'pagespeed-purge: every node applied it');
    my $tj = eval { decode_json($out) } // {};
    is_deeply([sort keys %{$tj->{nodes} // {}}], [qw/edge-1 edge-2 edge-3/],
        'pagespeed-purge prints three receipts');
    set_version(2);
}

# 2. A node stopped while purges are published serves none of them when it
# starts again, before and after it caught up.
for my $i (1 .. 10) { cached($_, "/s$i") for @nodes }
ok(cached($nodes[2], '/s1') && cached($nodes[2], '/s10'), 'edge-3 has the entries');
$nodes[2]{t}->stop();
set_version(3);
my $last;
my $published = 0;
for my $i (1 .. 50) {
    my (undef, $pj) = fleet_purge($nodes[0],
        { url => "/s" . (($i - 1) % 10 + 1), fleet => JSON::PP::true, wait => 0.05 });
    $last = $pj->{seq};
    $published++ if defined $last;
}
is($published, 50, 'fifty purges published while edge-3 is down');
my (undef, $j3) = fleet_purge($nodes[0], { url => '/s1', fleet => JSON::PP::true, wait => 0.3 });
ok(grep({ $_ eq 'edge-3' } @{$j3->{pending} // []}), 'the down node is listed as pending');
$nodes[2]{t}->run();
ok(!grep({ !never_older($nodes[2], "/s$_", 3) } 1 .. 10),
    'restarted edge-3 serves none of the purged entries');
ok(wait_for(10, sub { serving($nodes[2]) }), 'edge-3 caught up');
ok(cmp_id(status($nodes[2])->{fleet}{applied}, $last) >= 0,
    'its applied id passed the last purge');
ok(!grep({ !never_older($nodes[2], "/s$_", 3) } 1 .. 10),
    'and still none after catching up');
ok(status($nodes[2])->{fleet}{catch_ups} >= 1, 'a catch-up is counted');

# 3. Redis SIGSTOPped: a fleet purge answers 503 with the local purge applied;
# every node self-fences within max_lag (2 s) plus a bound; SIGCONT: hits again.
ok(cached($_, '/f'), "/f cached on $_->{name}") for @nodes;
kill STOP => $redis_pid;
my $t0 = time;
set_version(4);
my ($r5, $j5) = fleet_purge($nodes[1], { url => '/f', fleet => JSON::PP::true });
is($r5->{status}, 503, 'Redis unreachable: 503');
like($j5->{error} // '', qr/unreachable/, 'with the reason');
is(get($nodes[1], '/f')->{ver}, 4, 'the local purge was applied');
ok(wait_for(6, sub { !grep { !(status($_)->{fleet}{self_fenced}) } @nodes }),
    'every node self-fenced');
my $fence_after = time - $t0;
ok($fence_after >= 1.5 && $fence_after < 5,
    sprintf('fenced after max_lag (2 s) within a bound: %.2f s', $fence_after));
ok(!grep({ get($_, '/f')->{xc} eq 'HIT' } @nodes), 'no HIT while fenced');
kill CONT => $redis_pid;
ok(wait_for(10, sub { !grep { !serving($_) } @nodes }),
    'after SIGCONT every node caught up');
ok(wait_for(5, sub { get($nodes[0], '/f')->{xc} eq 'HIT' }), 'and serves hits again');
ok(status($nodes[0])->{fleet}{self_fenced_ms} > 0, 'self-fenced time is counted');
like((parse_response(http_get('/status?format=prometheus', port => $nodes[0]{port})) // {})->{body} // '',
    qr/^pagespeed_fleet_applied_ms\{node="edge-1",tier="edge"\} \d+/m, 'Prometheus fields');

# 4. "wait" belongs to fleet purges.
my ($r6) = fleet_purge($nodes[0], { url => '/a', wait => 1 });
is($r6->{status}, 400, '"wait" without "fleet" is refused');

# 5. redis-server killed (SIGKILL) and restarted on its append-only file between
# purges: nothing acknowledged is lost, and the nodes reconnect on their own. A node
# that was down through it all catches up on the purges published before the crash.
SKIP: {
    my $cli = `command -v redis-cli 2>/dev/null`;
    chomp $cli;
    skip 'redis-cli not installed', 7 unless $cli;
    my $xlen = sub { my $n = `$cli -p $redis_port XLEN pagespeed:purges 2>/dev/null`; chomp $n; $n };
    for my $i (1 .. 5) { cached($_, "/r$i") for @nodes }
    ok(!grep({ !cached($nodes[2], "/r$_") } 1 .. 5), 'edge-3 has /r1../r5');
    $nodes[2]{t}->stop();
    set_version(6);
    my $acked = 0;
    for my $i (1 .. 5) {
        my ($pr, $pj) = fleet_purge($nodes[0],
            { url => "/r$i", fleet => JSON::PP::true, wait => 0.2 });
        $acked++ if $pr->{status} == 200 && $pj->{seq};
    }
    is($acked, 5, 'five purges acknowledged with edge-3 down');
    my $before = $xlen->();
    kill KILL => $redis_pid;
    waitpid($redis_pid, 0);
    undef $redis_pid;
    start_redis();
    is($xlen->(), $before, "the stream survived the crash ($before entries)");
    $nodes[2]{t}->run();
    ok(!grep({ !never_older($nodes[2], "/r$_", 6) } 1 .. 5),
        'edge-3, started after the crash, serves none of the purged entries');
    ok(wait_for(15, sub { !grep { !serving($_) } @nodes }),
        'every node reconnected and caught up');
    ok(!grep({ !never_older($nodes[2], "/r$_", 6) } 1 .. 5), 'and still none on edge-3');
    set_version(7);
    my ($r7, $j7) = fleet_purge($nodes[1], { url => '/r1', fleet => JSON::PP::true });
    is_deeply([$r7->{status}, [sort keys %{$j7->{nodes} // {}}]],
        [200, [qw/edge-1 edge-2 edge-3/]], 'a purge after the restart has all three receipts');
}

$_->{t}->stop() for reverse @nodes;
stop_redis();
done_testing();
