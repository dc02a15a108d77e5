//! Choosing among a key's alternates for one client, what to build for it, and what every
//! response of a variants location varies on.

use super::capability::{Capabilities, Hint};
use super::descriptor::{Density, Descriptor, Encoding, Format, Viewport};
use super::{SourceKind, VariantPolicy};

/// Scores an alternate for a client (None: must not be served to it). Higher is better. The
/// original is always acceptable (if its encoding is); a built variant only when the client
/// takes its format, its viewport and density match the client's, and Save-Data variants
/// only to clients that asked.
pub fn score(desc: Descriptor, caps: &Capabilities) -> Option<u32> {
    if desc.is_sentinel() || !caps.encoding.accepts(desc.encoding()) {
        return None;
    }
    let mut s = match desc.encoding() {
        Encoding::Br => 4,
        Encoding::Zstd => 3,
        Encoding::Gzip => 2,
        _ => 1,
    };
    match desc.format() {
        Format::Avif if !caps.avif => return None,
        Format::Webp if !caps.webp => return None,
        Format::Avif => s += 30,
        Format::Webp => s += 20,
        Format::Jpeg | Format::Png => s += 10,
        Format::Original => {}
    }
    if desc.viewport() != Viewport::Original {
        if desc.viewport() != caps.viewport || desc.density() != caps.density {
            return None;
        }
        s += 100;
    }
    if desc.save_data() {
        if !caps.save_data {
            return None;
        }
        s += 200;
    }
    Some(s)
}

/// The variant worth building for this client, if any: the best format it takes, resized for
/// its viewport and density, lighter for Save-Data (images); its best compression (text).
pub fn wanted(kind: SourceKind, caps: &Capabilities, policy: &VariantPolicy) -> Option<Descriptor> {
    if kind == SourceKind::Text {
        let enc = if policy.br && caps.encoding.accepts(Encoding::Br) {
            Encoding::Br
        } else if policy.gzip && caps.encoding.accepts(Encoding::Gzip) {
            Encoding::Gzip
        } else {
            return None;
        };
        return Some(Descriptor::original(enc, None));
    }
    if !kind.is_image() {
        return None;
    }
    let viewport = if policy.resize {
        caps.viewport
    } else {
        Viewport::Original
    };
    let save_data = policy.save_data && caps.save_data;
    let format = if policy.avif && caps.avif {
        Format::Avif
    } else if policy.webp && caps.webp {
        Format::Webp
    } else if viewport != Viewport::Original || save_data {
        match kind {
            SourceKind::Jpeg => Format::Jpeg,
            SourceKind::Png | SourceKind::Gif => Format::Png,
            _ => return None,
        }
    } else {
        return None;
    };
    Some(Descriptor::variant(
        format,
        viewport,
        caps.density,
        save_data,
        Encoding::Identity,
    ))
}

/// The variants built as soon as an original is stored (before any client asks): the
/// full-size modern formats for images, both compressions for text.
pub fn on_fill(kind: SourceKind, policy: &VariantPolicy) -> Vec<Descriptor> {
    let mut out = Vec::new();
    let id = Encoding::Identity;
    if kind.is_image() {
        if policy.webp && kind != SourceKind::Webp {
            out.push(Descriptor::variant(
                Format::Webp,
                Viewport::Original,
                Density::X1,
                false,
                id,
            ));
        }
        if policy.avif {
            out.push(Descriptor::variant(
                Format::Avif,
                Viewport::Original,
                Density::X1,
                false,
                id,
            ));
        }
    } else if kind == SourceKind::Text {
        if policy.gzip {
            out.push(Descriptor::original(Encoding::Gzip, None));
        }
        if policy.br {
            out.push(Descriptor::original(Encoding::Br, None));
        }
    }
    out
}

/// The request headers a response of `kind` varies on under `policy`: what a downstream
/// cache must key on, on the original as much as on its variants.
pub fn vary_headers(kind: SourceKind, policy: &VariantPolicy) -> Vec<&'static str> {
    let relevant = |h: Hint| {
        if kind.is_image() {
            policy.images() && h != Hint::AcceptEncoding && policy.reads(h)
        } else {
            kind == SourceKind::Text && (policy.gzip || policy.br) && h == Hint::AcceptEncoding
        }
    };
    Hint::ALL
        .into_iter()
        .filter(|&h| relevant(h))
        .map(Hint::name)
        .collect()
}

/// The `Vary` values of a location, computed once from its policy (the hit path sends them
/// without formatting anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaryValues {
    pub image: String,
    pub text: String,
}

impl VaryValues {
    pub fn new(policy: &VariantPolicy) -> VaryValues {
        VaryValues {
            image: vary_headers(SourceKind::Jpeg, policy).join(", "),
            text: vary_headers(SourceKind::Text, policy).join(", "),
        }
    }

    /// The value for a key whose original is of `kind`; empty: no Vary of ours.
    pub fn for_kind(&self, kind: SourceKind) -> &str {
        if kind.is_image() {
            &self.image
        } else if kind == SourceKind::Text {
            &self.text
        } else {
            ""
        }
    }
}

/// `Accept-CH` asks browsers for the hints resizing uses (they send them on later requests).
pub fn accept_ch(policy: &VariantPolicy) -> Option<&'static str> {
    policy.resize.then_some("Sec-CH-Viewport-Width, Sec-CH-DPR")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variant::Capabilities;

    fn caps(accept: &str, ua: &str, extra: &[(&str, &str)]) -> Capabilities {
        let mut h: Vec<(String, Vec<u8>)> = vec![
            ("accept".into(), accept.as_bytes().to_vec()),
            ("user-agent".into(), ua.as_bytes().to_vec()),
        ];
        for (n, v) in extra {
            h.push((n.to_ascii_lowercase(), v.as_bytes().to_vec()));
        }
        Capabilities::from_request(&move |name: &str| {
            h.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        })
    }

    const DESKTOP: &str = "X11; Linux x86_64";
    const PHONE: &str = "iPhone; Mobile";
    const ALL: VariantPolicy = VariantPolicy {
        webp: true,
        avif: true,
        resize: true,
        save_data: true,
        gzip: true,
        br: true,
    };

    fn v(f: Format, vp: Viewport, d: Density, sd: bool) -> Descriptor {
        Descriptor::variant(f, vp, d, sd, Encoding::Identity)
    }

    fn best(stored: &[Descriptor], c: &Capabilities) -> Option<Descriptor> {
        stored
            .iter()
            .filter_map(|&d| score(d, c).map(|s| (s, d)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, d)| d)
    }

    #[test]
    fn the_original_is_always_acceptable_and_formats_need_acceptance() {
        let orig = Descriptor::original(Encoding::Identity, None);
        let webp = v(Format::Webp, Viewport::Original, Density::X1, false);
        let avif = v(Format::Avif, Viewport::Original, Density::X1, false);
        let stored = [orig, webp, avif];
        assert_eq!(best(&stored, &caps("*/*", DESKTOP, &[])), Some(orig));
        assert_eq!(
            best(&stored, &caps("image/webp,*/*", DESKTOP, &[])),
            Some(webp)
        );
        assert_eq!(
            best(&stored, &caps("image/avif,image/webp", DESKTOP, &[])),
            Some(avif)
        );
    }

    #[test]
    fn a_client_taking_avif_and_webp_gets_webp_while_avif_is_missing() {
        let c = caps("image/avif,image/webp,*/*", DESKTOP, &[]);
        let orig = Descriptor::original(Encoding::Identity, None);
        let webp = v(Format::Webp, Viewport::Original, Density::X1, false);
        assert_eq!(best(&[orig, webp], &c), Some(webp));
        assert_eq!(
            wanted(SourceKind::Jpeg, &c, &ALL),
            Some(v(Format::Avif, Viewport::Original, Density::X1, false))
        );
    }

    #[test]
    fn resized_variants_go_only_to_their_viewport_and_density() {
        let phone = caps("image/webp", PHONE, &[]);
        let phone2x = caps("image/webp", PHONE, &[("Sec-CH-DPR", "3")]);
        let small = v(Format::Webp, Viewport::W480, Density::X1, false);
        let full = v(Format::Webp, Viewport::Original, Density::X1, false);
        assert_eq!(best(&[full, small], &phone), Some(small));
        assert_eq!(best(&[full, small], &phone2x), Some(full));
        assert_eq!(
            best(&[full, small], &caps("image/webp", DESKTOP, &[])),
            Some(full)
        );
        assert_eq!(
            wanted(SourceKind::Png, &phone2x, &ALL),
            Some(v(Format::Webp, Viewport::W480, Density::X2, false))
        );
    }

    #[test]
    fn save_data_variants_only_for_clients_that_ask() {
        let sd = v(Format::Webp, Viewport::Original, Density::X1, true);
        let full = v(Format::Webp, Viewport::Original, Density::X1, false);
        assert_eq!(
            best(&[full, sd], &caps("image/webp", DESKTOP, &[])),
            Some(full)
        );
        assert_eq!(
            best(
                &[full, sd],
                &caps("image/webp", DESKTOP, &[("Save-Data", "on")])
            ),
            Some(sd)
        );
    }

    #[test]
    fn encodings_and_sentinels() {
        let c = caps("*/*", DESKTOP, &[("Accept-Encoding", "gzip, br")]);
        let plain = caps("*/*", DESKTOP, &[]);
        let orig = Descriptor::original(Encoding::Identity, None);
        let gz = Descriptor::original(Encoding::Gzip, None);
        let br = Descriptor::original(Encoding::Br, None);
        assert_eq!(best(&[orig, gz, br], &c), Some(br));
        assert_eq!(best(&[orig, gz, br], &plain), Some(orig));
        assert_eq!(best(&[Descriptor::declined(br)], &c), None);
        assert_eq!(wanted(SourceKind::Text, &c, &ALL), Some(br));
        assert_eq!(wanted(SourceKind::Text, &plain, &ALL), None);
    }

    #[test]
    fn responses_vary_on_what_selected_them() {
        assert_eq!(
            vary_headers(SourceKind::Jpeg, &ALL)[..2],
            ["Accept", "Save-Data"]
        );
        assert!(vary_headers(SourceKind::Jpeg, &ALL).contains(&"Sec-CH-DPR"));
        assert_eq!(vary_headers(SourceKind::Text, &ALL), ["Accept-Encoding"]);
        assert!(vary_headers(SourceKind::Other, &ALL).is_empty());
        let webp_only = VariantPolicy {
            webp: true,
            ..Default::default()
        };
        assert_eq!(vary_headers(SourceKind::Png, &webp_only), ["Accept"]);
        assert!(vary_headers(SourceKind::Text, &webp_only).is_empty());
        assert_eq!(accept_ch(&ALL), Some("Sec-CH-Viewport-Width, Sec-CH-DPR"));
        let v = VaryValues::new(&ALL);
        assert_eq!(
            v.for_kind(SourceKind::Png),
            "Accept, Save-Data, User-Agent, Sec-CH-Viewport-Width, Viewport-Width, Sec-CH-DPR, DPR"
        );
        assert_eq!(v.for_kind(SourceKind::Text), "Accept-Encoding");
        assert_eq!(v.for_kind(SourceKind::Other), "");
        assert!(ALL.uses_header(b"SEC-CH-DPR") && !webp_only.uses_header(b"user-agent"));
        assert_eq!(accept_ch(&webp_only), None);
    }

    #[test]
    fn nothing_is_built_without_a_reason() {
        let plain = caps("*/*", DESKTOP, &[]);
        assert_eq!(wanted(SourceKind::Jpeg, &plain, &ALL), None);
        assert_eq!(
            wanted(SourceKind::Other, &caps("image/webp", PHONE, &[]), &ALL),
            None
        );
        let off = VariantPolicy::default();
        assert_eq!(
            wanted(SourceKind::Jpeg, &caps("image/avif", PHONE, &[]), &off),
            None
        );
        // A phone without modern formats still gets a smaller image in the source's format.
        assert_eq!(
            wanted(SourceKind::Jpeg, &caps("*/*", PHONE, &[]), &ALL),
            Some(v(Format::Jpeg, Viewport::W480, Density::X1, false))
        );
        assert_eq!(
            on_fill(SourceKind::Webp, &ALL),
            vec![v(Format::Avif, Viewport::Original, Density::X1, false)]
        );
    }
}
