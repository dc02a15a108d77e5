//! What a response stores: storability and lifetime (RFC 9111 3 and 4.2), the metadata replayed
//! on hits, the purge scopes the entry is covered by, and the descriptor that files it among
//! the key's alternates (its content encoding, the origin's own `Vary` values).

use crate::http::cache_control::{
    format_http_date, initial_age, parse_age, parse_http_date, response_directives, storable,
    CacheControl, NotStored, ResponseFacts, Statuses,
};
use crate::http::meta::{normalize_vary_value, StoredMeta};
use crate::store::{Buckets, ScopeSet, UrlId};
use crate::variant::{Descriptor, Encoding, SourceKind};

/// Most tags read from one response's `Surrogate-Key` / `Cache-Tag` headers.
const MAX_TAGS_READ: usize = 256;

/// A response as the location's content handler produced it, before it is sent.
pub struct ResponseHead<'a> {
    pub status: u16,
    /// The generic header lines (nginx's `headers_out.headers`), in order.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub content_type: &'a [u8],
    pub content_length: Option<u64>,
    /// Unix seconds of `Last-Modified`, when the response has one.
    pub last_modified: Option<i64>,
    /// The field names (lowercase) the origin's `Connection` header listed: hop-by-hop,
    /// never stored (RFC 9111 3.1, RFC 9110 7.6.1).
    pub connection_listed: Vec<Vec<u8>>,
}

impl ResponseHead<'_> {
    /// Whether a header (lowercase name) belongs to this hop only.
    pub fn hop_by_hop(&self, lower: &[u8]) -> bool {
        self.connection_listed.iter().any(|n| n == lower)
    }
}

/// What the fill needs of the request that caused it.
pub struct RequestHead<'a> {
    pub authorization: bool,
    /// The request's own `Cache-Control` (lines joined).
    pub cache_control: Option<&'a [u8]>,
    /// A request header's value by lowercase name (lines joined), for the origin's `Vary`.
    pub header: &'a dyn Fn(&str) -> Option<Vec<u8>>,
}

/// The location's storage rules.
pub struct FillPolicy<'a> {
    pub statuses: Statuses<'a>,
    /// Lifetime of a response without explicit freshness, when the operator set one
    /// (`pagespeed_cache_valid`); otherwise heuristic freshness decides.
    pub default_lifetime: Option<u64>,
    /// Largest body stored (the smaller of the location's and the store's limits).
    pub max_object: u64,
}

/// A storable response: what is committed once its body has been captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub descriptor: Descriptor,
    /// What the original is (from its Content-Type): decides which variants it gets.
    pub kind: SourceKind,
    /// Its metadata; the body's digest is added when the body is complete (`meta_for`).
    pub meta: StoredMeta,
    pub scopes: ScopeSet,
    /// Bytes to reserve for the body (its announced length, within the limit).
    pub capacity: usize,
    pub max_body: u64,
}

/// Decides whether `resp` is stored and, if so, prepares everything but its body.
pub fn prepare(
    resp: &ResponseHead,
    req: &RequestHead,
    policy: &FillPolicy,
    url: &UrlId,
    buckets: &Buckets,
    now: i64,
) -> Result<Prepared, NotStored> {
    let mut facts = ResponseFacts {
        status: resp.status,
        content_length: resp.content_length,
        request_authorization: req.authorization,
        last_modified: resp.last_modified,
        ..Default::default()
    };
    let mut vary_names: Vec<String> = Vec::new();
    let mut tags = Vec::new();
    let mut encoding = Encoding::Identity;
    let mut replay = Vec::new();
    let mut age_lines: Vec<&[u8]> = Vec::new();
    let mut has_date = false;
    for &(name, value) in &resp.headers {
        let lower = name.to_ascii_lowercase();
        match lower.as_slice() {
            b"set-cookie" => facts.set_cookie = true,
            b"vary" => {
                for v in value.split(|&c| c == b',') {
                    let v = String::from_utf8_lossy(v).trim().to_ascii_lowercase();
                    if v == "*" {
                        facts.vary.push("*");
                    } else if !v.is_empty() && v != "accept-encoding" && !vary_names.contains(&v) {
                        // Accept-Encoding is honoured by the descriptor's encoding instead.
                        vary_names.push(v);
                    }
                }
            }
            b"expires" => facts.expires = Some(parse_http_date(value).unwrap_or(0)),
            b"date" if !has_date => {
                has_date = true;
                facts.date = parse_http_date(value);
            }
            b"age" => age_lines.push(value),
            b"surrogate-key" | b"cache-tag" => split_tags(value, &mut tags),
            b"content-encoding" => encoding = Encoding::from_header(value),
            _ => {}
        }
        if replayed(&lower)
            && !resp.hop_by_hop(&lower)
            && !(lower == b"date" && replay_has_date(&replay))
        {
            replay.push((name.to_vec(), value.to_vec()));
        }
    }
    if !has_date {
        // A hit carries the Date of the response it replays (RFC 9110 6.6.1): the time of
        // the fill when the origin sent none.
        replay.push((b"Date".to_vec(), format_http_date(now).into_bytes()));
    }
    let (cc, targeted) = response_directives(resp.headers.iter().copied());
    facts.cache_control = cc;
    facts.targeted = targeted;
    facts.age = parse_age(&age_lines).unwrap_or(0);
    facts.request_no_store = CacheControl::parse(&[req.cache_control.unwrap_or_default()]).no_store;
    let lifetime = storable(
        &facts,
        policy.statuses,
        policy.max_object,
        policy.default_lifetime,
        now,
    )?;

    vary_names.sort();
    let vary: Vec<(String, Vec<u8>)> = vary_names
        .into_iter()
        .map(|n| {
            let v = (req.header)(&n)
                .map(|v| normalize_vary_value(&n, &v))
                .unwrap_or_default();
            (n, v)
        })
        .collect();
    let meta = StoredMeta {
        status: resp.status,
        stored_at: now,
        // A lifetime over i64::MAX (max-age=18446744073709551615) must not wrap to the past.
        expires_at: now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)),
        last_modified: resp.last_modified.unwrap_or(-1),
        age: initial_age(&facts, now).min(u32::MAX as u64) as u32,
        content_type: resp.content_type.to_vec(),
        source_type: Vec::new(),
        digest: [0; 16],
        headers: replay,
        vary,
    };
    let descriptor = Descriptor::original(encoding, vary_hash(&meta.vary));
    // Refused now, not at commit, if a header cannot be encoded.
    meta.encode().ok_or(NotStored::HeadersTooLarge)?;
    let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    Ok(Prepared {
        descriptor,
        kind: SourceKind::from_content_type(resp.content_type),
        meta,
        scopes: buckets.scopes_for(url, &tag_refs),
        capacity: resp.content_length.unwrap_or(0).min(policy.max_object) as usize,
        max_body: policy.max_object,
    })
}

impl Prepared {
    /// The encoded metadata for the complete body (with its digest).
    pub fn meta_for(&self, body: &[u8]) -> Vec<u8> {
        let mut m = self.meta.clone();
        m.digest = super::revalidate::digest(body);
        // prepare() checked that it encodes; the digest is fixed-size.
        m.encode().unwrap_or_default()
    }
}

/// The 16-bit hash that files an origin-`Vary` alternate (None without such values).
fn vary_hash(vary: &[(String, Vec<u8>)]) -> Option<u16> {
    if vary.is_empty() {
        return None;
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (n, v) in vary {
        h.update(&(n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    Some(h.digest() as u16)
}

fn replay_has_date(replay: &[(Vec<u8>, Vec<u8>)]) -> bool {
    replay.iter().any(|(n, _)| n.eq_ignore_ascii_case(b"date"))
}

/// Splits `Surrogate-Key` (space separated) and `Cache-Tag` (comma separated) values.
pub fn split_tags(v: &[u8], out: &mut Vec<String>) {
    for t in v.split(|&c| c == b',' || c == b' ' || c == b'\t') {
        if !t.is_empty() && out.len() < MAX_TAGS_READ {
            out.push(String::from_utf8_lossy(t).into_owned());
        }
    }
}

/// Response headers (lowercase name) replayed from the cache: not the hop-by-hop ones, not
/// those nginx generates itself, not those carried in typed fields of the stored metadata.
/// `Date` is replayed: a hit carries the stored response's (RFC 9111 4, 4.3.4).
pub fn replayed(lower: &[u8]) -> bool {
    !matches!(
        lower,
        b"connection"
            | b"keep-alive"
            | b"proxy-authenticate"
            | b"proxy-authorization"
            | b"te"
            | b"trailer"
            | b"transfer-encoding"
            | b"upgrade"
            | b"server"
            | b"content-length"
            | b"content-type"
            | b"last-modified"
            | b"age"
            | b"x-cache"
            | b"set-cookie"
            | b"accept-ranges"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::meta::MetaView;

    const B: Buckets = Buckets {
        url_slots: 1024,
        prefix_slots: 256,
        tag_slots: 256,
    };

    fn url() -> UrlId<'static> {
        UrlId {
            scheme: "https",
            host: "example.com",
            path: "/a/b.css",
        }
    }

    fn prep(
        headers: &[(&str, &str)],
        req_header: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<Prepared, NotStored> {
        let resp = ResponseHead {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                .collect(),
            content_type: b"text/css",
            content_length: Some(10),
            last_modified: Some(1000),
            connection_listed: headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .flat_map(|(_, v)| v.split(','))
                .map(|n| n.trim().to_ascii_lowercase().into_bytes())
                .collect(),
        };
        let req = RequestHead {
            authorization: false,
            cache_control: None,
            header: req_header,
        };
        let policy = FillPolicy {
            statuses: Statuses::Listed(&[200]),
            default_lifetime: Some(600),
            max_object: 1 << 20,
        };
        prepare(&resp, &req, &policy, &url(), &B, 5000)
    }

    #[test]
    fn a_storable_response_keeps_its_end_to_end_headers_and_lifetime() {
        let none = |_: &str| None;
        let p = prep(
            &[
                ("Cache-Control", "max-age=60"),
                ("ETag", "\"x\""),
                ("Connection", "close"),
                ("Cache-Tag", "a,b"),
            ],
            &none,
        )
        .unwrap();
        let meta = p.meta_for(b"0123456789");
        let m = MetaView::parse(&meta).unwrap();
        assert_eq!(
            (m.stored_at, m.expires_at, m.last_modified),
            (5000, 5060, 1000)
        );
        let names: Vec<&[u8]> = m.headers().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [&b"Cache-Control"[..], b"ETag", b"Cache-Tag", b"Date"]
        );
        let date = m.headers().find(|(n, _)| *n == b"Date").map(|(_, v)| v);
        assert_eq!(
            date,
            Some(&b"Thu, 01 Jan 1970 01:23:20 GMT"[..]),
            "the fill's time"
        );
        assert_eq!(p.kind, SourceKind::Text);
        assert_eq!(p.capacity, 10);
        assert_eq!(p.scopes.tags.len(), 2);
        assert_eq!(p.descriptor, Descriptor::original(Encoding::Identity, None));
        assert_eq!(m.digest, crate::cache::revalidate::digest(b"0123456789"));
    }

    #[test]
    fn the_origin_vary_files_the_alternate_by_the_request_values() {
        let de = |n: &str| (n == "accept-language").then(|| b"de".to_vec());
        let fr = |n: &str| (n == "accept-language").then(|| b"fr".to_vec());
        let a = prep(&[("Vary", "Accept-Language, Accept-Encoding")], &de).unwrap();
        let b = prep(&[("Vary", "accept-language")], &fr).unwrap();
        assert!(a.descriptor.origin_varies() && b.descriptor.origin_varies());
        assert_ne!(a.descriptor, b.descriptor);
        let plain = prep(&[("Vary", "Accept-Encoding")], &de).unwrap();
        assert!(
            !plain.descriptor.origin_varies(),
            "Accept-Encoding is the descriptor's encoding"
        );
        assert_eq!(prep(&[("Vary", "*")], &de), Err(NotStored::VaryStar));
    }

    #[test]
    fn encodings_and_refusals() {
        let none = |_: &str| None;
        let gz = prep(&[("Content-Encoding", "gzip")], &none).unwrap();
        assert_eq!(gz.descriptor.encoding(), Encoding::Gzip);
        assert_eq!(
            prep(&[("Cache-Control", "no-store")], &none),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            prep(&[("Set-Cookie", "a=b")], &none),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            prep(&[("Age", "\u{fffd}")], &none).map(|p| p.kind),
            Ok(SourceKind::Text)
        );
    }

    #[test]
    fn a_lifetime_beyond_i64_stays_in_the_future() {
        // From fuzzing (fuzz/src/bin/headers.rs asserts it): `lifetime as i64` wrapped a huge
        // max-age to a negative number, so the entry was stored already expired.
        let none = |_: &str| None;
        for cc in [
            "max-age=18446744073709551615",
            "s-maxage=9223372036854775808",
        ] {
            let p = prep(&[("Cache-Control", cc)], &none).unwrap();
            assert_eq!(p.meta.expires_at, i64::MAX, "{cc}");
        }
    }

    #[test]
    fn connection_listed_fields_are_never_stored() {
        let none = |_: &str| None;
        let p = prep(
            &[
                ("Cache-Control", "max-age=60"),
                ("Connection", "a, B"),
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
            ],
            &none,
        )
        .unwrap();
        let names: Vec<Vec<u8>> = p.meta.headers.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            names,
            [b"Cache-Control".to_vec(), b"c".to_vec(), b"Date".to_vec()]
        );
    }

    #[test]
    fn the_origin_date_is_kept_and_counts_toward_the_age() {
        let none = |_: &str| None;
        let p = prep(
            &[
                ("Cache-Control", "max-age=60"),
                ("Date", "Thu, 01 Jan 1970 01:23:00 GMT"),
                ("Date", "Thu, 01 Jan 1970 01:00:00 GMT"),
            ],
            &none,
        )
        .unwrap();
        assert_eq!(p.meta.age, 20, "5000 - 4980");
        assert_eq!(p.meta.expires_at, 5040);
        let dates: Vec<&[u8]> = p
            .meta
            .headers
            .iter()
            .filter(|(n, _)| n == b"Date")
            .map(|(_, v)| &v[..])
            .collect();
        assert_eq!(
            dates,
            [&b"Thu, 01 Jan 1970 01:23:00 GMT"[..]],
            "the first Date only"
        );
    }

    #[test]
    fn age_is_read_as_the_rfc_says() {
        let none = |_: &str| None;
        let age = |v: &'static str| {
            prep(&[("Cache-Control", "max-age=100"), ("Age", v)], &none).map(|p| p.meta.age)
        };
        assert_eq!(age("30"), Ok(30));
        assert_eq!(age("30, 90"), Ok(30));
        assert_eq!(age("abc"), Ok(0), "ignored");
        assert_eq!(age("200"), Err(NotStored::ZeroLifetime));
    }

    #[test]
    fn tags_split_on_commas_and_spaces() {
        let mut t = Vec::new();
        split_tags(b"a b,c\td", &mut t);
        assert_eq!(t, ["a", "b", "c", "d"]);
    }
}
