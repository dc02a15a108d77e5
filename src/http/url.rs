//! URL identity: normalized host, scheme and path as used in cache keys and purge scopes.

use crate::store::{Key, UrlId};

/// Lowercases a host, drops a trailing dot and a port that is the scheme's default, so that
/// `Example.COM.:443` and `example.com` address the same entries over https.
pub fn normalize_host(scheme: &str, host: &str) -> String {
    let mut h = host.trim().to_ascii_lowercase();
    let default_port = match scheme {
        "https" => Some(":443"),
        "http" => Some(":80"),
        _ => None,
    };
    if let Some(p) = default_port {
        if let Some(stripped) = h.strip_suffix(p) {
            if !stripped.ends_with(']') || stripped.starts_with('[') {
                h = stripped.to_string();
            }
        }
    }
    if let Some(stripped) = h.strip_suffix('.') {
        h = stripped.to_string();
    }
    h
}

/// The default cache key: scheme, normalized host and request URI, each length-prefixed by
/// `Key::derive` so no two different requests derive the same key.
pub fn default_key(scheme: &str, host: &str, uri: &[u8]) -> Key {
    Key::derive(&[b"url", scheme.as_bytes(), host.as_bytes(), uri])
}

/// The key for a configured `pagespeed_cache_key` value (kept apart from the default's
/// key space by its own first part).
pub fn custom_key(value: &[u8]) -> Key {
    Key::derive(&[b"custom", value])
}

/// An owned URL identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub path: String,
}

impl Url {
    pub fn id(&self) -> UrlId<'_> {
        UrlId {
            scheme: &self.scheme,
            host: &self.host,
            path: &self.path,
        }
    }

    pub fn key(&self) -> Key {
        default_key(&self.scheme, &self.host, self.path.as_bytes())
    }

    /// Both spellings a dependent entry may use for this resource in `Cache-Tag`.
    pub fn tag_spellings(&self) -> [String; 2] {
        let path = self.path.clone();
        [
            path,
            format!("{}://{}{}", self.scheme, self.host, self.path),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_normalize_case_trailing_dot_and_default_port() {
        assert_eq!(normalize_host("https", "Example.COM:443"), "example.com");
        assert_eq!(normalize_host("http", "example.com."), "example.com");
        assert_eq!(
            normalize_host("http", "example.com:8080"),
            "example.com:8080"
        );
        assert_eq!(normalize_host("https", "example.com:80"), "example.com:80");
    }

    #[test]
    fn keys_differ_by_scheme_host_and_uri() {
        let k = default_key("https", "a.com", b"/x");
        assert_ne!(k, default_key("http", "a.com", b"/x"));
        assert_ne!(k, default_key("https", "a.co", b"m/x"));
        assert_ne!(k, custom_key(b"httpsa.com/x"));
    }
}
