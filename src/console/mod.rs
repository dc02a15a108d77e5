//! The admin console: the HTML page `pagespeed_status` answers a browser with (counters, a
//! chart polled from its own JSON, a URL's alternates with thumbnails and the client classes
//! each is served to, a purge form). Pure rendering: every value shown is escaped here.

use std::fmt::Write as _;

use crate::http::meta::{MetaView, StoredMeta};
use crate::http::url::default_key;
use crate::purge::parse_target;
use crate::store::{AlternateInfo, Group, Kind, Metric, PurgeState, Stats, Store};
use crate::variant::{score, Capabilities, CapabilityHeaders, Descriptor, Encoding};

const TEMPLATE: &str = include_str!("console.html");

/// Longest `Accept` examined.
const MAX_ACCEPT: usize = 4096;

/// Whether `Accept` makes `text/html` the preferred type: named explicitly with q > 0, at least
/// as high as every other type listed, and above `application/json` (a tie goes to JSON, so an
/// API client listing both keeps its JSON). Wildcards never select the page: `curl` (`*/*`),
/// Prometheus and scripts get exactly what they got before the console existed.
pub fn prefers_html(accept: &[u8]) -> bool {
    let accept = &accept[..accept.len().min(MAX_ACCEPT)];
    let (mut html, mut json, mut other) = (None::<f32>, None::<f32>, 0f32);
    for item in accept.split(|&c| c == b',') {
        let mut parts = item.split(|&c| c == b';');
        let media = parts.next().unwrap_or_default().trim_ascii();
        if media.is_empty() {
            continue;
        }
        let mut q = 1.0f32;
        for p in parts {
            let p = p.trim_ascii();
            if p.len() >= 2 && p[..2].eq_ignore_ascii_case(b"q=") {
                q = std::str::from_utf8(&p[2..])
                    .ok()
                    .and_then(|s| s.trim().parse::<f32>().ok())
                    .filter(|q| q.is_finite())
                    .unwrap_or(0.0);
            }
        }
        let slot = if media.eq_ignore_ascii_case(b"text/html") {
            &mut html
        } else if media.eq_ignore_ascii_case(b"application/json") {
            &mut json
        } else {
            other = other.max(q);
            continue;
        };
        *slot = Some(slot.map_or(q, |v| v.max(q)));
    }
    html.is_some_and(|h| h > 0.0 && h >= other && json.is_none_or(|j| h > j))
}

/// Escapes text for HTML element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn esc_bytes(b: &[u8]) -> String {
    esc(&String::from_utf8_lossy(b))
}

/// Percent-encodes a query value (everything but unreserved characters and `/`, `:`), so that
/// `&`, `+`, `#`, `%` and quotes in a URL survive the round trip through `?url=`.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut i) = (n as f64, 0);
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// `num / den` as a percentage with one decimal, rounded half up in integers (the page's
/// script uses the same formula, so the value does not change when it first polls).
fn percent(num: u64, den: u64) -> String {
    if den == 0 {
        return "–".into();
    }
    let permille = (2000 * num as u128 + den as u128) / (2 * den as u128);
    format!("{}.{} %", permille / 10, permille % 10)
}

fn counters(stats: &Stats, max_object: u64) -> String {
    let fields = stats.fields();
    let max = Metric {
        name: "max_object",
        help: "Largest object one alternate may be",
        label: "max object size",
        kind: Kind::Gauge,
        group: Group::Segment,
        value: max_object,
    };
    let lookups = stats.hits + stats.stale_hits + stats.misses;
    let mut o = String::new();
    let _ = write!(
        o,
        "<div class=\"headline\">\
         <div><span class=\"big\" data-derived=\"hit_ratio\">{}</span><span class=\"sub\">hit ratio</span></div>\
         <div><span class=\"big\" data-derived=\"lookups\">{lookups}</span><span class=\"sub\">lookups (hits, stale, misses)</span></div>\
         <div><span class=\"big\" data-derived=\"segment_use\">{}</span><span class=\"sub\">segment use: \
         <span data-human=\"bytes_used\">{}</span> of <span data-human=\"bytes_capacity\">{}</span></span></div>\
         <div><span class=\"big\" data-counter=\"entries\">{}</span><span class=\"sub\">entries, \
         <span data-counter=\"alternates\">{}</span> alternates</span></div>\
         </div>\n<div class=\"groups\">",
        percent(stats.hits, lookups),
        percent(stats.bytes_used, stats.bytes_capacity),
        human_bytes(stats.bytes_used),
        human_bytes(stats.bytes_capacity),
        stats.entries,
        stats.alternates,
    );
    for group in Group::ALL {
        let _ = write!(o, "<div><h3>{}</h3><dl>", group.as_str());
        let in_group = fields.iter().chain([&max]).filter(|m| m.group == group);
        for &Metric {
            name,
            help,
            label,
            value: v,
            ..
        } in in_group
        {
            let human = if name.starts_with("bytes") || name == "max_object" {
                format!(
                    " <span class=\"human\" data-human=\"{name}\">{}</span>",
                    human_bytes(v)
                )
            } else {
                String::new()
            };
            let _ = write!(
                o,
                "<dt title=\"{}\">{}</dt><dd><span data-counter=\"{name}\">{v}</span>{human}</dd>",
                esc(help),
                esc(label),
            );
        }
        o.push_str("</dl></div>");
    }
    o.push_str("</div>");
    o
}

/// Client classes whose alternate the page names, described by the request headers such a
/// client sends; their capabilities are parsed by the same code as a real request's.
struct ClientClass {
    name: &'static str,
    /// Lowercase names.
    headers: &'static [(&'static str, &'static str)],
    /// Sends `Save-Data: on` too.
    save_data: bool,
}

const CHROME_ACCEPT: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
const CHROME_DESKTOP_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
const CHROME_PHONE_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36";
const SAFARI_ACCEPT: &str = "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";

const CHROME_PHONE: &[(&str, &str)] = &[
    ("accept", CHROME_ACCEPT),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("user-agent", CHROME_PHONE_UA),
    ("sec-ch-viewport-width", "412"),
    ("sec-ch-dpr", "2.625"),
];

const CLASSES: &[ClientClass] = &[
    ClientClass {
        name: "Chrome, desktop",
        headers: &[
            ("accept", CHROME_ACCEPT),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("user-agent", CHROME_DESKTOP_UA),
        ],
        save_data: false,
    },
    ClientClass {
        name: "Chrome, phone (412 px, DPR 2.6)",
        headers: CHROME_PHONE,
        save_data: false,
    },
    ClientClass {
        name: "Chrome, phone, Save-Data",
        headers: CHROME_PHONE,
        save_data: true,
    },
    ClientClass {
        name: "Safari, iPhone",
        headers: &[
            ("accept", SAFARI_ACCEPT),
            ("accept-encoding", "gzip, deflate, br"),
            (
                "user-agent",
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            ),
        ],
        save_data: false,
    },
    ClientClass {
        name: "Safari, iPad",
        headers: &[
            ("accept", SAFARI_ACCEPT),
            ("accept-encoding", "gzip, deflate, br"),
            (
                "user-agent",
                "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            ),
        ],
        save_data: false,
    },
    ClientClass {
        name: "WebP, no AVIF (Edge 18)",
        headers: &[
            ("accept", "image/webp,image/apng,image/*,*/*;q=0.8"),
            ("accept-encoding", "gzip, deflate, br"),
            ("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0 Safari/537.36 Edge/18.19045"),
        ],
        save_data: false,
    },
    ClientClass {
        name: "curl (*/*, no compression)",
        headers: &[("accept", "*/*"), ("user-agent", "curl/8.5.0")],
        save_data: false,
    },
];

impl ClientClass {
    fn headers(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        let extra = self.save_data.then_some(("save-data", "on"));
        self.headers.iter().copied().chain(extra)
    }

    fn header(&self, lc_name: &str) -> Option<&'static str> {
        self.headers().find(|(n, _)| *n == lc_name).map(|(_, v)| v)
    }

    fn capabilities(&self) -> Capabilities {
        let mut h = CapabilityHeaders::default();
        for (n, v) in self.headers() {
            h.offer(n.as_bytes(), v.as_bytes());
        }
        Capabilities::from_headers(&h)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    /// Past its HTTP freshness: the next request refills it.
    Expired,
    /// Soft-purged: the next request refills it.
    Stale,
    /// Purged (prefix, tag, flush): dropped at its next lookup.
    Purged,
    /// A sentinel recording a declined build.
    Declined,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Expired => "expired",
            State::Stale => "stale",
            State::Purged => "purged",
            State::Declined => "declined",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            State::Fresh => "served from the cache",
            State::Expired => "past its freshness lifetime: the next request refills it",
            State::Stale => "soft-purged: the next request refills it",
            State::Purged => "purged: dropped at its next lookup, never served",
            State::Declined => "a build of this variant was declined (not smaller, or undecodable)",
        }
    }
}

struct AltView<'a> {
    info: &'a AlternateInfo,
    desc: Descriptor,
    meta: Option<MetaView<'a>>,
    state: State,
}

impl<'a> AltView<'a> {
    fn new(info: &'a AlternateInfo, now: i64) -> AltView<'a> {
        let desc = Descriptor(info.descriptor);
        let meta = MetaView::parse(&info.meta);
        let state = if desc.is_sentinel() {
            State::Declined
        } else {
            match info.purge_state {
                None => State::Purged,
                Some(PurgeState::SoftPurged) => State::Stale,
                Some(PurgeState::Current) if meta.is_some_and(|m| now < m.expires_at) => {
                    State::Fresh
                }
                Some(PurgeState::Current) => State::Expired,
            }
        };
        AltView {
            info,
            desc,
            meta,
            state,
        }
    }

    fn media_type(&self) -> String {
        let ct = self.meta.map(|m| m.content_type).unwrap_or_default();
        let t = ct.split(|&c| c == b';').next().unwrap_or_default();
        String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase()
    }

    /// Whether the page shows its bytes: a fresh raster image the origin's Vary did not select
    /// (an origin-varied response belongs to the request values that chose it).
    fn thumbnail(&self) -> bool {
        matches!(self.state, State::Fresh | State::Expired)
            && is_thumbnail(self.desc, &self.media_type())
    }
}

/// Alternates the status location serves as bytes (`?alternate=`).
pub fn is_thumbnail(d: Descriptor, media_type: &str) -> bool {
    !d.is_sentinel()
        && !d.origin_varies()
        && d.encoding() == Encoding::Identity
        && matches!(
            media_type,
            "image/jpeg" | "image/png" | "image/gif" | "image/webp" | "image/avif"
        )
}

/// What a client of `class` gets: as a lookup does, the best-scoring alternate not purged (the
/// newest wins ties; origin-Vary alternates must match the class's header values); a stale or
/// expired best is a miss.
fn served_to(alts: &[AltView], class: &ClientClass) -> Option<usize> {
    let caps = class.capabilities();
    let header = |n: &str| class.header(n).map(|v| v.as_bytes().to_vec());
    let mut best: Option<(u32, usize)> = None;
    for (i, a) in alts.iter().enumerate() {
        if matches!(a.state, State::Purged | State::Declined) {
            continue;
        }
        let Some(s) = score(a.desc, &caps) else {
            continue;
        };
        if a.desc.origin_varies() && !StoredMeta::vary_matches(&a.info.meta, &header) {
            continue;
        }
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, i));
        }
    }
    best.map(|(_, i)| i)
        .filter(|&i| alts[i].state == State::Fresh)
}

/// One scheme's entry of the URL looked up.
pub struct Entry {
    url: String,
    key: String,
    alternates: Vec<AlternateInfo>,
}

/// The entries `?url=` names (both schemes for a path), keyed like the cached location's
/// default key; without a port, the listener the status request came in on.
pub fn entries(store: &Store, u: &str, host: &str, here: u16) -> Result<Vec<Entry>, String> {
    let t = parse_target(u, None, None, host).map_err(|e| e.0)?;
    if t.prefix {
        return Err("inspection takes one URL, not a prefix".into());
    }
    let p = t.port.unwrap_or(here);
    t.schemes
        .iter()
        .map(|s| {
            let key = default_key(s, t.host.as_bytes(), p, t.path.as_bytes());
            Ok(Entry {
                url: format!("{s}://{}:{p}{}", t.host, t.path),
                key: key.hex(),
                alternates: store.alternates(&key).map_err(|f| f.to_string())?,
            })
        })
        .collect()
}

fn render_entry(o: &mut String, e: &Entry, now: i64, token_required: bool) {
    let _ = write!(
        o,
        "<div data-entry=\"{}\"><h3>{} <span class=\"key\">key {}</span></h3>",
        esc(&e.url),
        esc(&e.url),
        esc(&e.key)
    );
    if e.alternates.is_empty() {
        o.push_str("<p class=\"muted\">Nothing cached under this URL.</p></div>");
        return;
    }
    let alts: Vec<AltView> = e.alternates.iter().map(|a| AltView::new(a, now)).collect();
    let served: Vec<Option<usize>> = CLASSES.iter().map(|c| served_to(&alts, c)).collect();
    let original = alts
        .iter()
        .position(|a| a.desc.is_original() && a.desc.encoding() == Encoding::Identity)
        .or_else(|| alts.iter().position(|a| a.desc.is_original()));
    o.push_str(
        "<table class=\"alternates\"><thead><tr><th></th><th>variant</th><th>type</th>\
         <th>encoding</th><th>size</th><th>vs original</th><th>stamp</th><th>age</th>\
         <th>state</th><th>served to</th><th>headers</th></tr></thead><tbody>",
    );
    for (i, a) in alts.iter().enumerate() {
        let label = match a.desc.declined_target() {
            Some(t) => format!("declined: {}", t.label()),
            None => a.desc.label(),
        };
        let descriptor = format!("{:#010x}", a.info.descriptor);
        let _ = write!(
            o,
            "<tr data-descriptor=\"{descriptor}\" data-variant=\"{}\">",
            esc(&label)
        );
        if a.thumbnail() {
            let src = format!("?url={}&alternate={descriptor}", pct(&e.url));
            let (attr, hint) = if token_required {
                ("data-src", "needs the token (and JavaScript)")
            } else {
                ("src", "")
            };
            let _ = write!(
                o,
                "<td><img class=\"thumb\" {attr}=\"{}\" alt=\"{}\"><span class=\"thumbhint\">{hint}</span></td>",
                esc(&src),
                esc(&label)
            );
        } else {
            o.push_str("<td></td>");
        }
        let ct = a
            .meta
            .map(|m| esc_bytes(m.content_type))
            .unwrap_or_else(|| "–".into());
        let saving = match original {
            _ if a.desc.is_sentinel() => "–".to_string(),
            Some(oi) if oi == i => "original".into(),
            Some(oi) if alts[oi].info.body_len > 0 => {
                let (a_len, o_len) = (a.info.body_len as i64, alts[oi].info.body_len as i64);
                let change = ((a_len - o_len) * 1000 / o_len) as f64 / 10.0;
                let class = if a_len < o_len {
                    "saving-good"
                } else {
                    "saving-bad"
                };
                format!("<span class=\"{class}\">{change:+.1} %</span>")
            }
            _ => "–".into(),
        };
        let age = a
            .meta
            .map(|m| human_age(m.age_at(now)))
            .unwrap_or_else(|| "–".into());
        let to: Vec<&str> = CLASSES
            .iter()
            .zip(&served)
            .filter(|(_, s)| **s == Some(i))
            .map(|(c, _)| c.name)
            .collect();
        let mut headers = String::new();
        if let Some(m) = a.meta {
            for (n, v) in m.headers() {
                let _ = writeln!(headers, "{}: {}", esc_bytes(n), esc_bytes(v));
            }
        }
        let _ = write!(
            o,
            "<td>{}<br><span class=\"key\">{descriptor}</span></td><td>{ct}</td><td>{}</td>\
             <td class=\"num\" data-bytes=\"{}\">{}</td><td class=\"num\">{saving}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{age}</td>\
             <td class=\"state-{}\" title=\"{}\">{}</td><td>{}</td>\
             <td><details><summary>{}</summary><pre>{headers}</pre></details></td></tr>",
            esc(&label),
            a.desc.encoding().as_str(),
            a.info.body_len,
            human_bytes(a.info.body_len as u64),
            a.info.stamp,
            a.state.as_str(),
            a.state.explain(),
            a.state.as_str(),
            esc(&to.join(", ")),
            a.meta.map_or(0, |m| m.headers().count()),
        );
    }
    o.push_str("</tbody></table>");
    o.push_str(
        "<details class=\"classes\"><summary>Who gets what: the alternate each client class is \
         served, chosen by the same selection as a cache hit</summary><table><thead><tr>\
         <th>client</th><th>request headers</th><th>gets</th></tr></thead><tbody>",
    );
    for (c, s) in CLASSES.iter().zip(&served) {
        let gets = match s {
            Some(i) => esc(&alts[*i].desc.label()),
            None => "a miss (served by the origin, then stored)".into(),
        };
        let mut hs = String::new();
        for (n, v) in c.headers() {
            let _ = writeln!(hs, "{n}: {}", esc(v));
        }
        let _ = write!(
            o,
            "<tr data-class=\"{}\"><td>{}</td><td><pre>{hs}</pre></td><td>{gets}</td></tr>",
            esc(c.name),
            esc(c.name)
        );
    }
    o.push_str("</tbody></table></details></div>");
}

fn render_lookup(lookup: &Result<Vec<Entry>, String>, now: i64, token_required: bool) -> String {
    let mut o = String::new();
    match lookup {
        Err(e) => {
            let _ = write!(o, "<p class=\"error\">{}</p>", esc(e));
        }
        Ok(entries) => {
            for e in entries {
                render_entry(&mut o, e, now, token_required);
            }
        }
    }
    o
}

pub struct Page<'a> {
    pub stats: &'a Stats,
    pub max_object: u64,
    pub host: &'a str,
    pub pid: u32,
    pub nonce: &'a str,
    pub purge_location: &'a str,
    pub token_required: bool,
    pub url: Option<&'a str>,
    pub lookup: Option<&'a Result<Vec<Entry>, String>>,
    pub now: i64,
}

/// Fills the template's `{{name}}` slots; each value is escaped or rendered escaped.
pub fn render(p: &Page) -> String {
    let slot = |name: &str| -> Option<String> {
        Some(match name {
            "host" => esc(p.host),
            "pid" => p.pid.to_string(),
            "nonce" => esc(p.nonce),
            "token_required" => if p.token_required { "yes" } else { "no" }.into(),
            "counters" => counters(p.stats, p.max_object),
            "url" => esc(p.url.unwrap_or_default()),
            "lookup" => p.lookup.map_or_else(
                || {
                    "<p class=\"muted\">A path (this site, both schemes) or an absolute URL \
                     (with a port when it is not this listener's).</p>"
                        .to_string()
                },
                |l| render_lookup(l, p.now, p.token_required),
            ),
            "purge_uri" => esc(p.purge_location),
            "purge_uri_or_hint" => esc(if p.purge_location.is_empty() {
                "http://this-site/your-purge-location"
            } else {
                p.purge_location
            }),
            _ => return None,
        })
    };
    let mut out = String::with_capacity(TEMPLATE.len() + 16 * 1024);
    let mut rest = TEMPLATE;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find("}}").and_then(|j| Some((j, slot(&after[..j])?))) {
            Some((j, v)) => {
                out.push_str(&v);
                rest = &after[j + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A fresh random nonce for the page's inline script and style (its Content-Security-Policy
/// allows nothing else).
pub fn nonce() -> Option<String> {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    (n == b.len() as isize).then(|| b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A `?alternate=` descriptor: `0x...` hex or decimal.
pub fn parse_descriptor(s: &str) -> Option<u32> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::meta::StoredMeta;
    use crate::store::{Alternate, Backing, StoreConfig};
    use crate::variant::{Density, Format, Viewport};

    #[test]
    fn only_a_browser_preferring_html_gets_the_page() {
        let chrome = b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        assert!(prefers_html(chrome));
        assert!(prefers_html(
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(prefers_html(b"TEXT/HTML"));
        for not in [
            &b""[..],
            b"*/*",
            b"application/json",
            b"text/*",
            b"text/html, application/json",
            b"application/json;q=1, text/html",
            b"text/html;q=0.5, */*",
            b"text/html;q=0",
            b"text/html;q=abc",
            b"text/plain, text/html;q=0.9",
        ] {
            assert!(!prefers_html(not), "{}", String::from_utf8_lossy(not));
        }
        assert!(prefers_html(b"text/html;q=0.9, application/json;q=0.5"));
    }

    #[test]
    fn percentages_round_half_up_in_integers() {
        assert_eq!(percent(49, 400), "12.3 %");
        assert_eq!(percent(1, 3), "33.3 %");
        assert_eq!(percent(2, 3), "66.7 %");
        assert_eq!(percent(0, 0), "–");
        assert_eq!(percent(5, 5), "100.0 %");
    }

    fn store() -> Store {
        Store::open(&StoreConfig {
            backing: Backing::Anonymous,
            size: 4 << 20,
            max_object: 0,
        })
        .unwrap()
    }

    fn meta(ct: &str, headers: &[(&str, &str)]) -> Vec<u8> {
        StoredMeta {
            status: 200,
            stored_at: 1000,
            expires_at: 5000,
            last_modified: -1,
            content_type: ct.as_bytes().to_vec(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            ..StoredMeta::default()
        }
        .encode()
        .unwrap()
    }

    fn put(s: &Store, path: &str, d: Descriptor, m: &[u8], body: &[u8]) {
        let url = crate::store::UrlId {
            scheme: "http",
            host: "localhost",
            path,
        };
        let scopes = s.buckets().scopes_for(&url, &[]);
        let key = default_key("http", b"localhost", 8080, path.as_bytes());
        let alt = Alternate {
            descriptor: d.0,
            scopes: &scopes,
            meta: m,
            body,
        };
        s.commit(s.begin_fill(), &key, &alt);
    }

    fn page_for(s: &Store, url: &str, token_required: bool) -> String {
        let lookup = entries(s, url, "localhost", 8080);
        render(&Page {
            stats: &s.stats(),
            max_object: s.max_object(),
            host: "localhost",
            pid: 1,
            nonce: "n0nce",
            purge_location: "/purge",
            token_required,
            url: Some(url),
            lookup: Some(&lookup),
            now: 1060,
        })
    }

    #[test]
    fn every_counter_is_on_the_page_and_every_slot_is_filled() {
        let s = store();
        let html = page_for(&s, "/x", false);
        assert!(!html.contains("{{"), "an unfilled slot");
        for Metric { name, value: v, .. } in s.stats().fields() {
            assert!(
                html.contains(&format!("data-counter=\"{name}\">{v}<")),
                "{name} missing"
            );
        }
        assert!(html.contains(&format!("data-counter=\"max_object\">{}<", s.max_object())));
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains("<script nonce=\"n0nce\">"));
    }

    #[test]
    fn alternates_show_type_size_saving_and_the_client_classes_they_serve() {
        let s = store();
        let png = meta("image/png", &[("ETag", "\"p\"")]);
        let webp = meta("image/webp", &[("ETag", "\"p-webp\"")]);
        let avif = meta("image/avif", &[]);
        let original = Descriptor::original(Encoding::Identity, None);
        let w = Descriptor::variant(
            Format::Webp,
            Viewport::Original,
            Density::X1,
            false,
            Encoding::Identity,
        );
        let a480 = Descriptor::variant(
            Format::Avif,
            Viewport::W480,
            Density::X2,
            false,
            Encoding::Identity,
        );
        put(&s, "/p.png", original, &png, &[0; 1000]);
        put(&s, "/p.png", w, &webp, &[0; 400]);
        put(&s, "/p.png", a480, &avif, &[0; 100]);
        let html = page_for(&s, "/p.png", false);
        assert!(html.contains("data-variant=\"webp\""));
        assert!(html.contains("-60.0 %"), "webp saving");
        assert!(html.contains("-90.0 %"), "avif saving");
        assert!(html.contains("<td class=\"num\">60 s</td>"), "age");
        let row = |v: &str| {
            let i = html.find(&format!("data-variant=\"{v}\"")).unwrap();
            &html[i..i + html[i..].find("</tr>").unwrap()]
        };
        assert!(row("webp").contains("Chrome, desktop"));
        assert!(
            row("webp").contains("Safari, iPad"),
            "no 768 px variant stored"
        );
        assert!(row("avif-480-2x").contains("Chrome, phone (412 px, DPR 2.6)"));
        assert!(row("original").contains("curl"));
        assert!(row("original").contains("image/png"));
        assert!(
            row("webp")
                .contains("src=\"?url=http://localhost:8080/p.png&amp;alternate=0x00000010\""),
            "{}",
            row("webp")
        );
        let guarded = page_for(&s, "/p.png", true);
        assert!(guarded.contains("data-src=\"?url="));
        assert!(!guarded.contains(" src=\"?url="));
    }

    #[test]
    fn urls_and_header_values_are_escaped() {
        let s = store();
        let evil = "<script>alert(\"x\")</script>'";
        let path = format!("/esc?q={evil}");
        let m = meta("text/html\"><script>", &[("Cache-Tag", evil)]);
        put(
            &s,
            &path,
            Descriptor::original(Encoding::Identity, None),
            &m,
            b"x",
        );
        let html = page_for(&s, &path, false);
        assert_eq!(
            html.matches("<script").count(),
            1,
            "only the page's own script"
        );
        assert!(!html.contains("alert(\"x\")"));
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;"));
        assert!(html.contains("value=\"/esc?q=&lt;script&gt;"));
        let err = render_lookup(&Err(format!("\"{evil}\": bad")), 0, false);
        assert!(!err.contains("<script>"));
    }
}
