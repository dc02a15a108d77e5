//! What a lookup serves: which alternate a client may be given (its capabilities, the
//! origin's own `Vary` values), whether what was found is usable now, and which variant to
//! build for the client when the best one for it is not stored yet.

use super::stale::Staleness;
use crate::http::cache_control::parse_http_date;
use crate::http::meta::{MetaView, StoredMeta};
use crate::store::{Hit, PurgeState, MAX_ALTERNATES};
use crate::variant::{
    score, wanted, Capabilities, Descriptor, Encoding, SourceKind, VariantPolicy, Viewport,
};

/// Picks among a key's alternates for one client, remembering every descriptor it saw (to
/// decide afterwards whether the client's ideal variant is missing). No allocation: this
/// runs under the shard lock on every hit.
pub struct Selector<'a> {
    caps: &'a Capabilities,
    /// A request header by lowercase name, for alternates the origin's `Vary` selected.
    header: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    seen: [u32; MAX_ALTERNATES as usize],
    len: usize,
}

impl<'a> Selector<'a> {
    pub fn new(caps: &'a Capabilities, header: &'a dyn Fn(&str) -> Option<Vec<u8>>) -> Self {
        Selector {
            caps,
            header,
            seen: [0; MAX_ALTERNATES as usize],
            len: 0,
        }
    }

    /// The store's scoring callback: None if this alternate must not go to this client.
    pub fn score(&mut self, descriptor: u32, meta: &[u8]) -> Option<u32> {
        // A key holds at most MAX_ALTERNATES; a damaged chain longer than that is caught by
        // the store, and a descriptor not remembered only costs a redundant build request.
        if self.len < self.seen.len() {
            self.seen[self.len] = descriptor;
            self.len += 1;
        }
        let d = Descriptor(descriptor);
        let s = score(d, self.caps)?;
        (!d.origin_varies() || StoredMeta::vary_matches(meta, self.header)).then_some(s)
    }

    pub fn seen(&self) -> &[u32] {
        &self.seen[..self.len]
    }

    /// The variant worth building for this client, when its source is stored and the variant
    /// is neither stored nor declined yet (the client is served the best stored one now).
    /// `source_type` is the Content-Type of the key's original.
    pub fn missing_variant(
        &self,
        policy: &VariantPolicy,
        source_type: &[u8],
    ) -> Option<Descriptor> {
        let seen = self.seen();
        if !policy.any() || !seen.contains(&Descriptor::SOURCE.0) {
            return None;
        }
        let mut target = wanted(
            SourceKind::from_content_type(source_type),
            self.caps,
            policy,
        )?;
        if seen.contains(&Descriptor::declined(target).0) {
            if target.viewport() == Viewport::Original {
                return None;
            }
            // A viewport variant is declined when the source is no wider than the viewport:
            // the full-size variant serves this client, and is built again if it went
            // (evicted alone) while the marker stayed.
            target = target.at_full_size();
        }
        let known = seen.contains(&target.0) || seen.contains(&Descriptor::declined(target).0);
        (!known).then_some(target)
    }
}

/// Whether what a lookup found may be served now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    Fresh,
    /// Not servable as is (unless the stale rules allow it): revalidated.
    Stale(Staleness),
    /// The metadata does not decode: a fault, refilled as a miss.
    Undecodable,
}

pub fn usable(hit: &Hit, meta: Option<&MetaView>, now: i64) -> Usable {
    match meta {
        None => Usable::Undecodable,
        Some(_) if hit.purge_state == PurgeState::SoftPurged => {
            Usable::Stale(Staleness::SoftPurged)
        }
        Some(m) if now < m.expires_at => Usable::Fresh,
        Some(_) => Usable::Stale(Staleness::Expired),
    }
}

/// The stored original a stale alternate is revalidated through: the identity original
/// variants are built from, unless the alternate stands alone (origin-varied, or an encoded
/// response the origin sent itself). An encoded alternate is told apart from one a builder
/// made by whether the identity original it would be built from is stored (`source_stored`):
/// both carry the same descriptor.
pub fn revalidation_target(found: Descriptor, source_stored: bool) -> Descriptor {
    let built_from_source = !found.is_original()
        || (source_stored && !found.origin_varies() && found.encoding() != Encoding::Identity);
    if built_from_source {
        Descriptor::SOURCE
    } else {
        found
    }
}

/// Whether a hit answers a client's conditional GET or HEAD with 304 (RFC 9110 13.2.2):
/// `If-None-Match` decides when present (weak comparison, `*` matches); only without it
/// `If-Modified-Since`, true when the stored `Last-Modified` — or, lacking one, the stored
/// `Date` (RFC 9111 4.3.2) — is not later than it. An unparseable date is ignored.
pub fn not_modified(
    meta: &MetaView,
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
) -> bool {
    if let Some(inm) = if_none_match {
        let Some(etag) = meta.etag() else {
            return false;
        };
        let opaque = |t: &[u8]| {
            let t = t.trim_ascii();
            t.strip_prefix(b"W/").unwrap_or(t).to_vec()
        };
        let stored = opaque(etag);
        return inm
            .split(|&c| c == b',')
            .map(<[u8]>::trim_ascii)
            .any(|t| t == b"*" || opaque(t) == stored);
    }
    let Some(ims) = if_modified_since.and_then(parse_http_date) else {
        return false;
    };
    let validator = if meta.last_modified >= 0 {
        Some(meta.last_modified)
    } else {
        meta.date()
    };
    validator.is_some_and(|t| t <= ims)
}

/// The media type's length and the `charset` parameter's value within a Content-Type, the
/// way nginx's upstream module splits one it copies (`content_type_len`, `charset`), so that
/// filters matching types see a HIT as they saw the MISS: the type ends at the `;` that starts
/// a `charset=` parameter (surrounding quotes dropped); without one the whole value counts.
pub fn split_content_type(v: &[u8]) -> (usize, Option<std::ops::Range<usize>>) {
    let mut i = 0;
    while i < v.len() {
        if v[i] != b';' {
            i += 1;
            continue;
        }
        let semi = i;
        i += 1;
        while i < v.len() && v[i] == b' ' {
            i += 1;
        }
        if v.len() - i < 8 || !v[i..i + 8].eq_ignore_ascii_case(b"charset=") {
            continue;
        }
        let mut start = i + 8;
        if v.get(start) == Some(&b'"') {
            start += 1;
        }
        let mut end = v.len();
        if end > start && v[end - 1] == b'"' {
            end -= 1;
        }
        return (semi, Some(start..end.max(start)));
    }
    (v.len(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variant::{Density, Encoding, Format, Viewport};

    fn caps(accept: &str) -> Capabilities {
        let a = accept.as_bytes().to_vec();
        Capabilities::from_request(&move |n: &str| (n == "accept").then(|| a.clone()))
    }

    #[test]
    fn stale_variants_are_revalidated_through_their_source() {
        let webp = Descriptor::variant(
            Format::Webp,
            Viewport::Original,
            Density::X1,
            false,
            Encoding::Identity,
        );
        assert_eq!(revalidation_target(webp, true), Descriptor::SOURCE);
        let gz = Descriptor::original(Encoding::Gzip, None);
        assert_eq!(
            revalidation_target(gz, false),
            gz,
            "an origin-encoded original stands alone"
        );
        assert_eq!(
            revalidation_target(gz, true),
            Descriptor::SOURCE,
            "a gzip alternate beside the identity original was built from it"
        );
        let varied = Descriptor::original(Encoding::Identity, Some(7));
        assert_eq!(revalidation_target(varied, true), varied);
        let varied_gz = Descriptor::original(Encoding::Gzip, Some(7));
        assert_eq!(revalidation_target(varied_gz, true), varied_gz);
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let meta = StoredMeta {
            last_modified: 1000,
            headers: vec![(b"ETag".to_vec(), b"\"abc\"".to_vec())],
            ..Default::default()
        }
        .encode()
        .unwrap();
        let m = MetaView::parse(&meta).unwrap();
        let early = b"Thu, 01 Jan 1970 00:00:10 GMT";
        let late = b"Thu, 01 Jan 1970 01:00:00 GMT";
        assert!(
            not_modified(&m, Some(b"\"abc\""), Some(early)),
            "INM matches, IMS ignored"
        );
        assert!(
            !not_modified(&m, Some(b"\"x\""), Some(late)),
            "INM fails, IMS ignored"
        );
        assert!(
            not_modified(&m, Some(b"\"x\", W/\"abc\""), None),
            "weak comparison"
        );
        assert!(not_modified(&m, Some(b"*"), None));
        assert!(
            not_modified(&m, None, Some(late)),
            "Last-Modified before IMS"
        );
        assert!(!not_modified(&m, None, Some(early)));
        assert!(!not_modified(&m, None, Some(b"garbage")));
        assert!(!not_modified(&m, None, None));
    }

    #[test]
    fn without_last_modified_the_stored_date_is_the_validator() {
        let meta = StoredMeta {
            last_modified: -1,
            headers: vec![(b"Date".to_vec(), b"Thu, 01 Jan 1970 00:16:40 GMT".to_vec())],
            ..Default::default()
        }
        .encode()
        .unwrap();
        let m = MetaView::parse(&meta).unwrap();
        assert!(not_modified(
            &m,
            None,
            Some(b"Thu, 01 Jan 1970 00:16:40 GMT")
        ));
        assert!(!not_modified(
            &m,
            None,
            Some(b"Thu, 01 Jan 1970 00:16:39 GMT")
        ));
        assert!(!not_modified(&m, Some(b"\"a\""), None), "no ETag stored");
    }

    #[test]
    fn content_type_splits_like_the_upstream_module() {
        assert_eq!(split_content_type(b"text/html"), (9, None));
        assert_eq!(
            split_content_type(b"text/html; charset=utf-8"),
            (9, Some(19..24))
        );
        assert_eq!(
            split_content_type(b"text/html;CHARSET=\"koi8-r\""),
            (9, Some(19..25))
        );
        assert_eq!(split_content_type(b"text/plain; format=flowed"), (25, None));
        assert_eq!(
            split_content_type(b"a/b; x=1; charset=utf-8"),
            (8, Some(18..23))
        );
        assert_eq!(
            split_content_type(b"text/html; charset="),
            (9, Some(19..19))
        );
        assert_eq!(
            split_content_type(b"text/html; charset=\""),
            (9, Some(20..20))
        );
        assert_eq!(split_content_type(b""), (0, None));
    }

    #[test]
    fn the_selector_remembers_what_it_saw_and_names_the_missing_variant() {
        let c = caps("image/avif,image/webp");
        let none = |_: &str| None;
        let mut s = Selector::new(&c, &none);
        let webp = Descriptor::variant(
            Format::Webp,
            Viewport::Original,
            Density::X1,
            false,
            Encoding::Identity,
        );
        assert!(s.score(Descriptor::SOURCE.0, b"").is_some());
        assert!(s.score(webp.0, b"").is_some());
        let policy = VariantPolicy {
            webp: true,
            avif: true,
            ..Default::default()
        };
        let avif = s.missing_variant(&policy, b"image/jpeg").unwrap();
        assert_eq!(avif.format(), Format::Avif);
        // The original's type decides, whatever the served alternate's type is.
        assert_eq!(s.missing_variant(&policy, b"image/avif"), None);
        assert_eq!(
            s.missing_variant(&VariantPolicy::default(), b"image/jpeg"),
            None
        );
        s.score(Descriptor::declined(avif).0, b"");
        assert_eq!(
            s.missing_variant(&policy, b"image/jpeg"),
            None,
            "declined once"
        );
    }

    #[test]
    fn a_declined_viewport_variant_asks_for_its_full_size_variant() {
        let c = Capabilities::from_request(&|n: &str| match n {
            "accept" => Some(b"image/webp".to_vec()),
            "sec-ch-viewport-width" => Some(b"400".to_vec()),
            _ => None,
        });
        let policy = VariantPolicy {
            webp: true,
            resize: true,
            ..Default::default()
        };
        let phone = Descriptor::variant(
            Format::Webp,
            Viewport::W480,
            Density::X1,
            false,
            Encoding::Identity,
        );
        let none = |_: &str| None;
        let mut s = Selector::new(&c, &none);
        s.score(Descriptor::SOURCE.0, b"");
        assert_eq!(s.missing_variant(&policy, b"image/jpeg"), Some(phone));
        // The source was no wider than 480 px: the phone's variant is the full-size one,
        // built again when it went while the marker stayed.
        s.score(Descriptor::declined(phone).0, b"");
        assert_eq!(
            s.missing_variant(&policy, b"image/jpeg"),
            Some(phone.at_full_size())
        );
        s.score(phone.at_full_size().0, b"");
        assert_eq!(s.missing_variant(&policy, b"image/jpeg"), None);
    }

    #[test]
    fn found_entries_are_fresh_expired_or_soft_purged() {
        let meta = StoredMeta {
            expires_at: 100,
            ..Default::default()
        }
        .encode()
        .unwrap();
        let m = MetaView::parse(&meta).unwrap();
        let hit = |purge_state| Hit {
            descriptor: 0,
            purge_state,
            stamp: 0,
            meta_len: 0,
            body_len: 0,
        };
        assert_eq!(
            usable(&hit(PurgeState::Current), Some(&m), 99),
            Usable::Fresh
        );
        assert_eq!(
            usable(&hit(PurgeState::Current), Some(&m), 100),
            Usable::Stale(Staleness::Expired)
        );
        assert_eq!(
            usable(&hit(PurgeState::SoftPurged), Some(&m), 0),
            Usable::Stale(Staleness::SoftPurged)
        );
        assert_eq!(
            usable(&hit(PurgeState::Current), None, 0),
            Usable::Undecodable
        );
    }
}
