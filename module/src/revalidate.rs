//! Revalidation through nginx: a subrequest to the same location (or, for a revalidate-first
//! purge, to the URL's location in the purge's server) asks the origin conditionally. Its
//! answer passes through our filters and never reaches the client: unchanged refreshes the
//! stored original and every variant built from it, changed replaces them, anything else is
//! kept to be replayed. The request that started it is told the outcome; one served stale
//! meanwhile (a background revalidation) is not.

use std::ffi::c_void;

use nginx_sys::{
    ngx_chain_t, ngx_http_request_t, ngx_int_t, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_WARN,
};
use ngx::ngx_log_error;

use super::builder;
use super::ffi::{bytes, consume_chain, read_chain, ChainRead, Req, UpstreamAnswer};
use super::fill::{fill_policy, request_head, response_head};
use super::hit::RequestCtx;
use super::lifecycle::store;
use super::log::{fault_log_allowed, guard};
use ngx_http_pagespeed_module::cache::fill::prepare;
use ngx_http_pagespeed_module::cache::revalidate::{
    verdict, verdict_by_digest, Update, Validators, Verdict,
};
use ngx_http_pagespeed_module::cache::stale::Failure;
use ngx_http_pagespeed_module::http::meta::{MetaView, StoredMeta};
use ngx_http_pagespeed_module::http::url::Url;
use ngx_http_pagespeed_module::store::{
    Alternate, CommitOutcome, FillTicket, FreshnessCounter, Key, Kin, LeaseToken, Refresh, Release,
    Store,
};
use ngx_http_pagespeed_module::transform::builders::{transformable, Job};
use ngx_http_pagespeed_module::variant::{on_fill, Descriptor};

/// How long requests go to the origin without waiting after a fill found the response not
/// storable (a hit-for-pass).
const PASS_MS: u64 = 3000;

/// What a revalidation found, for the request that started it.
#[derive(Debug)]
pub enum Outcome {
    /// The stored original (and its variants) are fresh again.
    Unchanged,
    /// The origin had other bytes: they replaced the entry.
    Changed,
    /// A hard purge since the revalidation started, or the entry went meanwhile: nothing
    /// was stored; look up (and fill) afresh.
    Gone,
    /// A 304 about another representation (its strong ETag is not the stored one): nothing
    /// was updated; refill without conditionals.
    Mismatch,
    /// The origin's answer, to give the client as it is: not about the stored bytes, or not
    /// storable. `failure` says whether it counts as an origin error (stale-if-error).
    Answer {
        failure: Option<Failure>,
        /// Encoded metadata and body, when the answer was captured whole.
        replay: Option<(Vec<u8>, Vec<u8>)>,
    },
}

/// What the revalidation subrequest knows and accumulates.
pub struct Revalidation {
    ticket: FillTicket,
    key: Key,
    url: Url,
    /// The stored original it checks, and that original's metadata.
    target: Descriptor,
    original: Vec<u8>,
    validators: Validators,
    lease: Option<LeaseToken>,
    /// Where the outcome is reported (the starting request's context), or null.
    report: *mut Option<Outcome>,
    /// Set by the header filter.
    verdict: Option<Verdict>,
    /// The answer's status and metadata (for a replay or a store), and its body so far.
    status: u16,
    meta: Option<ngx_http_pagespeed_module::cache::fill::Prepared>,
    replay_meta: Option<Vec<u8>>,
    body: Vec<u8>,
    too_large: bool,
    done: bool,
}

/// Starts the revalidation of `target` of `key` for `rq`: a clone of it (`uri` None) or a
/// request for `uri`. `report` receives the outcome (null: nobody waits for it). False if
/// the subrequest could not be made (the caller fills as on a miss).
#[allow(clippy::too_many_arguments)]
pub fn start(
    rq: Req,
    store: &Store,
    uri: Option<&[u8]>,
    background: bool,
    key: Key,
    url: Url,
    target: Descriptor,
    original: Vec<u8>,
    lease: Option<LeaseToken>,
    report: *mut Option<Outcome>,
) -> bool {
    let Some(view) = MetaView::parse(&original) else {
        return false;
    };
    let validators = Validators::of(&view);
    let Some(sr) = rq.subrequest(uri, background, Some(finished), std::ptr::null_mut()) else {
        return false;
    };
    sr.make_get();
    // A revalidate-first purge asks for `uri` on behalf of an admin request.
    if !sr.conditional_headers(&validators.conditional_headers(), uri.is_some()) {
        return false;
    }
    let rev = Revalidation {
        ticket: store.begin_fill(),
        key,
        url,
        target,
        original,
        validators,
        lease,
        report,
        verdict: None,
        status: 0,
        meta: None,
        replay_meta: None,
        body: Vec::new(),
        too_large: false,
        done: false,
    };
    let mut c = RequestCtx::new(ngx_http_pagespeed_module::cache::CacheStatus::Bypass);
    c.revalidation = Some(rev);
    if sr.set_ctx(c).is_none() {
        return false;
    }
    store.count_freshness(FreshnessCounter::Revalidations);
    true
}

/// The header filter's part for a revalidation subrequest: judge the answer from its status
/// and headers. The header is never passed on.
pub fn header(rq: Req, rev: &mut Revalidation) {
    rq.set_header_sent();
    let Some(store) = store() else { return };
    rev.status = rq.status();
    let etag = rq
        .headers_out()
        .find(|h| bytes(&h.key).eq_ignore_ascii_case(b"etag"))
        .map(|h| bytes(&h.value));
    let v = verdict(&rev.validators, rev.status, etag);
    rev.verdict = Some(v);
    let resp = response_head(rq);
    let header = |name: &str| rq.header_in(name);
    let req_cc = rq.header_in("cache-control");
    let req = request_head(rq, req_cc.as_deref(), &header);
    let policy = fill_policy(rq, store);
    let now = nginx_sys::ngx_time() as i64;
    match v {
        Verdict::Unchanged if rev.status == 304 => {
            let Some(orig) = MetaView::parse(&rev.original) else {
                return;
            };
            let update = Update::new(&resp, &orig, &req, &policy, now);
            finish_unchanged(rq, store, rev, &update);
        }
        Verdict::Unchanged | Verdict::ByDigest => {
            // The bytes decide (or, with a matching strong ETag, the headers already did): the
            // body is read either way, and kept for a possible replacement.
            rev.meta = prepare(&resp, &req, &policy, &rev.url.id(), &store.buckets(), now).ok();
            if rev.meta.is_none() {
                rev.replay_meta = replay_meta(&resp, now);
            }
        }
        Verdict::Changed | Verdict::Other => rev.replay_meta = replay_meta(&resp, now),
        Verdict::Mismatch => report(rev, store, Outcome::Mismatch, Release::Done),
    }
}

/// The metadata to replay an answer with (any status), if it encodes.
fn replay_meta(
    resp: &ngx_http_pagespeed_module::cache::fill::ResponseHead,
    now: i64,
) -> Option<Vec<u8>> {
    use ngx_http_pagespeed_module::cache::fill::replayed;
    StoredMeta {
        status: resp.status,
        stored_at: now,
        expires_at: now,
        last_modified: resp.last_modified.unwrap_or(-1),
        content_type: resp.content_type.to_vec(),
        headers: resp
            .headers
            .iter()
            .filter(|(n, _)| {
                let lower = n.to_ascii_lowercase();
                replayed(&lower) && !resp.hop_by_hop(&lower)
            })
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect(),
        ..Default::default()
    }
    .encode()
}

/// The body filter's part: read everything (bounded), pass nothing on, decide at the end.
///
/// # Safety
/// `input` must be the valid output chain of this call.
pub unsafe fn body(rq: Req, rev: &mut Revalidation, input: *mut ngx_chain_t) {
    let Some(store) = store() else { return };
    if !rev.done && !rev.too_large {
        let max = store.max_object() as usize;
        // SAFETY: as the caller promises.
        match unsafe { read_chain(input, max, &mut rev.body) } {
            ChainRead::TooLarge | ChainRead::Unreadable => {
                rev.too_large = true;
                rev.body = Vec::new();
            }
            ChainRead::Read { .. } => {}
        }
    }
    // SAFETY: as the caller promises; nothing downstream will read these buffers.
    let last = unsafe { chain_ends(input) };
    unsafe { consume_chain(input) };
    if last && !rev.done {
        finish_answer(rq, store, rev);
    }
}

/// Whether a chain holds the last buffer of a (sub)request's body.
///
/// # Safety
/// As `read_chain`.
unsafe fn chain_ends(chain: *mut ngx_chain_t) -> bool {
    let mut cl = chain;
    // SAFETY: links and buffers of a valid chain.
    while let Some(link) = unsafe { cl.as_ref() } {
        if let Some(b) = unsafe { link.buf.as_ref() } {
            if b.last_buf() != 0 || b.last_in_chain() != 0 {
                return true;
            }
        }
        cl = link.next;
    }
    false
}

/// The whole answer is in: the outcome of a 200 (or of anything else).
fn finish_answer(rq: Req, store: &Store, rev: &mut Revalidation) {
    match rev.verdict {
        Some(Verdict::Unchanged) | Some(Verdict::ByDigest) if !rev.too_large => {
            let unchanged = rev.verdict == Some(Verdict::Unchanged)
                || verdict_by_digest(&rev.validators, &rev.body) == Verdict::Unchanged;
            match (unchanged, rev.meta.take()) {
                (true, Some(p)) => {
                    // The 200's own headers are the update (it carries all of them).
                    let meta = p.meta_for(&rev.body);
                    let update = Update::from_meta(&meta);
                    finish_unchanged(rq, store, rev, &update);
                }
                (false, Some(p)) => finish_changed(rq, store, rev, p),
                (_, None) => {
                    let outcome = not_stored(rev);
                    report(rev, store, outcome, Release::Pass { ms: PASS_MS })
                }
            }
        }
        _ => {
            let failure = failure_of(rq, rev.status);
            let replay = if rev.too_large {
                None
            } else {
                rev.replay_meta
                    .take()
                    .map(|m| (m, std::mem::take(&mut rev.body)))
            };
            let outcome = Outcome::Answer { failure, replay };
            let how = if failure.is_some() {
                Release::Done
            } else {
                Release::Pass { ms: PASS_MS }
            };
            report(rev, store, outcome, how);
        }
    }
}

/// An answer that is not storable, given as it is.
fn not_stored(rev: &mut Revalidation) -> Outcome {
    let replay = if rev.too_large {
        None
    } else {
        rev.replay_meta
            .take()
            .map(|m| (m, std::mem::take(&mut rev.body)))
    };
    Outcome::Answer {
        failure: None,
        replay,
    }
}

/// Whether an answer that says nothing about the stored bytes is an origin failure.
fn failure_of(rq: Req, status: u16) -> Option<Failure> {
    match (status, rq.upstream_answer()) {
        (502, UpstreamAnswer::NoAnswer) => Some(Failure::Error),
        (504, UpstreamAnswer::NoAnswer) => Some(Failure::Timeout),
        (s, _) if s >= 500 => Some(Failure::Status(s)),
        _ => None,
    }
}

fn finish_unchanged(rq: Req, store: &Store, rev: &mut Revalidation, update: &Update) {
    let target = rev.target;
    // Variants, and the gzip and br alternates builders make, are built from the identity
    // original (an encoded alternate beside it is a builder's: see revalidation_target); an
    // origin-varied original stands alone.
    let builds_from_target = target == Descriptor::SOURCE;
    let digest = rev.validators.digest;
    // An alternate built from another original (this one was evicted and filled again with
    // new bytes) carries that original's digest: a 304 about this one says nothing of it.
    let kin = |d: u32, meta: &[u8]| {
        if !builds_from_target || d == target.0 || Descriptor(d).origin_varies() {
            Kin::Unrelated
        } else if MetaView::parse(meta).is_some_and(|m| m.digest == digest) {
            Kin::Built
        } else {
            Kin::Outdated
        }
    };
    let r = store.refresh(rev.ticket, &rev.key, target.0, kin, |_, meta| {
        update.apply(meta)
    });
    let outcome = match r {
        Refresh::Refreshed { .. } => Outcome::Unchanged,
        Refresh::Fenced | Refresh::Gone => Outcome::Gone,
        Refresh::Fault(f) => {
            log_fault(rq, &format!("revalidation not stored: {f}"));
            Outcome::Gone
        }
    };
    report(rev, store, outcome, Release::Done);
}

fn finish_changed(
    rq: Req,
    store: &Store,
    rev: &mut Revalidation,
    p: ngx_http_pagespeed_module::cache::fill::Prepared,
) {
    let meta = p.meta_for(&rev.body);
    let alt = Alternate {
        descriptor: p.descriptor.0,
        scopes: &p.scopes,
        meta: &meta,
        body: &rev.body,
    };
    let spellings = rev.url.tag_spellings();
    let dependents: Vec<&str> = spellings.iter().map(String::as_str).collect();
    let outcome = match store.replace(rev.ticket, &rev.key, &rev.url.id(), &dependents, &alt) {
        CommitOutcome::Stored => {
            let lcf = rq.loc_conf();
            if lcf.build_on_fill == 1 && transformable(p.descriptor) {
                for target in on_fill(p.kind, &lcf.variants()) {
                    builder::submit(Job {
                        key: rev.key,
                        target,
                        url: rev.url.path.clone(),
                    });
                }
            }
            Outcome::Changed
        }
        CommitOutcome::Fenced => Outcome::Gone,
        CommitOutcome::TooLarge => not_stored(rev),
        CommitOutcome::Fault(f) => {
            log_fault(rq, &format!("revalidated entry not stored: {f}"));
            Outcome::Gone
        }
    };
    report(rev, store, outcome, Release::Done);
}

fn log_fault(rq: Req, msg: &str) {
    if fault_log_allowed() {
        ngx_log_error!(NGX_LOG_WARN, rq.log(), "pagespeed cache: {msg}");
    }
}

/// Hands the outcome over and releases the lease.
fn report(rev: &mut Revalidation, store: &Store, outcome: Outcome, how: Release) {
    if rev.done {
        return;
    }
    rev.done = true;
    if let Some(t) = rev.lease.take() {
        let _ = store.release_lease(&rev.key, t, how);
    }
    // SAFETY: report is null or the outcome slot of the starting request's context, which
    // lives in the same pool as this subrequest and outlives it.
    if let Some(slot) = unsafe { rev.report.as_mut() } {
        *slot = Some(outcome);
    }
}

/// nginx finalizes the subrequest: an answer that never completed (no response, an aborted
/// body) is an origin failure. A status nginx will turn into an error page is not final yet:
/// that page passes through the filters first.
extern "C" fn finished(r: *mut ngx_http_request_t, _data: *mut c_void, rc: ngx_int_t) -> ngx_int_t {
    guard("a revalidation's end", rc, || {
        // SAFETY: nginx passes the live subrequest.
        let Some(rq) = (unsafe { Req::from_raw(r) }) else {
            return rc;
        };
        let Some(rev) = rq.ctx::<RequestCtx>().and_then(|c| c.revalidation.as_mut()) else {
            return rc;
        };
        let special = rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t
            && rc != nginx_sys::NGX_HTTP_CLOSE as ngx_int_t;
        if !rev.done && !special {
            if let Some(store) = store() {
                let failure = if rc == nginx_sys::NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t {
                    Failure::Timeout
                } else {
                    Failure::Error
                };
                let outcome = Outcome::Answer {
                    failure: Some(failure),
                    replay: None,
                };
                report(rev, store, outcome, Release::Done);
            }
        }
        rc
    })
}
