//! Admin locations: `pagespeed_purge` (the JSON purge API), the `PURGE` method on cached
//! locations, and `pagespeed_status` (counters as JSON or Prometheus text, one URL's
//! alternates, and the console for browsers). Every answer is JSON except those two.

use nginx_sys::{
    ngx_http_finalize_request, ngx_http_read_client_request_body, ngx_http_request_t, ngx_int_t,
    NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_POST, NGX_HTTP_SPECIAL_RESPONSE,
};
use serde_json::json;

use super::console;
use super::ffi::{Req, Strings, DONE, ERROR, OK};
use super::lifecycle::store;
use super::log::guard;
use ngx_http_pagespeed_module::http::csrf;
use ngx_http_pagespeed_module::http::url::{default_key, split_host};
use ngx_http_pagespeed_module::purge::{self, method_request, parse_json, parse_target, MAX_BODY};
use ngx_http_pagespeed_module::store::{Fault, Store};
use ngx_http_pagespeed_module::variant::Descriptor;

const JSON: &str = "application/json";

fn reply(rq: Req, status: usize, mut body: String) -> ngx_int_t {
    body.push('\n');
    rq.send_text(status, JSON, body.as_bytes())
}

pub fn error(rq: Req, status: usize, msg: &str) -> ngx_int_t {
    reply(rq, status, json!({ "error": msg }).to_string())
}

/// Checks `pagespeed_purge_token` (Bearer), comparing in constant time.
pub fn authorized(rq: Req) -> bool {
    let token = rq.loc_conf().purge_token();
    if token.is_empty() {
        return true;
    }
    let Some(auth) = rq.header_in("authorization") else {
        return false;
    };
    let Some(given) = auth.strip_prefix(b"Bearer ") else {
        return false;
    };
    constant_time_eq(given.trim_ascii(), token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // The length is not secret; the bytes are compared without an early exit.
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn unauthorized(rq: Req) -> ngx_int_t {
    let _ = rq.push_header(b"WWW-Authenticate", b"Bearer", Strings::Borrowed);
    error(rq, 401, "missing or wrong purge token")
}

/// A refusal that must not leave the request body unread.
fn refuse(rq: Req, status: usize, msg: &str) -> ngx_int_t {
    let rc = rq.discard_body();
    if rc != OK {
        return rc;
    }
    error(rq, status, msg)
}

/// Applies a purge and answers with its receipt, sent only after every worker will see it.
fn purge_and_reply(rq: Req, store: &Store, req: &purge::PurgeRequest) -> ngx_int_t {
    match purge::apply(store, req, rq.local_port(), &[]) {
        Ok(receipt) => reply(rq, 200, receipt.to_json()),
        Err(f) => fault_reply(rq, f),
    }
}

fn fault_reply(rq: Req, f: Fault) -> ngx_int_t {
    error(rq, 503, &format!("purge not applied: {f}"))
}

/// Content handler of a `pagespeed_purge` location.
pub extern "C" fn purge_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard("the purge API", ERROR, || {
        // SAFETY: nginx passes a live request.
        unsafe { Req::from_raw(r) }.map_or(ERROR, purge_start)
    })
}

fn purge_start(rq: Req) -> ngx_int_t {
    if rq.method() != NGX_HTTP_POST {
        let _ = rq.push_header(b"Allow", b"POST", Strings::Borrowed);
        return refuse(rq, 405, "use POST with a JSON body");
    }
    let origin = rq.header_in("origin");
    let fetch_site = rq.header_in("sec-fetch-site");
    let host = rq.header_in("host").unwrap_or_default();
    let allowed = rq.loc_conf().purge_allow_origin();
    if let Some(why) = csrf::cross_site(origin.as_deref(), fetch_site.as_deref(), &host, allowed) {
        return refuse(rq, 403, &why);
    }
    if !authorized(rq) {
        let rc = rq.discard_body();
        if rc != OK {
            return rc;
        }
        return unauthorized(rq);
    }
    if !csrf::is_json(&rq.header_in("content-type").unwrap_or_default()) {
        let _ = rq.push_header(b"Accept-Post", JSON.as_bytes(), Strings::Borrowed);
        return refuse(
            rq,
            415,
            "the purge API takes Content-Type: application/json",
        );
    }
    if rq.content_length() > MAX_BODY as i64 {
        return refuse(rq, 413, "purge body over 64 KiB");
    }
    // SAFETY: r is live; nginx calls purge_body_read once the body is read.
    let rc = unsafe { ngx_http_read_client_request_body(rq.raw(), Some(purge_body_read)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    DONE
}

extern "C" fn purge_body_read(r: *mut ngx_http_request_t) {
    let rc = guard("the purge API", ERROR, || {
        // SAFETY: nginx calls this with the request once its body is read.
        unsafe { Req::from_raw(r) }.map_or(ERROR, purge_body)
    });
    // SAFETY: as above; we own finalization after returning NGX_DONE from the handler.
    unsafe { ngx_http_finalize_request(r, rc) };
}

fn purge_body(rq: Req) -> ngx_int_t {
    let Some(body) = rq.request_body(MAX_BODY) else {
        return error(rq, 413, "purge body over 64 KiB");
    };
    let host = String::from_utf8_lossy(rq.server()).into_owned();
    let req = match parse_json(&body, &host) {
        Ok(req) => req,
        Err(e) => return error(rq, 400, &e.to_string()),
    };
    let Some(store) = store() else {
        return error(rq, 503, "no cache configured");
    };
    purge_and_reply(rq, store, &req)
}

/// Makes the `PURGE` method's handler this request's content handler (from PRECONTENT, on a
/// location with `pagespeed_purge_method`).
pub fn take_purge_method(rq: Req) {
    rq.take_content_phase(purge_method_handler);
}

/// `PURGE /path`: purges that URL on this host (both schemes), or the prefix when the path
/// ends in `*`.
extern "C" fn purge_method_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard("the purge method", ERROR, || {
        // SAFETY: nginx passes a live request.
        unsafe { Req::from_raw(r) }.map_or(ERROR, purge_method)
    })
}

fn purge_method(rq: Req) -> ngx_int_t {
    let rc = rq.discard_body();
    if rc != OK {
        return rc;
    }
    if !authorized(rq) {
        return unauthorized(rq);
    }
    let host = split_host(&String::from_utf8_lossy(rq.server())).host;
    let path = String::from_utf8_lossy(rq.unparsed_uri()).into_owned();
    let req = match method_request(&path, &host, rq.local_port()) {
        Ok(req) => req,
        Err(e) => return error(rq, 400, &e.to_string()),
    };
    let Some(store) = store() else {
        return error(rq, 503, "no cache configured");
    };
    purge_and_reply(rq, store, &req)
}

/// Content handler of a `pagespeed_status` location.
pub extern "C" fn status_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard("the status location", ERROR, || {
        // SAFETY: nginx passes a live request.
        unsafe { Req::from_raw(r) }.map_or(ERROR, status)
    })
}

fn status(rq: Req) -> ngx_int_t {
    let m = rq.method();
    let rc = rq.discard_body();
    if rc != OK {
        return rc;
    }
    if m != NGX_HTTP_GET && m != NGX_HTTP_HEAD {
        let _ = rq.push_header(b"Allow", b"GET, HEAD", Strings::Borrowed);
        return error(rq, 405, "use GET");
    }
    let Some(store) = store() else {
        return error(rq, 503, "no cache configured");
    };
    if let Some(rc) = console::answer(rq, store) {
        return rc;
    }
    if let Some(url) = rq.arg("url") {
        return inspect(rq, store, &url);
    }
    let stats = store.stats();
    if rq.arg("format").as_deref() == Some("prometheus") {
        let text = stats.to_prometheus();
        return rq.send_text(200, "text/plain; version=0.0.4", text.as_bytes());
    }
    reply(
        rq,
        200,
        stats.to_json(&[("max_object", store.max_object())]),
    )
}

/// `?url=`: the alternates stored under that URL (both schemes for a path), keyed like the
/// cached location's default key; without a port, this status request's own listener.
fn inspect(rq: Req, store: &Store, url: &str) -> ngx_int_t {
    let host = String::from_utf8_lossy(rq.server()).into_owned();
    let t = match parse_target(url, None, None, &host) {
        Ok(t) if !t.prefix => t,
        Ok(_) => return error(rq, 400, "inspection takes one URL, not a prefix"),
        Err(e) => return error(rq, 400, &e.to_string()),
    };
    let p = t.port.unwrap_or(rq.local_port());
    let mut entries = Vec::new();
    for s in &t.schemes {
        let key = default_key(s, t.host.as_bytes(), p, t.path.as_bytes());
        let alternates = match store.alternates(&key) {
            Ok(a) => a,
            Err(f) => return error(rq, 503, &f.to_string()),
        };
        let list: Vec<_> = alternates
            .iter()
            .map(|a| {
                let d = Descriptor(a.descriptor);
                json!({
                    "descriptor": format!("{:#010x}", a.descriptor),
                    "variant": if d.is_sentinel() { "declined".to_string() } else { d.label() },
                    "encoding": d.encoding().as_str(),
                    "origin_vary": d.origin_varies(),
                    "sentinel": d.is_sentinel(),
                    "stamp": a.stamp,
                    "body_bytes": a.body_len,
                    "meta_bytes": a.meta_len,
                })
            })
            .collect();
        entries.push(json!({
            "url": format!("{s}://{}:{p}{}", t.host, t.path),
            "key": key.hex(),
            "alternates": list,
        }));
    }
    reply(rq, 200, json!({ "entries": entries }).to_string())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
