//! The cache's decisions for one request, without nginx: what a lookup serves (`hit`) and what
//! a response stores (`fill`). The nginx module gathers the request and response into the
//! views these take, and acts on what they decide.

pub mod fill;
pub mod hit;

/// What the cache did for a request: `$pagespeed_cache_status` and `X-Cache` say this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// Found, but past its freshness lifetime: refilled from the origin.
    Expired,
    /// Found, but soft-purged: refilled from the origin.
    Stale,
    /// Not looked up (a method that does not read the cache) or not storable.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// `X-Cache` only says whether the bytes came from the cache.
    pub fn x_cache(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Bypass => "BYPASS",
            _ => "MISS",
        }
    }
}
