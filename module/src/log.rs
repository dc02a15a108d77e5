//! Logging from the module: faults at most once a second per worker, lines from builder
//! threads (which must not call nginx's logger), and the panic guard every nginx callback
//! runs in.

use std::sync::atomic::{AtomicI64, Ordering};

use ngx_http_pagespeed_module::transform::builders::thread_id;

static LAST_FAULT_LOG: AtomicI64 = AtomicI64::new(0);

/// True at most once per second per worker: cache faults are logged, not flooded.
pub fn fault_log_allowed() -> bool {
    let now = nginx_sys::ngx_time() as i64;
    LAST_FAULT_LOG.swap(now, Ordering::Relaxed) != now
}

/// Runs a callback's body; a panic (already printed to stderr, which nginx points at its
/// error log, by Rust's hook) becomes `on_panic` instead of aborting the process.
pub fn guard<T>(what: &str, on_panic: T, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            line("alert", &format!("pagespeed: a panic in {what} was caught"));
            on_panic
        }
    }
}

/// One error-log line in nginx's format, written with a single write(2) so lines from several
/// threads do not interleave. For threads and places without an nginx log at hand.
pub fn line(level: &str, msg: &str) {
    let mut line = format!(
        "{} [{level}] {}#{}: {msg}\n",
        timestamp(),
        std::process::id(),
        thread_id()
    );
    line.retain(|c| c != '\0');
    // SAFETY: writing a valid buffer to fd 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
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
