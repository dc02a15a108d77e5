#!/usr/bin/perl

# The purge API's refusals: malformed bodies (400 with a reason), other
# methods (405, and GET never purges), tokens (401), nginx access rules
# (403), bodies that are not application/json (415: a browser sends those
# cross-site without asking), requests from another site's page (403),
# body size (413 over 64 KiB, on the header and on the bytes read),
# and bodies that must work: chunked, spilled to a temp file, exactly 64 KiB.
# No refused request purges anything or moves the purge clock.

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Test::Nginx;
use Test::Pagespeed qw/set_version versioned_route vget json_of status_json/;

my $t = Test::Nginx->new()->has(qw/http proxy access/)->plan(86 + 21);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    # The origin here sends no explicit freshness; the default reuses such responses only
    # under heuristic freshness (RFC 9111 4.2.2), so these tests give them a lifetime.
    pagespeed_cache_valid 10m;
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=8m;
    # small, so bodies over 4 KiB are read into a temp file
    client_body_buffer_size 4k;

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
        location = /purge { pagespeed_purge; }
        location = /purge-tok {
            pagespeed_purge;
            pagespeed_purge_token s3cret-T0ken;
        }
        location = /purge-local {
            pagespeed_purge;
            allow 127.0.0.1;
            deny all;
        }
        location = /purge-deny {
            pagespeed_purge;
            deny all;
        }
        location = /purge-console {
            pagespeed_purge;
            pagespeed_purge_allow_origin https://console.example http://127.0.0.1:9;
        }
        location = /status { pagespeed_status; }
    }
}
EOF


start_origin(port => 8081, routes => { '*' => versioned_route() });

set_version(1);
$t->run();

###############################################################################

sub get { vget(@_) }

sub post {
    my ($uri, $body, %o) = @_;
    my $r = parse_response(http_post($uri, $body, %o,
        headers => { 'Content-Type' => 'application/json',
            %{$o{headers} // {}} }));
    $r //= { status => 0, headers => {}, body => '' };
    $r->{json} = json_of($r) // {};
    return $r;
}

sub clock { status_json()->{purge_clock} }

sub hit_v1 {
    my ($uri) = @_;
    my $r = get($uri);
    return $r->{xc} eq 'HIT' && $r->{ver} == 1;
}

# Entries that no refused request may purge.
get($_) for qw(/a /b /tok/a /tok/b);
ok(hit_v1('/a') && hit_v1('/tok/a'), 'entries cached');
set_version(2);
my $clock = clock();

###############################################################################
# 400: malformed bodies, each with its reason

my @bad = (
    ['{', qr/not valid JSON/, 'invalid JSON'],
    ['{"url": "/a",}', qr/not valid JSON/, 'trailing comma'],
    ['[1]', qr/must be a JSON object/, 'not an object'],
    ['{"url": "/a", "ur": "/b"}', qr/unknown field "ur"/, 'unknown field'],
    ['{"url": "a.css"}', qr/path must start with \//, 'relative path'],
    ['{"url": "/a*b"}', qr/only allowed at the end/, '* not at the end'],
    ['{"url": "/*/a"}', qr/only allowed at the end/, '* in the middle'],
    ['{"url": "ftp://localhost/a"}', qr/only http and https/, 'ftp URL'],
    ['{"url": "https:///a"}', qr/no host/, 'URL without host'],
    ['{"scope": "all"}', qr/confirm/, 'full flush without confirm'],
    ['{"scope": "all", "confirm": "yes"}', qr/confirm/, 'wrong confirm'],
    ['{"scope": "all", "confirm": "purge-all", "url": "/a"}',
        qr/takes no url or tag/, 'flush with a url'],
    ['{"url": "/a", "tag": "t"}', qr/not both/, 'url and tag together'],
    ['{"urls": ["/a", "/b*"]}', qr/mix of exact URLs and prefixes/, 'mix'],
    ['{}', qr/nothing to purge/, 'empty object'],
    ['{"url": 5}', qr/"url" must be a string/, 'url not a string'],
    ['{"urls": "/a"}', qr/"urls" must be an array/, 'urls not an array'],
    ['{"url": "/a", "soft": "yes"}', qr/"soft" must be true or false/,
        'soft not a boolean'],
    ['{"tag": ""}', qr/tag must be 1 to 1024 bytes/, 'empty tag'],
    ['{"url": "/a", "hostname": "a/b"}', qr/must be a host name/,
        'bad hostname'],
    ['{"scope": "bogus", "url": "/a"}', qr/unknown scope "bogus"/,
        'unknown scope'],
    ['', qr/empty body/, 'empty body'],
);

for my $case (@bad) {
    my ($body, $re, $name) = @$case;
    my $r = post('/purge', $body);
    ok($r->{status} == 400 && ($r->{json}{error} // '') =~ $re, "400: $name")
        or diag("got $r->{status}: $r->{body}");
}

my $r = parse_response(http_req('POST', '/purge',
    headers => { 'Content-Type' => 'application/json' }));
ok($r->{status} == 400 && (json_of($r) // {})->{error} =~ /empty body/,
    '400: POST without any body');

$r = post('/purge', '{');
like($r->{headers}{'content-type'} // '', qr{^application/json}, '400 is JSON');

is(clock(), $clock, '400s leave the purge clock alone');
ok(hit_v1('/a'), '400s purge nothing');

###############################################################################
# 405: only POST; GET never purges

for my $m (qw/GET HEAD PUT DELETE/) {
    $r = parse_response(http_req($m, '/purge?url=/a'));
    ok($r->{status} == 405 && ($r->{headers}{allow} // '') eq 'POST',
        "$m /purge: 405 with Allow: POST");
}
$r = parse_response(http_req('GET', '/purge', body => '{"url": "/a"}'));
is($r->{status}, 405, 'GET with a JSON body: 405');
like((json_of($r) // {})->{error} // '', qr/use POST/, '405 says why');
is(clock(), $clock, 'GET does not move the purge clock');
ok(hit_v1('/a'), 'GET /purge never purges: entry still HIT');

###############################################################################
# tokens: JSON location and PURGE method

for my $case (
    [undef, 'missing'],
    ['Bearer wrong', 'wrong'],
    ['Bearer s3cret-T0ke', 'prefix of the token'],
    ['Bearer s3cret-T0ken2', 'token plus a byte'],
    ['Basic s3cret-T0ken', 'not Bearer'],
    ['s3cret-T0ken', 'no scheme'],
) {
    my ($auth, $name) = @$case;
    my %h = defined $auth ? (Authorization => $auth) : ();
    $r = post('/purge-tok', '{"url": "/a"}', headers => \%h);
    ok($r->{status} == 401 && ($r->{headers}{'www-authenticate'} // '')
        =~ /^Bearer/, "token $name: 401 with WWW-Authenticate");
    like($r->{json}{error} // '', qr/token/, "token $name: says why");

    $r = parse_response(http_req('PURGE', '/tok/a', headers => \%h));
    ok($r->{status} == 401 && ($r->{headers}{'www-authenticate'} // '')
        =~ /^Bearer/, "PURGE, token $name: 401");
}
is(clock(), $clock, '401s leave the purge clock alone');
ok(hit_v1('/a') && hit_v1('/tok/a'), '401s purge nothing');

$r = post('/purge-tok', '{"url": "/a"}',
    headers => { Authorization => 'Bearer s3cret-T0ken' });
is($r->{status}, 200, 'right token: 200');
is($r->{json}{generation}, ++$clock, 'right token: purged');
is(get('/a')->{ver}, 2, 'right token: new bytes');

$r = parse_response(http_req('PURGE', '/tok/a',
    headers => { Authorization => 'Bearer s3cret-T0ken' }));
is($r->{status}, 200, 'PURGE with the right token: 200');
is((json_of($r) // {})->{generation}, ++$clock, 'PURGE with token: purged');
is(get('/tok/a')->{ver}, 2, 'PURGE with token: new bytes');

# a token-less location is open (its cache entries are shared, though)
$r = post('/purge', '{"url": "/tok/b"}',
    headers => { Authorization => 'Bearer whatever' });
is($r->{status}, 200, 'no token configured: any Authorization accepted');
$clock++;

###############################################################################
# nginx access rules apply to the purge location

$r = post('/purge-local', '{"url": "/b"}');
is($r->{status}, 200, 'allow 127.0.0.1: 200');
is($r->{json}{generation}, ++$clock, 'allowed purge applied');

$r = post('/purge-deny', '{"url": "/a"}');
is($r->{status}, 403, 'deny all: 403');
is(clock(), $clock, '403 leaves the purge clock alone');

###############################################################################
# body size: 64 KiB is the limit, whatever carries the bytes

get('/c');
ok(get('/c')->{xc} eq 'HIT', '/c cached');
set_version(3);

# a valid body padded with whitespace to exactly $n bytes
sub padded {
    my ($n, $json) = @_;
    return $json . (' ' x ($n - length $json));
}

$r = post('/purge', padded(70000, '{"url": "/a"}'));
is($r->{status}, 413, 'Content-Length over 64 KiB: 413');
like($r->{json}{error} // '', qr/64 KiB/, '413 says why');

$r = post('/purge', padded(65537, '{"url": "/a"}'));
is($r->{status}, 413, '64 KiB + 1: 413');

sub chunked {
    my ($body, $size) = @_;
    my $out = '';
    for (my $i = 0; $i < length $body; $i += $size) {
        my $c = substr($body, $i, $size);
        $out .= sprintf("%x\r\n%s\r\n", length $c, $c);
    }
    return $out . "0\r\n\r\n";
}

sub post_chunked {
    my ($uri, $body, $size) = @_;
    my $r = parse_response(http_req('POST', $uri, version => '1.1',
        headers => { 'Content-Type' => 'application/json',
            'Transfer-Encoding' => 'chunked' },
        body => chunked($body, $size)));
    $r //= { status => 0, headers => {}, body => '' };
    $r->{json} = json_of($r) // {};
    return $r;
}

$r = post_chunked('/purge', padded(70000, '{"url": "/a"}'), 8192);
is($r->{status}, 413, 'chunked body over 64 KiB: 413');
is(clock(), $clock, '413s leave the purge clock alone');

$r = post('/purge', padded(65536, '{"url": "/c"}'));
is($r->{status}, 200, 'exactly 64 KiB (read from a temp file): 200');
is($r->{json}{generation}, ++$clock, '64 KiB body: purged');
$r = get('/c');
ok($r->{xc} eq 'MISS' && $r->{ver} == 3, '64 KiB body: new bytes');

$r = post('/purge', padded(20000, '{"urls": ["/c"]}'));
is($r->{status}, 200, '20 KB body (temp file): 200');
$clock++;

###############################################################################
# chunked bodies work

get('/d');
ok(get('/d')->{xc} eq 'HIT', '/d cached');
set_version(4);

$r = post_chunked('/purge', '{"url": "/d", "hostname": "localhost"}', 5);
is($r->{status}, 200, 'chunked body (5-byte chunks): 200');
is($r->{json}{scope}, 'url', 'chunked body parsed');
is($r->{json}{generation}, ++$clock, 'chunked body: purged');
$r = get('/d');
ok($r->{xc} eq 'MISS' && $r->{ver} == 4, 'chunked purge: new bytes');

$r = post_chunked('/purge', padded(30000, '{"tag": "x"}'), 4096);
is($r->{status}, 200, 'chunked 30 KB body (temp file): 200');
$clock++;

$r = post_chunked('/purge', '', 1);
is($r->{status}, 400, 'empty chunked body: 400');

$r = post_chunked('/purge', '{"scope": "all"}', 3);
like($r->{json}{error} // '', qr/confirm/, 'chunked body errors too');

is(clock(), $clock, 'purge clock counts exactly the accepted purges');
is(get('/b')->{xc}, 'MISS', '/b was purged by the allowed location');

###############################################################################
# 415: only application/json; 403: a page of another site, through a browser

get('/e');
ok(get('/e')->{xc} eq 'HIT', '/e cached');
$clock = clock();
my $flush = '{"scope": "all", "confirm": "purge-all"}';
for my $ct ('text/plain', 'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=xyz', 'application/jsonp', undef) {
    my %h = defined $ct ? ('Content-Type' => $ct) : ();
    $r = parse_response(http_req('POST', '/purge', headers => \%h, body => $flush));
    my $name = $ct // 'no Content-Type';
    ok($r->{status} == 415 && (json_of($r) // {})->{error} =~ /application\/json/,
        "415: $name") or diag("got $r->{status}: $r->{body}");
}
is($r->{headers}{'accept-post'}, 'application/json', '415 says what it accepts');

my $port = port(8080);
for my $case (
    [{ Origin => 'https://evil.example' }, 'a page of another site'],
    [{ Origin => "http://localhost:$port.evil.example" }, 'a look-alike host'],
    [{ Origin => 'http://localhost:81' }, 'another port of this host'],
    [{ Origin => 'null' }, 'an opaque origin (sandboxed frame, file://)'],
    [{ 'Sec-Fetch-Site' => 'cross-site' }, 'Sec-Fetch-Site: cross-site'],
    [{ 'Sec-Fetch-Site' => 'same-site' }, 'Sec-Fetch-Site: same-site'],
    [{ Origin => 'https://console.example' }, 'an origin allowed elsewhere, not here'],
) {
    my ($h, $name) = @$case;
    $r = post('/purge', $flush, headers => { Host => "localhost:$port", %$h });
    ok($r->{status} == 403 && ($r->{json}{error} // '') =~ /refused a request/,
        "403: $name") or diag("got $r->{status}: $r->{body}");
}
is(clock(), $clock, '415s and 403s leave the purge clock alone');
ok(get('/e')->{xc} eq 'HIT', '415s and 403s purge nothing');

$r = post('/purge', '{"url": "/e"}', headers => { Host => "localhost:$port",
    Origin => "http://localhost:$port", 'Sec-Fetch-Site' => 'same-origin',
    'Content-Type' => 'application/json; charset=utf-8' });
is($r->{status}, 200, 'the same origin, application/json with a charset: 200');
is($r->{json}{generation}, ++$clock, 'and purged');
$r = post('/purge-console', '{"url": "/e"}', headers => {
    Origin => 'https://console.example', 'Sec-Fetch-Site' => 'cross-site' });
is($r->{status}, 200, 'an origin allowed by pagespeed_purge_allow_origin: 200');
$clock++;
$r = parse_response(http_req('PURGE', '/tok/e', headers => {
    Origin => 'https://evil.example', Authorization => 'Bearer s3cret-T0ken' }));
is($r->{status}, 200, 'the PURGE method needs a preflight from a browser: not refused');
$clock++;
is(clock(), $clock, 'purge clock counts exactly the accepted purges');
