//! Small request helpers: header lists, pool strings, JSON responses, rate-limited logging.

use std::sync::atomic::{AtomicI64, Ordering};

use nginx_sys::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_send_header, ngx_int_t, ngx_list_push, ngx_list_t, ngx_pcalloc, ngx_pnalloc,
    ngx_str_t, ngx_table_elt_t, NGX_ERROR, NGX_OK,
};

use super::compat::single_header;
use super::config::LocConf;
use super::Module;

/// Our location configuration for a request.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn loc_conf<'a>(r: *mut ngx_http_request_t) -> &'a LocConf {
    use ngx::http::HttpModule;
    // SAFETY: loc_conf[ctx_index] is our LocConf, created for every location.
    unsafe { &*(*(*r).loc_conf.add(Module::module().ctx_index) as *const LocConf) }
}

pub fn bytes(s: &ngx_str_t) -> &[u8] {
    if s.data.is_null() || s.len == 0 {
        &[]
    } else {
        // SAFETY: nginx strings point to len valid bytes for the request's lifetime.
        unsafe { std::slice::from_raw_parts(s.data, s.len) }
    }
}

/// Live (not deleted) elements of a header list.
///
/// # Safety
/// `list` must be an initialized ngx_list_t of ngx_table_elt_t that outlives the iterator.
pub unsafe fn headers<'a>(list: &'a ngx_list_t) -> impl Iterator<Item = &'a ngx_table_elt_t> + 'a {
    let mut part = &list.part as *const nginx_sys::ngx_list_part_t;
    let mut i = 0usize;
    std::iter::from_fn(move || loop {
        // SAFETY: part is a valid list part (the head, or a `next` link).
        let p = unsafe { part.as_ref()? };
        if i >= p.nelts {
            part = p.next;
            i = 0;
            continue;
        }
        // SAFETY: elts holds nelts table elements.
        let h = unsafe { &*(p.elts as *const ngx_table_elt_t).add(i) };
        i += 1;
        if h.hash != 0 {
            return Some(h);
        }
    })
}

/// The port of the listener a request arrived on (0 for a unix socket).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn local_port(r: *mut ngx_http_request_t) -> u16 {
    // SAFETY: local_sockaddr of a live connection is a valid sockaddr of its family.
    unsafe {
        let sa = (*(*r).connection).local_sockaddr;
        if sa.is_null() {
            return 0;
        }
        match (*sa).sa_family as i32 {
            libc::AF_INET => u16::from_be((*(sa as *const libc::sockaddr_in)).sin_port),
            libc::AF_INET6 => u16::from_be((*(sa as *const libc::sockaddr_in6)).sin6_port),
            _ => 0,
        }
    }
}

/// A request header's value by lowercase name; repeated headers joined with ", ".
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn header_in(r: *mut ngx_http_request_t, lc_name: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    // SAFETY: the request's headers_in list is initialized once headers are read.
    for h in unsafe { headers(&(*r).headers_in.headers) } {
        if bytes(&h.key).eq_ignore_ascii_case(lc_name.as_bytes()) {
            let v = bytes(&h.value);
            match &mut out {
                Some(o) => {
                    o.extend_from_slice(b", ");
                    o.extend_from_slice(v);
                }
                None => out = Some(v.to_vec()),
            }
        }
    }
    out
}

/// Copies bytes into the request pool as an ngx_str_t.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn pool_str(r: *mut ngx_http_request_t, v: &[u8]) -> Option<ngx_str_t> {
    if v.is_empty() {
        return Some(ngx_str_t {
            len: 0,
            data: std::ptr::null_mut(),
        });
    }
    // SAFETY: the pool is the request's; the copy fits the allocation.
    unsafe {
        let p = ngx_pnalloc((*r).pool, v.len()) as *mut u8;
        if p.is_null() {
            return None;
        }
        std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len());
        Some(ngx_str_t {
            len: v.len(),
            data: p,
        })
    }
}

/// Appends a response header and returns it (so typed `headers_out` fields can point at it).
///
/// # Safety
/// `r` must be a live request whose header has not been sent.
pub unsafe fn push_header(
    r: *mut ngx_http_request_t,
    name: &[u8],
    value: &[u8],
) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: headers_out.headers is an initialized list of ngx_table_elt_t.
    unsafe {
        let key = pool_str(r, name)?;
        let val = pool_str(r, value)?;
        let h = ngx_list_push(&mut (*r).headers_out.headers) as *mut ngx_table_elt_t;
        if h.is_null() {
            return None;
        }
        (*h).hash = 1;
        (*h).key = key;
        (*h).value = val;
        (*h).lowcase_key = std::ptr::null_mut();
        single_header(h);
        Some(h)
    }
}

/// Appends a response header whose name and value already live in the request's pool (a
/// cached entry's metadata): nothing is copied.
///
/// # Safety
/// `r` must be a live request whose header has not been sent; `name` and `value` must stay
/// valid until the request ends.
pub unsafe fn push_pool_header(
    r: *mut ngx_http_request_t,
    name: &[u8],
    value: &[u8],
) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: headers_out.headers is an initialized list; the slices outlive the request.
    unsafe {
        let h = ngx_list_push(&mut (*r).headers_out.headers) as *mut ngx_table_elt_t;
        if h.is_null() {
            return None;
        }
        (*h).hash = 1;
        (*h).key = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        (*h).value = ngx_str_t {
            len: value.len(),
            data: value.as_ptr() as *mut u8,
        };
        (*h).lowcase_key = std::ptr::null_mut();
        single_header(h);
        Some(h)
    }
}

/// Sends a complete in-memory response body (after the header was sent).
///
/// # Safety
/// `r` must be a live request; `data` must stay valid until the request ends (pool memory).
pub unsafe fn send_body(r: *mut ngx_http_request_t, data: *mut u8, len: usize) -> ngx_int_t {
    // SAFETY: allocations come from the request pool; the buffer points at pool memory.
    unsafe {
        let b = ngx_pcalloc((*r).pool, std::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
        if b.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        let b: &mut ngx_buf_t = &mut *b;
        b.start = data;
        b.pos = data;
        b.last = data.add(len);
        b.end = data.add(len);
        if len > 0 {
            b.set_memory(1);
        }
        b.set_last_buf(if r == (*r).main { 1 } else { 0 });
        b.set_last_in_chain(1);
        let cl = ngx_alloc_chain_link((*r).pool);
        if cl.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*cl).buf = b;
        (*cl).next = std::ptr::null_mut();
        ngx_http_output_filter(r, cl)
    }
}

/// Sends a whole small response (JSON or text) with the given status.
///
/// # Safety
/// `r` must be a live request that has not sent its header.
pub unsafe fn send_text(
    r: *mut ngx_http_request_t,
    status: usize,
    content_type: &str,
    body: &[u8],
) -> ngx_int_t {
    // SAFETY: as documented.
    unsafe {
        let Some(data) = pool_str(r, body) else {
            return NGX_ERROR as ngx_int_t;
        };
        let Some(ct) = pool_str(r, content_type.as_bytes()) else {
            return NGX_ERROR as ngx_int_t;
        };
        (*r).headers_out.status = status;
        (*r).headers_out.content_type = ct;
        (*r).headers_out.content_type_len = ct.len;
        (*r).headers_out.content_type_lowcase = std::ptr::null_mut();
        (*r).headers_out.content_length_n = body.len() as i64;
        let _ = push_header(r, b"Cache-Control", b"no-store");
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return rc;
        }
        send_body(r, data.data, data.len)
    }
}

static LAST_FAULT_LOG: AtomicI64 = AtomicI64::new(0);

/// True at most once per second per worker: cache faults are logged, not flooded.
pub fn fault_log_allowed() -> bool {
    let now = nginx_sys::ngx_time() as i64;
    LAST_FAULT_LOG.swap(now, Ordering::Relaxed) != now
}

/// Runs a callback body, turning a panic into `on_panic` instead of aborting the process.
pub fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(on_panic)
}
