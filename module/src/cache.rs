//! The cache in front of any content handler: a PRECONTENT-phase lookup that serves hits from
//! its own content handler, and header/body filters that capture misses and commit them with
//! the fill ticket taken at lookup time.

use std::ffi::c_void;

use nginx_sys::{
    ngx_array_push, ngx_chain_t, ngx_conf_t, ngx_http_add_variable, ngx_http_complex_value,
    ngx_http_discard_request_body, ngx_http_handler_pt, ngx_http_output_body_filter_pt,
    ngx_http_output_header_filter_pt, ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE,
    ngx_http_request_t, ngx_http_send_header, ngx_http_variable_value_t, ngx_int_t, ngx_pnalloc,
    ngx_pool_t, ngx_str_t, ngx_uint_t, NGX_DECLINED, NGX_ERROR, NGX_HTTP_DELETE, NGX_HTTP_GET,
    NGX_HTTP_HEAD, NGX_HTTP_PATCH, NGX_HTTP_POST, NGX_HTTP_PUT, NGX_HTTP_VAR_NOCACHEABLE,
    NGX_LOG_WARN, NGX_OK,
};
use ngx::core::Pool;
use ngx::http::{HttpModule, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_log_error;

use super::compat::CacheControlLines;
use super::config::{store, LocConf};
use super::util::{
    bytes, fault_log_allowed, guard, header_in, headers, loc_conf, local_port, push_header,
    push_pool_header, send_body,
};
use super::{admin, builder, Module};
use ngx_http_pagespeed_module::http::cache_control::{
    parse_http_date, storable, CacheControl, ResponseFacts,
};
use ngx_http_pagespeed_module::http::meta::{normalize_vary_value, MetaView, StoredMeta};
use ngx_http_pagespeed_module::http::url::{custom_key, default_key, split_host, Url};
use ngx_http_pagespeed_module::store::{
    Alternate, CommitOutcome, FillTicket, Key, Lookup, PurgeState, ScopeSet, Sink,
};
use ngx_http_pagespeed_module::transform::builders::{transformable, Job, SOURCE};
use ngx_http_pagespeed_module::variant::{
    accept_ch, on_fill, score, vary_headers, wanted, Capabilities, CapabilityHeaders, Descriptor,
    Encoding, SourceKind,
};

/// What the cache did for a request: `$pagespeed_cache_status` and `X-Cache` say this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Expired,
    Stale,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// `X-Cache` only says whether the bytes came from the cache.
    fn x_cache(self) -> &'static [u8] {
        match self {
            CacheStatus::Hit => b"HIT",
            CacheStatus::Bypass => b"BYPASS",
            _ => b"MISS",
        }
    }
}

/// A hit: meta and body copied into request pool memory, meta decoded.
/// A hit: meta then body copied into request pool memory (read in place with `MetaView`).
struct Served {
    meta: *const u8,
    meta_len: usize,
    body: *mut u8,
    body_len: usize,
}

impl Served {
    /// # Safety
    /// The request (and so its pool) must still be live.
    unsafe fn meta(&self) -> Option<MetaView<'_>> {
        // SAFETY: meta_len bytes of pool memory written by the lookup.
        MetaView::parse(unsafe { std::slice::from_raw_parts(self.meta, self.meta_len) })
    }
}

/// Who a request is, borrowed from it: nginx has already lowercased the host and dropped its
/// port and trailing dot; the port is the listener's.
struct Identity<'a> {
    scheme: &'static str,
    host: std::borrow::Cow<'a, [u8]>,
    uri: &'a [u8],
    port: u16,
}

impl Identity<'_> {
    /// The owned URL, built only when a miss, a build or an invalidation needs it.
    fn url(&self) -> Url {
        Url {
            scheme: self.scheme.into(),
            host: String::from_utf8_lossy(&self.host).into_owned(),
            path: String::from_utf8_lossy(self.uri).into_owned(),
            port: Some(self.port),
        }
    }
}

/// A miss being filled from the location's own handler.
struct Fill {
    ticket: FillTicket,
    key: Key,
    url: Url,
    /// Set by the header filter once the response is known to be storable.
    store: Option<Pending>,
}

struct Pending {
    descriptor: u32,
    /// What the original is (from its Content-Type): decides which variants it gets.
    kind: SourceKind,
    meta: Vec<u8>,
    scopes: ScopeSet,
    body: Vec<u8>,
    max: u64,
}

pub struct RequestCtx {
    status: CacheStatus,
    served: Option<Served>,
    fill: Option<Fill>,
    /// An unsafe method's target: invalidated if the response is not an error (RFC 9111 4.4).
    invalidate: Option<(Key, Url)>,
}

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY_FILTER: ngx_http_output_body_filter_pt = None;

/// # Safety
/// `r` must be a live request.
unsafe fn ctx<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut RequestCtx> {
    // SAFETY: ctx[ctx_index] is null or the RequestCtx this module allocated in r's pool.
    unsafe { (*(*r).ctx.add(Module::module().ctx_index) as *mut RequestCtx).as_mut() }
}

/// # Safety
/// `r` must be a live request.
unsafe fn set_ctx<'a>(r: *mut ngx_http_request_t, c: RequestCtx) -> Option<&'a mut RequestCtx> {
    // SAFETY: the pool outlives every use of the context; allocate registers a cleanup that
    // drops it (and its Vecs) with the pool.
    unsafe {
        let p = Pool::from_ngx_pool((*r).pool).allocate(c);
        if p.is_null() {
            return None;
        }
        *(*r).ctx.add(Module::module().ctx_index) = p as *mut c_void;
        p.as_mut()
    }
}

/// Registers `$pagespeed_cache_status`.
///
/// # Safety
/// `cf` is the configuration being parsed (preconfiguration).
pub unsafe fn add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    let mut name = ngx_str_t {
        len: 22,
        data: c"pagespeed_cache_status".as_ptr() as *mut u8,
    };
    // SAFETY: nginx copies the name; the variable lives in the configuration.
    unsafe {
        let v = ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t);
        if v.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*v).get_handler = Some(cache_status_variable);
    }
    NGX_OK as ngx_int_t
}

extern "C" fn cache_status_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live request and a value to fill.
    unsafe {
        let v = &mut *v;
        match ctx(r) {
            Some(c) => {
                let s = c.status.as_str();
                v.set_len(s.len() as u32);
                v.set_valid(1);
                v.set_no_cacheable(1);
                v.set_not_found(0);
                v.data = s.as_ptr() as *mut u8;
            }
            None => v.set_not_found(1),
        }
    }
    NGX_OK as ngx_int_t
}

/// Installs the lookup handler and the capture filters (postconfiguration).
///
/// # Safety
/// `cf` is the http configuration being parsed.
pub unsafe fn install(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: the core main conf exists during http postconfiguration; the filter statics are
    // only written here, in the single-threaded master.
    unsafe {
        let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(&*cf) else {
            return NGX_ERROR as ngx_int_t;
        };
        let phase = &mut cmcf.phases[ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE as usize];
        let h = ngx_array_push(&mut phase.handlers) as *mut ngx_http_handler_pt;
        if h.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        *h = Some(precontent_handler);
        NEXT_HEADER_FILTER = nginx_sys::ngx_http_top_header_filter;
        nginx_sys::ngx_http_top_header_filter = Some(header_filter);
        NEXT_BODY_FILTER = nginx_sys::ngx_http_top_body_filter;
        nginx_sys::ngx_http_top_body_filter = Some(body_filter);
    }
    NGX_OK as ngx_int_t
}

/// Copies a lookup's bytes straight into request pool memory.
struct PoolSink {
    pool: *mut ngx_pool_t,
    ptr: *mut u8,
}

impl Sink for PoolSink {
    fn reserve(&mut self, len: usize) -> Option<&mut [u8]> {
        // SAFETY: a fresh pool allocation of len bytes, valid for the request's lifetime.
        unsafe {
            self.ptr = ngx_pnalloc(self.pool, len.max(1)) as *mut u8;
            if self.ptr.is_null() {
                return None;
            }
            Some(std::slice::from_raw_parts_mut(self.ptr, len))
        }
    }
}

/// The request's key and identity.
///
/// # Safety
/// `r` must be a live request.
unsafe fn request_identity<'a>(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
) -> Option<(Key, Identity<'a>)> {
    // SAFETY: connection and header fields of a live request.
    unsafe {
        let scheme = if (*(*r).connection).ssl.is_null() {
            "http"
        } else {
            "https"
        };
        let server = bytes(&(*r).headers_in.server);
        // nginx normalized a Host header; a configured server name may still need it.
        let host = if server.iter().any(|c| c.is_ascii_uppercase() || *c == b':')
            || server.ends_with(b".")
        {
            std::borrow::Cow::Owned(
                split_host(&String::from_utf8_lossy(server))
                    .host
                    .into_bytes(),
            )
        } else {
            std::borrow::Cow::Borrowed(server)
        };
        let id = Identity {
            scheme,
            host,
            uri: bytes(&(*r).unparsed_uri),
            port: local_port(r),
        };
        let key = if lcf.key.is_null() {
            default_key(scheme, &id.host, id.port, id.uri)
        } else {
            let mut v = ngx_str_t::empty();
            if ngx_http_complex_value(r, lcf.key, &mut v) != NGX_OK as ngx_int_t {
                return None;
            }
            custom_key(bytes(&v))
        };
        Some((key, id))
    }
}

extern "C" fn precontent_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    guard(NGX_DECLINED as ngx_int_t, || unsafe { precontent(r) })
}

unsafe fn precontent(r: *mut ngx_http_request_t) -> ngx_int_t {
    let declined = NGX_DECLINED as ngx_int_t;
    // SAFETY: r is live for the whole call.
    unsafe {
        let lcf = loc_conf(r);
        let purge_method = lcf.purge_method();
        if !purge_method.is_empty() && bytes(&(*r).method_name) == purge_method && r == (*r).main {
            (*r).content_handler = Some(admin::purge_method_handler);
            return declined;
        }
        // Subrequests (SSI, mirror, auth_request) neither read nor fill the cache.
        if lcf.cache != 1 || r != (*r).main || ctx(r).is_some() {
            return declined;
        }
        let Some(store) = store() else {
            return declined;
        };
        let method = (*r).method as u32;
        if method != NGX_HTTP_GET && method != NGX_HTTP_HEAD {
            let unsafe_method =
                method & (NGX_HTTP_POST | NGX_HTTP_PUT | NGX_HTTP_DELETE | NGX_HTTP_PATCH) != 0;
            let invalidate = if unsafe_method {
                request_identity(r, lcf).map(|(k, id)| (k, id.url()))
            } else {
                None
            };
            let c = RequestCtx {
                status: CacheStatus::Bypass,
                served: None,
                fill: None,
                invalidate,
            };
            set_ctx(r, c);
            return declined;
        }
        let Some((key, id)) = request_identity(r, lcf) else {
            return declined;
        };
        let request_header = |name: &str| header_in(r, name);
        // One walk over the request headers, borrowing the values this location's policy
        // selects on (a plain cache reads Accept-Encoding only).
        let policy = lcf.variants();
        let mut wanted_headers = CapabilityHeaders::default();
        for h in headers(&(*r).headers_in.headers) {
            if !h.lowcase_key.is_null() {
                let name = std::slice::from_raw_parts(h.lowcase_key, h.key.len);
                if policy.uses_header(name) {
                    wanted_headers.offer(name, bytes(&h.value));
                }
            }
        }
        let caps = Capabilities::from_headers(&wanted_headers);
        let mut present = Present::default();
        let select = |d: u32, meta: &[u8]| {
            present.push(d);
            let d = Descriptor(d);
            let s = score(d, &caps)?;
            (!d.origin_varies() || StoredMeta::vary_matches(meta, &request_header)).then_some(s)
        };
        let mut sink = PoolSink {
            pool: (*r).pool,
            ptr: std::ptr::null_mut(),
        };
        let now = nginx_sys::ngx_time() as i64;
        let status = match store.lookup(&key, select, &mut sink) {
            Lookup::Hit(hit) => {
                let meta_bytes = std::slice::from_raw_parts(sink.ptr, hit.meta_len);
                match MetaView::parse(meta_bytes) {
                    Some(meta)
                        if hit.purge_state == PurgeState::Current && now < meta.expires_at =>
                    {
                        request_build(
                            lcf,
                            &key,
                            &id,
                            &caps,
                            present.as_slice(),
                            meta.source_type(),
                        );
                        let served = Served {
                            meta: sink.ptr,
                            meta_len: hit.meta_len,
                            body: sink.ptr.add(hit.meta_len),
                            body_len: hit.body_len,
                        };
                        let c = RequestCtx {
                            status: CacheStatus::Hit,
                            served: Some(served),
                            fill: None,
                            invalidate: None,
                        };
                        if set_ctx(r, c).is_some() {
                            (*r).content_handler = Some(serve_handler);
                        }
                        return declined;
                    }
                    Some(_) if hit.purge_state == PurgeState::SoftPurged => CacheStatus::Stale,
                    Some(_) => CacheStatus::Expired,
                    None => {
                        if fault_log_allowed() {
                            ngx_log_error!(
                                NGX_LOG_WARN,
                                (*(*r).connection).log,
                                "pagespeed cache: undecodable entry metadata, treated as a miss"
                            );
                        }
                        CacheStatus::Miss
                    }
                }
            }
            Lookup::Miss => CacheStatus::Miss,
            Lookup::Fault(f) => {
                if fault_log_allowed() {
                    ngx_log_error!(
                        NGX_LOG_WARN,
                        (*(*r).connection).log,
                        "pagespeed cache: {f}; serving from origin"
                    );
                }
                CacheStatus::Miss
            }
        };
        // Only GET fills: a HEAD response has no body to store.
        let fill = (method == NGX_HTTP_GET).then(|| Fill {
            ticket: store.begin_fill(),
            key,
            url: id.url(),
            store: None,
        });
        set_ctx(
            r,
            RequestCtx {
                status,
                served: None,
                fill,
                invalidate: None,
            },
        );
        declined
    }
}

extern "C" fn serve_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    guard(NGX_ERROR as ngx_int_t, || unsafe { serve(r) })
}

/// Sends a cached alternate: status, stored headers, `X-Cache: HIT`, `Age`, then the body.
/// Conditional requests (304), HEAD and Range (206) are handled by nginx's own filters
/// below, from the validators and body set here.
unsafe fn serve(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live; the ctx and its pool buffers live as long as the request.
    unsafe {
        let Some(c) = ctx(r) else {
            return NGX_ERROR as ngx_int_t;
        };
        let Some(s) = c.served.as_ref() else {
            return NGX_ERROR as ngx_int_t;
        };
        let rc = ngx_http_discard_request_body(r);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        // The metadata's strings already live in this request's pool: pointed at, not copied.
        let Some(m) = s.meta() else {
            return NGX_ERROR as ngx_int_t;
        };
        let out = &mut (*r).headers_out;
        out.status = m.status as ngx_uint_t;
        let ct = ngx_str_t {
            len: m.content_type.len(),
            data: m.content_type.as_ptr() as *mut u8,
        };
        // Split as the upstream module splits a Content-Type, so that the filters below us
        // (gzip_types, ssi_types, charset) match the HIT as they matched the MISS.
        let (type_len, charset) = split_content_type(m.content_type);
        out.content_type = ct;
        out.content_type_len = type_len;
        out.content_type_lowcase = std::ptr::null_mut();
        if let Some(cs) = charset {
            out.charset = ngx_str_t {
                len: cs.len(),
                data: ct.data.add(cs.start),
            };
        }
        out.content_length_n = s.body_len as i64;
        out.last_modified_time = if m.last_modified >= 0 {
            m.last_modified as _
        } else {
            -1
        };
        let mut cache_control = CacheControlLines::default();
        for (name, value) in m.headers() {
            let Some(h) = push_pool_header(r, name, value) else {
                return NGX_ERROR as ngx_int_t;
            };
            let out = &mut (*r).headers_out;
            let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
            if is(b"etag") {
                out.etag = h;
            } else if is(b"content-encoding") {
                out.content_encoding = h;
            } else if is(b"location") {
                // As the upstream module does: a relative Location is not linked, so nginx's
                // header filter does not make it absolute with this server's scheme, name and
                // port (which behind a proxy or port mapping are not the public ones).
                if !value.starts_with(b"/") {
                    out.location = h;
                }
            } else if is(b"expires") {
                out.expires = h;
            } else if is(b"cache-control") {
                // Linked so `expires`/`add_header` below us see every Cache-Control line.
                if !cache_control.push(r, h) {
                    return NGX_ERROR as ngx_int_t;
                }
            }
        }
        if !variant_headers(r, loc_conf(r), m.source_type()) {
            return NGX_ERROR as ngx_int_t;
        }
        let age = m.age_at(nginx_sys::ngx_time() as i64).to_string();
        if push_header(r, b"X-Cache", CacheStatus::Hit.x_cache()).is_none()
            || push_header(r, b"Age", age.as_bytes()).is_none()
        {
            return NGX_ERROR as ngx_int_t;
        }
        (*r).set_allow_ranges(1);
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return rc;
        }
        send_body(r, s.body, s.body_len)
    }
}

/// The media type's length and the `charset` parameter's value within a Content-Type, the
/// way `ngx_http_upstream_copy_content_type` computes `content_type_len` and `charset`: the
/// type ends at the `;` that starts a `charset=` parameter (surrounding quotes dropped);
/// without one the whole value counts as the type.
fn split_content_type(v: &[u8]) -> (usize, Option<std::ops::Range<usize>>) {
    let mut i = 0;
    while i < v.len() {
        if v[i] != b';' {
            i += 1;
            continue;
        }
        let semi = i;
        i += 1;
        while i < v.len() && v[i] == b' ' {
            i += 1;
        }
        if v.len() - i < 8 || !v[i..i + 8].eq_ignore_ascii_case(b"charset=") {
            continue;
        }
        let mut start = i + 8;
        if v.get(start) == Some(&b'"') {
            start += 1;
        }
        let mut end = v.len();
        if end > start && v[end - 1] == b'"' {
            end -= 1;
        }
        return (semi, Some(start..end.max(start)));
    }
    (v.len(), None)
}

/// Splits `Surrogate-Key` (space separated) and `Cache-Tag` (comma separated) values.
fn split_tags(v: &[u8], out: &mut Vec<String>) {
    for t in v.split(|&c| c == b',' || c == b' ' || c == b'\t') {
        if !t.is_empty() && out.len() < 256 {
            out.push(String::from_utf8_lossy(t).into_owned());
        }
    }
}

/// Response headers that are not replayed from the cache: hop-by-hop ones, the ones nginx
/// generates itself, and the ones carried in typed fields.
fn replayed(lower: &[u8]) -> bool {
    !matches!(
        lower,
        b"connection"
            | b"keep-alive"
            | b"proxy-authenticate"
            | b"proxy-authorization"
            | b"te"
            | b"trailer"
            | b"transfer-encoding"
            | b"upgrade"
            | b"date"
            | b"server"
            | b"content-length"
            | b"content-type"
            | b"last-modified"
            | b"age"
            | b"x-cache"
            | b"set-cookie"
            | b"accept-ranges"
    )
}

extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    guard(NGX_ERROR as ngx_int_t, || unsafe {
        decide(r);
        match NEXT_HEADER_FILTER {
            Some(next) => next(r),
            None => NGX_ERROR as ngx_int_t,
        }
    })
}

/// Decides whether the response being sent is stored, and says so in `X-Cache`.
unsafe fn decide(r: *mut ngx_http_request_t) {
    // SAFETY: r is live; we only read headers_out and push to it before it is sent.
    unsafe {
        if r != (*r).main {
            return;
        }
        let Some(c) = ctx(r) else { return };
        if c.status == CacheStatus::Hit {
            return;
        }
        let Some(store) = store() else { return };
        let lcf = loc_conf(r);
        if let Some((key, url)) = c.invalidate.take() {
            if (*r).headers_out.status < 400 {
                invalidate(r, store, &key, &url);
            }
        }
        if let Some(fill) = c.fill.as_mut() {
            match pending_from_response(r, lcf, store, fill) {
                Some(p) => fill.store = Some(p),
                None => {
                    c.fill = None;
                    c.status = CacheStatus::Bypass;
                }
            }
        }
        // After the capture read the origin's headers: our Vary is not the origin's.
        if c.status != CacheStatus::Bypass || c.fill.is_some() {
            let ct = bytes(&(*r).headers_out.content_type).to_vec();
            variant_headers(r, lcf, &ct);
        }
        let _ = push_header(r, b"X-Cache", c.status.x_cache());
    }
}

/// Builds what will be committed if the response is storable.
unsafe fn pending_from_response(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    store: &ngx_http_pagespeed_module::store::Store,
    fill: &Fill,
) -> Option<Pending> {
    // SAFETY: r is live.
    unsafe {
        let out = &(*r).headers_out;
        let mut cc_values: Vec<&[u8]> = Vec::new();
        let mut facts = ResponseFacts {
            status: out.status as u16,
            ..Default::default()
        };
        let mut vary_names: Vec<String> = Vec::new();
        let mut tags = Vec::new();
        let mut encoding = Encoding::Identity;
        let mut replay = Vec::new();
        for h in headers(&out.headers) {
            let name = bytes(&h.key);
            let value = bytes(&h.value);
            let lower = name.to_ascii_lowercase();
            match lower.as_slice() {
                b"cache-control" => cc_values.push(value),
                b"set-cookie" => facts.set_cookie = true,
                b"vary" => {
                    for v in value.split(|&c| c == b',') {
                        let v = String::from_utf8_lossy(v).trim().to_ascii_lowercase();
                        if v == "*" {
                            facts.vary.push("*");
                        } else if !v.is_empty()
                            && v != "accept-encoding"
                            && !vary_names.contains(&v)
                        {
                            // Accept-Encoding is honoured by the descriptor's encoding instead.
                            vary_names.push(v);
                        }
                    }
                }
                b"expires" => facts.expires = Some(parse_http_date(value).unwrap_or(0)),
                b"date" => facts.date = parse_http_date(value),
                b"age" => facts.age = std::str::from_utf8(value).ok()?.trim().parse().unwrap_or(0),
                b"surrogate-key" | b"cache-tag" => split_tags(value, &mut tags),
                b"content-encoding" => encoding = Encoding::from_header(value),
                _ => {}
            }
            if replayed(&lower) {
                replay.push((name.to_vec(), value.to_vec()));
            }
        }
        facts.cache_control = CacheControl::parse(&cc_values);
        facts.request_authorization = !(*r).headers_in.authorization.is_null();
        let req_cc = header_in(r, "cache-control").unwrap_or_default();
        facts.request_no_store = CacheControl::parse(&[&req_cc]).no_store;
        let max = (lcf.max_object as u64).min(store.max_object());
        facts.content_length = (out.content_length_n >= 0).then_some(out.content_length_n as u64);
        let now = nginx_sys::ngx_time() as i64;
        let lifetime = storable(&facts, lcf.statuses(), max, lcf.valid as u64, now).ok()?;

        vary_names.sort();
        let vary: Vec<(String, Vec<u8>)> = vary_names
            .into_iter()
            .map(|n| {
                let v = header_in(r, &n)
                    .map(|v| normalize_vary_value(&v))
                    .unwrap_or_default();
                (n, v)
            })
            .collect();
        let vary_hash = (!vary.is_empty()).then(|| {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for (n, v) in &vary {
                h.update(&(n.len() as u64).to_le_bytes());
                h.update(n.as_bytes());
                h.update(&(v.len() as u64).to_le_bytes());
                h.update(v);
            }
            h.digest() as u16
        });
        let meta = StoredMeta {
            vary,
            status: out.status as u16,
            stored_at: now,
            expires_at: now.saturating_add(lifetime as i64),
            last_modified: if out.last_modified_time >= 0 {
                out.last_modified_time
            } else {
                -1
            },
            age: facts.age.min(u32::MAX as u64) as u32,
            content_type: bytes(&out.content_type).to_vec(),
            source_type: Vec::new(),
            headers: replay,
        };
        let meta = meta.encode()?;
        let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let scopes = store.buckets().scopes_for(&fill.url.id(), &tag_refs);
        let capacity = facts.content_length.unwrap_or(0).min(max) as usize;
        Some(Pending {
            descriptor: Descriptor::original(encoding, vary_hash).0,
            kind: SourceKind::from_content_type(bytes(&out.content_type)),
            meta,
            scopes,
            body: Vec::with_capacity(capacity),
            max,
        })
    }
}

extern "C" fn body_filter(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request and its output chain.
    guard(NGX_ERROR as ngx_int_t, || unsafe {
        capture(r, input);
        match NEXT_BODY_FILTER {
            Some(next) => next(r, input),
            None => NGX_ERROR as ngx_int_t,
        }
    })
}

/// Copies the body as it passes (before the next filters consume the buffers) and commits
/// when the last buffer has been seen.
unsafe fn capture(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) {
    // SAFETY: r is live; the chain and its buffers are valid for this call.
    unsafe {
        if r != (*r).main {
            return;
        }
        let Some(c) = ctx(r) else { return };
        let Some(fill) = c.fill.as_mut() else { return };
        let Some(p) = fill.store.as_mut() else { return };
        let mut done = false;
        let mut cl = input;
        while let Some(link) = cl.as_ref() {
            cl = link.next;
            let Some(b) = link.buf.as_ref() else { continue };
            let in_memory = b.temporary() != 0 || b.memory() != 0 || b.mmap() != 0;
            let ok = if in_memory {
                let len = b.last.offset_from(b.pos).max(0) as usize;
                append(p, std::slice::from_raw_parts(b.pos, len))
            } else if b.in_file() != 0 && !b.file.is_null() {
                read_file_part(p, (*b.file).fd, b.file_pos, b.file_last)
            } else {
                true
            };
            if !ok {
                // Over the size limit or unreadable: this response is not stored.
                fill.store = None;
                return;
            }
            if b.last_buf() != 0 {
                done = true;
            }
        }
        if done {
            if let (Some(fill), Some(store)) = (c.fill.take(), store()) {
                commit(r, store, fill);
            }
        }
    }
}

fn append(p: &mut Pending, data: &[u8]) -> bool {
    if (p.body.len() + data.len()) as u64 > p.max {
        return false;
    }
    p.body.extend_from_slice(data);
    true
}

fn read_file_part(p: &mut Pending, fd: i32, start: i64, end: i64) -> bool {
    let len = (end - start).max(0) as u64;
    if p.body.len() as u64 + len > p.max {
        return false;
    }
    let old = p.body.len();
    p.body.resize(old + len as usize, 0);
    let mut done = 0usize;
    while done < len as usize {
        let buf = &mut p.body[old + done..];
        // SAFETY: buf is a valid writable slice; fd is the buffer's open file.
        let n = unsafe {
            libc::pread(
                fd,
                buf.as_mut_ptr() as *mut c_void,
                buf.len(),
                start + done as i64,
            )
        };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// The descriptors a lookup saw, without allocating (a key holds at most 64 alternates).
struct Present {
    seen: [u32; 72],
    len: usize,
}

impl Default for Present {
    fn default() -> Present {
        Present {
            seen: [0; 72],
            len: 0,
        }
    }
}

impl Present {
    fn push(&mut self, d: u32) {
        if self.len < self.seen.len() {
            self.seen[self.len] = d;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[u32] {
        &self.seen[..self.len]
    }
}

/// Queues the variant this client would be best served by, when its source is cached and the
/// variant is neither stored nor declined yet. The client gets the best stored alternate now
/// (e.g. WebP while its AVIF is built).
fn request_build(
    lcf: &LocConf,
    key: &Key,
    id: &Identity,
    caps: &Capabilities,
    present: &[u32],
    source_type: &[u8],
) {
    let policy = lcf.variants();
    if !policy.any() || !present.contains(&SOURCE.0) {
        return;
    }
    let Some(target) = wanted(SourceKind::from_content_type(source_type), caps, &policy) else {
        return;
    };
    if present.contains(&target.0) || present.contains(&Descriptor::declined(target).0) {
        return;
    }
    let url = String::from_utf8_lossy(id.uri).into_owned();
    builder::submit(Job {
        key: *key,
        target,
        url,
    });
}

/// Adds the `Vary` (and `Accept-CH`) a key whose original has `source_type` needs under the
/// location's variant policy: the same on the original and on every variant built from it,
/// whatever type the served alternate has. False if the pool ran out.
///
/// # Safety
/// `r` must be a live request whose header has not been sent.
unsafe fn variant_headers(r: *mut ngx_http_request_t, lcf: &LocConf, source_type: &[u8]) -> bool {
    let policy = lcf.variants();
    if !policy.any() {
        return true;
    }
    let vary = vary_headers(SourceKind::from_content_type(source_type), &policy);
    // SAFETY: as documented.
    unsafe {
        if !vary.is_empty() && push_header(r, b"Vary", vary.join(", ").as_bytes()).is_none() {
            return false;
        }
        if let Some(ch) = accept_ch(&policy) {
            if push_header(r, b"Accept-CH", ch.as_bytes()).is_none() {
                return false;
            }
        }
    }
    true
}

/// RFC 9111 4.4: a non-error response to an unsafe method invalidates its target URI.
unsafe fn invalidate(
    r: *mut ngx_http_request_t,
    store: &ngx_http_pagespeed_module::store::Store,
    key: &Key,
    url: &Url,
) {
    if let Err(f) = store.purge_url(&[url.id()], &[], &[*key], false) {
        if fault_log_allowed() {
            // SAFETY: r is live.
            let log = unsafe { (*(*r).connection).log };
            ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "pagespeed cache: invalidation after {} not applied: {f}",
                url.path
            );
        }
    }
}

unsafe fn commit(
    r: *mut ngx_http_request_t,
    store: &ngx_http_pagespeed_module::store::Store,
    fill: Fill,
) {
    let Some(p) = fill.store else { return };
    let alt = Alternate {
        descriptor: p.descriptor,
        scopes: &p.scopes,
        meta: &p.meta,
        body: &p.body,
    };
    match store.commit(fill.ticket, &fill.key, &alt) {
        CommitOutcome::Stored => {
            // SAFETY: r is live.
            let lcf = unsafe { loc_conf(r) };
            let policy = lcf.variants();
            if lcf.build_on_fill == 1 && transformable(Descriptor(p.descriptor)) {
                for target in on_fill(p.kind, &policy) {
                    builder::submit(Job {
                        key: fill.key,
                        target,
                        url: fill.url.path.clone(),
                    });
                }
            }
        }
        CommitOutcome::Fenced | CommitOutcome::TooLarge => {}
        CommitOutcome::Fault(f) => {
            if fault_log_allowed() {
                // SAFETY: r is live.
                let log = unsafe { (*(*r).connection).log };
                ngx_log_error!(NGX_LOG_WARN, log, "pagespeed cache: fill not stored: {f}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_content_type;

    #[test]
    fn content_type_splits_like_the_upstream_module() {
        assert_eq!(split_content_type(b"text/html"), (9, None));
        assert_eq!(
            split_content_type(b"text/html; charset=utf-8"),
            (9, Some(19..24))
        );
        assert_eq!(
            split_content_type(b"text/html;CHARSET=\"koi8-r\""),
            (9, Some(19..25))
        );
        assert_eq!(split_content_type(b"text/plain; format=flowed"), (25, None));
        assert_eq!(
            split_content_type(b"a/b; x=1; charset=utf-8"),
            (8, Some(18..23))
        );
        assert_eq!(
            split_content_type(b"text/html; charset="),
            (9, Some(19..19))
        );
        assert_eq!(
            split_content_type(b"text/html; charset=\""),
            (9, Some(20..20))
        );
        assert_eq!(split_content_type(b""), (0, None));
    }
}
