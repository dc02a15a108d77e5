//! What a response may carry, per URL: after the receipt of a purge that followed version v of
//! a URL, a request that starts later must get version >= v (t/022-purge-races.t's rule). A
//! URL purge (and a full flush) also sets the floor for pages that declared the URL as a
//! dependency. Expiries set soft floors: once a short-lived entry must have expired, its old
//! version may only come back marked stale.

use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Url,
    Dependency,
    Prefix,
    Tag,
    All,
    /// A POST to the URL itself (RFC 9111 4.4 invalidation).
    Unsafe,
    Expiry,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Url => "url",
            Cause::Dependency => "dependency",
            Cause::Prefix => "prefix",
            Cause::Tag => "tag",
            Cause::All => "all",
            Cause::Unsafe => "post",
            Cause::Expiry => "expiry",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Floor {
    /// Seconds since the run began: the receipt (or the moment an expiry must have happened).
    pub at: f64,
    pub version: u32,
    /// Soft purges and expiries: old bytes may be served marked stale, never as fresh.
    pub soft: bool,
    pub cause: Cause,
    /// The purge's number in the driver's sequence (0 for expiries).
    pub seq: u64,
}

pub struct Oracle {
    own: Vec<Mutex<Vec<Floor>>>,
    dep: Vec<Mutex<Vec<Floor>>>,
}

/// The strongest floors that applied when a request started.
#[derive(Default)]
pub struct Required {
    pub hard: Option<Floor>,
    pub soft: Option<Floor>,
}

impl Oracle {
    pub fn new(n: usize) -> Oracle {
        Oracle {
            own: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
            dep: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// A floor on the URL's own version.
    pub fn add_own(&self, id: u32, f: Floor) {
        self.own[id as usize].lock().unwrap().push(f);
    }

    /// A floor on the version pages name for this URL as their dependency.
    pub fn add_dep(&self, id: u32, f: Floor) {
        self.dep[id as usize].lock().unwrap().push(f);
    }

    pub fn required(&self, id: u32, as_dependency: bool, start: f64) -> Required {
        let table = if as_dependency { &self.dep } else { &self.own };
        let floors = table[id as usize].lock().unwrap();
        let mut req = Required::default();
        for f in floors.iter().filter(|f| f.at < start) {
            let slot = if f.soft { &mut req.soft } else { &mut req.hard };
            if slot.is_none_or(|s| f.version > s.version) {
                *slot = Some(*f);
            }
        }
        req
    }

    pub fn floors(&self) -> usize {
        self.own
            .iter()
            .map(|f| f.lock().unwrap().len())
            .sum::<usize>()
            + self
                .dep
                .iter()
                .map(|f| f.lock().unwrap().len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_floors_received_before_the_start_count() {
        let o = Oracle::new(2);
        let f = |at, version, soft| Floor {
            at,
            version,
            soft,
            cause: Cause::Url,
            seq: 1,
        };
        o.add_own(0, f(1.0, 2, false));
        o.add_own(0, f(2.0, 3, false));
        o.add_own(0, f(3.0, 5, true));
        assert!(o.required(0, false, 0.5).hard.is_none());
        assert_eq!(o.required(0, false, 1.5).hard.unwrap().version, 2);
        let r = o.required(0, false, 9.0);
        assert_eq!((r.hard.unwrap().version, r.soft.unwrap().version), (3, 5));
        assert!(o.required(0, true, 9.0).hard.is_none());
    }
}
