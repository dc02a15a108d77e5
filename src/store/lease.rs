//! Leases: "a fill or revalidation of this key is in flight", kept in the segment so requests
//! for the key in every worker wait for that fill instead of each going to the origin
//! (collapsed forwarding).
//!
//! A lease is a performance device: every wrong answer it can give costs an extra origin
//! fetch or a wait, never a wrong byte, because waiters are served by an ordinary validated
//! lookup once the lease is gone. A lease never outlives its owner: it carries a deadline, its
//! owner's pid (a dead owner's lease is free), and the purge clock when it was taken (a purge
//! covering the key since ends it: requests that arrive after the purge do not wait for a fill
//! that will be fenced).

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::layout::LeaseSlot;
use super::scope::ScopeView;
use super::shard::Corrupt;
use super::{Fault, Key, ScopeSet, Store};

const LEASE_FILLING: u32 = 1;
const LEASE_PASS: u32 = 2;

/// Milliseconds of CLOCK_MONOTONIC: one clock for every process of the machine.
pub fn monotonic_ms() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// What releases a lease: unique per lease taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseToken(pub u64);

/// The answer to "may this request fill the key?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Yes, and it holds the lease until it releases it with this token (or the deadline).
    Acquired(LeaseToken),
    /// Another request's fill is in flight: wait for it.
    Held,
    /// The last fill found the response not storable: go to the origin, do not wait.
    Pass,
    /// No lease could be had (this shard's lease table is full): fill without one.
    Unavailable,
}

/// Which request asks: the scope buckets its URL is covered by (URL and directories; tags are
/// not known before the response, so any tag purge counts), and how long a lease it takes.
pub struct LeaseRequest {
    scope: Vec<u8>,
    pub hold_ms: u64,
}

impl LeaseRequest {
    /// `scope` is the URL's `ScopeSet` without tags (`Buckets::scopes_for(url, &[])`).
    pub fn new(scope: &ScopeSet, hold_ms: u64) -> LeaseRequest {
        let mut s = ScopeSet {
            tag_overflow: true,
            ..scope.clone()
        };
        s.tags.clear();
        let mut bytes = Vec::with_capacity(s.encoded_len());
        s.encode(&mut bytes);
        LeaseRequest {
            scope: bytes,
            hold_ms,
        }
    }
}

/// Why a lease is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The fill ended (stored, fenced, aborted): waiters look again at once.
    Done,
    /// The response was not storable: for this long, requests go to the origin without
    /// waiting (a hit-for-pass).
    Pass { ms: u64 },
}

static NEXT_TOKEN: AtomicU32 = AtomicU32::new(1);

fn key_words(key: &Key) -> (u64, u64) {
    let lo = u64::from_le_bytes(key.0[0..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(key.0[8..16].try_into().expect("8 bytes"));
    // 0/0 marks a free slot; a key starting with 16 zero bytes shares a lease word pattern.
    (lo, hi | ((lo == 0 && hi == 0) as u64))
}

fn owner_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

impl Store {
    /// Whether `slot` still stands for a fill `req`'s requests should wait for.
    fn lease_live(
        &self,
        slot: &LeaseSlot,
        req: &LeaseRequest,
        now_ms: u64,
    ) -> Result<bool, Corrupt> {
        if now_ms >= slot.deadline_ms {
            return Ok(false);
        }
        if slot.state == LEASE_PASS {
            return Ok(true);
        }
        let clock = self.seg.header().purge_clock.load(Acquire);
        if clock > slot.ticket {
            let view = ScopeView::parse(&req.scope).ok_or(Corrupt)?;
            // The view has tag_overflow set: any tag purge since counts too.
            if self.scope_purged(&view, slot.ticket, clock, false)
                || self.scope_purged(&view, slot.ticket, clock, true)
            {
                return Ok(false);
            }
        }
        Ok(owner_alive(slot.owner))
    }

    /// Asks for the lease of `key`: taken if no live one is held (a dead owner's, an expired
    /// or a purged one is taken over).
    pub fn lease(&self, key: &Key, req: &LeaseRequest) -> Result<Lease, Fault> {
        let (lo, hi) = key_words(key);
        let now = monotonic_ms();
        let pid = std::process::id();
        self.with_shard(self.shard_of(key), |sh| {
            let mut free = None;
            for i in 0..sh.leases.len() {
                let s = sh.leases[i];
                if s.key_lo == lo && s.key_hi == hi {
                    if self.lease_live(&s, req, now)? {
                        return Ok(if s.state == LEASE_PASS {
                            Lease::Pass
                        } else {
                            Lease::Held
                        });
                    }
                    free = Some(i);
                    break;
                }
                if free.is_none() && (s.key_lo == 0 && s.key_hi == 0 || now >= s.deadline_ms) {
                    free = Some(i);
                }
            }
            let Some(i) = free else {
                return Ok(Lease::Unavailable);
            };
            let token = (pid as u64) << 32 | NEXT_TOKEN.fetch_add(1, Relaxed) as u64;
            sh.leases[i] = LeaseSlot {
                key_lo: lo,
                key_hi: hi,
                ticket: self.seg.header().purge_clock.load(Acquire),
                deadline_ms: now.saturating_add(req.hold_ms),
                token,
                owner: pid,
                state: LEASE_FILLING,
            };
            Ok(Lease::Acquired(LeaseToken(token)))
        })
    }

    /// For a waiter: whether a fill of `key` is still in flight (`Held`), or the lease is gone
    /// (`Unavailable`: look the key up again), or a hit-for-pass stands (`Pass`).
    pub fn lease_state(&self, key: &Key, req: &LeaseRequest) -> Result<Lease, Fault> {
        let (lo, hi) = key_words(key);
        let now = monotonic_ms();
        self.with_shard(self.shard_of(key), |sh| {
            for i in 0..sh.leases.len() {
                let s = sh.leases[i];
                if s.key_lo == lo && s.key_hi == hi {
                    if !self.lease_live(&s, req, now)? {
                        // Over, dead or purged: free it so the next request can take it.
                        sh.leases[i] = LeaseSlot::default();
                        return Ok(Lease::Unavailable);
                    }
                    return Ok(if s.state == LEASE_PASS {
                        Lease::Pass
                    } else {
                        Lease::Held
                    });
                }
            }
            Ok(Lease::Unavailable)
        })
    }

    /// Ends the lease `token` holds on `key` (nothing if it was taken over meanwhile, or if it
    /// already became a pass).
    pub fn release_lease(&self, key: &Key, token: LeaseToken, how: Release) -> Result<(), Fault> {
        let (lo, hi) = key_words(key);
        self.with_shard(self.shard_of(key), |sh| {
            if let Some(s) = sh
                .leases
                .iter_mut()
                .find(|s| s.key_lo == lo && s.key_hi == hi && s.token == token.0)
            {
                // A pass already recorded by this lease stands until its deadline.
                if s.state == LEASE_PASS {
                    return Ok(());
                }
                *s = match how {
                    Release::Done => LeaseSlot::default(),
                    Release::Pass { ms } => LeaseSlot {
                        state: LEASE_PASS,
                        deadline_ms: monotonic_ms().saturating_add(ms),
                        ..*s
                    },
                };
            }
            Ok(())
        })
    }
}
