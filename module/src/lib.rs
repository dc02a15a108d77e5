//! The nginx module, in nginx's own file order: the directives, the module context and object,
//! and the hooks nginx calls at configuration and process start. Cache logic lives in the core
//! crate; the other files here are thin: `ffi` (the safe request view), `conf`, `lifecycle`
//! (the store across configuration loads), `hit` (lookup and serving), `fill` (the capture
//! filters), `admin` and `console` (admin locations), `builder` (builder threads), `log`,
//! `compat` (what differs between nginx versions).

mod admin;
mod builder;
mod compat;
mod conf;
mod console;
mod ffi;
mod fill;
mod fleet;
mod hit;
mod lifecycle;
mod log;
mod revalidate;

use std::ffi::{c_char, c_void, CStr};
use std::mem::offset_of;
use std::ptr::{addr_of, addr_of_mut, null_mut};

use nginx_sys::{
    ngx_command_t, ngx_conf_set_flag_slot, ngx_conf_set_msec_slot, ngx_conf_set_sec_slot,
    ngx_conf_set_size_slot, ngx_conf_set_str_slot, ngx_conf_t, ngx_cycle_t, ngx_http_module_t,
    ngx_http_set_complex_value_slot, ngx_int_t, ngx_module_t, ngx_str_t, ngx_uint_t,
    NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE123,
    NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET,
    NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

use conf::{
    set_build_queue, set_build_threads, set_cache_path, set_fleet, set_purge_allow_origin,
    set_purge_location, set_purge_method, set_status_location, set_statuses, set_use_stale,
    set_variants,
};
pub use conf::{LocConf, MainConf};
use ffi::{ERROR, OK};
use log::guard;

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while loading configuration.
        unsafe { &*addr_of!(ngx_http_pagespeed_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx passes the configuration being parsed.
        guard("preconfiguration", ERROR, || unsafe {
            hit::add_variables(cf)
        })
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        guard("postconfiguration", ERROR, || {
            // SAFETY: nginx passes the http configuration being parsed.
            let rc = unsafe { hit::install(cf) };
            if rc != OK {
                return rc;
            }
            // SAFETY: as above.
            let rc = unsafe { fill::install(cf) };
            if rc != OK {
                return rc;
            }
            // SAFETY: as above.
            unsafe { lifecycle::prepare_store(cf) }
        })
    }
}

// SAFETY: MainConf/LocConf are the types create_main_conf/create_loc_conf allocate.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

// SAFETY: as above.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

const ANY: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

/// A directive. Its name must be NUL-terminated: nginx compares it with strcmp.
const fn command(
    name: &'static CStr,
    type_: u32,
    set: unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char,
    conf: usize,
    offset: usize,
) -> ngx_command_t {
    ngx_command_t {
        name: ngx_str_t {
            len: name.count_bytes(),
            data: name.as_ptr() as *mut u8,
        },
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf,
        offset,
        post: null_mut(),
    }
}

const LOC: usize = NGX_HTTP_LOC_CONF_OFFSET;
const MAIN: usize = NGX_HTTP_MAIN_CONF_OFFSET;

/// The directives (README "Configuration" describes each).
#[rustfmt::skip]
static mut NGX_HTTP_PAGESPEED_COMMANDS: [ngx_command_t; 21] = [
    command(c"pagespeed_cache_path", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE123, set_cache_path, MAIN, 0),
    command(c"pagespeed_cache", ANY | NGX_CONF_FLAG, ngx_conf_set_flag_slot, LOC, offset_of!(LocConf, cache)),
    command(c"pagespeed_cache_key", ANY | NGX_CONF_TAKE1, ngx_http_set_complex_value_slot, LOC, offset_of!(LocConf, key)),
    command(c"pagespeed_cache_valid", ANY | NGX_CONF_TAKE1, ngx_conf_set_sec_slot, LOC, offset_of!(LocConf, valid)),
    command(c"pagespeed_cache_max_object_size", ANY | NGX_CONF_TAKE1, ngx_conf_set_size_slot, LOC, offset_of!(LocConf, max_object)),
    command(c"pagespeed_cache_statuses", ANY | NGX_CONF_1MORE, set_statuses, LOC, 0),
    command(c"pagespeed_cache_revalidate", ANY | NGX_CONF_FLAG, ngx_conf_set_flag_slot, LOC, offset_of!(LocConf, revalidate)),
    command(c"pagespeed_cache_lock", ANY | NGX_CONF_FLAG, ngx_conf_set_flag_slot, LOC, offset_of!(LocConf, lock)),
    command(c"pagespeed_cache_lock_timeout", ANY | NGX_CONF_TAKE1, ngx_conf_set_msec_slot, LOC, offset_of!(LocConf, lock_timeout)),
    command(c"pagespeed_cache_use_stale", ANY | NGX_CONF_1MORE, set_use_stale, LOC, 0),
    command(c"pagespeed_purge_method", ANY | NGX_CONF_TAKE1, set_purge_method, LOC, 0),
    command(c"pagespeed_purge_token", ANY | NGX_CONF_TAKE1, ngx_conf_set_str_slot, LOC, offset_of!(LocConf, purge_token)),
    command(c"pagespeed_purge_allow_origin", ANY | NGX_CONF_1MORE, set_purge_allow_origin, LOC, 0),
    command(c"pagespeed_variants", ANY | NGX_CONF_1MORE, set_variants, LOC, 0),
    command(c"pagespeed_build_on_fill", ANY | NGX_CONF_FLAG, ngx_conf_set_flag_slot, LOC, offset_of!(LocConf, build_on_fill)),
    command(c"pagespeed_build_threads", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_build_threads, MAIN, 0),
    command(c"pagespeed_build_queue", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_build_queue, MAIN, 0),
    command(c"pagespeed_fleet", NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE, set_fleet, MAIN, 0),
    command(c"pagespeed_purge", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, set_purge_location, LOC, 0),
    command(c"pagespeed_status", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE1, set_status_location, LOC, 0),
    ngx_command_t::empty(),
];

static NGX_HTTP_PAGESPEED_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: Some(Module::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(Module::merge_loc_conf),
};

/// The module object nginx loads (`load_module`), named as nginx names module symbols.
#[cfg_attr(not(test), used)]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_pagespeed_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(NGX_HTTP_PAGESPEED_MODULE_CTX) as *mut c_void,
    // SAFETY: taking the address of the commands table; nginx reads it during configuration.
    commands: unsafe { addr_of_mut!(NGX_HTTP_PAGESPEED_COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_module: Some(init_module),
    init_process: Some(builder::init_process),
    exit_process: Some(builder::exit_process),
    exit_master: Some(builder::exit_master),
    ..ngx_module_t::default()
};

#[cfg(not(test))]
ngx::ngx_modules!(ngx_http_pagespeed_module);

/// Runs in the master after a configuration was accepted (and for `nginx -t`). It must not
/// fail: nginx treats a failing init_module as fatal even on reload. The store was opened
/// while the configuration was parsed; here it only becomes the current one.
extern "C" fn init_module(_cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard("init_module", (), lifecycle::commit_store);
    OK
}
