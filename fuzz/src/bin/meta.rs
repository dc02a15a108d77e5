//! Stored metadata decoding (`MetaView::parse`, `StoredMeta::decode`, `vary_matches`): bytes
//! read back from the segment, which a crash or a damaged file may have changed. Arbitrary
//! bytes either decode, and then re-encode to exactly the same bytes, or are refused; and a
//! `StoredMeta` built from the input round-trips through `encode`/`decode`.

use ngx_http_pagespeed_module::http::meta::{MetaView, StoredMeta};

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        h
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn i64(&mut self) -> i64 {
        let mut b = [0; 8];
        let s = self.bytes(8);
        b[..s.len()].copy_from_slice(s);
        i64::from_le_bytes(b)
    }
    fn string(&mut self) -> Vec<u8> {
        let n = self.u8() as usize;
        self.bytes(n).to_vec()
    }
}

fn structured(data: &[u8]) {
    let mut i = Input(data);
    let mut m = StoredMeta {
        status: i.i64() as u16,
        stored_at: i.i64(),
        expires_at: i.i64(),
        last_modified: i.i64(),
        age: i.i64() as u32,
        ..Default::default()
    };
    m.content_type = i.string();
    m.source_type = i.string();
    m.digest.copy_from_slice(&[i.u8(); 16]);
    for _ in 0..i.u8() % 8 {
        let n = String::from_utf8_lossy(&i.string()).into_owned();
        m.vary.push((n, i.string()));
    }
    // At most u16::MAX headers encode; an input holds far fewer.
    while !i.0.is_empty() && m.headers.len() < 4096 {
        m.headers.push((i.string(), i.string()));
    }
    let e = m.encode().expect("short fields always encode");
    assert_eq!(StoredMeta::decode(&e).as_ref(), Some(&m));
    let v = MetaView::parse(&e).expect("encoded meta parses");
    assert_eq!(v.headers().count(), m.headers.len());
    assert_eq!(v.age_at(0), m.age_at(0));
    assert_eq!(v.age_at(i64::MAX), m.age_at(i64::MAX));
    let lookup = |n: &str| m.vary.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let _ = StoredMeta::vary_matches(&e, &lookup);
}

fn raw(b: &[u8]) {
    let view = MetaView::parse(b);
    let decoded = StoredMeta::decode(b);
    let _ = StoredMeta::vary_matches(b, &|_| Some(b"x".to_vec()));
    if let Some(m) = &decoded {
        let v = view.expect("decode accepted what parse refused");
        assert_eq!(
            m.encode().as_deref(),
            Some(b),
            "decode . encode is not the identity"
        );
        assert_eq!(v.headers().count(), m.headers.len());
        assert_eq!(
            v.etag().is_some(),
            m.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(b"etag"))
        );
        assert_eq!(
            (v.status, v.expires_at, v.content_type),
            (m.status, m.expires_at, &m.content_type[..])
        );
        for now in [0, 1_700_000_000, i64::MIN, i64::MAX] {
            assert_eq!(v.age_at(now), m.age_at(now));
            assert!(v.age_at(now) >= 0);
        }
    }
    if let Some(v) = view {
        let _ = v.source_type();
        // parse accepts the vary section decode reads, unless a name is not UTF-8.
        let _ = v.headers().count();
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        if sel & 1 == 0 {
            raw(rest)
        } else {
            structured(rest)
        }
    });
}
