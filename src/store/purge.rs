//! Purges of every scope: each takes the purge clock's next value under the purge lock,
//! raises its table buckets to it, deletes what it can at once, then publishes the clock.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use super::layout::Table;
use super::scope::{UrlId, TAG_OVERFLOW_SLOT};
use super::stats::PurgeCounter;
use super::{lock, Fault, Key, PurgeLockGuard, PurgeReceipt, Store};

impl Store {
    /// Runs one purge: takes the clock's next value, lets `apply` write table buckets and do
    /// immediate deletions, then publishes the clock. Purges are rare; serializing them is
    /// what makes "clock value c is visible" imply "every purge <= c is in the tables".
    pub(super) fn purge_with(
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

    pub(super) fn bump(&self, table: Table, slot: u32, c: u64) {
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
}
