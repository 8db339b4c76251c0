//! The order of a plan's ops, simulated on a copy of the table so the
//! running charge and entry count are exactly what the kernel will see: old
//! mappings nothing replaces first, then new ones while budget, entries and
//! free IOVA allow (make-before-break), unmapping old ones early only when
//! stuck (break-before-make), then the replaced old mappings.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};

use super::{apply, Op, PlanError, Region};
use crate::table::{Backing, Mapping, MappingTable};

/// A region to create, by IOAS_COPY from `source` when set, else by a Map.
#[derive(Clone, Copy, Debug)]
pub(super) struct Item {
    pub(super) region: Region,
    pub(super) source: Option<u64>,
}

impl Item {
    fn cost(&self) -> u64 {
        if self.source.is_some() {
            0
        } else {
            self.region.size
        }
    }

    fn op(&self) -> Op {
        let r = self.region;
        match self.source {
            Some(src_iova) => Op::Copy { src_iova, dst_iova: r.iova, size: r.size },
            None => Op::Map(r),
        }
    }
}

/// `(object, start, last)` of one stretch of memory; `object` is the fd, None for process memory.
type Span = (Option<i32>, u64, u64);

fn span(b: &Backing, size: u64) -> Span {
    (b.object(), b.addr(), b.addr() + (size - 1))
}

/// The desired regions' memory sorted by start, each `last` raised to the
/// largest so far in its object, so one binary search answers "still wanted?".
fn wanted_memory(wanted: &[Region]) -> Vec<Span> {
    let mut v: Vec<Span> = wanted.iter().map(|r| span(&r.backing, r.size)).collect();
    v.sort_unstable();
    for i in 1..v.len() {
        if v[i].0 == v[i - 1].0 {
            v[i].2 = v[i].2.max(v[i - 1].2);
        }
    }
    v
}

fn memory_wanted(index: &[Span], m: &Mapping) -> bool {
    let (object, start, last) = span(&m.backing, m.size);
    let n = index.partition_point(|&(o, s, _)| (o, s) <= (object, last));
    n > 0 && index[n - 1].0 == object && index[n - 1].2 >= start
}

/// Orders the ops, simulating each on a copy of the table so the running
/// charge and entry count are exactly what the kernel will see.
pub(super) struct Scheduler {
    pub(super) sim: MappingTable,
    pub(super) ops: Vec<Op>,
    /// Old mappings still to unmap, by IOVA.
    pending: BTreeMap<u64, u64>,
    start: u64,
    budget: u64,
    max_entries: usize,
    pub(super) peak: u64,
}

impl Scheduler {
    pub(super) fn new(current: &MappingTable, kept: &HashSet<u64>, budget: Option<u64>, max_entries: usize) -> Scheduler {
        let pending = current.iter().filter(|m| !kept.contains(&m.iova)).map(|m| (m.iova, m.size)).collect();
        let start = current.charged_bytes();
        let budget = budget.unwrap_or(u64::MAX);
        Scheduler { sim: current.clone(), ops: Vec::new(), pending, start, budget, max_entries, peak: start }
    }

    fn emit(&mut self, op: Op) -> Result<(), PlanError> {
        apply(&mut self.sim, &op).map_err(PlanError::Invalid)?;
        if let Op::Unmap { iova, .. } = op {
            self.pending.remove(&iova);
        }
        self.peak = self.peak.max(self.sim.charged_bytes());
        self.ops.push(op);
        Ok(())
    }

    /// Old mappings whose IOVA range and memory are both gone from the new
    /// map replace nothing, so they go first: that frees budget and entries
    /// for the make-before-break of everything else.
    pub(super) fn unmap_abandoned(&mut self, wanted: &[Region], items: &[Item]) -> Result<(), PlanError> {
        let memory = wanted_memory(wanted);
        let sources: HashSet<u64> = items.iter().filter_map(|it| it.source).collect();
        let iova_wanted = |m: &Mapping| {
            let n = wanted.partition_point(|r| r.iova <= m.last());
            n > 0 && wanted[n - 1].mapping().last() >= m.iova
        };
        let gone = |m: &&Mapping| !sources.contains(&m.iova) && !iova_wanted(m) && !memory_wanted(&memory, m);
        let abandoned: Vec<(u64, u64)> =
            self.pending.keys().filter_map(|k| self.sim.get(*k)).filter(gone).map(|m| (m.iova, m.size)).collect();
        for (iova, size) in abandoned {
            self.emit(Op::Unmap { iova, size })?;
        }
        Ok(())
    }

    /// Issues new mappings while budget, entries and IOVA space allow, making
    /// room by unmapping old ones only when stuck; the replaced mappings
    /// that never had to go early are unmapped last (make-before-break).
    pub(super) fn run(&mut self, mut items: Vec<Item>) -> Result<(), PlanError> {
        loop {
            let mut waiting = Vec::with_capacity(items.len());
            for it in items {
                if self.ready(&it) {
                    self.emit(it.op())?;
                } else {
                    waiting.push(it);
                }
            }
            items = waiting;
            if items.is_empty() {
                break;
            }
            self.make_room(&mut items)?;
        }
        while let Some((&iova, &size)) = self.pending.iter().next() {
            self.emit(Op::Unmap { iova, size })?;
        }
        Ok(())
    }

    fn ready(&self, it: &Item) -> bool {
        let r = &it.region;
        self.sim.len() < self.max_entries
            && self.sim.charged_bytes().saturating_add(it.cost()) <= self.start.saturating_add(self.budget)
            // The kernel refuses a map over a live mapping with EEXIST.
            && self.sim.overlapping(r.iova, r.size).next().is_none()
    }

    /// Break-before-make for the first waiting item: unmap the old mappings
    /// in its IOVA range, or else the one releasing the most locked memory.
    fn make_room(&mut self, items: &mut [Item]) -> Result<(), PlanError> {
        let first = items[0].region;
        let blockers: Vec<(u64, u64)> = self.sim.overlapping(first.iova, first.size).map(|m| (m.iova, m.size)).collect();
        if !blockers.is_empty() {
            for (iova, size) in blockers {
                self.unmap_old(iova, size, items)?;
            }
            return Ok(());
        }
        match self.best_unmap(items) {
            Some((iova, size)) => self.unmap_old(iova, size, items),
            None => Err(self.stuck(items)),
        }
    }

    /// Copies still waiting to read from an unmapped source must map instead.
    fn unmap_old(&mut self, iova: u64, size: u64, items: &mut [Item]) -> Result<(), PlanError> {
        for it in items.iter_mut().filter(|it| it.source == Some(iova)) {
            it.source = None;
        }
        self.emit(Op::Unmap { iova, size })
    }

    /// Prefers mappings no waiting copy needs, then the largest release
    /// (pages shared with a live copy release nothing), then the lowest IOVA.
    fn best_unmap(&self, items: &[Item]) -> Option<(u64, u64)> {
        let sources: HashSet<u64> = items.iter().filter_map(|it| it.source).collect();
        let shared: HashSet<u64> = self.sim.iter().filter_map(|m| m.shares_with).collect();
        let release = |iova: u64, size: u64| {
            let owner = self.sim.get(iova).is_some_and(|m| m.shares_with.is_none());
            if owner && !shared.contains(&iova) {
                size
            } else {
                0
            }
        };
        let (&iova, &size) = self.pending.iter().max_by_key(|(&i, &s)| (!sources.contains(&i), release(i, s), Reverse(i)))?;
        Some((iova, size))
    }

    /// Every old mapping is gone and the waiting items still do not fit.
    fn stuck(&self, items: &[Item]) -> PlanError {
        if self.sim.len() >= self.max_entries {
            return PlanError::TooManyEntries { needed: self.sim.len() + items.len(), limit: self.max_entries };
        }
        let total = items.iter().fold(self.sim.charged_bytes(), |acc, it| acc.saturating_add(it.cost()));
        PlanError::OverBudget { needed: total.saturating_sub(self.start), budget: self.budget }
    }
}
