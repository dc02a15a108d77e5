//! Variant builders: turn an original into a smaller alternate (image formats and sizes, text
//! compression). Pure functions here; `pool` runs them on background threads and commits the
//! results fenced by the original's purge stamp.

pub mod builders;
pub mod image;
pub mod text;

use crate::http::meta::StoredMeta;
use crate::variant::{Descriptor, Encoding, Format, SourceKind};

/// Hard limits on what a builder accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Width times height of a decoded image.
    pub max_pixels: u64,
    /// Either side of an image.
    pub max_dimension: u32,
    /// Source bytes.
    pub max_input: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pixels: 25_000_000,
            max_dimension: 16_384,
            max_input: 16 << 20,
        }
    }
}

/// Encoder settings (quality scales of the codecs, 0..100).
#[derive(Debug, Clone, Copy)]
pub struct Quality {
    pub webp: f32,
    pub webp_save_data: f32,
    pub avif: f32,
    pub avif_save_data: f32,
    /// rav1e speed 1 (slow, small) .. 10 (fast). 9 measured ~0.6% larger than 8 in a fraction
    /// of the time (docs/BENCHMARKS.md, "Variant builders").
    pub avif_speed: u8,
    pub jpeg: u8,
    pub jpeg_save_data: u8,
}

impl Default for Quality {
    fn default() -> Quality {
        Quality {
            webp: 80.0,
            webp_save_data: 50.0,
            avif: 60.0,
            avif_save_data: 40.0,
            avif_speed: 9,
            jpeg: 82,
            jpeg_save_data: 55,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// The variant's body; `content_type` when it differs from the source's.
    Variant {
        body: Vec<u8>,
        content_type: Option<&'static str>,
    },
    /// Nothing worth keeping (not smaller, nothing to change): recorded so it is not retried.
    Declined(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("over limits: {0}")]
    Limit(String),
    #[error("encoder failed: {0}")]
    Encode(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// What a job asked to build `wanted` from this source builds: `wanted` itself, or, when the
/// source is no wider than the width `wanted` asks for (so nothing would be resized), the
/// full-size variant of the same format and Save-Data. One encode then serves every client
/// class wider than the image, instead of one identical encode per viewport and density.
pub fn full_size_for(source: &[u8], kind: SourceKind, wanted: Descriptor) -> Descriptor {
    let Some(w) = image::target_width(wanted) else {
        return wanted;
    };
    match image::width(source, kind) {
        Some(sw) if w >= sw => wanted.at_full_size(),
        _ => wanted,
    }
}

/// Builds `target` from an original of `kind`.
pub fn build(
    source: &[u8],
    kind: SourceKind,
    target: Descriptor,
    limits: &Limits,
    q: &Quality,
) -> Result<Built, BuildError> {
    if source.len() > limits.max_input {
        return Err(BuildError::Limit(format!(
            "{} bytes exceeds {}",
            source.len(),
            limits.max_input
        )));
    }
    if kind == SourceKind::Text {
        if target.format() != Format::Original || target.viewport().width().is_some() {
            return Err(BuildError::Unsupported(
                "image variant of a text source".into(),
            ));
        }
        return text::compress(source, target.encoding());
    }
    if target.encoding() != Encoding::Identity {
        return Err(BuildError::Unsupported("compressed image variant".into()));
    }
    image::build(source, kind, target, limits, q)
}

/// The metadata of a variant: the original's, with the variant's type, encoding and an ETag
/// of its own (two representations must not share a strong validator).
pub fn variant_meta(
    orig: &StoredMeta,
    target: Descriptor,
    content_type: Option<&str>,
) -> StoredMeta {
    let mut m = orig.clone();
    if m.source_type.is_empty() {
        m.source_type = orig.content_type.clone();
    }
    if let Some(ct) = content_type {
        m.content_type = ct.as_bytes().to_vec();
    }
    let label = target.label();
    m.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case(b"content-encoding"));
    for (n, v) in m.headers.iter_mut() {
        if n.eq_ignore_ascii_case(b"etag") {
            *v = suffixed_etag(v, &label);
        }
    }
    if target.encoding() != Encoding::Identity {
        m.headers.push((
            b"Content-Encoding".to_vec(),
            target.encoding().as_str().as_bytes().to_vec(),
        ));
    }
    m
}

fn suffixed_etag(v: &[u8], label: &str) -> Vec<u8> {
    match v.iter().rposition(|&c| c == b'"') {
        Some(end) if end > 0 && v.iter().filter(|&&c| c == b'"').count() >= 2 => {
            let mut out = v[..end].to_vec();
            out.push(b'-');
            out.extend_from_slice(label.as_bytes());
            out.extend_from_slice(&v[end..]);
            out
        }
        _ => format!("\"{}-{label}\"", String::from_utf8_lossy(v)).into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variant::{Density, Viewport};

    #[test]
    fn variant_meta_changes_type_encoding_and_etag() {
        let orig = StoredMeta {
            content_type: b"image/jpeg".to_vec(),
            headers: vec![
                (b"ETag".to_vec(), b"W/\"abc\"".to_vec()),
                (b"X-Keep".to_vec(), b"1".to_vec()),
            ],
            ..Default::default()
        };
        let t = Descriptor::variant(
            Format::Webp,
            Viewport::W480,
            Density::X2,
            false,
            Encoding::Identity,
        );
        let m = variant_meta(&orig, t, Some("image/webp"));
        assert_eq!(m.content_type, b"image/webp");
        assert_eq!(
            m.source_type, b"image/jpeg",
            "a variant remembers its original's type"
        );
        assert_eq!(m.headers[0].1, b"W/\"abc-webp-480-2x\"");
        assert_eq!(m.headers[1], (b"X-Keep".to_vec(), b"1".to_vec()));
        let br = variant_meta(&orig, Descriptor::original(Encoding::Br, None), None);
        assert!(br
            .headers
            .contains(&(b"Content-Encoding".to_vec(), b"br".to_vec())));
        assert_eq!(suffixed_etag(b"bare", "br"), b"\"bare-br\"");
    }

    #[test]
    fn oversized_input_is_refused() {
        let l = Limits {
            max_input: 10,
            ..Limits::default()
        };
        let e = build(
            &[0u8; 11],
            SourceKind::Text,
            Descriptor::original(Encoding::Gzip, None),
            &l,
            &Quality::default(),
        );
        assert!(matches!(e, Err(BuildError::Limit(_))));
    }
}
