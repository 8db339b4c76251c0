//! Raw libc calls pin-core makes, declared by hand (no libc crate). Each
//! wrapper turns the raw result into `io::Result` with errno kept.

use crate::errno::EINVAL;
use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::raw::{c_char, c_int, c_long, c_uint, c_ulong, c_void};

pub const _SC_PAGESIZE: c_int = 30;
pub const O_RDWR: c_int = 2;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const PROT_READ: c_int = 1;
pub const PROT_WRITE: c_int = 2;
pub const MAP_SHARED: c_int = 0x01;
pub const MAP_PRIVATE: c_int = 0x02;
pub const MAP_ANONYMOUS: c_int = 0x20;
pub const MAP_HUGETLB: c_int = 0x40000;
pub const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
pub const MADV_HUGEPAGE: c_int = 14;
pub const MADV_NOHUGEPAGE: c_int = 15;
pub const MADV_POPULATE_WRITE: c_int = 23;
pub const MFD_CLOEXEC: c_uint = 1;
pub const MFD_HUGETLB: c_uint = 4;
pub const F_GETFD: c_int = 1;

extern "C" {
    fn sysconf(name: c_int) -> c_long;
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn ioctl(fd: c_int, req: c_ulong, ...) -> c_int;
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    fn memfd_create(name: *const c_char, flags: c_uint) -> c_int;
    fn ftruncate(fd: c_int, len: i64) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn close(fd: c_int) -> c_int;
}

fn check(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
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

pub fn open_rdwr(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(EINVAL))?;
    // SAFETY: c is NUL-terminated; the mode argument is unused without O_CREAT.
    let fd = check(unsafe { open(c.as_ptr(), O_RDWR | O_CLOEXEC, 0) })?;
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes ownership of an fd JS opened and hands over. Checked first: Rust's
/// debug builds abort when an OwnedFd of an fd that is not open is dropped.
pub fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the fd's flags.
    check(unsafe { fcntl(fd, F_GETFD) })?;
    // SAFETY: fd is open, and by the caller's contract no one else uses it from now on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Closes an fd that an OwnedFd does not hold (one JS may have closed already).
pub fn close_fd(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall; a closed fd is EBADF.
    check(unsafe { close(fd) }).map(|_| ())
}

/// ioctl with a pointer to a `#[repr(C)]` argument the kernel reads and/or writes.
pub fn ioctl_ptr<T>(fd: RawFd, req: c_ulong, arg: &mut T) -> io::Result<c_int> {
    // SAFETY: arg is a live, exclusively borrowed struct of the size the request encodes.
    check(unsafe { ioctl(fd, req, arg as *mut T as *mut c_void) })
}

/// ioctl whose argument is a plain integer.
pub fn ioctl_int(fd: RawFd, req: c_ulong, arg: c_ulong) -> io::Result<c_int> {
    // SAFETY: the kernel treats arg as a value, not a pointer.
    check(unsafe { ioctl(fd, req, arg) })
}

/// Maps fresh memory; `fd` < 0 means anonymous.
pub fn mmap_rw(len: usize, flags: c_int, fd: RawFd) -> io::Result<usize> {
    // SAFETY: a new mapping at a kernel-chosen address aliases nothing Rust owns.
    let p = unsafe { mmap(std::ptr::null_mut(), len, PROT_READ | PROT_WRITE, flags, fd, 0) };
    if p == MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as usize)
}

/// Unmaps memory pin-core or its caller mapped. The caller guarantees no Rust
/// reference points into it.
pub fn munmap_range(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: by contract the range holds no Rust references; munmap validates the rest.
    check(unsafe { munmap(addr as *mut c_void, len) }).map(|_| ())
}

pub fn madvise_range(addr: usize, len: usize, advice: c_int) -> io::Result<()> {
    // SAFETY: madvise only changes kernel paging state for the range.
    check(unsafe { madvise(addr as *mut c_void, len, advice) }).map(|_| ())
}

pub fn memfd(name: &str, flags: c_uint, size: u64) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(EINVAL))?;
    // SAFETY: c is NUL-terminated.
    let fd = check(unsafe { memfd_create(c.as_ptr(), flags | MFD_CLOEXEC) })?;
    // SAFETY: fd was just returned by memfd_create.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscall on an fd we own.
    check(unsafe { ftruncate(fd, size as i64) })?;
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_a_power_of_two() {
        let p = page_size().unwrap();
        assert!(p >= 4096 && p.is_power_of_two());
    }

    #[test]
    fn memfd_maps_and_unmaps() {
        let fd = memfd("t", 0, 8192).unwrap();
        use std::os::fd::AsRawFd;
        let a = mmap_rw(8192, MAP_SHARED, fd.as_raw_fd()).unwrap();
        madvise_range(a, 8192, MADV_POPULATE_WRITE).unwrap();
        munmap_range(a, 8192).unwrap();
    }

    #[test]
    fn errors_keep_errno() {
        assert_eq!(open_rdwr("/nonexistent/pinion").unwrap_err().raw_os_error(), Some(2));
        let fd = open_rdwr("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(ioctl_int(fd.as_raw_fd(), 0x3b64, 0).unwrap_err().raw_os_error(), Some(25));
    }

    #[test]
    fn adopting_an_fd_that_is_not_open_is_ebadf() {
        assert_eq!(adopt((1 << 20) - 3).unwrap_err().raw_os_error(), Some(9));
        assert_eq!(adopt(-1).unwrap_err().raw_os_error(), Some(9));
        use std::os::fd::IntoRawFd;
        assert!(adopt(open_rdwr("/dev/null").unwrap().into_raw_fd()).is_ok());
    }
}
