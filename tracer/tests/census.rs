//! The census on real processes: every GC-tracked object counted by type from outside, judged
//! over time. Reference cycles nobody holds (gc disabled) are named by type and called leaks;
//! objects made and dropped and a capped LRU are not. Every CPython on the machine.

mod common;

use common::*;
use serde_json::Value;

fn census_type<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["census"].as_array()?.iter().find(|t| t["type"] == name)
}

fn run_fixture(python: &Python, script: &str, env: &[(&str, &str)], extra: &[&str]) -> Value {
    let mut args = vec!["-d", "10s", "-i", "1s", "-q", "--holders-only"];
    args.extend_from_slice(extra);
    record_ready_fixture(python, script, env, &args)
}

fn check_cycles(python: &Python, report: &Value, label: &str) {
    let name = format!("{} {label}", python.label);
    for (ty, rate) in [("Cycle", 50.0), ("ValueError", 10.0)] {
        let t =
            census_type(report, ty).unwrap_or_else(|| panic!("{name}: {ty} not in the census: {:#}", report["census"]));
        assert_eq!(t["verdict"], "leak", "{name}: {ty}: {t:#}");
        let growth = t["growth_per_s"].as_f64().unwrap();
        assert!((rate * 0.7..=rate * 1.3).contains(&growth), "{name}: {ty} grows ~{rate}/s, saw {growth}");
        assert!(t["count"].as_u64().unwrap() as f64 > rate * 5.0, "{name}: {ty} count {t:#}");
        assert!(t["bytes_est"].as_u64().unwrap() >= t["count"].as_u64().unwrap() * 32, "{name}: {ty} bytes {t:#}");
    }
    for control in ["Transient", "Cached"] {
        if let Some(t) = census_type(report, control) {
            assert!(!["leak", "growing"].contains(&t["verdict"].as_str().unwrap()), "{name}: {control}: {t:#}");
        }
    }
    let cached = census_type(report, "Cached").unwrap_or_else(|| panic!("{name}: Cached not in the census"));
    // The fixture inserts before it evicts, so a scan between the two sees 201.
    let cached_count = cached["count"].as_u64().unwrap_or(0);
    assert!((200..=201).contains(&cached_count), "{name}: the LRU holds 200 (201 mid-insert): {cached:#}");
    let scan = &report["census_scan"];
    assert!(scan["scans"].as_u64().unwrap() >= 9, "{name}: scans {scan}");
    assert!(scan["objects_per_scan"].as_u64().unwrap() > 5_000, "{name}: {scan}");
    assert!(scan["mean_scan_s"].as_f64().unwrap() < 0.05, "{name}: a small heap scans fast: {scan}");
    assert!(scan.get("error").is_none(), "{name}: {scan}");
}

#[test]
fn cycles_nobody_holds_are_named_by_type_on_every_cpython() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    for minor in 10..=15 {
        for python in pythons_of(minor) {
            let report = run_fixture(&python, "census_cycles.py", &[], &[]);
            check_cycles(&python, &report, "pymalloc");
            if minor >= 13 {
                let report = run_fixture(&python, "census_cycles.py", &[("PYTHONMALLOC", "mimalloc")], &[]);
                check_cycles(&python, &report, "PYTHONMALLOC=mimalloc");
            }
        }
    }
}

#[test]
fn a_small_budget_cuts_the_scan_and_the_report_says_so() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    for python in pythons_of(11).into_iter().take(1) {
        let report = run_fixture(&python, "census_cycles.py", &[], &["--census-budget", "1000"]);
        let scan = &report["census_scan"];
        assert!(scan["scans_cut_by_budget"].as_u64().unwrap() >= 9, "{scan}");
        assert!(scan["objects_per_scan"].as_u64().unwrap() <= 1000, "{scan}");
        // Known only where the interpreter counts its tracked objects (3.14+) or after a
        // complete scan; when given it must be the rest of the heap.
        if let Some(skipped) = scan["skipped_objects"].as_u64() {
            assert!(skipped > 1000, "{scan}");
        }
    }
}

/// The line of `census_origins.py` carrying `marker`.
fn marked_line(marker: &str) -> u64 {
    let text = std::fs::read_to_string(fixture("census_origins.py")).unwrap();
    text.lines().position(|l| l.contains(marker)).unwrap_or_else(|| panic!("no {marker}")) as u64 + 1
}

fn check_origin(name: &str, report: &Value, ty: &str, line: u64, function: &str) {
    let t = census_type(report, ty).unwrap_or_else(|| panic!("{name}: {ty} not in the census: {:#}", report["census"]));
    assert_eq!(t["verdict"], "leak", "{name}: {ty}: {t:#}");
    let o = &t["origin"];
    let chain = o["chain"].as_array().unwrap_or_else(|| panic!("{name}: {ty} has no origin: {t:#}"));
    let shown = &chain[o["shown"].as_u64().unwrap() as usize];
    assert!(shown["file"].as_str().unwrap().ends_with("/census_origins.py"), "{name}: {ty}: {o:#}");
    assert_eq!(shown["line"].as_u64(), Some(line), "{name}: {ty}: {o:#}");
    assert_eq!(shown["function"], function, "{name}: {ty}: {o:#}");
}

#[test]
fn the_newest_objects_of_a_leaking_type_tell_where_they_were_made() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    let (tick, raise) = (marked_line("ORIGIN-TICK"), marked_line("ORIGIN-RAISE"));
    for minor in 10..=15 {
        for python in pythons_of(minor) {
            let report = run_fixture(&python, "census_origins.py", &[], &[]);
            let name = &python.label;
            // TimerHandle -> functools.partial -> on_tick: the partial is followed to the function.
            check_origin(name, &report, "TimerHandle", tick, "on_tick");
            let chain = &census_type(&report, "TimerHandle").unwrap()["origin"]["chain"];
            assert!(chain.as_array().unwrap().iter().any(|l| l["what"] == "functools.partial"), "{name}: {chain:#}");
            // The exception's innermost traceback entry is the raise line.
            check_origin(name, &report, "ValueError", raise, "fail");
            for control in ["Transient", "Handle"] {
                if let Some(t) = census_type(&report, control) {
                    assert!(!["leak", "growing"].contains(&t["verdict"].as_str().unwrap()), "{name}: {t:#}");
                    assert!(t.get("origin").is_none(), "{name}: only growing types carry an origin: {t:#}");
                }
            }
        }
    }
}
