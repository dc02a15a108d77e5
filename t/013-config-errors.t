#!/usr/bin/perl

# `nginx -t` on bad configurations: every mistake is refused, and the
# message names the directive (and the bad value) and the file and line.
# Good configurations pass.  nginx is never started here.

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Test::Nginx;

my $t = Test::Nginx->new()->has(qw/http/)->plan(52);

# A whole configuration around an http-level snippet and a snippet inside
# "location /"; @@SERVER@@ goes into the server block.
sub conf {
    my (%o) = @_;
    my $http = $o{http} // 'pagespeed_cache_path %%TESTDIR%%/cache.bin size=8m;';
    my $server = $o{server} // '';
    my $loc = $o{location} // 'pagespeed_cache on;';
    return <<"EOF";
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    $http

    server {
        listen 127.0.0.1:8080;
        server_name localhost;
        $server

        location / {
            $loc
        }
        location /purge { pagespeed_purge; }
        location /status { pagespeed_status; }
    }
}
EOF
}

my $n = 0;

# (exit code, output) of nginx -t on a configuration.
sub check {
    my $name = 'conf' . ++$n . '.conf';
    $t->write_file_expand($name, conf(@_));
    return $t->test_config(conf => $name);
}

# The configuration is refused with a message matching $re, naming the
# file and line.
sub refused {
    my ($re, $what, %conf) = @_;
    my ($rc, $out) = check(%conf);
    ok($rc != 0 && $out =~ $re && $out =~ /\[emerg\].* in \S+conf\d+\.conf:\d+/,
        "refused: $what") or diag("exit $rc:\n$out");
}

sub accepted {
    my ($what, %conf) = @_;
    my ($rc, $out) = check(%conf);
    ok($rc == 0 && $out =~ /syntax is ok/ && $out =~ /test is successful/,
        "accepted: $what") or diag("exit $rc:\n$out");
}

###############################################################################
# good configurations

accepted('file-backed cache with every directive', location => <<'EOF');
pagespeed_cache on;
            pagespeed_cache_key $scheme$host$uri;
            pagespeed_cache_valid 5m;
            pagespeed_cache_max_object_size 1m;
            pagespeed_cache_statuses 200 301 404;
            pagespeed_purge_method PURGE;
            pagespeed_purge_token secret;
EOF
ok(-s $t->testdir . '/cache.bin', 'the cache file was created');
accepted('max_object parameter',
    http => 'pagespeed_cache_path %%TESTDIR%%/cache2.bin size=8m max_object=1m;');
accepted('anonymous shared memory', http => 'pagespeed_cache_path off size=8m;');
accepted('no pagespeed_cache_path (anonymous 64m)', http => '');
accepted('pagespeed_purge_method off', location => 'pagespeed_purge_method off;');

###############################################################################
# pagespeed_cache_path

refused(qr/"pagespeed_cache_path" needs an absolute file path or "off", not "cache\.bin"/,
    'relative cache path', http => 'pagespeed_cache_path cache.bin size=8m;');
refused(qr/invalid parameter "size=abc" in "pagespeed_cache_path"/,
    'size=abc', http => 'pagespeed_cache_path %%TESTDIR%%/c.bin size=abc;');
refused(qr/invalid parameter "size=10k" in "pagespeed_cache_path"/,
    'size=10k (too small)', http => 'pagespeed_cache_path %%TESTDIR%%/c.bin size=10k;');
refused(qr/invalid parameter "size=2048g" in "pagespeed_cache_path"/,
    'size=2048g (too big)', http => 'pagespeed_cache_path %%TESTDIR%%/c.bin size=2048g;');
refused(qr/invalid parameter "colour=blue" in "pagespeed_cache_path"/,
    'unknown parameter',
    http => 'pagespeed_cache_path %%TESTDIR%%/c.bin size=8m colour=blue;');
refused(qr/invalid parameter "max_object=0" in "pagespeed_cache_path"/,
    'max_object=0', http => 'pagespeed_cache_path %%TESTDIR%%/c.bin max_object=0;');
refused(qr/invalid number of arguments in "pagespeed_cache_path"/,
    'no arguments', http => 'pagespeed_cache_path;');
refused(qr/"pagespeed_cache_path": cannot reserve 1099511627776 bytes for anonymous memory: more than this machine's memory/,
    'anonymous memory larger than the machine', http => 'pagespeed_cache_path off size=1024g;');
refused(qr/"pagespeed_cache_path" directive is duplicate/, 'given twice',
    http => "pagespeed_cache_path off size=8m;\n    pagespeed_cache_path off size=8m;");
refused(qr/"pagespeed_cache_path" directive is not allowed here/,
    'inside a server block', http => '',
    server => 'pagespeed_cache_path off size=8m;');

{
    my ($rc, $out) = check(
        http => 'pagespeed_cache_path %%TESTDIR%%/missing/dir/c.bin size=8m;');
    my $path = $t->testdir . '/missing/dir/c.bin';
    ok($rc != 0 && $out =~ /"pagespeed_cache_path": cannot open \S+c\.bin: No such file or directory in /,
        'refused: cache file in a missing directory') or diag("exit $rc:\n$out");
    like($out, qr/\Q$path\E.*No such file or directory|No such file or directory.*\Q$path\E/,
        'missing directory: message names the path and the reason');
}

###############################################################################
# location directives

refused(qr/invalid status "206" in "pagespeed_cache_statuses"/,
    'pagespeed_cache_statuses 206', location => 'pagespeed_cache_statuses 206;');
refused(qr/invalid status "304" in "pagespeed_cache_statuses"/,
    'pagespeed_cache_statuses 304', location => 'pagespeed_cache_statuses 200 304;');
refused(qr/invalid status "abc" in "pagespeed_cache_statuses"/,
    'pagespeed_cache_statuses abc', location => 'pagespeed_cache_statuses abc;');
refused(qr/invalid status "600" in "pagespeed_cache_statuses"/,
    'pagespeed_cache_statuses 600', location => 'pagespeed_cache_statuses 600;');
refused(qr/invalid status "199" in "pagespeed_cache_statuses"/,
    'pagespeed_cache_statuses 199', location => 'pagespeed_cache_statuses 199;');
refused(qr/invalid origin "evil\.example" in "pagespeed_purge_allow_origin"/,
    'an origin without a scheme', location => 'pagespeed_purge_allow_origin evil.example;');
refused(qr/invalid origin "https:\/\/a\.example\/admin" in "pagespeed_purge_allow_origin"/,
    'an origin with a path', location => 'pagespeed_purge_allow_origin https://a.example/admin;');
accepted('pagespeed_purge_allow_origin with two origins',
    location => 'pagespeed_purge_allow_origin https://a.example http://b.example:8080;');
refused(qr/invalid value "0" in "pagespeed_build_threads" \(1 to 64 threads per worker\)/,
    'pagespeed_build_threads 0 (refused, not clamped)',
    http => "pagespeed_cache_path off size=8m;\n    pagespeed_build_threads 0;");
refused(qr/invalid value "65" in "pagespeed_build_threads"/, 'pagespeed_build_threads 65',
    http => "pagespeed_cache_path off size=8m;\n    pagespeed_build_threads 65;");
refused(qr/invalid value "0" in "pagespeed_build_queue" \(1 to 1048576 builds per worker\)/,
    'pagespeed_build_queue 0', http => "pagespeed_cache_path off size=8m;\n    pagespeed_build_queue 0;");
refused(qr/"pagespeed_build_queue" directive is duplicate/, 'pagespeed_build_queue twice',
    http => "pagespeed_build_queue 8;\n    pagespeed_build_queue 9;");
refused(qr/invalid method "GET" in "pagespeed_purge_method"/,
    'pagespeed_purge_method GET', location => 'pagespeed_purge_method GET;');
refused(qr/invalid method "purge" in "pagespeed_purge_method"/,
    'pagespeed_purge_method in lowercase', location => 'pagespeed_purge_method purge;');
refused(qr/invalid value "maybe" in "pagespeed_cache" directive/,
    'pagespeed_cache maybe', location => 'pagespeed_cache maybe;');
refused(qr/"pagespeed_cache_valid" directive invalid value/,
    'pagespeed_cache_valid forever', location => 'pagespeed_cache_valid forever;');
refused(qr/"pagespeed_cache_max_object_size" directive invalid value/,
    'pagespeed_cache_max_object_size lots',
    location => 'pagespeed_cache_max_object_size lots;');
refused(qr/invalid number of arguments in "pagespeed_cache_key"/,
    'pagespeed_cache_key without a value', location => 'pagespeed_cache_key;');
refused(qr/"pagespeed_purge" directive is not allowed here/,
    'pagespeed_purge in a server block', location => '',
    server => 'pagespeed_purge;');
refused(qr/"pagespeed_purge" directive is not allowed here/,
    'pagespeed_purge at http level', http => 'pagespeed_purge;');
refused(qr/"pagespeed_status" directive is not allowed here/,
    'pagespeed_status in a server block', server => 'pagespeed_status;');
refused(qr/invalid number of arguments in "pagespeed_purge"/,
    'pagespeed_purge with an argument', location => 'pagespeed_purge now;');

# The freshness directives: each bad value names its directive.
refused(qr/"pagespeed_cache_revalidate".*"on" or "off"/, 'pagespeed_cache_revalidate maybe',
    location => 'pagespeed_cache on; pagespeed_cache_revalidate maybe;');
refused(qr/"pagespeed_cache_lock".*"on" or "off"/, 'pagespeed_cache_lock yes',
    location => 'pagespeed_cache on; pagespeed_cache_lock yes;');
refused(qr/"pagespeed_cache_lock_timeout"/, 'pagespeed_cache_lock_timeout soon',
    location => 'pagespeed_cache on; pagespeed_cache_lock_timeout soon;');
refused(qr/"pagespeed_cache_use_stale"/, 'pagespeed_cache_use_stale http_404',
    location => 'pagespeed_cache on; pagespeed_cache_use_stale updating http_404;');
refused(qr/"pagespeed_cache_use_stale"/, 'pagespeed_cache_use_stale twice',
    location => "pagespeed_cache on; pagespeed_cache_use_stale error;\n"
        . "        pagespeed_cache_use_stale timeout;");

# pagespeed_fleet: the URL and every option are checked before anything connects.
for my $case (
    ['http://127.0.0.1:6379 node=a', qr/expected redis:\/\/HOST:PORT/],
    ['redis://127.0.0.1 node=a', qr/the port is required/],
    ['redis://127.0.0.1:6379', qr/node=NAME is required/],
    ['redis://127.0.0.1:6379 node=a tier=origin', qr/expected edge or shield/],
    ['redis://127.0.0.1:6379 node=a max_lag=soon', qr/max_lag="soon"/],
    ['redis://127.0.0.1:6379 node=a colour=red', qr/unknown parameter "colour"/],
) {
    my ($args, $re) = @$case;
    refused(qr/invalid "pagespeed_fleet": .*$re/, "pagespeed_fleet $args",
        http => "pagespeed_cache_path off size=8m;\n    pagespeed_fleet $args;");
}
refused(qr/"pagespeed_fleet" directive is not allowed here/,
    'pagespeed_fleet in a location', location => 'pagespeed_fleet redis://h:1 node=a;');

###############################################################################
