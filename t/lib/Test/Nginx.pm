package Test::Nginx;

# A small, core-Perl-only integration-test harness for this nginx module,
# modelled on the interface of nginx's own nginx-tests "Test::Nginx" but
# written independently (the real one is not installable here).
#
# Typical test:
#
#   use Test::More; use lib 't/lib'; use Test::Nginx;
#   my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(3);
#   $t->write_file_expand('nginx.conf', <<'EOF');
#   %%TEST_GLOBALS%%
#   worker_processes 2;
#   events {}
#   http {
#       %%TEST_GLOBALS_HTTP%%
#       server { listen 127.0.0.1:8080; location / { proxy_pass http://127.0.0.1:8081; } }
#   }
#   EOF
#   $t->start_origin(port => 8081, routes => { '/' => sub { (200, {}, "hi") } });
#   $t->run();
#   like(http_get('/'), qr/hi$/, 'proxied');
#   ...
#   # no explicit stop needed: END stops everything and runs the +1
#   # "no alerts in error.log" check.
#
# Conventions worth knowing:
#
# * %%TEST_GLOBALS%% deliberately does NOT set worker_processes: tests that
#   care (reload, multi-worker cache sharing) write it themselves, and nginx
#   rejects duplicate directives, so emitting it here would get in the way.
#   It sets pid, error_log (level info), "user root" when run as root (the
#   test dir is 0700, so workers must be able to read it) and load_module
#   for the module under test unless new(no_module => 1) / $t->{no_module}.
# * %%TEST_GLOBALS_HTTP%% sets access_log and all *_temp_path directives
#   inside the test dir, so the distro/compiled-in /var paths are never used.
# * Every 127.0.0.1:8080..8099 and %%PORT_8080%%..%%PORT_8099%% in
#   write_file_expand() content is rewritten to a free port picked once per
#   number per test file; port(8081) gives the real one.  run() waits for
#   the "listen" ports of nginx.conf and the files it includes.
# * plan($n) plans $n + 1 tests: the extra one is the final "no
#   [alert]/[emerg]/[crit]/Rust panic in error.log" check, done exactly once
#   by done() or, if the test did not call it, at END.  stop()/run() in the
#   middle of a test never emit test results.
# * stop() stops nginx and every daemon (origins); run() (re)starts any
#   daemon that stop() took down, so "$t->stop; $t->run" restarts the
#   whole setup and keeps the test dir (and origin.log counts).
#
# Environment:
#   TEST_NGINX_BINARY   nginx to run (default <repo>/build/sbin/nginx)
#   TEST_NGINX_MODULE   module .so (default
#                       <repo>/build/modules/ngx_http_pagespeed_module.so,
#                       loaded only if the file exists)
#   TEST_NGINX_LEAVE=1  keep the test dir (its path is printed)
#   TEST_NGINX_VERBOSE=1  print error.log when the file has failures
#   TEST_NGINX_TIMEOUT_SCALE  multiplies every harness timeout (start, stop,
#                       reload, socket, HTTP; default 1), for nginx under
#                       valgrind (scripts/memcheck)
#
# API (methods on $t unless marked "exported"):
#   new(no_module => 0)  has(@features)  plan($n)  testdir  binary
#   Test::Nginx::timeout_scale()  (the TEST_NGINX_TIMEOUT_SCALE factor)
#   module_path  master_pid  worker_pids
#   write_file($name, $bytes)  write_file_expand($name, $text)
#   read_file($name) (undef if absent)  grep_log(qr//, $name='error.log')
#   run  try_run($skip_message)  test_config(conf => 'nginx.conf')
#   reload (undef on failure)  stop  done  ignore_log(qr//, ...)
#   run_daemon(\&code, @args)  waitforsocket('127.0.0.1:PORT')
#   start_origin(port =>, routes =>, log =>)  (also exported)
#   origin_hits($path|$uri_with_query|qr//, method =>, log =>)
#   origin_requests(method =>, log =>)
#   exported: port(80NN)  http($raw, %o)  http_req($method, $uri, %o)
#   http_get($uri, %o)  http_head($uri, %o)  http_post($uri, $body, %o)
#   http_start($raw, %o)  http_end($sock, %o)  parse_response($raw)
#   HTTP options: port, socket, timeout (8 s), start, headers, body,
#   version ('1.0'; '1.1' adds Connection: close)

use strict;
use warnings;

use Exporter qw/import/;
use Cwd qw/abs_path/;
use File::Basename qw/dirname/;
use File::Path qw/mkpath/;
use File::Spec;
use File::Temp qw/tempdir/;
use Fcntl qw/O_WRONLY O_APPEND O_CREAT/;
use IO::Select;
use IO::Socket::INET;
use POSIX qw/WNOHANG/;
use Test::More ();
use Time::HiRes ();

our @EXPORT = qw/port http http_req http_get http_head http_post
    http_start http_end parse_response start_origin/;

# t/lib/Test/Nginx.pm -> repo root is three levels above this file's dir.
my $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/../../..');

my $OWNER_PID = $$;     # END and signal handlers act only in the test process
my @INSTANCES;          # for END
my $CURRENT;            # last new(): lets start_origin() work as a function
my %PORT_MAP;           # 8081 => real port, once per test file
my %PORT_TAKEN;         # real ports already handed out
my $SIGNALS_INSTALLED;

# Under valgrind nginx runs tens of times slower: scale waits, never shorten them.
my $SCALE = ($ENV{TEST_NGINX_TIMEOUT_SCALE} // '') =~ /^\d+(?:\.\d+)?$/
    && $ENV{TEST_NGINX_TIMEOUT_SCALE} > 1 ? $ENV{TEST_NGINX_TIMEOUT_SCALE} : 1;
my $START_TIMEOUT = 10 * $SCALE;
my $STOP_TIMEOUT = 10 * $SCALE;
my $RELOAD_TIMEOUT = 10 * $SCALE;
my $SOCKET_TIMEOUT = 5 * $SCALE;
my $HTTP_TIMEOUT = 8 * $SCALE;
my $POLL = 0.05;

###############################################################################
# construction and configuration

sub new {
    my ($class, %opts) = @_;

    my $binary = $ENV{TEST_NGINX_BINARY};
    $binary = defined $binary && length $binary
        ? File::Spec->rel2abs($binary) : "$ROOT/build/sbin/nginx";

    # A missing binary is a broken setup rather than a reason to skip:
    # silently skipping would let CI "pass" without testing anything.
    die "Test::Nginx: nginx binary '$binary' not found or not executable"
        . " (set TEST_NGINX_BINARY)\n" unless -x $binary;

    my $module;
    if (defined $ENV{TEST_NGINX_MODULE} && length $ENV{TEST_NGINX_MODULE}) {
        $module = File::Spec->rel2abs($ENV{TEST_NGINX_MODULE});
        unless (-f $module) {
            Test::More::diag("TEST_NGINX_MODULE '$module' does not exist,"
                . " not loading it");
            undef $module;
        }
    } elsif (-f "$ROOT/build/modules/ngx_http_pagespeed_module.so") {
        $module = "$ROOT/build/modules/ngx_http_pagespeed_module.so";
    }

    my $leave = $ENV{TEST_NGINX_LEAVE};
    my $dir = tempdir('nginx-test-XXXXXXXX', TMPDIR => 1,
        CLEANUP => !$leave);
    Test::More::diag("TEST_NGINX_LEAVE: test dir is $dir") if $leave;

    my $self = bless {
        no_module => $opts{no_module},
        _binary   => $binary,
        _module   => $module,
        _testdir  => $dir,
        _features => [],
        _daemons  => [],    # { start => sub returning pid, pid => pid }
        _ignore   => [],    # qr// for lines exempt from the alert check
    }, $class;

    push @INSTANCES, $self;
    $CURRENT = $self;
    return $self;
}

sub testdir { $_[0]{_testdir} }
# The object made last (helpers acting "on the current test", as start_origin does).
sub current { $CURRENT }

# TEST_NGINX_TIMEOUT_SCALE (>= 1): for a test's own waits, e.g. on background builds.
sub timeout_scale { $SCALE }
sub binary { $_[0]{_binary} }
sub master_pid { $_[0]{_pid} }

# Path of the module .so that %%TEST_GLOBALS%% loads, or undef.
sub module_path {
    my ($self) = @_;
    return $self->{no_module} ? undef : $self->{_module};
}

# Features are informational only (the module is built with a known set).
sub has {
    my ($self, @features) = @_;
    push @{$self->{_features}}, @features;
    return $self;
}

sub plan {
    my ($self, $n) = @_;
    Test::More::plan(tests => $n + 1);
    $self->{_planned} = 1;
    return $self;
}

# Exempt error-log lines matching $re from the final alert check, for
# tests that provoke an alert on purpose.
sub ignore_log {
    my ($self, @re) = @_;
    push @{$self->{_ignore}}, @re;
    return $self;
}

###############################################################################
# files

sub _path {
    my ($self, $name) = @_;
    return $name =~ m{^/} ? $name : "$self->{_testdir}/$name";
}

sub write_file {
    my ($self, $name, $content) = @_;
    my $path = $self->_path($name);
    mkpath(dirname($path));
    open my $fh, '>:raw', $path or die "write_file $path: $!\n";
    print $fh $content;
    close $fh or die "write_file $path: $!\n";
    return $self;
}

# undef when the file does not exist, so tests can assert absence.
sub read_file {
    my ($self, $name) = @_;
    open my $fh, '<:raw', $self->_path($name) or return undef;
    local $/;
    my $content = <$fh>;
    return defined $content ? $content : '';
}

# Lines of a log file (default error.log) matching $re.
sub grep_log {
    my ($self, $re, $name) = @_;
    my $content = $self->read_file($name // 'error.log') // '';
    return grep { $_ =~ $re } split /\n/, $content;
}

sub write_file_expand {
    my ($self, $name, $content) = @_;
    return $self->write_file($name, $self->_expand($content));
}

sub _expand {
    my ($self, $c) = @_;
    my $d = $self->{_testdir};

    $c =~ s/%%TEST_GLOBALS%%/$self->_globals()/ge;
    $c =~ s/%%TEST_GLOBALS_HTTP%%/$self->_globals_http()/ge;
    $c =~ s/%%TESTDIR%%/$d/g;
    $c =~ s/%%PORT_(80[89]\d)%%/port($1)/ge;
    $c =~ s/127\.0\.0\.1:(80[89]\d)(?!\d)/'127.0.0.1:' . port($1)/ge;
    return $c;
}

sub _globals {
    my ($self) = @_;
    my $d = $self->{_testdir};
    my $s = "pid $d/nginx.pid;\nerror_log $d/error.log info;\n";
    $s .= "user root;\n" if $> == 0;
    my $m = $self->module_path;
    $s .= "load_module $m;\n" if defined $m;
    return $s;
}

sub _globals_http {
    my ($self) = @_;
    my $d = $self->{_testdir};
    return join '', "access_log $d/access.log;\n",
        map { "${_}_temp_path $d/${_}_temp;\n" }
        qw/client_body proxy fastcgi uwsgi scgi/;
}

# TCP ports nginx will listen on, so run() can wait until they accept:
# "listen" directives of nginx.conf and the files it includes (relative
# include paths resolve against the test dir, as with -p).  A heuristic
# scan: comments are dropped and UDP/unix/IPv6 listens ignored.
sub _listen_ports {
    my ($self) = @_;
    my (@ports, %seen);
    my @files = ('nginx.conf');
    while (defined(my $f = shift @files)) {
        next if $seen{$f}++ || keys %seen > 100;
        my $c = $self->read_file($f) // next;
        $c =~ s/#[^\n]*//g;
        while ($c =~ /(?:^|[\s;{])(listen|include)\s+([^;]+);/g) {
            my ($directive, $args) = ($1, $2);
            if ($directive eq 'include') {
                $args =~ s/^["']|["']$//g;
                push @files, glob($self->_path($args));
                next;
            }
            next if $args =~ /\budp\b/;
            push @ports, $1 if $args =~ /^(?:127\.0\.0\.1:)?(\d+)(?:\s|$)/;
        }
    }
    my %uniq;
    return grep { !$uniq{$_}++ } @ports;
}

###############################################################################
# ports

# port(8081) -> the free port standing in for 8081 in this test file.
# Numbers outside 8080..8099 are returned unchanged, so passing an already
# mapped port is harmless (mapped ports are never picked from that range).
sub port {
    shift if ref $_[0];
    my ($n) = @_;
    return $n unless defined $n && $n =~ /^80[89]\d$/;
    return $PORT_MAP{$n} //= _free_port();
}

sub _free_port {
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => 0, Proto => 'tcp')
            or die "Test::Nginx: cannot bind 127.0.0.1:0: $@\n";
        my $p = $s->sockport;
        close $s;
        next if $PORT_TAKEN{$p} || ($p >= 8080 && $p <= 8099);
        $PORT_TAKEN{$p} = 1;
        return $p;
    }
    die "Test::Nginx: no free port found\n";
}

###############################################################################
# process control

# Let Ctrl-C / kill of the test still run END, which stops nginx and the
# daemons (they live in their own process groups and would be orphaned).
sub _install_signal_handlers {
    return if $SIGNALS_INSTALLED++;
    for my $sig (qw/INT TERM/) {
        next if defined $SIG{$sig} && $SIG{$sig} ne 'DEFAULT';
        $SIG{$sig} = sub {
            return unless $$ == $OWNER_PID;
            Test::More::diag("caught SIG$sig, stopping nginx");
            exit 1;
        };
    }
}

# Forked children must not run the test's handlers or END blocks, and
# must not write to the TAP stream.
sub _child_setup {
    $SIG{$_} = 'DEFAULT' for qw/INT TERM HUP QUIT PIPE CHLD ALRM/;
    POSIX::setpgid(0, 0);
    open STDIN, '<', '/dev/null';
    open STDOUT, '>&', \*STDERR;
}

sub _spawn {
    my ($code) = @_;
    my $pid = fork;
    die "Test::Nginx: fork: $!\n" unless defined $pid;
    if ($pid == 0) {
        _child_setup();
        my $ok = eval { $code->(); 1 };
        print STDERR "Test::Nginx daemon $$ died: $@" unless $ok;
        POSIX::_exit($ok ? 0 : 1);
    }
    # Set the group from both sides so stop() can signal the whole group
    # no matter which process gets scheduled first.
    POSIX::setpgid($pid, $pid);
    return $pid;
}

# Reap $pid within $secs; true when it is gone.
sub _wait_pid {
    my ($pid, $secs) = @_;
    my $deadline = Time::HiRes::time() + $secs;
    while (1) {
        my $r = waitpid($pid, WNOHANG);
        return 1 if $r == $pid || $r == -1;
        return 0 if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep($POLL);
    }
}

# Signal a process group we created, falling back to the pid alone.
sub _kill_group {
    my ($sig, $pid) = @_;
    kill($sig, -$pid) or kill($sig, $pid);
}

sub run {
    my ($self) = @_;
    die "Test::Nginx: nginx is already running\n" if $self->{_pid};

    _install_signal_handlers();
    $self->_start_daemons();

    my $d = $self->{_testdir};
    my $bin = $self->{_binary};
    unlink "$d/nginx.pid";

    my $pid = fork;
    die "Test::Nginx: fork: $!\n" unless defined $pid;
    if ($pid == 0) {
        _child_setup();
        # nginx moves its stderr into error.log once started; this file
        # only catches what it prints before that.
        open STDOUT, '>>', "$d/stderr.log";
        open STDERR, '>&', \*STDOUT;
        { no warnings 'exec'; exec { $bin } $bin, '-p', "$d/",
            '-c', 'nginx.conf', '-e', "$d/error.log", '-g', 'daemon off;'; }
        print STDERR "exec $bin: $!\n";
        POSIX::_exit(127);
    }
    POSIX::setpgid($pid, $pid);
    $self->{_pid} = $pid;

    my @ports = $self->_listen_ports();
    my $deadline = Time::HiRes::time() + $START_TIMEOUT;

    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) {
            my $status = $?;
            delete $self->{_pid};
            die "Test::Nginx: nginx exited during startup (status "
                . _status($status) . ")\n" . $self->_logs_for_diag();
        }
        last if -s "$d/nginx.pid" && !grep { !_can_connect($_) } @ports;
        if (Time::HiRes::time() > $deadline) {
            $self->_stop_nginx();
            die "Test::Nginx: nginx did not become ready within"
                . " ${START_TIMEOUT}s (ports: @ports)\n"
                . $self->_logs_for_diag();
        }
        Time::HiRes::sleep($POLL);
    }

    return $self;
}

# Like run(), but when nginx cannot start the rest of the file is skipped
# (e.g. a directive the binary does not support).
sub try_run {
    my ($self, $message) = @_;
    return $self if eval { $self->run(); 1 };

    my $err = $@;
    Test::More::diag($err) if $ENV{TEST_NGINX_VERBOSE};
    $self->{_done} = 1;     # nothing meaningful left to check
    $self->stop();

    my $tb = Test::More->builder;
    Test::More::plan(skip_all => $message) unless $tb->has_plan;

    # Already planned: skip whatever is left so the counts still match.
    my $left = ($tb->expected_tests || 0) - $tb->current_test;
    $tb->skip($message) for 1 .. $left;
    exit 0;
}

sub _status {
    my ($st) = @_;
    return $st & 127 ? 'signal ' . ($st & 127) : 'exit ' . ($st >> 8);
}

sub _can_connect {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $port, Proto => 'tcp', Timeout => 1) or return 0;
    close $s;
    return 1;
}

sub _logs_for_diag {
    my ($self) = @_;
    my $s = '';
    for my $f (qw/error.log stderr.log/) {
        my $c = $self->read_file($f);
        next unless defined $c && length $c;
        $s .= "--- $f ---\n$c";
        $s .= "\n" unless $c =~ /\n\z/;
    }
    return $s;
}

# `nginx -t` against the test dir; returns (exit code, stdout+stderr).
# Uses its own -e log so intended failures do not trip the alert check.
sub test_config {
    my ($self, %opts) = @_;
    my $d = $self->{_testdir};
    my $bin = $self->{_binary};
    my $conf = $opts{conf} // 'nginx.conf';
    my $out = "$d/nginx-t.out";
    unlink $out;

    my $pid = fork;
    die "Test::Nginx: fork: $!\n" unless defined $pid;
    if ($pid == 0) {
        _child_setup();
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        { no warnings 'exec'; exec { $bin } $bin, '-p', "$d/",
            '-c', $conf, '-e', "$d/nginx-t.log", '-g', 'daemon off;', '-t'; }
        print STDERR "exec $bin: $!\n";
        POSIX::_exit(127);
    }

    my $status;
    if (_wait_pid_status($pid, $START_TIMEOUT, \$status)) {
        $status = $status & 127 ? 128 + ($status & 127) : $status >> 8;
    } else {
        kill KILL => $pid;
        waitpid($pid, 0);
        $status = 124;
    }
    return ($status, $self->read_file($out) // '');
}

sub _wait_pid_status {
    my ($pid, $secs, $status) = @_;
    my $deadline = Time::HiRes::time() + $secs;
    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) {
            $$status = $?;
            return 1;
        }
        return 0 if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep($POLL);
    }
}

# Stops nginx and all daemons; takes no test action, safe to repeat.
sub stop {
    my ($self) = @_;
    $self->_stop_nginx();
    $self->_stop_daemons();
    return $self;
}

sub _stop_nginx {
    my ($self) = @_;
    my $pid = delete $self->{_pid} or return;

    kill QUIT => $pid;
    return if _wait_pid($pid, $STOP_TIMEOUT);

    Test::More::diag("nginx $pid ignored QUIT for ${STOP_TIMEOUT}s,"
        . " sending TERM");
    kill TERM => $pid;
    return if _wait_pid($pid, 5);

    # The group kill also takes out workers the master can no longer reap.
    Test::More::diag("nginx $pid ignored TERM, sending KILL");
    _kill_group(KILL => $pid);
    waitpid($pid, 0);
}

sub _stop_daemons {
    my ($self) = @_;
    my @live = grep { $_->{pid} } @{$self->{_daemons}};
    _kill_group(TERM => $_->{pid}) for @live;
    for my $dm (@live) {
        my $pid = delete $dm->{pid};
        next if _wait_pid($pid, 5);
        _kill_group(KILL => $pid);
        waitpid($pid, 0);
    }
}

sub _start_daemons {
    my ($self) = @_;
    $_->{pid} //= $_->{start}->() for @{$self->{_daemons}};
}

sub _add_daemon {
    my ($self, $start) = @_;
    _install_signal_handlers();
    push @{$self->{_daemons}}, { start => $start, pid => $start->() };
}

# Final stop plus the one extra planned test.  Runs once; END calls it
# for tests that did not.
sub done {
    my ($self) = @_;
    return $self if $self->{_done}++;

    $self->stop();
    $self->_check_alerts() if $self->{_planned};

    if ($ENV{TEST_NGINX_VERBOSE} && !Test::More->builder->is_passing) {
        Test::More::diag($self->_logs_for_diag());
    }
    Test::More::diag("TEST_NGINX_LEAVE: test dir kept at $self->{_testdir}")
        if $ENV{TEST_NGINX_LEAVE};
    return $self;
}

sub _check_alerts {
    my ($self) = @_;
    my @bad;
    for my $f (qw/error.log stderr.log/) {
        my $c = $self->read_file($f) // next;
        for my $line (split /\n/, $c) {
            # Rust panic messages go to stderr, which nginx points at
            # error.log, without any nginx level prefix.
            next unless $line =~ /\[(?:alert|emerg|crit)\]|panicked at/;
            next if grep { $line =~ $_ } @{$self->{_ignore}};
            push @bad, "$f: $line";
        }
    }
    Test::More::ok(!@bad, 'no alerts in error.log')
        or Test::More::diag(join "\n", @bad);
}

END {
    if ($$ == $OWNER_PID) {
        local $?;   # keep the test's exit status for Test::Builder
        $_->done() for @INSTANCES;
    }
}

###############################################################################
# reload and worker inspection

sub _children {
    my ($pid) = @_;
    if (open my $fh, '<', "/proc/$pid/task/$pid/children") {
        local $/;
        my $c = <$fh> // '';
        return split ' ', $c;
    }
    # Kernels without CONFIG_PROC_CHILDREN: scan every process's ppid.
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        # comm may contain spaces/parens; ppid is the 2nd field after ')'.
        push @kids, $1 if $line =~ /^(\d+) .*\) \S+ (\d+) / && $2 == $pid;
    }
    return @kids;
}

sub _cmdline {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/cmdline" or return '';
    local $/;
    my $c = <$fh> // '';
    $c =~ tr/\0/ /;
    return $c;
}

# Pids of the master's worker processes (cache manager/loader excluded).
# Under valgrind nginx retitles only its own copy of argv, so /proc shows
# the tool's command line: then every child of the master counts (the
# tests configure no cache manager or loader).
sub worker_pids {
    my ($self) = @_;
    my $pid = $self->{_pid} or return ();
    my $valgrind = _cmdline($pid) =~ /valgrind|memcheck-/;
    return sort { $a <=> $b }
        grep { $valgrind || _cmdline($_) =~ /worker process/ } _children($pid);
}

# HUP, then wait until every old worker has exited and new ones run.
# Returns $t, or undef (with a diag) if the reload failed or timed out.
sub reload {
    my ($self) = @_;
    my $pid = $self->{_pid} or die "Test::Nginx: reload: not running\n";
    my $log = "$self->{_testdir}/error.log";

    my %old = map { $_ => 1 } $self->worker_pids;
    my $offset = -s $log // 0;
    kill HUP => $pid;

    my $deadline = Time::HiRes::time() + $RELOAD_TIMEOUT;
    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{_pid};
            die "Test::Nginx: nginx exited during reload\n"
                . $self->_logs_for_diag();
        }

        my %kids = map { $_ => 1 } _children($pid);
        my @new = grep { !$old{$_} } $self->worker_pids;
        return $self if @new && !grep { $kids{$_} } keys %old;

        # A rejected config keeps the old workers forever: fail fast.
        my $tail = _read_from($log, $offset);
        if ($tail =~ /\[emerg\]/) {
            Test::More::diag("reload failed:\n$tail");
            return undef;
        }

        if (Time::HiRes::time() > $deadline) {
            Test::More::diag("reload: workers did not change within"
                . " ${RELOAD_TIMEOUT}s\n$tail");
            return undef;
        }
        Time::HiRes::sleep($POLL);
    }
}

sub _read_from {
    my ($path, $offset) = @_;
    open my $fh, '<:raw', $path or return '';
    seek $fh, $offset, 0;
    local $/;
    return <$fh> // '';
}

###############################################################################
# daemons and the Perl origin

# Fork a child running $code->(@args); stop() kills it (and its whole
# process group), run() restarts it after a stop().
sub run_daemon {
    my ($self, $code, @args) = @_;
    $self->_add_daemon(sub { _spawn(sub { $code->(@args) }) });
    return $self;
}

sub waitforsocket {
    shift if ref $_[0];
    my ($addr) = @_;
    my ($host, $p) = $addr =~ /^(.*):(\d+)$/ or return 0;
    $p = port($p);
    my $deadline = Time::HiRes::time() + $SOCKET_TIMEOUT;
    while (Time::HiRes::time() < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $p,
            Proto => 'tcp', Timeout => 1);
        if ($s) {
            close $s;
            return 1;
        }
        Time::HiRes::sleep($POLL);
    }
    Test::More::diag("waitforsocket: $host:$p not accepting");
    return 0;
}

# start_origin(port => 8082, routes => { '/path' => sub { ... } },
#              log => 'origin.log')
# Callable as a function (uses the last Test::Nginx->new) or a method.
# Returns the real port.
sub start_origin {
    my $self = ref $_[0] && eval { $_[0]->isa(__PACKAGE__) } ? shift
        : $CURRENT or die "Test::Nginx: start_origin before new()\n";
    my %opts = @_;
    my $port = port($opts{port} // die "start_origin: port required\n");
    my $routes = $opts{routes} // {};
    my $log = $self->_path($opts{log} // 'origin.log');

    # Listening happens in the parent, so the origin accepts (queues)
    # connections as soon as this returns: no waitforsocket() needed.
    $self->_add_daemon(sub {
        my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => $port, Proto => 'tcp', Listen => 128,
            ReuseAddr => 1)
            or die "start_origin: cannot listen on 127.0.0.1:$port: $@\n";
        my $pid = _spawn(sub { _origin_loop($srv, $routes, $log) });
        close $srv;
        return $pid;
    });
    return $port;
}

# Requests seen by an origin, as "METHOD URI" strings, in arrival order.
sub origin_requests {
    my ($self, %opts) = @_;
    my $c = $self->read_file($opts{log} // 'origin.log') // '';
    my @r = split /\n/, $c;
    @r = grep { /^\Q$opts{method}\E / } @r if defined $opts{method};
    return @r;
}

# Count origin requests: no arg = all; qr// matched against the URI;
# a string with '?' = exact URI; otherwise the path (query ignored).
sub origin_hits {
    my ($self, $what, %opts) = @_;
    my $n = 0;
    for my $r ($self->origin_requests(%opts)) {
        my ($uri) = $r =~ /^\S+ (.*)$/ or next;
        (my $path = $uri) =~ s/\?.*//s;
        $n++ if !defined $what
            || (ref $what eq 'Regexp' ? $uri =~ $what
                : $what =~ /\?/ ? $uri eq $what : $path eq $what);
    }
    return $n;
}

my %REASON = (
    200 => 'OK', 201 => 'Created', 204 => 'No Content',
    206 => 'Partial Content', 301 => 'Moved Permanently', 302 => 'Found',
    304 => 'Not Modified', 400 => 'Bad Request', 403 => 'Forbidden',
    404 => 'Not Found', 405 => 'Method Not Allowed',
    500 => 'Internal Server Error', 502 => 'Bad Gateway',
    503 => 'Service Unavailable', 504 => 'Gateway Timeout',
);

sub _origin_loop {
    my ($srv, $routes, $log) = @_;
    $SIG{PIPE} = 'IGNORE';

    # One child per connection so a delayed route never blocks others.
    # Children are reaped here, and on TERM (stop() signals the whole
    # group) before exiting: children outliving the origin would be
    # reparented to init, which does not reap in every container.
    my %kids;
    $SIG{CHLD} = sub {
        while ((my $p = waitpid(-1, WNOHANG)) > 0) { delete $kids{$p} }
    };
    $SIG{TERM} = sub {
        $SIG{CHLD} = 'DEFAULT';
        kill TERM => keys %kids;
        waitpid($_, 0) for keys %kids;
        POSIX::_exit(0);
    };

    while (1) {
        my $c = $srv->accept or next;   # EINTR from SIGCHLD
        my $pid = fork;
        if (defined $pid && $pid == 0) {
            $SIG{$_} = 'DEFAULT' for qw/CHLD TERM/;
            close $srv;
            eval { _origin_serve($c, $routes, $log) };
            print STDERR "origin: $@" if $@;
            POSIX::_exit(0);
        }
        $kids{$pid} = 1 if $pid;
        close $c;
    }
}

sub _origin_serve {
    my ($c, $routes, $log) = @_;
    my $req = _read_request($c, 10) or return;

    # Logged before the handler runs, so a hit counts even if the client
    # gives up; one O_APPEND write per line keeps concurrent children
    # from interleaving.
    if (sysopen my $fh, $log, O_WRONLY | O_APPEND | O_CREAT) {
        syswrite $fh, "$req->{method} $req->{uri}\n";
        close $fh;
    }

    my $handler = $routes->{$req->{path}} // $routes->{'*'};
    my ($status, $headers, $body, $delay) = (404, {}, "not found\n");
    if ($handler) {
        my @r = eval { $handler->($req) };
        ($status, $headers, $body, $delay) = $@ ? (500, {}, "origin: $@")
            : @r;
    }
    $status //= 200;
    $headers //= {};
    $body //= '';
    utf8::encode($body) if utf8::is_utf8($body);

    Time::HiRes::sleep($delay) if $delay;

    my @pairs = _pairs($headers);
    my %have = map { lc $_->[0] => 1 } @pairs;
    my $no_body = $status < 200 || $status == 204 || $status == 304;

    my $out = "HTTP/1.1 $status " . ($REASON{$status} // 'Unknown') . "\r\n";
    $out .= "$_->[0]: $_->[1]\r\n" for @pairs;
    $out .= 'Content-Length: ' . length($body) . "\r\n"
        unless $no_body || $have{'content-length'}
            || $have{'transfer-encoding'};
    $out .= "Connection: close\r\n" unless $have{connection};
    $out .= "\r\n";
    $out .= $body unless $no_body || $req->{method} eq 'HEAD';

    _write_all($c, $out, 10);
    close $c;
}

# Read one request (head + Content-Length or chunked body).
sub _read_request {
    my ($c, $timeout) = @_;
    my $deadline = Time::HiRes::time() + $timeout;
    my $buf = '';

    until ($buf =~ /\r?\n\r?\n/) {
        _read_more($c, \$buf, $deadline) or return undef;
    }
    my ($head, $rest) = split /\r?\n\r?\n/, $buf, 2;
    my ($line, @lines) = split /\r?\n/, $head;
    my ($method, $uri, $version) =
        $line =~ m{^(\S+)\s+(\S+)(?:\s+HTTP/(\d\.\d))?\s*$} or return undef;

    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:\s]+)\s*:\s*(.*?)\s*$/ or next;
        $h{lc $k} = exists $h{lc $k} ? "$h{lc $k}, $v" : $v;
    }

    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my ($body, $complete) = _dechunk($rest);
        while (!$complete) {
            _read_more($c, \$rest, $deadline) or last;
            ($body, $complete) = _dechunk($rest);
        }
        $rest = $body;
    } elsif (defined $h{'content-length'}) {
        while (length $rest < $h{'content-length'}) {
            _read_more($c, \$rest, $deadline) or last;
        }
    }

    my ($path, $query) = split /\?/, $uri, 2;
    return { method => $method, uri => $uri, path => $path,
        query => $query, version => $version // '0.9', headers => \%h,
        body => $rest };
}

sub _read_more {
    my ($s, $buf, $deadline) = @_;
    my $left = $deadline - Time::HiRes::time();
    return 0 if $left <= 0 || !IO::Select->new($s)->can_read($left);
    my $n = sysread($s, $$buf, 65536, length $$buf);
    return $n;  # 0 on EOF, undef on error
}

sub _write_all {
    my ($s, $data, $timeout) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $deadline = Time::HiRes::time() + $timeout;
    my $sel = IO::Select->new($s);
    my $off = 0;
    while ($off < length $data) {
        my $left = $deadline - Time::HiRes::time();
        return 0 if $left <= 0 || !$sel->can_write($left);
        my $n = syswrite($s, $data, length($data) - $off, $off);
        return 0 unless defined $n;     # EPIPE/ECONNRESET: peer is gone
        $off += $n;
    }
    return 1;
}

# Decode a chunked body; returns (body, complete?).
sub _dechunk {
    my ($data) = @_;
    my $out = '';
    pos($data) = 0;
    while ($data =~ /\G([0-9a-fA-F]+)[^\r\n]*\r\n/gc) {
        my $n = hex $1;
        if ($n == 0) {
            return ($out, scalar $data =~ /\G(?:[^\r\n]+\r\n)*\r\n/gc);
        }
        my $pos = pos($data);
        return ($out . substr($data, $pos), 0)
            if length($data) < $pos + $n + 2;
        $out .= substr($data, $pos, $n);
        pos($data) = $pos + $n + 2;
    }
    return ($out, 0);
}

# Headers given as { name => value|[values] } (sorted for stable output)
# or [ name => value, ... ] (order kept) -> ([name, value], ...).
sub _pairs {
    my ($h) = @_;
    return () unless $h;
    my @kv = ref $h eq 'HASH' ? map { ($_, $h->{$_}) } sort keys %$h : @$h;
    my @pairs;
    while (my ($k, $v) = splice @kv, 0, 2) {
        push @pairs, map { [$k, $_] } ref $v eq 'ARRAY' ? @$v : ($v);
    }
    return @pairs;
}

###############################################################################
# HTTP client

# http($raw, port => 8080, socket => $s, timeout => 8, start => 0)
# Sends $raw bytes and reads until EOF; undef on timeout/connect error.
sub http {
    my ($request, %opts) = @_;
    my $timeout = defined $opts{timeout} ? $opts{timeout} * $SCALE
        : $HTTP_TIMEOUT;
    my $s = $opts{socket};

    unless ($s) {
        my $p = port($opts{port} // 8080);
        $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $p,
            Proto => 'tcp', Timeout => $timeout);
        unless ($s) {
            Test::More::diag("http: cannot connect to 127.0.0.1:$p: $@");
            return undef;
        }
    }

    # A short write is not fatal: nginx may answer (413, 400) and close
    # before taking the whole request; the response is still readable.
    _write_all($s, $request, $timeout) if length $request;

    return $s if $opts{start};
    return http_end($s, %opts);
}

sub http_start {
    my ($request, %opts) = @_;
    return http($request, %opts, start => 1);
}

sub http_end {
    my ($s, %opts) = @_;
    return undef unless $s;
    my $timeout = defined $opts{timeout} ? $opts{timeout} * $SCALE
        : $HTTP_TIMEOUT;
    my $deadline = Time::HiRes::time() + $timeout;
    my $sel = IO::Select->new($s);
    my $buf = '';
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0 || !$sel->can_read($left)) {
            Test::More::diag("http: no EOF after ${timeout}s; got "
                . length($buf) . " bytes:\n" . substr($buf, 0, 1000));
            close $s;
            return undef;
        }
        my $n = sysread($s, $buf, 65536, length $buf);
        # EOF ends the response; so does a reset (e.g. nginx closing
        # with unread request data), keeping what arrived before it.
        last unless $n;
    }
    close $s;
    return $buf;
}

# http_req('GET', '/uri', headers => {...}|[...], body => ..., port => ...,
#          version => '1.0', plus http() options)
sub http_req {
    my ($method, $uri, %opts) = @_;
    my $version = $opts{version} // '1.0';
    my @pairs = _pairs($opts{headers});
    my %have = map { lc $_->[0] => 1 } @pairs;

    my $r = "$method $uri HTTP/$version\r\n";
    $r .= "Host: localhost\r\n" unless $have{host};
    # Reading ends at EOF, so 1.1 requests must not keep the connection.
    $r .= "Connection: close\r\n" if $version eq '1.1' && !$have{connection};
    # An undef value drops the header (e.g. Host => undef).
    $r .= "$_->[0]: $_->[1]\r\n" for grep { defined $_->[1] } @pairs;

    my $body = $opts{body};
    if (defined $body) {
        utf8::encode($body) if utf8::is_utf8($body);
        $r .= 'Content-Length: ' . length($body) . "\r\n"
            unless $have{'content-length'} || $have{'transfer-encoding'};
    }
    $r .= "\r\n" . ($body // '');
    return http($r, %opts);
}

sub http_get { my ($uri, %o) = @_; http_req('GET', $uri, %o) }
sub http_head { my ($uri, %o) = @_; http_req('HEAD', $uri, %o) }

sub http_post {
    my ($uri, $body, %o) = @_;
    return http_req('POST', $uri, %o, body => $body);
}

# { status, reason, version, headers => {lc name => 'v1, v2'},
#   header_list => [[Name, value], ...], body, raw_body }
# A chunked body is decoded into body; raw_body keeps the wire form.
sub parse_response {
    my ($raw) = @_;
    return undef unless defined $raw;
    my ($head, $body) = split /\r?\n\r?\n/, $raw, 2;
    $body //= '';
    my ($line, @lines) = split /\r?\n/, $head;
    my ($version, $status, $reason) =
        ($line // '') =~ m{^HTTP/(\d\.\d)\s+(\d{3})(?:\s+(.*?))?\s*$}
        or return undef;

    my (%h, @list);
    for (@lines) {
        my ($k, $v) = /^([^:\s]+)\s*:\s*(.*?)\s*$/ or next;
        push @list, [$k, $v];
        $h{lc $k} = exists $h{lc $k} ? "$h{lc $k}, $v" : $v;
    }

    my $decoded = $body;
    ($decoded) = _dechunk($body)
        if ($h{'transfer-encoding'} // '') =~ /chunked/i;

    return { status => $status + 0, reason => $reason // '',
        version => $version, headers => \%h, header_list => \@list,
        body => $decoded, raw_body => $body };
}

1;
