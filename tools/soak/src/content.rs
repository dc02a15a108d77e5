//! The soak's URL catalogue and its self-describing bodies: text that names its URL, version
//! and dependencies and ends in a checksum; images whose pixels spell their URL id and version
//! in big cells that survive resizing and lossy re-encoding. The checks decode what a response
//! says it is and tell torn, foreign and mislabelled bodies apart.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use image::{ImageFormat, RgbImage};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Css,
    Js,
    Html,
    Json,
    Txt,
    Png,
    Jpeg,
}

impl Kind {
    fn of(id: u32) -> Kind {
        match id % 20 {
            0 if id % 60 == 0 => Kind::Png,
            0..=2 => Kind::Jpeg,
            3 | 4 => Kind::Html,
            5..=8 => Kind::Css,
            9..=12 => Kind::Js,
            13..=15 => Kind::Json,
            _ => Kind::Txt,
        }
    }

    fn ext(self) -> &'static str {
        match self {
            Kind::Css => "css",
            Kind::Js => "js",
            Kind::Html => "html",
            Kind::Json => "json",
            Kind::Txt => "txt",
            Kind::Png => "png",
            Kind::Jpeg => "jpg",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Css => "text/css",
            Kind::Js => "application/javascript",
            Kind::Html => "text/html",
            Kind::Json => "application/json",
            Kind::Txt => "text/plain",
            Kind::Png => "image/png",
            Kind::Jpeg => "image/jpeg",
        }
    }

    pub fn is_image(self) -> bool {
        matches!(self, Kind::Png | Kind::Jpeg)
    }
}

pub struct Resource {
    pub id: u32,
    pub path: String,
    pub kind: Kind,
    /// Directory prefixes it lives under: `/dNN/` and `/dNN/sM/`.
    pub dir: u32,
    pub sub: u32,
    /// Tag group (`Surrogate-Key: gNN`).
    pub group: u32,
    /// Resources an HTML page is built from (`Cache-Tag: /path, ...`).
    pub deps: Vec<u32>,
    /// `Cache-Control: max-age`; a few seconds for the URLs that exercise expiry.
    pub max_age: u32,
    pub width: u32,
    pub height: u32,
    text_len: usize,
}

pub const DIRS: u32 = 24;
pub const SUBS: u32 = 4;
pub const GROUPS: u32 = 40;

pub struct Catalog {
    pub res: Vec<Resource>,
    versions: Vec<AtomicU32>,
    by_path: HashMap<String, u32>,
    /// For each resource, the pages that declare it as a dependency.
    pub dependents: Vec<Vec<u32>>,
    /// Each image's bytes at its newest version seen, so the origin encodes an image once per
    /// version and the checks compare originals without encoding again.
    images: Mutex<HashMap<u32, Versioned>>,
}

/// Bytes and the version they are of.
type Versioned = (u32, Arc<Vec<u8>>);

impl Catalog {
    pub fn new(n: u32) -> Catalog {
        let mut res = Vec::with_capacity(n as usize);
        for id in 0..n {
            let kind = Kind::of(id);
            let dir = (id / 7) % DIRS;
            let sub = id % SUBS;
            let (width, height) = match kind {
                // PNG sources stay under ~0.5 MB so they fit the segment's object cap.
                Kind::Png => {
                    let w = 500 + (id * 53) % 150;
                    (w, if id % 3 == 0 { w * 2 / 3 } else { w * 3 / 4 })
                }
                Kind::Jpeg => {
                    let w = 520 + (id * 53) % 520;
                    (w, if id % 3 == 0 { w * 9 / 16 } else { w * 3 / 4 })
                }
                _ => (0, 0),
            };
            res.push(Resource {
                id,
                path: format!("/d{dir:02}/s{sub}/{id}.{}", kind.ext()),
                kind,
                dir,
                sub,
                group: (id * 31) % GROUPS,
                deps: Vec::new(),
                max_age: if id % 11 == 5 { 2 + id % 4 } else { 3600 },
                width,
                height,
                text_len: 1200 + (id as usize * 397) % 16000,
            });
        }
        // Pages depend on two non-page resources (stylesheets, scripts, images, ...).
        let mut dependents = vec![Vec::new(); n as usize];
        for id in 0..n {
            if res[id as usize].kind != Kind::Html {
                continue;
            }
            let mut deps = Vec::new();
            for start in [(id * 7 + 3) % n, (id * 13 + 5) % n] {
                let mut d = start;
                while res[d as usize].kind == Kind::Html || d == id || deps.contains(&d) {
                    d = (d + 1) % n;
                }
                deps.push(d);
                dependents[d as usize].push(id);
            }
            res[id as usize].deps = deps;
        }
        let by_path = res.iter().map(|r| (r.path.clone(), r.id)).collect();
        Catalog {
            versions: (0..n).map(|_| AtomicU32::new(1)).collect(),
            res,
            by_path,
            dependents,
            images: Mutex::new(HashMap::new()),
        }
    }

    /// The origin's bytes of image `id` at version `v`.
    pub fn image(&self, id: u32, v: u32) -> Arc<Vec<u8>> {
        if let Some((cv, b)) = self.images.lock().unwrap().get(&id) {
            if *cv == v {
                return b.clone();
            }
        }
        let b = Arc::new(image_body(&self.res[id as usize], v));
        let mut m = self.images.lock().unwrap();
        if m.get(&id).is_none_or(|(cv, _)| *cv < v) {
            m.insert(id, (v, b.clone()));
        }
        b
    }

    pub fn len(&self) -> usize {
        self.res.len()
    }

    pub fn id_of(&self, path: &str) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    pub fn version(&self, id: u32) -> u32 {
        self.versions[id as usize].load(Ordering::SeqCst)
    }

    /// The origin serves the new version from now on; returns it.
    pub fn bump(&self, id: u32) -> u32 {
        self.versions[id as usize].fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The `deps=` field of a page as the origin writes it now: `path@version,...` or `-`.
    pub fn deps_field(&self, r: &Resource) -> String {
        if r.deps.is_empty() {
            return "-".into();
        }
        let parts: Vec<String> = r
            .deps
            .iter()
            .map(|&d| format!("{}@{}", self.res[d as usize].path, self.version(d)))
            .collect();
        parts.join(",")
    }
}

fn lcg(x: u64) -> u64 {
    x.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

/// A text body: a header line naming URL, version and dependencies, CSS-like filler derived
/// from that line (compressible, so gzip and br variants get built) and a checksum line.
pub fn text_body(r: &Resource, v: u32, deps: &str) -> Vec<u8> {
    let mut s = format!("SOAK {} v={v} deps={deps}\n", r.path);
    let h = blake3::hash(s.as_bytes());
    let mut x = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap());
    let mut i = 0;
    while s.len() < r.text_len {
        x = lcg(x);
        let _ = writeln!(
            s,
            ".c{}-{i} {{ margin: {}px {}px; color: #{:06x}; }}",
            r.id,
            (x >> 40) % 40,
            (x >> 50) % 12,
            (x >> 8) & 0x3f3f3f
        );
        i += 1;
    }
    let sum = blake3::hash(s.as_bytes()).to_hex();
    let _ = writeln!(s, "END {}", &sum[..16]);
    s.into_bytes()
}

pub const COLS: u32 = 8;
pub const ROWS: u32 = 6;
const CALIBRATION: u64 = 0b1010_0101;

fn check_byte(id: u32, v: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&id.to_le_bytes());
    b[4..].copy_from_slice(&(v & 0xffff).to_le_bytes());
    blake3::hash(&b).as_bytes()[0] as u64
}

/// 48 cell bits: id (16), version (low 16), a check byte of both, a fixed calibration byte.
fn cell_bits(id: u32, v: u32) -> u64 {
    (id as u64 & 0xffff)
        | ((v as u64 & 0xffff) << 16)
        | (check_byte(id, v) << 32)
        | (CALIBRATION << 40)
}

/// The pixels of image `r` at version `v`: a grid of dark and light cells with texture (so lossy
/// formats beat the source and variants get built) that spells the id and version.
pub fn pixels(r: &Resource, v: u32) -> RgbImage {
    let bits = cell_bits(r.id, v);
    let (w, h) = (r.width, r.height);
    RgbImage::from_fn(w, h, |x, y| {
        let cell = (y * ROWS / h) * COLS + x * COLS / w;
        let base: i32 = if bits >> cell & 1 == 1 { 200 } else { 55 };
        // Low-amplitude noise (lossless PNG keeps it, lossy encoders drop it) over a ramp.
        let n =
            (x.wrapping_mul(0x9e37_79b1) ^ y.wrapping_mul(0x85eb_ca77)).wrapping_mul(0xc2b2_ae35);
        let t = ((n >> 31) as i32) * 4 - 2;
        let g = ((x * 24 / w) as i32) - 12;
        let px = |d: i32| (base + d).clamp(0, 255) as u8;
        image::Rgb([px(t), px(g), px(-g)])
    })
}

pub fn image_body(r: &Resource, v: u32) -> Vec<u8> {
    let img = pixels(r, v);
    let mut out = Vec::new();
    match r.kind {
        Kind::Png => {
            let enc = image::codecs::png::PngEncoder::new_with_quality(
                &mut out,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Adaptive,
            );
            img.write_with_encoder(enc).expect("png encode");
        }
        _ => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
            img.write_with_encoder(enc).expect("jpeg encode");
        }
    }
    out
}

/// Reads the cells back: (id, version low 16 bits). Every cell must be clearly dark or light.
pub fn read_cells(img: &RgbImage) -> Result<(u32, u32), String> {
    let (w, h) = img.dimensions();
    if w < COLS * 4 || h < ROWS * 4 {
        return Err(format!("{w}x{h} too small to hold the pattern"));
    }
    let mut bits = 0u64;
    for cell in 0..COLS * ROWS {
        let (cx, cy) = (cell % COLS, cell / COLS);
        let (x0, x1) = (cx * w / COLS, (cx + 1) * w / COLS);
        let (y0, y1) = (cy * h / ROWS, (cy + 1) * h / ROWS);
        // The middle half of the cell, 6 x 6 samples: away from edges that resizing blurs.
        let mut sum = 0u32;
        for sy in 0..6 {
            for sx in 0..6 {
                let x = x0 + (x1 - x0) / 4 + (x1 - x0) / 2 * sx / 6;
                let y = y0 + (y1 - y0) / 4 + (y1 - y0) / 2 * sy / 6;
                let p = img.get_pixel(x, y);
                sum += (p[0] as u32 + p[1] as u32 + p[2] as u32) / 3;
            }
        }
        let mean = sum / 36;
        if mean > 150 {
            bits |= 1 << cell;
        } else if mean >= 105 {
            return Err(format!(
                "cell {cell} is neither dark nor light (mean {mean})"
            ));
        }
    }
    let (id, v) = ((bits & 0xffff) as u32, ((bits >> 16) & 0xffff) as u32);
    if bits >> 40 != CALIBRATION || (bits >> 32) & 0xff != check_byte(id, v) {
        return Err(format!("cells do not check out (bits {bits:012x})"));
    }
    Ok((id, v))
}

/// What a verified body says about itself.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub id: u32,
    /// The version; for images the low 16 bits (the ETag carries the whole number).
    pub version: u32,
    pub deps: Vec<(u32, u32)>,
    pub width: u32,
    pub height: u32,
}

pub fn decompress(body: &[u8], encoding: Option<&str>) -> Result<Vec<u8>, String> {
    use std::io::Read;
    match encoding {
        None | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip body does not decode: {e}"))?;
            Ok(out)
        }
        Some("br") => {
            let mut out = Vec::new();
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .map_err(|e| format!("br body does not decode: {e}"))?;
            Ok(out)
        }
        Some(other) => Err(format!("unexpected Content-Encoding {other}")),
    }
}

/// Checks a (decompressed) text body byte for byte against what the origin makes for the URL,
/// version and dependencies its first line names.
pub fn check_text(cat: &Catalog, body: &[u8]) -> Result<Decoded, String> {
    let nl = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let head = std::str::from_utf8(&body[..nl]).map_err(|_| "header line is not UTF-8")?;
    let mut f = head.split(' ');
    let (magic, path, v, deps) = (f.next(), f.next(), f.next(), f.next());
    let (Some("SOAK"), Some(path), Some(v), Some(deps)) = (magic, path, v, deps) else {
        return Err(format!(
            "not a soak body: {:?}",
            &head[..head.len().min(80)]
        ));
    };
    let id = cat
        .id_of(path)
        .ok_or_else(|| format!("unknown URL {path}"))?;
    let v: u32 = v
        .strip_prefix("v=")
        .and_then(|v| v.parse().ok())
        .ok_or("bad version field")?;
    let deps = deps.strip_prefix("deps=").ok_or("bad deps field")?;
    let r = &cat.res[id as usize];
    if text_body(r, v, deps) != body {
        return Err(format!(
            "body of {path} v={v} differs from what the origin made ({} bytes)",
            body.len()
        ));
    }
    let mut claims = Vec::new();
    if deps != "-" {
        for d in deps.split(',') {
            let (p, dv) = d.split_once('@').ok_or("bad dependency")?;
            let did = cat.id_of(p).ok_or("unknown dependency")?;
            claims.push((did, dv.parse().map_err(|_| "bad dependency version")?));
        }
    }
    Ok(Decoded {
        id,
        version: v,
        deps: claims,
        width: 0,
        height: 0,
    })
}

/// Decodes an image body as `content_type` says and reads its cells. AVIF goes through
/// Debian's `avifdec` (no AV1 decoder among the workspace's crates).
pub fn check_image(
    body: &[u8],
    content_type: &str,
    tmp: &std::path::Path,
) -> Result<Decoded, String> {
    let img = match content_type {
        "image/png" => image::load_from_memory_with_format(body, ImageFormat::Png),
        "image/jpeg" => image::load_from_memory_with_format(body, ImageFormat::Jpeg),
        "image/webp" => image::load_from_memory_with_format(body, ImageFormat::WebP),
        "image/avif" => Ok(decode_avif(body, tmp)?),
        other => return Err(format!("unexpected image Content-Type {other}")),
    }
    .map_err(|e| format!("{content_type} body does not decode: {e}"))?
    .to_rgb8();
    let (id, version) = read_cells(&img)?;
    Ok(Decoded {
        id,
        version,
        deps: Vec::new(),
        width: img.width(),
        height: img.height(),
    })
}

fn decode_avif(body: &[u8], tmp: &std::path::Path) -> Result<image::DynamicImage, String> {
    if body.len() < 12 || &body[4..8] != b"ftyp" || !body[8..12].starts_with(b"avi") {
        return Err("not an AVIF file (no ftyp avif box)".into());
    }
    // Clients may decode the same body at once: each call its own file names.
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let stem = format!(
        "{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    );
    let input = tmp.join(format!("{stem}.avif"));
    let output = tmp.join(format!("{stem}.png"));
    std::fs::write(&input, body).map_err(|e| format!("write {}: {e}", input.display()))?;
    let run = std::process::Command::new("avifdec")
        .arg("--jobs")
        .arg("1")
        .arg(&input)
        .arg(&output)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    let _ = std::fs::remove_file(&input);
    let run = run.map_err(|e| format!("cannot run avifdec: {e}"))?;
    if !run.status.success() {
        let _ = std::fs::remove_file(&output);
        return Err(format!(
            "AVIF body does not decode: {}",
            String::from_utf8_lossy(&run.stderr).trim()
        ));
    }
    let png = std::fs::read(&output).map_err(|e| format!("read avifdec output: {e}"));
    let _ = std::fs::remove_file(&output);
    image::load_from_memory_with_format(&png?, ImageFormat::Png)
        .map_err(|e| format!("avifdec output: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bodies_check_and_reject_changes() {
        let cat = Catalog::new(200);
        let page = cat.res.iter().find(|r| r.kind == Kind::Html).unwrap();
        let body = text_body(page, 7, &cat.deps_field(page));
        let d = check_text(&cat, &body).unwrap();
        assert_eq!((d.id, d.version, d.deps.len()), (page.id, 7, 2));
        let mut torn = body.clone();
        let n = torn.len();
        torn[n / 2] ^= 1;
        assert!(check_text(&cat, &torn).is_err());
        assert!(check_text(&cat, &body[..n - 10]).is_err());
    }

    #[test]
    fn image_cells_survive_resizing_and_lossy_encoding() {
        let cat = Catalog::new(200);
        for r in cat.res.iter().filter(|r| r.kind.is_image()).take(3) {
            let img = pixels(r, 12345);
            assert_eq!(read_cells(&img).unwrap(), (r.id, 12345));
            let small = image::imageops::resize(
                &img,
                480,
                r.height * 480 / r.width,
                image::imageops::FilterType::Triangle,
            );
            assert_eq!(read_cells(&small).unwrap(), (r.id, 12345));
            let jpeg = image_body(
                &Resource {
                    kind: Kind::Jpeg,
                    ..clone(r)
                },
                3,
            );
            let back = image::load_from_memory(&jpeg).unwrap().to_rgb8();
            assert_eq!(read_cells(&back).unwrap(), (r.id, 3));
        }
    }

    fn clone(r: &Resource) -> Resource {
        Resource {
            id: r.id,
            path: r.path.clone(),
            kind: r.kind,
            dir: r.dir,
            sub: r.sub,
            group: r.group,
            deps: r.deps.clone(),
            max_age: r.max_age,
            width: r.width,
            height: r.height,
            text_len: r.text_len,
        }
    }
}
