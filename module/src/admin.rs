//! Admin locations: `pagespeed_purge` (the JSON purge API), the `PURGE` method on cached
//! locations, and `pagespeed_status` (counters as JSON or Prometheus text, one URL's
//! alternates, and the console for browsers). Every answer is JSON except those two.

use nginx_sys::{
    ngx_http_finalize_request, ngx_http_read_client_request_body, ngx_http_request_t, ngx_int_t,
    NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_POST, NGX_HTTP_SPECIAL_RESPONSE,
};
use serde_json::json;

use super::console;
use super::ffi::{Req, Strings, AGAIN, DONE, ERROR, OK};
use super::hit::{RequestCtx, Stage};
use super::lifecycle::store;
use super::log::guard;
use super::revalidate::{self, Outcome};
use ngx_http_pagespeed_module::cache::stale::Failure;
use ngx_http_pagespeed_module::cache::CacheStatus;
use ngx_http_pagespeed_module::fleet;
use ngx_http_pagespeed_module::http::csrf;
use ngx_http_pagespeed_module::http::meta::MetaView;
use ngx_http_pagespeed_module::http::url::Url;
use ngx_http_pagespeed_module::http::url::{default_key, split_host};
use ngx_http_pagespeed_module::purge::{self, method_request, parse_json, parse_target, MAX_BODY};
use ngx_http_pagespeed_module::store::{Fault, Key, Store};
use ngx_http_pagespeed_module::variant::Descriptor;

const JSON: &str = "application/json";

/// Answers with a JSON value.
pub fn reply_json(rq: Req, status: usize, v: serde_json::Value) -> ngx_int_t {
    reply(rq, status, v.to_string())
}

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
    // A revalidate-first purge answers later (`revalidated`): the reference the body read
    // took stays, held for it, until then.
    if rc != DONE {
        // SAFETY: as above; we own finalization after returning NGX_DONE from the handler.
        unsafe { ngx_http_finalize_request(r, rc) };
    }
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
    let opts = match fleet::options(&body) {
        Ok(o) => o,
        Err(e) => return error(rq, 400, &e.to_string()),
    };
    let Some(store) = store() else {
        return error(rq, 503, "no cache configured");
    };
    if opts.fleet {
        return fleet_purge(rq, store, &req, opts);
    }
    if req.revalidate {
        return revalidate_first(rq, store, &req);
    }
    purge_and_reply(rq, store, &req)
}

/// `"fleet": true`: applied here first (more, never less, whatever Redis does), then
/// appended to the stream and answered with every node's receipt.
fn fleet_purge(
    rq: Req,
    store: &Store,
    req: &purge::PurgeRequest,
    opts: fleet::Options,
) -> ngx_int_t {
    if req.revalidate {
        return error(
            rq,
            400,
            "\"revalidate\" asks this node's origin: it cannot be a fleet purge",
        );
    }
    if super::fleet::config().is_none() {
        return error(rq, 400, "\"fleet\": true needs pagespeed_fleet in http{}");
    }
    let local = match purge::apply(store, req, rq.local_port(), &[]) {
        Ok(r) => serde_json::from_str(&r.to_json()).unwrap_or_else(|_| json!({})),
        Err(f) => return fault_reply(rq, f),
    };
    super::fleet::publish(rq, fleet::encode(req), opts, local).unwrap_or(ERROR)
}

/// `{"url": ..., "revalidate": true}`: asks the origin, through the location that serves the
/// URL in this server, before anything is purged, and answers once it knows whether the
/// bytes changed. Unchanged keeps the entry and every variant; changed replaces them (the
/// revalidation stores the new original, as any refill would); an origin failure purges
/// nothing and marks the entry stale.
fn revalidate_first(rq: Req, store: &Store, req: &purge::PurgeRequest) -> ngx_int_t {
    let purge::Scope::Urls(urls) = &req.scope else {
        return error(rq, 400, "\"revalidate\" takes one \"url\"");
    };
    let host = split_host(&String::from_utf8_lossy(rq.server())).host;
    let scheme = rq.scheme();
    let Some(url) = urls.iter().find(|u| u.scheme == scheme) else {
        return error(
            rq,
            400,
            &format!("\"revalidate\" on this {scheme} server needs a {scheme} URL or a path"),
        );
    };
    if !url.host.eq_ignore_ascii_case(&host) {
        return error(
            rq,
            400,
            &format!(
                "\"revalidate\" asks this server's own locations: the URL's host must be {host}, not {}",
                url.host
            ),
        );
    }
    let Some(key) = url.keys(&[rq.local_port()]).first().copied() else {
        return error(rq, 400, "no cache key for that URL");
    };
    let original = match store.stored_meta(&key, Descriptor::SOURCE.0) {
        Ok(o) => o.map(|(_, meta)| meta),
        Err(f) => return fault_reply(rq, f),
    };
    let Some(original) = original else {
        // Nothing stored to compare with: a hard purge of the URL (orphaned variants go too).
        let hard = single_url(url, false);
        return match purge::apply(store, &hard, rq.local_port(), &[]) {
            Ok(receipt) => reply_with(
                rq,
                200,
                &receipt.to_json(),
                json!({ "revalidate": true, "cached": false }),
            ),
            Err(f) => fault_reply(rq, f),
        };
    };
    let before = alternate_count(store, &key);
    let Some(ctx) = rq.set_ctx(RequestCtx::new(CacheStatus::Bypass)) else {
        return ERROR;
    };
    ctx.stage = Stage::Done;
    ctx.purge_first = Some((key, url.clone(), before));
    let report = &mut ctx.outcome as *mut Option<Outcome>;
    let started = revalidate::start(
        rq,
        store,
        Some(url.path.as_bytes()),
        false,
        key,
        url.clone(),
        Descriptor::SOURCE,
        original,
        None,
        report,
    );
    if !started {
        return error(rq, 503, "could not start the revalidation; nothing purged");
    }
    rq.set_write_handler(Some(revalidated));
    DONE
}

/// A purge request for one URL (one scheme).
fn single_url(url: &Url, soft: bool) -> purge::PurgeRequest {
    purge::PurgeRequest {
        scope: purge::Scope::Urls(vec![url.clone()]),
        soft,
        revalidate: false,
    }
}

/// How many alternates (not counting declined-variant markers) a key holds.
fn alternate_count(store: &Store, key: &Key) -> usize {
    store.alternates(key).map_or(0, |a| {
        a.iter()
            .filter(|a| !Descriptor(a.descriptor).is_sentinel())
            .count()
    })
}

/// `base` (a receipt's JSON object) with `extra`'s fields added.
fn reply_with(rq: Req, status: usize, base: &str, extra: serde_json::Value) -> ngx_int_t {
    let mut v: serde_json::Value = serde_json::from_str(base).unwrap_or_else(|_| json!({}));
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    reply(rq, status, v.to_string())
}

/// nginx posts the purge request again once its revalidation subrequest is finalized.
extern "C" fn revalidated(r: *mut ngx_http_request_t) {
    let rc = guard("a revalidate-first purge", ERROR, || {
        // SAFETY: nginx passes the live purge request.
        unsafe { Req::from_raw(r) }.map_or(ERROR, answer_revalidated)
    });
    if rc != AGAIN {
        // SAFETY: as above; this handler owns the request's finalization.
        unsafe { ngx_http_finalize_request(r, rc) };
    }
}

fn answer_revalidated(rq: Req) -> ngx_int_t {
    let Some(ctx) = rq.ctx::<RequestCtx>() else {
        return ERROR;
    };
    let Some((key, url, before)) = ctx.purge_first.clone() else {
        return ERROR;
    };
    let Some(store) = store() else {
        return error(rq, 503, "no cache configured");
    };
    let outcome = ctx.outcome.take();
    let listed = format!("{}://{}{}", url.scheme, url.host, url.path);
    let generation = store.stats().purge_clock;
    let answer = |changed: bool, extra: serde_json::Value| {
        let mut v = json!({
            "scope": "url",
            "revalidate": true,
            "changed": changed,
            "generation": generation,
            "urls": [listed],
        });
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        reply(rq, 200, v.to_string())
    };
    match outcome {
        // Posted again while the subrequest is still running (it holds a reference; the
        // one the body read took is this request's own).
        None if rq.main_count() > 1 => AGAIN,
        None => error(
            rq,
            502,
            "the origin's answer never completed; nothing purged",
        ),
        Some(Outcome::Unchanged) => answer(
            false,
            json!({ "kept": alternate_count(store, &key), "deleted": 0 }),
        ),
        Some(Outcome::Changed) => answer(true, json!({ "deleted": before })),
        Some(Outcome::Gone) => answer(
            true,
            json!({ "deleted": 0, "note": "purged or replaced by another request meanwhile" }),
        ),
        Some(Outcome::Answer {
            failure: Some(f), ..
        }) => {
            // Nothing is known about the bytes: keep them, marked stale for the next request.
            let (status, what) = match f {
                Failure::Timeout => (504, "the origin timed out".to_string()),
                Failure::Error => (502, "the origin could not be reached".to_string()),
                Failure::Status(s) => (502, format!("the origin answered {s}")),
            };
            let soft = purge::apply(store, &single_url(&url, true), rq.local_port(), &[]);
            let stale = soft.is_ok();
            error_with(
                rq,
                status,
                &format!(
                    "{what}; nothing purged, the entry is kept{}",
                    if stale { " and marked stale" } else { "" }
                ),
                json!({ "stale": stale, "urls": [listed] }),
            )
        }
        Some(Outcome::Mismatch) | Some(Outcome::Answer { .. }) => {
            let replay = match outcome {
                Some(Outcome::Answer { replay, .. }) => replay,
                _ => None,
            };
            // The URL answers something other than stored bytes now (gone, moved, not
            // storable): the old entry and its variants must go.
            let origin_status = replay
                .as_ref()
                .and_then(|(m, _)| MetaView::parse(m))
                .map(|m| m.status);
            match purge::apply(store, &single_url(&url, false), rq.local_port(), &[]) {
                Ok(receipt) => reply_with(
                    rq,
                    200,
                    &receipt.to_json(),
                    json!({ "revalidate": true, "changed": true, "origin_status": origin_status }),
                ),
                Err(f) => fault_reply(rq, f),
            }
        }
    }
}

fn error_with(rq: Req, status: usize, msg: &str, extra: serde_json::Value) -> ngx_int_t {
    reply_with(rq, status, &json!({ "error": msg }).to_string(), extra)
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
    let mut req = match method_request(&path, &host, rq.local_port()) {
        Ok(req) => req,
        Err(e) => return error(rq, 400, &e.to_string()),
    };
    // The soft form, as Fastly-Soft-Purge: mark stale, keep for revalidation.
    req.soft = rq
        .header_in("pagespeed-soft-purge")
        .is_some_and(|v| v.trim_ascii() == b"1");
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
    let fleet = super::fleet::status(store);
    if rq.arg("format").as_deref() == Some("prometheus") {
        let mut text = stats.to_prometheus();
        if let Some(f) = &fleet {
            text.push_str(&f.to_prometheus());
        }
        return rq.send_text(200, "text/plain; version=0.0.4", text.as_bytes());
    }
    let json = stats.to_json(&[("max_object", store.max_object())]);
    match fleet {
        None => reply(rq, 200, json),
        Some(f) => {
            let mut v: serde_json::Value =
                serde_json::from_str(&json).unwrap_or_else(|_| json!({}));
            v["fleet"] = f.to_json();
            reply_json(rq, 200, v)
        }
    }
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
