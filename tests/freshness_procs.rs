//! Multi-process tests of leases, refresh (an unchanged revalidation) and replace (a changed
//! one): forked workers racing for one key's lease, owners that die or outlive their deadline,
//! purges in one process ending another's lease and fencing its fill, refreshes racing hard
//! purges, and a replace seen by every process.
//!
//! Children only touch the store, pipes, a shared counter page and a diagnostics file, then
//! leave with `_exit`; every child is waited for (or killed and reaped on drop). Waits are
//! bounded loops whose expiry fails the test; no assertion is a timing threshold. Tests run
//! one at a time so no child inherits another test's pipes.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use ngx_http_pagespeed_module::store::{
    monotonic_ms, Alternate, CommitOutcome, Fault, FillTicket, Key, Kin, Lease, LeaseRequest,
    Lookup, PurgeReceipt, PurgeState, Refresh, Release, Store,
};

mod common;
use common::*;

// ---------------------------------------------------------------------------------------------
// Processes, pipes, shared counters

const LIMIT: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds or `deadline` passes (then false): yields first, then naps.
fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    let mut spins = 0u32;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        spins += 1;
        if spins < 64 {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Counters shared by the parent and every child forked after it was made (slot 0 counts
/// failures), and a diagnostics file the failures are described in.
struct Board {
    ptr: *mut AtomicU64,
    len: usize,
    diag: PathBuf,
}

const FAILURES: usize = 0;

impl Board {
    fn new(len: usize, name: &str) -> Board {
        let len = len + 1;
        // SAFETY: a fresh anonymous shared mapping; checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let diag = std::env::temp_dir().join(format!("psv-fp-{}-{name}.log", std::process::id()));
        let _ = std::fs::remove_file(&diag);
        // Zero-filled pages are valid AtomicU64 zeros.
        Board {
            ptr: p.cast(),
            len,
            diag,
        }
    }

    fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "board slot {i} of {}", self.len);
        // SAFETY: in bounds of a live, 8-byte aligned mapping; atomics make shared use sound.
        unsafe { &*self.ptr.add(i) }
    }

    fn get(&self, i: usize) -> u64 {
        self.at(i).load(SeqCst)
    }

    fn set(&self, i: usize, v: u64) {
        self.at(i).store(v, SeqCst)
    }

    fn add(&self, i: usize) {
        self.at(i).fetch_add(1, SeqCst);
    }

    fn max(&self, i: usize, v: u64) {
        self.at(i).fetch_max(v, SeqCst);
    }

    fn fail(&self, msg: impl AsRef<str>) {
        self.add(FAILURES);
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.diag)
        {
            let _ = writeln!(f, "pid {}: {}", std::process::id(), msg.as_ref());
        }
    }

    fn report(&self) -> String {
        std::fs::read_to_string(&self.diag).unwrap_or_default()
    }

    /// Fails the test if any process recorded a failure.
    fn assert_clean(&self) {
        assert_eq!(self.get(FAILURES), 0, "failures:\n{}", self.report());
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 8) };
        let _ = std::fs::remove_file(&self.diag);
    }
}

fn seed() -> u64 {
    (std::process::id() as u64) << 24 ^ monotonic_ms()
}

// ---------------------------------------------------------------------------------------------
// The store, keys, scopes and self-checking records

/// Key `k`: two directories (prefix purges), three tags (tag purges).
fn path(k: usize) -> String {
    format!("/fp/d{}/k{k}.css", k % 2)
}

fn dir(k: usize) -> String {
    format!("/fp/d{}/", k % 2)
}

fn tag(k: usize) -> String {
    format!("t{}", k % 3)
}

fn key(k: usize) -> Key {
    key_of(&path(k))
}

fn request(store: &Store, k: usize, hold_ms: u64) -> LeaseRequest {
    LeaseRequest::new(&store.buckets().scopes_for(&url(&path(k)), &[]), hold_ms)
}

const ORIGINAL: u32 = 0;
const VARIANT: u32 = 0x10;

/// A body naming its key, descriptor and version, with filler derived from them: a read can
/// tell whose it is and whether it is whole.
fn body_for(k: usize, d: u32, v: u64) -> Vec<u8> {
    let mut b = format!("body k{k} d{d} v{v}|").into_bytes();
    let mut x = Rng::new((k as u64) << 48 ^ (d as u64) << 32 ^ v);
    let len = 64 + (v % 700) as usize;
    while b.len() < len {
        b.push(b'a' + x.below(26) as u8);
    }
    b
}

/// The version of a body of key `k`, descriptor `d`, if it is one whole.
fn body_version(k: usize, d: u32, b: &[u8]) -> Result<u64, String> {
    let head = format!("body k{k} d{d} v");
    let text = String::from_utf8_lossy(b);
    let bad = || format!("key {k} descriptor {d}: foreign or torn body {text:?}");
    let rest = text.strip_prefix(&head).ok_or_else(bad)?;
    let v: u64 = rest
        .split('|')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| bad())?;
    if body_for(k, d, v) != b {
        return Err(bad());
    }
    Ok(v)
}

fn meta_for(k: usize, d: u32, note: &str) -> Vec<u8> {
    format!("meta k{k} d{d} {note}").into_bytes()
}

fn commit(
    store: &Store,
    ticket: FillTicket,
    k: usize,
    d: u32,
    v: u64,
    note: &str,
) -> CommitOutcome {
    let p = path(k);
    let t = tag(k);
    let scopes = store.buckets().scopes_for(&url(&p), &[t.as_str()]);
    let meta = meta_for(k, d, note);
    let body = body_for(k, d, v);
    store.commit(
        ticket,
        &key(k),
        &Alternate {
            descriptor: d,
            scopes: &scopes,
            meta: &meta,
            body: &body,
        },
    )
}

/// The unchanged revalidation of key `k`'s original and its variant, with new metadata whose
/// length depends on `n` (so both the in-place and the rewrite paths run).
fn refresh(store: &Store, ticket: FillTicket, k: usize, n: u64) -> Refresh {
    let note = format!("refreshed{}{}", n, "+".repeat((n % 3) as usize));
    store.refresh(
        ticket,
        &key(k),
        ORIGINAL,
        |d, _| {
            if d == VARIANT {
                Kin::Built
            } else {
                Kin::Unrelated
            }
        },
        |d, _| Some(meta_for(k, d, &note)),
    )
}

/// A found alternate, checked to be whole and to belong to key `k` and descriptor `d`.
#[derive(Debug)]
struct Found {
    state: PurgeState,
    stamp: u64,
    meta: String,
    version: u64,
}

fn find(store: &Store, k: usize, d: u32) -> Result<Option<Found>, String> {
    let mut buf = Vec::new();
    match store.lookup(&key(k), |x, _| (x == d).then_some(0), &mut buf) {
        Lookup::Hit(h) => {
            if h.descriptor != d || buf.len() != h.meta_len + h.body_len {
                return Err(format!("key {k}: hit {h:?} for descriptor {d}"));
            }
            let (meta, body) = buf.split_at(h.meta_len);
            let meta = String::from_utf8_lossy(meta).into_owned();
            if !meta.starts_with(&format!("meta k{k} d{d} ")) {
                return Err(format!("key {k} descriptor {d}: foreign meta {meta:?}"));
            }
            Ok(Some(Found {
                state: h.purge_state,
                stamp: h.stamp,
                meta,
                version: body_version(k, d, body)?,
            }))
        }
        Lookup::Miss => Ok(None),
        Lookup::Fault(f) => Err(format!("key {k} descriptor {d}: lookup fault {f}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Hard and soft purges and which keys they cover

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// A URL purge that also deletes the key.
    UrlDelete,
    /// A URL purge without the key to delete (the tables alone make the entry invalid).
    UrlLazy,
    Prefix,
    Tag,
    All,
}

const SCOPES: [Scope; 5] = [
    Scope::UrlDelete,
    Scope::UrlLazy,
    Scope::Prefix,
    Scope::Tag,
    Scope::All,
];

/// Runs a purge of `scope` aimed at key `k`.
fn purge(store: &Store, scope: Scope, k: usize, soft: bool) -> Result<PurgeReceipt, Fault> {
    let p = path(k);
    match scope {
        Scope::UrlDelete => store.purge_url(&[url(&p)], &[], &[key(k)], soft),
        Scope::UrlLazy => store.purge_url(&[url(&p)], &[], &[], soft),
        Scope::Prefix => store.purge_prefix(&[("https", "example.com", dir(k).as_str())], soft),
        Scope::Tag => store.purge_tag(&[tag(k).as_str()], soft),
        Scope::All => store.flush_all(soft),
    }
}

/// Whether a purge of `scope` aimed at key `aim` covers key `k` (hash buckets may cover more;
/// the checks below only rely on what is surely covered).
fn covers(scope: Scope, aim: usize, k: usize) -> bool {
    match scope {
        Scope::UrlDelete | Scope::UrlLazy => aim == k,
        Scope::Prefix => aim % 2 == k % 2,
        Scope::Tag => aim % 3 == k % 3,
        Scope::All => true,
    }
}

fn assert_store_sound(store: &Store) {
    let st = store.stats();
    assert_eq!(
        st.corrupt_resets + st.checksum_failures + st.lock_recoveries,
        0,
        "{st:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Many processes racing for one lease

#[test]
fn racing_processes_get_exactly_one_lease_per_round() {
    let _serial = serial();
    const PROCS: usize = 8;
    const ROUNDS: usize = 300;
    // Per round: acquired, held, other answers, answered, released.
    const ACQ: usize = 0;
    const HELD: usize = 1;
    const OTHER: usize = 2;
    const ANSWERED: usize = 3;
    const RELEASED: usize = 4;
    const GO: usize = 1; // round r runs once GO > r
    const PASS_GO: usize = 2;
    const PASS_SEEN: usize = 3;
    const WINS: usize = 4; // WINS + i: rounds child i won
    const ROUND: usize = WINS + PROCS;
    let slot = |r: usize, f: usize| ROUND + 5 * r + f;
    let store = anon(4 << 20);
    let board = Board::new(ROUND + 5 * ROUNDS, "lease-race");
    let k = 1;
    let deadline = Instant::now() + LIMIT;
    let mut children: Vec<Child> = (0..PROCS)
        .map(|i| {
            let (store, board) = (&store, &board);
            spawn(move || {
                let req = request(store, k, 600_000);
                for r in 0..ROUNDS {
                    if !wait_until(deadline, || board.get(GO) > r as u64) {
                        board.fail(format!("child {i}: round {r} never started"));
                        return 2;
                    }
                    match store.lease(&key(k), &req) {
                        Ok(Lease::Acquired(token)) => {
                            board.add(slot(r, ACQ));
                            board.add(WINS + i);
                            board.add(slot(r, ANSWERED));
                            // Hold it until every process has asked.
                            if !wait_until(deadline, || {
                                board.get(slot(r, ANSWERED)) >= PROCS as u64
                            }) {
                                board.fail(format!("child {i}: round {r}: others never asked"));
                                return 3;
                            }
                            let how = if r == ROUNDS - 1 {
                                Release::Pass { ms: 600_000 }
                            } else {
                                Release::Done
                            };
                            if let Err(f) = store.release_lease(&key(k), token, how) {
                                board.fail(format!("child {i}: round {r}: release fault {f}"));
                            }
                            board.add(slot(r, RELEASED));
                        }
                        Ok(Lease::Held) => {
                            // The winner releases only once this process has answered.
                            let state = store.lease_state(&key(k), &req);
                            if state != Ok(Lease::Held) {
                                board.fail(format!(
                                    "child {i}: round {r}: lease Held, then lease_state {state:?}"
                                ));
                            }
                            board.add(slot(r, HELD));
                            board.add(slot(r, ANSWERED));
                        }
                        other => {
                            board.fail(format!("child {i}: round {r}: lease {other:?}"));
                            board.add(slot(r, OTHER));
                            board.add(slot(r, ANSWERED));
                        }
                    }
                }
                // The last winner left a hit-for-pass: every process sees it.
                if !wait_until(deadline, || board.get(PASS_GO) > 0) {
                    board.fail(format!("child {i}: pass phase never started"));
                    return 4;
                }
                let (l, s) = (store.lease(&key(k), &req), store.lease_state(&key(k), &req));
                if (l, s) != (Ok(Lease::Pass), Ok(Lease::Pass)) {
                    board.fail(format!(
                        "child {i}: after the pass: lease {l:?}, state {s:?}"
                    ));
                }
                board.add(PASS_SEEN);
                0
            })
        })
        .collect();

    let req = request(&store, k, 600_000);
    for r in 0..ROUNDS {
        board.set(GO, r as u64 + 1);
        let settled = wait_until(deadline, || {
            board.get(slot(r, ANSWERED)) == PROCS as u64
                && board.get(slot(r, RELEASED)) == board.get(slot(r, ACQ))
        });
        let counts = (
            board.get(slot(r, ACQ)),
            board.get(slot(r, HELD)),
            board.get(slot(r, OTHER)),
        );
        assert!(
            settled,
            "round {r} never settled: {counts:?}\n{}",
            board.report()
        );
        assert_eq!(
            counts,
            (1, PROCS as u64 - 1, 0),
            "round {r}: (acquired, held, other)\n{}",
            board.report()
        );
        let expect = if r == ROUNDS - 1 {
            Lease::Pass
        } else {
            Lease::Unavailable
        };
        assert_eq!(
            store.lease_state(&key(k), &req),
            Ok(expect),
            "round {r}: after the winner's release"
        );
    }
    board.set(PASS_GO, 1);
    let exits = wait_all(&mut children, LIMIT);
    board.assert_clean();
    assert!(exits.iter().all(|e| *e == Exit::Code(0)), "{exits:?}");
    assert_eq!(board.get(PASS_SEEN), PROCS as u64);
    assert_eq!(store.lease(&key(k), &req), Ok(Lease::Pass));
    let wins: Vec<u64> = (0..PROCS).map(|i| board.get(WINS + i)).collect();
    assert_eq!(wins.iter().sum::<u64>(), ROUNDS as u64);
    eprintln!("lease race: wins per process {wins:?}");
    assert_store_sound(&store);
}

// ---------------------------------------------------------------------------------------------
// 2. Owner death and deadline expiry

#[test]
fn a_dead_owners_lease_is_taken_over_by_another_process() {
    let _serial = serial();
    let store = anon(4 << 20);
    let board = Board::new(1, "dead-owner");
    let k = 2;
    let req = request(&store, k, 600_000);
    let (store_ref, board_ref) = (&store, &board);

    // An owner that exits without releasing (its deadline is ten minutes away).
    let mut a = spawn(move || {
        let req = request(store_ref, k, 600_000);
        match store_ref.lease(&key(k), &req) {
            Ok(Lease::Acquired(_)) => 0,
            other => {
                board_ref.fail(format!("first owner: {other:?}"));
                1
            }
        }
    });
    assert_eq!(a.wait(STEP), Exit::Code(0), "{}", board.report());
    // Reaped: its pid is gone. Another process takes the lease over, and holds it (as seen
    // by itself), then exits holding it too.
    let mut b = spawn(move || {
        let req = request(store_ref, k, 600_000);
        match store_ref.lease(&key(k), &req) {
            Ok(Lease::Acquired(_)) => {}
            other => {
                board_ref.fail(format!("second process after the owner died: {other:?}"));
                return 1;
            }
        }
        match store_ref.lease(&key(k), &req) {
            Ok(Lease::Held) => 0,
            other => {
                board_ref.fail(format!("second owner, asking again: {other:?}"));
                2
            }
        }
    });
    assert_eq!(b.wait(STEP), Exit::Code(0), "{}", board.report());
    assert_eq!(
        store.lease_state(&key(k), &req),
        Ok(Lease::Unavailable),
        "a waiter sees the dead owner's lease gone"
    );
    let Ok(Lease::Acquired(t)) = store.lease(&key(k), &req) else {
        panic!("the parent could not take the dead owner's lease");
    };
    store.release_lease(&key(k), t, Release::Done).unwrap();

    // An owner SIGKILLed while holding: held while it lives, free once it is gone.
    let (ready_r, ready_w) = pipe();
    let mut c = spawn(move || {
        let req = request(store_ref, k, 600_000);
        if !matches!(store_ref.lease(&key(k), &req), Ok(Lease::Acquired(_))) {
            board_ref.fail("killed owner never got the lease");
            return 1;
        }
        send_byte(&ready_w);
        for _ in 0..600 {
            std::thread::sleep(Duration::from_millis(100));
        }
        0
    });
    assert!(recv_byte(&ready_r, STEP), "{}", board.report());
    assert_eq!(store.lease(&key(k), &req), Ok(Lease::Held), "owner alive");
    assert_eq!(store.lease_state(&key(k), &req), Ok(Lease::Held));
    assert_eq!(c.kill(), Exit::Signal(libc::SIGKILL));
    let Ok(Lease::Acquired(t)) = store.lease(&key(k), &req) else {
        panic!("the SIGKILLed owner's lease was not free");
    };
    store.release_lease(&key(k), t, Release::Done).unwrap();

    // A hit-for-pass is not a fill in flight: it stands until its deadline, owner or not.
    let mut d = spawn(move || {
        let req = request(store_ref, k, 600_000);
        match store_ref.lease(&key(k), &req) {
            Ok(Lease::Acquired(t)) => {
                match store_ref.release_lease(&key(k), t, Release::Pass { ms: 600_000 }) {
                    Ok(()) => 0,
                    Err(f) => {
                        board_ref.fail(format!("pass release: {f}"));
                        2
                    }
                }
            }
            other => {
                board_ref.fail(format!("pass owner: {other:?}"));
                1
            }
        }
    });
    assert_eq!(d.wait(STEP), Exit::Code(0), "{}", board.report());
    assert_eq!(store.lease(&key(k), &req), Ok(Lease::Pass));
    board.assert_clean();
    assert_store_sound(&store);
}

#[test]
fn a_live_owners_lease_is_taken_over_only_after_its_deadline() {
    let _serial = serial();
    const HOLD_MS: u64 = 300;
    const BEFORE: usize = 1;
    let store = anon(4 << 20);
    let board = Board::new(1, "deadline");
    let k = 3;
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let (store_ref, board_ref) = (&store, &board);
    let mut owner = spawn(move || {
        let req = request(store_ref, k, HOLD_MS);
        let before = monotonic_ms();
        let Ok(Lease::Acquired(t)) = store_ref.lease(&key(k), &req) else {
            board_ref.fail("owner never got the lease");
            return 1;
        };
        board_ref.set(BEFORE, before);
        send_byte(&ready_w);
        if !recv_byte(&go_r, STEP) {
            return 2;
        }
        // The expired owner's late release must not end the lease taken over from it.
        if let Err(f) = store_ref.release_lease(&key(k), t, Release::Done) {
            board_ref.fail(format!("late release: {f}"));
        }
        match store_ref.lease_state(&key(k), &req) {
            Ok(Lease::Held) => 0,
            other => {
                board_ref.fail(format!("after the old owner's late release: {other:?}"));
                3
            }
        }
    });
    assert!(recv_byte(&ready_r, STEP), "{}", board.report());
    let t0 = board.get(BEFORE);
    let req = request(&store, k, 600_000);
    let give_up = Instant::now() + STEP;
    let mut held = 0u64;
    let token = loop {
        match store.lease(&key(k), &req) {
            Ok(Lease::Acquired(t)) => break t,
            Ok(Lease::Held) => held += 1,
            other => panic!("while the owner lives: {other:?}"),
        }
        assert!(
            Instant::now() < give_up,
            "a {HOLD_MS} ms lease never expired"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // Ordering, not speed: the lease() that took over read the clock after this bound.
    let now = monotonic_ms();
    assert!(
        now >= t0 + HOLD_MS,
        "taken over at {now} ms, before the deadline {t0} + {HOLD_MS}, while its owner lived \
         ({held} Held answers before)"
    );
    send_byte(&go_w);
    assert_eq!(owner.wait(STEP), Exit::Code(0), "{}", board.report());
    assert_eq!(store.lease_state(&key(k), &req), Ok(Lease::Held));
    store.release_lease(&key(k), token, Release::Done).unwrap();
    assert_eq!(store.lease_state(&key(k), &req), Ok(Lease::Unavailable));
    board.assert_clean();
    assert_store_sound(&store);
}

// ---------------------------------------------------------------------------------------------
// 3. A purge in another process ends a lease and fences its owner

#[test]
fn a_purge_in_another_process_ends_a_lease_and_fences_its_owner() {
    let _serial = serial();
    const TICKET: usize = 1;
    const GEN: usize = 2;
    const COMMIT: usize = 3; // 1 stored, 2 fenced, 3 other
    const REFRESH: usize = 4; // 1 refreshed, 2 fenced, 3 gone, 4 other
    let store = anon(4 << 20);
    let board = Board::new(4, "purge-ends-lease");
    let cases: Vec<(Scope, bool)> = SCOPES
        .iter()
        .map(|&s| (s, false))
        .chain(
            SCOPES
                .iter()
                .filter(|&&s| s != Scope::UrlLazy)
                .map(|&s| (s, true)),
        )
        .collect();
    for (i, &(scope, soft)) in cases.iter().enumerate() {
        let k = i;
        let case = format!("{scope:?} soft={soft}");
        let (ready_r, ready_w) = pipe();
        let (go_r, go_w) = pipe();
        let (step_r, step_w) = pipe();
        let (store_ref, board_ref) = (&store, &board);
        let case_ref = &case;
        // Process A: takes the lease and a fill ticket, then waits while B purges.
        let mut a = spawn(move || {
            let req = request(store_ref, k, 600_000);
            let Ok(Lease::Acquired(token)) = store_ref.lease(&key(k), &req) else {
                board_ref.fail(format!("{case_ref}: A never got the lease"));
                return 1;
            };
            let ticket = store_ref.begin_fill();
            board_ref.set(TICKET, ticket.stamp);
            send_byte(&ready_w);
            if !recv_byte(&go_r, STEP) {
                return 2;
            }
            // Its lease is over: another process holds the key's lease now, and A's late
            // release does not end that one.
            let l = store_ref.lease(&key(k), &req);
            if let Err(f) = store_ref.release_lease(&key(k), token, Release::Done) {
                board_ref.fail(format!("{case_ref}: A's late release: {f}"));
            }
            let s = store_ref.lease_state(&key(k), &req);
            if (l, s) != (Ok(Lease::Held), Ok(Lease::Held)) {
                board_ref.fail(format!(
                    "{case_ref}: A after the purge: lease {l:?}, after its release {s:?}"
                ));
            }
            let out = commit(store_ref, ticket, k, ORIGINAL, 1, "by-A");
            board_ref.set(
                COMMIT,
                match out {
                    CommitOutcome::Stored => 1,
                    CommitOutcome::Fenced => 2,
                    _ => 3,
                },
            );
            send_byte(&step_w);
            if soft {
                return 0;
            }
            if !recv_byte(&go_r, STEP) {
                return 3;
            }
            let r = refresh(store_ref, ticket, k, 7);
            board_ref.set(
                REFRESH,
                match r {
                    Refresh::Refreshed { .. } => 1,
                    Refresh::Fenced => 2,
                    Refresh::Gone => 3,
                    Refresh::Fault(_) => 4,
                },
            );
            send_byte(&step_w);
            0
        });
        assert!(recv_byte(&ready_r, STEP), "{case}: {}", board.report());
        let ta = board.get(TICKET);
        let req = request(&store, k, 600_000);
        assert_eq!(store.lease_state(&key(k), &req), Ok(Lease::Held), "{case}");

        // Process B purges the key.
        let mut b = spawn(move || match purge(store_ref, scope, k, soft) {
            Ok(r) => {
                board_ref.set(GEN, r.generation);
                0
            }
            Err(f) => {
                board_ref.fail(format!("B's purge: {f}"));
                1
            }
        });
        assert_eq!(b.wait(STEP), Exit::Code(0), "{case}: {}", board.report());
        let g = board.get(GEN);
        assert!(g > ta, "{case}: generation {g} after A's ticket {ta}");

        // The purge ended A's lease (A still lives): a lease taken now is granted.
        let Ok(Lease::Acquired(mine)) = store.lease(&key(k), &req) else {
            panic!("{case}: the lease survived a covering purge");
        };
        send_byte(&go_w);
        assert!(recv_byte(&step_r, STEP), "{case}: {}", board.report());
        let found = find(&store, k, ORIGINAL).unwrap();
        if soft {
            // A soft purge does not fence a fill; what it stored is stale, never current.
            assert_eq!(board.get(COMMIT), 1, "{case}: A's commit");
            let f = found.unwrap_or_else(|| panic!("{case}: A's commit is not found"));
            assert_eq!((f.state, f.stamp), (PurgeState::SoftPurged, ta), "{case}");
        } else {
            assert_eq!(board.get(COMMIT), 2, "{case}: A's commit must be fenced");
            assert!(found.is_none(), "{case}: {found:?}");
        }

        // A fill after the purge is stored; A's refresh from before it is fenced.
        let fresh = store.begin_fill();
        for d in [ORIGINAL, VARIANT] {
            assert_eq!(
                commit(&store, fresh, k, d, 2, "fresh"),
                CommitOutcome::Stored,
                "{case}"
            );
        }
        if !soft {
            send_byte(&go_w);
            assert!(recv_byte(&step_r, STEP), "{case}: {}", board.report());
            assert_eq!(board.get(REFRESH), 2, "{case}: A's refresh must be fenced");
            for d in [ORIGINAL, VARIANT] {
                let f = find(&store, k, d).unwrap().expect("the fresh fill stays");
                assert_eq!(
                    (f.state, f.stamp, f.version, f.meta),
                    (
                        PurgeState::Current,
                        fresh.stamp,
                        2,
                        String::from_utf8(meta_for(k, d, "fresh")).unwrap()
                    ),
                    "{case}"
                );
            }
        }
        assert_eq!(a.wait(STEP), Exit::Code(0), "{case}: {}", board.report());
        assert_eq!(
            store.lease_state(&key(k), &req),
            Ok(Lease::Held),
            "{case}: my lease survived A"
        );
        store.release_lease(&key(k), mine, Release::Done).unwrap();
        board.assert_clean();
    }
    assert_store_sound(&store);
}

// ---------------------------------------------------------------------------------------------
// 4. Refresh racing hard purges

/// In lockstep, 2000 times: the parent stores an original and its variant; process R takes a
/// refresh ticket; then R refreshes while process P hard-purges the key, released together.
/// Once the purge has returned, no process may find either alternate: the refresh started
/// before the purge, so whatever it made fresh the purge covers.
#[test]
fn a_refresh_that_started_before_a_hard_purge_never_revives_the_entry() {
    let _serial = serial();
    const ITERS: u64 = 2000;
    const NK: usize = 4;
    const PREP: usize = 1; // iteration i prepares once PREP > i
    const READY: usize = 2; // children ready for i
    const GO: usize = 3;
    const TICKET: usize = 4;
    const GEN: usize = 5;
    const PURGED: usize = 6; // P's purge of iteration i returned once PURGED > i
    const DONE: usize = 7; // children done with i
    const OUTCOMES: usize = 8; // refreshed, fenced, gone
    let store = anon(8 << 20);
    let board = Board::new(OUTCOMES + 3, "refresh-vs-purge");
    let deadline = Instant::now() + Duration::from_secs(120);
    let scope_of = |i: u64| SCOPES[(i as usize / NK) % SCOPES.len()];
    let (store_ref, board_ref) = (&store, &board);
    let step = move |i: u64, what: &str, cond: &dyn Fn() -> bool| -> bool {
        if wait_until(deadline, cond) {
            return true;
        }
        board_ref.fail(format!("iteration {i}: {what} never came"));
        false
    };
    // Both children check that neither alternate is found once the purge has returned.
    let gone = move |i: u64, k: usize, who: &str| {
        for d in [ORIGINAL, VARIANT] {
            match find(store_ref, k, d) {
                Ok(None) => {}
                Ok(Some(f)) => board_ref.fail(format!(
                    "iteration {i} ({:?}): {who} found key {k} descriptor {d} after the \
                     purge to {} returned: {f:?}",
                    scope_of(i),
                    board_ref.get(GEN)
                )),
                Err(e) => board_ref.fail(format!("iteration {i}: {who}: {e}")),
            }
        }
    };
    let refresher = spawn(move || {
        let mut rng = Rng::new(seed());
        for i in 0..ITERS {
            let k = i as usize % NK;
            if !step(i, "prepare", &|| board_ref.get(PREP) > i) {
                return 1;
            }
            let ticket = store_ref.begin_fill();
            board_ref.set(TICKET, ticket.stamp);
            board_ref.add(READY);
            if !step(i, "go", &|| board_ref.get(GO) > i) {
                return 1;
            }
            rng.jitter();
            let slot = match refresh(store_ref, ticket, k, i) {
                Refresh::Refreshed { .. } => 0,
                Refresh::Fenced => 1,
                Refresh::Gone => 2,
                Refresh::Fault(f) => {
                    board_ref.fail(format!("iteration {i}: refresh fault {f}"));
                    0
                }
            };
            board_ref.add(OUTCOMES + slot);
            if !step(i, "the purge", &|| board_ref.get(PURGED) > i) {
                return 1;
            }
            gone(i, k, "the refresher");
            board_ref.add(DONE);
        }
        0
    });
    let purger = spawn(move || {
        let mut rng = Rng::new(seed() ^ 0x5bd1_e995);
        for i in 0..ITERS {
            let k = i as usize % NK;
            if !step(i, "prepare", &|| board_ref.get(PREP) > i) {
                return 1;
            }
            board_ref.add(READY);
            if !step(i, "go", &|| board_ref.get(GO) > i) {
                return 1;
            }
            rng.jitter();
            match purge(store_ref, scope_of(i), k, false) {
                Ok(r) => board_ref.set(GEN, r.generation),
                Err(f) => board_ref.fail(format!("iteration {i}: purge fault {f}")),
            }
            board_ref.set(PURGED, i + 1);
            gone(i, k, "the purger");
            board_ref.add(DONE);
        }
        0
    });
    let mut children = [refresher, purger];
    for i in 0..ITERS {
        let k = i as usize % NK;
        let fill = store.begin_fill();
        for d in [ORIGINAL, VARIANT] {
            assert_eq!(
                commit(&store, fill, k, d, i, "original"),
                CommitOutcome::Stored,
                "iteration {i}"
            );
        }
        board.set(PREP, i + 1);
        assert!(
            wait_until(deadline, || board.get(READY) >= 2 * (i + 1)),
            "iteration {i}: children not ready\n{}",
            board.report()
        );
        board.set(GO, i + 1);
        assert!(
            wait_until(deadline, || board.get(DONE) >= 2 * (i + 1)),
            "iteration {i}: children not done\n{}",
            board.report()
        );
        let (t, g) = (board.get(TICKET), board.get(GEN));
        assert!(g > t, "iteration {i}: purge {g} not after the ticket {t}");
        for d in [ORIGINAL, VARIANT] {
            let f = find(&store, k, d).unwrap();
            assert!(
                f.is_none(),
                "iteration {i} ({:?}): key {k} descriptor {d} found after the purge: {f:?}\n{}",
                scope_of(i),
                board.report()
            );
            assert_eq!(store.stored_meta(&key(k), d), Ok(None), "iteration {i}");
        }
        let listed = store.alternates(&key(k)).unwrap();
        assert!(
            listed.iter().all(|a| a.purge_state.is_none()),
            "iteration {i}: {listed:?}"
        );
        if board.get(FAILURES) != 0 {
            break;
        }
    }
    let exits = wait_all(&mut children, LIMIT);
    board.assert_clean();
    assert_eq!(exits, [Exit::Code(0), Exit::Code(0)]);
    let outcomes: Vec<u64> = (0..3).map(|s| board.get(OUTCOMES + s)).collect();
    assert_eq!(outcomes.iter().sum::<u64>(), ITERS);
    eprintln!("lockstep refresh vs purge: refreshed, fenced, gone = {outcomes:?}");
    assert_store_sound(&store);
}

/// Free-running: workers commit originals and variants, refresh them with tickets taken a
/// little earlier, look them up and hard-purge them, each bounded in operations. Every answer
/// is checked against the purges that had returned (in any process) before it was asked for:
/// no hit older than such a purge (by its stamp, or by the ticket its bytes were stored with:
/// a refresh never revives bytes a purge covered), no refresh or commit with an older ticket
/// stored.
#[test]
fn refreshes_commits_and_hard_purges_racing_in_many_processes_never_revive_purged_entries() {
    let _serial = serial();
    const WORKERS: usize = 3;
    const OPS: u64 = 3000;
    const PURGES: u64 = 2000;
    const NK: usize = 6;
    const COVERED: usize = 1; // COVERED + k: highest generation of a returned purge covering k
    const COUNT: usize = COVERED + NK; // refreshed, fenced, gone, stored, fenced commits, hits
    let store = anon(16 << 20);
    let board = Board::new(COUNT + 6, "refresh-race");
    let deadline = Instant::now() + LIMIT;
    let (store_ref, board_ref) = (&store, &board);
    let covered = move |k: usize| board_ref.get(COVERED + k);
    let look = move |k: usize, d: u32, at_least: u64, why: &str| match find(store_ref, k, d) {
        Ok(Some(f)) => {
            board_ref.add(COUNT + 5);
            // Its stamp (the last fill or refresh ticket) and its bytes (whose version is
            // the ticket they were stored with) must both be newer than the purge.
            if f.stamp < at_least || f.version < at_least {
                board_ref.fail(format!(
                    "{why}: key {k} descriptor {d} found with stamp {}, bytes of ticket {}, \
                     after a purge to {at_least} returned: {f:?}",
                    f.stamp, f.version
                ));
            }
        }
        Ok(None) => {}
        Err(e) => board_ref.fail(format!("{why}: {e}")),
    };
    let mut children: Vec<Child> = (0..WORKERS)
        .map(|w| {
            spawn(move || {
                let mut rng = Rng::new(seed() ^ (w as u64) << 40);
                for n in 0..OPS {
                    if Instant::now() >= deadline {
                        board_ref.fail(format!("worker {w}: out of time at op {n}"));
                        return 1;
                    }
                    let k = rng.below(NK as u64) as usize;
                    let ticket = store_ref.begin_fill();
                    rng.jitter();
                    match rng.below(10) {
                        0..=3 => {
                            let before = covered(k);
                            // One alternate or both: an original stored alone after a
                            // lazy purge, then refreshed, must not bring back the purged
                            // variant it finds beside it.
                            let both = [ORIGINAL, VARIANT];
                            let which = match rng.below(3) {
                                0 => &both[..1],
                                1 => &both[1..],
                                _ => &both[..],
                            };
                            for &d in which {
                                match commit(store_ref, ticket, k, d, ticket.stamp, "original") {
                                    CommitOutcome::Stored => {
                                        board_ref.add(COUNT + 3);
                                        if before > ticket.stamp {
                                            board_ref.fail(format!(
                                                "worker {w}: key {k}: commit with ticket {} \
                                                 stored after a purge to {before} returned",
                                                ticket.stamp
                                            ));
                                        }
                                    }
                                    CommitOutcome::Fenced => board_ref.add(COUNT + 4),
                                    other => board_ref
                                        .fail(format!("worker {w}: key {k}: commit {other:?}")),
                                }
                            }
                        }
                        4..=6 => {
                            let before = covered(k);
                            match refresh(store_ref, ticket, k, n) {
                                Refresh::Refreshed { .. } => {
                                    board_ref.add(COUNT);
                                    if before > ticket.stamp {
                                        board_ref.fail(format!(
                                            "worker {w}: key {k}: refresh with ticket {} done \
                                             after a purge to {before} returned",
                                            ticket.stamp
                                        ));
                                    }
                                }
                                Refresh::Fenced => board_ref.add(COUNT + 1),
                                Refresh::Gone => board_ref.add(COUNT + 2),
                                Refresh::Fault(f) => {
                                    board_ref.fail(format!("worker {w}: refresh fault {f}"))
                                }
                            }
                            look(k, ORIGINAL, covered(k), "after a refresh");
                        }
                        _ => {
                            let d = if rng.below(2) == 0 { ORIGINAL } else { VARIANT };
                            look(k, d, covered(k), "lookup");
                        }
                    }
                }
                0
            })
        })
        .collect();
    children.push(spawn(move || {
        let mut rng = Rng::new(seed() ^ 0xc2b2_ae35);
        for n in 0..PURGES {
            if Instant::now() >= deadline {
                board_ref.fail(format!("purger: out of time at purge {n}"));
                return 1;
            }
            let aim = rng.below(NK as u64) as usize;
            // Mostly URL purges (the ones that race refreshes of one key most closely).
            let scope = match rng.below(10) {
                0..=3 => Scope::UrlDelete,
                4 | 5 => Scope::UrlLazy,
                6 => Scope::Prefix,
                7 | 8 => Scope::Tag,
                _ => Scope::All,
            };
            let g = match purge(store_ref, scope, aim, false) {
                Ok(r) => r.generation,
                Err(f) => {
                    board_ref.fail(format!("purger: {scope:?}: fault {f}"));
                    continue;
                }
            };
            let hit: Vec<usize> = (0..NK).filter(|&k| covers(scope, aim, k)).collect();
            for &k in &hit {
                board_ref.max(COVERED + k, g);
            }
            for &k in &hit {
                for d in [ORIGINAL, VARIANT] {
                    look(
                        k,
                        d,
                        g,
                        &format!("right after {scope:?} of key {aim} -> {g}"),
                    );
                }
            }
            rng.jitter();
        }
        0
    }));
    let exits = wait_all(&mut children, LIMIT + STEP);
    let counts: Vec<u64> = (0..6).map(|c| board.get(COUNT + c)).collect();
    board.assert_clean();
    assert!(exits.iter().all(|e| *e == Exit::Code(0)), "{exits:?}");
    eprintln!("free-running: refreshed, fenced, gone, stored, fenced commits, hits = {counts:?}");
    for k in 0..NK {
        for d in [ORIGINAL, VARIANT] {
            if let Some(f) = find(&store, k, d).unwrap() {
                assert!(f.stamp.min(f.version) >= covered(k), "key {k}: {f:?}");
            }
        }
    }
    assert_store_sound(&store);
}

/// Runs `f` in a child and waits for it; its error fails the test.
fn in_child(board: &Board, what: &str, f: impl FnOnce() -> Result<(), String>) {
    let mut c = spawn(|| match f() {
        Ok(()) => 0,
        Err(e) => {
            board.fail(format!("{what}: {e}"));
            1
        }
    });
    assert_eq!(c.wait(STEP), Exit::Code(0), "{what}: {}", board.report());
}

/// Step by step, each step in its own process: X stores an original and its variant, P
/// hard-purges them, Y stores a new original, R refreshes it with a ticket from after the
/// purge. The variant the purge covered is dropped, not refreshed back to life beside it.
#[test]
fn a_refresh_never_brings_back_a_variant_another_processs_purge_covered() {
    let _serial = serial();
    let store = anon(4 << 20);
    let board = Board::new(1, "refresh-drops");
    let s = &store;
    for (i, &scope) in SCOPES.iter().enumerate() {
        let k = 20 + i;
        in_child(&board, &format!("{scope:?}: X"), || {
            let t = s.begin_fill();
            for d in [ORIGINAL, VARIANT] {
                let out = commit(s, t, k, d, 1, "x");
                if out != CommitOutcome::Stored {
                    return Err(format!("descriptor {d}: {out:?}"));
                }
            }
            Ok(())
        });
        in_child(&board, &format!("{scope:?}: P"), || {
            purge(s, scope, k, false)
                .map(|_| ())
                .map_err(|f| f.to_string())
        });
        in_child(&board, &format!("{scope:?}: Y"), || {
            match commit(s, s.begin_fill(), k, ORIGINAL, 2, "y") {
                CommitOutcome::Stored => Ok(()),
                out => Err(format!("{out:?}")),
            }
        });
        in_child(&board, &format!("{scope:?}: R"), || {
            let t = s.begin_fill();
            let r = refresh(s, t, k, 1);
            if r != (Refresh::Refreshed { kept: 1 }) {
                return Err(format!("refresh {r:?}"));
            }
            if let Some(f) = find(s, k, VARIANT)? {
                return Err(format!("the purged variant came back: {f:?}"));
            }
            match find(s, k, ORIGINAL)? {
                Some(f) if (f.version, f.stamp, f.state) == (2, t.stamp, PurgeState::Current) => {
                    Ok(())
                }
                other => Err(format!("original {other:?}")),
            }
        });
        assert!(find(&store, k, VARIANT).unwrap().is_none(), "{scope:?}");
        assert_eq!(
            find(&store, k, ORIGINAL).unwrap().map(|f| f.version),
            Some(2),
            "{scope:?}"
        );
        let listed = store.alternates(&key(k)).unwrap();
        assert_eq!(listed.len(), 1, "{scope:?}: {listed:?}");
    }
    board.assert_clean();
    assert_store_sound(&store);
}

// ---------------------------------------------------------------------------------------------
// 5. replace (changed bytes) drops every alternate in every process's view

fn replace(store: &Store, ticket: FillTicket, k: usize, v: u64) -> CommitOutcome {
    let p = path(k);
    let t = tag(k);
    let scopes = store.buckets().scopes_for(&url(&p), &[t.as_str()]);
    let meta = meta_for(k, ORIGINAL, "replaced");
    let body = body_for(k, ORIGINAL, v);
    store.replace(
        ticket,
        &key(k),
        &url(&p),
        &[],
        &Alternate {
            descriptor: ORIGINAL,
            scopes: &scopes,
            meta: &meta,
            body: &body,
        },
    )
}

/// Four processes store alternates of one key; one of them replaces the original; then every
/// process finds only the new original, and builds of the old one are fenced everywhere.
#[test]
fn a_replace_in_one_process_drops_every_alternate_for_all_processes() {
    let _serial = serial();
    const PROCS: usize = 4;
    const STORED: usize = 1;
    const REPLACED: usize = 2;
    const CHECKED: usize = 3;
    const BUILT: usize = 4;
    let store = anon(4 << 20);
    let board = Board::new(4, "replace");
    let k = 4;
    let deadline = Instant::now() + LIMIT;
    let old = store.begin_fill();
    assert_eq!(
        commit(&store, old, k, ORIGINAL, 1, "v1"),
        CommitOutcome::Stored
    );
    let (store_ref, board_ref) = (&store, &board);
    let descriptors = |i: usize| [1 + 2 * i as u32, 2 + 2 * i as u32];
    let mut children: Vec<Child> = (0..PROCS)
        .map(|i| {
            spawn(move || {
                // A build of the v1 original: its ticket is v1's stamp.
                let build = store_ref.begin_fill();
                for d in descriptors(i) {
                    let out = commit(store_ref, build, k, d, 1, "from-v1");
                    if out != CommitOutcome::Stored {
                        board_ref.fail(format!("child {i}: variant {d}: {out:?}"));
                    }
                }
                board_ref.add(STORED);
                if i == 0 {
                    if !wait_until(deadline, || board_ref.get(STORED) == PROCS as u64) {
                        board_ref.fail("the others never stored");
                        return 1;
                    }
                    let before = store_ref.alternates(&key(k)).map(|a| a.len());
                    if before != Ok(1 + 2 * PROCS) {
                        board_ref.fail(format!("alternates before the replace: {before:?}"));
                    }
                    let out = replace(store_ref, store_ref.begin_fill(), k, 2);
                    if out != CommitOutcome::Stored {
                        board_ref.fail(format!("replace: {out:?}"));
                    }
                    // Gone at once, not only invalid (before any lookup could drop them).
                    match store_ref.alternates(&key(k)) {
                        Ok(a) if a.len() == 1 && a[0].descriptor == ORIGINAL => {}
                        other => board_ref.fail(format!("right after the replace: {other:?}")),
                    }
                    board_ref.set(REPLACED, 1);
                }
                if !wait_until(deadline, || board_ref.get(REPLACED) == 1) {
                    board_ref.fail(format!("child {i}: the replace never came"));
                    return 2;
                }
                // Every alternate of every process is gone; only the new original is found.
                for j in 0..PROCS {
                    for d in descriptors(j) {
                        match find(store_ref, k, d) {
                            Ok(None) => {}
                            other => board_ref.fail(format!(
                                "child {i}: child {j}'s variant {d} after the replace: {other:?}"
                            )),
                        }
                    }
                }
                match find(store_ref, k, ORIGINAL) {
                    Ok(Some(f)) if f.version == 2 && f.state == PurgeState::Current => {}
                    other => board_ref.fail(format!("child {i}: original {other:?}")),
                }
                match store_ref.alternates(&key(k)) {
                    Ok(a) if a.len() == 1 && a[0].descriptor == ORIGINAL => {}
                    other => board_ref.fail(format!("child {i}: alternates {other:?}")),
                }
                board_ref.add(CHECKED);
                if !wait_until(deadline, || board_ref.get(CHECKED) == PROCS as u64) {
                    board_ref.fail(format!("child {i}: the others never checked"));
                    return 3;
                }
                // A build of v1 finishing now is fenced; one of v2 is stored.
                let d = 100 + i as u32;
                let late = commit(store_ref, build, k, d, 1, "from-v1");
                if late != CommitOutcome::Fenced {
                    board_ref.fail(format!(
                        "child {i}: a build of v1 after the replace: {late:?}"
                    ));
                }
                let out = commit(store_ref, store_ref.begin_fill(), k, d, 2, "from-v2");
                if out != CommitOutcome::Stored {
                    board_ref.fail(format!("child {i}: a build of v2: {out:?}"));
                }
                board_ref.add(BUILT);
                0
            })
        })
        .collect();
    let exits = wait_all(&mut children, LIMIT);
    board.assert_clean();
    assert!(exits.iter().all(|e| *e == Exit::Code(0)), "{exits:?}");
    assert_eq!(board.get(BUILT), PROCS as u64);
    for i in 0..PROCS {
        for d in descriptors(i) {
            assert!(find(&store, k, d).unwrap().is_none(), "variant {d}");
        }
        let f = find(&store, k, 100 + i as u32).unwrap().expect("v2 build");
        assert_eq!(f.version, 2);
    }
    assert_eq!(
        find(&store, k, ORIGINAL).unwrap().map(|f| f.version),
        Some(2)
    );
    assert_eq!(
        commit(&store, old, k, VARIANT, 1, "from-v1"),
        CommitOutcome::Fenced
    );
    assert_eq!(store.stats().revalidated_changed, 1);
    assert_store_sound(&store);
}

/// One process replaces the original over and over while three others build variants of it
/// and look them up: once a replace has returned, no process finds an alternate stored before
/// it, or an original older than it, and no build with an older ticket is stored.
#[test]
fn replaces_racing_builds_in_many_processes_leave_no_old_alternate_visible() {
    let _serial = serial();
    const BUILDERS: usize = 3;
    const OPS: u64 = 3000;
    const REPLACES: u64 = 300;
    const DESCRIPTORS: u64 = 6;
    const FLOOR: usize = 1; // stamps below this are from before a returned replace
    const VERSION: usize = 2; // version of the last returned replace
    const FINISHED: usize = 3;
    const COUNT: usize = 4; // stored, fenced, hits
    let store = anon(32 << 20);
    let board = Board::new(COUNT + 3, "replace-race");
    let k = 5;
    let deadline = Instant::now() + LIMIT;
    assert_eq!(
        commit(&store, store.begin_fill(), k, ORIGINAL, 0, "v0"),
        CommitOutcome::Stored
    );
    let (store_ref, board_ref) = (&store, &board);
    let check = move |who: &str| {
        let floor = board_ref.get(FLOOR);
        let version = board_ref.get(VERSION);
        for d in 1..=DESCRIPTORS as u32 {
            match find(store_ref, k, d) {
                Ok(Some(f)) => {
                    board_ref.add(COUNT + 2);
                    if f.stamp < floor {
                        board_ref.fail(format!(
                            "{who}: variant {d} with stamp {} after a replace above {floor}: {f:?}",
                            f.stamp
                        ));
                    }
                }
                Ok(None) => {}
                Err(e) => board_ref.fail(format!("{who}: {e}")),
            }
        }
        match find(store_ref, k, ORIGINAL) {
            Ok(Some(f)) if f.version >= version => {}
            other => board_ref.fail(format!(
                "{who}: original {other:?} after replace v{version} returned"
            )),
        }
    };
    let mut children: Vec<Child> = (0..BUILDERS)
        .map(|w| {
            spawn(move || {
                let mut rng = Rng::new(seed() ^ (w as u64) << 36);
                for n in 0..OPS {
                    if Instant::now() >= deadline {
                        board_ref.fail(format!("builder {w}: out of time at op {n}"));
                        return 1;
                    }
                    if rng.below(3) == 0 {
                        check(&format!("builder {w}"));
                        continue;
                    }
                    let ticket = store_ref.begin_fill();
                    let version = board_ref.get(VERSION);
                    rng.jitter();
                    let floor = board_ref.get(FLOOR);
                    let d = 1 + rng.below(DESCRIPTORS) as u32;
                    match commit(store_ref, ticket, k, d, version, "build") {
                        CommitOutcome::Stored => {
                            board_ref.add(COUNT);
                            if ticket.stamp < floor {
                                board_ref.fail(format!(
                                    "builder {w}: build with ticket {} stored after a replace \
                                     above {floor} returned",
                                    ticket.stamp
                                ));
                            }
                        }
                        CommitOutcome::Fenced => board_ref.add(COUNT + 1),
                        other => board_ref.fail(format!("builder {w}: {other:?}")),
                    }
                }
                board_ref.add(FINISHED);
                0
            })
        })
        .collect();
    children.push(spawn(move || {
        let mut rng = Rng::new(seed() ^ 0x27d4_eb2f);
        for v in 1..=REPLACES {
            if Instant::now() >= deadline {
                board_ref.fail(format!("replacer: out of time at v{v}"));
                return 1;
            }
            // Its generation is above the clock read before it.
            let before = store_ref.begin_fill();
            rng.jitter();
            let out = replace(store_ref, store_ref.begin_fill(), k, v);
            if out != CommitOutcome::Stored {
                board_ref.fail(format!("replace v{v}: {out:?}"));
            }
            board_ref.max(FLOOR, before.stamp + 1);
            board_ref.set(VERSION, v);
            check(&format!("replacer right after v{v}"));
            if board_ref.get(FINISHED) == BUILDERS as u64 {
                break;
            }
            rng.jitter();
        }
        0
    }));
    let exits = wait_all(&mut children, LIMIT + STEP);
    let counts: Vec<u64> = (0..3).map(|c| board.get(COUNT + c)).collect();
    board.assert_clean();
    assert!(exits.iter().all(|e| *e == Exit::Code(0)), "{exits:?}");
    eprintln!(
        "replace race: {} replaces; stored, fenced builds, variant hits = {counts:?}",
        board.get(VERSION)
    );
    check("parent");
    board.assert_clean();
    // One more replace from the parent leaves the original alone.
    assert_eq!(
        replace(&store, store.begin_fill(), k, 10_000),
        CommitOutcome::Stored
    );
    let listed = store.alternates(&key(k)).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].descriptor, ORIGINAL);
    let st = store.stats();
    assert_eq!(
        st.evictions, 0,
        "the test's premise: nothing was evicted ({st:?})"
    );
    assert_store_sound(&store);
}
