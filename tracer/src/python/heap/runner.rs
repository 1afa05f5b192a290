//! The test runner's own bookkeeping is not the code under test's. pytest keeps one report per
//! test in `TerminalReporter.stats` (a list that grows with every test, by design), unittest its
//! durations in `TestResult.collectedDurations`: under `tracer record -- pytest` those would be the
//! only "leaks" of a clean suite. The runner's modules and the frames running its code are
//! therefore not roots of the holders view. What the suite itself keeps is still reached through
//! the suite's own modules and frames; a leak held only by the runner's objects (a session
//! fixture's cached value) is left to the stacks view, which sees its bytes.
//!
//! The walk also reaches the runner's objects from elsewhere (pytest replaces `pdb.set_trace`
//! with a method of its own class): instances and classes whose class was defined in a runner's
//! module (`__module__`, read once per class) are walls the walk does not pass.

use super::namespaces::{NsMode, NsSource};
use super::types::Kind;
use super::{plausible_ptr, Obj, Scan};

/// Packages of test runners, as top-level module names and as directories of their files.
const RUNNER_PACKAGES: [&str; 6] = ["_pytest", "pytest", "pluggy", "xdist", "execnet", "unittest"];

/// Whether `sys.modules` name `module` is a test runner's module.
pub(crate) fn is_runner_module(module: &str) -> bool {
    RUNNER_PACKAGES.contains(&module.split('.').next().unwrap_or(module))
}

/// Whether a code object's `co_filename` is a test runner's source. `unittest` counts only as
/// the standard library's (`…/python3.X/unittest/…`) and `pytest` as an installed package's, not
/// as any directory of those names.
pub(crate) fn is_runner_file(file: &str) -> bool {
    let parts: Vec<&str> = file.split('/').collect();
    let dirs = &parts[..parts.len().saturating_sub(1)];
    dirs.iter().enumerate().any(|(k, d)| match *d {
        "_pytest" | "pluggy" | "xdist" | "execnet" => true,
        "pytest" => k > 0 && matches!(dirs[k - 1], "site-packages" | "dist-packages"),
        "unittest" => k > 0 && dirs[k - 1].starts_with("python3"),
        _ => false,
    })
}

impl Scan<'_> {
    /// `objs` without the test runner's own instances and classes.
    pub(crate) fn without_runner_objects(&mut self, mut objs: Vec<Obj>) -> Vec<Obj> {
        let classes: Vec<u64> = objs.iter().filter(|o| self.is_kind(o.ty, Kind::Type)).map(|o| o.node.addr).collect();
        self.resolve_types(&classes);
        // (object, its class) for every heap class
        let class_of = |s: &Self, o: &Obj| -> Option<(u64, u64)> {
            let class = if s.is_kind(o.ty, Kind::Type) { o.node.addr } else { o.ty };
            let ti = s.type_info(class)?;
            (ti.heap() && plausible_ptr(ti.dict)).then_some((class, ti.dict))
        };
        let mut todo: Vec<(u64, u64)> = objs
            .iter()
            .filter_map(|o| class_of(self, o))
            .filter(|k| !self.type_cache.modules.contains_key(k))
            .collect();
        todo.sort_unstable();
        todo.dedup();
        if !todo.is_empty() {
            let jobs: Vec<(NsSource, NsMode)> = todo.iter().map(|&(_, d)| (NsSource::Dict(d), NsMode::Full)).collect();
            let found = self.read_namespaces(&jobs);
            let module_ptrs: Vec<u64> = found
                .iter()
                .map(|r| {
                    r.as_ref()
                        .and_then(|r| r.entries.iter().find(|e| e.0.as_deref() == Some("__module__")).map(|e| e.1))
                        .unwrap_or(0)
                })
                .collect();
            let names = self.read_strs(&module_ptrs);
            for (key, name) in todo.into_iter().zip(names) {
                self.type_cache.modules.insert(key, name.map(|n| n.to_string()));
            }
        }
        objs.retain(|o| {
            let module = class_of(self, o).and_then(|k| self.type_cache.modules.get(&k)).and_then(|m| m.as_deref());
            !module.is_some_and(is_runner_module)
        });
        objs
    }

    fn is_kind(&self, ty: u64, kind: Kind) -> bool {
        self.type_info(ty).is_some_and(|t| t.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runners_modules_and_files_are_known_the_suites_are_not() {
        assert!(is_runner_module("_pytest.terminal"));
        assert!(is_runner_module("pluggy"));
        assert!(is_runner_module("unittest.case"));
        assert!(!is_runner_module("__main__"));
        assert!(!is_runner_module("pytest_leaky.conftest"));
        assert!(!is_runner_module("tests.test_api"));
        let site = "/venv/lib/python3.11/site-packages";
        assert!(is_runner_file(&format!("{site}/_pytest/terminal.py")));
        assert!(is_runner_file(&format!("{site}/_pytest/config/__init__.py")));
        assert!(is_runner_file(&format!("{site}/pluggy/_callers.py")));
        assert!(is_runner_file(&format!("{site}/pytest/__main__.py")));
        assert!(is_runner_file("/usr/lib/python3.11/unittest/result.py"));
        assert!(!is_runner_file("/srv/app/unittest/helpers.py"));
        assert!(!is_runner_file("/srv/app/tests/test_api.py"));
        assert!(!is_runner_file("/srv/pytest/app.py"));
        assert!(!is_runner_file("pytest_leaky/test_leaky.py"));
        assert!(!is_runner_file(""));
    }
}
