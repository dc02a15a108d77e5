//! Image inputs to the variant builders (`transform::build`, `transform::image::decode`): an
//! origin's JPEG, PNG, GIF or WebP, whatever its bytes. Decoding either fails or yields an
//! image within the limits; a build either fails, declines, or gives a non-empty body of the
//! format asked for, never larger in pixels than the source.
//! AVIF targets are left out: rav1e takes seconds a frame under instrumentation; the decode
//! path they share with every other target is fuzzed here.

use ngx_http_pagespeed_module::transform::image::{complete, decode};
use ngx_http_pagespeed_module::transform::{build, Built, Limits, Quality};
use ngx_http_pagespeed_module::variant::{
    Density, Descriptor, Encoding, Format, SourceKind, Viewport,
};

const LIMITS: Limits = Limits {
    max_pixels: 1 << 18,
    max_dimension: 2048,
    max_input: 1 << 20,
};

fn main() {
    let q = Quality {
        avif_speed: 10,
        ..Quality::default()
    };
    afl::fuzz!(|data: &[u8]| {
        let Some((&sel, src)) = data.split_first() else {
            return;
        };
        let kind = [
            SourceKind::Jpeg,
            SourceKind::Png,
            SourceKind::Gif,
            SourceKind::Webp,
        ][sel as usize & 3];
        let format =
            [Format::Webp, Format::Jpeg, Format::Png, Format::Original][(sel >> 2) as usize & 3];
        let viewport = [
            Viewport::Original,
            Viewport::W480,
            Viewport::W768,
            Viewport::W480,
        ][(sel >> 4) as usize & 3];
        let density = if sel & 0x40 != 0 {
            Density::X2
        } else {
            Density::X1
        };
        let save_data = sel & 0x80 != 0;
        let _ = complete(src, kind);
        let img = decode(src, kind, &LIMITS);
        let Ok(img) = img else { return };
        let (w, h) = (img.width(), img.height());
        assert!(w > 0 && h > 0 && w <= LIMITS.max_dimension && h <= LIMITS.max_dimension);
        assert!(w as u64 * h as u64 <= LIMITS.max_pixels);
        drop(img);
        let target = Descriptor::variant(format, viewport, density, save_data, Encoding::Identity);
        match build(src, kind, target, &LIMITS, &q) {
            Ok(Built::Variant { body, content_type }) => {
                assert!(!body.is_empty());
                if let (Some(ct), Some(want)) = (content_type, format.content_type()) {
                    assert_eq!(ct, want);
                }
                let out = image::load_from_memory(&body).expect("a built variant decodes");
                assert!(out.width() <= w && out.height() <= h, "a variant grew");
            }
            Ok(Built::Declined(_)) | Err(_) => {}
        }
    });
}
