//! Who the kernel charges for pinned DMA memory, on each path and mode, and
//! when. Pure; the rules are the kernel's (drivers/vfio/vfio_iommu_type1.c,
//! drivers/iommu/iommufd/pages.c) and each is checked by the conformance
//! suite and the accounting rig tests:
//!
//! - VFIO type1 container: `mm->locked_vm` (VmLck) of the mapping process,
//!   checked against its RLIMIT_MEMLOCK unless it has CAP_IPC_LOCK (then
//!   charged but not checked). Charged at MAP_DMA.
//! - iommufd, default (IOPT_PAGES_ACCOUNT_USER): `user->locked_vm` of the
//!   mapping task's user, the sum of all that user's charges checked against
//!   the mapping task's own RLIMIT_MEMLOCK. Not visible in /proc/<pid>/status.
//! - iommufd per-process (IOMMU_OPTION_RLIMIT_MODE = 1, needs
//!   CAP_SYS_RESOURCE to set) and the compat container (which sets it
//!   itself, to look like type1): `mm->locked_vm` (VmLck) against the task's
//!   limit.
//! - every iommufd mode also adds the pages to `mm->pinned_vm` (VmPin), and
//!   with CAP_IPC_LOCK charges nothing else (IOPT_PAGES_ACCOUNT_NONE).
//! - iommufd charges when pages are pinned: at IOAS_MAP once a device is
//!   attached (a domain exists), else at attach (cdev ATTACH, or opening the
//!   device fd under the compat container).

use crate::backend::IommuPath;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// iommufd's default: the user's total against the task's limit.
    PerUser,
    /// type1, compat, and iommufd with RLIMIT_MODE set.
    PerProcess,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// mm->locked_vm, VmLck in /proc/<pid>/status.
    VmLck,
    /// mm->pinned_vm, VmPin.
    VmPin,
    /// user->locked_vm: per uid, not shown per process.
    UserLockedVm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The counter of this process against its RLIMIT_MEMLOCK.
    Process,
    /// The user's total against this process's RLIMIT_MEMLOCK.
    UserTotal,
    /// CAP_IPC_LOCK: not checked.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Map,
    /// The first device attach (or map, once a device is attached).
    DeviceAttach,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub counters: Vec<Counter>,
    pub limit: Limit,
    pub when: When,
}

/// The mode a path runs in: type1 and compat are per-process by nature.
pub fn effective_mode(path: IommuPath, requested: Mode) -> Mode {
    match path {
        IommuPath::Iommufd => requested,
        IommuPath::Type1 | IommuPath::Compat => Mode::PerProcess,
    }
}

pub fn charge(path: IommuPath, mode: Mode, cap_ipc_lock: bool) -> Charge {
    let mode = effective_mode(path, mode);
    match path {
        IommuPath::Type1 => {
            Charge { counters: vec![Counter::VmLck], limit: if cap_ipc_lock { Limit::None } else { Limit::Process }, when: When::Map }
        }
        IommuPath::Compat | IommuPath::Iommufd => {
            let when = When::DeviceAttach;
            if cap_ipc_lock {
                return Charge { counters: vec![Counter::VmPin], limit: Limit::None, when };
            }
            match mode {
                Mode::PerUser => Charge { counters: vec![Counter::UserLockedVm, Counter::VmPin], limit: Limit::UserTotal, when },
                Mode::PerProcess => Charge { counters: vec![Counter::VmLck, Counter::VmPin], limit: Limit::Process, when },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type1_charges_vmlck_at_map_per_process() {
        let c = charge(IommuPath::Type1, Mode::PerUser, false);
        assert_eq!(c, Charge { counters: vec![Counter::VmLck], limit: Limit::Process, when: When::Map });
        assert_eq!(charge(IommuPath::Type1, Mode::PerProcess, true).limit, Limit::None);
    }

    #[test]
    fn iommufd_default_charges_the_user_against_the_task_limit() {
        let c = charge(IommuPath::Iommufd, Mode::PerUser, false);
        assert_eq!(c.counters, vec![Counter::UserLockedVm, Counter::VmPin]);
        assert_eq!((c.limit, c.when), (Limit::UserTotal, When::DeviceAttach));
    }

    #[test]
    fn per_process_mode_and_compat_look_like_type1_plus_vmpin() {
        for c in [charge(IommuPath::Iommufd, Mode::PerProcess, false), charge(IommuPath::Compat, Mode::PerUser, false)] {
            assert_eq!(c.counters, vec![Counter::VmLck, Counter::VmPin]);
            assert_eq!(c.limit, Limit::Process);
        }
    }

    #[test]
    fn cap_ipc_lock_leaves_only_vmpin_on_iommufd() {
        assert_eq!(charge(IommuPath::Compat, Mode::PerProcess, true).counters, vec![Counter::VmPin]);
        assert_eq!(charge(IommuPath::Iommufd, Mode::PerUser, true).limit, Limit::None);
    }
}
