//! Variant builder benchmarks: time per build of a ~1 MP photo-like JPEG to WebP, to AVIF and to
//! a 480 px WebP, and of gzip and brotli alternates of a ~100 KiB CSS file, through
//! `transform::build` with the default `Limits` and `Quality` (what the module's builder threads run).
//! JPEG decoding alone is measured too, to split a build into decode and encode.
//!
//! Run with `cargo bench --bench build`; `scripts/bench-build` runs it and then times `cwebp`,
//! `avifenc`, `gzip` and `brotli` on the same files. The inputs and our outputs are written to
//! `target/bench-build/` (override with `BENCH_BUILD_DIR`) so the tools read the very same bytes,
//! and a summary with sizes is printed and written to `target/bench-build/ours.tsv`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, SamplingMode};

use ngx_http_pagespeed_module::transform::{self, Built, Limits, Quality};
use ngx_http_pagespeed_module::variant::{
    Density, Descriptor, Encoding, Format, SourceKind, Viewport,
};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;
const JPEG_QUALITY: u8 = 90;
const CSS_TARGET: usize = 100 * 1024;

// ---------------------------------------------------------------------------------------------
// Inputs, generated deterministically.

/// A 32-bit integer hash (lowbias32): the lattice values of the noise.
fn hash(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

fn lattice(ix: i32, iy: i32, seed: u32) -> f32 {
    let h =
        hash((ix as u32).wrapping_mul(0x9e37_79b1) ^ (iy as u32).wrapping_mul(0x85eb_ca77) ^ seed);
    h as f32 / u32::MAX as f32
}

/// Smooth value noise in 0..1 at a scale of `cell` pixels.
fn value_noise(x: f32, y: f32, cell: f32, seed: u32) -> f32 {
    let (fx, fy) = (x / cell, y / cell);
    let (ix, iy) = (fx.floor() as i32, fy.floor() as i32);
    let (tx, ty) = (fx - ix as f32, fy - iy as f32);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = lattice(ix, iy, seed);
    let b = lattice(ix + 1, iy, seed);
    let c = lattice(ix, iy + 1, seed);
    let d = lattice(ix + 1, iy + 1, seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// Fractal noise: octaves from 160 px down to 5 px, in 0..1.
fn fbm(x: f32, y: f32, seed: u32) -> f32 {
    let mut sum = 0.0;
    let mut amp = 0.5;
    let mut cell = 160.0;
    let mut norm = 0.0;
    for o in 0..6 {
        sum += amp * value_noise(x, y, cell, seed.wrapping_add(o * 7919));
        norm += amp;
        amp *= 0.55;
        cell /= 2.0;
    }
    sum / norm
}

/// A photo-like landscape: a sky gradient with soft clouds, textured hills with light from the
/// left, a few shaded round objects, and sensor grain, encoded as a baseline JPEG.
fn photo_jpeg() -> Vec<u8> {
    let mut img = image::RgbImage::new(WIDTH, HEIGHT);
    let (w, h) = (WIDTH as f32, HEIGHT as f32);
    let balls = [
        (260.0_f32, 610.0_f32, 95.0_f32, [200.0_f32, 60.0, 40.0]),
        (780.0, 560.0, 140.0, [70.0, 110.0, 190.0]),
        (1040.0, 700.0, 70.0, [230.0, 190.0, 60.0]),
    ];
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (xf, yf) = (x as f32, y as f32);
        let horizon = 0.42 * h + 60.0 * (xf / w * 5.0).sin() + 80.0 * (fbm(xf, 0.0, 99) - 0.5);
        let mut rgb = if yf < horizon {
            // Sky: deep blue at the top to pale near the horizon, with clouds.
            let t = yf / horizon;
            let cloud = (fbm(xf * 0.7, yf * 1.6, 1) - 0.45).max(0.0) * 2.2;
            let base = [40.0 + 120.0 * t, 90.0 + 110.0 * t, 180.0 + 60.0 * t];
            [
                base[0] + (245.0 - base[0]) * cloud.min(1.0),
                base[1] + (245.0 - base[1]) * cloud.min(1.0),
                base[2] + (250.0 - base[2]) * cloud.min(1.0),
            ]
        } else {
            // Ground: grass and soil texture, darker towards the bottom-right.
            let tex = fbm(xf, yf, 2);
            let fine = value_noise(xf, yf, 2.5, 3);
            let light = 1.15 - 0.45 * (xf / w) - 0.25 * ((yf - horizon) / (h - horizon));
            [
                (60.0 + 90.0 * tex + 30.0 * fine) * light,
                (90.0 + 100.0 * tex + 35.0 * fine) * light,
                (30.0 + 40.0 * tex + 15.0 * fine) * light,
            ]
        };
        for &(cx, cy, r, col) in &balls {
            let (dx, dy) = (xf - cx, yf - cy);
            let d2 = (dx * dx + dy * dy) / (r * r);
            if d2 < 1.0 {
                // Lambert shading with the light at the upper left, soft edge.
                let nz = (1.0 - d2).sqrt();
                let shade =
                    (0.25 + 0.75 * (-0.5 * dx / r - 0.5 * dy / r + 0.7 * nz)).clamp(0.1, 1.1);
                let edge = ((1.0 - d2) * 12.0).min(1.0);
                let spot = (value_noise(xf, yf, 9.0, 4) - 0.5) * 30.0;
                for c in 0..3 {
                    rgb[c] = rgb[c] * (1.0 - edge) + (col[c] * shade + spot) * edge;
                }
            }
        }
        let i = y * WIDTH + x;
        for (c, v) in rgb.iter().enumerate() {
            let grain = (hash(i * 3 + c as u32) % 13) as f32 - 6.0;
            px[c] = (v + grain).round().clamp(0.0, 255.0) as u8;
        }
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode_image(&img)
        .expect("jpeg");
    out
}

/// A stylesheet of about 100 KiB: many rules with varied selectors, properties and values, as a
/// site's bundled CSS is.
fn css() -> Vec<u8> {
    const PROPS: &[&str] = &[
        "margin",
        "padding",
        "color",
        "background-color",
        "border",
        "font-size",
        "line-height",
        "display",
        "width",
        "max-width",
        "transition",
        "box-shadow",
    ];
    const PARTS: &[&str] = &[
        "card", "header", "nav", "btn", "footer", "grid", "item", "title", "body", "media", "list",
        "modal", "form", "input", "label", "icon",
    ];
    // A site's colours come from a palette.
    const PALETTE: &[&str] = &[
        "#fff",
        "#000",
        "#333",
        "#666",
        "#999",
        "#ccc",
        "#f5f5f5",
        "#e9ecef",
        "#0d6efd",
        "#6610f2",
        "#d63384",
        "#dc3545",
        "#fd7e14",
        "#ffc107",
        "#198754",
        "#20c997",
        "#0dcaf0",
        "rgba(0, 0, 0, .125)",
        "transparent",
        "inherit",
        "currentColor",
    ];
    let mut s = String::new();
    let mut i = 0u32;
    while s.len() < CSS_TARGET {
        let h = hash(i);
        let a = PARTS[(h % 16) as usize];
        let b = PARTS[((h >> 4) % 16) as usize];
        s.push_str(&format!(".{a}-{b}--{} > .{b}:hover {{\n", h % 97));
        for k in 0..(2 + h % 5) {
            let hk = hash(h ^ k);
            let p = PROPS[(hk % PROPS.len() as u32) as usize];
            let v = match p {
                "color" | "background-color" => PALETTE[(hk >> 8) as usize % PALETTE.len()].into(),
                "border" => format!("{}px solid rgba(0, 0, 0, 0.{})", hk % 4, hk % 9),
                "display" => ["block", "flex", "grid", "none"][(hk % 4) as usize].to_string(),
                "transition" => format!("opacity {}ms ease-in-out", 50 * (hk % 8)),
                "box-shadow" => format!("0 {}px {}px rgba(0, 0, 0, .{})", hk % 5, hk % 17, hk % 7),
                _ => format!(
                    "{}{}",
                    hk % 400,
                    ["px", "rem", "%", "em"][(hk % 4) as usize]
                ),
            };
            s.push_str(&format!("  {p}: {v};\n"));
        }
        s.push_str("}\n");
        i += 1;
    }
    s.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Cases.

struct Case {
    id: &'static str,
    what: &'static str,
    kind: SourceKind,
    target: Descriptor,
    file: &'static str,
}

fn cases() -> Vec<Case> {
    let img = |f, v| Descriptor::variant(f, v, Density::X1, false, Encoding::Identity);
    vec![
        Case {
            id: "jpeg_to_webp",
            what: "JPEG -> WebP q80",
            kind: SourceKind::Jpeg,
            target: img(Format::Webp, Viewport::Original),
            file: "ours.webp",
        },
        Case {
            id: "jpeg_to_avif",
            what: "JPEG -> AVIF q60 speed 8",
            kind: SourceKind::Jpeg,
            target: img(Format::Avif, Viewport::Original),
            file: "ours.avif",
        },
        Case {
            id: "jpeg_to_webp_480",
            what: "JPEG -> 480 px WebP q80",
            kind: SourceKind::Jpeg,
            target: img(Format::Webp, Viewport::W480),
            file: "ours-480.webp",
        },
        Case {
            id: "css_gzip",
            what: "CSS -> gzip (level 6)",
            kind: SourceKind::Text,
            target: Descriptor::original(Encoding::Gzip, None),
            file: "ours.css.gz",
        },
        Case {
            id: "css_br",
            what: "CSS -> br (quality 6, window 22)",
            kind: SourceKind::Text,
            target: Descriptor::original(Encoding::Br, None),
            file: "ours.css.br",
        },
    ]
}

fn out_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BENCH_BUILD_DIR") {
        return d.into();
    }
    target_dir().join("bench-build")
}

fn target_dir() -> PathBuf {
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return target.into();
    }
    // target/release/deps/build-<hash>
    let exe = std::env::current_exe().expect("exe");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

fn criterion_dir() -> PathBuf {
    match std::env::var_os("CRITERION_HOME") {
        Some(home) => home.into(),
        None => target_dir().join("criterion"),
    }
}

fn body(b: Result<Built, transform::BuildError>) -> Vec<u8> {
    match b.expect("build") {
        Built::Variant { body, .. } => body,
        Built::Declined(why) => panic!("declined: {why}"),
    }
}

fn bench_builds(c: &mut Criterion, jpeg: &[u8], css: &[u8]) {
    let (limits, q) = (Limits::default(), Quality::default());
    let mut g = c.benchmark_group("build");
    g.bench_function("decode_jpeg", |b| {
        b.iter(|| {
            black_box(
                transform::image::decode(black_box(jpeg), SourceKind::Jpeg, &limits)
                    .expect("decode"),
            )
        })
    });
    for case in cases() {
        let src = if case.kind == SourceKind::Text {
            css
        } else {
            jpeg
        };
        if case.id == "jpeg_to_avif" {
            // Seconds a build: ten samples of one build each (criterion's minimum).
            g.sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .measurement_time(Duration::from_secs(10));
        } else {
            g.sampling_mode(SamplingMode::Auto)
                .sample_size(20)
                .measurement_time(Duration::from_secs(2));
        }
        g.bench_function(case.id, |b| {
            b.iter(|| {
                black_box(transform::build(
                    black_box(src),
                    case.kind,
                    case.target,
                    &limits,
                    &q,
                ))
            })
        });
    }
    g.finish();
}

/// Median time in ns of a benchmark of this run.
fn median_ns(id: &str) -> Option<f64> {
    let f = criterion_dir().join(id).join("new").join("estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn fmt_ms(ns: f64) -> String {
    format!("{:.2} ms", ns / 1e6)
}

fn report(jpeg: &[u8], css: &[u8], sizes: &[(&'static str, usize)]) {
    let dir = out_dir();
    println!("\n## summary (criterion medians of this run; outputs in {dir:?})");
    println!(
        "source: photo.jpg {WIDTH}x{HEIGHT} q{JPEG_QUALITY} {} B; site.css {} B",
        jpeg.len(),
        css.len()
    );
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>8}",
        "build", "median", "output", "saved", "ratio"
    );
    let mut tsv = String::from("id\tmedian_ns\tsource_bytes\toutput_bytes\n");
    if let Some(ns) = median_ns("build/decode_jpeg") {
        println!(
            "{:<36} {:>10}",
            "JPEG decode only (image crate)",
            fmt_ms(ns)
        );
        tsv.push_str(&format!("decode_jpeg\t{ns:.0}\t{}\t0\n", jpeg.len()));
    }
    for case in cases() {
        let src = if case.kind == SourceKind::Text {
            css.len()
        } else {
            jpeg.len()
        };
        let size = sizes.iter().find(|s| s.0 == case.id).map_or(0, |s| s.1);
        let Some(ns) = median_ns(&format!("build/{}", case.id)) else {
            println!(
                "{:<36} (no estimate under {:?})",
                case.what,
                criterion_dir()
            );
            continue;
        };
        println!(
            "{:<36} {:>10} {:>8} B {:>8} B {:>7.1}%",
            case.what,
            fmt_ms(ns),
            size,
            src as i64 - size as i64,
            100.0 * size as f64 / src as f64
        );
        tsv.push_str(&format!("{}\t{ns:.0}\t{src}\t{size}\n", case.id));
    }
    std::fs::write(dir.join("ours.tsv"), tsv).expect("write ours.tsv");
}

/// What-if timings, the faster of two encodes each, from the same decoded pixels (decode outside the timing):
/// ravif at settings other than the builder's, to show where AVIF time goes. Not what the module
/// runs; printed only with `BENCH_BUILD_WHATIF=1`, outputs written as `whatif-s<speed>-<bits>bit.avif`.
fn report_whatif(jpeg: &[u8]) {
    let img = transform::image::decode(jpeg, SourceKind::Jpeg, &Limits::default())
        .expect("decode")
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let px: Vec<ravif::RGB8> = img
        .pixels()
        .map(|p| ravif::RGB8::new(p[0], p[1], p[2]))
        .collect();
    let q = Quality::default();
    println!(
        "\n## what-if: ravif encode only, one thread, quality {}, faster of two runs",
        q.avif
    );
    println!("{:<44} {:>10} {:>10}", "settings", "time", "output");
    let rows = [
        (
            "speed 8, 10-bit (the builder's)",
            q.avif_speed,
            ravif::BitDepth::Ten,
        ),
        ("speed 8, 8-bit", q.avif_speed, ravif::BitDepth::Eight),
        ("speed 9, 10-bit", 9, ravif::BitDepth::Ten),
        ("speed 9, 8-bit", 9, ravif::BitDepth::Eight),
        ("speed 10, 10-bit", 10, ravif::BitDepth::Ten),
        ("speed 10, 8-bit", 10, ravif::BitDepth::Eight),
    ];
    for (label, speed, depth) in rows {
        let enc = ravif::Encoder::new()
            .with_quality(q.avif)
            .with_speed(speed)
            .with_bit_depth(depth)
            .with_num_threads(Some(1));
        let mut ns = f64::INFINITY;
        let mut out = None;
        for _ in 0..2 {
            let t = std::time::Instant::now();
            out = Some(
                enc.encode_rgb(ravif::Img::new(&px[..], w, h))
                    .expect("avif"),
            );
            ns = ns.min(t.elapsed().as_nanos() as f64);
        }
        let out = out.expect("two runs");
        let bits = if depth == ravif::BitDepth::Eight {
            8
        } else {
            10
        };
        let file = out_dir().join(format!("whatif-s{speed}-{bits}bit.avif"));
        std::fs::write(file, &out.avif_file).expect("write what-if output");
        println!(
            "{label:<44} {:>10} {:>8} B",
            fmt_ms(ns),
            out.avif_file.len()
        );
    }
}

fn main() {
    let jpeg = photo_jpeg();
    let css = css();
    let dir = out_dir();
    std::fs::create_dir_all(&dir).expect("bench-build dir");
    std::fs::write(dir.join("photo.jpg"), &jpeg).expect("write photo.jpg");
    std::fs::write(dir.join("site.css"), &css).expect("write site.css");
    // One build of each, outside the timing: the outputs the sizes are read from, and what the
    // reference tools' outputs are compared with.
    let (limits, q) = (Limits::default(), Quality::default());
    let mut sizes = Vec::new();
    for case in cases() {
        let src = if case.kind == SourceKind::Text {
            &css
        } else {
            &jpeg
        };
        let out = body(transform::build(src, case.kind, case.target, &limits, &q));
        std::fs::write(dir.join(case.file), &out).expect("write output");
        sizes.push((case.id, out.len()));
    }

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    bench_builds(&mut c, &jpeg, &css);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once as a test; the figures need `cargo bench`.
    if std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test") {
        report(&jpeg, &css, &sizes);
        if std::env::var_os("BENCH_BUILD_WHATIF").is_some_and(|v| v == "1") {
            report_whatif(&jpeg);
        }
    }
}
