//! The request side: what a client can take, from `Accept`, `User-Agent`, the viewport and
//! density client hints, `Save-Data` and `Accept-Encoding`.

use super::accept::{accept_image_formats, AcceptEncoding};
use super::descriptor::{Density, Viewport};

/// Where the viewport class came from (decides which request headers responses vary on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewportSource {
    None,
    ClientHint,
    UserAgent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub avif: bool,
    pub webp: bool,
    pub viewport: Viewport,
    pub viewport_source: ViewportSource,
    pub density: Density,
    pub save_data: bool,
    pub encoding: AcceptEncoding,
}

/// Longest header value examined: a client cannot make us scan megabytes.
const MAX_SCAN: usize = 4096;

fn clip(v: &[u8]) -> &[u8] {
    &v[..v.len().min(MAX_SCAN)]
}

/// The request headers capabilities are read from, in the order a response names them in
/// `Vary`. The one list every use reads: parsing, selection's header filter, `Vary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Accept = 0,
    SaveData = 1,
    UserAgent = 2,
    SecChViewportWidth = 3,
    ViewportWidth = 4,
    SecChDpr = 5,
    Dpr = 6,
    AcceptEncoding = 7,
}

impl Hint {
    pub const ALL: [Hint; 8] = [
        Hint::Accept,
        Hint::SaveData,
        Hint::UserAgent,
        Hint::SecChViewportWidth,
        Hint::ViewportWidth,
        Hint::SecChDpr,
        Hint::Dpr,
        Hint::AcceptEncoding,
    ];

    /// The header's name as responses spell it (`Vary`).
    pub fn name(self) -> &'static str {
        match self {
            Hint::Accept => "Accept",
            Hint::SaveData => "Save-Data",
            Hint::UserAgent => "User-Agent",
            Hint::SecChViewportWidth => "Sec-CH-Viewport-Width",
            Hint::ViewportWidth => "Viewport-Width",
            Hint::SecChDpr => "Sec-CH-DPR",
            Hint::Dpr => "DPR",
            Hint::AcceptEncoding => "Accept-Encoding",
        }
    }

    /// The hint a header name (any case) is, if it is one.
    pub fn from_name(name: &[u8]) -> Option<Hint> {
        Hint::ALL
            .into_iter()
            .find(|h| name.eq_ignore_ascii_case(h.name().as_bytes()))
    }
}

/// The request headers capabilities come from, borrowed; the first line of each wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapabilityHeaders<'a> {
    values: [Option<&'a [u8]>; Hint::ALL.len()],
}

impl<'a> CapabilityHeaders<'a> {
    /// Offers one request header; keeps it if it is one of ours.
    pub fn offer(&mut self, name: &[u8], value: &'a [u8]) {
        if let Some(h) = Hint::from_name(name) {
            self.values[h as usize].get_or_insert(value);
        }
    }

    pub fn get(&self, h: Hint) -> Option<&'a [u8]> {
        self.values[h as usize]
    }
}

impl Capabilities {
    /// `header` returns a request header's value by lowercase name.
    pub fn from_request(header: &dyn Fn(&str) -> Option<Vec<u8>>) -> Capabilities {
        let owned: Vec<(Hint, Vec<u8>)> = Hint::ALL
            .iter()
            .filter_map(|&h| Some((h, header(&h.name().to_ascii_lowercase())?)))
            .collect();
        let mut headers = CapabilityHeaders::default();
        for (h, v) in &owned {
            headers.values[*h as usize] = Some(v);
        }
        Capabilities::from_headers(&headers)
    }

    pub fn from_headers(h: &CapabilityHeaders) -> Capabilities {
        let (avif, webp) = h
            .get(Hint::Accept)
            .map_or((false, false), |a| accept_image_formats(clip(a)));
        let hinted = h
            .get(Hint::SecChViewportWidth)
            .or(h.get(Hint::ViewportWidth))
            .and_then(parse_number)
            .filter(|w| *w > 0.0);
        let (viewport, viewport_source) = match hinted {
            Some(w) => (Viewport::from_width(w), ViewportSource::ClientHint),
            None => match h.get(Hint::UserAgent) {
                Some(ua) => (device_class(clip(ua)), ViewportSource::UserAgent),
                None => (Viewport::Original, ViewportSource::None),
            },
        };
        let dpr = h
            .get(Hint::SecChDpr)
            .or(h.get(Hint::Dpr))
            .and_then(parse_number);
        let density = if dpr.is_some_and(|d| d >= 1.5) {
            Density::X2
        } else {
            Density::X1
        };
        let save_data = h
            .get(Hint::SaveData)
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"on"));
        let encoding = AcceptEncoding::parse(clip(h.get(Hint::AcceptEncoding).unwrap_or_default()));
        Capabilities {
            avif,
            webp,
            viewport,
            viewport_source,
            density,
            save_data,
            encoding,
        }
    }
}

fn parse_number(v: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(clip(v)).ok()?.trim();
    let n: f64 = s.parse().ok()?;
    n.is_finite().then_some(n)
}

/// Device class from a User-Agent: phones, tablets, everything else.
pub fn device_class(ua: &[u8]) -> Viewport {
    let has = |needle: &[u8]| {
        ua.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    if has(b"ipad") || has(b"tablet") || (has(b"android") && !has(b"mobile")) {
        Viewport::W768
    } else if has(b"mobi") || has(b"iphone") || has(b"ipod") {
        Viewport::W480
    } else {
        Viewport::Original
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(headers: &[(&str, &str)]) -> Capabilities {
        let owned: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        Capabilities::from_request(&move |name: &str| {
            owned
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn user_agents_classify_into_phones_tablets_and_desktops() {
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
        let ipad = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X)";
        let android_phone = "Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36";
        let android_tablet = "Mozilla/5.0 (Linux; Android 14; SM-X710) Safari/537.36";
        let desktop = "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0 Safari/537.36";
        assert_eq!(device_class(iphone.as_bytes()), Viewport::W480);
        assert_eq!(device_class(android_phone.as_bytes()), Viewport::W480);
        assert_eq!(device_class(ipad.as_bytes()), Viewport::W768);
        assert_eq!(device_class(android_tablet.as_bytes()), Viewport::W768);
        assert_eq!(device_class(desktop.as_bytes()), Viewport::Original);
    }

    #[test]
    fn viewport_hints_win_over_the_user_agent() {
        let c = caps(&[
            ("User-Agent", "iPhone Mobile"),
            ("Sec-CH-Viewport-Width", "1200"),
        ]);
        assert_eq!(
            (c.viewport, c.viewport_source),
            (Viewport::Original, ViewportSource::ClientHint)
        );
        let c = caps(&[("User-Agent", "X11 desktop"), ("Viewport-Width", "400")]);
        assert_eq!(c.viewport, Viewport::W480);
        let c = caps(&[
            ("User-Agent", "iPhone Mobile"),
            ("Sec-CH-Viewport-Width", "garbage"),
        ]);
        assert_eq!(
            (c.viewport, c.viewport_source),
            (Viewport::W480, ViewportSource::UserAgent)
        );
        assert_eq!(caps(&[]).viewport_source, ViewportSource::None);
    }

    #[test]
    fn density_and_save_data() {
        assert_eq!(caps(&[("Sec-CH-DPR", "2")]).density, Density::X2);
        assert_eq!(caps(&[("DPR", "1.25")]).density, Density::X1);
        assert_eq!(caps(&[("DPR", "NaN")]).density, Density::X1);
        assert!(caps(&[("Save-Data", " ON ")]).save_data);
        assert!(!caps(&[("Save-Data", "off")]).save_data);
    }

    #[test]
    fn huge_and_empty_headers_are_harmless() {
        let big = "image/webp,".repeat(100_000);
        let c = caps(&[
            ("Accept", &big),
            ("User-Agent", &"x".repeat(1 << 20)),
            ("Accept-Encoding", ""),
        ]);
        assert!(c.webp);
        assert_eq!(c.viewport, Viewport::Original);
        let e = caps(&[("Accept", ""), ("User-Agent", ""), ("Sec-CH-DPR", "")]);
        assert!(!e.webp && !e.avif && e.density == Density::X1);
    }
}
