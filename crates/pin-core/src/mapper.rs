//! The DMA mapper: the mapping table in front of one backend. `sync` brings
//! the IOMMU to exactly the desired regions through the planner's op list;
//! `batch` runs a caller's own op list, each op checked by the table first.
//! For a live update, `seed` records what an inherited backend already maps,
//! and `invalidate_vaddrs` / `set_vaddrs` hand type1's mappings over.
//!
//! Failure policy: ops run in order and stop at the first kernel error; the
//! table then holds exactly what the kernel holds (every op that succeeded),
//! and the error names the op, IOVA and size. The caller decides whether a
//! runtime failure is fatal for the VM (setup failures always are).

use crate::backend::{DmaBackend, KernelError, UpdateVaddr, OP_INVALIDATE_VADDR, OP_SET_VADDR};
use crate::errno::{EBUSY, EINVAL, ENOENT, EOPNOTSUPP};
use crate::planner::{self, Op, Plan, PlanError, PlanRules, Region};
use crate::table::{Backing, MappingTable, TableError, TableRules};
use std::fmt;

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

/// Why `seed` recorded nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedError {
    /// The table holds mappings already: a seed says what the kernel held
    /// before this process mapped anything, so it comes first or not at all.
    NotEmpty { held: usize },
    /// Region `index` breaks the table's rules: the kernel could not hold it.
    Invalid { index: usize, err: TableError },
    /// Region `index` is backed by a file, which this backend never maps
    /// (type1 pins by vaddr only), so the kernel cannot hold it either.
    FileBacking { index: usize, iova: u64, size: u64 },
}

impl SeedError {
    /// The errno: the one the kernel would give a map of the region, EBUSY for a table in use.
    pub fn errno(&self) -> i32 {
        match self {
            SeedError::NotEmpty { .. } => EBUSY,
            SeedError::Invalid { err, .. } => err.errno(),
            // What type1's map of a file backing says (type1.rs).
            SeedError::FileBacking { .. } => EOPNOTSUPP,
        }
    }

    /// The region refused, as (index, iova, size).
    pub fn region(&self, regions: &[Region]) -> Option<(usize, u64, u64)> {
        match *self {
            SeedError::NotEmpty { .. } => None,
            SeedError::Invalid { index, .. } => regions.get(index).map(|r| (index, r.iova, r.size)),
            SeedError::FileBacking { index, iova, size } => Some((index, iova, size)),
        }
    }
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedError::NotEmpty { held } => write!(f, "the mapping table holds {held} mapping(s) already; only an empty one is seeded"),
            SeedError::Invalid { index, err } => write!(f, "region {index}: {err}"),
            SeedError::FileBacking { index, iova, size } => {
                write!(f, "region {index} (IOVA {iova:#x}+{size:#x}) is backed by a file, which this backend does not map")
            }
        }
    }
}

impl std::error::Error for SeedError {}

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

    /// What `sync` would do, without doing it: a live update checks a handed-over table this way while
    /// another process's guest uses the mappings.
    pub fn plan(&self, caps: &crate::backend::Caps, desired: &[Region], budget_bytes: Option<u64>) -> Result<Plan, PlanError> {
        let rules = PlanRules { can_copy: caps.can_copy, budget_bytes, max_entries: self.table.rules().max_entries };
        planner::plan(&self.table, desired, &rules)
    }

    pub fn sync(&mut self, backend: &mut dyn DmaBackend, desired: &[Region], budget_bytes: Option<u64>) -> Result<Plan, SyncError> {
        let plan = self.plan(backend.caps(), desired, budget_bytes).map_err(SyncError::Plan)?;
        for (i, op) in plan.ops.iter().enumerate() {
            if let Err(err) = issue(backend, op) {
                return Err(SyncError::Kernel { err, done: i, plan: Box::new(plan) });
            }
            // The kernel accepted the op, so the table must too; a refusal here is a planner bug.
            planner::apply(&mut self.table, op).expect("table rejected an op the kernel accepted");
        }
        Ok(plan)
    }

    /// Records `regions` as mappings the kernel holds already, with no ioctl:
    /// a backend inherited from another process (type1Inherit,
    /// iommufdInherit) keeps that process's mappings, and this table must say
    /// so before `sync` plans against it (a `sync` to the regions the old
    /// process synced to then has nothing to do). Only an empty table is
    /// seeded; each region is checked as `check_insert` checks a map (regions
    /// overlapping each other included), and one refused leaves the table
    /// empty. `can_map_file` is the backend's: a file backing on type1 is refused.
    ///
    /// The entry limit grows by the regions seeded: the limit the mapper was
    /// made with is type1's DMA_AVAIL as read when the container was taken
    /// over, which the mappings held then had used already (dma_entry_limit
    /// counts every vfio_dma). That holds for a mapper made at inherit time,
    /// as the addon makes it.
    pub fn seed(&mut self, regions: &[Region], can_map_file: bool) -> Result<(), SeedError> {
        if !self.table.is_empty() {
            return Err(SeedError::NotEmpty { held: self.table.len() });
        }
        let mut rules = self.table.rules().clone();
        rules.max_entries = rules.max_entries.saturating_add(regions.len());
        // A scratch table: it becomes the mapper's only once every region is in.
        let mut t = MappingTable::new(rules);
        for (index, r) in regions.iter().enumerate() {
            if !can_map_file && matches!(r.backing, Backing::File { .. }) {
                return Err(SeedError::FileBacking { index, iova: r.iova, size: r.size });
            }
            t.insert(r.mapping()).map_err(|err| SeedError::Invalid { index, err })?;
        }
        self.table = t;
        Ok(())
    }

    /// Each mapping as (iova, size, vaddr), in IOVA order; a file backing
    /// (never on type1, whose map and seed refuse it) is EOPNOTSUPP before any ioctl.
    fn vaddrs(&self, op: &'static str) -> Result<Vec<(u64, u64, u64)>, KernelError> {
        let vaddr = |m: &crate::table::Mapping| match m.backing {
            Backing::Vaddr(v) => Ok((m.iova, m.size, v)),
            Backing::File { .. } => Err(KernelError::errno(op, EOPNOTSUPP).at(m.iova, m.size)),
        };
        self.table.iter().map(vaddr).collect()
    }

    /// The old process's half of a type1 live update: invalidates the vaddr
    /// of every mapping in the table, one by one in IOVA order (not
    /// VFIO_DMA_UNMAP_FLAG_ALL, so a failure names its mapping). The mappings
    /// and their pins stay and the table does not change. A mapping the
    /// kernel reports nothing invalidated for is ENOENT: the table says more
    /// than the kernel holds. On a failure, the vaddrs already invalidated
    /// are supplied again (best effort: this process keeps its VM) and the
    /// first error is returned. Returns how many were invalidated.
    pub fn invalidate_vaddrs(&self, b: &mut dyn UpdateVaddr) -> Result<usize, KernelError> {
        let ms = self.vaddrs(OP_INVALIDATE_VADDR)?;
        for (i, &(iova, size, _)) in ms.iter().enumerate() {
            let r = b.update_vaddr(iova, size, None).and_then(|n| {
                if n == size {
                    return Ok(());
                }
                let e = KernelError::errno(OP_INVALIDATE_VADDR, ENOENT).at(iova, size);
                Err(e.note("the kernel invalidated no mapping of this range: the table holds one it does not"))
            });
            if let Err(e) = r {
                for &(iova, size, vaddr) in ms[..i].iter().rev() {
                    let _ = b.update_vaddr(iova, size, Some(vaddr));
                }
                return Err(e);
            }
        }
        Ok(ms.len())
    }

    /// Supplies the table's vaddr for every mapping, in IOVA order, which
    /// also moves each one's lock accounting to this process. The new process
    /// does it after `seed` (every vaddr invalid); the old one does it to
    /// take its VM back after a failed hand-over, when the new process may
    /// have supplied some vaddrs of its own: the kernel refuses those with
    /// EINVAL (the vaddr is valid), so on EINVAL the mapping is invalidated
    /// and supplied again. Where that invalidation fails too (the vaddr was
    /// invalid after all: the EINVAL meant another mismatch) the map's own
    /// error is returned. Stops at the first failure, the mappings before it
    /// done. Returns how many were supplied.
    pub fn set_vaddrs(&self, b: &mut dyn UpdateVaddr) -> Result<usize, KernelError> {
        let ms = self.vaddrs(OP_SET_VADDR)?;
        for &(iova, size, vaddr) in &ms {
            match b.update_vaddr(iova, size, Some(vaddr)) {
                Err(e) if e.errno == EINVAL => match b.update_vaddr(iova, size, None) {
                    Ok(n) if n == size => {
                        b.update_vaddr(iova, size, Some(vaddr))?;
                    }
                    Ok(_) => return Err(e),
                    Err(inv) if inv.errno == EINVAL => return Err(e),
                    Err(inv) => return Err(inv),
                },
                r => {
                    r?;
                }
            }
        }
        Ok(ms.len())
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
    use crate::table::{Mapping, Prot};
    use std::collections::BTreeMap;

    const P: u64 = 0x1000;
    const FAR: u64 = 0x100_0000;
    const EBUSY: i32 = 16;

    /// Records every op it is asked for, as the planner's `Op`, and fails attempt `fail_at` (counted from 0).
    struct Fake {
        caps: Caps,
        ranges: KResult<Vec<(u64, u64)>>,
        attempts: Vec<Op>,
        fail_at: Option<usize>,
        /// type1's vfio_dmas for the VADDR calls: iova -> (size, vaddr; None while invalid).
        kernel: BTreeMap<u64, (u64, Option<u64>)>,
        /// Every update_vaddr call, as (iova, vaddr).
        vaddr_calls: Vec<(u64, Option<u64>)>,
        /// Calls of update_vaddr (counted from 0) that fail, with their errno.
        vaddr_fail: Vec<(usize, i32)>,
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
        Fake { caps, ranges: Ok(vec![]), attempts: vec![], fail_at: None, kernel: BTreeMap::new(), vaddr_calls: vec![], vaddr_fail: vec![] }
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

    /// vfio_dma_do_map / vfio_dma_do_unmap with their VADDR flags, on whole mappings.
    impl UpdateVaddr for Fake {
        fn update_vaddr(&mut self, iova: u64, size: u64, vaddr: Option<u64>) -> KResult<u64> {
            self.vaddr_calls.push((iova, vaddr));
            let op = if vaddr.is_some() { OP_SET_VADDR } else { OP_INVALIDATE_VADDR };
            let fail = |errno| Err(KernelError::errno(op, errno).at(iova, size));
            if let Some(&(_, errno)) = self.vaddr_fail.iter().find(|(n, _)| *n == self.vaddr_calls.len() - 1) {
                return fail(errno);
            }
            let Some(dma) = self.kernel.get_mut(&iova) else {
                // Invalidating nothing succeeds with 0 bytes; supplying a vaddr to nothing is ENOENT.
                return if vaddr.is_none() { Ok(0) } else { fail(ENOENT) };
            };
            match vaddr {
                None if dma.1.is_none() => fail(EINVAL),
                Some(_) if dma.1.is_some() || dma.0 != size => fail(EINVAL),
                _ => {
                    dma.1 = vaddr;
                    Ok(dma.0)
                }
            }
        }
    }

    /// The kernel's vaddrs, by IOVA.
    fn kernel_vaddrs(b: &Fake) -> Vec<(u64, Option<u64>)> {
        b.kernel.iter().map(|(&i, &(_, v))| (i, v)).collect()
    }

    /// A fake whose kernel holds the table's mappings, each vaddr valid.
    fn holding(b: &mut Fake, m: &Mapper) {
        b.kernel = m.table().iter().map(|x| (x.iova, (x.size, Some(x.backing.addr())))).collect();
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

    const MIB: u64 = 1 << 20;

    /// A VM's memory as the old process synced it: 8 MiB of RAM cut into 2 MiB
    /// units by the planner, and a page elsewhere.
    fn guest() -> [Region; 2] {
        [r(0, 8 * MIB / P, 0x4000_0000), r(64 * MIB, 1, 0x7000_0000)]
    }

    #[test]
    fn a_seeded_table_needs_no_op_to_reach_the_map_it_records() {
        let desired = guest();
        let mut old_b = fake(IommuPath::Type1, None);
        let old = mapped(&mut old_b, &desired);
        assert_eq!(old.table().len(), 5, "the RAM in 4 units, and the page");
        let handed: Vec<Region> = old.table().iter().map(Region::from).collect();
        // The new process: the old table (what table() gave), or the desired regions themselves.
        for seeded in [&handed[..], &desired[..]] {
            let mut b = fake(IommuPath::Type1, None);
            let mut m = Mapper::new(&mut b, P).unwrap();
            m.seed(seeded, false).unwrap();
            assert!(b.attempts.is_empty(), "a seed issues nothing");
            assert_eq!(held(&m), seeded.iter().map(Region::mapping).collect::<Vec<_>>());
            assert_eq!(m.table().charged_bytes(), 8 * MIB + P);
            let plan = m.sync(&mut b, &desired, None).unwrap();
            assert_eq!(plan.ops, vec![], "nothing to map: the kernel holds it all");
            assert_eq!((plan.peak_charged, plan.final_charged), (8 * MIB + P, 8 * MIB + P));
            assert!(b.attempts.is_empty());
        }
        // iommufd seeds file backings too.
        let mut b = fake(IommuPath::Iommufd, None);
        let mut m = Mapper::new(&mut b, P).unwrap();
        let file = Region { backing: Backing::File { fd: 9, offset: 0 }, ..desired[0] };
        m.seed(&[file], true).unwrap();
        assert_eq!(m.sync(&mut b, &[file], None).unwrap().ops, vec![]);
    }

    #[test]
    fn seed_refuses_a_used_table_and_bad_regions_and_records_nothing_then() {
        let mut b = fake(IommuPath::Type1, None);
        let a = r(0, 4, 0x10_0000);
        let cases: [(&[Region], SeedError); 4] = [
            (
                &[a, r(2 * P, 4, 0x20_0000)],
                SeedError::Invalid {
                    index: 1,
                    err: TableError::Overlap { iova: 2 * P, size: 4 * P, existing_iova: 0, existing_size: 4 * P },
                },
            ),
            (
                &[a, r(FAR + 0x800, 1, 0x20_0000)],
                SeedError::Invalid {
                    index: 1,
                    err: TableError::Unaligned { iova: FAR + 0x800, size: P, vaddr_or_offset: Some(0x20_0000), page_size: P },
                },
            ),
            (
                &[Region { prot: Prot { read: false, write: false }, ..a }],
                SeedError::Invalid { index: 0, err: TableError::NoAccess { iova: 0, size: 4 * P } },
            ),
            (
                &[a, Region { iova: FAR, backing: Backing::File { fd: 3, offset: 0 }, ..a }],
                SeedError::FileBacking { index: 1, iova: FAR, size: 4 * P },
            ),
        ];
        let mut m = Mapper::new(&mut b, P).unwrap();
        for (regions, want) in cases {
            let e = m.seed(regions, false).unwrap_err();
            assert_eq!(e, want);
            assert_eq!(e.region(regions).map(|x| x.0), want.region(regions).map(|x| x.0));
            assert!(m.table().is_empty(), "all or nothing: {e}");
        }
        assert_eq!(SeedError::FileBacking { index: 0, iova: 0, size: P }.errno(), EOPNOTSUPP);
        assert_eq!(SeedError::Invalid { index: 0, err: TableError::ZeroSize { iova: 0 } }.errno(), EINVAL, "a map's own errno");
        m.seed(&[a], false).unwrap();
        let e = m.seed(&[r(FAR, 1, 0)], false).unwrap_err();
        assert_eq!(e, SeedError::NotEmpty { held: 1 });
        assert_eq!((e.errno(), e.region(&[]), held(&m)), (EBUSY, None, vec![a.mapping()]));
        // A table that sync filled is not seeded either.
        let mut m = mapped(&mut b, &[a]);
        assert_eq!(m.seed(&[], false), Err(SeedError::NotEmpty { held: 1 }));
        assert!(b.attempts.is_empty());
    }

    #[test]
    fn seed_counts_the_entries_it_records_back_into_the_limit() {
        // DMA_AVAIL read with 3 mappings held: 2 left of 5.
        let mut b = fake(IommuPath::Type1, Some(2));
        let mut m = Mapper::new(&mut b, P).unwrap();
        m.seed(&[r(0, 1, 0), r(2 * P, 1, 0), r(4 * P, 1, 0)], false).unwrap();
        assert_eq!(m.table().rules().max_entries, 5);
        m.sync(&mut b, &[r(0, 1, 0), r(2 * P, 1, 0), r(4 * P, 1, 0), r(6 * P, 1, 0), r(8 * P, 1, 0)], None).unwrap();
        assert!(m
            .sync(&mut b, &[r(0, 1, 0), r(2 * P, 1, 0), r(4 * P, 1, 0), r(6 * P, 1, 0), r(8 * P, 1, 0), r(10 * P, 1, 0)], None)
            .is_err());
    }

    /// A type1 handover's starting point: the old process's table and a kernel holding it, vaddrs valid.
    fn handover() -> (Fake, Mapper) {
        let mut b = fake(IommuPath::Type1, None);
        let m = mapped(&mut b, &[r(8 * P, 2, 0x30_0000), r(0, 4, 0x10_0000), r(FAR, 1, 0x50_0000)]);
        holding(&mut b, &m);
        (b, m)
    }

    #[test]
    fn invalidate_vaddrs_takes_every_mapping_in_iova_order_and_changes_no_table() {
        let (mut b, m) = handover();
        let before = held(&m);
        assert_eq!(m.invalidate_vaddrs(&mut b), Ok(3));
        assert_eq!(b.vaddr_calls, vec![(0, None), (8 * P, None), (FAR, None)]);
        assert_eq!(kernel_vaddrs(&b), vec![(0, None), (8 * P, None), (FAR, None)]);
        assert_eq!(held(&m), before);
        assert!(b.attempts.is_empty(), "no map or unmap");
        // A second time: the kernel's EINVAL for one already invalid, and nothing to put back.
        b.vaddr_calls.clear();
        let e = m.invalidate_vaddrs(&mut b).unwrap_err();
        assert_eq!(e, KernelError::errno(OP_INVALIDATE_VADDR, EINVAL).at(0, 4 * P));
        assert_eq!(b.vaddr_calls, vec![(0, None)]);
    }

    #[test]
    fn a_failed_invalidation_puts_back_the_vaddrs_it_took() {
        let (mut b, m) = handover();
        b.vaddr_fail = vec![(2, EBUSY)];
        let e = m.invalidate_vaddrs(&mut b).unwrap_err();
        assert_eq!(e, KernelError::errno(OP_INVALIDATE_VADDR, EBUSY).at(FAR, P), "the first error, naming its mapping");
        assert_eq!(b.vaddr_calls[3..], [(8 * P, Some(0x30_0000)), (0, Some(0x10_0000))], "supplied again, last first");
        assert_eq!(kernel_vaddrs(&b), vec![(0, Some(0x10_0000)), (8 * P, Some(0x30_0000)), (FAR, Some(0x50_0000))]);
        // The put-back is best effort: its own failure does not hide the first error.
        let (mut b, m) = handover();
        b.vaddr_fail = vec![(1, EBUSY), (2, crate::errno::ENOMEM)];
        assert_eq!(m.invalidate_vaddrs(&mut b).unwrap_err(), KernelError::errno(OP_INVALIDATE_VADDR, EBUSY).at(8 * P, 2 * P));
        assert_eq!(b.vaddr_calls, vec![(0, None), (8 * P, None), (0, Some(0x10_0000))]);
    }

    #[test]
    fn invalidating_what_the_kernel_does_not_hold_is_enoent() {
        let (mut b, m) = handover();
        b.kernel.remove(&(8 * P));
        let e = m.invalidate_vaddrs(&mut b).unwrap_err();
        assert_eq!((e.op, e.errno, e.iova, e.size), (OP_INVALIDATE_VADDR, ENOENT, Some(8 * P), Some(2 * P)));
        assert!(e.to_string().contains("the table holds one it does not"), "{e}");
        assert_eq!(kernel_vaddrs(&b), vec![(0, Some(0x10_0000)), (FAR, Some(0x50_0000))], "the first is back");
    }

    #[test]
    fn set_vaddrs_supplies_every_vaddr_after_a_handover() {
        let (mut b, m) = handover();
        m.invalidate_vaddrs(&mut b).unwrap();
        b.vaddr_calls.clear();
        assert_eq!(m.set_vaddrs(&mut b), Ok(3));
        assert_eq!(b.vaddr_calls, vec![(0, Some(0x10_0000)), (8 * P, Some(0x30_0000)), (FAR, Some(0x50_0000))]);
        assert_eq!(kernel_vaddrs(&b), vec![(0, Some(0x10_0000)), (8 * P, Some(0x30_0000)), (FAR, Some(0x50_0000))]);
        assert!(b.attempts.is_empty());
    }

    #[test]
    fn set_vaddrs_takes_back_a_vaddr_another_process_supplied() {
        // The old process after a failed hand-over: the new one supplied its own vaddr for the second mapping.
        let (mut b, m) = handover();
        m.invalidate_vaddrs(&mut b).unwrap();
        b.kernel.get_mut(&(8 * P)).unwrap().1 = Some(0x7700_0000);
        b.vaddr_calls.clear();
        assert_eq!(m.set_vaddrs(&mut b), Ok(3));
        assert_eq!(
            b.vaddr_calls,
            vec![(0, Some(0x10_0000)), (8 * P, Some(0x30_0000)), (8 * P, None), (8 * P, Some(0x30_0000)), (FAR, Some(0x50_0000))],
            "refused while valid, invalidated, supplied again"
        );
        assert_eq!(kernel_vaddrs(&b), vec![(0, Some(0x10_0000)), (8 * P, Some(0x30_0000)), (FAR, Some(0x50_0000))]);
    }

    #[test]
    fn set_vaddrs_stops_at_a_real_failure() {
        // EINVAL for another reason (the kernel's mapping is not the table's): the map's error, nothing invalidated.
        let (mut b, m) = handover();
        m.invalidate_vaddrs(&mut b).unwrap();
        b.kernel.get_mut(&(8 * P)).unwrap().0 = 4 * P;
        b.vaddr_calls.clear();
        let e = m.set_vaddrs(&mut b).unwrap_err();
        assert_eq!(e, KernelError::errno(OP_SET_VADDR, EINVAL).at(8 * P, 2 * P));
        assert_eq!(b.vaddr_calls, vec![(0, Some(0x10_0000)), (8 * P, Some(0x30_0000)), (8 * P, None)], "the one after is not tried");
        // ENOMEM (RLIMIT_MEMLOCK in vfio_change_dma_owner) is not retried.
        let (mut b, m) = handover();
        m.invalidate_vaddrs(&mut b).unwrap();
        b.vaddr_calls.clear();
        b.vaddr_fail = vec![(0, crate::errno::ENOMEM)];
        let e = m.set_vaddrs(&mut b).unwrap_err();
        assert_eq!((e.op, e.errno, e.iova), (OP_SET_VADDR, crate::errno::ENOMEM, Some(0)));
        assert_eq!(b.vaddr_calls.len(), 1);
        // A failure of the invalidation in between is that failure.
        let (mut b, m) = handover();
        b.vaddr_calls.clear();
        b.vaddr_fail = vec![(1, EBUSY)];
        let e = m.set_vaddrs(&mut b).unwrap_err();
        assert_eq!(e, KernelError::errno(OP_INVALIDATE_VADDR, EBUSY).at(0, 4 * P));
    }

    #[test]
    fn a_file_backing_has_no_vaddr_to_hand_over() {
        let mut b = fake(IommuPath::Iommufd, None);
        let mut m = Mapper::new(&mut b, P).unwrap();
        m.seed(&[Region { backing: Backing::File { fd: 3, offset: 0 }, ..r(0, 1, 0) }], true).unwrap();
        for e in [m.invalidate_vaddrs(&mut b).unwrap_err(), m.set_vaddrs(&mut b).unwrap_err()] {
            assert_eq!((e.errno, e.iova), (EOPNOTSUPP, Some(0)));
        }
        assert!(b.vaddr_calls.is_empty(), "refused before any call");
        let empty = Mapper::new(&mut b, P).unwrap();
        assert_eq!((empty.invalidate_vaddrs(&mut b), empty.set_vaddrs(&mut b)), (Ok(0), Ok(0)));
    }
}
