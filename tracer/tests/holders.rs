//! The holders view on real processes: containers that only grow are named by the path a
//! person would type and judged `leak`; a capped cache and churn are not. Every CPython on the
//! machine, with pymalloc, PYTHONMALLOC=malloc and (3.13+) mimalloc.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn holder<'a>(report: &'a Value, path: &str) -> Option<&'a Value> {
    report["holders"].as_array()?.iter().find(|h| h["path"] == path)
}

fn run_fixture(python: &Python, env: &[(&str, &str)], extra: &[&str]) -> Value {
    let mut args = vec!["-d", "10s", "-i", "1s", "-q"];
    args.extend_from_slice(extra);
    record_ready_fixture(python, "holders_fixture.py", env, &args)
}

fn check(python: &Python, report: &Value, label: &str) {
    let name = format!("{} {label}", python.label);
    for (path, item) in [
        ("__main__.FAILED", "ValueError"),
        ("__main__.CALLBACKS", "function"),
        ("__main__.DISPATCHER.pending", "tuple"),
    ] {
        let h = holder(report, path)
            .unwrap_or_else(|| panic!("{name}: {path} not found; holders: {:#}", report["holders"]));
        assert_eq!(h["verdict"], "leak", "{name}: {path}: {h:#}");
        let growth = h["growth_per_s"].as_f64().unwrap();
        assert!((60.0..=140.0).contains(&growth), "{name}: {path} grows ~100/s, saw {growth}");
        assert!(h["item_types"][item].as_u64().unwrap_or(0) > 0, "{name}: {path} items {:#}", h["item_types"]);
        assert!(h["len"].as_u64().unwrap() > 500, "{name}: {path} len");
    }
    let cache = holder(report, "__main__.CACHE").unwrap_or_else(|| panic!("{name}: CACHE not found"));
    assert_ne!(cache["verdict"], "leak", "{name}: the capped cache is not a leak");
    assert_ne!(cache["verdict"], "growing", "{name}: the capped cache is not growing");
    // The fixture inserts, then evicts the oldest: a scan that lands between the two sees 501.
    let len = cache["len"].as_u64();
    assert!(matches!(len, Some(500 | 501)), "{name}: CACHE len {len:?}");
    let leaks: Vec<&str> = report["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["verdict"] == "leak")
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert!(leaks.iter().all(|p| p.starts_with("__main__.")), "{name}: unexpected leaking holders {leaks:?}");
    let scan = &report["holders_scan"];
    assert!(scan["scans"].as_u64().unwrap() >= 9, "{name}: scans {scan}");
    assert!(scan["objects_per_scan"].as_u64().unwrap() > 100, "{name}: {scan}");
}

#[test]
fn growing_containers_are_named_on_every_cpython() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    for minor in 10..=15 {
        for python in pythons_of(minor) {
            let report = run_fixture(&python, &[], &["--holders-only"]);
            check(&python, &report, "pymalloc, --holders-only");
            assert!(report["suspects"].as_array().unwrap().is_empty(), "holders-only attaches no probe");
            let report = run_fixture(&python, &[("PYTHONMALLOC", "malloc")], &["--holders-only"]);
            check(&python, &report, "PYTHONMALLOC=malloc");
            if minor >= 13 {
                let report = run_fixture(&python, &[("PYTHONMALLOC", "mimalloc")], &["--holders-only"]);
                check(&python, &report, "PYTHONMALLOC=mimalloc");
            }
        }
    }
    assert_no_leftover_probes();
}

#[test]
fn holders_and_stacks_together() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    for python in pythons_of(11).into_iter().take(1) {
        let report = run_fixture(&python, &[], &[]);
        check(&python, &report, "with probes");
        // The churn function makes and drops thousands of objects per tick: never a leak.
        for s in report["suspects"].as_array().unwrap() {
            if let Some((f, _, _)) = innermost_python(s) {
                if f.contains("churn") {
                    assert_ne!(s["verdict"], "leak", "churn is not a leak: {s:#}");
                }
            }
        }
    }
    assert_no_leftover_probes();
}

/// The retained estimate of containers of bytearray, bytes, str, list, dict, set and deque
/// items (and of a deque and a dict of bytearrays) against `sys.getsizeof` of the container
/// plus its items, computed inside the fixture. The items of each holder have one size (the
/// set's vary by 7%, its sample by less), so the sampled mean must land within 5%.
#[test]
fn retained_bytes_match_getsizeof() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    for minor in 10..=15 {
        let found = pythons_of(minor);
        if found.is_empty() {
            println!("skipped: no CPython 3.{minor}");
        }
        for python in found {
            check_sizes(&python);
        }
    }
    assert_no_leftover_probes();
}

fn check_sizes(python: &Python) {
    let mut child =
        Command::new(&python.path).arg(fixture("holders_sizes.py")).arg("60").stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let want: Value = serde_json::from_str(line.strip_prefix("sizes ").expect("sizes line")).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let pid = child.id().to_string();
    let mut tracer = Tracer::start(&["-p", &pid, "-d", "3s", "-i", "1s", "-q", "--holders-only"]);
    tracer.wait_attached();
    let (code, report) = tracer.finish();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 0);
    for (path, want) in want.as_object().unwrap() {
        let want = want.as_u64().unwrap();
        let h = holder(&report, path)
            .unwrap_or_else(|| panic!("{}: {path} not found; holders: {:#}", python.label, report["holders"]));
        let got = h["retained_bytes_est"].as_u64().unwrap();
        let ratio = got as f64 / want as f64;
        println!("{}: {path}: tracer {got} B, sys.getsizeof sum {want} B ({ratio:.3})", python.label);
        assert!((0.95..=1.05).contains(&ratio), "{}: {path}: tracer {got} B vs getsizeof {want} B", python.label);
    }
}
