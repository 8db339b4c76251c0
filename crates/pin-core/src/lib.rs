//! pin-core: pins guest memory and keeps the IOMMU in step with the guest's
//! memory map. Loaded by Node as an N-API addon; the JS surface is `addon.rs`.

pub mod accounting;
mod addon;
pub mod backend;
pub mod batch;
pub mod dispatch;
pub mod errno;
pub mod granule;
mod handles;
pub mod iommufd;
mod jserror;
mod jsnum;
pub mod kick;
pub mod mapper;
pub mod memory;
mod napi;
pub mod planner;
pub mod sys;
pub mod table;
pub mod type1;
pub mod uapi;

#[cfg(test)]
mod module_graph {
    //! Every arrow between modules points one way: a module never imports one
    //! that imports it, directly or through others.

    const MODULES: &[(&str, &str)] = &[
        ("accounting", include_str!("accounting.rs")),
        ("addon", include_str!("addon.rs")),
        ("backend", include_str!("backend.rs")),
        ("batch", include_str!("batch.rs")),
        ("dispatch", include_str!("dispatch.rs")),
        ("errno", include_str!("errno.rs")),
        ("granule", include_str!("granule.rs")),
        ("handles", include_str!("handles.rs")),
        ("iommufd", include_str!("iommufd.rs")),
        ("jserror", include_str!("jserror.rs")),
        ("jsnum", include_str!("jsnum.rs")),
        ("kick", include_str!("kick.rs")),
        ("mapper", include_str!("mapper.rs")),
        ("memory", include_str!("memory.rs")),
        ("napi", include_str!("napi.rs")),
        ("planner", include_str!("planner.rs")),
        ("sys", include_str!("sys.rs")),
        ("table", include_str!("table.rs")),
        ("type1", include_str!("type1.rs")),
        ("uapi", include_str!("uapi.rs")),
    ];

    /// The modules a source names as `crate::m` or `crate::{m, ...}`.
    fn imports(src: &str) -> Vec<&'static str> {
        let ident = |s: &str| s.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("").to_string();
        let mut names = Vec::new();
        for part in src.split("crate::").skip(1) {
            if let Some(list) = part.strip_prefix('{') {
                names.extend(list.split('}').next().unwrap_or("").split(',').map(|x| ident(x.trim())));
            } else {
                names.push(ident(part));
            }
        }
        MODULES.iter().map(|(m, _)| *m).filter(|m| names.iter().any(|n| n == m)).collect()
    }

    fn cycle_from(m: &'static str, path: &mut Vec<&'static str>) -> Option<Vec<&'static str>> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            let mut c = path[i..].to_vec();
            c.push(m);
            return Some(c);
        }
        path.push(m);
        let src = MODULES.iter().find(|(n, _)| *n == m).map(|(_, s)| *s).unwrap_or("");
        let found = imports(src).into_iter().filter(|d| *d != m).find_map(|d| cycle_from(d, path));
        path.pop();
        found
    }

    #[test]
    fn no_module_imports_one_that_imports_it() {
        for (m, _) in MODULES {
            if let Some(c) = cycle_from(m, &mut Vec::new()) {
                panic!("import cycle: {}", c.join(" -> "));
            }
        }
    }

    #[test]
    fn the_backends_sit_below_the_dispatch() {
        let of = |m: &str| imports(MODULES.iter().find(|(n, _)| *n == m).unwrap().1);
        assert_eq!(of("backend"), vec!["errno", "table"]);
        assert!(of("type1").contains(&"backend") && of("iommufd").contains(&"backend"));
        assert!(of("dispatch").contains(&"type1") && of("dispatch").contains(&"iommufd"));
    }

    #[test]
    fn reads_both_import_forms() {
        assert_eq!(imports("use crate::{kick, memory, sys};\nuse crate::table::Backing;"), vec!["kick", "memory", "sys", "table"]);
    }
}
