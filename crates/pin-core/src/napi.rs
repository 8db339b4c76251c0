//! The few N-API functions pin-core uses, declared by hand (node_api.h).
//! Symbols resolve against the node binary when the addon is loaded.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

pub type napi_env = *mut c_void;
pub type napi_value = *mut c_void;
pub type napi_callback_info = *mut c_void;
pub type napi_status = i32;
pub type napi_callback = unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value;

pub const NAPI_OK: napi_status = 0;
const NAPI_AUTO_LENGTH: usize = usize::MAX;

// napi_valuetype
pub const NAPI_UNDEFINED: i32 = 0;
pub const NAPI_NULL: i32 = 1;
pub const NAPI_BIGINT: i32 = 9;

// napi_typedarray_type
pub const NAPI_BIGUINT64_ARRAY: i32 = 10;

extern "C" {
    fn napi_get_cb_info(
        env: napi_env,
        info: napi_callback_info,
        argc: *mut usize,
        argv: *mut napi_value,
        this: *mut napi_value,
        data: *mut *mut c_void,
    ) -> napi_status;
    fn napi_typeof(env: napi_env, v: napi_value, out: *mut i32) -> napi_status;
    fn napi_get_undefined(env: napi_env, out: *mut napi_value) -> napi_status;
    fn napi_get_null(env: napi_env, out: *mut napi_value) -> napi_status;
    fn napi_get_boolean(env: napi_env, v: bool, out: *mut napi_value) -> napi_status;
    fn napi_get_value_bool(env: napi_env, v: napi_value, out: *mut bool) -> napi_status;
    fn napi_create_string_utf8(env: napi_env, s: *const c_char, len: usize, out: *mut napi_value) -> napi_status;
    fn napi_get_value_string_utf8(env: napi_env, v: napi_value, buf: *mut c_char, size: usize, out: *mut usize) -> napi_status;
    fn napi_create_double(env: napi_env, v: f64, out: *mut napi_value) -> napi_status;
    fn napi_get_value_double(env: napi_env, v: napi_value, out: *mut f64) -> napi_status;
    fn napi_create_bigint_uint64(env: napi_env, v: u64, out: *mut napi_value) -> napi_status;
    fn napi_get_value_bigint_uint64(env: napi_env, v: napi_value, out: *mut u64, lossless: *mut bool) -> napi_status;
    fn napi_create_object(env: napi_env, out: *mut napi_value) -> napi_status;
    fn napi_create_array_with_length(env: napi_env, len: usize, out: *mut napi_value) -> napi_status;
    fn napi_get_array_length(env: napi_env, v: napi_value, out: *mut u32) -> napi_status;
    fn napi_get_element(env: napi_env, v: napi_value, i: u32, out: *mut napi_value) -> napi_status;
    fn napi_set_element(env: napi_env, v: napi_value, i: u32, e: napi_value) -> napi_status;
    fn napi_get_named_property(env: napi_env, obj: napi_value, name: *const c_char, out: *mut napi_value) -> napi_status;
    fn napi_set_named_property(env: napi_env, obj: napi_value, name: *const c_char, v: napi_value) -> napi_status;
    fn napi_create_function(
        env: napi_env,
        name: *const c_char,
        len: usize,
        cb: napi_callback,
        data: *mut c_void,
        out: *mut napi_value,
    ) -> napi_status;
    fn napi_get_typedarray_info(
        env: napi_env,
        v: napi_value,
        kind: *mut i32,
        length: *mut usize,
        data: *mut *mut c_void,
        arraybuffer: *mut napi_value,
        byte_offset: *mut usize,
    ) -> napi_status;
    fn napi_create_error(env: napi_env, code: napi_value, msg: napi_value, out: *mut napi_value) -> napi_status;
    fn napi_throw(env: napi_env, err: napi_value) -> napi_status;
}

/// A JS error to throw. `code` becomes `err.code` (an errno name where there
/// is one); `props` are extra fields (errno, op, iova, size, path).
pub struct JsError {
    pub code: String,
    pub message: String,
    pub props: Vec<(&'static str, Prop)>,
}

pub enum Prop {
    Num(f64),
    Big(u64),
    Str(String),
}

impl JsError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        JsError { code: code.into(), message: message.into(), props: Vec::new() }
    }
    /// A bad argument from JS: the message says which and what was expected.
    pub fn arg(message: impl Into<String>) -> Self {
        Self::new("EINVAL", message)
    }
}

pub type JsResult<T = napi_value> = Result<T, JsError>;

fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "?")).expect("NUL removed")
}

fn check(st: napi_status, what: &str) -> JsResult<()> {
    if st == NAPI_OK {
        Ok(())
    } else {
        Err(JsError::new("ENAPI", format!("{what} failed with napi_status {st}")))
    }
}

/// Calls an N-API constructor that writes one value through an out-pointer.
macro_rules! out {
    ($f:ident($($a:expr),*)) => {{
        let mut o = std::mem::zeroed();
        check($f($($a,)* &mut o), stringify!($f)).map(|_| o)
    }};
}

/// The call's arguments (up to N); missing ones are `undefined`.
pub fn args<const N: usize>(env: napi_env, info: napi_callback_info) -> JsResult<[napi_value; N]> {
    let mut argv = [ptr::null_mut(); N];
    let mut argc = N;
    // SAFETY: argv has room for argc values; the other out-pointers may be null.
    check(unsafe { napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), ptr::null_mut(), ptr::null_mut()) }, "napi_get_cb_info")?;
    for slot in argv.iter_mut().skip(argc) {
        *slot = undefined(env)?;
    }
    Ok(argv)
}

pub fn type_of(env: napi_env, v: napi_value) -> JsResult<i32> {
    // SAFETY: v is a live value of env.
    unsafe { out!(napi_typeof(env, v)) }
}

pub fn is_nullish(env: napi_env, v: napi_value) -> JsResult<bool> {
    let t = type_of(env, v)?;
    Ok(t == NAPI_UNDEFINED || t == NAPI_NULL)
}

pub fn undefined(env: napi_env) -> JsResult {
    // SAFETY: plain out-pointer.
    unsafe { out!(napi_get_undefined(env)) }
}

pub fn null(env: napi_env) -> JsResult {
    // SAFETY: plain out-pointer.
    unsafe { out!(napi_get_null(env)) }
}

pub fn boolean(env: napi_env, v: bool) -> JsResult {
    // SAFETY: plain out-pointer.
    unsafe { out!(napi_get_boolean(env, v)) }
}

pub fn get_bool(env: napi_env, v: napi_value, what: &str) -> JsResult<bool> {
    // SAFETY: v is a live value of env.
    unsafe { out!(napi_get_value_bool(env, v)) }.map_err(|_| JsError::arg(format!("{what} must be a boolean")))
}

pub fn string(env: napi_env, s: &str) -> JsResult {
    // SAFETY: s is valid for s.len() bytes.
    unsafe { out!(napi_create_string_utf8(env, s.as_ptr().cast(), s.len())) }
}

pub fn get_string(env: napi_env, v: napi_value, what: &str) -> JsResult<String> {
    let mut len = 0usize;
    // SAFETY: a null buffer asks for the length only.
    let st = unsafe { napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len) };
    if st != NAPI_OK {
        return Err(JsError::arg(format!("{what} must be a string")));
    }
    let mut buf = vec![0u8; len + 1];
    // SAFETY: buf has len + 1 bytes for the string and its NUL.
    check(unsafe { napi_get_value_string_utf8(env, v, buf.as_mut_ptr().cast(), buf.len(), &mut len) }, "napi_get_value_string_utf8")?;
    buf.truncate(len);
    String::from_utf8(buf).map_err(|_| JsError::arg(format!("{what} is not valid UTF-8")))
}

pub fn number(env: napi_env, v: f64) -> JsResult {
    // SAFETY: plain out-pointer.
    unsafe { out!(napi_create_double(env, v)) }
}

pub fn get_number(env: napi_env, v: napi_value, what: &str) -> JsResult<f64> {
    // SAFETY: v is a live value of env.
    unsafe { out!(napi_get_value_double(env, v)) }.map_err(|_| JsError::arg(format!("{what} must be a number")))
}

pub fn get_i32(env: napi_env, v: napi_value, what: &str) -> JsResult<i32> {
    let n = get_number(env, v, what)?;
    if n.fract() != 0.0 || n < i32::MIN as f64 || n > i32::MAX as f64 {
        return Err(JsError::arg(format!("{what} must be a 32-bit integer, got {n}")));
    }
    Ok(n as i32)
}

pub fn bigint(env: napi_env, v: u64) -> JsResult {
    // SAFETY: plain out-pointer.
    unsafe { out!(napi_create_bigint_uint64(env, v)) }
}

/// A u64 from a BigInt (exact) or a safe-integer Number.
pub fn get_u64(env: napi_env, v: napi_value, what: &str) -> JsResult<u64> {
    if type_of(env, v)? == NAPI_BIGINT {
        let (mut r, mut lossless) = (0u64, false);
        // SAFETY: both out-pointers are valid.
        check(unsafe { napi_get_value_bigint_uint64(env, v, &mut r, &mut lossless) }, "napi_get_value_bigint_uint64")
            .map_err(|_| JsError::arg(format!("{what} must be a BigInt")))?;
        if !lossless {
            return Err(JsError::arg(format!("{what} must fit in 64 bits unsigned")));
        }
        return Ok(r);
    }
    let n = get_number(env, v, what)?;
    if n < 0.0 || n.fract() != 0.0 || n > 9007199254740991.0 {
        return Err(JsError::arg(format!("{what} must be a non-negative integer (use a BigInt above 2^53), got {n}")));
    }
    Ok(n as u64)
}

pub fn object(env: napi_env) -> JsResult {
    // SAFETY: plain out-pointer.
    unsafe { out!(napi_create_object(env)) }
}

pub fn set(env: napi_env, obj: napi_value, name: &str, v: napi_value) -> JsResult<()> {
    let n = cstr(name);
    // SAFETY: obj and v are live values; n is NUL-terminated.
    check(unsafe { napi_set_named_property(env, obj, n.as_ptr(), v) }, "napi_set_named_property")
}

/// A property by a literal name (`c"iova"`): no allocation on the argument path.
pub fn get(env: napi_env, obj: napi_value, name: &CStr) -> JsResult {
    // SAFETY: obj is a live value; name is NUL-terminated.
    unsafe { out!(napi_get_named_property(env, obj, name.as_ptr())) }
}

/// The elements of a BigUint64Array, in place: JS's own memory, no copy.
///
/// # Safety
/// The slice is valid only during the current callback, and nothing else
/// (JS included, which cannot run meanwhile) may touch the array while it is held.
pub unsafe fn get_biguint64_array<'a>(env: napi_env, v: napi_value, what: &str) -> JsResult<&'a mut [u64]> {
    let (mut kind, mut len, mut data) = (0i32, 0usize, ptr::null_mut());
    // SAFETY: the out-pointers are valid; the two left null are optional.
    let st = unsafe { napi_get_typedarray_info(env, v, &mut kind, &mut len, &mut data, ptr::null_mut(), ptr::null_mut()) };
    if st != NAPI_OK || kind != NAPI_BIGUINT64_ARRAY {
        return Err(JsError::arg(format!("{what} must be a BigUint64Array")));
    }
    if len == 0 || data.is_null() {
        return Ok(&mut []);
    }
    // SAFETY: data points at len u64s (N-API adds the byte offset, which a BigUint64Array keeps 8-aligned); see the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(data.cast::<u64>(), len) })
}

pub fn array(env: napi_env, items: &[napi_value]) -> JsResult {
    // SAFETY: plain out-pointer.
    let a = unsafe { out!(napi_create_array_with_length(env, items.len())) }?;
    for (i, v) in items.iter().enumerate() {
        // SAFETY: a and v are live values of env.
        check(unsafe { napi_set_element(env, a, i as u32, *v) }, "napi_set_element")?;
    }
    Ok(a)
}

pub fn get_array(env: napi_env, v: napi_value, what: &str) -> JsResult<Vec<napi_value>> {
    // SAFETY: v is a live value of env.
    let len: u32 = unsafe { out!(napi_get_array_length(env, v)) }.map_err(|_| JsError::arg(format!("{what} must be an array")))?;
    // SAFETY: i < len.
    (0..len).map(|i| unsafe { out!(napi_get_element(env, v, i)) }).collect()
}

fn throw(env: napi_env, e: JsError) -> JsResult<()> {
    let code = string(env, &e.code)?;
    let msg = string(env, &e.message)?;
    // SAFETY: code and msg are live strings of env.
    let err = unsafe { out!(napi_create_error(env, code, msg)) }?;
    for (k, p) in e.props {
        let v = match p {
            Prop::Num(n) => number(env, n)?,
            Prop::Big(n) => bigint(env, n)?,
            Prop::Str(s) => string(env, &s)?,
        };
        set(env, err, k, v)?;
    }
    // SAFETY: err is a live Error object.
    check(unsafe { napi_throw(env, err) }, "napi_throw")
}

/// Turns a Rust result into a return value, throwing on error (N-API callbacks cannot unwind).
pub fn finish(env: napi_env, r: JsResult) -> napi_value {
    match r {
        Ok(v) => v,
        Err(e) => {
            let _ = throw(env, e);
            ptr::null_mut()
        }
    }
}

/// Adds `name` as a function property of `exports`.
pub fn export(env: napi_env, exports: napi_value, name: &str, cb: napi_callback) -> JsResult<()> {
    let n = cstr(name);
    // SAFETY: n is NUL-terminated.
    let f = unsafe { out!(napi_create_function(env, n.as_ptr(), NAPI_AUTO_LENGTH, cb, ptr::null_mut())) }?;
    set(env, exports, name, f)
}
