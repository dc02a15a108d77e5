//! `pagespeed-purge`: publishes a purge to the fleet's Redis stream, as a node's purge API
//! does with `"fleet": true`, waits for every live node's receipt and prints them as JSON.
//!
//! ```text
//! pagespeed-purge redis://HOST:PORT[/DB] [--stream KEY] [--wait SECONDS] [--host NAME] JSON
//! ```
//! JSON is a purge body (`{"url": "https://example.com/a.css"}`); a path without a host
//! needs `--host`. Exit status: 0 when every node applied it, 1 when some were pending, 2 on
//! an error.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ngx_http_pagespeed_module::fleet::client::Client;
use ngx_http_pagespeed_module::fleet::config::{parse_time, DEFAULT_STREAM};
use ngx_http_pagespeed_module::fleet::{encode, merge, unix_ms};
use ngx_http_pagespeed_module::purge::parse_json;

const USAGE: &str =
    "usage: pagespeed-purge redis://HOST:PORT[/DB] [--stream KEY] [--wait TIME] [--host NAME] JSON";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pagespeed-purge: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or(USAGE)?;
    let (mut stream, mut wait, mut host, mut body) = (
        DEFAULT_STREAM.to_string(),
        Duration::from_secs(5),
        None,
        None,
    );
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--stream" => stream = value()?,
            "--wait" => {
                let v = value()?;
                wait = parse_time(&v).ok_or(format!("--wait {v}: expected a time such as 5s"))?
            }
            "--host" => host = Some(value()?),
            _ if body.is_none() && !a.starts_with("--") => body = Some(a),
            _ => return Err(USAGE.into()),
        }
    }
    let body = body.ok_or(USAGE)?;
    let req = parse_json(body.as_bytes(), host.as_deref().unwrap_or("localhost"))
        .map_err(|e| format!("bad purge body: {e}"))?;
    let mut c = Client::connect(&url, Duration::from_secs(2))
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let start = Instant::now();
    let seq = c
        .publish(&stream, "pagespeed-purge", &encode(&req))
        .map_err(|e| format!("XADD failed: {e}"))?;
    let nodes_key = format!("{stream}:nodes");
    loop {
        let hash = c
            .nodes(&nodes_key)
            .map_err(|e| format!("published {seq}, but cannot read receipts: {e}"))?;
        let r = merge(
            hash.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            seq,
            unix_ms(),
        );
        if r.complete() || start.elapsed() >= wait {
            let mut v = r.to_json(seq);
            v["complete"] = serde_json::Value::Bool(r.pending.is_empty());
            v["elapsed_ms"] = serde_json::json!(start.elapsed().as_secs_f64() * 1000.0);
            println!("{v}");
            return Ok(r.pending.is_empty());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
