//! The response metadata stored with each alternate, and its compact binary encoding.
//!
//! Layout (little endian): `version u8 | n_vary u8 | (name, value)*n_vary | status u16 |
//! stored_at i64 | expires_at i64 | last_modified i64 | age u32 | content_type | source_type |
//! digest [u8; 16] | n_headers u16 | (name, value)*n_headers`, strings as `u16 length | bytes`. The Vary section
//! comes first so alternate selection reads it without decoding the rest.

const VERSION: u8 = 3;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredMeta {
    /// Request header values (lowercase name, value) the origin's `Vary` selected on.
    pub vary: Vec<(String, Vec<u8>)>,
    pub status: u16,
    /// Unix seconds when stored, and when it stops being fresh.
    pub stored_at: i64,
    pub expires_at: i64,
    /// Unix seconds of Last-Modified, or -1.
    pub last_modified: i64,
    /// The origin's Age at storage time, added to the Age we send.
    pub age: u32,
    pub content_type: Vec<u8>,
    /// On a built variant, the Content-Type of the original it was built from (empty on an
    /// original): what a response varies on and what is built for a client follow the
    /// original's kind, whatever type the served alternate has.
    pub source_type: Vec<u8>,
    /// The first 16 bytes of the blake3 digest of the original's body (zero when unknown): a
    /// revalidation whose 200 carries the same bytes counts as unchanged. Variants keep their
    /// original's.
    pub digest: [u8; 16],
    /// End-to-end response headers replayed on a hit, in origin order (ETag,
    /// Content-Encoding, Cache-Control, Location, Vary, Link, ...).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) -> Option<()> {
    let len = u16::try_from(s.len()).ok()?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s);
    Some(())
}

#[derive(Clone)]
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

impl StoredMeta {
    /// None if a field is too long to encode (a header over 64 KiB): such a response is not
    /// stored.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(128);
        out.push(VERSION);
        out.push(u8::try_from(self.vary.len()).ok()?);
        for (n, v) in &self.vary {
            put_str(&mut out, n.as_bytes())?;
            put_str(&mut out, v)?;
        }
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.stored_at.to_le_bytes());
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        out.extend_from_slice(&self.last_modified.to_le_bytes());
        out.extend_from_slice(&self.age.to_le_bytes());
        put_str(&mut out, &self.content_type)?;
        put_str(&mut out, &self.source_type)?;
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&u16::try_from(self.headers.len()).ok()?.to_le_bytes());
        for (n, v) in &self.headers {
            put_str(&mut out, n)?;
            put_str(&mut out, v)?;
        }
        Some(out)
    }

    /// None for anything malformed: the caller treats it as a miss.
    pub fn decode(b: &[u8]) -> Option<StoredMeta> {
        let v = MetaView::parse(b)?;
        let mut r = Reader { b };
        r.u8()?;
        let mut vary = Vec::new();
        for _ in 0..r.u8()? {
            let n = String::from_utf8(r.str()?.to_vec()).ok()?;
            vary.push((n, r.str()?.to_vec()));
        }
        Some(StoredMeta {
            vary,
            status: v.status,
            stored_at: v.stored_at,
            expires_at: v.expires_at,
            last_modified: v.last_modified,
            age: v.age,
            content_type: v.content_type.to_vec(),
            source_type: v.own_source_type.to_vec(),
            digest: v.digest,
            headers: v.headers().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
        })
    }

    /// Whether the stored Vary values match a request; `header` returns the request's value
    /// for a lowercase header name. Reads only the Vary section of encoded meta, so it is
    /// cheap enough to run under the shard lock for every alternate.
    pub fn vary_matches(encoded: &[u8], header: &dyn Fn(&str) -> Option<Vec<u8>>) -> bool {
        let mut r = Reader { b: encoded };
        if r.u8() != Some(VERSION) {
            return false;
        }
        let Some(n) = r.u8() else { return false };
        for _ in 0..n {
            let (Some(name), Some(value)) = (r.str(), r.str()) else {
                return false;
            };
            let Ok(name) = std::str::from_utf8(name) else {
                return false;
            };
            let want = header(name)
                .map(|v| normalize_vary_value(name, &v))
                .unwrap_or_default();
            if want != value {
                return false;
            }
        }
        true
    }

    /// Seconds the entry has been in caches: the origin's Age plus our residence time.
    pub fn age_at(&self, now: i64) -> i64 {
        // Saturating: the times come from a file another process (or a crash) wrote.
        now.saturating_sub(self.stored_at)
            .max(0)
            .saturating_add(self.age as i64)
    }
}

/// Encoded metadata read in place, without allocating: what a hit needs (the bytes live in
/// the request's pool memory for as long as the response).
#[derive(Debug, Clone, Copy)]
pub struct MetaView<'a> {
    pub status: u16,
    pub stored_at: i64,
    pub expires_at: i64,
    pub last_modified: i64,
    pub age: u32,
    pub content_type: &'a [u8],
    own_source_type: &'a [u8],
    pub digest: [u8; 16],
    n_headers: u16,
    headers: &'a [u8],
}

impl<'a> MetaView<'a> {
    /// Checks the whole encoding; None for anything malformed.
    pub fn parse(b: &'a [u8]) -> Option<MetaView<'a>> {
        let mut r = Reader { b };
        if r.u8()? != VERSION {
            return None;
        }
        for _ in 0..r.u8()? {
            r.str()?;
            r.str()?;
        }
        let status = r.u16()?;
        let stored_at = r.i64()?;
        let expires_at = r.i64()?;
        let last_modified = r.i64()?;
        let age = r.u32()?;
        let content_type = r.str()?;
        let own_source_type = r.str()?;
        let digest: [u8; 16] = r.take(16)?.try_into().ok()?;
        let n_headers = r.u16()?;
        let headers = r.b;
        for _ in 0..n_headers {
            r.str()?;
            r.str()?;
        }
        r.b.is_empty().then_some(MetaView {
            status,
            stored_at,
            expires_at,
            last_modified,
            age,
            content_type,
            own_source_type,
            digest,
            n_headers,
            headers,
        })
    }

    /// The Content-Type of the original this alternate is (or was built from).
    pub fn source_type(&self) -> &'a [u8] {
        if self.own_source_type.is_empty() {
            self.content_type
        } else {
            self.own_source_type
        }
    }

    /// The stored `ETag`, if any (a validator for revalidation).
    pub fn etag(&self) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"etag"))
            .map(|(_, v)| v)
    }

    /// The stored `Date` (unix seconds), if any.
    pub fn date(&self) -> Option<i64> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"date"))
            .and_then(|(_, v)| super::cache_control::parse_http_date(v))
    }

    /// The replayed headers, in origin order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone {
        let mut r = Reader { b: self.headers };
        (0..self.n_headers).map_while(move |_| Some((r.str()?, r.str()?)))
    }

    /// Seconds the entry has been in caches: the origin's Age plus our residence time.
    pub fn age_at(&self, now: i64) -> i64 {
        // Saturating: the times come from a file another process (or a crash) wrote.
        now.saturating_sub(self.stored_at)
            .max(0)
            .saturating_add(self.age as i64)
    }
}

/// A request header's value as Vary compares it (RFC 9111 4.1 lets a cache normalise values
/// "in a way that is known to have identical semantics"): list members trimmed of the
/// optional whitespace around commas (`1,2` == ` 1, 2 `), empty members dropped, runs of
/// spaces inside a member folded. For `Accept-Language` (`name` lowercase) the language
/// ranges are also lowercased (they are case-insensitive) and, when every member has the
/// same weight, sorted (their order then carries no preference).
pub fn normalize_vary_value(name: &str, v: &[u8]) -> Vec<u8> {
    let mut members: Vec<Vec<u8>> = v
        .split(|&c| c == b',')
        .map(fold_spaces)
        .filter(|m| !m.is_empty())
        .collect();
    if name == "accept-language" {
        for m in members.iter_mut() {
            m.make_ascii_lowercase();
            m.retain(|&c| c != b' ');
        }
        let weight = |m: &[u8]| {
            m.iter()
                .position(|&c| c == b';')
                .map(|i| m[i..].to_vec())
                .unwrap_or_default()
        };
        let first = members.first().map(|m| weight(m)).unwrap_or_default();
        if members.iter().all(|m| weight(m) == first) {
            members.sort();
        }
    }
    members.join(&b", "[..])
}

/// Trims a value and folds its inner runs of spaces and tabs into one space.
fn fold_spaces(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut space = false;
    for &c in v.iter() {
        if c == b' ' || c == b'\t' {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(b' ');
            }
            space = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredMeta {
        StoredMeta {
            vary: vec![("accept-language".into(), b"de".to_vec())],
            status: 200,
            stored_at: 1_700_000_000,
            expires_at: 1_700_000_600,
            last_modified: -1,
            age: 3,
            content_type: b"text/css".to_vec(),
            source_type: Vec::new(),
            digest: [7; 16],
            headers: vec![(b"ETag".to_vec(), b"\"abc\"".to_vec())],
        }
    }

    #[test]
    fn meta_round_trips_and_rejects_damage() {
        let m = sample();
        let e = m.encode().unwrap();
        assert_eq!(StoredMeta::decode(&e), Some(m));
        for cut in 0..e.len() {
            assert_eq!(StoredMeta::decode(&e[..cut]), None);
        }
        let mut bad = e.clone();
        bad[0] = 9;
        assert_eq!(StoredMeta::decode(&bad), None);
    }

    #[test]
    fn the_view_reads_what_decode_reads() {
        let m = sample();
        let e = m.encode().unwrap();
        let v = MetaView::parse(&e).unwrap();
        assert_eq!(
            (v.status, v.expires_at, v.content_type),
            (200, 1_700_000_600, &b"text/css"[..])
        );
        assert_eq!(
            v.headers().collect::<Vec<_>>(),
            vec![(&b"ETag"[..], &b"\"abc\""[..])]
        );
        assert_eq!(v.age_at(1_700_000_010), m.age_at(1_700_000_010));
        assert_eq!(
            v.source_type(),
            b"text/css",
            "an original is its own source"
        );
        let built = StoredMeta {
            content_type: b"image/avif".to_vec(),
            source_type: b"image/jpeg".to_vec(),
            ..m.clone()
        };
        let e2 = built.encode().unwrap();
        let v2 = MetaView::parse(&e2).unwrap();
        assert_eq!(
            (v2.content_type, v2.source_type()),
            (&b"image/avif"[..], &b"image/jpeg"[..])
        );
        assert_eq!(StoredMeta::decode(&e2), Some(built));
        for cut in 0..e.len() {
            assert!(MetaView::parse(&e[..cut]).is_none());
        }
    }

    #[test]
    fn ages_of_damaged_times_saturate() {
        // From fuzzing (fuzz/src/bin/meta.rs asserts it): a stored_at far in the past, as a
        // damaged record may hold, overflowed `now - stored_at`.
        let m = StoredMeta {
            stored_at: i64::MIN,
            age: u32::MAX,
            ..sample()
        };
        let e = m.encode().unwrap();
        let v = MetaView::parse(&e).unwrap();
        for now in [0, 1_700_000_000, i64::MAX] {
            assert_eq!(m.age_at(now), i64::MAX);
            assert_eq!(v.age_at(now), i64::MAX);
        }
        let future = StoredMeta {
            stored_at: i64::MAX,
            ..sample()
        };
        assert_eq!(future.age_at(i64::MIN), 3);
    }

    #[test]
    fn vary_values_are_normalised_where_the_semantics_are_the_same() {
        let n = |name: &str, v: &str| {
            String::from_utf8(normalize_vary_value(name, v.as_bytes())).unwrap()
        };
        assert_eq!(n("foo", "1,2"), n("foo", " 1, 2 "));
        assert_eq!(n("foo", "a,  b"), "a, b");
        assert_ne!(
            n("foo", "2, 1"),
            n("foo", "1, 2"),
            "order kept for other fields"
        );
        assert_ne!(n("foo", "A"), n("foo", "a"), "case kept for other fields");
        let lang = |v: &str| n("accept-language", v);
        assert_eq!(lang("en, de"), lang("de, en"));
        assert_eq!(lang("en, de"), lang("eN, De"));
        assert_eq!(lang("en, de"), lang(" en ,   de"));
        assert_ne!(
            lang("en;q=0.5, de"),
            lang("de;q=0.5, en"),
            "weights order them"
        );
        assert_eq!(lang("en;q=0.5, de;q=0.5"), lang("de;q=0.5, en;q=0.5"));
    }

    #[test]
    fn oversized_headers_are_not_encodable() {
        let mut m = sample();
        m.headers.push((b"X-Big".to_vec(), vec![b'a'; 70_000]));
        assert!(m.encode().is_none());
    }

    #[test]
    fn vary_matching_compares_normalized_request_values() {
        let e = sample().encode().unwrap();
        let de = |n: &str| (n == "accept-language").then(|| b"  de ".to_vec());
        let fr = |n: &str| (n == "accept-language").then(|| b"fr".to_vec());
        let none = |_: &str| None;
        assert!(StoredMeta::vary_matches(&e, &de));
        assert!(!StoredMeta::vary_matches(&e, &fr));
        assert!(!StoredMeta::vary_matches(&e, &none));
        let plain = StoredMeta {
            vary: vec![],
            ..sample()
        }
        .encode()
        .unwrap();
        assert!(StoredMeta::vary_matches(&plain, &none));
    }
}
