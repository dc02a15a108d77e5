//! Storability and freshness of a response (RFC 9111 sections 3, 4.2 and 5.2).

/// The parts of a `Cache-Control` header this cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    /// RFC 5861: seconds past expiry a stale response may be served while it is revalidated,
    /// and while the origin errs.
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses one or more comma-separated directive lists (repeated headers are joined).
    /// Unknown directives are ignored; a malformed delta-seconds counts as 0 (RFC 9111 4.2.1
    /// says to treat an invalid freshness value as stale), never as "cache forever".
    pub fn parse(values: &[&[u8]]) -> CacheControl {
        let mut cc = CacheControl::default();
        for v in values {
            let text = String::from_utf8_lossy(v);
            for item in split_directives(&text) {
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (item.trim(), None),
                };
                let secs = || arg.map(|a| a.parse::<u64>().unwrap_or(0)).unwrap_or(0);
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    // A qualified no-cache="field" only restricts those fields; we do not
                    // store partial responses, so treat any form as no-cache.
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    "max-age" => cc.max_age = Some(cc.max_age.map_or(secs(), |m| m.min(secs()))),
                    "s-maxage" => cc.s_maxage = Some(cc.s_maxage.map_or(secs(), |m| m.min(secs()))),
                    "stale-while-revalidate" => cc.stale_while_revalidate = Some(secs()),
                    "stale-if-error" => cc.stale_if_error = Some(secs()),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// Splits on commas outside double quotes (`no-cache="a, b"` is one directive).
fn split_directives(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

/// Why a response is not stored; `as_str` is what logs and the debug header say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Status,
    NoStore,
    /// The request said `Cache-Control: no-store` (the response may well be storable).
    RequestNoStore,
    Private,
    NoCache,
    SetCookie,
    VaryStar,
    Authorization,
    TooLarge,
    ZeroLifetime,
    /// An `Age` that is not text.
    BadAge,
    /// A header too long to store (over 64 KiB).
    HeadersTooLarge,
}

impl NotStored {
    /// Whether the refusal comes from the request, not the response: another request for
    /// the same URL may well store it (no hit-for-pass).
    pub fn from_request(self) -> bool {
        matches!(self, NotStored::RequestNoStore | NotStored::Authorization)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::Private => "private",
            NotStored::NoCache => "no-cache",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::Authorization => "authorization",
            NotStored::TooLarge => "too-large",
            NotStored::ZeroLifetime => "zero-lifetime",
            NotStored::BadAge => "bad-age",
            NotStored::HeadersTooLarge => "headers-too-large",
        }
    }
}

/// What the header filter knows about a response when deciding whether to store it.
#[derive(Debug, Clone, Default)]
pub struct ResponseFacts<'a> {
    pub status: u16,
    pub cache_control: CacheControl,
    /// The request carried `Cache-Control: no-store`.
    pub request_no_store: bool,
    pub request_authorization: bool,
    pub set_cookie: bool,
    pub vary: Vec<&'a str>,
    pub content_length: Option<u64>,
    /// Parsed `Date` and `Expires` (unix seconds); an unparseable Expires is `Some(0)`.
    pub date: Option<i64>,
    pub expires: Option<i64>,
    /// The origin's `Age` header.
    pub age: u64,
}

/// Decides storability and the freshness lifetime in seconds (RFC 9111 3 and 4.2.1):
/// `s-maxage`, else `max-age`, else `Expires - Date`, else `default_lifetime`.
pub fn storable(
    f: &ResponseFacts,
    statuses: &[u16],
    max_object: u64,
    default_lifetime: u64,
    now: i64,
) -> Result<u64, NotStored> {
    let cc = &f.cache_control;
    if !statuses.contains(&f.status) {
        return Err(NotStored::Status);
    }
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if f.request_no_store {
        return Err(NotStored::RequestNoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    // We cannot revalidate on every use yet, and storing without using is pointless.
    if cc.no_cache {
        return Err(NotStored::NoCache);
    }
    if f.set_cookie {
        return Err(NotStored::SetCookie);
    }
    if f.vary.iter().any(|v| v.trim() == "*") {
        return Err(NotStored::VaryStar);
    }
    // RFC 9111 3.5: a shared cache stores a response to an authorized request only when
    // the response explicitly allows it.
    if f.request_authorization && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    if f.content_length.is_some_and(|l| l > max_object) {
        return Err(NotStored::TooLarge);
    }
    let lifetime = if let Some(s) = cc.s_maxage {
        s
    } else if let Some(m) = cc.max_age {
        m
    } else if let Some(exp) = f.expires {
        (exp - f.date.unwrap_or(now)).max(0) as u64
    } else {
        default_lifetime
    };
    let lifetime = lifetime.saturating_sub(f.age);
    if lifetime == 0 {
        return Err(NotStored::ZeroLifetime);
    }
    Ok(lifetime)
}

/// Formats unix seconds as an HTTP date (IMF-fixdate), e.g. for `If-Modified-Since`.
pub fn format_http_date(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    httpdate::fmt_http_date(t)
}

/// Parses an HTTP date; None if malformed.
pub fn parse_http_date(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cc: &str) -> ResponseFacts<'static> {
        ResponseFacts {
            status: 200,
            cache_control: CacheControl::parse(&[cc.as_bytes()]),
            ..Default::default()
        }
    }

    const OK: &[u16] = &[200];

    #[test]
    fn directives_parse_case_insensitively_with_quotes_and_repeats() {
        let cc =
            CacheControl::parse(&[b"Public, MAX-AGE=60", b"no-cache=\"a, b\", s-maxage=\"30\""]);
        assert!(cc.public && cc.no_cache);
        assert_eq!((cc.max_age, cc.s_maxage), (Some(60), Some(30)));
        assert_eq!(CacheControl::parse(&[b"max-age=abc"]).max_age, Some(0));
        assert_eq!(
            CacheControl::parse(&[b"max-age=60, max-age=10"]).max_age,
            Some(10)
        );
    }

    #[test]
    fn lifetime_prefers_s_maxage_then_max_age_then_expires_then_default() {
        assert_eq!(
            storable(&facts("max-age=60, s-maxage=120"), OK, 1 << 20, 5, 0),
            Ok(120)
        );
        assert_eq!(storable(&facts("max-age=60"), OK, 1 << 20, 5, 0), Ok(60));
        let mut f = facts("");
        f.date = Some(1000);
        f.expires = Some(1300);
        assert_eq!(storable(&f, OK, 1 << 20, 5, 0), Ok(300));
        assert_eq!(storable(&facts(""), OK, 1 << 20, 5, 0), Ok(5));
        let mut aged = facts("max-age=60");
        aged.age = 20;
        assert_eq!(storable(&aged, OK, 1 << 20, 5, 0), Ok(40));
    }

    #[test]
    fn each_rule_refuses_storage() {
        let r = |f: &ResponseFacts| storable(f, OK, 100, 60, 0);
        assert_eq!(r(&facts("no-store")), Err(NotStored::NoStore));
        assert_eq!(r(&facts("private")), Err(NotStored::Private));
        assert_eq!(r(&facts("no-cache")), Err(NotStored::NoCache));
        assert_eq!(r(&facts("max-age=0")), Err(NotStored::ZeroLifetime));
        let mut f = facts("");
        f.status = 500;
        assert_eq!(r(&f), Err(NotStored::Status));
        let mut f = facts("");
        f.set_cookie = true;
        assert_eq!(r(&f), Err(NotStored::SetCookie));
        let mut f = facts("");
        f.vary = vec!["Accept", " * "];
        assert_eq!(r(&f), Err(NotStored::VaryStar));
        let mut f = facts("");
        f.content_length = Some(101);
        assert_eq!(r(&f), Err(NotStored::TooLarge));
        let mut f = facts("");
        f.request_no_store = true;
        assert_eq!(r(&f), Err(NotStored::RequestNoStore));
        let mut f = facts("");
        f.expires = Some(0);
        f.date = Some(100);
        assert_eq!(r(&f), Err(NotStored::ZeroLifetime));
    }

    #[test]
    fn authorized_requests_are_stored_only_when_the_response_allows_it() {
        let mut f = facts("max-age=60");
        f.request_authorization = true;
        assert_eq!(storable(&f, OK, 100, 60, 0), Err(NotStored::Authorization));
        for cc in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            let mut f = facts(cc);
            f.request_authorization = true;
            assert!(storable(&f, OK, 100, 60, 0).is_ok(), "{cc}");
        }
    }

    #[test]
    fn stale_extensions_are_read() {
        let cc =
            CacheControl::parse(&[b"max-age=60, stale-while-revalidate=30, stale-if-error=300"]);
        assert_eq!(
            (cc.stale_while_revalidate, cc.stale_if_error),
            (Some(30), Some(300))
        );
        assert_eq!(format_http_date(60), "Thu, 01 Jan 1970 00:01:00 GMT");
    }

    #[test]
    fn http_dates_parse_and_garbage_does_not() {
        assert_eq!(parse_http_date(b"Thu, 01 Jan 1970 00:01:00 GMT"), Some(60));
        assert_eq!(parse_http_date(b"yesterday"), None);
    }
}
