//! Fleet purge in nginx: the node's applier thread (started in every worker, one of them
//! holds the node's lock and applies), publishing a `"fleet": true` purge and answering
//! with every node's receipt (waited for from a timer, never blocking the event loop), the
//! self-fence check of the hit path, and the status fields. The logic is in the core's
//! `fleet` module.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nginx_sys::{ngx_event_t, ngx_http_request_t, ngx_int_t};
use serde_json::{json, Value};

use super::ffi::{arm, Req, ERROR};
use super::hit::RequestCtx;
use super::lifecycle::store;
use super::log::{guard, line};
use ngx_http_pagespeed_module::fleet::applier::{lock_path, Applier};
use ngx_http_pagespeed_module::fleet::client::Client;
use ngx_http_pagespeed_module::fleet::status::FleetStatus;
use ngx_http_pagespeed_module::fleet::{
    self, merge, self_fenced, unix_ms, Config, Options, StreamId, Tier,
};
use ngx_http_pagespeed_module::store::Store;

/// This worker's copy of `pagespeed_fleet` (set in init_process).
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);
/// `max_lag` in ms, 0 without a fleet: read on every lookup without a lock.
static MAX_LAG_MS: AtomicU64 = AtomicU64::new(0);
static APPLIER: Mutex<Option<Applier>> = Mutex::new(None);

/// Connect and reply timeout of a publisher.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(1000);
/// How often a publisher reads the nodes hash, and the request's timer looks for the answer.
const POLL: Duration = Duration::from_millis(1);

pub fn config() -> Option<Config> {
    CONFIG.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Starts the applier thread of this worker (workers only).
pub fn start(cfg: Option<&Config>, segment: Option<&std::path::Path>) {
    let Some(cfg) = cfg else { return };
    let Some(store) = store() else { return };
    *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(cfg.clone());
    MAX_LAG_MS.store(cfg.max_lag.as_millis() as u64, Ordering::Release);
    let lock = lock_path(segment, &cfg.node);
    match Applier::start(store, cfg.clone(), lock, Box::new(line)) {
        Ok(a) => *APPLIER.lock().unwrap_or_else(|e| e.into_inner()) = Some(a),
        Err(e) => line(
            "error",
            &format!("pagespeed fleet: cannot start the applier thread: {e}"),
        ),
    }
}

/// Stops and joins this worker's applier (exit_process).
pub fn stop() {
    let a = APPLIER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(a) = a {
        a.stop();
    }
}

/// Whether this node serves no hits now: it is in a fleet and has not confirmed it is caught
/// up within `max_lag`.
pub fn fenced(store: &Store) -> bool {
    let max_lag = MAX_LAG_MS.load(Ordering::Acquire);
    max_lag != 0 && self_fenced(unix_ms(), store.fleet_confirmed_ms(), max_lag)
}

/// The tier header between nodes.
pub const SEQ_HEADER: &str = "Pagespeed-Purge-Seq";

/// This node's applied id, when it is in a fleet.
pub fn applied(store: &Store) -> Option<StreamId> {
    if MAX_LAG_MS.load(Ordering::Acquire) == 0 {
        return None;
    }
    let (ms, seq) = store.fleet_applied();
    Some(StreamId::new(ms, seq))
}

/// What the tier rules say of a request at lookup time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierCheck {
    /// The cache may answer it.
    Serve,
    /// A shield asked by a node that had applied more purges than it has: it must not answer
    /// from its cache (nor store: the answer is for a node ahead of it) until it caught up.
    Behind,
}

/// Tier rules at lookup time. An edge tells its upstream what it had applied (`first`: on
/// the request's first pass through the lookup only, so that a request that waited does not
/// send the header twice); a shield compares that with its own applied id.
pub fn tier_check(rq: &Req, store: &Store, first: bool) -> TierCheck {
    let Some(mine) = applied(store) else {
        return TierCheck::Serve;
    };
    let Some(cfg) = config() else {
        return TierCheck::Serve;
    };
    if cfg.tier == Tier::Shield {
        let asked = rq
            .header_in("pagespeed-purge-seq")
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<StreamId>().ok());
        if asked.is_some_and(|a| a > mine) {
            return TierCheck::Behind;
        }
    } else if first {
        let _ = rq.push_header_in(SEQ_HEADER, mine.to_string().as_bytes());
    }
    TierCheck::Serve
}

/// The status page's `fleet` object (None without a fleet).
pub fn status(store: &Store) -> Option<FleetStatus> {
    config().map(|c| FleetStatus::read(store, &c, unix_ms()))
}

/// What a publisher thread hands back to its request.
type Answer = Result<Value, String>;

/// A fleet purge waiting for its receipts.
pub struct Waiting {
    answer: Arc<Mutex<Option<Answer>>>,
    /// The local purge's receipt (already applied).
    local: Value,
    timer: *mut ngx_event_t,
}

/// Publishes a purge that was just applied locally (`local` is its receipt) and answers once
/// every live node applied it or the wait ran out. Returns NGX_DONE while waiting (the
/// reference the body read took stays until the answer), or the response's rc.
pub fn publish(rq: Req, body: String, opts: Options, local: Value) -> Option<ngx_int_t> {
    let cfg = config()?;
    let answer = Arc::new(Mutex::new(None));
    let out = answer.clone();
    let spawned = std::thread::Builder::new()
        .name("pagespeed-publish".into())
        .spawn(move || {
            let a = publish_and_wait(&cfg, &body, opts.wait);
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
        });
    if spawned.is_err() {
        return Some(super::admin::error(
            rq,
            503,
            "fleet purge not published: cannot start a thread; the local purge was applied",
        ));
    }
    let Some(timer) = rq.timer_event(answer_timer) else {
        return Some(ERROR);
    };
    let mut ctx = RequestCtx::new(ngx_http_pagespeed_module::cache::CacheStatus::Bypass);
    ctx.fleet = Some(Waiting {
        answer,
        local,
        timer,
    });
    rq.set_ctx(ctx)?;
    // SAFETY: the timer was made by timer_event for this live request.
    unsafe { arm(timer, POLL.as_millis() as u64) };
    Some(super::ffi::DONE)
}

/// In the publisher's thread: XADD, then read the nodes hash until every live node applied
/// the entry or `wait` ran out.
fn publish_and_wait(cfg: &Config, body: &str, wait: Duration) -> Answer {
    let unreachable = |e: fleet::client::Error| {
        format!(
            "fleet purge not published: Redis at {} unreachable ({e}); the local purge was applied",
            cfg.url
        )
    };
    let mut c = Client::connect(&cfg.url, PUBLISH_TIMEOUT).map_err(unreachable)?;
    let seq = c
        .publish(&cfg.stream, &cfg.node, body)
        .map_err(unreachable)?;
    let start = Instant::now();
    loop {
        let hash = c.nodes(&cfg.nodes_key()).map_err(|e| {
            format!("fleet purge {seq} published, but its receipts could not be read: {e}")
        })?;
        let r = merge(
            hash.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            seq,
            unix_ms(),
        );
        if r.complete() || start.elapsed() >= wait {
            let mut v = r.to_json(seq);
            v["complete"] = Value::Bool(r.pending.is_empty());
            return Ok(v);
        }
        std::thread::sleep(POLL);
    }
}

/// The fleet purge request's timer: answer once the publisher did.
unsafe extern "C" fn answer_timer(ev: *mut ngx_event_t) {
    let r = guard("a fleet purge", None, || {
        // SAFETY: the event's data is the request timer_event made it for, still live (its
        // pool cleanup deletes the timer first).
        let rq = unsafe { Req::from_raw((*ev).data as *mut ngx_http_request_t) }?;
        let w = rq.ctx::<RequestCtx>()?.fleet.as_ref()?;
        let answer = w.answer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(answer) = answer else {
            // SAFETY: this request's timer, fired and not armed.
            unsafe { arm(w.timer, POLL.as_millis() as u64) };
            return None;
        };
        let rc = match answer {
            Ok(mut v) => {
                if let (Some(o), Value::Object(local)) = (v.as_object_mut(), w.local.clone()) {
                    for (k, val) in local {
                        o.entry(k).or_insert(val);
                    }
                }
                super::admin::reply_json(rq, 200, v)
            }
            Err(msg) => {
                let mut v = json!({ "error": msg, "local": w.local });
                v["fleet"] = Value::Bool(false);
                super::admin::reply_json(rq, 503, v)
            }
        };
        Some((rq, rc))
    });
    // The purge request's finalization is this timer's (the handler returned NGX_DONE).
    if let Some((rq, rc)) = r {
        rq.finalize_from_timer(rc);
    }
}
