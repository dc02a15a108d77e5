//! Property tests of the store's keys and purge scopes: key derivation is injective, and every
//! purge that covers an entry (its URL, a URL it depends on, a prefix of its path at any depth
//! or spelling, one of its tags however many it has, a flush) makes it miss and fences fills
//! that started before; purges that do not cover it may invalidate it too (hash collisions),
//! but never make the store serve anything other than the bytes last committed.

use proptest::prelude::*;
use proptest::sample::Index;

use ngx_http_pagespeed_module::store::{
    Alternate, Backing, Buckets, CommitOutcome, FillTicket, Key, Lookup, Store, StoreConfig, UrlId,
    MAX_PREFIX_DEPTH, MAX_TAGS,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn anon() -> Store {
    Store::open(&StoreConfig {
        backing: Backing::Anonymous,
        size: 4 << 20,
        max_object: 0,
    })
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Entries and purges, with a coverage model written from the purge semantics (strings, not
// buckets): the store must invalidate at least what the model says.

#[derive(Debug, Clone)]
struct Entry {
    scheme: String,
    host: String,
    path: String,
    tags: Vec<String>,
}

impl Entry {
    fn url(&self) -> UrlId<'_> {
        UrlId {
            scheme: &self.scheme,
            host: &self.host,
            path: &self.path,
        }
    }

    fn key(&self) -> Key {
        Key::derive(&[
            self.scheme.as_bytes(),
            self.host.as_bytes(),
            self.path.as_bytes(),
        ])
    }
}

fn scheme() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["http", "https"]).prop_map(String::from)
}

fn host() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["example.com", "a.example", "example.co"]).prop_map(String::from)
}

/// Paths up to 12 directories deep (past `MAX_PREFIX_DEPTH`), sometimes ending in '/', sometimes
/// with a query that contains '/'.
fn path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[a-c]{1,2}", 0..=12),
        prop::option::of("[a-c]{1,3}(\\.css)?"),
        prop::option::of("[a-c/=]{0,5}"),
    )
        .prop_map(|(dirs, file, query)| {
            let mut p = String::from("/");
            for d in dirs {
                p.push_str(&d);
                p.push('/');
            }
            if let Some(f) = file {
                p.push_str(&f);
            }
            if let Some(q) = query {
                p.push('?');
                p.push_str(&q);
            }
            p
        })
}

/// Up to 32 tags, a third of the time more distinct ones than `MAX_TAGS`; single letters and
/// dependency paths are shared by many entries.
fn tags() -> impl Strategy<Value = Vec<String>> {
    let tag = prop_oneof![3 => "[a-f]", 4 => "[a-z]{2}", 1 => "/css/[ab]\\.css"];
    prop::collection::vec(tag, 0..=32)
}

fn entry() -> impl Strategy<Value = Entry> {
    (scheme(), host(), path(), tags()).prop_map(|(scheme, host, path, tags)| Entry {
        scheme,
        host,
        path,
        tags,
    })
}

/// A purge request, described relative to the entries of a case so that many of them cover one.
#[derive(Debug, Clone)]
enum PurgeSpec {
    /// An entry's own URL, deleting its key or only bumping its generation.
    Url {
        entry: Index,
        delete: bool,
    },
    /// Some other URL that an entry declared (by tag) it was built from.
    Dependency {
        entry: Index,
        tag: Index,
    },
    /// A character prefix of an entry's path, maybe followed by '*', maybe on another host.
    Prefix {
        entry: Index,
        cut: Index,
        star: bool,
        other_host: bool,
    },
    Tag {
        entry: Index,
        tag: Index,
    },
    /// Scopes chosen without looking at the entries.
    OtherUrl(String),
    OtherTag(String),
    All,
}

fn purge_spec() -> impl Strategy<Value = PurgeSpec> {
    prop_oneof![
        3 => (any::<Index>(), any::<bool>())
            .prop_map(|(entry, delete)| PurgeSpec::Url { entry, delete }),
        2 => (any::<Index>(), any::<Index>())
            .prop_map(|(entry, tag)| PurgeSpec::Dependency { entry, tag }),
        3 => (any::<Index>(), any::<Index>(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(entry, cut, star, other_host)| PurgeSpec::Prefix {
                entry,
                cut,
                star,
                other_host,
            }),
        3 => (any::<Index>(), any::<Index>())
            .prop_map(|(entry, tag)| PurgeSpec::Tag { entry, tag }),
        1 => path().prop_map(PurgeSpec::OtherUrl),
        1 => "[a-z]{1,2}".prop_map(PurgeSpec::OtherTag),
        1 => Just(PurgeSpec::All),
    ]
}

/// A concrete purge.
#[derive(Debug, Clone)]
enum Purge {
    Url {
        scheme: String,
        host: String,
        path: String,
        delete: bool,
    },
    Dependency(String),
    Prefix {
        scheme: String,
        host: String,
        prefix: String,
    },
    Tag(String),
    All,
}

impl PurgeSpec {
    fn resolve(&self, entries: &[Entry]) -> Purge {
        let e = |i: &Index| &entries[i.index(entries.len())];
        let tag_of = |e: &Entry, i: &Index| {
            if e.tags.is_empty() {
                "untagged".to_string()
            } else {
                e.tags[i.index(e.tags.len())].clone()
            }
        };
        match self {
            PurgeSpec::Url { entry, delete } => {
                let e = e(entry);
                Purge::Url {
                    scheme: e.scheme.clone(),
                    host: e.host.clone(),
                    path: e.path.clone(),
                    delete: *delete,
                }
            }
            PurgeSpec::Dependency { entry, tag } => Purge::Dependency(tag_of(e(entry), tag)),
            PurgeSpec::Prefix {
                entry,
                cut,
                star,
                other_host,
            } => {
                let e = e(entry);
                let mut prefix = e.path[..cut.index(e.path.len() + 1)].to_string();
                if *star {
                    prefix.push('*');
                }
                Purge::Prefix {
                    scheme: e.scheme.clone(),
                    host: if *other_host {
                        format!("other.{}", e.host)
                    } else {
                        e.host.clone()
                    },
                    prefix,
                }
            }
            PurgeSpec::Tag { entry, tag } => Purge::Tag(tag_of(e(entry), tag)),
            PurgeSpec::OtherUrl(path) => Purge::Url {
                scheme: "https".into(),
                host: "example.com".into(),
                path: path.clone(),
                delete: true,
            },
            PurgeSpec::OtherTag(t) => Purge::Tag(t.clone()),
            PurgeSpec::All => Purge::All,
        }
    }
}

impl Purge {
    /// The model: does this purge cover `e`? Prefixes match characters of the path, a trailing
    /// '*' is a wildcard.
    fn covers(&self, e: &Entry) -> bool {
        match self {
            Purge::Url {
                scheme, host, path, ..
            } => *scheme == e.scheme && *host == e.host && *path == e.path,
            Purge::Dependency(t) | Purge::Tag(t) => e.tags.contains(t),
            Purge::Prefix {
                scheme,
                host,
                prefix,
            } => {
                *scheme == e.scheme
                    && *host == e.host
                    && e.path
                        .starts_with(prefix.strip_suffix('*').unwrap_or(prefix))
            }
            Purge::All => true,
        }
    }

    fn run(&self, s: &Store) -> u64 {
        let r = match self {
            Purge::Url {
                scheme,
                host,
                path,
                delete,
            } => {
                let u = UrlId { scheme, host, path };
                let k = Key::derive(&[scheme.as_bytes(), host.as_bytes(), path.as_bytes()]);
                let keys = if *delete { vec![k] } else { vec![] };
                s.purge_url(&[u], &[], &keys, false)
            }
            Purge::Dependency(t) => {
                let u = UrlId {
                    scheme: "https",
                    host: "example.com",
                    path: t,
                };
                s.purge_url(&[u], &[t.as_str()], &[], false)
            }
            Purge::Prefix {
                scheme,
                host,
                prefix,
            } => s.purge_prefix(&[(scheme.as_str(), host.as_str(), prefix.as_str())], false),
            Purge::Tag(t) => s.purge_tag(&[t.as_str()], false),
            Purge::All => s.flush_all(false),
        };
        r.expect("purge").generation
    }
}

fn body(i: usize, version: u64, e: &Entry) -> Vec<u8> {
    format!("entry {i} version {version} of {}{}", e.host, e.path).into_bytes()
}

fn commit(s: &Store, t: FillTicket, i: usize, e: &Entry, body: &[u8]) -> CommitOutcome {
    let tags: Vec<&str> = e.tags.iter().map(String::as_str).collect();
    let scopes = s.buckets().scopes_for(&e.url(), &tags);
    let alt = Alternate {
        descriptor: i as u32,
        scopes: &scopes,
        meta: b"meta",
        body,
    };
    s.commit(t, &e.key(), &alt)
}

/// Entry `i` is stored as the alternate with descriptor `i` (entries may share a URL).
fn lookup(s: &Store, i: usize, e: &Entry) -> Result<Option<(u64, Vec<u8>)>, TestCaseError> {
    let mut buf = Vec::new();
    match s.lookup(&e.key(), |d, _| (d == i as u32).then_some(0), &mut buf) {
        Lookup::Hit(h) => Ok(Some((h.stamp, buf[h.meta_len..].to_vec()))),
        Lookup::Miss => Ok(None),
        Lookup::Fault(f) => Err(TestCaseError::fail(format!("entry {i}: fault {f}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut parts = Vec::new();
    let mut at = 0;
    for c in cuts {
        parts.push(bytes[at..c].to_vec());
        at = c;
    }
    parts.push(bytes[at..].to_vec());
    parts
}

fn derive(parts: &[Vec<u8>]) -> Key {
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Key::derive(&refs)
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn distinct_part_lists_derive_distinct_keys(
        a in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..5),
        b in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..5),
    ) {
        prop_assume!(a != b);
        prop_assert_ne!(derive(&a), derive(&b));
    }

    #[test]
    fn the_same_bytes_split_differently_derive_distinct_keys(
        bytes in prop::collection::vec(any::<u8>(), 0..12),
        cuts_a in prop::collection::vec(any::<usize>(), 0..4),
        cuts_b in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        let (a, b) = (split(&bytes, &cuts_a), split(&bytes, &cuts_b));
        prop_assert_eq!(a.concat(), b.concat());
        prop_assert_eq!(derive(&a) == derive(&b), a == b, "{:?} / {:?}", a, b);
    }

    /// The bucket a covering prefix or tag purge bumps is always one the entry records (or the
    /// overflow bucket it checks). Huge tables, so a hash collision cannot hide a miss here.
    #[test]
    fn covering_scopes_are_always_recorded_by_the_entry(
        e in entry(),
        cut in any::<Index>(),
        star in any::<bool>(),
        tag in any::<Index>(),
    ) {
        let b = Buckets { url_slots: u32::MAX, prefix_slots: u32::MAX, tag_slots: u32::MAX };
        let tags: Vec<&str> = e.tags.iter().map(String::as_str).collect();
        let s = b.scopes_for(&e.url(), &tags);
        prop_assert!(s.prefixes.len() <= MAX_PREFIX_DEPTH && s.tags.len() <= MAX_TAGS);
        let mut prefix = e.path[..cut.index(e.path.len() + 1)].to_string();
        if star {
            prefix.push('*');
        }
        let pb = b.prefix_purge_bucket(&e.scheme, &e.host, &prefix);
        prop_assert!(s.prefixes.contains(&pb), "prefix {:?} of {:?}: {:?}", prefix, e.path, s);
        if !e.tags.is_empty() {
            let t = &e.tags[tag.index(e.tags.len())];
            prop_assert!(s.tag_overflow || s.tags.contains(&b.tag(t)), "tag {:?}: {:?}", t, s);
        }
        prop_assert_eq!(b.url(&e.url()), s.url);
    }
}

proptest! {
    #![proptest_config(config(192))]

    /// Entries committed with one ticket, then a series of purges: after each, every entry the
    /// model says is covered misses and refuses a commit with the old ticket; every other entry
    /// misses (a collision) or returns exactly its committed bytes. Fresh fills work afterwards.
    #[test]
    fn covering_purges_hide_entries_and_fence_older_fills_others_never_serve_old_bytes(
        entries in prop::collection::vec(entry(), 1..6),
        specs in prop::collection::vec(purge_spec(), 1..5),
    ) {
        let s = anon();
        let old = s.begin_fill();
        for (i, e) in entries.iter().enumerate() {
            prop_assert_eq!(commit(&s, old, i, e, &body(i, 0, e)), CommitOutcome::Stored);
        }
        let mut covered = vec![false; entries.len()];
        let mut generation = 0;
        for spec in &specs {
            let p = spec.resolve(&entries);
            let g = p.run(&s);
            prop_assert!(g > generation, "generations grow: {} after {}", g, generation);
            generation = g;
            for (i, e) in entries.iter().enumerate() {
                covered[i] |= p.covers(e);
                let found = lookup(&s, i, e)?;
                if covered[i] {
                    prop_assert_eq!(found, None, "entry {} {:?} after {:?}", i, e, p);
                    prop_assert_eq!(
                        commit(&s, old, i, e, &body(i, 0, e)),
                        CommitOutcome::Fenced,
                        "entry {} {:?}: old ticket after {:?}", i, e, p
                    );
                } else if let Some((stamp, bytes)) = found {
                    prop_assert_eq!(stamp, old.stamp);
                    prop_assert_eq!(bytes, body(i, 0, e), "entry {} after {:?}", i, p);
                }
            }
        }
        let fresh = s.begin_fill();
        prop_assert_eq!(fresh.stamp, generation);
        for (i, e) in entries.iter().enumerate() {
            prop_assert_eq!(commit(&s, fresh, i, e, &body(i, 1, e)), CommitOutcome::Stored);
        }
        for (i, e) in entries.iter().enumerate() {
            prop_assert_eq!(lookup(&s, i, e)?, Some((fresh.stamp, body(i, 1, e))));
        }
        let st = s.stats();
        prop_assert_eq!(st.corrupt_resets + st.checksum_failures, 0);
    }
}
