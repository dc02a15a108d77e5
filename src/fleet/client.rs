//! The fleet's Redis commands over one synchronous connection (the `redis` crate, no async
//! runtime): XADD a purge, read entries after an id, and the nodes hash of applied ids.
//! Every call has a socket timeout, so a stopped Redis turns into an error, never a hang.

use std::time::Duration;

use redis::Value;

use super::entry::{FIELD_FROM, FIELD_PURGE};
use super::StreamId;

pub type Error = redis::RedisError;

pub struct Client {
    con: redis::Connection,
    timeout: Duration,
}

/// One stream entry: its id and its purge body (None when the entry has no such field).
pub type Entry = (StreamId, Option<Vec<u8>>);

impl Client {
    /// Connects to `redis://HOST:PORT[/DB]`; `timeout` bounds the connect and every reply.
    pub fn connect(url: &str, timeout: Duration) -> Result<Client, Error> {
        let client = redis::Client::open(url)?;
        let con = client.get_connection_with_timeout(timeout)?;
        con.set_read_timeout(Some(timeout))?;
        con.set_write_timeout(Some(timeout))?;
        Ok(Client { con, timeout })
    }

    /// Appends a purge; Redis assigns the id, the fleet's global sequence number.
    pub fn publish(&mut self, stream: &str, from: &str, body: &str) -> Result<StreamId, Error> {
        let id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(FIELD_PURGE)
            .arg(body)
            .arg(FIELD_FROM)
            .arg(from)
            .query(&mut self.con)?;
        id.parse().map_err(protocol)
    }

    /// Up to `count` entries after `after`, waiting up to `block` for the first one.
    pub fn read_after(
        &mut self,
        stream: &str,
        after: StreamId,
        block: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, Error> {
        self.con.set_read_timeout(Some(self.timeout + block))?;
        let v: Result<Value, Error> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(stream)
            .arg(after.to_string())
            .query(&mut self.con);
        self.con.set_read_timeout(Some(self.timeout))?;
        let v = v?;
        // RESP2: [[stream, [entry...]]]; nil on timeout.
        let streams = match v {
            Value::Nil => return Ok(Vec::new()),
            Value::Array(a) => a,
            Value::Map(m) => m
                .into_iter()
                .map(|(k, v)| Value::Array(vec![k, v]))
                .collect(),
            _ => return Err(protocol("XREAD: unexpected reply")),
        };
        let mut out = Vec::new();
        for s in streams {
            let Value::Array(mut pair) = s else {
                return Err(protocol("XREAD: unexpected stream"));
            };
            if pair.len() != 2 {
                return Err(protocol("XREAD: unexpected stream"));
            }
            out.extend(entries(pair.pop().unwrap_or(Value::Nil))?);
        }
        Ok(out)
    }

    /// The oldest and newest ids still in the stream (None when it is empty or missing).
    pub fn bounds(&mut self, stream: &str) -> Result<Option<(StreamId, StreamId)>, Error> {
        let first: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query(&mut self.con)?;
        let last: Value = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut self.con)?;
        let (f, l) = (entries(first)?, entries(last)?);
        Ok(match (f.first(), l.first()) {
            (Some(f), Some(l)) => Some((f.0, l.0)),
            _ => None,
        })
    }

    /// Writes this node's state into the nodes hash.
    pub fn report(&mut self, nodes_key: &str, node: &str, state: &str) -> Result<(), Error> {
        redis::cmd("HSET")
            .arg(nodes_key)
            .arg(node)
            .arg(state)
            .query::<i64>(&mut self.con)?;
        Ok(())
    }

    /// The nodes hash: node name -> encoded state.
    pub fn nodes(&mut self, nodes_key: &str) -> Result<Vec<(String, String)>, Error> {
        redis::cmd("HGETALL").arg(nodes_key).query(&mut self.con)
    }
}

fn protocol(what: impl Into<String>) -> Error {
    let what: String = what.into();
    redis::RedisError::from((redis::ErrorKind::Client, "fleet", what))
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// `[[id, [field, value, ...]], ...]` (XRANGE, and each stream of XREAD).
fn entries(v: Value) -> Result<Vec<Entry>, Error> {
    let list = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err(protocol("unexpected entry list")),
    };
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let Value::Array(parts) = e else {
            return Err(protocol("unexpected entry"));
        };
        let id = parts
            .first()
            .and_then(text)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<StreamId>().ok())
            .ok_or_else(|| protocol("entry without an id"))?;
        let mut body = None;
        if let Some(Value::Array(fields)) = parts.get(1) {
            for kv in fields.chunks(2) {
                if let [k, v] = kv {
                    if text(k) == Some(FIELD_PURGE.as_bytes()) {
                        body = text(v).map(<[u8]>::to_vec);
                    }
                }
            }
        }
        out.push((id, body));
    }
    Ok(out)
}
