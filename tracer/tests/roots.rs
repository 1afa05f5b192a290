//! Roots beyond modules on real processes: a Tornado service whose state lives only in
//! `main()`'s locals and in asyncio tasks (tests/fixtures/tornado_service_state.py), attached
//! with `-p`. Its seven leaks of small objects are named by the path a person would say, from
//! the frame, task or event loop that holds them; its capped deque, capped LRU, periodically
//! cleared registry and start-up imports are not leaks. Every CPython with a Tornado venv
//! (`cargo xtask setup` makes them under target/venvs/ and target/pyenv-venv/).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::*;
use serde_json::Value;

const FIXTURE: &str = "tornado_service_state.py";

/// The venvs with Tornado 6, by minor version.
fn tornado_venvs() -> Vec<Python> {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let mut paths = vec![target.join("pyenv-venv/bin/python")];
    if let Ok(dir) = std::fs::read_dir(target.join("venvs")) {
        let mut names: Vec<PathBuf> = dir.filter_map(|e| e.ok()).map(|e| e.path().join("bin/python")).collect();
        names.sort();
        paths.extend(names);
    }
    let probe = "import sys, tornado; print(sys.version_info[1] if tornado.version_info[0] >= 6 else '')";
    let mut found = Vec::new();
    for path in paths.into_iter().filter(|p| p.exists()) {
        let Ok(out) = Command::new(&path).args(["-c", probe]).output() else { continue };
        let minor = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>();
        if let Ok(minor) = minor {
            let label = path.parent().and_then(|p| p.parent()).map(|p| p.display().to_string()).unwrap_or_default();
            found.push(Python { label: format!("venv {label}"), minor, path });
        }
    }
    found
}

fn holder<'a>(report: &'a Value, path: &str) -> Option<&'a Value> {
    report["holders"].as_array()?.iter().find(|h| h["path"] == path)
}

/// (path, root kind, root name, the rest of the path, an item type, lowest rate per second)
const LEAKS: [(&str, &str, &str, &str, &str, f64); 7] = [
    ("asyncio event loop → _scheduled", "event loop", "asyncio event loop", "_scheduled", "TimerHandle", 15.0),
    ("task audit_consumer() → seen", "task", "task audit_consumer()", "seen", "tuple", 15.0),
    (
        "main() → app.settings[\"bus\"].subscribers",
        "task",
        "main()",
        "app.settings[\"bus\"].subscribers",
        "Listener",
        15.0,
    ),
    ("main() → app.error_log", "task", "main()", "app.error_log", "tuple", 4.0),
    ("main() → workers[1].backlog", "task", "main()", "workers[1].backlog", "tuple", 15.0),
    ("main() → flush_hook.func.__self__.pending", "task", "main()", "flush_hook.func.__self__.pending", "int", 15.0),
    (
        "main() → last_error.__traceback__.tb_frame → journal",
        "task",
        "main()",
        "last_error.__traceback__.tb_frame → journal",
        "tuple",
        15.0,
    ),
];

fn check(python: &Python, report: &Value) {
    let name = &python.label;
    let all = &report["holders"];
    for (path, kind, root, rest, item, rate) in LEAKS {
        let h = holder(report, path).unwrap_or_else(|| panic!("{name}: {path} not found; holders: {all:#}"));
        assert_eq!(h["verdict"], "leak", "{name}: {path}: {h:#}");
        let growth = h["growth_per_s"].as_f64().unwrap();
        assert!(growth >= rate, "{name}: {path} grows at least {rate}/s, saw {growth}");
        assert_eq!(h["root"]["kind"], kind, "{name}: {path}: {h:#}");
        assert_eq!(h["root"]["name"], root, "{name}: {path}: {h:#}");
        assert_eq!(h["root"]["rest"], rest, "{name}: {path}: {h:#}");
        assert!(h["item_types"][item].as_u64().unwrap_or(0) > 0, "{name}: {path} holds {item}: {h:#}");
    }
    // Controls: the capped deque and LRU, the cleared registry and the start-up imports are
    // read (the deque as a task's local) but never called leaks. The only other leak allowed is
    // asyncio's set of live tasks, which really grows: the kept tracebacks hold the requests'
    // frames, and through them their tasks.
    // (Stable holders are listed only the first few, so the deque may not be in the report.)
    if let Some(recent) = holder(report, "task recent_window() → recent") {
        assert_eq!(recent["len"].as_u64(), Some(100), "{name}: {recent:#}");
    }
    let known: Vec<&str> = LEAKS.iter().map(|l| l.0).collect();
    for h in all.as_array().unwrap() {
        let path = h["path"].as_str().unwrap();
        if h["verdict"] == "leak" && !known.contains(&path) {
            let tasks_set = path.ends_with("_all_tasks.data") || path.ends_with("_scheduled_tasks.data");
            assert!(tasks_set, "{name}: {path} is not a leak: {h:#}");
        }
        if ["recent", "lru", "sys.modules"].iter().any(|c| path.contains(c)) {
            assert!(!["leak", "growing"].contains(&h["verdict"].as_str().unwrap()), "{name}: control {path}: {h:#}");
        }
        // The registry's sawtooth, sampled every other second, can read as `growing` (not yet
        // conclusive) for a while; it must never be a leak.
        if path.contains("registry") {
            assert_ne!(h["verdict"], "leak", "{name}: control {path}: {h:#}");
        }
    }
    let scan = &report["holders_scan"];
    assert!(scan["scans"].as_u64().unwrap() >= 6, "{name}: scans {scan}");
    assert!(scan["mean_scan_s"].as_f64().unwrap() < 0.5, "{name}: {scan}");
}

#[test]
fn leaks_held_by_frames_tasks_and_the_event_loop_are_named_on_every_cpython() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    let venvs = tornado_venvs();
    for minor in 10..=15 {
        let of_minor: Vec<&Python> = venvs.iter().filter(|p| p.minor == minor).collect();
        if of_minor.is_empty() {
            println!("skipped: no CPython 3.{minor}");
        }
        for python in of_minor {
            let t0 = Instant::now();
            let args = ["-d", "25s", "-i", "1s", "-q", "--holders-only", "--show-target-strings"];
            let report = record_ready_fixture(python, FIXTURE, &[], &args);
            check(python, &report);
            let scan = &report["holders_scan"];
            println!(
                "{}: {:.0} s, holders scan {:.1} ms mean over {} objects, census {:.1} ms",
                python.label,
                t0.elapsed().as_secs_f64(),
                scan["mean_scan_s"].as_f64().unwrap_or(0.0) * 1e3,
                scan["objects_per_scan"],
                report["census_scan"]["mean_scan_s"].as_f64().unwrap_or(0.0) * 1e3
            );
        }
    }
    assert_no_leftover_probes();
}
