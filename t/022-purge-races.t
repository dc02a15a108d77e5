#!/usr/bin/perl

# Purges racing fills (DESIGN.md invariants 1 and 2): a fill that took its
# ticket before a purge must never be stored after it, whatever the scope.
#
# Each race: a GET misses and waits on a slow origin (the origin reads its
# version when the request arrives, then sleeps); meanwhile the version is
# bumped and a purge covering the URL returns its receipt; then the slow
# response completes (the client gets the old bytes, that is fine). The next
# request must be a MISS with new bytes, never a HIT with the old ones, and
# the fill is counted as fenced.
#
# Then a bounded load loop: clients hammer GETs while the test keeps bumping
# the version and purging; every GET that started after the receipt of the
# purge for version v must get a version >= v.

use strict;
use warnings;

use Test::More;
use IO::Select;
use POSIX ();
use Time::HiRes qw/time sleep/;

use lib 't/lib';
use Test::Nginx;
use Test::Pagespeed qw/versioned_route vget json_of status_json/;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(39);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events { worker_connections 1024; }
http {
    %%TEST_GLOBALS_HTTP%%
    # The origin here sends no explicit freshness; the default reuses such responses only
    # under heuristic freshness (RFC 9111 4.2.2), so these tests give them a lifetime.
    pagespeed_cache_valid 10m;
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
        location = /purge { pagespeed_purge; }
        location = /status { pagespeed_status; }
    }
}
EOF

my $dir = $t->testdir;
my $version = 0;

sub set_version { $version = Test::Pagespeed::set_version(shift) }

# The version is read when the request arrives; X-Delay (passed through by
# proxy_pass, not part of the cache key) then holds the response back.
my %KEY = ('/hot' => 'hot');
start_origin(port => 8081, routes => { '*' => versioned_route(
    headers => sub {
        my $k = $_[0]{path} =~ m{^/t/} ? 'race-tag' : $KEY{$_[0]{path}};
        return $k ? ('Surrogate-Key' => $k) : ();
    },
    delay => sub { $_[0]{headers}{'x-delay'} }) });

set_version(1);
$t->run();

###############################################################################

sub get { vget(@_) }

sub purge {
    my ($body) = @_;
    my $r = parse_response(http_post('/purge', $body,
        headers => { 'Content-Type' => 'application/json' }));
    return json_of($r) // {};
}

sub status { status_json() }

my $DELAY = 0.6;

# One race; $purge is the JSON body of a purge covering $uri.
sub race {
    my ($uri, $purge, $name) = @_;
    my $old = $version;
    my $fenced = status()->{fenced};
    my $seen = $t->origin_hits($uri);

    my $s = http_get($uri, start => 1, headers => { 'X-Delay' => $DELAY });

    # wait until the origin has the request (and so has read the version)
    my $deadline = time + 5;
    sleep 0.01 while $t->origin_hits($uri) == $seen && time < $deadline;

    set_version($old + 1);
    my $j = purge($purge);
    my $pending = !IO::Select->new($s)->can_read(0);
    ok($j->{generation} && $pending,
        "$name: purge receipt while the fill is in flight");

    my $r = parse_response(http_end($s)) // { headers => {}, body => '' };
    ok(($r->{headers}{'x-cache'} // '') eq 'MISS' && $r->{body} =~ / v=$old$/,
        "$name: the slow fill answers its client with the old bytes");

    $r = get($uri);
    ok($r->{xc} eq 'MISS' && $r->{ver} == $old + 1,
        "$name: next request is a MISS with new bytes")
        or diag("got $r->{xc} v=$r->{ver}");
    $r = get($uri);
    ok($r->{xc} eq 'HIT' && $r->{ver} == $old + 1, "$name: then a HIT");
    cmp_ok(status()->{fenced}, '>=', $fenced + 1, "$name: fill fenced");
}

race('/u/a', '{"url": "/u/a"}', 'url purge, first fill');
race('/u/b', '{"url": "http://localhost/u/b"}', 'absolute url purge');
race('/p/sub/a', '{"url": "/p/*"}', 'prefix purge');
race('/t/a', '{"tag": "race-tag"}', 'tag purge');
race('/f/a', '{"scope": "all", "confirm": "purge-all"}', 'full flush');

# An unrelated purge does not fence a fill.
{
    my $stored = status()->{stored};
    my $s = http_get('/x/a', start => 1, headers => { 'X-Delay' => 0.3 });
    my $deadline = time + 5;
    sleep 0.01 while $t->origin_hits('/x/a') == 0 && time < $deadline;
    purge('{"url": "/x/b"}');
    http_end($s);
    is(get('/x/a')->{xc}, 'HIT', 'unrelated purge: racing fill stored');
    is(status()->{stored}, $stored + 1, 'unrelated purge: counted stored');
}

# A soft purge does not fence, but what the racing fill stores is stale:
# never served as a HIT.
{
    my $old = $version;
    my $s = http_get('/s/a', start => 1, headers => { 'X-Delay' => $DELAY });
    my $deadline = time + 5;
    sleep 0.01 while $t->origin_hits('/s/a') == 0 && time < $deadline;
    set_version($old + 1);
    my $j = purge('{"url": "/s/a", "soft": true}');
    ok($j->{soft} && !IO::Select->new($s)->can_read(0),
        'soft purge: receipt while the fill is in flight');
    http_end($s);
    my $r = get('/s/a');
    ok($r->{xc} ne 'HIT' && $r->{ver} == $old + 1,
        'soft purge race: old bytes not served as a HIT')
        or diag("got $r->{xc} v=$r->{ver}");
    is($r->{headers}{'x-cache-status'}, 'EXPIRED', 'soft purge race: revalidated, changed: EXPIRED');
    $r = get('/s/a');
    ok($r->{xc} eq 'HIT' && $r->{ver} == $old + 1, 'soft purge race: then HIT');
}

###############################################################################
# load: purges while clients hammer one URL

my $LOAD = 2;       # seconds
my $CLIENTS = 3;

# Each client writes "start end version x-cache" per GET.
my @kids;
my $t0 = time + 0.2;
for my $n (1 .. $CLIENTS) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open my $out, '>', "$dir/load.$n" or POSIX::_exit(1);
        sleep 0.01 while time < $t0;
        while (time < $t0 + $LOAD) {
            my $start = time;
            # a short origin delay widens the fill/purge window
            my $r = get('/hot', headers => { 'X-Delay' => 0.02 }, timeout => 5);
            printf $out "%.6f %.6f %d %s\n", $start, time, $r->{ver},
                $r->{xc} || '-';
        }
        close $out;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}

# the purger: bump, purge (url, prefix or tag in turn), note the receipt
my @receipts;       # [version, receipt time]
my @forms = ('{"url": "/hot"}', '{"url": "/ho*"}', '{"tag": "hot"}');
my $failed = 0;
sleep 0.01 while time < $t0 + 0.1;
while (time < $t0 + $LOAD - 0.1) {
    set_version($version + 1);
    my $j = purge($forms[@receipts % @forms]);
    $failed++ unless $j->{generation};
    push @receipts, [$version, time];
    sleep 0.03;
}
my $deadline = time + 15;
for my $pid (@kids) {
    while (waitpid($pid, POSIX::WNOHANG()) == 0 && time < $deadline) {
        sleep 0.05;
    }
    kill KILL => $pid if time >= $deadline;
}

my (@gets, @bad);
for my $n (1 .. $CLIENTS) {
    open my $in, '<', "$dir/load.$n" or next;
    push @gets, map { [split] } <$in>;
}
my ($hits, $errors) = (0, 0);
for my $g (@gets) {
    my ($start, $end, $ver, $xc) = @$g;
    $hits++ if $xc eq 'HIT';
    $errors++ if $ver < 0;
    # the newest purge whose receipt came before this GET started
    my $need = 0;
    for (@receipts) { $need = $_->[0] if $_->[1] < $start }
    push @bad, sprintf('GET at %.3f got v%d (%s), purge of v%d done',
        $start - $t0, $ver, $xc, $need) if $ver < $need;
}

is($failed, 0, 'load: every purge answered with a generation');
cmp_ok(scalar @receipts, '>=', 10, 'load: purges made');
cmp_ok(scalar @gets, '>=', 50, 'load: GETs made');
is($errors, 0, 'load: every GET answered');
cmp_ok($hits, '>=', 1, 'load: some GETs were hits');
is(scalar @bad, 0, 'load: no GET after a receipt got bytes older than it')
    or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
note(sprintf 'load: %d GETs, %d hits, %d purges, fenced %d',
    scalar @gets, $hits, scalar @receipts, status()->{fenced});

# and after the storm, the cache still converges
set_version($version + 1);
purge('{"url": "/hot"}');
my $r = get('/hot');
ok($r->{xc} eq 'MISS' && $r->{ver} == $version, 'after load: refill');
$r = get('/hot');
ok($r->{xc} eq 'HIT' && $r->{ver} == $version, 'after load: HIT');
