//! Configuration: the http-level and location structures, their merging, the directive
//! handlers, and the errors `nginx -t` prints (every one names its directive).

use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::ptr::null_mut;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_flag_t, ngx_http_complex_value_t, ngx_http_core_loc_conf_t,
    ngx_msec_t, ngx_str_t, time_t, NGX_CONF_UNSET, NGX_LOG_EMERG,
};
use ngx::http::{HttpModuleLocationConf, Merge, MergeConfigError, NgxHttpCoreModule};
use ngx::ngx_conf_log_error;

use super::admin;
use super::ffi::bytes;
use super::log::guard;
use ngx_http_pagespeed_module::cache::stale::UseStale;
use ngx_http_pagespeed_module::fleet::Config as FleetConfig;
use ngx_http_pagespeed_module::http::cache_control::Statuses;
use ngx_http_pagespeed_module::http::csrf::Origin;
use ngx_http_pagespeed_module::store::{MAX_SEGMENT, MIN_SEGMENT};
use ngx_http_pagespeed_module::variant::{VariantPolicy, VaryValues};

/// Default segment when no `pagespeed_cache_path` is given.
pub const DEFAULT_SIZE: u64 = 64 << 20;
/// How long a request waits for another's fill before going to the origin itself.
const DEFAULT_LOCK_TIMEOUT: ngx_msec_t = 5000;
const NGX_CONF_UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;
pub const DEFAULT_BUILD_THREADS: usize = 1;
pub const DEFAULT_BUILD_QUEUE: usize = 256;
/// `pagespeed_build_threads` accepts 1 to this.
const MAX_BUILD_THREADS: usize = 64;
/// `pagespeed_build_queue` accepts 1 to this.
const MAX_BUILD_QUEUE: usize = 1 << 20;

/// A configuration mistake; its text follows `[emerg]` in `nginx -t`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    #[error("\"{0}\" directive is duplicate")]
    Duplicate(&'static str),
    /// `invalid <what> "<value>" in "<directive>" (<expected>)`.
    #[error("invalid {what} \"{value}\" in \"{directive}\" ({expected})")]
    Invalid {
        what: &'static str,
        value: String,
        directive: &'static str,
        expected: &'static str,
    },
    #[error("\"pagespeed_cache_path\" needs an absolute file path or \"off\", not \"{0}\"")]
    NotAbsolute(String),
    #[error("\"{0}\" cannot be used here")]
    NoLocation(&'static str),
    #[error("invalid \"pagespeed_fleet\": {0}")]
    Fleet(String),
}

fn invalid(
    what: &'static str,
    value: &[u8],
    directive: &'static str,
    expected: &'static str,
) -> ConfError {
    ConfError::Invalid {
        what,
        value: String::from_utf8_lossy(value).into_owned(),
        directive,
        expected,
    }
}

/// `pagespeed_cache_path` and the builder pool (http level).
#[derive(Debug)]
pub struct MainConf {
    pub path: Option<PathBuf>,
    pub size: u64,
    pub max_object: u64,
    pub set: bool,
    /// `pagespeed_build_threads`, `pagespeed_build_queue`.
    pub build_threads: Option<usize>,
    pub build_queue: Option<usize>,
    /// `pagespeed_fleet`.
    pub fleet: Option<FleetConfig>,
}

impl Default for MainConf {
    fn default() -> MainConf {
        MainConf {
            path: None,
            size: DEFAULT_SIZE,
            max_object: 0,
            set: false,
            build_threads: None,
            build_queue: None,
            fleet: None,
        }
    }
}

impl MainConf {
    pub fn build_threads(&self) -> usize {
        self.build_threads.unwrap_or(DEFAULT_BUILD_THREADS)
    }

    pub fn build_queue(&self) -> usize {
        self.build_queue.unwrap_or(DEFAULT_BUILD_QUEUE)
    }
}

/// Set when any location enables variants: workers then start builder threads.
pub static VARIANTS_CONFIGURED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub struct LocConf {
    pub cache: ngx_flag_t,
    pub valid: time_t,
    pub max_object: usize,
    pub key: *mut ngx_http_complex_value_t,
    pub purge_method: ngx_str_t,
    pub purge_token: ngx_str_t,
    pub statuses: Option<Vec<u16>>,
    /// `pagespeed_variants`: which variants this location builds and serves.
    pub variants: Option<VariantPolicy>,
    /// The `Vary` values of `variants`, computed once at merge.
    pub vary: VaryValues,
    /// `pagespeed_build_on_fill`: build the full-size variants as soon as an original is stored.
    pub build_on_fill: ngx_flag_t,
    /// `pagespeed_purge_allow_origin`: pages of these origins may use the purge API.
    pub purge_allow_origin: Option<Vec<Origin>>,
    /// `pagespeed_status purge=URI`: where the console's purge form posts.
    pub console_purge: Option<String>,
    /// `pagespeed_cache_revalidate`: refill stale entries conditionally, keeping variants.
    pub revalidate: ngx_flag_t,
    /// `pagespeed_cache_lock`, `pagespeed_cache_lock_timeout` (milliseconds).
    pub lock: ngx_flag_t,
    pub lock_timeout: ngx_msec_t,
    /// `pagespeed_cache_use_stale`.
    pub use_stale: Option<UseStale>,
}

impl Default for LocConf {
    fn default() -> LocConf {
        LocConf {
            cache: NGX_CONF_UNSET as ngx_flag_t,
            valid: NGX_CONF_UNSET as time_t,
            max_object: usize::MAX,
            key: null_mut(),
            purge_method: ngx_str_t::empty(),
            purge_token: ngx_str_t::empty(),
            statuses: None,
            variants: None,
            vary: VaryValues::default(),
            build_on_fill: NGX_CONF_UNSET as ngx_flag_t,
            purge_allow_origin: None,
            console_purge: None,
            revalidate: NGX_CONF_UNSET as ngx_flag_t,
            lock: NGX_CONF_UNSET as ngx_flag_t,
            lock_timeout: NGX_CONF_UNSET_MSEC,
            use_stale: None,
        }
    }
}

impl LocConf {
    /// `pagespeed_cache_statuses`, or every status the RFC lets a cache store.
    pub fn statuses(&self) -> Statuses<'_> {
        match self.statuses.as_deref() {
            Some(l) => Statuses::Listed(l),
            None => Statuses::Default,
        }
    }

    pub fn variants(&self) -> VariantPolicy {
        self.variants.unwrap_or_default()
    }

    pub fn purge_method(&self) -> &[u8] {
        bytes(&self.purge_method)
    }

    pub fn purge_token(&self) -> &[u8] {
        bytes(&self.purge_token)
    }

    pub fn purge_allow_origin(&self) -> &[Origin] {
        self.purge_allow_origin.as_deref().unwrap_or_default()
    }

    pub fn use_stale(&self) -> UseStale {
        self.use_stale.unwrap_or_default()
    }
}

fn inherit<T: PartialEq + Copy>(v: &mut T, prev: T, unset: T, default: T) {
    if *v == unset {
        *v = if prev == unset { default } else { prev };
    }
}

impl Merge for LocConf {
    fn merge(&mut self, prev: &LocConf) -> Result<(), MergeConfigError> {
        let unset_flag = NGX_CONF_UNSET as ngx_flag_t;
        inherit(&mut self.cache, prev.cache, unset_flag, 0);
        // Unset stays unset: responses without explicit freshness then get heuristic
        // freshness only (RFC 9111 4.2.2).
        if self.valid == NGX_CONF_UNSET as time_t {
            self.valid = prev.valid;
        }
        inherit(&mut self.build_on_fill, prev.build_on_fill, unset_flag, 1);
        inherit(&mut self.revalidate, prev.revalidate, unset_flag, 1);
        inherit(&mut self.lock, prev.lock, unset_flag, 1);
        inherit(
            &mut self.lock_timeout,
            prev.lock_timeout,
            NGX_CONF_UNSET_MSEC,
            DEFAULT_LOCK_TIMEOUT,
        );
        if self.use_stale.is_none() {
            self.use_stale = prev.use_stale;
        }
        if self.max_object == usize::MAX {
            self.max_object = prev.max_object;
        }
        if self.key.is_null() {
            self.key = prev.key;
        }
        if self.purge_method.data.is_null() {
            self.purge_method = prev.purge_method;
        }
        if self.purge_token.data.is_null() {
            self.purge_token = prev.purge_token;
        }
        if self.statuses.is_none() {
            self.statuses = prev.statuses.clone();
        }
        if self.variants.is_none() {
            self.variants = prev.variants;
        }
        if self.purge_allow_origin.is_none() {
            self.purge_allow_origin = prev.purge_allow_origin.clone();
        }
        self.vary = VaryValues::new(&self.variants());
        Ok(())
    }
}

pub const CONF_OK: *mut c_char = null_mut();
pub const CONF_ERROR: *mut c_char = usize::MAX as *mut c_char;

/// Runs a directive's handler with its arguments (args[0] is the directive's name): a
/// `ConfError` becomes an `[emerg]` naming the file and line, a panic a refused configuration.
///
/// # Safety
/// `cf` must be the configuration being parsed, in a directive handler.
unsafe fn directive(
    cf: *mut ngx_conf_t,
    f: impl FnOnce(&[&[u8]]) -> Result<(), ConfError>,
) -> *mut c_char {
    // SAFETY: during a directive handler cf->args is an array of ngx_str_t.
    let args: Vec<&[u8]> = unsafe {
        let a = &*(*cf).args;
        std::slice::from_raw_parts(a.elts as *const ngx_str_t, a.nelts)
            .iter()
            .map(bytes)
            .collect()
    };
    guard("a directive handler", CONF_ERROR, || match f(&args) {
        Ok(()) => CONF_OK,
        Err(e) => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{e}");
            CONF_ERROR
        }
    })
}

/// Parses "64m", "1g", "512k", "1048576".
fn parse_size(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn cache_path(mc: &mut MainConf, a: &[&[u8]]) -> Result<(), ConfError> {
    if mc.set {
        return Err(ConfError::Duplicate("pagespeed_cache_path"));
    }
    mc.set = true;
    mc.path = match a[1] {
        b"off" => None,
        p if p.starts_with(b"/") => Some(PathBuf::from(String::from_utf8_lossy(p).into_owned())),
        p => {
            return Err(ConfError::NotAbsolute(
                String::from_utf8_lossy(p).into_owned(),
            ))
        }
    };
    for arg in &a[2..] {
        let (name, value) = match arg.iter().position(|&c| c == b'=') {
            Some(i) => (&arg[..i], &arg[i + 1..]),
            None => (&arg[..], &b""[..]),
        };
        match (name, parse_size(value)) {
            (b"size", Some(v)) if (MIN_SEGMENT..=MAX_SEGMENT).contains(&v) => mc.size = v,
            (b"max_object", Some(v)) if v > 0 => mc.max_object = v,
            _ => {
                return Err(invalid(
                    "parameter",
                    arg,
                    "pagespeed_cache_path",
                    "expected size=1m..1024g, max_object=N",
                ))
            }
        }
    }
    Ok(())
}

fn fleet(mc: &mut MainConf, a: &[&[u8]]) -> Result<(), ConfError> {
    if mc.fleet.is_some() {
        return Err(ConfError::Duplicate("pagespeed_fleet"));
    }
    let args: Vec<&str> = a[1..]
        .iter()
        .map(|b| std::str::from_utf8(b).map_err(|_| ConfError::Fleet("not UTF-8".into())))
        .collect::<Result<_, _>>()?;
    mc.fleet =
        Some(ngx_http_pagespeed_module::fleet::config::parse(&args).map_err(ConfError::Fleet)?);
    Ok(())
}

fn statuses(lc: &mut LocConf, a: &[&[u8]]) -> Result<(), ConfError> {
    if lc.statuses.is_some() {
        return Err(ConfError::Duplicate("pagespeed_cache_statuses"));
    }
    let mut out = Vec::new();
    for v in &a[1..] {
        match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
        {
            Some(s) if (200..600).contains(&s) && s != 206 && s != 304 => out.push(s),
            _ => {
                return Err(invalid(
                    "status",
                    v,
                    "pagespeed_cache_statuses",
                    "200..599, not 206 or 304",
                ))
            }
        }
    }
    lc.statuses = Some(out);
    Ok(())
}

fn variants(lc: &mut LocConf, a: &[&[u8]]) -> Result<(), ConfError> {
    if lc.variants.is_some() {
        return Err(ConfError::Duplicate("pagespeed_variants"));
    }
    let mut p = VariantPolicy::default();
    if !(a.len() == 2 && a[1] == b"off") {
        for v in &a[1..] {
            let flag = match *v {
                b"webp" => &mut p.webp,
                b"avif" => &mut p.avif,
                b"resize" => &mut p.resize,
                b"save-data" => &mut p.save_data,
                b"gzip" => &mut p.gzip,
                b"br" => &mut p.br,
                _ => {
                    return Err(invalid(
                        "value",
                        v,
                        "pagespeed_variants",
                        "webp, avif, resize, save-data, gzip, br, or off",
                    ))
                }
            };
            *flag = true;
        }
        VARIANTS_CONFIGURED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    lc.variants = Some(p);
    Ok(())
}

fn use_stale(lc: &mut LocConf, a: &[&[u8]]) -> Result<(), ConfError> {
    if lc.use_stale.is_some() {
        return Err(ConfError::Duplicate("pagespeed_cache_use_stale"));
    }
    let u = UseStale::parse(a[1..].iter().copied()).map_err(|v| {
        invalid(
            "value",
            v,
            "pagespeed_cache_use_stale",
            "updating, error, timeout, http_500, http_502, http_503, http_504, or off",
        )
    })?;
    lc.use_stale = Some(u);
    Ok(())
}

fn purge_allow_origin(lc: &mut LocConf, a: &[&[u8]]) -> Result<(), ConfError> {
    if lc.purge_allow_origin.is_some() {
        return Err(ConfError::Duplicate("pagespeed_purge_allow_origin"));
    }
    let mut allowed = Vec::new();
    if !(a.len() == 2 && a[1] == b"off") {
        for v in &a[1..] {
            let o = Origin::parse(&String::from_utf8_lossy(v)).ok_or_else(|| {
                invalid(
                    "origin",
                    v,
                    "pagespeed_purge_allow_origin",
                    "http://host[:port] or https://host[:port], or off",
                )
            })?;
            allowed.push(o);
        }
    }
    lc.purge_allow_origin = Some(allowed);
    Ok(())
}

/// Whether `m` may be the purge method: an uppercase method nginx does not serve itself.
fn purge_method_ok(m: &[u8]) -> bool {
    let standard: &[&[u8]] = &[
        b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT",
    ];
    m == b"off"
        || (!m.is_empty()
            && m.len() <= 32
            && m.iter().all(|c| c.is_ascii_uppercase())
            && !standard.contains(&m))
}

/// A count directive (`pagespeed_build_threads`, `pagespeed_build_queue`): refused, not
/// clamped, outside 1..=max.
fn count(
    slot: &mut Option<usize>,
    a: &[&[u8]],
    directive: &'static str,
    max: usize,
    expected: &'static str,
) -> Result<(), ConfError> {
    if slot.is_some() {
        return Err(ConfError::Duplicate(directive));
    }
    let n = std::str::from_utf8(a[1])
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| invalid("value", a[1], directive, expected))?;
    *slot = Some(n);
    Ok(())
}

/// The `purge=URI` parameter of `pagespeed_status`: the path of this site's `pagespeed_purge`
/// location, which the console's form posts to. A path only, so the form stays same-origin.
fn console_purge_location(arg: &[u8]) -> Result<String, ConfError> {
    let bad = || {
        invalid(
            "parameter",
            arg,
            "pagespeed_status",
            "expected purge=/path of this site's pagespeed_purge location",
        )
    };
    let v = arg.strip_prefix(b"purge=").ok_or_else(bad)?;
    if !v.starts_with(b"/")
        || v.starts_with(b"//")
        || v.len() > 1024
        || v.iter().any(|&c| c <= b' ' || c == 0x7f || c == b'\\')
    {
        return Err(bad());
    }
    String::from_utf8(v.to_vec()).map_err(|_| bad())
}

/// Makes the location being parsed an admin location with its own content handler.
///
/// # Safety
/// `cf` must be the location being parsed.
unsafe fn admin_location(
    cf: *mut ngx_conf_t,
    directive: &'static str,
    handler: nginx_sys::ngx_http_handler_pt,
) -> Result<(), ConfError> {
    // SAFETY: the core module's location conf exists while a location is parsed.
    let clcf: Option<&mut ngx_http_core_loc_conf_t> =
        unsafe { NgxHttpCoreModule::location_conf_mut(&*cf) };
    let clcf = clcf.ok_or(ConfError::NoLocation(directive))?;
    clcf.handler = handler;
    Ok(())
}

// The handlers nginx calls. Each converts its raw arguments once and calls the parser above.

pub extern "C" fn set_cache_path(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our main conf for a NGX_HTTP_MAIN_CONF_OFFSET directive, while
    // parsing.
    unsafe { directive(cf, |a| cache_path(&mut *(conf as *mut MainConf), a)) }
}

pub extern "C" fn set_fleet(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our main conf for a NGX_HTTP_MAIN_CONF_OFFSET directive, while
    // parsing.
    unsafe { directive(cf, |a| fleet(&mut *(conf as *mut MainConf), a)) }
}

/// The builder pool's two counts, refused out of range.
///
/// # Safety
/// As `directive`; `conf` is our main conf.
unsafe fn builder_count(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    field: fn(&mut MainConf) -> &mut Option<usize>,
    name: &'static str,
    max: usize,
    expected: &'static str,
) -> *mut c_char {
    // SAFETY: as the caller promises.
    unsafe {
        directive(cf, |a| {
            count(field(&mut *(conf as *mut MainConf)), a, name, max, expected)
        })
    }
}

pub extern "C" fn set_build_threads(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our main conf, while parsing.
    unsafe {
        builder_count(
            cf,
            conf,
            |m| &mut m.build_threads,
            "pagespeed_build_threads",
            MAX_BUILD_THREADS,
            "1 to 64 threads per worker",
        )
    }
}

pub extern "C" fn set_build_queue(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our main conf, while parsing.
    unsafe {
        builder_count(
            cf,
            conf,
            |m| &mut m.build_queue,
            "pagespeed_build_queue",
            MAX_BUILD_QUEUE,
            "1 to 1048576 builds per worker",
        )
    }
}

pub extern "C" fn set_statuses(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our location conf, while parsing.
    unsafe { directive(cf, |a| statuses(&mut *(conf as *mut LocConf), a)) }
}

pub extern "C" fn set_variants(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: as set_statuses.
    unsafe { directive(cf, |a| variants(&mut *(conf as *mut LocConf), a)) }
}

pub extern "C" fn set_use_stale(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: as set_statuses.
    unsafe { directive(cf, |a| use_stale(&mut *(conf as *mut LocConf), a)) }
}

pub extern "C" fn set_purge_allow_origin(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: as set_statuses.
    unsafe { directive(cf, |a| purge_allow_origin(&mut *(conf as *mut LocConf), a)) }
}

pub extern "C" fn set_purge_method(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: as set_statuses; cf->args lives as long as the configuration pool, so the
    // method's string may be kept.
    unsafe {
        let s = *((*(*cf).args).elts as *mut ngx_str_t).add(1);
        directive(cf, |a| {
            if !purge_method_ok(a[1]) {
                return Err(invalid(
                    "method",
                    a[1],
                    "pagespeed_purge_method",
                    "an uppercase non-standard method such as PURGE, or off",
                ));
            }
            // "off" is kept as a non-null empty string so that it overrides an inherited one.
            (*(conf as *mut LocConf)).purge_method = if a[1] == b"off" {
                ngx_str_t {
                    len: 0,
                    data: s.data,
                }
            } else {
                s
            };
            Ok(())
        })
    }
}

pub extern "C" fn set_purge_location(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: called while a location is parsed.
    unsafe {
        directive(cf, |_| {
            admin_location(cf, "pagespeed_purge", Some(admin::purge_handler))
        })
    }
}

pub extern "C" fn set_status_location(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our location conf, while a location is parsed.
    unsafe {
        directive(cf, |a| {
            if let Some(p) = a.get(1) {
                (*(conf as *mut LocConf)).console_purge = Some(console_purge_location(p)?);
            }
            admin_location(cf, "pagespeed_status", Some(admin::status_handler))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size(b"64m"), Some(64 << 20));
        assert_eq!(parse_size(b"1G"), Some(1 << 30));
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"m"), None);
        assert_eq!(parse_size(b"99999999999999999g"), None);
    }

    #[test]
    fn counts_out_of_range_are_refused_not_clamped() {
        let mut slot = None;
        let e = count(
            &mut slot,
            &[b"d", b"0"],
            "pagespeed_build_threads",
            64,
            "1 to 64",
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "invalid value \"0\" in \"pagespeed_build_threads\" (1 to 64)"
        );
        assert!(count(&mut slot, &[b"d", b"65"], "x", 64, "").is_err());
        assert!(count(&mut slot, &[b"d", b"-1"], "x", 64, "").is_err());
        count(&mut slot, &[b"d", b"64"], "x", 64, "").unwrap();
        assert_eq!(slot, Some(64));
        assert_eq!(
            count(&mut slot, &[b"d", b"2"], "x", 64, ""),
            Err(ConfError::Duplicate("x"))
        );
    }

    #[test]
    fn purge_methods_are_uppercase_and_not_nginx_own() {
        for ok in [&b"PURGE"[..], b"BAN", b"off"] {
            assert!(purge_method_ok(ok));
        }
        for bad in [&b"GET"[..], b"purge", b"", b"PUT"] {
            assert!(!purge_method_ok(bad));
        }
    }

    #[test]
    fn the_console_purge_parameter_is_a_same_site_path() {
        assert_eq!(
            console_purge_location(b"purge=/pagespeed_admin/purge").unwrap(),
            "/pagespeed_admin/purge"
        );
        for bad in [
            &b"purge=https://evil.example/x"[..],
            b"purge=//evil.example/x",
            b"purge=",
            b"purge=/a b",
            b"purge=/a\\b",
            b"purge=relative",
            b"/path",
        ] {
            let e = console_purge_location(bad).unwrap_err().to_string();
            assert!(e.contains("\"pagespeed_status\""), "{e}");
        }
    }
}
