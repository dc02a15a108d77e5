//! The nginx APIs that differ between the versions the module builds against (1.22 and later).
//!
//! Selected by the `nginx1_23_0` cfg that build.rs derives from the nginx being built against:
//! 1.23.0 gave `ngx_table_elt_t` a `next` link for repeated headers and turned
//! `headers_out.cache_control` from an array of pointers into the head of such a list.

use nginx_sys::{ngx_http_request_t, ngx_table_elt_t};

/// Makes a freshly pushed header a list of one: its `next` link is cleared.
///
/// # Safety
/// `h` must point to a header element the caller owns (just pushed onto a headers list).
#[cfg(nginx1_23_0)]
pub unsafe fn single_header(h: *mut ngx_table_elt_t) {
    // SAFETY: the caller passes a valid, exclusively used element.
    unsafe { (*h).next = std::ptr::null_mut() }
}

/// Before 1.23 a header element has no link: nothing to do.
///
/// # Safety
/// None needed; `unsafe` to keep one signature across versions.
#[cfg(not(nginx1_23_0))]
pub unsafe fn single_header(_h: *mut ngx_table_elt_t) {}

/// Collects the Cache-Control lines of a response being built into `headers_out.cache_control`,
/// in order, so filters below the module (`expires`, `add_header`) see all of them.
#[derive(Default)]
pub struct CacheControlLines {
    /// The last line linked (1.23+ links each line to the next).
    #[cfg(nginx1_23_0)]
    tail: Option<*mut ngx_table_elt_t>,
}

impl CacheControlLines {
    /// Adds `h` (already in `headers_out.headers`) after the lines added before. Always true
    /// here; false only where the lines need memory (1.22).
    ///
    /// # Safety
    /// `r` must be a live request whose header has not been sent; `h` an element of its
    /// `headers_out.headers` that lives as long as the request.
    #[cfg(nginx1_23_0)]
    pub unsafe fn push(&mut self, r: *mut ngx_http_request_t, h: *mut ngx_table_elt_t) -> bool {
        // SAFETY: `r` is live; `tail` is a header of this request pushed by an earlier call.
        unsafe {
            match self.tail {
                None => (*r).headers_out.cache_control = h,
                Some(t) => (*t).next = h,
            }
        }
        self.tail = Some(h);
        true
    }

    /// Adds `h` (already in `headers_out.headers`) to the array of Cache-Control pointers
    /// 1.22 keeps. False when the request pool is out of memory.
    ///
    /// # Safety
    /// `r` must be a live request whose header has not been sent; `h` an element of its
    /// `headers_out.headers` that lives as long as the request.
    #[cfg(not(nginx1_23_0))]
    pub unsafe fn push(&mut self, r: *mut ngx_http_request_t, h: *mut ngx_table_elt_t) -> bool {
        use nginx_sys::{ngx_array_push, ngx_palloc};
        let size = std::mem::size_of::<*mut ngx_table_elt_t>();
        // SAFETY: `r` is live. The array is set up from the request pool on first use, as
        // nginx's own upstream and expires code do (ngx_array_init is an inline function
        // bindgen does not bind), and holds pointers to header elements.
        unsafe {
            let a = &mut (*r).headers_out.cache_control;
            if a.elts.is_null() {
                let elts = ngx_palloc((*r).pool, 2 * size);
                if elts.is_null() {
                    return false;
                }
                a.elts = elts;
                a.nelts = 0;
                a.size = size;
                a.nalloc = 2;
                a.pool = (*r).pool;
            }
            let slot = ngx_array_push(a) as *mut *mut ngx_table_elt_t;
            if slot.is_null() {
                return false;
            }
            *slot = h;
        }
        true
    }
}
