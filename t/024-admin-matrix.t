#!/usr/bin/perl

# The admin surface as a matrix: every admin location (the purge API, the
# PURGE method with and without Pagespeed-Soft-Purge, the revalidate-first
# purge body, status as JSON and Prometheus, inspection, the console) against
# every refusal that applies to it: no ACL match (403 by allow/deny), no or a
# wrong token (401), a wrong method (405), a wrong content type (415), a page
# of another site (403), an oversized body (413). Each request is otherwise
# valid, so the one fault named is what refuses it. Then: nothing changed (the
# status counters are the same, the purge clock flat, the origin asked for
# nothing, every entry still a HIT of its old bytes), and the same requests
# without the fault do work. README, "Security of the admin locations".

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Test::Nginx;
use Test::Pagespeed qw/set_version versioned_route vget json_of status_json
    origin_seen/;

my $TOKEN = 's3cret-T0ken';
my $AUTH = "Bearer $TOKEN";
my $JSON = 'application/json';
# Valid bodies: each would purge (or revalidate) if it were let through.
my $URL = '{"url": "/a"}';
my $REVAL = '{"url": "/x", "revalidate": true}';
my $FLUSH = '{"scope": "all", "confirm": "purge-all"}';
my $BIG = '{"url": "/a"}' . (' ' x 70000);

# [name, method, uri, headers, body, status, extra check on the response]
my @cases;
sub refused { push @cases, [@_] }

# The purge API (token required; /purge-acl: open but not to this client).
for my $b (['url', $URL], ['revalidate-first', $REVAL], ['purge-all', $FLUSH]) {
    my ($what, $body) = @$b;
    my %ok = (Authorization => $AUTH, 'Content-Type' => $JSON);
    refused("API $what: no ACL match", 'POST', '/purge-acl',
        { 'Content-Type' => $JSON }, $body, 403);
    refused("API $what: no token", 'POST', '/purge',
        { 'Content-Type' => $JSON }, $body, 401, \&bearer);
    refused("API $what: wrong token", 'POST', '/purge',
        { %ok, Authorization => 'Bearer s3cret-T0keN' }, $body, 401, \&bearer);
    refused("API $what: token of another scheme", 'POST', '/purge',
        { %ok, Authorization => "Basic $TOKEN" }, $body, 401, \&bearer);
    for my $m (qw/GET PUT DELETE PATCH/) {
        refused("API $what: $m", $m, '/purge', \%ok, $body, 405,
            sub { ($_[0]{headers}{allow} // '') eq 'POST' });
    }
    refused("API $what: HEAD", 'HEAD', '/purge', \%ok, undef, 405);
    for my $ct ('text/plain', 'application/x-www-form-urlencoded', undef) {
        my %h = (%ok, 'Content-Type' => $ct);
        refused("API $what: Content-Type " . ($ct // 'none'), 'POST', '/purge',
            \%h, $body, 415,
            sub { ($_[0]{headers}{'accept-post'} // '') eq $JSON });
    }
    refused("API $what: cross-site Origin", 'POST', '/purge',
        { %ok, Origin => 'https://evil.example' }, $body, 403);
    refused("API $what: Origin null", 'POST', '/purge',
        { %ok, Origin => 'null' }, $body, 403);
    refused("API $what: Sec-Fetch-Site cross-site", 'POST', '/purge',
        { %ok, 'Sec-Fetch-Site' => 'cross-site' }, $body, 403);
    refused("API $what: Sec-Fetch-Site same-site", 'POST', '/purge',
        { %ok, 'Sec-Fetch-Site' => 'same-site' }, $body, 403);
    refused("API $what: body over 64 KiB", 'POST', '/purge', \%ok,
        $body . (' ' x 70000), 413);
}
# Checked in that order: the method, the site, the token, the type, the size.
refused('API: GET from another site without a token', 'GET', '/purge',
    { Origin => 'https://evil.example' }, undef, 405);
refused('API: another site without a token', 'POST', '/purge',
    { 'Content-Type' => $JSON, Origin => 'https://evil.example' }, $URL, 403);
refused('API: no token, not JSON, too big', 'POST', '/purge',
    { 'Content-Type' => 'text/plain' }, $BIG, 401);
refused('API: not JSON and too big', 'POST', '/purge',
    { Authorization => $AUTH, 'Content-Type' => 'text/plain' }, $BIG, 415);

# The PURGE method: /tok/ needs the token, /acl/ lets GET through to anyone
# and PURGE to nobody here. It has no type or size to check (its body is
# discarded) and no origin check (a browser sends PURGE cross-site only
# after a preflight nobody answers).
for my $soft ([], ['Pagespeed-Soft-Purge' => 1]) {
    my $s = @$soft ? ' (soft)' : '';
    refused("PURGE$s: no ACL match", 'PURGE', '/acl/a', {@$soft}, undef, 403);
    refused("PURGE$s: no ACL match, right token", 'PURGE', '/acl/a',
        { @$soft, Authorization => $AUTH }, undef, 403);
    refused("PURGE$s: prefix, no ACL match", 'PURGE', '/acl/*', {@$soft},
        undef, 403);
    refused("PURGE$s: no token", 'PURGE', '/tok/a', {@$soft}, undef, 401,
        \&bearer);
    refused("PURGE$s: wrong token", 'PURGE', '/tok/a',
        { @$soft, Authorization => 'Bearer wrong' }, undef, 401, \&bearer);
    refused("PURGE$s: token plus a byte", 'PURGE', '/tok/a',
        { @$soft, Authorization => "${AUTH}x" }, undef, 401, \&bearer);
    refused("PURGE$s: prefix, no token", 'PURGE', '/tok/*', {@$soft}, undef,
        401, \&bearer);
    refused("PURGE$s: a body over 64 KiB and no token", 'PURGE', '/tok/a',
        { @$soft, 'Content-Type' => $JSON }, $BIG, 401);
    refused("PURGE$s: a body over 64 KiB, no ACL match", 'PURGE', '/acl/a',
        {@$soft}, $BIG, 403);
}

# Status, inspection, the console: allow/deny and read-only methods.
my $html = 'text/html,application/xhtml+xml;q=0.9,*/*;q=0.8';
for my $v (['status', '/status-acl', {}], ['Prometheus', '/status-acl?format=prometheus', {}],
    ['inspection', '/status-acl?url=/a', {}], ['console', '/status-acl', { Accept => $html }]) {
    my ($what, $uri, $h) = @$v;
    (my $open = $uri) =~ s/-acl//;
    refused("$what: no ACL match", 'GET', $uri, $h, undef, 403);
    refused("$what: no ACL match, HEAD", 'HEAD', $uri, $h, undef, 403);
    for my $m (qw/POST PUT DELETE PATCH/) {
        refused("$what: $m", $m, $open, { %$h, 'Content-Type' => $JSON },
            $URL, 405, sub { ($_[0]{headers}{allow} // '') eq 'GET, HEAD' });
    }
    refused("$what: POST with a body over 64 KiB", 'POST', $open,
        { %$h, 'Content-Type' => $JSON }, $BIG, 405);
    refused("$what: POST a form from another site", 'POST', $open,
        { %$h, 'Content-Type' => 'application/x-www-form-urlencoded',
            Origin => 'https://evil.example', 'Sec-Fetch-Site' => 'cross-site' },
        'url=/a', 405);
}

sub bearer { ($_[0]{headers}{'www-authenticate'} // '') =~ /^Bearer/ }

my $t = Test::Nginx->new()->has(qw/http proxy access/)->plan(2 * @cases + 31);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=8m;

    server {
        listen 127.0.0.1:8080;
        server_name localhost;

        location / {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081;
        }
        location /tok/ {
            pagespeed_cache on;
            pagespeed_purge_method PURGE;
            pagespeed_purge_token s3cret-T0ken;
            proxy_pass http://127.0.0.1:8081;
        }
        location /acl/ {
            pagespeed_cache on;
            pagespeed_purge_method PURGE;
            limit_except GET {
                allow 192.0.2.1;
                deny all;
            }
            proxy_pass http://127.0.0.1:8081;
        }
        location = /purge {
            pagespeed_purge;
            pagespeed_purge_token s3cret-T0ken;
        }
        location = /purge-acl {
            pagespeed_purge;
            allow 192.0.2.1;
            deny all;
        }
        location = /status { pagespeed_status purge=/purge; }
        location = /status-acl {
            pagespeed_status purge=/purge-acl;
            allow 192.0.2.1;
            deny all;
        }
        location = /status-tok {
            pagespeed_status;
            pagespeed_purge_token s3cret-T0ken;
        }
    }
}
EOF

start_origin(port => 8081, routes => { '*' => versioned_route() });

set_version(1);
$t->run();

###############################################################################

my @entries = qw(/a /x /tok/a /tok/b /acl/a /acl/b);
# Named loop variables: the helpers read files with while (<>), which sets $_.
for my $u (@entries) { vget($u) }
my $cached = 0;
for my $u (@entries) { $cached++ if vget($u)->{xc} eq 'HIT' }
is($cached, scalar @entries, 'entries cached');
# A purge, or a revalidation that reached the origin, would now bring v=2.
set_version(2);
my $dir = $t->testdir;
my %seen;
for my $u (@entries) { $seen{$u} = origin_seen($dir, $u) }
my $before = status_json();
ok(defined $before->{purge_clock}, 'status counters read');

for my $c (@cases) {
    my ($name, $method, $uri, $h, $body, $want, $check) = @$c;
    my $r = parse_response(http_req($method, $uri, headers => $h,
        defined $body ? (body => $body) : ()))
        // { status => 0, headers => {}, body => '' };
    is($r->{status}, $want, "$name: $want") or diag($r->{body});
    # Every refusal says why in JSON (a HEAD has no body; nginx's own 403
    # is its HTML page).
    my $says = $method eq 'HEAD' || $want == 403 && $uri =~ m{acl}
        ? 1 : ((json_of($r) // {})->{error} // '') ne '';
    ok($says && (!$check || $check->($r)), "$name: the answer") or diag(explain($r->{headers}));
}

my $after = status_json();
my @moved = grep { ($before->{$_} // '') ne ($after->{$_} // '') } sort keys %$before;
is("@moved", '', 'no status counter moved') or diag(join ', ',
    map { "$_: $before->{$_} -> $after->{$_}" } @moved);
is($after->{purge_clock}, $before->{purge_clock}, 'purge clock flat');
is($after->{purges_url} + $after->{purges_prefix} + $after->{purges_tag}
    + $after->{purges_all}, $before->{purges_url} + $before->{purges_prefix}
    + $before->{purges_tag} + $before->{purges_all}, 'no purge counted');
is($after->{revalidations}, $before->{revalidations}, 'no revalidation started');
my @asked;
for my $u (@entries) { push @asked, origin_seen($dir, $u) - $seen{$u} }
is("@asked", '0 0 0 0 0 0', 'the origin was asked for nothing');
for my $u (@entries) {
    my $r = vget($u);
    ok($r->{xc} eq 'HIT' && $r->{ver} == 1, "$u: still a HIT of v=1")
        or diag("$r->{xc} v=$r->{ver}");
}

###############################################################################
# Read-only requests from another site are answered, without CORS headers
# (the other site's page cannot read them); the token guards purges only.

for my $uri ('/status', '/status?format=prometheus', '/status?url=/a') {
    my $r = parse_response(http_get($uri, headers => {
        Origin => 'https://evil.example', 'Sec-Fetch-Site' => 'cross-site' }));
    ok($r->{status} == 200 && !grep(/^access-control-/, keys %{$r->{headers}}),
        "GET $uri from another site: 200 without CORS headers");
}
my $r = parse_response(http_get('/status', headers => { Accept => $html,
    Origin => 'https://evil.example', 'Sec-Fetch-Site' => 'cross-site' }));
ok($r->{status} == 200 && $r->{headers}{'content-type'} =~ m{^text/html}
    && !grep(/^access-control-/, keys %{$r->{headers}})
    && ($r->{headers}{'x-frame-options'} // '') eq 'DENY'
    && ($r->{headers}{'content-security-policy'} // '') =~ /frame-ancestors 'none'/,
    'the console from another site: the page, without CORS headers, never framed');
$r = parse_response(http_get('/status-tok'));
is($r->{status}, 200, 'status where a purge token is set: read without it');
is(status_json()->{purge_clock}, $before->{purge_clock},
    'reads moved no purge clock');

###############################################################################
# The same requests without their fault work (so the refusals above were
# the faults', not the requests').

my $clock = $before->{purge_clock};
sub purge_ok {
    my ($name, $method, $uri, $h, $body) = @_;
    my $r = parse_response(http_req($method, $uri, headers => $h,
        defined $body ? (body => $body) : ()))
        // { status => 0, headers => {}, body => '' };
    my $j = json_of($r) // {};
    ok($r->{status} == 200, "$name: 200") or diag($r->{body});
    return $j;
}

my $j = purge_ok('PURGE with the token', 'PURGE', '/tok/a',
    { Authorization => $AUTH });
is($j->{generation}, ++$clock, 'PURGE with the token: applied');
is(vget('/tok/a')->{ver}, 2, 'PURGE with the token: new bytes');

$j = purge_ok('soft PURGE with the token', 'PURGE', '/tok/b',
    { Authorization => $AUTH, 'Pagespeed-Soft-Purge' => 1 });
ok($j->{soft} && $j->{generation} == ++$clock, 'soft PURGE: applied, soft');

$j = purge_ok('revalidate-first with the token', 'POST', '/purge',
    { Authorization => $AUTH, 'Content-Type' => $JSON }, $REVAL);
is(origin_seen($dir, '/x') - $seen{'/x'}, 1,
    'revalidate-first with the token: the origin was asked');
is(vget('/x')->{ver}, 2, 'revalidate-first: the changed bytes replaced the entry');

$j = purge_ok('the API with the token', 'POST', '/purge',
    { Authorization => $AUTH, 'Content-Type' => "$JSON; charset=utf-8",
        Origin => 'http://localhost:' . port(8080), 'Sec-Fetch-Site' => 'same-origin',
        Host => 'localhost:' . port(8080) }, $URL);
ok($j->{generation} > $clock, 'the API with the token: applied');
$clock = $j->{generation};
is(vget('/a')->{ver}, 2, 'the API with the token: new bytes');

ok(vget('/acl/a')->{xc} eq 'HIT', '/acl/a: the ACL refused every PURGE of it');

$t->stop();
