//! The few N-API functions pin-core uses, declared by hand (node_api.h), and
//! the callback boundary: every failure, panic included, leaves a callback as
//! a thrown JS error (`call`). Symbols resolve against the node binary when
//! the addon is loaded.

#![allow(non_camel_case_types)]

use crate::jserror::{Class, JsError, Prop};
use crate::jsnum;
use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
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
pub const NAPI_OBJECT: i32 = 6;
pub const NAPI_BIGINT: i32 = 9;
/// What `typeof` says for each napi_valuetype (null is "null" here: more use than "object").
const TYPE_NAMES: [&str; 10] = ["undefined", "null", "boolean", "number", "string", "symbol", "object", "function", "external", "bigint"];

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
    fn napi_create_type_error(env: napi_env, code: napi_value, msg: napi_value, out: *mut napi_value) -> napi_status;
    fn napi_create_range_error(env: napi_env, code: napi_value, msg: napi_value, out: *mut napi_value) -> napi_status;
    fn napi_throw(env: napi_env, err: napi_value) -> napi_status;
    fn napi_throw_error(env: napi_env, code: *const c_char, msg: *const c_char) -> napi_status;
    fn napi_is_exception_pending(env: napi_env, out: *mut bool) -> napi_status;
}

pub type JsResult<T = napi_value> = Result<T, JsError>;

fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "?")).unwrap_or_default()
}

fn check(st: napi_status, what: &str) -> JsResult<()> {
    if st == NAPI_OK {
        Ok(())
    } else {
        Err(JsError::napi(what, st))
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

fn type_name(env: napi_env, v: napi_value) -> &'static str {
    type_of(env, v).ok().and_then(|t| TYPE_NAMES.get(t as usize).copied()).unwrap_or("unknown")
}

/// The TypeError for `v` not being what was expected, naming what it is.
fn wrong_type(env: napi_env, v: napi_value, what: impl Display, expected: &str) -> JsError {
    JsError::type_arg(what, expected, type_name(env, v))
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

pub fn get_bool(env: napi_env, v: napi_value, what: impl Display) -> JsResult<bool> {
    // SAFETY: v is a live value of env.
    unsafe { out!(napi_get_value_bool(env, v)) }.map_err(|_| wrong_type(env, v, what, "a boolean"))
}

pub fn string(env: napi_env, s: &str) -> JsResult {
    // SAFETY: s is valid for s.len() bytes.
    unsafe { out!(napi_create_string_utf8(env, s.as_ptr().cast(), s.len())) }
}

pub fn get_string(env: napi_env, v: napi_value, what: impl Display) -> JsResult<String> {
    let mut len = 0usize;
    // SAFETY: a null buffer asks for the length only.
    let st = unsafe { napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len) };
    if st != NAPI_OK {
        return Err(wrong_type(env, v, what, "a string"));
    }
    let mut buf = vec![0u8; len + 1];
    // SAFETY: buf has len + 1 bytes for the string and its NUL.
    check(unsafe { napi_get_value_string_utf8(env, v, buf.as_mut_ptr().cast(), buf.len(), &mut len) }, "napi_get_value_string_utf8")?;
    buf.truncate(len);
    // N-API writes UTF-8 (lone surrogates as U+FFFD), so this cannot fail; checked rather than assumed.
    String::from_utf8(buf).map_err(|_| JsError::range(format!("{what} is not valid UTF-8")))
}

pub fn number(env: napi_env, v: f64) -> JsResult {
    // SAFETY: plain out-pointer.
    unsafe { out!(napi_create_double(env, v)) }
}

pub fn get_number(env: napi_env, v: napi_value, what: impl Display) -> JsResult<f64> {
    // SAFETY: v is a live value of env.
    unsafe { out!(napi_get_value_double(env, v)) }.map_err(|_| wrong_type(env, v, what, "a number"))
}

pub fn get_i32(env: napi_env, v: napi_value, what: impl Display + Copy) -> JsResult<i32> {
    jsnum::i32_from_number(get_number(env, v, what)?, what)
}

pub fn get_u32(env: napi_env, v: napi_value, what: impl Display + Copy) -> JsResult<u32> {
    jsnum::u32_from_number(get_number(env, v, what)?, what)
}

/// A pin-core handle: a non-negative integer Number, as `insert` gave it.
pub fn get_handle(env: napi_env, v: napi_value) -> JsResult<usize> {
    get_u32(env, v, "handle").map(|h| h as usize)
}

pub fn bigint(env: napi_env, v: u64) -> JsResult {
    // SAFETY: plain out-pointer.
    unsafe { out!(napi_create_bigint_uint64(env, v)) }
}

/// A u64 from a BigInt (exact) or a safe-integer Number.
pub fn get_u64(env: napi_env, v: napi_value, what: impl Display + Copy) -> JsResult<u64> {
    if type_of(env, v)? == NAPI_BIGINT {
        let (mut r, mut lossless) = (0u64, false);
        // SAFETY: both out-pointers are valid; v is a BigInt.
        check(unsafe { napi_get_value_bigint_uint64(env, v, &mut r, &mut lossless) }, "napi_get_value_bigint_uint64")?;
        return jsnum::u64_from_bigint(r, lossless, what);
    }
    // SAFETY: v is a live value of env.
    let n = unsafe { out!(napi_get_value_double(env, v)) }.map_err(|_| wrong_type(env, v, what, "a BigInt or a Number"))?;
    jsnum::u64_from_number(n, what)
}

pub fn object(env: napi_env) -> JsResult {
    // SAFETY: plain out-pointer.
    unsafe { out!(napi_create_object(env)) }
}

/// Refuses a non-object before its properties are read: N-API would throw
/// V8's "Cannot convert undefined or null to object", which names nothing.
pub fn expect_object(env: napi_env, v: napi_value, what: impl Display) -> JsResult<()> {
    if type_of(env, v)? == NAPI_OBJECT {
        Ok(())
    } else {
        Err(wrong_type(env, v, what, "an object"))
    }
}

pub fn set(env: napi_env, obj: napi_value, name: &str, v: napi_value) -> JsResult<()> {
    let n = cstr(name);
    // SAFETY: obj and v are live values; n is NUL-terminated.
    check(unsafe { napi_set_named_property(env, obj, n.as_ptr(), v) }, "napi_set_named_property")
}

/// A property by a literal name (`c"iova"`): no allocation on the argument
/// path. A getter or proxy that throws leaves its exception pending, which
/// `finish` lets through.
pub fn get(env: napi_env, obj: napi_value, name: &CStr) -> JsResult {
    // SAFETY: obj is a live value; name is NUL-terminated.
    unsafe { out!(napi_get_named_property(env, obj, name.as_ptr())) }
}

/// The elements of a BigUint64Array, in place: JS's own memory, no copy.
///
/// # Safety
/// The slice is valid only during the current callback, and nothing else
/// (JS included, which cannot run meanwhile) may touch the array while it is held.
pub unsafe fn get_biguint64_array<'a>(env: napi_env, v: napi_value, what: impl Display) -> JsResult<&'a mut [u64]> {
    let (mut kind, mut len, mut data) = (0i32, 0usize, ptr::null_mut());
    // SAFETY: the out-pointers are valid; the two left null are optional.
    let st = unsafe { napi_get_typedarray_info(env, v, &mut kind, &mut len, &mut data, ptr::null_mut(), ptr::null_mut()) };
    if st != NAPI_OK || kind != NAPI_BIGUINT64_ARRAY {
        return Err(wrong_type(env, v, what, "a BigUint64Array"));
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

/// Each element of an array through `f`, element by element: a sparse
/// `new Array(2 ** 32 - 1)` fails at its first hole instead of making four
/// billion handles.
pub fn get_array<T>(
    env: napi_env,
    v: napi_value,
    what: impl Display,
    mut f: impl FnMut(napi_value, u32) -> JsResult<T>,
) -> JsResult<Vec<T>> {
    // SAFETY: v is a live value of env.
    let len: u32 = unsafe { out!(napi_get_array_length(env, v)) }.map_err(|_| wrong_type(env, v, what, "an array"))?;
    // SAFETY: i < len.
    (0..len).map(|i| f(unsafe { out!(napi_get_element(env, v, i)) }?, i)).collect()
}

fn exception_pending(env: napi_env) -> bool {
    let mut pending = false;
    // SAFETY: plain out-pointer.
    let st = unsafe { napi_is_exception_pending(env, &mut pending) };
    st == NAPI_OK && pending
}

/// Builds the error object with its class, code and properties, and throws it.
fn throw_full(env: napi_env, e: &JsError) -> JsResult<()> {
    let code = string(env, &e.code)?;
    let msg = string(env, &e.message)?;
    // SAFETY: code and msg are live strings of env.
    let err = unsafe {
        match e.class {
            Class::Error => out!(napi_create_error(env, code, msg)),
            Class::TypeError => out!(napi_create_type_error(env, code, msg)),
            Class::RangeError => out!(napi_create_range_error(env, code, msg)),
        }
    }?;
    for (k, p) in &e.props {
        let v = match p {
            Prop::Num(n) => number(env, *n)?,
            Prop::Big(n) => bigint(env, *n)?,
            Prop::Str(s) => string(env, s)?,
        };
        set(env, err, k, v)?;
    }
    // SAFETY: err is a live Error object.
    check(unsafe { napi_throw(env, err) }, "napi_throw")
}

/// The one place a `JsError` becomes a JS exception. An exception already
/// pending (a getter or proxy trap that threw while arguments were read) is
/// the real cause, so it propagates instead (N-API would refuse to throw
/// over it with napi_pending_exception).
fn throw(env: napi_env, e: &JsError) {
    if exception_pending(env) {
        return;
    }
    if throw_full(env, e).is_err() && !exception_pending(env) {
        // The full error could not be built: throw the message alone, so the call never looks as if it worked.
        let (code, msg) = (cstr(&e.code), cstr(&e.message));
        // SAFETY: both are NUL-terminated.
        unsafe { napi_throw_error(env, code.as_ptr(), msg.as_ptr()) };
    }
}

/// Turns a Rust result into a return value, throwing on error.
pub fn finish(env: napi_env, r: JsResult) -> napi_value {
    match r {
        Ok(v) => v,
        Err(e) => {
            throw(env, &e);
            ptr::null_mut()
        }
    }
}

/// Runs one callback's body. N-API callbacks must not unwind into node (Rust
/// aborts a panic leaving an `extern "C"` function), so a panic is caught
/// here and thrown as an EPANIC error naming the call.
pub fn call(env: napi_env, name: &str, body: impl FnOnce() -> JsResult) -> napi_value {
    let r = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|p| Err(JsError::panicked(name, p.as_ref())));
    finish(env, r)
}

/// Adds `name` as a function property of `exports`.
pub fn export(env: napi_env, exports: napi_value, name: &str, cb: napi_callback) -> JsResult<()> {
    let n = cstr(name);
    // SAFETY: n is NUL-terminated.
    let f = unsafe { out!(napi_create_function(env, n.as_ptr(), NAPI_AUTO_LENGTH, cb, ptr::null_mut())) }?;
    set(env, exports, name, f)
}
