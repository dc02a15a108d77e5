//! Filling the cache from the location's own response: the header filter decides whether it is
//! stored (and says so in `X-Cache`), the body filter copies the body as it passes — before the
//! filters below consume the buffers — and the last buffer commits it with the fill ticket
//! taken at lookup time. Also RFC 9111 invalidation after an unsafe method.

use std::cell::RefCell;

use nginx_sys::{
    ngx_chain_t, ngx_conf_t, ngx_http_output_body_filter_pt, ngx_http_output_header_filter_pt,
    ngx_http_request_t, ngx_int_t, NGX_LOG_WARN,
};
use ngx::ngx_log_error;

use super::builder;
use super::ffi::{bytes, read_chain, ChainRead, Req, Strings, ERROR, OK};
use super::hit::{variant_headers, RequestCtx};
use super::lifecycle::store;
use super::log::{fault_log_allowed, guard};
use super::revalidate;
use ngx_http_pagespeed_module::cache::fill::{
    prepare, FillPolicy, Prepared, RequestHead, ResponseHead,
};
use ngx_http_pagespeed_module::cache::CacheStatus;
use ngx_http_pagespeed_module::fleet::StreamId;
use ngx_http_pagespeed_module::http::cache_control::NotStored;
use ngx_http_pagespeed_module::http::url::{default_key, Url};
use ngx_http_pagespeed_module::purge;
use ngx_http_pagespeed_module::store::{
    Alternate, CommitOutcome, FillTicket, Key, LeaseToken, Release, Store,
};
use ngx_http_pagespeed_module::transform::builders::{transformable, Job};
use ngx_http_pagespeed_module::variant::on_fill;

/// How long requests go to the origin without waiting after a fill found the response not
/// storable (a hit-for-pass).
const PASS_MS: u64 = 3000;

/// A miss being filled from the location's own handler.
pub struct Fill {
    ticket: FillTicket,
    key: Key,
    url: Url,
    /// The key's lease, when this fill holds it: released when the fill ends.
    lease: Option<LeaseToken>,
    /// Set by the header filter once the response is known to be storable.
    capture: Option<Capture>,
}

impl Fill {
    pub fn new(ticket: FillTicket, key: Key, url: Url, lease: Option<LeaseToken>) -> Fill {
        Fill {
            ticket,
            key,
            url,
            lease,
            capture: None,
        }
    }

    /// Ends the fill's lease: waiters look again (`Done`), or go to the origin (`Pass`).
    fn release(&mut self, store: &Store, how: Release) {
        if let Some(t) = self.lease.take() {
            let _ = store.release_lease(&self.key, t, how);
        }
    }
}

/// What a lease's pool cleanup needs.
struct HeldLease {
    request: usize,
    key: Key,
    token: LeaseToken,
}

thread_local! {
    /// The leases this worker's requests hold until they end, by request. An internal
    /// redirect (`error_page`, `try_files` to a named location) clears a request's context
    /// but not the lease its first lookup took: the lookup in the location it lands in finds
    /// its own lease here instead of waiting on itself. Only the event loop's thread uses it.
    static HELD: RefCell<Vec<(usize, Key, LeaseToken)>> = const { RefCell::new(Vec::new()) };
}

/// The lease this request already holds on `key`, if any.
pub fn own_lease(rq: Req, key: &Key) -> Option<LeaseToken> {
    let r = rq.raw() as usize;
    HELD.with(|h| {
        h.borrow()
            .iter()
            .find(|(req, k, _)| *req == r && k == key)
            .map(|&(_, _, t)| t)
    })
}

/// Releases `token` on `key` when the request ends, whatever happened to it (a client gone, an
/// upstream error, a fill abandoned): waiters never wait for the full timeout after a failed
/// fill. Releasing what was already released, or taken over, changes nothing; a lease already
/// registered for this request is not registered twice.
pub fn release_on_cleanup(rq: Req, key: &Key, token: Option<LeaseToken>) {
    let Some(token) = token else { return };
    let request = rq.raw() as usize;
    let known = HELD.with(|h| {
        let mut h = h.borrow_mut();
        let known = h
            .iter()
            .any(|&(r, k, t)| r == request && k == *key && t == token);
        if !known {
            h.push((request, *key, token));
        }
        known
    });
    if known {
        return;
    }
    let held = HeldLease {
        request,
        key: *key,
        token,
    };
    let registered = rq.on_cleanup(held, |h: &mut HeldLease| {
        HELD.with(|held| {
            held.borrow_mut()
                .retain(|&(r, k, t)| !(r == h.request && k == h.key && t == h.token))
        });
        if let Some(store) = store() {
            let _ = store.release_lease(&h.key, h.token, Release::Done);
        }
    });
    if !registered {
        HELD.with(|h| {
            h.borrow_mut()
                .retain(|&(r, _, t)| !(r == request && t == token))
        });
    }
}

/// A storable response on its way to the client: what will be committed, and the body so far.
struct Capture {
    prepared: Prepared,
    body: Vec<u8>,
}

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY_FILTER: ngx_http_output_body_filter_pt = None;

/// Installs the capture filters at the top of both chains (postconfiguration).
///
/// # Safety
/// `cf` is the http configuration being parsed, in the single-threaded master.
pub unsafe fn install(_cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: the filter statics are only written here, before any request runs.
    unsafe {
        NEXT_HEADER_FILTER = nginx_sys::ngx_http_top_header_filter;
        nginx_sys::ngx_http_top_header_filter = Some(header_filter);
        NEXT_BODY_FILTER = nginx_sys::ngx_http_top_body_filter;
        nginx_sys::ngx_http_top_body_filter = Some(body_filter);
    }
    OK
}

extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard("the cache header filter", ERROR, || {
        // SAFETY: nginx passes a live request.
        if let Some(rq) = unsafe { Req::from_raw(r) } {
            if !decide(rq) {
                return OK;
            }
        }
        // SAFETY: set once in install, before any request.
        match unsafe { NEXT_HEADER_FILTER } {
            Some(next) => unsafe { next(r) },
            None => ERROR,
        }
    })
}

extern "C" fn body_filter(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    guard("the cache body filter", ERROR, || {
        // SAFETY: nginx passes a live request and its output chain.
        if let Some(rq) = unsafe { Req::from_raw(r) } {
            if let Some(rev) = rq.ctx::<RequestCtx>().and_then(|c| c.revalidation.as_mut()) {
                // A revalidation's answer is for the cache only: read, never passed on.
                // SAFETY: the chain is valid for this call.
                unsafe { revalidate::body(rq, rev, input) };
                return OK;
            }
            // SAFETY: the chain is valid for this call.
            unsafe { capture(rq, input) };
        }
        // SAFETY: set once in install, before any request.
        match unsafe { NEXT_BODY_FILTER } {
            Some(next) => unsafe { next(r, input) },
            None => ERROR,
        }
    })
}

/// Decides whether the response being sent is stored, and says so in `X-Cache`. False for
/// a revalidation subrequest's answer, which goes no further.
fn decide(rq: Req) -> bool {
    let Some(c) = rq.ctx::<RequestCtx>() else {
        return true;
    };
    if let Some(rev) = c.revalidation.as_mut() {
        revalidate::header(rq, rev);
        return false;
    }
    if !rq.is_main() {
        return true;
    }
    decide_main(rq, c);
    true
}

fn decide_main(rq: Req, c: &mut RequestCtx) {
    let Some(store) = store() else { return };
    // Tier monotonicity: an answer from a node that had applied fewer purges than this one
    // had when the fill began is passed on, never stored. Its header gives way to ours.
    let upstream_seq = match super::fleet::applied(store) {
        Some(_) => rq
            .hide_header_out(super::fleet::SEQ_HEADER)
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<StreamId>().ok()),
        None => None,
    };
    // Every answer says how far this node is in the fleet's purges (hits included).
    if let Some(mine) = super::fleet::applied(store) {
        let _ = rq.push_header(
            super::fleet::SEQ_HEADER.as_bytes(),
            mine.to_string().as_bytes(),
            Strings::Copy,
        );
    }
    if c.served.is_some() {
        return;
    }
    let lcf = rq.loc_conf();
    if let Some((key, url)) = c.invalidate.take() {
        if rq.status() < 400 {
            invalidate(rq, store, &key, &url);
            // RFC 9111 4.4: the URLs in Location and Content-Location too, on this origin.
            let targets: Vec<Url> = rq
                .headers_out()
                .filter(|h| {
                    let n = bytes(&h.key);
                    n.eq_ignore_ascii_case(b"location")
                        || n.eq_ignore_ascii_case(b"content-location")
                })
                .filter_map(|h| url.same_origin(bytes(&h.value)))
                .filter(|t| t.path != url.path)
                .collect();
            for t in targets {
                let port = t.port.unwrap_or(rq.local_port());
                let k = default_key(&t.scheme, t.host.as_bytes(), port, t.path.as_bytes());
                invalidate(rq, store, &k, &t);
            }
        }
    }
    if let (Some(up), Some(start), Some(fill)) =
        (upstream_seq, c.fleet_seq_at_start, c.fill.as_mut())
    {
        if up < start {
            fill.release(store, Release::Done);
            c.fill = None;
            c.status = CacheStatus::Bypass;
        }
    }
    if let Some(fill) = c.fill.as_mut() {
        match prepare_response(rq, store, fill) {
            Ok(prepared) => {
                let body = Vec::with_capacity(prepared.capacity);
                fill.capture = Some(Capture { prepared, body });
            }
            Err(why) => {
                // Requests for the key go to the origin for a while without waiting for one
                // another (a hit-for-pass), unless only this request kept it from storage.
                // A 206 or a 304 answers this request's Range or conditionals, not the URL.
                let request_driven = why.from_request() || matches!(rq.status(), 206 | 304);
                let how = if request_driven {
                    Release::Done
                } else {
                    Release::Pass { ms: PASS_MS }
                };
                fill.release(store, how);
                c.fill = None;
                c.status = CacheStatus::Bypass;
            }
        }
    }
    // After the capture read the origin's headers: our Vary is not the origin's.
    if c.status != CacheStatus::Bypass || c.fill.is_some() {
        variant_headers(rq, lcf, rq.content_type());
    }
    let _ = rq.push_header(b"X-Cache", c.status.x_cache().as_bytes(), Strings::Borrowed);
}

/// The response as the core's fill rules read it.
/// Behind an upstream the origin's `Date`, which nginx hides from `headers_out`, comes first.
pub fn response_head(rq: Req<'_>) -> ResponseHead<'_> {
    let mut headers: Vec<(&[u8], &[u8])> = Vec::new();
    if let Some(date) = rq.upstream_date() {
        headers.push((b"Date", date));
    }
    headers.extend(rq.headers_out().map(|h| (bytes(&h.key), bytes(&h.value))));
    ResponseHead {
        status: rq.status(),
        headers,
        content_type: rq.content_type(),
        content_length: rq.response_length(),
        last_modified: rq.last_modified(),
        connection_listed: rq.upstream_connection_listed(),
    }
}

/// The request as the core's fill rules read it.
pub fn request_head<'a>(
    rq: Req,
    cache_control: Option<&'a [u8]>,
    header: &'a dyn Fn(&str) -> Option<Vec<u8>>,
) -> RequestHead<'a> {
    RequestHead {
        authorization: rq.has_authorization(),
        cache_control,
        header,
    }
}

/// The location's storage rules.
pub fn fill_policy<'a>(rq: Req<'a>, store: &Store) -> FillPolicy<'a> {
    let lcf = rq.loc_conf();
    FillPolicy {
        statuses: lcf.statuses(),
        default_lifetime: (lcf.valid >= 0).then_some(lcf.valid as u64),
        max_object: (lcf.max_object as u64).min(store.max_object()),
    }
}

/// What will be committed if the response is storable.
fn prepare_response(rq: Req, store: &Store, fill: &Fill) -> Result<Prepared, NotStored> {
    let resp = response_head(rq);
    let req_cc = rq.header_in("cache-control");
    let header = |name: &str| rq.header_in(name);
    let req = request_head(rq, req_cc.as_deref(), &header);
    let policy = fill_policy(rq, store);
    let now = nginx_sys::ngx_time() as i64;
    prepare(&resp, &req, &policy, &fill.url.id(), &store.buckets(), now)
}

/// Copies the body as it passes and commits when the last buffer has been seen.
///
/// # Safety
/// `input` must be the valid output chain of this call.
unsafe fn capture(rq: Req, input: *mut ngx_chain_t) {
    if !rq.is_main() {
        return;
    }
    let Some(c) = rq.ctx::<RequestCtx>() else {
        return;
    };
    let Some(fill) = c.fill.as_mut() else { return };
    let Some(cap) = fill.capture.as_mut() else {
        return;
    };
    let max = cap.prepared.max_body as usize;
    // SAFETY: as the caller promises.
    match unsafe { read_chain(input, max, &mut cap.body) } {
        // Over the size limit or unreadable: this response is not stored.
        ChainRead::TooLarge | ChainRead::Unreadable => {
            fill.capture = None;
            if let Some(store) = store() {
                fill.release(store, Release::Pass { ms: PASS_MS });
            }
        }
        ChainRead::Read { last_buf: true, .. } => {
            let replaces = c.status == CacheStatus::Expired;
            if let (Some(fill), Some(store)) = (c.fill.take(), store()) {
                commit(rq, store, fill, replaces);
            }
        }
        ChainRead::Read { .. } => {}
    }
}

/// RFC 9111 4.4: a non-error response to an unsafe method invalidates its target URI (the
/// purge path's own plan, as a URL purge).
fn invalidate(rq: Req, store: &Store, key: &Key, url: &Url) {
    if let Err(f) = purge::invalidate(store, url, rq.local_port(), key) {
        if fault_log_allowed() {
            ngx_log_error!(
                NGX_LOG_WARN,
                rq.log(),
                "pagespeed cache: invalidation after {} not applied: {f}",
                url.path
            );
        }
    }
}

/// Stores the captured response, then ends the lease. `replaces`: a stale entry existed (a
/// refill without revalidation): the new original replaces its alternates.
fn commit(rq: Req, store: &Store, mut fill: Fill, replaces: bool) {
    let Some(cap) = fill.capture.take() else {
        fill.release(store, Release::Done);
        return;
    };
    let p = &cap.prepared;
    let meta = p.meta_for(&cap.body);
    let alt = Alternate {
        descriptor: p.descriptor.0,
        scopes: &p.scopes,
        meta: &meta,
        body: &cap.body,
    };
    let outcome = if replaces {
        let spellings = fill.url.tag_spellings();
        let dependents: Vec<&str> = spellings.iter().map(String::as_str).collect();
        store.replace(fill.ticket, &fill.key, &fill.url.id(), &dependents, &alt)
    } else {
        store.commit(fill.ticket, &fill.key, &alt)
    };
    fill.release(store, Release::Done);
    match outcome {
        CommitOutcome::Stored => {
            let lcf = rq.loc_conf();
            if lcf.build_on_fill == 1 && transformable(p.descriptor) {
                for target in on_fill(p.kind, &lcf.variants()) {
                    builder::submit(Job {
                        key: fill.key,
                        target,
                        url: fill.url.path.clone(),
                    });
                }
            }
        }
        CommitOutcome::Fenced | CommitOutcome::TooLarge => {}
        CommitOutcome::Fault(f) => {
            if fault_log_allowed() {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    rq.log(),
                    "pagespeed cache: fill not stored: {f}"
                );
            }
        }
    }
}
