//! What the multi-process store tests share: forked children that never return into the
//! harness (killed and reaped on drop), pipes to step them, a small PRNG, and the stores, URLs
//! and keys under test. Each test file uses its own part (`dead_code` is allowed for that).

#![allow(dead_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ngx_http_pagespeed_module::store::{Backing, Key, Store, StoreConfig, UrlId};

static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
}

/// A forked child; killed and reaped on drop unless already reaped.
pub struct Child {
    pub pid: libc::pid_t,
    reaped: bool,
}

/// Forks a child that runs `f` and exits with its return value (101 on a panic); it never
/// returns into the harness.
pub fn spawn(f: impl FnOnce() -> i32) -> Child {
    // SAFETY: the child only runs `f` (store operations, pipes, files) and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: ends the child without running the harness's destructors or atexit hooks.
        unsafe { libc::_exit(code) };
    }
    Child { pid, reaped: false }
}

pub fn decode_status(status: libc::c_int) -> Exit {
    if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else {
        Exit::Signal(libc::WTERMSIG(status))
    }
}

impl Child {
    /// Waits for the child at most `limit`, then kills it.
    pub fn wait(&mut self, limit: Duration) -> Exit {
        self.wait_until(Instant::now() + limit)
    }

    /// Waits for the child until `deadline`, then kills it.
    pub fn wait_until(&mut self, deadline: Instant) -> Exit {
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid out-pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                return decode_status(status);
            }
            assert!(
                r == 0 || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted,
                "waitpid: {}",
                std::io::Error::last_os_error()
            );
            if Instant::now() >= deadline {
                self.kill();
                return Exit::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) -> Exit {
        if self.reaped {
            return Exit::Signal(0);
        }
        let mut status = 0;
        // SAFETY: signalling and reaping our own, not yet reaped, child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            while libc::waitpid(self.pid, &mut status, 0) < 0 {
                assert_eq!(
                    std::io::Error::last_os_error().kind(),
                    std::io::ErrorKind::Interrupted
                );
            }
        }
        self.reaped = true;
        decode_status(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_all(children: &mut [Child], limit: Duration) -> Vec<Exit> {
    let deadline = Instant::now() + limit;
    children
        .iter_mut()
        .map(|c| c.wait(deadline.saturating_duration_since(Instant::now())))
        .collect()
}

pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

pub fn send_byte(fd: &OwnedFd) {
    // SAFETY: writes one byte from a valid buffer to an open descriptor.
    let n = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    assert_eq!(n, 1, "pipe write: {}", std::io::Error::last_os_error());
}

/// Reads one byte, waiting at most `timeout`.
pub fn recv_byte(fd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis() as libc::c_int) };
        if r > 0 {
            let mut b = [0u8; 1];
            // SAFETY: reads at most one byte into a valid buffer.
            return unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1) } == 1;
        }
        if r == 0 || Instant::now() >= deadline {
            return false;
        }
    }
}

pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Nothing, a yield or a short spin: widens the windows races land in.
    pub fn jitter(&mut self) {
        match self.below(4) {
            0 => {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            1 => (0..self.below(3000)).for_each(|_| std::hint::spin_loop()),
            _ => {}
        }
    }
}

pub fn anon(size: u64) -> Store {
    Store::open(&StoreConfig {
        backing: Backing::Anonymous,
        size,
        max_object: 0,
    })
    .unwrap()
}

pub fn url(path: &str) -> UrlId<'_> {
    UrlId {
        scheme: "https",
        host: "example.com",
        path,
    }
}

pub fn key_of(path: &str) -> Key {
    Key::derive(&[b"https", b"example.com", path.as_bytes()])
}

pub fn file_store(path: &Path, size: u64) -> Store {
    Store::open(&StoreConfig {
        backing: Backing::File(path.to_path_buf()),
        size,
        max_object: 0,
    })
    .unwrap()
}
