//! iommufd (/dev/iommu) with one IOAS per VMM. By default pinned pages are
//! charged to the *user* (user->locked_vm) against the task's RLIMIT_MEMLOCK;
//! IOMMU_OPTION_RLIMIT_MODE = 1 (needs CAP_SYS_RESOURCE) charges the process.
//! Pages are pinned when a domain is attached to the IOAS, so a map with no
//! device attached charges nothing yet.

use crate::backend::{Caps, DmaBackend, IommuPath, KResult, KernelError};
use crate::errno::EMSGSIZE;
use crate::sys;
use crate::table::{Backing, Prot};
use crate::uapi::*;
use std::os::fd::{AsRawFd, OwnedFd};

pub struct Iommufd {
    fd: OwnedFd,
    path: String,
    ioas_id: u32,
    caps: Caps,
}

impl Iommufd {
    pub fn open(path: &str) -> KResult<Self> {
        let fd = sys::open_rdwr(path).map_err(|e| KernelError::new("open", e).path(path))?;
        Self::adopt(fd, path)
    }

    /// Takes an iommufd opened elsewhere (e.g. with RLIMIT_MODE set by a privileged opener).
    pub fn adopt(fd: OwnedFd, path: &str) -> KResult<Self> {
        let mut a = iommu_ioas_alloc { size: argsz::<iommu_ioas_alloc>(), ..Default::default() };
        sys::ioctl_ptr(fd.as_raw_fd(), IOMMU_IOAS_ALLOC, &mut a).map_err(|e| KernelError::new("IOMMU_IOAS_ALLOC", e).path(path))?;
        Ok(Self::with_ioas(fd, path, a.out_ioas_id))
    }

    /// Takes an iommufd and an IOAS in it that another process set up (live
    /// update: the old VMM passes its iommufd over, devices bound and
    /// attached, the IOAS holding the VM's mappings), so no IOMMU_IOAS_ALLOC.
    /// IOMMU_IOAS_IOVA_RANGES on the IOAS checks it here: an id that is not
    /// an IOAS of this iommufd fails now with its errno (ENOENT), not at the
    /// first map.
    pub fn inherit(fd: OwnedFd, path: &str, ioas_id: u32) -> KResult<Self> {
        let mut i = Self::with_ioas(fd, path, ioas_id);
        i.iova_ranges()?;
        Ok(i)
    }

    fn with_ioas(fd: OwnedFd, path: &str, ioas_id: u32) -> Self {
        let caps = Caps {
            path: IommuPath::Iommufd,
            container_type: None,
            can_copy: true,
            can_map_file: true,
            unmap_all: true,
            update_vaddr: false,
            max_entries: None,
            pgsize_bitmap: 0,
        };
        Iommufd { fd, path: path.to_string(), ioas_id, caps }
    }

    pub fn ioas_id(&self) -> u32 {
        self.ioas_id
    }

    fn err(&self, op: &'static str, e: std::io::Error) -> KernelError {
        KernelError::new(op, e).path(&self.path)
    }

    /// IOMMU_OPTION get (value None) or set; returns the option's value.
    pub fn option(&mut self, option_id: u32, value: Option<u64>) -> KResult<u64> {
        let mut o = iommu_option { size: argsz::<iommu_option>(), option_id, ..Default::default() };
        // RLIMIT_MODE is global (object 0); HUGE_PAGES belongs to the IOAS.
        o.object_id = if option_id == IOMMU_OPTION_HUGE_PAGES { self.ioas_id } else { 0 };
        match value {
            None => o.op = IOMMU_OPTION_OP_GET,
            Some(v) => {
                o.op = IOMMU_OPTION_OP_SET;
                o.val64 = v;
            }
        }
        sys::ioctl_ptr(self.fd.as_raw_fd(), IOMMU_OPTION, &mut o).map_err(|e| self.err("IOMMU_OPTION", e))?;
        Ok(value.unwrap_or(o.val64))
    }

    /// Moves every pinned-page charge of this iommufd to the calling process.
    pub fn change_process(&mut self) -> KResult<()> {
        let mut c = iommu_ioas_change_process { size: argsz::<iommu_ioas_change_process>(), __reserved: 0 };
        sys::ioctl_ptr(self.fd.as_raw_fd(), IOMMU_IOAS_CHANGE_PROCESS, &mut c)
            .map(|_| ())
            .map_err(|e| self.err("IOMMU_IOAS_CHANGE_PROCESS", e))
    }

    pub fn destroy(&mut self, id: u32) -> KResult<()> {
        let mut d = iommu_destroy { size: argsz::<iommu_destroy>(), id };
        sys::ioctl_ptr(self.fd.as_raw_fd(), IOMMU_DESTROY, &mut d).map(|_| ()).map_err(|e| self.err("IOMMU_DESTROY", e))
    }

    /// Attaches an IOMMUFD_TEST mock domain to the IOAS; returns (stdev, hwpt, idev) ids.
    pub fn mock_domain(&mut self) -> KResult<(u32, u32, u32)> {
        let (size, op, id) = (argsz::<iommu_test_cmd>(), IOMMU_TEST_OP_MOCK_DOMAIN, self.ioas_id);
        let mut c = iommu_test_cmd { size, op, id, ..Default::default() };
        sys::ioctl_ptr(self.fd.as_raw_fd(), IOMMU_TEST_CMD, &mut c).map_err(|e| self.err("IOMMU_TEST_OP_MOCK_DOMAIN", e))?;
        let [stdev, hwpt, idev] = c.mock_domain;
        Ok((stdev, hwpt, idev))
    }
}

fn ioas_flags(prot: Prot) -> u32 {
    IOMMU_IOAS_MAP_FIXED_IOVA
        | (if prot.read { IOMMU_IOAS_MAP_READABLE } else { 0 })
        | (if prot.write { IOMMU_IOAS_MAP_WRITEABLE } else { 0 })
}

impl DmaBackend for Iommufd {
    fn caps(&self) -> &Caps {
        &self.caps
    }

    fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn map(&mut self, iova: u64, size: u64, backing: &Backing, prot: Prot) -> KResult<()> {
        let fd = self.fd.as_raw_fd();
        let r = match *backing {
            Backing::Vaddr(user_va) => {
                let (flags, ioas_id) = (ioas_flags(prot), self.ioas_id);
                let mut m =
                    iommu_ioas_map { size: argsz::<iommu_ioas_map>(), flags, ioas_id, user_va, length: size, iova, ..Default::default() };
                sys::ioctl_ptr(fd, IOMMU_IOAS_MAP, &mut m).map_err(|e| KernelError::new("IOMMU_IOAS_MAP", e))
            }
            Backing::File { fd: file, offset } => {
                let (flags, ioas_id) = (ioas_flags(prot), self.ioas_id);
                let mut m = iommu_ioas_map_file {
                    size: argsz::<iommu_ioas_map_file>(),
                    flags,
                    ioas_id,
                    fd: file,
                    start: offset,
                    length: size,
                    iova,
                };
                sys::ioctl_ptr(fd, IOMMU_IOAS_MAP_FILE, &mut m).map_err(|e| KernelError::new("IOMMU_IOAS_MAP_FILE", e))
            }
        };
        r.map(|_| ()).map_err(|e| e.at(iova, size).path(&self.path))
    }

    fn unmap(&mut self, iova: u64, size: u64) -> KResult<u64> {
        let mut u = iommu_ioas_unmap { size: argsz::<iommu_ioas_unmap>(), ioas_id: self.ioas_id, iova, length: size };
        sys::ioctl_ptr(self.fd.as_raw_fd(), IOMMU_IOAS_UNMAP, &mut u).map_err(|e| self.err("IOMMU_IOAS_UNMAP", e).at(iova, size))?;
        Ok(u.length)
    }

    fn unmap_all(&mut self) -> KResult<u64> {
        // iova 0 with length U64_MAX is the header's "unmap everything".
        let mut u = iommu_ioas_unmap { size: argsz::<iommu_ioas_unmap>(), ioas_id: self.ioas_id, iova: 0, length: u64::MAX };
        sys::ioctl_ptr(self.fd.as_raw_fd(), IOMMU_IOAS_UNMAP, &mut u).map_err(|e| self.err("IOMMU_IOAS_UNMAP(ALL)", e))?;
        Ok(u.length)
    }

    fn copy(&mut self, src_iova: u64, dst_iova: u64, size: u64) -> KResult<()> {
        let flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
        let (dst_ioas_id, src_ioas_id) = (self.ioas_id, self.ioas_id);
        let mut c = iommu_ioas_copy { size: argsz::<iommu_ioas_copy>(), flags, dst_ioas_id, src_ioas_id, length: size, dst_iova, src_iova };
        sys::ioctl_ptr(self.fd.as_raw_fd(), IOMMU_IOAS_COPY, &mut c)
            .map(|_| ())
            .map_err(|e| self.err("IOMMU_IOAS_COPY", e).at(dst_iova, size))
    }

    fn iova_ranges(&mut self) -> KResult<Vec<(u64, u64)>> {
        let fd = self.fd.as_raw_fd();
        let mut q = iommu_ioas_iova_ranges { size: argsz::<iommu_ioas_iova_ranges>(), ioas_id: self.ioas_id, ..Default::default() };
        // First call with no room: EMSGSIZE tells how many ranges there are.
        if let Err(e) = sys::ioctl_ptr(fd, IOMMU_IOAS_IOVA_RANGES, &mut q) {
            if e.raw_os_error() != Some(EMSGSIZE) {
                return Err(self.err("IOMMU_IOAS_IOVA_RANGES", e));
            }
        }
        let mut ranges = vec![iommu_iova_range::default(); q.num_iovas as usize];
        q.allowed_iovas = ranges.as_mut_ptr() as u64;
        sys::ioctl_ptr(fd, IOMMU_IOAS_IOVA_RANGES, &mut q).map_err(|e| self.err("IOMMU_IOAS_IOVA_RANGES", e))?;
        ranges.truncate(q.num_iovas as usize);
        Ok(ranges.iter().map(|r| (r.start, r.last)).collect())
    }
}
