//! Turns the version of the nginx being built against into cfgs for the few APIs that changed.

/// (first nginx version with the change, cfg name). 1.23.0 gave `ngx_table_elt_t` its `next`
/// link and made `headers_out.cache_control` a list head instead of an array of pointers.
const VERSION_CHECKS: &[(u64, &str)] = &[(1_023_000, "nginx1_23_0")];

/// ngx-rust 0.5 supports nothing older.
const MINIMUM: u64 = 1_022_000;

fn main() {
    for (_, name) in VERSION_CHECKS {
        println!("cargo::rustc-check-cfg=cfg({name})");
    }
    // Set by nginx-sys (a direct dependency, `links = "nginx"`) from the configured tree's
    // nginx.h: the vendored 1.28 or whatever NGINX_BUILD_DIR names.
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    let version: u64 = match std::env::var("DEP_NGINX_VERSION_NUMBER").map(|v| v.parse()) {
        Ok(Ok(v)) => v,
        other => panic!("DEP_NGINX_VERSION_NUMBER from nginx-sys is missing or bad: {other:?}"),
    };
    assert!(
        version >= MINIMUM,
        "nginx {version} is older than the supported minimum {MINIMUM} (1.22.0)"
    );
    for (since, name) in VERSION_CHECKS {
        if version >= *since {
            println!("cargo::rustc-cfg={name}");
        }
    }
}
