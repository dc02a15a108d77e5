//! Variants: the 32-bit descriptor stored with every alternate, the client's capabilities,
//! and the choice of the best alternate for a request.

pub mod descriptor;
pub mod encoding;

pub use descriptor::{Descriptor, Encoding};
pub use encoding::AcceptEncoding;

/// Scores an alternate for a client (None: must not be served to it). Higher is better:
/// a transfer encoding the client accepts beats identity (smaller bytes, same content).
pub fn score(desc: Descriptor, accept: &AcceptEncoding) -> Option<u32> {
    if desc.is_sentinel() {
        return None;
    }
    let enc = desc.encoding();
    if !accept.accepts(enc) {
        return None;
    }
    Some(match enc {
        Encoding::Br => 4,
        Encoding::Zstd => 3,
        Encoding::Gzip => 2,
        Encoding::Identity => 1,
        _ => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoding_the_client_did_not_accept_is_never_chosen() {
        let plain = AcceptEncoding::parse(b"");
        let gz = Descriptor::original(Encoding::Gzip, None);
        assert_eq!(score(gz, &plain), None);
        assert!(score(Descriptor::original(Encoding::Identity, None), &plain).is_some());
        let both = AcceptEncoding::parse(b"gzip, br");
        let br = Descriptor::original(Encoding::Br, None);
        assert!(score(br, &both) > score(gz, &both));
        assert!(score(gz, &both) > score(Descriptor::original(Encoding::Identity, None), &both));
    }

    #[test]
    fn sentinels_are_never_chosen() {
        let all = AcceptEncoding::parse(b"*");
        assert_eq!(score(Descriptor::sentinel(1), &all), None);
    }
}
