//! The `pagespeed_fleet` directive's parameters, parsed and checked without nginx.

use std::time::Duration;

/// A node's place in the fleet: edges fill from shields, shields from the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Edge,
    Shield,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Edge => "edge",
            Tier::Shield => "shield",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "edge" => Some(Tier::Edge),
            "shield" => Some(Tier::Shield),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `redis://HOST:PORT[/DB]` as given (the redis crate parses it again to connect).
    pub url: String,
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub node: String,
    pub tier: Tier,
    pub stream: String,
    pub max_lag: Duration,
}

impl Config {
    /// The Redis hash where every node publishes its applied id, tier and heartbeat.
    pub fn nodes_key(&self) -> String {
        format!("{}:nodes", self.stream)
    }
}

pub const DEFAULT_STREAM: &str = "pagespeed:purges";
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(10);

/// Parses `redis://HOST:PORT[/DB] node=NAME [tier=edge|shield] [stream=KEY] [max_lag=TIME]`.
/// Errors say which part is wrong; the caller names the directive.
pub fn parse(args: &[&str]) -> Result<Config, String> {
    let Some((url, opts)) = args.split_first() else {
        return Err("needs a redis://HOST:PORT URL and node=NAME".into());
    };
    let (host, port, db) = parse_url(url)?;
    let (mut node, mut tier, mut stream, mut max_lag) = (None, None, None, None);
    for o in opts {
        let Some((k, v)) = o.split_once('=') else {
            return Err(format!("\"{o}\": expected name=value"));
        };
        let dup = |set: bool| {
            if set {
                Err(format!("\"{k}\" given twice"))
            } else {
                Ok(())
            }
        };
        match k {
            "node" => {
                dup(node.is_some())?;
                if v.is_empty()
                    || v.len() > 64
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(format!(
                        "node=\"{v}\": 1 to 64 letters, digits, '-', '_' or '.'"
                    ));
                }
                node = Some(v.to_string());
            }
            "tier" => {
                dup(tier.is_some())?;
                tier = Some(
                    Tier::parse(v)
                        .ok_or_else(|| format!("tier=\"{v}\": expected edge or shield"))?,
                );
            }
            "stream" => {
                dup(stream.is_some())?;
                if v.is_empty() || v.len() > 200 || v.bytes().any(|b| b <= b' ' || b >= 0x7f) {
                    return Err(format!("stream=\"{v}\": a Redis key without spaces"));
                }
                stream = Some(v.to_string());
            }
            "max_lag" => {
                dup(max_lag.is_some())?;
                let d = parse_time(v).ok_or_else(|| {
                    format!("max_lag=\"{v}\": expected a time such as 10s or 500ms")
                })?;
                if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                    return Err(format!("max_lag=\"{v}\": must be from 100ms to 1h"));
                }
                max_lag = Some(d);
            }
            _ => return Err(format!("unknown parameter \"{k}\"")),
        }
    }
    let Some(node) = node else {
        return Err("node=NAME is required".into());
    };
    Ok(Config {
        url: url.to_string(),
        host,
        port,
        db,
        node,
        tier: tier.unwrap_or(Tier::Edge),
        stream: stream.unwrap_or_else(|| DEFAULT_STREAM.to_string()),
        max_lag: max_lag.unwrap_or(DEFAULT_MAX_LAG),
    })
}

fn parse_url(url: &str) -> Result<(String, u16, u32), String> {
    let Some(rest) = url.strip_prefix("redis://") else {
        return Err(format!("\"{url}\": expected redis://HOST:PORT[/DB]"));
    };
    let (hostport, db) = match rest.split_once('/') {
        None => (rest, 0),
        Some((hp, "")) => (hp, 0),
        Some((hp, d)) => (
            hp,
            d.parse::<u32>()
                .ok()
                .filter(|d| *d < 10_000)
                .ok_or_else(|| format!("\"{url}\": the database must be a number"))?,
        ),
    };
    let Some((host, port)) = hostport.rsplit_once(':') else {
        return Err(format!(
            "\"{url}\": expected redis://HOST:PORT (the port is required)"
        ));
    };
    if host.is_empty() || host.contains(['@', '/', '?', '#', ' ']) {
        return Err(format!("\"{url}\": bad host"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("\"{url}\": bad port"))?;
    Ok((host.to_string(), port, db))
}

/// nginx-style times: `10s`, `500ms`, `2m`, `1h`, or bare seconds.
pub fn parse_time(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_every_parameter_parses() {
        let c = parse(&["redis://127.0.0.1:6379", "node=edge-1"]).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("127.0.0.1", 6379, 0));
        assert_eq!((c.tier, c.stream.as_str()), (Tier::Edge, DEFAULT_STREAM));
        assert_eq!(c.max_lag, Duration::from_secs(10));
        let c = parse(&[
            "redis://r.local:7000/3",
            "node=s1",
            "tier=shield",
            "stream=ps:x",
            "max_lag=1500ms",
        ])
        .unwrap();
        assert_eq!((c.port, c.db, c.tier), (7000, 3, Tier::Shield));
        assert_eq!(
            (c.stream.as_str(), c.max_lag),
            ("ps:x", Duration::from_millis(1500))
        );
        assert_eq!(c.nodes_key(), "ps:x:nodes");
    }

    #[test]
    fn bad_urls_and_options_are_refused_with_the_reason() {
        for (args, needle) in [
            (&["http://h:1", "node=a"][..], "redis://"),
            (&["redis://h", "node=a"], "port"),
            (&["redis://h:0", "node=a"], "bad port"),
            (&["redis://h:99999", "node=a"], "bad port"),
            (&["redis://h:1/x", "node=a"], "database"),
            (&["redis://h:1"], "node=NAME is required"),
            (&["redis://h:1", "node="], "node="),
            (&["redis://h:1", "node=a b"], "node="),
            (&["redis://h:1", "node=a", "tier=origin"], "edge or shield"),
            (&["redis://h:1", "node=a", "max_lag=fast"], "max_lag"),
            (&["redis://h:1", "node=a", "max_lag=1ms"], "100ms"),
            (
                &["redis://h:1", "node=a", "colour=red"],
                "unknown parameter",
            ),
            (&["redis://h:1", "node=a", "node=b"], "twice"),
            (&["redis://h:1", "node=a", "stream"], "name=value"),
            (&[], "needs"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
