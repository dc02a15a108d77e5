//! Revalidation of a stored original (RFC 9111 4.3): the conditional request it makes, what
//! the origin's answer means, and the metadata an unchanged answer gives the original and
//! every alternate built from it (3.2, 4.3.4). Unchanged keeps every variant; changed
//! replaces them.

use super::fill::{replayed, FillPolicy, RequestHead, ResponseHead};
use crate::http::cache_control::{
    format_http_date, initial_age, parse_age, parse_http_date, response_directives, storable,
    CacheControl, ResponseFacts,
};
use crate::http::meta::{MetaView, StoredMeta};

/// The first 16 bytes of the blake3 digest of a body (what "the same bytes" compares).
pub fn digest(body: &[u8]) -> [u8; 16] {
    blake3::hash(body).as_bytes()[..16]
        .try_into()
        .expect("16 bytes")
}

/// What a stored original can be revalidated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<Vec<u8>>,
    pub last_modified: Option<i64>,
    /// Zero when unknown (then only validators can show an answer unchanged).
    pub digest: [u8; 16],
}

impl Validators {
    pub fn of(meta: &MetaView) -> Validators {
        Validators {
            etag: meta.etag().map(<[u8]>::to_vec),
            last_modified: (meta.last_modified >= 0).then_some(meta.last_modified),
            digest: meta.digest,
        }
    }

    /// The request headers of the conditional fill: `If-None-Match` with the stored ETag and
    /// `If-Modified-Since` with the stored Last-Modified (an origin honours the first when
    /// both are sent, RFC 9110 13.2.2).
    pub fn conditional_headers(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut h = Vec::new();
        if let Some(e) = &self.etag {
            h.push(("If-None-Match", e.clone()));
        }
        if let Some(t) = self.last_modified {
            h.push(("If-Modified-Since", format_http_date(t).into_bytes()));
        }
        h
    }
}

/// What the origin's answer says of the stored original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 304, or a 200 with the stored strong ETag or the same bytes.
    Unchanged,
    /// A 200 with other bytes.
    Changed,
    /// A 200 without a matching strong validator: the bytes decide, once they are all read.
    ByDigest,
    /// Any other status: not an answer about the stored bytes (an error, a redirect).
    Other,
    /// A 304 whose strong ETag is not the stored one: it is about another representation
    /// and must not update this one (RFC 9111 4.3.4); the entry is refilled unconditionally.
    Mismatch,
}

fn strong(etag: &[u8]) -> bool {
    !etag.trim_ascii_start().starts_with(b"W/")
}

/// The verdict from the answer's status and headers.
pub fn verdict(v: &Validators, status: u16, etag: Option<&[u8]>) -> Verdict {
    match status {
        304 => match etag {
            Some(b)
                if strong(b)
                    && v.etag.as_deref().map(<[u8]>::trim_ascii) != Some(b.trim_ascii()) =>
            {
                Verdict::Mismatch
            }
            _ => Verdict::Unchanged,
        },
        200 => match (&v.etag, etag) {
            (Some(a), Some(b)) if strong(a) && a.trim_ascii() == b.trim_ascii() => {
                Verdict::Unchanged
            }
            _ => Verdict::ByDigest,
        },
        _ => Verdict::Other,
    }
}

/// The verdict on a 200 from its whole body.
pub fn verdict_by_digest(v: &Validators, body: &[u8]) -> Verdict {
    if v.digest != [0; 16] && digest(body) == v.digest {
        Verdict::Unchanged
    } else {
        Verdict::Changed
    }
}

/// Header names an answer never changes in a stored alternate: the representation's own
/// (each variant has its own type, coding and ETag; RFC 9111 3.2 keeps Content-Length; a
/// Content-MD5 is a digest of the stored bytes) and what selected it.
fn protected(lower: &[u8]) -> bool {
    matches!(
        lower,
        b"etag"
            | b"content-type"
            | b"content-encoding"
            | b"content-length"
            | b"content-md5"
            | b"content-range"
            | b"vary"
    )
}

/// What an unchanged answer refreshes in every alternate it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// End-to-end headers of the answer (not the representation's own), replacing stored
    /// ones of the same name.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    stored_at: i64,
    expires_at: i64,
    age: u32,
    last_modified: Option<i64>,
}

impl Update {
    /// From the answer (a 304, or a 200 found unchanged) to the revalidation of `original`:
    /// the stored headers updated with the answer's, and the freshness those give now. A
    /// merged response that may no longer be stored expires at once (the next request
    /// revalidates again).
    pub fn new(
        answer: &ResponseHead,
        original: &MetaView,
        req: &RequestHead,
        policy: &FillPolicy,
        now: i64,
    ) -> Update {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut age_lines: Vec<&[u8]> = Vec::new();
        let last_modified = answer
            .last_modified
            .or((original.last_modified >= 0).then_some(original.last_modified));
        let mut facts = ResponseFacts {
            status: original.status,
            request_authorization: req.authorization,
            last_modified,
            ..Default::default()
        };
        for &(name, value) in &answer.headers {
            let lower = name.to_ascii_lowercase();
            match lower.as_slice() {
                b"age" => age_lines.push(value),
                b"date" if facts.date.is_none() => facts.date = parse_http_date(value),
                b"date" => continue,
                b"set-cookie" => facts.set_cookie = true,
                _ => {}
            }
            if replayed(&lower) && !protected(&lower) && !answer.hop_by_hop(&lower) {
                headers.push((name.to_vec(), value.to_vec()));
            }
        }
        // The stored response's headers, those the answer carries replaced: what decides
        // freshness from now on.
        let names: Vec<Vec<u8>> = headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        let merged: Vec<(&[u8], &[u8])> = original
            .headers()
            .filter(|(n, _)| !names.contains(&n.to_ascii_lowercase()))
            .chain(headers.iter().map(|(n, v)| (&n[..], &v[..])))
            .collect();
        for &(n, v) in &merged {
            if n.eq_ignore_ascii_case(b"expires") {
                facts.expires = Some(parse_http_date(v).unwrap_or(0));
            }
        }
        let (cc, targeted) = response_directives(merged.iter().copied());
        facts.cache_control = cc;
        facts.targeted = targeted;
        facts.age = parse_age(&age_lines).unwrap_or(0);
        facts.request_no_store =
            CacheControl::parse(&[req.cache_control.unwrap_or_default()]).no_store;
        let lifetime = storable(
            &facts,
            policy.statuses,
            u64::MAX,
            policy.default_lifetime,
            now,
        )
        .unwrap_or(0);
        Update {
            headers,
            stored_at: now,
            expires_at: now.saturating_add(lifetime as i64),
            age: initial_age(&facts, now).min(u32::MAX as u64) as u32,
            last_modified: answer.last_modified,
        }
    }

    /// From a 200 found unchanged: its own stored metadata (it carries every header).
    pub fn from_meta(meta: &[u8]) -> Update {
        let m = StoredMeta::decode(meta).unwrap_or_default();
        Update {
            headers: m
                .headers
                .into_iter()
                .filter(|(n, _)| !protected(&n.to_ascii_lowercase()))
                .collect(),
            stored_at: m.stored_at,
            expires_at: m.expires_at,
            age: m.age,
            last_modified: (m.last_modified >= 0).then_some(m.last_modified),
        }
    }

    /// An alternate's metadata with the update applied; None if it does not decode.
    pub fn apply(&self, meta: &[u8]) -> Option<Vec<u8>> {
        let mut m = StoredMeta::decode(meta)?;
        let names: Vec<Vec<u8>> = self
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        m.headers
            .retain(|(n, _)| !names.contains(&n.to_ascii_lowercase()));
        m.headers.extend(self.headers.iter().cloned());
        m.stored_at = self.stored_at;
        m.expires_at = self.expires_at;
        m.age = self.age;
        if let Some(t) = self.last_modified {
            m.last_modified = t;
        }
        m.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(headers: &[(&str, &str)]) -> Vec<u8> {
        StoredMeta {
            status: 200,
            stored_at: 100,
            expires_at: 160,
            last_modified: 50,
            content_type: b"image/jpeg".to_vec(),
            digest: digest(b"bytes"),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            ..Default::default()
        }
        .encode()
        .unwrap()
    }

    fn answer<'a>(status: u16, headers: &'a [(&'a str, &'a str)]) -> ResponseHead<'a> {
        ResponseHead {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                .collect(),
            content_type: b"",
            content_length: None,
            last_modified: None,
            connection_listed: Vec::new(),
        }
    }

    const NONE: &dyn Fn(&str) -> Option<Vec<u8>> = &|_| None;

    fn req() -> RequestHead<'static> {
        RequestHead {
            authorization: false,
            cache_control: None,
            header: NONE,
        }
    }

    const POLICY: FillPolicy = FillPolicy {
        statuses: crate::http::cache_control::Statuses::Default,
        default_lifetime: Some(0),
        max_object: 1 << 20,
    };

    #[test]
    fn the_conditional_request_carries_the_stored_validators() {
        let m = stored(&[("ETag", "\"v1\"")]);
        let v = Validators::of(&MetaView::parse(&m).unwrap());
        assert_eq!(
            v.conditional_headers(),
            vec![
                ("If-None-Match", b"\"v1\"".to_vec()),
                (
                    "If-Modified-Since",
                    b"Thu, 01 Jan 1970 00:00:50 GMT".to_vec()
                )
            ]
        );
        let bare = Validators {
            etag: None,
            last_modified: None,
            digest: [0; 16],
        };
        assert!(bare.conditional_headers().is_empty());
    }

    #[test]
    fn answers_are_judged_by_status_strong_etag_then_bytes() {
        let v = Validators::of(&MetaView::parse(&stored(&[("ETag", "\"v1\"")])).unwrap());
        assert_eq!(verdict(&v, 304, None), Verdict::Unchanged);
        assert_eq!(verdict(&v, 304, Some(b"\"v1\"")), Verdict::Unchanged);
        assert_eq!(
            verdict(&v, 304, Some(b"\"v2\"")),
            Verdict::Mismatch,
            "a 304 about another representation updates nothing"
        );
        assert_eq!(verdict(&v, 304, Some(b"W/\"v2\"")), Verdict::Unchanged);
        assert_eq!(verdict(&v, 200, Some(b"\"v1\"")), Verdict::Unchanged);
        assert_eq!(verdict(&v, 200, Some(b"\"v2\"")), Verdict::ByDigest);
        assert_eq!(verdict(&v, 200, None), Verdict::ByDigest);
        assert_eq!(verdict(&v, 503, None), Verdict::Other);
        assert_eq!(verdict_by_digest(&v, b"bytes"), Verdict::Unchanged);
        assert_eq!(verdict_by_digest(&v, b"other"), Verdict::Changed);
        let weak = Validators::of(&MetaView::parse(&stored(&[("ETag", "W/\"v1\"")])).unwrap());
        assert_eq!(
            verdict(&weak, 200, Some(b"W/\"v1\"")),
            Verdict::ByDigest,
            "weak: bytes decide"
        );
        let unknown = Validators {
            digest: [0; 16],
            ..v
        };
        assert_eq!(verdict_by_digest(&unknown, b"bytes"), Verdict::Changed);
    }

    #[test]
    fn an_update_refreshes_freshness_and_end_to_end_headers_but_not_the_representation() {
        let orig = stored(&[
            ("ETag", "\"v1\""),
            ("Cache-Control", "max-age=60"),
            ("X-Keep", "1"),
        ]);
        let view = MetaView::parse(&orig).unwrap();
        let a = answer(
            304,
            &[
                ("ETag", "\"v1\""),
                ("Cache-Control", "max-age=120"),
                ("Content-Type", "text/plain"),
                ("Content-MD5", "other"),
                ("Connection", "close"),
            ],
        );
        let u = Update::new(&a, &view, &req(), &POLICY, 1000);
        let variant = StoredMeta {
            content_type: b"image/avif".to_vec(),
            headers: vec![
                (b"ETag".to_vec(), b"\"v1-avif\"".to_vec()),
                (b"Cache-Control".to_vec(), b"max-age=60".to_vec()),
                (b"X-Keep".to_vec(), b"1".to_vec()),
            ],
            ..StoredMeta::decode(&orig).unwrap()
        }
        .encode()
        .unwrap();
        let m = StoredMeta::decode(&u.apply(&variant).unwrap()).unwrap();
        assert_eq!((m.stored_at, m.expires_at), (1000, 1120));
        assert_eq!(m.content_type, b"image/avif", "the variant keeps its type");
        let h: Vec<(&[u8], &[u8])> = m.headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        assert_eq!(
            h,
            vec![
                (&b"ETag"[..], &b"\"v1-avif\""[..]),
                (b"X-Keep", b"1"),
                (b"Cache-Control", b"max-age=120")
            ]
        );
        assert_eq!(m.digest, digest(b"bytes"));
    }

    #[test]
    fn an_answer_that_forbids_storage_expires_the_entry_at_once() {
        let orig = stored(&[("Cache-Control", "max-age=60")]);
        let a = answer(304, &[("Cache-Control", "no-store")]);
        let u = Update::new(&a, &MetaView::parse(&orig).unwrap(), &req(), &POLICY, 1000);
        let m = StoredMeta::decode(&u.apply(&orig).unwrap()).unwrap();
        assert_eq!(m.expires_at, 1000);
    }
}
