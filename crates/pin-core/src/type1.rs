//! VFIO's legacy container (/dev/vfio/vfio) with the type1 IOMMU driver, or
//! iommufd's compatibility layer behind the same node. Pinned pages are
//! charged to the mapping process's mm->locked_vm at MAP_DMA time (type1).

use crate::backend::{Caps, ContainerType, DmaBackend, IommuPath, KResult, KernelError};
use crate::errno::{EINVAL, EOPNOTSUPP};
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
        // EINVAL for unknown ioctls before SET_IOMMU (vfio_fops_unl_ioctl).
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

    pub fn check_extension(&self, ext: u64) -> bool {
        sys::ioctl_int(self.fd.as_raw_fd(), VFIO_CHECK_EXTENSION, ext).map(|r| r > 0).unwrap_or(false)
    }

    /// VFIO_SET_IOMMU: type1v2 unless asked for (or only offered) type1. The
    /// kernel takes it only once a group has joined (VfioGroup in TypeScript
    /// owns the groups: VFIO_GROUP_SET_CONTAINER is theirs, on their fds).
    pub fn set_iommu(&mut self, v1_only: bool) -> KResult<()> {
        let v2 = !v1_only && self.check_extension(VFIO_TYPE1v2_IOMMU);
        let ty = if v2 { VFIO_TYPE1v2_IOMMU } else { VFIO_TYPE1_IOMMU };
        sys::ioctl_int(self.fd.as_raw_fd(), VFIO_SET_IOMMU, ty).map_err(|e| KernelError::new("VFIO_SET_IOMMU", e).path(&self.path))?;
        self.caps.container_type = Some(if v2 { ContainerType::Type1v2 } else { ContainerType::Type1 });
        self.caps.unmap_all = self.check_extension(VFIO_UNMAP_ALL);
        self.caps.update_vaddr = self.check_extension(VFIO_UPDATE_VADDR);
        self.read_info()
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

    fn read_info(&mut self) -> KResult<()> {
        let buf = self.info()?;
        let at = offset_of!(vfio_iommu_type1_info, iova_pgsizes);
        self.caps.pgsize_bitmap = u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap());
        self.caps.max_entries = parse_caps(&buf).dma_avail;
        Ok(())
    }

    /// VADDR update for live update: invalidate (None) or set a new vaddr.
    pub fn update_vaddr(&mut self, iova: u64, size: u64, vaddr: Option<u64>) -> KResult<()> {
        let fd = self.fd.as_raw_fd();
        let r = match vaddr {
            None => {
                let mut u = vfio_iommu_type1_dma_unmap {
                    argsz: argsz::<vfio_iommu_type1_dma_unmap>(),
                    flags: VFIO_DMA_UNMAP_FLAG_VADDR,
                    iova,
                    size,
                };
                sys::ioctl_ptr(fd, VFIO_IOMMU_UNMAP_DMA, &mut u).map_err(|e| KernelError::new("VFIO_IOMMU_UNMAP_DMA(VADDR)", e))
            }
            Some(v) => {
                let mut m = vfio_iommu_type1_dma_map {
                    argsz: argsz::<vfio_iommu_type1_dma_map>(),
                    flags: VFIO_DMA_MAP_FLAG_VADDR,
                    vaddr: v,
                    iova,
                    size,
                };
                sys::ioctl_ptr(fd, VFIO_IOMMU_MAP_DMA, &mut m).map_err(|e| KernelError::new("VFIO_IOMMU_MAP_DMA(VADDR)", e))
            }
        };
        r.map(|_| ()).map_err(|e| e.at(iova, size).path(&self.path))
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
