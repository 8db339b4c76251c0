//! The N-API surface of pin-core: every function JS can call, in one place.
//! Each callback converts arguments, calls plain Rust, and converts back;
//! failures become `JsError`s (jserror.rs), thrown by `napi::call`.
//! Backends live in a handle table (handles.rs); a handle is an index into it.

use crate::backend::{DmaBackend, IommuPath, KernelError, UpdateVaddr, OP_INVALIDATE_VADDR, OP_SET_VADDR};
use crate::dispatch::AnyBackend;
use crate::errno::EOPNOTSUPP;
use crate::handles::Handles;
use crate::iommufd::Iommufd;
use crate::jserror::JsError;
use crate::mapper::{Mapper, SyncError};
use crate::napi::{self, napi_callback_info as Info, napi_env as Env, napi_value as Value, JsResult};
use crate::planner::{Op, Region};
use crate::table::{Backing, Prot};
use crate::type1::Type1Container;
use crate::uapi::{IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_RLIMIT_MODE};
use crate::{batch, jsnum, kick, memory, sys};
use std::fmt;
use std::os::fd::OwnedFd;

struct Entry {
    backend: AnyBackend,
    mapper: Option<Mapper>,
}

static HANDLES: Handles<Entry> = Handles::new();

fn io_error(op: &'static str, e: std::io::Error) -> JsError {
    KernelError::new(op, e).into()
}

fn insert(backend: AnyBackend) -> f64 {
    HANDLES.insert(Entry { backend, mapper: None }) as f64
}

/// An inherited backend comes with its mapper, made now: its entry limit is
/// DMA_AVAIL as the kernel reports it while the old process's mappings are
/// in (Mapper::seed counts them back), and its IOVA ranges are read here, so
/// `seed` needs no ioctl. A failure drops the backend, closing its fd.
fn insert_inherited(mut backend: AnyBackend) -> JsResult<f64> {
    let mapper = Mapper::new(backend.dma(), page())?;
    Ok(HANDLES.insert(Entry { backend, mapper: Some(mapper) }) as f64)
}

fn with<T>(env: Env, h: Value, f: impl FnOnce(&mut Entry) -> JsResult<T>) -> JsResult<T> {
    HANDLES.with(napi::get_handle(env, h)?, f)
}

/// Runs a legacy-container-only call; any other handle is a usage error.
fn with_type1<T>(env: Env, h: Value, what: &str, f: impl FnOnce(&mut Type1Container) -> Result<T, KernelError>) -> JsResult<T> {
    with(env, h, |e| match &mut e.backend {
        AnyBackend::Type1(c) => f(c).map_err(JsError::from),
        AnyBackend::Iommufd(_) => Err(JsError::wrong_handle(format!("{what} needs a legacy container handle, not an iommufd one"))),
    })
}

/// Runs an iommufd-only call; any other handle is a usage error.
fn with_iommufd<T>(env: Env, h: Value, what: &str, f: impl FnOnce(&mut Iommufd) -> Result<T, KernelError>) -> JsResult<T> {
    with(env, h, |e| match &mut e.backend {
        AnyBackend::Iommufd(i) => f(i).map_err(JsError::from),
        AnyBackend::Type1(_) => Err(JsError::wrong_handle(format!("{what} needs an iommufd handle, not a legacy container one"))),
    })
}

/// The entry's mapper (made on first use, from the backend's IOVA ranges and entry limit) and its backend.
fn mapper(e: &mut Entry) -> JsResult<(&mut Mapper, &mut dyn DmaBackend)> {
    let Entry { backend, mapper } = e;
    let m = match mapper {
        Some(m) => m,
        None => mapper.insert(Mapper::new(backend.dma(), page())?),
    };
    Ok((m, backend.dma()))
}

/// The path, and the fd JS hands over (>= 0; it no longer uses it, as pin-core.ts documents) or None to open the path.
fn adopt_or_open(env: Env, path: Value, fd: Value) -> JsResult<(String, Option<OwnedFd>)> {
    let path = napi::get_string(env, path, "path")?;
    let fd = napi::get_i32(env, fd, "fd")?;
    if fd < 0 {
        return Ok((path, None));
    }
    let owned = adopt_fd(&path, fd)?;
    Ok((path, Some(owned)))
}

/// The path and the fd of a backend another process set up, which JS hands
/// over as `adopt_or_open` takes it; there is no path to open instead (a
/// fresh open holds nothing to inherit), so the fd must be >= 0.
fn inherited_fd(env: Env, path: Value, fd: Value) -> JsResult<(String, i32)> {
    let path = napi::get_string(env, path, "path")?;
    let fd = jsnum::integer(napi::get_number(env, fd, "fd")?, "fd", 0, i32::MAX as u64)?;
    Ok((path, fd as i32))
}

/// Takes over the fd `inherited_fd` read, once every other argument is read
/// too (a bad one leaves the fd the caller's); checked open first, as in `adopt_or_open`.
fn adopt_fd(path: &str, fd: i32) -> JsResult<OwnedFd> {
    sys::adopt(fd).map_err(|e| JsError::from(KernelError::new("fcntl(F_GETFD)", e).path(path)))
}

/// Runs a VADDR call on a legacy container's mapper. An iommufd handle is
/// EOPNOTSUPP with `op`, as type1UpdateVaddr has it; a container whose kernel
/// does not offer VFIO_UPDATE_VADDR is too, before any ioctl (iommufd's
/// compat container never does; it would answer EINVAL). A handle with no
/// mapper yet maps nothing: 0.
fn with_vaddrs(
    env: Env,
    h: Value,
    op: &'static str,
    f: impl FnOnce(&Mapper, &mut Type1Container) -> Result<usize, KernelError>,
) -> JsResult<usize> {
    with(env, h, |e| {
        let AnyBackend::Type1(c) = &mut e.backend else {
            return Err(KernelError::errno(op, EOPNOTSUPP)
                .note("an iommufd hands its mappings over with IOMMU_IOAS_CHANGE_PROCESS")
                .into());
        };
        let Some(m) = e.mapper.as_ref().filter(|m| !m.table().is_empty()) else { return Ok(0) };
        if !c.caps().update_vaddr {
            return Err(KernelError::errno(op, EOPNOTSUPP).path(c.path()).note("the container does not offer VFIO_UPDATE_VADDR").into());
        }
        let path = c.path().to_string();
        f(m, c).map_err(|err| err.path_or(&path).into())
    })
}

/// An argument's name with a field, as `regions[2].backing`, built only when a message needs it.
#[derive(Clone, Copy)]
struct Field<'a>(&'a dyn fmt::Display, &'static str);

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

fn backing(env: Env, v: Value, what: &dyn fmt::Display) -> JsResult<Backing> {
    napi::expect_object(env, v, what)?;
    let vaddr = napi::get(env, v, c"vaddr")?;
    if !napi::is_nullish(env, vaddr)? {
        return Ok(Backing::Vaddr(napi::get_u64(env, vaddr, Field(what, "vaddr"))?));
    }
    let fd = napi::get_i32(env, napi::get(env, v, c"fd")?, Field(what, "fd"))?;
    let offset = napi::get_u64(env, napi::get(env, v, c"offset")?, Field(what, "offset"))?;
    Ok(Backing::File { fd, offset })
}

fn prot(env: Env, v: Value, what: &dyn fmt::Display) -> JsResult<Prot> {
    napi::expect_object(env, v, what)?;
    Ok(Prot {
        read: napi::get_bool(env, napi::get(env, v, c"read")?, Field(what, "read"))?,
        write: napi::get_bool(env, napi::get(env, v, c"write")?, Field(what, "write"))?,
    })
}

fn region_in(env: Env, v: Value, i: u32) -> JsResult<Region> {
    let what = format!("regions[{i}]");
    napi::expect_object(env, v, &what)?;
    Ok(Region {
        iova: napi::get_u64(env, napi::get(env, v, c"iova")?, Field(&what, "iova"))?,
        size: napi::get_u64(env, napi::get(env, v, c"size")?, Field(&what, "size"))?,
        backing: backing(env, napi::get(env, v, c"backing")?, &Field(&what, "backing"))?,
        prot: prot(env, napi::get(env, v, c"prot")?, &Field(&what, "prot"))?,
    })
}

/// An optional u64 argument: null or undefined is None.
fn opt_u64(env: Env, v: Value, what: &str) -> JsResult<Option<u64>> {
    Ok(if napi::is_nullish(env, v)? { None } else { Some(napi::get_u64(env, v, what)?) })
}

fn obj(env: Env, fields: &[(&str, Value)]) -> JsResult {
    let o = napi::object(env)?;
    for (k, v) in fields {
        napi::set(env, o, k, *v)?;
    }
    Ok(o)
}

fn region_out(env: Env, r: &Region) -> JsResult {
    let b = match r.backing {
        Backing::Vaddr(v) => obj(env, &[("vaddr", napi::bigint(env, v)?)])?,
        Backing::File { fd, offset } => obj(env, &[("fd", napi::number(env, fd as f64)?), ("offset", napi::bigint(env, offset)?)])?,
    };
    let p = obj(env, &[("read", napi::boolean(env, r.prot.read)?), ("write", napi::boolean(env, r.prot.write)?)])?;
    obj(env, &[("iova", napi::bigint(env, r.iova)?), ("size", napi::bigint(env, r.size)?), ("backing", b), ("prot", p)])
}

fn op_out(env: Env, op: &Op) -> JsResult {
    match op {
        Op::Unmap { iova, size } => {
            obj(env, &[("op", napi::string(env, "unmap")?), ("iova", napi::bigint(env, *iova)?), ("size", napi::bigint(env, *size)?)])
        }
        Op::Map(r) => {
            obj(env, &[("op", napi::string(env, "map")?), ("iova", napi::bigint(env, r.iova)?), ("size", napi::bigint(env, r.size)?)])
        }
        Op::Copy { src_iova, dst_iova, size } => obj(
            env,
            &[
                ("op", napi::string(env, "copy")?),
                ("srcIova", napi::bigint(env, *src_iova)?),
                ("dstIova", napi::bigint(env, *dst_iova)?),
                ("size", napi::bigint(env, *size)?),
            ],
        ),
    }
}

/// A decoded batch record, in full (batchDecode).
fn record_out(env: Env, op: &Op) -> JsResult {
    match op {
        Op::Map(r) => {
            let o = region_out(env, r)?;
            napi::set(env, o, "op", napi::string(env, "map")?)?;
            Ok(o)
        }
        other => op_out(env, other),
    }
}

/// The first `count` records of a batch array, all decoded before any runs.
fn records(env: Env, words: &[u64], count: Value) -> JsResult<Vec<Op>> {
    let count = napi::get_u64(env, count, "count")?;
    let held = (words.len() / batch::WORDS) as u64;
    if count > held {
        return Err(JsError::range(format!("count {count} is more than the {held} records the array holds")));
    }
    batch::decode(&words[..count as usize * batch::WORDS]).map_err(JsError::bad_record)
}

fn page() -> u64 {
    sys::page_size().unwrap_or(4096) as u64
}

/// Declares an exported callback: `fn_name(env, args) -> JsResult` with N arguments.
macro_rules! export_fns {
    ($($js:literal => $name:ident($n:literal) $body:expr;)*) => {
        $(
            unsafe extern "C" fn $name(env: Env, info: Info) -> Value {
                napi::call(env, $js, || {
                    let a = napi::args::<$n>(env, info)?;
                    #[allow(clippy::redundant_closure_call)]
                    ($body)(env, a)
                })
            }
        )*
        const EXPORTS: &[(&str, napi::napi_callback)] = &[$(($js, $name)),*];
    };
}

export_fns! {
    "version" => version(0) |env, _a: [Value; 0]| napi::string(env, env!("CARGO_PKG_VERSION"));
    "pageSize" => page_size(0) |env, _a: [Value; 0]| sys::page_size().map_err(|e| io_error("sysconf(_SC_PAGESIZE)", e)).and_then(|p| napi::number(env, p as f64));

    "kickInit" => kick_init(0) |env, _a: [Value; 0]| kick::init().map_err(|e| io_error("signal(SIGRTMIN)", e)).and_then(|s| napi::number(env, s as f64));
    "threadSelf" => thread_self(0) |env, _a: [Value; 0]| napi::bigint(env, kick::thread_self());
    "threadKick" => thread_kick(1) |env, a: [Value; 1]| {
        let t = napi::get_u64(env, a[0], "thread")?;
        let tid = i32::try_from(t).ok().filter(|&t| t > 0).ok_or_else(|| JsError::range(format!("thread {t} is not a thread id threadSelf gives")))?;
        kick::kick(tid).map_err(|e| io_error("tgkill", e))?;
        napi::undefined(env)
    };

    "accountingCharge" => accounting_charge(3) |env, a: [Value; 3]| {
        use crate::accounting::{self as acc, Counter, Limit, When};
        let p = napi::get_string(env, a[0], "path")?;
        let path = IommuPath::parse(&p).ok_or_else(|| JsError::range(format!("unknown path '{p}' (type1, compat, iommufd)")))?;
        let mode = match napi::get_string(env, a[1], "mode")?.as_str() {
            "per-user" => acc::Mode::PerUser, "per-process" => acc::Mode::PerProcess,
            m => return Err(JsError::range(format!("unknown mode '{m}' (per-user, per-process)"))),
        };
        let c = acc::charge(path, mode, napi::get_bool(env, a[2], "capIpcLock")?);
        let counters: Vec<Value> = c.counters.iter().map(|k| napi::string(env, match k { Counter::VmLck => "VmLck", Counter::VmPin => "VmPin", Counter::UserLockedVm => "user.locked_vm" })).collect::<JsResult<_>>()?;
        obj(env, &[
            ("mode", napi::string(env, match acc::effective_mode(path, mode) { acc::Mode::PerUser => "per-user", acc::Mode::PerProcess => "per-process" })?),
            ("counters", napi::array(env, &counters)?),
            ("limit", napi::string(env, match c.limit { Limit::Process => "process", Limit::UserTotal => "user-total", Limit::None => "none" })?),
            ("when", napi::string(env, match c.when { When::Map => "map", When::DeviceAttach => "device-attach" })?),
        ])
    };

    "memAlloc" => mem_alloc(2) |env, a: [Value; 2]| {
        let kind_s = napi::get_string(env, a[0], "kind")?;
        let kind = memory::Kind::parse(&kind_s).ok_or_else(|| JsError::range(format!("unknown memory kind '{kind_s}' (anon, thp, memfd, hugetlb)")))?;
        let size = napi::get_u64(env, a[1], "size")? as usize;
        let (addr, fd) = memory::alloc(kind, size).map_err(|e| io_error("mmap", e))?;
        obj(env, &[("vaddr", napi::bigint(env, addr as u64)?), ("fd", napi::number(env, fd as f64)?)])
    };
    "memFree" => mem_free(3) |env, a: [Value; 3]| {
        memory::free(napi::get_u64(env, a[0], "vaddr")? as usize, napi::get_u64(env, a[1], "size")? as usize, napi::get_i32(env, a[2], "fd")?)?;
        napi::undefined(env)
    };
    "memPopulate" => mem_populate(3) |env, a: [Value; 3]| {
        let (addr, size) = (napi::get_u64(env, a[0], "vaddr")?, napi::get_u64(env, a[1], "size")?);
        let threads = jsnum::integer(napi::get_number(env, a[2], "threads")?, "threads", 1, memory::MAX_THREADS as u64)?;
        memory::populate(addr as usize, size as usize, threads as usize, page() as usize)
            .map_err(|e| JsError::from(KernelError::new("MADV_POPULATE_WRITE", e).at(addr, size)))?;
        napi::undefined(env)
    };

    "type1Open" => type1_open(2) |env, a: [Value; 2]| {
        let (path, fd) = adopt_or_open(env, a[0], a[1])?;
        let c = match fd { Some(fd) => Type1Container::adopt(fd, &path), None => Type1Container::open(&path) }.map_err(JsError::from)?;
        napi::number(env, insert(AnyBackend::Type1(c)))
    };
    "type1SetIommu" => type1_set_iommu(2) |env, a: [Value; 2]| {
        let v1 = napi::get_bool(env, a[1], "v1only")?;
        with_type1(env, a[0], "type1SetIommu", |c| c.set_iommu(v1))?;
        napi::undefined(env)
    };
    "type1UpdateVaddr" => type1_update_vaddr(4) |env, a: [Value; 4]| {
        let (iova, size) = (napi::get_u64(env, a[1], "iova")?, napi::get_u64(env, a[2], "size")?);
        let vaddr = opt_u64(env, a[3], "vaddr")?;
        with(env, a[0], |e| match &mut e.backend {
            AnyBackend::Type1(c) => c.update_vaddr(iova, size, vaddr).map(|_| ()).map_err(JsError::from),
            AnyBackend::Iommufd(_) => Err(KernelError::errno(OP_SET_VADDR, EOPNOTSUPP).at(iova, size).into()),
        })?;
        napi::undefined(env)
    };
    // Live update: the container another process set up, its mappings kept.
    "type1Inherit" => type1_inherit(2) |env, a: [Value; 2]| {
        let (path, fd) = inherited_fd(env, a[0], a[1])?;
        let c = Type1Container::inherit(adopt_fd(&path, fd)?, &path).map_err(JsError::from)?;
        napi::number(env, insert_inherited(AnyBackend::Type1(c))?)
    };
    "type1InvalidateVaddrs" => type1_invalidate_vaddrs(1) |env, a: [Value; 1]| {
        let n = with_vaddrs(env, a[0], OP_INVALIDATE_VADDR, |m, c| m.invalidate_vaddrs(c))?;
        napi::number(env, n as f64)
    };
    "type1SetVaddrs" => type1_set_vaddrs(1) |env, a: [Value; 1]| {
        let n = with_vaddrs(env, a[0], OP_SET_VADDR, |m, c| m.set_vaddrs(c))?;
        napi::number(env, n as f64)
    };

    "iommufdOpen" => iommufd_open(2) |env, a: [Value; 2]| {
        let (path, fd) = adopt_or_open(env, a[0], a[1])?;
        let i = match fd { Some(fd) => Iommufd::adopt(fd, &path), None => Iommufd::open(&path) }.map_err(JsError::from)?;
        napi::number(env, insert(AnyBackend::Iommufd(i)))
    };
    "iommufdInherit" => iommufd_inherit(3) |env, a: [Value; 3]| {
        let (path, fd) = inherited_fd(env, a[0], a[1])?;
        let ioas_id = napi::get_u32(env, a[2], "ioasId")?;
        let i = Iommufd::inherit(adopt_fd(&path, fd)?, &path, ioas_id).map_err(JsError::from)?;
        napi::number(env, insert_inherited(AnyBackend::Iommufd(i))?)
    };
    "iommufdIoasId" => iommufd_ioas_id(1) |env, a: [Value; 1]| {
        let id = with_iommufd(env, a[0], "iommufdIoasId", |i| Ok(i.ioas_id()))?;
        napi::number(env, id as f64)
    };
    "iommufdOption" => iommufd_option(3) |env, a: [Value; 3]| {
        let name = napi::get_string(env, a[1], "option")?;
        let id = match name.as_str() { "rlimit_mode" => IOMMU_OPTION_RLIMIT_MODE, "huge_pages" => IOMMU_OPTION_HUGE_PAGES, _ => return Err(JsError::range(format!("unknown iommufd option '{name}' (rlimit_mode, huge_pages)"))) };
        let val = opt_u64(env, a[2], "value")?;
        let v = with_iommufd(env, a[0], "iommufdOption", |i| i.option(id, val))?;
        napi::bigint(env, v)
    };
    "iommufdChangeProcess" => iommufd_change_process(1) |env, a: [Value; 1]| {
        with_iommufd(env, a[0], "iommufdChangeProcess", |i| i.change_process())?;
        napi::undefined(env)
    };
    "iommufdMockDomain" => iommufd_mock_domain(1) |env, a: [Value; 1]| {
        let (stdev, _, _) = with_iommufd(env, a[0], "iommufdMockDomain", |i| i.mock_domain())?;
        napi::number(env, stdev as f64)
    };
    "iommufdDestroy" => iommufd_destroy(2) |env, a: [Value; 2]| {
        let id = napi::get_u32(env, a[1], "id")?;
        with_iommufd(env, a[0], "iommufdDestroy", |i| i.destroy(id))?;
        napi::undefined(env)
    };

    "backendFd" => backend_fd(1) |env, a: [Value; 1]| {
        let fd = with(env, a[0], |e| Ok(e.backend.dma().fd()))?;
        napi::number(env, fd as f64)
    };
    "caps" => caps(1) |env, a: [Value; 1]| {
        let c = with(env, a[0], |e| Ok(e.backend.dma().caps().clone()))?;
        let container_type = match c.container_type { Some(t) => napi::string(env, t.name())?, None => napi::null(env)? };
        let max = match c.max_entries { Some(n) => napi::number(env, n as f64)?, None => napi::null(env)? };
        obj(env, &[
            ("path", napi::string(env, c.path.name())?), ("containerType", container_type),
            ("canCopy", napi::boolean(env, c.can_copy)?), ("canMapFile", napi::boolean(env, c.can_map_file)?),
            ("unmapAll", napi::boolean(env, c.unmap_all)?), ("updateVaddr", napi::boolean(env, c.update_vaddr)?),
            ("maxEntries", max), ("pgsizeBitmap", napi::bigint(env, c.pgsize_bitmap)?), ("p2p", napi::string(env, c.path.p2p().name())?),
        ])
    };
    "iovaRanges" => iova_ranges(1) |env, a: [Value; 1]| {
        let rs = with(env, a[0], |e| e.backend.dma().iova_ranges().map_err(JsError::from))?;
        let items = rs.iter().map(|(s, l)| napi::array(env, &[napi::bigint(env, *s)?, napi::bigint(env, *l)?])).collect::<JsResult<Vec<_>>>()?;
        napi::array(env, &items)
    };
    "map" => map(5) |env, a: [Value; 5]| {
        let (iova, size, b, p) = (napi::get_u64(env, a[1], "iova")?, napi::get_u64(env, a[2], "size")?, backing(env, a[3], &"backing")?, prot(env, a[4], &"prot")?);
        with(env, a[0], |e| e.backend.dma().map(iova, size, &b, p).map_err(JsError::from))?;
        napi::undefined(env)
    };
    "unmap" => unmap(3) |env, a: [Value; 3]| {
        let (iova, size) = (napi::get_u64(env, a[1], "iova")?, napi::get_u64(env, a[2], "size")?);
        let n = with(env, a[0], |e| e.backend.dma().unmap(iova, size).map_err(JsError::from))?;
        napi::bigint(env, n)
    };
    "unmapAll" => unmap_all(1) |env, a: [Value; 1]| {
        let n = with(env, a[0], |e| e.backend.dma().unmap_all().map_err(JsError::from))?;
        napi::bigint(env, n)
    };
    "copy" => copy(4) |env, a: [Value; 4]| {
        let (s, d, n) = (napi::get_u64(env, a[1], "srcIova")?, napi::get_u64(env, a[2], "dstIova")?, napi::get_u64(env, a[3], "size")?);
        with(env, a[0], |e| e.backend.dma().copy(s, d, n).map_err(JsError::from))?;
        napi::undefined(env)
    };
    "close" => close(1) |env, a: [Value; 1]| {
        // Dropping the backend closes its fd: the kernel unmaps and unpins everything.
        drop(HANDLES.remove(napi::get_handle(env, a[0])?)?);
        napi::undefined(env)
    };

    "sync" => sync(3) |env, a: [Value; 3]| {
        let regions = napi::get_array(env, a[1], "regions", |v, i| region_in(env, v, i))?;
        let budget = opt_u64(env, a[2], "budgetBytes")?;
        let plan = with(env, a[0], |e| {
            let (m, backend) = mapper(e)?;
            m.sync(backend, &regions, budget).map_err(|err| JsError::sync(err, m.table().charged_bytes()))
        })?;
        let ops = plan.ops.iter().map(|o| op_out(env, o)).collect::<JsResult<Vec<_>>>()?;
        obj(env, &[("ops", napi::array(env, &ops)?), ("peakCharged", napi::bigint(env, plan.peak_charged)?), ("finalCharged", napi::bigint(env, plan.final_charged)?)])
    };
    "plan" => plan(3) |env, a: [Value; 3]| {
        let regions = napi::get_array(env, a[1], "regions", |v, i| region_in(env, v, i))?;
        let budget = opt_u64(env, a[2], "budgetBytes")?;
        let plan = with(env, a[0], |e| {
            let (m, backend) = mapper(e)?;
            let charged = m.table().charged_bytes();
            m.plan(backend.caps(), &regions, budget).map_err(|err| JsError::sync(SyncError::Plan(err), charged))
        })?;
        let ops = plan.ops.iter().map(|o| op_out(env, o)).collect::<JsResult<Vec<_>>>()?;
        obj(env, &[("ops", napi::array(env, &ops)?), ("peakCharged", napi::bigint(env, plan.peak_charged)?), ("finalCharged", napi::bigint(env, plan.final_charged)?)])
    };
    // Many maps, unmaps and copies in one crossing: records of batch.rs's
    // layout in a BigUint64Array, through the same table as sync.
    "mapBatch" => map_batch(4) |env, a: [Value; 4]| {
        // SAFETY: held only in this callback, and the only view of the array until it returns.
        let words = unsafe { napi::get_biguint64_array(env, a[1], "ops") }?;
        let ops = records(env, words, a[2])?;
        let budget = opt_u64(env, a[3], "budgetBytes")?;
        with(env, a[0], |e| {
            let (m, backend) = mapper(e)?;
            let r = m.batch(backend, &ops, budget, |i, n| words[i * batch::WORDS + 3] = n);
            r.map_err(|err| JsError::batch(err, &ops, m.table().charged_bytes()))
        })?;
        napi::number(env, ops.len() as f64)
    };
    "batchDecode" => batch_decode(2) |env, a: [Value; 2]| {
        // SAFETY: as in mapBatch; only read here.
        let ops = records(env, unsafe { napi::get_biguint64_array(env, a[0], "ops") }?, a[1])?;
        let items = ops.iter().map(|o| record_out(env, o)).collect::<JsResult<Vec<_>>>()?;
        napi::array(env, &items)
    };
    // Mappings the kernel holds already (an inherited backend's), into an empty table: no ioctl.
    "seed" => seed(2) |env, a: [Value; 2]| {
        let regions = napi::get_array(env, a[1], "regions", |v, i| region_in(env, v, i))?;
        with(env, a[0], |e| {
            let can_map_file = e.backend.dma().caps().can_map_file;
            let (m, _) = mapper(e)?;
            m.seed(&regions, can_map_file).map_err(|err| JsError::seed(&err, &regions))
        })?;
        napi::undefined(env)
    };
    "table" => table(1) |env, a: [Value; 1]| {
        let rs: Vec<Region> = with(env, a[0], |e| Ok(e.mapper.as_ref().map(|m| m.table().iter().map(Region::from).collect()).unwrap_or_default()))?;
        let items = rs.iter().map(|r| region_out(env, r)).collect::<JsResult<Vec<_>>>()?;
        napi::array(env, &items)
    };
}

/// Called by node when the addon is loaded.
#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: Env, exports: Value) -> Value {
    napi::call(env, "napi_register_module_v1", || {
        for (name, cb) in EXPORTS {
            napi::export(env, exports, name, *cb)?;
        }
        Ok(exports)
    })
}
