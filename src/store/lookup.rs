//! Validated reads: pick the best alternate of a key, copy it out, verify its checksum once
//! per open epoch, then check its scopes against the purge tables; anything in doubt is a
//! miss. Also the builders' source read and inspection.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::scope::ScopeSet;
use super::shard::{self, Corrupt, Shard, MAX_CHAIN, STATE_LIVE};
use super::stats::ShardCounter;
use super::{
    AlternateInfo, Fault, Hit, Key, Lookup, PurgeState, Sink, Source, Store, Validity,
    MAX_ALTERNATES,
};

impl Store {
    /// Finds the best alternate of `key` by `score` (None = not acceptable, higher wins, the
    /// newest wins ties), copies its meta and body into `sink`, then validates the copy.
    pub fn lookup(
        &self,
        key: &Key,
        score: impl FnMut(u32, &[u8]) -> Option<u32>,
        sink: &mut dyn Sink,
    ) -> Lookup {
        self.lookup_impl(key, score, sink, None)
    }

    /// The alternate `descriptor` of `key` with its scopes, validated like a lookup but not
    /// counted as a hit or miss: what a variant builder reads its source from. Its `stamp` is
    /// the ticket the derived variant commits with, so a purge of the source fences it.
    pub fn source(&self, key: &Key, descriptor: u32) -> Result<Option<Source>, Fault> {
        let mut buf = Vec::new();
        let mut scope = Vec::new();
        let exact = |d: u32, _: &[u8]| (d == descriptor).then_some(0);
        match self.lookup_impl(key, exact, &mut buf, Some(&mut scope)) {
            Lookup::Hit(h) if h.purge_state == PurgeState::Current => {
                let body = buf.split_off(h.meta_len);
                let scopes = ScopeSet::decode(&scope).ok_or(Fault::Corrupt)?;
                Ok(Some(Source {
                    stamp: h.stamp,
                    scopes,
                    meta: buf,
                    body,
                }))
            }
            Lookup::Hit(_) | Lookup::Miss => Ok(None),
            Lookup::Fault(f) => Err(f),
        }
    }

    /// The metadata of alternate `descriptor` of `key` and its purge state, if it is stored and
    /// not hard-purged: what a revalidation of a stale original reads its validators from.
    /// Quiet (no counters) and without its body.
    pub fn stored_meta(
        &self,
        key: &Key,
        descriptor: u32,
    ) -> Result<Option<(PurgeState, Vec<u8>)>, Fault> {
        self.with_shard(self.shard_of(key), |sh| {
            let Some(pos) = sh.find(&key.0) else {
                return Ok(None);
            };
            let clock = self.seg.header().purge_clock.load(Acquire);
            for off in sh.chain(pos)? {
                let h = sh.header(off)?;
                if h.descriptor != descriptor {
                    continue;
                }
                let (scope, meta, _) = sh.payload(off, &h);
                return Ok(
                    match self.validity(scope, h.stamp, clock, h.validated_clock)? {
                        Validity::Purged => None,
                        Validity::SoftPurged => Some((PurgeState::SoftPurged, meta.to_vec())),
                        Validity::Current => Some((PurgeState::Current, meta.to_vec())),
                    },
                );
            }
            Ok(None)
        })
    }

    /// `quiet` lookups (`scope_out` given) copy the scopes too and touch no hit/miss counter.
    fn lookup_impl(
        &self,
        key: &Key,
        mut score: impl FnMut(u32, &[u8]) -> Option<u32>,
        sink: &mut dyn Sink,
        mut scope_out: Option<&mut Vec<u8>>,
    ) -> Lookup {
        let quiet = scope_out.is_some();
        let count = |sh: &Shard, c: ShardCounter| {
            if !quiet {
                sh.count(c);
            }
        };
        let epoch = self.seg.header().open_epoch.load(Relaxed);
        let r = self.with_shard(self.shard_of(key), |sh| {
            // Each round either returns or drops one record, so this is bounded.
            for _ in 0..=MAX_ALTERNATES * 2 {
                let Some(pos) = sh.find(&key.0) else {
                    count(sh, ShardCounter::Misses);
                    return Ok(Lookup::Miss);
                };
                let mut best: Option<(u32, u64)> = None;
                let mut next = sh.index[pos].head;
                let mut walked = 0;
                while next != 0 {
                    walked += 1;
                    let off = next - 1;
                    let h = sh.header(off)?;
                    if walked > MAX_CHAIN || h.state != STATE_LIVE {
                        return Err(Corrupt);
                    }
                    let (_, meta, _) = sh.payload(off, &h);
                    if let Some(s) = score(h.descriptor, meta) {
                        if best.is_none_or(|(b, _)| s > b) {
                            best = Some((s, off));
                        }
                    }
                    next = h.next;
                }
                let Some((_, off)) = best else {
                    count(sh, ShardCounter::Misses);
                    return Ok(Lookup::Miss);
                };
                let mut h = sh.header(off)?;
                let (scope, meta, body) = sh.payload(off, &h);
                // Nothing longer than max_object is stored: a longer record is damage its
                // verification memo hid (a forged epoch), or was stored under a larger
                // max_object before a restart. Not served, whichever.
                if shard::record_len(scope.len(), meta.len(), body.len()) > self.max_object {
                    sh.count(ShardCounter::RejectedReads);
                    sh.kill(off)?;
                    continue;
                }
                let Some(out) = sink.reserve(meta.len() + body.len()) else {
                    return Ok(Lookup::Fault(Fault::NoMemory));
                };
                out[..meta.len()].copy_from_slice(meta);
                out[meta.len()..].copy_from_slice(body);
                if let Some(so) = scope_out.as_deref_mut() {
                    so.clear();
                    so.extend_from_slice(scope);
                }
                // Verified once per open epoch: within an epoch records are only written under
                // this lock, so bytes cannot tear; across a restart they may have.
                if h.verified_epoch != epoch {
                    if shard::checksum([scope, meta, body]) != h.checksum {
                        sh.count(ShardCounter::ChecksumFailures);
                        sh.kill(off)?;
                        continue;
                    }
                    h.verified_epoch = epoch;
                }
                let clock = self.seg.header().purge_clock.load(Acquire);
                let (meta_len, body_len) = (meta.len(), body.len());
                match self.validity(scope, h.stamp, clock, h.validated_clock)? {
                    Validity::Purged => {
                        sh.count(ShardCounter::RejectedReads);
                        sh.kill(off)?;
                        continue;
                    }
                    Validity::SoftPurged => {
                        sh.set_header(off, &h);
                        count(sh, ShardCounter::StaleHits);
                        return Ok(Lookup::Hit(Hit {
                            descriptor: h.descriptor,
                            purge_state: PurgeState::SoftPurged,
                            stamp: h.stamp,
                            meta_len,
                            body_len,
                        }));
                    }
                    Validity::Current => {
                        h.validated_clock = clock;
                        sh.set_header(off, &h);
                        count(sh, ShardCounter::Hits);
                        return Ok(Lookup::Hit(Hit {
                            descriptor: h.descriptor,
                            purge_state: PurgeState::Current,
                            stamp: h.stamp,
                            meta_len,
                            body_len,
                        }));
                    }
                }
            }
            Err(Corrupt)
        });
        r.unwrap_or_else(Lookup::Fault)
    }

    /// Holds the lock of `key`'s shard while `f` runs. For crash tests only: a child process
    /// calls this and is killed inside `f`, leaving the lock to the robust-mutex recovery.
    #[doc(hidden)]
    pub fn hold_shard_lock_for_test(&self, key: &Key, f: impl FnOnce()) -> Result<(), Fault> {
        self.with_shard(self.shard_of(key), |_| {
            f();
            Ok(())
        })
    }

    /// Lists the alternates stored under `key`, newest first (inspection: nothing is dropped
    /// or counted; purge state is read from the tables, bytes are not checksummed).
    pub fn alternates(&self, key: &Key) -> Result<Vec<AlternateInfo>, Fault> {
        self.with_shard(self.shard_of(key), |sh| {
            let Some(pos) = sh.find(&key.0) else {
                return Ok(Vec::new());
            };
            let clock = self.seg.header().purge_clock.load(Acquire);
            let mut out = Vec::new();
            for off in sh.chain(pos)? {
                let h = sh.header(off)?;
                let (scope, meta, _) = sh.payload(off, &h);
                let purge_state = match self.validity(scope, h.stamp, clock, h.validated_clock)? {
                    Validity::Current => Some(PurgeState::Current),
                    Validity::SoftPurged => Some(PurgeState::SoftPurged),
                    Validity::Purged => None,
                };
                out.push(AlternateInfo {
                    descriptor: h.descriptor,
                    stamp: h.stamp,
                    meta_len: h.meta_len,
                    body_len: h.body_len,
                    meta: meta.to_vec(),
                    purge_state,
                });
            }
            Ok(out)
        })
    }
}
