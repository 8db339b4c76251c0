//! Turns the current mapping table and the guest's new DMA-able regions into
//! a short op list. Neither type1v2 nor iommufd can cut a mapping on unmap,
//! so a mapping that still serves the new map stays, one that does not goes
//! whole, and memory is mapped in units of its granule (granule.rs) so that a
//! later change to part of a region touches only that part. No step may
//! exceed the locked-memory budget or the entry limit, since the kernel would
//! fail that ioctl halfway through.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::errno::{EINVAL, ENOMEM, ENOSPC};
use crate::table::{Backing, Checked, Mapping, MappingTable, Prot, TableError};

#[cfg(test)]
mod changes;
mod schedule;
mod units;

use schedule::{Item, Scheduler};

/// A guest section that should be DMA-able.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub iova: u64,
    pub size: u64,
    pub backing: Backing,
    pub prot: Prot,
}

impl Region {
    pub fn mapping(&self) -> Mapping {
        Mapping { iova: self.iova, size: self.size, backing: self.backing, prot: self.prot, shares_with: None }
    }

    /// Whether `next` could be served by the same mapping as `self`.
    fn merges_with(&self, next: &Region) -> bool {
        self.iova.checked_add(self.size) == Some(next.iova)
            && self.size.checked_add(next.size).is_some()
            && self.prot == next.prot
            && self.backing.continues(self.size, &next.backing)
    }
}

impl From<&Mapping> for Region {
    fn from(m: &Mapping) -> Region {
        Region { iova: m.iova, size: m.size, backing: m.backing, prot: m.prot }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRules {
    /// IOMMU_IOAS_COPY is available (iommufd).
    pub can_copy: bool,
    /// Locked memory available beyond what the current mappings already
    /// charge; None = unlimited.
    pub budget_bytes: Option<u64>,
    pub max_entries: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Unmap { iova: u64, size: u64 },
    Map(Region),
    Copy { src_iova: u64, dst_iova: u64, size: u64 },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub peak_charged: u64,
    pub final_charged: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The desired regions themselves are not mappable (overlap, alignment...).
    Invalid(TableError),
    TooManyEntries {
        needed: usize,
        limit: usize,
    },
    OverBudget {
        needed: u64,
        budget: u64,
    },
    /// `iova, size` of a mapping stays as it is while the rest of it changes.
    Cut {
        iova: u64,
        size: u64,
        mapping_iova: u64,
        mapping_size: u64,
    },
}

impl PlanError {
    pub fn errno(&self) -> i32 {
        match self {
            PlanError::Invalid(e) => e.errno(),
            PlanError::TooManyEntries { .. } => ENOSPC,
            // Both vfio_pin_pages_remote() and iommufd's incr_user_locked_vm()
            // fail with -ENOMEM past RLIMIT_MEMLOCK.
            PlanError::OverBudget { .. } => ENOMEM,
            // What type1v2 answers an unmap that would bisect a mapping.
            PlanError::Cut { .. } => EINVAL,
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Invalid(e) => write!(f, "desired region not mappable: {e}"),
            PlanError::TooManyEntries { needed, limit } => {
                write!(f, "{needed} DMA mappings needed even after coalescing, limit is {limit}")
            }
            PlanError::OverBudget { needed, budget } => {
                write!(f, "new memory map needs {needed:#x} more locked bytes, only {budget:#x} available")
            }
            PlanError::Cut { iova, size, mapping_iova, mapping_size } => write!(
                f,
                "IOVA {iova:#x}+{size:#x} stays as it is but the rest of mapping {mapping_iova:#x}+{mapping_size:#x} changes, \
                 and a mapping is only unmapped whole: a change must begin and end on a mapping edge"
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// Updates `table` as the kernel would after `op` succeeds.
pub fn apply(table: &mut MappingTable, op: &Op) -> Result<(), TableError> {
    let c = check(table, op)?;
    table.commit(c);
    Ok(())
}

/// What `apply` checks, as a change to commit once the kernel has made it.
pub fn check(table: &MappingTable, op: &Op) -> Result<Checked, TableError> {
    match *op {
        Op::Unmap { iova, size } => table.check_remove(iova, size),
        Op::Map(r) => table.check_insert(r.mapping()),
        Op::Copy { src_iova, dst_iova, size } => {
            // Pinion copies whole mappings only, though IOAS_COPY allows sub-ranges.
            let src = match table.get(src_iova) {
                Some(m) if m.size == size => *m,
                _ => return Err(TableError::NotFound { iova: src_iova, size }),
            };
            let shares_with = src.shares_with.or(Some(src.iova));
            table.check_insert(Mapping { iova: dst_iova, shares_with, ..src })
        }
    }
}

/// Plans the ops that take `current` to exactly `desired` (modulo how the
/// regions are cut into mappings).
///
/// Charge model, the table's: a Map charges its size, a Copy nothing, an
/// Unmap releases its size unless a live copy still uses the pages (iommufd
/// unpins them only with their last user). Order: old mappings nothing
/// replaces go first; then new mappings while budget, entries and free IOVA
/// allow (make-before-break), unmapping old ones early only when stuck
/// (break-before-make); then the replaced old mappings.
pub fn plan(current: &MappingTable, desired: &[Region], rules: &PlanRules) -> Result<Plan, PlanError> {
    let max_entries = rules.max_entries.min(current.rules().max_entries);
    let wanted = sorted_valid(current, desired)?;
    let kept = units::kept(current, &wanted)?;
    let pieces = units::unserved(current, &kept, &wanted, max_entries);
    let todo = units::units(current, &pieces, kept.len(), max_entries)?;
    let items = choose_sources(current, &kept, todo, rules.can_copy);
    let mut s = Scheduler::new(current, &kept, rules.budget_bytes, max_entries);
    s.unmap_abandoned(&wanted, &items)?;
    s.run(items)?;
    Ok(Plan { ops: s.ops, peak_charged: s.peak, final_charged: s.sim.charged_bytes() })
}

/// Desired regions in IOVA order, validated against the table's own rules
/// (a scratch insert catches overlaps among them too).
fn sorted_valid(current: &MappingTable, desired: &[Region]) -> Result<Vec<Region>, PlanError> {
    let mut rules = current.rules().clone();
    rules.max_entries = usize::MAX;
    let mut scratch = MappingTable::new(rules);
    for r in desired {
        scratch.insert(r.mapping()).map_err(PlanError::Invalid)?;
    }
    Ok(scratch.iter().map(Region::from).collect())
}

/// Picks a copy source for memory that is already mapped somewhere: same
/// backing, size and prot, preferring a kept mapping (it outlives the plan).
/// The destination may not overlap the source, which is still mapped then.
fn choose_sources(current: &MappingTable, kept: &HashSet<u64>, todo: Vec<Region>, can_copy: bool) -> Vec<Item> {
    let mut by_memory: HashMap<(Backing, u64, Prot), Vec<&Mapping>> = HashMap::new();
    if can_copy {
        for m in current.iter() {
            by_memory.entry((m.backing, m.size, m.prot)).or_default().push(m);
        }
    }
    let pick = |r: &Region| {
        let candidates = by_memory.get(&(r.backing, r.size, r.prot))?;
        let usable = candidates.iter().filter(|m| m.last() < r.iova || r.mapping().last() < m.iova);
        usable.min_by_key(|m| !kept.contains(&m.iova)).map(|m| m.iova)
    };
    todo.into_iter().map(|r| Item { region: r, source: pick(&r) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TableRules;

    const P: u64 = 0x1000;
    const FAR: u64 = 0x100_0000;

    fn r(iova: u64, pages: u64, vaddr: u64) -> Region {
        Region { iova, size: pages * P, backing: Backing::Vaddr(vaddr), prot: Prot::READ_WRITE }
    }

    fn table(rs: &[Region]) -> MappingTable {
        let mut t = MappingTable::new(TableRules { page_size: P, iova_ranges: vec![], max_entries: 65535 });
        for x in rs {
            t.insert(x.mapping()).unwrap();
        }
        t
    }

    fn rules(can_copy: bool, budget: Option<u64>, max_entries: usize) -> PlanRules {
        PlanRules { can_copy, budget_bytes: budget, max_entries }
    }

    const TYPE1: PlanRules = PlanRules { can_copy: false, budget_bytes: None, max_entries: 65535 };
    const IOMMUFD: PlanRules = PlanRules { can_copy: true, budget_bytes: None, max_entries: usize::MAX };

    /// Regions with every mergeable neighbour merged: equal for two sets that
    /// map the same memory the same way, however they are cut into mappings.
    fn merged(rs: impl IntoIterator<Item = Region>) -> Vec<Region> {
        let mut v: Vec<Region> = rs.into_iter().collect();
        v.sort_by_key(|x| x.iova);
        let mut unlimited = usize::MAX;
        units::coalesce(v, &mut unlimited)
    }

    /// Whether `desired` maps every byte of `m` as `m` does.
    fn still_serves(desired: &[Region], m: &Mapping) -> bool {
        let mut same = 0;
        for d in desired {
            let (start, end) = (d.iova.max(m.iova), (d.iova + d.size).min(m.iova + m.size));
            if start < end && d.prot == m.prot && d.backing.advance(start - d.iova) == m.backing.advance(start - m.iova) {
                same += end - start;
            }
        }
        same == m.size
    }

    /// Applies the plan, checking every step against the limits, and
    /// returns the resulting table.
    pub(super) fn check(current: &MappingTable, desired: &[Region], rules: &PlanRules, plan: &Plan) -> MappingTable {
        let mut t = current.clone();
        let (start, mut peak) = (t.charged_bytes(), t.charged_bytes());
        for op in &plan.ops {
            if let Op::Unmap { iova, .. } = op {
                let m = t.get(*iova).copied();
                assert!(
                    !m.is_some_and(|m| current.get(m.iova) == Some(&m) && still_serves(desired, &m)),
                    "unmapped a mapping that still served"
                );
            }
            apply(&mut t, op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
            if !matches!(op, Op::Unmap { .. }) {
                assert!(t.len() <= rules.max_entries, "entry limit exceeded by {op:?}");
            }
            peak = peak.max(t.charged_bytes());
        }
        assert_eq!((plan.peak_charged, plan.final_charged), (peak, t.charged_bytes()));
        assert!(peak <= start.saturating_add(rules.budget_bytes.unwrap_or(u64::MAX)));
        assert_eq!(merged(t.iter().map(Region::from)), merged(desired.iter().copied()));
        t
    }

    fn run(current: &MappingTable, desired: &[Region], rules: &PlanRules) -> Vec<Op> {
        let p = plan(current, desired, rules).unwrap();
        check(current, desired, rules, &p);
        p.ops
    }

    #[test]
    fn identical_map_needs_no_ops() {
        let d = [r(0, 4, 0x10_0000), r(8 * P, 2, 0x20_0000)];
        let t = table(&d);
        let p = plan(&t, &[d[1], d[0]], &TYPE1).unwrap();
        assert_eq!(p, Plan { ops: vec![], peak_charged: 6 * P, final_charged: 6 * P });
    }

    #[test]
    fn added_or_removed_region_touches_nothing_else() {
        let (a, b) = (r(0, 4, 0x10_0000), r(4 * P, 2, 0x10_0000 + 4 * P));
        assert_eq!(run(&table(&[a]), &[a, b], &TYPE1), vec![Op::Map(b)], "contiguous, yet not merged with a");
        assert_eq!(run(&table(&[a, b]), &[b], &TYPE1), vec![Op::Unmap { iova: 0, size: 4 * P }]);
    }

    /// The same memory moving to a far, non-overlapping IOVA.
    fn moved() -> (MappingTable, Region) {
        let old = r(0, 4, 0x10_0000);
        (table(&[old]), Region { iova: FAR, ..old })
    }

    #[test]
    fn move_on_type1_maps_new_before_unmapping_old() {
        let (t, new) = moved();
        assert_eq!(run(&t, &[new], &TYPE1), vec![Op::Map(new), Op::Unmap { iova: 0, size: 4 * P }]);
        assert_eq!(plan(&t, &[new], &TYPE1).unwrap().peak_charged, 8 * P);
    }

    #[test]
    fn move_on_iommufd_copies_then_unmaps() {
        let (t, new) = moved();
        let p = plan(&t, &[new], &IOMMUFD).unwrap();
        assert_eq!(p.ops, vec![Op::Copy { src_iova: 0, dst_iova: FAR, size: 4 * P }, Op::Unmap { iova: 0, size: 4 * P }]);
        assert_eq!((p.peak_charged, p.final_charged), (4 * P, 4 * P), "a copy charges nothing");
        let t = check(&t, &[new], &IOMMUFD, &p);
        assert_eq!(t.get(FAR).unwrap().shares_with, None, "the copy inherited the charge");
    }

    #[test]
    fn alias_of_kept_memory_copies_from_it() {
        let a = r(0, 2, 0x10_0000);
        let alias = Region { iova: FAR, ..a };
        assert_eq!(run(&table(&[a]), &[a, alias], &IOMMUFD), vec![Op::Copy { src_iova: 0, dst_iova: FAR, size: 2 * P }]);
    }

    #[test]
    fn overlapping_iova_forces_unmap_first_even_on_iommufd() {
        let old = r(0, 4, 0x10_0000);
        // Same memory, so a copy would do, but not into the source's own range.
        let new = r(2 * P, 4, 0x10_0000);
        assert_eq!(run(&table(&[old]), &[new], &IOMMUFD), vec![Op::Unmap { iova: 0, size: 4 * P }, Op::Map(new)]);
        let other = r(0, 4, 0x30_0000);
        assert_eq!(run(&table(&[old]), &[other], &TYPE1), vec![Op::Unmap { iova: 0, size: 4 * P }, Op::Map(other)]);
    }

    #[test]
    fn entry_limit_coalesces_left_to_right_or_fails() {
        let s: Vec<Region> = (0..4).map(|i| r(i * P, 1, 0x10_0000 + i * P)).collect();
        let ops = run(&table(&[]), &s, &rules(false, None, 3));
        let first_two = Region { size: 2 * P, ..s[0] };
        assert_eq!(ops, vec![Op::Map(first_two), Op::Map(s[2]), Op::Map(s[3])]);
        let ops = run(&table(&[]), &s, &rules(false, None, 1));
        assert_eq!(ops, vec![Op::Map(Region { size: 4 * P, ..s[0] })]);
        let unmergeable = [s[0], Region { backing: Backing::Vaddr(0x50_0000), ..s[1] }, s[2]];
        let e = plan(&table(&[]), &unmergeable, &rules(false, None, 2)).unwrap_err();
        assert_eq!((e.clone(), e.errno()), (PlanError::TooManyEntries { needed: 3, limit: 2 }, 28));
    }

    #[test]
    fn entry_limit_keeps_an_earlier_coalesced_mapping() {
        let s: Vec<Region> = (0..3).map(|i| r(i * P, 1, 0x10_0000 + i * P)).collect();
        let t = table(&[Region { size: 3 * P, ..s[0] }]);
        assert_eq!(run(&t, &s, &rules(false, None, 1)), vec![]);
        // With room to spare it stays too: cutting it again would unmap memory that did not change.
        assert_eq!(run(&t, &s, &TYPE1), vec![]);
    }

    #[test]
    fn full_table_forces_unmap_before_map() {
        let (t, new) = moved();
        assert_eq!(run(&t, &[new], &rules(false, None, 1)), vec![Op::Unmap { iova: 0, size: 4 * P }, Op::Map(new)]);
    }

    #[test]
    fn budget_forces_break_before_make() {
        let (t, new) = moved();
        let p = plan(&t, &[new], &rules(false, Some(0), 65535)).unwrap();
        assert_eq!(p.ops, vec![Op::Unmap { iova: 0, size: 4 * P }, Op::Map(new)]);
        assert_eq!(p.peak_charged, 4 * P);
        let p = plan(&t, &[new], &rules(false, Some(4 * P), 65535)).unwrap();
        assert_eq!(p.ops[0], Op::Map(new), "enough headroom for make-before-break");
        assert_eq!(p.peak_charged, 8 * P);
    }

    #[test]
    fn over_budget_reports_the_numbers() {
        let a = r(0, 4, 0x10_0000);
        let b = r(FAR, 8, 0x20_0000);
        let e = plan(&table(&[a]), &[a, b], &rules(false, Some(4 * P), 65535)).unwrap_err();
        assert_eq!(e, PlanError::OverBudget { needed: 8 * P, budget: 4 * P });
        assert_eq!(e.to_string(), "new memory map needs 0x8000 more locked bytes, only 0x4000 available");
        assert_eq!(e.errno(), 12);
        // Dropping `a` first makes room: the final state fits.
        assert!(plan(&table(&[a]), &[b], &rules(false, Some(4 * P), 65535)).is_ok());
    }

    #[test]
    fn invalid_desired_regions_are_rejected() {
        let e = plan(&table(&[]), &[r(0, 4, 0), r(2 * P, 4, 0)], &TYPE1).unwrap_err();
        assert!(matches!(e, PlanError::Invalid(TableError::Overlap { .. })), "{e}");
        assert_eq!(e.errno(), 17);
        let e = plan(&table(&[]), &[Region { size: 0x800, ..r(0, 1, 0) }], &TYPE1).unwrap_err();
        assert_eq!(e.errno(), 22);
    }

    #[test]
    fn apply_copy_of_a_copy_shares_the_owner() {
        let mut t = table(&[r(0, 1, 0x10_0000)]);
        apply(&mut t, &Op::Copy { src_iova: 0, dst_iova: P, size: P }).unwrap();
        apply(&mut t, &Op::Copy { src_iova: P, dst_iova: 2 * P, size: P }).unwrap();
        assert_eq!(t.get(2 * P).unwrap().shares_with, Some(0));
        assert_eq!(t.charged_bytes(), P);
        let e = apply(&mut t, &Op::Copy { src_iova: 0, dst_iova: 4 * P, size: 2 * P }).unwrap_err();
        assert_eq!(e, TableError::NotFound { iova: 0, size: 2 * P });
    }

    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// Non-overlapping regions from IOVA `base` on, often contiguous in both
    /// IOVA and memory so that coalescing has something to do.
    fn layout(g: &mut Lcg, base: u64, n: u64, reuse: &[Region]) -> Vec<Region> {
        let (mut out, mut at) = (Vec::<Region>::new(), base);
        for _ in 0..n {
            at += (g.below(4) == 0) as u64 * P;
            let fresh = r(at, 1 + g.below(4), g.below(32) * 4 * P);
            let x = match (g.below(8), out.last(), reuse.get(g.below(reuse.len() as u64 + 1) as usize)) {
                (0..=3, Some(p), _) if p.iova + p.size == at => Region { backing: p.backing.advance(p.size), ..fresh },
                (4, _, _) => Region { prot: Prot::READ_ONLY, ..fresh },
                (7, _, _) => Region { backing: Backing::File { fd: 3, offset: fresh.backing.addr() }, ..fresh },
                (5 | 6, _, Some(m)) => Region { iova: at, ..*m },
                _ => fresh,
            };
            at += x.size;
            out.push(x);
        }
        out
    }

    #[test]
    fn random_plans_reach_the_desired_map_within_limits() {
        let mut g = Lcg(0x5eed);
        let (mut done, mut refused) = (0, 0);
        for _ in 0..100 {
            let n = 1 + g.below(10);
            let old = layout(&mut g, 0, n, &[]);
            let mut t = table(&old);
            if g.below(2) == 0 {
                apply(&mut t, &Op::Copy { src_iova: old[0].iova, dst_iova: FAR, size: old[0].size }).unwrap();
            }
            let current: Vec<Region> = t.iter().map(Region::from).collect();
            let mut desired: Vec<Region> = current.iter().filter(|_| g.below(3) == 0).copied().collect();
            let base = desired.iter().map(|d| d.iova + d.size).max().unwrap_or(0).max(64 * P);
            let (gap, n) = (g.below(3) * P, g.below(8));
            desired.extend(layout(&mut g, base + gap, n, &current));
            let budget = [None, Some(0), Some(g.below(32) * P)][g.below(3) as usize];
            // Just under the desired count, so that coalescing has to happen.
            let tight = (desired.len() + 1).saturating_sub(1 + g.below(3) as usize).max(1);
            let pr = rules(g.below(2) == 0, budget, [tight, 12, 65535][g.below(3) as usize]);
            let result = plan(&t, &desired, &pr);
            match &result {
                Ok(p) => drop(check(&t, &desired, &pr, p)),
                Err(PlanError::OverBudget { needed, budget }) => assert!(needed > budget),
                Err(PlanError::TooManyEntries { needed, limit }) => assert!(needed > limit),
                Err(e) => panic!("{e}"),
            }
            (done, refused) = if result.is_ok() { (done + 1, refused) } else { (done, refused + 1) };
        }
        assert!(done > 50 && refused > 0, "{done} planned, {refused} refused");
    }
}
