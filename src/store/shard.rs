//! One shard, locked: its key index (open addressing) and its arena (a ring of records).
//!
//! Everything here is safe code over the slices `shm::Segment::shard_body` hands out while the
//! shard lock is held. Every offset and length read from the arena is bounds-checked: a damaged
//! shard is reported as `Corrupt` and the caller resets it, never trusts it.
//!
//! Record layout (little endian, 8-byte aligned, `RECORD_HEADER` bytes of header):
//!
//! ```text
//! state u32 | descriptor u32 | scope_len u32 | meta_len u32 | body_len u32 | verified_epoch u32
//! next u64 | stamp u64 | validated_clock u64 | checksum u64 | key_tag u64
//! scope bytes | meta bytes | body bytes | zero padding to 8
//! ```

use std::sync::atomic::Ordering::Relaxed;

use super::layout::{IndexSlot, LeaseSlot, ShardHeader};
use super::stats::ShardCounter;

pub const RECORD_HEADER: usize = 64;
pub const STATE_LIVE: u32 = 0x4c49_5645;
pub const STATE_DEAD: u32 = 0x4445_4144;
/// Filler from here to the end of the arena: the head wrapped.
pub const STATE_PAD: u32 = 0x5041_4444;
/// Longest chain walked: more than any legal number of alternates, bounds a corrupt loop.
pub const MAX_CHAIN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

#[derive(Debug, Clone, Copy, Default)]
pub struct RecordHeader {
    pub state: u32,
    pub descriptor: u32,
    pub scope_len: u32,
    pub meta_len: u32,
    pub body_len: u32,
    pub verified_epoch: u32,
    /// Offset + 1 of the next older alternate of the same key; 0 ends the chain.
    pub next: u64,
    /// Purge clock value of the fill ticket that produced this record.
    pub stamp: u64,
    /// Purge clock at which the scopes were last found valid (a lookup memo).
    pub validated_clock: u64,
    /// xxh3-64 of scope || meta || body.
    pub checksum: u64,
    /// First 8 bytes of the key: finds the index slot when the tail evicts this record.
    pub key_tag: u64,
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

pub fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

pub fn key_tag(key: &[u8; 32]) -> u64 {
    u64::from_le_bytes(key[..8].try_into().expect("8 bytes"))
}

impl RecordHeader {
    fn read(arena: &[u8], off: u64) -> Option<RecordHeader> {
        let off = usize::try_from(off).ok()?;
        let b = arena.get(off..off.checked_add(RECORD_HEADER)?)?;
        let h = RecordHeader {
            state: u32_at(b, 0),
            descriptor: u32_at(b, 4),
            scope_len: u32_at(b, 8),
            meta_len: u32_at(b, 12),
            body_len: u32_at(b, 16),
            verified_epoch: u32_at(b, 20),
            next: u64_at(b, 24),
            stamp: u64_at(b, 32),
            validated_clock: u64_at(b, 40),
            checksum: u64_at(b, 48),
            key_tag: u64_at(b, 56),
        };
        // A record must fit in the arena; anything else is damage.
        (off as u64 + h.total_len() <= arena.len() as u64).then_some(h)
    }

    fn write(&self, arena: &mut [u8], off: u64) {
        let off = off as usize;
        let b = &mut arena[off..off + RECORD_HEADER];
        b[0..4].copy_from_slice(&self.state.to_le_bytes());
        b[4..8].copy_from_slice(&self.descriptor.to_le_bytes());
        b[8..12].copy_from_slice(&self.scope_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.meta_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.body_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.verified_epoch.to_le_bytes());
        b[24..32].copy_from_slice(&self.next.to_le_bytes());
        b[32..40].copy_from_slice(&self.stamp.to_le_bytes());
        b[40..48].copy_from_slice(&self.validated_clock.to_le_bytes());
        b[48..56].copy_from_slice(&self.checksum.to_le_bytes());
        b[56..64].copy_from_slice(&self.key_tag.to_le_bytes());
    }

    pub fn payload_len(&self) -> u64 {
        self.scope_len as u64 + self.meta_len as u64 + self.body_len as u64
    }

    pub fn total_len(&self) -> u64 {
        align8(RECORD_HEADER as u64 + self.payload_len())
    }
}

/// A record to append.
pub struct NewRecord<'a> {
    pub key: &'a [u8; 32],
    pub descriptor: u32,
    pub stamp: u64,
    pub epoch: u32,
    pub scope: &'a [u8],
    pub meta: &'a [u8],
    pub body: &'a [u8],
}

pub fn record_len(scope: usize, meta: usize, body: usize) -> u64 {
    align8((RECORD_HEADER + scope + meta + body) as u64)
}

pub fn checksum(parts: [&[u8]; 3]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(p);
    }
    h.digest()
}

/// A locked shard.
pub struct Shard<'a> {
    pub hdr: &'a ShardHeader,
    pub leases: &'a mut [LeaseSlot],
    pub index: &'a mut [IndexSlot],
    pub arena: &'a mut [u8],
}

impl Shard<'_> {
    pub fn count(&self, c: ShardCounter) {
        self.hdr.counters[c as usize].fetch_add(1, Relaxed);
    }

    /// Forgets every record and lease: used when the shard is damaged or its lock owner died.
    pub fn reset(&mut self) {
        self.index.fill(IndexSlot::default());
        // A half-written lease is possible after an owner's death: forget them all (waiters
        // then fill themselves, an extra fetch at worst).
        self.leases.fill(LeaseSlot::default());
        for f in [
            &self.hdr.head,
            &self.hdr.tail,
            &self.hdr.ring_bytes,
            &self.hdr.keys,
        ] {
            f.store(0, Relaxed);
        }
        self.hdr.alternates.store(0, Relaxed);
        self.hdr.live_bytes.store(0, Relaxed);
    }

    /// Keys allowed before new keys evict: linear probing stays short below 7/8 load.
    pub fn max_keys(&self) -> u64 {
        self.index.len() as u64 * 7 / 8
    }

    fn home(&self, tag: u64) -> usize {
        (tag % self.index.len() as u64) as usize
    }

    pub fn find(&self, key: &[u8; 32]) -> Option<usize> {
        let n = self.index.len();
        let mut i = self.home(key_tag(key));
        for _ in 0..n {
            let s = &self.index[i];
            if s.head == 0 {
                return None;
            }
            if s.key == *key {
                return Some(i);
            }
            i = (i + 1) % n;
        }
        None
    }

    fn insert_slot(&mut self, key: &[u8; 32]) -> Option<usize> {
        let n = self.index.len();
        let mut i = self.home(key_tag(key));
        for _ in 0..n {
            if self.index[i].head == 0 {
                // The caller links a record (head != 0) before anything else reads the slot.
                self.index[i] = IndexSlot {
                    key: *key,
                    head: u64::MAX,
                    alternates: 0,
                    _pad: 0,
                };
                self.hdr.keys.fetch_add(1, Relaxed);
                return Some(i);
            }
            i = (i + 1) % n;
        }
        None
    }

    /// Removes slot `pos`, shifting later members of its probe run back (no tombstones).
    fn remove_slot(&mut self, pos: usize) {
        let n = self.index.len();
        let mut hole = pos;
        self.index[hole] = IndexSlot::default();
        let mut j = pos;
        for _ in 0..n {
            j = (j + 1) % n;
            if self.index[j].head == 0 {
                break;
            }
            let k = self.home(key_tag(&self.index[j].key));
            // Leave j alone if its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < k && k <= j
            } else {
                hole < k || k <= j
            };
            if !stays {
                self.index[hole] = self.index[j];
                self.index[j] = IndexSlot::default();
                hole = j;
            }
        }
        self.hdr.keys.fetch_sub(1, Relaxed);
    }

    pub fn header(&self, off: u64) -> Result<RecordHeader, Corrupt> {
        RecordHeader::read(self.arena, off).ok_or(Corrupt)
    }

    pub fn set_header(&mut self, off: u64, h: &RecordHeader) {
        h.write(self.arena, off);
    }

    /// The payload (scope, meta, body) of a record already read.
    pub fn payload(&self, off: u64, h: &RecordHeader) -> (&[u8], &[u8], &[u8]) {
        let start = off as usize + RECORD_HEADER;
        let s = h.scope_len as usize;
        let m = h.meta_len as usize;
        let b = h.body_len as usize;
        (
            &self.arena[start..start + s],
            &self.arena[start + s..start + s + m],
            &self.arena[start + s + m..start + s + m + b],
        )
    }

    /// Gives the live record at `off` a new stamp and, if given, new metadata of the same
    /// length, with its checksum and verification epoch; its lookup memo is cleared.
    pub fn restamp(
        &mut self,
        off: u64,
        stamp: u64,
        meta: Option<&[u8]>,
        epoch: u32,
    ) -> Result<(), Corrupt> {
        let mut h = self.header(off)?;
        if let Some(m) = meta {
            if m.len() != h.meta_len as usize {
                return Err(Corrupt);
            }
            let start = off as usize + RECORD_HEADER + h.scope_len as usize;
            self.arena[start..start + m.len()].copy_from_slice(m);
        }
        let (scope, meta, body) = self.payload(off, &h);
        h.checksum = checksum([scope, meta, body]);
        h.stamp = stamp;
        h.validated_clock = 0;
        h.verified_epoch = epoch;
        self.set_header(off, &h);
        Ok(())
    }

    /// Offsets of the key's alternates, newest first.
    pub fn chain(&self, pos: usize) -> Result<Vec<u64>, Corrupt> {
        let mut out = Vec::new();
        let mut next = self.index[pos].head;
        while next != 0 {
            if out.len() == MAX_CHAIN {
                return Err(Corrupt);
            }
            let off = next - 1;
            let h = self.header(off)?;
            if h.state != STATE_LIVE {
                return Err(Corrupt);
            }
            out.push(off);
            next = h.next;
        }
        Ok(out)
    }

    /// Unlinks the live record at `off` from its key's chain and marks it dead. Drops the key
    /// from the index when it was the last alternate.
    pub fn kill(&mut self, off: u64) -> Result<(), Corrupt> {
        let h = self.header(off)?;
        let n = self.index.len();
        let mut i = self.home(h.key_tag);
        for _ in 0..n {
            if self.index[i].head == 0 {
                break;
            }
            if key_tag(&self.index[i].key) == h.key_tag {
                let chain = self.chain(i)?;
                if let Some(at) = chain.iter().position(|&o| o == off) {
                    if at == 0 {
                        self.index[i].head = h.next;
                    } else {
                        let prev = chain[at - 1];
                        let mut ph = self.header(prev)?;
                        ph.next = h.next;
                        self.set_header(prev, &ph);
                    }
                    self.index[i].alternates = self.index[i].alternates.saturating_sub(1);
                    let mut dead = h;
                    dead.state = STATE_DEAD;
                    self.set_header(off, &dead);
                    self.hdr.alternates.fetch_sub(1, Relaxed);
                    self.hdr.live_bytes.fetch_sub(h.total_len(), Relaxed);
                    if self.index[i].head == 0 {
                        self.remove_slot(i);
                    }
                    return Ok(());
                }
            }
            i = (i + 1) % n;
        }
        // A live record no key points to: the shard is inconsistent.
        Err(Corrupt)
    }

    /// Removes a key with all its alternates; returns how many records went.
    pub fn remove_key(&mut self, key: &[u8; 32]) -> Result<u64, Corrupt> {
        let Some(pos) = self.find(key) else {
            return Ok(0);
        };
        let chain = self.chain(pos)?;
        for &off in &chain {
            let mut h = self.header(off)?;
            h.state = STATE_DEAD;
            self.set_header(off, &h);
            self.hdr.alternates.fetch_sub(1, Relaxed);
            self.hdr.live_bytes.fetch_sub(h.total_len(), Relaxed);
        }
        self.remove_slot(pos);
        Ok(chain.len() as u64)
    }

    /// Frees the oldest thing in the ring (FIFO eviction).
    fn evict_tail(&mut self) -> Result<(), Corrupt> {
        let a = self.arena.len() as u64;
        let mut tail = self.hdr.tail.load(Relaxed);
        if tail >= a {
            tail = 0;
        }
        let state = self
            .arena
            .get(tail as usize..tail as usize + 4)
            .map(|b| u32_at(b, 0));
        let len = match state {
            Some(STATE_PAD) => a - tail,
            Some(STATE_DEAD) => self.header(tail)?.total_len(),
            Some(STATE_LIVE) => {
                let len = self.header(tail)?.total_len();
                self.kill(tail)?;
                self.count(ShardCounter::Evictions);
                len
            }
            _ => return Err(Corrupt),
        };
        let ring = self
            .hdr
            .ring_bytes
            .load(Relaxed)
            .checked_sub(len)
            .ok_or(Corrupt)?;
        self.hdr.ring_bytes.store(ring, Relaxed);
        let t = tail + len;
        self.hdr.tail.store(if t >= a { 0 } else { t }, Relaxed);
        Ok(())
    }

    /// Reserves `len` bytes at the head, evicting from the tail as needed.
    fn allocate(&mut self, len: u64) -> Result<u64, Corrupt> {
        let a = self.arena.len() as u64;
        debug_assert!(len <= a && len % 8 == 0);
        // Each pass either allocates, wraps once, or frees at least one record.
        let bound = a / RECORD_HEADER as u64 + 4;
        for _ in 0..bound {
            let ring = self.hdr.ring_bytes.load(Relaxed);
            if ring == 0 {
                self.hdr.head.store(0, Relaxed);
                self.hdr.tail.store(0, Relaxed);
            }
            let head = self.hdr.head.load(Relaxed);
            let tail = self.hdr.tail.load(Relaxed);
            // A damaged header (found by fuzz/src/bin/segment.rs): offsets past the arena
            // would underflow below and index out of it.
            if head > a || tail > a || ring > a {
                return Err(Corrupt);
            }
            if ring == 0 || head > tail {
                if a - head >= len {
                    self.hdr.head.store(head + len, Relaxed);
                    self.hdr.ring_bytes.store(ring + len, Relaxed);
                    return Ok(head);
                }
                if head < a {
                    self.arena[head as usize..head as usize + 4]
                        .copy_from_slice(&STATE_PAD.to_le_bytes());
                    self.hdr.ring_bytes.store(ring + (a - head), Relaxed);
                }
                self.hdr.head.store(0, Relaxed);
            } else if head < tail && tail - head >= len {
                self.hdr.head.store(head + len, Relaxed);
                self.hdr.ring_bytes.store(ring + len, Relaxed);
                return Ok(head);
            } else {
                self.evict_tail()?;
            }
        }
        Err(Corrupt)
    }

    /// Appends a record and links it as the newest alternate of its key, replacing an older
    /// alternate with the same descriptor and evicting the key's oldest one beyond
    /// `max_alternates`.
    pub fn insert(&mut self, rec: &NewRecord, max_alternates: u32) -> Result<u64, Corrupt> {
        if self.find(rec.key).is_none() {
            // Evictions only free slots, so making room first keeps the new key's slot stable.
            while self.hdr.keys.load(Relaxed) >= self.max_keys() {
                if self.hdr.ring_bytes.load(Relaxed) == 0 {
                    return Err(Corrupt);
                }
                self.evict_tail()?;
            }
        }
        let len = record_len(rec.scope.len(), rec.meta.len(), rec.body.len());
        let off = self.allocate(len)?;
        let h = RecordHeader {
            state: STATE_LIVE,
            descriptor: rec.descriptor,
            scope_len: rec.scope.len() as u32,
            meta_len: rec.meta.len() as u32,
            body_len: rec.body.len() as u32,
            verified_epoch: rec.epoch,
            next: 0,
            stamp: rec.stamp,
            validated_clock: 0,
            checksum: checksum([rec.scope, rec.meta, rec.body]),
            key_tag: key_tag(rec.key),
        };
        let start = off as usize + RECORD_HEADER;
        let mut p = start;
        for part in [rec.scope, rec.meta, rec.body] {
            self.arena[p..p + part.len()].copy_from_slice(part);
            p += part.len();
        }
        self.arena[p..off as usize + len as usize].fill(0);
        // Not yet linked: written as dead so an eviction passing it before linking is harmless.
        self.set_header(
            off,
            &RecordHeader {
                state: STATE_DEAD,
                ..h
            },
        );

        // The allocation may have evicted this key's records or its slot, and each kill may
        // move or drop the slot: look the key up afresh every time. A slot is only created
        // when the record is linked (an unlinked slot would read as empty).
        if let Some(pos) = self.find(rec.key) {
            for old in self.chain(pos)? {
                if self.header(old)?.descriptor == rec.descriptor {
                    self.kill(old)?;
                    self.count(ShardCounter::Replaced);
                }
            }
        }
        if let Some(pos) = self.find(rec.key) {
            if self.index[pos].alternates >= max_alternates {
                if let Some(&oldest) = self.chain(pos)?.last() {
                    self.kill(oldest)?;
                    self.count(ShardCounter::Evictions);
                }
            }
        }
        let (pos, next) = match self.find(rec.key) {
            Some(p) => (p, self.index[p].head),
            None => (self.insert_slot(rec.key).ok_or(Corrupt)?, 0),
        };
        self.set_header(off, &RecordHeader { next, ..h });
        self.index[pos].head = off + 1;
        self.index[pos].alternates += 1;
        self.hdr.alternates.fetch_add(1, Relaxed);
        self.hdr.live_bytes.fetch_add(len, Relaxed);
        Ok(off)
    }
}
