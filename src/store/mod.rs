//! The shared-memory variant store: alternates under one key, a purge clock with hashed
//! "last purged" tables, fenced commits and validated reads. No nginx types in here.
//!
//! Correctness rests on three rules (see docs/ARCHITECTURE.md):
//! - a purge writes its table buckets, then publishes its clock value, under `purge_lock`;
//! - a commit checks the hard tables against its ticket under the shard lock that a URL purge
//!   also takes to delete the key;
//! - a lookup copies the selected record, verifies its checksum when unverified in this open
//!   epoch, and only then checks its scopes against the tables; any doubt is a miss.

mod commit;
mod fence;
mod fleet;
mod layout;
mod lease;
mod lock;
mod lookup;
mod purge;
mod refresh;
mod scope;
mod shard;
mod shm;
mod stats;

use std::path::PathBuf;

pub use fleet::FleetCounter;
pub use layout::{Layout, MAX_SEGMENT, MIN_SEGMENT, OBJECTS_PER_SHARD};
pub use lease::{monotonic_ms, Lease, LeaseRequest, LeaseToken, Release};
pub use refresh::{Kin, Refresh};
pub use scope::{ancestors, Buckets, ScopeSet, UrlId, MAX_PREFIX_DEPTH, MAX_TAGS};
pub use shm::Opened;
pub use stats::{BuildCounter, FreshnessCounter, Group, Kind, Metric, Stats};

use lock::Acquired;
use shard::{Corrupt, Shard};
use shm::Segment;
use stats::ShardCounter;

/// Alternates kept per key; the oldest goes when a new one would exceed it.
pub const MAX_ALTERNATES: u32 = 64;

/// Why a segment could not be opened; its text is what `nginx -t` prints after the
/// directive's name.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cache size {0} is outside 1 MiB .. 1 TiB, or too small for four objects of max_object"
    )]
    BadSize(u64),
    #[error("cannot {op} {what}: {}", shm::io_error_text(.source))]
    Io {
        op: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot initialize the cache's locks (error {0})")]
    Lock(i32),
    #[error(
        "{path} is open in a running nginx (or another process) with size {size}; changing its \
         size needs a restart"
    )]
    InUse { path: String, size: u64 },
    #[error("{path} is open in a running nginx (or another process) but unusable: {reason}")]
    InUseDamaged { path: String, reason: String },
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

/// Where a found record stands against the purge tables (HTTP freshness, expiry, is a
/// separate question the caller answers from the metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeState {
    /// No purge covering it since it was stored.
    Current,
    /// Covered by a soft purge since it was stored: usable only while revalidating.
    SoftPurged,
}

/// A found alternate; its meta then body bytes were written to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub descriptor: u32,
    pub purge_state: PurgeState,
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
    /// What a lookup would find now: current, soft-purged, or `None` when a hard purge made
    /// it invalid and it waits to be dropped at its next lookup.
    #[serde(skip)]
    pub purge_state: Option<PurgeState>,
}

/// A record against the purge tables: `Current` and `SoftPurged` as in `PurgeState`, or
/// hard-purged (never served, dropped when found).
enum Validity {
    Current,
    SoftPurged,
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
            let most = plain.arena_bytes() * plain.shard_count as u64 / OBJECTS_PER_SHARD;
            return Err(StoreError::MaxObject(cfg.max_object, most));
        }
        let (seg, opened) = match &cfg.backing {
            Backing::File(path) => Segment::open_file(path, cfg.size, cfg.max_object)?,
            Backing::Anonymous => (
                Segment::open_anonymous(cfg.size, cfg.max_object)?,
                Opened::Created,
            ),
        };
        let shard_limit = seg.layout.arena_bytes() / OBJECTS_PER_SHARD;
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
        let (leases, index, arena) = unsafe { self.seg.shard_body(idx) };
        let mut guard = ShardGuard {
            shard: Shard {
                hdr,
                leases,
                index,
                arena,
            },
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

#[cfg(test)]
mod tests_freshness;
