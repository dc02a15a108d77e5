//! Variants: the 32-bit descriptor stored with every alternate, the client's capabilities,
//! the choice of the best alternate for a request, and which variant to build for it.

pub mod accept;
pub mod capability;
pub mod descriptor;
pub mod select;

pub use accept::AcceptEncoding;
pub use capability::{Capabilities, CapabilityHeaders, Hint, ViewportSource};
pub use descriptor::{Density, Descriptor, Encoding, Format, Viewport};
pub use select::{accept_ch, on_fill, score, vary_headers, wanted, VaryValues};

/// Which variants a location builds (from its configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VariantPolicy {
    pub webp: bool,
    pub avif: bool,
    /// Resize images for phone and tablet viewports (and 2x density).
    pub resize: bool,
    /// Lower-quality images for `Save-Data: on`.
    pub save_data: bool,
    pub gzip: bool,
    pub br: bool,
}

/// What kind of source an original is, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Jpeg,
    Png,
    Gif,
    Webp,
    Text,
    Other,
}

impl SourceKind {
    pub fn from_content_type(ct: &[u8]) -> SourceKind {
        let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "image/jpeg" | "image/jpg" | "image/pjpeg" => SourceKind::Jpeg,
            "image/png" => SourceKind::Png,
            "image/gif" => SourceKind::Gif,
            "image/webp" => SourceKind::Webp,
            "text/html"
            | "text/css"
            | "text/plain"
            | "text/xml"
            | "text/javascript"
            | "application/javascript"
            | "application/x-javascript"
            | "application/json"
            | "application/xml"
            | "image/svg+xml"
            | "application/manifest+json"
            | "application/rss+xml"
            | "application/atom+xml" => SourceKind::Text,
            _ => SourceKind::Other,
        }
    }

    pub fn is_image(self) -> bool {
        matches!(
            self,
            SourceKind::Jpeg | SourceKind::Png | SourceKind::Gif | SourceKind::Webp
        )
    }
}

impl VariantPolicy {
    pub fn any(&self) -> bool {
        *self != VariantPolicy::default()
    }

    /// Whether selection under this policy reads a hint. Accept-Encoding always counts
    /// (origins send encoded responses).
    pub fn reads(&self, h: Hint) -> bool {
        match h {
            Hint::AcceptEncoding => true,
            Hint::Accept => self.webp || self.avif,
            Hint::SaveData => self.save_data,
            Hint::UserAgent
            | Hint::SecChViewportWidth
            | Hint::ViewportWidth
            | Hint::SecChDpr
            | Hint::Dpr => self.resize,
        }
    }

    /// Whether selection reads a request header (any case): a hit parses only those.
    pub fn uses_header(&self, name: &[u8]) -> bool {
        Hint::from_name(name).is_some_and(|h| self.reads(h))
    }

    pub(crate) fn images(&self) -> bool {
        self.webp || self.avif || self.resize || self.save_data
    }
}
