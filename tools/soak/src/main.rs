//! pagespeed-soak: a chaos soak of the module inside a real nginx (see scripts/soak and
//! docs/RELIABILITY.md). Exits non-zero on any violation.

mod content;
mod driver;
mod http;
mod load;
mod nginx;
mod oracle;
mod origin;
mod rng;

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver::{ChaosConfig, DriverConfig, DriverCounts, Sample};
use load::{Checker, LoadConfig, Violations};

const USAGE: &str = "usage: pagespeed-soak --nginx PATH --module PATH [options]
  --seconds N        length of the chaos phase (default 180)
  --clients N        keep-alive clients (64)
  --urls N           URLs in the catalogue (3000)
  --workers N        nginx worker processes (2)
  --segment SIZE     pagespeed_cache_path size (16m: far below the working set, so the
                     segment evicts all the time)
  --max-object SIZE  pagespeed_cache_path max_object (1m)
  --build-threads N  pagespeed_build_threads (1)
  --purge-ms N       mean gap between purges in ms (150)
  --expiry-ms N      mean gap between silent version bumps of short-lived URLs (400; 0 off)
  --all-every S      at most one purge-all per S seconds (10)
  --reload-every S   mean gap between `nginx -s reload`s (4; 0 off)
  --kill-every S     mean gap between SIGKILLs of a random worker (5; 0 off)
  --origin-errors P  percent of origin responses that are marked 503s (0)
  --think-ms N       mean client pause between requests (10: leaves the low-priority
                     builder threads some CPU on a small machine)
  --seed N           seed of every random choice (default: from the clock)
  --keep             keep the nginx prefix directory (its path is printed)
  --samples FILE     write the once-a-second memory and segment samples there (TSV)
  --fault F          prove the checks fire: skip-purge (record receipts of purges never
                     sent), foreign-body or torn-body (the origin corrupts ~1% of bodies)";

struct Args {
    nginx: PathBuf,
    module: PathBuf,
    seconds: f64,
    clients: u32,
    urls: u32,
    workers: u32,
    segment: String,
    max_object: String,
    build_threads: u32,
    purge_ms: u64,
    expiry_ms: u64,
    all_every: f64,
    reload_every: f64,
    kill_every: f64,
    origin_errors: f64,
    think_ms: u64,
    seed: u64,
    keep: bool,
    fault: Option<&'static str>,
    samples: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        nginx: PathBuf::new(),
        module: PathBuf::new(),
        seconds: 180.0,
        clients: 64,
        urls: 3000,
        workers: 2,
        segment: "16m".into(),
        max_object: "1m".into(),
        build_threads: 1,
        purge_ms: 150,
        expiry_ms: 400,
        all_every: 10.0,
        reload_every: 4.0,
        kill_every: 5.0,
        origin_errors: 0.0,
        think_ms: 10,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        keep: false,
        fault: None,
        samples: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--keep" {
            a.keep = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let val = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--nginx" => a.nginx = val.into(),
            "--module" => a.module = val.into(),
            "--seconds" => a.seconds = num(&val)?,
            "--clients" => a.clients = num(&val)? as u32,
            "--urls" => a.urls = num(&val)? as u32,
            "--workers" => a.workers = num(&val)? as u32,
            "--segment" => a.segment = val,
            "--max-object" => a.max_object = val,
            "--build-threads" => a.build_threads = num(&val)? as u32,
            "--purge-ms" => a.purge_ms = num(&val)? as u64,
            "--expiry-ms" => a.expiry_ms = num(&val)? as u64,
            "--all-every" => a.all_every = num(&val)?,
            "--reload-every" => a.reload_every = num(&val)?,
            "--kill-every" => a.kill_every = num(&val)?,
            "--origin-errors" => a.origin_errors = num(&val)?,
            "--think-ms" => a.think_ms = num(&val)? as u64,
            "--seed" => a.seed = num(&val)? as u64,
            "--samples" => a.samples = Some(val.into()),
            "--fault" => {
                a.fault = Some(match val.as_str() {
                    "skip-purge" => "skip-purge",
                    "foreign-body" => "foreign-body",
                    "torn-body" => "torn-body",
                    _ => {
                        return Err(format!(
                            "--fault: skip-purge, foreign-body or torn-body, not {val}"
                        ))
                    }
                })
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if a.nginx.as_os_str().is_empty() || a.module.as_os_str().is_empty() {
        return Err(USAGE.into());
    }
    if a.urls < 100 || a.clients == 0 || a.workers < 1 || a.seconds <= 0.0 {
        return Err("need --urls >= 100, --clients >= 1, --workers >= 1, --seconds > 0".into());
    }
    Ok(a)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn temp_prefix() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for n in 0..100u32 {
        let p = base.join(format!("pagespeed-soak.{}.{n}", std::process::id()));
        if std::fs::DirBuilder::new().mode(0o700).create(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(std::io::Error::other("cannot create a temp dir"))
}

/// Least-squares slope (units per second) and mean of (t, y) points.
fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 5 {
        return None;
    }
    let (mt, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), p| (a + p.0 / n, b + p.1 / n));
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (t, y) in points {
        sxy += (t - mt) * (y - my);
        sxx += (t - mt) * (t - mt);
    }
    (sxx > 0.0).then(|| (sxy / sxx, my))
}

/// One memory or segment series: growth over the measured window (slope x window) must stay
/// under both `rel` of its mean and `abs`.
struct Trend {
    name: &'static str,
    unit: &'static str,
    scale: f64,
    rel: f64,
    abs: f64,
    /// Judged only over a window this long (infinite: printed only).
    min_window: f64,
}

fn main() {
    let args = match parse_args() {
        Ok(mut a) => {
            // nginx resolves relative paths against its prefix, a temp dir.
            for p in [&mut a.nginx, &mut a.module] {
                if let Ok(abs) = std::fs::canonicalize(&*p) {
                    *p = abs;
                }
            }
            a
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    std::process::exit(run(args));
}

fn run(args: Args) -> i32 {
    // SAFETY: installing a handler that only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    if std::process::Command::new("avifdec")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("soak: avifdec (Debian package libavif-bin) is needed to check AVIF bodies");
        return 2;
    }
    let prefix = match temp_prefix() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("soak: {e}");
            return 2;
        }
    };
    let tmp = prefix.join("decode");
    let _ = std::fs::create_dir_all(&tmp);

    let t0 = Instant::now();
    let cat = Arc::new(content::Catalog::new(args.urls));
    let oracle = Arc::new(oracle::Oracle::new(cat.len()));
    let violations = Arc::new(Violations::new());
    let ck = Arc::new(Checker::new(
        cat.clone(),
        oracle.clone(),
        violations.clone(),
        t0,
        tmp,
    ));

    let origin_listener = TcpListener::bind("127.0.0.1:0").expect("bind the origin");
    let origin_port = origin_listener.local_addr().unwrap().port();
    let origin = Arc::new(origin::Origin::new(
        cat.clone(),
        args.origin_errors,
        args.fault,
    ));
    let origin_thread = origin.start(origin_listener);

    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    if let Err(e) = nginx::write_config(
        &prefix,
        &nginx::Settings {
            module: &args.module,
            workers: args.workers,
            port,
            origin_port,
            segment: &args.segment,
            max_object: &args.max_object,
            build_threads: args.build_threads,
        },
    ) {
        eprintln!("soak: write nginx.conf: {e}");
        return 2;
    }
    let ngx = match nginx::Nginx::start(&args.nginx, &prefix, addr) {
        Ok(n) => Arc::new(Mutex::new(n)),
        Err(e) => {
            eprintln!("soak: {e}");
            print_log_tail(&prefix.join("error.log"));
            return 2;
        }
    };
    let images = cat.res.iter().filter(|r| r.kind.is_image()).count();
    println!(
        "soak: {:.0} s{}, nginx {} workers, {} URLs ({} text, {} images; {} expire within 5 s), {} clients, segment {} (max_object {}), seed {}",
        args.seconds,
        args.fault.map_or(String::new(), |f| format!(" (FAULT INJECTED: {f})")),
        args.workers,
        cat.len(),
        cat.len() - images,
        images,
        cat.res.iter().filter(|r| r.max_age < 60).count(),
        args.clients,
        args.segment,
        args.max_object,
        args.seed
    );
    println!("soak: prefix {}", prefix.display());

    let stop_load = Arc::new(AtomicBool::new(false));
    let stop_chaos = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(DriverCounts::default());
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let clients = load::run_clients(
        ck.clone(),
        &LoadConfig {
            addr,
            clients: args.clients,
            think_ms: args.think_ms,
            seed: args.seed,
        },
        stop_load.clone(),
    );
    let purger = driver::run_purger(
        ck.clone(),
        DriverConfig {
            addr,
            purge_every_ms: args.purge_ms,
            expiry_every_ms: args.expiry_ms,
            all_every_s: args.all_every,
            seed: args.seed,
            skip_purges: args.fault == Some("skip-purge"),
        },
        counts.clone(),
        stop_chaos.clone(),
    );
    let chaos = driver::run_chaos(
        ck.clone(),
        ngx.clone(),
        ChaosConfig {
            reload_every_s: args.reload_every,
            kill_every_s: args.kill_every,
            seed: args.seed,
        },
        counts.clone(),
        stop_chaos.clone(),
    );
    let sampler = driver::run_sampler(
        ck.clone(),
        ngx.clone(),
        addr,
        samples.clone(),
        stop_load.clone(),
    );
    let start_status = driver::status(addr);

    let mut last_print = 0.0;
    while ck.now() < args.seconds && !INTERRUPTED.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if ck.now() - last_print >= 30.0 {
            last_print = ck.now();
            println!(
                "soak: {:>4.0} s  responses {}  purges {}  reloads {}  kills {}  violations {}",
                ck.now(),
                ck.counts.responses.load(Ordering::Relaxed),
                counts.purges.load(Ordering::Relaxed),
                counts.reloads.load(Ordering::Relaxed),
                counts.kills.lock().unwrap().len(),
                violations.total()
            );
        }
    }
    let interrupted = INTERRUPTED.load(Ordering::Relaxed);
    let chaos_end = ck.now();
    stop_chaos.store(true, Ordering::Relaxed);
    let _ = purger.join();
    let _ = chaos.join();
    // Let the clients run on a quiet server for a moment: what a request gets once the
    // storm is over is checked too.
    std::thread::sleep(Duration::from_secs(2));
    stop_load.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let _ = sampler.join();
    let end_status = driver::status(addr);
    let elapsed = ck.now();

    ngx.lock().unwrap().stop();
    let stopped = ck.now();
    origin.stop.store(true, Ordering::Relaxed);
    let _ = origin_thread.join();

    let kills = counts.kills.lock().unwrap().clone();
    let reload_times = counts.reload_times.lock().unwrap().clone();

    // Transport failures: a cut response needs a SIGKILL during it; a reset connection (no
    // byte) a kill or a reload close to it.
    let (mut cut_by_kill, mut reset_explained) = (0u64, 0u64);
    for d in ck.disruptions.lock().unwrap().iter() {
        let kill_in = |a: f64, b: f64| kills.iter().any(|&(t, _)| t >= a && t <= b);
        let reload_in = |a: f64, b: f64| reload_times.iter().any(|&t| t >= a && t <= b);
        if d.cut {
            if kill_in(d.start - 0.05, d.end + 0.05) {
                cut_by_kill += 1;
            } else {
                violations.add(
                    "response cut with no kill during it",
                    format!("{} at {:.3}-{:.3} s", d.what, d.start, d.end),
                );
            }
        } else if kill_in(d.start - 1.0, d.end + 1.0) || reload_in(d.start - 1.0, d.end + 1.0) {
            reset_explained += 1;
        } else {
            violations.add(
                "connection reset with no kill or reload near it",
                format!("{} at {:.3}-{:.3} s", d.what, d.start, d.end),
            );
        }
    }

    let log = scan_error_log(&prefix.join("error.log"), &kills);
    for l in &log.bad {
        violations.add("[alert]/[crit]/[emerg]/panic in error.log", l.clone());
    }
    let stderr = std::fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default();
    if stderr.contains("panicked at") {
        violations.add(
            "[alert]/[crit]/[emerg]/panic in error.log",
            format!("stderr.log: {}", stderr.lines().next().unwrap_or("")),
        );
    }

    // Memory and segment trends after the warm-up (the first fifth, at least 15 s: the
    // segment fills, builders start, allocator arenas grow). Judged only over 40 s or more
    // (a shorter window is dominated by single events: a purge-all, a young worker).
    let samples = samples.lock().unwrap().clone();
    if let Some(path) = &args.samples {
        let mut tsv = String::from(
            "t_s\tmaster_anon_kib\tworker_anon_kib\tworker_rss_kib\tworkers\tbytes_used\tbytes_capacity\tentries\talternates\n",
        );
        for s in &samples {
            tsv.push_str(&format!(
                "{:.1}\t{}\t{:.0}\t{:.0}\t{}\t{}\t{}\t{}\t{}\n",
                s.t,
                s.master_anon_kib,
                s.worker_anon_kib,
                s.worker_rss_kib,
                s.workers,
                s.bytes_used,
                s.bytes_capacity,
                s.entries,
                s.alternates
            ));
        }
        if let Err(e) = std::fs::write(path, tsv) {
            eprintln!("soak: --samples {}: {e}", path.display());
        }
    }
    let warm = (chaos_end * 0.2).max(15.0);
    let measured: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t >= warm && s.t <= chaos_end)
        .collect();
    let window = measured.last().map_or(0.0, |l| l.t) - measured.first().map_or(0.0, |f| f.t);
    let capacity = measured
        .iter()
        .map(|s| s.bytes_capacity)
        .fold(0.0, f64::max);
    let series = |f: fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        measured.iter().filter_map(|s| Some((s.t, f(s)?))).collect()
    };
    // A series fails when its growth over the window (slope x window) exceeds both `rel` of
    // its mean and `abs`. Why these numbers: see docs/RELIABILITY.md ("Memory"). While
    // reloads and kills replace workers every few seconds, the workers' mean measures their
    // age mix: only a window of minutes averages that out.
    let chaos = args.reload_every > 0.0 || args.kill_every > 0.0;
    let worker_window = if chaos { 240.0 } else { 40.0 };
    let trends = [
        (
            Trend {
                name: "master RssAnon",
                unit: "MiB",
                scale: 1024.0,
                rel: 0.10,
                abs: 1024.0,
                min_window: 40.0,
            },
            series(|s| Some(s.master_anon_kib)),
        ),
        (
            Trend {
                name: "worker RssAnon (mean)",
                unit: "MiB",
                scale: 1024.0,
                rel: 0.20,
                abs: 6144.0,
                min_window: worker_window,
            },
            series(|s| (s.workers > 0).then_some(s.worker_anon_kib)),
        ),
        (
            Trend {
                name: "worker VmRSS (mean)",
                unit: "MiB",
                scale: 1024.0,
                rel: 0.0,
                abs: 0.0,
                min_window: f64::INFINITY,
            },
            series(|s| (s.workers > 0).then_some(s.worker_rss_kib)),
        ),
        (
            Trend {
                name: "segment bytes_used",
                unit: "MiB",
                scale: 1048576.0,
                rel: 0.0,
                abs: capacity * 0.3,
                // The purge-all sawtooth needs several periods to average out.
                min_window: 90.0,
            },
            series(|s| (s.bytes_capacity > 0.0).then_some(s.bytes_used)),
        ),
        (
            Trend {
                name: "segment alternates",
                unit: "",
                scale: 1.0,
                rel: 0.0,
                abs: 0.0,
                min_window: f64::INFINITY,
            },
            series(|s| (s.bytes_capacity > 0.0).then_some(s.alternates)),
        ),
    ];
    let mut trend_lines = Vec::new();
    for (tr, pts) in &trends {
        let Some((slope, mean)) = fit(pts) else {
            trend_lines.push(format!("{:<24} too few samples", tr.name));
            continue;
        };
        let growth = slope * window;
        let limit = (tr.rel * mean).max(tr.abs);
        let judged = window >= tr.min_window;
        let (lo, hi) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        trend_lines.push(format!(
            "{:<24} mean {:.2} {u} (min {:.2}, max {:.2}), slope {:+.4} {u}/min, growth over {:.0} s {:+.2} {u} ({})",
            tr.name,
            mean / tr.scale,
            lo / tr.scale,
            hi / tr.scale,
            slope * 60.0 / tr.scale,
            window,
            growth / tr.scale,
            if judged { format!("limit {:.2}", limit / tr.scale) } else { "not judged".into() },
            u = tr.unit
        ));
        if judged && growth > limit {
            violations.add(
                "growth trend",
                format!(
                    "{}: {:+.2} {} over {:.0} s (limit {:.2})",
                    tr.name,
                    growth / tr.scale,
                    tr.unit,
                    window,
                    limit / tr.scale
                ),
            );
        }
    }
    if capacity > 0.0 {
        if let Some(s) = measured.iter().find(|s| s.bytes_used > s.bytes_capacity) {
            violations.add(
                "segment over capacity",
                format!(
                    "bytes_used {} of {} at {:.1} s",
                    s.bytes_used, s.bytes_capacity, s.t
                ),
            );
        }
    }

    // The report.
    let c = &ck.counts;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let responses = n(&c.responses);
    let pct = |x: u64| {
        if responses == 0 {
            0.0
        } else {
            100.0 * x as f64 / responses as f64
        }
    };
    println!(
        "\n=== soak report ({:.0} s of chaos, {:.0} s in all, nginx stopped in {:.1} s{}) ===",
        chaos_end,
        elapsed,
        stopped - elapsed,
        if interrupted { ", INTERRUPTED" } else { "" }
    );
    println!(
        "responses      {responses} ({:.0}/s): HIT {} ({:.1}%), MISS {} ({:.1}%), other {}; marked STALE {}; 304 {} of {} conditional; origin 5xx (injected) {}",
        responses as f64 / elapsed.max(1.0),
        n(&c.hits),
        pct(n(&c.hits)),
        n(&c.misses),
        pct(n(&c.misses)),
        n(&c.other_cache_status),
        n(&c.stale_marked),
        n(&c.not_modified),
        n(&c.conditional_sent),
        n(&c.origin_5xx)
    );
    println!(
        "  by status    {}",
        c.statuses
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "bodies checked text {} (br {}, gzip {}; pages naming dependencies {}), images {} (original {}, WebP {}, AVIF {}, re-encoded {}; resized {}, Save-Data {}); {} distinct bodies decoded ({} AVIF via avifdec)",
        n(&c.text),
        n(&c.text_br),
        n(&c.text_gzip),
        n(&c.pages_with_deps),
        n(&c.images),
        n(&c.img_original),
        n(&c.img_webp),
        n(&c.img_avif),
        n(&c.img_reencoded),
        n(&c.img_resized),
        n(&c.img_save_data),
        n(&c.bodies_decoded),
        n(&c.avif_decodes)
    );
    let by_cause: BTreeMap<_, _> = counts.by_cause.lock().unwrap().clone();
    println!(
        "purges         {} ({}), soft {}, retried after a failed attempt {}; last generation {}; {} version floors; {} silent expiry bumps",
        n(&counts.purges),
        by_cause.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        n(&counts.soft),
        n(&counts.retried),
        n(&counts.last_generation),
        oracle.floors(),
        n(&counts.expiry_bumps)
    );
    println!(
        "reloads        {}; kills {} (\"exited on signal 9\" alerts {}, each matched to a kill)",
        n(&counts.reloads),
        kills.len(),
        log.kill_alerts
    );
    println!(
        "connections    responses cut by a kill {cut_by_kill}, resets near a kill or reload {reset_explained}, keep-alive retries {}",
        n(&c.keepalive_retries)
    );
    println!(
        "origin         {} requests, {} answered 304, {} injected errors",
        n(&origin.requests),
        n(&origin.not_modified),
        n(&origin.injected_errors)
    );
    if let (Some(a), Some(b)) = (&start_status, &end_status) {
        let keys = [
            "hits",
            "misses",
            "stored",
            "fenced",
            "rejected_reads",
            "evictions",
            "too_large",
            "replaced",
            "lock_recoveries",
            "corrupt_resets",
            "checksum_failures",
            "builds_done",
            "builds_declined",
            "builds_failed",
            "builds_dropped",
            "builds_fenced",
            "stale_hits",
        ];
        let d: Vec<String> = keys
            .iter()
            .map(|k| {
                format!(
                    "{k} {}",
                    b[k].as_u64()
                        .unwrap_or(0)
                        .saturating_sub(a[k].as_u64().unwrap_or(0))
                )
            })
            .collect();
        println!("store          {}", d.join(", "));
    }
    for l in &trend_lines {
        println!("memory         {l}");
    }
    if !log.summary.is_empty() {
        println!("error.log      [warn]/[error] lines by message:");
        for (msg, count) in log.summary.iter().take(10) {
            println!("                 {count:>6}  {msg}");
        }
    }
    let total = violations.total();
    if total == 0 && !interrupted {
        println!("VIOLATIONS     0");
    } else {
        println!(
            "VIOLATIONS     {total}{}",
            if interrupted {
                " (run interrupted)"
            } else {
                ""
            }
        );
        for (kind, count, examples) in violations.report() {
            println!("  {count:>6}  {kind}");
            for e in examples {
                println!("            {e}");
            }
        }
    }
    if args.keep || total > 0 {
        println!("soak: nginx prefix kept at {}", prefix.display());
    } else {
        let _ = std::fs::remove_dir_all(&prefix);
    }
    if total == 0 && !interrupted {
        0
    } else {
        1
    }
}

struct LogScan {
    kill_alerts: u64,
    bad: Vec<String>,
    summary: Vec<(String, u64)>,
}

/// Alerts, criticals, emergencies and panics, except exactly one "worker process PID exited on
/// signal 9" per worker the soak killed; [warn]/[error] lines counted by message.
fn scan_error_log(path: &std::path::Path, kills: &[(f64, u32)]) -> LogScan {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut killed: HashSet<u32> = kills.iter().map(|k| k.1).collect();
    let mut scan = LogScan {
        kill_alerts: 0,
        bad: Vec::new(),
        summary: Vec::new(),
    };
    let mut summary: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        if line.contains("[alert]")
            || line.contains("[crit]")
            || line.contains("[emerg]")
            || line.contains("panicked at")
        {
            let pid = line
                .split("worker process ")
                .nth(1)
                .and_then(|r| r.strip_suffix(" exited on signal 9"))
                .and_then(|p| p.trim().parse::<u32>().ok());
            if let Some(p) = pid.filter(|p| killed.remove(p)) {
                let _ = p;
                scan.kill_alerts += 1;
                continue;
            }
            scan.bad.push(line.to_string());
        } else if line.contains("[warn]") || line.contains("[error]") {
            // The message without time, pids and numbers.
            let msg = line.split_once(": ").map_or(line, |(_, m)| m);
            let mut key: String = msg
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect();
            if let Some(i) = key.find(", client:") {
                key.truncate(i);
            }
            key.truncate(120);
            *summary.entry(key).or_default() += 1;
        }
    }
    for p in killed {
        scan.bad.push(format!(
            "worker {p} was killed but no \"exited on signal 9\" alert names it"
        ));
    }
    let mut s: Vec<(String, u64)> = summary.into_iter().collect();
    s.sort_by_key(|e| std::cmp::Reverse(e.1));
    scan.summary = s;
    scan
}

fn print_log_tail(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines[lines.len().saturating_sub(20)..] {
        eprintln!("  {l}");
    }
}
