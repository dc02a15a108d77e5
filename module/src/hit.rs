//! The lookup in front of any content handler: a PRECONTENT-phase handler that serves hits
//! from its own content handler (the location's handler is never run), takes a fill ticket
//! on a miss, and the `$pagespeed_cache_status` variable.

use nginx_sys::{
    ngx_array_push, ngx_conf_t, ngx_event_t, ngx_http_add_variable, ngx_http_handler_pt,
    ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, ngx_http_request_t, ngx_http_variable_value_t,
    ngx_int_t, ngx_str_t, ngx_uint_t, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_VAR_NOCACHEABLE,
    NGX_LOG_WARN,
};
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_log_error;

use super::compat::CacheControlLines;
use super::conf::LocConf;
use super::ffi::{arm, ReplayedHead, Req, Strings, Typed, AGAIN, DECLINED, ERROR, OK};
use super::fill::{self, Fill};
use super::fleet::TierCheck;
use super::lifecycle::store;
use super::log::{fault_log_allowed, guard};
use super::revalidate::{self, Outcome, Revalidation};
use super::{admin, builder};
use ngx_http_pagespeed_module::cache::hit::{
    not_modified, revalidation_target, split_content_type, usable, Selector, Usable,
};
use ngx_http_pagespeed_module::cache::stale::{on_error, while_revalidating, Failure, Staleness};
use ngx_http_pagespeed_module::cache::CacheStatus;
use ngx_http_pagespeed_module::http::meta::MetaView;
use ngx_http_pagespeed_module::http::method;
use ngx_http_pagespeed_module::http::url::{custom_key, default_key, split_host, Url};
use ngx_http_pagespeed_module::store::{
    monotonic_ms, FreshnessCounter, Key, Lease, LeaseRequest, LeaseToken, Lookup, Release,
    ScopeSet, Sink, Store,
};
use ngx_http_pagespeed_module::transform::builders::Job;
use ngx_http_pagespeed_module::variant::{
    accept_ch, Capabilities, CapabilityHeaders, Descriptor, SourceKind,
};

/// A hit: metadata then body, copied into request pool memory by the lookup. The metadata is
/// read in place (`MetaView`): its strings become the response's headers without a copy.
pub struct Served {
    ptr: *const u8,
    len: usize,
    meta_len: usize,
}

impl Served {
    /// A replayed answer (metadata and body) copied into the request's pool.
    fn copy(rq: Req, meta: &[u8], body: &[u8]) -> Option<Served> {
        let b = rq.pool_bytes(meta.len() + body.len())?;
        b[..meta.len()].copy_from_slice(meta);
        b[meta.len()..].copy_from_slice(body);
        // SAFETY: pool memory of this request, meta_len within it.
        Some(unsafe { Served::new(b, meta.len()) })
    }

    /// # Safety
    /// `bytes` must be pool memory of the request whose context this will be stored in (the
    /// context is freed with that pool, so the bytes outlive every read through it), and
    /// `meta_len <= bytes.len()`.
    unsafe fn new(bytes: &[u8], meta_len: usize) -> Served {
        Served {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
            meta_len,
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: pool memory that outlives this context (see `new`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn meta(&self) -> Option<MetaView<'_>> {
        MetaView::parse(self.meta_bytes())
    }

    fn meta_bytes(&self) -> &[u8] {
        &self.bytes()[..self.meta_len]
    }

    fn body(&self) -> &[u8] {
        &self.bytes()[self.meta_len..]
    }
}

/// Where a request stands in the lookup (PRECONTENT may run several times for one request:
/// after a wait for another request's fill, and after its own revalidation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Not looked up yet.
    Start,
    /// Waiting for another request's fill of the key (its lease), since this time.
    Waiting { since_ms: u64 },
    /// Waiting for its own revalidation subrequest.
    Revalidating,
    /// A shield waiting to catch up with the purges the asking node had applied, since then.
    CatchingUp { since_ms: u64 },
    /// Decided: PRECONTENT has nothing more to do.
    Done,
}

/// This module's state for one request, in its pool.
pub struct RequestCtx {
    pub status: CacheStatus,
    pub served: Option<Served>,
    pub fill: Option<Fill>,
    /// An unsafe method's target: invalidated if the response is not an error (RFC 9111 4.4).
    pub invalidate: Option<(Key, Url)>,
    pub stage: Stage,
    /// The stale alternate the first lookup found, kept to be served if the origin fails.
    pub stale: Option<Served>,
    /// Its own revalidation's outcome, written by the subrequest.
    pub outcome: Option<Outcome>,
    /// Set on a revalidation subrequest: what it checks and collects.
    pub revalidation: Option<Revalidation>,
    /// A revalidate-first purge waiting for its revalidation: the key, the URL and how many
    /// alternates the key had when it started.
    pub purge_first: Option<(Key, Url, usize)>,
    /// The timer of a wait for another request's fill.
    wait_timer: Option<*mut ngx_event_t>,
    /// A fleet purge waiting for its receipts.
    pub fleet: Option<super::fleet::Waiting>,
    /// This node's applied stream id when the request's lookup began (fleet only).
    pub fleet_seq_at_start: Option<ngx_http_pagespeed_module::fleet::StreamId>,
    /// Whether this request holds one `blocked` count on the main request for its wait. A
    /// waiting request's phases can run again before its timer fires (an event on the client
    /// connection); it must not block itself twice, or the timer's one unblock leaves it
    /// blocked for good when the client goes.
    blocked: bool,
    /// When (seconds) it began to wait: an entry refreshed since then is what it waited for,
    /// even if that answer gave it no freshness (a 304 with max-age=0).
    waiting_since: i64,
    /// Revalidations this request ran: each new soft purge during one makes it ask again;
    /// past a few it goes to the origin unstored rather than ask for ever.
    rounds: u8,
}

impl RequestCtx {
    pub fn new(status: CacheStatus) -> RequestCtx {
        RequestCtx {
            status,
            served: None,
            fill: None,
            invalidate: None,
            stage: Stage::Start,
            stale: None,
            outcome: None,
            revalidation: None,
            purge_first: None,
            wait_timer: None,
            fleet: None,
            fleet_seq_at_start: None,
            blocked: false,
            waiting_since: 0,
            rounds: 0,
        }
    }
}

/// Who a request is, borrowed from it: nginx has already lowercased the host and dropped its
/// port and trailing dot; the port is the listener's.
struct Identity<'a> {
    scheme: &'static str,
    host: std::borrow::Cow<'a, [u8]>,
    uri: &'a [u8],
    port: u16,
}

impl Identity<'_> {
    /// The owned URL, built only when a miss, a build or an invalidation needs it.
    fn url(&self) -> Url {
        Url {
            scheme: self.scheme.into(),
            host: String::from_utf8_lossy(&self.host).into_owned(),
            path: String::from_utf8_lossy(self.uri).into_owned(),
            port: Some(self.port),
        }
    }
}

/// The request's key and identity; None if a configured key cannot be evaluated.
fn identity<'a>(rq: &Req<'a>, lcf: &LocConf) -> Option<(Key, Identity<'a>)> {
    let server = rq.server();
    // nginx normalized a Host header; a configured server name may still need it.
    let host =
        if server.iter().any(|c| c.is_ascii_uppercase() || *c == b':') || server.ends_with(b".") {
            std::borrow::Cow::Owned(
                split_host(&String::from_utf8_lossy(server))
                    .host
                    .into_bytes(),
            )
        } else {
            std::borrow::Cow::Borrowed(server)
        };
    let id = Identity {
        scheme: rq.scheme(),
        host,
        uri: rq.unparsed_uri(),
        port: rq.local_port(),
    };
    let key = if lcf.key.is_null() {
        default_key(id.scheme, &id.host, id.port, id.uri)
    } else {
        custom_key(rq.complex_value(lcf.key)?)
    };
    Some((key, id))
}

/// Copies a lookup's bytes straight into request pool memory.
struct PoolSink<'a> {
    rq: Req<'a>,
    reserved: Option<(*const u8, usize)>,
}

impl<'a> PoolSink<'a> {
    /// What the lookup copied (after it returned a hit: the store fills what it reserves).
    fn copied(&self) -> &'a [u8] {
        match self.reserved {
            // SAFETY: request pool memory `reserve` handed out, alive until the request ends.
            Some((p, len)) => unsafe { std::slice::from_raw_parts(p, len) },
            None => &[],
        }
    }
}

impl Sink for PoolSink<'_> {
    fn reserve(&mut self, len: usize) -> Option<&mut [u8]> {
        let b = self.rq.pool_bytes(len)?;
        self.reserved = Some((b.as_ptr(), b.len()));
        Some(b)
    }
}

/// Registers `$pagespeed_cache_status`.
///
/// # Safety
/// `cf` is the configuration being parsed (preconfiguration).
pub unsafe fn add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    let mut name = ngx_str_t {
        len: 22,
        data: c"pagespeed_cache_status".as_ptr() as *mut u8,
    };
    // SAFETY: nginx copies the name; the variable lives in the configuration.
    unsafe {
        let v = ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t);
        if v.is_null() {
            return ERROR;
        }
        (*v).get_handler = Some(cache_status_variable);
    }
    OK
}

extern "C" fn cache_status_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    guard("the $pagespeed_cache_status variable", ERROR, || {
        // SAFETY: nginx passes a live request and a value to fill.
        let (Some(rq), Some(v)) = (unsafe { Req::from_raw(r) }, unsafe { v.as_mut() }) else {
            return ERROR;
        };
        match rq.ctx::<RequestCtx>() {
            Some(c) => {
                let s = c.status.as_str();
                v.set_len(s.len() as u32);
                v.set_valid(1);
                v.set_no_cacheable(1);
                v.set_not_found(0);
                v.data = s.as_ptr() as *mut u8;
            }
            None => v.set_not_found(1),
        }
        OK
    })
}

/// Installs the lookup handler (postconfiguration).
///
/// # Safety
/// `cf` is the http configuration being parsed.
pub unsafe fn install(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: the core main conf exists during http postconfiguration.
    unsafe {
        let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(&*cf) else {
            return ERROR;
        };
        let phase = &mut cmcf.phases[ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE as usize];
        let h = ngx_array_push(&mut phase.handlers) as *mut ngx_http_handler_pt;
        if h.is_null() {
            return ERROR;
        }
        *h = Some(precontent_handler);
    }
    OK
}

extern "C" fn precontent_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard("the cache lookup", DECLINED, || {
        // SAFETY: nginx passes a live request.
        match unsafe { Req::from_raw(r) } {
            Some(rq) => precontent(rq),
            None => DECLINED,
        }
    })
}

fn precontent(rq: Req) -> ngx_int_t {
    let lcf = rq.loc_conf();
    let purge_method = lcf.purge_method();
    if !purge_method.is_empty() && rq.method_name() == purge_method && rq.is_main() {
        admin::take_purge_method(rq);
        return DECLINED;
    }
    // Subrequests (SSI, mirror, auth_request, our own revalidations) neither read nor fill.
    if lcf.cache != 1 || !rq.is_main() {
        return DECLINED;
    }
    let Some(store) = store() else {
        return DECLINED;
    };
    let ctx = match rq.ctx::<RequestCtx>() {
        Some(c) if c.stage == Stage::Done => return DECLINED,
        Some(c) => c,
        None => {
            let method = rq.method();
            if method != NGX_HTTP_GET && method != NGX_HTTP_HEAD {
                let mut c = RequestCtx::new(CacheStatus::Bypass);
                c.stage = Stage::Done;
                // RFC 9111 4.4: any method not known to be safe, an unknown one included.
                if !method::is_safe(rq.method_name()) {
                    c.invalidate = identity(&rq, lcf).map(|(k, id)| (k, id.url()));
                }
                rq.set_ctx(c);
                return DECLINED;
            }
            match rq.set_ctx(RequestCtx::new(CacheStatus::Miss)) {
                Some(c) => c,
                None => return DECLINED,
            }
        }
    };
    let Some((key, id)) = identity(&rq, lcf) else {
        ctx.stage = Stage::Done;
        return DECLINED;
    };
    ctx.fleet_seq_at_start = super::fleet::applied(store);
    let first = ctx.stage == Stage::Start;
    match super::fleet::tier_check(&rq, store, first) {
        TierCheck::Serve => {
            if matches!(ctx.stage, Stage::CatchingUp { .. }) {
                ctx.stage = Stage::Start;
            }
        }
        TierCheck::Behind => return catch_up(rq, ctx),
    }
    if super::fleet::fenced(store) {
        // Not confirmed caught up with the fleet's purges: nothing from the cache.
        return origin_only(rq, ctx, CacheStatus::Bypass);
    }
    lookup(rq, store, ctx, key, &id)
}

/// One lookup round: serve, revalidate, wait for another fill, or fill.
fn lookup(rq: Req, store: &Store, ctx: &mut RequestCtx, key: Key, id: &Identity) -> ngx_int_t {
    let lcf = rq.loc_conf();
    let policy = lcf.variants();
    // One walk over the request headers, borrowing the values this location's policy selects
    // on (a plain cache reads Accept-Encoding only).
    let mut hints = CapabilityHeaders::default();
    for h in rq.headers_in() {
        let name = Req::lowercase_name(h);
        if policy.uses_header(name) {
            hints.offer(name, super::ffi::bytes(&h.value));
        }
    }
    let caps = Capabilities::from_headers(&hints);
    let header = |name: &str| rq.header_in(name);
    let mut selector = Selector::new(&caps, &header);
    let mut sink = PoolSink { rq, reserved: None };
    let found = store.lookup(&key, |d, meta| selector.score(d, meta), &mut sink);
    let now = nginx_sys::ngx_time() as i64;
    let waited = matches!(ctx.stage, Stage::Waiting { .. });
    let outcome = ctx.outcome.take();
    let mut stale = None;
    match found {
        Lookup::Hit(hit) => {
            let copied = sink.copied();
            let meta = copied.get(..hit.meta_len).and_then(MetaView::parse);
            match usable(&hit, meta.as_ref(), now) {
                Usable::Fresh => {
                    let missing = meta
                        .as_ref()
                        .and_then(|m| selector.missing_variant(&policy, m.source_type()));
                    if let Some(target) = missing {
                        builder::submit(Job {
                            key,
                            target,
                            url: String::from_utf8_lossy(id.uri).into_owned(),
                        });
                    }
                    let status = match &outcome {
                        Some(Outcome::Unchanged) => CacheStatus::Revalidated,
                        Some(Outcome::Changed) => CacheStatus::Expired,
                        _ if waited => {
                            store.count_freshness(FreshnessCounter::Collapsed);
                            CacheStatus::Collapsed
                        }
                        _ => CacheStatus::Hit,
                    };
                    // SAFETY: the sink copied into this request's pool; meta_len is within.
                    return serve_now(
                        rq,
                        ctx,
                        unsafe { Served::new(copied, hit.meta_len) },
                        status,
                    );
                }
                Usable::Stale(why) => {
                    // SAFETY: as above.
                    let copy = unsafe { Served::new(copied, hit.meta_len) };
                    if matches!(outcome, Some(Outcome::Unchanged)) && why == Staleness::Expired {
                        // Confirmed by the origin just now, but with no freshness left (its
                        // answer gave none): serve it, the next request revalidates again.
                        // Soft-purged instead: a purge came after the origin was asked, so
                        // its answer predates the purge; ask again.
                        return serve_now(rq, ctx, copy, CacheStatus::Revalidated);
                    }
                    let refreshed_meanwhile = waited
                        && why == Staleness::Expired
                        && meta
                            .as_ref()
                            .is_some_and(|m| m.stored_at >= ctx.waiting_since);
                    if refreshed_meanwhile {
                        // The fill or revalidation this request waited for stored (or
                        // confirmed) it, without freshness: it is still the answer waited for,
                        // as nginx's cache lock serves a max-age=0 response to its waiters.
                        store.count_freshness(FreshnessCounter::Collapsed);
                        return serve_now(rq, ctx, copy, CacheStatus::Collapsed);
                    }
                    stale = Some((Descriptor(hit.descriptor), copy));
                }
                Usable::Undecodable => {
                    if fault_log_allowed() {
                        ngx_log_error!(
                            NGX_LOG_WARN,
                            rq.log(),
                            "pagespeed cache: undecodable entry metadata, treated as a miss"
                        );
                    }
                }
            }
        }
        Lookup::Miss => {}
        Lookup::Fault(f) => {
            if fault_log_allowed() {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    rq.log(),
                    "pagespeed cache: {f}; serving from origin"
                );
            }
        }
    }
    // A 304 that did not confirm the stored bytes: refill as if revalidation were off.
    let unconditional = matches!(outcome, Some(Outcome::Mismatch));
    if let Some(Outcome::Answer { failure, replay }) = outcome {
        return answered(rq, store, ctx, failure, replay);
    }
    let stale_found = stale.map(|(d, copy)| {
        ctx.stale = Some(copy);
        d
    });
    // Whether the next request may wait for, or run, a fill: the lease.
    let scope = store.buckets().scopes_for(&id.url().id(), &[]);
    // After an internal redirect this request may hold the key's lease already.
    let own = fill::own_lease(rq, &key);
    let lease = if let Some(t) = own {
        Lease::Acquired(t)
    } else if lcf.lock == 1 {
        match store.lease(&key, &lease_request(&scope, lcf)) {
            Ok(l) => l,
            Err(_) => Lease::Unavailable,
        }
    } else {
        Lease::Unavailable
    };
    let token = match lease {
        Lease::Acquired(t) => Some(t),
        Lease::Unavailable => None,
        Lease::Pass => return origin_only(rq, ctx, CacheStatus::Bypass),
        Lease::Held => {
            if let (Some(_), Some(m)) = (stale_found, ctx.stale.as_ref().and_then(Served::meta)) {
                if while_revalidating(&lcf.use_stale(), &m, now) {
                    store.count_freshness(FreshnessCounter::StaleUpdating);
                    let copy = ctx.stale.take().expect("a stale copy");
                    return serve_now(rq, ctx, copy, CacheStatus::Updating);
                }
            }
            return wait(rq, store, ctx);
        }
    };
    if let Some(found) = stale_found {
        if lcf.revalidate == 1 && !unconditional {
            return revalidate(rq, store, ctx, key, id, found, token, now);
        }
    }
    // A miss (or revalidation off): this request fills, streaming to its client.
    ctx.status = if ctx.stale.is_some() {
        CacheStatus::Expired
    } else {
        CacheStatus::Miss
    };
    ctx.stage = Stage::Done;
    // Only GET fills: a HEAD response has no body to store.
    if rq.method() == NGX_HTTP_GET {
        let fill = Fill::new(store.begin_fill(), key, id.url(), token);
        if token.is_some() {
            fill::release_on_cleanup(rq, &key, token);
        }
        ctx.fill = Some(fill);
    } else if let Some(t) = token {
        let _ = store.release_lease(&key, t, Release::Done);
    }
    DECLINED
}

/// Starts the revalidation of a stale entry: in the background while the stale copy is served
/// (stale-while-revalidate, `use_stale updating`), or in the foreground while this request
/// waits for it.
#[allow(clippy::too_many_arguments)]
fn revalidate(
    rq: Req,
    store: &Store,
    ctx: &mut RequestCtx,
    key: Key,
    id: &Identity,
    found: Descriptor,
    token: Option<LeaseToken>,
    now: i64,
) -> ngx_int_t {
    let lcf = rq.loc_conf();
    if ctx.rounds >= MAX_ROUNDS {
        if let Some(t) = token {
            let _ = store.release_lease(&key, t, Release::Done);
        }
        return origin_only(rq, ctx, CacheStatus::Bypass);
    }
    ctx.rounds += 1;
    let source = || {
        store
            .stored_meta(&key, Descriptor::SOURCE.0)
            .ok()
            .flatten()
            .map(|(_, m)| m)
    };
    let source_meta = if found == Descriptor::SOURCE {
        None
    } else {
        source()
    };
    let target = revalidation_target(found, source_meta.is_some());
    let original = if target == found {
        ctx.stale.as_ref().map(|s| s.meta_bytes().to_vec())
    } else {
        source_meta
    };
    let Some(original) = original else {
        // The source a variant was built from is gone: fill it afresh.
        ctx.status = CacheStatus::Expired;
        ctx.stage = Stage::Done;
        if rq.method() == NGX_HTTP_GET {
            ctx.fill = Some(Fill::new(store.begin_fill(), key, id.url(), token));
            if token.is_some() {
                fill::release_on_cleanup(rq, &key, token);
            }
        } else if let Some(t) = token {
            let _ = store.release_lease(&key, t, Release::Done);
        }
        return DECLINED;
    };
    let background = ctx
        .stale
        .as_ref()
        .and_then(Served::meta)
        .is_some_and(|m| while_revalidating(&lcf.use_stale(), &m, now));
    let report = if background {
        std::ptr::null_mut()
    } else {
        &mut ctx.outcome as *mut Option<Outcome>
    };
    if token.is_some() {
        fill::release_on_cleanup(rq, &key, token);
    }
    if !revalidate::start(
        rq,
        store,
        None,
        background,
        key,
        id.url(),
        target,
        original,
        token,
        report,
    ) {
        if let Some(t) = token {
            let _ = store.release_lease(&key, t, Release::Done);
        }
        return origin_only(rq, ctx, CacheStatus::Expired);
    }
    if background {
        store.count_freshness(FreshnessCounter::StaleUpdating);
        let copy = ctx.stale.take().expect("a stale copy");
        return serve_now(rq, ctx, copy, CacheStatus::Updating);
    }
    ctx.stage = Stage::Revalidating;
    AGAIN
}

/// The revalidation's answer was not about the stored bytes (an error, a redirect, or not
/// storable): the stale copy if the stale rules allow it, else the answer itself, else the
/// origin once more.
fn answered(
    rq: Req,
    store: &Store,
    ctx: &mut RequestCtx,
    failure: Option<Failure>,
    replay: Option<(Vec<u8>, Vec<u8>)>,
) -> ngx_int_t {
    let now = nginx_sys::ngx_time() as i64;
    if let (Some(f), Some(m)) = (failure, ctx.stale.as_ref().and_then(Served::meta)) {
        if on_error(&rq.loc_conf().use_stale(), &m, now, f) {
            store.count_freshness(FreshnessCounter::StaleOnError);
            if fault_log_allowed() {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    rq.log(),
                    "pagespeed cache: the origin failed ({f:?}); serving the stale entry"
                );
            }
            let copy = ctx.stale.take().expect("a stale copy");
            return serve_now(rq, ctx, copy, CacheStatus::Stale);
        }
    }
    match replay.and_then(|(meta, body)| Served::copy(rq, &meta, &body)) {
        Some(s) => serve_now(rq, ctx, s, CacheStatus::Bypass),
        None => origin_only(rq, ctx, CacheStatus::Bypass),
    }
}

/// Sends this request to the location's own handler without storing what it gets.
fn origin_only(rq: Req, ctx: &mut RequestCtx, status: CacheStatus) -> ngx_int_t {
    let _ = rq;
    ctx.status = status;
    ctx.stage = Stage::Done;
    ctx.fill = None;
    DECLINED
}

fn serve_now(rq: Req, ctx: &mut RequestCtx, s: Served, status: CacheStatus) -> ngx_int_t {
    ctx.status = status;
    ctx.stage = Stage::Done;
    ctx.served = Some(s);
    rq.take_content_phase(serve_handler);
    DECLINED
}

/// Waits for another request's fill of the key: polled from a timer (no event loop is
/// blocked; nginx has no cross-worker wake-up), a millisecond at first, a few later. Past the
/// lock timeout the request goes to the origin without storing.
fn wait(rq: Req, store: &Store, ctx: &mut RequestCtx) -> ngx_int_t {
    let now = monotonic_ms();
    let since = match ctx.stage {
        Stage::Waiting { since_ms } => since_ms,
        _ => now,
    };
    let lcf = rq.loc_conf();
    if now.saturating_sub(since) >= lcf.lock_timeout as u64 {
        store.count_freshness(FreshnessCounter::LockTimeouts);
        return origin_only(rq, ctx, CacheStatus::Bypass);
    }
    let ev = match ctx.wait_timer {
        Some(ev) => ev,
        None => match rq.timer_event(wait_timer) {
            Some(ev) => {
                ctx.wait_timer = Some(ev);
                ev
            }
            None => return origin_only(rq, ctx, CacheStatus::Bypass),
        },
    };
    if !matches!(ctx.stage, Stage::Waiting { .. }) {
        ctx.waiting_since = nginx_sys::ngx_time() as i64;
    }
    ctx.stage = Stage::Waiting { since_ms: since };
    if !ctx.blocked {
        rq.block(true);
        ctx.blocked = true;
    }
    // SAFETY: the event was made by timer_event for this live request.
    unsafe { arm(ev, poll_step(now - since)) };
    AGAIN
}

/// A shield behind the asking node waits for its applier to catch up (it usually is one
/// entry behind, for milliseconds, right after a purge): the answer can then come from, and
/// fill, its cache, so the edges' refills after a purge collapse here instead of all going
/// to the origin. Polled from the wait timer; past `CATCH_UP_MS` the request goes to the
/// origin without using or storing the cache.
fn catch_up(rq: Req, ctx: &mut RequestCtx) -> ngx_int_t {
    let now = monotonic_ms();
    let since = match ctx.stage {
        Stage::CatchingUp { since_ms } => since_ms,
        _ => now,
    };
    if now.saturating_sub(since) >= CATCH_UP_MS {
        return origin_only(rq, ctx, CacheStatus::Bypass);
    }
    let ev = match ctx.wait_timer {
        Some(ev) => ev,
        None => match rq.timer_event(wait_timer) {
            Some(ev) => {
                ctx.wait_timer = Some(ev);
                ev
            }
            None => return origin_only(rq, ctx, CacheStatus::Bypass),
        },
    };
    ctx.stage = Stage::CatchingUp { since_ms: since };
    if !ctx.blocked {
        rq.block(true);
        ctx.blocked = true;
    }
    // SAFETY: the event was made by timer_event for this live request.
    unsafe { arm(ev, poll_step(now - since)) };
    AGAIN
}

/// How long a shield waits to catch up (issue 11: "a bounded wait, e.g. 1 s").
const CATCH_UP_MS: u64 = 1000;

/// Most revalidations one request runs (see `RequestCtx::rounds`).
const MAX_ROUNDS: u8 = 3;

/// Milliseconds until a waiter looks again: soon at first (most fills of a hot object are
/// short), then less often.
fn poll_step(waited_ms: u64) -> u64 {
    match waited_ms {
        0..10 => 1,
        10..50 => 2,
        _ => 4,
    }
}

/// The lease a request of this location takes or looks at. It lasts twice the lock timeout
/// unless released: waiters time out on their own clock first (and go to the origin without
/// storing), and only a filler stuck longer than that is taken over by the next request, as
/// nginx's `proxy_cache_lock_age` lets one more request through. A dead owner's lease is free
/// at once (its pid).
fn lease_request(scope: &ScopeSet, lcf: &LocConf) -> LeaseRequest {
    LeaseRequest::new(scope, (lcf.lock_timeout as u64).saturating_mul(2))
}

/// A waiting request's timer: look again whether the fill it waits for is done (its lease
/// gone), and if so run its lookup again.
unsafe extern "C" fn wait_timer(ev: *mut ngx_event_t) {
    guard("a wait for another fill", (), || {
        // SAFETY: the event's data is the request timer_event made it for, still live (the
        // request's pool cleanup deletes the timer before the request goes).
        let Some(rq) = (unsafe { Req::from_raw((*ev).data as *mut ngx_http_request_t) }) else {
            return;
        };
        let Some(ctx) = rq.ctx::<RequestCtx>() else {
            return;
        };
        if ctx.blocked {
            rq.block(false);
            ctx.blocked = false;
        }
        let Some(store) = store() else {
            rq.resume();
            return;
        };
        if matches!(ctx.stage, Stage::CatchingUp { .. }) {
            // The lookup looks again, and waits again while the shield is still behind.
            rq.resume();
            return;
        }
        let lcf = rq.loc_conf();
        let held = identity(&rq, lcf).is_some_and(|(key, id)| {
            let scope = store.buckets().scopes_for(&id.url().id(), &[]);
            matches!(
                store.lease_state(&key, &lease_request(&scope, lcf)),
                Ok(Lease::Held)
            )
        });
        if held {
            let Stage::Waiting { since_ms } = ctx.stage else {
                return;
            };
            let waited = monotonic_ms().saturating_sub(since_ms);
            if waited < lcf.lock_timeout as u64 {
                rq.block(true);
                ctx.blocked = true;
                // SAFETY: ev is this request's timer event.
                unsafe { arm(ev, poll_step(waited)) };
                return;
            }
        }
        rq.resume();
    })
}

extern "C" fn serve_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard("serving a hit", ERROR, || {
        // SAFETY: nginx passes a live request.
        match unsafe { Req::from_raw(r) } {
            Some(rq) => serve(rq),
            None => ERROR,
        }
    })
}

/// Sends a cached alternate: status, stored headers, `Vary`/`Accept-CH`, `X-Cache: HIT`,
/// `Age`, then the body. Conditional requests (304), HEAD and Range (206) are handled by
/// nginx's own filters below, from the validators and body set here.
fn serve(rq: Req) -> ngx_int_t {
    let Some(c) = rq.ctx::<RequestCtx>() else {
        return ERROR;
    };
    let status = c.status;
    let Some(s) = c.served.as_ref() else {
        return ERROR;
    };
    let rc = rq.discard_body();
    if rc != OK {
        return rc;
    }
    let Some(m) = s.meta() else {
        return ERROR;
    };
    let (content_type_len, charset) = split_content_type(m.content_type);
    rq.set_response_head(&ReplayedHead {
        status: m.status,
        content_type: m.content_type,
        content_type_len,
        charset,
        content_length: s.body().len(),
        last_modified: (m.last_modified >= 0).then_some(m.last_modified),
    });
    let mut cache_control = CacheControlLines::default();
    for (name, value) in m.headers() {
        // The metadata's strings already live in this request's pool: pointed at, not copied.
        let Some(h) = rq.push_header(name, value, Strings::Borrowed) else {
            return ERROR;
        };
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        let typed = if is(b"date") {
            // The stored response's Date, not nginx's current time (RFC 9111 4).
            Some(Typed::Date)
        } else if is(b"etag") {
            Some(Typed::Etag)
        } else if is(b"content-encoding") {
            Some(Typed::ContentEncoding)
        } else if is(b"location") {
            // As the upstream module does: a relative Location is not linked, so nginx's
            // header filter does not make it absolute with this server's scheme, name and
            // port (which behind a proxy or port mapping are not the public ones).
            (!value.starts_with(b"/")).then_some(Typed::Location)
        } else if is(b"expires") {
            Some(Typed::Expires)
        } else if is(b"cache-control") {
            // Linked so `expires`/`add_header` below us see every Cache-Control line.
            Some(Typed::CacheControl)
        } else {
            None
        };
        if typed.is_some_and(|t| !rq.link_typed(t, h, &mut cache_control)) {
            return ERROR;
        }
    }
    if !variant_headers(rq, rq.loc_conf(), m.source_type()) {
        return ERROR;
    }
    let mut age = itoa::Buffer::new();
    let age = age.format(m.age_at(nginx_sys::ngx_time() as i64));
    if rq
        .push_header(b"X-Cache", status.x_cache().as_bytes(), Strings::Borrowed)
        .is_none()
        || rq
            .push_header(b"Age", age.as_bytes(), Strings::Copy)
            .is_none()
    {
        return ERROR;
    }
    if answers_not_modified(rq, &m) {
        rq.make_not_modified();
    }
    let rc = rq.send_header();
    if rc == ERROR || rc > OK || rq.header_only() {
        return rc;
    }
    rq.send_body(s.body())
}

/// Whether a hit answers the request's `If-None-Match` / `If-Modified-Since` with a 304
/// itself, in the RFC 9110 13.2.2 order (nginx's not_modified filter wants both to pass and
/// compares dates for equality). Requests with `If-Match` or `If-Unmodified-Since`, and
/// stored responses other than 200, are left to nginx's filters.
fn answers_not_modified(rq: Req, m: &MetaView) -> bool {
    if m.status != 200 || !matches!(rq.method(), NGX_HTTP_GET | NGX_HTTP_HEAD) {
        return false;
    }
    if rq.header_in("if-match").is_some() || rq.header_in("if-unmodified-since").is_some() {
        return false;
    }
    let inm = rq.header_in("if-none-match");
    let ims = rq.header_in("if-modified-since");
    (inm.is_some() || ims.is_some()) && not_modified(m, inm.as_deref(), ims.as_deref())
}

/// Adds the `Vary` (and `Accept-CH`) a key whose original has `source_type` needs under the
/// location's variant policy: the same on the original and on every variant built from it,
/// whatever type the served alternate has. False if the pool ran out. The values live in the
/// configuration: nothing is formatted or copied per request.
pub fn variant_headers(rq: Req, lcf: &LocConf, source_type: &[u8]) -> bool {
    let policy = lcf.variants();
    if !policy.any() {
        return true;
    }
    let vary = lcf
        .vary
        .for_kind(SourceKind::from_content_type(source_type));
    if !vary.is_empty()
        && rq
            .push_header(b"Vary", vary.as_bytes(), Strings::Borrowed)
            .is_none()
    {
        return false;
    }
    if let Some(ch) = accept_ch(&policy) {
        if rq
            .push_header(b"Accept-CH", ch.as_bytes(), Strings::Borrowed)
            .is_none()
        {
            return false;
        }
    }
    true
}
