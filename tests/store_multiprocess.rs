//! Multi-process tests of the store: forked workers racing lookups, commits and purges on one
//! shared segment, a purge racing another process's fill, workers SIGKILLed holding locks, and a
//! file store reopened after the process that wrote it exited.
//!
//! Children only touch the store (and pipes, a shared counter page, a diagnostics file), then
//! leave with `_exit`: they never return into the test harness. The parent waits with a
//! deadline and kills them by pid when it passes. Tests in this file run one at a time so that
//! no child inherits another test's pipes and the timings stay meaningful on two cores.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ngx_http_pagespeed_module::store::{
    Alternate, CommitOutcome, Fault, FillTicket, Hit, Lookup, Opened, PurgeReceipt, Store,
};

mod common;
use common::*;

// ---------------------------------------------------------------------------------------------
// Processes, pipes and shared counters

/// A page of counters shared by the parent and every child forked after it was made.
struct Shared {
    ptr: *mut AtomicU64,
    len: usize,
}

impl Shared {
    fn new(len: usize) -> Shared {
        let bytes = len * 8;
        // SAFETY: a fresh anonymous shared mapping; checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // Zero-filled pages are valid AtomicU64 zeros.
        Shared { ptr: p.cast(), len }
    }

    fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len);
        // SAFETY: in bounds of a live, 8-byte aligned mapping; atomics make shared use sound.
        unsafe { &*self.ptr.add(i) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 8) };
    }
}

/// A temp path unique to this test process and test, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        let p = std::env::temp_dir().join(format!("psv-mp-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempPath(p)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `f` on a thread and gives up on it after `limit` (a hang fails the test, not the run).
fn bounded<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("store operation did not return within {limit:?}"))
}

const N_KEYS: usize = 12;

/// Shared key `k`: two directories (prefix purges), three tags (tag purges).
fn path(k: usize) -> String {
    format!("/mp/d{}/k{k}.css", k % 2)
}

fn tag(k: usize) -> String {
    format!("t{}", k % 3)
}

// ---------------------------------------------------------------------------------------------
// Self-checking bodies

const BODY_MAGIC: u32 = 0x5053_5642;
const BODY_HEADER: usize = 28;

/// Who wrote a record: enough to tell every record apart and to check a read against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin {
    key: u32,
    descriptor: u32,
    pid: u32,
    seq: u32,
    stamp: u64,
}

/// A checksum independent of the store's own record checksum (xxh3).
fn body_sum(bytes: &[u8]) -> [u8; 8] {
    blake3::hash(bytes).as_bytes()[..8].try_into().unwrap()
}

/// `len` bytes: the origin, filler derived from it, and a checksum of everything before it.
fn make_body(o: &Origin, len: usize) -> Vec<u8> {
    let len = len.max(BODY_HEADER + 8);
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&BODY_MAGIC.to_le_bytes());
    for v in [o.key, o.descriptor, o.pid, o.seq] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&o.stamp.to_le_bytes());
    let mut x = Rng::new((o.pid as u64) << 32 | o.seq as u64);
    while b.len() < len - 8 {
        b.extend_from_slice(&x.next().to_le_bytes());
    }
    b.truncate(len - 8);
    let sum = body_sum(&b);
    b.extend_from_slice(&sum);
    b
}

fn read_body(b: &[u8]) -> Result<Origin, String> {
    if b.len() < BODY_HEADER + 8 {
        return Err(format!("body of {} bytes is too short", b.len()));
    }
    let (data, sum) = b.split_at(b.len() - 8);
    if body_sum(data) != sum {
        return Err(format!("torn body of {} bytes (checksum)", b.len()));
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    if u32_at(0) != BODY_MAGIC {
        return Err("body magic".into());
    }
    Ok(Origin {
        key: u32_at(4),
        descriptor: u32_at(8),
        pid: u32_at(12),
        seq: u32_at(16),
        stamp: u64::from_le_bytes(b[20..28].try_into().unwrap()),
    })
}

fn make_meta(k: usize, descriptor: u32) -> Vec<u8> {
    format!("key={k};descriptor={descriptor}").into_bytes()
}

/// Checks a hit on key `k` read into `buf`: untorn meta and body that belong to this key and
/// agree with the record's descriptor and stamp.
fn check_hit(k: usize, h: &Hit, buf: &[u8]) -> Result<Origin, String> {
    if buf.len() != h.meta_len + h.body_len {
        return Err(format!("sink holds {} bytes, hit says {h:?}", buf.len()));
    }
    let (meta, body) = buf.split_at(h.meta_len);
    let o = read_body(body)?;
    if meta != make_meta(k, h.descriptor).as_slice() {
        return Err(format!(
            "key {k}: meta {:?} for {h:?}",
            String::from_utf8_lossy(meta)
        ));
    }
    if o.key as usize != k || o.descriptor != h.descriptor || o.stamp != h.stamp {
        return Err(format!("key {k}: body of {o:?} under {h:?}"));
    }
    Ok(o)
}

fn commit(store: &Store, ticket: FillTicket, k: usize, o: &Origin, len: usize) -> CommitOutcome {
    let p = path(k);
    let t = tag(k);
    let scopes = store.buckets().scopes_for(&url(&p), &[t.as_str()]);
    let meta = make_meta(k, o.descriptor);
    let body = make_body(o, len);
    let alt = Alternate {
        descriptor: o.descriptor,
        scopes: &scopes,
        meta: &meta,
        body: &body,
    };
    store.commit(ticket, &key_of(&p), &alt)
}

fn any(_: u32, _: &[u8]) -> Option<u32> {
    Some(0)
}

// ---------------------------------------------------------------------------------------------
// Purges and which shared keys they cover

#[derive(Debug, Clone, Copy)]
enum Purge {
    Url(usize),
    /// A prefix purge of directory `d`, spelled with or without its trailing '/'.
    Prefix {
        dir: usize,
        slash: bool,
    },
    Tag(usize),
    All,
}

impl Purge {
    fn random(rng: &mut Rng) -> Purge {
        match rng.below(20) {
            0..=8 => Purge::Url(rng.below(N_KEYS as u64) as usize),
            9..=12 => Purge::Prefix {
                dir: rng.below(2) as usize,
                slash: rng.below(2) == 0,
            },
            13..=18 => Purge::Tag(rng.below(3) as usize),
            _ => Purge::All,
        }
    }

    fn covers(&self, k: usize) -> bool {
        match *self {
            Purge::Url(u) => u == k,
            Purge::Prefix { dir, .. } => k % 2 == dir,
            Purge::Tag(t) => k % 3 == t,
            Purge::All => true,
        }
    }

    fn run(&self, store: &Store) -> Result<PurgeReceipt, Fault> {
        match *self {
            Purge::Url(k) => {
                let p = path(k);
                store.purge_url(&[url(&p)], &[], &[key_of(&p)], false)
            }
            Purge::Prefix { dir, slash } => {
                let prefix = if slash {
                    format!("/mp/d{dir}/")
                } else {
                    format!("/mp/d{dir}/k")
                };
                store.purge_prefix(&[("https", "example.com", prefix.as_str())], false)
            }
            Purge::Tag(t) => store.purge_tag(&[format!("t{t}").as_str()], false),
            Purge::All => store.flush_all(false),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A worker: random lookups, fills and purges, checking every answer against what purges that
// already returned (in any process) allow.

/// Shared counter slots.
const DONE: usize = 0; // DONE + k: highest generation of a returned purge covering key k
const VIOLATIONS: usize = N_KEYS;
const OPS: usize = N_KEYS + 1; // OPS + c: lookups, hits, stored, fenced, purges
const N_OPS: usize = 5;
const SHARED_LEN: usize = OPS + N_OPS;

struct Worker<'a> {
    store: &'a Store,
    shared: &'a Shared,
    diag: &'a Path,
    rng: Rng,
    pid: u32,
    seq: u32,
    last_generation: u64,
    /// Share of fills (percent) with bodies of 100-300 KB: long copies under the shard lock.
    large_percent: u64,
}

impl Worker<'_> {
    fn violation(&self, msg: String) {
        self.shared.at(VIOLATIONS).fetch_add(1, Ordering::SeqCst);
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(self.diag) {
            let _ = writeln!(f, "pid {}: {msg}", self.pid);
        }
    }

    fn count(&self, op: usize) {
        self.shared.at(OPS + op).fetch_add(1, Ordering::Relaxed);
    }

    fn done(&self, k: usize) -> u64 {
        self.shared.at(DONE + k).load(Ordering::SeqCst)
    }

    /// Looks `k` up; a hit must be whole and not older than any covering purge that returned
    /// before the lookup started.
    fn lookup(&self, k: usize, buf: &mut Vec<u8>, at_least: u64, why: &str) {
        self.count(0);
        match self.store.lookup(&key_of(&path(k)), any, buf) {
            Lookup::Hit(h) => {
                self.count(1);
                if let Err(e) = check_hit(k, &h, buf) {
                    self.violation(format!("{why}: {e}"));
                } else if h.stamp < at_least {
                    self.violation(format!(
                        "{why}: key {k} hit with stamp {} after a purge returned generation \
                         {at_least}",
                        h.stamp
                    ));
                }
            }
            Lookup::Miss => {}
            Lookup::Fault(f) => self.violation(format!("{why}: lookup fault {f}")),
        }
    }

    fn fill(&mut self, k: usize) {
        let ticket = self.store.begin_fill();
        // Widen the window between ticket and commit so purges land inside it.
        match self.rng.below(4) {
            0 => {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            1 => (0..self.rng.below(2000)).for_each(|_| std::hint::spin_loop()),
            _ => {}
        }
        let covered_before = self.done(k);
        self.seq += 1;
        let o = Origin {
            key: k as u32,
            descriptor: self.rng.below(4) as u32,
            pid: self.pid,
            seq: self.seq,
            stamp: ticket.stamp,
        };
        let len = match self.rng.below(100) {
            r if r < self.large_percent => 100_000 + self.rng.below(200_000) as usize,
            r if r < 70 => 64 + self.rng.below(2000) as usize,
            _ => 2048 + self.rng.below(14000) as usize,
        };
        match commit(self.store, ticket, k, &o, len) {
            CommitOutcome::Stored => {
                self.count(2);
                if covered_before > ticket.stamp {
                    self.violation(format!(
                        "key {k}: commit with ticket {} stored after a covering purge returned \
                         generation {covered_before}",
                        ticket.stamp
                    ));
                }
            }
            CommitOutcome::Fenced => self.count(3),
            other => self.violation(format!("key {k}: commit {other:?}")),
        }
    }

    fn purge(&mut self, buf: &mut Vec<u8>) {
        let p = Purge::random(&mut self.rng);
        let before = (0..N_KEYS).map(|k| self.done(k)).max().unwrap_or(0);
        let r = match p.run(self.store) {
            Ok(r) => r,
            Err(f) => return self.violation(format!("{p:?}: purge fault {f}")),
        };
        self.count(4);
        let g = r.generation;
        if g <= before || g <= self.last_generation {
            self.violation(format!(
                "{p:?}: generation {g} not above {before} (returned purges) / {} (mine)",
                self.last_generation
            ));
        }
        self.last_generation = g;
        for k in (0..N_KEYS).filter(|&k| p.covers(k)) {
            self.shared.at(DONE + k).fetch_max(g, Ordering::SeqCst);
        }
        for k in (0..N_KEYS).filter(|&k| p.covers(k)) {
            self.lookup(k, buf, g, &format!("right after {p:?} -> {g}"));
        }
    }

    /// Runs random operations until `until` or `max_ops`.
    fn run(&mut self, until: Instant, max_ops: u32) {
        let mut buf = Vec::new();
        for _ in 0..max_ops {
            if Instant::now() >= until {
                break;
            }
            let k = self.rng.below(N_KEYS as u64) as usize;
            match self.rng.below(100) {
                0..=54 => {
                    let at_least = self.done(k);
                    self.lookup(k, &mut buf, at_least, "lookup");
                }
                55..=91 => self.fill(k),
                _ => self.purge(&mut buf),
            }
        }
    }
}

fn read_diag(paths: &[TempPath]) -> String {
    paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(&p.0).ok())
        .collect::<Vec<_>>()
        .join("")
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn concurrent_workers_never_read_torn_or_purged_data_and_fenced_fills_stay_out() {
    let _serial = serial();
    const WORKERS: usize = 4;
    let store = anon(4 << 20);
    let shared = Shared::new(SHARED_LEN);
    let diags: Vec<TempPath> = (0..WORKERS)
        .map(|i| TempPath::new(&format!("hammer-{i}.log")))
        .collect();
    let until = Instant::now() + Duration::from_millis(1500);
    let mut children: Vec<Child> = (0..WORKERS)
        .map(|i| {
            let (store, shared, diag) = (&store, &shared, &diags[i].0);
            spawn(move || {
                // SAFETY: getpid has no preconditions.
                let pid = unsafe { libc::getpid() } as u32;
                let mut w = Worker {
                    store,
                    shared,
                    diag,
                    rng: Rng::new(0x9e37_79b9 ^ (pid as u64) << 20 ^ i as u64),
                    pid,
                    seq: 0,
                    last_generation: 0,
                    large_percent: 3,
                };
                w.run(until, 2_000_000);
                i32::from(shared.at(VIOLATIONS).load(Ordering::SeqCst) != 0)
            })
        })
        .collect();
    let exits: Vec<Exit> = children
        .iter_mut()
        .map(|c| c.wait_until(until + Duration::from_secs(5)))
        .collect();
    let diag = read_diag(&diags);
    let ops: Vec<u64> = (0..N_OPS)
        .map(|c| shared.at(OPS + c).load(Ordering::SeqCst))
        .collect();
    assert_eq!(
        shared.at(VIOLATIONS).load(Ordering::SeqCst),
        0,
        "violations (lookups, hits, stored, fenced, purges = {ops:?}):\n{diag}"
    );
    assert!(
        exits.iter().all(|e| *e == Exit::Code(0)),
        "{exits:?}\n{diag}"
    );
    // The run exercised every path it claims to check.
    assert!(ops.iter().all(|&n| n > 0), "{ops:?}");
    let st = store.stats();
    assert_eq!(
        st.corrupt_resets + st.checksum_failures + st.lock_recoveries,
        0,
        "{st:?}"
    );
    // The parent sees the same answers as the workers did.
    let mut buf = Vec::new();
    for k in 0..N_KEYS {
        match store.lookup(&key_of(&path(k)), any, &mut buf) {
            Lookup::Hit(h) => {
                check_hit(k, &h, &buf).unwrap();
                assert!(h.stamp >= shared.at(DONE + k).load(Ordering::SeqCst));
            }
            Lookup::Miss => {}
            Lookup::Fault(f) => panic!("fault {f}"),
        }
    }
}

#[test]
fn a_purge_in_another_process_fences_an_in_flight_fill() {
    let _serial = serial();
    let store = anon(4 << 20);
    let k = 3;
    let stored = |o: &Origin| commit(&store, store.begin_fill(), k, o, 500);
    let old = Origin {
        key: k as u32,
        descriptor: 0,
        pid: 0,
        seq: 0,
        stamp: store.begin_fill().stamp,
    };
    assert_eq!(stored(&old), CommitOutcome::Stored);
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let store_ref = &store;
    let mut child = spawn(move || {
        let ticket = store_ref.begin_fill();
        send_byte(&ready_w);
        if !recv_byte(&go_r, Duration::from_secs(5)) {
            return 10;
        }
        let o = Origin {
            key: k as u32,
            descriptor: 0,
            pid: 1,
            seq: 1,
            stamp: ticket.stamp,
        };
        match commit(store_ref, ticket, k, &o, 500) {
            CommitOutcome::Fenced => {}
            CommitOutcome::Stored => return 11,
            _ => return 12,
        }
        match store_ref.lookup(&key_of(&path(k)), any, &mut Vec::new()) {
            Lookup::Miss => 0,
            Lookup::Hit(_) => 13,
            Lookup::Fault(_) => 14,
        }
    });
    assert!(
        recv_byte(&ready_r, Duration::from_secs(5)),
        "child never took its ticket"
    );
    let p = path(k);
    let r = store
        .purge_url(&[url(&p)], &[], &[key_of(&p)], false)
        .unwrap();
    assert_eq!(r.deleted, 1);
    send_byte(&go_w);
    let exit = child.wait_until(Instant::now() + Duration::from_secs(5));
    assert_eq!(
        exit,
        Exit::Code(0),
        "10 no go, 11 stored, 12 other outcome, 13 child hit, 14 child fault"
    );
    assert_eq!(
        store.lookup(&key_of(&p), any, &mut Vec::new()),
        Lookup::Miss
    );
    assert_eq!(store.stats().fenced, 1);
}

#[test]
fn a_worker_killed_holding_a_shard_lock_leaves_the_shard_usable_and_generations_intact() {
    let _serial = serial();
    let store = Arc::new(anon(4 << 20));
    let victim = 5;
    let purged = 6;
    let before_purge = store.begin_fill();
    for k in [victim, purged] {
        let o = Origin {
            key: k as u32,
            descriptor: 0,
            pid: 0,
            seq: 0,
            stamp: store.begin_fill().stamp,
        };
        assert_eq!(
            commit(&store, store.begin_fill(), k, &o, 800),
            CommitOutcome::Stored
        );
    }
    let g = Purge::Url(purged).run(&store).unwrap().generation;
    let (ready_r, ready_w) = pipe();
    let store_ref = &*store;
    let mut child = spawn(move || {
        let held = store_ref.hold_shard_lock_for_test(&key_of(&path(victim)), || {
            send_byte(&ready_w);
            for _ in 0..300 {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        i32::from(held.is_err())
    });
    assert!(
        recv_byte(&ready_r, Duration::from_secs(5)),
        "child never took the lock"
    );
    assert_eq!(child.kill(), Exit::Signal(libc::SIGKILL));

    // A dead owner is noticed at once (EOWNERDEAD), so the lookup answers instead of waiting out
    // the lock timeout and faulting; `bounded` turns any hang into a failure.
    let s = store.clone();
    let (lookup, outcome, after) = bounded(Duration::from_secs(3), move || {
        let mut buf = Vec::new();
        let lookup = match s.lookup(&key_of(&path(victim)), any, &mut buf) {
            Lookup::Hit(h) => check_hit(victim, &h, &buf).map(|_| ()),
            Lookup::Miss => Ok(()),
            Lookup::Fault(f) => Err(format!("fault {f}")),
        };
        let o = Origin {
            key: victim as u32,
            descriptor: 1,
            pid: 0,
            seq: 1,
            stamp: s.begin_fill().stamp,
        };
        let outcome = commit(&s, s.begin_fill(), victim, &o, 800);
        let after = s.lookup(&key_of(&path(victim)), any, &mut buf);
        (lookup, outcome, after)
    });
    lookup.unwrap();
    assert_eq!(outcome, CommitOutcome::Stored);
    assert!(
        matches!(after, Lookup::Hit(h) if h.descriptor == 1),
        "{after:?}"
    );
    let st = store.stats();
    assert_eq!(st.lock_recoveries, 1);
    assert_eq!(st.purge_clock, g, "the purge clock did not move");
    let o = Origin {
        key: purged as u32,
        descriptor: 0,
        pid: 0,
        seq: 2,
        stamp: before_purge.stamp,
    };
    assert_eq!(
        commit(&store, before_purge, purged, &o, 100),
        CommitOutcome::Fenced,
        "the purged URL's generation survived the recovery"
    );
    assert_eq!(Purge::Url(purged).run(&store).unwrap().generation, g + 1);
}

#[test]
fn workers_killed_at_random_points_leave_no_torn_reads_and_generations_only_grow() {
    let _serial = serial();
    const ROUNDS: u32 = 20;
    let store = anon(4 << 20);
    let shared = Shared::new(SHARED_LEN);
    let diag = TempPath::new("killed.log");
    let mut rng = Rng::new(0x5eed_c4a5);
    let mut clock = store.stats().purge_clock;
    let mut buf = Vec::new();
    let mut killed_in_work = 0;
    for round in 0..ROUNDS {
        let (ready_r, ready_w) = pipe();
        let (store_ref, shared_ref, diag_ref) = (&store, &shared, &diag.0);
        let mut child = spawn(move || {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() } as u32;
            let mut w = Worker {
                store: store_ref,
                shared: shared_ref,
                diag: diag_ref,
                rng: Rng::new((pid as u64) << 16 ^ round as u64),
                pid,
                seq: 0,
                last_generation: 0,
                large_percent: 40,
            };
            send_byte(&ready_w);
            w.run(Instant::now() + Duration::from_secs(2), 1_000_000);
            0
        });
        assert!(recv_byte(&ready_r, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_micros(1000 + rng.below(7000)));
        if child.kill() == Exit::Signal(libc::SIGKILL) {
            killed_in_work += 1;
        }

        // The store still answers, and every hit is whole and allowed.
        for k in 0..N_KEYS {
            match store.lookup(&key_of(&path(k)), any, &mut buf) {
                Lookup::Hit(h) => {
                    check_hit(k, &h, &buf).unwrap_or_else(|e| panic!("round {round}: {e}"));
                    let done = shared.at(DONE + k).load(Ordering::SeqCst);
                    assert!(h.stamp >= done, "round {round}: key {k} {h:?} after {done}");
                }
                Lookup::Miss => {}
                Lookup::Fault(f) => panic!("round {round}: key {k}: fault {f}"),
            }
        }
        let now = store.stats().purge_clock;
        assert!(
            now >= clock,
            "round {round}: purge clock went from {clock} to {now}"
        );
        clock = now;

        // A purge still works, gets a higher generation and fences a fill that predates it.
        let k = rng.below(N_KEYS as u64) as usize;
        let ticket = store.begin_fill();
        let g = Purge::Url(k).run(&store).unwrap().generation;
        assert!(
            g > clock,
            "round {round}: purge got {g} after clock {clock}"
        );
        clock = g;
        shared.at(DONE + k).fetch_max(g, Ordering::SeqCst);
        let o = Origin {
            key: k as u32,
            descriptor: 0,
            pid: 0,
            seq: round,
            stamp: ticket.stamp,
        };
        assert_eq!(commit(&store, ticket, k, &o, 300), CommitOutcome::Fenced);
        let fresh = store.begin_fill();
        let o = Origin {
            stamp: fresh.stamp,
            ..o
        };
        assert_eq!(commit(&store, fresh, k, &o, 300), CommitOutcome::Stored);
        assert!(matches!(
            store.lookup(&key_of(&path(k)), any, &mut buf),
            Lookup::Hit(h) if h.stamp == fresh.stamp
        ));
    }
    assert_eq!(
        shared.at(VIOLATIONS).load(Ordering::SeqCst),
        0,
        "{}",
        read_diag(std::slice::from_ref(&diag))
    );
    assert_eq!(
        killed_in_work, ROUNDS,
        "every child was still working when killed"
    );
    assert_eq!(store.stats().corrupt_resets, 0, "{:?}", store.stats());
}

#[test]
fn a_file_store_keeps_entries_and_purges_after_the_writing_process_exits() {
    let _serial = serial();
    let file = TempPath::new("persist.cache");
    let file_ref = &file.0;
    let mut child = spawn(move || {
        let store = file_store(file_ref, 2 << 20);
        if store.opened() != &Opened::Created {
            return 10;
        }
        for k in [0, 1] {
            let o = Origin {
                key: k as u32,
                descriptor: 0,
                pid: 7,
                seq: k as u32,
                stamp: store.begin_fill().stamp,
            };
            if commit(&store, store.begin_fill(), k, &o, 4000) != CommitOutcome::Stored {
                return 11;
            }
        }
        if Purge::Url(1).run(&store).map(|r| r.generation) != Ok(1) {
            return 12;
        }
        // Covers keys 1 and 3 ("/mp/d1/", spelled without its '/'); key 0 is beside it.
        let dir = Purge::Prefix {
            dir: 1,
            slash: false,
        };
        if dir.run(&store).map(|r| r.generation) != Ok(2) {
            return 13;
        }
        0
    });
    assert_eq!(
        child.wait_until(Instant::now() + Duration::from_secs(5)),
        Exit::Code(0)
    );

    let store = file_store(&file.0, 2 << 20);
    assert_eq!(store.opened(), &Opened::Reopened);
    let mut buf = Vec::new();
    let Lookup::Hit(h) = store.lookup(&key_of(&path(0)), any, &mut buf) else {
        panic!("the kept entry is gone")
    };
    assert_eq!(check_hit(0, &h, &buf).unwrap().pid, 7);
    assert_eq!(store.lookup(&key_of(&path(1)), any, &mut buf), Lookup::Miss);
    assert_eq!(
        store.stats().purge_clock,
        2,
        "generations survive the restart"
    );
    // Tickets from before each purge are still fenced.
    for (k, stamp) in [(1, 0), (3, 1)] {
        let o = Origin {
            key: k as u32,
            descriptor: 0,
            pid: 0,
            seq: 0,
            stamp,
        };
        assert_eq!(
            commit(&store, FillTicket { stamp }, k, &o, 100),
            CommitOutcome::Fenced,
            "key {k} with ticket {stamp}"
        );
    }
    let fresh = store.begin_fill();
    assert_eq!(fresh.stamp, 2);
    let o = Origin {
        key: 1,
        descriptor: 0,
        pid: 0,
        seq: 1,
        stamp: 2,
    };
    assert_eq!(commit(&store, fresh, 1, &o, 100), CommitOutcome::Stored);
}
