//! What an alternate is: the 32-bit variant descriptor stored with it (bit layout in
//! docs/ARCHITECTURE.md) and the value types its fields hold.
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

/// Viewport classes images are resized for; `Original` serves the source width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Viewport {
    Original = 0,
    /// Phones: images at most 480 CSS px wide.
    W480 = 1,
    /// Tablets: at most 768 CSS px.
    W768 = 2,
}

impl Viewport {
    pub fn width(self) -> Option<u32> {
        match self {
            Viewport::Original => None,
            Viewport::W480 => Some(480),
            Viewport::W768 => Some(768),
        }
    }

    pub fn from_width(css_px: f64) -> Viewport {
        if css_px <= 480.0 {
            Viewport::W480
        } else if css_px <= 768.0 {
            Viewport::W768
        } else {
            Viewport::Original
        }
    }

    pub fn from_bits(b: u32) -> Option<Viewport> {
        match b {
            0 => Some(Viewport::Original),
            1 => Some(Viewport::W480),
            2 => Some(Viewport::W768),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Density {
    X1 = 0,
    /// Device pixel ratio 1.5 and above: images at twice the CSS width.
    X2 = 1,
}

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

/// Image formats a variant may be encoded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// As the origin sent it.
    Original = 0,
    Webp = 1,
    Avif = 2,
    /// Re-encoded JPEG (resized or lower quality); likewise PNG.
    Jpeg = 3,
    Png = 4,
}

impl Format {
    fn from_bits(b: u32) -> Option<Format> {
        match b {
            0 => Some(Format::Original),
            1 => Some(Format::Webp),
            2 => Some(Format::Avif),
            3 => Some(Format::Jpeg),
            4 => Some(Format::Png),
            _ => None,
        }
    }

    pub fn content_type(self) -> Option<&'static str> {
        match self {
            Format::Original => None,
            Format::Webp => Some("image/webp"),
            Format::Avif => Some("image/avif"),
            Format::Jpeg => Some("image/jpeg"),
            Format::Png => Some("image/png"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Original => "original",
            Format::Webp => "webp",
            Format::Avif => "avif",
            Format::Jpeg => "jpeg",
            Format::Png => "png",
        }
    }
}

const ENCODING_MASK: u32 = 0b111;
const ORIGIN_VARY: u32 = 1 << 3;
const FORMAT_SHIFT: u32 = 4;
const FORMAT_MASK: u32 = 0b1111 << FORMAT_SHIFT;
const VIEWPORT_SHIFT: u32 = 8;
const VIEWPORT_MASK: u32 = 0b111 << VIEWPORT_SHIFT;
const VIEWPORT_SENTINEL: u32 = 7;
const DENSITY_SHIFT: u32 = 11;
const DENSITY_MASK: u32 = 0b11 << DENSITY_SHIFT;
const SAVE_DATA: u32 = 1 << 13;
/// The bits that describe a built variant (all but the Vary hash).
const VARIANT_BITS: u32 = 0xffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor(pub u32);

impl Descriptor {
    /// The origin's own identity-encoded bytes, not selected by its `Vary`: what builders
    /// read their source from.
    pub const SOURCE: Descriptor = Descriptor(0);

    /// The origin's own response, with its content encoding; `vary_hash` when the origin's
    /// Vary made it one of several (each Vary value set is its own alternate).
    pub fn original(enc: Encoding, vary_hash: Option<u16>) -> Descriptor {
        let mut d = enc as u32;
        if let Some(h) = vary_hash {
            d |= ORIGIN_VARY | (h as u32) << 16;
        }
        Descriptor(d)
    }

    /// A built variant of an identity-encoded original.
    pub fn variant(
        format: Format,
        viewport: Viewport,
        density: Density,
        save_data: bool,
        enc: Encoding,
    ) -> Descriptor {
        let mut d =
            enc as u32 | (format as u32) << FORMAT_SHIFT | (viewport as u32) << VIEWPORT_SHIFT;
        if viewport != Viewport::Original {
            d |= (density as u32) << DENSITY_SHIFT;
        }
        if save_data {
            d |= SAVE_DATA;
        }
        Descriptor(d)
    }

    /// An internal record (e.g. "build declined") that no request can select.
    pub fn sentinel(kind: u16) -> Descriptor {
        Descriptor(VIEWPORT_SENTINEL << VIEWPORT_SHIFT | (kind as u32) << 16)
    }

    /// The sentinel recording that building `target` was declined (not smaller, or the
    /// source could not be decoded): it stops the build from being retried.
    pub fn declined(target: Descriptor) -> Descriptor {
        Descriptor::sentinel((target.0 & VARIANT_BITS) as u16)
    }

    /// For a sentinel made by `declined`, the variant it declines.
    pub fn declined_target(self) -> Option<Descriptor> {
        self.is_sentinel().then_some(Descriptor(self.0 >> 16))
    }

    pub fn format(self) -> Format {
        Format::from_bits((self.0 & FORMAT_MASK) >> FORMAT_SHIFT).unwrap_or(Format::Original)
    }

    pub fn viewport(self) -> Viewport {
        Viewport::from_bits((self.0 & VIEWPORT_MASK) >> VIEWPORT_SHIFT)
            .unwrap_or(Viewport::Original)
    }

    pub fn density(self) -> Density {
        if (self.0 & DENSITY_MASK) >> DENSITY_SHIFT == 1 {
            Density::X2
        } else {
            Density::X1
        }
    }

    pub fn save_data(self) -> bool {
        self.0 & SAVE_DATA != 0
    }

    /// The same variant at the source's own width: what serves a client whose viewport is
    /// wider than the image.
    pub fn at_full_size(self) -> Descriptor {
        Descriptor::variant(
            self.format(),
            Viewport::Original,
            Density::X1,
            self.save_data(),
            self.encoding(),
        )
    }

    /// The origin's own bytes (no transformation by us), whatever its encoding or Vary.
    pub fn is_original(self) -> bool {
        !self.is_sentinel()
            && self.format() == Format::Original
            && self.viewport() == Viewport::Original
            && !self.save_data()
    }

    /// A short label for logs, headers and ETags: "webp-480-2x-sd", "br".
    pub fn label(self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.format() != Format::Original {
            parts.push(self.format().as_str().into());
        }
        if let Some(w) = self.viewport().width() {
            parts.push(w.to_string());
            if self.density() == Density::X2 {
                parts.push("2x".into());
            }
        }
        if self.save_data() {
            parts.push("sd".into());
        }
        if self.encoding() != Encoding::Identity {
            parts.push(self.encoding().as_str().into());
        }
        if parts.is_empty() {
            "original".into()
        } else {
            parts.join("-")
        }
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
    fn variant_fields_round_trip_and_declines_name_their_target() {
        let d = Descriptor::variant(
            Format::Avif,
            Viewport::W480,
            Density::X2,
            true,
            Encoding::Identity,
        );
        assert_eq!(
            (d.format(), d.viewport(), d.density(), d.save_data()),
            (Format::Avif, Viewport::W480, Density::X2, true)
        );
        assert!(!d.is_original() && !d.is_sentinel());
        assert_eq!(d.label(), "avif-480-2x-sd");
        let no = Descriptor::declined(d);
        assert!(no.is_sentinel());
        assert_eq!(no.declined_target(), Some(d));
        // Density only means something for resized variants.
        let full = Descriptor::variant(
            Format::Webp,
            Viewport::Original,
            Density::X2,
            false,
            Encoding::Identity,
        );
        assert_eq!(full.density(), Density::X1);
        assert!(Descriptor::original(Encoding::Gzip, Some(7)).is_original());
        assert_eq!(Descriptor::original(Encoding::Br, None).label(), "br");
    }

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
