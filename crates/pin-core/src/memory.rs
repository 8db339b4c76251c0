//! Guest-RAM-like memory for the DMA mapper: anonymous (4K or THP), memfd
//! (mappable by fd, survives a VMM handover) or hugetlb; and prefaulting,
//! so pinning measures pinning rather than page faults.

use crate::errno::EIO;
use crate::sys;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
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

/// Maps `size` bytes; returns (address, memfd or -1). The fd, if any, is
/// handed to the caller, who closes it with `free`.
pub fn alloc(kind: Kind, size: usize) -> io::Result<(usize, i32)> {
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

pub fn free(addr: usize, size: usize, fd: i32) -> io::Result<()> {
    sys::munmap_range(addr, size)?;
    if fd >= 0 {
        // SAFETY: fd came from alloc and is closed exactly once here.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
    Ok(())
}

/// Below this, one thread populates faster than threads can start.
const PARALLEL_MIN: usize = 64 << 20;

/// MADV_POPULATE_WRITE over the range, split into page-aligned chunks across threads.
pub fn populate(addr: usize, size: usize, threads: usize, page: usize) -> io::Result<()> {
    let threads = threads.max(1);
    if threads == 1 || size < PARALLEL_MIN {
        return sys::madvise_range(addr, size, sys::MADV_POPULATE_WRITE);
    }
    // Chunks align to 2 MiB so THP and hugetlb pages are never split between threads.
    let align = (2usize << 20).max(page);
    let chunk = (size / threads).div_ceil(align) * align;
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .filter_map(|i| {
                let start = i * chunk;
                (start < size).then(|| {
                    let len = chunk.min(size - start);
                    s.spawn(move || sys::madvise_range(addr + start, len, sys::MADV_POPULATE_WRITE))
                })
            })
            .collect();
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
    fn unknown_kind_is_rejected() {
        assert_eq!(Kind::parse("shm"), None);
        assert_eq!(Kind::parse("memfd"), Some(Kind::Memfd));
    }
}
