//! The one safe view of an nginx request: built once at the top of each callback from the raw
//! pointer nginx passes, it is the only code that dereferences the request and the structures
//! it points to (connection, contexts, header lists, buffer chains).

use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr::NonNull;

use nginx_sys::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_chain_t, ngx_http_arg, ngx_http_complex_value,
    ngx_http_complex_value_t, ngx_http_discard_request_body, ngx_http_output_filter,
    ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_list_part_t, ngx_list_push,
    ngx_list_t, ngx_log_t, ngx_pcalloc, ngx_pnalloc, ngx_str_t, ngx_table_elt_t, ngx_uint_t,
    NGX_ERROR, NGX_OK,
};
use ngx::core::Pool;
use ngx::http::HttpModule;

use super::compat;
use super::conf::LocConf;
use super::Module;

pub const OK: ngx_int_t = NGX_OK as ngx_int_t;
pub const ERROR: ngx_int_t = NGX_ERROR as ngx_int_t;
pub const DECLINED: ngx_int_t = nginx_sys::NGX_DECLINED as ngx_int_t;
pub const DONE: ngx_int_t = nginx_sys::NGX_DONE as ngx_int_t;
pub const AGAIN: ngx_int_t = nginx_sys::NGX_AGAIN as ngx_int_t;

/// The bytes of an nginx string (empty for a null one).
pub fn bytes(s: &ngx_str_t) -> &[u8] {
    if s.data.is_null() || s.len == 0 {
        &[]
    } else {
        // SAFETY: nginx strings point to len valid bytes for as long as what holds them.
        unsafe { std::slice::from_raw_parts(s.data, s.len) }
    }
}

/// Live (not deleted) elements of a header list.
///
/// # Safety
/// `list` must be an initialized `ngx_list_t` of `ngx_table_elt_t` that outlives the iterator.
pub unsafe fn header_list<'a>(
    list: &'a ngx_list_t,
) -> impl Iterator<Item = &'a ngx_table_elt_t> + 'a {
    let mut part = &list.part as *const ngx_list_part_t;
    let mut i = 0usize;
    std::iter::from_fn(move || loop {
        // SAFETY: part is the list's head part or a `next` link of one.
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

unsafe extern "C" fn delete_timer(data: *mut c_void) {
    let ev = data as *mut nginx_sys::ngx_event_t;
    // SAFETY: data is the event timer_event allocated in the same pool.
    unsafe {
        if (*ev).timer_set() != 0 {
            nginx_sys::ngx_del_timer(ev);
        }
    }
}

/// Arms a timer event made by `Req::timer_event`.
///
/// # Safety
/// `ev` must come from `Req::timer_event` of a live request.
pub unsafe fn arm(ev: *mut nginx_sys::ngx_event_t, ms: u64) {
    // SAFETY: as the caller promises.
    unsafe { nginx_sys::ngx_add_timer(ev, ms as nginx_sys::ngx_msec_t) }
}

/// Marks every buffer of a chain consumed (what the next filter would have done): an
/// upstream waits for its buffers to be sent before it reuses them.
///
/// # Safety
/// `chain` must be null or a valid chain whose buffers are valid for this call.
pub unsafe fn consume_chain(chain: *mut ngx_chain_t) {
    let mut cl = chain;
    // SAFETY: links and buffers of a valid chain.
    while let Some(link) = unsafe { cl.as_ref() } {
        cl = link.next;
        if let Some(b) = unsafe { link.buf.as_mut() } {
            b.pos = b.last;
            b.file_pos = b.file_last;
        }
    }
}

/// How a buffer chain was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainRead {
    /// Every buffer was appended; `last_buf` if one ended the main request's body,
    /// `last_in_chain` if one ended a subrequest's.
    Read { last_buf: bool, last_in_chain: bool },
    /// Appending would pass the limit: nothing more is read.
    TooLarge,
    /// A file buffer could not be read in full.
    Unreadable,
}

/// Appends the bytes of every buffer of a chain to `out`, up to `max` bytes in all: memory
/// buffers, and file buffers (a static file, a body spilled to a temp file) read with pread
/// until complete. Used by the response capture and the purge body alike.
///
/// # Safety
/// `chain` must be null or a valid chain whose buffers are valid for this call.
pub unsafe fn read_chain(chain: *mut ngx_chain_t, max: usize, out: &mut Vec<u8>) -> ChainRead {
    let (mut last_buf, mut last_in_chain) = (false, false);
    let mut cl = chain;
    // SAFETY: links and buffers of a valid chain, as the caller promises.
    while let Some(link) = unsafe { cl.as_ref() } {
        cl = link.next;
        let Some(b) = (unsafe { link.buf.as_ref() }) else {
            continue;
        };
        let in_memory = b.temporary() != 0 || b.memory() != 0 || b.mmap() != 0;
        if in_memory {
            // SAFETY: pos..last of a memory buffer are readable bytes.
            let len = unsafe { b.last.offset_from(b.pos) }.max(0) as usize;
            if out.len() + len > max {
                return ChainRead::TooLarge;
            }
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(b.pos, len) });
        } else if b.in_file() != 0 && !b.file.is_null() {
            let len = (b.file_last - b.file_pos).max(0) as usize;
            if out.len() + len > max {
                return ChainRead::TooLarge;
            }
            // SAFETY: a file buffer's file is open for the request's lifetime.
            let fd = unsafe { (*b.file).fd };
            if !pread_exact(fd, b.file_pos, len, out) {
                return ChainRead::Unreadable;
            }
        }
        last_buf |= b.last_buf() != 0;
        last_in_chain |= b.last_in_chain() != 0;
    }
    ChainRead::Read {
        last_buf,
        last_in_chain,
    }
}

/// Appends `len` bytes of `fd` from `offset`, retrying short reads; false on error or EOF.
fn pread_exact(fd: i32, offset: i64, len: usize, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.resize(start + len, 0);
    let mut done = 0usize;
    while done < len {
        let buf = &mut out[start + done..];
        // SAFETY: buf is a valid writable slice; fd is an open file.
        let n = unsafe {
            libc::pread(
                fd,
                buf.as_mut_ptr() as *mut c_void,
                buf.len(),
                offset + done as i64,
            )
        };
        if n <= 0 {
            out.truncate(start);
            return false;
        }
        done += n as usize;
    }
    true
}

/// Whether a pushed header's strings are copied into the pool or point at memory that
/// already lives as long as the request (a hit's metadata in pool memory, static strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    Copy,
    Borrowed,
}

/// A live request, as nginx passed it to a callback.
#[derive(Clone, Copy)]
pub struct Req<'a> {
    r: NonNull<ngx_http_request_t>,
    _request: PhantomData<&'a mut ngx_http_request_t>,
}

impl<'a> Req<'a> {
    /// # Safety
    /// `r` must be a live request that stays valid for `'a` (the callback's duration, or
    /// the request's lifetime for what is stored in its pool).
    pub unsafe fn from_raw(r: *mut ngx_http_request_t) -> Option<Req<'a>> {
        Some(Req {
            r: NonNull::new(r)?,
            _request: PhantomData,
        })
    }

    pub fn raw(&self) -> *mut ngx_http_request_t {
        self.r.as_ptr()
    }

    fn get(&self) -> &'a ngx_http_request_t {
        // SAFETY: live for 'a by construction; nginx is single-threaded per worker, and no
        // &mut to the request is held across a call that hands this reference out.
        unsafe { &*self.r.as_ptr() }
    }

    #[allow(clippy::mut_from_ref)]
    fn get_mut(&self) -> &'a mut ngx_http_request_t {
        // SAFETY: as `get`; each caller uses the reference for one field update.
        unsafe { &mut *self.r.as_ptr() }
    }

    pub fn is_main(&self) -> bool {
        std::ptr::eq(self.get().main, self.r.as_ptr())
    }

    pub fn method(&self) -> u32 {
        self.get().method as u32
    }

    pub fn method_name(&self) -> &'a [u8] {
        bytes(&self.get().method_name)
    }

    pub fn unparsed_uri(&self) -> &'a [u8] {
        bytes(&self.get().unparsed_uri)
    }

    /// nginx's host for the request (`$host`: lowercase, no port; or the server name).
    pub fn server(&self) -> &'a [u8] {
        bytes(&self.get().headers_in.server)
    }

    pub fn content_length(&self) -> i64 {
        self.get().headers_in.content_length_n
    }

    pub fn has_authorization(&self) -> bool {
        !self.get().headers_in.authorization.is_null()
    }

    pub fn scheme(&self) -> &'static str {
        // SAFETY: a live request has a live connection.
        if unsafe { (*self.get().connection).ssl.is_null() } {
            "http"
        } else {
            "https"
        }
    }

    /// The port of the listener the request arrived on (0 for a unix socket).
    pub fn local_port(&self) -> u16 {
        // SAFETY: local_sockaddr of a live connection is a valid sockaddr of its family.
        unsafe {
            let sa = (*self.get().connection).local_sockaddr;
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

    pub fn log(&self) -> *mut ngx_log_t {
        // SAFETY: a live request has a live connection.
        unsafe { (*self.get().connection).log }
    }

    pub fn header_only(&self) -> bool {
        self.get().header_only() != 0
    }

    /// This module's location configuration for the request.
    pub fn loc_conf(&self) -> &'a LocConf {
        // SAFETY: loc_conf[ctx_index] is the LocConf nginx created for every location.
        unsafe { &*(*self.get().loc_conf.add(Module::module().ctx_index) as *const LocConf) }
    }

    /// The request headers, as sent (deleted ones skipped).
    pub fn headers_in(&self) -> impl Iterator<Item = &'a ngx_table_elt_t> + 'a {
        // SAFETY: the headers_in list is initialized once the request line is read.
        unsafe { header_list(&self.get().headers_in.headers) }
    }

    /// A request header's value by name (any case); repeated lines joined with ", ".
    pub fn header_in(&self, name: &str) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for h in self.headers_in() {
            if bytes(&h.key).eq_ignore_ascii_case(name.as_bytes()) {
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

    /// The lowercase name nginx computed for a request header (its key when absent).
    pub fn lowercase_name(h: &ngx_table_elt_t) -> &[u8] {
        if h.lowcase_key.is_null() {
            bytes(&h.key)
        } else {
            // SAFETY: nginx sets lowcase_key to key.len bytes when it parses a header.
            unsafe { std::slice::from_raw_parts(h.lowcase_key, h.key.len) }
        }
    }

    /// A query argument's value, percent-decoded.
    pub fn arg(&self, name: &str) -> Option<String> {
        let mut v = ngx_str_t::empty();
        // SAFETY: r is live; ngx_http_arg only reads the name.
        let rc = unsafe { ngx_http_arg(self.raw(), name.as_ptr() as *mut u8, name.len(), &mut v) };
        (rc == OK).then(|| percent_decode(bytes(&v)))
    }

    /// Evaluates a configured complex value (e.g. `pagespeed_cache_key`) for this request.
    pub fn complex_value(&self, cv: *mut ngx_http_complex_value_t) -> Option<&'a [u8]> {
        let mut v = ngx_str_t::empty();
        // SAFETY: cv was compiled for this configuration; the result lives in the pool.
        if unsafe { ngx_http_complex_value(self.raw(), cv, &mut v) } != OK || v.data.is_null() {
            return None;
        }
        // SAFETY: the value's bytes are request pool memory.
        Some(unsafe { std::slice::from_raw_parts(v.data, v.len) })
    }

    /// `len` bytes of request pool memory, valid until the request ends.
    pub fn pool_bytes(&self, len: usize) -> Option<&'a mut [u8]> {
        // SAFETY: a fresh pool allocation of len bytes, owned by the request.
        unsafe {
            let p = ngx_pnalloc(self.get().pool, len.max(1)) as *mut u8;
            (!p.is_null()).then(|| std::slice::from_raw_parts_mut(p, len))
        }
    }

    fn pool_str(&self, v: &[u8], strings: Strings) -> Option<ngx_str_t> {
        if v.is_empty() {
            return Some(ngx_str_t::empty());
        }
        let data = match strings {
            Strings::Borrowed => v.as_ptr() as *mut u8,
            Strings::Copy => {
                let p = self.pool_bytes(v.len())?;
                p.copy_from_slice(v);
                p.as_mut_ptr()
            }
        };
        Some(ngx_str_t { len: v.len(), data })
    }

    /// This module's context of the request, if set.
    pub fn ctx<T>(&self) -> Option<&'a mut T> {
        // SAFETY: ctx[ctx_index] is null or the T this module allocated in r's pool.
        unsafe { (*self.get().ctx.add(Module::module().ctx_index) as *mut T).as_mut() }
    }

    /// Sets this module's context: `value` moves into pool memory and is dropped with it.
    pub fn set_ctx<T>(&self, value: T) -> Option<&'a mut T> {
        // SAFETY: the pool outlives every use of the context; allocate registers a cleanup
        // that drops the value (and what it owns) with the pool.
        unsafe {
            let p = Pool::from_ngx_pool(self.get().pool).allocate(value);
            if p.is_null() {
                return None;
            }
            *self.get().ctx.add(Module::module().ctx_index) = p as *mut c_void;
            p.as_mut()
        }
    }

    // --- the response ---

    pub fn status(&self) -> u16 {
        self.get().headers_out.status as u16
    }

    pub fn content_type(&self) -> &'a [u8] {
        bytes(&self.get().headers_out.content_type)
    }

    pub fn response_length(&self) -> Option<u64> {
        let n = self.get().headers_out.content_length_n;
        (n >= 0).then_some(n as u64)
    }

    pub fn last_modified(&self) -> Option<i64> {
        let t = self.get().headers_out.last_modified_time;
        #[allow(clippy::unnecessary_cast)] // time_t is not i64 on every target
        (t >= 0).then_some(t as i64)
    }

    /// The response's generic header lines, in order.
    pub fn headers_out(&self) -> impl Iterator<Item = &'a ngx_table_elt_t> + 'a {
        // SAFETY: headers_out.headers is initialized with the request.
        unsafe { header_list(&self.get().headers_out.headers) }
    }

    /// Appends a response header and returns it, so typed `headers_out` fields can point at it.
    pub fn push_header(
        &self,
        name: &[u8],
        value: &[u8],
        strings: Strings,
    ) -> Option<*mut ngx_table_elt_t> {
        let key = self.pool_str(name, strings)?;
        let value = self.pool_str(value, strings)?;
        // SAFETY: headers_out.headers is an initialized list of ngx_table_elt_t.
        unsafe {
            let h = ngx_list_push(&mut self.get_mut().headers_out.headers) as *mut ngx_table_elt_t;
            if h.is_null() {
                return None;
            }
            (*h).hash = 1;
            (*h).key = key;
            (*h).value = value;
            (*h).lowcase_key = std::ptr::null_mut();
            compat::single_header(h);
            Some(h)
        }
    }

    /// Takes a response header out of what is sent (nginx skips lines whose hash is 0) and
    /// returns its last value: a header of the upstream this module replaces with its own.
    pub fn hide_header_out(&self, name: &str) -> Option<Vec<u8>> {
        let mut found = None;
        // SAFETY: headers_out.headers is an initialized list of the live request; its
        // elements are ours to change until the header is sent (we run before the header
        // filter writes it).
        unsafe {
            for h in header_list(&self.get().headers_out.headers) {
                if h.hash != 0 && bytes(&h.key).eq_ignore_ascii_case(name.as_bytes()) {
                    found = Some(bytes(&h.value).to_vec());
                    let h = h as *const ngx_table_elt_t as *mut ngx_table_elt_t;
                    (*h).hash = 0;
                }
            }
        }
        found
    }

    /// Appends a request header that the location's upstream module forwards (proxy_pass
    /// iterates the list in the content phase, after PRECONTENT).
    pub fn push_header_in(&self, name: &str, value: &[u8]) -> bool {
        let (Some(key), Some(val), Some(low)) = (
            self.pool_str(name.as_bytes(), Strings::Copy),
            self.pool_str(value, Strings::Copy),
            self.pool_str(name.to_ascii_lowercase().as_bytes(), Strings::Copy),
        ) else {
            return false;
        };
        // SAFETY: headers_in.headers is the live request's initialized list; the strings are
        // in its pool.
        unsafe {
            let e = ngx_list_push(&mut self.get_mut().headers_in.headers) as *mut ngx_table_elt_t;
            if e.is_null() {
                return false;
            }
            (*e).key = key;
            (*e).value = val;
            (*e).lowcase_key = low.data;
            (*e).hash = nginx_sys::ngx_hash_key(low.data, low.len);
            compat::single_header(e);
        }
        true
    }

    /// Fills the typed fields of a response replayed from the cache.
    pub fn set_response_head(&self, head: &ReplayedHead) {
        let out = &mut self.get_mut().headers_out;
        out.status = head.status as _;
        let ct = ngx_str_t {
            len: head.content_type.len(),
            data: head.content_type.as_ptr() as *mut u8,
        };
        out.content_type = ct;
        out.content_type_len = head.content_type_len;
        out.content_type_lowcase = std::ptr::null_mut();
        if let Some(cs) = &head.charset {
            out.charset = ngx_str_t {
                len: cs.len(),
                // SAFETY: the charset range lies inside the content type's bytes.
                data: unsafe { ct.data.add(cs.start) },
            };
        }
        out.content_length_n = head.content_length as i64;
        out.last_modified_time = head.last_modified.map_or(-1, |t| t as _);
        self.get_mut().set_allow_ranges(1);
    }

    /// Points a typed `headers_out` field at a header pushed with `push_header`.
    pub fn link_typed(
        &self,
        field: Typed,
        h: *mut ngx_table_elt_t,
        cc: &mut compat::CacheControlLines,
    ) -> bool {
        let out = &mut self.get_mut().headers_out;
        match field {
            Typed::Etag => out.etag = h,
            Typed::ContentEncoding => out.content_encoding = h,
            Typed::Location => out.location = h,
            Typed::Expires => out.expires = h,
            Typed::Date => out.date = h,
            // SAFETY: r is live and h is one of its headers_out elements.
            Typed::CacheControl => return unsafe { cc.push(self.raw(), h) },
        }
        true
    }

    /// Makes `handler` the request's content handler: the CONTENT phase runs it instead of
    /// the location's own (set from PRECONTENT).
    pub fn take_content_phase(&self, handler: extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t) {
        self.get_mut().content_handler = Some(handler);
    }

    pub fn discard_body(&self) -> ngx_int_t {
        // SAFETY: r is live.
        unsafe { ngx_http_discard_request_body(self.raw()) }
    }

    pub fn send_header(&self) -> ngx_int_t {
        // SAFETY: r is live and has not sent its header.
        unsafe { ngx_http_send_header(self.raw()) }
    }

    /// Sends a complete body from memory that lives until the request ends (pool memory, a
    /// hit's copy), after the header.
    pub fn send_body(&self, data: &'a [u8]) -> ngx_int_t {
        // SAFETY: allocations come from the request pool; the buffer points at `data`, which
        // outlives the request's output.
        unsafe {
            let pool = self.get().pool;
            let b = ngx_pcalloc(pool, std::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
            if b.is_null() {
                return ERROR;
            }
            let b: &mut ngx_buf_t = &mut *b;
            let p = data.as_ptr() as *mut u8;
            b.start = p;
            b.pos = p;
            b.last = p.add(data.len());
            b.end = b.last;
            if !data.is_empty() {
                b.set_memory(1);
            }
            b.set_last_buf(if self.is_main() { 1 } else { 0 });
            b.set_last_in_chain(1);
            let cl = ngx_alloc_chain_link(pool);
            if cl.is_null() {
                return ERROR;
            }
            (*cl).buf = b;
            (*cl).next = std::ptr::null_mut();
            ngx_http_output_filter(self.raw(), cl)
        }
    }

    /// Sends a whole small response (JSON, text, a page) with the given status, not cacheable.
    pub fn send_text(&self, status: usize, content_type: &str, body: &[u8]) -> ngx_int_t {
        let (Some(data), Some(ct)) = (
            self.pool_str(body, Strings::Copy),
            self.pool_str(content_type.as_bytes(), Strings::Copy),
        ) else {
            return ERROR;
        };
        {
            let out = &mut self.get_mut().headers_out;
            out.status = status;
            out.content_type = ct;
            out.content_type_len = ct.len;
            out.content_type_lowcase = std::ptr::null_mut();
            out.content_length_n = body.len() as i64;
        }
        let _ = self.push_header(b"Cache-Control", b"no-store", Strings::Borrowed);
        let rc = self.send_header();
        if rc == ERROR || rc > OK || self.header_only() {
            return rc;
        }
        self.send_body(bytes(&data))
    }

    /// Starts a subrequest that revalidates for this request: a clone of it in the same
    /// location (`uri` None; from PRECONTENT it resumes at the same phase with the same
    /// content handler), or a fresh request for `uri` in this server. `background` ones do
    /// not hold this request's output. `handler(sr, data, rc)` runs when it is finalized.
    /// Runs once nginx runs posted requests.
    pub fn subrequest(
        &self,
        uri: Option<&[u8]>,
        background: bool,
        handler: nginx_sys::ngx_http_post_subrequest_pt,
        data: *mut c_void,
    ) -> Option<Req<'a>> {
        use nginx_sys::{
            ngx_http_post_subrequest_t, ngx_http_subrequest, NGX_HTTP_SUBREQUEST_BACKGROUND,
            NGX_HTTP_SUBREQUEST_CLONE,
        };
        let r = self.get_mut();
        let mut flags = if background {
            NGX_HTTP_SUBREQUEST_BACKGROUND
        } else {
            0
        };
        let (mut path, mut args) = match uri {
            None => {
                flags |= NGX_HTTP_SUBREQUEST_CLONE;
                (r.uri, r.args)
            }
            Some(u) => {
                let (p, a) = match u.iter().position(|&c| c == b'?') {
                    Some(i) => (&u[..i], &u[i + 1..]),
                    None => (u, &b""[..]),
                };
                (
                    self.pool_str(p, Strings::Copy)?,
                    self.pool_str(a, Strings::Copy)?,
                )
            }
        };
        // SAFETY: the struct lives in the request pool for the subrequest's lifetime.
        let ps = unsafe {
            ngx_pcalloc(r.pool, std::mem::size_of::<ngx_http_post_subrequest_t>())
                as *mut ngx_http_post_subrequest_t
        };
        if ps.is_null() {
            return None;
        }
        let mut sr: *mut ngx_http_request_t = std::ptr::null_mut();
        // SAFETY: r is live; ps, path and args are pool memory; nginx posts the subrequest.
        unsafe {
            (*ps).handler = handler;
            (*ps).data = data;
            let args = if args.len == 0 {
                std::ptr::null_mut()
            } else {
                &mut args
            };
            if ngx_http_subrequest(r, &mut path, args, &mut sr, ps, flags as ngx_uint_t) != OK {
                return None;
            }
            Req::from_raw(sr)
        }
    }

    /// Makes a subrequest a full GET (a clone of a HEAD request is a HEAD).
    pub fn make_get(&self) {
        let r = self.get_mut();
        r.method = nginx_sys::NGX_HTTP_GET as ngx_uint_t;
        r.method_name = ngx_str_t {
            len: 3,
            data: b"GET".as_ptr() as *mut u8,
        };
        r.set_header_only(0);
    }

    /// Gives this (sub)request its own request header list: the parent's lines without the
    /// client's conditionals and ranges (or, with `host_only`, only its `Host`: the parent
    /// is an admin request whose body and credentials are not the origin's business), plus
    /// `add` (the revalidation's own conditionals). A subrequest starts with a copy of its
    /// parent's list head, whose parts it shares: pushing onto it would write into the
    /// parent's list.
    pub fn conditional_headers(&self, add: &[(&str, Vec<u8>)], host_only: bool) -> bool {
        use nginx_sys::{ngx_hash_key, ngx_list_create};
        let pool = self.get().pool;
        let kept: Vec<ngx_table_elt_t> = self
            .headers_in()
            .filter(|h| {
                let name = Req::lowercase_name(h);
                if host_only {
                    name == b"host"
                } else {
                    !CLIENT_CONDITIONALS.contains(&name)
                }
            })
            .copied()
            .collect();
        if host_only {
            let r = self.get_mut();
            r.request_body = std::ptr::null_mut();
            let hin = &mut r.headers_in;
            hin.content_length = std::ptr::null_mut();
            hin.content_length_n = -1;
            hin.content_type = std::ptr::null_mut();
            hin.transfer_encoding = std::ptr::null_mut();
            hin.set_chunked(0);
            hin.authorization = std::ptr::null_mut();
        }
        // SAFETY: a new list in the request pool; elements are plain copies, whose strings
        // live in the pool or the client's header buffer for the request's lifetime.
        unsafe {
            let list = ngx_list_create(
                pool,
                kept.len() + add.len() + 1,
                std::mem::size_of::<ngx_table_elt_t>(),
            );
            if list.is_null() {
                return false;
            }
            for h in &kept {
                let e = ngx_list_push(list) as *mut ngx_table_elt_t;
                if e.is_null() {
                    return false;
                }
                *e = *h;
            }
            let hin = &mut self.get_mut().headers_in;
            hin.if_modified_since = std::ptr::null_mut();
            hin.if_unmodified_since = std::ptr::null_mut();
            hin.if_match = std::ptr::null_mut();
            hin.if_none_match = std::ptr::null_mut();
            hin.if_range = std::ptr::null_mut();
            hin.range = std::ptr::null_mut();
            for (name, value) in add {
                let (Some(key), Some(val), Some(low)) = (
                    self.pool_str(name.as_bytes(), Strings::Copy),
                    self.pool_str(value, Strings::Copy),
                    self.pool_str(name.to_ascii_lowercase().as_bytes(), Strings::Copy),
                ) else {
                    return false;
                };
                let e = ngx_list_push(list) as *mut ngx_table_elt_t;
                if e.is_null() {
                    return false;
                }
                (*e).key = key;
                (*e).value = val;
                (*e).lowcase_key = low.data;
                // The hash modules look header names up by (proxy_set_header's table).
                (*e).hash = ngx_hash_key(low.data, low.len);
                compat::single_header(e);
                if name.eq_ignore_ascii_case("if-none-match") {
                    hin.if_none_match = e;
                } else if name.eq_ignore_ascii_case("if-modified-since") {
                    hin.if_modified_since = e;
                }
            }
            hin.headers = *list;
        }
        true
    }

    /// Finalizes the request with `rc` and runs what its connection posted: for a handler
    /// that returned NGX_DONE and answers later from a timer. The view must not be used after.
    pub fn finalize_from_timer(self, rc: ngx_int_t) {
        let r = self.raw();
        // SAFETY: r is live until finalized; its connection outlives the request and is read
        // before the request may be freed.
        unsafe {
            let c = (*r).connection;
            nginx_sys::ngx_http_finalize_request(r, rc);
            nginx_sys::ngx_http_run_posted_requests(c);
        }
    }

    /// References held on the main request (subrequests, body reading, timers of ours).
    pub fn main_count(&self) -> u32 {
        // SAFETY: the main request of a live request is live.
        unsafe { (*self.get().main).count() }
    }

    /// What runs when nginx posts this request again: for a parent request, once a
    /// subrequest it waits for is finalized.
    pub fn set_write_handler(&self, h: nginx_sys::ngx_http_event_handler_pt) {
        self.get_mut().write_event_handler = h;
    }

    /// Marks the response header as sent without passing it on (a revalidation subrequest's
    /// answer is for the cache, never for the client).
    pub fn set_header_sent(&self) {
        self.get_mut().set_header_sent(1);
    }

    /// The upstream's `Date` line (nginx's proxy hides it from `headers_out`), if any.
    pub fn upstream_date(&self) -> Option<&'a [u8]> {
        // SAFETY: r->upstream is null or the request's live upstream; its date is null or
        // one of its header lines, which live as long as the request.
        unsafe {
            let u = self.get().upstream.as_ref()?;
            u.headers_in.date.as_ref().map(|h| bytes(&h.value))
        }
    }

    /// The field names (lowercase) the upstream's `Connection` lines list: nginx consumes
    /// them, so they are read from the upstream's own header list.
    pub fn upstream_connection_listed(&self) -> Vec<Vec<u8>> {
        // SAFETY: r->upstream is null or the request's live upstream.
        let Some(u) = (unsafe { self.get().upstream.as_ref() }) else {
            return Vec::new();
        };
        if u.headers_in.status_n == 0 {
            return Vec::new();
        }
        // SAFETY: the upstream's header list is initialized once it has a status.
        unsafe { header_list(&u.headers_in.headers) }
            .filter(|h| bytes(&h.key).eq_ignore_ascii_case(b"connection"))
            .flat_map(|h| bytes(&h.value).split(|&c| c == b','))
            .map(|n| n.trim_ascii().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// Answers a hit's conditional request itself: a 304 with the stored headers but no
    /// body or representation fields, as nginx's not_modified filter makes one.
    pub fn make_not_modified(&self) {
        let r = self.get_mut();
        let out = &mut r.headers_out;
        out.status = nginx_sys::NGX_HTTP_NOT_MODIFIED as _;
        out.status_line.len = 0;
        out.content_type.len = 0;
        out.content_length_n = -1;
        // SAFETY: content_encoding is null or one of this request's headers_out lines.
        if let Some(h) = unsafe { out.content_encoding.as_mut() } {
            h.hash = 0;
        }
        out.content_encoding = std::ptr::null_mut();
        r.set_allow_ranges(0);
    }

    /// Whether the origin answered this request itself, or nginx produced its status.
    pub fn upstream_answer(&self) -> UpstreamAnswer {
        // SAFETY: r->upstream is null or the request's live upstream.
        match unsafe { self.get().upstream.as_ref() } {
            None => UpstreamAnswer::Local,
            Some(u) if u.headers_in.status_n != 0 => UpstreamAnswer::Answered,
            Some(_) => UpstreamAnswer::NoAnswer,
        }
    }

    /// Runs the request on from where it waited (a PRECONTENT handler that returned
    /// NGX_AGAIN) through its write event handler, as nginx's cache lock wait handler does:
    /// that is the phase engine, or, if nginx terminated the request meanwhile (its client
    /// went), the termination. Then whatever it posted.
    pub fn resume(&self) {
        // The handler may finish the request and free it: its connection is read first, and
        // the request not touched afterwards.
        let c = self.get().connection;
        let handler = self.get().write_event_handler;
        // SAFETY: r is live and waiting; its write event handler takes it; c is its
        // connection, which outlives the request's finalization within this call.
        unsafe {
            match handler {
                Some(h) => h(self.raw()),
                None => nginx_sys::ngx_http_core_run_phases(self.raw()),
            }
            nginx_sys::ngx_http_run_posted_requests(c);
        }
    }

    /// Marks the request busy while a timer of ours waits (as nginx's cache lock does), so
    /// nginx neither finalizes nor reuses it meanwhile.
    pub fn block(&self, on: bool) {
        let m = self.get_mut().main;
        // SAFETY: the main request of a live request is live.
        unsafe {
            let b = (*m).blocked();
            (*m).set_blocked(if on { b + 1 } else { b.saturating_sub(1) });
        }
    }

    /// A timer event of this request: `handler` runs with the event's `data` set to the
    /// request. Deleted by a pool cleanup if the request ends while it is armed.
    pub fn timer_event(
        &self,
        handler: unsafe extern "C" fn(*mut nginx_sys::ngx_event_t),
    ) -> Option<*mut nginx_sys::ngx_event_t> {
        use nginx_sys::{ngx_event_t, ngx_pool_cleanup_add};
        let pool = self.get().pool;
        // SAFETY: pool allocations of the request; the cleanup runs before the pool is freed.
        unsafe {
            let ev = ngx_pcalloc(pool, std::mem::size_of::<ngx_event_t>()) as *mut ngx_event_t;
            let cln = ngx_pool_cleanup_add(pool, 0);
            if ev.is_null() || cln.is_null() {
                return None;
            }
            (*ev).data = self.raw() as *mut c_void;
            (*ev).handler = Some(handler);
            (*ev).log = self.log();
            (*cln).handler = Some(delete_timer);
            (*cln).data = ev as *mut c_void;
            Some(ev)
        }
    }

    /// Runs `f` on `value` when the request's pool is destroyed (the request has ended).
    pub fn on_cleanup<T>(&self, value: T, f: fn(&mut T)) -> bool {
        struct Cleanup<T> {
            value: T,
            f: fn(&mut T),
        }
        unsafe extern "C" fn run<T>(data: *mut c_void) {
            // SAFETY: data is the Cleanup<T> allocated below in the same pool.
            let c = unsafe { &mut *(data as *mut Cleanup<T>) };
            (c.f)(&mut c.value);
            // SAFETY: the value is dropped once, here; the pool frees its memory.
            unsafe { std::ptr::drop_in_place(&mut c.value) };
        }
        use nginx_sys::ngx_pool_cleanup_add;
        // SAFETY: the cleanup's data is a pool allocation of the right size, written before
        // the handler can run.
        unsafe {
            let cln = ngx_pool_cleanup_add(self.get().pool, std::mem::size_of::<Cleanup<T>>());
            if cln.is_null() {
                return false;
            }
            std::ptr::write((*cln).data as *mut Cleanup<T>, Cleanup { value, f });
            (*cln).handler = Some(run::<T>);
        }
        true
    }

    /// The request body nginx read (memory and temp-file buffers), up to `max` bytes.
    pub fn request_body(&self, max: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        // SAFETY: after the body was read, request_body and its chain are valid.
        let Some(rb) = (unsafe { self.get().request_body.as_ref() }) else {
            return Some(out);
        };
        // SAFETY: as above.
        match unsafe { read_chain(rb.bufs, max, &mut out) } {
            ChainRead::Read { .. } => Some(out),
            ChainRead::TooLarge | ChainRead::Unreadable => None,
        }
    }
}

/// Request headers a revalidation subrequest does not forward: the client's own conditionals
/// and ranges (the client's answer is computed from the stored entry afterwards).
const CLIENT_CONDITIONALS: [&[u8]; 6] = [
    b"if-none-match",
    b"if-modified-since",
    b"if-match",
    b"if-unmodified-since",
    b"if-range",
    b"range",
];

/// How the origin's answer to a subrequest failed, if it did: no answer at all, or a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAnswer {
    /// The handler is not an upstream (a static file): the status is its own.
    Local,
    /// The upstream answered with a status line.
    Answered,
    /// nginx produced the status: the upstream could not be reached or did not answer.
    NoAnswer,
}

/// The typed `headers_out` fields a replayed header may have to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typed {
    Date,
    Etag,
    ContentEncoding,
    Location,
    Expires,
    CacheControl,
}

/// What `Req::set_response_head` writes into the typed fields.
pub struct ReplayedHead<'a> {
    pub status: u16,
    pub content_type: &'a [u8],
    pub content_type_len: usize,
    pub charset: Option<std::ops::Range<usize>>,
    pub content_length: usize,
    pub last_modified: Option<i64>,
}

fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match v[i] {
            b'%' if i + 2 < v.len() => {
                if let (Some(a), Some(b)) = (hex(v[i + 1]), hex(v[i + 2])) {
                    out.push((a * 16 + b) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            percent_decode(b"https%3A%2F%2Fa.com%2Fx%20y"),
            "https://a.com/x y"
        );
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }
}
