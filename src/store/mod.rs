//! The shared-memory variant store: alternates under one key, a purge clock with hashed
//! "last purged" tables, fenced commits and validated reads. No nginx types in here.
//!
//! Correctness rests on three rules (see docs/ARCHITECTURE.md):
//! - a purge writes its table buckets, then publishes its clock value, under `purge_lock`;
//! - a commit checks the hard tables against its ticket under the shard lock that a URL purge
//!   also takes to delete the key;
//! - a lookup copies the selected record, verifies its checksum when unverified in this open
//!   epoch, and only then checks its scopes against the tables; any doubt is a miss.

mod layout;
mod lock;
mod scope;
mod shard;
mod shm;
mod stats;

use std::path::PathBuf;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

pub use layout::Layout;
pub use scope::{ancestors, Buckets, ScopeSet, UrlId, MAX_PREFIX_DEPTH, MAX_TAGS};
pub use shm::Opened;
pub use stats::{BuildCounter, Stats};

use layout::Table;
use lock::Acquired;
use scope::{ScopeView, TAG_OVERFLOW_SLOT};
use shard::{Corrupt, NewRecord, Shard, STATE_LIVE};
use shm::Segment;
use stats::{PurgeCounter, ShardCounter};

/// Alternates kept per key; the oldest goes when a new one would exceed it.
pub const MAX_ALTERNATES: u32 = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cache size {0} is outside 1 MiB .. 1 TiB, or too small for four objects of max_object"
    )]
    BadSize(u64),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    InUse(String),
    #[error("max_object {0} needs a larger cache: at most about {1} bytes fit this size")]
    MaxObject(u64, u64),
    /// The segment's space could not be reserved before any page of it was touched: mapping
    /// it anyway would SIGBUS at the first page the filesystem (or memory) cannot back.
    #[error("cannot reserve {size} bytes for {what}: {why}")]
    Reserve {
        what: String,
        size: u64,
        why: String,
    },
}

/// A request-path fault: the caller treats it as a miss and logs it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("cache lock wait timed out")]
    LockTimeout,
    #[error("cache lock error {0}")]
    Lock(i32),
    #[error("cache shard was damaged and has been reset")]
    Corrupt,
    #[error("output buffer allocation failed")]
    NoMemory,
}

#[derive(Debug, Clone)]
pub enum Backing {
    File(PathBuf),
    /// A memfd: shared by forked workers, lost on restart.
    Anonymous,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backing: Backing,
    pub size: u64,
    /// Largest alternate (scope + meta + body) accepted; 0 picks a quarter of a shard.
    pub max_object: u64,
}

/// A cache key: blake3 of length-prefixed key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// Each part is length-prefixed, so no two different part lists derive the same key.
    pub fn derive(parts: &[&[u8]]) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(b"psv.key.v1");
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Key(*h.finalize().as_bytes())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The purge clock value when a fill or build started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillTicket {
    pub stamp: u64,
}

/// An alternate to commit.
pub struct Alternate<'a> {
    pub descriptor: u32,
    pub scopes: &'a ScopeSet,
    /// Serialized response metadata, opaque to the store.
    pub meta: &'a [u8],
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Stored,
    /// A purge covering this key happened after the ticket: dropped, counted.
    Fenced,
    TooLarge,
    Fault(Fault),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Covered by a soft purge since it was stored: usable only while revalidating.
    Stale,
}

/// A found alternate; its meta then body bytes were written to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub descriptor: u32,
    pub freshness: Freshness,
    pub stamp: u64,
    pub meta_len: usize,
    pub body_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit(Hit),
    Miss,
    Fault(Fault),
}

/// Where a lookup copies the selected alternate (meta then body): a Vec, or nginx pool memory.
pub trait Sink {
    fn reserve(&mut self, len: usize) -> Option<&mut [u8]>;
}

impl Sink for Vec<u8> {
    fn reserve(&mut self, len: usize) -> Option<&mut [u8]> {
        self.clear();
        self.resize(len, 0);
        Some(&mut self[..])
    }
}

/// What a purge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReceipt {
    /// The purge's clock value: the new generation of every scope it covered.
    pub generation: u64,
    /// Records removed at once (URL purges); other scopes are reclaimed lazily.
    pub deleted: u64,
}

/// An original read by a builder: its stamp, scopes, meta and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub stamp: u64,
    pub scopes: ScopeSet,
    pub meta: Vec<u8>,
    pub body: Vec<u8>,
}

/// Description of one alternate, for inspection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlternateInfo {
    pub descriptor: u32,
    pub stamp: u64,
    pub meta_len: u32,
    pub body_len: u32,
    /// Its stored metadata (small: headers, not the body), for the admin console.
    #[serde(skip)]
    pub meta: Vec<u8>,
    /// What a lookup would find now: fresh, stale (soft-purged), or `None` when a purge made
    /// it invalid and it waits to be dropped at its next lookup.
    #[serde(skip)]
    pub freshness: Option<Freshness>,
}

enum Validity {
    Fresh,
    Stale,
    Purged,
}

pub struct Store {
    seg: Segment,
    max_object: u64,
    opened: Opened,
}

impl Store {
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let plain = Layout::for_size(cfg.size).ok_or(StoreError::BadSize(cfg.size))?;
        if Layout::for_object_size(cfg.size, cfg.max_object).is_none() {
            // The most one shard spanning the whole segment could hold.
            let most = plain.arena_bytes() * plain.shard_count as u64 / 4;
            return Err(StoreError::MaxObject(cfg.max_object, most));
        }
        let (seg, opened) = match &cfg.backing {
            Backing::File(path) => Segment::open_file(path, cfg.size, cfg.max_object)?,
            Backing::Anonymous => (
                Segment::open_anonymous(cfg.size, cfg.max_object)?,
                Opened::Created,
            ),
        };
        let shard_limit = seg.layout.arena_bytes() / 4;
        let max_object = match cfg.max_object {
            0 => shard_limit,
            m if m > shard_limit => return Err(StoreError::MaxObject(m, shard_limit)),
            m => m,
        };
        Ok(Store {
            seg,
            max_object,
            opened,
        })
    }

    /// How the backing file was found when opened.
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    pub fn layout(&self) -> &Layout {
        &self.seg.layout
    }

    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    pub fn buckets(&self) -> Buckets {
        let l = &self.seg.layout;
        Buckets {
            url_slots: l.url_slots,
            prefix_slots: l.prefix_slots,
            tag_slots: l.tag_slots,
        }
    }

    fn shard_of(&self, key: &Key) -> u32 {
        let v = u64::from_le_bytes(key.0[8..16].try_into().expect("8 bytes"));
        (v % self.seg.layout.shard_count as u64) as u32
    }

    /// Runs `f` on a locked shard. A dead previous owner or damage found by `f` resets the
    /// shard (dropping cached entries is always safe; generations live outside shards).
    fn with_shard<R>(
        &self,
        idx: u32,
        f: impl FnOnce(&mut Shard) -> Result<R, Corrupt>,
    ) -> Result<R, Fault> {
        let hdr = self.seg.shard_header(idx);
        let acquired = hdr.lock.lock().map_err(|e| match e {
            lock::LockError::Timeout => Fault::LockTimeout,
            lock::LockError::Os(n) => Fault::Lock(n),
        })?;
        // SAFETY: we hold the shard lock until `guard` drops, and the slices do not outlive it.
        let (index, arena) = unsafe { self.seg.shard_body(idx) };
        let mut guard = ShardGuard {
            shard: Shard { hdr, index, arena },
        };
        if acquired == Acquired::OwnerDied {
            guard.shard.reset();
            guard.shard.count(ShardCounter::LockRecoveries);
        }
        match f(&mut guard.shard) {
            Ok(r) => Ok(r),
            Err(Corrupt) => {
                guard.shard.reset();
                guard.shard.count(ShardCounter::CorruptResets);
                Err(Fault::Corrupt)
            }
        }
    }

    /// The current purge clock: a fill that starts now carries this stamp.
    pub fn begin_fill(&self) -> FillTicket {
        FillTicket {
            stamp: self.seg.header().purge_clock.load(Acquire),
        }
    }

    /// Whether a bucket was purged after `stamp`. A bucket above the published `clock` was
    /// written by a purge that has not published yet: a live one (it will, before it answers)
    /// or a dead one (it never will), which `repair_unpublished` settles.
    fn bucket_after(&self, t: Table, slot: u32, stamp: u64, clock: u64) -> bool {
        match self.seg.table(t).get(slot as usize) {
            Some(v) => {
                let v = v.load(Acquire);
                if v > clock {
                    self.repair_unpublished(clock);
                }
                v > stamp
            }
            None => true,
        }
    }

    fn scope_purged(&self, scope: &ScopeView, stamp: u64, clock: u64, soft: bool) -> bool {
        let h = self.seg.header();
        let (flush, url, prefix, tag) = if soft {
            (
                &h.flush_soft,
                Table::UrlSoft,
                Table::PrefixSoft,
                Table::TagSoft,
            )
        } else {
            (
                &h.flush_hard,
                Table::UrlHard,
                Table::PrefixHard,
                Table::TagHard,
            )
        };
        let f = flush.load(Acquire);
        if f > clock {
            self.repair_unpublished(clock);
        }
        f > stamp
            || self.bucket_after(url, scope.url(), stamp, clock)
            || scope
                .prefixes()
                .any(|p| self.bucket_after(prefix, p, stamp, clock))
            || scope
                .tags()
                .any(|t| self.bucket_after(tag, t, stamp, clock))
            || (scope.tag_overflow() && self.bucket_after(tag, TAG_OVERFLOW_SLOT, stamp, clock))
    }

    /// Publishes the clock a dead purger left unpublished. Without this, tickets keep the old
    /// clock and every fill its buckets cover is fenced until some other purge. Safe: if the
    /// purge lock is free no purge is running, so a bucket above the clock can only come from
    /// one that died after its table writes (at most clock + 1); publishing makes its purge
    /// count, which invalidates more, never less.
    fn repair_unpublished(&self, seen: u64) {
        let h = self.seg.header();
        if let Ok(Some(_)) = h.purge_lock.try_lock() {
            let _unlock = PurgeLockGuard(&h.purge_lock);
            let _ = h
                .purge_clock
                .compare_exchange(seen, seen + 1, AcqRel, Acquire);
        }
    }

    fn validity(
        &self,
        scope: &[u8],
        stamp: u64,
        clock: u64,
        memo: u64,
    ) -> Result<Validity, Corrupt> {
        // No purge published since the fill started, or since this record was last checked.
        if clock <= stamp || memo == clock {
            return Ok(Validity::Fresh);
        }
        let view = ScopeView::parse(scope).ok_or(Corrupt)?;
        Ok(if self.scope_purged(&view, stamp, clock, false) {
            Validity::Purged
        } else if self.scope_purged(&view, stamp, clock, true) {
            Validity::Stale
        } else {
            Validity::Fresh
        })
    }

    /// Stores an alternate unless a purge covering it happened after `ticket`.
    pub fn commit(&self, ticket: FillTicket, key: &Key, alt: &Alternate) -> CommitOutcome {
        let mut scope = Vec::with_capacity(alt.scopes.encoded_len());
        alt.scopes.encode(&mut scope);
        let len = shard::record_len(scope.len(), alt.meta.len(), alt.body.len());
        let epoch = self.seg.header().open_epoch.load(Relaxed);
        let attempt = || {
            self.with_shard(self.shard_of(key), |sh| {
                if len > self.max_object || alt.meta.len() > u32::MAX as usize {
                    sh.count(ShardCounter::TooLarge);
                    return Ok(CommitOutcome::TooLarge);
                }
                // Checked under the lock a URL purge takes to delete this key: either the purge's
                // table write is visible here, or its delete comes after this insert.
                let view = ScopeView::parse(&scope).ok_or(Corrupt)?;
                let clock = self.seg.header().purge_clock.load(Acquire);
                if self.scope_purged(&view, ticket.stamp, clock, false) {
                    sh.count(ShardCounter::Fenced);
                    return Ok(CommitOutcome::Fenced);
                }
                let rec = NewRecord {
                    key: &key.0,
                    descriptor: alt.descriptor,
                    stamp: ticket.stamp,
                    epoch,
                    scope: &scope,
                    meta: alt.meta,
                    body: alt.body,
                };
                sh.insert(&rec, MAX_ALTERNATES)?;
                sh.count(ShardCounter::Stored);
                Ok(CommitOutcome::Stored)
            })
        };
        // Damage found while inserting has just been cleared by a reset: one more try stores
        // into the clean shard instead of losing the fill.
        match attempt() {
            Err(Fault::Corrupt) => attempt(),
            r => r,
        }
        .unwrap_or_else(CommitOutcome::Fault)
    }

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
            Lookup::Hit(h) if h.freshness == Freshness::Fresh => {
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

    /// Counts a builder event (builders run in worker threads; counters live in the segment
    /// so every process's status sees them).
    pub fn count_build(&self, c: BuildCounter) {
        self.seg.header().build_counters[c as usize].fetch_add(1, Relaxed);
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
                    if walked > 256 || h.state != STATE_LIVE {
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
                    Validity::Stale => {
                        sh.set_header(off, &h);
                        count(sh, ShardCounter::StaleHits);
                        return Ok(Lookup::Hit(Hit {
                            descriptor: h.descriptor,
                            freshness: Freshness::Stale,
                            stamp: h.stamp,
                            meta_len,
                            body_len,
                        }));
                    }
                    Validity::Fresh => {
                        h.validated_clock = clock;
                        sh.set_header(off, &h);
                        count(sh, ShardCounter::Hits);
                        return Ok(Lookup::Hit(Hit {
                            descriptor: h.descriptor,
                            freshness: Freshness::Fresh,
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
                let freshness = match self.validity(scope, h.stamp, clock, h.validated_clock)? {
                    Validity::Fresh => Some(Freshness::Fresh),
                    Validity::Stale => Some(Freshness::Stale),
                    Validity::Purged => None,
                };
                out.push(AlternateInfo {
                    descriptor: h.descriptor,
                    stamp: h.stamp,
                    meta_len: h.meta_len,
                    body_len: h.body_len,
                    meta: meta.to_vec(),
                    freshness,
                });
            }
            Ok(out)
        })
    }

    /// Runs one purge: takes the clock's next value, lets `apply` write table buckets and do
    /// immediate deletions, then publishes the clock. Purges are rare; serializing them is
    /// what makes "clock value c is visible" imply "every purge <= c is in the tables".
    fn purge_with(
        &self,
        counter: PurgeCounter,
        soft: bool,
        apply: impl FnOnce(u64) -> Result<u64, Fault>,
    ) -> Result<PurgeReceipt, Fault> {
        let h = self.seg.header();
        // A purger that died mid-purge left at most some buckets at clock+1, which the next
        // purge reuses and publishes: nothing to repair.
        h.purge_lock.lock().map_err(|e| match e {
            lock::LockError::Timeout => Fault::LockTimeout,
            lock::LockError::Os(n) => Fault::Lock(n),
        })?;
        let _unlock = PurgeLockGuard(&h.purge_lock);
        let c = h.purge_clock.load(Acquire) + 1;
        let deleted = apply(c)?;
        h.purge_clock.store(c, Release);
        h.purge_counters[counter as usize].fetch_add(1, Relaxed);
        if soft {
            h.purge_counters[PurgeCounter::Soft as usize].fetch_add(1, Relaxed);
        }
        Ok(PurgeReceipt {
            generation: c,
            deleted,
        })
    }

    fn bump(&self, table: Table, slot: u32, c: u64) {
        if let Some(v) = self.seg.table(table).get(slot as usize) {
            v.fetch_max(c, AcqRel);
        }
    }

    /// Purges URLs: bumps each URL's generation (even when nothing is cached, so a racing
    /// first fill is fenced), bumps the tags `dependents` (entries that declared they were
    /// built from these URLs), and, unless soft, deletes `keys` with every alternate at once.
    pub fn purge_url(
        &self,
        urls: &[UrlId],
        dependents: &[&str],
        keys: &[Key],
        soft: bool,
    ) -> Result<PurgeReceipt, Fault> {
        let b = self.buckets();
        self.purge_with(PurgeCounter::Url, soft, |c| {
            let (ut, tt) = if soft {
                (Table::UrlSoft, Table::TagSoft)
            } else {
                (Table::UrlHard, Table::TagHard)
            };
            for u in urls {
                self.bump(ut, b.url(u), c);
            }
            for t in dependents {
                self.bump(tt, b.tag(t), c);
            }
            if !dependents.is_empty() {
                self.bump(tt, TAG_OVERFLOW_SLOT, c);
            }
            let mut deleted = 0;
            if !soft {
                for k in keys {
                    // The table write above already made the entry invalid; deleting only
                    // frees its space now. A shard we cannot lock (or that was damaged and
                    // reset) does not stop the purge from being published.
                    if let Ok(n) = self.with_shard(self.shard_of(k), |sh| sh.remove_key(&k.0)) {
                        deleted += n;
                    }
                }
            }
            Ok(deleted)
        })
    }

    /// Purges every URL under each `(scheme, host, prefix)`.
    pub fn purge_prefix(
        &self,
        prefixes: &[(&str, &str, &str)],
        soft: bool,
    ) -> Result<PurgeReceipt, Fault> {
        let b = self.buckets();
        let t = if soft {
            Table::PrefixSoft
        } else {
            Table::PrefixHard
        };
        self.purge_with(PurgeCounter::Prefix, soft, |c| {
            for (scheme, host, prefix) in prefixes {
                self.bump(t, b.prefix_purge_bucket(scheme, host, prefix), c);
            }
            Ok(0)
        })
    }

    /// Purges every entry carrying any of `tags`.
    pub fn purge_tag(&self, tags: &[&str], soft: bool) -> Result<PurgeReceipt, Fault> {
        let b = self.buckets();
        let t = if soft { Table::TagSoft } else { Table::TagHard };
        self.purge_with(PurgeCounter::Tag, soft, |c| {
            for tag in tags {
                self.bump(t, b.tag(tag), c);
            }
            self.bump(t, TAG_OVERFLOW_SLOT, c);
            Ok(0)
        })
    }

    /// Purges everything. A hard flush also empties every shard at once.
    pub fn flush_all(&self, soft: bool) -> Result<PurgeReceipt, Fault> {
        self.purge_with(PurgeCounter::All, soft, |c| {
            let h = self.seg.header();
            if soft {
                h.flush_soft.fetch_max(c, AcqRel);
                return Ok(0);
            }
            h.flush_hard.fetch_max(c, AcqRel);
            let mut deleted = 0;
            for s in 0..self.seg.layout.shard_count {
                let r = self.with_shard(s, |sh| {
                    let n = sh.hdr.alternates.load(Relaxed);
                    sh.reset();
                    Ok(n)
                });
                // The flush stamp already invalidates what a busy shard still holds.
                deleted += r.unwrap_or(0);
            }
            Ok(deleted)
        })
    }

    pub fn stats(&self) -> Stats {
        let h = self.seg.header();
        let mut s = Stats {
            purges_url: h.purge_counters[PurgeCounter::Url as usize].load(Relaxed),
            purges_prefix: h.purge_counters[PurgeCounter::Prefix as usize].load(Relaxed),
            purges_tag: h.purge_counters[PurgeCounter::Tag as usize].load(Relaxed),
            purges_all: h.purge_counters[PurgeCounter::All as usize].load(Relaxed),
            purges_soft: h.purge_counters[PurgeCounter::Soft as usize].load(Relaxed),
            builds_started: h.build_counters[BuildCounter::Started as usize].load(Relaxed),
            builds_done: h.build_counters[BuildCounter::Done as usize].load(Relaxed),
            builds_declined: h.build_counters[BuildCounter::Declined as usize].load(Relaxed),
            builds_failed: h.build_counters[BuildCounter::Failed as usize].load(Relaxed),
            builds_dropped: h.build_counters[BuildCounter::Dropped as usize].load(Relaxed),
            builds_fenced: h.build_counters[BuildCounter::Fenced as usize].load(Relaxed),
            purge_clock: h.purge_clock.load(Acquire),
            shards: self.seg.layout.shard_count as u64,
            bytes_capacity: self.seg.layout.arena_bytes() * self.seg.layout.shard_count as u64,
            ..Stats::default()
        };
        for i in 0..self.seg.layout.shard_count {
            let sh = self.seg.shard_header(i);
            let c = |k: ShardCounter| sh.counters[k as usize].load(Relaxed);
            s.hits += c(ShardCounter::Hits);
            s.stale_hits += c(ShardCounter::StaleHits);
            s.misses += c(ShardCounter::Misses);
            s.stored += c(ShardCounter::Stored);
            s.fenced += c(ShardCounter::Fenced);
            s.rejected_reads += c(ShardCounter::RejectedReads);
            s.checksum_failures += c(ShardCounter::ChecksumFailures);
            s.evictions += c(ShardCounter::Evictions);
            s.too_large += c(ShardCounter::TooLarge);
            s.replaced += c(ShardCounter::Replaced);
            s.lock_recoveries += c(ShardCounter::LockRecoveries);
            s.corrupt_resets += c(ShardCounter::CorruptResets);
            s.entries += sh.keys.load(Relaxed);
            s.alternates += sh.alternates.load(Relaxed);
            s.bytes_used += sh.live_bytes.load(Relaxed);
        }
        s
    }
}

/// Unlocks the shard when the operation ends, even by a panic; a panic may have left the
/// shard half-written, so it is reset first.
struct ShardGuard<'a> {
    shard: Shard<'a>,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shard.reset();
        }
        self.shard.hdr.lock.unlock();
    }
}

struct PurgeLockGuard<'a>(&'a lock::RobustMutex);

impl Drop for PurgeLockGuard<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

#[cfg(test)]
mod tests;
