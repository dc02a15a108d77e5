//! The node's one applier: a thread in every worker that takes the node's fleet lock (an
//! flock on a file next to the segment; the others retry it, so the role survives worker
//! crashes and reloads), reads the stream from the last applied id, applies each entry as a
//! local purge, and records the id in the segment and in Redis.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::Client;
use super::receipt::NodeState;
use super::{decode, self_fenced, unix_ms, Config, StreamId};
use crate::purge;
use crate::store::{FleetCounter, Store};

/// Longest a read blocks: bounds how late a worker's exit joins the thread, and how often
/// the heartbeat goes out.
const BLOCK: Duration = Duration::from_millis(250);
/// Entries read per round.
const BATCH: usize = 100;
/// Connect and reply timeout.
const TIMEOUT: Duration = Duration::from_millis(1000);
/// Pause between attempts to take the lock or to reconnect.
const RETRY: Duration = Duration::from_millis(100);

/// Where the applier's lines go (its thread must not call nginx's logger): level, message.
pub type LogLine = Box<dyn Fn(&str, &str) + Send>;

pub struct Applier {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The lock file of a node's applier: next to the segment file, or in the temporary
/// directory, named after the master (the parent of every worker), for an anonymous segment.
pub fn lock_path(segment: Option<&std::path::Path>, node: &str) -> PathBuf {
    match segment {
        Some(p) => {
            let mut s = p.as_os_str().to_owned();
            s.push(".fleet-lock");
            PathBuf::from(s)
        }
        None => {
            // SAFETY: getppid has no preconditions.
            let master = unsafe { libc::getppid() };
            std::env::temp_dir().join(format!("pagespeed-fleet-{node}-{master}.lock"))
        }
    }
}

impl Applier {
    /// Starts the thread (signals blocked in it, as nginx's own threads do).
    pub fn start(
        store: &'static Store,
        cfg: Config,
        lock: PathBuf,
        log: LogLine,
    ) -> std::io::Result<Applier> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let old = crate::transform::builders::block_signals();
        let thread = std::thread::Builder::new()
            .name("pagespeed-fleet".into())
            .spawn(move || run(store, &cfg, &lock, &flag, &log));
        crate::transform::builders::restore_signals(&old);
        Ok(Applier {
            stop,
            thread: Some(thread?),
        })
    }

    /// Stops and joins the thread (within about one blocking read), releasing the lock.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Acquire) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10).min(d));
    }
}

fn try_lock(path: &std::path::Path) -> Option<File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    // SAFETY: flock on a descriptor we own; released when the file is closed or the process
    // dies, which is what lets another worker take over.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc == 0).then_some(f)
}

fn run(store: &Store, cfg: &Config, lock: &std::path::Path, stop: &AtomicBool, log: &LogLine) {
    let mut fence = Fence {
        last_tick: unix_ms(),
        prev_confirmed: store.fleet_confirmed_ms(),
        fenced: false,
    };
    while !stop.load(Ordering::Acquire) {
        let Some(_held) = try_lock(lock) else {
            sleep_unless(stop, RETRY * 2);
            continue;
        };
        let mut state = Session::default();
        while !stop.load(Ordering::Acquire) {
            let ok = state.round(store, cfg);
            fence.account(store, cfg, log);
            if !ok {
                store.set_fleet_gauge(FleetCounter::Connected, 0);
                state.client = None;
                sleep_unless(stop, RETRY);
            }
        }
        store.set_fleet_gauge(FleetCounter::Connected, 0);
    }
}

struct Fence {
    last_tick: u64,
    prev_confirmed: u64,
    fenced: bool,
}

impl Fence {
    /// Adds to the self-fenced total the part of the time since the last call during which
    /// the node was fenced by the confirmation it had then (a blocking read can span the
    /// whole episode), and logs when it becomes fenced and when it is caught up again.
    fn account(&mut self, store: &Store, cfg: &Config, log: &LogLine) {
        let now = unix_ms();
        let max_lag = cfg.max_lag.as_millis() as u64;
        let fenced_from = if self.prev_confirmed == 0 {
            self.last_tick
        } else {
            self.prev_confirmed + max_lag
        };
        let start = self.last_tick.max(fenced_from);
        if now > start {
            store.add_fleet_counter(FleetCounter::FencedMs, now - start);
        }
        let confirmed = store.fleet_confirmed_ms();
        let fenced = self_fenced(now, confirmed, max_lag);
        if fenced != self.fenced {
            if fenced && confirmed != 0 {
                log(
                    "error",
                    &format!(
                        "pagespeed fleet: node \"{}\" self-fenced: not confirmed caught up with stream \"{}\" for over {} ms; serving no hits until it is",
                        cfg.node, cfg.stream, max_lag
                    ),
                );
            } else if !fenced {
                log(
                    "notice",
                    &format!(
                        "pagespeed fleet: node \"{}\" caught up; serving hits",
                        cfg.node
                    ),
                );
            }
        }
        self.fenced = fenced;
        self.prev_confirmed = confirmed;
        self.last_tick = now;
    }
}

#[derive(Default)]
struct Session {
    client: Option<Client>,
}

impl Session {
    /// One connect-or-read round; false on any Redis error (the caller reconnects).
    fn round(&mut self, store: &Store, cfg: &Config) -> bool {
        let client = match self.client.as_mut() {
            Some(c) => c,
            None => {
                let Ok(mut c) = Client::connect(&cfg.url, TIMEOUT) else {
                    return false;
                };
                if catch_up_start(store, cfg, &mut c).is_err() {
                    return false;
                }
                store.set_fleet_gauge(FleetCounter::Connected, 1);
                self.client.insert(c)
            }
        };
        let (ms, seq) = store.fleet_applied();
        let applied = StreamId::new(ms, seq);
        let asked_at = unix_ms();
        let entries = match client.read_after(&cfg.stream, applied, BLOCK, BATCH) {
            Ok(e) => e,
            Err(_) => return false,
        };
        let full = entries.len() == BATCH;
        store.set_fleet_gauge(FleetCounter::LagEntries, entries.len() as u64);
        for (i, (id, body)) in entries.iter().enumerate() {
            store.set_fleet_gauge(FleetCounter::HeadMs, id.ms);
            if apply(store, body.as_deref()).is_err() {
                // The store refused (a lock timeout): retry the same entry next round.
                return true;
            }
            store.set_fleet_applied(id.ms, id.seq);
            store.add_fleet_counter(FleetCounter::Applied, 1);
            store.set_fleet_gauge(FleetCounter::LagEntries, (entries.len() - i - 1) as u64);
        }
        if !full {
            // The read reached the stream's end as it was when it was sent.
            store.set_fleet_confirmed_ms(asked_at);
        }
        let (ms, seq) = store.fleet_applied();
        let state = NodeState {
            applied: StreamId::new(ms, seq),
            tier: cfg.tier,
            heartbeat_ms: unix_ms(),
        };
        client
            .report(&cfg.nodes_key(), &cfg.node, &state.encode())
            .is_ok()
    }
}

/// At (re)connect: if the stream no longer holds the last applied entry, purges between it
/// and the oldest one left may be gone: flush everything (over-invalidate, never under).
fn catch_up_start(store: &Store, cfg: &Config, c: &mut Client) -> Result<(), super::client::Error> {
    let (ms, seq) = store.fleet_applied();
    let applied = StreamId::new(ms, seq);
    let bounds = c.bounds(&cfg.stream)?;
    if applied != StreamId::ZERO && bounds.is_none_or(|(first, _)| first > applied) {
        if store.flush_all(false).is_ok() {
            store.add_fleet_counter(FleetCounter::TrimFlushes, 1);
        }
        // Resume after the newest entry: the flush covered everything before it.
        if let Some((_, last)) = bounds {
            store.set_fleet_applied(last.ms, last.seq);
        }
    }
    if let Some((_, last)) = bounds {
        if last > applied {
            store.add_fleet_counter(FleetCounter::CatchUps, 1);
        }
    }
    Ok(())
}

/// Applies one entry exactly as a local purge; an entry that does not decode flushes all.
fn apply(store: &Store, body: Option<&[u8]>) -> Result<(), crate::store::Fault> {
    match body.map(decode) {
        Some(Ok(req)) => purge::apply(store, &req, 80, &[]).map(|_| ()),
        _ => {
            store.add_fleet_counter(FleetCounter::Undecodable, 1);
            store.flush_all(false).map(|_| ())
        }
    }
}
