//! Single-process tests of leases, refresh (an unchanged revalidation) and replace (a changed
//! one). Races between processes are in `tests/store_multiprocess.rs`.

use super::*;

use super::tests::{key, url};

fn anon() -> Store {
    super::tests::anon(4 << 20)
}

fn put(s: &Store, t: FillTicket, path: &str, desc: u32, meta: &[u8], body: &[u8]) -> CommitOutcome {
    let scopes = s.buckets().scopes_for(&url(path), &[]);
    let alt = Alternate {
        descriptor: desc,
        scopes: &scopes,
        meta,
        body,
    };
    s.commit(t, &key(path), &alt)
}

/// (descriptor, purge state, meta, body) of every alternate a lookup of `d` finds, by trying
/// each descriptor in turn.
fn find(s: &Store, path: &str, d: u32) -> Option<(PurgeState, Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    match s.lookup(&key(path), |x, _| (x == d).then_some(0), &mut buf) {
        Lookup::Hit(h) => Some((
            h.purge_state,
            buf[..h.meta_len].to_vec(),
            buf[h.meta_len..].to_vec(),
        )),
        Lookup::Miss => None,
        Lookup::Fault(f) => panic!("fault {f}"),
    }
}

/// The test's kinship: the variant is built from the original, anything else unrelated.
fn kin(built: bool) -> Kin {
    if built {
        Kin::Built
    } else {
        Kin::Unrelated
    }
}

fn request(s: &Store, path: &str) -> LeaseRequest {
    LeaseRequest::new(&s.buckets().scopes_for(&url(path), &[]), 5_000)
}

const ORIGINAL: u32 = 0;
const VARIANT: u32 = 0x10;

#[test]
fn one_lease_per_key_until_released() {
    let s = anon();
    let r = request(&s, "/a");
    let Ok(Lease::Acquired(t)) = s.lease(&key("/a"), &r) else {
        panic!("first asker gets the lease");
    };
    assert_eq!(s.lease(&key("/a"), &r), Ok(Lease::Held));
    assert_eq!(s.lease_state(&key("/a"), &r), Ok(Lease::Held));
    assert!(matches!(
        s.lease(&key("/b"), &request(&s, "/b")),
        Ok(Lease::Acquired(_))
    ));
    s.release_lease(&key("/a"), t, Release::Done).unwrap();
    assert_eq!(s.lease_state(&key("/a"), &r), Ok(Lease::Unavailable));
    assert!(matches!(s.lease(&key("/a"), &r), Ok(Lease::Acquired(_))));
}

#[test]
fn an_expired_lease_is_taken_over_and_its_late_release_changes_nothing() {
    let s = anon();
    let short = LeaseRequest::new(&s.buckets().scopes_for(&url("/a"), &[]), 0);
    let Ok(Lease::Acquired(old)) = s.lease(&key("/a"), &short) else {
        panic!()
    };
    let r = request(&s, "/a");
    let Ok(Lease::Acquired(new)) = s.lease(&key("/a"), &r) else {
        panic!("an expired lease is free");
    };
    s.release_lease(&key("/a"), old, Release::Done).unwrap();
    assert_eq!(
        s.lease_state(&key("/a"), &r),
        Ok(Lease::Held),
        "the new lease stands"
    );
    s.release_lease(&key("/a"), new, Release::Done).unwrap();
}

#[test]
fn a_purge_covering_the_key_ends_its_lease() {
    let s = anon();
    let r = request(&s, "/img/a.png");
    assert!(matches!(
        s.lease(&key("/img/a.png"), &r),
        Ok(Lease::Acquired(_))
    ));
    s.purge_url(&[url("/other")], &[], &[], false).unwrap();
    assert_eq!(
        s.lease_state(&key("/img/a.png"), &r),
        Ok(Lease::Held),
        "another URL's purge"
    );
    s.purge_prefix(&[("https", "example.com", "/img/")], true)
        .unwrap();
    assert_eq!(
        s.lease_state(&key("/img/a.png"), &r),
        Ok(Lease::Unavailable),
        "a (soft) prefix purge covering it ends the lease"
    );
    assert!(matches!(
        s.lease(&key("/img/a.png"), &r),
        Ok(Lease::Acquired(_))
    ));
    // Tags are unknown before the response: any tag purge ends every lease taken before it.
    s.purge_tag(&["t"], false).unwrap();
    assert!(matches!(
        s.lease(&key("/img/a.png"), &r),
        Ok(Lease::Acquired(_))
    ));
}

#[test]
fn a_pass_stands_until_its_deadline() {
    let s = anon();
    let r = request(&s, "/a");
    let Ok(Lease::Acquired(t)) = s.lease(&key("/a"), &r) else {
        panic!()
    };
    s.release_lease(&key("/a"), t, Release::Pass { ms: 60_000 })
        .unwrap();
    assert_eq!(s.lease(&key("/a"), &r), Ok(Lease::Pass));
    assert_eq!(s.lease_state(&key("/a"), &r), Ok(Lease::Pass));
}

#[test]
fn the_lease_table_full_means_fill_without_one() {
    let s = anon();
    // Every key of one shard: fill the shard's table.
    let shard = s.shard_of(&key("/k0"));
    let mut taken = 0;
    for i in 0..100_000 {
        let p = format!("/k{i}");
        if s.shard_of(&key(&p)) != shard {
            continue;
        }
        match s.lease(&key(&p), &request(&s, &p)).unwrap() {
            Lease::Acquired(_) => taken += 1,
            Lease::Unavailable => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(taken, layout::LEASES_PER_SHARD);
}

#[test]
fn a_refresh_keeps_the_original_and_its_variants_with_new_metadata() {
    let s = anon();
    let t0 = s.begin_fill();
    put(&s, t0, "/a", ORIGINAL, b"old-meta", b"original");
    put(&s, t0, "/a", VARIANT, b"old-meta", b"variant");
    s.purge_url(&[url("/a")], &[], &[], true).unwrap();
    assert_eq!(find(&s, "/a", VARIANT).unwrap().0, PurgeState::SoftPurged);
    let t1 = s.begin_fill();
    let r = s.refresh(
        t1,
        &key("/a"),
        ORIGINAL,
        |d, _| kin(d == VARIANT),
        |d, m| {
            assert_eq!(m, b"old-meta");
            Some(if d == ORIGINAL {
                b"new-meta".to_vec()
            } else {
                b"new-meta-longer".to_vec()
            })
        },
    );
    assert_eq!(r, Refresh::Refreshed { kept: 2 });
    let (state, meta, body) = find(&s, "/a", ORIGINAL).unwrap();
    assert_eq!(
        (state, &meta[..], &body[..]),
        (PurgeState::Current, &b"new-meta"[..], &b"original"[..])
    );
    let (state, meta, body) = find(&s, "/a", VARIANT).unwrap();
    assert_eq!(
        (state, &meta[..], &body[..]),
        (
            PurgeState::Current,
            &b"new-meta-longer"[..],
            &b"variant"[..]
        )
    );
    assert_eq!(s.stats().revalidated_unchanged, 1);
}

#[test]
fn a_hard_purge_since_the_revalidation_started_wins() {
    let s = anon();
    let t0 = s.begin_fill();
    put(&s, t0, "/a", ORIGINAL, b"m", b"original");
    put(&s, t0, "/a", VARIANT, b"m", b"variant");
    s.purge_url(&[url("/a")], &[], &[], true).unwrap();
    let ticket = s.begin_fill();
    // The revalidation is in flight when a hard purge of the URL lands (it deletes the key).
    s.purge_url(&[url("/a")], &[], &[key("/a")], false).unwrap();
    assert_eq!(
        s.refresh(ticket, &key("/a"), ORIGINAL, |_, _| Kin::Built, |_, _| None),
        Refresh::Gone
    );
    // A prefix purge does not delete: the records are still there, and must stay invalid.
    let t2 = s.begin_fill();
    put(&s, t2, "/a", ORIGINAL, b"m", b"original");
    let ticket = s.begin_fill();
    s.purge_prefix(&[("https", "example.com", "/")], false)
        .unwrap();
    assert_eq!(
        s.refresh(ticket, &key("/a"), ORIGINAL, |_, _| Kin::Built, |_, _| None),
        Refresh::Fenced
    );
    assert_eq!(find(&s, "/a", ORIGINAL), None, "never valid again");
}

#[test]
fn a_refresh_drops_alternates_a_hard_purge_covered_before_it() {
    let s = anon();
    let t0 = s.begin_fill();
    put(&s, t0, "/a", VARIANT, b"m", b"variant");
    // A prefix purge (lazy: nothing deleted) covers the variant; then the original is filled.
    s.purge_prefix(&[("https", "example.com", "/")], false)
        .unwrap();
    let t1 = s.begin_fill();
    put(&s, t1, "/a", ORIGINAL, b"m", b"original");
    let t2 = s.begin_fill();
    assert_eq!(
        s.refresh(
            t2,
            &key("/a"),
            ORIGINAL,
            |d, _| kin(d == VARIANT),
            |_, _| None
        ),
        Refresh::Refreshed { kept: 1 }
    );
    assert_eq!(
        find(&s, "/a", VARIANT),
        None,
        "the purged variant is not resurrected"
    );
}

#[test]
fn a_refresh_drops_variants_of_an_earlier_original() {
    // The original was evicted and filled again with new bytes; its old variant stayed, soft
    // purged. A 304 about the new original must not make the old variant fresh again.
    let s = anon();
    let t0 = s.begin_fill();
    put(&s, t0, "/a", VARIANT, b"from-v1", b"variant of v1");
    s.purge_url(&[url("/a")], &[], &[], true).unwrap();
    let t1 = s.begin_fill();
    put(&s, t1, "/a", ORIGINAL, b"v2", b"original v2");
    let t2 = s.begin_fill();
    let r = s.refresh(
        t2,
        &key("/a"),
        ORIGINAL,
        |_, meta| {
            if meta == b"from-v1" {
                Kin::Outdated
            } else {
                Kin::Built
            }
        },
        |_, _| None,
    );
    assert_eq!(r, Refresh::Refreshed { kept: 1 });
    assert_eq!(find(&s, "/a", VARIANT), None, "the old variant is gone");
    assert_eq!(find(&s, "/a", ORIGINAL).unwrap().0, PurgeState::Current);
}

#[test]
fn a_refresh_whose_headers_outgrow_max_object_drops_what_no_longer_fits() {
    let s = anon();
    let max = s.max_object() as usize;
    let t0 = s.begin_fill();
    put(&s, t0, "/a", ORIGINAL, b"m", &vec![b'o'; max - 1024]);
    put(&s, t0, "/a", VARIANT, b"m", b"small variant");
    let t1 = s.begin_fill();
    // 2 KiB more of headers: the original no longer fits a record, the variant does.
    let r = s.refresh(
        t1,
        &key("/a"),
        ORIGINAL,
        |d, _| kin(d == VARIANT),
        |_, _| Some(vec![b'h'; 2048]),
    );
    assert_eq!(r, Refresh::Gone, "the original itself is gone");
    assert_eq!(find(&s, "/a", ORIGINAL), None);
    assert_eq!(find(&s, "/a", VARIANT).unwrap().1, vec![b'h'; 2048]);
}

#[test]
fn a_replace_drops_old_alternates_and_fences_builds_of_the_old_original() {
    let s = anon();
    let t0 = s.begin_fill();
    put(&s, t0, "/a", ORIGINAL, b"m", b"v1");
    put(&s, t0, "/a", VARIANT, b"m", b"v1-variant");
    let build_ticket = FillTicket { stamp: t0.stamp }; // a build read the v1 original
    let fill = s.begin_fill();
    let scopes = s.buckets().scopes_for(&url("/a"), &[]);
    let alt = Alternate {
        descriptor: ORIGINAL,
        scopes: &scopes,
        meta: b"m",
        body: b"v2",
    };
    assert_eq!(
        s.replace(fill, &key("/a"), &url("/a"), &[], &alt),
        CommitOutcome::Stored
    );
    assert_eq!(find(&s, "/a", ORIGINAL).unwrap().2, b"v2");
    assert_eq!(find(&s, "/a", VARIANT), None, "old variants go at once");
    assert_eq!(
        put(&s, build_ticket, "/a", VARIANT, b"m", b"v1-variant"),
        CommitOutcome::Fenced,
        "a build of the old original is fenced"
    );
    let late = s.begin_fill();
    assert_eq!(
        put(&s, late, "/a", VARIANT, b"m", b"v2-variant"),
        CommitOutcome::Stored
    );
    assert_eq!(s.stats().revalidated_changed, 1);
}

#[test]
fn a_replace_is_fenced_by_a_hard_purge_since_its_ticket() {
    let s = anon();
    let fill = s.begin_fill();
    s.purge_url(&[url("/a")], &[], &[], false).unwrap();
    let scopes = s.buckets().scopes_for(&url("/a"), &[]);
    let alt = Alternate {
        descriptor: ORIGINAL,
        scopes: &scopes,
        meta: b"m",
        body: b"v2",
    };
    assert_eq!(
        s.replace(fill, &key("/a"), &url("/a"), &[], &alt),
        CommitOutcome::Fenced
    );
    assert_eq!(find(&s, "/a", ORIGINAL), None);
}

#[test]
fn a_soft_purge_since_a_replace_started_leaves_the_new_original_stale() {
    let s = anon();
    let t0 = s.begin_fill();
    put(&s, t0, "/a", ORIGINAL, b"m", b"v1");
    let fill = s.begin_fill();
    // The origin was asked; then a soft purge; then its answer (other bytes) arrives.
    s.purge_url(&[url("/a")], &[], &[], true).unwrap();
    let scopes = s.buckets().scopes_for(&url("/a"), &[]);
    let alt = Alternate {
        descriptor: ORIGINAL,
        scopes: &scopes,
        meta: b"m",
        body: b"v2",
    };
    assert_eq!(
        s.replace(fill, &key("/a"), &url("/a"), &[], &alt),
        CommitOutcome::Stored
    );
    let (state, _, body) = find(&s, "/a", ORIGINAL).unwrap();
    assert_eq!(body, b"v2");
    assert_eq!(state, PurgeState::SoftPurged, "the soft purge is not lost");
    // Without a soft purge in between, the replacement is current.
    let fill = s.begin_fill();
    assert_eq!(
        s.replace(fill, &key("/a"), &url("/a"), &[], &alt),
        CommitOutcome::Stored
    );
    assert_eq!(find(&s, "/a", ORIGINAL).unwrap().0, PurgeState::Current);
}
