//! The slow, versioned origin: one thread per connection, reads a URL's version when the
//! request arrives, builds the self-describing body for it, waits (a slow backend widens every
//! fill/purge race), then answers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::content::{text_body, Catalog, Kind};
use crate::rng::Rng;

pub struct Origin {
    pub cat: Arc<Catalog>,
    /// Percent of requests answered 503 (marked `X-Soak-Origin: error`); the hook for the
    /// stale-if-error work.
    pub error_pct: f64,
    pub requests: AtomicU64,
    pub injected_errors: AtomicU64,
    pub not_modified: AtomicU64,
    pub stop: AtomicBool,
    /// Fault injection to prove the checks fire (`--fault`): serve another URL's body, or a
    /// body with one byte flipped, for about 1% of 200 responses.
    pub fault: Option<&'static str>,
}

impl Origin {
    pub fn new(cat: Arc<Catalog>, error_pct: f64, fault: Option<&'static str>) -> Origin {
        Origin {
            fault,
            cat,
            error_pct,
            requests: AtomicU64::new(0),
            injected_errors: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// Serves until `stop`; returns once the listener thread is running.
    pub fn start(self: &Arc<Self>, listener: TcpListener) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !me.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        seq += 1;
                        let me = me.clone();
                        let _ = s.set_nonblocking(false);
                        let _ = std::thread::Builder::new()
                            .stack_size(256 << 10)
                            .spawn(move || me.serve(s, seq));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    }

    fn serve(&self, mut s: TcpStream, seq: u64) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = s.set_nodelay(true);
        let mut rng = Rng::new(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
        let mut buf = Vec::new();
        loop {
            let Some(end) = read_head(&mut s, &mut buf) else {
                return;
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let keep = head.contains("HTTP/1.1")
                && !head.to_ascii_lowercase().contains("connection: close");
            let out = self.respond(&head, &mut rng, keep);
            if s.write_all(&out).is_err() || !keep {
                return;
            }
        }
    }

    fn respond(&self, head: &str, rng: &mut Rng, keep: bool) -> Vec<u8> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut lines = head.split("\r\n");
        let target = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("/");
        let path = target.split('?').next().unwrap_or("/");
        let inm = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("if-none-match"))
            .map(|(_, v)| v.trim().to_string());
        let conn = if keep { "keep-alive" } else { "close" };

        let Some(id) = self.cat.id_of(path) else {
            return format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: {conn}\r\n\r\nnot found\n"
            )
            .into_bytes();
        };
        // The version is read now, before the wait: a purge landing during the wait must fence
        // the fill that carries these bytes.
        let r = &self.cat.res[id as usize];
        let v = self.cat.version(id);
        let deps = self.cat.deps_field(r);
        // Mostly 2-40 ms, now and then a slow 150-400 ms response.
        let delay = if rng.below(100) == 0 {
            150 + rng.below(250)
        } else {
            2 + rng.below(38)
        };
        if self.error_pct > 0.0 && rng.unit() * 100.0 < self.error_pct {
            self.injected_errors.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(delay));
            return format!(
                "HTTP/1.1 503 Service Unavailable\r\nX-Soak-Origin: error\r\nCache-Control: no-store\r\nContent-Length: 15\r\nConnection: {conn}\r\n\r\ninjected error\n"
            )
            .into_bytes();
        }
        // A page's bytes name its dependencies' versions: its ETag must change with them, or
        // a 304 would confirm bytes the origin no longer sends.
        let etag = if r.deps.is_empty() {
            format!("\"r{id}-v{v}\"")
        } else {
            let h = deps.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            format!("\"r{id}-v{v}.d{h:x}\"")
        };
        let mut h = format!(
            "Content-Type: {}\r\nCache-Control: max-age={}\r\nETag: {etag}\r\nSurrogate-Key: g{}\r\n",
            r.kind.content_type(),
            r.max_age,
            r.group
        );
        if !r.deps.is_empty() {
            let names: Vec<&str> = r
                .deps
                .iter()
                .map(|&d| self.cat.res[d as usize].path.as_str())
                .collect();
            h.push_str(&format!("Cache-Tag: {}\r\n", names.join(", ")));
        }
        if inm.as_deref() == Some(etag.as_str()) {
            self.not_modified.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(delay));
            return format!("HTTP/1.1 304 Not Modified\r\n{h}Connection: {conn}\r\n\r\n")
                .into_bytes();
        }
        let mut body: Arc<Vec<u8>> = if r.kind.is_image() {
            self.cat.image(id, v)
        } else {
            Arc::new(text_body(r, v, &deps))
        };
        if self.fault.is_some() && rng.below(100) == 0 {
            if self.fault == Some("foreign-body") && !r.kind.is_image() {
                let other = &self.cat.res[(id as usize + 1) % self.cat.len()];
                if !other.kind.is_image() {
                    body = Arc::new(text_body(
                        other,
                        self.cat.version(other.id),
                        &self.cat.deps_field(other),
                    ));
                }
            } else if self.fault == Some("torn-body") {
                let mut b = (*body).clone();
                let n = b.len();
                b[n / 2] ^= 0x55;
                body = Arc::new(b);
            }
        }
        std::thread::sleep(Duration::from_millis(delay));
        let mut out = format!(
            "HTTP/1.1 200 OK\r\n{h}Content-Length: {}\r\nConnection: {conn}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        debug_assert!(r.kind != Kind::Html || !r.deps.is_empty());
        out
    }
}

fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(p);
        }
        if buf.len() > 64 << 10 {
            return None;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
