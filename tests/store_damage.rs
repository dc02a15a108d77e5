//! A segment file whose purge stamps lie far above its purge clock (damage: purges are
//! serialized and publish the clock right after their table writes, so a stamp is at most
//! one above it) is reinitialized on open, instead of fencing every later fill of the
//! scopes it covers. Found by fuzz/src/bin/segment.rs (docs/RELIABILITY.md).

use std::path::{Path, PathBuf};

use ngx_http_pagespeed_module::store::{
    Alternate, Backing, Key, Lookup, Opened, Store, StoreConfig, UrlId,
};

fn path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("psv-damage-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn open(p: &Path) -> Store {
    Store::open(&StoreConfig {
        backing: Backing::File(p.to_path_buf()),
        size: 1 << 20,
        max_object: 0,
    })
    .unwrap()
}

fn url(path: &str) -> UrlId<'_> {
    UrlId {
        scheme: "https",
        host: "example.com",
        path,
    }
}

fn key(path: &str) -> Key {
    Key::derive(&[b"https", b"example.com", path.as_bytes()])
}

/// Commits `path` and reads it back.
fn stored(s: &Store, path: &str) -> bool {
    let scopes = s.buckets().scopes_for(&url(path), &[]);
    let t = s.begin_fill();
    let alt = Alternate {
        descriptor: 0,
        scopes: &scopes,
        meta: b"m",
        body: b"body",
    };
    let _ = s.commit(t, &key(path), &alt);
    let mut buf = Vec::new();
    matches!(
        s.lookup(&key(path), |_, _| Some(0), &mut buf),
        Lookup::Hit(_)
    )
}

// Offsets in the segment header (repr(C), docs/ARCHITECTURE.md): purge_clock, flush_hard.
const PURGE_CLOCK: usize = 72;
const FLUSH_HARD: usize = 80;

fn patch(p: &Path, off: usize, v: u64) -> u64 {
    let mut f = std::fs::read(p).unwrap();
    let clock = u64::from_le_bytes(f[PURGE_CLOCK..PURGE_CLOCK + 8].try_into().unwrap());
    f[off..off + 8].copy_from_slice(&v.to_le_bytes());
    std::fs::write(p, f).unwrap();
    clock
}

#[test]
fn stamps_far_above_the_clock_reinitialize_the_segment() {
    let p = path("far");
    {
        let s = open(&p);
        assert!(stored(&s, "/a"));
        s.purge_url(&[url("/b")], &[], &[key("/b")], false).unwrap();
    }
    patch(&p, FLUSH_HARD, 1 << 40);
    let s = open(&p);
    assert!(
        matches!(s.opened(), Opened::Reinitialized(why) if why.contains("above the purge clock")),
        "{:?}",
        s.opened()
    );
    assert!(stored(&s, "/new"), "a fill after the damage is stored");
    drop(s);
    let _ = std::fs::remove_file(&p);
}

#[test]
fn a_stamp_one_above_the_clock_is_a_purge_that_died_unpublished() {
    let p = path("one");
    {
        let s = open(&p);
        s.purge_url(&[url("/b")], &[], &[key("/b")], false).unwrap();
    }
    let clock = patch(&p, PURGE_CLOCK, 0);
    patch(&p, PURGE_CLOCK, clock);
    patch(&p, FLUSH_HARD, clock + 1);
    let s = open(&p);
    assert_eq!(s.opened(), &Opened::Reopened);
    // The first fill's ticket predates the repair (fenced, as by the purge it completes).
    stored(&s, "/first");
    assert!(
        stored(&s, "/new"),
        "the unpublished purge is completed, fills store again"
    );
    drop(s);
    let _ = std::fs::remove_file(&p);
}

#[test]
fn a_clock_out_of_range_reinitializes_and_purges_still_count_up() {
    // Found by fuzz/src/bin/segment.rs: a clock of u64::MAX overflowed at the next purge.
    let p = path("clock");
    drop(open(&p));
    patch(&p, PURGE_CLOCK, u64::MAX);
    let s = open(&p);
    assert!(
        matches!(s.opened(), Opened::Reinitialized(_)),
        "{:?}",
        s.opened()
    );
    let a = s.purge_url(&[url("/b")], &[], &[key("/b")], false).unwrap();
    let b = s.purge_url(&[url("/b")], &[], &[key("/b")], false).unwrap();
    assert!(b.generation > a.generation);
    assert!(stored(&s, "/new"));
    drop(s);
    let _ = std::fs::remove_file(&p);
}

#[test]
fn shard_headers_pointing_past_the_arena_are_reset_not_followed() {
    // Found by fuzz/src/bin/segment.rs: a damaged ring head or tail underflowed `arena - head`
    // and the insert indexed past the arena (a panic under the shard lock).
    let p = path("shard");
    let layout = {
        let s = open(&p);
        assert!(stored(&s, "/a"));
        *s.layout()
    };
    let mut f = std::fs::read(&p).unwrap();
    for shard in 0..layout.shard_count {
        // The whole shard header (its lock is initialized again on open).
        let off = layout.shard_offset(shard) as usize;
        f[off..off + 256].fill(0x40);
    }
    std::fs::write(&p, f).unwrap();
    let s = open(&p);
    for path in ["/a", "/new", "/b/c"] {
        assert!(stored(&s, path), "{path}");
    }
    drop(s);
    let _ = std::fs::remove_file(&p);
}

#[test]
fn a_record_longer_than_max_object_is_not_served_after_a_restart() {
    // Stored under a larger max_object (or damaged to look longer with its verification memo
    // intact, as the segment fuzz target found): a miss, never a body past the bound.
    let p = path("max-object");
    let with = |max_object| {
        Store::open(&StoreConfig {
            backing: Backing::File(p.clone()),
            size: 1 << 20,
            max_object,
        })
        .unwrap()
    };
    let big = vec![b'x'; 150 << 10];
    {
        let s = with(200 << 10);
        let scopes = s.buckets().scopes_for(&url("/big"), &[]);
        let alt = Alternate {
            descriptor: 0,
            scopes: &scopes,
            meta: b"m",
            body: &big,
        };
        assert_eq!(
            s.commit(s.begin_fill(), &key("/big"), &alt),
            ngx_http_pagespeed_module::store::CommitOutcome::Stored
        );
        assert!(stored(&s, "/small"));
    }
    let s = with(64 << 10);
    let mut buf = Vec::new();
    assert!(matches!(
        s.lookup(&key("/big"), |_, _| Some(0), &mut buf),
        Lookup::Miss
    ));
    // Only that record went: the rest of the shard is served as before.
    assert!(matches!(
        s.lookup(&key("/small"), |_, _| Some(0), &mut buf),
        Lookup::Hit(_)
    ));
    assert_eq!(s.stats().corrupt_resets, 0);
    let _ = std::fs::remove_file(&p);
}
