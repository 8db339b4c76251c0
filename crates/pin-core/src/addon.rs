//! The N-API surface of pin-core: every function JS can call, in one place.
//! Each callback converts arguments, calls plain Rust, and converts back.

use crate::napi::{self, napi_callback_info, napi_env, napi_value, JsError, JsResult};
use crate::sys;

fn os_error(op: &str, e: std::io::Error) -> JsError {
    JsError::new(crate::errno::name(e.raw_os_error().unwrap_or(0)), format!("{op}: {e}"))
}

unsafe extern "C" fn version(env: napi_env, _info: napi_callback_info) -> napi_value {
    napi::finish(env, napi::string(env, env!("CARGO_PKG_VERSION")))
}

unsafe extern "C" fn page_size(env: napi_env, _info: napi_callback_info) -> napi_value {
    let r: JsResult = sys::page_size().map_err(|e| os_error("sysconf(_SC_PAGESIZE)", e)).and_then(|p| napi::number(env, p as f64));
    napi::finish(env, r)
}

/// Called by node when the addon is loaded.
#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    let r = napi::export(env, exports, "version", version)
        .and_then(|_| napi::export(env, exports, "pageSize", page_size));
    match r {
        Ok(()) => exports,
        Err(e) => napi::finish(env, Err(e)),
    }
}
