//! ngx_http_pagespeed_module: a variant cache shared by every nginx worker, with purges that
//! reach every alternate and fence in-flight fills.
//!
//! `store`, `http`, `variant` and `transform` hold the cache logic and know nothing of nginx; the nginx
//! module (the `module/` crate) is the thin FFI layer that wires them into nginx.

pub mod cache;
pub mod console;
pub mod fleet;
pub mod http;
pub mod purge;
pub mod store;
pub mod transform;
pub mod variant;
