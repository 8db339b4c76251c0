//! Kernel ABI used by pin-core, written once: ioctl numbers and `#[repr(C)]`
//! structs from linux/vfio.h, linux/iommufd.h and the iommufd selftest header
//! (drivers/iommu/iommufd/iommufd_test.h), with the kernel's names kept.
//! test/unit/uapi.test.ts compiles every constant, struct size and field
//! offset here against the kernel's headers. A field whose name starts with
//! a single `_` is padding of pin-core's own, with no counterpart there.
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case)]

const fn _IO(ty: u8, nr: u8) -> u64 {
    ((ty as u64) << 8) | nr as u64
}

/// The value of a struct's leading `argsz`/`size` field: the whole struct.
pub const fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

// ---- linux/vfio.h ----
pub const VFIO_TYPE: u8 = b';';
pub const VFIO_BASE: u8 = 100;
pub const VFIO_API_VERSION: i32 = 0;
pub const VFIO_GET_API_VERSION: u64 = _IO(VFIO_TYPE, VFIO_BASE);
pub const VFIO_CHECK_EXTENSION: u64 = _IO(VFIO_TYPE, VFIO_BASE + 1);
pub const VFIO_SET_IOMMU: u64 = _IO(VFIO_TYPE, VFIO_BASE + 2);
pub const VFIO_IOMMU_GET_INFO: u64 = _IO(VFIO_TYPE, VFIO_BASE + 12);
pub const VFIO_IOMMU_MAP_DMA: u64 = _IO(VFIO_TYPE, VFIO_BASE + 13);
pub const VFIO_IOMMU_UNMAP_DMA: u64 = _IO(VFIO_TYPE, VFIO_BASE + 14);
pub const VFIO_IOMMU_DIRTY_PAGES: u64 = _IO(VFIO_TYPE, VFIO_BASE + 17);

pub const VFIO_TYPE1_IOMMU: u64 = 1;
pub const VFIO_TYPE1v2_IOMMU: u64 = 3;
pub const VFIO_UNMAP_ALL: u64 = 9;
pub const VFIO_UPDATE_VADDR: u64 = 10;

pub const VFIO_IOMMU_INFO_PGSIZES: u32 = 1 << 0;
pub const VFIO_IOMMU_INFO_CAPS: u32 = 1 << 1;
pub const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: u16 = 1;
pub const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: u16 = 3;

pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
pub const VFIO_DMA_MAP_FLAG_VADDR: u32 = 1 << 2;
pub const VFIO_DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;
pub const VFIO_DMA_UNMAP_FLAG_VADDR: u32 = 1 << 2;

#[repr(C)]
#[derive(Default)]
pub struct vfio_iommu_type1_info {
    pub argsz: u32,
    pub flags: u32,
    pub iova_pgsizes: u64,
    pub cap_offset: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Default)]
pub struct vfio_info_cap_header {
    pub id: u16,
    pub version: u16,
    pub next: u32,
}

/// Followed by `nr_iovas` struct vfio_iova_range (iova_ranges[]).
#[repr(C)]
#[derive(Default)]
pub struct vfio_iommu_type1_info_cap_iova_range {
    pub header: vfio_info_cap_header,
    pub nr_iovas: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Default)]
pub struct vfio_iova_range {
    pub start: u64,
    pub end: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct vfio_iommu_type1_info_dma_avail {
    pub header: vfio_info_cap_header,
    pub avail: u32,
}

#[repr(C)]
#[derive(Default)]
pub struct vfio_iommu_type1_dma_map {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct vfio_iommu_type1_dma_unmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

/// Followed by data[] (a vfio_iommu_type1_dirty_bitmap_get for GET_BITMAP);
/// pin-core sends only the header, to learn a set container's type (type1.rs).
#[repr(C)]
#[derive(Default)]
pub struct vfio_iommu_type1_dirty_bitmap {
    pub argsz: u32,
    pub flags: u32,
}

// ---- linux/iommufd.h ----
pub const IOMMUFD_TYPE: u8 = b';';
pub const IOMMU_DESTROY: u64 = _IO(IOMMUFD_TYPE, 0x80);
pub const IOMMU_IOAS_ALLOC: u64 = _IO(IOMMUFD_TYPE, 0x81);
pub const IOMMU_IOAS_COPY: u64 = _IO(IOMMUFD_TYPE, 0x83);
pub const IOMMU_IOAS_IOVA_RANGES: u64 = _IO(IOMMUFD_TYPE, 0x84);
pub const IOMMU_IOAS_MAP: u64 = _IO(IOMMUFD_TYPE, 0x85);
pub const IOMMU_IOAS_UNMAP: u64 = _IO(IOMMUFD_TYPE, 0x86);
pub const IOMMU_OPTION: u64 = _IO(IOMMUFD_TYPE, 0x87);
pub const IOMMU_IOAS_MAP_FILE: u64 = _IO(IOMMUFD_TYPE, 0x8f);
pub const IOMMU_IOAS_CHANGE_PROCESS: u64 = _IO(IOMMUFD_TYPE, 0x92);

pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;
pub const IOMMU_OPTION_RLIMIT_MODE: u32 = 0;
pub const IOMMU_OPTION_HUGE_PAGES: u32 = 1;
pub const IOMMU_OPTION_OP_SET: u16 = 0;
pub const IOMMU_OPTION_OP_GET: u16 = 1;

#[repr(C)]
#[derive(Default)]
pub struct iommu_destroy {
    pub size: u32,
    pub id: u32,
}

#[repr(C)]
#[derive(Default)]
pub struct iommu_ioas_alloc {
    pub size: u32,
    pub flags: u32,
    pub out_ioas_id: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct iommu_iova_range {
    pub start: u64,
    pub last: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct iommu_ioas_iova_ranges {
    pub size: u32,
    pub ioas_id: u32,
    pub num_iovas: u32,
    pub __reserved: u32,
    pub allowed_iovas: u64,
    pub out_iova_alignment: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct iommu_ioas_map {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub __reserved: u32,
    pub user_va: u64,
    pub length: u64,
    pub iova: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct iommu_ioas_map_file {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub fd: i32,
    pub start: u64,
    pub length: u64,
    pub iova: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct iommu_ioas_copy {
    pub size: u32,
    pub flags: u32,
    pub dst_ioas_id: u32,
    pub src_ioas_id: u32,
    pub length: u64,
    pub dst_iova: u64,
    pub src_iova: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct iommu_ioas_unmap {
    pub size: u32,
    pub ioas_id: u32,
    pub iova: u64,
    pub length: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct iommu_option {
    pub size: u32,
    pub option_id: u32,
    pub op: u16,
    pub __reserved: u16,
    pub object_id: u32,
    pub val64: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct iommu_ioas_change_process {
    pub size: u32,
    pub __reserved: u32,
}

// ---- drivers/iommu/iommufd/iommufd_test.h (CONFIG_IOMMUFD_TEST) ----
pub const IOMMU_TEST_CMD: u64 = _IO(IOMMUFD_TYPE, 0x80 + 32);
pub const IOMMU_TEST_OP_MOCK_DOMAIN: u32 = 2;

/// struct iommu_test_cmd with only the mock_domain member of its union
/// (out_stdev_id, out_hwpt_id, out_idev_id); the union's __aligned_u64
/// members make the struct 8-aligned.
#[repr(C, align(8))]
#[derive(Default)]
pub struct iommu_test_cmd {
    pub size: u32,
    pub op: u32,
    pub id: u32,
    pub __reserved: u32,
    pub mock_domain: [u32; 3],
    pub _union_rest: [u32; 9],
    pub last: u32,
}
