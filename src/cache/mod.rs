//! The cache's decisions for one request, without nginx: what a lookup serves (`hit`) and what
//! a response stores (`fill`). The nginx module gathers the request and response into the
//! views these take, and acts on what they decide.

pub mod fill;
pub mod hit;
pub mod revalidate;
pub mod stale;

/// What the cache did for a request: `$pagespeed_cache_status` and `X-Cache` say this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served a fresh entry.
    Hit,
    /// Nothing was stored: filled from the origin.
    Miss,
    /// The entry was stale (expired or soft-purged) and the origin had other bytes: the new
    /// ones were served and stored, the old alternates dropped.
    Expired,
    /// The entry was stale and the origin confirmed it unchanged (a 304, or the same bytes):
    /// served from the cache, every alternate kept.
    Revalidated,
    /// A stale entry served at once while one revalidation of it runs.
    Updating,
    /// A stale entry served because its refill failed (stale-if-error).
    Stale,
    /// Served the fill another request made while this one waited for it.
    Collapsed,
    /// Not looked up (a method that does not read the cache), not storable, or sent to the
    /// origin past the lock timeout.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Stale => "STALE",
            CacheStatus::Collapsed => "COLLAPSED",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// `X-Cache` says where the bytes came from: the cache (`HIT`), the cache after the
    /// origin confirmed them (`REVALIDATED`), the cache while stale (`STALE`), the origin
    /// (`MISS`), or past the cache (`BYPASS`).
    pub fn x_cache(self) -> &'static str {
        match self {
            CacheStatus::Hit | CacheStatus::Collapsed => "HIT",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Updating | CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
            CacheStatus::Miss | CacheStatus::Expired => "MISS",
        }
    }
}
