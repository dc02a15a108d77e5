//! Targeted cache-control fields (RFC 9213): `Pagespeed-Cache-Control` and `CDN-Cache-Control`,
//! Structured Field Dictionaries (RFC 8941) that, when one is present and valid, decide this
//! cache's policy instead of `Cache-Control` and `Expires`.

use super::cache_control::CacheControl;

/// The targeted fields this cache obeys, lowercase, in precedence order: the first present
/// and valid one wins. `Pagespeed-Cache-Control` targets this cache alone; `CDN-Cache-Control`
/// every CDN cache in the path.
pub const TARGETED_FIELDS: [&str; 2] = ["pagespeed-cache-control", "cdn-cache-control"];

/// The directives of the first valid targeted field among `headers` (name, value), or None
/// when none is present and valid (then `Cache-Control` applies).
pub fn targeted_directives<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
) -> Option<CacheControl> {
    for field in TARGETED_FIELDS {
        let lines: Vec<&[u8]> = headers
            .clone()
            .filter(|(n, _)| n.eq_ignore_ascii_case(field.as_bytes()))
            .map(|(_, v)| v)
            .collect();
        if lines.is_empty() {
            continue;
        }
        // RFC 8941 4.2: the lines of a field are combined with commas before parsing.
        let joined = lines.join(&b","[..]);
        if let Some(cc) = parse(&joined) {
            return Some(cc);
        }
    }
    None
}

/// One dictionary member's value, as far as cache directives need it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Integer(i64),
    Boolean(bool),
    /// A decimal, string, token, byte sequence or inner list: valid, but never a number of
    /// seconds.
    Other,
}

/// Parses a targeted field's value into directives; None if it is not a valid Dictionary,
/// or a directive whose meaning is a number of seconds has another type (RFC 9213 2.1: such
/// a field is invalid and ignored as a whole).
pub fn parse(v: &[u8]) -> Option<CacheControl> {
    let members = dictionary(v)?;
    let mut cc = CacheControl::default();
    for (key, value) in members {
        let flag = match value {
            Value::Boolean(b) => b,
            _ => true,
        };
        let secs = || match value {
            Value::Integer(n) if n >= 0 => Some(n as u64),
            _ => None,
        };
        match key.as_str() {
            "no-store" => cc.no_store = flag,
            "no-cache" => cc.no_cache = flag,
            "private" => cc.private = flag,
            "public" => cc.public = flag,
            "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = flag,
            "must-understand" => cc.must_understand = flag,
            "max-age" => cc.max_age = Some(secs()?),
            "s-maxage" => cc.s_maxage = Some(secs()?),
            "stale-while-revalidate" => cc.stale_while_revalidate = Some(secs()?),
            "stale-if-error" => cc.stale_if_error = Some(secs()?),
            _ => {}
        }
    }
    Some(cc)
}

/// An RFC 8941 Dictionary; None if malformed. Later duplicates override earlier ones.
fn dictionary(v: &[u8]) -> Option<Vec<(String, Value)>> {
    let mut p = Parser { b: v, i: 0 };
    p.sp();
    let mut out: Vec<(String, Value)> = Vec::new();
    if p.done() {
        return Some(out);
    }
    loop {
        let key = p.key()?;
        let value = if p.eat(b'=') {
            if p.peek() == Some(b'(') {
                p.inner_list()?;
                Value::Other
            } else {
                let v = p.bare_item()?;
                p.params()?;
                v
            }
        } else {
            p.params()?;
            Value::Boolean(true)
        };
        out.retain(|(k, _)| *k != key);
        out.push((key, value));
        p.ows();
        if p.done() {
            return Some(out);
        }
        if !p.eat(b',') {
            return None;
        }
        p.ows();
        if p.done() {
            return None; // a trailing comma
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn done(&mut self) -> bool {
        // Trailing spaces of the whole field are not part of it.
        self.b[self.i..].iter().all(|&c| c == b' ')
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn sp(&mut self) {
        while self.eat(b' ') {}
    }
    fn ows(&mut self) {
        while self.peek() == Some(b' ') || self.peek() == Some(b'\t') {
            self.i += 1;
        }
    }
    fn key(&mut self) -> Option<String> {
        let start = self.i;
        match self.peek()? {
            b'a'..=b'z' | b'*' => self.i += 1,
            _ => return None,
        }
        while let Some(c) = self.peek() {
            match c {
                b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*' => self.i += 1,
                _ => break,
            }
        }
        Some(String::from_utf8_lossy(&self.b[start..self.i]).into_owned())
    }
    fn params(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.sp();
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }
    fn inner_list(&mut self) -> Option<()> {
        self.eat(b'(');
        loop {
            self.sp();
            if self.eat(b')') {
                return self.params();
            }
            self.bare_item()?;
            self.params()?;
            match self.peek()? {
                b' ' | b')' => {}
                _ => return None,
            }
        }
    }
    fn bare_item(&mut self) -> Option<Value> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b':' => self.bytes(),
            b'?' => {
                self.i += 1;
                let v = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                self.i += 1;
                Some(Value::Boolean(v))
            }
            c if c.is_ascii_alphabetic() || c == b'*' => {
                self.i += 1;
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c) {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                Some(Value::Other)
            }
            _ => None,
        }
    }
    fn number(&mut self) -> Option<Value> {
        let negative = self.eat(b'-');
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let int_len = self.i - start;
        if int_len == 0 {
            return None;
        }
        if self.eat(b'.') {
            let frac = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let frac_len = self.i - frac;
            return (int_len <= 12 && (1..=3).contains(&frac_len)).then_some(Value::Other);
        }
        if int_len > 15 {
            return None;
        }
        let n: i64 = std::str::from_utf8(&self.b[start..self.i])
            .ok()?
            .parse()
            .ok()?;
        Some(Value::Integer(if negative { -n } else { n }))
    }
    fn string(&mut self) -> Option<Value> {
        self.i += 1;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(Value::Other);
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' => self.i += 1,
                        _ => return None,
                    }
                }
                0x20..=0x7e => self.i += 1,
                _ => return None,
            }
        }
    }
    fn bytes(&mut self) -> Option<Value> {
        self.i += 1;
        while let Some(c) = self.peek() {
            if c == b':' {
                self.i += 1;
                return Some(Value::Other);
            }
            if !(c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=') {
                return None;
            }
            self.i += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_dictionary_gives_its_directives() {
        let cc = parse(b"max-age=3600, no-store;x=1, foo=\"bar\", baz=(a b)").unwrap();
        assert_eq!(cc.max_age, Some(3600));
        assert!(cc.no_store);
        assert!(parse(b"private").unwrap().private);
        assert!(!parse(b"no-cache=?0").unwrap().no_cache);
        assert_eq!(
            parse(b"max-age=99999999999").unwrap().max_age,
            Some(99_999_999_999)
        );
        assert_eq!(parse(b"").unwrap(), CacheControl::default());
    }

    #[test]
    fn invalid_fields_and_wrongly_typed_lifetimes_are_ignored() {
        for bad in [
            &b"max-age=10000, &&&&&"[..],
            b"max-age=\"10000\"",
            b"max-age =100",
            b"max-age= 100",
            b"MaX-aGe=3600",
            b"max-age=1.5",
            b"max-age=-1",
            b"max-age=60,",
            b"max-age=1234567890123456",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_first_present_and_valid_field_wins() {
        let h = |list: &'static [(&'static str, &'static str)]| {
            targeted_directives(list.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
        };
        assert_eq!(h(&[("Cache-Control", "max-age=5")]), None);
        let both = h(&[
            ("CDN-Cache-Control", "max-age=10"),
            ("Pagespeed-Cache-Control", "max-age=20"),
        ]);
        assert_eq!(both.unwrap().max_age, Some(20));
        let fallback = h(&[
            ("Pagespeed-Cache-Control", "&&"),
            ("CDN-Cache-Control", "no-store"),
        ]);
        assert!(fallback.unwrap().no_store);
        let joined = h(&[
            ("CDN-Cache-Control", "max-age=10"),
            ("cdn-cache-control", "private"),
        ])
        .unwrap();
        assert!(joined.private && joined.max_age == Some(10));
    }
}
