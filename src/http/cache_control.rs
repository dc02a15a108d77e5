//! Storability and freshness of a response (RFC 9111 sections 3, 4.2 and 5.2).

/// The parts of a `Cache-Control` header this cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    /// RFC 9111 5.2.2.3: store only if the status is understood, and then `no-store` is
    /// ignored.
    pub must_understand: bool,
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
                    "must-understand" => cc.must_understand = true,
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

/// The directives that decide this cache's policy for a response's headers (name, value):
/// the first valid targeted field (RFC 9213: `Pagespeed-Cache-Control`, `CDN-Cache-Control`)
/// when there is one, else `Cache-Control`. The flag says a targeted field decided: then
/// `Expires` does not count either.
pub fn response_directives<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
) -> (CacheControl, bool) {
    if let Some(cc) = super::targeted::targeted_directives(headers.clone()) {
        return (cc, true);
    }
    let lines: Vec<&[u8]> = headers
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"cache-control"))
        .map(|(_, v)| v)
        .collect();
    (CacheControl::parse(&lines), false)
}

/// `delta-seconds` saturate here (RFC 9111 1.2.2).
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// The `Age` of a response from its lines (RFC 9111 5.1): the first member of the first
/// line; None when that is not a non-negative integer (the field is then ignored).
pub fn parse_age(lines: &[&[u8]]) -> Option<u64> {
    let first = lines.first()?;
    let member = first.split(|&c| c == b',').next()?.trim_ascii();
    if member.is_empty() || !member.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digits = std::str::from_utf8(member).ok()?;
    Some(
        digits
            .parse::<u64>()
            .unwrap_or(u64::MAX)
            .min(MAX_DELTA_SECONDS),
    )
}

/// Statuses that may be reused under heuristic freshness (RFC 9110 15.1), 206 aside (partial
/// responses are not stored).
pub const HEURISTIC_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Statuses an explicit `pagespeed_cache_valid` gives its lifetime to when
/// `pagespeed_cache_statuses` is not set: the heuristically cacheable ones that are not errors
/// (an operator's blanket lifetime should not pin a transient error page).
pub const VALID_STATUSES: [u16; 6] = [200, 203, 204, 300, 301, 308];

/// A heuristic lifetime is this fraction of the time since `Last-Modified` (RFC 9111 4.2.2)...
const HEURISTIC_PERCENT: i64 = 10;
/// ...and never more than a day.
pub const HEURISTIC_MAX: u64 = 86_400;

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
            NotStored::HeadersTooLarge => "headers-too-large",
        }
    }
}

/// What the header filter knows about a response when deciding whether to store it.
#[derive(Debug, Clone, Default)]
pub struct ResponseFacts<'a> {
    pub status: u16,
    /// The directives that apply (`response_directives`).
    pub cache_control: CacheControl,
    /// They came from a targeted field: `Expires` is ignored.
    pub targeted: bool,
    /// The request carried `Cache-Control: no-store`.
    pub request_no_store: bool,
    pub request_authorization: bool,
    pub set_cookie: bool,
    pub vary: Vec<&'a str>,
    pub content_length: Option<u64>,
    /// Parsed `Date` and `Expires` (unix seconds); an unparseable Expires is `Some(0)`.
    pub date: Option<i64>,
    pub expires: Option<i64>,
    /// Parsed `Last-Modified` (unix seconds), for heuristic freshness.
    pub last_modified: Option<i64>,
    /// The origin's `Age` header (`parse_age`).
    pub age: u64,
}

/// The statuses a location stores.
#[derive(Debug, Clone, Copy)]
pub enum Statuses<'a> {
    /// Every final status the RFC allows (206 and 304 never); without explicit freshness
    /// only heuristically cacheable ones.
    Default,
    /// `pagespeed_cache_statuses`: these only.
    Listed(&'a [u16]),
}

impl Statuses<'_> {
    fn allows(&self, status: u16) -> bool {
        let storable = (200..600).contains(&status) && status != 206 && status != 304;
        storable
            && match self {
                Statuses::Default => true,
                Statuses::Listed(l) => l.contains(&status),
            }
    }
}

/// The final statuses RFC 9110 defines, whose caching rules this cache knows.
fn understood(status: u16) -> bool {
    matches!(status, 200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505)
}

/// The response's age when it arrives (RFC 9111 4.2.3 `corrected_initial_age`, with no
/// request delay): the larger of its `Age` and the time since its `Date`.
pub fn initial_age(f: &ResponseFacts, now: i64) -> u64 {
    let apparent = f.date.map_or(0, |d| (now - d).max(0) as u64);
    apparent.max(f.age)
}

/// The freshness lifetime of a response without explicit freshness (RFC 9111 4.2.2): the
/// operator's `pagespeed_cache_valid` where it applies, else 10% of the time since
/// `Last-Modified` (at most a day) for a heuristically cacheable status or `public`, else 0.
fn implicit_lifetime(
    f: &ResponseFacts,
    statuses: &Statuses,
    default_lifetime: Option<u64>,
    now: i64,
) -> u64 {
    let valid_applies = match statuses {
        Statuses::Listed(_) => true,
        Statuses::Default => VALID_STATUSES.contains(&f.status),
    };
    if let (Some(v), true) = (default_lifetime, valid_applies) {
        return v;
    }
    if !(HEURISTIC_STATUSES.contains(&f.status) || f.cache_control.public) {
        return 0;
    }
    match f.last_modified {
        Some(lm) => {
            let since = (f.date.unwrap_or(now) - lm).max(0);
            ((since * HEURISTIC_PERCENT / 100) as u64).min(HEURISTIC_MAX)
        }
        None => 0,
    }
}

/// Decides storability and the remaining freshness in seconds (RFC 9111 3 and 4.2):
/// `s-maxage`, else `max-age`, else `Expires - Date`, else the implicit lifetime, less the
/// response's initial age.
pub fn storable(
    f: &ResponseFacts,
    statuses: Statuses,
    max_object: u64,
    default_lifetime: Option<u64>,
    now: i64,
) -> Result<u64, NotStored> {
    let cc = &f.cache_control;
    if !statuses.allows(f.status) {
        return Err(NotStored::Status);
    }
    if cc.must_understand && !understood(f.status) {
        return Err(NotStored::Status);
    }
    if cc.no_store && !cc.must_understand {
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
    let expires = if f.targeted { None } else { f.expires };
    let lifetime = if let Some(s) = cc.s_maxage {
        s
    } else if let Some(m) = cc.max_age {
        m
    } else if let Some(exp) = expires {
        (exp - f.date.unwrap_or(now)).max(0) as u64
    } else {
        implicit_lifetime(f, &statuses, default_lifetime, now)
    };
    let lifetime = lifetime.saturating_sub(initial_age(f, now));
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

    const OK: Statuses = Statuses::Listed(&[200]);
    const ANY: Statuses = Statuses::Default;

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
            storable(&facts("max-age=60, s-maxage=120"), OK, 1 << 20, Some(5), 0),
            Ok(120)
        );
        assert_eq!(
            storable(&facts("max-age=60"), OK, 1 << 20, Some(5), 0),
            Ok(60)
        );
        let mut f = facts("");
        f.date = Some(1000);
        f.expires = Some(1300);
        assert_eq!(storable(&f, OK, 1 << 20, Some(5), 1000), Ok(300));
        assert_eq!(storable(&facts(""), OK, 1 << 20, Some(5), 0), Ok(5));
        let mut aged = facts("max-age=60");
        aged.age = 20;
        assert_eq!(storable(&aged, OK, 1 << 20, Some(5), 0), Ok(40));
    }

    #[test]
    fn without_explicit_freshness_nothing_is_reused_unless_heuristics_or_the_operator_allow() {
        assert_eq!(
            storable(&facts(""), ANY, 1 << 20, None, 0),
            Err(NotStored::ZeroLifetime),
            "no validator, no lifetime: freshness-none"
        );
        let mut lm = facts("");
        lm.date = Some(100_000);
        lm.last_modified = Some(50_000);
        assert_eq!(
            storable(&lm, ANY, 1 << 20, None, 100_000),
            Ok(5_000),
            "10% of Date - LM"
        );
        lm.last_modified = Some(-10_000_000);
        assert_eq!(
            storable(&lm, ANY, 1 << 20, None, 100_000),
            Ok(HEURISTIC_MAX),
            "capped"
        );
        lm.last_modified = Some(50_000);
        assert_eq!(
            storable(&lm, ANY, 1 << 20, Some(0), 100_000),
            Err(NotStored::ZeroLifetime)
        );
        assert_eq!(storable(&lm, ANY, 1 << 20, Some(30), 100_000), Ok(30));
    }

    #[test]
    fn heuristics_only_for_heuristically_cacheable_statuses_or_public() {
        let at = |status: u16, cc: &str| {
            let mut f = facts(cc);
            f.status = status;
            f.date = Some(100_000);
            f.last_modified = Some(50_000);
            storable(&f, ANY, 1 << 20, None, 100_000)
        };
        for s in HEURISTIC_STATUSES {
            assert_eq!(at(s, ""), Ok(5_000), "{s}");
        }
        for s in [201, 202, 403, 502, 503, 504, 599] {
            assert_eq!(at(s, ""), Err(NotStored::ZeroLifetime), "{s}");
        }
        assert_eq!(at(599, "public"), Ok(5_000));
        // An explicit pagespeed_cache_valid does not pin an error page.
        let mut f = facts("");
        f.status = 404;
        assert_eq!(
            storable(&f, ANY, 1 << 20, Some(60), 0),
            Err(NotStored::ZeroLifetime)
        );
        assert_eq!(
            storable(&f, Statuses::Listed(&[404]), 1 << 20, Some(60), 0),
            Ok(60)
        );
    }

    #[test]
    fn every_final_status_with_explicit_freshness_is_storable_by_default() {
        for s in [
            200, 203, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 503, 599,
        ] {
            let mut f = facts("max-age=60");
            f.status = s;
            assert_eq!(storable(&f, ANY, 1 << 20, None, 0), Ok(60), "{s}");
        }
        for s in [100, 103, 206, 304] {
            let mut f = facts("max-age=60");
            f.status = s;
            assert_eq!(
                storable(&f, ANY, 1 << 20, None, 0),
                Err(NotStored::Status),
                "{s}"
            );
            let listed = Statuses::Listed(&[100, 103, 206, 304]);
            assert_eq!(
                storable(&f, listed, 1 << 20, None, 0),
                Err(NotStored::Status),
                "{s}"
            );
        }
        let mut f = facts("max-age=60");
        f.status = 404;
        assert_eq!(
            storable(&f, OK, 1 << 20, None, 0),
            Err(NotStored::Status),
            "narrowed"
        );
    }

    #[test]
    fn must_understand_stores_only_understood_statuses_and_overrides_no_store() {
        let mut f = facts("max-age=60, no-store, must-understand");
        assert_eq!(storable(&f, ANY, 1 << 20, None, 0), Ok(60));
        f.status = 599;
        assert_eq!(storable(&f, ANY, 1 << 20, None, 0), Err(NotStored::Status));
        let mut plain = facts("max-age=60, must-understand");
        plain.status = 599;
        assert_eq!(
            storable(&plain, ANY, 1 << 20, None, 0),
            Err(NotStored::Status)
        );
    }

    #[test]
    fn the_initial_age_counts_the_time_since_date() {
        let mut f = facts("");
        f.date = Some(1000);
        f.expires = Some(1020);
        f.age = 15;
        assert_eq!(storable(&f, OK, 1 << 20, None, 1000), Ok(5));
        f.age = 0;
        assert_eq!(
            storable(&f, OK, 1 << 20, None, 1012),
            Ok(8),
            "Date 12 s ago"
        );
        let mut old = facts("");
        old.date = Some(1400);
        old.expires = Some(1300);
        assert_eq!(
            storable(&old, OK, 1 << 20, None, 1000),
            Err(NotStored::ZeroLifetime)
        );
    }

    #[test]
    fn age_takes_the_first_member_of_the_first_line_and_ignores_garbage() {
        assert_eq!(parse_age(&[b"7200"]), Some(7200));
        assert_eq!(parse_age(&[b" 60 "]), Some(60));
        assert_eq!(parse_age(&[b"7200, 0"]), Some(7200));
        assert_eq!(parse_age(&[b"0", b"7200"]), Some(0));
        assert_eq!(
            parse_age(&[b"99999999999999999999999"]),
            Some(MAX_DELTA_SECONDS)
        );
        for bad in [&b"abc"[..], b"-7200", b"7200.0", b"", b"7200;foo=bar"] {
            assert_eq!(parse_age(&[bad]), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_age(&[]), None);
    }

    #[test]
    fn a_targeted_field_replaces_cache_control_and_expires() {
        let h: &[(&[u8], &[u8])] = &[
            (b"Cache-Control", b"no-store"),
            (b"CDN-Cache-Control", b"max-age=100"),
        ];
        let (cc, targeted) = response_directives(h.iter().copied());
        assert!(targeted && !cc.no_store && cc.max_age == Some(100));
        let mut f = facts("");
        f.cache_control = cc;
        f.targeted = true;
        f.expires = Some(0);
        assert_eq!(
            storable(&f, ANY, 1 << 20, None, 0),
            Ok(100),
            "Expires ignored"
        );
        let plain: &[(&[u8], &[u8])] = &[(b"cache-control", b"max-age=5")];
        assert_eq!(
            response_directives(plain.iter().copied()),
            (CacheControl::parse(&[b"max-age=5"]), false)
        );
    }

    #[test]
    fn each_rule_refuses_storage() {
        let r = |f: &ResponseFacts| storable(f, OK, 100, Some(60), 0);
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
        f.date = Some(0);
        assert_eq!(r(&f), Err(NotStored::ZeroLifetime));
    }

    #[test]
    fn authorized_requests_are_stored_only_when_the_response_allows_it() {
        let mut f = facts("max-age=60");
        f.request_authorization = true;
        assert_eq!(
            storable(&f, OK, 100, Some(60), 0),
            Err(NotStored::Authorization)
        );
        for cc in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            let mut f = facts(cc);
            f.request_authorization = true;
            assert!(storable(&f, OK, 100, Some(60), 0).is_ok(), "{cc}");
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
