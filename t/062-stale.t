#!/usr/bin/perl

# Serving stale entries (pagespeed_cache_use_stale, RFC 5861):
#
# 1. `pagespeed_cache_use_stale updating`: an expired or soft-purged entry is
#    served at once (X-Cache: STALE, status UPDATING) while one background
#    revalidation runs, whatever the number of such requests; then the new
#    bytes are a HIT;
# 2. the origin's `stale-while-revalidate=30`, without the directive: the
#    same;
# 3. a hard-purged entry is never served stale;
# 4. `pagespeed_cache_use_stale error timeout http_503`, or the origin's
#    `stale-if-error=60`: when the refill fails (connection refused, upstream
#    timeout, a 503) the stale entry is served (X-Cache: STALE, status
#    STALE); with neither, the client gets the error.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw/time sleep/;

use lib 't/lib';
use Test::Nginx;
use Test::Pagespeed qw/:DEFAULT !set_version/;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(57);

# The refills of /err/, /sie/ and /none/ fail on request: X-Backend: refuse
# sends them to a port nothing listens on (8083), X-Delay: 3 outlasts
# proxy_read_timeout, X-Fail: 503 makes the origin answer 503. The
# revalidation subrequest carries the client's headers, so the failure
# reaches it; the cache key ignores them.
$t->write_file_expand('nginx.conf', <<'EOF2');
%%TEST_GLOBALS%%
worker_processes 2;
events { worker_connections 1024; }
http {
    %%TEST_GLOBALS_HTTP%%
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=8m;
    access_log off;

    map $http_x_backend $backend {
        default 127.0.0.1:8081;
        refuse  127.0.0.1:8083;
    }

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        add_header X-Worker $pid always;
        add_header X-Cache-Status $pagespeed_cache_status always;

        location /upd/ {
            pagespeed_cache on;
            pagespeed_cache_use_stale updating;
            proxy_pass http://127.0.0.1:8081;
        }
        location /swr/ {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081;
        }
        location /err/ {
            pagespeed_cache on;
            pagespeed_cache_use_stale error timeout http_503;
            proxy_read_timeout 1s;
            proxy_pass http://$backend;
        }
        location /sie/ {
            pagespeed_cache on;
            proxy_read_timeout 1s;
            proxy_pass http://$backend;
        }
        location /none/ {
            pagespeed_cache on;
            proxy_read_timeout 1s;
            proxy_pass http://$backend;
        }
        location = /purge { pagespeed_purge; }
        location = /status { pagespeed_status; }
    }
}
EOF2

my $dir = $t->testdir;
my $version = 0;

sub set_version { $version = Test::Pagespeed::set_version(shift) }

sub seen { origin_seen($dir, shift) }

# Cache-Control by prefix; the first version of an entry lives a second,
# except those ending in /long (for soft and hard purges of fresh entries);
# refills (version 2 on) live an hour, so that they are HITs afterwards.
start_origin(port => 8081, routes => { '*' => sub {
    my ($r) = @_;
    my $p = $r->{path};
    open my $fh, '<', "$dir/version" or die "version: $!";
    my $v = <$fh>;
    my $n = seen($p);
    my $age = $p =~ m{/long$} || $v > 1 ? 3600 : 1;
    my $cc = "max-age=$age";
    # /short/: windows of one second, over by the time the entry is used
    my $w = $p =~ m{/short/} ? 1 : undef;
    $cc .= ', stale-while-revalidate=' . ($w // 30) if $p =~ m{^/swr/};
    $cc .= ', stale-if-error=' . ($w // 60) if $p =~ m{^/sie/};
    my $delay = $r->{headers}{'x-delay'};
    if (my $fail = $r->{headers}{'x-fail'}) {
        return ($fail, { 'Cache-Control' => 'max-age=60' },
            "origin failed v=$v n=$n\n", $delay);
    }
    return (200, { 'Cache-Control' => $cc }, "$p v=$v n=$n\n", $delay);
} });

set_version(1);
$t->run();

###############################################################################
# helpers

sub purge { (purge_json(shift))[1] }

sub status { status_json() }

sub get { vget(@_) }

sub eof_lag { max_of(map { ($_->{eof} // $_->{start}) - $_->{start} } @_) }

###############################################################################
# entries: one-second ones that will be stale, hour-long ones to purge

my @short = qw{/upd/a /upd/h /swr/a /err/refuse /err/timeout /err/503 /err/hp
    /sie/refuse /sie/timeout /sie/503 /none/refuse /none/timeout /none/503
    /swr/short/a /sie/short/503 /err/500};
my @long = qw{/upd/soft/long /swr/soft/long /swr/h/long};
my $stored_at = time;
my @first = map { get($_) } @short, @long;
ok(!grep({ $_->{xc} ne 'MISS' || $_->{ver} != 1 } @first), 'entries stored')
    or diag(join ', ', map { "$_->{xc} v$_->{ver}" } @first);

# max-age=1: stale from the next second of nginx's clock on
sleep 0.05 while time < $stored_at + 2.2;
set_version(2);

###############################################################################
# 1, 2. stale while one revalidation runs

sub updating {
    my ($uri, $name) = @_;
    my $hits = $t->origin_hits($uri);
    my $before = status()->{stale_updating} // 0;
    my $c = start_clients(5, $uri, 'X-Delay' => 1);
    my @c = collect_clients($c, 5, until_done => 1);
    ok(!grep({ $_->{status} != 200 || $_->{ver} != 1 || $_->{xc} ne 'STALE'
            || $_->{cs} ne 'UPDATING' } @c),
        "$name: 5 requests get the old bytes, STALE, UPDATING")
        or diag(join ', ', map { "$_->{status} $_->{xc} $_->{cs} v$_->{ver}" } @c);
    my $slowest = max_of(map { $_->{secs} } @c);
    cmp_ok($slowest, '<', 0.5, "$name: at once");

    # the revalidation takes the origin's 1 s delay: requests meanwhile are
    # served stale too, and start no other
    my @later;
    for (1 .. 3) {
        sleep 0.2;
        push @later, get($uri, headers => { 'X-Delay' => 1 });
    }
    ok(!grep({ $_->{ver} != 1 || $_->{cs} ne 'UPDATING' || $_->{secs} >= 0.5 }
            @later), "$name: requests during the revalidation: UPDATING too")
        or diag(join ', ', map { "$_->{xc} $_->{cs} v$_->{ver}" } @later);
    # (the stale answers are complete at once; their connections stay open
    # until the background subrequest ends, as with nginx's own
    # proxy_cache_background_update)
    collect_clients($c, 5);
    diag(sprintf '%s: stale answers complete after at most %.3fs,'
        . ' their connections closed after at most %.3fs', $name, $slowest,
        eof_lag(@c));
    sleep 0.3;
    is($t->origin_hits($uri) - $hits, 1, "$name: one background request");
    is((status()->{stale_updating} // 0) - $before, 8,
        "$name: stale_updating +8");
    my $r = get($uri);
    ok($r->{xc} eq 'HIT' && $r->{ver} == 2, "$name: then a HIT with the new bytes")
        or diag("got $r->{status} $r->{xc} $r->{cs} v$r->{ver}");
}

sub soft_purge {
    my ($uri) = @_;
    my $j = purge(qq{{"url": "$uri", "soft": true}});
    ok($j->{generation} && $j->{soft}, "soft purge of $uri");
}

updating('/upd/a', 'use_stale updating, expired');
soft_purge('/upd/soft/long');
updating('/upd/soft/long', 'use_stale updating, soft-purged');
updating('/swr/a', 'stale-while-revalidate, expired');
soft_purge('/swr/soft/long');
updating('/swr/soft/long', 'stale-while-revalidate, soft-purged');

# past its stale-while-revalidate window: revalidated while the client waits
{
    my $r = get('/swr/short/a', headers => { 'X-Delay' => 0.5 });
    ok($r->{ver} == 2 && $r->{xc} ne 'STALE' && $r->{secs} >= 0.5,
        'past the stale-while-revalidate window: the new bytes, not stale')
        or diag("got $r->{status} $r->{xc} $r->{cs} v$r->{ver} in $r->{secs}s");
}

###############################################################################
# 3. a hard purge: never served stale

for my $uri ('/upd/h', '/swr/h/long') {
    ok(purge(qq{{"url": "$uri"}})->{generation}, "hard purge of $uri");
    my $r = get($uri, headers => { 'X-Delay' => 0.3 });
    ok($r->{xc} eq 'MISS' && $r->{cs} eq 'MISS' && $r->{ver} == 2
            && $r->{secs} >= 0.3,
        "hard-purged $uri: a MISS with the new bytes, from the origin")
        or diag("got $r->{status} $r->{xc} $r->{cs} v$r->{ver} in $r->{secs}s");
    $r = get($uri);
    ok($r->{xc} eq 'HIT' && $r->{ver} == 2, "hard-purged $uri: then a HIT");
}

###############################################################################
# 4. stale instead of an origin failure

my %fail = (
    refuse  => { 'X-Backend' => 'refuse' },
    timeout => { 'X-Delay' => 3 },
    503     => { 'X-Fail' => 503 },
);
my %error = (refuse => 502, timeout => 504, 503 => 503);

for my $loc ('err', 'sie') {
    my $how = $loc eq 'err' ? 'use_stale error timeout http_503'
        : 'stale-if-error=60';
    for my $mode (qw/refuse timeout 503/) {
        my $uri = "/$loc/$mode";
        my $before = status()->{stale_on_error} // 0;
        my $r = get($uri, headers => $fail{$mode});
        ok($r->{status} == 200 && $r->{ver} == 1 && $r->{xc} eq 'STALE'
                && $r->{cs} eq 'STALE',
            "$how, $mode: the stale bytes, STALE")
            or diag("got $r->{status} $r->{xc} $r->{cs} v$r->{ver}: $r->{body}");
        is((status()->{stale_on_error} // 0) - $before, 1,
            "$how, $mode: stale_on_error +1");
        note(sprintf '%s, %s: answered in %.3fs', $how, $mode, $r->{secs});
    }
}

# once the origin is back, the entry is refilled
{
    my $r = get('/err/503');
    ok($r->{status} == 200 && $r->{ver} == 2 && $r->{xc} eq 'MISS',
        'origin back: the stale entry is refilled')
        or diag("got $r->{status} $r->{xc} $r->{cs} v$r->{ver}");
    $r = get('/err/503');
    ok($r->{xc} eq 'HIT' && $r->{ver} == 2, 'origin back: then a HIT');
}

# with neither the directive nor stale-if-error, the client gets the error
{
    my $before = status()->{stale_on_error} // 0;
    for my $mode (qw/refuse timeout 503/) {
        my $r = get("/none/$mode", headers => $fail{$mode});
        ok($r->{status} == $error{$mode} && $r->{xc} ne 'STALE',
            "no stale rule, $mode: the client gets the $error{$mode}")
            or diag("got $r->{status} $r->{xc} $r->{cs} v$r->{ver}");
    }
    is((status()->{stale_on_error} // 0) - $before, 0,
        'no stale rule: stale_on_error unchanged');
}

# an error the rules do not name, or past the stale-if-error window
{
    my $before = status()->{stale_on_error} // 0;
    my $r = get('/err/500', headers => { 'X-Fail' => 500 });
    ok($r->{status} == 500 && $r->{xc} ne 'STALE',
        'use_stale without http_500: the client gets the 500')
        or diag("got $r->{status} $r->{xc} $r->{cs} v$r->{ver}");
    $r = get('/sie/short/503', headers => { 'X-Fail' => 503 });
    ok($r->{status} == 503 && $r->{xc} ne 'STALE',
        'past the stale-if-error window: the client gets the 503')
        or diag("got $r->{status} $r->{xc} $r->{cs} v$r->{ver}");
    is((status()->{stale_on_error} // 0) - $before, 0,
        'stale_on_error unchanged');
}

# a hard-purged entry is not served instead of an error either
{
    ok(purge('{"url": "/err/hp"}')->{generation}, 'hard purge of /err/hp');
    my $r = get('/err/hp', headers => { 'X-Fail' => 503 });
    ok($r->{status} == 503 && $r->{xc} ne 'STALE',
        'hard-purged, origin 503: the client gets the 503, never the purged bytes')
        or diag("got $r->{status} $r->{xc} $r->{cs} v$r->{ver}");
}

###############################################################################
