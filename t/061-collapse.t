#!/usr/bin/perl

# Collapsed forwarding (pagespeed_cache_lock, pagespeed_cache_lock_timeout):
# while one fill of a key is in flight in any worker, the other requests for
# that key, in every worker, wait for it and are served from the new entry
# (COLLAPSED, X-Cache: HIT) instead of each going to the origin.
#
# 1. a burst of clients after a purge of a hot URL: one origin request, every
#    client the new bytes, from both workers;
# 2. pagespeed_cache_lock off: the same burst goes to the origin many times;
# 3. fills that end without storing (the origin closes or answers 502, a body
#    over the size limit, the filling client goes away) release the lease:
#    waiters go on at once, not after the lock timeout;
# 4. a worker killed (SIGKILL) while its request holds a lease: later
#    requests do not wait for it past the lock timeout;
# 5. a hard purge while a fill holds the lease: requests after the receipt
#    get the new bytes, never the old;
# 6. past pagespeed_cache_lock_timeout a waiter goes to the origin itself,
#    its answer is not stored, and lock_timeouts counts it.

use strict;
use warnings;

use Test::More;
use POSIX ();
use Time::HiRes qw/time sleep/;

use lib 't/lib';
use Test::Nginx;
use Test::Pagespeed qw/:DEFAULT !set_version/;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(55);

# case 4 kills a worker on purpose
$t->ignore_log(qr/worker process \d+ exited on signal 9/);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events { worker_connections 1024; }
http {
    %%TEST_GLOBALS_HTTP%%
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=8m;
    access_log off;

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        add_header X-Worker $pid always;
        add_header X-Cache-Status $pagespeed_cache_status always;

        location / {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081;
        }
        location /nolock/ {
            pagespeed_cache on;
            pagespeed_cache_lock off;
            proxy_pass http://127.0.0.1:8081;
        }
        location /big/ {
            pagespeed_cache on;
            pagespeed_cache_max_object_size 64k;
            proxy_http_version 1.1;
            proxy_pass http://127.0.0.1:8081;
        }
        location /kill/ {
            pagespeed_cache on;
            pagespeed_cache_lock_timeout 2s;
            proxy_set_header X-Nginx-Pid $pid;
            proxy_pass http://127.0.0.1:8081;
        }
        location /lt/ {
            pagespeed_cache on;
            pagespeed_cache_lock_timeout 500ms;
            proxy_pass http://127.0.0.1:8081;
        }
        location /gone/ {
            pagespeed_cache on;
            access_log %%TESTDIR%%/gone.log;
            proxy_pass http://127.0.0.1:8081;
        }
        location = /purge { pagespeed_purge; }
        location = /status { pagespeed_status; }
    }
}
EOF

my $dir = $t->testdir;
my $version = 0;

sub set_version { $version = Test::Pagespeed::set_version(shift) }

sub seen { origin_seen($dir, shift) }

# The version is read when the request arrives; X-Delay (passed through by
# proxy_pass, not part of the cache key) then holds the response back.
# Bodies say the version and which origin request for the path made them.
start_origin(port => 8081, routes => { '*' => sub {
    my ($r) = @_;
    my $p = $r->{path};
    open my $fh, '<', "$dir/version" or die "version: $!";
    my $v = <$fh>;
    my $n = seen($p);
    my $delay = $r->{headers}{'x-delay'};
    my %h = ('Cache-Control' => 'max-age=3600');

    if ($p =~ m{^/abort/close} && $n == 1) {
        # the first request: the origin goes away without an answer
        sleep 1;
        POSIX::_exit(0);
    }
    return (502, {}, "bad gateway\n", 1) if $p =~ m{^/abort/502} && $n == 1;
    if ($p =~ m{^/big/}) {
        my $body = ('x' x 199_999) . "\n";
        $delay = $n == 1 ? 1 : 0;
        return (200, \%h, $body, $delay) if $p =~ m{/cl$};
        # chunked: no Content-Length, the body filter meets the limit
        my $chunked = join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) }
            unpack '(a16384)*', $body) . "0\r\n\r\n";
        return (200, [%h, 'Transfer-Encoding' => 'chunked'], $chunked,
            $delay);
    }
    if ($p =~ m{^/kill/} && $n == 1) {
        # the filling worker, for the test to kill; then a long wait
        if (open my $o, '>', "$dir/filler.tmp") {
            print $o $r->{headers}{'x-nginx-pid'} // '';
            close $o;
            rename "$dir/filler.tmp", "$dir/filler.pid";
        }
        $delay = 8;
    }
    $delay = $n == 1 ? 3 : 0 if $p =~ m{^/lt/};
    return (200, \%h, "$p v=$v n=$n\n", $delay);
} });

set_version(1);
$t->run();

###############################################################################
# helpers

sub purge { (purge_json(shift))[1] }

sub status { status_json() }

sub get { vget(@_) }

###############################################################################
# 1. a burst after a purge of a hot URL: one origin request

{
    my $r = get('/hot');
    is($r->{xc}, 'MISS', 'hot: first fill');
    is(get('/hot')->{xc}, 'HIT', 'hot: then a HIT');

    set_version(2);
    ok(purge('{"url": "/hot"}')->{generation}, 'hot: purged');
    my $st = status();
    my $hits = $t->origin_hits('/hot');

    my @c = burst(40, '/hot', 'X-Delay' => 1);
    my @ok = grep { $_->{status} == 200 && $_->{ver} == 2 } @c;
    is(scalar @ok, 40, 'hot: 40 clients all got the new bytes')
        or diag(count_of('status', @c), '; ', count_of('ver', @c));
    is($t->origin_hits('/hot') - $hits, 1, 'hot: one origin request');
    my %workers = map { $_->{worker} => 1 } grep { $_->{worker} } @c;
    is(scalar keys %workers, 2, 'hot: clients served by both workers');
    my @filler = grep { $_->{cs} eq 'MISS' } @c;
    my @waiters = grep { $_->{cs} ne 'MISS' } @c;
    is(scalar @filler, 1, 'hot: one MISS')
        or diag(count_of('cs', @c));
    is(scalar(grep { $_->{cs} eq 'COLLAPSED' && $_->{xc} eq 'HIT' } @waiters),
        39, 'hot: the others COLLAPSED with X-Cache HIT')
        or diag(count_of('cs', @c));
    my $st2 = status();
    is(($st2->{collapsed} // 0) - ($st->{collapsed} // 0), 39,
        'hot: collapsed counter +39');
    if (@filler) {
        my $lag = max_of(map { $_->{done} - $filler[0]{done} }
            grep { $_->{done} } @waiters);
        my %per;
        push @{$per{$_->{worker}}}, $_->{done} - $filler[0]{done}
            for grep { $_->{done} } @waiters;
        diag(sprintf 'hot: filler took %.3fs; waiters returned at most %.3fs'
            . ' after it (%s)', $filler[0]{secs}, $lag,
            join(', ', map { sprintf 'worker %s: max %.3fs', $_,
                max_of(@{$per{$_}}) } sort keys %per));
        cmp_ok($lag, '<', 2, 'hot: waiters returned within 2 s of the filler');
    } else {
        fail('hot: waiters returned within 2 s of the filler');
    }
    is(get('/hot')->{xc}, 'HIT', 'hot: then a HIT');
}

###############################################################################
# 2. pagespeed_cache_lock off: no collapsing

{
    my @c = burst(40, '/nolock/hot', 'X-Delay' => 1);
    is(scalar(grep { $_->{status} == 200 } @c), 40, 'lock off: all answered');
    my $n = $t->origin_hits('/nolock/hot');
    cmp_ok($n, '>', 1, 'lock off: more than one origin request');
    diag("lock off: $n origin requests for 40 clients");
}

###############################################################################
# 3. fills that end without storing release the lease at once

# A filler for $uri, then $n waiters once the origin has it; $between runs
# after the waiters were sent; %h are the filler's extra headers. Returns
# (filler client, waiters).
sub aborted {
    my ($uri, $n, $between, %h) = @_;
    my ($path) = $uri =~ /^([^?]*)/;
    my $seen = $t->origin_hits($path);
    my $f = start_clients(1, $uri, %h);
    wait_until(sub { $t->origin_hits($path) > $seen }, 5);
    my $w = start_clients($n, $uri);
    $between->($f) if $between;
    my @w = collect_clients($w, 12);
    my ($filler) = collect_clients($f, 1);
    return ($filler, @w);
}

sub report_waiters {
    my ($name, $filler, @w) = @_;
    diag(sprintf '%s: filler %s in %.3fs; waiters %s, slowest %.3fs',
        $name, $filler->{status} || 'closed', $filler->{secs}
            == 999 ? 0 : $filler->{secs}, count_of('cs', @w),
        max_of(map { $_->{secs} } @w));
}

{
    # (a) the origin closes without an answer: nginx's 502, not storable
    my ($f, @w) = aborted('/abort/close', 6);
    report_waiters('origin closed', $f, @w);
    is($f->{status}, 502, 'origin closed: the filler gets a 502');
    ok(!grep({ $_->{status} != 200 } @w), 'origin closed: waiters answered 200')
        or diag(count_of('status', @w));
    cmp_ok(max_of(map { $_->{secs} } @w), '<', 4,
        'origin closed: waiters went on well before the lock timeout');

    # (a') the origin answers 502
    ($f, @w) = aborted('/abort/502', 6);
    report_waiters('origin 502', $f, @w);
    is($f->{status}, 502, 'origin 502: the filler gets it');
    ok(!grep({ $_->{status} != 200 } @w), 'origin 502: waiters answered 200')
        or diag(count_of('status', @w));
    cmp_ok(max_of(map { $_->{secs} } @w), '<', 4,
        'origin 502: waiters went on well before the lock timeout');
    my $r = get('/abort/502');
    ok($r->{status} == 200 && $r->{xc} eq 'BYPASS',
        'origin 502: a hit-for-pass meanwhile (BYPASS, from the origin)')
        or diag("got $r->{status} $r->{xc} $r->{cs}");

    # (b) a body over pagespeed_cache_max_object_size, with and without a
    # Content-Length
    for my $kind (qw/cl chunked/) {
        ($f, @w) = aborted("/big/$kind", 6);
        report_waiters("too large ($kind)", $f, @w);
        ok($f->{status} == 200 && length($f->{body}) == 200_000,
            "too large ($kind): the filler gets the whole body");
        ok(!grep({ $_->{status} != 200 || length($_->{body}) != 200_000 } @w),
            "too large ($kind): waiters get the whole body")
            or diag(count_of('status', @w));
        cmp_ok(max_of(map { $_->{secs} } @w), '<', 4,
            "too large ($kind): waiters went on well before the lock timeout");
        isnt(get("/big/$kind")->{xc}, 'HIT', "too large ($kind): not stored");
    }

    # (c) the filling client goes away 0.3 s in, 1.7 s before the origin
    # would answer it: one waiter fills (the origin answers it at once), the
    # others collapse on it
    set_version(3);
    ($f, @w) = aborted('/abort/client', 6, sub {
        sleep 0.3;
        close $_->{sock} for @{$_[0]};
        delete $_->{sock} for @{$_[0]};
    }, 'X-Delay' => 2);
    report_waiters('client gone', $f, @w);
    ok(!grep({ $_->{status} != 200 || $_->{ver} != 3 } @w),
        'client gone: waiters answered 200')
        or diag(count_of('status', @w));
    cmp_ok(max_of(map { $_->{secs} } @w), '<', 4,
        'client gone: waiters went on well before the lock timeout');
    $r = get('/abort/client');
    ok($r->{xc} eq 'HIT' && $r->{ver} == 3, 'client gone: a waiter filled, then a HIT')
        or diag("got $r->{xc} $r->{cs} v$r->{ver}");
}

###############################################################################
# 4. a worker killed while its request holds the lease

{
    my $uri = '/kill/a';
    my $f = start_clients(1, $uri);
    wait_until(sub { -s "$dir/filler.pid" }, 5);
    my $victim = $t->read_file('filler.pid') // '';
    my %before = map { $_ => 1 } $t->worker_pids;
    ok($victim =~ /^\d+$/ && $before{$victim},
        'killed filler: the origin names the filling worker')
        or diag("filler pid '$victim', workers " . join ' ', keys %before);

    my $early = start_clients(6, $uri);
    sleep 0.3;
    kill KILL => $victim if $victim =~ /^\d+$/ && $before{$victim};
    my $killed = time;
    my $late = start_clients(6, $uri);

    my @early = collect_clients($early, 10);
    my @late = collect_clients($late, 10);
    collect_clients($f, 1);

    # waiters in the killed worker lose their connection with it
    my @survivors = grep { $_->{worker} ne $victim && $_->{status} } @early;
    diag(sprintf 'killed filler: early waiters %s (%d lost with the worker),'
        . ' slowest survivor %.3fs after the kill; late waiters %s, slowest'
        . ' %.3fs', count_of('cs', @survivors), @early - @survivors,
        max_of(map { $_->{done} - $killed } grep { $_->{done} } @survivors),
        count_of('cs', @late), max_of(map { $_->{secs} } @late));
    ok(!grep({ ($_->{done} // 1e9) - $killed >= 4 } @survivors),
        'killed filler: waiters in the other worker go on within 4 s');
    ok(!grep({ $_->{status} != 200 } @late),
        'killed filler: requests after the kill answered 200')
        or diag(count_of('status', @late));
    cmp_ok(max_of(map { $_->{secs} } @late), '<', 4,
        'killed filler: requests after the kill do not hang');

    my @w;
    wait_until(sub { @w = $t->worker_pids; @w == 2 && !grep { $_ == $victim } @w }, 5);
    ok(@w == 2 && !grep({ $_ == $victim } @w), 'killed filler: worker respawned');
    my $r = get($uri);
    ok($r->{status} == 200 && $r->{xc} eq 'HIT', 'killed filler: then a HIT')
        or diag("got $r->{status} $r->{xc} $r->{cs}");
}

###############################################################################
# 5. a hard purge while a fill holds the lease

{
    my $uri = '/race/a';
    set_version(10);
    my $old = $version;
    my $seen = $t->origin_hits($uri);
    my $f = start_clients(1, $uri, 'X-Delay' => 1.5);
    wait_until(sub { $t->origin_hits($uri) > $seen }, 5);
    my $early = start_clients(5, $uri, 'X-Delay' => 0.3);
    sleep 0.1;

    set_version($old + 1);
    my $j = purge(qq{{"url": "$uri"}});
    ok($j->{generation}, 'purge during lease: receipt');
    my $late = start_clients(10, $uri, 'X-Delay' => 0.3);

    my @late = collect_clients($late, 10);
    my @early = collect_clients($early, 10);
    my ($filler) = collect_clients($f, 10);
    diag(sprintf 'purge during lease: filler v%d %s; early %s %s; late %s %s',
        $filler->{ver}, $filler->{cs}, count_of('ver', @early),
        count_of('cs', @early), count_of('ver', @late), count_of('cs', @late));
    is($filler->{ver}, $old, 'purge during lease: the filler answers its client');
    ok(!grep({ $_->{ver} != $old + 1 } @late),
        'purge during lease: every request after the receipt got the new bytes')
        or diag(count_of('ver', @late));
    ok(!grep({ $_->{ver} < $old } @early), 'purge during lease: early waiters answered');
    my $r = get($uri);
    ok($r->{xc} eq 'HIT' && $r->{ver} == $old + 1,
        'purge during lease: then a HIT with the new bytes')
        or diag("got $r->{xc} v$r->{ver}");
}

###############################################################################
# 6. past the lock timeout a waiter goes to the origin itself

{
    my $uri = '/lt/a';
    my $timeouts = status()->{lock_timeouts} // 0;
    my $f = start_clients(1, $uri);
    wait_until(sub { $t->origin_hits($uri) >= 1 }, 5);
    sleep 0.1;
    my $w = get($uri);
    diag(sprintf 'lock timeout: waiter %s %s n=%d in %.3fs', $w->{status},
        $w->{cs}, $w->{n}, $w->{secs});
    ok($w->{status} == 200 && $w->{n} == 2,
        "lock timeout: the waiter got the origin's own answer");
    ok($w->{secs} >= 0.4 && $w->{secs} < 2.5,
        'lock timeout: after about the lock timeout, before the fill');
    is($w->{cs}, 'BYPASS', 'lock timeout: status BYPASS');
    is($t->origin_hits($uri), 2, 'lock timeout: two origin requests');
    is((status()->{lock_timeouts} // 0) - $timeouts, 1,
        'lock timeout: lock_timeouts +1');

    # the waiter's answer was not stored: a request now does not hit it
    my $again = get($uri);
    ok(!($again->{xc} eq 'HIT' && $again->{n} == 2),
        "lock timeout: the waiter's answer was not stored")
        or diag("got $again->{xc} $again->{cs} n=$again->{n}");

    my ($filler) = collect_clients($f, 6);
    ok($filler->{status} == 200 && $filler->{n} == 1,
        'lock timeout: the slow fill answers its client');
    my $r = get($uri);
    ok($r->{xc} eq 'HIT' && $r->{n} == 1,
        'lock timeout: then a HIT with the fill')
        or diag("got $r->{xc} $r->{cs} n=$r->{n}");
}
###############################################################################
# the hit-for-pass of case 3 has ended (3 s): the URL is stored again

{
    my $r = get('/abort/502');
    my $r2 = get('/abort/502');
    ok($r->{status} == 200 && $r->{xc} eq 'MISS' && $r2->{xc} eq 'HIT',
        'after the hit-for-pass: stored again')
        or diag("got $r->{status} $r->{xc}, then $r2->{xc}");
}
###############################################################################
# 7. waiters whose clients leave are finished, never left blocked: a client that
# goes while its request waits wakes the request (nginx reads the close), which
# must not block itself a second time; every request ends and is logged.

{
    my $f = start_clients(1, '/gone/a', 'X-Delay' => 1.5);
    sleep 0.2;
    my $w = start_clients(20, '/gone/a');
    sleep 0.3;
    close $_->{sock} for grep { $_->{sock} } @$w;
    my ($filler) = collect_clients($f, 6);
    is("$filler->{status} $filler->{xc}", '200 MISS', 'clients gone: the filler answered');
    my $logged = sub { my @l = split /\n/, $t->read_file('gone.log') // ''; scalar @l };
    ok(wait_until(sub { $logged->() >= 21 }, 5),
        'clients gone: every waiting request ended (logged)')
        or diag('logged ' . $logged->() . ' of 21');
    is(get('/gone/a')->{xc}, 'HIT', 'clients gone: the fill is stored');
}

###############################################################################
# waiters resumed hundreds of times above: no worker may have crashed (the
# one case 4 killed exited on signal 9)

is(scalar($t->grep_log(qr/exited on signal (?!9\b)\d+/)), 0,
    'no worker crashed')
    or diag(join "\n", $t->grep_log(qr/exited on signal/));

###############################################################################
