//! A purge as a stream entry: the validated request written back as a canonical JSON body
//! that `purge::parse_json` reads into the same request on every node, and the publishing
//! options (`"fleet"`, `"wait"`) of a purge body.

use std::time::Duration;

use serde_json::{json, Value};

use super::config::parse_time;
use crate::purge::{parse_json, PurgeError, PurgeRequest, Scope};

/// The entry's field holding the purge body.
pub const FIELD_PURGE: &str = "purge";
/// The entry's field naming the node (or tool) that published it.
pub const FIELD_FROM: &str = "from";

/// The canonical body of a purge: absolute URLs (scheme, host, port as given), so that it
/// means the same on a node with another host name.
pub fn encode(req: &PurgeRequest) -> String {
    let mut v = match &req.scope {
        Scope::Urls(urls) => {
            let list: Vec<String> = urls
                .iter()
                .map(|u| match u.port {
                    Some(p) => format!("{}://{}:{p}{}", u.scheme, u.host, u.path),
                    None => format!("{}://{}{}", u.scheme, u.host, u.path),
                })
                .collect();
            json!({ "scope": "url", "urls": list })
        }
        Scope::Prefixes(ps) => {
            let list: Vec<String> = ps.iter().map(|(s, h, p)| format!("{s}://{h}{p}")).collect();
            json!({ "scope": "prefix", "urls": list })
        }
        Scope::Tags(tags) => json!({ "scope": "tag", "tags": tags }),
        Scope::All => json!({ "scope": "all", "confirm": "purge-all" }),
    };
    if req.soft {
        v["soft"] = Value::Bool(true);
    }
    v.to_string()
}

/// Reads an entry's purge body. An entry that does not decode is the caller's to turn into a
/// full flush (never under-invalidate).
pub fn decode(body: &[u8]) -> Result<PurgeRequest, PurgeError> {
    // Every URL in an encoded body is absolute: the default host is never used.
    parse_json(body, "fleet.invalid")
}

/// How a purge body asks to be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub fleet: bool,
    /// How long the publisher waits for every live node's receipt.
    pub wait: Duration,
}

pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The `"fleet"` and `"wait"` fields of a purge body (`"wait"`: seconds as a number, or a
/// time such as `"1500ms"`). The rest of the body is `purge::parse_json`'s.
pub fn options(body: &[u8]) -> Result<Options, PurgeError> {
    let bad = |m: &str| Err(PurgeError(m.into()));
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else {
        return Ok(Options {
            fleet: false,
            wait: DEFAULT_WAIT,
        });
    };
    let fleet = match o.get("fleet") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return bad("\"fleet\" must be true or false"),
    };
    let wait = match o.get("wait") {
        None | Some(Value::Null) => DEFAULT_WAIT,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if (0.0..=MAX_WAIT.as_secs_f64()).contains(&s) => Duration::from_secs_f64(s),
            _ => return bad("\"wait\" must be 0 to 60 seconds"),
        },
        Some(Value::String(s)) => match parse_time(s) {
            Some(d) if d <= MAX_WAIT => d,
            _ => return bad("\"wait\" must be a time up to 60s, such as \"2s\" or \"500ms\""),
        },
        Some(_) => return bad("\"wait\" must be a number of seconds or a time string"),
    };
    if !fleet && o.contains_key("wait") {
        return bad("\"wait\" applies to \"fleet\": true purges only");
    }
    Ok(Options { fleet, wait })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: &str) {
        let req = parse_json(body.as_bytes(), "site.test").unwrap();
        let enc = encode(&req);
        assert_eq!(decode(enc.as_bytes()).unwrap(), req, "{body} -> {enc}");
    }

    #[test]
    fn every_scope_reads_back_as_the_same_purge_on_another_node() {
        round_trip(r#"{"url": "/a/b.css?x=1"}"#);
        round_trip(r#"{"urls": ["https://site.test:8443/x", "http://o.test/y"], "soft": true}"#);
        round_trip(r#"{"url": "/img/*"}"#);
        round_trip(r#"{"url": "/img/", "scope": "prefix", "scheme": "https"}"#);
        round_trip(r#"{"tags": ["a", "b c"]}"#);
        round_trip(r#"{"scope": "all", "confirm": "purge-all", "soft": true}"#);
    }

    #[test]
    fn options_default_to_local_and_five_seconds() {
        let o = options(br#"{"url": "/x"}"#).unwrap();
        assert_eq!((o.fleet, o.wait), (false, DEFAULT_WAIT));
        let o = options(br#"{"url": "/x", "fleet": true, "wait": 0.25}"#).unwrap();
        assert_eq!((o.fleet, o.wait), (true, Duration::from_millis(250)));
        let o = options(br#"{"url": "/x", "fleet": true, "wait": "2s"}"#).unwrap();
        assert_eq!(o.wait, Duration::from_secs(2));
        for bad in [
            r#"{"fleet": 1}"#,
            r#"{"fleet": true, "wait": -1}"#,
            r#"{"fleet": true, "wait": "forever"}"#,
            r#"{"wait": 1}"#,
        ] {
            assert!(options(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
