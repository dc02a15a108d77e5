//! The fleet's fields of the status page, JSON and Prometheus, from the segment's state.

use std::fmt::Write;

use serde_json::{json, Value};

use super::{self_fenced, Config, StreamId};
use crate::store::{FleetCounter, Store};

/// One snapshot of a node's fleet state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetStatus {
    pub node: String,
    pub tier: &'static str,
    pub connected: bool,
    pub applied: StreamId,
    pub lag_entries: u64,
    pub lag_ms: u64,
    pub purges_applied: u64,
    pub catch_ups: u64,
    pub trim_flushes: u64,
    pub self_fenced: bool,
    pub self_fenced_ms: u64,
    pub unconfirmed_ms: u64,
}

impl FleetStatus {
    pub fn read(store: &Store, cfg: &Config, now_ms: u64) -> FleetStatus {
        let (ms, seq) = store.fleet_applied();
        let c = |k| store.fleet_counter(k);
        let confirmed = store.fleet_confirmed_ms();
        let head = c(FleetCounter::HeadMs).max(ms);
        // Behind by the entries not applied yet, and in time: the newest entry seen against
        // the applied one, or since the last confirmation while it is not confirmed.
        let unconfirmed_ms = if confirmed == 0 {
            now_ms.saturating_sub(ms)
        } else {
            now_ms.saturating_sub(confirmed)
        };
        FleetStatus {
            node: cfg.node.clone(),
            tier: cfg.tier.as_str(),
            connected: c(FleetCounter::Connected) == 1,
            applied: StreamId::new(ms, seq),
            lag_entries: c(FleetCounter::LagEntries),
            lag_ms: head.saturating_sub(ms),
            purges_applied: c(FleetCounter::Applied),
            catch_ups: c(FleetCounter::CatchUps),
            trim_flushes: c(FleetCounter::TrimFlushes),
            self_fenced: self_fenced(now_ms, confirmed, cfg.max_lag.as_millis() as u64),
            self_fenced_ms: c(FleetCounter::FencedMs),
            unconfirmed_ms,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "node": self.node,
            "tier": self.tier,
            "connected": self.connected,
            "applied": self.applied.to_string(),
            "lag_entries": self.lag_entries,
            "lag_seconds": self.lag_ms as f64 / 1000.0,
            "purges_applied": self.purges_applied,
            "catch_ups": self.catch_ups,
            "trim_flushes": self.trim_flushes,
            "self_fenced": self.self_fenced,
            "self_fenced_ms": self.self_fenced_ms,
            "unconfirmed_ms": self.unconfirmed_ms,
        })
    }

    pub fn to_prometheus(&self) -> String {
        let mut t = String::new();
        let labels = format!("node=\"{}\",tier=\"{}\"", self.node, self.tier);
        let _ = writeln!(
            t,
            "# TYPE pagespeed_fleet_info gauge\npagespeed_fleet_info{{{labels}}} 1"
        );
        for (name, kind, v) in [
            ("connected", "gauge", self.connected as u64 as f64),
            ("applied_ms", "gauge", self.applied.ms as f64),
            ("lag_entries", "gauge", self.lag_entries as f64),
            ("lag_seconds", "gauge", self.lag_ms as f64 / 1000.0),
            (
                "purges_applied_total",
                "counter",
                self.purges_applied as f64,
            ),
            ("catch_ups_total", "counter", self.catch_ups as f64),
            ("trim_flushes_total", "counter", self.trim_flushes as f64),
            ("self_fenced", "gauge", self.self_fenced as u64 as f64),
            (
                "self_fenced_ms_total",
                "counter",
                self.self_fenced_ms as f64,
            ),
        ] {
            let _ = writeln!(
                t,
                "# TYPE pagespeed_fleet_{name} {kind}\npagespeed_fleet_{name}{{{labels}}} {v}"
            );
        }
        t
    }
}
