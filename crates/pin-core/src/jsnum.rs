//! JS numbers to the integers pin-core works in. A value that would change
//! on the way (NaN, a fraction, a negative count, a Number past 2^53 where
//! doubles skip integers, a BigInt past 64 bits) is a RangeError naming the
//! argument, never a silent cast: `-1 as usize` is 0, which is handle 0.

use crate::jserror::JsError;
use std::fmt::Display;

/// 2^53 - 1: above it a Number cannot say which integer it means.
pub const MAX_SAFE: u64 = (1 << 53) - 1;

/// As JS prints it, so the message shows what the caller passed.
fn show(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        (if n > 0.0 { "Infinity" } else { "-Infinity" }).into()
    } else if n.abs() >= 1e21 {
        format!("{n:e}")
    } else {
        format!("{n}")
    }
}

/// An integer Number in [min, max] (max at most MAX_SAFE).
pub fn integer(n: f64, what: impl Display, min: i64, max: u64) -> Result<i64, JsError> {
    if n.is_nan() || n.fract() != 0.0 {
        return Err(JsError::range(format!("{what} must be an integer, got {}", show(n))));
    }
    if n < min as f64 {
        let floor = if min == 0 { "negative".to_string() } else { format!("below {min}") };
        return Err(JsError::range(format!("{what} must not be {floor}, got {}", show(n))));
    }
    if n > max as f64 {
        let hint = if max == MAX_SAFE { " (pass a BigInt above 2^53 - 1)" } else { "" };
        return Err(JsError::range(format!("{what} must be at most {max}{hint}, got {}", show(n))));
    }
    Ok(n as i64)
}

pub fn u64_from_number(n: f64, what: impl Display) -> Result<u64, JsError> {
    integer(n, what, 0, MAX_SAFE).map(|v| v as u64)
}

/// A BigInt read by napi_get_value_bigint_uint64, which wraps negatives and
/// values of 2^64 and above and says so through `lossless`.
pub fn u64_from_bigint(v: u64, lossless: bool, what: impl Display) -> Result<u64, JsError> {
    if !lossless {
        return Err(JsError::range(format!("{what} must be a BigInt from 0 to 2^64 - 1")));
    }
    Ok(v)
}

pub fn i32_from_number(n: f64, what: impl Display) -> Result<i32, JsError> {
    integer(n, what, i32::MIN.into(), i32::MAX as u64).map(|v| v as i32)
}

pub fn u32_from_number(n: f64, what: impl Display) -> Result<u32, JsError> {
    integer(n, what, 0, u32::MAX.into()).map(|v| v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jserror::Class;

    fn message<T: std::fmt::Debug>(r: Result<T, JsError>) -> String {
        let e = r.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (Class::RangeError, "EINVAL"));
        e.message
    }

    #[test]
    fn integers_in_range_pass_unchanged() {
        assert_eq!(u64_from_number(0.0, "size"), Ok(0));
        assert_eq!(u64_from_number(-0.0, "size"), Ok(0));
        assert_eq!(u64_from_number(MAX_SAFE as f64, "size"), Ok(MAX_SAFE));
        assert_eq!(i32_from_number(-1.0, "fd"), Ok(-1));
        assert_eq!(u32_from_number(4294967295.0, "id"), Ok(u32::MAX));
        assert_eq!(u64_from_bigint(u64::MAX, true, "iova"), Ok(u64::MAX));
    }

    #[test]
    fn what_would_change_value_is_refused_with_what_was_passed() {
        assert_eq!(message(u64_from_number(-1.0, "size")), "size must not be negative, got -1");
        assert_eq!(message(u64_from_number(f64::NAN, "size")), "size must be an integer, got NaN");
        assert_eq!(message(u64_from_number(1.5, "size")), "size must be an integer, got 1.5");
        assert_eq!(message(u64_from_number(f64::INFINITY, "size")), "size must be an integer, got Infinity");
        assert_eq!(
            message(u64_from_number(2f64.powi(53), "iova")),
            "iova must be at most 9007199254740991 (pass a BigInt above 2^53 - 1), got 9007199254740992"
        );
        assert_eq!(
            message(u64_from_number(1e300, "iova")),
            "iova must be at most 9007199254740991 (pass a BigInt above 2^53 - 1), got 1e300"
        );
        assert_eq!(message(u64_from_bigint(u64::MAX, false, "iova")), "iova must be a BigInt from 0 to 2^64 - 1");
        assert_eq!(message(i32_from_number(2147483648.0, "fd")), "fd must be at most 2147483647, got 2147483648");
        assert_eq!(message(i32_from_number(-2147483649.0, "fd")), "fd must not be below -2147483648, got -2147483649");
        assert_eq!(message(u32_from_number(-1.0, "id")), "id must not be negative, got -1");
        assert_eq!(message(integer(0.0, "threads", 1, 64)), "threads must not be below 1, got 0");
    }
}
