//! URL identity: normalized host, scheme and path as used in cache keys and purge scopes.

use crate::store::{Key, UrlId};

/// A host as the cache sees it: lowercase, no trailing dot, and the port split off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

/// Splits `Example.COM.:8080` into `example.com` and 8080 (IPv6 literals keep their brackets).
/// A port that does not parse stays part of the host, which then matches nothing cached.
pub fn split_host(host: &str) -> HostPort {
    let h = host.trim().to_ascii_lowercase();
    let (name, port) = match h.rfind(':') {
        Some(i) if !h[i..].contains(']') && (h.starts_with('[') || !h[..i].contains(':')) => {
            match h[i + 1..].parse::<u16>() {
                Ok(p) => (h[..i].to_string(), Some(p)),
                Err(_) => (h.clone(), None),
            }
        }
        _ => (h.clone(), None),
    };
    let name = name.strip_suffix('.').map(str::to_string).unwrap_or(name);
    HostPort { host: name, port }
}

pub fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// The default cache key: scheme, normalized host, the port the request arrived on, and the
/// request URI, each length-prefixed by `Key::derive`. The port keeps two sites with the same
/// name on different listeners apart; it is the listener's, not the Host header's, so a
/// client cannot address another listener's entries.
pub fn default_key(scheme: &str, host: &[u8], port: u16, uri: &[u8]) -> Key {
    Key::derive(&[b"url", scheme.as_bytes(), host, &port.to_le_bytes(), uri])
}

/// The key for a configured `pagespeed_cache_key` value (kept apart from the default's
/// key space by its own first part).
pub fn custom_key(value: &[u8]) -> Key {
    Key::derive(&[b"custom", value])
}

/// An owned URL identity. Purge scopes use scheme, host and path only (a purge reaches the
/// URL on every port: more, never less); `port` picks the keys deleted at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub path: String,
    /// Given explicitly (in a purge URL) or known (the request's listener).
    pub port: Option<u16>,
}

impl Url {
    pub fn id(&self) -> UrlId<'_> {
        UrlId {
            scheme: &self.scheme,
            host: &self.host,
            path: &self.path,
        }
    }

    /// The keys this URL is cached under: its own port, else each of `fallback` (the purge
    /// request's listener, the scheme's default port).
    pub fn keys(&self, fallback: &[u16]) -> Vec<Key> {
        let mut ports: Vec<u16> = match self.port {
            Some(p) => vec![p],
            None => fallback.to_vec(),
        };
        ports.dedup();
        ports
            .into_iter()
            .map(|p| default_key(&self.scheme, self.host.as_bytes(), p, self.path.as_bytes()))
            .collect()
    }

    /// The URL a response's `Location` or `Content-Location` value names, when it is on this
    /// URL's origin (RFC 9111 4.4: a cache MUST NOT invalidate another host's URLs): a path,
    /// a relative reference (resolved against this URL's directory), or an absolute URL of
    /// the same scheme, host and port. None for anything else.
    pub fn same_origin(&self, value: &[u8]) -> Option<Url> {
        let v = std::str::from_utf8(value).ok()?.trim();
        if v.is_empty() || v.starts_with("//") || v.chars().any(|c| c.is_ascii_control()) {
            return None;
        }
        let path = if v.starts_with('/') {
            v.to_string()
        } else if let Some((scheme, rest)) = v.split_once("://") {
            if !scheme.eq_ignore_ascii_case(&self.scheme) {
                return None;
            }
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let hp = split_host(authority);
            let port = hp.port.unwrap_or(default_port(&self.scheme));
            let own_port = self.port.unwrap_or(default_port(&self.scheme));
            if hp.host != self.host || port != own_port {
                return None;
            }
            path.to_string()
        } else if v.split('/').next()?.contains(':') {
            return None; // another scheme (mailto:, urn:)
        } else {
            let dir = match self.path.split('?').next()?.rfind('/') {
                Some(i) => &self.path[..=i],
                None => "/",
            };
            format!("{dir}{v}")
        };
        Some(Url {
            scheme: self.scheme.clone(),
            host: self.host.clone(),
            path,
            port: self.port,
        })
    }

    /// The spellings a dependent entry may use for this resource in `Cache-Tag`.
    pub fn tag_spellings(&self) -> Vec<String> {
        let mut v = vec![
            self.path.clone(),
            format!("{}://{}{}", self.scheme, self.host, self.path),
        ];
        if let Some(p) = self.port.filter(|&p| p != default_port(&self.scheme)) {
            v.push(format!("{}://{}:{p}{}", self.scheme, self.host, self.path));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_targets_are_invalidated_on_the_same_origin_only() {
        let u = Url {
            scheme: "http".into(),
            host: "example.com".into(),
            path: "/a/b?x=1".into(),
            port: Some(8080),
        };
        let path = |v: &str| u.same_origin(v.as_bytes()).map(|t| t.path);
        assert_eq!(path("/c"), Some("/c".into()));
        assert_eq!(path("d?y"), Some("/a/d?y".into()));
        assert_eq!(path("http://EXAMPLE.com:8080/e"), Some("/e".into()));
        assert_eq!(path("http://example.com/e"), None, "another port");
        assert_eq!(path("https://example.com:8080/e"), None, "another scheme");
        assert_eq!(path("http://other.com:8080/e"), None, "another host");
        assert_eq!(path("//other.com/e"), None);
        assert_eq!(path("mailto:a@b"), None);
        assert_eq!(path(""), None);
    }

    #[test]
    fn hosts_normalize_case_trailing_dot_and_split_the_port() {
        let hp = |h: &str| {
            let x = split_host(h);
            (x.host, x.port)
        };
        assert_eq!(hp("Example.COM:443"), ("example.com".into(), Some(443)));
        assert_eq!(hp("example.com."), ("example.com".into(), None));
        assert_eq!(hp("example.com.:8080"), ("example.com".into(), Some(8080)));
        assert_eq!(hp("[::1]:8080"), ("[::1]".into(), Some(8080)));
        assert_eq!(hp("[::1]"), ("[::1]".into(), None));
        assert_eq!(hp("a.com:http"), ("a.com:http".into(), None));
    }

    #[test]
    fn keys_differ_by_scheme_host_port_and_uri() {
        let k = default_key("https", b"a.com", 443, b"/x");
        assert_ne!(k, default_key("http", b"a.com", 443, b"/x"));
        assert_ne!(k, default_key("https", b"a.co", 443, b"m/x"));
        assert_ne!(k, default_key("https", b"a.com", 8443, b"/x"));
        assert_ne!(k, custom_key(b"httpsa.com/x"));
    }

    #[test]
    fn a_url_without_a_port_names_the_keys_of_each_fallback_port() {
        let u = Url {
            scheme: "http".into(),
            host: "a.com".into(),
            path: "/x".into(),
            port: None,
        };
        assert_eq!(
            u.keys(&[8080, 80]),
            vec![
                default_key("http", b"a.com", 8080, b"/x"),
                default_key("http", b"a.com", 80, b"/x")
            ]
        );
        let p = Url {
            port: Some(81),
            ..u.clone()
        };
        assert_eq!(
            p.keys(&[8080, 80]),
            vec![default_key("http", b"a.com", 81, b"/x")]
        );
        assert_eq!(p.tag_spellings().len(), 3);
        assert_eq!(u.tag_spellings(), ["/x", "http://a.com/x"]);
    }
}
