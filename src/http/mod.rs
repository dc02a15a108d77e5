//! HTTP semantics without nginx: cache keys and URL identity, response storability and
//! freshness (RFC 9111), the stored response metadata, and purge request parsing.

pub mod cache_control;
pub mod csrf;
pub mod meta;
pub mod purge;
pub mod url;
