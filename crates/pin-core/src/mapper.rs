//! The DMA mapper: the mapping table in front of one backend. `sync` brings
//! the IOMMU to exactly the desired regions through the planner's op list.
//!
//! Failure policy: ops run in order and stop at the first kernel error; the
//! table then holds exactly what the kernel holds (every op that succeeded),
//! and the error names the op, IOVA and size. The caller decides whether a
//! runtime failure is fatal for the VM (setup failures always are).

use crate::backend::{DmaBackend, KernelError};
use crate::planner::{self, Op, Plan, PlanError, PlanRules, Region};
use crate::table::{MappingTable, TableRules};

pub struct Mapper {
    table: MappingTable,
}

#[derive(Debug)]
pub enum SyncError {
    Plan(PlanError),
    // Boxed: the plan is large and only the failure path carries it (clippy::result_large_err).
    Kernel { err: KernelError, done: usize, plan: Box<Plan> },
}

/// type1's default dma_entry_limit, when the kernel does not report DMA_AVAIL.
const TYPE1_DEFAULT_ENTRIES: usize = 65535;

impl Mapper {
    pub fn new(backend: &mut dyn DmaBackend, page_size: u64) -> Result<Mapper, KernelError> {
        let iova_ranges = backend.iova_ranges()?;
        let max_entries = backend.caps().max_entries.map(|n| n as usize).unwrap_or(if backend.caps().can_copy {
            usize::MAX
        } else {
            TYPE1_DEFAULT_ENTRIES
        });
        let table = MappingTable::new(TableRules { page_size, iova_ranges, max_entries });
        Ok(Mapper { table })
    }

    pub fn table(&self) -> &MappingTable {
        &self.table
    }

    pub fn sync(&mut self, backend: &mut dyn DmaBackend, desired: &[Region], budget_bytes: Option<u64>) -> Result<Plan, SyncError> {
        let rules = PlanRules { can_copy: backend.caps().can_copy, budget_bytes, max_entries: self.table.rules().max_entries };
        let plan = planner::plan(&self.table, desired, &rules).map_err(SyncError::Plan)?;
        for (i, op) in plan.ops.iter().enumerate() {
            let r = match op {
                Op::Unmap { iova, size } => backend.unmap(*iova, *size).map(|_| ()),
                Op::Map(r) => backend.map(r.iova, r.size, &r.backing, r.prot),
                Op::Copy { src_iova, dst_iova, size } => backend.copy(*src_iova, *dst_iova, *size),
            };
            if let Err(err) = r {
                return Err(SyncError::Kernel { err, done: i, plan: Box::new(plan) });
            }
            // The kernel accepted the op, so the table must too; a refusal here is a planner bug.
            planner::apply(&mut self.table, op).expect("table rejected an op the kernel accepted");
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Caps, IommuPath, KResult};
    use crate::table::{Backing, Mapping, Prot};

    const P: u64 = 0x1000;
    const FAR: u64 = 0x100_0000;
    const EBUSY: i32 = 16;

    /// Records every op it is asked for, as the planner's `Op`, and fails attempt `fail_at` (counted from 0).
    struct Fake {
        caps: Caps,
        ranges: KResult<Vec<(u64, u64)>>,
        attempts: Vec<Op>,
        fail_at: Option<usize>,
    }

    fn fake(path: IommuPath, max_entries: Option<u32>) -> Fake {
        let caps = Caps {
            path,
            container_type: None,
            can_copy: path == IommuPath::Iommufd,
            can_map_file: false,
            unmap_all: true,
            update_vaddr: false,
            max_entries,
            pgsize_bitmap: P,
        };
        Fake { caps, ranges: Ok(vec![]), attempts: vec![], fail_at: None }
    }

    impl Fake {
        fn attempt(&mut self, op: Op, name: &'static str, iova: u64, size: u64) -> KResult<()> {
            self.attempts.push(op);
            if self.fail_at == Some(self.attempts.len() - 1) {
                return Err(KernelError::errno(name, EBUSY).at(iova, size));
            }
            Ok(())
        }
    }

    impl DmaBackend for Fake {
        fn caps(&self) -> &Caps {
            &self.caps
        }
        fn fd(&self) -> i32 {
            -1
        }
        fn map(&mut self, iova: u64, size: u64, backing: &Backing, prot: Prot) -> KResult<()> {
            self.attempt(Op::Map(Region { iova, size, backing: *backing, prot }), "MAP", iova, size)
        }
        fn unmap(&mut self, iova: u64, size: u64) -> KResult<u64> {
            self.attempt(Op::Unmap { iova, size }, "UNMAP", iova, size).map(|_| size)
        }
        fn unmap_all(&mut self) -> KResult<u64> {
            unreachable!("the mapper never unmaps all")
        }
        fn copy(&mut self, src_iova: u64, dst_iova: u64, size: u64) -> KResult<()> {
            self.attempt(Op::Copy { src_iova, dst_iova, size }, "COPY", dst_iova, size)
        }
        fn iova_ranges(&mut self) -> KResult<Vec<(u64, u64)>> {
            self.ranges.clone()
        }
    }

    fn r(iova: u64, pages: u64, vaddr: u64) -> Region {
        Region { iova, size: pages * P, backing: Backing::Vaddr(vaddr), prot: Prot::READ_WRITE }
    }

    fn held(m: &Mapper) -> Vec<Mapping> {
        m.table().iter().copied().collect()
    }

    fn kernel_err(e: SyncError) -> (KernelError, usize, Plan) {
        match e {
            SyncError::Kernel { err, done, plan } => (err, done, *plan),
            SyncError::Plan(p) => panic!("expected a kernel failure, got {p}"),
        }
    }

    /// A mapper whose table holds `rs`, with the fake's record cleared.
    fn mapped(b: &mut Fake, rs: &[Region]) -> Mapper {
        let mut m = Mapper::new(b, P).unwrap();
        m.sync(b, rs, None).unwrap();
        b.attempts.clear();
        m
    }

    #[test]
    fn failure_part_way_keeps_what_ran_and_stops() {
        let mut b = fake(IommuPath::Type1, None);
        let mut m = mapped(&mut b, &[]);
        let rs = [r(0, 1, 0x10_0000), r(4 * P, 1, 0x20_0000), r(8 * P, 1, 0x30_0000)];
        b.fail_at = Some(1);
        let (err, done, plan) = kernel_err(m.sync(&mut b, &rs, None).unwrap_err());
        assert_eq!(err, KernelError::errno("MAP", EBUSY).at(4 * P, P), "the backend's error, unchanged");
        assert_eq!(done, 1);
        assert_eq!(plan.ops, rs.iter().map(|x| Op::Map(*x)).collect::<Vec<_>>(), "the whole plan comes back");
        assert_eq!(b.attempts, plan.ops[..2], "nothing after the failed op is tried, nothing is undone");
        assert_eq!(held(&m), vec![rs[0].mapping()]);
        assert_eq!(m.table().charged_bytes(), P);
    }

    #[test]
    fn failure_at_the_first_op_leaves_the_table_as_it_was() {
        let mut b = fake(IommuPath::Type1, None);
        let old = r(0, 4, 0x10_0000);
        let mut m = mapped(&mut b, &[old]);
        b.fail_at = Some(0);
        let (_, done, _) = kernel_err(m.sync(&mut b, &[Region { iova: FAR, ..old }], None).unwrap_err());
        assert_eq!(done, 0);
        assert_eq!(b.attempts.len(), 1);
        assert_eq!(held(&m), vec![old.mapping()]);
    }

    #[test]
    fn failed_unmap_after_make_before_break_leaves_both_and_a_retry_finishes_it() {
        let mut b = fake(IommuPath::Type1, None);
        let old = r(0, 4, 0x10_0000);
        let new = Region { iova: FAR, ..old };
        let mut m = mapped(&mut b, &[old]);
        b.fail_at = Some(1);
        let (err, done, _) = kernel_err(m.sync(&mut b, &[new], None).unwrap_err());
        assert_eq!((err.op, done), ("UNMAP", 1));
        assert_eq!(held(&m), vec![old.mapping(), new.mapping()], "the table says what the kernel holds: both");
        assert_eq!(m.table().charged_bytes(), 8 * P);
        b.fail_at = None;
        b.attempts.clear();
        let plan = m.sync(&mut b, &[new], None).unwrap();
        assert_eq!(plan.ops, vec![Op::Unmap { iova: 0, size: 4 * P }], "the retry plans from the partial table");
        assert_eq!(b.attempts, plan.ops);
        assert_eq!(held(&m), vec![new.mapping()]);
    }

    #[test]
    fn resync_to_the_old_map_undoes_the_part_that_ran() {
        let mut b = fake(IommuPath::Type1, None);
        let whole = r(0, 8, 0x10_0000);
        let (lo, hi) = (r(0, 4, 0x10_0000), r(4 * P, 4, 0x10_0000 + 4 * P));
        let mut m = mapped(&mut b, &[whole]);
        b.fail_at = Some(2);
        let (_, done, plan) = kernel_err(m.sync(&mut b, &[lo, hi], None).unwrap_err());
        assert_eq!(plan.ops, vec![Op::Unmap { iova: 0, size: 8 * P }, Op::Map(lo), Op::Map(hi)]);
        assert_eq!(done, 2);
        assert_eq!(held(&m), vec![lo.mapping()], "the old mapping is gone, only the first half is back");
        // GuestMemory's rollback re-commits the old map: that is the way back.
        b.fail_at = None;
        b.attempts.clear();
        m.sync(&mut b, &[whole], None).unwrap();
        assert_eq!(b.attempts, vec![Op::Unmap { iova: 0, size: 4 * P }, Op::Map(whole)]);
        assert_eq!(held(&m), vec![whole.mapping()]);
    }

    #[test]
    fn failed_unmap_after_a_copy_keeps_the_sharer_uncharged() {
        let mut b = fake(IommuPath::Iommufd, None);
        let old = r(0, 4, 0x10_0000);
        let mut m = mapped(&mut b, &[old]);
        b.fail_at = Some(1);
        let (err, done, _) = kernel_err(m.sync(&mut b, &[Region { iova: FAR, ..old }], None).unwrap_err());
        assert_eq!((err.op, done), ("UNMAP", 1));
        assert_eq!(b.attempts[0], Op::Copy { src_iova: 0, dst_iova: FAR, size: 4 * P });
        assert_eq!(m.table().len(), 2);
        assert_eq!(m.table().get(FAR).unwrap().shares_with, Some(0));
        assert_eq!(m.table().charged_bytes(), 4 * P, "the copy pinned nothing more");
    }

    #[test]
    fn plan_refusals_issue_no_op() {
        let mut b = fake(IommuPath::Type1, None);
        let a = r(0, 4, 0x10_0000);
        let mut m = mapped(&mut b, &[a]);
        let e = m.sync(&mut b, &[a, r(FAR, 1, 0x20_0000)], Some(0)).unwrap_err();
        assert!(matches!(e, SyncError::Plan(PlanError::OverBudget { needed: P, budget: 0 })), "{e:?}");
        let e = m.sync(&mut b, &[r(0, 4, 0), r(2 * P, 4, 0)], None).unwrap_err();
        assert!(matches!(e, SyncError::Plan(PlanError::Invalid(_))), "{e:?}");
        assert!(b.attempts.is_empty());
        assert_eq!(held(&m), vec![a.mapping()]);
    }

    #[test]
    fn new_takes_entry_limit_and_iova_ranges_from_the_backend() {
        let limit = |b: &mut Fake| Mapper::new(b, P).unwrap().table().rules().max_entries;
        assert_eq!(limit(&mut fake(IommuPath::Type1, Some(7))), 7, "DMA_AVAIL as reported");
        assert_eq!(limit(&mut fake(IommuPath::Type1, None)), 65535, "type1's default dma_entry_limit");
        assert_eq!(limit(&mut fake(IommuPath::Iommufd, None)), usize::MAX, "iommufd has no entry limit");
        let mut b = fake(IommuPath::Type1, None);
        b.ranges = Ok(vec![(0, 0xfedf_ffff)]);
        let m = Mapper::new(&mut b, P).unwrap();
        assert_eq!((m.table().rules().iova_ranges.clone(), m.table().rules().page_size), (vec![(0, 0xfedf_ffff)], P));
        b.ranges = Err(KernelError::errno("IOVA_RANGES", EBUSY));
        assert_eq!(Mapper::new(&mut b, P).err(), Some(KernelError::errno("IOVA_RANGES", EBUSY)));
    }
}
