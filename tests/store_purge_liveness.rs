//! A purge that wrote its buckets but never published its clock — a URL purge whose delete
//! timed out, or a purger killed mid-purge — must not leave the scopes it touched unfillable.

use std::time::Duration;

use ngx_http_pagespeed_module::store::{
    Alternate, Backing, CommitOutcome, FillTicket, Key, Store, StoreConfig, UrlId,
};

fn url(p: &str) -> UrlId<'_> {
    UrlId {
        scheme: "https",
        host: "example.com",
        path: p,
    }
}

fn key(p: &str) -> Key {
    Key::derive(&[b"https", b"example.com", p.as_bytes()])
}

fn put(s: &Store, t: FillTicket, p: &str) -> CommitOutcome {
    let scopes = s.buckets().scopes_for(&url(p), &[]);
    s.commit(
        t,
        &key(p),
        &Alternate {
            descriptor: 0,
            scopes: &scopes,
            meta: b"m",
            body: b"body",
        },
    )
}

/// Forks a child that holds `k`'s shard lock for 3 s; returns once it holds it.
fn hold(s: &Store, k: &Key) -> libc::pid_t {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only takes the lock, writes a byte and sleeps, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let _ = s.hold_shard_lock_for_test(k, || {
            // SAFETY: writing one byte to our pipe.
            unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) };
            std::thread::sleep(Duration::from_secs(3));
        });
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte from our pipe (blocks until the child holds the lock).
    unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
    pid
}

fn kill(pid: libc::pid_t) {
    // SAFETY: our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

#[test]
fn a_url_purge_whose_delete_times_out_still_publishes_and_the_url_fills_again() {
    let s = Store::open(&StoreConfig {
        backing: Backing::Anonymous,
        size: 4 << 20,
        max_object: 0,
    })
    .unwrap();
    let before = s.begin_fill();
    let holder = hold(&s, &key("/a"));
    let r = s
        .purge_url(&[url("/a")], &[], &[key("/a")], false)
        .expect("published anyway");
    kill(holder);
    assert_eq!(r.deleted, 0, "the busy shard was not touched");
    assert_eq!(
        put(&s, before, "/a"),
        CommitOutcome::Fenced,
        "an older fill is still fenced"
    );
    assert_eq!(
        put(&s, s.begin_fill(), "/a"),
        CommitOutcome::Stored,
        "a new fill is stored"
    );
}

#[test]
fn a_purger_killed_mid_flush_does_not_fence_fills_for_good() {
    let path = std::env::temp_dir().join(format!("psv-liveness-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let cfg = StoreConfig {
        backing: Backing::File(path.clone()),
        size: 4 << 20,
        max_object: 0,
    };
    let s = Store::open(&cfg).unwrap();
    let holder = hold(&s, &key("/a"));
    // SAFETY: the child runs a flush (which waits on the held shard) and is killed in it.
    let purger = unsafe { libc::fork() };
    if purger == 0 {
        let _ = s.flush_all(false);
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(0) };
    }
    std::thread::sleep(Duration::from_millis(300));
    kill(purger);
    kill(holder);
    // The fill that started before anyone noticed may be fenced; the next one must not be.
    let _ = put(&s, s.begin_fill(), "/x");
    assert_eq!(put(&s, s.begin_fill(), "/x"), CommitOutcome::Stored);
    assert!(s.stats().purge_clock >= 1, "the dead purge was published");
    drop(s);
    let s = Store::open(&cfg).unwrap();
    assert_eq!(
        put(&s, s.begin_fill(), "/y"),
        CommitOutcome::Stored,
        "and after a reopen"
    );
    std::fs::remove_file(&path).unwrap();
}
