//! Fleet purge without nginx: stream ids, the `pagespeed_fleet` parameters, how a purge is
//! written to and read from a stream entry, the per-node state the appliers publish, how a
//! publisher merges it into receipts, and when a node must fence itself.

pub mod applier;
pub mod client;
pub mod config;
pub mod entry;
pub mod receipt;
pub mod status;

pub use config::{Config, Tier};
pub use entry::{decode, encode, options, Options};
pub use receipt::{merge, NodeState, Receipts};

use std::fmt;
use std::str::FromStr;

/// A Redis stream id, `<ms>-<seq>`: the fleet's global purge sequence. (0, 0) is "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    pub fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = String;

    /// `<ms>-<seq>`, or `<ms>` alone (seq 0), as the `Pagespeed-Purge-Seq` header may carry.
    fn from_str(s: &str) -> Result<StreamId, String> {
        let s = s.trim();
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        let num = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("\"{s}\" is not a stream id"));
            }
            t.parse::<u64>()
                .map_err(|_| format!("\"{s}\" is not a stream id"))
        };
        Ok(StreamId {
            ms: num(ms)?,
            seq: num(seq)?,
        })
    }
}

/// Whether a node must stop serving hits: it has not confirmed it is caught up with the
/// stream (never since it opened its cache, or not for longer than `max_lag_ms`).
pub fn self_fenced(now_ms: u64, confirmed_ms: u64, max_lag_ms: u64) -> bool {
    confirmed_ms == 0 || now_ms.saturating_sub(confirmed_ms) > max_lag_ms
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_parse_print_and_order_numerically() {
        let a: StreamId = "1700000000000-2".parse().unwrap();
        assert_eq!(a, StreamId::new(1_700_000_000_000, 2));
        assert_eq!(a.to_string(), "1700000000000-2");
        assert_eq!("17".parse::<StreamId>().unwrap(), StreamId::new(17, 0));
        assert!(StreamId::new(9, 10) > StreamId::new(9, 9));
        assert!(StreamId::new(10, 0) > StreamId::new(9, 99));
        for bad in [
            "",
            "-",
            "1-",
            "a-1",
            "1-2-3",
            "+1-2",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_node_that_never_confirmed_or_confirmed_too_long_ago_is_fenced() {
        assert!(self_fenced(1000, 0, 10_000));
        assert!(!self_fenced(20_000, 10_000, 10_000));
        assert!(self_fenced(20_001, 10_000, 10_000));
        assert!(!self_fenced(5, 10, 10), "a clock step back does not fence");
    }
}
