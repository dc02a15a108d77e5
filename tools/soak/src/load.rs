//! The clients: keep-alive connections over a Zipf-popular URL set with varied Accept,
//! Accept-Encoding, User-Agent, Save-Data and client hints (and some If-None-Match), and the
//! checks every response goes through: status, variant acceptable to this client, body decodes
//! as labelled and belongs to the URL, version not older than a purge received before the
//! request started.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::content::{self, Catalog, Decoded, Kind};
use crate::http::{Conn, Failure, Response};
use crate::oracle::Oracle;
use crate::rng::Rng;

#[derive(Clone, Copy)]
struct Profile {
    accept: &'static str,
    accept_encoding: &'static str,
    user_agent: &'static str,
    save_data: bool,
    viewport_width: Option<u32>,
    dpr: Option<&'static str>,
}

const ACCEPTS: [&str; 6] = [
    "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
    "image/webp,*/*",
    "*/*",
    "",
    "image/avif;q=0,image/webp",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
];
const ENCODINGS: [&str; 6] = [
    "gzip, deflate, br",
    "gzip",
    "br",
    "",
    "identity",
    "br;q=0, gzip;q=0",
];
const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
    "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X)",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36",
    "",
];

/// What the module should make of a profile (the rules of src/variant/capability.rs, restated
/// so a change there that breaks a client shows up here).
struct Caps {
    avif: bool,
    webp: bool,
    /// 0 (desktop, the source width), 480 or 768.
    viewport: u32,
    x2: bool,
    save_data: bool,
    gzip: bool,
    br: bool,
}

impl Profile {
    fn random(rng: &mut Rng) -> Profile {
        Profile {
            accept: rng.pick(&ACCEPTS),
            accept_encoding: rng.pick(&ENCODINGS),
            user_agent: rng.pick(&AGENTS),
            save_data: rng.below(7) == 0,
            viewport_width: rng.pick(&[None, None, None, Some(360), Some(700), Some(1400)]),
            dpr: rng.pick(&[None, None, Some("1"), Some("2"), Some("3")]),
        }
    }

    fn caps(&self) -> Caps {
        let ua_class = if self.user_agent.contains("iPad") {
            768
        } else if self.user_agent.contains("iPhone") || self.user_agent.contains("Mobile") {
            480
        } else {
            0
        };
        let viewport = match self.viewport_width {
            Some(w) if w <= 480 => 480,
            Some(w) if w <= 768 => 768,
            Some(_) => 0,
            None => ua_class,
        };
        Caps {
            avif: self.accept.starts_with("image/avif,"),
            webp: self.accept.contains("image/webp"),
            viewport,
            x2: matches!(self.dpr, Some("2") | Some("3")),
            save_data: self.save_data,
            gzip: matches!(self.accept_encoding, "gzip, deflate, br" | "gzip"),
            br: matches!(self.accept_encoding, "gzip, deflate, br" | "br"),
        }
    }

    fn headers(&self, out: &mut String) {
        let mut h = |n: &str, v: &str| {
            if !v.is_empty() {
                out.push_str(n);
                out.push_str(": ");
                out.push_str(v);
                out.push_str("\r\n");
            }
        };
        h("Accept", self.accept);
        h("Accept-Encoding", self.accept_encoding);
        h("User-Agent", self.user_agent);
        if self.save_data {
            h("Save-Data", "on");
        }
        if let Some(w) = self.viewport_width {
            h("Sec-CH-Viewport-Width", &w.to_string());
        }
        if let Some(d) = self.dpr {
            h("Sec-CH-DPR", d);
        }
    }
}

/// Counters printed at the end.
#[derive(Default)]
pub struct Counts {
    pub responses: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub other_cache_status: AtomicU64,
    /// Responses by `X-Cache` and `$pagespeed_cache_status`, e.g. "MISS/STALE".
    pub statuses: Mutex<std::collections::BTreeMap<String, u64>>,
    pub stale_marked: AtomicU64,
    pub stale_old_allowed: AtomicU64,
    pub not_modified: AtomicU64,
    pub conditional_sent: AtomicU64,
    pub origin_5xx: AtomicU64,
    pub text: AtomicU64,
    pub text_gzip: AtomicU64,
    pub text_br: AtomicU64,
    pub images: AtomicU64,
    pub img_original: AtomicU64,
    pub img_webp: AtomicU64,
    pub img_avif: AtomicU64,
    pub img_reencoded: AtomicU64,
    pub img_resized: AtomicU64,
    pub img_save_data: AtomicU64,
    pub pages_with_deps: AtomicU64,
    pub keepalive_retries: AtomicU64,
    pub avif_decodes: AtomicU64,
    pub bodies_decoded: AtomicU64,
}

/// A request that failed at the transport level, judged at the end against the kill and
/// reload times.
#[derive(Clone)]
pub struct Disruption {
    pub start: f64,
    pub end: f64,
    /// Some bytes had arrived (a cut response) or none had (a reset connection).
    pub cut: bool,
    pub what: String,
}

pub struct Violations {
    by_kind: Mutex<HashMap<&'static str, (u64, Vec<String>)>>,
}

impl Violations {
    pub fn new() -> Violations {
        Violations {
            by_kind: Mutex::new(HashMap::new()),
        }
    }

    pub fn add(&self, kind: &'static str, detail: String) {
        let mut m = self.by_kind.lock().unwrap();
        let e = m.entry(kind).or_default();
        e.0 += 1;
        if e.1.len() < 8 {
            e.1.push(detail);
        }
    }

    pub fn total(&self) -> u64 {
        self.by_kind.lock().unwrap().values().map(|e| e.0).sum()
    }

    pub fn report(&self) -> Vec<(String, u64, Vec<String>)> {
        let m = self.by_kind.lock().unwrap();
        let mut v: Vec<_> = m
            .iter()
            .map(|(k, (n, ex))| (k.to_string(), *n, ex.clone()))
            .collect();
        v.sort();
        v
    }
}

pub struct Checker {
    pub cat: Arc<Catalog>,
    pub oracle: Arc<Oracle>,
    pub counts: Counts,
    pub violations: Arc<Violations>,
    pub disruptions: Mutex<Vec<Disruption>>,
    pub t0: Instant,
    pub tmp: PathBuf,
    verdicts: Mutex<HashMap<[u8; 32], Result<Decoded, String>>>,
}

struct Label {
    id: u32,
    version: u32,
    format: Option<String>,
    width: Option<u32>,
    x2: bool,
    save_data: bool,
    encoding: Option<String>,
}

fn parse_etag(etag: &str) -> Option<Label> {
    let t = etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"');
    let mut parts = t.split('-');
    let id = parts.next()?.strip_prefix('r')?.parse().ok()?;
    // "v5" or, for a page, "v5.d<hash of its dependencies' versions>".
    let version = parts
        .next()?
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()?;
    let mut l = Label {
        id,
        version,
        format: None,
        width: None,
        x2: false,
        save_data: false,
        encoding: None,
    };
    for p in parts {
        match p {
            "webp" | "avif" | "jpeg" | "png" => l.format = Some(p.into()),
            "480" | "768" => l.width = p.parse().ok(),
            "2x" => l.x2 = true,
            "sd" => l.save_data = true,
            "gzip" | "br" => l.encoding = Some(p.into()),
            _ => return None,
        }
    }
    Some(l)
}

impl Checker {
    pub fn new(
        cat: Arc<Catalog>,
        oracle: Arc<Oracle>,
        violations: Arc<Violations>,
        t0: Instant,
        tmp: PathBuf,
    ) -> Checker {
        Checker {
            cat,
            oracle,
            counts: Counts::default(),
            violations,
            disruptions: Mutex::new(Vec::new()),
            t0,
            tmp,
            verdicts: Mutex::new(HashMap::new()),
        }
    }

    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Decodes once per distinct body (hits repeat bytes), keyed by the bytes and their labels.
    fn verdict(
        &self,
        key_extra: &str,
        body: &[u8],
        f: impl FnOnce() -> Result<Decoded, String>,
    ) -> Result<Decoded, String> {
        let mut h = blake3::Hasher::new();
        h.update(key_extra.as_bytes());
        h.update(&[0]);
        h.update(body);
        let key = *h.finalize().as_bytes();
        if let Some(v) = self.verdicts.lock().unwrap().get(&key) {
            return v.clone();
        }
        self.counts.bodies_decoded.fetch_add(1, Ordering::Relaxed);
        let v = f();
        let mut m = self.verdicts.lock().unwrap();
        if m.len() > 400_000 {
            m.clear();
        }
        m.insert(key, v.clone());
        v
    }

    fn bad(&self, kind: &'static str, path: &str, resp: &Response, detail: String) {
        self.violations.add(
            kind,
            format!(
                "{path}: {detail} [status {} X-Cache {} {} worker {} ETag {}]",
                resp.status,
                resp.header("x-cache").unwrap_or("-"),
                resp.header("x-cache-status").unwrap_or("-"),
                resp.header("x-worker").unwrap_or("-"),
                resp.header("etag").unwrap_or("-"),
            ),
        );
    }

    /// Checks one response to a GET of `id` by a client with profile `p` that started at
    /// `start`; `inm` is the ETag it sent in If-None-Match.
    fn check(
        &self,
        id: u32,
        p: &Profile,
        start: f64,
        inm: Option<&str>,
        resp: &Response,
    ) -> Option<String> {
        let c = &self.counts;
        let r = &self.cat.res[id as usize];
        let path = r.path.as_str();
        c.responses.fetch_add(1, Ordering::Relaxed);
        match resp.header("x-cache") {
            Some("HIT") => c.hits.fetch_add(1, Ordering::Relaxed),
            Some("MISS") => c.misses.fetch_add(1, Ordering::Relaxed),
            _ => c.other_cache_status.fetch_add(1, Ordering::Relaxed),
        };
        *c.statuses
            .lock()
            .unwrap()
            .entry(format!(
                "{} {}/{}",
                resp.status,
                resp.header("x-cache").unwrap_or("-"),
                resp.header("x-cache-status").unwrap_or("-")
            ))
            .or_default() += 1;
        let stale = matches!(
            resp.header("x-cache-status"),
            Some("STALE") | Some("UPDATING")
        );
        if stale {
            c.stale_marked.fetch_add(1, Ordering::Relaxed);
        }
        if resp.status >= 500 {
            if resp.header("x-soak-origin") == Some("error") {
                c.origin_5xx.fetch_add(1, Ordering::Relaxed);
            } else {
                self.bad(
                    "5xx not from the origin",
                    path,
                    resp,
                    String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]).into_owned(),
                );
            }
            return None;
        }
        let etag = resp.header("etag").unwrap_or("");
        let label = parse_etag(etag);
        if resp.status == 304 {
            c.not_modified.fetch_add(1, Ordering::Relaxed);
            let sent = inm.and_then(parse_etag);
            let Some(l) = label.filter(|l| {
                l.id == id && sent.as_ref().map(|s| (s.id, s.version)) == Some((l.id, l.version))
            }) else {
                self.bad(
                    "304 without a matching validator",
                    path,
                    resp,
                    format!("sent {inm:?}"),
                );
                return None;
            };
            // A 304 confirms the version the client holds: it must not predate a purge.
            self.linearizable(path, resp, &[(id, l.version, false)], start, stale);
            return None;
        }
        if resp.status != 200 {
            self.bad("unexpected status", path, resp, String::new());
            return None;
        }
        let Some(label) = label else {
            self.bad(
                "torn or foreign body",
                path,
                resp,
                format!("ETag {etag:?} is not one of ours"),
            );
            return None;
        };
        if label.id != id {
            self.bad(
                "torn or foreign body",
                path,
                resp,
                format!("ETag names r{}", label.id),
            );
            return None;
        }
        let ct = resp
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let ce = resp.header("content-encoding");
        let mut claims = vec![(id, label.version, false)];
        if r.kind.is_image() {
            c.images.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.check_image_variant(r, p, &label, &ct, ce, resp) {
                self.bad(e.0, path, resp, e.1);
                return None;
            }
        } else {
            c.text.fetch_add(1, Ordering::Relaxed);
            match ce {
                Some("gzip") => c.text_gzip.fetch_add(1, Ordering::Relaxed),
                Some("br") => c.text_br.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            let caps = p.caps();
            let accepted = match ce {
                None => true,
                Some("gzip") => caps.gzip,
                Some("br") => caps.br,
                Some(_) => false,
            };
            if !accepted {
                self.bad(
                    "variant the client cannot take",
                    path,
                    resp,
                    format!(
                        "Content-Encoding {ce:?} for Accept-Encoding {:?}",
                        p.accept_encoding
                    ),
                );
                return None;
            }
            if label.encoding.as_deref() != ce || label.format.is_some() || label.width.is_some() {
                self.bad(
                    "mislabelled variant",
                    path,
                    resp,
                    format!("Content-Encoding {ce:?}"),
                );
                return None;
            }
            if ct != r.kind.content_type() {
                self.bad(
                    "mislabelled variant",
                    path,
                    resp,
                    format!("Content-Type {ct}"),
                );
                return None;
            }
            let d = self.verdict(ce.unwrap_or("identity"), &resp.body, || {
                let plain = content::decompress(&resp.body, ce)?;
                content::check_text(&self.cat, &plain)
            });
            match d {
                Err(e) => {
                    self.bad("torn or foreign body", path, resp, e);
                    return None;
                }
                Ok(d) if d.id != id => {
                    self.bad(
                        "torn or foreign body",
                        path,
                        resp,
                        format!("body of {}", self.cat.res[d.id as usize].path),
                    );
                    return None;
                }
                Ok(d) if d.version != label.version => {
                    self.bad(
                        "torn or foreign body",
                        path,
                        resp,
                        format!("body v{} under ETag v{}", d.version, label.version),
                    );
                    return None;
                }
                Ok(d) => {
                    if !d.deps.is_empty() {
                        c.pages_with_deps.fetch_add(1, Ordering::Relaxed);
                    }
                    claims.extend(d.deps.iter().map(|&(did, dv)| (did, dv, true)));
                }
            }
        }
        self.linearizable(path, resp, &claims, start, stale);
        Some(etag.to_string())
    }

    fn check_image_variant(
        &self,
        r: &content::Resource,
        p: &Profile,
        l: &Label,
        ct: &str,
        ce: Option<&str>,
        resp: &Response,
    ) -> Result<(), (&'static str, String)> {
        let c = &self.counts;
        let caps = p.caps();
        if ce.is_some() || l.encoding.is_some() {
            return Err((
                "mislabelled variant",
                format!("image with Content-Encoding {ce:?}"),
            ));
        }
        let want_ct = match l.format.as_deref() {
            None => r.kind.content_type(),
            Some("webp") => "image/webp",
            Some("avif") => "image/avif",
            Some("jpeg") => "image/jpeg",
            Some(_) => "image/png",
        };
        if ct != want_ct {
            return Err((
                "mislabelled variant",
                format!("Content-Type {ct} for label {:?}", l.format),
            ));
        }
        let refused = match l.format.as_deref() {
            Some("avif") => !caps.avif,
            Some("webp") => !caps.webp,
            Some("jpeg") => r.kind != Kind::Jpeg,
            Some("png") => r.kind != Kind::Png,
            _ => false,
        } || l.width.is_some_and(|w| w != caps.viewport)
            || (l.width.is_some() && l.x2 != caps.x2)
            || (l.save_data && !caps.save_data);
        if refused {
            return Err((
                "variant the client cannot take",
                format!(
                    "{ct} {:?}-{:?}{}{} for Accept {:?}, UA {:?}, Save-Data {}, viewport {:?}, DPR {:?}",
                    l.format,
                    l.width,
                    if l.x2 { "-2x" } else { "" },
                    if l.save_data { "-sd" } else { "" },
                    p.accept,
                    p.user_agent,
                    p.save_data,
                    p.viewport_width,
                    p.dpr
                ),
            ));
        }
        // Resized to the class's width (twice for 2x), never up: a class at or above the
        // source width is served the full-size variant, so no resized label may name one
        // (src/transform/mod.rs, full_size_for).
        let (ew, eh) = match l.width.map(|w| if l.x2 { w * 2 } else { w }) {
            Some(tw) if tw < r.width => (
                tw,
                ((r.height as u64 * tw as u64) / r.width as u64).max(1) as u32,
            ),
            Some(tw) => {
                return Err((
                    "variant the client cannot take",
                    format!("a {tw} px variant of a {} px source", r.width),
                ))
            }
            None => (r.width, r.height),
        };
        match l.format.as_deref() {
            None => c.img_original.fetch_add(1, Ordering::Relaxed),
            Some("webp") => c.img_webp.fetch_add(1, Ordering::Relaxed),
            Some("avif") => c.img_avif.fetch_add(1, Ordering::Relaxed),
            Some(_) => c.img_reencoded.fetch_add(1, Ordering::Relaxed),
        };
        if l.width.is_some() {
            c.img_resized.fetch_add(1, Ordering::Relaxed);
        }
        if l.save_data {
            c.img_save_data.fetch_add(1, Ordering::Relaxed);
        }
        let original = l.format.is_none() && l.width.is_none() && !l.save_data;
        // An original must be the origin's bytes exactly; a variant must decode as labelled,
        // with the URL's and version's cells.
        if original {
            if *self.cat.image(r.id, l.version) != resp.body {
                return Err((
                    "torn or foreign body",
                    format!("original of v{} differs from the origin's bytes", l.version),
                ));
            }
            return Ok(());
        }
        let d = self.verdict(ct, &resp.body, || {
            if ct == "image/avif" {
                c.avif_decodes.fetch_add(1, Ordering::Relaxed);
            }
            content::check_image(&resp.body, ct, &self.tmp)
        });
        let d = d.map_err(|e| ("torn or foreign body", e))?;
        if d.id != r.id {
            return Err((
                "torn or foreign body",
                format!("pixels of {}", self.cat.res[d.id as usize].path),
            ));
        }
        if d.version != l.version & 0xffff {
            return Err((
                "torn or foreign body",
                format!("pixels of v{} under ETag v{}", d.version, l.version),
            ));
        }
        if (d.width, d.height) != (ew, eh) {
            return Err((
                "mislabelled variant",
                format!("{}x{} where {ew}x{eh} was due", d.width, d.height),
            ));
        }
        Ok(())
    }

    fn linearizable(
        &self,
        path: &str,
        resp: &Response,
        claims: &[(u32, u32, bool)],
        start: f64,
        stale: bool,
    ) {
        for &(id, v, as_dep) in claims {
            let req = self.oracle.required(id, as_dep, start);
            let what = if as_dep {
                format!("dependency {} ", self.cat.res[id as usize].path)
            } else {
                String::new()
            };
            if let Some(f) = req.hard.filter(|f| v < f.version) {
                self.bad(
                    "pre-purge version after the receipt",
                    path,
                    resp,
                    format!(
                        "{what}v{v}, but purge #{} ({}) of v{} was received at {:.3} s, {:.3} s before this request",
                        f.seq,
                        f.cause.as_str(),
                        f.version,
                        f.at,
                        start - f.at
                    ),
                );
            } else if let Some(f) = req.soft.filter(|f| v < f.version) {
                if stale {
                    self.counts
                        .stale_old_allowed
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    self.bad(
                        "old version served as fresh",
                        path,
                        resp,
                        format!(
                            "{what}v{v} not marked stale, but {} #{} of v{} applied from {:.3} s, {:.3} s before this request",
                            if f.cause.as_str() == "expiry" { "expiry" } else { "soft purge" },
                            f.seq,
                            f.version,
                            f.at,
                            start - f.at
                        ),
                    );
                }
            }
        }
    }
}

pub struct LoadConfig {
    pub addr: SocketAddr,
    pub clients: u32,
    pub think_ms: u64,
    pub seed: u64,
}

/// Zipf(1) ranks mapped through a fixed shuffle, so popular URLs are of every kind and
/// directory; images, a sixth of the URLs, get a third of the requests (their variants are
/// what the builders make), text the rest.
struct Popularity {
    images: Zipf,
    text: Zipf,
}

struct Zipf {
    cdf: Vec<f64>,
    ids: Vec<u32>,
}

impl Zipf {
    fn new(mut ids: Vec<u32>, rng: &mut Rng) -> Zipf {
        let n = ids.len();
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += 1.0 / k as f64;
            cdf.push(acc);
        }
        for x in cdf.iter_mut() {
            *x /= acc;
        }
        for i in (1..n).rev() {
            ids.swap(i, rng.below(i as u64 + 1) as usize);
        }
        Zipf { cdf, ids }
    }

    fn pick(&self, rng: &mut Rng) -> u32 {
        let u = rng.unit();
        let k = self.cdf.partition_point(|&c| c < u).min(self.ids.len() - 1);
        self.ids[k]
    }
}

impl Popularity {
    fn new(cat: &Catalog, seed: u64) -> Popularity {
        let mut rng = Rng::new(seed ^ 0x5a5a);
        let (images, text): (Vec<u32>, Vec<u32>) =
            (0..cat.len() as u32).partition(|&i| cat.res[i as usize].kind.is_image());
        Popularity {
            images: Zipf::new(images, &mut rng),
            text: Zipf::new(text, &mut rng),
        }
    }

    fn pick(&self, rng: &mut Rng) -> u32 {
        if rng.below(3) == 0 {
            self.images.pick(rng)
        } else {
            self.text.pick(rng)
        }
    }
}

pub fn run_clients(
    ck: Arc<Checker>,
    cfg: &LoadConfig,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let pop = Arc::new(Popularity::new(&ck.cat, cfg.seed));
    (0..cfg.clients)
        .map(|n| {
            let (ck, pop, stop) = (ck.clone(), pop.clone(), stop.clone());
            let (addr, think, seed) = (cfg.addr, cfg.think_ms, cfg.seed);
            std::thread::Builder::new()
                .name(format!("client-{n}"))
                .spawn(move || {
                    client(
                        ck,
                        pop,
                        addr,
                        think,
                        seed ^ ((n as u64 + 1) * 0x1234_5678_9abc),
                        stop,
                    )
                })
                .expect("spawn client")
        })
        .collect()
}

fn client(
    ck: Arc<Checker>,
    pop: Arc<Popularity>,
    addr: SocketAddr,
    think_ms: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(seed);
    let mut conn = Conn::new(addr, Duration::from_secs(30));
    let mut seen: HashMap<u32, String> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let id = pop.pick(&mut rng);
        let p = Profile::random(&mut rng);
        let path = &ck.cat.res[id as usize].path;
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
        p.headers(&mut head);
        let inm = if rng.below(10) == 0 {
            seen.get(&id).cloned()
        } else {
            None
        };
        if let Some(e) = &inm {
            head.push_str(&format!("If-None-Match: {e}\r\n"));
            ck.counts.conditional_sent.fetch_add(1, Ordering::Relaxed);
        }
        let mut attempt = 0;
        loop {
            let reused = conn.used > 0;
            let start = ck.now();
            match conn.request(&head, b"") {
                Ok(resp) => {
                    if let Some(etag) = ck.check(id, &p, start, inm.as_deref(), &resp) {
                        seen.insert(id, etag);
                    }
                }
                // An idle keep-alive connection the server closed (reload, keepalive limits):
                // retry once on a fresh one, as clients do.
                Err(Failure::ClosedBeforeResponse) if reused && attempt == 0 => {
                    ck.counts.keepalive_retries.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    continue;
                }
                Err(Failure::Timeout(n)) => ck.violations.add(
                    "request timed out (30 s)",
                    format!("{path}: {n} bytes received"),
                ),
                Err(Failure::Malformed(m)) => ck
                    .violations
                    .add("malformed response", format!("{path}: {m}")),
                Err(f) => {
                    let cut = matches!(f, Failure::Cut(_));
                    ck.disruptions.lock().unwrap().push(Disruption {
                        start,
                        end: ck.now(),
                        cut,
                        what: format!("{path}: {f}"),
                    });
                    if matches!(f, Failure::Connect(_)) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            break;
        }
        if think_ms > 0 {
            std::thread::sleep(Duration::from_micros(rng.below(think_ms * 2000)));
        }
    }
}
