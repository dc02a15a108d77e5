//! Opening a segment where its space cannot be had: an error naming the size and the reason,
//! never a SIGBUS at the first page the filesystem cannot back, and the file left as it was.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ngx_http_pagespeed_module::store::{Backing, Opened, Store, StoreConfig, StoreError};

fn tmpfile(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("psv-space-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn open(path: &Path, size: u64) -> Result<Store, StoreError> {
    Store::open(&StoreConfig {
        backing: Backing::File(path.to_path_buf()),
        size,
        max_object: 0,
    })
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

const CHILD: &str = "PSV_SPACE_CHILD_PATH";

/// A child forked by one test inherits, until it execs, the descriptors (and flocks) of the
/// files other tests hold open: run these tests one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs in a re-executed copy of this test binary under a 1 MiB file size limit (set by the
/// parent between fork and exec): an 8 MiB segment cannot be reserved there.
#[test]
fn child_opens_under_a_file_size_limit() {
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    match open(Path::new(&path), 8 << 20) {
        Err(StoreError::Reserve { size, why, .. }) => {
            assert_eq!(size, 8 << 20);
            assert!(why.contains("file size limit"), "{why}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("an 8 MiB segment opened under a 1 MiB file size limit"),
    }
}

#[test]
fn a_segment_that_cannot_be_reserved_is_refused_and_the_file_left_alone() {
    let _serial = serial();
    let new = tmpfile("new");
    let status = child_under_limit(&new);
    assert!(status.success(), "child: {status:?}");
    assert!(
        !new.exists(),
        "a file created for the failed open is removed"
    );

    // An existing (smaller, valid) cache file keeps its length when a larger size is refused.
    let old = tmpfile("old");
    drop(open(&old, 1 << 20).unwrap());
    let before = std::fs::read(&old).unwrap();
    let status = child_under_limit(&old);
    assert!(status.success(), "child: {status:?}");
    assert_eq!(
        std::fs::read(&old).unwrap(),
        before,
        "the old file is untouched"
    );
    std::fs::remove_file(&old).unwrap();
}

fn child_under_limit(path: &Path) -> std::process::ExitStatus {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_opens_under_a_file_size_limit",
        "--test-threads=1",
    ])
    .env(CHILD, path)
    .stdout(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls (setrlimit, signal).
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            // Crossing the limit must be reported as EFBIG, not kill the child.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        })
    };
    cmd.status().unwrap()
}

#[test]
fn every_page_of_a_new_or_sparse_file_is_reserved() {
    let _serial = serial();
    let p = tmpfile("sparse");
    drop(open(&p, 4 << 20).unwrap());
    assert!(allocated(&p) >= 4 << 20, "a new file is fully allocated");
    // A sparse file of the right length (a copy made with holes, an old version's file).
    std::fs::remove_file(&p).unwrap();
    std::fs::File::create(&p).unwrap().set_len(4 << 20).unwrap();
    assert!(allocated(&p) < 1 << 20);
    let s = open(&p, 4 << 20).unwrap();
    assert!(matches!(s.opened(), Opened::Reinitialized(_)));
    assert!(
        allocated(&p) >= 4 << 20,
        "holes are allocated before the header is written"
    );
    drop(s);
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn a_file_shorter_than_its_header_says_is_reinitialized_as_damaged() {
    let _serial = serial();
    let p = tmpfile("short");
    let clock = {
        let s = open(&p, 4 << 20).unwrap();
        s.flush_all(false).unwrap();
        s.stats().purge_clock
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let s = open(&p, 4 << 20).unwrap();
    assert!(
        matches!(s.opened(), Opened::Reinitialized(r) if r.contains("shorter")),
        "{:?}",
        s.opened()
    );
    assert_eq!(s.stats().purge_clock, clock, "the clock survives");
    assert!(allocated(&p) >= 4 << 20);
    drop(s);
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn anonymous_memory_beyond_the_machine_is_refused() {
    let _serial = serial();
    let r = Store::open(&StoreConfig {
        backing: Backing::Anonymous,
        size: 1 << 40,
        max_object: 0,
    });
    match r {
        Err(StoreError::Reserve { what, why, .. }) => {
            assert_eq!(what, "anonymous memory");
            assert!(why.contains("memory"), "{why}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a 1 TiB anonymous segment was reserved"),
    }
}
