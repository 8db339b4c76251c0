//! pin-core: pins guest memory and keeps the IOMMU in step with the guest's
//! memory map. Loaded by Node as an N-API addon; the JS surface is `addon.rs`.

pub mod accounting;
mod addon;
pub mod backend;
pub mod errno;
pub mod iommufd;
pub mod kick;
pub mod mapper;
pub mod memory;
mod napi;
pub mod planner;
pub mod sys;
pub mod table;
pub mod type1;
pub mod uapi;
