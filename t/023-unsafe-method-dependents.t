#!/usr/bin/perl

# RFC 9111 4.4 invalidation by an unsafe method, and the README's promise that it acts "as a
# URL purge would": a URL purge also invalidates every entry that declared the URL as a
# dependency (Cache-Tag / Surrogate-Key naming its path or absolute URL). Found while writing
# the chaos soak: a POST once invalidated the URL itself but not its dependents, because
# invalidation had its own purge plan; both now go through src/purge's one plan.

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Test::Nginx;
use Test::Pagespeed qw/set_version versioned_route/;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(8);

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

    server {
        listen 127.0.0.1:8080 reuseport;
        server_name localhost;

        location / {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081;
        }
        location = /purge { pagespeed_purge; }
    }
}
EOF


# Pages declare the stylesheet by path and by absolute URL.
my %TAGS = (
    '/page.html' => ['Cache-Tag' => 'home, /css/site.css'],
    '/page2.html' => ['Cache-Tag' => 'http://localhost/css/site.css'],
);

start_origin(port => 8081, routes => {
    '*' => versioned_route(headers => sub { @{$TAGS{$_[0]{path}} // []} }) });

set_version(1);
$t->run();

sub get {
    my $r = parse_response(http_get(shift)) // { headers => {}, body => '' };
    return ($r->{headers}{'x-cache'} // '') . ' ' . $r->{body};
}

get($_) for qw(/css/site.css /page.html /page2.html);
is(get('/page.html'), "HIT /page.html v=1\n", 'page cached');

# The stylesheet changes; a POST to it (answered 200 by the origin) invalidates it.
set_version(2);
my $p = parse_response(http_post('/css/site.css', 'x=1'));
is($p->{status}, 200, 'POST answered');
is(get('/css/site.css'), "MISS /css/site.css v=2\n", 'POST invalidated the stylesheet');

is(get('/page.html'), "MISS /page.html v=2\n",
    'POST invalidated the page that declared it by path');
is(get('/page2.html'), "MISS /page2.html v=2\n",
    'POST invalidated the page that declared it by absolute URL');

# The same through the purge API reaches both (what "as a URL purge would" means).
set_version(3);
http_post('/purge', '{"url": "/css/site.css"}',
    headers => { 'Content-Type' => 'application/json' });
is(get('/css/site.css'), "MISS /css/site.css v=3\n", 'URL purge: the stylesheet');
is(get('/page.html'), "MISS /page.html v=3\n", 'URL purge: the page (by path)');
is(get('/page2.html'), "MISS /page2.html v=3\n", 'URL purge: the page (by absolute URL)');
