//! Directives, configuration structures and merging, and the store's lifecycle across
//! configuration loads.

use std::ffi::{c_char, c_void, CStr};
use std::path::PathBuf;
use std::ptr::{self, null_mut};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use nginx_sys::{
    ngx_command_t, ngx_conf_set_flag_slot, ngx_conf_set_num_slot, ngx_conf_set_sec_slot,
    ngx_conf_set_size_slot, ngx_conf_set_str_slot, ngx_conf_t, ngx_flag_t,
    ngx_http_complex_value_t, ngx_http_core_loc_conf_t, ngx_http_set_complex_value_slot, ngx_int_t,
    ngx_str_t, ngx_uint_t, time_t, NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1,
    NGX_CONF_TAKE123, NGX_CONF_UNSET, NGX_ERROR, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF, NGX_LOG_EMERG,
    NGX_LOG_NOTICE, NGX_OK, NGX_PROCESS_SIGNALLER,
};
use ngx::http::{
    HttpModuleLocationConf, HttpModuleMainConf, Merge, MergeConfigError, NgxHttpCoreModule,
};
use ngx::ngx_conf_log_error;

use super::{admin, console, Module};
use ngx_http_pagespeed_module::http::csrf::Origin;
use ngx_http_pagespeed_module::store::{Backing, Opened, Store, StoreConfig};
use ngx_http_pagespeed_module::variant::VariantPolicy;

/// Default segment when no `pagespeed_cache_path` is given.
const DEFAULT_SIZE: u64 = 64 << 20;
/// Lifetime of responses without freshness information.
const DEFAULT_VALID: time_t = 600;

/// `pagespeed_cache_path` and the builder pool (http level).
#[derive(Debug)]
pub struct MainConf {
    pub path: Option<PathBuf>,
    pub size: u64,
    pub max_object: u64,
    pub set: bool,
    /// `pagespeed_build_threads`, `pagespeed_build_queue`.
    pub build_threads: ngx_uint_t,
    pub build_queue: ngx_uint_t,
}

impl Default for MainConf {
    fn default() -> MainConf {
        MainConf {
            path: None,
            size: 0,
            max_object: 0,
            set: false,
            build_threads: NGX_CONF_UNSET_UINT,
            build_queue: NGX_CONF_UNSET_UINT,
        }
    }
}

const NGX_CONF_UNSET_UINT: ngx_uint_t = ngx_uint_t::MAX;
pub const DEFAULT_BUILD_THREADS: ngx_uint_t = 1;
pub const DEFAULT_BUILD_QUEUE: ngx_uint_t = 256;

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
    /// `pagespeed_build_on_fill`: build the full-size variants as soon as an original is stored.
    pub build_on_fill: ngx_flag_t,
    /// `pagespeed_purge_allow_origin`: pages of these origins may use the purge API.
    pub purge_allow_origin: Option<Vec<Origin>>,
    /// `pagespeed_status purge=URI`: where the console's purge form posts.
    pub console_purge: Option<String>,
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
            build_on_fill: NGX_CONF_UNSET as ngx_flag_t,
            purge_allow_origin: None,
            console_purge: None,
        }
    }
}

impl LocConf {
    pub fn statuses(&self) -> &[u16] {
        self.statuses.as_deref().unwrap_or(&[200])
    }

    pub fn variants(&self) -> VariantPolicy {
        self.variants.unwrap_or_default()
    }

    pub fn purge_method(&self) -> &[u8] {
        str_bytes(&self.purge_method)
    }

    pub fn purge_token(&self) -> &[u8] {
        str_bytes(&self.purge_token)
    }

    pub fn purge_allow_origin(&self) -> &[Origin] {
        self.purge_allow_origin.as_deref().unwrap_or_default()
    }
}

pub fn str_bytes(s: &ngx_str_t) -> &[u8] {
    if s.data.is_null() || s.len == 0 {
        &[]
    } else {
        // SAFETY: a configuration string lives as long as the configuration.
        unsafe { std::slice::from_raw_parts(s.data, s.len) }
    }
}

impl Merge for LocConf {
    fn merge(&mut self, prev: &LocConf) -> Result<(), MergeConfigError> {
        if self.cache == NGX_CONF_UNSET as ngx_flag_t {
            self.cache = if prev.cache == NGX_CONF_UNSET as ngx_flag_t {
                0
            } else {
                prev.cache
            };
        }
        if self.valid == NGX_CONF_UNSET as time_t {
            self.valid = if prev.valid == NGX_CONF_UNSET as time_t {
                DEFAULT_VALID
            } else {
                prev.valid
            };
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
        if self.build_on_fill == NGX_CONF_UNSET as ngx_flag_t {
            self.build_on_fill = if prev.build_on_fill == NGX_CONF_UNSET as ngx_flag_t {
                1
            } else {
                prev.build_on_fill
            };
        }
        Ok(())
    }
}

const fn ngx_string(s: &'static CStr) -> ngx_str_t {
    ngx_str_t {
        len: s.count_bytes(),
        data: s.as_ptr() as *mut u8,
    }
}

const LOC: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

pub static mut NGX_HTTP_PAGESPEED_COMMANDS: [ngx_command_t; 16] = [
    ngx_command_t {
        name: ngx_string(c"pagespeed_cache_path"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE123) as ngx_uint_t,
        set: Some(set_cache_path),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_cache"),
        type_: (LOC | NGX_CONF_FLAG) as ngx_uint_t,
        set: Some(ngx_conf_set_flag_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: std::mem::offset_of!(LocConf, cache),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_cache_key"),
        type_: (LOC | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_http_set_complex_value_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: std::mem::offset_of!(LocConf, key),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_cache_valid"),
        type_: (LOC | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_sec_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: std::mem::offset_of!(LocConf, valid),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_cache_max_object_size"),
        type_: (LOC | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_size_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: std::mem::offset_of!(LocConf, max_object),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_cache_statuses"),
        type_: (LOC | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(set_statuses),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_purge_method"),
        type_: (LOC | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_purge_method),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: std::mem::offset_of!(LocConf, purge_method),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_purge_token"),
        type_: (LOC | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_str_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: std::mem::offset_of!(LocConf, purge_token),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_purge_allow_origin"),
        type_: (LOC | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(set_purge_allow_origin),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_variants"),
        type_: (LOC | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(set_variants),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_build_on_fill"),
        type_: (LOC | NGX_CONF_FLAG) as ngx_uint_t,
        set: Some(ngx_conf_set_flag_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: std::mem::offset_of!(LocConf, build_on_fill),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_build_threads"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_num_slot),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: std::mem::offset_of!(MainConf, build_threads),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_build_queue"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_conf_set_num_slot),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: std::mem::offset_of!(MainConf, build_queue),
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_purge"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_purge_location),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string(c"pagespeed_status"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_status_location),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

const CONF_OK: *mut c_char = null_mut();
const CONF_ERROR: *mut c_char = usize::MAX as *mut c_char;

/// The directive's arguments as byte slices (args[0] is the directive name).
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn args<'a>(cf: *mut ngx_conf_t) -> Vec<&'a [u8]> {
    // SAFETY: during a directive handler cf->args is an array of ngx_str_t.
    unsafe {
        let a = &*(*cf).args;
        let elts = std::slice::from_raw_parts(a.elts as *const ngx_str_t, a.nelts);
        elts.iter()
            .map(|s| std::slice::from_raw_parts(s.data as *const u8, s.len))
            .collect()
    }
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

extern "C" fn set_cache_path(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our main conf for a NGX_HTTP_MAIN_CONF_OFFSET directive.
    let mc = unsafe { &mut *(conf as *mut MainConf) };
    if mc.set {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"pagespeed_cache_path\" directive is duplicate"
        );
        return CONF_ERROR;
    }
    // SAFETY: called while parsing.
    let a = unsafe { args(cf) };
    mc.set = true;
    mc.size = DEFAULT_SIZE;
    mc.path = match a[1] {
        b"off" => None,
        p if p.starts_with(b"/") => Some(PathBuf::from(String::from_utf8_lossy(p).into_owned())),
        p => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "\"pagespeed_cache_path\" needs an absolute file path or \"off\", not \"{}\"",
                String::from_utf8_lossy(p)
            );
            return CONF_ERROR;
        }
    };
    for arg in &a[2..] {
        let (name, value) = match arg.iter().position(|&c| c == b'=') {
            Some(i) => (&arg[..i], &arg[i + 1..]),
            None => (&arg[..], &b""[..]),
        };
        let parsed = parse_size(value);
        match (name, parsed) {
            (b"size", Some(v)) if (1 << 20..=1 << 40).contains(&v) => mc.size = v,
            (b"max_object", Some(v)) if v > 0 => mc.max_object = v,
            _ => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "invalid parameter \"{}\" in \"pagespeed_cache_path\" (expected size=1m..1024g, max_object=N)",
                    String::from_utf8_lossy(arg)
                );
                return CONF_ERROR;
            }
        }
    }
    CONF_OK
}

extern "C" fn set_statuses(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our location conf.
    let lc = unsafe { &mut *(conf as *mut LocConf) };
    if lc.statuses.is_some() {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"pagespeed_cache_statuses\" directive is duplicate"
        );
        return CONF_ERROR;
    }
    let mut out = Vec::new();
    // SAFETY: called while parsing.
    for a in unsafe { args(cf) }.into_iter().skip(1) {
        match std::str::from_utf8(a)
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
        {
            Some(s) if (200..600).contains(&s) && s != 206 && s != 304 => out.push(s),
            _ => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "invalid status \"{}\" in \"pagespeed_cache_statuses\" (200..599, not 206 or 304)",
                    String::from_utf8_lossy(a)
                );
                return CONF_ERROR;
            }
        }
    }
    lc.statuses = Some(out);
    CONF_OK
}

extern "C" fn set_variants(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our location conf.
    let lc = unsafe { &mut *(conf as *mut LocConf) };
    if lc.variants.is_some() {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"pagespeed_variants\" directive is duplicate"
        );
        return CONF_ERROR;
    }
    let mut p = VariantPolicy::default();
    // SAFETY: called while parsing.
    let a = unsafe { args(cf) };
    if a.len() == 2 && a[1] == b"off" {
        lc.variants = Some(p);
        return CONF_OK;
    }
    for v in &a[1..] {
        let flag = match *v {
            b"webp" => &mut p.webp,
            b"avif" => &mut p.avif,
            b"resize" => &mut p.resize,
            b"save-data" => &mut p.save_data,
            b"gzip" => &mut p.gzip,
            b"br" => &mut p.br,
            _ => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "invalid value \"{}\" in \"pagespeed_variants\" (webp, avif, resize, save-data, gzip, br, or off)",
                    String::from_utf8_lossy(v)
                );
                return CONF_ERROR;
            }
        };
        *flag = true;
    }
    VARIANTS_CONFIGURED.store(true, std::sync::atomic::Ordering::Relaxed);
    lc.variants = Some(p);
    CONF_OK
}

extern "C" fn set_purge_allow_origin(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our location conf.
    let lc = unsafe { &mut *(conf as *mut LocConf) };
    if lc.purge_allow_origin.is_some() {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"pagespeed_purge_allow_origin\" directive is duplicate"
        );
        return CONF_ERROR;
    }
    // SAFETY: called while parsing.
    let a = unsafe { args(cf) };
    let mut allowed = Vec::new();
    if !(a.len() == 2 && a[1] == b"off") {
        for v in &a[1..] {
            match Origin::parse(&String::from_utf8_lossy(v)) {
                Some(o) => allowed.push(o),
                None => {
                    ngx_conf_log_error!(
                        NGX_LOG_EMERG,
                        cf,
                        "invalid origin \"{}\" in \"pagespeed_purge_allow_origin\" (http://host[:port] or https://host[:port], or off)",
                        String::from_utf8_lossy(v)
                    );
                    return CONF_ERROR;
                }
            }
        }
    }
    lc.purge_allow_origin = Some(allowed);
    CONF_OK
}

extern "C" fn set_purge_method(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our location conf.
    let lc = unsafe { &mut *(conf as *mut LocConf) };
    // SAFETY: called while parsing.
    let a = unsafe { args(cf) };
    let m = a[1];
    let standard: &[&[u8]] = &[
        b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT",
    ];
    if m != b"off"
        && (m.is_empty()
            || m.len() > 32
            || !m.iter().all(|c| c.is_ascii_uppercase())
            || standard.contains(&m))
    {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid method \"{}\" in \"pagespeed_purge_method\" (an uppercase non-standard method such as PURGE, or off)",
            String::from_utf8_lossy(m)
        );
        return CONF_ERROR;
    }
    // SAFETY: cf->args lives as long as the configuration pool.
    let s = unsafe { *((*(*cf).args).elts as *mut ngx_str_t).add(1) };
    // "off" is stored as a non-null empty string so that it overrides an inherited method.
    lc.purge_method = if m == b"off" {
        ngx_str_t {
            len: 0,
            data: s.data,
        }
    } else {
        s
    };
    CONF_OK
}

fn set_admin_handler(cf: *mut ngx_conf_t, handler: nginx_sys::ngx_http_handler_pt) -> *mut c_char {
    // SAFETY: cf is the location being parsed; the core module's location conf exists.
    let clcf = unsafe { NgxHttpCoreModule::location_conf_mut(&*cf) };
    let Some(clcf) = clcf else { return CONF_ERROR };
    let clcf: &mut ngx_http_core_loc_conf_t = clcf;
    clcf.handler = handler;
    CONF_OK
}

extern "C" fn set_purge_location(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    set_admin_handler(cf, Some(admin::purge_handler))
}

extern "C" fn set_status_location(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our location conf; called while parsing.
    let (lc, a) = unsafe { (&mut *(conf as *mut LocConf), args(cf)) };
    if let Some(p) = a.get(1) {
        match console::purge_location_param(p) {
            Ok(uri) => lc.console_purge = Some(uri),
            Err(e) => {
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{e}");
                return CONF_ERROR;
            }
        }
    }
    set_admin_handler(cf, Some(admin::status_handler))
}

/// The store every worker uses. Set in the master by `commit_store` and inherited through
/// fork; workers only read it.
static STORE: AtomicPtr<Store> = AtomicPtr::new(null_mut());

/// What the configuration being loaded opened, with the parameters it was opened for.
struct Prepared {
    key: (Option<PathBuf>, u64, u64),
    store: Option<Box<Store>>,
}

static PENDING: Mutex<Option<Prepared>> = Mutex::new(None);
static CURRENT_KEY: Mutex<Option<(Option<PathBuf>, u64, u64)>> = Mutex::new(None);

/// The current store, if the configuration has one.
pub fn store() -> Option<&'static Store> {
    let p = STORE.load(Ordering::Acquire);
    // SAFETY: a published store is never freed while a worker can see it: the master replaces
    // it only between configurations, and workers inherited their pointer at fork.
    unsafe { p.as_ref() }
}

/// Opens (or keeps) the store for the configuration being parsed. Failing here rejects the
/// configuration cleanly (`nginx -t`, or a reload that keeps the old one).
pub unsafe fn prepare_store(cf: *mut ngx_conf_t) -> ngx_int_t {
    // `nginx -s reload` parses the configuration in the signalling process too.
    // SAFETY: reading a process-global set before configuration parsing.
    if unsafe { nginx_sys::ngx_process } == NGX_PROCESS_SIGNALLER as ngx_uint_t {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: cf is the http configuration being parsed.
    let Some(mc) = (unsafe { Module::main_conf(&*cf) }) else {
        return NGX_OK as ngx_int_t;
    };
    let (path, size) = if mc.set {
        (mc.path.clone(), mc.size)
    } else {
        (None, DEFAULT_SIZE)
    };
    let key = (path.clone(), size, mc.max_object);
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if CURRENT_KEY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        == Some(&key)
    {
        *pending = Some(Prepared { key, store: None });
        return NGX_OK as ngx_int_t;
    }
    let backing = match &path {
        Some(p) => Backing::File(p.clone()),
        None => Backing::Anonymous,
    };
    match Store::open(&StoreConfig {
        backing,
        size,
        max_object: mc.max_object,
    }) {
        Ok(store) => {
            let what = path
                .as_ref()
                .map_or("anonymous memory".to_string(), |p| p.display().to_string());
            match store.opened() {
                Opened::Reinitialized(reason) => {
                    ngx_conf_log_error!(
                        NGX_LOG_NOTICE,
                        cf,
                        "pagespeed cache {what} was reinitialized: {reason}"
                    );
                }
                Opened::Created | Opened::Reopened | Opened::Attached => {}
            }
            if let Some(p) = &path {
                chown_to_workers(cf, p);
            }
            *pending = Some(Prepared {
                key,
                store: Some(Box::new(store)),
            });
            NGX_OK as ngx_int_t
        }
        Err(e) => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"pagespeed_cache_path\": {e}");
            NGX_ERROR as ngx_int_t
        }
    }
}

/// Workers run as the `user` directive says; the cache file the master created as root must
/// be theirs (they do not reopen it today, but an offline tool or a binary upgrade may).
fn chown_to_workers(cf: *mut ngx_conf_t, path: &std::path::Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    // SAFETY: the core module's conf is created before the http block is parsed.
    let ccf = unsafe {
        let ctx = (*(*cf).cycle).conf_ctx;
        *ctx.add(nginx_sys::ngx_core_module.index) as *const nginx_sys::ngx_core_conf_t
    };
    // SAFETY: ccf is valid or null.
    let Some(ccf) = (unsafe { ccf.as_ref() }) else {
        return;
    };
    if ccf.user == libc::uid_t::MAX {
        return;
    }
    let _ = std::os::unix::fs::chown(path, Some(ccf.user), Some(ccf.group));
}

/// Makes the prepared store current. Called from init_module, which must not fail.
pub fn commit_store() {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let Some(prepared) = pending.take() else {
        return;
    };
    if let Some(store) = prepared.store {
        let old = STORE.swap(Box::into_raw(store), Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: `old` came from Box::into_raw. Only this (master) process drops it:
            // workers of the previous configuration hold their own forked copy of the
            // mapping, and the master itself never serves requests.
            drop(unsafe { Box::from_raw(old) });
        }
    }
    *CURRENT_KEY.lock().unwrap_or_else(|e| e.into_inner()) = Some(prepared.key);
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size(b"64m"), Some(64 << 20));
        assert_eq!(parse_size(b"1G"), Some(1 << 30));
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"m"), None);
        assert_eq!(parse_size(b"99999999999999999g"), None);
    }
}
