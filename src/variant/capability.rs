//! The request side: what a client can take, from `Accept`, `User-Agent`, the viewport and
//! density client hints, `Save-Data` and `Accept-Encoding`.

use super::encoding::{weighted_items, AcceptEncoding};

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

/// The request headers capabilities come from, borrowed; the first line of each wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapabilityHeaders<'a> {
    pub accept: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub sec_ch_viewport_width: Option<&'a [u8]>,
    pub viewport_width: Option<&'a [u8]>,
    pub sec_ch_dpr: Option<&'a [u8]>,
    pub dpr: Option<&'a [u8]>,
    pub save_data: Option<&'a [u8]>,
    pub accept_encoding: Option<&'a [u8]>,
}

impl<'a> CapabilityHeaders<'a> {
    /// Offers one request header (lowercase name); keeps it if it is one of ours.
    pub fn offer(&mut self, lc_name: &[u8], value: &'a [u8]) {
        let slot = match lc_name {
            b"accept" => &mut self.accept,
            b"user-agent" => &mut self.user_agent,
            b"sec-ch-viewport-width" => &mut self.sec_ch_viewport_width,
            b"viewport-width" => &mut self.viewport_width,
            b"sec-ch-dpr" => &mut self.sec_ch_dpr,
            b"dpr" => &mut self.dpr,
            b"save-data" => &mut self.save_data,
            b"accept-encoding" => &mut self.accept_encoding,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
}

impl Capabilities {
    /// `header` returns a request header's value by lowercase name.
    pub fn from_request(header: &dyn Fn(&str) -> Option<Vec<u8>>) -> Capabilities {
        let names = [
            "accept",
            "user-agent",
            "sec-ch-viewport-width",
            "viewport-width",
            "sec-ch-dpr",
            "dpr",
            "save-data",
            "accept-encoding",
        ];
        let owned: Vec<(&str, Vec<u8>)> = names
            .iter()
            .filter_map(|n| Some((*n, header(n)?)))
            .collect();
        let mut h = CapabilityHeaders::default();
        for (n, v) in &owned {
            h.offer(n.as_bytes(), v);
        }
        Capabilities::from_headers(&h)
    }

    pub fn from_headers(h: &CapabilityHeaders) -> Capabilities {
        let (avif, webp) = h
            .accept
            .map_or((false, false), |a| accept_image_formats(clip(a)));
        let hinted = h
            .sec_ch_viewport_width
            .or(h.viewport_width)
            .and_then(parse_number)
            .filter(|w| *w > 0.0);
        let (viewport, viewport_source) = match hinted {
            Some(w) => (Viewport::from_width(w), ViewportSource::ClientHint),
            None => match h.user_agent {
                Some(ua) => (device_class(clip(ua)), ViewportSource::UserAgent),
                None => (Viewport::Original, ViewportSource::None),
            },
        };
        let dpr = h.sec_ch_dpr.or(h.dpr).and_then(parse_number);
        let density = if dpr.is_some_and(|d| d >= 1.5) {
            Density::X2
        } else {
            Density::X1
        };
        let save_data = h
            .save_data
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"on"));
        let encoding = AcceptEncoding::parse(clip(h.accept_encoding.unwrap_or_default()));
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

/// Whether `Accept` names AVIF and WebP with a non-zero q. Wildcards (`image/*`, `*/*`) do not
/// count: browsers that decode a modern format name it, and serving it to a client that only
/// sent `*/*` (curl, crawlers, old apps) risks an undecodable image.
pub fn accept_image_formats(accept: &[u8]) -> (bool, bool) {
    let mut avif = false;
    let mut webp = false;
    for (media, q_ok) in weighted_items(accept) {
        if media.eq_ignore_ascii_case(b"image/avif") {
            avif = q_ok;
        } else if media.eq_ignore_ascii_case(b"image/webp") {
            webp = q_ok;
        }
    }
    (avif, webp)
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
    fn accept_names_modern_formats_with_q_values() {
        let cases: &[(&str, (bool, bool))] = &[
            (
                "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
                (true, true),
            ),
            ("image/webp,*/*", (false, true)),
            ("*/*", (false, false)),
            ("image/*", (false, false)),
            ("IMAGE/AVIF;Q=0.5", (true, false)),
            ("image/avif;q=0, image/webp;q=0.1", (false, true)),
            ("image/webp;q=abc", (false, false)),
            ("", (false, false)),
            (",,;;,image/webp ; q=1.0", (false, true)),
        ];
        for (accept, want) in cases {
            assert_eq!(accept_image_formats(accept.as_bytes()), *want, "{accept}");
        }
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
