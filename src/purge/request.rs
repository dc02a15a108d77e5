//! Purge requests: the JSON body of the admin location and the `PURGE /path` method, turned
//! into one validated scope.

use serde_json::{Map, Value};

use crate::http::url::{split_host, HostPort, Url};

/// Largest accepted purge body.
pub const MAX_BODY: usize = 64 * 1024;
/// Most URLs or tags in one request.
pub const MAX_ITEMS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Urls(Vec<Url>),
    /// (scheme, host, path prefix)
    Prefixes(Vec<(String, String, String)>),
    Tags(Vec<String>),
    All,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Urls(_) => "url",
            Scope::Prefixes(_) => "prefix",
            Scope::Tags(_) => "tag",
            Scope::All => "all",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRequest {
    pub scope: Scope,
    pub soft: bool,
    /// `"revalidate": true`: ask the origin first; purge only if the bytes changed. One URL
    /// only (both schemes when it names none).
    pub revalidate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PurgeError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PurgeError> {
    Err(PurgeError(msg.into()))
}

const FIELDS: &[&str] = &[
    "url",
    "urls",
    "hostname",
    "scheme",
    "tag",
    "tags",
    "scope",
    "confirm",
    "soft",
    "revalidate",
    // Publishing options, read by `fleet::options`.
    "fleet",
    "wait",
];

/// Parses a JSON purge body. `default_host` is the purge request's own host, used when a
/// URL gives only a path and no `hostname`.
pub fn parse_json(body: &[u8], default_host: &str) -> Result<PurgeRequest, PurgeError> {
    if body.is_empty() {
        return err("empty body: expected a JSON object such as {\"url\": \"/path\"}");
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| PurgeError(format!("body is not valid JSON: {e}")))?;
    let Value::Object(o) = v else {
        return err("body must be a JSON object");
    };
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return err(format!("unknown field \"{k}\""));
    }
    let soft = match o.get("soft") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return err("\"soft\" must be true or false"),
    };
    let revalidate = match o.get("revalidate") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return err("\"revalidate\" must be true or false"),
    };
    if revalidate && soft {
        return err("\"revalidate\" and \"soft\" exclude each other: a revalidation keeps or replaces the entry, a soft purge marks it stale");
    }
    let text = |k: &str| -> Result<Option<&str>, PurgeError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => err(format!("\"{k}\" must be a string")),
        }
    };
    let scheme = match text("scheme")? {
        None => None,
        Some(s @ ("http" | "https")) => Some(s),
        Some(s) => return err(format!("\"scheme\" must be http or https, not \"{s}\"")),
    };
    let hostname = text("hostname")?;
    if hostname.is_some_and(|h| h.is_empty() || h.contains(['/', ' '])) {
        return err("\"hostname\" must be a host name");
    }
    let urls = list(&o, "url", "urls")?;
    let tags = list(&o, "tag", "tags")?;
    let declared = text("scope")?;
    let scope = match (declared, urls.is_empty(), tags.is_empty()) {
        (Some("all"), true, true) => {
            if text("confirm")? != Some("purge-all") {
                return err("a full flush needs \"confirm\": \"purge-all\"");
            }
            if revalidate {
                return err("\"revalidate\" takes one \"url\", not a full flush");
            }
            return Ok(PurgeRequest {
                scope: Scope::All,
                soft,
                revalidate,
            });
        }
        (Some("all"), _, _) => return err("\"scope\": \"all\" takes no url or tag"),
        (_, false, false) => return err("give either url(s) or tag(s), not both"),
        (_, true, true) => {
            return err("nothing to purge: give \"url\", \"tag\" or \"scope\": \"all\"")
        }
        (Some(s), _, _) if !["url", "prefix", "tag"].contains(&s) => {
            return err(format!("unknown scope \"{s}\" (url, prefix, tag or all)"))
        }
        (s, true, false) => {
            if s.is_some_and(|s| s != "tag") {
                return err("tags need \"scope\": \"tag\" or no scope");
            }
            if tags.iter().any(|t| t.is_empty() || t.len() > 1024) {
                return err("a tag must be 1 to 1024 bytes");
            }
            Scope::Tags(tags)
        }
        (s, false, true) => {
            let mut exact = Vec::new();
            let mut prefixes = Vec::new();
            for u in &urls {
                let target = parse_target(u, hostname, scheme, default_host)?;
                let want_prefix = target.prefix || s == Some("prefix");
                if s == Some("url") && target.prefix {
                    return err(format!("\"{u}\": a URL ending in * is a prefix purge"));
                }
                for sch in target.schemes {
                    if want_prefix {
                        prefixes.push((sch.to_string(), target.host.clone(), target.path.clone()));
                    } else {
                        let url = Url {
                            scheme: sch.into(),
                            host: target.host.clone(),
                            path: target.path.clone(),
                            port: target.port,
                        };
                        exact.push(url);
                    }
                }
            }
            match (exact.is_empty(), prefixes.is_empty()) {
                (false, true) => Scope::Urls(exact),
                (true, false) => Scope::Prefixes(prefixes),
                _ => return err("mix of exact URLs and prefixes: send them separately"),
            }
        }
    };
    if revalidate {
        let one_url = matches!(&scope, Scope::Urls(_)) && urls.len() == 1;
        if !one_url {
            return err("\"revalidate\" takes one \"url\" (no prefix, tags or list)");
        }
    }
    Ok(PurgeRequest {
        scope,
        soft,
        revalidate,
    })
}

fn list(o: &Map<String, Value>, one: &str, many: &str) -> Result<Vec<String>, PurgeError> {
    let mut out = Vec::new();
    match o.get(one) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push(s.clone()),
        Some(_) => return err(format!("\"{one}\" must be a string")),
    }
    match o.get(many) {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for v in a {
                let Value::String(s) = v else {
                    return err(format!("\"{many}\" must hold strings"));
                };
                out.push(s.clone());
            }
        }
        Some(_) => return err(format!("\"{many}\" must be an array of strings")),
    }
    if out.len() > MAX_ITEMS {
        return err(format!("at most {MAX_ITEMS} items per purge"));
    }
    Ok(out)
}

/// The purge a `PURGE /path` request asks for: that URL on the request's host (both schemes,
/// the request's own listener port), or the prefix when the path ends in `*`.
pub fn method_request(path: &str, host: &str, port: u16) -> Result<PurgeRequest, PurgeError> {
    let target = parse_target(path, Some(host), None, host)?;
    let scope = if target.prefix {
        Scope::Prefixes(
            target
                .schemes
                .iter()
                .map(|s| (s.to_string(), target.host.clone(), target.path.clone()))
                .collect(),
        )
    } else {
        Scope::Urls(
            target
                .schemes
                .iter()
                .map(|s| Url {
                    scheme: s.to_string(),
                    host: target.host.clone(),
                    path: target.path.clone(),
                    port: Some(port),
                })
                .collect(),
        )
    };
    Ok(PurgeRequest {
        scope,
        soft: false,
        revalidate: false,
    })
}

/// A purge target after parsing: which schemes, host, path, and whether it is a prefix.
#[derive(Debug)]
pub struct Target {
    pub schemes: Vec<&'static str>,
    pub host: String,
    /// An explicit port (`https://host:8443/x`, or in `hostname`).
    pub port: Option<u16>,
    pub path: String,
    pub prefix: bool,
}

/// Parses `https://host/path`, `//host/path` or `/path` (with `hostname`/`scheme` fields or
/// the request's host). No scheme means both http and https. A trailing `*` makes a prefix.
pub fn parse_target(
    u: &str,
    hostname: Option<&str>,
    scheme: Option<&str>,
    default_host: &str,
) -> Result<Target, PurgeError> {
    let (url_scheme, rest) = if let Some(r) = u.strip_prefix("https://") {
        (Some("https"), Some(r))
    } else if let Some(r) = u.strip_prefix("http://") {
        (Some("http"), Some(r))
    } else if let Some(r) = u.strip_prefix("//") {
        (None, Some(r))
    } else if u.contains("://") {
        return err(format!("\"{u}\": only http and https URLs are cached"));
    } else {
        (None, None)
    };
    let (host, path) = match rest {
        Some(r) => {
            let i = r.find('/').unwrap_or(r.len());
            if i == 0 {
                return err(format!("\"{u}\": URL has no host"));
            }
            let p = if i == r.len() { "/" } else { &r[i..] };
            (r[..i].to_string(), p.to_string())
        }
        None => (hostname.unwrap_or(default_host).to_string(), u.to_string()),
    };
    if url_scheme.is_some() && scheme.is_some_and(|s| Some(s) != url_scheme) {
        return err(format!("\"{u}\": scheme field contradicts the URL"));
    }
    let path = path.split('#').next().unwrap_or("").to_string();
    if !path.starts_with('/') {
        return err(format!("\"{u}\": path must start with /"));
    }
    if path.len() > 8192 || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return err(format!(
            "\"{u}\": path has spaces or control characters, or is too long"
        ));
    }
    let (path, prefix) = match path.strip_suffix('*') {
        Some(p) => (p.to_string(), true),
        None => (path, false),
    };
    if path.contains('*') {
        return err(format!("\"{u}\": '*' is only allowed at the end"));
    }
    let schemes: Vec<&'static str> = match url_scheme.or(scheme) {
        Some("https") => vec!["https"],
        Some(_) => vec!["http"],
        None => vec!["http", "https"],
    };
    let HostPort { host, port } = split_host(&host);
    if host.is_empty() {
        return err(format!("\"{u}\": no host (give \"hostname\")"));
    }
    Ok(Target {
        schemes,
        host,
        port,
        path,
        prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(body: &str) -> Result<PurgeRequest, PurgeError> {
        parse_json(body.as_bytes(), "default.test")
    }

    fn url(s: &str, h: &str, path: &str) -> Url {
        Url {
            scheme: s.into(),
            host: h.into(),
            path: path.into(),
            port: None,
        }
    }

    #[test]
    fn the_purge_method_purges_one_url_on_both_schemes_or_a_prefix() {
        let r = method_request("/a.css?v=1", "example.com", 8080).unwrap();
        let u = |s: &str| Url {
            port: Some(8080),
            ..url(s, "example.com", "/a.css?v=1")
        };
        assert_eq!(r.scope, Scope::Urls(vec![u("http"), u("https")]));
        assert!(!r.soft);
        let r = method_request("/img/*", "example.com", 80).unwrap();
        assert!(matches!(r.scope, Scope::Prefixes(p) if p.len() == 2 && p[0].2 == "/img/"));
        assert!(method_request("/a*b", "example.com", 80).is_err());
    }

    #[test]
    fn an_explicit_port_is_kept_apart_from_the_host() {
        let r = p(r#"{"url": "http://Example.com:8081/a"}"#).unwrap();
        let want = Url {
            port: Some(8081),
            ..url("http", "example.com", "/a")
        };
        assert_eq!(r.scope, Scope::Urls(vec![want]));
    }

    #[test]
    fn absolute_urls_purge_one_scheme() {
        let r = p(r#"{"url": "https://Example.com/a.css?v=1"}"#).unwrap();
        assert_eq!(
            r.scope,
            Scope::Urls(vec![url("https", "example.com", "/a.css?v=1")])
        );
        assert!(!r.soft);
    }

    #[test]
    fn paths_take_hostname_and_default_to_both_schemes() {
        let r = p(r#"{"url": "/a.css", "hostname": "example.com"}"#).unwrap();
        assert_eq!(
            r.scope,
            Scope::Urls(vec![
                url("http", "example.com", "/a.css"),
                url("https", "example.com", "/a.css")
            ])
        );
        let r = p(r#"{"url": "/a.css", "scheme": "https", "soft": true}"#).unwrap();
        assert_eq!(
            r.scope,
            Scope::Urls(vec![url("https", "default.test", "/a.css")])
        );
        assert!(r.soft);
        assert!(!r.revalidate);
        let r = p(r#"{"url": "/a.css", "revalidate": true}"#).unwrap();
        assert!(r.revalidate && !r.soft);
        assert_eq!(
            r.scope,
            Scope::Urls(vec![
                url("http", "default.test", "/a.css"),
                url("https", "default.test", "/a.css")
            ])
        );
    }

    #[test]
    fn a_trailing_star_is_a_prefix() {
        let r = p(r#"{"url": "https://example.com/img/*"}"#).unwrap();
        assert_eq!(
            r.scope,
            Scope::Prefixes(vec![("https".into(), "example.com".into(), "/img/".into())])
        );
    }

    #[test]
    fn tags_and_full_flush() {
        assert_eq!(
            p(r#"{"tag": "t1"}"#).unwrap().scope,
            Scope::Tags(vec!["t1".into()])
        );
        assert_eq!(
            p(r#"{"tags": ["a", "b"]}"#).unwrap().scope,
            Scope::Tags(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            p(r#"{"scope": "all", "confirm": "purge-all"}"#)
                .unwrap()
                .scope,
            Scope::All
        );
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_reason() {
        for (body, needle) in [
            ("", "empty"),
            ("{", "JSON"),
            ("[1]", "object"),
            (r#"{"ur": "/a"}"#, "unknown field"),
            (r#"{"url": 5}"#, "string"),
            (r#"{"url": "a.css"}"#, "start with /"),
            (r#"{"url": "/a*b"}"#, "only allowed at the end"),
            (r#"{"url": "ftp://x/a"}"#, "http and https"),
            (r#"{"url": "https:///a"}"#, "no host"),
            (r#"{"scope": "all"}"#, "confirm"),
            (r#"{"scope": "all", "confirm": "yes"}"#, "confirm"),
            (r#"{"url": "/a", "tag": "t"}"#, "not both"),
            (r#"{}"#, "nothing to purge"),
            (r#"{"url": "/a", "soft": "yes"}"#, "soft"),
            (r#"{"url": "/a", "revalidate": 1}"#, "revalidate"),
            (
                r#"{"url": "/a", "revalidate": true, "soft": true}"#,
                "exclude",
            ),
            (r#"{"urls": ["/a", "/b"], "revalidate": true}"#, "one"),
            (r#"{"url": "/a*", "revalidate": true}"#, "one"),
            (r#"{"tag": "t", "revalidate": true}"#, "one"),
            (
                r#"{"scope": "all", "confirm": "purge-all", "revalidate": true}"#,
                "full flush",
            ),
            (r#"{"url": "/a", "scheme": "gopher"}"#, "scheme"),
            (
                r#"{"url": "https://a.com/x", "scheme": "http"}"#,
                "contradicts",
            ),
            (r#"{"urls": ["/a", "/b*"]}"#, "mix"),
            (r#"{"tag": ""}"#, "tag must be"),
            (r#"{"url": "/a b"}"#, "spaces"),
        ] {
            let e = p(body).expect_err(body);
            assert!(e.0.contains(needle), "{body}: {e}");
        }
    }
}
