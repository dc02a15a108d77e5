//! Every line of nginx FFI: the module declaration, directives and configuration, the cache
//! handlers and filters, the admin locations. Cache logic lives in `store`, `http` and
//! `variant`; this layer converts raw pointers once at the top of each callback and calls it.

mod admin;
mod builder;
mod cache;
mod compat;
mod config;
mod console;
mod util;

use std::ffi::c_void;
use std::ptr::{addr_of, addr_of_mut};

use nginx_sys::{
    ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_uint_t,
    NGX_HTTP_MODULE, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

pub use config::{LocConf, MainConf};

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while loading configuration.
        unsafe { &*addr_of!(ngx_http_pagespeed_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        cache::add_variables(cf)
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        let rc = cache::install(cf);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        config::prepare_store(cf)
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
    commands: unsafe { addr_of_mut!(config::NGX_HTTP_PAGESPEED_COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_module: Some(init_module),
    init_process: Some(builder::init_process),
    exit_process: Some(builder::exit_process),
    ..ngx_module_t::default()
};

#[cfg(not(test))]
ngx::ngx_modules!(ngx_http_pagespeed_module);

/// Runs in the master after a configuration was accepted (and for `nginx -t`). It must not
/// fail: nginx treats a failing init_module as fatal even on reload. The store was opened
/// while the configuration was parsed; here it only becomes the current one.
extern "C" fn init_module(_cycle: *mut ngx_cycle_t) -> ngx_int_t {
    config::commit_store();
    NGX_OK as ngx_int_t
}
