//! Header values from outside: `Cache-Control` and response storability (`CacheControl::parse`,
//! `storable`, `fill::prepare`), `Vary` (`normalize_vary_value`), `Surrogate-Key`/`Cache-Tag`
//! (`split_tags`), and the request side: `Accept`, `Accept-Encoding` and the client hints
//! (`Capabilities::from_headers`, variant selection). The first byte picks the parser; the rest
//! is header lines (`Name: value`), a blank line separating response from request headers.

use ngx_http_pagespeed_module::cache::fill::{
    prepare, split_tags, FillPolicy, RequestHead, ResponseHead,
};
use ngx_http_pagespeed_module::http::cache_control::{
    storable, CacheControl, ResponseFacts, Statuses,
};
use ngx_http_pagespeed_module::http::meta::{normalize_vary_value, MetaView, StoredMeta};
use ngx_http_pagespeed_module::store::{Buckets, UrlId};
use ngx_http_pagespeed_module::variant::accept::{accept_image_formats, weighted_items};
use ngx_http_pagespeed_module::variant::capability::device_class;
use ngx_http_pagespeed_module::variant::{
    score, vary_headers, wanted, AcceptEncoding, Capabilities, CapabilityHeaders, Encoding, Format,
    SourceKind, VariantPolicy, ViewportSource,
};

const BUCKETS: Buckets = Buckets {
    url_slots: 1024,
    prefix_slots: 256,
    tag_slots: 256,
};

fn lines(b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    b.split(|&c| c == b'\n').filter_map(|l| {
        let i = l.iter().position(|&c| c == b':')?;
        Some((l[..i].trim_ascii(), l[i + 1..].trim_ascii()))
    })
}

fn check_normalized(v: &[u8]) {
    assert!(!v.starts_with(b" ") && !v.ends_with(b" "), "{v:?}");
    assert!(
        !v.contains(&b'\t') && !v.windows(2).any(|w| w == b"  "),
        "{v:?}"
    );
}

fn cache_control(rest: &[u8]) {
    let values: Vec<&[u8]> = rest.split(|&c| c == b'\n').collect();
    let cc = CacheControl::parse(&values);
    let facts = ResponseFacts {
        status: 200,
        cache_control: cc.clone(),
        ..Default::default()
    };
    let listed = Statuses::Listed(&[200]);
    if let Ok(l) = storable(&facts, listed, 1 << 20, Some(600), 1_700_000_000) {
        assert!(l > 0);
        assert!((!cc.no_store || cc.must_understand) && !cc.private && !cc.no_cache);
        let explicit = cc.s_maxage.or(cc.max_age);
        assert!(explicit.is_none_or(|e| e == l) && (explicit.is_some() || l == 600));
    }
}

fn fill(rest: &[u8]) {
    let (resp, req) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (rest, &[][..]),
    };
    let mut headers: Vec<(&[u8], &[u8])> = lines(resp).collect();
    let content_type = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
        .map_or(&b"text/css"[..], |(_, v)| v);
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(b"content-type"));
    let req_headers: Vec<(String, Vec<u8>)> = lines(req)
        .map(|(n, v)| (String::from_utf8_lossy(n).to_ascii_lowercase(), v.to_vec()))
        .collect();
    let header = |name: &str| {
        req_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let cc = req_headers
        .iter()
        .find(|(n, _)| n == "cache-control")
        .map(|(_, v)| v.as_slice());
    let resp = ResponseHead {
        status: 200,
        headers,
        content_type,
        content_length: Some(rest.len() as u64),
        last_modified: None,
        connection_listed: Vec::new(),
    };
    let req = RequestHead {
        authorization: req_headers.iter().any(|(n, _)| n == "authorization"),
        cache_control: cc,
        header: &header,
    };
    let policy = FillPolicy {
        statuses: Statuses::Listed(&[200, 301]),
        default_lifetime: Some(600),
        max_object: 1 << 16,
    };
    let url = UrlId {
        scheme: "https",
        host: "example.com",
        path: "/a.css",
    };
    let now = 1_700_000_000;
    let Ok(p) = prepare(&resp, &req, &policy, &url, &BUCKETS, now) else {
        return;
    };
    assert!(p.meta.expires_at > p.meta.stored_at);
    assert!(p.capacity as u64 <= policy.max_object);
    assert!(p.scopes.tags.len() <= 256);
    let names: Vec<&str> = p.meta.vary.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "vary not sorted, unique: {names:?}"
    );
    for (n, v) in &p.meta.vary {
        assert!(!n.is_empty() && *n == n.to_ascii_lowercase() && n != "accept-encoding");
        assert!(n != "*");
        check_normalized(v);
    }
    assert_eq!(p.descriptor.origin_varies(), !p.meta.vary.is_empty());
    // What is stored decodes to what was prepared.
    let enc = p.meta_for(rest);
    let back = StoredMeta::decode(&enc).expect("prepared meta decodes");
    assert_eq!(back.vary, p.meta.vary);
    assert_eq!(back.headers, p.meta.headers);
    let view = MetaView::parse(&enc).expect("prepared meta parses");
    assert_eq!(view.expires_at, p.meta.expires_at);
    assert!(StoredMeta::vary_matches(&enc, &header));
}

fn values(rest: &[u8]) {
    let mut tags = Vec::new();
    for line in rest.split(|&c| c == b'\n') {
        split_tags(line, &mut tags);
        for name in ["foo", "accept-language"] {
            let n = normalize_vary_value(name, line);
            check_normalized(&n);
            assert_eq!(normalize_vary_value(name, &n), n, "not idempotent");
        }
    }
    assert!(tags.len() <= 256);
    for t in &tags {
        assert!(!t.is_empty() && !t.contains([',', ' ', '\t']), "tag {t:?}");
    }
}

fn request(rest: &[u8], policy_bits: u8) {
    let mut h = CapabilityHeaders::default();
    for (n, v) in lines(rest) {
        h.offer(n, v);
    }
    let caps = Capabilities::from_headers(&h);
    use ngx_http_pagespeed_module::variant::Hint;
    match caps.viewport_source {
        ViewportSource::ClientHint => assert!(
            h.get(Hint::SecChViewportWidth).is_some() || h.get(Hint::ViewportWidth).is_some()
        ),
        ViewportSource::UserAgent => assert!(h.get(Hint::UserAgent).is_some()),
        ViewportSource::None => {}
    }
    if h.get(Hint::Accept).is_none() {
        assert!(!caps.avif && !caps.webp);
    }
    let accept = h.get(Hint::Accept).unwrap_or_default();
    let _ = accept_image_formats(accept);
    let _ = device_class(h.get(Hint::UserAgent).unwrap_or_default());
    for (name, _) in weighted_items(rest) {
        assert!(!name.starts_with(b" ") && !name.ends_with(b" "));
    }
    let ae = AcceptEncoding::parse(h.get(Hint::AcceptEncoding).unwrap_or_default());
    assert!(!ae.accepts(Encoding::Other) && !ae.accepts(Encoding::Compress));
    let policy = VariantPolicy {
        webp: policy_bits & 1 != 0,
        avif: policy_bits & 2 != 0,
        resize: policy_bits & 4 != 0,
        save_data: policy_bits & 8 != 0,
        gzip: policy_bits & 16 != 0,
        br: policy_bits & 32 != 0,
    };
    for kind in [
        SourceKind::Jpeg,
        SourceKind::Png,
        SourceKind::Text,
        SourceKind::Other,
    ] {
        let _ = vary_headers(kind, &policy);
        if let Some(d) = wanted(kind, &caps, &policy) {
            match d.format() {
                Format::Avif => assert!(caps.avif && policy.avif),
                Format::Webp => assert!(caps.webp && policy.webp),
                _ => {}
            }
            assert!(!d.save_data() || (caps.save_data && policy.save_data));
            if kind == SourceKind::Text {
                assert!(caps.encoding.accepts(d.encoding()));
            }
            let _ = score(d, &caps);
        }
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        match sel % 4 {
            0 => cache_control(rest),
            1 => fill(rest),
            2 => values(rest),
            _ => request(rest, sel >> 2),
        }
    });
}
