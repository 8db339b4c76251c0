//! The DMA mapper: the mapping table in front of one backend. `sync` brings
//! the IOMMU to exactly the desired regions through the planner's op list;
//! `batch` runs a caller's own op list, each op checked by the table first.
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

/// Why one op of a batch did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpError {
    /// Refused before any ioctl: by the table's rules (with the errno the
    /// kernel would give) or by the locked-memory budget.
    Refused(PlanError),
    Kernel(KernelError),
}

/// The first op of a batch that did not happen; those before it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchError {
    pub index: usize,
    pub err: OpError,
}

/// type1's default dma_entry_limit, when the kernel does not report DMA_AVAIL.
const TYPE1_DEFAULT_ENTRIES: usize = 65535;

/// The ioctl for one op; returns the bytes the kernel reports unmapped (0 for a map or copy).
fn issue(backend: &mut dyn DmaBackend, op: &Op) -> Result<u64, KernelError> {
    match op {
        Op::Unmap { iova, size } => backend.unmap(*iova, *size),
        Op::Map(r) => backend.map(r.iova, r.size, &r.backing, r.prot).map(|_| 0),
        Op::Copy { src_iova, dst_iova, size } => backend.copy(*src_iova, *dst_iova, *size).map(|_| 0),
    }
}

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
            if let Err(err) = issue(backend, op) {
                return Err(SyncError::Kernel { err, done: i, plan: Box::new(plan) });
            }
            // The kernel accepted the op, so the table must too; a refusal here is a planner bug.
            planner::apply(&mut self.table, op).expect("table rejected an op the kernel accepted");
        }
        Ok(plan)
    }

    /// Runs `ops` in order, each one checked by the table before its ioctl
    /// and recorded once the kernel made it, and stops at the first one
    /// refused or failed (same failure policy as `sync`). `budget_bytes` is
    /// the locked memory the batch may add, at any point, above what the
    /// table charges at its start, as `sync`'s budget. `unmapped(index,
    /// bytes)` hears what the kernel reports for each unmap.
    pub fn batch(
        &mut self,
        backend: &mut dyn DmaBackend,
        ops: &[Op],
        budget_bytes: Option<u64>,
        mut unmapped: impl FnMut(usize, u64),
    ) -> Result<(), BatchError> {
        let base = self.table.charged_bytes();
        for (index, op) in ops.iter().enumerate() {
            let refused = |e| BatchError { index, err: OpError::Refused(e) };
            let c = planner::check(&self.table, op).map_err(|e| refused(PlanError::Invalid(e)))?;
            if let Some(budget) = budget_bytes {
                let after = self.table.charged_bytes() + c.charges();
                if after > base.saturating_add(budget) {
                    return Err(refused(PlanError::OverBudget { needed: after - base, budget }));
                }
            }
            let n = issue(backend, op).map_err(|e| BatchError { index, err: OpError::Kernel(e) })?;
            self.table.commit(c);
            if let Op::Unmap { .. } = op {
                unmapped(index, n);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Caps, IommuPath, KResult};
    use crate::table::{Backing, Mapping, Prot, TableError};

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
        // New memory for both halves: the old mapping serves neither.
        let (lo, hi) = (r(0, 4, 0x30_0000), r(4 * P, 4, 0x30_0000 + 4 * P));
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

    /// Runs a batch, returning the error (if any) and the (index, bytes) of each unmap heard.
    fn run(m: &mut Mapper, b: &mut Fake, ops: &[Op], budget: Option<u64>) -> (Result<(), BatchError>, Vec<(usize, u64)>) {
        let mut heard = Vec::new();
        let r = m.batch(b, ops, budget, |i, n| heard.push((i, n)));
        (r, heard)
    }

    #[test]
    fn batch_runs_every_op_in_order_and_the_table_follows() {
        let mut b = fake(IommuPath::Type1, None);
        let mut m = mapped(&mut b, &[]);
        let (x, y, z) = (r(0, 1, 0x10_0000), r(4 * P, 2, 0x20_0000), r(0, 1, 0x30_0000));
        let ops = [Op::Map(x), Op::Map(y), Op::Unmap { iova: 0, size: P }, Op::Map(z)];
        let (res, heard) = run(&mut m, &mut b, &ops, None);
        res.unwrap();
        assert_eq!(b.attempts, ops, "every op reaches the kernel, in order");
        assert_eq!(heard, vec![(2, P)], "the kernel's unmapped bytes, by record");
        assert_eq!(held(&m), vec![z.mapping(), y.mapping()]);
        assert_eq!(m.table().charged_bytes(), 3 * P);
        // The table is the mapper's own: a sync to what the batch made has nothing to do.
        b.attempts.clear();
        assert_eq!(m.sync(&mut b, &[z, y], None).unwrap().ops, vec![]);
        assert!(b.attempts.is_empty());
    }

    #[test]
    fn batch_stops_at_a_kernel_failure_and_keeps_what_ran() {
        let mut b = fake(IommuPath::Type1, None);
        let old = r(8 * P, 2, 0x40_0000);
        let mut m = mapped(&mut b, &[old]);
        let ops =
            [Op::Map(r(0, 1, 0x10_0000)), Op::Unmap { iova: 8 * P, size: 2 * P }, Op::Map(r(P, 1, 0x20_0000)), Op::Map(r(2 * P, 1, 0))];
        b.fail_at = Some(2);
        let (res, heard) = run(&mut m, &mut b, &ops, None);
        let e = res.unwrap_err();
        assert_eq!(
            e,
            BatchError { index: 2, err: OpError::Kernel(KernelError::errno("MAP", EBUSY).at(P, P)) },
            "the backend's error, unchanged"
        );
        assert_eq!(b.attempts, ops[..3], "nothing after the failed op is tried, nothing is undone");
        assert_eq!(heard, vec![(1, 2 * P)]);
        assert_eq!(held(&m), vec![r(0, 1, 0x10_0000).mapping()], "the table says what the kernel holds");
        assert_eq!(m.table().charged_bytes(), P);
    }

    #[test]
    fn batch_ops_the_table_refuses_never_reach_the_kernel() {
        let mut b = fake(IommuPath::Type1, Some(2));
        let mut m = mapped(&mut b, &[r(0, 4, 0x10_0000)]);
        let cases: [(&[Op], usize, TableError); 4] = [
            (
                &[Op::Map(r(8 * P, 1, 0)), Op::Map(r(2 * P, 1, 0))],
                1,
                TableError::Overlap { iova: 2 * P, size: P, existing_iova: 0, existing_size: 4 * P },
            ),
            (&[Op::Unmap { iova: P, size: P }], 0, TableError::WouldSplit { iova: P, size: P, mapping_iova: 0, mapping_size: 4 * P }),
            (&[Op::Unmap { iova: 16 * P, size: P }], 0, TableError::NotFound { iova: 16 * P, size: P }),
            (&[Op::Map(r(16 * P, 1, 0)), Op::Map(r(20 * P, 1, 0))], 1, TableError::TooManyEntries { limit: 2 }),
        ];
        for (ops, index, want) in cases {
            let before = (held(&m), m.table().charged_bytes());
            b.attempts.clear();
            let (res, _) = run(&mut m, &mut b, ops, None);
            let e = res.unwrap_err();
            assert_eq!(e, BatchError { index, err: OpError::Refused(PlanError::Invalid(want.clone())) });
            assert_eq!(b.attempts, ops[..index], "only the ops before the refused one were issued");
            // Put the table back to where it was for the next case.
            for op in ops[..index].iter().rev() {
                if let Op::Map(x) = op {
                    m.batch(&mut b, &[Op::Unmap { iova: x.iova, size: x.size }], None, |_, _| {}).unwrap();
                }
            }
            assert_eq!((held(&m), m.table().charged_bytes()), before);
        }
        assert_eq!(TableError::NotFound { iova: 0, size: P }.errno(), crate::errno::ENOENT, "the errno iommufd gives");
    }

    #[test]
    fn batch_budget_bounds_the_peak_charge_above_the_start() {
        let mut b = fake(IommuPath::Type1, None);
        let mut m = mapped(&mut b, &[r(64 * P, 8, 0x80_0000)]);
        let ops = [
            Op::Map(r(0, 1, 0x10_0000)),
            Op::Map(r(P, 1, 0x20_0000)),
            Op::Unmap { iova: 0, size: P },
            Op::Map(r(2 * P, 1, 0x30_0000)),
            Op::Map(r(3 * P, 1, 0x40_0000)),
        ];
        let (res, _) = run(&mut m, &mut b, &ops, Some(2 * P));
        assert_eq!(
            res.unwrap_err(),
            BatchError { index: 4, err: OpError::Refused(PlanError::OverBudget { needed: 3 * P, budget: 2 * P }) }
        );
        assert_eq!(b.attempts, ops[..4], "an unmap frees budget for the ops after it");
        assert_eq!(m.table().charged_bytes(), 8 * P + 2 * P);
        assert_eq!(PlanError::OverBudget { needed: 0, budget: 0 }.errno(), crate::errno::ENOMEM);
    }

    #[test]
    fn batch_copy_shares_the_pages_and_charges_nothing() {
        let mut b = fake(IommuPath::Iommufd, None);
        let src = r(0, 4, 0x10_0000);
        let mut m = mapped(&mut b, &[src]);
        let ops = [Op::Copy { src_iova: 0, dst_iova: FAR, size: 4 * P }, Op::Unmap { iova: 0, size: 4 * P }];
        run(&mut m, &mut b, &ops, Some(0)).0.unwrap();
        assert_eq!(b.attempts, ops);
        assert_eq!(held(&m), vec![Region { iova: FAR, ..src }.mapping()], "the copy inherits the pages");
        assert_eq!(m.table().charged_bytes(), 4 * P);
        let (res, _) = run(&mut m, &mut b, &[Op::Copy { src_iova: FAR, dst_iova: 0, size: P }], None);
        assert!(
            matches!(res.unwrap_err().err, OpError::Refused(PlanError::Invalid(TableError::NotFound { .. }))),
            "only whole mappings are copied"
        );
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
