//! VFIO's legacy container (/dev/vfio/vfio) with the type1 IOMMU driver, or
//! iommufd's compatibility layer behind the same node. Pinned pages are
//! charged to the mapping process's mm->locked_vm at MAP_DMA time (type1).

use crate::backend::{Caps, ContainerType, DmaBackend, IommuPath, KResult, KernelError, UpdateVaddr, OP_INVALIDATE_VADDR, OP_SET_VADDR};
use crate::errno::{EACCES, EINVAL, ENODEV, EOPNOTSUPP};
use crate::sys;
use crate::table::{Backing, Prot};
use crate::uapi::*;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, OwnedFd};

pub struct Type1Container {
    fd: OwnedFd,
    path: String,
    caps: Caps,
}

impl Type1Container {
    pub fn open(path: &str) -> KResult<Self> {
        let fd = sys::open_rdwr(path).map_err(|e| KernelError::new("open", e).path(path))?;
        Self::adopt(fd, path)
    }

    /// Takes a container fd opened elsewhere (e.g. by a privileged opener).
    pub fn adopt(fd: OwnedFd, path: &str) -> KResult<Self> {
        let v =
            sys::ioctl_int(fd.as_raw_fd(), VFIO_GET_API_VERSION, 0).map_err(|e| KernelError::new("VFIO_GET_API_VERSION", e).path(path))?;
        if v != VFIO_API_VERSION {
            return Err(KernelError::errno("VFIO_GET_API_VERSION", EINVAL).path(path));
        }
        // Only an iommufd answers IOMMU_OPTION; VFIO's container returns
        // EINVAL for unknown ioctls before SET_IOMMU (vfio_fops_unl_ioctl),
        // and its type1 driver ENOTTY after (an inherited container).
        let mut opt = iommu_option { size: 24, option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_GET, ..Default::default() };
        let served_by_iommufd = sys::ioctl_ptr(fd.as_raw_fd(), IOMMU_OPTION, &mut opt).is_ok();
        let caps = Caps {
            path: if served_by_iommufd { IommuPath::Compat } else { IommuPath::Type1 },
            container_type: None,
            can_copy: false,
            can_map_file: false,
            unmap_all: false,
            update_vaddr: false,
            max_entries: None,
            pgsize_bitmap: 0,
        };
        Ok(Type1Container { fd, path: path.to_string(), caps })
    }

    /// Takes a container another process set up (live update: the old VMM
    /// passes its container fd over), with its groups in it and its IOMMU
    /// set, so no VFIO_SET_IOMMU: the kernel refuses a second one (EINVAL,
    /// vfio_ioctl_set_iommu), and the DMA mappings it holds are the VM's.
    /// The caps are read as `set_iommu` reads them, the type as `set_type`
    /// finds it. iommufd's compat container keeps no "set" state: one with a
    /// group in it passes here whether or not VFIO_SET_IOMMU was done.
    pub fn inherit(fd: OwnedFd, path: &str) -> KResult<Self> {
        let mut c = Self::adopt(fd, path)?;
        // GET_INFO first: it is what an unset container refuses (VFIO's own
        // passes it to no driver: EINVAL; iommufd's compat has no IOAS before
        // a group joins: ENODEV), and DIRTY_PAGES below answers EINVAL there too.
        c.read_info().map_err(|e| match e.errno {
            EINVAL | ENODEV => e.note("the container has no IOMMU set (no VFIO_SET_IOMMU yet), so it holds nothing to inherit"),
            _ => e,
        })?;
        let ty = c.set_type();
        c.read_extensions(ty);
        Ok(c)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn check_extension(&self, ext: u64) -> bool {
        sys::ioctl_int(self.fd.as_raw_fd(), VFIO_CHECK_EXTENSION, ext).map(|r| r > 0).unwrap_or(false)
    }

    /// The type `set_iommu` picks: type1v2 unless asked for (or only offered) type1.
    fn preferred_type(&self, v1_only: bool) -> ContainerType {
        if !v1_only && self.check_extension(VFIO_TYPE1v2_IOMMU) {
            ContainerType::Type1v2
        } else {
            ContainerType::Type1
        }
    }

    /// VFIO_SET_IOMMU: type1v2 unless asked for (or only offered) type1. The
    /// kernel takes it only once a group has joined (VfioGroup in TypeScript
    /// owns the groups: VFIO_GROUP_SET_CONTAINER is theirs, on their fds).
    pub fn set_iommu(&mut self, v1_only: bool) -> KResult<()> {
        let ty = self.preferred_type(v1_only);
        let arg = match ty {
            ContainerType::Type1v2 => VFIO_TYPE1v2_IOMMU,
            ContainerType::Type1 => VFIO_TYPE1_IOMMU,
        };
        sys::ioctl_int(self.fd.as_raw_fd(), VFIO_SET_IOMMU, arg).map_err(|e| KernelError::new("VFIO_SET_IOMMU", e).path(&self.path))?;
        self.read_extensions(ty);
        self.read_info()
    }

    /// The extensions of a container whose IOMMU is set. Only then do they
    /// come from its own driver and IOMMU (vfio_container_ioctl_check_extension
    /// polls every driver with no IOMMU before): type1 offers UPDATE_VADDR
    /// only with an IOMMU, and not while an emulated (mdev) group is in it.
    fn read_extensions(&mut self, ty: ContainerType) {
        self.caps.container_type = Some(ty);
        self.caps.unmap_all = self.check_extension(VFIO_UNMAP_ALL);
        self.caps.update_vaddr = self.check_extension(VFIO_UPDATE_VADDR);
    }

    /// The type VFIO_SET_IOMMU gave a set container. VFIO_CHECK_EXTENSION
    /// cannot tell: once set it asks the container's driver, and type1
    /// answers 1 for both TYPE1_IOMMU and TYPE1v2_IOMMU on any container
    /// (vfio_iommu_type1_check_extension). VFIO_IOMMU_DIRTY_PAGES can, and
    /// changes nothing here: type1 refuses it with EACCES before reading its
    /// argument unless the container is v2, and v2 refuses an argsz of 0 with
    /// EINVAL (vfio_iommu_type1_dirty_pages). iommufd's compat container keeps
    /// no type (VFIO_SET_IOMMU of type1 only disables large pages, which no
    /// ioctl reports) and answers ENOTTY, as does a type1 without dirty
    /// tracking (before Linux 5.8): the type is then the one `set_iommu`
    /// would have picked.
    fn set_type(&self) -> ContainerType {
        let mut d = vfio_iommu_type1_dirty_bitmap { argsz: 0, flags: 0 };
        match sys::ioctl_ptr(self.fd.as_raw_fd(), VFIO_IOMMU_DIRTY_PAGES, &mut d).map_err(|e| e.raw_os_error()) {
            Err(Some(EACCES)) => ContainerType::Type1,
            Err(Some(EINVAL)) => ContainerType::Type1v2,
            _ => self.preferred_type(false),
        }
    }

    /// VFIO_IOMMU_GET_INFO twice: once for argsz, once with room for the caps.
    fn info(&self) -> KResult<Vec<u8>> {
        let mut hdr = vfio_iommu_type1_info { argsz: argsz::<vfio_iommu_type1_info>(), ..Default::default() };
        sys::ioctl_ptr(self.fd.as_raw_fd(), VFIO_IOMMU_GET_INFO, &mut hdr)
            .map_err(|e| KernelError::new("VFIO_IOMMU_GET_INFO", e).path(&self.path))?;
        let len = (hdr.argsz as usize).max(size_of::<vfio_iommu_type1_info>());
        let mut buf = vec![0u64; len.div_ceil(8)];
        // SAFETY: buf holds at least a vfio_iommu_type1_info and is 8-aligned, as that struct is.
        let info = unsafe { &mut *(buf.as_mut_ptr() as *mut vfio_iommu_type1_info) };
        info.argsz = len as u32;
        sys::ioctl_ptr(self.fd.as_raw_fd(), VFIO_IOMMU_GET_INFO, info)
            .map_err(|e| KernelError::new("VFIO_IOMMU_GET_INFO", e).path(&self.path))?;
        Ok(buf.iter().flat_map(|w| w.to_ne_bytes()).take(len).collect())
    }

    /// Page sizes and DMA_AVAIL: the mappings type1 still allows, so on an
    /// inherited container the limit less those it holds already (Mapper::seed
    /// counts them back in).
    fn read_info(&mut self) -> KResult<()> {
        let buf = self.info()?;
        let at = offset_of!(vfio_iommu_type1_info, iova_pgsizes);
        self.caps.pgsize_bitmap = u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap());
        self.caps.max_entries = parse_caps(&buf).dma_avail;
        Ok(())
    }
}

/// VADDR update for live update: invalidate (None) or set a new vaddr.
impl UpdateVaddr for Type1Container {
    fn update_vaddr(&mut self, iova: u64, size: u64, vaddr: Option<u64>) -> KResult<u64> {
        let fd = self.fd.as_raw_fd();
        let r = match vaddr {
            None => {
                let mut u = vfio_iommu_type1_dma_unmap {
                    argsz: argsz::<vfio_iommu_type1_dma_unmap>(),
                    flags: VFIO_DMA_UNMAP_FLAG_VADDR,
                    iova,
                    size,
                };
                // The kernel writes back the bytes it invalidated.
                sys::ioctl_ptr(fd, VFIO_IOMMU_UNMAP_DMA, &mut u).map(|_| u.size).map_err(|e| KernelError::new(OP_INVALIDATE_VADDR, e))
            }
            Some(v) => {
                let mut m = vfio_iommu_type1_dma_map {
                    argsz: argsz::<vfio_iommu_type1_dma_map>(),
                    flags: VFIO_DMA_MAP_FLAG_VADDR,
                    vaddr: v,
                    iova,
                    size,
                };
                sys::ioctl_ptr(fd, VFIO_IOMMU_MAP_DMA, &mut m).map(|_| size).map_err(|e| KernelError::new(OP_SET_VADDR, e))
            }
        };
        r.map_err(|e| e.at(iova, size).path(&self.path))
    }
}

#[derive(Default, Debug, PartialEq, Eq)]
pub struct InfoCaps {
    pub iova_ranges: Vec<(u64, u64)>,
    pub dma_avail: Option<u32>,
}

/// Walks the vfio_info_cap_header chain of a VFIO_IOMMU_GET_INFO answer.
pub fn parse_caps(buf: &[u8]) -> InfoCaps {
    let u16_at = |o: usize| buf.get(o..o + 2).map(|b| u16::from_ne_bytes(b.try_into().unwrap()));
    let u32_at = |o: usize| buf.get(o..o + 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| buf.get(o..o + 8).map(|b| u64::from_ne_bytes(b.try_into().unwrap()));
    let mut out = InfoCaps::default();
    let flags = u32_at(offset_of!(vfio_iommu_type1_info, flags)).unwrap_or(0);
    if flags & VFIO_IOMMU_INFO_CAPS == 0 {
        return out;
    }
    let mut off = u32_at(offset_of!(vfio_iommu_type1_info, cap_offset)).unwrap_or(0) as usize;
    let mut hops = 0;
    while off != 0 && hops < 64 {
        let (id, next) = (off + offset_of!(vfio_info_cap_header, id), off + offset_of!(vfio_info_cap_header, next));
        let (Some(id), Some(next)) = (u16_at(id), u32_at(next)) else { break };
        match id {
            VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
                let n = u32_at(off + offset_of!(vfio_iommu_type1_info_cap_iova_range, nr_iovas)).unwrap_or(0) as usize;
                for i in 0..n {
                    // iova_ranges[] follows the fixed part.
                    let base = off + size_of::<vfio_iommu_type1_info_cap_iova_range>() + i * size_of::<vfio_iova_range>();
                    let (start, end) = (base + offset_of!(vfio_iova_range, start), base + offset_of!(vfio_iova_range, end));
                    if let (Some(s), Some(e)) = (u64_at(start), u64_at(end)) {
                        out.iova_ranges.push((s, e));
                    }
                }
            }
            VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => out.dma_avail = u32_at(off + offset_of!(vfio_iommu_type1_info_dma_avail, avail)),
            _ => {}
        }
        off = next as usize;
        hops += 1;
    }
    out
}

fn type1_flags(prot: Prot) -> u32 {
    (if prot.read { VFIO_DMA_MAP_FLAG_READ } else { 0 }) | (if prot.write { VFIO_DMA_MAP_FLAG_WRITE } else { 0 })
}

impl DmaBackend for Type1Container {
    fn caps(&self) -> &Caps {
        &self.caps
    }

    fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn map(&mut self, iova: u64, size: u64, backing: &Backing, prot: Prot) -> KResult<()> {
        // type1 pins by virtual address only: a file backing must be mmap'd by the caller.
        let Backing::Vaddr(vaddr) = *backing else {
            return Err(KernelError::errno("VFIO_IOMMU_MAP_DMA(file)", EOPNOTSUPP).at(iova, size).path(&self.path));
        };
        let mut m = vfio_iommu_type1_dma_map { argsz: argsz::<vfio_iommu_type1_dma_map>(), flags: type1_flags(prot), vaddr, iova, size };
        sys::ioctl_ptr(self.fd.as_raw_fd(), VFIO_IOMMU_MAP_DMA, &mut m)
            .map(|_| ())
            .map_err(|e| KernelError::new("VFIO_IOMMU_MAP_DMA", e).at(iova, size).path(&self.path))
    }

    fn unmap(&mut self, iova: u64, size: u64) -> KResult<u64> {
        let mut u = vfio_iommu_type1_dma_unmap { argsz: argsz::<vfio_iommu_type1_dma_unmap>(), flags: 0, iova, size };
        sys::ioctl_ptr(self.fd.as_raw_fd(), VFIO_IOMMU_UNMAP_DMA, &mut u)
            .map_err(|e| KernelError::new("VFIO_IOMMU_UNMAP_DMA", e).at(iova, size).path(&self.path))?;
        Ok(u.size)
    }

    fn unmap_all(&mut self) -> KResult<u64> {
        let mut u =
            vfio_iommu_type1_dma_unmap { argsz: argsz::<vfio_iommu_type1_dma_unmap>(), flags: VFIO_DMA_UNMAP_FLAG_ALL, iova: 0, size: 0 };
        sys::ioctl_ptr(self.fd.as_raw_fd(), VFIO_IOMMU_UNMAP_DMA, &mut u)
            .map_err(|e| KernelError::new("VFIO_IOMMU_UNMAP_DMA(ALL)", e).path(&self.path))?;
        Ok(u.size)
    }

    fn copy(&mut self, src_iova: u64, _dst_iova: u64, size: u64) -> KResult<()> {
        Err(KernelError::errno("IOMMU_IOAS_COPY", EOPNOTSUPP).at(src_iova, size).path(&self.path))
    }

    fn iova_ranges(&mut self) -> KResult<Vec<(u64, u64)>> {
        Ok(parse_caps(&self.info()?).iova_ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put32(b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn parses_iova_range_and_dma_avail_caps() {
        let mut b = vec![0u8; 24 + 16 + 32 + 12];
        put32(&mut b, 4, VFIO_IOMMU_INFO_CAPS);
        put32(&mut b, 16, 24);
        // IOVA range cap at 24: id 1, next 72, nr_iovas 2
        b[24..26].copy_from_slice(&1u16.to_ne_bytes());
        put32(&mut b, 28, 72);
        put32(&mut b, 32, 2);
        b[40..48].copy_from_slice(&0u64.to_ne_bytes());
        b[48..56].copy_from_slice(&0xfedfffffu64.to_ne_bytes());
        b[56..64].copy_from_slice(&0xfef00000u64.to_ne_bytes());
        b[64..72].copy_from_slice(&u64::MAX.to_ne_bytes());
        // DMA avail cap at 72: id 3, next 0, avail 65535
        b[72..74].copy_from_slice(&3u16.to_ne_bytes());
        put32(&mut b, 80, 65535);
        let c = parse_caps(&b);
        assert_eq!(c.iova_ranges, vec![(0, 0xfedfffff), (0xfef00000, u64::MAX)]);
        assert_eq!(c.dma_avail, Some(65535));
    }

    #[test]
    fn no_caps_flag_means_no_caps() {
        assert_eq!(parse_caps(&[0u8; 24]), InfoCaps::default());
    }
}
