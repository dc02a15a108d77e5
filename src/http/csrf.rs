//! Checks that keep a web page on another site from driving the purge API through a visitor's
//! browser (cross-site request forgery).
//!
//! A browser sends a POST with `text/plain`, `application/x-www-form-urlencoded` or
//! `multipart/form-data` to any origin without asking first (a "simple" request), so the API
//! takes only `application/json`, which a cross-origin page can send only after a CORS
//! preflight that we never answer. And since a page on the same intranet, on localhost or
//! behind the same VPN is still another site, a request whose `Origin` names another origin,
//! or whose `Sec-Fetch-Site` says it came from another site, is refused unless the operator
//! allowed that origin.

/// Whether a `Content-Type` value is `application/json`, with any parameters (`charset`).
pub fn is_json(content_type: &[u8]) -> bool {
    let media = content_type.split(|&c| c == b';').next().unwrap_or(b"");
    media.trim_ascii().eq_ignore_ascii_case(b"application/json")
}

/// A web origin: scheme, lowercase host, port (the scheme's default when not written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses `https://host[:port]` as browsers send it in `Origin` (no path, no userinfo).
    pub fn parse(v: &str) -> Option<Origin> {
        let (scheme, rest) = v.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        let (host, port) = split_port(rest)?;
        Some(Origin {
            scheme,
            host,
            port: port.unwrap_or(default),
        })
    }
}

/// `host[:port]` (IPv6 literals in brackets) into a lowercase host and an optional port;
/// None for an empty host or a port that is not a number.
fn split_port(v: &str) -> Option<(String, Option<u16>)> {
    let v = v.to_ascii_lowercase();
    let (host, port) = match v.rfind(':') {
        Some(i) if !v[i..].contains(']') && (v.starts_with('[') || !v[..i].contains(':')) => {
            (v[..i].to_string(), Some(v[i + 1..].parse::<u16>().ok()?))
        }
        _ => (v, None),
    };
    (!host.is_empty()).then_some((host, port))
}

/// Why an admin request is refused as cross-site, or None when it may proceed.
///
/// `host` is the request's `Host` header: a page served by this same host and port is the
/// same origin. The scheme is not compared (a TLS-terminating proxy in front makes the page
/// https and the request here http); a `Host` without a port matches an origin on its
/// scheme's default port. Requests without `Origin` and `Sec-Fetch-Site` (curl, scripts,
/// deploy hooks) proceed: only browsers add them, and they always do on a cross-site POST.
pub fn cross_site(
    origin: Option<&[u8]>,
    sec_fetch_site: Option<&[u8]>,
    host: &[u8],
    allowed: &[Origin],
) -> Option<String> {
    let parsed = origin.map(|o| Origin::parse(&String::from_utf8_lossy(o)));
    if let Some(Some(o)) = &parsed {
        if allowed.contains(o) {
            return None;
        }
    }
    match parsed {
        Some(None) => {
            let shown = String::from_utf8_lossy(origin.unwrap_or_default());
            return Some(format!("refused a request from origin \"{shown}\""));
        }
        Some(Some(o)) if !same_host(&o, host) => {
            return Some(format!(
                "refused a request from another origin ({}://{}:{})",
                o.scheme, o.host, o.port
            ));
        }
        _ => {}
    }
    match sec_fetch_site.map(|s| s.trim_ascii().to_ascii_lowercase()) {
        Some(s) if s == b"cross-site" || s == b"same-site" => Some(format!(
            "refused a request the browser marked Sec-Fetch-Site: {}",
            String::from_utf8_lossy(&s)
        )),
        _ => None,
    }
}

fn same_host(o: &Origin, host: &[u8]) -> bool {
    let Some((name, port)) = split_port(&String::from_utf8_lossy(host)) else {
        return false;
    };
    let name = name.strip_suffix('.').unwrap_or(&name);
    let default = if o.scheme == "https" { 443 } else { 80 };
    name == o.host && port.unwrap_or(default) == o.port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_content_types_pass() {
        for ok in [
            &b"application/json"[..],
            b"Application/JSON; charset=utf-8",
            b" application/json ;charset=\"utf-8\"",
        ] {
            assert!(is_json(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"text/plain"[..],
            b"application/x-www-form-urlencoded",
            b"multipart/form-data; boundary=x",
            b"application/jsonx",
            b"application/json-patch+json",
            b"",
        ] {
            assert!(!is_json(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn origins_parse_with_default_ports() {
        assert_eq!(
            Origin::parse("https://Admin.Example.com"),
            Some(Origin {
                scheme: "https".into(),
                host: "admin.example.com".into(),
                port: 443
            })
        );
        assert_eq!(Origin::parse("http://[::1]:8080").unwrap().port, 8080);
        for bad in [
            "null",
            "example.com",
            "ftp://x",
            "https://",
            "https://a/b",
            "https://u@a",
            "http://a:x",
        ] {
            assert_eq!(Origin::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_page_of_another_origin_is_refused_unless_allowed() {
        let none: &[Origin] = &[];
        let evil = Some(&b"https://evil.example"[..]);
        assert!(cross_site(evil, None, b"cache.local:8080", none).is_some());
        let allowed = [Origin::parse("https://evil.example").unwrap()];
        assert_eq!(
            cross_site(evil, Some(b"cross-site"), b"cache.local", &allowed),
            None
        );
        assert!(cross_site(Some(b"null"), None, b"cache.local", none).is_some());
        // Another port of the same host is another origin.
        assert!(cross_site(
            Some(b"http://cache.local:81"),
            None,
            b"cache.local:8080",
            none
        )
        .is_some());
    }

    #[test]
    fn the_same_origin_and_non_browser_clients_pass() {
        let none: &[Origin] = &[];
        assert_eq!(cross_site(None, None, b"cache.local", none), None);
        assert_eq!(
            cross_site(
                Some(b"http://cache.local:8080"),
                Some(b"same-origin"),
                b"Cache.Local:8080",
                none
            ),
            None
        );
        // Behind a TLS-terminating proxy: an https page, an http request without a port.
        assert_eq!(
            cross_site(Some(b"https://cache.local"), None, b"cache.local", none),
            None
        );
        assert_eq!(cross_site(None, Some(b"none"), b"cache.local", none), None);
    }

    #[test]
    fn sec_fetch_site_from_another_site_is_refused() {
        let none: &[Origin] = &[];
        for s in [&b"cross-site"[..], b"same-site", b" Cross-Site "] {
            assert!(cross_site(None, Some(s), b"cache.local", none).is_some());
        }
    }
}
