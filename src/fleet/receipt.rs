//! What every node publishes about itself (applied id, tier, heartbeat) and how a publisher
//! turns those into the receipts of one purge.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{StreamId, Tier};

/// A node is live while its heartbeat is younger than this: appliers beat at least every
/// second (their blocking read's timeout), so three missed beats mean it is down or cut off.
pub const DEAD_AFTER_MS: u64 = 3000;

/// One node's entry in the nodes hash: `"<applied id> <tier> <heartbeat unix ms>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    pub applied: StreamId,
    pub tier: Tier,
    pub heartbeat_ms: u64,
}

impl NodeState {
    pub fn encode(&self) -> String {
        format!(
            "{} {} {}",
            self.applied,
            self.tier.as_str(),
            self.heartbeat_ms
        )
    }

    pub fn decode(s: &str) -> Option<NodeState> {
        let mut it = s.split(' ');
        let applied = it.next()?.parse().ok()?;
        let tier = Tier::parse(it.next()?)?;
        let heartbeat_ms = it.next()?.parse().ok()?;
        it.next().is_none().then_some(NodeState {
            applied,
            tier,
            heartbeat_ms,
        })
    }
}

/// The receipts of one purge as the nodes hash shows them now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipts {
    /// Every node that ever published, with what it applied.
    pub nodes: BTreeMap<String, NodeState>,
    /// Nodes that have not applied the purge yet (live or not), sorted.
    pub pending: Vec<String>,
    /// Of those, the ones whose heartbeat stopped: not waited for.
    pub down: Vec<String>,
}

impl Receipts {
    /// Every live node applied it: the publisher may answer.
    pub fn complete(&self) -> bool {
        self.pending.len() == self.down.len()
    }

    /// The receipt fields of the purge API's answer (`seq`, `nodes`, `pending`, `down`).
    pub fn to_json(&self, seq: StreamId) -> Value {
        let nodes: serde_json::Map<String, Value> = self
            .nodes
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    json!({ "applied": s.applied.to_string(), "tier": s.tier.as_str() }),
                )
            })
            .collect();
        json!({
            "seq": seq.to_string(),
            "nodes": nodes,
            "pending": self.pending,
            "down": self.down,
        })
    }
}

/// Merges the nodes hash (name -> encoded state; undecodable entries are skipped) into the
/// receipts of the purge `seq` at `now_ms`.
pub fn merge<'a>(
    hash: impl IntoIterator<Item = (&'a str, &'a str)>,
    seq: StreamId,
    now_ms: u64,
) -> Receipts {
    let nodes: BTreeMap<String, NodeState> = hash
        .into_iter()
        .filter_map(|(n, v)| Some((n.to_string(), NodeState::decode(v)?)))
        .collect();
    let mut pending = Vec::new();
    let mut down = Vec::new();
    for (name, s) in &nodes {
        if s.applied < seq {
            pending.push(name.clone());
            if now_ms.saturating_sub(s.heartbeat_ms) > DEAD_AFTER_MS {
                down.push(name.clone());
            }
        }
    }
    Receipts {
        nodes,
        pending,
        down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_states_round_trip_and_junk_is_refused() {
        let s = NodeState {
            applied: StreamId::new(12, 3),
            tier: Tier::Shield,
            heartbeat_ms: 99,
        };
        assert_eq!(NodeState::decode(&s.encode()), Some(s));
        for bad in [
            "",
            "12-3 shield",
            "12-3 mid 9",
            "x edge 9",
            "1-1 edge 9 extra",
        ] {
            assert_eq!(NodeState::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_purge_is_complete_when_every_live_node_applied_it() {
        let seq = StreamId::new(100, 0);
        let now = 10_000;
        let hash = [
            ("edge-1", "100-0 edge 9900"),
            ("edge-2", "99-5 edge 9990"),
            ("edge-3", "50-0 edge 1000"),
            ("junk", "nonsense"),
        ];
        let r = merge(hash, seq, now);
        assert_eq!(r.nodes.len(), 3);
        assert_eq!(r.pending, ["edge-2", "edge-3"]);
        assert_eq!(r.down, ["edge-3"], "edge-3's heartbeat stopped");
        assert!(!r.complete(), "edge-2 is live and behind");
        let hash = [
            ("edge-1", "100-0 edge 9900"),
            ("edge-2", "101-0 edge 9990"),
            ("edge-3", "50-0 edge 1000"),
        ];
        let r = merge(hash, seq, now);
        assert!(r.complete(), "a down node is listed, not waited for");
        let v = r.to_json(seq);
        assert_eq!(v["seq"], "100-0");
        assert_eq!(v["nodes"]["edge-2"]["applied"], "101-0");
        assert_eq!(v["pending"], json!(["edge-3"]));
    }
}
