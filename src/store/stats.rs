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
    /// A revalidation found the original unchanged and refreshed it (and its variants).
    Revalidated = 12,
}

/// Purge counters, indexes into `SegmentHeader::purge_counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeCounter {
    Url = 0,
    Prefix = 1,
    Tag = 2,
    All = 3,
    Soft = 4,
    /// A revalidation found the original changed and replaced the key.
    Changed = 5,
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

/// Freshness counters, indexes into `SegmentHeader::freshness_counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshnessCounter {
    /// Conditional (or digest-compared) refills of an expired or soft-purged entry.
    Revalidations = 0,
    /// Requests served the fill another request made while they waited for its lease.
    Collapsed = 1,
    /// Waits for another request's fill that ran past the lock timeout.
    LockTimeouts = 2,
    /// Stale entries served at once while one revalidation ran in the background.
    StaleUpdating = 3,
    /// Stale entries served instead of an origin error.
    StaleOnError = 4,
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
    pub revalidations: u64,
    pub revalidated_unchanged: u64,
    pub revalidated_changed: u64,
    pub collapsed: u64,
    pub lock_timeouts: u64,
    pub stale_updating: u64,
    pub stale_on_error: u64,
    pub purge_clock: u64,
    pub entries: u64,
    pub alternates: u64,
    pub bytes_used: u64,
    pub bytes_capacity: u64,
    pub shards: u64,
}

/// Whether a metric only grows (Prometheus `counter`) or goes up and down (`gauge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// How an operator reads the counters: the admin console's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Requests,
    Freshness,
    Builds,
    Purges,
    Segment,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Requests,
        Group::Freshness,
        Group::Builds,
        Group::Purges,
        Group::Segment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Requests => "Requests",
            Group::Freshness => "Freshness",
            Group::Builds => "Builds",
            Group::Purges => "Purges",
            Group::Segment => "Segment",
        }
    }
}

/// One counter or gauge with everything every exposition needs: the JSON key and Prometheus
/// name, the help text, a short label for people, its kind and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    pub group: Group,
    pub value: u64,
}

impl Stats {
    /// Every field, in the JSON's order: the one list JSON, Prometheus and the console read.
    pub fn fields(&self) -> [Metric; 36] {
        [
            Metric {
                name: "hits",
                help: "Lookups answered from the cache",
                label: "hits",
                kind: Kind::Counter,
                group: Group::Requests,
                value: self.hits,
            },
            Metric {
                name: "stale_hits",
                help: "Lookups that found only a soft-purged entry",
                label: "stale (soft-purged) finds",
                kind: Kind::Counter,
                group: Group::Requests,
                value: self.stale_hits,
            },
            Metric {
                name: "misses",
                help: "Lookups that found nothing servable",
                label: "misses",
                kind: Kind::Counter,
                group: Group::Requests,
                value: self.misses,
            },
            Metric {
                name: "stored",
                help: "Alternates committed",
                label: "stored (fills and variants)",
                kind: Kind::Counter,
                group: Group::Requests,
                value: self.stored,
            },
            Metric {
                name: "fenced",
                help: "Commits dropped because a purge covered them",
                label: "fenced commits",
                kind: Kind::Counter,
                group: Group::Requests,
                value: self.fenced,
            },
            Metric {
                name: "rejected_reads",
                help: "Entries found purged at lookup and dropped",
                label: "rejected reads",
                kind: Kind::Counter,
                group: Group::Requests,
                value: self.rejected_reads,
            },
            Metric {
                name: "checksum_failures",
                help: "Records whose bytes failed their checksum",
                label: "checksum failures",
                kind: Kind::Counter,
                group: Group::Segment,
                value: self.checksum_failures,
            },
            Metric {
                name: "evictions",
                help: "Alternates evicted to make room",
                label: "evictions",
                kind: Kind::Counter,
                group: Group::Segment,
                value: self.evictions,
            },
            Metric {
                name: "too_large",
                help: "Commits refused for size",
                label: "too large",
                kind: Kind::Counter,
                group: Group::Requests,
                value: self.too_large,
            },
            Metric {
                name: "replaced",
                help: "Alternates replaced by a newer fill",
                label: "replaced",
                kind: Kind::Counter,
                group: Group::Requests,
                value: self.replaced,
            },
            Metric {
                name: "lock_recoveries",
                help: "Shard locks recovered from a dead owner",
                label: "lock recoveries",
                kind: Kind::Counter,
                group: Group::Segment,
                value: self.lock_recoveries,
            },
            Metric {
                name: "corrupt_resets",
                help: "Shards reset after finding damage",
                label: "shards reset",
                kind: Kind::Counter,
                group: Group::Segment,
                value: self.corrupt_resets,
            },
            Metric {
                name: "purges_url",
                help: "URL purges",
                label: "URL",
                kind: Kind::Counter,
                group: Group::Purges,
                value: self.purges_url,
            },
            Metric {
                name: "purges_prefix",
                help: "Prefix purges",
                label: "prefix",
                kind: Kind::Counter,
                group: Group::Purges,
                value: self.purges_prefix,
            },
            Metric {
                name: "purges_tag",
                help: "Tag purges",
                label: "tag",
                kind: Kind::Counter,
                group: Group::Purges,
                value: self.purges_tag,
            },
            Metric {
                name: "purges_all",
                help: "Full flushes",
                label: "everything",
                kind: Kind::Counter,
                group: Group::Purges,
                value: self.purges_all,
            },
            Metric {
                name: "purges_soft",
                help: "Purges of any scope made soft",
                label: "of which soft",
                kind: Kind::Counter,
                group: Group::Purges,
                value: self.purges_soft,
            },
            Metric {
                name: "builds_started",
                help: "Variant builds that read their source and began",
                label: "started",
                kind: Kind::Counter,
                group: Group::Builds,
                value: self.builds_started,
            },
            Metric {
                name: "builds_done",
                help: "Variants built and stored",
                label: "done",
                kind: Kind::Counter,
                group: Group::Builds,
                value: self.builds_done,
            },
            Metric {
                name: "builds_declined",
                help: "Variant builds declined (not smaller, nothing to do)",
                label: "declined",
                kind: Kind::Counter,
                group: Group::Builds,
                value: self.builds_declined,
            },
            Metric {
                name: "builds_failed",
                help: "Variant builds refused (undecodable or over limits)",
                label: "failed",
                kind: Kind::Counter,
                group: Group::Builds,
                value: self.builds_failed,
            },
            Metric {
                name: "builds_dropped",
                help: "Variant builds dropped because the queue was full",
                label: "dropped (queue full)",
                kind: Kind::Counter,
                group: Group::Builds,
                value: self.builds_dropped,
            },
            Metric {
                name: "builds_fenced",
                help: "Built variants dropped because their source was purged",
                label: "fenced",
                kind: Kind::Counter,
                group: Group::Builds,
                value: self.builds_fenced,
            },
            Metric {
                name: "revalidations",
                help: "Conditional or digest-compared refills of expired or soft-purged entries",
                label: "revalidations",
                kind: Kind::Counter,
                group: Group::Freshness,
                value: self.revalidations,
            },
            Metric {
                name: "revalidated_unchanged",
                help: "Revalidations that kept the entry and its variants",
                label: "unchanged (kept)",
                kind: Kind::Counter,
                group: Group::Freshness,
                value: self.revalidated_unchanged,
            },
            Metric {
                name: "revalidated_changed",
                help: "Revalidations that replaced the entry and dropped its variants",
                label: "changed (replaced)",
                kind: Kind::Counter,
                group: Group::Freshness,
                value: self.revalidated_changed,
            },
            Metric {
                name: "collapsed",
                help: "Requests served the fill they waited for",
                label: "collapsed waiters",
                kind: Kind::Counter,
                group: Group::Freshness,
                value: self.collapsed,
            },
            Metric {
                name: "lock_timeouts",
                help: "Waits for another fill past pagespeed_cache_lock_timeout",
                label: "lock timeouts",
                kind: Kind::Counter,
                group: Group::Freshness,
                value: self.lock_timeouts,
            },
            Metric {
                name: "stale_updating",
                help: "Stale entries served while one revalidation ran",
                label: "stale while updating",
                kind: Kind::Counter,
                group: Group::Freshness,
                value: self.stale_updating,
            },
            Metric {
                name: "stale_on_error",
                help: "Stale entries served instead of an origin error",
                label: "stale on error",
                kind: Kind::Counter,
                group: Group::Freshness,
                value: self.stale_on_error,
            },
            Metric {
                name: "purge_clock",
                help: "Current purge clock value",
                label: "purge clock",
                kind: Kind::Gauge,
                group: Group::Purges,
                value: self.purge_clock,
            },
            Metric {
                name: "entries",
                help: "Keys cached",
                label: "entries",
                kind: Kind::Gauge,
                group: Group::Segment,
                value: self.entries,
            },
            Metric {
                name: "alternates",
                help: "Alternates cached",
                label: "alternates",
                kind: Kind::Gauge,
                group: Group::Segment,
                value: self.alternates,
            },
            Metric {
                name: "bytes_used",
                help: "Bytes held by live records",
                label: "bytes used",
                kind: Kind::Gauge,
                group: Group::Segment,
                value: self.bytes_used,
            },
            Metric {
                name: "bytes_capacity",
                help: "Arena bytes across all shards",
                label: "capacity",
                kind: Kind::Gauge,
                group: Group::Segment,
                value: self.bytes_capacity,
            },
            Metric {
                name: "shards",
                help: "Lock shards",
                label: "lock shards",
                kind: Kind::Gauge,
                group: Group::Segment,
                value: self.shards,
            },
        ]
    }

    /// The JSON object of the status location, keys sorted (`extra` added, e.g. `max_object`).
    pub fn to_json(&self, extra: &[(&str, u64)]) -> String {
        let mut out = String::with_capacity(768);
        out.push('{');
        let mut first = true;
        let fields = self.fields();
        let mut all: Vec<(&str, u64)> = fields.iter().map(|m| (m.name, m.value)).collect();
        all.extend_from_slice(extra);
        all.sort_unstable_by_key(|&(name, _)| name);
        for (name, value) in all {
            if !first {
                out.push(',');
            }
            first = false;
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
            out.push_str(itoa::Buffer::new().format(value));
        }
        out.push('}');
        out
    }

    /// The Prometheus text exposition.
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(4096);
        for m in self.fields() {
            let (kind, suffix) = match m.kind {
                Kind::Counter => ("counter", "_total"),
                Kind::Gauge => ("gauge", ""),
            };
            let metric = format!("pagespeed_cache_{}{suffix}", m.name);
            let _ = write!(
                text,
                "# HELP {metric} {}\n# TYPE {metric} {kind}\n{metric} {}\n",
                m.help, m.value
            );
        }
        text
    }
}

impl Store {
    /// Counts a builder event (builders run in worker threads; counters live in the segment
    /// so every process's status sees them).
    pub fn count_build(&self, c: BuildCounter) {
        self.seg.header().build_counters[c as usize].fetch_add(1, Relaxed);
    }

    /// Counts a revalidation, collapsed-forwarding or stale-serving event.
    pub fn count_freshness(&self, c: FreshnessCounter) {
        self.seg.header().freshness_counters[c as usize].fetch_add(1, Relaxed);
    }

    pub fn stats(&self) -> Stats {
        let h = self.seg.header();
        let fc = |c: FreshnessCounter| h.freshness_counters[c as usize].load(Relaxed);
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
            revalidations: fc(FreshnessCounter::Revalidations),
            revalidated_changed: h.purge_counters[PurgeCounter::Changed as usize].load(Relaxed),
            collapsed: fc(FreshnessCounter::Collapsed),
            lock_timeouts: fc(FreshnessCounter::LockTimeouts),
            stale_updating: fc(FreshnessCounter::StaleUpdating),
            stale_on_error: fc(FreshnessCounter::StaleOnError),
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
            s.revalidated_unchanged += c(ShardCounter::Revalidated);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_prometheus_carry_every_field() {
        let s = Stats {
            hits: 3,
            bytes_used: 7,
            ..Stats::default()
        };
        let json = s.to_json(&[("max_object", 9)]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            serde_json::to_value(&s)
                .map(|mut v| {
                    v.as_object_mut()
                        .unwrap()
                        .insert("max_object".into(), 9.into());
                    v
                })
                .unwrap()
        );
        let prom = s.to_prometheus();
        assert!(prom
            .contains("# TYPE pagespeed_cache_hits_total counter\npagespeed_cache_hits_total 3\n"));
        assert!(prom
            .contains("# TYPE pagespeed_cache_bytes_used gauge\npagespeed_cache_bytes_used 7\n"));
        assert_eq!(prom.matches("# TYPE").count(), s.fields().len());
    }
}
