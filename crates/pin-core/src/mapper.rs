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
    Kernel { err: KernelError, done: usize, plan: Plan },
}

/// type1's default dma_entry_limit, when the kernel does not report DMA_AVAIL.
const TYPE1_DEFAULT_ENTRIES: usize = 65535;

impl Mapper {
    pub fn new(backend: &mut dyn DmaBackend, page_size: u64) -> Result<Mapper, KernelError> {
        let iova_ranges = backend.iova_ranges()?;
        let max_entries = backend.caps().max_entries.map(|n| n as usize).unwrap_or(if backend.caps().can_copy { usize::MAX } else { TYPE1_DEFAULT_ENTRIES });
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
                return Err(SyncError::Kernel { err, done: i, plan });
            }
            // The kernel accepted the op, so the table must too; a refusal here is a planner bug.
            planner::apply(&mut self.table, op).expect("table rejected an op the kernel accepted");
        }
        Ok(plan)
    }
}
