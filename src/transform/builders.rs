//! The builder threads of one worker process: a bounded queue of jobs, deduplicated, worked
//! by a few low-priority threads that never touch nginx — only the store.
//!
//! A job names a key and a target variant. The thread reads the original with
//! `Store::source` and commits the result with the original's stamp as its fill ticket, so a
//! purge of the original at any time before the commit fences the variant (invariant 2).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::{build, full_size_for, variant_meta, Built, Limits, Quality};
use crate::http::meta::StoredMeta;
use crate::store::{Alternate, BuildCounter, CommitOutcome, FillTicket, Key, Store};
use crate::variant::{Descriptor, Encoding, SourceKind};

#[derive(Debug, Clone)]
pub struct Job {
    pub key: Key,
    pub target: Descriptor,
    /// For log lines only.
    pub url: String,
}

#[derive(Debug, Clone, Copy)]
pub struct BuilderConfig {
    pub threads: usize,
    pub queue: usize,
    pub limits: Limits,
    pub quality: Quality,
    /// Nice value of builder threads: the event loop comes first.
    pub nice: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    Queued,
    /// The same key and target is already queued or being built.
    Duplicate,
    /// The queue is full: dropped and counted.
    Full,
}

type LogFn = dyn Fn(&str) + Send + Sync;

struct State {
    jobs: VecDeque<Job>,
    pending: HashSet<(Key, u32)>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    store: &'static Store,
    cfg: BuilderConfig,
    log: Box<LogFn>,
}

pub struct BuilderPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl BuilderPool {
    /// Starts the threads. Signals are blocked in them (as nginx's own thread pool does) so
    /// the worker's signal handling stays on its event loop.
    pub fn start(
        store: &'static Store,
        cfg: BuilderConfig,
        log: Box<LogFn>,
    ) -> std::io::Result<BuilderPool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                pending: HashSet::new(),
                stop: false,
            }),
            cv: Condvar::new(),
            store,
            cfg,
            log,
        });
        let mut threads = Vec::new();
        let old = block_signals();
        let mut result = Ok(());
        for i in 0..cfg.threads.max(1) {
            let s = Arc::clone(&shared);
            match std::thread::Builder::new()
                .name(format!("pagespeed-build-{i}"))
                .spawn(move || run(&s))
            {
                Ok(t) => threads.push(t),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        restore_signals(&old);
        let pool = BuilderPool { shared, threads };
        result.map(|()| pool)
    }

    pub fn submit(&self, job: Job) -> Submitted {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = (job.key, job.target.0);
        if st.pending.contains(&id) {
            return Submitted::Duplicate;
        }
        if st.jobs.len() >= self.shared.cfg.queue {
            drop(st);
            self.shared.store.count_build(BuildCounter::Dropped);
            return Submitted::Full;
        }
        st.pending.insert(id);
        st.jobs.push_back(job);
        drop(st);
        self.shared.cv.notify_one();
        Submitted::Queued
    }

    /// Waits until the queue is empty and no job is running (tests).
    pub fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self
                .shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .is_empty()
            {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Stops taking jobs, lets running builds finish, joins the threads.
    pub fn stop(mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop = true;
        self.shared.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared) {
    // SAFETY: setpriority on our own thread id only lowers this thread's priority.
    unsafe {
        let tid = thread_id() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, shared.cfg.nice);
    }
    loop {
        let job = {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if st.stop {
                    return;
                }
                if let Some(j) = st.jobs.pop_front() {
                    break j;
                }
                st = shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        let id = (job.key, job.target.0);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| process(shared, &job)));
        if outcome.is_err() {
            shared.store.count_build(BuildCounter::Failed);
            (shared.log)(&format!(
                "pagespeed build of {} as {} panicked; original kept",
                job.url,
                job.target.label()
            ));
        }
        shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .remove(&id);
    }
}

/// Builds one job and commits the variant, or a sentinel recording the decline.
fn process(shared_store: &Shared, job: &Job) {
    let store = shared_store.store;
    let cfg = &shared_store.cfg;
    let src = match store.source(&job.key, Descriptor::SOURCE.0) {
        Ok(Some(s)) => s,
        // Purged, evicted or expired since the job was queued: nothing to build.
        Ok(None) | Err(_) => return,
    };
    store.count_build(BuildCounter::Started);
    let Some(meta) = StoredMeta::decode(&src.meta) else {
        store.count_build(BuildCounter::Failed);
        return;
    };
    let ticket = FillTicket { stamp: src.stamp };
    let commit = |descriptor: Descriptor, meta: &[u8], body: &[u8]| {
        let alt = Alternate {
            descriptor: descriptor.0,
            scopes: &src.scopes,
            meta,
            body,
        };
        store.commit(ticket, &job.key, &alt)
    };
    // A sentinel recording that the job's own descriptor is not built: selection stops asking
    // for it. It shares the original's metadata so it expires and is purged with it.
    let mark_declined = || {
        if commit(Descriptor::declined(job.target), &src.meta, &[]) == CommitOutcome::Fenced {
            store.count_build(BuildCounter::Fenced);
        }
    };
    let decline = |why: &str, failed: bool| {
        store.count_build(if failed {
            BuildCounter::Failed
        } else {
            BuildCounter::Declined
        });
        if failed {
            (shared_store.log)(&format!(
                "pagespeed build of {} as {} refused: {why}; original kept",
                job.url,
                job.target.label()
            ));
        }
        mark_declined();
    };
    // The source's own Content-Type says how to decode it (the request that queued the job
    // may only have seen a variant).
    let kind = SourceKind::from_content_type(&meta.content_type);
    // A source no wider than the job's viewport asks is built once, at full size, for every
    // such client class; the job's own descriptor is then only marked.
    let target = full_size_for(&src.body, kind, job.target);
    if target != job.target {
        let stored = store
            .alternates(&job.key)
            .is_ok_and(|alts| alts.iter().any(|a| a.descriptor == target.0));
        if stored {
            decline(
                "the source is not wider: its full-size variant serves it",
                false,
            );
            return;
        }
    }
    match build(&src.body, kind, target, &cfg.limits, &cfg.quality) {
        Ok(Built::Variant { body, content_type }) => {
            let Some(vmeta) = variant_meta(&meta, target, content_type).encode() else {
                decline("metadata too large", true);
                return;
            };
            let outcome = commit(target, &vmeta, &body);
            if target != job.target && outcome == CommitOutcome::Stored {
                mark_declined();
            }
            match outcome {
                CommitOutcome::Stored => store.count_build(BuildCounter::Done),
                CommitOutcome::Fenced => store.count_build(BuildCounter::Fenced),
                CommitOutcome::TooLarge | CommitOutcome::Fault(_) => {
                    store.count_build(BuildCounter::Failed)
                }
            }
        }
        Ok(Built::Declined(why)) => decline(why, false),
        Err(e) => decline(&e.to_string(), true),
    }
}

pub(crate) fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t values initialized by sigfillset/pthread_sigmask before use.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

pub(crate) fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: old came from pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}

/// Whether an original may get variants at all: identity-encoded, not already selected by the
/// origin's own Vary (those are served as stored, never transformed).
pub fn transformable(original: Descriptor) -> bool {
    original.is_original() && original.encoding() == Encoding::Identity && !original.origin_varies()
}

/// The kernel's id of the calling thread (for its priority, and in log lines).
pub fn thread_id() -> i64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) }
}
