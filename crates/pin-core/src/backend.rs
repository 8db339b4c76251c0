//! One small interface over the two IOMMU backends (VFIO's legacy container
//! and iommufd), chosen once when the VMM opens its DMA space. Both implement
//! every method; what one path cannot do is a typed EOPNOTSUPP, never a panic.
//! The backends import this module and nothing here knows them: the choice
//! between them is `dispatch.rs`, one level up.
//!
//! Contract: memory handed to `map` is pinned and may be written by devices at
//! any time, so no Rust reference may alias memory mapped for DMA; pin-core
//! only passes its addresses to the kernel.

use crate::table::{Backing, Prot};
use std::fmt;
use std::io;

/// The kernel code serving a DMA space, named as in the README's glossary and
/// in TypeScript's `IommuPath`. It decides who is charged for pins (accounting.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuPath {
    /// VFIO's own container (CONFIG_VFIO_CONTAINER).
    Type1,
    /// /dev/vfio/vfio served by iommufd (CONFIG_IOMMUFD_VFIO_CONTAINER).
    Compat,
    /// /dev/iommu and an IOAS.
    Iommufd,
}

impl IommuPath {
    pub const ALL: [IommuPath; 3] = [IommuPath::Type1, IommuPath::Compat, IommuPath::Iommufd];

    pub fn name(self) -> &'static str {
        match self {
            IommuPath::Type1 => "type1",
            IommuPath::Compat => "compat",
            IommuPath::Iommufd => "iommufd",
        }
    }

    pub fn parse(s: &str) -> Option<IommuPath> {
        IommuPath::ALL.into_iter().find(|p| p.name() == s)
    }

    /// How this path DMA-maps another device's BAR (peer-to-peer).
    pub fn p2p(self) -> P2pMap {
        match self {
            // type1 follows a PFNMAP VMA's pfns (vaddr_get_pfns) and charges none of them.
            IommuPath::Type1 => P2pMap::Vaddr,
            // iommufd pins user pages only (EFAULT on a PFNMAP VMA); the type1 API it serves maps no files.
            IommuPath::Compat => P2pMap::None,
            // The BAR as a dma-buf from vfio-pci, by IOMMU_IOAS_MAP_FILE; not charged either.
            IommuPath::Iommufd => P2pMap::DmaBuf,
        }
    }
}

/// How a path maps MMIO for peer-to-peer DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2pMap {
    /// By the user address of the BAR's mmap.
    Vaddr,
    /// By a dma-buf of the BAR, as a file backing.
    DmaBuf,
    /// Not at all.
    None,
}

impl P2pMap {
    pub fn name(self) -> &'static str {
        match self {
            P2pMap::Vaddr => "vaddr",
            P2pMap::DmaBuf => "dma-buf",
            P2pMap::None => "none",
        }
    }
}

/// The IOMMU type VFIO_SET_IOMMU gave a legacy container (type1 or compat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerType {
    Type1,
    Type1v2,
}

impl ContainerType {
    pub fn name(self) -> &'static str {
        match self {
            ContainerType::Type1 => "type1",
            ContainerType::Type1v2 => "type1v2",
        }
    }
}

/// What a backend can do, as the kernel answered (not guessed from versions).
#[derive(Clone, Debug)]
pub struct Caps {
    pub path: IommuPath,
    /// None on iommufd, and on a legacy container before VFIO_SET_IOMMU.
    pub container_type: Option<ContainerType>,
    pub can_copy: bool,
    pub can_map_file: bool,
    pub unmap_all: bool,
    pub update_vaddr: bool,
    /// DMA mappings still available (type1's dma_entry_limit), when reported.
    pub max_entries: Option<u32>,
    pub pgsize_bitmap: u64,
}

/// A failed kernel call with what it was doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelError {
    pub errno: i32,
    pub op: &'static str,
    pub iova: Option<u64>,
    pub size: Option<u64>,
    pub path: Option<String>,
    /// What the failure means here, when the errno alone would mislead (an
    /// EINVAL that says "no IOMMU set", not "bad argument").
    pub note: Option<&'static str>,
}

impl KernelError {
    pub fn new(op: &'static str, e: io::Error) -> Self {
        KernelError { errno: e.raw_os_error().unwrap_or(0), op, iova: None, size: None, path: None, note: None }
    }
    pub fn errno(op: &'static str, errno: i32) -> Self {
        KernelError { errno, op, iova: None, size: None, path: None, note: None }
    }
    pub fn at(mut self, iova: u64, size: u64) -> Self {
        self.iova = Some(iova);
        self.size = Some(size);
        self
    }
    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(path.to_string());
        self
    }
    /// The path, unless the error names one already (errors made above the backend name none).
    pub fn path_or(self, path: &str) -> Self {
        if self.path.is_some() {
            self
        } else {
            self.path(path)
        }
    }
    pub fn note(mut self, note: &'static str) -> Self {
        self.note = Some(note);
        self
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.op, crate::errno::name(self.errno))?;
        let mut parts = Vec::new();
        if let Some(i) = self.iova {
            parts.push(format!("iova 0x{i:x}"));
        }
        if let Some(s) = self.size {
            parts.push(format!("size 0x{s:x}"));
        }
        if let Some(p) = &self.path {
            parts.push(format!("path {p}"));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        if let Some(n) = self.note {
            write!(f, ": {n}")?;
        }
        Ok(())
    }
}

pub type KResult<T> = Result<T, KernelError>;

pub trait DmaBackend: Send {
    fn caps(&self) -> &Caps;
    fn fd(&self) -> i32;
    fn map(&mut self, iova: u64, size: u64, backing: &Backing, prot: Prot) -> KResult<()>;
    /// Returns the bytes the kernel reports unmapped.
    fn unmap(&mut self, iova: u64, size: u64) -> KResult<u64>;
    fn unmap_all(&mut self) -> KResult<u64>;
    fn copy(&mut self, src_iova: u64, dst_iova: u64, size: u64) -> KResult<()>;
    /// Usable IOVA ranges, inclusive.
    fn iova_ranges(&mut self) -> KResult<Vec<(u64, u64)>>;
}

/// The ops of VFIO_UPDATE_VADDR, as errors name them.
pub const OP_INVALIDATE_VADDR: &str = "VFIO_IOMMU_UNMAP_DMA(VADDR)";
pub const OP_SET_VADDR: &str = "VFIO_IOMMU_MAP_DMA(VADDR)";

/// type1's live-update pair (VFIO_UPDATE_VADDR) on one whole mapping. `None`
/// invalidates its vaddr (VFIO_DMA_UNMAP_FLAG_VADDR): the mapping and its
/// pins stay (while any vaddr is invalid the container takes no new group,
/// EBUSY, since attaching could pin); invalidating one already invalid is EINVAL. `Some` supplies a vaddr
/// again (VFIO_DMA_MAP_FLAG_VADDR): EINVAL unless the mapping's vaddr is
/// invalid and iova and size are the mapping's own; it moves the lock
/// accounting to the caller's mm (vfio_change_dma_owner), so it may be ENOMEM
/// under RLIMIT_MEMLOCK. Only the legacy container has it: iommufd hands
/// mappings over by file instead (IOMMU_IOAS_CHANGE_PROCESS).
pub trait UpdateVaddr {
    /// Returns the bytes the kernel reports: for an invalidation, the sizes of
    /// the mappings it invalidated, so 0 where it maps nothing (which it does
    /// not call an error).
    fn update_vaddr(&mut self, iova: u64, size: u64, vaddr: Option<u64>) -> KResult<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names_round_trip() {
        for p in IommuPath::ALL {
            assert_eq!(IommuPath::parse(p.name()), Some(p));
        }
        assert_eq!(IommuPath::parse("legacy"), None, "legacy is the VFIO interface, not a path: it lands on type1 or compat");
    }

    #[test]
    fn display_keeps_errno_name_and_context() {
        let e = KernelError::errno("VFIO_IOMMU_MAP_DMA", 12).at(0x100000, 0x200000).path("/dev/vfio/vfio");
        assert_eq!(e.to_string(), "VFIO_IOMMU_MAP_DMA failed: ENOMEM (iova 0x100000, size 0x200000, path /dev/vfio/vfio)");
    }

    #[test]
    fn a_note_follows_the_context_and_a_path_is_kept_once_set() {
        let e = KernelError::errno("VFIO_IOMMU_GET_INFO", 22).path("/dev/vfio/vfio").note("no IOMMU set");
        assert_eq!(e.to_string(), "VFIO_IOMMU_GET_INFO failed: EINVAL (path /dev/vfio/vfio): no IOMMU set");
        assert_eq!(e.path_or("/other").path.as_deref(), Some("/dev/vfio/vfio"));
        assert_eq!(KernelError::errno("X", 22).path_or("/dev/iommu").path.as_deref(), Some("/dev/iommu"));
    }
}
