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
}

impl KernelError {
    pub fn new(op: &'static str, e: io::Error) -> Self {
        KernelError { errno: e.raw_os_error().unwrap_or(0), op, iova: None, size: None, path: None }
    }
    pub fn errno(op: &'static str, errno: i32) -> Self {
        KernelError { errno, op, iova: None, size: None, path: None }
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
}
