//! Purge scopes: which "last purged" table buckets cover an entry, and how a purge request's
//! URL, prefix or tag maps to a bucket.
//!
//! Buckets are hashes, so two scopes may share one: that only ever invalidates *more*
//! (invariant 5). Bounded lists overflow the same way: a path deeper than `MAX_PREFIX_DEPTH`
//! is purged at its deepest recorded ancestor, an entry with more than `MAX_TAGS` tags is
//! covered by the reserved overflow bucket that every tag purge bumps.

/// Ancestor directories recorded per entry ("/", "/a/", "/a/b/", ...).
pub const MAX_PREFIX_DEPTH: usize = 8;
/// Tags recorded per entry before it falls back to the overflow bucket.
pub const MAX_TAGS: usize = 16;
/// Tag bucket bumped by every tag purge; entries with too many tags check it.
pub const TAG_OVERFLOW_SLOT: u32 = 0;

/// A URL as the cache sees it for purging: scheme, normalized host, path with query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlId<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub path: &'a str,
}

/// Table sizes, so scopes can be turned into bucket numbers.
#[derive(Debug, Clone, Copy)]
pub struct Buckets {
    pub url_slots: u32,
    pub prefix_slots: u32,
    pub tag_slots: u32,
}

fn hash64(domain: &[u8], parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(domain);
    for p in parts {
        // Length-prefixed so ("ab","c") and ("a","bc") never hash alike.
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let out = h.finalize();
    u64::from_le_bytes(out.as_bytes()[..8].try_into().expect("8 bytes"))
}

impl Buckets {
    pub fn url(&self, u: &UrlId) -> u32 {
        let h = hash64(
            b"psv.url",
            &[u.scheme.as_bytes(), u.host.as_bytes(), u.path.as_bytes()],
        );
        (h % self.url_slots as u64) as u32
    }

    /// Bucket of a directory prefix (must end with '/').
    pub fn prefix(&self, scheme: &str, host: &str, dir: &str) -> u32 {
        let h = hash64(
            b"psv.prefix",
            &[scheme.as_bytes(), host.as_bytes(), dir.as_bytes()],
        );
        (h % self.prefix_slots as u64) as u32
    }

    pub fn tag(&self, tag: &str) -> u32 {
        let h = hash64(b"psv.tag", &[tag.as_bytes()]);
        1 + (h % (self.tag_slots as u64 - 1)) as u32
    }

    /// Every scope that covers an entry for `url` carrying `tags`.
    pub fn scopes_for(&self, url: &UrlId, tags: &[&str]) -> ScopeSet {
        let mut s = ScopeSet {
            url: self.url(url),
            ..ScopeSet::default()
        };
        for dir in ancestors(url.path).take(MAX_PREFIX_DEPTH) {
            s.prefixes.push(self.prefix(url.scheme, url.host, dir));
        }
        for t in tags {
            let b = self.tag(t);
            if s.tags.contains(&b) {
                continue;
            }
            if s.tags.len() == MAX_TAGS {
                s.tag_overflow = true;
                break;
            }
            s.tags.push(b);
        }
        s
    }

    /// The bucket a prefix purge bumps: the deepest recorded ancestor directory at or above
    /// `prefix`. A prefix that does not end at a '/' (e.g. "/img/ab") is rounded up to its
    /// directory ("/img/"), which covers more, never less.
    pub fn prefix_purge_bucket(&self, scheme: &str, host: &str, prefix: &str) -> u32 {
        let path = if prefix.is_empty() { "/" } else { prefix };
        let dir = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "/",
        };
        let deepest = ancestors(dir).take(MAX_PREFIX_DEPTH).last().unwrap_or("/");
        self.prefix(scheme, host, deepest)
    }
}

/// Ancestor directories of a path, shallowest first: "/a/b/c?x" -> "/", "/a/", "/a/b/".
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let path = path.split('?').next().unwrap_or("");
    let path = if path.starts_with('/') { path } else { "/" };
    path.char_indices()
        .filter(|&(_, c)| c == '/')
        .map(move |(i, _)| &path[..=i])
}

/// The buckets an entry is covered by, stored with the entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    pub url: u32,
    pub prefixes: Vec<u32>,
    pub tags: Vec<u32>,
    pub tag_overflow: bool,
}

impl ScopeSet {
    /// Encoded form: url u32 | n_prefixes u8 | n_tags u8 | flags u8 | 0 | u32 each.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.url.to_le_bytes());
        out.push(self.prefixes.len() as u8);
        out.push(self.tags.len() as u8);
        out.push(self.tag_overflow as u8);
        out.push(0);
        for v in self.prefixes.iter().chain(&self.tags) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Decodes what `encode` wrote; None if inconsistent.
    pub fn decode(bytes: &[u8]) -> Option<ScopeSet> {
        let v = ScopeView::parse(bytes)?;
        Some(ScopeSet {
            url: v.url(),
            prefixes: v.prefixes().collect(),
            tags: v.tags().collect(),
            tag_overflow: v.tag_overflow(),
        })
    }

    pub fn encoded_len(&self) -> usize {
        8 + 4 * (self.prefixes.len() + self.tags.len())
    }
}

/// A borrowed view of an encoded scope set, read straight from a record.
pub struct ScopeView<'a> {
    bytes: &'a [u8],
}

impl<'a> ScopeView<'a> {
    /// None when the encoding is inconsistent (a corrupt record).
    pub fn parse(bytes: &'a [u8]) -> Option<ScopeView<'a>> {
        if bytes.len() < 8 {
            return None;
        }
        let n = bytes[4] as usize + bytes[5] as usize;
        (bytes[4] as usize <= MAX_PREFIX_DEPTH
            && bytes[5] as usize <= MAX_TAGS
            && bytes.len() == 8 + 4 * n)
            .then_some(ScopeView { bytes })
    }

    fn u32_at(&self, i: usize) -> u32 {
        u32::from_le_bytes(self.bytes[i..i + 4].try_into().expect("4 bytes"))
    }

    pub fn url(&self) -> u32 {
        self.u32_at(0)
    }

    pub fn prefixes(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.bytes[4] as usize).map(|i| self.u32_at(8 + 4 * i))
    }

    pub fn tags(&self) -> impl Iterator<Item = u32> + '_ {
        let p = self.bytes[4] as usize;
        (0..self.bytes[5] as usize).map(move |i| self.u32_at(8 + 4 * (p + i)))
    }

    pub fn tag_overflow(&self) -> bool {
        self.bytes[6] & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Buckets = Buckets {
        url_slots: 1024,
        prefix_slots: 256,
        tag_slots: 256,
    };

    fn url(path: &str) -> UrlId<'_> {
        UrlId {
            scheme: "https",
            host: "example.com",
            path,
        }
    }

    #[test]
    fn ancestors_are_every_directory_shallowest_first() {
        let a: Vec<_> = ancestors("/img/2026/a.jpg?w=1/2").collect();
        assert_eq!(a, ["/", "/img/", "/img/2026/"]);
        assert_eq!(ancestors("").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn a_prefix_purge_hits_a_bucket_every_entry_below_it_records() {
        let s = B.scopes_for(&url("/img/2026/a.jpg"), &[]);
        for p in ["/*", "/img/", "/img/2026/", "/img/20", "/img/2026/a"] {
            let b = B.prefix_purge_bucket("https", "example.com", p);
            assert!(s.prefixes.contains(&b), "{p}");
        }
    }

    #[test]
    fn a_prefix_deeper_than_recorded_falls_back_to_the_deepest_recorded_ancestor() {
        let deep = "/a/b/c/d/e/f/g/h/i/j/k/x.css";
        let s = B.scopes_for(&url(deep), &[]);
        assert_eq!(s.prefixes.len(), MAX_PREFIX_DEPTH);
        let b = B.prefix_purge_bucket("https", "example.com", "/a/b/c/d/e/f/g/h/i/j/");
        assert!(s.prefixes.contains(&b));
    }

    #[test]
    fn too_many_tags_overflow_into_the_shared_bucket() {
        let tags: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let s = B.scopes_for(&url("/x"), &refs);
        assert!(s.tag_overflow);
        assert!(s.tags.len() <= MAX_TAGS);
        assert!(!s.tags.contains(&TAG_OVERFLOW_SLOT));
    }

    #[test]
    fn encoding_round_trips() {
        let s = B.scopes_for(&url("/a/b/c"), &["x", "y"]);
        let mut buf = Vec::new();
        s.encode(&mut buf);
        assert_eq!(buf.len(), s.encoded_len());
        let v = ScopeView::parse(&buf).unwrap();
        assert_eq!(v.url(), s.url);
        assert_eq!(v.prefixes().collect::<Vec<_>>(), s.prefixes);
        assert_eq!(v.tags().collect::<Vec<_>>(), s.tags);
        assert!(ScopeView::parse(&buf[..buf.len() - 1]).is_none());
        assert_eq!(ScopeSet::decode(&buf), Some(s));
    }

    #[test]
    fn hosts_and_schemes_do_not_share_url_buckets_by_construction() {
        let a = B.url(&UrlId {
            scheme: "http",
            host: "a.com",
            path: "/x",
        });
        let b = B.url(&UrlId {
            scheme: "http",
            host: "a.co",
            path: "m/x",
        });
        // Length prefixes make these different inputs; equal buckets would be a 1/1024 fluke.
        assert_ne!(a, b);
    }
}
