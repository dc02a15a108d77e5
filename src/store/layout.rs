//! The segment's on-disk layout: header, purge tables and shards, sized from the segment size.
//!
//! Everything is `#[repr(C)]`, fixed-size and addressed by offsets, never pointers: the same file
//! is mapped at different addresses in different processes and reopened after restarts.
//!
//! ```text
//! 0            SegmentHeader (4 KiB page)
//! 4096         purge tables: url hard, url soft, prefix hard, prefix soft, tag hard, tag soft
//!              (each `slots` x u64 "clock value of the last purge of this hash bucket")
//! shards_off   shard 0 .. shard N-1, each `shard_bytes` long and page aligned:
//!                ShardHeader (256 B) | LeaseSlot x LEASES_PER_SHARD | IndexSlot x index_slots
//!                | arena (record ring)
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64};

use super::lock::RobustMutex;

/// Identifies our files; a file without it is never interpreted.
pub const MAGIC: [u8; 8] = *b"NGXPSVC\0";
/// Bumped whenever any `#[repr(C)]` structure or record encoding changes meaning.
pub const FORMAT_VERSION: u32 = 4;
pub const PAGE: u64 = 4096;
pub const HEADER_BYTES: u64 = PAGE;
pub const SHARD_HEADER_BYTES: u64 = 256;
/// Smallest segment we accept: header, minimal tables and one shard with a useful arena.
pub const MIN_SEGMENT: u64 = 1 << 20;
/// Largest segment we accept (offsets inside a shard stay far below u64 limits).
pub const MAX_SEGMENT: u64 = 1 << 40;
/// Shards bound lock contention; 64 is plenty for any worker count nginx is run with.
pub const MAX_SHARDS: u64 = 64;
/// Shards of about this size: enough of them that workers rarely share a lock, each large
/// enough that one shard still holds a 2 MiB object (a quarter of its arena).
pub const TARGET_SHARD_BYTES: u64 = 8 << 20;
/// A shard holds at least this many objects of `max_object` bytes: FIFO eviction needs room
/// to rotate, so one object never takes more than this share of a shard's arena.
pub const OBJECTS_PER_SHARD: u64 = 4;
/// Fills in flight at once per shard that can hold a lease (more fill without one: an extra
/// origin fetch, never a wrong byte).
pub const LEASES_PER_SHARD: u64 = 64;
/// Bytes of one lease slot.
pub const LEASE_SLOT_BYTES: u64 = std::mem::size_of::<LeaseSlot>() as u64;
/// Bytes of one key index slot.
pub const INDEX_SLOT_BYTES: u64 = std::mem::size_of::<IndexSlot>() as u64;
/// Index slots are provisioned one per this many arena bytes (objects average above it).
pub const ARENA_BYTES_PER_INDEX_SLOT: u64 = 1024;

/// Global header. Immutable fields are written once at initialization (before any other
/// process can see the file); the atomics are updated by any process.
#[repr(C)]
pub struct SegmentHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub shard_count: u32,
    pub total_size: u64,
    pub url_slots: u32,
    pub prefix_slots: u32,
    pub tag_slots: u32,
    /// Index slots per shard.
    pub index_slots: u32,
    pub shard_bytes: u64,
    pub shards_offset: u64,
    /// xxh3 of every field above: a torn or foreign header fails this check.
    pub layout_check: u64,
    /// Incremented by the process that opens the file first (exclusive flock); records whose
    /// checksum was verified in an older epoch are verified again on their next hit.
    pub open_epoch: AtomicU32,
    pub _pad0: u32,
    /// The purge clock. Written only under `purge_lock`, *after* the purge's table writes, so
    /// that reading value `c` guarantees every purge stamped `<= c` is visible in the tables.
    pub purge_clock: AtomicU64,
    /// Clock value of the last hard / soft flush of everything.
    pub flush_hard: AtomicU64,
    pub flush_soft: AtomicU64,
    /// Serializes purges (rare) so the clock can be published after the table writes.
    pub purge_lock: RobustMutex,
    /// Purge counters by scope (see `stats::PurgeCounter`), updated under `purge_lock`.
    pub purge_counters: [AtomicU64; 8],
    /// Variant builder counters (see `stats::BuildCounter`), updated by builder threads.
    pub build_counters: [AtomicU64; 8],
    /// Revalidation, collapsed-forwarding and stale-serving counters (see
    /// `stats::FreshnessCounter`), updated by workers with atomic increments.
    pub freshness_counters: [AtomicU64; 8],
    /// Fleet purge (`src/store/fleet.rs`): the last stream id this node applied, as two
    /// halves guarded by `fleet_applied_seqlock` (odd while being written). Written only by
    /// the node's one applier (it holds the fleet lock file), after the purge is visible;
    /// persisted with the cache, so a restart resumes from it.
    pub fleet_applied_seqlock: AtomicU64,
    pub fleet_applied_ms: AtomicU64,
    pub fleet_applied_seq: AtomicU64,
    /// Unix ms at which the applier last confirmed it had read the stream to its end (0:
    /// never since this file was opened). Workers self-fence when it is older than max_lag.
    pub fleet_confirmed_ms: AtomicU64,
    /// Fleet counters and gauges (see `fleet::FleetCounter`), written by the applier.
    pub fleet_counters: [AtomicU64; 8],
}

/// Per-shard header. Ring and gauge fields are written only under `lock`; they are atomics so
/// that status readers in any process may read them without the lock.
#[repr(C)]
pub struct ShardHeader {
    pub lock: RobustMutex,
    /// Next write offset in the arena.
    pub head: AtomicU64,
    /// Offset of the oldest record (or pad) in the arena.
    pub tail: AtomicU64,
    /// Bytes between tail and head, records and pads included; 0 means empty.
    pub ring_bytes: AtomicU64,
    pub keys: AtomicU64,
    pub alternates: AtomicU64,
    /// Bytes of live records (headers included).
    pub live_bytes: AtomicU64,
    /// Counters, see `stats::ShardCounter`.
    pub counters: [AtomicU64; 16],
}

/// "A fill (or revalidation) of this key is in flight": taken and released under the shard's
/// lock, read by waiters in any process. `key_lo == 0 && key_hi == 0` marks a free slot.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct LeaseSlot {
    /// The first 16 bytes of the key (two keys sharing them would share a lease: an extra
    /// wait, never a wrong byte).
    pub key_lo: u64,
    pub key_hi: u64,
    /// The purge clock when the lease was taken: a purge covering the key since ends it.
    pub ticket: u64,
    /// CLOCK_MONOTONIC milliseconds (the same clock in every process) after which the lease
    /// has expired whatever its owner does.
    pub deadline_ms: u64,
    /// Unique per lease taken (owner pid in the high half): what its release names.
    pub token: u64,
    /// The owner's pid, checked for liveness by waiters.
    pub owner: u32,
    /// `LEASE_FILLING` or `LEASE_PASS` (the last fill found the response not storable: send
    /// requests to the origin without waiting until the deadline).
    pub state: u32,
}

/// One open-addressing slot of a shard's key index. `head == 0` marks an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IndexSlot {
    pub key: [u8; 32],
    /// Arena offset + 1 of the newest alternate of this key.
    pub head: u64,
    pub alternates: u32,
    pub _pad: u32,
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() <= HEADER_BYTES as usize);
const _: () = assert!(std::mem::size_of::<ShardHeader>() <= SHARD_HEADER_BYTES as usize);
const _: () = assert!(INDEX_SLOT_BYTES == 48);
const _: () = assert!(LEASE_SLOT_BYTES == 48);

/// Where everything lives, derived only from the total size (so a reopen recomputes it and
/// compares it with the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub total_size: u64,
    pub url_slots: u32,
    pub prefix_slots: u32,
    pub tag_slots: u32,
    pub shard_count: u32,
    pub shard_bytes: u64,
    pub shards_offset: u64,
    pub index_slots: u32,
}

fn prev_pow2(v: u64) -> u64 {
    if v == 0 {
        1
    } else {
        1u64 << (63 - v.leading_zeros())
    }
}

impl Layout {
    /// Computes the layout for a segment of `total_size` bytes (rounded down to a page).
    pub fn for_size(total_size: u64) -> Option<Layout> {
        Layout::for_object_size(total_size, 0)
    }

    /// As `for_size`, with shards large enough that an object of `max_object` bytes takes
    /// at most `1 / OBJECTS_PER_SHARD` of one. None if the segment
    /// cannot hold even one such shard.
    pub fn for_object_size(total_size: u64, max_object: u64) -> Option<Layout> {
        let total_size = total_size / PAGE * PAGE;
        if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&total_size) {
            return None;
        }
        // Tables grow with the cache (more entries, more distinct purged URLs) but stay ~1.5%.
        let url_slots = prev_pow2(total_size / 1024).clamp(1024, 1 << 18);
        let prefix_slots = (url_slots / 4).max(256);
        let tag_slots = (url_slots / 4).max(256);
        let tables = (url_slots + prefix_slots + tag_slots) * 8 * 2;
        let shards_offset = (HEADER_BYTES + tables).div_ceil(PAGE) * PAGE;
        let rest = total_size.checked_sub(shards_offset)?;
        let shard_target = TARGET_SHARD_BYTES.max(
            max_object
                .saturating_mul(OBJECTS_PER_SHARD)
                .saturating_add(1 << 20),
        );
        let shard_count = prev_pow2((rest / shard_target).clamp(1, MAX_SHARDS));
        let shard_bytes = rest / shard_count / PAGE * PAGE;
        let index_slots = ((shard_bytes - SHARD_HEADER_BYTES)
            / (ARENA_BYTES_PER_INDEX_SLOT + INDEX_SLOT_BYTES))
            .max(64);
        let layout = Layout {
            total_size,
            url_slots: url_slots as u32,
            prefix_slots: prefix_slots as u32,
            tag_slots: tag_slots as u32,
            shard_count: shard_count as u32,
            shard_bytes,
            shards_offset,
            index_slots: index_slots as u32,
        };
        (layout.arena_bytes() >= (64 * 1024).max(max_object.saturating_mul(OBJECTS_PER_SHARD)))
            .then_some(layout)
    }

    pub fn table_offset(&self, table: Table) -> u64 {
        let u = self.url_slots as u64 * 8;
        let p = self.prefix_slots as u64 * 8;
        let t = self.tag_slots as u64 * 8;
        HEADER_BYTES
            + match table {
                Table::UrlHard => 0,
                Table::UrlSoft => u,
                Table::PrefixHard => 2 * u,
                Table::PrefixSoft => 2 * u + p,
                Table::TagHard => 2 * u + 2 * p,
                Table::TagSoft => 2 * u + 2 * p + t,
            }
    }

    pub fn table_slots(&self, table: Table) -> u32 {
        match table {
            Table::UrlHard | Table::UrlSoft => self.url_slots,
            Table::PrefixHard | Table::PrefixSoft => self.prefix_slots,
            Table::TagHard | Table::TagSoft => self.tag_slots,
        }
    }

    pub fn shard_offset(&self, shard: u32) -> u64 {
        self.shards_offset + shard as u64 * self.shard_bytes
    }

    pub fn lease_offset_in_shard(&self) -> u64 {
        SHARD_HEADER_BYTES
    }

    pub fn index_offset_in_shard(&self) -> u64 {
        SHARD_HEADER_BYTES + LEASES_PER_SHARD * LEASE_SLOT_BYTES
    }

    pub fn arena_offset_in_shard(&self) -> u64 {
        self.index_offset_in_shard() + self.index_slots as u64 * INDEX_SLOT_BYTES
    }

    /// Arena bytes per shard, a multiple of 8.
    pub fn arena_bytes(&self) -> u64 {
        (self.shard_bytes - self.arena_offset_in_shard()) / 8 * 8
    }

    /// Checksum over the immutable header fields.
    pub fn check_value(&self) -> u64 {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for v in [
            self.total_size,
            self.url_slots as u64,
            self.prefix_slots as u64,
            self.tag_slots as u64,
            self.shard_count as u64,
            self.shard_bytes,
            self.shards_offset,
            self.index_slots as u64,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        xxhash_rust::xxh3::xxh3_64(&b)
    }
}

/// The six purge tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    UrlHard,
    UrlSoft,
    PrefixHard,
    PrefixSoft,
    TagHard,
    TagSoft,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_fit_their_segment() {
        for size in [1u64 << 20, 3 << 20, 64 << 20, 256 << 20, 1 << 30, 40 << 30] {
            let l = Layout::for_size(size).expect("layout");
            assert!(l.shard_offset(l.shard_count) <= size, "{size}");
            assert!(l.table_offset(Table::TagSoft) + l.tag_slots as u64 * 8 <= l.shards_offset);
            assert!(l.arena_bytes() >= 64 * 1024);
            assert!(l.shard_count.is_power_of_two());
        }
    }

    #[test]
    fn a_large_max_object_makes_fewer_larger_shards() {
        let small = Layout::for_size(256 << 20).unwrap();
        let big = Layout::for_object_size(256 << 20, 16 << 20).unwrap();
        assert!(big.shard_count < small.shard_count);
        assert!(big.arena_bytes() >= 64 << 20);
        assert!(
            Layout::for_object_size(8 << 20, 4 << 20).is_none(),
            "8m cannot hold a 4m object 4 times"
        );
    }

    #[test]
    fn too_small_or_too_large_segments_are_refused() {
        assert!(Layout::for_size(512 << 10).is_none());
        assert!(Layout::for_size(MAX_SEGMENT * 2).is_none());
    }

    #[test]
    fn layout_check_differs_per_size() {
        let a = Layout::for_size(8 << 20).unwrap();
        let b = Layout::for_size(16 << 20).unwrap();
        assert_ne!(a.check_value(), b.check_value());
    }
}
