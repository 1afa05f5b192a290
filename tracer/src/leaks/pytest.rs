//! Which test of a pytest suite leaked. A test's allocations carry its function's frame in their
//! stack (pytest calls the test function, which calls the code under test), so the outermost
//! frame of a test function in a test file names the test, as pytest does:
//! `tests/test_api.py::test_upload`, the path relative to the directory pytest was started in
//! (pytest's rootdir when it is started from the project's root, as usual).
//!
//! What pytest collects by default: functions named `test*` in files named `test_*.py` or
//! `*_test.py`. A method of a test class is named by its function only (the stack holds no
//! class), a parametrized test without its parameters.
//!
//! A test is a run of its own: a call path under a test whose memory grew steadily while the
//! test ran and was still all there at finalization leaked in that test, even when the suite ran
//! on for minutes afterwards (judged as a whole, the line grew and then stayed flat: *bounded*).

use std::collections::BTreeMap;

use super::{judge, Criteria, Evidence, Judgement};
use crate::report::{Frame, TestShare, Verdict};
use crate::series::Series;
use crate::units::Unit;

/// Whether pytest collects `function` in `file` as a test (its default patterns).
fn is_test(function: &str, file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    function.starts_with("test") && name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
}

/// The test a stack (innermost first) was allocated under, named as pytest does, with the path
/// relative to `root` when it lies under it.
pub fn test_of(stack: &[Frame], root: Option<&str>) -> Option<String> {
    let (function, file) = stack.iter().rev().find_map(|f| match f {
        Frame::Python { function, file, .. } if is_test(function, file) => Some((function, file)),
        _ => None,
    })?;
    let relative = root
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| !r.is_empty())
        .and_then(|r| file.strip_prefix(r)?.strip_prefix('/'))
        .unwrap_or(file);
    Some(format!("{relative}::{function}"))
}

/// Outstanding bytes per test over call paths (stack, outstanding bytes), largest first; paths
/// under no test and tests holding nothing are left out.
pub fn by_test<'a>(paths: impl IntoIterator<Item = (&'a [Frame], u64)>, root: Option<&str>) -> Vec<TestShare> {
    let mut bytes: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, b) in paths {
        if b == 0 {
            continue;
        }
        if let Some(test) = test_of(stack, root) {
            *bytes.entry(test).or_default() += b;
        }
    }
    let mut shares: Vec<TestShare> =
        bytes.into_iter().map(|(test, outstanding_bytes)| TestShare { test, outstanding_bytes }).collect();
    shares.sort_by_key(|s| std::cmp::Reverse(s.outstanding_bytes));
    shares
}

/// Adds `more` to `into`, summing the bytes of a test named in both; largest first.
pub fn merge_tests(into: &mut Vec<TestShare>, more: &[TestShare]) {
    for m in more {
        match into.iter_mut().find(|t| t.test == m.test) {
            Some(t) => t.outstanding_bytes += m.outstanding_bytes,
            None => into.push(m.clone()),
        }
    }
    into.sort_by_key(|s| std::cmp::Reverse(s.outstanding_bytes));
}

/// The series of a call path under a test, cut where it reached its final level (within 5% of
/// its rise) and never fell below it again: the end of the test's growth. `None` when it never
/// rose, or reached it within its first four samples.
fn while_it_grew(series: &Series) -> Option<Series> {
    let pts = series.points();
    let (&(_, last), &(_, first)) = (pts.last()?, pts.first()?);
    let reach = last - 0.05 * (last - first);
    if last <= first {
        return None;
    }
    let mut at = pts.len() - 1;
    while at > 0 && pts[at - 1].1 >= reach {
        at -= 1;
    }
    if at < 4 {
        return None;
    }
    let mut cut = Series::new();
    for &(t, v) in &pts[..=at] {
        cut.push(t, v);
    }
    Some(cut)
}

/// At finalization, a call path under a test judged over the test's own growth: a *leak* when
/// it grew steadily (every condition of step 9 but the duration) and kept all of it to the end.
/// `None` when that is not a leak: the path's own verdict stands.
pub fn judge_test_path(series: &Series, evidence: &Evidence, criteria: &Criteria) -> Option<Judgement> {
    let cut = while_it_grew(series)?;
    let c = Criteria { min_window_s: 0.0, ..criteria.clone() };
    let mut j = judge(&cut, Some(evidence), &c, Unit::Bytes);
    if j.verdict != Verdict::Leak {
        return None;
    }
    j.reason.push_str("; grew while its test ran, all kept to the end");
    Some(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(function: &str, file: &str) -> Frame {
        Frame::Python { function: function.into(), file: file.into(), line: 1, def_line: None }
    }

    #[test]
    fn a_test_is_named_as_pytest_names_it() {
        let stack = [
            py("append", "/srv/app/store.py"),
            py("test_upload", "/srv/app/tests/test_api.py"),
            py("pytest_pyfunc_call", "/venv/lib/_pytest/python.py"),
            py("main", "/venv/lib/pytest/__main__.py"),
        ];
        assert_eq!(test_of(&stack, Some("/srv/app")).as_deref(), Some("tests/test_api.py::test_upload"));
        assert_eq!(test_of(&stack, Some("/srv/app/")).as_deref(), Some("tests/test_api.py::test_upload"));
        assert_eq!(test_of(&stack, Some("/elsewhere")).as_deref(), Some("/srv/app/tests/test_api.py::test_upload"));
        assert_eq!(test_of(&stack, None).as_deref(), Some("/srv/app/tests/test_api.py::test_upload"));
        // The outermost test function: a helper named test_* called by the test is not the test.
        let nested = [py("test_helper", "/r/util_test.py"), py("test_a", "/r/x_test.py")];
        assert_eq!(test_of(&nested, Some("/r")).as_deref(), Some("x_test.py::test_a"));
        // Not collected by pytest: a test-like name outside a test file, a fixture.
        assert_eq!(test_of(&[py("test_connection", "/srv/app/db.py")], None), None);
        assert_eq!(test_of(&[py("cache", "/srv/app/tests/conftest.py")], None), None);
    }

    #[test]
    fn bytes_are_summed_per_test_largest_first() {
        let a = [py("test_a", "/r/test_m.py")];
        let b = [py("test_b", "/r/test_m.py")];
        let none = [py("main", "/r/app.py")];
        let shares = by_test([(&a[..], 10), (&b[..], 50), (&a[..], 5), (&none[..], 99), (&b[..], 0)], Some("/r"));
        let got: Vec<(&str, u64)> = shares.iter().map(|t| (t.test.as_str(), t.outstanding_bytes)).collect();
        assert_eq!(got, [("test_m.py::test_b", 50), ("test_m.py::test_a", 15)]);
        let mut into = shares.clone();
        merge_tests(&mut into, &[TestShare { test: "test_m.py::test_a".into(), outstanding_bytes: 40 }]);
        assert_eq!(into[0], TestShare { test: "test_m.py::test_a".into(), outstanding_bytes: 55 });
    }

    fn series(points: impl IntoIterator<Item = (f64, f64)>) -> Series {
        let mut s = Series::new();
        for (t, v) in points {
            s.push(t, v);
        }
        s
    }

    #[test]
    fn a_test_that_kept_what_it_grew_leaked_in_that_test() {
        let e = Evidence { allocs: 100, live_count: 100, oldest_age_s: 20.0, window_s: 30.0, ..Default::default() };
        let c = Criteria::for_bytes();
        // Flat, 1.5 s of steady growth (4.5 MB) at 10 s, then flat for 20 s: bounded as a whole.
        let v = |t: f64| 3e6 * (t - 10.0).clamp(0.0, 1.5);
        let kept = series((0..=60).map(|i| i as f64 * 0.25).chain((16..=30).map(f64::from)).map(|t| (t, v(t))));
        assert_eq!(judge(&kept, Some(&e), &c, Unit::Bytes).verdict, Verdict::Bounded);
        let j = judge_test_path(&kept, &e, &c).expect("a leak of the test");
        assert_eq!(j.verdict, Verdict::Leak);
        assert!(j.reason.ends_with("grew while its test ran, all kept to the end"), "{j:?}");
        // The same growth freed before the end; a step made at once (a cache filled in one go).
        let freed = series((0..=60).map(|i| i as f64 * 0.25).map(|t| (t, if t < 13.0 { v(t) } else { 0.0 })));
        assert_eq!(judge_test_path(&freed, &e, &c), None);
        let step = series((0..=60).map(|i| i as f64 * 0.25).map(|t| (t, if t < 10.0 { 0.0 } else { 4.5e6 })));
        assert_eq!(judge_test_path(&step, &e, &c), None);
    }
}
