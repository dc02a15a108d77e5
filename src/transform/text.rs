//! Text variants: gzip and brotli alternates of HTML, CSS, JS, JSON, SVG, XML and plain text.

use std::io::Write;

use super::{BuildError, Built};
use crate::variant::Encoding;

/// gzip level and brotli quality: good ratios at a cost well under a millisecond per 10 KiB,
/// since builds share the worker's cores.
const GZIP_LEVEL: u32 = 6;
const BROTLI_QUALITY: u32 = 6;
const BROTLI_WINDOW: u32 = 22;

pub fn compress(source: &[u8], enc: Encoding) -> Result<Built, BuildError> {
    let out = match enc {
        Encoding::Gzip => {
            let mut e =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
            e.write_all(source)
                .map_err(|e| BuildError::Encode(e.to_string()))?;
            e.finish().map_err(|e| BuildError::Encode(e.to_string()))?
        }
        Encoding::Br => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(
                    &mut out,
                    64 * 1024,
                    BROTLI_QUALITY,
                    BROTLI_WINDOW,
                );
                w.write_all(source)
                    .map_err(|e| BuildError::Encode(e.to_string()))?;
                w.flush().map_err(|e| BuildError::Encode(e.to_string()))?;
            }
            out
        }
        other => {
            return Err(BuildError::Unsupported(format!(
                "text encoding {}",
                other.as_str()
            )))
        }
    };
    if out.len() >= source.len() {
        return Ok(Built::Declined("not smaller than the source"));
    }
    Ok(Built::Variant {
        body: out,
        content_type: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn css() -> Vec<u8> {
        (0..300)
            .map(|i| format!(".c{i} {{ margin: {i}px; color: #333; }}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn gzip_and_brotli_round_trip_and_shrink() {
        let src = css();
        let Built::Variant { body: gz, .. } = compress(&src, Encoding::Gzip).unwrap() else {
            panic!()
        };
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, src);
        assert!(gz.len() < src.len() / 3);
        let Built::Variant { body: br, .. } = compress(&src, Encoding::Br).unwrap() else {
            panic!()
        };
        let mut back = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, src);
        assert!(br.len() <= gz.len());
    }

    #[test]
    fn incompressible_input_is_declined() {
        let mut x: u32 = 1;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(matches!(
            compress(&noise, Encoding::Gzip).unwrap(),
            Built::Declined(_)
        ));
        assert!(matches!(
            compress(b"", Encoding::Br).unwrap(),
            Built::Declined(_)
        ));
    }
}
