#!/usr/bin/perl

# The admin console in a real headless Chromium: pagespeed_status answers a browser with a page
# whose counters match the JSON (with JavaScript and without), a chart polled from that JSON,
# a URL's alternates with decoded thumbnails of each stored image variant (and client classes
# whose claimed alternate real requests then get), a purge form whose request passes the API's
# checks and whose receipt is shown, after which the URL is a MISS; values from clients and
# origins appear as text, never markup. Non-browser clients get the JSON and Prometheus answers
# as before. A screenshot is left in build/console-050.png for a person to look at.

use strict;
use warnings;

use Test::More;
use JSON::PP qw/decode_json/;
use Time::HiRes qw(sleep time);
use File::Copy qw(copy);
use Cwd qw(abs_path);
use File::Basename qw(dirname);

use lib 't/lib';
use Test::Nginx;
use Test::Nginx::Images qw(png);
use Test::Nginx::Browser;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(75);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    # The origin here sends no explicit freshness; the default reuses such responses only
    # under heuristic freshness (RFC 9111 4.2.2), so these tests give them a lifetime.
    pagespeed_cache_valid 10m;
    types {
        image/png png;
        text/css css;
    }
    pagespeed_cache_path %%TESTDIR%%/cache.bin size=32m;
    pagespeed_build_threads 1;
    log_format purge '$http_content_type|$http_origin|$http_sec_fetch_site|$http_authorization';

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;
        pagespeed_purge_token s3cret;

        location / {
            pagespeed_cache on;
            pagespeed_variants webp avif resize save-data gzip br;
            proxy_pass http://127.0.0.1:8081;
        }
        location /esc {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8082;
        }
        location = /pagespeed_admin/status { pagespeed_status purge=/pagespeed_admin/purge; }
        location = /pagespeed_admin/purge {
            pagespeed_purge;
            access_log %%TESTDIR%%/purge.log purge;
        }
        location = /open/status { pagespeed_status; pagespeed_purge_token ""; }
        location = /closed/status { pagespeed_status; deny all; }
    }

    server {
        listen 127.0.0.1:8081;
        root %%TESTDIR%%/site;
        expires 1h;
    }
}
EOF

my $EVIL = q{<script>window.__xss=1</script>"'q};
$t->write_file('site/photo.png', png(640, 480, 5));
$t->write_file('site/site.css',
    join '', map { ".row-$_ { margin: ${_}px; padding: 2px; }\n" } 1 .. 300);
start_origin(port => 8082, routes => { '*' => sub {
    return (200, ['Cache-Control' => 'max-age=3600', 'Cache-Tag' => $EVIL,
        'Content-Type' => 'text/plain'], "escaped\n");
} });
$t->run();

###############################################################################

my $p = port(8080);
my $BASE = "http://127.0.0.1:$p";
my $STATUS = '/pagespeed_admin/status';
my $TOKEN = 's3cret';
my $PHOTO = 'http://localhost/photo.png';
my $HTML = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

sub get {
    my ($uri, %h) = @_;
    return parse_response(http_get($uri, headers => \%h)) // { headers => {}, body => '' };
}

sub stats { decode_json(get($STATUS)->{body}) }

sub inspect {
    my ($url) = @_;
    my $e = decode_json(get("$STATUS?url=" . uri_escape($url))->{body})->{entries};
    return $e->[0]{alternates};
}

sub uri_escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

sub unescape_html {
    my ($s) = @_;
    $s =~ s/&lt;/</g;
    $s =~ s/&gt;/>/g;
    $s =~ s/&quot;/"/g;
    $s =~ s/&#39;/'/g;
    $s =~ s/&amp;/&/g;
    return $s;
}

sub eventually {
    my ($cond, $secs) = @_;
    my $deadline = time() + ($secs // 60);
    while (time() < $deadline) {
        return 1 if $cond->();
        sleep 0.2;
    }
    return 0;
}

sub percent {
    my ($num, $den) = @_;
    return "\x{2013}" unless $den;
    my $permille = int((2000 * $num + $den) / (2 * $den));
    return sprintf('%d.%d %%', int($permille / 10), $permille % 10);
}

# The client classes the page describes: name => [headers, the alternate it says they get].
sub classes_on_page {
    my ($html) = @_;
    my %c;
    while ($html =~ m{<tr data-class="([^"]*)"><td>[^<]*</td><td><pre>(.*?)</pre></td><td>([^<]*)</td></tr>}sg) {
        my ($name, $hs, $gets) = (unescape_html($1), $2, unescape_html($3));
        my %h = map { /^([^:]+): (.*)$/ ? (unescape_html($1) => unescape_html($2)) : () }
            split /\n/, $hs;
        $c{$name} = [\%h, $gets];
    }
    return \%c;
}

###############################################################################
# Warm the cache: the photo and its variants for every client class the page names, a
# stylesheet (text alternates), and an entry whose URL and tag are hostile.

is(get('/photo.png')->{headers}{'x-cache'}, 'MISS', 'photo: first request MISS');
get('/site.css', 'Accept-Encoding' => 'gzip, br');
http("GET /esc?q=$EVIL HTTP/1.0\r\nHost: localhost\r\n\r\n");

my $page = get("$STATUS?url=" . uri_escape($PHOTO), Accept => $HTML);
my $classes = classes_on_page($page->{body});
cmp_ok(scalar keys %$classes, '>=', 6, 'the page names client classes with their headers');

# Each class's request queues the variant it is best served; repeat until nothing new appears.
my ($rounds, $prev) = (0, '');
eventually(sub {
    get('/photo.png', %{$_->[0]}) for values %$classes;
    sleep 1.5;
    my $now = join ',', sort map { $_->{variant} } @{inspect($PHOTO)};
    my $same = $now eq $prev;
    ($prev, $rounds) = ($now, $rounds + 1);
    return $same && $rounds >= 3;
}, 120);
my @alts = @{inspect($PHOTO)};
my %variant = map { $_->{variant} => $_ } @alts;
ok($variant{webp} && $variant{avif} && $variant{'avif-480'} && $variant{original},
    "variants built: " . join(' ', sort keys %variant));
ok(eventually(sub { my $s = stats(); $s->{builds_started} == $s->{builds_done}
    + $s->{builds_declined} + $s->{builds_failed} + $s->{builds_fenced} }, 30),
    'builders idle');

###############################################################################
# Non-browser clients: exactly the JSON and Prometheus answers as before.

my $json = get($STATUS);
for my $accept (undef, '*/*', 'application/json', 'text/html, application/json',
    'text/html;q=0.5, */*') {
    my $r = get($STATUS, defined $accept ? (Accept => $accept) : ());
    ok($r->{body} eq $json->{body} && $r->{headers}{'content-type'} eq 'application/json'
        && !$r->{headers}{'content-security-policy'},
        'Accept ' . ($accept // 'absent') . ': the same JSON');
}
like($json->{body}, qr/^\{"alternates":\d+,/, 'JSON as serde writes it');
my $r = get("$STATUS?format=prometheus", Accept => $HTML);
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'format=prometheus wins over Accept');
$r = get("$STATUS?format=json", Accept => $HTML);
is($r->{body}, get($STATUS)->{body}, 'format=json wins over Accept');
$r = get("$STATUS?url=/photo.png", Accept => '*/*');
like($r->{body}, qr/^\{"entries":\[\{"alternates":\[/, '?url= inspection stays JSON for */*');

###############################################################################
# The page without a browser: HTML, security headers, counters equal to the JSON.

$r = get($STATUS, Accept => $HTML);
is($r->{status}, 200, 'page: 200');
is($r->{headers}{'content-type'}, 'text/html; charset=utf-8', 'page: text/html');
is($r->{headers}{'cache-control'}, 'no-store', 'page: no-store');
my ($nonce) = ($r->{headers}{'content-security-policy'} // '')
    =~ /^default-src 'none'; script-src 'nonce-([0-9a-f]{32})';/;
ok($nonce, 'page: CSP allows only its own nonce-tagged script');
like($r->{body}, qr/<script nonce="\Q$nonce\E">/, 'the script carries the nonce');
isnt((get($STATUS, Accept => $HTML)->{headers}{'content-security-policy'} =~ /nonce-(\w+)/)[0],
    $nonce, 'a new nonce per page');
my %static = $r->{body} =~ /data-counter="(\w+)">(\d+)</g;
my $s = stats();
is_deeply([grep { !exists $static{$_} || $static{$_} != $s->{$_} } sort keys %$s], [],
    'server-rendered counters equal the JSON (JavaScript off)');
like($r->{body}, qr/data-derived="hit_ratio">\Q${\ percent($s->{hits},
    $s->{hits} + $s->{stale_hits} + $s->{misses})}\E</, 'hit ratio rendered');
$r = parse_response(http_head($STATUS, headers => { Accept => $HTML }));
ok($r->{status} == 200 && $r->{headers}{'content-type'} =~ m{^text/html} && $r->{body} eq '',
    'HEAD: page headers, no body');
is(get('/closed/status', Accept => $HTML)->{status}, 403, "the location's ACL applies to the page");

###############################################################################
# Thumbnails' bytes: what the client that selects the alternate gets, behind the token.

my $webp = "$STATUS?url=" . uri_escape("http://localhost:$p/photo.png") . '&alternate=0x00000010';
$r = get($webp);
ok($r->{status} == 401 && ($r->{headers}{'www-authenticate'} // '') eq 'Bearer',
    'alternate bytes without the token: 401');
is(get($webp, Authorization => 'Bearer wrong')->{status}, 401, 'wrong token: 401');
$r = get($webp, Authorization => "Bearer $TOKEN");
my $client = get('/photo.png', Accept => 'image/webp,*/*');
ok($r->{status} == 200 && $r->{headers}{'content-type'} eq 'image/webp'
    && $r->{body} eq $client->{body} && length $r->{body} == $variant{webp}{body_bytes},
    'alternate bytes: the webp a WebP client is served');
ok(($r->{headers}{'x-content-type-options'} // '') eq 'nosniff'
    && ($r->{headers}{'content-security-policy'} // '') =~ /sandbox/,
    'alternate bytes: nosniff, sandboxed');
my ($css_br) = grep { $_->{variant} eq 'br' } @{inspect('http://localhost/site.css')};
is(get("$STATUS?url=http://localhost:$p/site.css&alternate=$css_br->{descriptor}",
    Authorization => "Bearer $TOKEN")->{status}, 403, 'a text alternate is not served');
is(get("$STATUS?url=http://localhost:$p/photo.png&alternate=0x00000f10",
    Authorization => "Bearer $TOKEN")->{status}, 404, 'an absent descriptor: 404');
is(get("$STATUS?url=/photo.png&alternate=0x10", Authorization => "Bearer $TOKEN")->{status},
    400, 'a path names two schemes: 400');
is(get("$STATUS?url=http://localhost:$p/photo.png&alternate=zz",
    Authorization => "Bearer $TOKEN")->{status}, 400, 'a bad descriptor: 400');
$r = get("/open/status?url=" . uri_escape($PHOTO), Accept => $HTML);
my ($open_src) = $r->{body} =~ /<img class="thumb" src="([^"]+)"/;
ok($open_src, 'without a token the page links thumbnails directly (no JavaScript needed)');
$open_src = unescape_html($open_src // '');
is(get("/open/status$open_src")->{status}, 200, 'and they load without a token');

###############################################################################
# In the browser.

my $b = Test::Nginx::Browser->start($t);
$b->go("$BASE$STATUS");
like($b->js('return document.title'), qr/^pagespeed cache \W 127\.0\.0\.1$/, 'browser: the page');
ok($b->wait_for(q{return /^updated/.test(document.getElementById('updated').textContent)}),
    'the page polled its JSON');
my $shown = $b->js(q{var o = {};
    document.querySelectorAll('[data-counter]').forEach(function (e) {
        (o[e.getAttribute('data-counter')] = o[e.getAttribute('data-counter')] || []).push(e.textContent);
    });
    o.hit_ratio = [document.querySelector('[data-derived=hit_ratio]').textContent];
    return o;});
$s = stats();
my @wrong;
for my $k (sort keys %$s) {
    push @wrong, "$k: json $s->{$k}, page @{$shown->{$k} // ['missing']}"
        if !$shown->{$k} || grep { $_ ne $s->{$k} } @{$shown->{$k}};
}
is_deeply(\@wrong, [], 'counters shown equal the JSON, every one of them');
is($shown->{hit_ratio}[0], percent($s->{hits}, $s->{hits} + $s->{stale_hits} + $s->{misses}),
    'hit ratio shown');

# chart: samples kept in the page; traffic shows as a rate
ok($b->wait_for(q{return +document.getElementById('chart-svg').getAttribute('data-samples') >= 2}),
    'chart: samples collected');
get('/photo.png') for 1 .. 30;
ok($b->wait_for(q{return document.querySelector('[data-series=hits]').getAttribute('points')
    .split(' ').some(function (p) { return parseFloat(p.split(',')[1]) < 169; });}, 15),
    'chart: the hits line rises after 30 hits');

# look-up with the token typed in: thumbnails fetched with it, decoded
$b->type('#token', $TOKEN);
$b->type('#url', $PHOTO);
$b->click('#lookup-form button');
ok($b->wait_for(q{var i = document.querySelectorAll('#lookup-result img.thumb');
    return i.length > 0 && Array.prototype.every.call(i, function (x) {
        return x.getAttribute('data-state') === 'loaded' || x.getAttribute('data-state') === 'error'; });}, 30),
    'thumbnails loaded');
like($b->js('return location.search'), qr/^\?url=http%3A%2F%2Flocalhost%2Fphoto\.png$/,
    'the look-up is in the address (reload keeps it)');
my $thumbs = $b->js(q{return Array.prototype.map.call(document.querySelectorAll('#lookup-result img.thumb'),
    function (i) { var tr = i.closest('tr'); return { variant: tr.getAttribute('data-variant'),
        descriptor: tr.getAttribute('data-descriptor'), w: i.naturalWidth, h: i.naturalHeight,
        state: i.getAttribute('data-state') }; });});
my @images = grep { $_->{variant} !~ /^declined/ } @alts;
is_deeply([sort map { $_->{descriptor} } @$thumbs], [sort map { $_->{descriptor} } @images],
    'a thumbnail for every image alternate');
is_deeply([map { "$_->{variant}: $_->{state} $_->{w}x$_->{h}" } grep { !$_->{w} } @$thumbs], [],
    'every thumbnail decoded (naturalWidth > 0)');
is_deeply([map { "$_->{variant} $_->{w}" } grep {
        $_->{w} != ($_->{variant} =~ /-480(?!-2x)/ ? 480 : 640)
    } @$thumbs], [], 'thumbnails show each variant at its own size (480 px for phones)');

my $rows = $b->js(q{return Array.prototype.map.call(document.querySelectorAll('#lookup-result tr[data-descriptor]'),
    function (tr) { var c = tr.children; return { descriptor: tr.getAttribute('data-descriptor'),
        variant: tr.getAttribute('data-variant'),
        type: c[2].textContent, encoding: c[3].textContent, bytes: c[4].getAttribute('data-bytes'),
        saving: c[5].textContent, stamp: c[6].textContent, age: c[7].textContent, state: c[8].textContent,
        to: c[9].textContent }; });});
my %row = map { $_->{descriptor} => $_ } @$rows;
is_deeply([map { $_->{descriptor} } grep { !$row{$_->{descriptor}}
        || $row{$_->{descriptor}}{bytes} != $_->{body_bytes}
        || $row{$_->{descriptor}}{stamp} != $_->{stamp}
        || $row{$_->{descriptor}}{encoding} ne $_->{encoding} } @alts], [],
    'every alternate listed with its size, stamp and encoding');
is($row{$variant{webp}{descriptor}}{type}, 'image/webp', 'type shown');
like($row{$variant{webp}{descriptor}}{age}, qr/^\d+ s$/, 'age shown');
my $saving = sprintf('%+.1f %%', int(($variant{webp}{body_bytes} - $variant{original}{body_bytes})
    * 1000 / $variant{original}{body_bytes}) / 10);
is($row{$variant{webp}{descriptor}}{saving}, $saving, "saving against the original ($saving)");
is($row{$variant{original}{descriptor}}{saving}, 'original', 'the original is the reference');
# Classes wider than this 640 px image (768 px, 480 px at DPR 2) are served its full-size
# variants: their own descriptors show as declined markers.
is_deeply([map { "$_->{variant}: $_->{state}" }
        grep { $_->{state} ne ($_->{variant} =~ /^declined: / ? 'declined' : 'fresh') } @$rows],
    [], 'all fresh, and the markers declined');

# what the page says each client class gets is what that client gets
$classes = classes_on_page($b->js('return document.documentElement.outerHTML'));
my $orig_etag = get('/photo.png')->{headers}{etag};
my @lies;
for my $name (sort keys %$classes) {
    my ($h, $gets) = @{$classes->{$name}};
    my $got = get('/photo.png', %$h);
    my $want = $gets eq 'original' ? $orig_etag : substr($orig_etag, 0, -1) . "-$gets\"";
    push @lies, "$name: page says $gets, got $got->{headers}{etag} ($got->{headers}{'x-cache'})"
        unless $got->{headers}{'x-cache'} eq 'HIT' && $got->{headers}{etag} eq $want;
    push @lies, "$name: '$gets' row does not name it"
        unless grep { $_->{variant} eq $gets && $_->{to} =~ /\Q$name\E/ } @$rows;
}
is_deeply(\@lies, [], 'each client class is served the alternate the page names for it');

# hostile URL and tag: text, never markup
$r = get("$STATUS?url=" . uri_escape("http://localhost/esc?q=$EVIL"), Accept => $HTML);
ok($r->{body} !~ /<script>window/ && $r->{body} !~ /"'q/, 'raw page: nothing unescaped');
like($r->{body}, qr/&lt;script&gt;window\.__xss=1&lt;\/script&gt;&quot;&#39;q/,
    'raw page: the tag escaped');
$b->type('#url', "http://localhost/esc?q=$EVIL");
$b->click('#lookup-form button');
ok($b->wait_for(q{var e = document.querySelector('#lookup-result [data-entry]');
    return e && e.getAttribute('data-entry').indexOf('/esc') > 0;}), 'looked up the hostile URL');
my $esc = $b->js(q{return { scripts: document.scripts.length, xss: typeof window.__xss,
    heading: document.querySelector('#lookup-result h3').textContent,
    headers: document.querySelector('#lookup-result pre').textContent,
    input: document.getElementById('url').value };});
is($esc->{scripts}, 1, 'no script element injected');
is($esc->{xss}, 'undefined', 'nothing ran');
my $esc_url = "http://localhost:$p/esc?q=$EVIL";
like($esc->{heading}, qr/^\Q$esc_url\E /, 'the URL shown as text');
like($esc->{headers}, qr/^Cache-Tag: \Q$EVIL\E$/m, 'the tag shown as text');

# purge with a wrong token: the API's refusal is shown
$b->type('#token', 'wrong');
$b->type('#purge-value', $PHOTO);
$b->click('#purge-submit');
ok($b->wait_for(q{return document.querySelector('#receipt.failed')}), 'wrong token: a failed receipt');
like($b->js(q{return document.getElementById('receipt').textContent}),
    qr/^401: missing or wrong purge token/, 'the 401 and its reason');

# tag purge of the hostile tag: the receipt names it as text; the entry shows purged
$b->type('#token', $TOKEN);
$b->click('input[name=scope][value=tag]');
$b->type('#purge-value', $EVIL);
$b->click('#purge-submit');
ok($b->wait_for(q{return document.querySelector('#receipt.ok')}), 'tag purge: a receipt');
my $receipt = $b->js(q{return document.getElementById('receipt').textContent});
like($receipt, qr/^200: purged.*scopetag.*tags\Q$EVIL\E/s, 'the receipt names the tag as text');
is($b->js('return typeof window.__xss + document.scripts.length'), 'undefined1', 'nothing ran');
ok($b->wait_for(q{var c = document.querySelector('#lookup-result tr[data-descriptor] td.state-purged');
    return !!c;}), 'the looked-up entry now shows purged');

# the photo again, then the screenshot: counters, chart, thumbnails, a receipt
$b->type('#url', $PHOTO);
$b->click('#lookup-form button');
$b->wait_for(q{var i = document.querySelectorAll('#lookup-result img.thumb');
    return i.length > 0 && Array.prototype.every.call(i, function (x) {
        return x.getAttribute('data-state') === 'loaded'; });}, 30);
my $root = abs_path(dirname(abs_path(__FILE__)) . '/..');
mkdir "$root/build";
my $shot = "$root/build/console-050.png";
ok($b->screenshot($shot) > 10000, 'screenshot saved');
diag("screenshot: $shot");

# URL purge through the form: what it sends passes the API's checks; the receipt; a MISS
$b->click('input[name=scope][value=url]');
$b->type('#purge-value', $PHOTO);
my $before = stats()->{purge_clock};
$b->click('#purge-submit');
ok($b->wait_for(q{var r = document.querySelector('#receipt.ok');
    return r && /scopeurl/.test(r.textContent);}), 'url purge: a receipt');
$receipt = $b->js(q{return document.getElementById('receipt').textContent});
like($receipt, qr/generation\Q${\ ($before + 1)}\E.*urls\Q$PHOTO\E/s,
    'the receipt: the new generation and the URL');
my $sent = "application/json|$BASE|same-origin|Bearer $TOKEN";
ok(eventually(sub { (split /\n/, $t->read_file('purge.log') // '')[-1] eq $sent }, 5),
    'the form sent JSON, same-origin, with the bearer token')
    or diag($t->read_file('purge.log'));
is(get('/photo.png', Accept => 'image/avif,image/webp,*/*')->{headers}{'x-cache'}, 'MISS',
    'the next request is a MISS');
ok($b->wait_for(q{return /Nothing cached under this URL/.test(
    document.querySelector('#lookup-result [data-entry]').textContent)}),
    'the look-up refreshed: nothing cached');
$b->quit;

###############################################################################
# JavaScript off: the counters and the look-up still work (a plain GET form).

my $nojs = Test::Nginx::Browser->start($t, js => 0);
$nojs->go("$BASE$STATUS");
$s = stats();
my $c = $nojs->js(q{var o = {}; document.querySelectorAll('[data-counter]').forEach(function (e) {
    o[e.getAttribute('data-counter')] = e.textContent; }); return o;});
ok(defined $c->{hits} && !grep({ ($c->{$_} // '') ne $s->{$_} } keys %$s),
    'JavaScript off: counters rendered by the server equal the JSON');
is($nojs->js(q{return document.getElementById('updated').textContent}), 'counters as of page load',
    'JavaScript off: no polling');
$nojs->type('#url', 'http://localhost/site.css');
$nojs->click('#lookup-form button');
ok($nojs->wait_for(q{return !!document.querySelector('#lookup-result tr[data-descriptor]')}),
    'JavaScript off: the look-up form shows the alternates');
like($nojs->js('return location.search'), qr/^\?url=http%3A%2F%2Flocalhost%2Fsite\.css$/,
    'by a plain GET');
$nojs->quit;

###############################################################################
# configuration

$t->write_file_expand('bad.conf', <<'EOF');
%%TEST_GLOBALS%%
events {}
http {
    server {
        listen 127.0.0.1:8083;
        location = /s { pagespeed_status purge=//elsewhere.example/purge; }
    }
}
EOF
my ($rc, $out) = $t->test_config(conf => 'bad.conf');
ok($rc != 0 && $out =~ /invalid parameter "purge=\/\/elsewhere\.example\/purge" in "pagespeed_status".*bad\.conf:\d+/,
    'nginx -t refuses a purge= that is not a path of this site, naming the directive and line')
    or diag($out);
