//! Revalidation's two outcomes. Unchanged (a 304, or a 200 with the same bytes): the original
//! and every alternate built from it get fresh metadata and the revalidation's stamp, nothing
//! is rebuilt. Changed: the new original replaces the key's alternates at once and the URL's
//! generation advances, so builds of the old original still running are fenced, exactly as
//! after a URL purge. Both are fenced like a commit: a hard purge since the revalidation
//! started wins.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::layout::Table;
use super::scope::{ScopeView, UrlId, TAG_OVERFLOW_SLOT};
use super::shard::{self, Corrupt, NewRecord, STATE_LIVE};
use super::stats::{PurgeCounter, ShardCounter};
use super::{Alternate, CommitOutcome, Fault, FillTicket, Key, Store, Validity, MAX_ALTERNATES};

/// How a refresh treats an alternate of the key other than its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kin {
    /// Not made from the target (an origin-varied original stands alone): left as it is.
    Unrelated,
    /// Built from the target's bytes: refreshed with it.
    Built,
    /// Built from an earlier original of the key (a fill replaced an evicted original
    /// without removing the variants beside it): dropped, or a 304 about the new original
    /// would make the old bytes fresh again.
    Outdated,
}

/// What a refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The original and `kept - 1` derived alternates are fresh again.
    Refreshed {
        kept: u64,
    },
    /// A hard purge covering the key happened after the ticket: nothing was refreshed.
    Fenced,
    /// The original is no longer stored (evicted, purged): nothing to refresh.
    Gone,
    Fault(Fault),
}

impl Store {
    /// Makes the alternate `target` of `key` (an original) and the alternates `kin` (given
    /// each one's descriptor and metadata) says were built from it fresh again, with the
    /// metadata `update` gives each (None: as is) and `ticket` as their stamp. Alternates a
    /// hard purge has covered since their own stamp, and those `kin` finds built from another
    /// original, are dropped, not refreshed.
    pub fn refresh(
        &self,
        ticket: FillTicket,
        key: &Key,
        target: u32,
        kin: impl Fn(u32, &[u8]) -> Kin,
        mut update: impl FnMut(u32, &[u8]) -> Option<Vec<u8>>,
    ) -> Refresh {
        let epoch = self.seg.header().open_epoch.load(Relaxed);
        let r = self.with_shard(self.shard_of(key), |sh| {
            let Some(pos) = sh.find(&key.0) else {
                return Ok(Refresh::Gone);
            };
            let chain = sh.chain(pos)?;
            let clock = self.seg.header().purge_clock.load(Acquire);
            let mut target_seen = false;
            // (offset, new meta) of what stays; records whose meta changes size are rewritten.
            let mut keep: Vec<(u64, Option<Vec<u8>>)> = Vec::new();
            for &off in &chain {
                let h = sh.header(off)?;
                let is_target = h.descriptor == target;
                let (scope, meta, _) = sh.payload(off, &h);
                if !is_target {
                    match kin(h.descriptor, meta) {
                        Kin::Unrelated => continue,
                        Kin::Outdated => {
                            sh.kill(off)?;
                            continue;
                        }
                        Kin::Built => {}
                    }
                }
                if is_target {
                    // Fenced like a commit, under the lock a URL purge takes to delete the key.
                    let view = ScopeView::parse(scope).ok_or(Corrupt)?;
                    if self.scope_purged(&view, ticket.stamp, clock, false) {
                        sh.count(ShardCounter::Fenced);
                        return Ok(Refresh::Fenced);
                    }
                    target_seen = true;
                }
                match self.validity(scope, h.stamp, clock, h.validated_clock)? {
                    // Never made valid again by a revalidation that started later.
                    Validity::Purged => {
                        sh.kill(off)?;
                        sh.count(ShardCounter::RejectedReads);
                    }
                    Validity::Current | Validity::SoftPurged => {
                        keep.push((off, update(h.descriptor, meta)));
                    }
                }
            }
            if !target_seen {
                return Ok(Refresh::Gone);
            }
            let mut rewrite = Vec::new();
            let (mut kept, mut target_kept) = (0, false);
            for (off, meta) in &keep {
                let h = sh.header(*off)?;
                if h.state != STATE_LIVE {
                    continue;
                }
                match meta {
                    Some(m) if m.len() != h.meta_len as usize => {
                        let (scope, _, body) = sh.payload(*off, &h);
                        if shard::record_len(scope.len(), m.len(), body.len()) > self.max_object {
                            // Headers grown past what a record may hold: dropped, as a fill
                            // of this size would not have been stored.
                            sh.kill(*off)?;
                            continue;
                        }
                        rewrite.push((h.descriptor, scope.to_vec(), m.clone(), body.to_vec()));
                    }
                    m => sh.restamp(*off, ticket.stamp, m.as_deref(), epoch)?,
                }
                kept += 1;
                target_kept |= h.descriptor == target;
            }
            // Inserting replaces each alternate with the same descriptor.
            for (descriptor, scope, meta, body) in &rewrite {
                let rec = NewRecord {
                    key: &key.0,
                    descriptor: *descriptor,
                    stamp: ticket.stamp,
                    epoch,
                    scope,
                    meta,
                    body,
                };
                sh.insert(&rec, MAX_ALTERNATES)?;
            }
            if !target_kept {
                return Ok(Refresh::Gone);
            }
            sh.count(ShardCounter::Revalidated);
            Ok(Refresh::Refreshed { kept })
        });
        r.unwrap_or_else(Refresh::Fault)
    }

    /// Stores a changed original in place of everything under `key`: its old alternates go at
    /// once, and the URL's generation (and its dependents', `dependents` naming them as tags)
    /// advances, so a build of the old original still running is fenced. Fenced itself, like
    /// a commit, if a hard purge covering it happened after `ticket`.
    pub fn replace(
        &self,
        ticket: FillTicket,
        key: &Key,
        url: &UrlId,
        dependents: &[&str],
        alt: &Alternate,
    ) -> CommitOutcome {
        let mut scope = Vec::with_capacity(alt.scopes.encoded_len());
        alt.scopes.encode(&mut scope);
        let len = shard::record_len(scope.len(), alt.meta.len(), alt.body.len());
        if len > self.max_object {
            return CommitOutcome::TooLarge;
        }
        let epoch = self.seg.header().open_epoch.load(Relaxed);
        let b = self.buckets();
        let mut outcome = CommitOutcome::Fenced;
        let mut soft_since = false;
        let purged = self.purge_with(PurgeCounter::Changed, false, |c| {
            self.with_shard(self.shard_of(key), |sh| {
                let view = ScopeView::parse(&scope).ok_or(Corrupt)?;
                let clock = self.seg.header().purge_clock.load(Acquire);
                if self.scope_purged(&view, ticket.stamp, clock, false) {
                    sh.count(ShardCounter::Fenced);
                    return Ok(0);
                }
                // The new record is stamped with this replacement's clock, past any soft purge
                // since the ticket: such a purge is issued again below, or it would be lost.
                soft_since = self.scope_purged(&view, ticket.stamp, clock, true);
                self.bump(Table::UrlHard, b.url(url), c);
                for t in dependents {
                    self.bump(Table::TagHard, b.tag(t), c);
                }
                if !dependents.is_empty() {
                    self.bump(Table::TagHard, TAG_OVERFLOW_SLOT, c);
                }
                let deleted = sh.remove_key(&key.0)?;
                let rec = NewRecord {
                    key: &key.0,
                    descriptor: alt.descriptor,
                    stamp: c,
                    epoch,
                    scope: &scope,
                    meta: alt.meta,
                    body: alt.body,
                };
                sh.insert(&rec, MAX_ALTERNATES)?;
                sh.count(ShardCounter::Stored);
                outcome = CommitOutcome::Stored;
                Ok(deleted)
            })
        });
        if let Err(f) = purged {
            return CommitOutcome::Fault(f);
        }
        if soft_since && outcome == CommitOutcome::Stored {
            // A soft purge covering the key landed while the origin was asked: the bytes it
            // answered may predate it, so the new original is stale at once (the URL's soft
            // bucket passes its stamp) and the next request revalidates it.
            if let Err(f) = self.purge_url(std::slice::from_ref(url), &[], &[], true) {
                return CommitOutcome::Fault(f);
            }
        }
        outcome
    }
}
