//! Purge requests from outside: the admin location's JSON body (`parse_json`) and the
//! `PURGE /path` method's path (`method_request`). Either an error, or a scope whose every
//! value is within the bounds the store relies on.

use ngx_http_pagespeed_module::purge::request::{method_request, parse_json, Scope, MAX_ITEMS};

fn check_path(p: &str) {
    assert!(p.starts_with('/'), "path {p:?}");
    assert!(p.len() <= 8192, "path of {} bytes", p.len());
    assert!(
        !p.bytes().any(|b| b <= b' ' || b == 0x7f),
        "control byte in {p:?}"
    );
    assert!(!p.contains('*') && !p.contains('#'), "path {p:?}");
}

fn check_host(h: &str) {
    assert!(!h.is_empty() && !h.contains('/'), "host {h:?}");
    assert_eq!(h, h.to_ascii_lowercase(), "host not lowercased");
}

fn check(scope: &Scope, host_checked: bool) {
    match scope {
        Scope::Urls(u) => {
            assert!(!u.is_empty() && u.len() <= 2 * MAX_ITEMS);
            for u in u {
                assert!(u.scheme == "http" || u.scheme == "https");
                if host_checked {
                    check_host(&u.host);
                }
                check_path(&u.path);
            }
        }
        Scope::Prefixes(p) => {
            assert!(!p.is_empty() && p.len() <= 2 * MAX_ITEMS);
            for (s, h, p) in p {
                assert!(s == "http" || s == "https");
                if host_checked {
                    check_host(h);
                }
                check_path(p);
            }
        }
        Scope::Tags(t) => {
            assert!(!t.is_empty() && t.len() <= MAX_ITEMS);
            assert!(t.iter().all(|t| !t.is_empty() && t.len() <= 1024));
        }
        Scope::All => {}
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        // The first byte picks the entry point; the rest is the body or the path.
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        if sel & 1 == 0 {
            if let Ok(r) = parse_json(rest, "default.test") {
                check(&r.scope, true);
                if r.revalidate {
                    assert!(!r.soft);
                    assert!(matches!(&r.scope, Scope::Urls(u) if u.len() <= 2));
                }
            }
        } else if let Ok(path) = std::str::from_utf8(rest) {
            // The path as nginx gives it (no NUL, at most a few KiB), the Host header's value.
            let (path, host) = path.split_once('\n').unwrap_or((path, "example.com"));
            // The host is nginx's server name here (validated by nginx): not checked again.
            if let Ok(r) = method_request(path, host, 8080) {
                check(&r.scope, false);
                assert!(!r.soft && !r.revalidate);
            }
        }
    });
}
