//! Which current mappings still serve the new map, and the units that map
//! the rest. A mapping that maps its whole range as the new map wants stays,
//! whatever region edges now lie inside it (a split, or neighbours an earlier
//! plan merged): unmapping it would unmap memory that did not change. The
//! rest is cut into units by the granule rule (granule.rs).

use std::collections::HashSet;

use super::{PlanError, Region};
use crate::granule::{self, Edges};
use crate::table::{Mapping, MappingTable};

/// The IOVAs of the current mappings that stay. A mapping whose range the new
/// map wants partly as it is and partly changed is refused: the kernel unmaps
/// only whole mappings, so the part that stays would be unmapped too.
pub(super) fn kept(current: &MappingTable, wanted: &[Region]) -> Result<HashSet<u64>, PlanError> {
    let mut kept = HashSet::new();
    for m in current.iter() {
        let alike: Vec<(u64, u64)> = overlapping(wanted, m).filter(|r| maps_alike(r, m)).map(|r| overlap(r, m)).collect();
        let same: u64 = alike.iter().map(|&(_, len)| len).sum();
        if same == m.size {
            kept.insert(m.iova);
        } else if let Some(&(iova, size)) = alike.first() {
            return Err(PlanError::Cut { iova, size, mapping_iova: m.iova, mapping_size: m.size });
        }
    }
    Ok(kept)
}

/// Desired regions (sorted, disjoint) that intersect `m`.
fn overlapping<'a>(wanted: &'a [Region], m: &Mapping) -> impl Iterator<Item = &'a Region> + 'a {
    let (iova, last) = (m.iova, m.last());
    let first = wanted.partition_point(|r| r.mapping().last() < iova);
    wanted[first..].iter().take_while(move |r| r.iova <= last)
}

/// Start and length of the IOVA `r` and `m` share (they intersect).
fn overlap(r: &Region, m: &Mapping) -> (u64, u64) {
    let start = r.iova.max(m.iova);
    (start, r.mapping().last().min(m.last()) - start + 1)
}

/// Whether `r` and `m` map their shared IOVA to the same memory with the
/// same access. Both are linear in IOVA, so one address decides it.
fn maps_alike(r: &Region, m: &Mapping) -> bool {
    let at = r.iova.max(m.iova);
    r.prot == m.prot && r.backing.advance(at - r.iova) == m.backing.advance(at - m.iova)
}

/// A stretch of a desired region that no kept mapping serves, `offset` bytes
/// into that region, whose granule it is cut by.
pub(super) struct Piece {
    region: Region,
    offset: u64,
    granule: u64,
}

/// The stretches of the desired regions left to map.
pub(super) fn unserved(current: &MappingTable, kept: &HashSet<u64>, wanted: &[Region], max_entries: usize) -> Vec<Piece> {
    let page_size = current.rules().page_size;
    let mut out = Vec::new();
    for r in wanted {
        let granule = granule::granule(r.size, page_size, max_entries);
        let piece = |offset: u64, size: u64| Piece {
            region: Region { iova: r.iova + offset, size, backing: r.backing.advance(offset), ..*r },
            offset,
            granule,
        };
        let mut from = 0;
        for m in current.overlapping(r.iova, r.size).filter(|m| kept.contains(&m.iova)) {
            let (start, len) = overlap(r, m);
            let at = start - r.iova;
            if at > from {
                out.push(piece(from, at - from));
            }
            from = at + len;
        }
        if from < r.size {
            out.push(piece(from, r.size - from));
        }
    }
    out
}

impl Piece {
    fn cut(&self, edges: &Edges, granule: u64) -> Vec<Region> {
        let r = self.region;
        let mut start = 0;
        let ends = edges.cuts(&r.backing, r.size, self.offset, granule).into_iter().chain([r.size]);
        ends.map(|end| {
            let unit = Region { iova: r.iova + start, size: end - start, backing: r.backing.advance(start), prot: r.prot };
            start = end;
            unit
        })
        .collect()
    }
}

/// The units that map `pieces`. While they and the `kept` mappings would
/// exceed `max_entries`, memory mapped afresh gets a coarser granule; when
/// that no longer helps, neighbours are merged as well.
pub(super) fn units(current: &MappingTable, pieces: &[Piece], kept: usize, max_entries: usize) -> Result<Vec<Region>, PlanError> {
    let edges = Edges::of(current);
    let mut times = 0;
    let mut fewest = usize::MAX;
    loop {
        let todo: Vec<Region> = pieces.iter().flat_map(|p| p.cut(&edges, granule::coarser(p.granule, times))).collect();
        let mut excess = (kept + todo.len()).saturating_sub(max_entries);
        if excess == 0 {
            return Ok(todo);
        }
        if todo.len() < fewest && times < u64::BITS {
            fewest = todo.len();
            times += 1;
            continue;
        }
        let todo = coalesce(todo, &mut excess);
        if excess > 0 {
            return Err(PlanError::TooManyEntries { needed: kept + todo.len(), limit: max_entries });
        }
        return Ok(todo);
    }
}

/// The last resort under the entry limit: left to right, lowest IOVAs first,
/// each merge of two neighbours saving one entry, stopping as soon as the
/// limit is met. A merged mapping can only be unmapped whole later.
pub(super) fn coalesce(todo: Vec<Region>, excess: &mut usize) -> Vec<Region> {
    let mut out: Vec<Region> = Vec::with_capacity(todo.len());
    for r in todo {
        match out.last_mut() {
            Some(prev) if *excess > 0 && prev.merges_with(&r) => {
                prev.size += r.size;
                *excess -= 1;
            }
            _ => out.push(r),
        }
    }
    out
}
