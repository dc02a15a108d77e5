//! The chaos: a purger that bumps versions at the origin and then purges them (URL, several
//! URLs, dependency, prefix, tag, everything; hard and soft), silent version bumps of short-lived
//! URLs (expiry), `nginx -s reload` and SIGKILL of a random worker every few seconds, and a
//! sampler of worker memory and segment use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::content::{Catalog, DIRS, GROUPS, SUBS};
use crate::http;
use crate::load::{Checker, Violations};
use crate::nginx::{self, Nginx};
use crate::oracle::{Cause, Floor};
use crate::rng::Rng;

#[derive(Default)]
pub struct DriverCounts {
    pub purges: AtomicU64,
    pub by_cause: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    pub soft: AtomicU64,
    pub retried: AtomicU64,
    pub expiry_bumps: AtomicU64,
    pub reloads: AtomicU64,
    pub kills: Mutex<Vec<(f64, u32)>>,
    pub reload_times: Mutex<Vec<f64>>,
    pub last_generation: AtomicU64,
}

pub struct DriverConfig {
    pub addr: SocketAddr,
    pub purge_every_ms: u64,
    pub expiry_every_ms: u64,
    pub all_every_s: f64,
    pub seed: u64,
    /// `--fault skip-purge`: one purge in four is not sent, yet its receipt is recorded.
    pub skip_purges: bool,
}

fn sleep_until_or_stop(stop: &AtomicBool, d: Duration) {
    let end = std::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = std::time::Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// POSTs a purge until it is answered with a receipt (a killed worker may drop the request);
/// returns the receipt's generation.
fn purge(
    addr: SocketAddr,
    body: &Value,
    counts: &DriverCounts,
    v: &Violations,
    stop: &AtomicBool,
) -> Option<u64> {
    let body = body.to_string();
    let head = "POST /purge HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\n";
    let mut last = String::new();
    for attempt in 0..50 {
        if attempt > 0 {
            counts.retried.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
        match http::once(addr, head, body.as_bytes(), Duration::from_secs(20)) {
            Ok(r) if r.status == 200 => {
                let j: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                if let Some(g) = j.get("generation").and_then(Value::as_u64) {
                    return Some(g);
                }
                last = format!(
                    "200 without a generation: {}",
                    String::from_utf8_lossy(&r.body)
                );
            }
            Ok(r) => {
                last = format!("{} {}", r.status, String::from_utf8_lossy(&r.body));
                // A refusal is an answer: retrying would hide it.
                if r.status != 503 {
                    break;
                }
            }
            Err(e) => last = e.to_string(),
        }
        if stop.load(Ordering::Relaxed) && attempt > 5 {
            break;
        }
    }
    v.add(
        "purge not answered with a receipt",
        format!("{body}: {last}"),
    );
    None
}

/// POSTs to a cached URL until a non-error answer arrives (that answer invalidated it).
fn post(addr: SocketAddr, path: &str, v: &Violations, stop: &AtomicBool) -> Option<u64> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    let mut last = String::new();
    for attempt in 0..50 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        match http::once(addr, &head, b"", Duration::from_secs(20)) {
            Ok(r) if r.status < 400 => return Some(0),
            Ok(r) => last = format!("status {}", r.status),
            Err(e) => last = e.to_string(),
        }
        if stop.load(Ordering::Relaxed) && attempt > 5 {
            break;
        }
    }
    v.add("POST not answered", format!("{path}: {last}"));
    None
}

pub fn run_purger(
    ck: Arc<Checker>,
    cfg: DriverConfig,
    counts: Arc<DriverCounts>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let cat: &Catalog = &ck.cat;
        let mut rng = Rng::new(cfg.seed ^ 0xd1);
        let referenced: Vec<u32> = (0..cat.len() as u32)
            .filter(|&i| !cat.dependents[i as usize].is_empty())
            .collect();
        let expiring: Vec<u32> = cat
            .res
            .iter()
            .filter(|r| r.max_age < 60)
            .map(|r| r.id)
            .collect();
        let mut seq = 0u64;
        let mut last_all = 0.0f64;
        let mut next_expiry = 0.0f64;
        while !stop.load(Ordering::Relaxed) {
            // Expiries: the origin changes a short-lived URL without any purge; once its entry
            // must have expired, the old version may only come back marked stale. "Must" is
            // max-age after the bump plus 3 s: the slowest origin answer (0.4 s) of a fill that
            // read the old version just before, whole-second freshness arithmetic (1 s), and
            // room for a worker or builder that a loaded machine delays.
            let now = ck.now();
            if cfg.expiry_every_ms > 0 && now >= next_expiry && !expiring.is_empty() {
                next_expiry = now + cfg.expiry_every_ms as f64 / 1000.0;
                let id = rng.pick(&expiring);
                let v = cat.bump(id);
                let at = ck.now() + cat.res[id as usize].max_age as f64 + 3.0;
                ck.oracle.add_own(
                    id,
                    Floor {
                        at,
                        version: v,
                        soft: true,
                        cause: Cause::Expiry,
                        seq: 0,
                    },
                );
                counts.expiry_bumps.fetch_add(1, Ordering::Relaxed);
            }

            seq += 1;
            let soft = rng.below(10) < 3;
            let x = rng.below(100);
            // `own`: the URLs whose versions change; `deps`: those of them the purge also
            // reaches as dependencies of pages (URL purges and the full flush).
            let (cause, own, deps, mut body): (Cause, Vec<u32>, bool, Value) =
                if now - last_all >= cfg.all_every_s && x < 5 {
                    last_all = now;
                    let all: Vec<u32> = (0..cat.len() as u32).collect();
                    (
                        Cause::All,
                        all,
                        true,
                        json!({"scope": "all", "confirm": "purge-all"}),
                    )
                } else if x < 30 {
                    let id = rng.below(cat.len() as u64) as u32;
                    (
                        Cause::Url,
                        vec![id],
                        true,
                        json!({"url": cat.res[id as usize].path}),
                    )
                } else if x < 42 {
                    let mut ids: Vec<u32> =
                        (0..3).map(|_| rng.below(cat.len() as u64) as u32).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    let urls: Vec<&str> = ids
                        .iter()
                        .map(|&i| cat.res[i as usize].path.as_str())
                        .collect();
                    (Cause::Url, ids, true, json!({"urls": urls}))
                } else if x < 60 {
                    // A resource pages depend on: the purge of its URL reaches them too.
                    let id = rng.pick(&referenced);
                    (
                        Cause::Dependency,
                        vec![id],
                        true,
                        json!({"url": cat.res[id as usize].path}),
                    )
                } else if x < 78 {
                    let dir = rng.below(DIRS as u64) as u32;
                    let deep = rng.below(2) == 0;
                    let sub = rng.below(SUBS as u64) as u32;
                    let ids: Vec<u32> = cat
                        .res
                        .iter()
                        .filter(|r| r.dir == dir && (!deep || r.sub == sub))
                        .map(|r| r.id)
                        .collect();
                    let prefix = if deep {
                        format!("/d{dir:02}/s{sub}/*")
                    } else {
                        format!("/d{dir:02}/*")
                    };
                    (Cause::Prefix, ids, false, json!({"url": prefix}))
                } else if x < 88 {
                    let g = rng.below(GROUPS as u64) as u32;
                    let ids: Vec<u32> = cat
                        .res
                        .iter()
                        .filter(|r| r.group == g)
                        .map(|r| r.id)
                        .collect();
                    (Cause::Tag, ids, false, json!({"tag": format!("g{g}")}))
                } else {
                    // A POST to the URL: a non-error answer invalidates it. Always hard, and
                    // the URL only: the module does not reach the pages that declared it as
                    // a dependency (t/023-unsafe-method-dependents.t, TODO); once it does,
                    // `true` here checks that too.
                    let id = rng.below(cat.len() as u64) as u32;
                    (
                        Cause::Unsafe,
                        vec![id],
                        false,
                        json!(cat.res[id as usize].path),
                    )
                };
            let soft = soft && cause != Cause::Unsafe;
            if soft {
                body["soft"] = json!(true);
            }
            // Bump first: from here on the origin serves the new version, so any fill that
            // started after the purge below carries it.
            let versions: Vec<u32> = own.iter().map(|&id| cat.bump(id)).collect();
            let skipped = cfg.skip_purges && rng.below(4) == 0;
            let receipt = if skipped {
                Some(0)
            } else if cause == Cause::Unsafe {
                post(
                    cfg.addr,
                    body.as_str().unwrap_or("/"),
                    &ck.violations,
                    &stop,
                )
            } else {
                purge(cfg.addr, &body, &counts, &ck.violations, &stop)
            };
            if let Some(g) = receipt {
                let at = ck.now();
                for (&id, &version) in own.iter().zip(&versions) {
                    let f = Floor {
                        at,
                        version,
                        soft,
                        cause,
                        seq,
                    };
                    ck.oracle.add_own(id, f);
                    if deps {
                        ck.oracle.add_dep(id, f);
                    }
                }
                counts.purges.fetch_add(1, Ordering::Relaxed);
                if soft {
                    counts.soft.fetch_add(1, Ordering::Relaxed);
                }
                *counts
                    .by_cause
                    .lock()
                    .unwrap()
                    .entry(cause.as_str())
                    .or_default() += 1;
                // Invariant 4: the purge clock only grows, across reloads and killed
                // workers; this thread's purges are sequential, so each receipt's generation
                // is above the last one (POSTs and skipped purges report none).
                if g > 0 {
                    let last = counts.last_generation.fetch_max(g, Ordering::Relaxed);
                    if g <= last {
                        ck.violations.add(
                            "purge generation did not grow",
                            format!(
                                "purge #{seq} ({}) answered generation {g} after {last}",
                                cause.as_str()
                            ),
                        );
                    }
                }
            }
            let jitter = rng.below(cfg.purge_every_ms + 1);
            sleep_until_or_stop(
                &stop,
                Duration::from_millis(cfg.purge_every_ms / 2 + jitter),
            );
        }
    })
}

pub struct ChaosConfig {
    pub reload_every_s: f64,
    pub kill_every_s: f64,
    pub seed: u64,
}

/// Reloads and kills, each on its own jittered schedule.
pub fn run_chaos(
    ck: Arc<Checker>,
    ngx: Arc<Mutex<Nginx>>,
    cfg: ChaosConfig,
    counts: Arc<DriverCounts>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rng = Rng::new(cfg.seed ^ 0xc4a05);
        let jittered = |rng: &mut Rng, every: f64| every * (0.5 + rng.unit());
        let mut next_reload = if cfg.reload_every_s > 0.0 {
            ck.now() + jittered(&mut rng, cfg.reload_every_s)
        } else {
            f64::INFINITY
        };
        let mut next_kill = if cfg.kill_every_s > 0.0 {
            ck.now() + jittered(&mut rng, cfg.kill_every_s)
        } else {
            f64::INFINITY
        };
        while !stop.load(Ordering::Relaxed) {
            let now = ck.now();
            if now >= next_reload {
                next_reload = now + jittered(&mut rng, cfg.reload_every_s);
                let t = ck.now();
                let r = ngx.lock().unwrap().reload();
                match r {
                    Ok(()) => {
                        counts.reloads.fetch_add(1, Ordering::Relaxed);
                        counts.reload_times.lock().unwrap().push(t);
                    }
                    Err(e) => ck.violations.add("reload failed", e),
                }
            }
            if now >= next_kill {
                next_kill = now + jittered(&mut rng, cfg.kill_every_s);
                let workers = ngx.lock().unwrap().workers();
                if !workers.is_empty() {
                    let pid = rng.pick(&workers);
                    // Never a zombie: its exit was already logged as something else.
                    if matches!(nginx::state(pid), Some(s) if s != 'Z') {
                        let t = ck.now();
                        // SAFETY: SIGKILL to a worker pid read from its master's children just
                        // now; no memory is involved.
                        if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                            counts.kills.lock().unwrap().push((t, pid));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// One sample a second of memory and segment figures.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub t: f64,
    pub master_anon_kib: f64,
    pub worker_anon_kib: f64,
    pub worker_rss_kib: f64,
    pub workers: usize,
    pub bytes_used: f64,
    pub bytes_capacity: f64,
    pub entries: f64,
    pub alternates: f64,
}

pub fn status(addr: SocketAddr) -> Option<Value> {
    let r = http::once(
        addr,
        "GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n",
        b"",
        Duration::from_secs(10),
    )
    .ok()?;
    serde_json::from_slice(&r.body).ok()
}

pub fn run_sampler(
    ck: Arc<Checker>,
    ngx: Arc<Mutex<Nginx>>,
    addr: SocketAddr,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let t = ck.now();
            let (master, workers) = {
                let n = ngx.lock().unwrap();
                (n.master, n.workers())
            };
            let mem: Vec<(u64, u64)> = workers.iter().filter_map(|&p| nginx::rss_kib(p)).collect();
            let mean = |f: fn(&(u64, u64)) -> u64| {
                if mem.is_empty() {
                    0.0
                } else {
                    mem.iter().map(f).sum::<u64>() as f64 / mem.len() as f64
                }
            };
            let mut s = Sample {
                t,
                master_anon_kib: nginx::rss_kib(master).map_or(0.0, |m| m.0 as f64),
                worker_anon_kib: mean(|m| m.0),
                worker_rss_kib: mean(|m| m.1),
                workers: mem.len(),
                ..Sample::default()
            };
            if let Some(j) = status(addr) {
                let g = |k: &str| j.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                s.bytes_used = g("bytes_used");
                s.bytes_capacity = g("bytes_capacity");
                s.entries = g("entries");
                s.alternates = g("alternates");
            }
            samples.lock().unwrap().push(s);
            sleep_until_or_stop(&stop, Duration::from_secs(1));
        }
    })
}
