#!/usr/bin/perl

# The file-backed cache across reloads, restarts and worker crashes:
# entries, purges and the purge clock persist (DESIGN.md invariant 4); a
# damaged or resized file is reinitialized at start with a notice naming the
# reason, and damaged bytes are never served (invariants 3, 6); the
# anonymous cache works across reload and is empty after a restart.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw/time sleep/;

use lib 't/lib';
use Test::Nginx;
use Test::Pagespeed qw/versioned_route vget json_of status_json/;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(62);

# killing a worker on purpose; a size change on reload is refused
$t->ignore_log(qr/worker process \d+ exited on signal 9/,
    qr/"pagespeed_cache_path": .* is open in a running nginx/);

my $CONF = <<'EOF';
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    # The origin here sends no explicit freshness; the default reuses such responses only
    # under heuristic freshness (RFC 9111 4.2.2), so these tests give them a lifetime.
    pagespeed_cache_valid 10m;
    pagespeed_cache_path CACHE;

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        add_header X-Worker $pid always;

        location / {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081;
        }
        location = /purge { pagespeed_purge; }
        location = /status { pagespeed_status; }
    }
}
EOF

sub conf {
    my ($cache) = @_;
    (my $c = $CONF) =~ s/CACHE/$cache/;
    $t->write_file_expand('nginx.conf', $c);
}

my $dir = $t->testdir;
my $version = 0;

sub set_version { $version = Test::Pagespeed::set_version(shift) }

start_origin(port => 8081, routes => { '*' => versioned_route(
    headers => sub { $_[0]{path} =~ m{^/t/} ? ('Cache-Tag' => 'tagged') : () }) });

conf('%%TESTDIR%%/cache.bin size=8m');
set_version(1);
$t->run();

###############################################################################

sub get { vget(@_) }

sub purge {
    my ($body) = @_;
    return json_of(parse_response(http_post('/purge', $body,
        headers => { 'Content-Type' => 'application/json' }))) // {};
}

sub status { status_json() }

# 10 requests on new connections (both workers): all HIT with version $v.
sub all_hit {
    my ($uri, $v) = @_;
    my (%w, @bad);
    for (1 .. 10) {
        my $r = get($uri);
        $w{$r->{headers}{'x-worker'} // '?'}++;
        push @bad, "$r->{xc} v=$r->{ver}" unless $r->{xc} eq 'HIT'
            && $r->{ver} == $v;
    }
    diag("$uri: @bad") if @bad;
    return !@bad;
}

sub miss_then_hit {
    my ($uri, $v) = @_;
    my $a = get($uri);
    my $b = get($uri);
    my $ok = $a->{xc} eq 'MISS' && $a->{ver} == $v
        && $b->{xc} eq 'HIT' && $b->{ver} == $v;
    diag("$uri: $a->{xc} v=$a->{ver}, then $b->{xc} v=$b->{ver}") unless $ok;
    return $ok;
}

sub reinit_notices { scalar $t->grep_log(qr/\[notice\].*was reinitialized/) }

ok(miss_then_hit($_, 1), "$_ cached") for qw(/a /b /p/x /t/x /k/z);

###############################################################################
# reload and restart keep entries

ok($t->reload(), 'reload');
ok(all_hit('/a', 1), 'HIT after reload, from both workers');

$t->stop();
$t->run();
ok(all_hit('/a', 1), 'HIT after restart with the same file');
ok(all_hit('/b', 1), 'other entry too');
is(reinit_notices(), 0, 'reopening a good file is no reinitialization');

# a worker killed: the master forks a new one on the same mapping
# (right after run() the workers may not have their title yet)
sub workers {
    my ($cond) = @_;
    my $deadline = time + 10;
    my @w;
    sleep 0.05 until $cond->(@w = $t->worker_pids) || time > $deadline;
    return @w;
}
my ($victim) = workers(sub { @_ == 2 });
kill KILL => $victim;
my @w = workers(sub { @_ == 2 && !grep { $_ == $victim } @_ });
ok(@w == 2 && !grep({ $_ == $victim } @w), 'killed worker replaced');
ok(all_hit('/a', 1), 'HIT after a worker crash');

###############################################################################
# purges before a restart stay effective after it; the clock goes on

set_version(2);
my $g = purge('{"url": "/a"}')->{generation};
ok($g, 'url purge');
$g = purge('{"url": "/p/*"}')->{generation};
$g = purge('{"tag": "tagged"}')->{generation};
is($g, 3, 'prefix and tag purges (lazy: entries stay in the file)');

$t->stop();
$t->run();
is(status()->{purge_clock}, $g, 'purge clock survives restart');
ok(miss_then_hit('/a', 2), 'url purged before restart: not served');
ok(miss_then_hit('/p/x', 2), 'prefix purged before restart: not served');
ok(miss_then_hit('/t/x', 2), 'tag purged before restart: not served');
ok(all_hit('/b', 1), 'unpurged entry kept');
is(purge('{"url": "/nothing"}')->{generation}, $g + 1,
    'next purge continues the clock');

ok($t->reload(), 'reload');
is(status()->{purge_clock}, $g + 1, 'purge clock survives reload');
is(purge('{"url": "/b"}')->{generation}, $g + 2, 'and goes on after it');
ok(miss_then_hit('/b', 2), 'purged after reload');

###############################################################################
# damaged record bytes: checksum verified after restart, never served

$t->stop();
{
    my $c = $t->read_file('cache.bin');
    my $i = index($c, "/k/z v=1\n");
    ok($i > 0, 'record body found in the file');
    substr($c, $i + 7, 1, '9');     # v=1 -> v=9, same length
    $t->write_file('cache.bin', $c);
}
$t->run();
my $r = get('/k/z');
ok($r->{xc} eq 'MISS' && $r->{ver} == 2, 'damaged record: a MISS')
    or diag("got $r->{xc}: $r->{body}");
isnt($r->{ver}, 9, 'damaged bytes never served');
cmp_ok(status()->{checksum_failures}, '>=', 1, 'checksum failure counted');
is(get('/k/z')->{xc}, 'HIT', 'refilled');
is(reinit_notices(), 0, 'a damaged record does not reinitialize the file');

###############################################################################
# damaged header, truncated file: reinitialized with the reason logged

$t->stop();
{
    open my $fh, '+<:raw', "$dir/cache.bin" or die $!;
    print $fh 'garbage!' x 8;
    close $fh;
}
$t->run();
is(scalar $t->grep_log(qr/\[notice\].*cache\.bin was reinitialized:.*magic/),
    1, 'garbage header: notice names the reason');
ok(miss_then_hit('/b', 2), 'garbage header: MISS then HIT');
is(status()->{entries}, 1, 'garbage header: started empty');

$t->stop();
truncate "$dir/cache.bin", 4096 or die $!;
$t->run();
is(scalar $t->grep_log(qr/was reinitialized: the file is shorter \(4096 bytes\) than its header says/), 1,
    'truncated file: notice names the reason');
ok(miss_then_hit('/b', 2), 'truncated file: MISS then HIT');

$t->stop();
truncate "$dir/cache.bin", 0 or die $!;
$t->run();
is(reinit_notices(), 2, 'empty file: created, no notice');
ok(miss_then_hit('/b', 2), 'empty file: MISS then HIT');

###############################################################################
# size=: a reload cannot resize a file in use; a restart reinitializes it

# (the harness prints the refused reload's log tail: expected here)
my $size = -s "$dir/cache.bin";
conf('%%TESTDIR%%/cache.bin size=16m');
ok(!$t->reload(), 'reload with another size refused');
ok(scalar $t->grep_log(qr/\[emerg\].*"pagespeed_cache_path": .* is open in a running nginx.*needs a restart/),
    'refusal says the file is in use and a resize needs a restart');
ok(all_hit('/b', 2), 'old workers keep serving their cache');

$t->stop();
$t->run();
is(scalar $t->grep_log(qr/was reinitialized: size changed from \d+ to \d+/),
    1, 'restart with another size: reinitialized, reason logged');
cmp_ok(-s "$dir/cache.bin", '>', $size, 'file resized');
ok(miss_then_hit('/b', 2), 'resized: MISS then HIT');
cmp_ok(status()->{bytes_capacity}, '>', 8 << 20, 'resized: larger arena');
my $file_clock = purge('{"url": "/b"}')->{generation};
ok($file_clock, 'purge on the reinitialized file');
ok(miss_then_hit('/b', 2), 'refilled');

###############################################################################
# anonymous cache: shared by workers, kept across reload, lost on restart

conf('off size=8m');
ok($t->reload(), 'reload to an anonymous cache');
is(status()->{purge_clock}, 0, 'anonymous: a new, empty cache');
set_version(3);
ok(miss_then_hit('/a', 3), 'anonymous: MISS then HIT');
ok(all_hit('/a', 3), 'anonymous: shared by both workers');
ok($t->reload(), 'reload, same anonymous config');
ok(all_hit('/a', 3), 'anonymous: HIT after reload');
is(purge('{"url": "/a"}')->{generation}, 1, 'anonymous: purge');
ok(miss_then_hit('/a', 3), 'anonymous: purged');
ok($t->reload(), 'reload again');
is(status()->{purge_clock}, 1, 'anonymous: clock kept across reload');

$t->stop();
$t->run();
is(status()->{purge_clock}, 0, 'anonymous: restart starts empty');
ok(miss_then_hit('/a', 3), 'anonymous after restart: MISS then HIT');

###############################################################################
# back to the file: what it held is still there

conf('%%TESTDIR%%/cache.bin size=16m');
ok($t->reload(), 'reload back to the file');
is(reinit_notices(), 3, 'reopened, not reinitialized');
ok(all_hit('/b', 2), 'file entries back');
is(status()->{purge_clock}, $file_clock, 'file purge clock back too');
