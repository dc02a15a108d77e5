//! The purge path, one home for every way in: a purge request (the JSON API, the `PURGE`
//! method, RFC 9111 invalidation after an unsafe method) becomes one plan — which URL, prefix
//! or tag buckets to raise, which dependents, which keys to delete at once — applied to the
//! store, and a receipt saying what happened.

pub mod request;

use crate::http::url::{default_port, Url};
use crate::store::{Fault, Key, PurgeReceipt, Store, UrlId};

pub use request::{
    method_request, parse_json, parse_target, PurgeError, PurgeRequest, Scope, Target, MAX_BODY,
};

/// What a purge did: the store's receipt and the scope as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub scope: &'static str,
    pub soft: bool,
    pub store: PurgeReceipt,
    /// The URLs, prefixes (with a trailing `*`) or tags purged, as they were applied.
    pub listed: Vec<String>,
}

impl Receipt {
    /// The JSON object the purge API answers with (without a trailing newline).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "scope": self.scope,
            "soft": self.soft,
            "deleted": self.store.deleted,
            "generation": self.store.generation,
        });
        let field = match self.scope {
            "url" => Some("urls"),
            "prefix" => Some("prefixes"),
            "tag" => Some("tags"),
            _ => None,
        };
        if let (Some(f), Some(o)) = (field, v.as_object_mut()) {
            o.insert(f.into(), serde_json::json!(self.listed));
        }
        v.to_string()
    }
}

/// Applies a purge. `listener_port` is the purge request's own listener: a URL given without
/// a port is deleted at once under that port's key and under the scheme's default port's (on
/// any other port it is still invalid from its next lookup: purge scopes carry no port).
/// `extra_keys` are deleted too (the key a configured `pagespeed_cache_key` gave the entry).
/// A URL purge also purges every entry that declared (in `Cache-Tag` / `Surrogate-Key`) it
/// was built from one of the URLs.
pub fn apply(
    store: &Store,
    req: &PurgeRequest,
    listener_port: u16,
    extra_keys: &[Key],
) -> Result<Receipt, Fault> {
    let soft = req.soft;
    let (store_receipt, listed) = match &req.scope {
        Scope::Urls(urls) => {
            let ids: Vec<UrlId> = urls.iter().map(Url::id).collect();
            let spellings: Vec<String> = urls.iter().flat_map(Url::tag_spellings).collect();
            let dependents: Vec<&str> = spellings.iter().map(String::as_str).collect();
            let mut keys: Vec<Key> = urls
                .iter()
                .flat_map(|u| u.keys(&[listener_port, default_port(&u.scheme)]))
                .collect();
            keys.extend_from_slice(extra_keys);
            let listed = urls
                .iter()
                .map(|u| format!("{}://{}{}", u.scheme, u.host, u.path))
                .collect();
            (store.purge_url(&ids, &dependents, &keys, soft)?, listed)
        }
        Scope::Prefixes(ps) => {
            let refs: Vec<(&str, &str, &str)> = ps
                .iter()
                .map(|(s, h, p)| (s.as_str(), h.as_str(), p.as_str()))
                .collect();
            let listed = ps
                .iter()
                .map(|(s, h, p)| format!("{s}://{h}{p}*"))
                .collect();
            (store.purge_prefix(&refs, soft)?, listed)
        }
        Scope::Tags(tags) => {
            let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
            (store.purge_tag(&refs, soft)?, tags.clone())
        }
        Scope::All => (store.flush_all(soft)?, Vec::new()),
    };
    Ok(Receipt {
        scope: req.scope.as_str(),
        soft,
        store: store_receipt,
        listed,
    })
}

/// RFC 9111 4.4: a non-error response to an unsafe method invalidates its target URI. The
/// same plan as a hard URL purge of that URL (dependents included), plus the request's own
/// key.
pub fn invalidate(
    store: &Store,
    url: &Url,
    listener_port: u16,
    key: &Key,
) -> Result<Receipt, Fault> {
    let req = PurgeRequest {
        scope: Scope::Urls(vec![url.clone()]),
        soft: false,
        revalidate: false,
    };
    apply(store, &req, listener_port, &[*key])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::url::default_key;
    use crate::store::{Alternate, Backing, CommitOutcome, Lookup, StoreConfig};

    fn store() -> Store {
        Store::open(&StoreConfig {
            backing: Backing::Anonymous,
            size: 2 << 20,
            max_object: 0,
        })
        .unwrap()
    }

    fn url(path: &str) -> Url {
        Url {
            scheme: "http".into(),
            host: "a.test".into(),
            path: path.into(),
            port: Some(8080),
        }
    }

    fn put(s: &Store, u: &Url, tags: &[&str]) -> Key {
        let key = default_key("http", b"a.test", 8080, u.path.as_bytes());
        let scopes = s.buckets().scopes_for(&u.id(), tags);
        let alt = Alternate {
            descriptor: 0,
            scopes: &scopes,
            meta: b"m",
            body: b"b",
        };
        assert_eq!(s.commit(s.begin_fill(), &key, &alt), CommitOutcome::Stored);
        key
    }

    fn cached(s: &Store, key: &Key) -> bool {
        let mut buf = Vec::new();
        matches!(s.lookup(key, |_, _| Some(0), &mut buf), Lookup::Hit(_))
    }

    #[test]
    fn invalidation_is_a_url_purge_with_its_dependents() {
        let s = store();
        let css = url("/a.css");
        let page = url("/page.html");
        let css_key = put(&s, &css, &[]);
        let page_key = put(&s, &page, &["/a.css"]);
        let r = invalidate(&s, &css, 8080, &css_key).unwrap();
        assert_eq!((r.scope, r.soft, r.store.deleted), ("url", false, 1));
        assert!(!cached(&s, &css_key));
        assert!(
            !cached(&s, &page_key),
            "the page built from the stylesheet goes with it"
        );
    }

    #[test]
    fn receipts_list_what_was_purged() {
        let s = store();
        let r = apply(
            &s,
            &parse_json(br#"{"url": "http://a.test/x"}"#, "a.test").unwrap(),
            8080,
            &[],
        )
        .unwrap();
        assert_eq!(
            r.to_json(),
            r#"{"deleted":0,"generation":1,"scope":"url","soft":false,"urls":["http://a.test/x"]}"#
        );
        let r = apply(
            &s,
            &parse_json(br#"{"tag": "t"}"#, "a.test").unwrap(),
            80,
            &[],
        )
        .unwrap();
        assert!(r.to_json().contains(r#""tags":["t"]"#));
        let all = r#"{"scope": "all", "confirm": "purge-all", "soft": true}"#;
        let r = apply(&s, &parse_json(all.as_bytes(), "a.test").unwrap(), 80, &[]).unwrap();
        assert_eq!(
            r.to_json(),
            r#"{"deleted":0,"generation":3,"scope":"all","soft":true}"#
        );
    }
}
