//! A small blocking HTTP/1.1 client over std's TcpStream: keep-alive connections, responses
//! framed by Content-Length, chunked encoding or EOF, and errors that say whether any byte of
//! the response had arrived (a response cut short is told apart from a closed idle connection).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Response {
    pub status: u16,
    /// Lowercase names, values as sent; repeated headers keep every line.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The server asked to close, or the body was framed by EOF.
    pub close: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub enum Failure {
    /// Could not connect.
    Connect(io::Error),
    /// The connection ended (EOF or reset) before any byte of the response.
    ClosedBeforeResponse,
    /// Part of the response arrived, then the connection ended.
    Cut(usize),
    /// No complete response within the read timeout.
    Timeout(usize),
    /// The bytes are not an HTTP response.
    Malformed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::ClosedBeforeResponse => write!(f, "closed before the response"),
            Failure::Cut(n) => write!(f, "cut after {n} bytes"),
            Failure::Timeout(n) => write!(f, "timed out after {n} bytes"),
            Failure::Malformed(m) => write!(f, "malformed: {m}"),
        }
    }
}

pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    timeout: Duration,
    /// Requests sent on the current connection (0: it is fresh).
    pub used: u32,
}

impl Conn {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: Vec::new(),
            timeout,
            used: 0,
        }
    }

    pub fn close(&mut self) {
        self.stream = None;
        self.buf.clear();
        self.used = 0;
    }

    /// Sends `head` (request line and headers, without the final CRLF) and `body`, reads one
    /// response. On any failure the connection is dropped.
    pub fn request(&mut self, head: &str, body: &[u8]) -> Result<Response, Failure> {
        let r = self.try_request(head, body);
        match &r {
            Ok(resp) if !resp.close => self.used += 1,
            _ => self.close(),
        }
        r
    }

    fn try_request(&mut self, head: &str, body: &[u8]) -> Result<Response, Failure> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .map_err(Failure::Connect)?;
            s.set_read_timeout(Some(self.timeout)).ok();
            s.set_write_timeout(Some(self.timeout)).ok();
            s.set_nodelay(true).ok();
            self.stream = Some(s);
            self.buf.clear();
        }
        let s = self.stream.as_mut().unwrap();
        let mut req = Vec::with_capacity(head.len() + 64 + body.len());
        req.extend_from_slice(head.as_bytes());
        if !body.is_empty() {
            req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        if s.write_all(&req).is_err() {
            return Err(Failure::ClosedBeforeResponse);
        }
        read_response(s, &mut self.buf, head.starts_with("HEAD "))
    }
}

fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, io::Error> {
    let mut chunk = [0u8; 65536];
    let n = s.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response from `s`; `buf` holds bytes already read past the previous one.
pub fn read_response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> Result<Response, Failure> {
    let mut got = 0usize;
    let ended = |got: usize, e: Option<io::Error>| -> Failure {
        match e {
            Some(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Failure::Timeout(got)
            }
            _ if got == 0 => Failure::ClosedBeforeResponse,
            _ => Failure::Cut(got),
        }
    };
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p;
        }
        match fill(s, buf) {
            Ok(0) => return Err(ended(got + buf.len(), None)),
            Ok(n) => got += n,
            Err(e) => return Err(ended(got + buf.len(), Some(e))),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::Malformed(format!("status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let hv = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let mut close = version == "HTTP/1.0" || hv("connection").is_some_and(|c| c.contains("close"));
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    let body = if no_body {
        Vec::new()
    } else if hv("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        read_chunked(s, buf, &mut got)?
    } else if let Some(len) = hv("content-length").and_then(|l| l.parse::<usize>().ok()) {
        while buf.len() < len {
            match fill(s, buf) {
                Ok(0) => return Err(Failure::Cut(got.max(1))),
                Ok(n) => got += n,
                Err(e) => return Err(ended(got.max(1), Some(e))),
            }
        }
        buf.drain(..len).collect()
    } else {
        // Framed by EOF.
        close = true;
        loop {
            match fill(s, buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(ended(got.max(1), Some(e))),
            }
        }
        std::mem::take(buf)
    };
    Ok(Response {
        status,
        headers,
        body,
        close,
    })
}

fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>, got: &mut usize) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    let mut more = |buf: &mut Vec<u8>, got: &mut usize| -> Result<(), Failure> {
        match fill(s, buf) {
            Ok(0) => Err(Failure::Cut((*got).max(1))),
            Ok(n) => {
                *got += n;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(Failure::Timeout((*got).max(1)))
            }
            Err(_) => Err(Failure::Cut((*got).max(1))),
        }
    };
    loop {
        let line_end = loop {
            if let Some(p) = find(buf, b"\r\n") {
                break p;
            }
            more(buf, got)?;
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| Failure::Malformed(format!("chunk size {line:?}")))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                if let Some(p) = find(buf, b"\r\n") {
                    let empty = p == 0;
                    buf.drain(..p + 2);
                    if empty {
                        return Ok(body);
                    }
                } else {
                    more(buf, got)?;
                }
            }
        }
        while buf.len() < size + 2 {
            more(buf, got)?;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// One request on a fresh connection, closed afterwards (admin calls, status samples).
pub fn once(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, Failure> {
    let mut c = Conn::new(addr, timeout);
    let r = c.request(head, body);
    c.close();
    r
}
