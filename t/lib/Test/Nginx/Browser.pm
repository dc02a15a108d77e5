package Test::Nginx::Browser;

# A real headless Chromium driven over WebDriver (Debian's chromium and chromium-driver), for
# tests of pages the module serves. Core Perl only: the WebDriver wire protocol is JSON over
# HTTP/1.1 on a loopback port.
#
#   my $b = Test::Nginx::Browser->start($t, port => 8090);   # chromedriver as a $t daemon
#   $b->go("http://127.0.0.1:$p/status");
#   $b->js('return document.title');
#   $b->wait_for('return !!document.querySelector("#x")') or fail(...);
#   $b->type('#url', 'text'); $b->click('button');
#   $b->screenshot($path);  $b->quit;
#
# Chromium runs with the flags a closed network needs (no background networking, component
# updates, sync or QUIC, which otherwise hang), as root without its sandbox, and with a new
# empty profile in the test directory. quit() (also run at END) ends the session, which ends
# the browser; processes still running from that profile are then stopped by pid.

use strict;
use warnings;

use Exporter 'import';
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use MIME::Base64 qw(decode_base64);
use Time::HiRes ();

use Test::Nginx qw(port);

my $ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';
my @LIVE;

sub _which {
    my ($name) = @_;
    for (split /:/, $ENV{PATH} // '') {
        return "$_/$name" if -x "$_/$name";
    }
    return undef;
}

# start($t, port => 8090, js => 1): chromedriver on a free port, then a session.
sub start {
    my ($class, $t, %o) = @_;
    my $driver = _which('chromedriver');
    my $chromium = $ENV{TEST_CHROMIUM} // _which('chromium');
    die "Test::Nginx::Browser: chromedriver and chromium are needed (Debian packages"
        . " chromium chromium-driver; .ci/run installs them)\n"
        unless $driver && $chromium;
    my $port = port($o{port} // 8090);
    unless ($t->{_chromedriver}) {
        $t->run_daemon(sub {
            open STDOUT, '>>', $t->testdir . '/chromedriver.log';
            open STDERR, '>&', \*STDOUT;
            exec $driver, "--port=$port";
        });
        $t->waitforsocket("127.0.0.1:$port") or die "chromedriver did not start\n";
        $t->{_chromedriver} = 1;
    }
    my $profile = $t->testdir . '/chromium-' . (++$t->{_chromium_profiles});
    mkdir $profile;
    my $self = bless { port => $port, profile => $profile }, $class;
    my @args = (qw(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
        --disable-background-networking --disable-component-update --disable-sync
        --disable-default-apps --disable-extensions --password-store=basic),
        "--user-data-dir=$profile", '--window-size=' . ($o{window} // '1280,2400'));
    my %chrome = (binary => $chromium, args => \@args);
    $chrome{prefs} = { 'profile.managed_default_content_settings.javascript' => 2 }
        if defined $o{js} && !$o{js};
    my $r = $self->_call(POST => '/session', { capabilities => { alwaysMatch => {
        browserName => 'chrome', 'goog:chromeOptions' => \%chrome,
        timeouts => { pageLoad => 20000, script => 20000 } } } });
    $self->{id} = $r->{sessionId} or die "no WebDriver session: " . _enc($r) . "\n";
    push @LIVE, $self;
    return $self;
}

sub _enc { JSON::PP->new->canonical->allow_nonref->encode($_[0]) }

# One WebDriver command; returns its "value" (dies on a WebDriver error).
sub _call {
    my ($self, $method, $path, $body) = @_;
    my $json = defined $body ? JSON::PP->new->utf8->encode($body) : '';
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port},
        Proto => 'tcp', Timeout => 5) or die "chromedriver: connect: $@\n";
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1:$self->{port}\r\n"
        . "Connection: close\r\nContent-Type: application/json\r\n"
        . 'Content-Length: ' . length($json) . "\r\n\r\n$json";
    print $s $req;
    # chromedriver may keep the connection open: the answer ends at its Content-Length (or
    # the last chunk), not at EOF.
    my ($buf, $sel) = ('', IO::Select->new($s));
    my ($head, $resp);
    my $deadline = Time::HiRes::time() + 60;
    while (Time::HiRes::time() < $deadline) {
        if (($head, $resp) = $buf =~ /^(.*?)\r\n\r\n(.*)$/s) {
            last if $head =~ /^content-length:\s*(\d+)/im && length $resp >= $1;
            last if $head =~ /^transfer-encoding:\s*chunked/im && $resp =~ /(?:^|\r\n)0\r\n\r\n$/;
        }
        next unless $sel->can_read(1);
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
    }
    close $s;
    ($head, $resp) = $buf =~ /^(.*?)\r\n\r\n(.*)$/s;
    die "chromedriver: no answer to $method $path\n" unless defined $resp;
    if ($head =~ /^transfer-encoding:\s*chunked/im) {
        my $out = '';
        while ($resp =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $n = hex $1;
            last unless $n;
            $out .= substr($resp, 0, $n, '');
            $resp =~ s/^\r\n//;
        }
        $resp = $out;
    }
    my $v = eval { JSON::PP->new->utf8->decode($resp) }
        or die "chromedriver: bad JSON for $method $path: " . substr($resp, 0, 300) . "\n";
    my $value = $v->{value};
    die "WebDriver $method $path: $value->{error}: $value->{message}\n"
        if ref $value eq 'HASH' && $value->{error};
    return $value;
}

sub _s { "/session/$_[0]{id}" }

sub go { my ($self, $url) = @_; $self->_call(POST => $self->_s . '/url', { url => $url }) }

# Runs a script in the page (its body: use `return`); returns the value.
sub js {
    my ($self, $script, @args) = @_;
    return $self->_call(POST => $self->_s . '/execute/sync',
        { script => $script, args => \@args });
}

# Polls a script until it returns true, for at most $secs (default 20); its last value.
sub wait_for {
    my ($self, $script, $secs, @args) = @_;
    my $deadline = Time::HiRes::time() + ($secs // 20);
    while (1) {
        my $v = $self->js($script, @args);
        return $v if $v;
        return $v if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.1);
    }
}

sub _element {
    my ($self, $css) = @_;
    my $e = $self->_call(POST => $self->_s . '/element',
        { using => 'css selector', value => $css });
    return $e->{$ELEMENT};
}

# Types into a field as a person would (key events), after clearing it.
sub type {
    my ($self, $css, $text) = @_;
    my $e = $self->_element($css);
    $self->_call(POST => $self->_s . "/element/$e/clear", {});
    $self->_call(POST => $self->_s . "/element/$e/value", { text => $text });
}

sub click {
    my ($self, $css) = @_;
    my $e = $self->_element($css);
    $self->_call(POST => $self->_s . "/element/$e/click", {});
}

sub screenshot {
    my ($self, $path) = @_;
    my $png = decode_base64($self->_call(GET => $self->_s . '/screenshot'));
    open my $fh, '>:raw', $path or die "screenshot $path: $!\n";
    print $fh $png;
    close $fh;
    return length $png;
}

sub quit {
    my ($self) = @_;
    return unless $self->{id};
    eval { $self->_call(DELETE => $self->_s) };
    delete $self->{id};
    # The session's end stops the browser; anything left from this profile goes by pid.
    my $deadline = Time::HiRes::time() + 5;
    while (my @left = $self->_profile_pids) {
        if (Time::HiRes::time() > $deadline) {
            kill KILL => @left;
            last;
        }
        Time::HiRes::sleep(0.1);
    }
}

sub _profile_pids {
    my ($self) = @_;
    my @pids;
    for my $f (glob '/proc/[0-9]*/cmdline') {
        open my $fh, '<', $f or next;
        local $/;
        my $c = <$fh> // next;
        push @pids, $f =~ m{/proc/(\d+)/} if index($c, "--user-data-dir=$self->{profile}\0") >= 0;
    }
    return grep { $_ != $$ } @pids;
}

END { $_->quit for @LIVE }

1;
