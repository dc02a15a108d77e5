//! The segment open path on damaged and random files: `Store::open` on a file that is a valid
//! 1 MiB segment (with entries, purges and variants) with bytes patched by the input, or the
//! input itself. Opening never panics, and whatever it found, the store then works: lookups,
//! inspection, purges and status run, and a fresh commit is found again byte for byte.

use std::path::PathBuf;
use std::sync::OnceLock;

use ngx_http_pagespeed_module::store::{
    Alternate, Backing, Key, Lookup, Store, StoreConfig, UrlId,
};

const SIZE: u64 = 1 << 20;
const PATHS: [&str; 4] = ["/a.css", "/b/c.js", "/b/d.png", "/e"];

fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PSV_FUZZ_DIR") {
        return PathBuf::from(d);
    }
    // tmpfs when there is one: the file is rewritten for every input.
    let base = ["/dev/shm", "/tmp"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    base.join(format!("psv-fuzz-segment-{}", std::process::id()))
}

fn cfg(path: &std::path::Path) -> StoreConfig {
    StoreConfig {
        backing: Backing::File(path.to_path_buf()),
        size: SIZE,
        max_object: 0,
    }
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

fn commit(s: &Store, path: &str, desc: u32, tags: &[&str], meta: &[u8], body: &[u8]) {
    let scopes = s.buckets().scopes_for(&url(path), tags);
    let t = s.begin_fill();
    let alt = Alternate {
        descriptor: desc,
        scopes: &scopes,
        meta,
        body,
    };
    let _ = s.commit(t, &key(path), &alt);
}

/// A segment file with a few entries, variants, a soft purge and a tag purge, as bytes.
fn template() -> &'static Vec<u8> {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let d = dir();
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("template");
        let _ = std::fs::remove_file(&p);
        {
            let s = Store::open(&cfg(&p)).unwrap();
            for (i, path) in PATHS.iter().enumerate() {
                let body = vec![b'a' + i as u8; 100 + 700 * i];
                commit(&s, path, 0, &["t1", "t2"], b"meta", &body);
                commit(&s, path, 1 << 8, &["t1"], b"meta2", &body[..50]);
            }
            s.purge_url(&[url("/e")], &[], &[key("/e")], true).unwrap();
            s.purge_tag(&["t2"], true).unwrap();
            commit(&s, "/e", 0, &[], b"m", b"fresh");
        }
        let t = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        t
    })
}

fn exercise(s: &Store) {
    let max = s.max_object() as usize;
    let mut buf = Vec::new();
    for path in PATHS {
        let k = key(path);
        match s.lookup(&k, |_, _| Some(0), &mut buf) {
            Lookup::Hit(h) => assert!(h.meta_len + h.body_len == buf.len() && buf.len() <= max),
            Lookup::Miss | Lookup::Fault(_) => {}
        }
        let _ = s.source(&k, 0);
        let _ = s.stored_meta(&k, 1 << 8);
        let _ = s.alternates(&k);
    }
    let _ = s.stats().to_json(&[]);
    let _ = s.purge_prefix(&[("https", "example.com", "/b/")], false);
    let _ = s.purge_tag(&["t1"], false);
    // Whatever the file held, the store works now.
    let body = b"after the damage";
    commit(s, "/new", 0, &[], b"meta", body);
    match s.lookup(&key("/new"), |_, _| Some(0), &mut buf) {
        Lookup::Hit(h) => assert_eq!(&buf[h.meta_len..], body),
        other => panic!(
            "a fresh commit is not found: {}",
            matches!(other, Lookup::Miss)
        ),
    }
}

fn main() {
    let tpl = template();
    let path = dir().join("work");
    afl::fuzz!(|data: &[u8]| {
        let Some((&sel, mut rest)) = data.split_first() else {
            return;
        };
        let file = if sel & 1 == 0 {
            // Patches: (offset u32 LE, length u8, bytes) until the input ends.
            let mut f = tpl.clone();
            while rest.len() >= 5 {
                let off = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize % f.len();
                let n = (rest[4] as usize).min(rest.len() - 5).min(f.len() - off);
                f[off..off + n].copy_from_slice(&rest[5..5 + n]);
                rest = &rest[5 + n..];
            }
            f
        } else if sel & 2 == 0 {
            // The input as the start of a segment-sized file (the rest zero).
            let mut f = vec![0; SIZE as usize];
            let n = rest.len().min(f.len());
            f[..n].copy_from_slice(&rest[..n]);
            f
        } else {
            // The input as the whole file, whatever its length.
            rest.to_vec()
        };
        std::fs::write(&path, &file).unwrap();
        if let Ok(s) = Store::open(&cfg(&path)) {
            exercise(&s);
        }
    });
}
