//! Store micro-benchmarks: lookups, commits, tickets and purges, each next to a same-run
//! `HashMap` reference, a lookup while another process hits the same keys, and printed figures
//! for the metadata overhead per alternate and how full the segment gets before it evicts.
//!
//! Run with `cargo bench --bench store`; the figures go to docs/BENCHMARKS.md.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion};

use ngx_http_pagespeed_module::store::{
    Alternate, Backing, CommitOutcome, Key, Lookup, Store, StoreConfig, UrlId,
};

const STORE_SIZE: u64 = 64 << 20;
const KIB: usize = 1024;
const META: &[u8] = b"status=200;type=image/jpeg;";

fn anon(size: u64) -> Store {
    Store::open(&StoreConfig {
        backing: Backing::Anonymous,
        size,
        max_object: 0,
    })
    .expect("store")
}

fn path(i: usize) -> String {
    format!("/img/2026/obj{i}.jpg")
}

fn url(path: &str) -> UrlId<'_> {
    UrlId {
        scheme: "https",
        host: "example.com",
        path,
    }
}

fn key(i: usize) -> Key {
    Key::derive(&[b"https", b"example.com", path(i).as_bytes()])
}

fn put(s: &Store, i: usize, descriptor: u32, tags: &[&str], body: &[u8]) -> CommitOutcome {
    let p = path(i);
    let scopes = s.buckets().scopes_for(&url(&p), tags);
    let alt = Alternate {
        descriptor,
        scopes: &scopes,
        meta: META,
        body,
    };
    s.commit(s.begin_fill(), &key(i), &alt)
}

fn any(_: u32, _: &[u8]) -> Option<u32> {
    Some(0)
}

/// A store and a HashMap holding the same `n` objects of `body` bytes (meta + body per value).
fn populated(n: usize, body: usize) -> (Store, HashMap<[u8; 32], Vec<u8>>) {
    let s = anon(STORE_SIZE);
    let mut m = HashMap::new();
    let b = vec![0x5a; body];
    for i in 0..n {
        assert_eq!(put(&s, i, 0, &[], &b), CommitOutcome::Stored);
        m.insert(key(i).0, [META, &b].concat());
    }
    (s, m)
}

fn hit(s: &Store, k: &Key, sink: &mut Vec<u8>) {
    match s.lookup(k, any, sink) {
        Lookup::Hit(h) => {
            black_box(h);
        }
        other => panic!("expected a hit, got {other:?}"),
    }
}

/// Forks a process that looks up `keys` in a loop until killed (or for at most ten minutes, or
/// until the parent is gone). It never returns into the benchmark harness.
fn spawn_hitter(s: &Store, keys: &[Key]) -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child only performs store lookups and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut sink = Vec::new();
        'run: for round in 0u64.. {
            for k in keys {
                black_box(s.lookup(k, any, &mut sink));
            }
            // SAFETY: getppid has no preconditions.
            if round % 64 == 0
                && (Instant::now() > deadline || unsafe { libc::getppid() } != parent)
            {
                break 'run;
            }
        }
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn kill(pid: libc::pid_t) {
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

fn bench_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup_hit");
    for (label, n, size) in [("1KiB", 1000, KIB), ("100KiB", 100, 100 * KIB)] {
        let (s, m) = populated(n, size);
        let keys: Vec<Key> = (0..n).map(key).collect();
        let mut sink = Vec::new();
        let mut i = 0;
        g.bench_function(BenchmarkId::new("store", label), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                hit(&s, &keys[i], &mut sink);
            })
        });
        g.bench_function(BenchmarkId::new("hashmap_get_clone", label), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(m.get(&keys[i].0).expect("present").clone());
            })
        });
        g.bench_function(BenchmarkId::new("hashmap_get_copy", label), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                let v = m.get(&keys[i].0).expect("present");
                sink.clear();
                sink.extend_from_slice(v);
                black_box(&sink);
            })
        });
        if n == 1000 {
            let child = spawn_hitter(&s, &keys);
            g.bench_function(BenchmarkId::new("store_with_second_process", label), |b| {
                b.iter(|| {
                    i = (i + 1) % n;
                    hit(&s, &keys[i], &mut sink);
                })
            });
            kill(child);
        }
    }
    g.finish();
}

fn bench_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit");
    let n = 1000;
    let s = anon(STORE_SIZE);
    let body = vec![0x33; KIB];
    let p: Vec<String> = (0..n).map(path).collect();
    let keys: Vec<Key> = (0..n).map(key).collect();
    let scopes: Vec<_> = p
        .iter()
        .map(|p| s.buckets().scopes_for(&url(p), &[]))
        .collect();
    let mut i = 0;
    g.bench_function(BenchmarkId::new("store", "1KiB"), |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let alt = Alternate {
                descriptor: 0,
                scopes: &scopes[i],
                meta: META,
                body: &body,
            };
            black_box(s.commit(s.begin_fill(), &keys[i], &alt));
        })
    });
    let mut m: HashMap<[u8; 32], Vec<u8>> = HashMap::new();
    g.bench_function(BenchmarkId::new("hashmap_insert", "1KiB"), |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(m.insert(keys[i].0, [META, &body].concat()));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("begin_fill");
    g.bench_function("store", |b| b.iter(|| black_box(s.begin_fill())));
    g.finish();
}

fn bench_purge(c: &mut Criterion) {
    let mut g = c.benchmark_group("purge");
    let n = 1000;
    let (s, mut m) = populated(n, KIB);
    let paths: Vec<String> = (0..n).map(path).collect();
    let keys: Vec<Key> = (0..n).map(key).collect();
    let mut i = 0;
    // A URL with nothing cached: bump its generation, look for its key, publish the clock.
    let absent = anon(STORE_SIZE);
    g.bench_function(BenchmarkId::new("store_purge_url", "absent"), |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(absent.purge_url(&[url(&paths[i])], &[], &[keys[i]], false))
        })
    });
    // The same with one cached 1 KiB alternate to delete (committed outside the timing).
    let body = vec![0x77; KIB];
    g.bench_function(BenchmarkId::new("store_purge_url", "cached_1KiB"), |b| {
        b.iter_batched(
            || {
                i = (i + 1) % n;
                assert_eq!(put(&s, i, 0, &[], &body), CommitOutcome::Stored);
                i
            },
            |i| {
                let r = s.purge_url(&[url(&paths[i])], &[], &[keys[i]], false);
                debug_assert_eq!(r.map(|r| r.deleted), Ok(1));
                black_box(r)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function(BenchmarkId::new("hashmap_remove_reinsert", "1KiB"), |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let k = keys[i].0;
            let v = m.remove(&k).expect("present");
            black_box(m.insert(k, v));
        })
    });
    g.bench_function(BenchmarkId::new("store_flush_all", "64MiB"), |b| {
        b.iter(|| black_box(s.flush_all(false)))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Printed figures

/// Commits `keys x alternates` objects and compares `bytes_used` with the payload.
fn overhead_case(keys: usize, alternates: u32, tags: &[&str], body: usize) -> (f64, usize, f64) {
    let s = anon(STORE_SIZE);
    let b = vec![1u8; body];
    for i in 0..keys {
        for d in 0..alternates {
            assert_eq!(put(&s, i, d, tags, &b), CommitOutcome::Stored);
        }
    }
    let st = s.stats();
    let n = keys as u64 * alternates as u64;
    assert_eq!(st.alternates, n);
    let payload = n * (META.len() + body) as u64;
    let record = (st.bytes_used - payload) as f64 / n as f64;
    let scope = s.buckets().scopes_for(&url(&path(0)), tags).encoded_len();
    let index = 48.0 / alternates as f64;
    (record, scope, index)
}

fn report_overhead() {
    println!("\n## metadata overhead per alternate (64 MiB store, URL /img/2026/objN.jpg)");
    println!(
        "{:<34} {:>8} {:>8} {:>10} {:>10}",
        "case", "scope B", "record B", "index B", "total B"
    );
    for (label, keys, alts, tags) in [
        ("1 alternate/key, no tags", 10_000, 1, &[][..]),
        (
            "1 alternate/key, 3 tags",
            10_000,
            1,
            &["product-1", "/css/a.css", "home"][..],
        ),
        ("4 alternates/key, no tags", 2_500, 4, &[][..]),
        ("8 alternates/key, no tags", 1_250, 8, &[][..]),
    ] {
        let (record, scope, index) = overhead_case(keys, alts, tags, KIB);
        println!(
            "{label:<34} {scope:>8} {record:>8.1} {index:>10.1} {:>10.1}",
            record + index
        );
    }
    let s = anon(STORE_SIZE);
    let l = s.layout();
    let index = l.index_slots as u64 * 48 * l.shard_count as u64;
    let tables = (l.url_slots as u64 + l.prefix_slots as u64 + l.tag_slots as u64) * 16;
    let arena = s.stats().bytes_capacity;
    println!(
        "segment {} MiB: {} shards, arena {:.1}%, index {:.1}% ({} slots/shard, one per 1 KiB of \
         arena, 7/8 usable), purge tables {:.1}%",
        l.total_size >> 20,
        l.shard_count,
        100.0 * arena as f64 / l.total_size as f64,
        100.0 * index as f64 / l.total_size as f64,
        l.index_slots,
        100.0 * tables as f64 / l.total_size as f64,
    );
}

/// Fills a fresh store with distinct objects of `body` bytes until the first eviction.
fn fill_case(body: usize) -> (f64, u64, f64, f64) {
    let s = anon(STORE_SIZE);
    let b = vec![2u8; body];
    let cap = s.stats().bytes_capacity;
    let key_cap = s.layout().index_slots as u64 * 7 / 8 * s.layout().shard_count as u64;
    let mut peak = 0;
    let mut i = 0;
    loop {
        assert_eq!(put(&s, i, 0, &[], &b), CommitOutcome::Stored);
        i += 1;
        let st = s.stats();
        if st.evictions > 0 {
            break;
        }
        peak = st.bytes_used;
    }
    let keys_at_eviction = i as u64 - 1;
    // Keep writing until twice the capacity went through: the steady state of the ring.
    let mut low = f64::MAX;
    while (i as u64) * (body as u64) < 2 * cap {
        put(&s, i, 0, &[], &b);
        i += 1;
        if i % 64 == 0 {
            low = low.min(s.stats().bytes_used as f64 / cap as f64);
        }
    }
    (
        peak as f64 / cap as f64,
        keys_at_eviction,
        keys_at_eviction as f64 / key_cap as f64,
        low,
    )
}

fn report_fill() {
    println!("\n## fill before the first eviction (64 MiB store, distinct keys, one size each)");
    println!(
        "{:>10} {:>14} {:>12} {:>16} {:>18}",
        "body", "used/capacity", "keys", "keys/key limit", "steady state min"
    );
    for body in [256, KIB, 4 * KIB, 64 * KIB, 1024 * KIB] {
        let (fill, keys, key_share, low) = fill_case(body);
        println!(
            "{body:>10} {:>13.1}% {keys:>12} {:>15.1}% {:>17.1}%",
            100.0 * fill,
            100.0 * key_share,
            100.0 * low
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Summary with ratios, read back from criterion's estimates of this run.

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // target/release/deps/store-<hash>
    let exe = std::env::current_exe().expect("exe");
    exe.ancestors()
        .nth(3)
        .expect("target dir")
        .join("criterion")
}

/// Median time in ns of a benchmark of this run.
fn median_ns(id: &str) -> Option<f64> {
    let f = criterion_dir().join(id).join("new").join("estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else {
        format!("{ns:.1} ns")
    }
}

fn report_ratios() {
    println!("\n## summary (criterion medians of this run)");
    println!(
        "{:<46} {:>10} {:>44} {:>10} {:>7}",
        "operation", "store", "reference", "ref", "ratio"
    );
    let rows = [
        ("lookup_hit/store/1KiB", "lookup_hit/hashmap_get_clone/1KiB"),
        (
            "lookup_hit/store/100KiB",
            "lookup_hit/hashmap_get_clone/100KiB",
        ),
        ("lookup_hit/store/1KiB", "lookup_hit/hashmap_get_copy/1KiB"),
        (
            "lookup_hit/store/100KiB",
            "lookup_hit/hashmap_get_copy/100KiB",
        ),
        (
            "lookup_hit/store_with_second_process/1KiB",
            "lookup_hit/hashmap_get_clone/1KiB",
        ),
        ("commit/store/1KiB", "commit/hashmap_insert/1KiB"),
        (
            "purge/store_purge_url/absent",
            "purge/hashmap_remove_reinsert/1KiB",
        ),
        (
            "purge/store_purge_url/cached_1KiB",
            "purge/hashmap_remove_reinsert/1KiB",
        ),
        ("purge/store_flush_all/64MiB", ""),
        ("begin_fill/store", ""),
    ];
    for (store, reference) in rows {
        let Some(s) = median_ns(store) else {
            println!(
                "{store:<46} (no estimate found under {:?})",
                criterion_dir()
            );
            continue;
        };
        match median_ns(reference) {
            Some(r) => println!(
                "{store:<46} {:>10} {reference:>44} {:>10} {:>6.2}x",
                fmt_ns(s),
                fmt_ns(r),
                s / r
            ),
            None => println!("{store:<46} {:>10}", fmt_ns(s)),
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_lookup(&mut c);
    bench_commit(&mut c);
    bench_purge(&mut c);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once as a test; the figures need `cargo bench`.
    if std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test") {
        report_ratios();
        report_overhead();
        report_fill();
    }
}
