//! A process-shared, robust pthread mutex that lives inside the shared segment.
//!
//! `std` and `parking_lot` locks park waiters in per-process tables, so they cannot guard memory
//! shared by forked nginx workers. A `PTHREAD_PROCESS_SHARED | PTHREAD_MUTEX_ROBUST` mutex can:
//! when its owner dies (SIGKILL at any instruction), the kernel hands the next locker
//! `EOWNERDEAD`, and we report that so the caller repairs what the dead owner guarded.

use std::cell::UnsafeCell;
use std::time::Duration;

/// How long a locker waits before treating the cache as unavailable (a miss). Critical
/// sections last microseconds; only a stopped (SIGSTOP) or wedged owner makes this expire.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(1);

#[repr(C, align(64))]
pub struct RobustMutex {
    raw: UnsafeCell<libc::pthread_mutex_t>,
}

const _: () = assert!(std::mem::size_of::<RobustMutex>() == 64);

// SAFETY: the mutex is designed for concurrent use from many threads and processes; all access
// goes through pthread calls.
unsafe impl Sync for RobustMutex {}

/// What a successful lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Normal acquisition.
    Clean,
    /// The previous owner died holding the lock: the guarded data may be half-written.
    OwnerDied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("lock wait timed out")]
    Timeout,
    #[error("lock failed with errno {0}")]
    Os(i32),
}

impl RobustMutex {
    /// (Re)initializes the mutex in place.
    ///
    /// # Safety
    /// No process may be using the mutex: call only while initializing a segment nobody else
    /// has mapped, or while holding the file's exclusive open lock.
    pub unsafe fn init(&self) -> Result<(), LockError> {
        // SAFETY: attr is a local initialized by pthread_mutexattr_init before use; the mutex
        // memory is valid (part of a live mapping) and unused by the caller's contract.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            let rc = libc::pthread_mutexattr_init(&mut attr);
            if rc != 0 {
                return Err(LockError::Os(rc));
            }
            let mut rc =
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            if rc == 0 {
                rc = libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if rc == 0 {
                std::ptr::write_bytes(self.raw.get(), 0, 1);
                rc = libc::pthread_mutex_init(self.raw.get(), &attr);
            }
            libc::pthread_mutexattr_destroy(&mut attr);
            if rc == 0 {
                Ok(())
            } else {
                Err(LockError::Os(rc))
            }
        }
    }

    /// Locks, waiting at most `LOCK_TIMEOUT`. On `OwnerDied` the mutex has already been made
    /// consistent again; the caller must repair the guarded data before unlocking.
    pub fn lock(&self) -> Result<Acquired, LockError> {
        // Fast path: uncontended.
        // SAFETY: the mutex was initialized by `init` in this segment.
        let rc = unsafe { libc::pthread_mutex_trylock(self.raw.get()) };
        let rc = if rc == libc::EBUSY {
            let deadline = realtime_deadline(LOCK_TIMEOUT);
            // SAFETY: as above; deadline is a valid timespec.
            unsafe { libc::pthread_mutex_timedlock(self.raw.get(), &deadline) }
        } else {
            rc
        };
        match rc {
            0 => Ok(Acquired::Clean),
            libc::EOWNERDEAD => {
                // SAFETY: we own the mutex now (EOWNERDEAD grants ownership).
                unsafe { libc::pthread_mutex_consistent(self.raw.get()) };
                Ok(Acquired::OwnerDied)
            }
            libc::ETIMEDOUT => Err(LockError::Timeout),
            other => Err(LockError::Os(other)),
        }
    }

    /// Locks only if free right now: `Ok(None)` when another holder has it.
    pub fn try_lock(&self) -> Result<Option<Acquired>, LockError> {
        // SAFETY: the mutex was initialized by `init` in this segment.
        match unsafe { libc::pthread_mutex_trylock(self.raw.get()) } {
            0 => Ok(Some(Acquired::Clean)),
            libc::EBUSY => Ok(None),
            libc::EOWNERDEAD => {
                // SAFETY: EOWNERDEAD grants ownership.
                unsafe { libc::pthread_mutex_consistent(self.raw.get()) };
                Ok(Some(Acquired::OwnerDied))
            }
            other => Err(LockError::Os(other)),
        }
    }

    /// Unlocks a mutex this thread holds.
    pub fn unlock(&self) {
        // SAFETY: only called by guards that hold the lock.
        unsafe { libc::pthread_mutex_unlock(self.raw.get()) };
    }
}

fn realtime_deadline(after: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: now is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let mut sec = now.tv_sec + after.as_secs() as libc::time_t;
    let mut nsec = now.tv_nsec + after.subsec_nanos() as libc::c_long;
    if nsec >= 1_000_000_000 {
        sec += 1;
        nsec -= 1_000_000_000;
    }
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}
