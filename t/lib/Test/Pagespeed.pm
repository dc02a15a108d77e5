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
use JSON::PP qw/decode_json/;
use Time::HiRes ();

use Test::Nginx;

our @EXPORT = qw/set_version current_version versioned_route vget json_of purge_json
    status_json variants_of eventually/;

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

# GET (options as http_get's: headers => {...}, timeout => S); never undef. Adds `ver` (the
# body's version, -1 if none) and `xc` (X-Cache, '' if none).
sub vget {
    my ($uri, %o) = @_;
    my $r = parse_response(http_get($uri, %o))
        // { status => 0, headers => {}, body => '' };
    ($r->{ver}) = $r->{body} =~ / v=(\d+)$/;
    $r->{ver} //= -1;
    $r->{xc} = $r->{headers}{'x-cache'} // '';
    return $r;
}

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
    my $deadline = Time::HiRes::time() + ($seconds // 30) * Test::Nginx::timeout_scale();
    while (Time::HiRes::time() < $deadline) {
        return 1 if $cond->();
        Time::HiRes::sleep(0.05);
    }
    return 0;
}

1;
