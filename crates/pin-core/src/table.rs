//! The authoritative record of what is mapped in one IOMMU address space.
//! Every change is validated the way the kernel would validate the ioctl, so
//! a plan can be checked (and its errno predicted) before anything is issued.

use crate::errno::{EEXIST, EINVAL, ENOENT, ENOSPC, EOVERFLOW};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound::{Excluded, Included};

/// What a mapping's IOVA range points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backing {
    /// Process virtual address (VFIO_IOMMU_MAP_DMA, IOMMU_IOAS_MAP).
    Vaddr(u64),
    /// Range of a file such as a guest-RAM memfd (IOMMU_IOAS_MAP_FILE).
    File { fd: i32, offset: u64 },
}

impl Backing {
    /// The address or file offset: the value the kernel checks for alignment.
    pub fn addr(&self) -> u64 {
        match *self {
            Backing::Vaddr(v) => v,
            Backing::File { offset, .. } => offset,
        }
    }

    /// The same backing, `by` bytes further on.
    pub fn advance(&self, by: u64) -> Backing {
        match *self {
            Backing::Vaddr(v) => Backing::Vaddr(v.wrapping_add(by)),
            Backing::File { fd, offset } => Backing::File { fd, offset: offset.wrapping_add(by) },
        }
    }

    /// The address space it lies in: None for the process, else the fd.
    pub fn object(&self) -> Option<i32> {
        match *self {
            Backing::Vaddr(_) => None,
            Backing::File { fd, .. } => Some(fd),
        }
    }

    /// Whether both name the same address space: the process, or one fd.
    pub fn same_object(&self, other: &Backing) -> bool {
        self.object() == other.object()
    }

    /// Whether `next` starts exactly where `len` bytes of `self` end, so the
    /// two could be served by one mapping.
    pub fn continues(&self, len: u64, next: &Backing) -> bool {
        self.same_object(next) && self.addr().checked_add(len) == Some(next.addr())
    }

    /// Whether `len` bytes of `self` and `other_len` bytes of `other` share memory.
    pub fn overlaps(&self, len: u64, other: &Backing, other_len: u64) -> bool {
        if !self.same_object(other) || len == 0 || other_len == 0 {
            return false;
        }
        let last = self.addr().saturating_add(len - 1);
        let other_last = other.addr().saturating_add(other_len - 1);
        self.addr() <= other_last && other.addr() <= last
    }
}

/// Access the device gets through a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
}

impl Prot {
    pub const READ_WRITE: Prot = Prot { read: true, write: true };
    pub const READ_ONLY: Prot = Prot { read: true, write: false };
}

/// One IOVA range as the kernel holds it: a vfio_dma (type1) or an iopt_area (iommufd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub iova: u64,
    pub size: u64,
    pub backing: Backing,
    pub prot: Prot,
    /// IOVA of the mapping whose pinned pages this one reuses (IOMMU_IOAS_COPY),
    /// so it adds nothing to the locked-memory charge.
    pub shares_with: Option<u64>,
}

impl Mapping {
    /// Last IOVA covered (inclusive), which cannot wrap for a validated mapping.
    pub fn last(&self) -> u64 {
        self.iova.saturating_add(self.size.saturating_sub(1))
    }

    pub fn contains(&self, iova: u64) -> bool {
        self.iova <= iova && iova <= self.last()
    }
}

/// Limits of one IOMMU address space, as reported by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRules {
    /// Smallest IOMMU page size; every iova, size and vaddr must be a multiple.
    pub page_size: u64,
    /// Usable IOVA ranges, inclusive `(start, last)`. Empty means no
    /// restriction, as type1's vfio_iommu_iova_dma_valid() treats an empty list.
    pub iova_ranges: Vec<(u64, u64)>,
    /// type1's dma_entry_limit (65535 by default); iommufd has no such limit.
    pub max_entries: usize,
}

/// Why the kernel would refuse a map or unmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    ZeroSize { iova: u64 },
    Unaligned { iova: u64, size: u64, vaddr_or_offset: Option<u64>, page_size: u64 },
    NoAccess { iova: u64, size: u64 },
    Overflow { iova: u64, size: u64 },
    OutsideIovaRanges { iova: u64, size: u64 },
    Overlap { iova: u64, size: u64, existing_iova: u64, existing_size: u64 },
    TooManyEntries { limit: usize },
    NotFound { iova: u64, size: u64 },
    WouldSplit { iova: u64, size: u64, mapping_iova: u64, mapping_size: u64 },
}

impl TableError {
    /// The errno the kernel returns for the same request.
    pub fn errno(&self) -> i32 {
        match self {
            // vfio_dma_do_map() and iommufd both reject these with -EINVAL.
            TableError::ZeroSize { .. } | TableError::Unaligned { .. } | TableError::NoAccess { .. } => EINVAL,
            // iopt_check_iova() uses -EOVERFLOW; type1 says -EINVAL for the same wrap.
            TableError::Overflow { .. } => EOVERFLOW,
            TableError::OutsideIovaRanges { .. } => EINVAL,
            TableError::Overlap { .. } => EEXIST,
            // type1 returns -ENOSPC once dma_avail reaches zero.
            TableError::TooManyEntries { .. } => ENOSPC,
            // IOMMU_IOAS_UNMAP returns -ENOENT when nothing was unmapped.
            TableError::NotFound { .. } => ENOENT,
            // type1v2 refuses to bisect a vfio_dma with -EINVAL (iommufd: -ENOENT).
            TableError::WouldSplit { .. } => EINVAL,
        }
    }
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TableError::ZeroSize { iova } => write!(f, "zero-size range at IOVA {iova:#x}"),
            TableError::Unaligned { iova, size, vaddr_or_offset, page_size } => {
                write!(f, "IOVA {iova:#x}+{size:#x}")?;
                if let Some(a) = vaddr_or_offset {
                    write!(f, " (vaddr/offset {a:#x})")?;
                }
                write!(f, " is not aligned to the {page_size:#x} IOMMU page size")
            }
            TableError::NoAccess { iova, size } => write!(f, "IOVA {iova:#x}+{size:#x} grants neither read nor write"),
            TableError::Overflow { iova, size } => write!(f, "IOVA {iova:#x}+{size:#x} wraps past the end of the 64-bit space"),
            TableError::OutsideIovaRanges { iova, size } => write!(f, "IOVA {iova:#x}+{size:#x} is outside the usable IOVA ranges"),
            TableError::Overlap { iova, size, existing_iova, existing_size } => {
                write!(f, "IOVA {iova:#x}+{size:#x} overlaps mapping {existing_iova:#x}+{existing_size:#x}")
            }
            TableError::TooManyEntries { limit } => write!(f, "DMA mapping limit of {limit} entries reached"),
            TableError::NotFound { iova, size } => write!(f, "no mapping in IOVA {iova:#x}+{size:#x}"),
            TableError::WouldSplit { iova, size, mapping_iova, mapping_size } => {
                write!(f, "unmapping IOVA {iova:#x}+{size:#x} would split mapping {mapping_iova:#x}+{mapping_size:#x}")
            }
        }
    }
}

impl std::error::Error for TableError {}

/// Mappings keyed by IOVA; they never overlap, as in the kernel.
#[derive(Clone, Debug)]
pub struct MappingTable {
    rules: TableRules,
    map: BTreeMap<u64, Mapping>,
    charged: u64,
    sharers: usize,
    /// Bumped by every change, so a `Checked` made before another change is caught.
    generation: u64,
}

/// A change the table has checked and not yet made. A caller issues the
/// kernel call in between and commits only once the kernel did the same, so
/// each op is validated once and the table never holds what the kernel refused.
#[must_use = "a checked change does nothing until committed"]
#[derive(Debug)]
pub struct Checked {
    generation: u64,
    change: Change,
}

#[derive(Debug)]
enum Change {
    Insert(Mapping),
    /// Every mapping in `[iova, last]`, which the check found whole and not empty.
    Remove {
        iova: u64,
        last: u64,
    },
}

impl Checked {
    /// The bytes this change adds to the charge (0 for an unmap or a sharer).
    pub fn charges(&self) -> u64 {
        match &self.change {
            Change::Insert(m) if m.shares_with.is_none() => m.size,
            _ => 0,
        }
    }
}

impl MappingTable {
    pub fn new(rules: TableRules) -> MappingTable {
        MappingTable { rules, map: BTreeMap::new(), charged: 0, sharers: 0, generation: 0 }
    }

    pub fn rules(&self) -> &TableRules {
        &self.rules
    }

    /// Checks size, alignment and wrap in vfio_dma_do_map()'s order; returns the last IOVA.
    fn check_range(&self, iova: u64, size: u64, addr: Option<u64>) -> Result<u64, TableError> {
        if size == 0 {
            return Err(TableError::ZeroSize { iova });
        }
        let ps = self.rules.page_size.max(1);
        if [iova, size, addr.unwrap_or(0)].iter().any(|v| !v.is_multiple_of(ps)) {
            return Err(TableError::Unaligned { iova, size, vaddr_or_offset: addr, page_size: ps });
        }
        // The kernel allows a range ending exactly at 2^64 - 1, so test the last byte.
        let last = iova.checked_add(size - 1).ok_or(TableError::Overflow { iova, size })?;
        if addr.is_some_and(|a| a.checked_add(size - 1).is_none()) {
            return Err(TableError::Overflow { iova, size });
        }
        Ok(last)
    }

    fn in_iova_ranges(&self, iova: u64, last: u64) -> bool {
        // Like type1, the range must fit inside a single reported range.
        self.rules.iova_ranges.is_empty() || self.rules.iova_ranges.iter().any(|&(s, l)| s <= iova && last <= l)
    }

    /// Adds a mapping, refusing exactly what the kernel would refuse.
    pub fn insert(&mut self, m: Mapping) -> Result<(), TableError> {
        let c = self.check_insert(m)?;
        self.commit(c);
        Ok(())
    }

    /// What `insert` checks, without changing the table.
    pub fn check_insert(&self, m: Mapping) -> Result<Checked, TableError> {
        let (iova, size) = (m.iova, m.size);
        let last = self.check_range(iova, size, Some(m.backing.addr()))?;
        if !m.prot.read && !m.prot.write {
            return Err(TableError::NoAccess { iova, size });
        }
        if let Some(e) = self.overlapping(iova, size).next() {
            return Err(TableError::Overlap { iova, size, existing_iova: e.iova, existing_size: e.size });
        }
        if self.map.len() >= self.rules.max_entries {
            return Err(TableError::TooManyEntries { limit: self.rules.max_entries });
        }
        if !self.in_iova_ranges(iova, last) {
            return Err(TableError::OutsideIovaRanges { iova, size });
        }
        if m.shares_with.is_none() && self.charged.checked_add(size).is_none() {
            // Only mappings covering all 2^64 bytes of IOVA get here (no kernel could pin them); refused so the charge cannot wrap.
            return Err(TableError::Overflow { iova, size });
        }
        if let Some(owner) = m.shares_with {
            // Sharers always point at the owner of the pages, so the charge has one holder.
            if self.map.get(&owner).is_none_or(|o| o.shares_with.is_some()) {
                return Err(TableError::NotFound { iova: owner, size });
            }
        }
        Ok(Checked { generation: self.generation, change: Change::Insert(m) })
    }

    /// Removes every mapping inside `[iova, iova+size)`. Cutting one partially
    /// is refused, as type1v2 and IOMMU_IOAS_UNMAP refuse it.
    pub fn remove_range(&mut self, iova: u64, size: u64) -> Result<Vec<Mapping>, TableError> {
        let c = self.check_remove(iova, size)?;
        let removed = self.overlapping(iova, size).copied().collect();
        self.commit(c);
        Ok(removed)
    }

    /// What `remove_range` checks, without changing the table.
    pub fn check_remove(&self, iova: u64, size: u64) -> Result<Checked, TableError> {
        let last = self.check_range(iova, size, None)?;
        let mut any = false;
        for m in self.overlapping(iova, size) {
            if m.iova < iova || m.last() > last {
                return Err(TableError::WouldSplit { iova, size, mapping_iova: m.iova, mapping_size: m.size });
            }
            any = true;
        }
        if !any {
            return Err(TableError::NotFound { iova, size });
        }
        Ok(Checked { generation: self.generation, change: Change::Remove { iova, last } })
    }

    /// Makes a checked change. Panics if the table changed since the check:
    /// the check would no longer hold.
    pub fn commit(&mut self, c: Checked) {
        assert_eq!(c.generation, self.generation, "a checked change was committed after another change");
        self.generation += 1;
        match c.change {
            Change::Insert(m) => {
                match m.shares_with {
                    Some(_) => self.sharers += 1,
                    None => self.charged += m.size,
                }
                self.map.insert(m.iova, m);
            }
            Change::Remove { iova, last } => {
                // The check found no mapping reaching in from below, so all of them start in the range.
                let mut owners = Vec::new();
                while let Some((&k, _)) = self.map.range(iova..=last).next() {
                    let m = self.map.remove(&k).expect("just found");
                    match m.shares_with {
                        Some(_) => self.sharers -= 1,
                        None => {
                            self.charged -= m.size;
                            if self.sharers > 0 {
                                owners.push(m.iova);
                            }
                        }
                    }
                }
                for o in owners {
                    self.promote_sharer(o);
                }
            }
        }
    }

    /// iommufd frees pinned pages only with their last user, so when an owner
    /// goes, one of its sharers takes over the charge and the others follow it.
    fn promote_sharer(&mut self, owner: u64) {
        if self.sharers == 0 {
            return;
        }
        let heirs: Vec<u64> = self.map.values().filter(|m| m.shares_with == Some(owner)).map(|m| m.iova).collect();
        let Some((&heir, rest)) = heirs.split_first() else { return };
        if let Some(h) = self.map.get_mut(&heir) {
            h.shares_with = None;
            self.charged += h.size;
            self.sharers -= 1;
        }
        for k in rest {
            if let Some(m) = self.map.get_mut(k) {
                m.shares_with = Some(heir);
            }
        }
    }

    /// The mapping with exactly this start IOVA.
    pub fn get(&self, iova: u64) -> Option<&Mapping> {
        self.map.get(&iova)
    }

    /// The mapping containing `iova`.
    pub fn find(&self, iova: u64) -> Option<&Mapping> {
        self.map.range(..=iova).next_back().map(|(_, m)| m).filter(|m| m.contains(iova))
    }

    /// Mappings in IOVA order.
    pub fn iter(&self) -> impl Iterator<Item = &Mapping> + '_ {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes charged to RLIMIT_MEMLOCK: every mapping except those sharing
    /// another's pages (type1 charges each vfio_dma; iommufd each pages object).
    pub fn charged_bytes(&self) -> u64 {
        self.charged
    }

    /// Mappings intersecting `[iova, iova+size)`, in IOVA order.
    pub fn overlapping(&self, iova: u64, size: u64) -> impl Iterator<Item = &Mapping> + '_ {
        let last = size.checked_sub(1).map(|s| iova.saturating_add(s));
        // Mappings never overlap, so only the one starting at or before `iova` can reach into it.
        let head = last.and_then(|_| self.find(iova));
        let tail = last.into_iter().flat_map(move |l| self.map.range((Excluded(iova), Included(l))).map(|(_, m)| m));
        head.into_iter().chain(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 0x1000;

    fn rules() -> TableRules {
        TableRules { page_size: P, iova_ranges: vec![], max_entries: 65535 }
    }

    fn m(iova: u64, size: u64, vaddr: u64) -> Mapping {
        Mapping { iova, size, backing: Backing::Vaddr(vaddr), prot: Prot::READ_WRITE, shares_with: None }
    }

    fn table(ms: &[Mapping]) -> MappingTable {
        let mut t = MappingTable::new(rules());
        for x in ms {
            t.insert(*x).unwrap();
        }
        t
    }

    #[test]
    fn insert_find_and_charge() {
        let t = table(&[m(0, 4 * P, 0x10_0000), m(8 * P, P, 0x20_0000)]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.charged_bytes(), 5 * P);
        assert_eq!(t.find(3 * P).map(|x| x.iova), Some(0));
        assert!(t.find(4 * P).is_none());
        assert_eq!(t.find(8 * P + 5).map(|x| x.iova), Some(8 * P));
        assert_eq!(t.iter().map(|x| x.iova).collect::<Vec<_>>(), vec![0, 8 * P]);
    }

    #[test]
    fn zero_size_is_einval() {
        let e = table(&[]).insert(m(0, 0, 0)).unwrap_err();
        assert_eq!(e, TableError::ZeroSize { iova: 0 });
        assert_eq!(e.errno(), 22);
    }

    #[test]
    fn unaligned_iova_size_vaddr_and_offset() {
        let mut t = table(&[]);
        for bad in [m(0x800, P, 0), m(0, 0x1800, 0), m(0, P, 0x10)] {
            let e = t.insert(bad).unwrap_err();
            assert!(matches!(e, TableError::Unaligned { .. }), "{e}");
            assert_eq!(e.errno(), 22);
        }
        let file = Mapping { backing: Backing::File { fd: 3, offset: 0x200 }, ..m(0, P, 0) };
        let e = t.insert(file).unwrap_err();
        assert_eq!(e.to_string(), "IOVA 0x0+0x1000 (vaddr/offset 0x200) is not aligned to the 0x1000 IOMMU page size");
        assert!(t.is_empty());
    }

    #[test]
    fn no_access_is_einval() {
        let e = table(&[]).insert(Mapping { prot: Prot { read: false, write: false }, ..m(0, P, 0) }).unwrap_err();
        assert_eq!(e, TableError::NoAccess { iova: 0, size: P });
        assert_eq!(e.errno(), 22);
    }

    #[test]
    fn overflow_is_eoverflow_but_top_page_is_fine() {
        let mut t = table(&[]);
        let e = t.insert(m(u64::MAX - P + 1, 2 * P, 0)).unwrap_err();
        assert_eq!(e, TableError::Overflow { iova: u64::MAX - P + 1, size: 2 * P });
        assert_eq!(e.errno(), 75);
        assert!(matches!(t.insert(m(0, 2 * P, u64::MAX - P + 1)), Err(TableError::Overflow { .. })));
        t.insert(m(u64::MAX - P + 1, P, 0)).unwrap();
        assert_eq!(t.find(u64::MAX).map(|x| x.size), Some(P));
        assert_eq!(t.overlapping(u64::MAX - P + 1, P).count(), 1);
    }

    #[test]
    fn a_charge_past_2_pow_64_is_eoverflow_not_a_wrap() {
        let half = 1 << 63;
        let mut t = table(&[m(0, half, 0)]);
        assert_eq!(t.insert(m(half, half, 0)).unwrap_err(), TableError::Overflow { iova: half, size: half });
        assert_eq!(t.charged_bytes(), half);
    }

    #[test]
    fn overlap_is_eexist_with_readable_message() {
        let mut t = table(&[m(0, 4 * P, 0)]);
        let e = t.insert(m(P, 2 * P, 0x9000)).unwrap_err();
        assert_eq!(e.to_string(), "IOVA 0x1000+0x2000 overlaps mapping 0x0+0x4000");
        assert_eq!(e.errno(), 17);
        // A range starting before an existing mapping and running into it.
        let mut t = table(&[m(4 * P, P, 0)]);
        assert!(matches!(t.insert(m(0, 5 * P, 0)), Err(TableError::Overlap { existing_iova: 0x4000, .. })));
        t.insert(m(0, 4 * P, 0)).unwrap();
    }

    #[test]
    fn iova_ranges_must_contain_the_whole_mapping() {
        let mut t = MappingTable::new(TableRules { iova_ranges: vec![(0, 0xf_ffff), (0x10_0000, 0x1f_ffff)], ..rules() });
        t.insert(m(0xf_f000, P, 0)).unwrap();
        // Adjacent ranges are not merged: a mapping must fit one of them.
        let e = t.insert(m(0xf_e000 + 0x10_0000, 0x3000, 0)).unwrap_err();
        assert_eq!(e, TableError::OutsideIovaRanges { iova: 0x1f_e000, size: 0x3000 });
        assert_eq!(e.errno(), 22);
        assert!(matches!(t.insert(m(0x1f_f000, 2 * P, 0)), Err(TableError::OutsideIovaRanges { .. })));
        assert!(matches!(t.insert(m(0x100_0000, P, 0)), Err(TableError::OutsideIovaRanges { .. })));
    }

    #[test]
    fn entry_limit_is_enospc() {
        let mut t = MappingTable::new(TableRules { max_entries: 2, ..rules() });
        t.insert(m(0, P, 0)).unwrap();
        t.insert(m(P, P, 0)).unwrap();
        let e = t.insert(m(2 * P, P, 0)).unwrap_err();
        assert_eq!(e, TableError::TooManyEntries { limit: 2 });
        assert_eq!(e.errno(), 28);
        t.remove_range(0, P).unwrap();
        t.insert(m(2 * P, P, 0)).unwrap();
    }

    #[test]
    fn remove_range_takes_whole_mappings_only() {
        let mut t = table(&[m(0, 2 * P, 0), m(2 * P, P, 0), m(4 * P, 4 * P, 0)]);
        let gone = t.remove_range(0, 4 * P).unwrap();
        assert_eq!(gone.iter().map(|x| x.iova).collect::<Vec<_>>(), vec![0, 2 * P]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.charged_bytes(), 4 * P);
    }

    #[test]
    fn remove_range_refuses_to_split() {
        let mut t = table(&[m(0, 2 * P, 0), m(4 * P, 4 * P, 0)]);
        for (iova, size, hit) in [(0, P, 0), (P, 4 * P, 0), (0, 6 * P, 4 * P), (5 * P, P, 4 * P)] {
            let e = t.remove_range(iova, size).unwrap_err();
            assert!(matches!(e, TableError::WouldSplit { mapping_iova, .. } if mapping_iova == hit), "{e}");
            assert_eq!(e.errno(), 22);
        }
        let e = t.remove_range(P, 4 * P).unwrap_err();
        assert_eq!(e.to_string(), "unmapping IOVA 0x1000+0x4000 would split mapping 0x0+0x2000");
        assert_eq!(t.len(), 2, "a refused unmap changes nothing");
    }

    #[test]
    fn remove_range_errors() {
        let mut t = table(&[m(0, P, 0)]);
        let e = t.remove_range(2 * P, P).unwrap_err();
        assert_eq!(e, TableError::NotFound { iova: 2 * P, size: P });
        assert_eq!(e.errno(), 2);
        assert!(matches!(t.remove_range(0, 0), Err(TableError::ZeroSize { .. })));
        assert!(matches!(t.remove_range(0x10, P), Err(TableError::Unaligned { vaddr_or_offset: None, .. })));
        assert!(matches!(t.remove_range(2 * P, u64::MAX - P + 1), Err(TableError::Overflow { .. })));
    }

    #[test]
    fn sharers_charge_nothing_and_inherit_the_charge() {
        let mut t = table(&[m(0, 2 * P, 0x10_0000)]);
        let copy = |iova| Mapping { iova, shares_with: Some(0), ..m(iova, 2 * P, 0x10_0000) };
        t.insert(copy(0x10_0000)).unwrap();
        t.insert(copy(0x20_0000)).unwrap();
        assert_eq!(t.charged_bytes(), 2 * P);
        t.remove_range(0, 2 * P).unwrap();
        assert_eq!(t.charged_bytes(), 2 * P, "pages stay pinned while a copy uses them");
        assert_eq!(t.get(0x10_0000).unwrap().shares_with, None);
        assert_eq!(t.get(0x20_0000).unwrap().shares_with, Some(0x10_0000));
        t.remove_range(0x10_0000, 0x20_0000).unwrap();
        assert_eq!(t.charged_bytes(), 0);
        assert!(t.is_empty());
    }

    #[test]
    fn sharer_needs_a_live_owner() {
        let mut t = table(&[m(0, P, 0)]);
        let e = t.insert(Mapping { shares_with: Some(8 * P), ..m(4 * P, P, 0) }).unwrap_err();
        assert_eq!(e, TableError::NotFound { iova: 8 * P, size: P });
        t.insert(Mapping { shares_with: Some(0), ..m(4 * P, P, 0) }).unwrap();
        // A copy of a copy must name the owner, not the intermediate sharer.
        assert!(t.insert(Mapping { shares_with: Some(4 * P), ..m(6 * P, P, 0) }).is_err());
    }

    #[test]
    fn a_check_changes_nothing_and_its_commit_does_what_insert_and_remove_do() {
        let mut t = table(&[m(0, 2 * P, 0)]);
        let c = t.check_insert(m(4 * P, P, 0x9000)).unwrap();
        assert_eq!(c.charges(), P);
        assert_eq!((t.len(), t.charged_bytes()), (1, 2 * P), "checked, not made");
        t.commit(c);
        assert_eq!((t.len(), t.charged_bytes()), (2, 3 * P));
        assert_eq!(
            t.check_insert(m(P, P, 0)).unwrap_err(),
            TableError::Overlap { iova: P, size: P, existing_iova: 0, existing_size: 2 * P }
        );
        assert!(matches!(t.check_remove(P, P), Err(TableError::WouldSplit { .. })));
        assert!(matches!(t.check_remove(8 * P, P), Err(TableError::NotFound { .. })));
        let c = t.check_remove(0, 8 * P).unwrap();
        assert_eq!(c.charges(), 0);
        t.commit(c);
        assert!(t.is_empty());
        assert_eq!(t.charged_bytes(), 0);
    }

    #[test]
    #[should_panic(expected = "committed after another change")]
    fn a_stale_check_cannot_be_committed() {
        let mut t = table(&[]);
        let c = t.check_insert(m(0, P, 0)).unwrap();
        t.insert(m(0, P, 0)).unwrap();
        t.commit(c);
    }

    #[test]
    fn overlapping_lists_every_intersecting_mapping() {
        let t = table(&[m(0, 2 * P, 0), m(2 * P, P, 0), m(4 * P, P, 0)]);
        let hits = |iova, size| t.overlapping(iova, size).map(|x| x.iova).collect::<Vec<_>>();
        assert_eq!(hits(P, 3 * P), vec![0, 2 * P]);
        assert_eq!(hits(3 * P, P), Vec::<u64>::new());
        assert_eq!(hits(0, 0), Vec::<u64>::new());
        assert_eq!(hits(0, u64::MAX), vec![0, 2 * P, 4 * P]);
    }

    #[test]
    fn backing_continuity() {
        let v = Backing::Vaddr(0x1000);
        assert_eq!(v.advance(0x2000), Backing::Vaddr(0x3000));
        assert!(v.continues(0x2000, &Backing::Vaddr(0x3000)));
        assert!(!v.continues(0x1000, &Backing::Vaddr(0x3000)));
        let f = Backing::File { fd: 5, offset: 0 };
        assert!(f.continues(P, &Backing::File { fd: 5, offset: P }));
        assert!(!f.continues(P, &Backing::File { fd: 6, offset: P }));
        assert!(!f.continues(P, &Backing::Vaddr(P)));
        assert!(!Backing::Vaddr(u64::MAX - 0xfff).continues(P, &Backing::Vaddr(0)));
        assert!(f.overlaps(2 * P, &Backing::File { fd: 5, offset: P }, P));
        assert!(!f.overlaps(P, &Backing::File { fd: 5, offset: P }, P));
        assert!(!v.overlaps(P, &f, P));
    }
}
