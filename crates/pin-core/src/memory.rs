//! Guest-RAM-like memory for the DMA mapper: anonymous (4K or THP), memfd
//! (mappable by fd, survives a VMM handover) or hugetlb; and prefaulting,
//! so pinning measures pinning rather than page faults.
//!
//! `free` takes back only what `alloc` handed out and has not been freed:
//! JS passes plain addresses, and an unmap of any other range (a typo, or a
//! double free after the kernel reused the range for node's own heap) would
//! pull memory from under V8.

use crate::errno::{EINVAL, EIO};
use crate::sys;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::{Mutex, PoisonError};
use std::thread;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Anon,
    Thp,
    Memfd,
    Hugetlb,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "anon" => Kind::Anon,
            "thp" => Kind::Thp,
            "memfd" => Kind::Memfd,
            "hugetlb" => Kind::Hugetlb,
            _ => return None,
        })
    }
}

/// A live allocation, or what is left of one after partial frees; pieces of
/// one memfd allocation share its fd (-1 once `free` closed it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    addr: usize,
    end: usize,
    fd: i32,
}

static LIVE: Mutex<Vec<Piece>> = Mutex::new(Vec::new());

/// Why `free` did nothing.
#[derive(Debug)]
pub enum FreeError {
    /// [addr, addr + size) is not inside memory `alloc` handed out and `free` has not taken back.
    NotAllocated {
        addr: usize,
        size: usize,
    },
    /// The fd given is not the memfd of that memory (or was closed by an earlier free).
    NotItsFd {
        fd: i32,
        addr: usize,
    },
    Kernel(io::Error),
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeError::NotAllocated { addr, size } => {
                write!(f, "{addr:#x}+{size:#x} is not memory memAlloc returned, or it was freed already")
            }
            FreeError::NotItsFd { fd, addr } => write!(f, "fd {fd} is not the open memfd of the memory at {addr:#x}"),
            FreeError::Kernel(e) => write!(f, "munmap failed: {e}"),
        }
    }
}

fn page_end(end: usize) -> usize {
    let page = sys::page_size().unwrap_or(4096);
    end.div_ceil(page).saturating_mul(page)
}

/// Maps `size` bytes; returns (address, memfd or -1). The fd, if any, is
/// handed to the caller, who closes it with `free`.
pub fn alloc(kind: Kind, size: usize) -> io::Result<(usize, i32)> {
    let (addr, fd) = map(kind, size)?;
    let end = page_end(addr + size);
    LIVE.lock().unwrap_or_else(PoisonError::into_inner).push(Piece { addr, end, fd });
    Ok((addr, fd))
}

fn map(kind: Kind, size: usize) -> io::Result<(usize, i32)> {
    match kind {
        Kind::Memfd => {
            let fd = sys::memfd("pinion-guest-ram", 0, size as u64)?;
            let addr = sys::mmap_rw(size, sys::MAP_SHARED, fd.as_raw_fd())?;
            Ok((addr, fd.into_raw_fd()))
        }
        Kind::Hugetlb => Ok((sys::mmap_rw(size, sys::MAP_PRIVATE | sys::MAP_ANONYMOUS | sys::MAP_HUGETLB, -1)?, -1)),
        Kind::Anon | Kind::Thp => {
            let addr = sys::mmap_rw(size, sys::MAP_PRIVATE | sys::MAP_ANONYMOUS, -1)?;
            // Explicit either way, so "anon" means 4K pages whatever the THP default.
            let advice = if kind == Kind::Thp { sys::MADV_HUGEPAGE } else { sys::MADV_NOHUGEPAGE };
            sys::madvise_range(addr, size, advice)?;
            Ok((addr, -1))
        }
    }
}

/// Unmaps [addr, addr + size) of one allocation (all of it or a part, as
/// munmap rounds: to whole pages) and closes its memfd when `fd` is given.
pub fn free(addr: usize, size: usize, fd: i32) -> Result<(), FreeError> {
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    let end = addr.checked_add(size).map(page_end).ok_or(FreeError::NotAllocated { addr, size })?;
    let i = live.iter().position(|p| p.addr <= addr && end <= p.end && size > 0).ok_or(FreeError::NotAllocated { addr, size })?;
    let p = live[i];
    if fd >= 0 && fd != p.fd {
        return Err(FreeError::NotItsFd { fd, addr });
    }
    sys::munmap_range(addr, size).map_err(FreeError::Kernel)?;
    live.remove(i);
    live.extend([Piece { end: addr, ..p }, Piece { addr: end, ..p }].into_iter().filter(|q| q.addr < q.end));
    if fd >= 0 {
        for q in live.iter_mut().filter(|q| q.fd == fd) {
            q.fd = -1;
        }
        // Closed raw, not through an OwnedFd: JS may have closed it already, and that is EBADF, not an abort.
        let _ = sys::close_fd(fd);
    }
    Ok(())
}

/// Below this, one thread populates faster than threads can start.
const PARALLEL_MIN: usize = 64 << 20;

/// Far above any core count: a larger count is a caller's mistake, which
/// memPopulate refuses and `populate` clamps, rather than spawn thousands.
pub const MAX_THREADS: usize = 256;

/// MADV_POPULATE_WRITE over the range, split into page-aligned chunks across threads.
pub fn populate(addr: usize, size: usize, threads: usize, page: usize) -> io::Result<()> {
    if addr.checked_add(size).is_none() {
        // What madvise says for a range past the end of the address space; checked here so the chunk sums below cannot wrap.
        return Err(io::Error::from_raw_os_error(EINVAL));
    }
    // Chunks align to 2 MiB so THP and hugetlb pages are never split between threads.
    let align = (2usize << 20).max(page);
    let threads = threads.clamp(1, MAX_THREADS).min(size.div_ceil(align));
    if threads <= 1 || size < PARALLEL_MIN {
        return sys::madvise_range(addr, size, sys::MADV_POPULATE_WRITE);
    }
    let chunk = (size / threads).div_ceil(align) * align;
    thread::scope(|s| {
        let mut handles = Vec::with_capacity(threads);
        for start in (0..size).step_by(chunk) {
            let len = chunk.min(size - start);
            // A failed spawn is an error like a failed madvise; the scope joins the threads already started.
            handles.push(thread::Builder::new().spawn_scoped(s, move || sys::madvise_range(addr + start, len, sys::MADV_POPULATE_WRITE))?);
        }
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(io::Error::from_raw_os_error(EIO))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_but_hugetlb_allocates_populates_and_frees() {
        for kind in [Kind::Anon, Kind::Thp, Kind::Memfd] {
            let size = 80 << 20;
            let (a, fd) = alloc(kind, size).unwrap();
            populate(a, size, 2, 4096).unwrap();
            free(a, size, fd).unwrap();
        }
    }

    #[test]
    fn free_takes_back_only_what_alloc_gave_and_once() {
        let p = 4096;
        let (a, fd) = alloc(Kind::Memfd, 4 * p).unwrap();
        assert!(matches!(free(a + p, p, -1), Ok(())), "a hole in the middle");
        assert!(matches!(free(a + p, p, -1), Err(FreeError::NotAllocated { .. })), "the hole again");
        assert!(matches!(free(a, 3 * p, -1), Err(FreeError::NotAllocated { .. })), "across the hole");
        assert!(matches!(free(a, p, fd + 1), Err(FreeError::NotItsFd { .. })));
        assert!(matches!(free(a, p, fd), Ok(())), "the first page, closing the memfd");
        assert!(matches!(free(a + 2 * p, 2 * p, fd), Err(FreeError::NotItsFd { .. })), "the memfd is closed already");
        assert!(matches!(free(a + 2 * p, 2 * p, -1), Ok(())), "the rest");
        assert!(matches!(free(a, 4 * p, -1), Err(FreeError::NotAllocated { .. })), "all of it is gone");
        let on_stack = 0u64;
        assert!(matches!(free(&on_stack as *const u64 as usize, 8, -1), Err(FreeError::NotAllocated { .. })));
        assert!(matches!(free(usize::MAX - 10, 100, -1), Err(FreeError::NotAllocated { .. })));
        let (b, _) = alloc(Kind::Anon, p).unwrap();
        assert!(matches!(free(b, 0, -1), Err(FreeError::NotAllocated { .. })), "an empty range is no allocation");
        assert!(matches!(free(b + 1, p - 1, -1), Err(FreeError::Kernel(_))), "munmap refuses an unaligned start");
        assert!(matches!(free(b, 1, -1), Ok(())), "munmap rounds the length up to the page");
        assert!(matches!(free(b, p, -1), Err(FreeError::NotAllocated { .. })));
    }

    #[test]
    fn populate_refuses_a_wrapping_range_and_caps_its_threads() {
        assert_eq!(populate(usize::MAX - 4095, 8192, 4, 4096).unwrap_err().raw_os_error(), Some(EINVAL));
        let size = 80 << 20;
        let (a, fd) = alloc(Kind::Anon, size).unwrap();
        populate(a, size, usize::MAX, 4096).unwrap();
        free(a, size, fd).unwrap();
    }

    #[test]
    fn unknown_kind_is_rejected() {
        assert_eq!(Kind::parse("shm"), None);
        assert_eq!(Kind::parse("memfd"), Some(Kind::Memfd));
    }
}
