//! Fenced writes: a fill or build takes a ticket (the purge clock) when it starts, and its
//! commit is stored only if no purge covering it happened since, checked under the lock a URL
//! purge takes to delete the key.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::scope::ScopeView;
use super::shard::{self, Corrupt, NewRecord};
use super::stats::ShardCounter;
use super::{Alternate, CommitOutcome, Fault, FillTicket, Key, Store, MAX_ALTERNATES};

impl Store {
    /// The current purge clock: a fill that starts now carries this stamp.
    pub fn begin_fill(&self) -> FillTicket {
        FillTicket {
            stamp: self.seg.header().purge_clock.load(Acquire),
        }
    }

    /// Stores an alternate unless a purge covering it happened after `ticket`.
    pub fn commit(&self, ticket: FillTicket, key: &Key, alt: &Alternate) -> CommitOutcome {
        let mut scope = Vec::with_capacity(alt.scopes.encoded_len());
        alt.scopes.encode(&mut scope);
        let len = shard::record_len(scope.len(), alt.meta.len(), alt.body.len());
        let epoch = self.seg.header().open_epoch.load(Relaxed);
        let attempt = || {
            self.with_shard(self.shard_of(key), |sh| {
                if len > self.max_object || alt.meta.len() > u32::MAX as usize {
                    sh.count(ShardCounter::TooLarge);
                    return Ok(CommitOutcome::TooLarge);
                }
                // Checked under the lock a URL purge takes to delete this key: either the purge's
                // table write is visible here, or its delete comes after this insert.
                let view = ScopeView::parse(&scope).ok_or(Corrupt)?;
                let clock = self.seg.header().purge_clock.load(Acquire);
                if self.scope_purged(&view, ticket.stamp, clock, false) {
                    sh.count(ShardCounter::Fenced);
                    return Ok(CommitOutcome::Fenced);
                }
                let rec = NewRecord {
                    key: &key.0,
                    descriptor: alt.descriptor,
                    stamp: ticket.stamp,
                    epoch,
                    scope: &scope,
                    meta: alt.meta,
                    body: alt.body,
                };
                sh.insert(&rec, MAX_ALTERNATES)?;
                sh.count(ShardCounter::Stored);
                Ok(CommitOutcome::Stored)
            })
        };
        // Damage found while inserting has just been cleared by a reset: one more try stores
        // into the clean shard instead of losing the fill.
        match attempt() {
            Err(Fault::Corrupt) => attempt(),
            r => r,
        }
        .unwrap_or_else(CommitOutcome::Fault)
    }
}
