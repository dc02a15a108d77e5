//! Whether a record or a commit is covered by a purge since its stamp: the purge tables read
//! against a stamp, the validity of a stored record, and the repair of a clock a dead purger
//! left unpublished.

use std::sync::atomic::Ordering::{AcqRel, Acquire};

use super::layout::Table;
use super::scope::{ScopeView, TAG_OVERFLOW_SLOT};
use super::shard::Corrupt;
use super::{PurgeLockGuard, Store, Validity};

impl Store {
    /// Whether a bucket was purged after `stamp`. A bucket above the published `clock` was
    /// written by a purge that has not published yet: a live one (it will, before it answers)
    /// or a dead one (it never will), which `repair_unpublished` settles.
    pub(super) fn bucket_after(&self, t: Table, slot: u32, stamp: u64, clock: u64) -> bool {
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

    pub(super) fn scope_purged(
        &self,
        scope: &ScopeView,
        stamp: u64,
        clock: u64,
        soft: bool,
    ) -> bool {
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
    pub(super) fn repair_unpublished(&self, seen: u64) {
        let h = self.seg.header();
        if let Ok(Some(_)) = h.purge_lock.try_lock() {
            let _unlock = PurgeLockGuard(&h.purge_lock);
            let _ = h
                .purge_clock
                .compare_exchange(seen, seen + 1, AcqRel, Acquire);
        }
    }

    pub(super) fn validity(
        &self,
        scope: &[u8],
        stamp: u64,
        clock: u64,
        memo: u64,
    ) -> Result<Validity, Corrupt> {
        // No purge published since the fill started, or since this record was last checked.
        if clock <= stamp || memo == clock {
            return Ok(Validity::Current);
        }
        let view = ScopeView::parse(scope).ok_or(Corrupt)?;
        Ok(if self.scope_purged(&view, stamp, clock, false) {
            Validity::Purged
        } else if self.scope_purged(&view, stamp, clock, true) {
            Validity::SoftPurged
        } else {
            Validity::Current
        })
    }
}
