//! The few N-API functions pin-core uses, declared by hand (node_api.h).
//! Symbols resolve against the node binary when the addon is loaded.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void, CString};
use std::ptr;

pub type napi_env = *mut c_void;
pub type napi_value = *mut c_void;
pub type napi_callback_info = *mut c_void;
pub type napi_status = i32;
pub type napi_callback = unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value;

pub const NAPI_OK: napi_status = 0;

extern "C" {
    fn napi_create_string_utf8(env: napi_env, s: *const c_char, len: usize, out: *mut napi_value) -> napi_status;
    fn napi_create_double(env: napi_env, v: f64, out: *mut napi_value) -> napi_status;
    fn napi_create_function(
        env: napi_env,
        name: *const c_char,
        len: usize,
        cb: napi_callback,
        data: *mut c_void,
        out: *mut napi_value,
    ) -> napi_status;
    fn napi_set_named_property(env: napi_env, obj: napi_value, name: *const c_char, v: napi_value) -> napi_status;
    fn napi_throw_error(env: napi_env, code: *const c_char, msg: *const c_char) -> napi_status;
}

/// A JS error to throw: `code` becomes `err.code` (an errno name where there is one).
pub struct JsError {
    pub code: String,
    pub message: String,
}

pub type JsResult = Result<napi_value, JsError>;

fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "?")).expect("NUL removed")
}

pub fn string(env: napi_env, s: &str) -> JsResult {
    let mut out = ptr::null_mut();
    // SAFETY: s is valid for s.len() bytes; out is a valid out-pointer.
    let st = unsafe { napi_create_string_utf8(env, s.as_ptr().cast(), s.len(), &mut out) };
    check(st, "napi_create_string_utf8").map(|_| out)
}

pub fn number(env: napi_env, v: f64) -> JsResult {
    let mut out = ptr::null_mut();
    // SAFETY: out is a valid out-pointer.
    let st = unsafe { napi_create_double(env, v, &mut out) };
    check(st, "napi_create_double").map(|_| out)
}

fn check(st: napi_status, what: &str) -> Result<(), JsError> {
    if st == NAPI_OK {
        Ok(())
    } else {
        Err(JsError { code: "ENAPI".into(), message: format!("{what} failed with napi_status {st}") })
    }
}

/// Turns a Rust result into a return value, throwing on error (N-API callbacks cannot unwind).
pub fn finish(env: napi_env, r: JsResult) -> napi_value {
    match r {
        Ok(v) => v,
        Err(e) => {
            let (code, msg) = (cstr(&e.code), cstr(&e.message));
            // SAFETY: both strings are NUL-terminated and outlive the call.
            unsafe { napi_throw_error(env, code.as_ptr(), msg.as_ptr()) };
            ptr::null_mut()
        }
    }
}

/// Adds `name` as a function property of `exports`.
pub fn export(env: napi_env, exports: napi_value, name: &str, cb: napi_callback) -> Result<(), JsError> {
    let n = cstr(name);
    let mut f = ptr::null_mut();
    // SAFETY: n is NUL-terminated (len NAPI_AUTO_LENGTH = usize::MAX); f is a valid out-pointer.
    let st = unsafe { napi_create_function(env, n.as_ptr(), usize::MAX, cb, ptr::null_mut(), &mut f) };
    check(st, "napi_create_function")?;
    // SAFETY: exports and f are live values of this env.
    let st = unsafe { napi_set_named_property(env, exports, n.as_ptr(), f) };
    check(st, "napi_set_named_property")
}
