//! HTTP semantics without nginx: cache keys and URL identity, response storability and
//! freshness (RFC 9111), targeted cache-control fields (RFC 9213), method safety, the stored
//! response metadata, cross-site request checks.

pub mod cache_control;
pub mod csrf;
pub mod meta;
pub mod method;
pub mod targeted;
pub mod url;
