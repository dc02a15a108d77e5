//! Counters every process can read: per-shard counters (updated under the shard lock) and
//! per-scope purge counters (updated under the purge lock), summed on read.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use serde::Serialize;

use super::Store;

/// Per-shard counters, indexes into `ShardHeader::counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCounter {
    Hits = 0,
    Misses = 1,
    Stored = 2,
    Fenced = 3,
    RejectedReads = 4,
    Evictions = 5,
    TooLarge = 6,
    Replaced = 7,
    LockRecoveries = 8,
    CorruptResets = 9,
    StaleHits = 10,
    ChecksumFailures = 11,
}

/// Purge counters, indexes into `SegmentHeader::purge_counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeCounter {
    Url = 0,
    Prefix = 1,
    Tag = 2,
    All = 3,
    Soft = 4,
}

/// Builder counters, indexes into `SegmentHeader::build_counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildCounter {
    Done = 0,
    Declined = 1,
    Failed = 2,
    Dropped = 3,
    Fenced = 4,
    /// A builder read its source and began (every started build ends in one of the above).
    Started = 5,
}

/// A snapshot of the store's counters and gauges.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub stale_hits: u64,
    pub misses: u64,
    pub stored: u64,
    pub fenced: u64,
    pub rejected_reads: u64,
    pub checksum_failures: u64,
    pub evictions: u64,
    pub too_large: u64,
    pub replaced: u64,
    pub lock_recoveries: u64,
    pub corrupt_resets: u64,
    pub purges_url: u64,
    pub purges_prefix: u64,
    pub purges_tag: u64,
    pub purges_all: u64,
    pub purges_soft: u64,
    pub builds_started: u64,
    pub builds_done: u64,
    pub builds_declined: u64,
    pub builds_failed: u64,
    pub builds_dropped: u64,
    pub builds_fenced: u64,
    pub purge_clock: u64,
    pub entries: u64,
    pub alternates: u64,
    pub bytes_used: u64,
    pub bytes_capacity: u64,
    pub shards: u64,
}

impl Stats {
    /// (name, help, value) for exposition formats; names match the JSON keys.
    pub fn fields(&self) -> [(&'static str, &'static str, u64); 29] {
        [
            ("hits", "Lookups answered from the cache", self.hits),
            (
                "stale_hits",
                "Lookups that found only a soft-purged entry",
                self.stale_hits,
            ),
            ("misses", "Lookups that found nothing servable", self.misses),
            ("stored", "Alternates committed", self.stored),
            (
                "fenced",
                "Commits dropped because a purge covered them",
                self.fenced,
            ),
            (
                "rejected_reads",
                "Entries found purged at lookup and dropped",
                self.rejected_reads,
            ),
            (
                "checksum_failures",
                "Records whose bytes failed their checksum",
                self.checksum_failures,
            ),
            (
                "evictions",
                "Alternates evicted to make room",
                self.evictions,
            ),
            ("too_large", "Commits refused for size", self.too_large),
            (
                "replaced",
                "Alternates replaced by a newer fill",
                self.replaced,
            ),
            (
                "lock_recoveries",
                "Shard locks recovered from a dead owner",
                self.lock_recoveries,
            ),
            (
                "corrupt_resets",
                "Shards reset after finding damage",
                self.corrupt_resets,
            ),
            ("purges_url", "URL purges", self.purges_url),
            ("purges_prefix", "Prefix purges", self.purges_prefix),
            ("purges_tag", "Tag purges", self.purges_tag),
            ("purges_all", "Full flushes", self.purges_all),
            (
                "purges_soft",
                "Purges of any scope made soft",
                self.purges_soft,
            ),
            (
                "builds_started",
                "Variant builds that read their source and began",
                self.builds_started,
            ),
            ("builds_done", "Variants built and stored", self.builds_done),
            (
                "builds_declined",
                "Variant builds declined (not smaller, nothing to do)",
                self.builds_declined,
            ),
            (
                "builds_failed",
                "Variant builds refused (undecodable or over limits)",
                self.builds_failed,
            ),
            (
                "builds_dropped",
                "Variant builds dropped because the queue was full",
                self.builds_dropped,
            ),
            (
                "builds_fenced",
                "Built variants dropped because their source was purged",
                self.builds_fenced,
            ),
            ("purge_clock", "Current purge clock value", self.purge_clock),
            ("entries", "Keys cached", self.entries),
            ("alternates", "Alternates cached", self.alternates),
            ("bytes_used", "Bytes held by live records", self.bytes_used),
            (
                "bytes_capacity",
                "Arena bytes across all shards",
                self.bytes_capacity,
            ),
            ("shards", "Lock shards", self.shards),
        ]
    }
}

impl Store {
    /// Counts a builder event (builders run in worker threads; counters live in the segment
    /// so every process's status sees them).
    pub fn count_build(&self, c: BuildCounter) {
        self.seg.header().build_counters[c as usize].fetch_add(1, Relaxed);
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
