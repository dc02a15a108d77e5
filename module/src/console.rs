//! The admin console's requests on a `pagespeed_status` location: the page for a browser, and
//! one stored image alternate's bytes for its thumbnails. The page itself is rendered by the
//! core crate (`console`).

use nginx_sys::ngx_int_t;

use super::admin::{authorized, error, unauthorized};
use super::ffi::{Req, Strings};
use ngx_http_pagespeed_module::console::{
    entries, is_thumbnail, nonce, parse_descriptor, prefers_html, render, Page,
};
use ngx_http_pagespeed_module::http::meta::MetaView;
use ngx_http_pagespeed_module::http::url::default_key;
use ngx_http_pagespeed_module::purge::parse_target;
use ngx_http_pagespeed_module::store::Store;
use ngx_http_pagespeed_module::variant::Descriptor;

/// Answers a `pagespeed_status` request that is the console's: `?alternate=` (one stored
/// image alternate's bytes), or the page for a client whose `Accept` prefers HTML (without
/// `?format=`). None: the JSON or Prometheus answer, exactly as without the console.
pub fn answer(rq: Req, store: &Store) -> Option<ngx_int_t> {
    if let Some(d) = rq.arg("alternate") {
        return Some(alternate(rq, store, &d));
    }
    if rq.arg("format").is_some() || !prefers_html(&rq.header_in("accept")?) {
        return None;
    }
    Some(page(rq, store))
}

fn page(rq: Req, store: &Store) -> ngx_int_t {
    let lcf = rq.loc_conf();
    let host = String::from_utf8_lossy(rq.server()).into_owned();
    let url = rq.arg("url");
    let lookup = url
        .as_deref()
        .map(|u| entries(store, u, &host, rq.local_port()));
    let Some(nonce) = nonce() else {
        return error(rq, 503, "no random bytes for the page's script nonce");
    };
    let html = render(&Page {
        stats: &store.stats(),
        max_object: store.max_object(),
        host: &host,
        pid: std::process::id(),
        nonce: &nonce,
        purge_location: lcf.console_purge.as_deref().unwrap_or_default(),
        token_required: !lcf.purge_token().is_empty(),
        url: url.as_deref(),
        lookup: lookup.as_ref(),
        now: nginx_sys::ngx_time() as i64,
    });
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         img-src 'self' blob: data:; connect-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    for (n, v) in [
        ("Content-Security-Policy", csp.as_str()),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
    ] {
        let _ = rq.push_header(n.as_bytes(), v.as_bytes(), Strings::Copy);
    }
    let status = if matches!(lookup, Some(Err(_))) {
        400
    } else {
        200
    };
    rq.send_text(status, "text/html; charset=utf-8", html.as_bytes())
}

/// The stored bytes of one image alternate, for the page's thumbnails: what the clients that
/// select it are sent. Reading cached bytes through the status location is as privileged as
/// purging: it takes `pagespeed_purge_token` when one applies here.
fn alternate(rq: Req, store: &Store, d: &str) -> ngx_int_t {
    if !authorized(rq) {
        return unauthorized(rq);
    }
    let Some(d) = parse_descriptor(d) else {
        return error(rq, 400, "alternate takes a descriptor such as 0x00000010");
    };
    let host = String::from_utf8_lossy(rq.server()).into_owned();
    let Some(u) = rq.arg("url") else {
        return error(rq, 400, "alternate needs url=");
    };
    let t = match parse_target(&u, None, None, &host) {
        Ok(t) if !t.prefix && t.schemes.len() == 1 => t,
        Ok(_) => {
            return error(
                rq,
                400,
                "alternate needs one absolute URL (with its scheme)",
            )
        }
        Err(e) => return error(rq, 400, &e.to_string()),
    };
    let port = t.port.unwrap_or(rq.local_port());
    let key = default_key(t.schemes[0], t.host.as_bytes(), port, t.path.as_bytes());
    let src = match store.source(&key, d) {
        Ok(Some(s)) => s,
        Ok(None) => return error(rq, 404, "no fresh alternate with that descriptor"),
        Err(f) => return error(rq, 503, &f.to_string()),
    };
    let ct = MetaView::parse(&src.meta)
        .map(|m| m.content_type)
        .unwrap_or_default();
    let ct = std::str::from_utf8(ct).unwrap_or_default();
    let media = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !is_thumbnail(Descriptor(d), &media) {
        return error(
            rq,
            403,
            "only image alternates the origin's Vary did not select are shown",
        );
    }
    let _ = rq.push_header(b"X-Content-Type-Options", b"nosniff", Strings::Borrowed);
    let _ = rq.push_header(
        b"Content-Security-Policy",
        b"default-src 'none'; sandbox",
        Strings::Borrowed,
    );
    rq.send_text(200, ct, &src.body)
}
