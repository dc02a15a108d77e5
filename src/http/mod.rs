//! HTTP semantics without nginx: cache keys and URL identity, response storability and
//! freshness (RFC 9111), the stored response metadata, cross-site request checks.

pub mod cache_control;
pub mod csrf;
pub mod meta;
pub mod url;
