//! When a stale entry (expired or soft-purged) may be served anyway: while one revalidation
//! of it runs (`pagespeed_cache_use_stale updating`, RFC 5861 `stale-while-revalidate`), and
//! instead of an origin error (`pagespeed_cache_use_stale error timeout http_5xx`,
//! `stale-if-error`). A hard-purged entry is never found, so never served stale.

use crate::http::cache_control::{response_directives, CacheControl};
use crate::http::meta::MetaView;

/// `pagespeed_cache_use_stale`: what the operator allows beyond what the origin says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UseStale {
    pub updating: bool,
    /// The origin could not be reached, or the connection failed mid-response.
    pub error: bool,
    pub timeout: bool,
    pub http_500: bool,
    pub http_502: bool,
    pub http_503: bool,
    pub http_504: bool,
}

impl UseStale {
    /// Parses the directive's values; Err names the one not understood.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<UseStale, &'a [u8]> {
        let mut u = UseStale::default();
        for v in values {
            let flag = match v {
                b"off" => continue,
                b"updating" => &mut u.updating,
                b"error" => &mut u.error,
                b"timeout" => &mut u.timeout,
                b"http_500" => &mut u.http_500,
                b"http_502" => &mut u.http_502,
                b"http_503" => &mut u.http_503,
                b"http_504" => &mut u.http_504,
                _ => return Err(v),
            };
            *flag = true;
        }
        Ok(u)
    }
}

/// How a stale entry is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    Expired,
    SoftPurged,
}

/// How a refill failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer: the connection was refused, reset or broke.
    Error,
    /// No answer in time.
    Timeout,
    /// The origin answered with this status (or nginx did for it).
    Status(u16),
}

/// The stored response's directives (a targeted field's, when it has a valid one).
fn windows(meta: &MetaView) -> CacheControl {
    response_directives(meta.headers()).0
}

/// Seconds the entry has been stale (0 for a soft-purged entry still within its lifetime).
fn stale_for(meta: &MetaView, now: i64) -> u64 {
    (now - meta.expires_at).max(0) as u64
}

/// Whether `meta`'s entry may be served at once while one revalidation runs.
pub fn while_revalidating(use_stale: &UseStale, meta: &MetaView, now: i64) -> bool {
    if use_stale.updating {
        return true;
    }
    let cc = windows(meta);
    if cc.must_revalidate || cc.no_cache {
        return false;
    }
    cc.stale_while_revalidate
        .is_some_and(|w| stale_for(meta, now) < w)
}

/// Whether `meta`'s entry may be served instead of the failure of its refill.
pub fn on_error(use_stale: &UseStale, meta: &MetaView, now: i64, failure: Failure) -> bool {
    let allowed = match failure {
        Failure::Error => use_stale.error,
        Failure::Timeout => use_stale.timeout,
        Failure::Status(500) => use_stale.http_500,
        Failure::Status(502) => use_stale.http_502 || use_stale.error,
        Failure::Status(503) => use_stale.http_503,
        Failure::Status(504) => use_stale.http_504 || use_stale.timeout,
        Failure::Status(_) => false,
    };
    if allowed {
        return true;
    }
    let cc = windows(meta);
    if cc.must_revalidate {
        return false;
    }
    let server_error = match failure {
        Failure::Status(s) => (500..600).contains(&s),
        Failure::Error | Failure::Timeout => true,
    };
    server_error && cc.stale_if_error.is_some_and(|w| stale_for(meta, now) < w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::meta::StoredMeta;

    fn meta(cc: &str) -> Vec<u8> {
        StoredMeta {
            expires_at: 100,
            headers: vec![(b"Cache-Control".to_vec(), cc.as_bytes().to_vec())],
            ..Default::default()
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn the_directive_parses_and_names_what_it_does_not_know() {
        let u = UseStale::parse([&b"updating"[..], b"error", b"http_503"]).unwrap();
        assert!(u.updating && u.error && u.http_503 && !u.timeout);
        assert_eq!(UseStale::parse([&b"off"[..]]), Ok(UseStale::default()));
        assert_eq!(UseStale::parse([&b"sometimes"[..]]), Err(&b"sometimes"[..]));
    }

    #[test]
    fn stale_while_revalidate_holds_within_its_window_only() {
        let none = UseStale::default();
        let m = meta("max-age=60, stale-while-revalidate=30");
        let v = MetaView::parse(&m).unwrap();
        assert!(while_revalidating(&none, &v, 110));
        assert!(!while_revalidating(&none, &v, 131));
        let plain = meta("max-age=60");
        assert!(!while_revalidating(
            &none,
            &MetaView::parse(&plain).unwrap(),
            101
        ));
        let updating = UseStale {
            updating: true,
            ..none
        };
        assert!(while_revalidating(
            &updating,
            &MetaView::parse(&plain).unwrap(),
            10_000
        ));
        let must = meta("max-age=60, stale-while-revalidate=30, must-revalidate");
        assert!(!while_revalidating(
            &none,
            &MetaView::parse(&must).unwrap(),
            110
        ));
    }

    #[test]
    fn stale_if_error_by_directive_or_by_the_origin() {
        let none = UseStale::default();
        let m = meta("max-age=60, stale-if-error=300");
        let v = MetaView::parse(&m).unwrap();
        assert!(on_error(&none, &v, 200, Failure::Status(503)));
        assert!(on_error(&none, &v, 200, Failure::Error));
        assert!(
            !on_error(&none, &v, 200, Failure::Status(404)),
            "not an error of the server"
        );
        assert!(
            !on_error(&none, &v, 500, Failure::Status(503)),
            "past the window"
        );
        let plain = meta("max-age=60");
        let p = MetaView::parse(&plain).unwrap();
        assert!(!on_error(&none, &p, 200, Failure::Timeout));
        let u = UseStale {
            timeout: true,
            http_503: true,
            ..none
        };
        assert!(on_error(&u, &p, 200, Failure::Timeout));
        assert!(on_error(&u, &p, 200, Failure::Status(504)));
        assert!(on_error(&u, &p, 200, Failure::Status(503)));
        assert!(!on_error(&u, &p, 200, Failure::Status(500)));
    }
}
