//! The planner under each kind of memory change the control API offers (and
//! an un-coalesce): every op lies inside the IOVA range whose memory changed,
//! and a change that would cut a mapping is refused.

use super::tests::check;
use super::*;
use crate::table::TableRules;

const P: u64 = 0x1000;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const HVA: u64 = 0x7f00_0000_0000;

const TYPE1: PlanRules = PlanRules { can_copy: false, budget_bytes: None, max_entries: 65535 };
const IOMMUFD: PlanRules = PlanRules { can_copy: true, budget_bytes: None, max_entries: usize::MAX };

fn ram(iova: u64, size: u64, backing: Backing) -> Region {
    Region { iova, size, backing, prot: Prot::READ_WRITE }
}

/// Process memory at `offset` into an allocation at HVA.
fn anon(offset: u64) -> Backing {
    Backing::Vaddr(HVA + offset)
}

fn memfd(fd: i32, offset: u64) -> Backing {
    Backing::File { fd, offset }
}

fn empty(max_entries: usize) -> MappingTable {
    MappingTable::new(TableRules { page_size: P, iova_ranges: vec![], max_entries })
}

/// The table the planner makes for `regions` from nothing, with no budget to keep.
fn mapped(regions: &[Region], rules: &PlanRules) -> MappingTable {
    let rules = PlanRules { budget_bytes: None, ..*rules };
    let t = empty(rules.max_entries.clamp(1, 65535));
    let p = plan(&t, regions, &rules).unwrap();
    check(&t, regions, &rules, &p)
}

/// The IOVA range an op maps or unmaps; a copy reads its source, it does not change it.
fn touched(op: &Op) -> (u64, u64) {
    match *op {
        Op::Unmap { iova, size } => (iova, size),
        Op::Map(r) => (r.iova, r.size),
        Op::Copy { dst_iova, size, .. } => (dst_iova, size),
    }
}

/// Asserts that every op lies inside one of the `[start, end)` ranges whose memory changed.
fn within(ops: &[Op], changed: &[(u64, u64)]) {
    for op in ops {
        let (iova, size) = touched(op);
        assert!(changed.iter().any(|&(s, e)| s <= iova && iova + size <= e), "{op:x?} reaches outside {changed:x?}");
    }
}

/// Plans `before` -> `after` on the table made for `before`, checks the plan step by step, and
/// asserts that it touches only `changed`. Returns the ops.
fn change(before: &[Region], after: &[Region], rules: &PlanRules, changed: &[(u64, u64)]) -> Vec<Op> {
    let t = mapped(before, rules);
    let p = plan(&t, after, rules).unwrap();
    check(&t, after, rules, &p);
    within(&p.ops, changed);
    p.ops
}

fn maps(ops: &[Op]) -> Vec<(u64, u64)> {
    ops.iter().filter(|o| matches!(o, Op::Map(_))).map(touched).collect()
}

fn count(ops: &[Op], f: fn(&Op) -> bool) -> usize {
    ops.iter().filter(|o| f(o)).count()
}

/// 2 MiB units from `iova` over `size` bytes, as `(iova, size)`.
fn units(iova: u64, size: u64) -> Vec<(u64, u64)> {
    (0..size.div_ceil(2 * MIB)).map(|i| (iova + i * 2 * MIB, (size - i * 2 * MIB).min(2 * MIB))).collect()
}

#[test]
fn add_maps_only_the_new_region() {
    let low = ram(0, 64 * MIB, anon(0));
    let extra = ram(GIB, 16 * MIB, anon(GIB));
    let ops = change(&[low], &[low, extra], &TYPE1, &[(GIB, GIB + 16 * MIB)]);
    assert_eq!(maps(&ops), units(GIB, 16 * MIB), "in 2 MiB units");
    assert_eq!(ops.len(), 8);
}

#[test]
fn remove_unmaps_only_that_region() {
    let low = ram(0, 64 * MIB, anon(0));
    let extra = ram(GIB, 16 * MIB, anon(GIB));
    let ops = change(&[low, extra], &[low], &TYPE1, &[(GIB, GIB + 16 * MIB)]);
    assert_eq!(ops.len(), 8);
    assert!(ops.iter().all(|o| matches!(o, Op::Unmap { .. })));
}

#[test]
fn grow_maps_only_the_tail_when_the_backing_grows_in_place() {
    // A memfd made longer: its first 64 MiB are the same pages at the same offsets.
    let before = ram(0, 64 * MIB, memfd(3, 0));
    let after = ram(0, 96 * MIB, memfd(3, 0));
    let ops = change(&[before], &[after], &IOMMUFD, &[(64 * MIB, 96 * MIB)]);
    assert_eq!(maps(&ops), units(64 * MIB, 32 * MIB));
    assert_eq!(ops.len(), 16, "nothing unmapped");
}

#[test]
fn shrink_unmaps_only_the_cut_off_tail() {
    let before = ram(0, 64 * MIB, anon(0));
    let after = ram(0, 32 * MIB, anon(0));
    let ops = change(&[before], &[after], &TYPE1, &[(32 * MIB, 64 * MIB)]);
    assert_eq!(ops, units(32 * MIB, 32 * MIB).into_iter().map(|(iova, size)| Op::Unmap { iova, size }).collect::<Vec<_>>());
}

#[test]
fn split_needs_no_ops_and_a_later_change_to_one_half_touches_only_it() {
    let whole = ram(0, 64 * MIB, anon(0));
    let (lo, hi) = (ram(0, 16 * MIB, anon(0)), ram(16 * MIB, 48 * MIB, anon(16 * MIB)));
    assert_eq!(change(&[whole], &[lo, hi], &TYPE1, &[]), vec![], "the units already serve both halves");
    // The halves keep the whole region's units: moving the upper one copies them one by one.
    let t = mapped(&[whole], &IOMMUFD);
    let moved = Region { iova: 2 * GIB, ..hi };
    let p = plan(&t, &[lo, moved], &IOMMUFD).unwrap();
    check(&t, &[lo, moved], &IOMMUFD, &p);
    within(&p.ops, &[(16 * MIB, 64 * MIB), (2 * GIB, 2 * GIB + 48 * MIB)]);
    assert_eq!((count(&p.ops, |o| matches!(o, Op::Copy { .. })), count(&p.ops, |o| matches!(o, Op::Unmap { .. }))), (24, 24));
}

#[test]
fn move_copies_unit_by_unit_on_iommufd_and_maps_before_unmapping_on_type1() {
    let old = ram(GIB, 16 * MIB, memfd(4, 0));
    let new = Region { iova: 2 * GIB, ..old };
    let changed = [(GIB, GIB + 16 * MIB), (2 * GIB, 2 * GIB + 16 * MIB)];
    let ops = change(&[old], &[new], &IOMMUFD, &changed);
    let copies: Vec<Op> =
        units(GIB, 16 * MIB).into_iter().map(|(iova, size)| Op::Copy { src_iova: iova, dst_iova: iova + GIB, size }).collect();
    assert_eq!(ops[..8], copies[..], "each unit copied: nothing pinned twice");
    assert_eq!(count(&ops[8..], |o| matches!(o, Op::Unmap { .. })), 8);
    let ops = change(&[old], &[new], &TYPE1, &changed);
    assert_eq!(maps(&ops[..8]), units(2 * GIB, 16 * MIB), "make-before-break");
    // With no headroom, one unit at a time: unmap one, map one.
    let tight = PlanRules { budget_bytes: Some(0), ..TYPE1 };
    let ops = change(&[old], &[new], &tight, &changed);
    assert!(matches!((&ops[0], &ops[1]), (Op::Unmap { size, .. }, Op::Map(r)) if *size == 2 * MIB && r.size == 2 * MIB), "{ops:x?}");
}

/// Bytes of `[iova, iova+size)` that `t` does not map.
fn hole(t: &MappingTable, iova: u64, size: u64) -> u64 {
    size - t.overlapping(iova, size).map(|m| m.size).sum::<u64>()
}

#[test]
fn replace_backing_remaps_the_region_one_unit_at_a_time() {
    // anon -> memfd (by file on iommufd), or 4K -> hugetlb (another allocation): all of it is new memory.
    for (rules, new_backing) in [(IOMMUFD, memfd(5, 0)), (TYPE1, anon(4 * GIB))] {
        let old = ram(0, 64 * MIB, anon(0));
        let new = Region { backing: new_backing, ..old };
        let ops = change(&[old], &[new], &rules, &[(0, 64 * MIB)]);
        // The kernel refuses a map over a live one, so each unit goes before its replacement;
        // the device loses at most one unit of IOVA at a time, not the whole region.
        let mut t = mapped(&[old], &rules);
        for op in &ops {
            apply(&mut t, op).unwrap();
            assert!(hole(&t, 0, 64 * MIB) <= 2 * MIB, "after {op:x?}");
        }
        assert_eq!(ops.len(), 64);
    }
}

#[test]
fn un_coalesce_keeps_the_merged_mapping_and_touches_nothing() {
    // Two neighbours an earlier plan merged under an entry limit of one.
    let (a, b) = (ram(0, MIB, anon(0)), ram(MIB, MIB, anon(MIB)));
    let one = PlanRules { max_entries: 1, ..TYPE1 };
    let t0 = empty(65535);
    let t = check(&t0, &[a, b], &one, &plan(&t0, &[a, b], &one).unwrap());
    assert_eq!(t.iter().map(|m| (m.iova, m.size)).collect::<Vec<_>>(), vec![(0, 2 * MIB)]);
    // Room again: cutting it apart would unmap both for nothing.
    let p = plan(&t, &[a, b], &TYPE1).unwrap();
    within(&p.ops, &[]);
    // A change to one of them would cut it: refused, the mapping named.
    let e = plan(&t, &[a], &TYPE1).unwrap_err();
    assert_eq!(e, PlanError::Cut { iova: 0, size: MIB, mapping_iova: 0, mapping_size: 2 * MIB });
    assert_eq!(e.errno(), 22);
}

#[test]
fn a_change_point_inside_a_unit_is_refused() {
    let whole = ram(0, 64 * MIB, anon(0));
    let t = mapped(&[whole], &TYPE1);
    // Shrinking to 33 MiB would cut the unit [32, 34) MiB.
    let e = plan(&t, &[ram(0, 33 * MIB, anon(0))], &TYPE1).unwrap_err();
    assert_eq!(e, PlanError::Cut { iova: 32 * MIB, size: MIB, mapping_iova: 32 * MIB, mapping_size: 2 * MIB });
    assert_eq!(
        e.to_string(),
        "IOVA 0x2000000+0x100000 stays as it is but the rest of mapping 0x2000000+0x200000 changes, \
         and a mapping is only unmapped whole: a change must begin and end on a mapping edge"
    );
    // A split there changes no memory, so the planner lets it be (the control API refuses it);
    // moving the upper half afterwards is refused.
    let (lo, hi) = (ram(0, 33 * MIB, anon(0)), ram(33 * MIB, 31 * MIB, anon(33 * MIB)));
    assert_eq!(plan(&t, &[lo, hi], &TYPE1).unwrap().ops, vec![]);
    let e = plan(&t, &[lo, Region { iova: GIB, ..hi }], &TYPE1).unwrap_err();
    assert!(matches!(e, PlanError::Cut { mapping_iova, .. } if mapping_iova == 32 * MIB), "{e}");
}

#[test]
fn entry_costs_of_a_64_mib_1_gib_and_64_gib_guest() {
    // The VMM's layout: RAM from 0 to the PCI hole at 3 GiB, the rest from 4 GiB.
    let guest = |size: u64| {
        let low = size.min(3 * GIB);
        let mut v = vec![ram(0, low, anon(0))];
        if size > low {
            v.push(ram(4 * GIB, size - low, anon(low)));
        }
        v
    };
    for rules in [TYPE1, IOMMUFD] {
        let sizes = |size| mapped(&guest(size), &rules).iter().map(|m| m.size).collect::<Vec<_>>();
        assert_eq!(sizes(64 * MIB), vec![2 * MIB; 32]);
        assert_eq!(sizes(GIB), vec![2 * MIB; 512]);
        let big = sizes(64 * GIB);
        assert_eq!(big.len(), 768 + 976, "3 GiB in 4 MiB units, 61 GiB in 64 MiB units");
        assert_eq!((big[0], big[767], big[768]), (4 * MIB, 4 * MIB, 64 * MIB));
    }
}

#[test]
fn a_region_added_to_a_nearly_full_table_gets_a_coarser_granule() {
    // An entry limit of 640 gives a region 10 units: 64 MiB in 8 MiB units.
    let rules = PlanRules { max_entries: 640, ..TYPE1 };
    let others: Vec<Region> = (0..636).map(|i| ram(8 * GIB + i * P, P, anon(8 * GIB + i * P))).collect();
    let t = mapped(&others, &rules);
    let new = ram(0, 64 * MIB, anon(0));
    let mut all = others.clone();
    all.push(new);
    let p = plan(&t, &all, &rules).unwrap();
    check(&t, &all, &rules, &p);
    // Four entries are left, so the granule doubles to 16 MiB.
    assert_eq!(maps(&p.ops), vec![(0, 16 * MIB), (16 * MIB, 16 * MIB), (32 * MIB, 16 * MIB), (48 * MIB, 16 * MIB)]);
    assert_eq!(maps(&plan(&empty(640), &[new], &rules).unwrap().ops).len(), 8, "with room, 8 MiB units");
}

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Memory and access at each 2 MiB block of IOVA under `map`.
fn at(map: &[Region], block: u64) -> Option<(Backing, Prot)> {
    let r = map.iter().find(|r| r.iova <= block && block < r.iova + r.size)?;
    Some((r.backing.advance(block - r.iova), r.prot))
}

/// One change the control API could make to `map`, on 2 MiB boundaries; `fresh` names new memory.
fn random_change(g: &mut Lcg, map: &[Region], fresh: &mut i32) -> Vec<Region> {
    const U: u64 = 2 * MIB;
    let mut next = map.to_vec();
    let free = |next: &[Region], size: u64| {
        (0..).map(|k| GIB + k * 64 * MIB).find(|&a| next.iter().all(|r| a + size <= r.iova || r.iova + r.size <= a))
    };
    let new_memory = |fresh: &mut i32| {
        *fresh += 1;
        memfd(*fresh, 0)
    };
    let i = g.below(map.len() as u64) as usize;
    let r = map[i];
    match g.below(7) {
        0 => {
            let size = (1 + g.below(16)) * U;
            next.push(ram(free(&next, size).unwrap(), size, new_memory(fresh)));
        }
        1 if map.len() > 1 => drop(next.remove(i)),
        2 => next[i].size += (1 + g.below(8)) * U, // grown in place: its memfd made longer
        3 if r.size > U => next[i].size = (1 + g.below(r.size / U - 1)) * U,
        4 if r.size > U => {
            let at = (1 + g.below(r.size / U - 1)) * U;
            next[i].size = at;
            next.insert(i + 1, Region { iova: r.iova + at, size: r.size - at, backing: r.backing.advance(at), prot: r.prot });
        }
        5 => {
            next.remove(i);
            next.push(Region { iova: free(&next, r.size).unwrap(), ..r });
        }
        _ => next[i].backing = new_memory(fresh),
    }
    // A grown region must not run into its neighbour: then it is the old map again.
    let mut sorted = next.clone();
    sorted.sort_by_key(|r| r.iova);
    if sorted.windows(2).any(|w| w[0].iova + w[0].size > w[1].iova) {
        return map.to_vec();
    }
    sorted
}

#[test]
fn random_sequences_of_changes_touch_only_what_changed() {
    for (seed, rules) in [(1, TYPE1), (2, IOMMUFD), (3, PlanRules { budget_bytes: Some(4 * MIB), ..TYPE1 })] {
        let mut g = Lcg(seed);
        let mut fresh = 10;
        let mut map = vec![ram(0, 64 * MIB, memfd(1, 0)), ram(4 * GIB, 32 * MIB, memfd(2, 0))];
        let mut t = mapped(&map, &rules);
        for _ in 0..150 {
            let next = random_change(&mut g, &map, &mut fresh);
            let p = match plan(&t, &next, &rules) {
                Err(PlanError::OverBudget { needed, budget }) if needed > budget => continue,
                r => r.unwrap_or_else(|e| panic!("{map:x?} -> {next:x?}: {e}")),
            };
            t = check(&t, &next, &rules, &p);
            for op in &p.ops {
                let (iova, size) = touched(op);
                for block in (iova..iova + size).step_by(2 * MIB as usize) {
                    assert_ne!(at(&map, block), at(&next, block), "{op:x?} touches {block:#x}, which did not change");
                }
            }
            map = next;
        }
    }
}
