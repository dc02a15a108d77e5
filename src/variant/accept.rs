//! Lists with quality values (RFC 9110 12.4.2): which content codings a client accepts
//! (`Accept-Encoding`, 12.5.3) and which image formats it names in `Accept`.

use super::descriptor::Encoding;

/// Acceptability per coding; q=0 refuses. `*` covers codings not named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptEncoding {
    gzip: Option<bool>,
    br: Option<bool>,
    zstd: Option<bool>,
    deflate: Option<bool>,
    identity: Option<bool>,
    star: Option<bool>,
}

/// The items of a comma-separated header with quality values (`Accept`, `Accept-Encoding`):
/// each name (trimmed, case as sent), and whether its q is above zero (absent: 1; malformed:
/// refused). Borrowed: this runs on every hit.
pub fn weighted_items(v: &[u8]) -> impl Iterator<Item = (&[u8], bool)> + '_ {
    v.split(|&c| c == b',').map(|item| {
        let mut parts = item.split(|&c| c == b';');
        let name = parts.next().unwrap_or_default().trim_ascii();
        let mut ok = true;
        for p in parts {
            let p = p.trim_ascii();
            if p.len() >= 2 && p[..2].eq_ignore_ascii_case(b"q=") {
                let q = std::str::from_utf8(&p[2..])
                    .ok()
                    .and_then(|s| s.trim().parse::<f32>().ok());
                ok = q.is_some_and(|q| q > 0.0);
            }
        }
        (name, ok)
    })
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

impl AcceptEncoding {
    pub fn parse(v: &[u8]) -> AcceptEncoding {
        let mut a = AcceptEncoding {
            gzip: None,
            br: None,
            zstd: None,
            deflate: None,
            identity: None,
            star: None,
        };
        for (name, ok) in weighted_items(v) {
            let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
            let slot = if is(b"gzip") || is(b"x-gzip") {
                &mut a.gzip
            } else if is(b"br") {
                &mut a.br
            } else if is(b"zstd") {
                &mut a.zstd
            } else if is(b"deflate") {
                &mut a.deflate
            } else if is(b"identity") {
                &mut a.identity
            } else if is(b"*") {
                &mut a.star
            } else {
                continue;
            };
            *slot = Some(ok);
        }
        a
    }

    pub fn accepts(&self, enc: Encoding) -> bool {
        let named = match enc {
            Encoding::Identity => {
                // Identity is acceptable unless refused by name, or by `*;q=0` without naming it.
                return self.identity.unwrap_or(self.star != Some(false));
            }
            Encoding::Gzip => self.gzip,
            Encoding::Br => self.br,
            Encoding::Zstd => self.zstd,
            Encoding::Deflate => self.deflate,
            // Codings we cannot name are never assumed acceptable.
            Encoding::Compress | Encoding::Other => return false,
        };
        named.unwrap_or(self.star == Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values_wildcards_and_casing() {
        let cases: &[(&[u8], [bool; 4])] = &[
            // header, [identity, gzip, br, zstd]
            (b"", [true, false, false, false]),
            (b"gzip", [true, true, false, false]),
            (b"GZip;Q=0.5, br", [true, true, true, false]),
            (b"gzip;q=0, *", [true, false, true, true]),
            (b"*;q=0", [false, false, false, false]),
            (b"*;q=0, identity", [true, false, false, false]),
            (b"identity;q=0, gzip", [false, true, false, false]),
            (b"br;q=abc", [true, false, false, false]),
            (b" , ;, br ;q=1.0 ", [true, false, true, false]),
        ];
        for (h, want) in cases {
            let a = AcceptEncoding::parse(h);
            let got = [
                Encoding::Identity,
                Encoding::Gzip,
                Encoding::Br,
                Encoding::Zstd,
            ]
            .map(|e| a.accepts(e));
            assert_eq!(&got, want, "{}", String::from_utf8_lossy(h));
        }
        assert!(!AcceptEncoding::parse(b"*").accepts(Encoding::Other));
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
    fn a_huge_header_is_handled() {
        let big = b"x, ".repeat(50_000);
        assert!(AcceptEncoding::parse(&big).accepts(Encoding::Identity));
    }
}
