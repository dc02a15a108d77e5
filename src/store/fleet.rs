//! The fleet's state in the segment: the last stream id this node applied (persisted with the
//! cache), when the applier last confirmed it was caught up, and its counters.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::Store;

/// Fleet counters and gauges, indexes into `SegmentHeader::fleet_counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetCounter {
    /// Stream entries applied as purges.
    Applied = 0,
    /// Catch-ups: reads that started behind the stream's end (start, reconnect).
    CatchUps = 1,
    /// Full flushes because the stream was trimmed past the applied id.
    TrimFlushes = 2,
    /// Gauge: 1 while the applier holds a working Redis connection.
    Connected = 3,
    /// Gauge: entries known to be in the stream after the applied id.
    LagEntries = 4,
    /// Milliseconds spent self-fenced, summed (updated by the applier).
    FencedMs = 5,
    /// Entries that could not be decoded (applied as a full flush: never under-invalidate).
    Undecodable = 6,
    /// Gauge: unix ms of the newest entry seen at the stream's end.
    HeadMs = 7,
}

impl Store {
    /// The last applied stream id as (ms, seq); (0, 0) before the first.
    pub fn fleet_applied(&self) -> (u64, u64) {
        let h = self.seg.header();
        loop {
            let v1 = h.fleet_applied_seqlock.load(Acquire);
            if v1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let ms = h.fleet_applied_ms.load(Acquire);
            let seq = h.fleet_applied_seq.load(Acquire);
            if h.fleet_applied_seqlock.load(Acquire) == v1 {
                return (ms, seq);
            }
        }
    }

    /// Records the id just applied. Only the node's one applier calls this (it holds the
    /// fleet lock file); ids only grow.
    pub fn set_fleet_applied(&self, ms: u64, seq: u64) {
        let h = self.seg.header();
        if (ms, seq) <= self.fleet_applied() {
            return;
        }
        h.fleet_applied_seqlock.fetch_add(1, Release);
        h.fleet_applied_ms.store(ms, Release);
        h.fleet_applied_seq.store(seq, Release);
        h.fleet_applied_seqlock.fetch_add(1, Release);
    }

    /// Unix ms at which the applier last confirmed it had read the whole stream.
    pub fn fleet_confirmed_ms(&self) -> u64 {
        self.seg.header().fleet_confirmed_ms.load(Acquire)
    }

    pub fn set_fleet_confirmed_ms(&self, ms: u64) {
        self.seg.header().fleet_confirmed_ms.store(ms, Release);
    }

    pub fn fleet_counter(&self, c: FleetCounter) -> u64 {
        self.seg.header().fleet_counters[c as usize].load(Relaxed)
    }

    pub fn add_fleet_counter(&self, c: FleetCounter, n: u64) {
        self.seg.header().fleet_counters[c as usize].fetch_add(n, Relaxed);
    }

    pub fn set_fleet_gauge(&self, c: FleetCounter, v: u64) {
        self.seg.header().fleet_counters[c as usize].store(v, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Backing, Store, StoreConfig};

    #[test]
    fn the_applied_id_only_grows_and_survives_a_reopen_while_confirmation_does_not() {
        let dir = std::env::temp_dir().join(format!("fleet-applied-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let cfg = StoreConfig {
            backing: Backing::File(dir.clone()),
            size: 2 << 20,
            max_object: 0,
        };
        {
            let s = Store::open(&cfg).unwrap();
            assert_eq!(s.fleet_applied(), (0, 0));
            s.set_fleet_applied(5, 1);
            s.set_fleet_applied(4, 9);
            assert_eq!(s.fleet_applied(), (5, 1));
            s.set_fleet_confirmed_ms(77);
        }
        let s = Store::open(&cfg).unwrap();
        assert_eq!(s.fleet_applied(), (5, 1));
        assert_eq!(
            s.fleet_confirmed_ms(),
            0,
            "a restarted node must confirm again"
        );
        let _ = std::fs::remove_file(&dir);
    }
}
