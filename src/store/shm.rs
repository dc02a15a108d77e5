//! The mapping itself: open or create the backing file (or a memfd), check its header,
//! initialize it, and hand out typed views. Every raw-pointer cast of the store lives here.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use super::layout::{
    IndexSlot, Layout, LeaseSlot, SegmentHeader, ShardHeader, Table, FORMAT_VERSION,
    LEASES_PER_SHARD, MAGIC,
};
use super::StoreError;

/// A mapped, initialized segment. The mapping is `MAP_SHARED` (memmap2's `map_mut` on a file),
/// so forked workers and later reopenings see the same pages.
pub struct Segment {
    map: MmapMut,
    // Kept open: it carries the shared flock that tells later openers the file is in use.
    _file: File,
    pub layout: Layout,
}

/// How `Segment::open` found the backing store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A new file or memfd, initialized empty.
    Created,
    /// An existing compatible file: entries and purge history kept.
    Reopened,
    /// An existing file already in use by another process (another nginx, `nginx -t`): attached
    /// as is, nothing reinitialized.
    Attached,
    /// An existing file that could not be used as is; reinitialized empty for this reason.
    Reinitialized(String),
}

impl Segment {
    /// Opens (or creates) a file-backed segment of `size` bytes.
    pub fn open_file(
        path: &Path,
        size: u64,
        max_object: u64,
    ) -> Result<(Segment, Opened), StoreError> {
        let layout = Layout::for_object_size(size, max_object).ok_or(StoreError::BadSize(size))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Io {
                op: "open",
                what: path.display().to_string(),
                source,
            })?;
        let exclusive = flock(&file, libc::LOCK_EX | libc::LOCK_NB);
        let old_len = file
            .metadata()
            .map_err(|source| StoreError::Io {
                op: "stat",
                what: path.display().to_string(),
                source,
            })?
            .len();
        if !exclusive {
            // Someone else (a running nginx) owns the file: never reinitialize under it.
            if old_len != layout.total_size {
                return Err(StoreError::InUse {
                    path: path.display().to_string(),
                    size: old_len,
                });
            }
            let seg = Segment::map(file, layout)?;
            seg.check_header()
                .map_err(|reason| StoreError::InUseDamaged {
                    path: path.display().to_string(),
                    reason,
                })?;
            flock(&seg._file, libc::LOCK_SH);
            return Ok((seg, Opened::Attached));
        }
        let reason = if old_len == 0 {
            None
        } else if old_len < layout.total_size && peek_total_size(&file) == Some(layout.total_size) {
            Some(format!(
                "the file is shorter ({old_len} bytes) than its header says ({})",
                layout.total_size
            ))
        } else if old_len != layout.total_size {
            Some(format!(
                "size changed from {old_len} to {} bytes",
                layout.total_size
            ))
        } else {
            Some(String::new())
        };
        // Every page is reserved before any is touched (also in a file of the right length,
        // which may be sparse); a failure leaves the file as it was.
        if let Err(why) = reserve(&file, layout.total_size) {
            if old_len == 0 {
                let _ = std::fs::remove_file(path);
            } else {
                let _ = file.set_len(old_len);
            }
            return Err(StoreError::Reserve {
                what: path.display().to_string(),
                size: layout.total_size,
                why,
            });
        }
        if old_len != layout.total_size {
            file.set_len(layout.total_size)
                .map_err(|source| StoreError::Io {
                    op: "resize",
                    what: path.display().to_string(),
                    source,
                })?;
        }
        let seg = Segment::map(file, layout)?;
        // Generations only grow, even through a reinitialization: keep the old clock when the
        // header still says what it was, else start above any counter it can have reached.
        let floor = || {
            seg.readable_clock()
                .filter(|&c| c <= MAX_CLOCK)
                .unwrap_or_else(wall_clock_floor)
        };
        let opened = match reason {
            None => {
                seg.initialize(0)?;
                Opened::Created
            }
            Some(r) if !r.is_empty() => {
                seg.initialize(floor())?;
                Opened::Reinitialized(r)
            }
            Some(_) => match seg.check_header() {
                Ok(()) => {
                    seg.reopen()?;
                    Opened::Reopened
                }
                Err(r) => {
                    seg.initialize(floor())?;
                    Opened::Reinitialized(r)
                }
            },
        };
        // Downgrade: other openers now see the file as in use and attach without touching it.
        flock(&seg._file, libc::LOCK_SH);
        Ok((seg, opened))
    }

    /// Creates an anonymous shared segment (memfd): shared by forked children, gone on exit.
    pub fn open_anonymous(size: u64, max_object: u64) -> Result<Segment, StoreError> {
        let layout = Layout::for_object_size(size, max_object).ok_or(StoreError::BadSize(size))?;
        // SAFETY: the name is a valid NUL-terminated string; the returned fd is checked.
        let fd = unsafe { libc::memfd_create(c"ngx_pagespeed_cache".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(StoreError::Io {
                op: "create",
                what: "anonymous memory (memfd_create)".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: fd is a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(fd) };
        // A memfd has no size limit of its own: reserving more than the machine has would
        // allocate page by page until the OOM killer steps in, so refuse that first.
        let memory = physical_memory();
        let reserved = if layout.total_size > memory {
            Err(format!("more than this machine's memory ({memory} bytes)"))
        } else {
            reserve(&file, layout.total_size)
        };
        reserved.map_err(|why| StoreError::Reserve {
            what: "anonymous memory".into(),
            size: layout.total_size,
            why,
        })?;
        let seg = Segment::map(file, layout)?;
        seg.initialize(0)?;
        Ok(seg)
    }

    fn map(file: File, layout: Layout) -> Result<Segment, StoreError> {
        // SAFETY: the file is ours and sized to total_size; concurrent modification by other
        // processes is the point of the mapping, and we only access it through atomics or
        // under the shard locks.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(|source| StoreError::Io {
            op: "map",
            what: "the cache".into(),
            source,
        })?;
        if (map.len() as u64) < layout.total_size {
            return Err(StoreError::Io {
                op: "map",
                what: "the whole cache".into(),
                source: std::io::Error::other("the mapping is shorter than the segment"),
            });
        }
        Ok(Segment {
            map,
            _file: file,
            layout,
        })
    }

    /// The purge clock of an existing file whose header is at least of our format (its
    /// geometry may differ: the clock sits at the same offset in every layout of a version).
    fn readable_clock(&self) -> Option<u64> {
        let h = self.header();
        (h.magic == MAGIC && h.version == FORMAT_VERSION)
            .then(|| h.purge_clock.load(Ordering::Acquire))
    }

    /// Writes a fresh header, zero tables, empty shards with new locks; the purge clock
    /// starts at `clock`.
    fn initialize(&self, clock: u64) -> Result<(), StoreError> {
        // SAFETY: exclusive access (new file, memfd, or exclusive flock held); the whole
        // mapping is writable memory of total_size bytes.
        unsafe {
            std::ptr::write_bytes(
                self.map.as_ptr() as *mut u8,
                0,
                self.layout.total_size as usize,
            )
        };
        let l = &self.layout;
        // SAFETY: exclusive access as above; the header is at offset 0, page aligned.
        let h = unsafe { &mut *(self.map.as_ptr() as *mut SegmentHeader) };
        h.magic = MAGIC;
        h.version = FORMAT_VERSION;
        h.shard_count = l.shard_count;
        h.total_size = l.total_size;
        h.url_slots = l.url_slots;
        h.prefix_slots = l.prefix_slots;
        h.tag_slots = l.tag_slots;
        h.index_slots = l.index_slots;
        h.shard_bytes = l.shard_bytes;
        h.shards_offset = l.shards_offset;
        h.open_epoch.store(1, Ordering::Relaxed);
        h.purge_clock.store(clock, Ordering::Release);
        self.init_locks()?;
        // Written last: a crash during initialization leaves a header that fails the check.
        h.layout_check = l.check_value();
        Ok(())
    }

    /// Keeps entries and purge history; renews every lock (no other process has the file) and
    /// starts a new verification epoch so every record's checksum is checked again.
    fn reopen(&self) -> Result<(), StoreError> {
        self.init_locks()?;
        self.header().open_epoch.fetch_add(1, Ordering::AcqRel);
        // A node that was down has not confirmed it is caught up with the fleet's stream:
        // it self-fences until its applier has (the applied id itself is kept).
        self.header().fleet_confirmed_ms.store(0, Ordering::Release);
        // No fill of an earlier open is in flight any more, and lease deadlines are on a
        // clock that restarts with the machine.
        for s in 0..self.layout.shard_count {
            // SAFETY: exclusive access (the exclusive flock is held); no lock is needed.
            let (leases, _, _) = unsafe { self.shard_body(s) };
            leases.fill(LeaseSlot::default());
        }
        Ok(())
    }

    fn init_locks(&self) -> Result<(), StoreError> {
        let lock_err = |e| match e {
            super::lock::LockError::Os(n) => StoreError::Lock(n),
            super::lock::LockError::Timeout => StoreError::Lock(libc::ETIMEDOUT),
        };
        // SAFETY: called only with exclusive access to the file (see initialize/reopen).
        unsafe { self.header().purge_lock.init() }.map_err(lock_err)?;
        for s in 0..self.layout.shard_count {
            // SAFETY: as above.
            unsafe { self.shard_header(s).lock.init() }.map_err(lock_err)?;
        }
        Ok(())
    }

    fn check_header(&self) -> Result<(), String> {
        let h = self.header();
        let l = &self.layout;
        if h.magic != MAGIC {
            return Err("not a cache file (bad magic)".into());
        }
        if h.version != FORMAT_VERSION {
            return Err(format!(
                "format version {} (expected {FORMAT_VERSION})",
                h.version
            ));
        }
        let same = h.shard_count == l.shard_count
            && h.total_size == l.total_size
            && h.url_slots == l.url_slots
            && h.prefix_slots == l.prefix_slots
            && h.tag_slots == l.tag_slots
            && h.index_slots == l.index_slots
            && h.shard_bytes == l.shard_bytes
            && h.shards_offset == l.shards_offset;
        if !same || h.layout_check != l.check_value() {
            return Err("layout mismatch or corrupt header".into());
        }
        // Purges are serialized and publish the clock after their table writes, so no stamp
        // exceeds the clock by more than one (a purger that died before publishing, which
        // `repair_unpublished` completes). A higher one is damage that would fence every fill
        // of its scope for good: found by fuzz/src/bin/segment.rs.
        let clock = h.purge_clock.load(Ordering::Acquire);
        if clock > MAX_CLOCK {
            return Err("purge clock out of range".into());
        }
        let top = clock + 1;
        let tables = [
            Table::UrlHard,
            Table::UrlSoft,
            Table::PrefixHard,
            Table::PrefixSoft,
            Table::TagHard,
            Table::TagSoft,
        ];
        if h.flush_hard.load(Ordering::Relaxed) > top
            || h.flush_soft.load(Ordering::Relaxed) > top
            || tables.iter().any(|&t| {
                self.table(t)
                    .iter()
                    .any(|b| b.load(Ordering::Relaxed) > top)
            })
        {
            return Err("purge stamps above the purge clock".into());
        }
        Ok(())
    }

    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: offset 0 is page aligned, the mapping is at least HEADER_BYTES long, and the
        // header's mutable fields are atomics or a pthread mutex (interior mutability).
        unsafe { &*(self.map.as_ptr() as *const SegmentHeader) }
    }

    pub fn table(&self, table: Table) -> &[AtomicU64] {
        let off = self.layout.table_offset(table) as usize;
        let len = self.layout.table_slots(table) as usize;
        // SAFETY: the layout places each table inside the mapping, 8-byte aligned; AtomicU64 has
        // the size and alignment of u64 and every bit pattern is valid.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(off) as *const AtomicU64, len) }
    }

    pub fn shard_header(&self, shard: u32) -> &ShardHeader {
        let off = self.layout.shard_offset(shard) as usize;
        // SAFETY: shards are page aligned inside the mapping; fields are atomics or the mutex.
        unsafe { &*(self.map.as_ptr().add(off) as *const ShardHeader) }
    }

    /// The shard's leases, index and arena as exclusive slices.
    ///
    /// # Safety
    /// The caller must hold the shard's lock for the lifetime of the returned slices and must
    /// not call this twice for the same shard while they live.
    #[allow(clippy::mut_from_ref, clippy::type_complexity)]
    pub unsafe fn shard_body(&self, shard: u32) -> (&mut [LeaseSlot], &mut [IndexSlot], &mut [u8]) {
        let l = &self.layout;
        let base = l.shard_offset(shard) as usize;
        // SAFETY: leases, index and arena are disjoint ranges inside this shard's region of
        // the mapping; LeaseSlot and IndexSlot are POD (any bytes are a valid value), 8-byte
        // aligned at their offsets; the lock gives exclusive access.
        unsafe {
            let p = self.map.as_ptr() as *mut u8;
            let leases = std::slice::from_raw_parts_mut(
                p.add(base + l.lease_offset_in_shard() as usize) as *mut LeaseSlot,
                LEASES_PER_SHARD as usize,
            );
            let index = std::slice::from_raw_parts_mut(
                p.add(base + l.index_offset_in_shard() as usize) as *mut IndexSlot,
                l.index_slots as usize,
            );
            let arena = std::slice::from_raw_parts_mut(
                p.add(base + l.arena_offset_in_shard() as usize),
                l.arena_bytes() as usize,
            );
            (leases, index, arena)
        }
    }
}

/// Above any clock a segment can reach (a wall-clock floor in microseconds gets here in
/// 146,000 years): a higher one is damage, and `clock + 1` must never overflow.
const MAX_CLOCK: u64 = 1 << 62;

/// Microseconds since the epoch: above any count of purges a lost file can have reached.
fn wall_clock_floor() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1 << 52, |d| d.as_micros() as u64)
}

/// Allocates the file's blocks up to `size` (extending it), so that no page of the mapping can
/// fault for lack of space later. Refuses sizes over the process's file size limit up front:
/// crossing it raises SIGXFSZ, which would kill the nginx master.
fn reserve(file: &File, size: u64) -> Result<(), String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: limit is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY
        && size > limit.rlim_cur
    {
        return Err(format!(
            "over the file size limit ({} bytes)",
            limit.rlim_cur
        ));
    }
    let len = libc::off_t::try_from(size).map_err(|_| "size out of range".to_string())?;
    // SAFETY: a valid open descriptor; posix_fallocate reports errors as its return value.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(os_error_text(errno)),
    }
}

/// "No space left on device", without the " (os error 28)" that io::Error appends.
fn os_error_text(errno: i32) -> String {
    io_error_text(&std::io::Error::from_raw_os_error(errno))
}

/// An io::Error's text for a message a person reads: without " (os error N)".
pub fn io_error_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The segment size recorded in an existing file's header, read without mapping it (a mapping
/// longer than the file would fault past its end).
fn peek_total_size(file: &File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 24];
    file.read_exact_at(&mut b, 0).ok()?;
    let version = u32::from_le_bytes(b[8..12].try_into().ok()?);
    (b[..8] == MAGIC && version == FORMAT_VERSION)
        .then(|| u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")))
}

fn physical_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages.max(0) as u64).saturating_mul(page.max(0) as u64)
}

fn flock(file: &File, op: libc::c_int) -> bool {
    // SAFETY: a valid open descriptor.
    unsafe { libc::flock(file.as_raw_fd(), op) == 0 }
}
