//! Admin locations: `pagespeed_purge` (JSON purge API), the `PURGE` method on cached
//! locations, and `pagespeed_status` (counters as JSON or Prometheus text, plus inspection
//! of one URL's alternates).

use nginx_sys::{
    ngx_chain_t, ngx_http_arg, ngx_http_discard_request_body, ngx_http_finalize_request,
    ngx_http_read_client_request_body, ngx_http_request_t, ngx_int_t, ngx_str_t, NGX_DONE,
    NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_POST, NGX_HTTP_SPECIAL_RESPONSE, NGX_OK,
};
use serde_json::json;

use super::config::store;
use super::util::{bytes, guard, header_in, loc_conf, local_port, push_header, send_text};
use ngx_http_pagespeed_module::http::csrf;
use ngx_http_pagespeed_module::http::purge::{
    parse_json, parse_target, PurgeRequest, Scope, MAX_BODY,
};
use ngx_http_pagespeed_module::http::url::{default_key, default_port, split_host, Url};
use ngx_http_pagespeed_module::store::{Fault, PurgeReceipt, Store, UrlId};
use ngx_http_pagespeed_module::variant::Descriptor;

const JSON: &str = "application/json";

unsafe fn reply(r: *mut ngx_http_request_t, status: usize, v: serde_json::Value) -> ngx_int_t {
    let mut body = v.to_string();
    body.push('\n');
    // SAFETY: r is live and has not sent its header.
    unsafe { send_text(r, status, JSON, body.as_bytes()) }
}

pub(super) unsafe fn error(r: *mut ngx_http_request_t, status: usize, msg: &str) -> ngx_int_t {
    // SAFETY: as reply.
    unsafe { reply(r, status, json!({ "error": msg })) }
}

/// Checks `pagespeed_purge_token` (Bearer), comparing in constant time.
pub(super) unsafe fn authorized(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: r is live.
    let token = unsafe { loc_conf(r) }.purge_token();
    if token.is_empty() {
        return true;
    }
    // SAFETY: r is live.
    let Some(auth) = (unsafe { header_in(r, "authorization") }) else {
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

pub(super) unsafe fn unauthorized(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    unsafe {
        let _ = push_header(r, b"WWW-Authenticate", b"Bearer");
        error(r, 401, "missing or wrong purge token")
    }
}

fn fault_reply(f: Fault) -> (usize, serde_json::Value) {
    (503, json!({ "error": format!("purge not applied: {f}") }))
}

/// Applies a purge; the receipt is sent only after every worker will see it.
/// `port` is the purge request's listener: a URL given without a port is deleted at once under
/// that port's key and the scheme's default port's; on any other port it is still invalid from
/// its next lookup (purge scopes carry no port).
fn execute(store: &Store, req: &PurgeRequest, port: u16) -> Result<serde_json::Value, Fault> {
    let soft = req.soft;
    let (receipt, detail): (PurgeReceipt, serde_json::Value) = match &req.scope {
        Scope::Urls(urls) => {
            let ids: Vec<UrlId> = urls.iter().map(Url::id).collect();
            // Entries that declared (Cache-Tag / Surrogate-Key) they depend on these URLs.
            let spellings: Vec<String> = urls.iter().flat_map(Url::tag_spellings).collect();
            let deps: Vec<&str> = spellings.iter().map(String::as_str).collect();
            let keys: Vec<_> = urls
                .iter()
                .flat_map(|u| u.keys(&[port, default_port(&u.scheme)]))
                .collect();
            let listed: Vec<String> = urls
                .iter()
                .map(|u| format!("{}://{}{}", u.scheme, u.host, u.path))
                .collect();
            (
                store.purge_url(&ids, &deps, &keys, soft)?,
                json!({ "urls": listed }),
            )
        }
        Scope::Prefixes(ps) => {
            let refs: Vec<(&str, &str, &str)> = ps
                .iter()
                .map(|(s, h, p)| (s.as_str(), h.as_str(), p.as_str()))
                .collect();
            let listed: Vec<String> = ps
                .iter()
                .map(|(s, h, p)| format!("{s}://{h}{p}*"))
                .collect();
            (
                store.purge_prefix(&refs, soft)?,
                json!({ "prefixes": listed }),
            )
        }
        Scope::Tags(tags) => {
            let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
            (store.purge_tag(&refs, soft)?, json!({ "tags": tags }))
        }
        Scope::All => (store.flush_all(soft)?, json!({})),
    };
    let mut v = json!({
        "scope": req.scope.as_str(),
        "soft": soft,
        "deleted": receipt.deleted,
        "generation": receipt.generation,
    });
    if let (Some(o), serde_json::Value::Object(d)) = (v.as_object_mut(), detail) {
        o.extend(d);
    }
    Ok(v)
}

/// Content handler of a `pagespeed_purge` location.
pub extern "C" fn purge_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    guard(NGX_ERROR as ngx_int_t, || unsafe { purge_start(r) })
}

unsafe fn purge_start(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    unsafe {
        if (*r).method as u32 != NGX_HTTP_POST {
            let rc = ngx_http_discard_request_body(r);
            if rc != NGX_OK as ngx_int_t {
                return rc;
            }
            let _ = push_header(r, b"Allow", b"POST");
            return error(r, 405, "use POST with a JSON body");
        }
        let origin = header_in(r, "origin");
        let fetch_site = header_in(r, "sec-fetch-site");
        let host = header_in(r, "host").unwrap_or_default();
        let allowed = loc_conf(r).purge_allow_origin();
        if let Some(why) =
            csrf::cross_site(origin.as_deref(), fetch_site.as_deref(), &host, allowed)
        {
            let rc = ngx_http_discard_request_body(r);
            if rc != NGX_OK as ngx_int_t {
                return rc;
            }
            return error(r, 403, &why);
        }
        if !authorized(r) {
            let rc = ngx_http_discard_request_body(r);
            if rc != NGX_OK as ngx_int_t {
                return rc;
            }
            return unauthorized(r);
        }
        let content_type = header_in(r, "content-type").unwrap_or_default();
        if !csrf::is_json(&content_type) {
            let rc = ngx_http_discard_request_body(r);
            if rc != NGX_OK as ngx_int_t {
                return rc;
            }
            let _ = push_header(r, b"Accept-Post", JSON.as_bytes());
            return error(r, 415, "the purge API takes Content-Type: application/json");
        }
        if (*r).headers_in.content_length_n > MAX_BODY as i64 {
            let rc = ngx_http_discard_request_body(r);
            if rc != NGX_OK as ngx_int_t {
                return rc;
            }
            return error(r, 413, "purge body over 64 KiB");
        }
        let rc = ngx_http_read_client_request_body(r, Some(purge_body_read));
        if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
            return rc;
        }
        NGX_DONE as ngx_int_t
    }
}

extern "C" fn purge_body_read(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with the request once its body is read.
    let rc = guard(NGX_ERROR as ngx_int_t, || unsafe { purge_body(r) });
    // SAFETY: as above; we own finalization after returning NGX_DONE from the handler.
    unsafe { ngx_http_finalize_request(r, rc) };
}

/// The whole request body: memory buffers and, for a body spilled to disk, file buffers.
unsafe fn read_body(r: *mut ngx_http_request_t) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    // SAFETY: request_body and its chain are valid after the body was read.
    unsafe {
        let Some(rb) = (*r).request_body.as_ref() else {
            return Some(out);
        };
        let mut cl: *mut ngx_chain_t = rb.bufs;
        while let Some(link) = cl.as_ref() {
            cl = link.next;
            let Some(b) = link.buf.as_ref() else { continue };
            if b.in_file() != 0 && !b.file.is_null() {
                let len = (b.file_last - b.file_pos).max(0) as usize;
                if out.len() + len > MAX_BODY {
                    return None;
                }
                let start = out.len();
                out.resize(start + len, 0);
                let n = libc::pread(
                    (*b.file).fd,
                    out[start..].as_mut_ptr().cast(),
                    len,
                    b.file_pos,
                );
                if n != len as isize {
                    return None;
                }
            } else {
                let len = b.last.offset_from(b.pos).max(0) as usize;
                if out.len() + len > MAX_BODY {
                    return None;
                }
                out.extend_from_slice(std::slice::from_raw_parts(b.pos, len));
            }
        }
    }
    Some(out)
}

unsafe fn purge_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    unsafe {
        let Some(body) = read_body(r) else {
            return error(r, 413, "purge body over 64 KiB");
        };
        let host = String::from_utf8_lossy(bytes(&(*r).headers_in.server)).into_owned();
        let req = match parse_json(&body, &host) {
            Ok(req) => req,
            Err(e) => return error(r, 400, &e.0),
        };
        let Some(store) = store() else {
            return error(r, 503, "no cache configured");
        };
        match execute(store, &req, local_port(r)) {
            Ok(v) => reply(r, 200, v),
            Err(f) => {
                let (status, v) = fault_reply(f);
                reply(r, status, v)
            }
        }
    }
}

/// `PURGE /path` on a location with `pagespeed_purge_method PURGE`: purges that URL on this
/// host (both schemes), or the prefix when the path ends in `*`.
pub extern "C" fn purge_method_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    guard(NGX_ERROR as ngx_int_t, || unsafe { purge_method(r) })
}

unsafe fn purge_method(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    unsafe {
        let rc = ngx_http_discard_request_body(r);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        if !authorized(r) {
            return unauthorized(r);
        }
        let host = split_host(&String::from_utf8_lossy(bytes(&(*r).headers_in.server))).host;
        let port = local_port(r);
        let path = String::from_utf8_lossy(bytes(&(*r).unparsed_uri)).into_owned();
        let target = match parse_target(&path, Some(&host), None, &host) {
            Ok(t) => t,
            Err(e) => return error(r, 400, &e.0),
        };
        let scope = if target.prefix {
            Scope::Prefixes(
                target
                    .schemes
                    .iter()
                    .map(|s| (s.to_string(), target.host.clone(), target.path.clone()))
                    .collect(),
            )
        } else {
            Scope::Urls(
                target
                    .schemes
                    .iter()
                    .map(|s| Url {
                        scheme: s.to_string(),
                        host: target.host.clone(),
                        path: target.path.clone(),
                        port: Some(port),
                    })
                    .collect(),
            )
        };
        let Some(store) = store() else {
            return error(r, 503, "no cache configured");
        };
        match execute(store, &PurgeRequest { scope, soft: false }, port) {
            Ok(v) => reply(r, 200, v),
            Err(f) => {
                let (status, v) = fault_reply(f);
                reply(r, status, v)
            }
        }
    }
}

pub(super) unsafe fn arg(r: *mut ngx_http_request_t, name: &str) -> Option<String> {
    let mut v = ngx_str_t::empty();
    // SAFETY: r is live; ngx_http_arg only reads the name.
    let rc = unsafe { ngx_http_arg(r, name.as_ptr() as *mut u8, name.len(), &mut v) };
    (rc == NGX_OK as ngx_int_t).then(|| percent_decode(bytes(&v)))
}

fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match v[i] {
            b'%' if i + 2 < v.len() => {
                if let (Some(a), Some(b)) = (hex(v[i + 1]), hex(v[i + 2])) {
                    out.push((a * 16 + b) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Content handler of a `pagespeed_status` location.
pub extern "C" fn status_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    guard(NGX_ERROR as ngx_int_t, || unsafe { status(r) })
}

unsafe fn status(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    unsafe {
        let m = (*r).method as u32;
        let rc = ngx_http_discard_request_body(r);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        if m != NGX_HTTP_GET && m != NGX_HTTP_HEAD {
            let _ = push_header(r, b"Allow", b"GET, HEAD");
            return error(r, 405, "use GET");
        }
        let Some(store) = store() else {
            return error(r, 503, "no cache configured");
        };
        if let Some(rc) = super::console::answer(r, store) {
            return rc;
        }
        if let Some(url) = arg(r, "url") {
            let host = String::from_utf8_lossy(bytes(&(*r).headers_in.server)).into_owned();
            return match parse_target(&url, None, None, &host) {
                Ok(t) if !t.prefix => inspect(r, store, t.schemes, &t.host, t.port, &t.path),
                Ok(_) => error(r, 400, "inspection takes one URL, not a prefix"),
                Err(e) => error(r, 400, &e.0),
            };
        }
        let stats = store.stats();
        if arg(r, "format").as_deref() == Some("prometheus") {
            let mut text = String::new();
            for (name, help, value) in stats.fields() {
                let kind = if matches!(
                    name,
                    "entries"
                        | "alternates"
                        | "bytes_used"
                        | "bytes_capacity"
                        | "shards"
                        | "purge_clock"
                ) {
                    "gauge"
                } else {
                    "counter"
                };
                let metric = if kind == "counter" {
                    format!("pagespeed_cache_{name}_total")
                } else {
                    format!("pagespeed_cache_{name}")
                };
                text.push_str(&format!(
                    "# HELP {metric} {help}\n# TYPE {metric} {kind}\n{metric} {value}\n"
                ));
            }
            return send_text(r, 200, "text/plain; version=0.0.4", text.as_bytes());
        }
        let mut v = serde_json::to_value(&stats).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("max_object".into(), json!(store.max_object()));
        }
        reply(r, 200, v)
    }
}

unsafe fn inspect(
    r: *mut ngx_http_request_t,
    store: &Store,
    schemes: Vec<&str>,
    host: &str,
    port: Option<u16>,
    path: &str,
) -> ngx_int_t {
    // SAFETY: r is live.
    let here = unsafe { local_port(r) };
    let mut entries = Vec::new();
    for s in schemes {
        // Without a port, the listener this status request came in on.
        {
            let p = port.unwrap_or(here);
            let key = default_key(s, host.as_bytes(), p, path.as_bytes());
            let alternates = match store.alternates(&key) {
                Ok(a) => a,
                // SAFETY: r is live.
                Err(f) => return unsafe { error(r, 503, &f.to_string()) },
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
                "url": format!("{s}://{host}:{p}{path}"),
                "key": key.hex(),
                "alternates": list,
            }));
        }
    }
    // SAFETY: r is live.
    unsafe { reply(r, 200, json!({ "entries": entries })) }
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, percent_decode};

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            percent_decode(b"https%3A%2F%2Fa.com%2Fx%20y"),
            "https://a.com/x y"
        );
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }
}
