//! Variant builders on images and text generated here (no downloaded assets): formats,
//! dimensions, sizes, declines, hostile inputs, and the builder pool's fenced commits.

use std::io::Cursor;
use std::time::Duration;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use ngx_http_pagespeed_module::http::meta::StoredMeta;
use ngx_http_pagespeed_module::store::{
    Alternate, Backing, CommitOutcome, Key, Lookup, Store, StoreConfig, UrlId,
};
use ngx_http_pagespeed_module::transform::builders::{BuilderConfig, BuilderPool, Job, Submitted};
use ngx_http_pagespeed_module::transform::{build, BuildError, Built, Limits, Quality};
use ngx_http_pagespeed_module::variant::{
    Density, Descriptor, Encoding, Format, SourceKind, Viewport,
};

/// A photo-like picture: gradients plus texture, so lossy formats have something to save.
fn picture(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)) % 23;
        Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y) % 200) as u8 + n as u8,
        ])
    })
}

fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    match fmt {
        ImageFormat::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&img.to_rgb8())
            .unwrap(),
        _ => img.write_to(&mut out, fmt).unwrap(),
    }
    out.into_inner()
}

fn decoded(bytes: &[u8]) -> (ImageFormat, u32, u32) {
    let fmt = image::guess_format(bytes).unwrap();
    let img = image::load_from_memory(bytes).unwrap();
    (fmt, img.width(), img.height())
}

fn v(f: Format, vp: Viewport, d: Density, sd: bool) -> Descriptor {
    Descriptor::variant(f, vp, d, sd, Encoding::Identity)
}

fn built(src: &[u8], kind: SourceKind, t: Descriptor) -> Vec<u8> {
    match build(src, kind, t, &Limits::default(), &Quality::default()).unwrap() {
        Built::Variant { body, .. } => body,
        Built::Declined(why) => panic!("declined: {why}"),
    }
}

#[test]
fn jpeg_becomes_smaller_webp_and_avif_at_full_size() {
    let src = encode(
        &DynamicImage::ImageRgb8(picture(800, 600)),
        ImageFormat::Jpeg,
    );
    let webp = built(
        &src,
        SourceKind::Jpeg,
        v(Format::Webp, Viewport::Original, Density::X1, false),
    );
    assert_eq!(decoded(&webp), (ImageFormat::WebP, 800, 600));
    assert!(webp.len() < src.len());
    let avif = built(
        &src,
        SourceKind::Jpeg,
        v(Format::Avif, Viewport::Original, Density::X1, false),
    );
    assert_eq!(&avif[4..12], b"ftypavif");
    assert!(avif.len() < src.len());
}

#[test]
fn viewport_variants_resize_by_width_and_density_keeping_the_aspect_ratio() {
    let src = encode(
        &DynamicImage::ImageRgb8(picture(1600, 800)),
        ImageFormat::Jpeg,
    );
    let small = built(
        &src,
        SourceKind::Jpeg,
        v(Format::Jpeg, Viewport::W480, Density::X1, false),
    );
    assert_eq!(decoded(&small), (ImageFormat::Jpeg, 480, 240));
    let retina = built(
        &src,
        SourceKind::Jpeg,
        v(Format::Webp, Viewport::W480, Density::X2, false),
    );
    assert_eq!(decoded(&retina), (ImageFormat::WebP, 960, 480));
    let tablet = built(
        &src,
        SourceKind::Jpeg,
        v(Format::Webp, Viewport::W768, Density::X1, false),
    );
    assert_eq!(decoded(&tablet).1, 768);
}

#[test]
fn images_are_never_upscaled() {
    let src = encode(
        &DynamicImage::ImageRgb8(picture(300, 200)),
        ImageFormat::Jpeg,
    );
    let r = build(
        &src,
        SourceKind::Jpeg,
        v(Format::Jpeg, Viewport::W480, Density::X1, false),
        &Limits::default(),
        &Quality::default(),
    );
    assert!(
        matches!(r, Ok(Built::Declined(_))),
        "same format and size is declined: {r:?}"
    );
    let webp = built(
        &src,
        SourceKind::Jpeg,
        v(Format::Webp, Viewport::W768, Density::X2, false),
    );
    assert_eq!(decoded(&webp).1, 300);
}

#[test]
fn save_data_variants_are_smaller_than_the_normal_ones() {
    let src = encode(
        &DynamicImage::ImageRgb8(picture(640, 480)),
        ImageFormat::Jpeg,
    );
    let normal = built(
        &src,
        SourceKind::Jpeg,
        v(Format::Webp, Viewport::Original, Density::X1, false),
    );
    let light = built(
        &src,
        SourceKind::Jpeg,
        v(Format::Webp, Viewport::Original, Density::X1, true),
    );
    assert!(light.len() < normal.len());
}

#[test]
fn png_with_alpha_and_gif_first_frame_convert() {
    let rgba = RgbaImage::from_fn(400, 300, |x, y| {
        Rgba([(x % 256) as u8, (y % 256) as u8, 90, ((x + y) % 256) as u8])
    });
    let png = encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png);
    let webp = built(
        &png,
        SourceKind::Png,
        v(Format::Webp, Viewport::Original, Density::X1, false),
    );
    let img = image::load_from_memory(&webp).unwrap();
    assert!(img.color().has_alpha());
    let gif = encode(
        &DynamicImage::ImageRgb8(picture(320, 240)),
        ImageFormat::Gif,
    );
    let from_gif = build(
        &gif,
        SourceKind::Gif,
        v(Format::Webp, Viewport::Original, Density::X1, false),
        &Limits::default(),
        &Quality::default(),
    )
    .unwrap();
    match from_gif {
        Built::Variant { body, .. } => assert_eq!(decoded(&body), (ImageFormat::WebP, 320, 240)),
        Built::Declined(_) => {} // a GIF can already be tiny; declining is allowed, never bigger
    }
}

#[test]
fn a_result_not_smaller_than_its_source_is_declined() {
    // A flat image compresses to almost nothing as PNG; a lossy re-encode cannot beat it.
    let flat = DynamicImage::ImageRgb8(RgbImage::from_pixel(600, 400, Rgb([10, 20, 30])));
    let png = encode(&flat, ImageFormat::Png);
    let r = build(
        &png,
        SourceKind::Png,
        v(Format::Avif, Viewport::Original, Density::X1, false),
        &Limits::default(),
        &Quality::default(),
    );
    assert!(
        matches!(r, Ok(Built::Declined(_)))
            || matches!(&r, Ok(Built::Variant { body, .. }) if body.len() < png.len())
    );
}

#[test]
fn truncated_and_malformed_images_are_refused() {
    let src = encode(
        &DynamicImage::ImageRgb8(picture(200, 200)),
        ImageFormat::Jpeg,
    );
    let t = v(Format::Webp, Viewport::Original, Density::X1, false);
    let q = Quality::default();
    for bad in [&src[..src.len() / 3], &b"not an image at all"[..], &[][..]] {
        let r = build(bad, SourceKind::Jpeg, t, &Limits::default(), &q);
        assert!(matches!(r, Err(BuildError::Decode(_))), "{r:?}");
    }
    let png = encode(&DynamicImage::ImageRgb8(picture(64, 64)), ImageFormat::Png);
    assert!(
        build(&png, SourceKind::Jpeg, t, &Limits::default(), &q).is_err(),
        "a PNG labelled JPEG"
    );
}

#[test]
fn decompression_bombs_are_refused_before_decoding() {
    // A 20000 x 20000 PNG of one colour is a few hundred KiB but 400 megapixels decoded.
    let huge = image::ImageBuffer::<image::Luma<u8>, Vec<u8>>::new(20_000, 20_000);
    let mut bomb = Cursor::new(Vec::new());
    DynamicImage::ImageLuma8(huge)
        .write_to(&mut bomb, ImageFormat::Png)
        .unwrap();
    let bomb = bomb.into_inner();
    assert!(bomb.len() < 2 << 20);
    let r = build(
        &bomb,
        SourceKind::Png,
        v(Format::Webp, Viewport::W480, Density::X1, false),
        &Limits::default(),
        &Quality::default(),
    );
    assert!(matches!(r, Err(BuildError::Limit(_))), "{r:?}");
}

// --- the pool, against a real store ---

fn url() -> UrlId<'static> {
    UrlId {
        scheme: "https",
        host: "example.com",
        path: "/img/photo.jpg",
    }
}

fn store() -> &'static Store {
    let cfg = StoreConfig {
        backing: Backing::Anonymous,
        size: 16 << 20,
        max_object: 0,
    };
    Box::leak(Box::new(Store::open(&cfg).unwrap()))
}

fn fill_original(s: &Store, key: &Key, body: &[u8], ct: &str) {
    let meta = StoredMeta {
        status: 200,
        stored_at: 0,
        expires_at: i64::MAX,
        last_modified: -1,
        content_type: ct.as_bytes().to_vec(),
        headers: vec![(b"ETag".to_vec(), b"\"e1\"".to_vec())],
        ..Default::default()
    }
    .encode()
    .unwrap();
    let scopes = s.buckets().scopes_for(&url(), &[]);
    let alt = Alternate {
        descriptor: 0,
        scopes: &scopes,
        meta: &meta,
        body,
    };
    assert_eq!(s.commit(s.begin_fill(), key, &alt), CommitOutcome::Stored);
}

/// Stores a `w` x `h` JPEG as the original of a key named `name`, and returns the key.
fn jpeg_original(s: &Store, name: &[u8], w: u32, h: u32) -> Key {
    let key = Key::derive(&[name]);
    let src = encode(&DynamicImage::ImageRgb8(picture(w, h)), ImageFormat::Jpeg);
    fill_original(s, &key, &src, "image/jpeg");
    key
}

fn pool(s: &'static Store) -> BuilderPool {
    let cfg = BuilderConfig {
        threads: 1,
        queue: 4,
        limits: Limits::default(),
        quality: Quality::default(),
        nice: 0,
    };
    BuilderPool::start(s, cfg, Box::new(|_| {})).unwrap()
}

/// Queues one job and waits until the pool is idle again.
fn build_now(p: &BuilderPool, key: Key, target: Descriptor, url: &str) {
    p.submit(Job {
        key,
        target,
        url: url.into(),
    });
    assert!(p.wait_idle(Duration::from_secs(20)));
}

fn find(s: &Store, key: &Key, d: Descriptor) -> Option<(StoredMeta, Vec<u8>)> {
    let mut buf = Vec::new();
    match s.lookup(key, |x, _| (x == d.0).then_some(1), &mut buf) {
        Lookup::Hit(h) => Some((
            StoredMeta::decode(&buf[..h.meta_len]).unwrap(),
            buf[h.meta_len..].to_vec(),
        )),
        _ => None,
    }
}

#[test]
fn the_pool_builds_and_commits_a_variant_under_the_same_key() {
    let s = store();
    let key = jpeg_original(s, b"photo", 640, 480);
    let p = pool(s);
    let t = v(Format::Webp, Viewport::Original, Density::X1, false);
    let job = Job {
        key,
        target: t,
        url: "/img/photo.jpg".into(),
    };
    assert_eq!(p.submit(job.clone()), Submitted::Queued);
    assert!(p.wait_idle(Duration::from_secs(20)));
    let (meta, body) = find(s, &key, t).expect("variant stored");
    assert_eq!(meta.content_type, b"image/webp");
    assert_eq!(meta.headers[0].1, b"\"e1-webp\"");
    assert_eq!(decoded(&body).0, ImageFormat::WebP);
    assert_eq!(s.stats().builds_done, 1);
    assert_eq!(s.alternates(&key).unwrap().len(), 2);
    p.stop();
}

#[test]
fn a_declined_build_leaves_a_sentinel_that_is_never_served() {
    let s = store();
    let key = jpeg_original(s, b"small", 100, 100);
    let p = pool(s);
    let t = v(Format::Jpeg, Viewport::W480, Density::X1, false);
    build_now(&p, key, t, "/small.jpg");
    assert_eq!(s.stats().builds_declined, 1);
    let descs: Vec<u32> = s
        .alternates(&key)
        .unwrap()
        .iter()
        .map(|a| a.descriptor)
        .collect();
    assert!(descs.contains(&Descriptor::declined(t).0));
    assert!(find(s, &key, t).is_none());
    p.stop();
}

/// A source no wider than a viewport variant asks is encoded once, at full size, for every
/// narrower-than-the-client class: the viewport descriptors are marked declined, so selection
/// serves them the full-size variant and stops asking.
#[test]
fn a_source_narrower_than_the_viewport_is_built_once_at_full_size() {
    let s = store();
    let key = jpeg_original(s, b"thumb", 300, 200);
    let p = pool(s);
    let full = v(Format::Webp, Viewport::Original, Density::X1, false);
    let phone = v(Format::Webp, Viewport::W480, Density::X1, false);
    let tablet_2x = v(Format::Webp, Viewport::W768, Density::X2, false);
    let submit = |t: Descriptor| build_now(&p, key, t, "/thumb.jpg");
    submit(phone);
    let (meta, body) = find(s, &key, full).expect("the full-size WebP stored");
    assert_eq!(
        meta.headers[0].1, b"\"e1-webp\"",
        "its ETag names the full-size variant"
    );
    assert_eq!(decoded(&body), (ImageFormat::WebP, 300, 200));
    assert!(
        find(s, &key, phone).is_none(),
        "no 480 px copy of the same pixels"
    );
    assert_eq!((s.stats().builds_done, s.stats().builds_declined), (1, 0));

    // Another class wider than the image: nothing encoded again, only marked.
    submit(tablet_2x);
    assert_eq!((s.stats().builds_done, s.stats().builds_declined), (1, 1));
    let descs: Vec<u32> = s
        .alternates(&key)
        .unwrap()
        .iter()
        .map(|a| a.descriptor)
        .collect();
    for t in [phone, tablet_2x] {
        assert!(
            descs.contains(&Descriptor::declined(t).0),
            "{} marked",
            t.label()
        );
        assert!(find(s, &key, t).is_none());
    }
    assert_eq!(
        descs.len(),
        4,
        "the original, the full-size WebP and two markers"
    );

    // A source wider than the class still gets its own resized variant.
    let wide_key = jpeg_original(s, b"wide", 1000, 500);
    build_now(&p, wide_key, phone, "/wide.jpg");
    let (_, body) = find(s, &wide_key, phone).expect("the 480 px WebP stored");
    assert_eq!(decoded(&body), (ImageFormat::WebP, 480, 240));
    assert!(find(s, &wide_key, full).is_none());
    p.stop();
}

#[test]
fn a_broken_source_is_refused_counted_and_not_retried() {
    let s = store();
    let key = Key::derive(&[b"broken"]);
    fill_original(
        s,
        &key,
        b"\xff\xd8\xff garbage that is not a jpeg",
        "image/jpeg",
    );
    let p = pool(s);
    let t = v(Format::Webp, Viewport::Original, Density::X1, false);
    build_now(&p, key, t, "/broken.jpg");
    assert_eq!(s.stats().builds_failed, 1);
    assert!(s
        .alternates(&key)
        .unwrap()
        .iter()
        .any(|a| a.descriptor == Descriptor::declined(t).0));
    // The original is still there to serve.
    assert!(find(s, &key, Descriptor(0)).is_some());
    p.stop();
}

#[test]
fn a_purge_during_a_build_fences_it() {
    let s = store();
    let key = Key::derive(&[b"slow"]);
    // Large enough that an AVIF encode takes a while, so the purge usually lands mid-build.
    let src = encode(
        &DynamicImage::ImageRgb8(picture(1600, 1200)),
        ImageFormat::Jpeg,
    );
    fill_original(s, &key, &src, "image/jpeg");
    let p = pool(s);
    let t = v(Format::Avif, Viewport::Original, Density::X1, false);
    p.submit(Job {
        key,
        target: t,
        url: "/slow.jpg".into(),
    });
    std::thread::sleep(Duration::from_millis(50));
    s.purge_url(&[url()], &[], &[key], false).unwrap();
    assert!(p.wait_idle(Duration::from_secs(60)));
    // Whether the purge came before the source was read (nothing built) or after (fenced),
    // no variant of the purged original may be visible.
    assert!(s.alternates(&key).unwrap().is_empty());
    let st = s.stats();
    assert_eq!(st.builds_done, 0);
    // A fenced build is counted by the builder and by the store's commit fence.
    assert!(
        st.builds_fenced <= 1 && st.fenced == st.builds_fenced,
        "{st:?}"
    );
    p.stop();
}

#[test]
fn a_full_queue_drops_and_counts_and_duplicates_are_merged() {
    let s = store();
    let cfg = BuilderConfig {
        threads: 1,
        queue: 1,
        limits: Limits::default(),
        quality: Quality::default(),
        nice: 0,
    };
    let p = BuilderPool::start(s, cfg, Box::new(|_| {})).unwrap();
    let mut results = Vec::new();
    for i in 0..20u8 {
        let job = Job {
            key: Key::derive(&[&[i]]),
            target: Descriptor(0x10),
            url: String::new(),
        };
        results.push(p.submit(job));
    }
    assert!(results.contains(&Submitted::Full));
    let dup = Job {
        key: Key::derive(&[b"d"]),
        target: Descriptor(0x10),
        url: String::new(),
    };
    let first = p.submit(dup.clone());
    if first == Submitted::Queued {
        // Still queued or running: the same job again is merged.
        let again = p.submit(dup);
        assert!(matches!(
            again,
            Submitted::Duplicate | Submitted::Queued | Submitted::Full
        ));
    }
    assert!(s.stats().builds_dropped > 0);
    assert!(p.wait_idle(Duration::from_secs(20)));
    p.stop();
}

#[test]
fn text_variants_build_through_the_pool() {
    let s = store();
    let key = Key::derive(&[b"css"]);
    let css: Vec<u8> = (0..400)
        .flat_map(|i| format!(".c{i}{{margin:{i}px}}\n").into_bytes())
        .collect();
    fill_original(s, &key, &css, "text/css");
    let p = pool(s);
    for enc in [Encoding::Gzip, Encoding::Br] {
        p.submit(Job {
            key,
            target: Descriptor::original(enc, None),
            url: "/a.css".into(),
        });
    }
    assert!(p.wait_idle(Duration::from_secs(20)));
    let (meta, body) = find(s, &key, Descriptor::original(Encoding::Br, None)).unwrap();
    assert!(meta
        .headers
        .contains(&(b"Content-Encoding".to_vec(), b"br".to_vec())));
    assert!(body.len() < css.len());
    assert!(find(s, &key, Descriptor::original(Encoding::Gzip, None)).is_some());
    p.stop();
}
