//! The 32-bit variant descriptor (bit layout in docs/ARCHITECTURE.md):
//!
//! ```text
//! bits 0-2   content encoding (Encoding)
//! bit  3     the origin's Vary selected this alternate (meta holds the request values)
//! bits 4-7   image format        (0 = as the origin sent it)      [variant builders]
//! bits 8-10  viewport class      (0 = original; 7 = sentinel record, never served)
//! bits 11-12 density             (0 = original)
//! bit  13    Save-Data variant
//! bits 16-31 hash of the origin's Vary request values (bit 3 set), or sentinel kind
//! ```

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity = 0,
    Gzip = 1,
    Br = 2,
    Zstd = 3,
    Deflate = 4,
    Compress = 5,
    Other = 7,
}

impl Encoding {
    pub fn from_header(v: &[u8]) -> Encoding {
        let v = v.trim_ascii();
        let is = |n: &str| v.eq_ignore_ascii_case(n.as_bytes());
        if v.is_empty() || is("identity") {
            Encoding::Identity
        } else if is("gzip") || is("x-gzip") {
            Encoding::Gzip
        } else if is("br") {
            Encoding::Br
        } else if is("zstd") {
            Encoding::Zstd
        } else if is("deflate") {
            Encoding::Deflate
        } else if is("compress") || is("x-compress") {
            Encoding::Compress
        } else {
            Encoding::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Deflate => "deflate",
            Encoding::Compress => "compress",
            Encoding::Other => "other",
        }
    }

    fn from_bits(b: u32) -> Encoding {
        match b {
            0 => Encoding::Identity,
            1 => Encoding::Gzip,
            2 => Encoding::Br,
            3 => Encoding::Zstd,
            4 => Encoding::Deflate,
            5 => Encoding::Compress,
            _ => Encoding::Other,
        }
    }
}

const ENCODING_MASK: u32 = 0b111;
const ORIGIN_VARY: u32 = 1 << 3;
const VIEWPORT_SHIFT: u32 = 8;
const VIEWPORT_MASK: u32 = 0b111 << VIEWPORT_SHIFT;
const VIEWPORT_SENTINEL: u32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor(pub u32);

impl Descriptor {
    /// The origin's own response, with its content encoding; `vary_hash` when the origin's
    /// Vary made it one of several (each Vary value set is its own alternate).
    pub fn original(enc: Encoding, vary_hash: Option<u16>) -> Descriptor {
        let mut d = enc as u32;
        if let Some(h) = vary_hash {
            d |= ORIGIN_VARY | (h as u32) << 16;
        }
        Descriptor(d)
    }

    /// An internal record (e.g. "build declined") that no request can select.
    pub fn sentinel(kind: u16) -> Descriptor {
        Descriptor(VIEWPORT_SENTINEL << VIEWPORT_SHIFT | (kind as u32) << 16)
    }

    pub fn is_sentinel(self) -> bool {
        (self.0 & VIEWPORT_MASK) >> VIEWPORT_SHIFT == VIEWPORT_SENTINEL
    }

    pub fn encoding(self) -> Encoding {
        Encoding::from_bits(self.0 & ENCODING_MASK)
    }

    pub fn origin_varies(self) -> bool {
        self.0 & ORIGIN_VARY != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_sentinels_are_distinct() {
        let d = Descriptor::original(Encoding::Br, Some(0xbeef));
        assert_eq!(d.encoding(), Encoding::Br);
        assert!(d.origin_varies() && !d.is_sentinel());
        assert_eq!(d.0 >> 16, 0xbeef);
        assert!(Descriptor::sentinel(3).is_sentinel());
        assert!(!Descriptor::original(Encoding::Identity, None).is_sentinel());
        assert_eq!(Encoding::from_header(b" X-GZIP "), Encoding::Gzip);
        assert_eq!(Encoding::from_header(b"aes128gcm"), Encoding::Other);
    }
}
