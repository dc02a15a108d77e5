//! The builder threads of a worker: started in `init_process` (workers only, never in the
//! master before fork), stopped and joined in `exit_process`. Threads touch only the store;
//! they log through stderr, which nginx points at its error log, because nginx's own logging
//! is not thread-safe.

use std::sync::Mutex;

use nginx_sys::{
    ngx_cycle_t, ngx_int_t, ngx_uint_t, NGX_OK, NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;
use ngx_http_pagespeed_module::transform::builders::{BuilderConfig, BuilderPool, Job, Submitted};
use ngx_http_pagespeed_module::transform::{Limits, Quality};

use super::config::{store, DEFAULT_BUILD_QUEUE, DEFAULT_BUILD_THREADS, VARIANTS_CONFIGURED};
use super::util::guard;
use super::Module;

static POOL: Mutex<Option<BuilderPool>> = Mutex::new(None);

/// Nice value of builder threads: encoding must not slow the worker's event loop.
const BUILD_NICE: i32 = 10;

pub extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx passes the live cycle.
    guard((), || unsafe { start(cycle) });
    // Never fail here: a failing init_process makes the master respawn the worker in a loop.
    NGX_OK as ngx_int_t
}

unsafe fn start(cycle: *mut ngx_cycle_t) {
    // SAFETY: reading process globals and the cycle's configuration.
    unsafe {
        let p = nginx_sys::ngx_process;
        if p != NGX_PROCESS_WORKER as ngx_uint_t && p != NGX_PROCESS_SINGLE as ngx_uint_t {
            return;
        }
        if !VARIANTS_CONFIGURED.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Some(store) = store() else { return };
        let Some(mc) = Module::main_conf(&*cycle) else {
            return;
        };
        let pick = |v: ngx_uint_t, d: ngx_uint_t| if v == ngx_uint_t::MAX { d } else { v };
        let cfg = BuilderConfig {
            threads: pick(mc.build_threads, DEFAULT_BUILD_THREADS).clamp(1, 64),
            queue: pick(mc.build_queue, DEFAULT_BUILD_QUEUE).clamp(1, 1 << 20),
            limits: Limits {
                max_input: store.max_object() as usize,
                ..Limits::default()
            },
            quality: Quality::default(),
            nice: BUILD_NICE,
        };
        match BuilderPool::start(store, cfg, Box::new(log_line)) {
            Ok(pool) => *POOL.lock().unwrap_or_else(|e| e.into_inner()) = Some(pool),
            Err(e) => log_line(&format!(
                "pagespeed: cannot start builder threads: {e}; variants will not be built"
            )),
        }
    }
}

pub extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    guard((), || {
        let pool = POOL.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = pool {
            p.stop();
        }
    })
}

/// Queues a build; silently does nothing in processes without builders.
pub fn submit(job: Job) -> Option<Submitted> {
    POOL.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|p| p.submit(job))
}

/// One error-log line in nginx's format, written with a single write(2) so lines from
/// several threads do not interleave.
fn log_line(msg: &str) {
    let mut line = format!(
        "{} [warn] {}#{}: {msg}\n",
        timestamp(),
        std::process::id(),
        tid()
    );
    line.retain(|c| c != '\0');
    // SAFETY: writing a valid buffer to fd 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

fn tid() -> i64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn timestamp() -> String {
    // SAFETY: time/localtime_r/strftime with valid out-buffers.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        let mut buf = [0u8; 32];
        let n = libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            c"%Y/%m/%d %H:%M:%S".as_ptr(),
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}
