#!/usr/bin/perl

# A HIT's Cache-Control lines are handed to nginx's filters the way the
# upstream module hands over a MISS's: `expires` below the cache replaces
# them all with its own, as on the MISS, instead of adding one more. nginx
# 1.23 changed how these lines are kept (a linked list, an array before), so
# this runs the same on the vendored 1.28 and on Debian's 1.22.

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Test::Nginx;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(15);

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
        listen 127.0.0.1:8080;
        server_name localhost;

        location /plain/ {
            pagespeed_cache on;
            proxy_pass http://127.0.0.1:8081;
        }

        location /exp/ {
            pagespeed_cache on;
            expires 1h;
            proxy_pass http://127.0.0.1:8081;
        }
    }
}
EOF

my @two = ('Cache-Control' => 'public', 'Cache-Control' => 'max-age=60');
start_origin(port => 8081, routes => {
    '/plain/two' => sub { (200, [@two], 'plain two') },
    '/exp/two' => sub { (200, [@two], 'exp two') },
    '/exp/one' => sub { (200, ['Cache-Control' => 'max-age=60'], 'exp one') },
});

$t->run();

###############################################################################

# "X-Cache: line | line" of a response's Cache-Control lines, in order.
sub cc {
    my ($uri) = @_;
    my $r = parse_response(http_get($uri)) or return 'no response';
    my @cc = map { $_->[1] } grep { lc $_->[0] eq 'cache-control' }
        @{$r->{header_list}};
    return ($r->{headers}{'x-cache'} // '-') . ': ' . join ' | ', @cc;
}

is(cc('/plain/two'), 'MISS: public | max-age=60', 'two lines: MISS has both');
is(cc('/plain/two'), 'HIT: public | max-age=60', 'two lines: HIT has both, in order');
is(cc('/plain/two'), 'HIT: public | max-age=60', 'two lines: again');
is($t->origin_hits('/plain/two'), 1, 'two lines: stored once');

is(cc('/exp/two'), 'MISS: max-age=3600', 'expires over two lines: MISS has its one');
is(cc('/exp/two'), 'HIT: max-age=3600', 'expires over two lines: HIT has its one');
is(cc('/exp/two'), 'HIT: max-age=3600', 'expires over two lines: again');
is($t->origin_hits('/exp/two'), 1, 'expires over two lines: stored once');

is(cc('/exp/one'), 'MISS: max-age=3600', 'expires over one line: MISS');
is(cc('/exp/one'), 'HIT: max-age=3600', 'expires over one line: HIT');
is($t->origin_hits('/exp/one'), 1, 'expires over one line: stored once');

# The stored entry keeps the origin's lines: only the response is rewritten.
my $r = parse_response(http_get('/exp/two'));
is($r->{headers}{'x-cache'}, 'HIT', 'still a HIT');
like($r->{headers}{expires} // '', qr/GMT$/, 'expires adds its Expires');
is($r->{body}, 'exp two', 'body of the HIT');
is(cc('/plain/two'), 'HIT: public | max-age=60',
    'the location without expires still has the origin lines');
