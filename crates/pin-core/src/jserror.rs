//! What a failed pin-core call looks like in JavaScript: the error's class,
//! `code`, message and extra properties. Every failure (a bad argument, a
//! kernel errno, a refused plan, a panic) becomes a `JsError` here, as plain
//! data; `napi::finish` is the one place that throws it.

use crate::backend::KernelError;
use crate::batch::BadRecord;
use crate::errno;
use crate::mapper::{BatchError, OpError, SeedError, SyncError};
use crate::memory::FreeError;
use crate::planner::{Op, PlanError, Region};
use std::any::Any;
use std::fmt::Display;

/// The constructor: TypeError and RangeError for bad arguments, as Node's own
/// APIs throw them; Error for everything the kernel or pin-core refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Error,
    TypeError,
    RangeError,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Prop {
    Num(f64),
    Big(u64),
    Str(String),
}

/// `code` becomes `err.code`: an errno name where there is one (EINVAL for
/// every bad argument), else ENAPI or EPANIC. `props` are extra fields
/// (errno, op, iova, size, path, index, finalCharged).
#[derive(Clone, Debug, PartialEq)]
pub struct JsError {
    pub class: Class,
    pub code: String,
    pub message: String,
    pub props: Vec<(&'static str, Prop)>,
}

impl JsError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        JsError { class: Class::Error, code: code.into(), message: message.into(), props: Vec::new() }
    }

    /// An argument of the wrong JS type; `got` is its typeof.
    pub fn type_arg(what: impl Display, expected: &str, got: &str) -> Self {
        JsError { class: Class::TypeError, ..Self::new("EINVAL", format!("{what} must be {expected}, got {got}")) }
    }

    /// An argument of the right type whose value is not allowed (out of range, unknown name, unreadable record).
    pub fn range(message: impl Into<String>) -> Self {
        JsError { class: Class::RangeError, ..Self::new("EINVAL", message) }
    }

    /// A handle of the wrong backend for the call.
    pub fn wrong_handle(message: impl Into<String>) -> Self {
        JsError { class: Class::TypeError, ..Self::new("EINVAL", message) }
    }

    pub fn closed_handle(h: usize) -> Self {
        Self::new("EBADF", format!("pin-core handle {h} is not open (closed already, or never opened)"))
    }

    /// A handle whose call panicked: its mapping table may no longer say what the kernel holds.
    pub fn broken_handle(h: usize) -> Self {
        Self::new("EBADFD", format!("pin-core handle {h} is unusable after an internal error in an earlier call; close it"))
    }

    /// An N-API call that failed for a reason other than a pending exception (which `finish` lets through).
    pub fn napi(what: &str, status: i32) -> Self {
        Self::new("ENAPI", format!("{what} failed with napi_status {status}"))
    }

    /// A panic caught at the boundary: a bug in pin-core, reported instead of ending node.
    pub fn panicked(call: &str, payload: &(dyn Any + Send)) -> Self {
        let what = payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        Self::new("EPANIC", format!("pin-core bug: {call} panicked: {}", what.unwrap_or("(no message)")))
    }

    fn with(mut self, k: &'static str, v: Prop) -> Self {
        self.props.push((k, v));
        self
    }

    /// A refused plan: the errno the kernel would have given, no `op` (no ioctl was made).
    pub fn plan(p: &PlanError) -> Self {
        Self::new(errno::name(p.errno()), format!("DMA plan refused: {p}"))
    }

    /// A failed sync, with what the table charges after it: ops that ran before a kernel error stay.
    pub fn sync(e: SyncError, charged: u64) -> Self {
        let j = match e {
            SyncError::Plan(p) => Self::plan(&p),
            SyncError::Kernel { err, .. } => err.into(),
        };
        j.with("finalCharged", Prop::Big(charged))
    }

    /// A batch's failed record: the kernel's own error as a single op gives
    /// it, or the refusal (no `op`), plus the record's index and what the
    /// table charges after the records before it.
    pub fn batch(e: BatchError, ops: &[Op], charged: u64) -> Self {
        let j = match e.err {
            OpError::Kernel(k) => k.into(),
            OpError::Refused(p) => {
                let j = Self::new(errno::name(p.errno()), format!("DMA batch record {} refused: {p}", e.index));
                let (iova, size) = match ops.get(e.index) {
                    Some(Op::Map(r)) => (r.iova, r.size),
                    Some(Op::Unmap { iova, size }) => (*iova, *size),
                    Some(Op::Copy { dst_iova, size, .. }) => (*dst_iova, *size),
                    None => (0, 0),
                };
                j.with("iova", Prop::Big(iova)).with("size", Prop::Big(size))
            }
        };
        j.with("index", Prop::Num(e.index as f64)).with("finalCharged", Prop::Big(charged))
    }

    /// A refused seed: the errno a map of the region would get (EBUSY for a
    /// table in use), the region's index and range, and no `op`: no ioctl was made.
    pub fn seed(e: &SeedError, regions: &[Region]) -> Self {
        let j = Self::new(errno::name(e.errno()), format!("DMA table seed refused: {e}"));
        match e.region(regions) {
            Some((index, iova, size)) => {
                j.with("index", Prop::Num(index as f64)).with("iova", Prop::Big(iova)).with("size", Prop::Big(size))
            }
            None => j,
        }
    }

    /// A record the decoder cannot read: nothing in the batch ran.
    pub fn bad_record(b: BadRecord) -> Self {
        Self::range(format!("DMA batch record {} cannot be read: {}", b.index, b.why)).with("index", Prop::Num(b.index as f64))
    }
}

/// A kernel error keeps its errno (number and name), the operation and what it worked on.
impl From<KernelError> for JsError {
    fn from(e: KernelError) -> Self {
        let mut j =
            JsError::new(errno::name(e.errno), e.to_string()).with("errno", Prop::Num(e.errno as f64)).with("op", Prop::Str(e.op.into()));
        if let Some(i) = e.iova {
            j = j.with("iova", Prop::Big(i));
        }
        if let Some(s) = e.size {
            j = j.with("size", Prop::Big(s));
        }
        if let Some(p) = e.path {
            j = j.with("path", Prop::Str(p));
        }
        j
    }
}

/// memFree of memory pin-core does not hold is a bad argument; munmap's own failure is the kernel's.
impl From<FreeError> for JsError {
    fn from(e: FreeError) -> Self {
        match e {
            FreeError::Kernel(k) => KernelError::new("munmap", k).into(),
            other => JsError::range(format!("memFree: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Region;
    use crate::table::{Backing, Prot, TableError};

    #[test]
    fn a_kernel_error_keeps_errno_op_and_range() {
        let j: JsError = KernelError::errno("IOMMU_IOAS_MAP", errno::ENOMEM).at(0x1000, 0x2000).path("/dev/iommu").into();
        assert_eq!((j.class, j.code.as_str()), (Class::Error, "ENOMEM"));
        assert_eq!(j.message, "IOMMU_IOAS_MAP failed: ENOMEM (iova 0x1000, size 0x2000, path /dev/iommu)");
        assert_eq!(
            j.props,
            vec![
                ("errno", Prop::Num(12.0)),
                ("op", Prop::Str("IOMMU_IOAS_MAP".into())),
                ("iova", Prop::Big(0x1000)),
                ("size", Prop::Big(0x2000)),
                ("path", Prop::Str("/dev/iommu".into())),
            ]
        );
    }

    #[test]
    fn bad_arguments_are_type_and_range_errors_with_einval() {
        let t = JsError::type_arg("size", "a BigInt or a Number", "string");
        assert_eq!(
            (t.class, t.code.as_str(), t.message.as_str()),
            (Class::TypeError, "EINVAL", "size must be a BigInt or a Number, got string")
        );
        assert_eq!(JsError::range("x").class, Class::RangeError);
        assert_eq!(JsError::closed_handle(3).code, "EBADF");
    }

    #[test]
    fn a_panic_says_where_and_why() {
        let p: Box<dyn Any + Send> = Box::new("index out of bounds");
        assert_eq!(JsError::panicked("map", p.as_ref()).message, "pin-core bug: map panicked: index out of bounds");
        let p: Box<dyn Any + Send> = Box::new(format!("{} went wrong", 2));
        assert_eq!(JsError::panicked("sync", p.as_ref()).message, "pin-core bug: sync panicked: 2 went wrong");
        let p: Box<dyn Any + Send> = Box::new(7u8);
        let j = JsError::panicked("table", p.as_ref());
        assert_eq!((j.code.as_str(), j.message.as_str()), ("EPANIC", "pin-core bug: table panicked: (no message)"));
    }

    #[test]
    fn a_refused_batch_record_names_its_range_and_index_but_no_op() {
        let ops = [Op::Unmap { iova: 0x1000, size: 0x1000 }, Op::Copy { src_iova: 0, dst_iova: 0x4000, size: 0x2000 }];
        let e = BatchError { index: 1, err: OpError::Refused(PlanError::Invalid(TableError::NotFound { iova: 0, size: 0x2000 })) };
        let j = JsError::batch(e, &ops, 0x3000);
        assert_eq!(j.code, "ENOENT");
        assert!(j.message.starts_with("DMA batch record 1 refused: "), "{}", j.message);
        assert_eq!(
            j.props,
            vec![("iova", Prop::Big(0x4000)), ("size", Prop::Big(0x2000)), ("index", Prop::Num(1.0)), ("finalCharged", Prop::Big(0x3000))]
        );
        assert!(!j.props.iter().any(|(k, _)| *k == "op"), "no ioctl was made");
    }

    #[test]
    fn a_refused_seed_names_its_region_but_no_op() {
        let r = Region { iova: 0x4000, size: 0x1000, backing: Backing::Vaddr(0), prot: Prot::READ_WRITE };
        let e = SeedError::Invalid {
            index: 1,
            err: TableError::Overlap { iova: 0x4000, size: 0x1000, existing_iova: 0, existing_size: 0x8000 },
        };
        let j = JsError::seed(&e, &[r, r]);
        assert_eq!((j.class, j.code.as_str()), (Class::Error, "EEXIST"));
        assert_eq!(j.message, "DMA table seed refused: region 1: IOVA 0x4000+0x1000 overlaps mapping 0x0+0x8000");
        assert_eq!(j.props, vec![("index", Prop::Num(1.0)), ("iova", Prop::Big(0x4000)), ("size", Prop::Big(0x1000))]);
        let j = JsError::seed(&SeedError::NotEmpty { held: 2 }, &[]);
        assert_eq!((j.code.as_str(), j.props.len()), ("EBUSY", 0));
        assert_eq!(j.message, "DMA table seed refused: the mapping table holds 2 mapping(s) already; only an empty one is seeded");
    }

    #[test]
    fn a_failed_sync_says_what_the_table_charges_after_it() {
        let r = Region { iova: 0, size: 0x1000, backing: Backing::Vaddr(0), prot: Prot::READ_WRITE };
        let plan = crate::planner::Plan { ops: vec![Op::Map(r)], peak_charged: 0x1000, final_charged: 0x1000 };
        let e = SyncError::Kernel { err: KernelError::errno("MAP", errno::EBUSY), done: 0, plan: Box::new(plan) };
        let j = JsError::sync(e, 0);
        assert_eq!((j.code.as_str(), j.props.last()), ("EBUSY", Some(&("finalCharged", Prop::Big(0)))));
        let j = JsError::sync(SyncError::Plan(PlanError::OverBudget { needed: 2, budget: 1 }), 5);
        assert_eq!(j.code, "ENOMEM");
        assert!(j.message.starts_with("DMA plan refused: "));
    }
}
