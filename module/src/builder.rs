//! The builder threads of a worker: started in `init_process` (workers only, never in the
//! master before fork), stopped and joined in `exit_process`. Threads touch only the store;
//! they log through stderr, which nginx points at its error log, because nginx's own logging
//! is not thread-safe.

use std::sync::Mutex;

use nginx_sys::{ngx_cycle_t, ngx_int_t, ngx_uint_t, NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER};
use ngx::http::HttpModuleMainConf;
use ngx_http_pagespeed_module::transform::builders::{BuilderConfig, BuilderPool, Job, Submitted};
use ngx_http_pagespeed_module::transform::{Limits, Quality};

use super::conf::VARIANTS_CONFIGURED;
use super::ffi::OK;
use super::lifecycle::{self, store};
use super::log::{guard, line};
use super::Module;

static POOL: Mutex<Option<BuilderPool>> = Mutex::new(None);

/// Nice value of builder threads: encoding must not slow the worker's event loop.
const BUILD_NICE: i32 = 10;

pub extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard("init_process", (), || {
        // SAFETY: nginx passes the live cycle.
        if let Some(cycle) = unsafe { cycle.as_ref() } {
            start(cycle);
        }
    });
    // Never fail here: a failing init_process makes the master respawn the worker in a loop.
    OK
}

fn start(cycle: &ngx_cycle_t) {
    // SAFETY: a process global nginx sets before init_process.
    let p = unsafe { nginx_sys::ngx_process };
    if p != NGX_PROCESS_WORKER as ngx_uint_t && p != NGX_PROCESS_SINGLE as ngx_uint_t {
        return;
    }
    let Some(mc) = Module::main_conf(cycle) else {
        return;
    };
    super::fleet::start(mc.fleet.as_ref(), mc.path.as_deref());
    if !VARIANTS_CONFIGURED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let Some(store) = store() else { return };
    let cfg = BuilderConfig {
        threads: mc.build_threads(),
        queue: mc.build_queue(),
        limits: Limits {
            max_input: store.max_object() as usize,
            ..Limits::default()
        },
        quality: Quality::default(),
        nice: BUILD_NICE,
    };
    match BuilderPool::start(store, cfg, Box::new(|msg| line("warn", msg))) {
        Ok(pool) => *POOL.lock().unwrap_or_else(|e| e.into_inner()) = Some(pool),
        Err(e) => line(
            "warn",
            &format!("pagespeed: cannot start builder threads: {e}; variants will not be built"),
        ),
    }
}

pub extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    guard("exit_process", (), || {
        let pool = POOL.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = pool {
            p.stop();
        }
        super::fleet::stop();
        lifecycle::release();
    })
}

pub extern "C" fn exit_master(_cycle: *mut ngx_cycle_t) {
    guard("exit_master", (), lifecycle::release)
}

/// Queues a build; silently does nothing in processes without builders.
pub fn submit(job: Job) -> Option<Submitted> {
    POOL.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|p| p.submit(job))
}
