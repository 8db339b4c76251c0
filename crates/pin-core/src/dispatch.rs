//! The backend a VMM chose, as a closed set over the concrete backends. It
//! sits above `type1.rs` and `iommufd.rs` (and `backend.rs`, which they
//! implement) so that no backend module imports one that imports it.

use crate::backend::DmaBackend;
use crate::iommufd::Iommufd;
use crate::type1::Type1Container;

/// Path-specific calls (VADDR update, IOMMU options) match on it instead of downcasting.
pub enum AnyBackend {
    Type1(Type1Container),
    Iommufd(Iommufd),
}

impl AnyBackend {
    pub fn dma(&mut self) -> &mut dyn DmaBackend {
        match self {
            AnyBackend::Type1(c) => c,
            AnyBackend::Iommufd(i) => i,
        }
    }
}
