//! Where DMA mappings begin and end. Neither type1v2 nor the iommufd IOAS
//! can cut a mapping (an unmap must cover whole mappings), so an edge
//! between two mappings is the only place where a later change to a region
//! may begin or end without unmapping memory that did not change. The rule
//! that places those edges is here, whole; the planner applies it to memory
//! it maps afresh, and the control API reads the edges back from the table.
//!
//! - A region is cut into units of its granule, counted from its start; the
//!   last unit is what is left. The granule is the smallest power of two, at
//!   least 2 MiB and the IOMMU page, that cuts the region into at most 1024
//!   units, or into at most a 64th of the entry limit when that is fewer.
//! - Memory already mapped keeps its edges wherever it is mapped next: a
//!   moved region is copied unit by unit, and the halves of a split keep
//!   their parent's units (a granule worked out from a half's own size could
//!   be finer than the units that map it).
//! - When a plan would still exceed the entry limit, the granule of memory
//!   mapped afresh doubles until the plan fits or no piece has more than one
//!   unit; only then does the planner merge neighbours.
//!
//! QEMU maps virtio-mem memory for VFIO the same way, "in (aligned within
//! memory region) minimum granularity, so we can unmap in minimum
//! granularity later" (vfio_ram_discard_notify_populate()).

use crate::table::{Backing, MappingTable};

/// A 2 MiB huge page: no unit edge falls inside a THP or hugetlb page, and
/// hugetlb RAM changes on 2 MiB boundaries anyway.
pub const MIN_GRANULE: u64 = 2 << 20;

/// The most units a region is cut into, whatever the entry limit: each is
/// one ioctl when the region is mapped and one entry the kernel keeps.
pub const MAX_UNITS: u64 = 1024;

/// A region may use a 64th of the entry limit, so 64 regions at their
/// largest fit type1's default limit of 65535.
const ENTRY_SHARE: u64 = 64;

/// How many units a region may be cut into under an entry limit.
pub fn units_per_region(max_entries: usize) -> u64 {
    (max_entries as u64 / ENTRY_SHARE).clamp(1, MAX_UNITS)
}

/// The granule of a region of `size` bytes.
pub fn granule(size: u64, page_size: u64, max_entries: usize) -> u64 {
    let most = units_per_region(max_entries);
    let mut g = MIN_GRANULE.max(page_size.next_power_of_two());
    while size.div_ceil(g) > most && g < 1 << 63 {
        g <<= 1;
    }
    g
}

/// `granule` doubled `times` times, at most 2^63.
pub fn coarser(granule: u64, times: u32) -> u64 {
    granule << times.min(granule.leading_zeros())
}

/// Where the memory a table maps has mapping edges, so that memory mapped
/// again (moved, or a half of a split) is cut where it was cut before.
pub struct Edges {
    /// Mapped memory as `(object, start, end)`, merged and sorted.
    covered: Vec<(Option<i32>, u64, u64)>,
    /// Each mapping's first byte and the byte after its last, sorted.
    edges: Vec<(Option<i32>, u64)>,
}

impl Edges {
    pub fn of(table: &MappingTable) -> Edges {
        let mut spans: Vec<(Option<i32>, u64, u64)> =
            table.iter().map(|m| (m.backing.object(), m.backing.addr(), m.backing.addr().saturating_add(m.size))).collect();
        spans.sort_unstable();
        let mut edges: Vec<(Option<i32>, u64)> = spans.iter().flat_map(|&(o, s, e)| [(o, s), (o, e)]).collect();
        edges.sort_unstable();
        edges.dedup();
        let mut covered: Vec<(Option<i32>, u64, u64)> = Vec::with_capacity(spans.len());
        for (o, s, e) in spans {
            match covered.last_mut() {
                Some(last) if last.0 == o && s <= last.2 => last.2 = last.2.max(e),
                _ => covered.push((o, s, e)),
            }
        }
        Edges { covered, edges }
    }

    /// Offsets inside `(0, len)` at which `len` bytes of `backing` are cut
    /// into units: the edges of memory mapped before, and elsewhere every
    /// multiple of `granule` counted from the region's start, which lies
    /// `offset` bytes before `backing`.
    pub fn cuts(&self, backing: &Backing, len: u64, offset: u64, granule: u64) -> Vec<u64> {
        let (object, start) = (backing.object(), backing.addr());
        let end = start.saturating_add(len);
        let lo = self.edges.partition_point(|&e| e <= (object, start));
        let hi = self.edges.partition_point(|&e| e < (object, end));
        let mut cuts: Vec<u64> = self.edges[lo..hi].iter().map(|&(_, a)| a - start).collect();
        let mut at = granule - offset % granule;
        while at < len {
            if !self.inside_mapped(object, start + at) {
                cuts.push(at);
            }
            at = at.saturating_add(granule);
        }
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// Whether `addr` lies strictly inside memory mapped before, where only
    /// that memory's own edges may cut it.
    fn inside_mapped(&self, object: Option<i32>, addr: u64) -> bool {
        let n = self.covered.partition_point(|&(o, s, _)| (o, s) < (object, addr));
        n > 0 && self.covered[n - 1].0 == object && self.covered[n - 1].2 > addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Mapping, Prot, TableRules};

    const P: u64 = 0x1000;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const TYPE1: usize = 65535;

    #[test]
    fn a_region_up_to_2_gib_gets_2_mib_units() {
        assert_eq!(granule(P, P, TYPE1), MIN_GRANULE, "a region smaller than a granule is one unit");
        assert_eq!(granule(64 * MIB, P, TYPE1), 2 * MIB);
        assert_eq!(granule(GIB, P, TYPE1), 2 * MIB);
        assert_eq!(granule(2 * GIB, P, usize::MAX), 2 * MIB, "iommufd: 1024 units");
        assert_eq!(granule(2 * GIB, P, TYPE1), 4 * MIB, "type1: a 64th of 65535 is 1023 units");
    }

    #[test]
    fn the_granule_grows_with_a_huge_region() {
        assert_eq!(granule(3 * GIB, P, TYPE1), 4 * MIB);
        assert_eq!(granule(61 * GIB, P, TYPE1), 64 * MIB);
        assert_eq!(61 * GIB / (64 * MIB), 976);
        assert_eq!(granule(u64::MAX, P, 1), 1 << 63, "one unit cannot hold it: the top bit, no further");
    }

    #[test]
    fn the_granule_grows_when_entries_are_tight() {
        assert_eq!(units_per_region(640), 10);
        assert_eq!(granule(64 * MIB, P, 640), 8 * MIB);
        assert_eq!(units_per_region(100), 1, "dma_entry_limit=100: one unit per region");
        assert_eq!(granule(64 * MIB, P, 100), 64 * MIB);
        assert_eq!(granule(64 * MIB, P, 0), 64 * MIB, "no entry limit below one unit");
    }

    #[test]
    fn the_iommu_page_is_the_floor_when_it_is_larger() {
        assert_eq!(granule(P, 4 * MIB, TYPE1), 4 * MIB);
        assert_eq!(granule(P, 3 * MIB, TYPE1), 4 * MIB, "a power of two");
    }

    #[test]
    fn coarser_doubles_and_stops_at_the_top_bit() {
        assert_eq!(coarser(2 * MIB, 0), 2 * MIB);
        assert_eq!(coarser(2 * MIB, 3), 16 * MIB);
        assert_eq!(coarser(2 * MIB, 60), 1 << 63);
    }

    fn table(ms: &[(u64, u64, Backing)]) -> MappingTable {
        let mut t = MappingTable::new(TableRules { page_size: P, iova_ranges: vec![], max_entries: TYPE1 });
        for &(iova, size, backing) in ms {
            t.insert(Mapping { iova, size, backing, prot: Prot::READ_WRITE, shares_with: None }).unwrap();
        }
        t
    }

    #[test]
    fn fresh_memory_is_cut_on_its_regions_grid() {
        let e = Edges::of(&table(&[]));
        let v = Backing::Vaddr(0x10_0000_0000);
        assert_eq!(e.cuts(&v, 8 * MIB, 0, 2 * MIB), vec![2 * MIB, 4 * MIB, 6 * MIB]);
        assert_eq!(e.cuts(&v, 5 * MIB, 0, 2 * MIB), vec![2 * MIB, 4 * MIB], "the last unit is what is left");
        // A piece 3 MiB into its region: the grid is its region's, not its own.
        assert_eq!(e.cuts(&v, 4 * MIB, 3 * MIB, 2 * MIB), vec![MIB, 3 * MIB]);
        assert_eq!(e.cuts(&v, MIB, 0, 2 * MIB), Vec::<u64>::new());
    }

    #[test]
    fn mapped_memory_keeps_its_edges() {
        let f = |offset| Backing::File { fd: 7, offset };
        // 0..4 MiB of fd 7 was mapped in units of 1 MiB, 8..12 MiB in one piece.
        let e = Edges::of(&table(&[(0, MIB, f(0)), (MIB, MIB, f(MIB)), (2 * MIB, 2 * MIB, f(2 * MIB)), (GIB, 4 * MIB, f(8 * MIB))]));
        assert_eq!(e.cuts(&f(0), 4 * MIB, 0, 4 * MIB), vec![MIB, 2 * MIB], "its own edges, not the 4 MiB grid");
        // 2..14 MiB of the file: its old edges (4, 8, 12 MiB) and the grid where it was not mapped (6 MiB).
        assert_eq!(e.cuts(&f(2 * MIB), 12 * MIB, 0, 4 * MIB), vec![2 * MIB, 4 * MIB, 6 * MIB, 10 * MIB]);
        // Other memory is fresh.
        assert_eq!(e.cuts(&Backing::File { fd: 8, offset: 0 }, 4 * MIB, 0, 2 * MIB), vec![2 * MIB]);
        assert_eq!(e.cuts(&Backing::Vaddr(0), 4 * MIB, 0, 2 * MIB), vec![2 * MIB]);
    }
}
