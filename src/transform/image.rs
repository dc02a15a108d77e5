//! Image variants: decode JPEG, PNG, GIF (first frame) and WebP; resize for a viewport and
//! density (never up); encode WebP, AVIF, JPEG or PNG. Hard limits on input keep a hostile or
//! broken image from costing more than a bounded amount of memory and time.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader};

use super::{BuildError, Built, Limits, Quality};
use crate::variant::{Density, Descriptor, Format, SourceKind};

fn source_format(kind: SourceKind) -> Option<ImageFormat> {
    match kind {
        SourceKind::Jpeg => Some(ImageFormat::Jpeg),
        SourceKind::Png => Some(ImageFormat::Png),
        SourceKind::Gif => Some(ImageFormat::Gif),
        SourceKind::Webp => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Whether the file ends where its format says it ends. Decoders pad a truncated image with
/// grey and call it a success; a variant must not be built from half an image.
pub fn complete(source: &[u8], kind: SourceKind) -> bool {
    let trimmed = {
        let mut end = source.len();
        while end > 0 && matches!(source[end - 1], b'\0' | b'\r' | b'\n' | b' ') {
            end -= 1;
        }
        &source[..end]
    };
    match kind {
        SourceKind::Jpeg => trimmed.ends_with(&[0xff, 0xd9]),
        SourceKind::Png => {
            source.len() >= 12
                && source[source.len() - 12..].starts_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D'])
        }
        SourceKind::Gif => trimmed.ends_with(b";"),
        SourceKind::Webp => {
            source.len() >= 12
                && &source[..4] == b"RIFF"
                && u32::from_le_bytes([source[4], source[5], source[6], source[7]]) as usize + 8
                    <= source.len()
        }
        _ => false,
    }
}

/// Decodes with limits checked before any pixel buffer is allocated.
pub fn decode(
    source: &[u8],
    kind: SourceKind,
    limits: &Limits,
) -> Result<DynamicImage, BuildError> {
    let fmt = source_format(kind).ok_or_else(|| BuildError::Unsupported("not an image".into()))?;
    if !complete(source, kind) {
        return Err(BuildError::Decode("truncated (no end marker)".into()));
    }
    let reader = ImageReader::with_format(Cursor::new(source), fmt);
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| BuildError::Decode(e.to_string()))?;
    if w == 0 || h == 0 || w > limits.max_dimension || h > limits.max_dimension {
        return Err(BuildError::Limit(format!(
            "{w}x{h} exceeds {} px per side",
            limits.max_dimension
        )));
    }
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(BuildError::Limit(format!(
            "{w}x{h} exceeds {} pixels",
            limits.max_pixels
        )));
    }
    let mut reader = ImageReader::with_format(Cursor::new(source), fmt);
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_dimension);
    l.max_image_height = Some(limits.max_dimension);
    // RGBA at 4 bytes a pixel plus decoder scratch: a bomb stops here, not in the allocator.
    l.max_alloc = Some(limits.max_pixels * 8);
    reader.limits(l);
    reader
        .decode()
        .map_err(|e| BuildError::Decode(e.to_string()))
}

/// The source's pixel width, from its header alone (None: not an image this reads).
pub fn width(source: &[u8], kind: SourceKind) -> Option<u32> {
    let fmt = source_format(kind)?;
    ImageReader::with_format(Cursor::new(source), fmt)
        .into_dimensions()
        .ok()
        .map(|(w, _)| w)
}

/// The pixel width a variant is built at, or None for the source width.
pub fn target_width(d: Descriptor) -> Option<u32> {
    let w = d.viewport().width()?;
    Some(if d.density() == Density::X2 { w * 2 } else { w })
}

pub fn build(
    source: &[u8],
    kind: SourceKind,
    target: Descriptor,
    limits: &Limits,
    q: &Quality,
) -> Result<Built, BuildError> {
    let mut img = decode(source, kind, limits)?;
    let mut resized = false;
    if let Some(w) = target_width(target) {
        if w < img.width() {
            let h = ((img.height() as u64 * w as u64) / img.width() as u64).max(1) as u32;
            img = img.resize_exact(w, h, image::imageops::FilterType::Triangle);
            resized = true;
        }
    }
    let same_format = matches!(
        (target.format(), kind),
        (Format::Jpeg, SourceKind::Jpeg)
            | (Format::Png, SourceKind::Png)
            | (Format::Webp, SourceKind::Webp)
    );
    if same_format && !resized && !target.save_data() {
        return Ok(Built::Declined("same format and size as the source"));
    }
    let sd = target.save_data();
    let (body, ct) = match target.format() {
        Format::Webp => (
            encode_webp(&img, if sd { q.webp_save_data } else { q.webp })?,
            "image/webp",
        ),
        Format::Avif => (
            encode_avif(
                &img,
                if sd { q.avif_save_data } else { q.avif },
                q.avif_speed,
            )?,
            "image/avif",
        ),
        Format::Jpeg => (
            encode_jpeg(&img, if sd { q.jpeg_save_data } else { q.jpeg })?,
            "image/jpeg",
        ),
        Format::Png => (encode_png(&img)?, "image/png"),
        Format::Original => return Err(BuildError::Unsupported("no target format".into())),
    };
    if body.len() >= source.len() {
        return Ok(Built::Declined("not smaller than the source"));
    }
    Ok(Built::Variant {
        body,
        content_type: Some(ct),
    })
}

fn encode_webp(img: &DynamicImage, quality: f32) -> Result<Vec<u8>, BuildError> {
    let rgba;
    let rgb;
    let enc = if img.color().has_alpha() {
        rgba = img.to_rgba8();
        webp::Encoder::from_rgba(rgba.as_raw(), rgba.width(), rgba.height())
    } else {
        rgb = img.to_rgb8();
        webp::Encoder::from_rgb(rgb.as_raw(), rgb.width(), rgb.height())
    };
    let out = enc
        .encode_simple(false, quality)
        .map_err(|e| BuildError::Encode(format!("webp: {e:?}")))?;
    Ok(out.to_vec())
}

fn encode_avif(img: &DynamicImage, quality: f32, speed: u8) -> Result<Vec<u8>, BuildError> {
    // 8-bit: our sources are 8-bit, and rav1e has no assembly for 10-bit CDEF, which made
    // ravif's default (10-bit) encode several times slower for a 1% smaller file.
    let enc = ravif::Encoder::new()
        .with_quality(quality)
        .with_speed(speed)
        .with_bit_depth(ravif::BitDepth::Eight)
        .with_num_threads(Some(1));
    let (w, h) = (img.width() as usize, img.height() as usize);
    let out = if img.color().has_alpha() {
        let px = img.to_rgba8();
        let pixels: Vec<ravif::RGBA8> = px
            .pixels()
            .map(|p| ravif::RGBA8::new(p[0], p[1], p[2], p[3]))
            .collect();
        enc.encode_rgba(ravif::Img::new(&pixels[..], w, h))
    } else {
        let px = img.to_rgb8();
        let pixels: Vec<ravif::RGB8> = px
            .pixels()
            .map(|p| ravif::RGB8::new(p[0], p[1], p[2]))
            .collect();
        enc.encode_rgb(ravif::Img::new(&pixels[..], w, h))
    };
    out.map(|e| e.avif_file)
        .map_err(|e| BuildError::Encode(format!("avif: {e}")))
}

fn encode_jpeg(img: &DynamicImage, quality: u8) -> Result<Vec<u8>, BuildError> {
    let mut out = Vec::new();
    let rgb = img.to_rgb8();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&rgb)
        .map_err(|e| BuildError::Encode(format!("jpeg: {e}")))?;
    Ok(out)
}

fn encode_png(img: &DynamicImage) -> Result<Vec<u8>, BuildError> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut out = Vec::new();
    img.write_with_encoder(PngEncoder::new_with_quality(
        &mut out,
        CompressionType::Best,
        FilterType::Adaptive,
    ))
    .map_err(|e| BuildError::Encode(format!("png: {e}")))?;
    Ok(out)
}
