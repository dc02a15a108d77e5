//! The store's lifecycle across configuration loads: opened (or kept) while a configuration
//! is parsed in the master, made current when nginx accepts it, inherited by workers at fork.

use std::path::PathBuf;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use nginx_sys::{
    ngx_conf_t, ngx_int_t, ngx_uint_t, NGX_LOG_EMERG, NGX_LOG_NOTICE, NGX_PROCESS_SIGNALLER,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_conf_log_error;

use super::ffi::{ERROR, OK};
use super::Module;
use ngx_http_pagespeed_module::store::{Backing, Opened, Store, StoreConfig};

/// The store every worker uses. Set in the master by `commit_store` and inherited through
/// fork; workers only read it.
static STORE: AtomicPtr<Store> = AtomicPtr::new(null_mut());

/// What the configuration being loaded opened, with the parameters it was opened for.
struct Prepared {
    key: (Option<PathBuf>, u64, u64),
    store: Option<Box<Store>>,
}

static PENDING: Mutex<Option<Prepared>> = Mutex::new(None);
static CURRENT_KEY: Mutex<Option<(Option<PathBuf>, u64, u64)>> = Mutex::new(None);

/// The current store, if the configuration has one.
pub fn store() -> Option<&'static Store> {
    let p = STORE.load(Ordering::Acquire);
    // SAFETY: a published store is never freed while a worker can see it: the master replaces
    // it only between configurations, and workers inherited their pointer at fork.
    unsafe { p.as_ref() }
}

/// Opens (or keeps) the store for the configuration being parsed. Failing here rejects the
/// configuration cleanly (`nginx -t`, or a reload that keeps the old one).
///
/// # Safety
/// `cf` must be the http configuration being parsed (postconfiguration).
pub unsafe fn prepare_store(cf: *mut ngx_conf_t) -> ngx_int_t {
    // `nginx -s reload` parses the configuration in the signalling process too.
    // SAFETY: reading a process-global set before configuration parsing.
    if unsafe { nginx_sys::ngx_process } == NGX_PROCESS_SIGNALLER as ngx_uint_t {
        return OK;
    }
    // SAFETY: cf is the http configuration being parsed.
    let Some(mc) = (unsafe { Module::main_conf(&*cf) }) else {
        return OK;
    };
    let (path, size) = (mc.path.clone(), mc.size);
    let key = (path.clone(), size, mc.max_object);
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if CURRENT_KEY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        == Some(&key)
    {
        *pending = Some(Prepared { key, store: None });
        return OK;
    }
    let backing = match &path {
        Some(p) => Backing::File(p.clone()),
        None => Backing::Anonymous,
    };
    match Store::open(&StoreConfig {
        backing,
        size,
        max_object: mc.max_object,
    }) {
        Ok(store) => {
            let what = path
                .as_ref()
                .map_or("anonymous memory".to_string(), |p| p.display().to_string());
            match store.opened() {
                Opened::Reinitialized(reason) => {
                    ngx_conf_log_error!(
                        NGX_LOG_NOTICE,
                        cf,
                        "pagespeed cache {what} was reinitialized: {reason}"
                    );
                }
                Opened::Created | Opened::Reopened | Opened::Attached => {}
            }
            if let Some(p) = &path {
                chown_to_workers(cf, p);
            }
            *pending = Some(Prepared {
                key,
                store: Some(Box::new(store)),
            });
            OK
        }
        Err(e) => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"pagespeed_cache_path\": {e}");
            ERROR
        }
    }
}

/// Workers run as the `user` directive says; the cache file the master created as root must
/// be theirs (they do not reopen it today, but an offline tool or a binary upgrade may).
fn chown_to_workers(cf: *mut ngx_conf_t, path: &std::path::Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    // SAFETY: the core module's conf is created before the http block is parsed.
    let ccf = unsafe {
        let ctx = (*(*cf).cycle).conf_ctx;
        *ctx.add(nginx_sys::ngx_core_module.index) as *const nginx_sys::ngx_core_conf_t
    };
    // SAFETY: ccf is valid or null.
    let Some(ccf) = (unsafe { ccf.as_ref() }) else {
        return;
    };
    if ccf.user == libc::uid_t::MAX {
        return;
    }
    let _ = std::os::unix::fs::chown(path, Some(ccf.user), Some(ccf.group));
}

/// Makes the prepared store current. Called from init_module, which must not fail.
pub fn commit_store() {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let Some(prepared) = pending.take() else {
        return;
    };
    if let Some(store) = prepared.store {
        let old = STORE.swap(Box::into_raw(store), Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: `old` came from Box::into_raw. Only this (master) process drops it:
            // workers of the previous configuration hold their own forked copy of the
            // mapping, and the master itself never serves requests.
            drop(unsafe { Box::from_raw(old) });
        }
    }
    *CURRENT_KEY.lock().unwrap_or_else(|e| e.into_inner()) = Some(prepared.key);
}

/// Drops the store and forgets what was prepared, at process exit (after builder threads are
/// joined): nginx unloads the module with the cycle pool, and what only its statics hold
/// would otherwise be lost at every exit. Nothing runs in this process afterwards.
pub fn release() {
    PENDING.lock().unwrap_or_else(|e| e.into_inner()).take();
    CURRENT_KEY.lock().unwrap_or_else(|e| e.into_inner()).take();
    let old = STORE.swap(null_mut(), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: `old` came from Box::into_raw in commit_store, and the process is exiting:
        // no request or thread reads the store any more.
        drop(unsafe { Box::from_raw(old) });
    }
}
