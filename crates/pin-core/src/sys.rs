//! Raw libc calls pin-core makes, declared by hand (no libc crate).
//! Every call site wraps the raw result in `io::Result` with errno kept.

use std::io;
use std::os::raw::{c_int, c_long};

const _SC_PAGESIZE: c_int = 30;

extern "C" {
    fn sysconf(name: c_int) -> c_long;
}

/// The kernel's base page size, the granule of every pin and every IOVA mapping.
pub fn page_size() -> io::Result<usize> {
    // SAFETY: sysconf takes an int and has no memory side effects.
    let v = unsafe { sysconf(_SC_PAGESIZE) };
    if v <= 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_a_power_of_two() {
        let p = page_size().unwrap();
        assert!(p >= 4096 && p.is_power_of_two());
    }
}
