package Test::Pagespeed;

# Helpers the module's t/ files share, on top of Test::Nginx: a versioned origin (its body
# says which version of the content it served, so old and new bytes are told apart), requests
# that note the version and X-Cache they got, the purge API and the status location, and
# bounded waits for what happens in the background (builders, revalidations).
#
#   set_version(2);                  # what the origin serves from now on
#   start_origin(port => 8081, routes => { '*' => versioned_route() });
#   my $r = vget('/a', headers => { Accept => 'image/webp' });   # ->{ver}, ->{xc}, ...
#   my ($res, $json) = purge_json('{"url": "/a"}');
#   status_json()->{hits};
#   eventually(sub { variants_of('/a.png') eq 'avif,original,webp' });
#
# Functions act on the Test::Nginx object made last (as start_origin does).

use strict;
use warnings;

use Exporter qw/import/;
use IO::Select;
use IO::Socket::INET;
use JSON::PP qw/decode_json/;
use Time::HiRes qw/time sleep/;

use Test::Nginx;

our @EXPORT = qw/set_version current_version versioned_route vget json_of purge_json
    status_json variants_of eventually origin_seen decorate start_clients collect_clients burst
    wait_until count_of max_of/;

sub _t { Test::Nginx->current or die "Test::Pagespeed: no Test::Nginx object yet\n" }

# The version the origin serves, written atomically so a forked origin child never reads
# half a file.
sub set_version {
    my ($v) = @_;
    my $dir = _t()->testdir;
    open my $fh, '>', "$dir/version.tmp" or die "version: $!";
    print $fh $v;
    close $fh;
    rename "$dir/version.tmp", "$dir/version" or die "version: $!";
    return $v;
}

# Read at request time, in the origin's child.
sub current_version {
    my ($dir) = @_;
    open my $fh, '<', "$dir/version" or die "version: $!";
    my $v = <$fh>;
    return $v;
}

# An origin route answering "<path> v=<version>\n", cacheable for an hour; `headers` adds
# response headers (a list of pairs, or a code taking the request and returning one).
sub versioned_route {
    my (%o) = @_;
    my $dir = _t()->testdir;
    return sub {
        my ($r) = @_;
        my $v = current_version($dir);
        my @extra = ref $o{headers} eq 'CODE' ? $o{headers}->($r) : @{$o{headers} // []};
        return (200, ['Cache-Control' => 'max-age=3600', @extra], "$r->{path} v=$v\n",
            $o{delay} ? $o{delay}->($r) : undef);
    };
}

# GET (options as http_get's: headers => {...}, timeout => S); never undef. Adds the fields
# of decorate() and `secs` (how long it took).
sub vget {
    my ($uri, %o) = @_;
    my $start = time;
    my $r = parse_response(http_get($uri, %o))
        // { status => 0, headers => {}, body => '' };
    $r->{secs} = time - $start;
    return decorate($r);
}

# How many requests for $path the origin (start_origin's log in `dir`) has seen, a request
# in progress included (the harness logs a request before its handler runs).
sub origin_seen {
    my ($dir, $path) = @_;
    open my $fh, '<', "$dir/origin.log" or return 0;
    my $n = 0;
    while (<$fh>) { $n++ if m{^\S+ \Q$path\E(?:\?|$)} }
    return $n;
}

# A response's fields for tests: `ver` (the body's " v=N", -1 if none), `n` (" n=N", the
# origin's request count, -1), `xc` (X-Cache), `cs` (X-Cache-Status), `worker` (X-Worker).

sub json_of {
    my ($r) = @_;
    return undef unless $r;
    return eval { decode_json($r->{body}) };
}

# POST a JSON body to the purge API (default /purge): the response and its decoded body ({}
# if none).
sub purge_json {
    my ($body, %o) = @_;
    my $r = parse_response(http_post($o{uri} // '/purge', $body, headers => {
        'Content-Type' => 'application/json', %{$o{headers} // {}} }))
        // { status => 0, headers => {}, body => '' };
    return ($r, json_of($r) // {});
}

# The counters of a pagespeed_status location (default /status).
sub status_json { json_of(parse_response(http_get($_[0] // '/status'))) // {} }

# The variant labels stored for a URL, sorted and comma-joined ('' if none).
sub variants_of {
    my ($uri, $status) = @_;
    my $body = (parse_response(http_get(($status // '/status') . "?url=$uri")) // {})->{body}
        // '';
    return join ',', sort $body =~ /"variant":"([^"]+)"/g;
}

# Polls `cond` until it holds or `seconds` (default 30, scaled under valgrind) pass.
sub eventually {
    my ($cond, $seconds) = @_;
    my $deadline = time() + ($seconds // 30) * Test::Nginx::timeout_scale();
    while (time() < $deadline) {
        return 1 if $cond->();
        sleep(0.05);
    }
    return 0;
}

sub decorate {
    my ($r) = @_;
    ($r->{ver}) = ($r->{body} // '') =~ / v=(\d+)/;
    ($r->{n}) = ($r->{body} // '') =~ / n=(\d+)/;
    $r->{ver} //= -1;
    $r->{n} //= -1;
    $r->{xc} = $r->{headers}{'x-cache'} // '';
    $r->{cs} = $r->{headers}{'x-cache-status'} // '';
    $r->{worker} = $r->{headers}{'x-worker'} // '';
    $r->{status} //= 0;
    return $r;
}

# Opens $n connections and sends a GET on each without waiting for answers.
sub start_clients {
    my ($n, $uri, %h) = @_;
    my @c;
    for (1 .. $n) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => port(8080), Proto => 'tcp', Timeout => 3);
        my $start = time;
        unless ($s) {
            push @c, { start => $start, err => "connect: $@" };
            next;
        }
        my $req = "GET $uri HTTP/1.0\r\nHost: localhost\r\n"
            . join('', map { "$_: $h{$_}\r\n" } sort keys %h) . "\r\n";
        syswrite($s, $req);
        $s->blocking(0);
        push @c, { sock => $s, start => $start, buf => '' };
    }
    return \@c;
}

# Reads every client's answer (bounded by $timeout seconds) until its
# connection closes, or with until_done => 1 only until the whole response
# has arrived (the connection stays open for a later call). Each gets done
# (when the whole response had arrived), eof, secs (done - start) and the
# parsed response fields of decorate().
sub collect_clients {
    my ($c, $timeout, %o) = @_;
    my $deadline = time + $timeout;
    my %by = map { fileno($_->{sock}) => $_ } grep { $_->{sock} } @$c;
    my $sel = IO::Select->new(map { $_->{sock} } values %by);
    my $pending = sub {
        grep { !($o{until_done} ? $_->{done} : $_->{eof}) } values %by;
    };
    while ($pending->() && time < $deadline) {
        for my $s ($sel->can_read(0.02)) {
            my $cl = $by{fileno $s};
            my $n = sysread($s, $cl->{buf}, 65536, length $cl->{buf});
            next if !defined $n && ($!{EAGAIN} || $!{EWOULDBLOCK});
            my $now = time;
            if (!$n) {
                $cl->{eof} = $now;
                $sel->remove($s);
                close $s;
                delete $cl->{sock};
            }
            if (!$cl->{done} && $cl->{buf} =~ /\r\n\r\n/) {
                my ($head, $body) = split /\r\n\r\n/, $cl->{buf}, 2;
                my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
                $cl->{done} = $now
                    if defined $len && length $body >= $len;
            }
        }
    }
    for my $cl (@$c) {
        if ($cl->{sock} && !$o{until_done}) {
            $cl->{timeout} = 1;
            close $cl->{sock};
            delete $cl->{sock};
        }
        $cl->{done} //= $cl->{eof} if length($cl->{buf} // '');
        my $r = parse_response($cl->{buf}) // { headers => {}, body => '' };
        %$cl = (%$cl, %$r);
        decorate($cl);
        $cl->{secs} = defined $cl->{done} ? $cl->{done} - $cl->{start} : 999;
    }
    return @$c;
}

sub burst {
    my ($n, $uri, %h) = @_;
    return collect_clients(start_clients($n, $uri, %h), 15);
}

sub wait_until {
    my ($cond, $secs) = @_;
    my $deadline = time + $secs;
    sleep 0.01 until $cond->() || time > $deadline;
    return $cond->();
}

sub count_of {
    my ($field, @c) = @_;
    my %n;
    $n{$_->{$field}}++ for @c;
    return join ' ', map { "$_=$n{$_}" } sort keys %n;
}

sub max_of { my $m = 0; $_ > $m and $m = $_ for @_; $m }

1;
