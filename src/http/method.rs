//! Request methods as a cache sees them (RFC 9110 9.2.1, RFC 9111 4.4): a response to any
//! method not known to be safe invalidates the URL it targets.

/// Methods defined as safe (RFC 9110 9.3; WebDAV's PROPFIND and REPORT, RFC 5323 SEARCH):
/// they never change the resource. Every other method, an unknown one included
/// (`M-SEARCH`), is treated as unsafe.
const SAFE: [&[u8]; 7] = [
    b"GET",
    b"HEAD",
    b"OPTIONS",
    b"TRACE",
    b"PROPFIND",
    b"REPORT",
    b"SEARCH",
];

/// Whether a non-error response to `method` leaves the cached URL alone (method names are
/// case-sensitive).
pub fn is_safe(method: &[u8]) -> bool {
    SAFE.contains(&method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_unsafe_methods_are_not_safe() {
        assert!(is_safe(b"GET") && is_safe(b"HEAD") && is_safe(b"OPTIONS"));
        for m in [
            &b"POST"[..],
            b"PUT",
            b"DELETE",
            b"PATCH",
            b"M-SEARCH",
            b"FOO",
            b"get",
        ] {
            assert!(!is_safe(m), "{}", String::from_utf8_lossy(m));
        }
    }
}
