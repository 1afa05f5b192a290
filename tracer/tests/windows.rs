//! Probe windows (`--window`) on real CPython processes: a leak is found at its file:line with
//! its true growth rate, churn and a bounded cache are not called leaks although their frees
//! are mostly not seen, growth that stops opens no more windows under `--window auto`, and
//! every way a windowed recording ends leaves no probe behind.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const FIXTURE: &str = "windows_fixture.py";

fn require_root() -> bool {
    if !is_root() {
        println!("skipped: not root (real eBPF tests need root)");
    }
    is_root()
}

fn python311() -> Option<Python> {
    let p = pythons_of(11).into_iter().next();
    if p.is_none() {
        println!("skipped: no CPython 3.11");
    }
    p
}

/// Starts the fixture (with `env`), triggers it and records it with `args` for `secs`;
/// returns the report and what the fixture said it leaked (once it has finished).
fn record_fixture(python: &Python, env: &[(&str, &str)], args: &[&str], secs: u64) -> (Value, Value) {
    let mut fx = Fixture::start(python, FIXTURE, env);
    let pid = fx.pid().to_string();
    let duration = format!("{secs}s");
    let mut all = vec!["-p", pid.as_str(), "-d", duration.as_str(), "-i", "1s", "-q"];
    all.extend_from_slice(args);
    fx.trigger();
    fx.expect_line("ready");
    let mut tracer = Tracer::start(&all);
    tracer.wait_attached();
    let (code, report) = tracer.finish();
    assert_eq!(code, 0, "tracer exit code");
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let truth = loop {
        assert!(Instant::now() < deadline, "the fixture did not report");
        line.clear();
        let n = std::io::BufRead::read_line(fx.stdout(), &mut line).unwrap();
        assert!(n > 0, "the fixture ended early");
        if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
            break v;
        }
    };
    (report, truth)
}

fn verdicts_at(report: &Value, function: &str, needle: &str) -> Vec<(String, f64, u64)> {
    let line = line_of(FIXTURE, needle);
    suspects_at(report, function, FIXTURE, line)
        .iter()
        .map(|s| {
            (
                s["verdict"].as_str().unwrap_or("").to_string(),
                s["growth_bytes_per_s"].as_f64().unwrap_or(0.0),
                s["allocs"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The leak is `leak` at its line with its true rate (within 25%); churn (allocated and freed
/// at a high rate) is not a leak; the report states the windows and what was inferred.
#[test]
fn a_leak_is_found_at_its_line_with_its_rate_and_churn_is_not() {
    if !require_root() {
        return;
    }
    let Some(python) = python311() else { return };
    let _g = serial();
    let env = [("DURATION", "54"), ("CACHE_SIZE", "1000")];
    let (report, truth) = record_fixture(&python, &env, &["--window", "1s/5s"], 50);
    let w = &report["windows"];
    assert_eq!(w["mode"], "fixed", "{w}");
    assert!(w["opened"].as_u64().unwrap() >= 7, "{w}");
    assert!((w["recorded_share"].as_f64().unwrap() - 0.18).abs() < 1e-9, "{w}");
    assert!(w["inferred_frees"].as_u64().unwrap() > 0, "deaths between windows were inferred: {w}");

    let leak = verdicts_at(&report, "leak", "KEPT.append(bytearray(2000))");
    assert!(leak.iter().any(|(v, ..)| v == "leak"), "leak: {leak:?}\n{report:#}");
    let measured: f64 = leak.iter().filter(|(v, ..)| v == "leak").map(|(_, r, _)| r).sum();
    let true_rate = truth["bytes"].as_f64().unwrap() / truth["leak_s"].as_f64().unwrap();
    let error = measured / true_rate - 1.0;
    println!("leak rate: measured {measured:.0} B/s, true {true_rate:.0} B/s ({:+.1}%)", error * 100.0);
    assert!(error.abs() <= 0.25, "measured {measured:.0} B/s against a true {true_rate:.0} B/s");

    let churn = verdicts_at(&report, "churn", "buf = bytearray(3000)");
    assert!(churn.iter().map(|c| c.2).sum::<u64>() > 1000, "churn was seen: {churn:?}");
    assert!(churn.iter().all(|(v, ..)| v == "stable"), "churn: {churn:?}");
}

/// `--window auto`: windows open while the heap grows; when growth stops, periods go by
/// without a window and the line that grew is not a leak.
#[test]
fn growth_that_stops_is_not_a_leak_under_auto_windows() {
    if !require_root() {
        return;
    }
    let Some(python) = python311() else { return };
    let _g = serial();
    let env = [("DURATION", "40"), ("STOP_GROWING_AFTER", "10")];
    let (report, _) = record_fixture(&python, &env, &["--window", "auto:1s/3s"], 36);
    let w = &report["windows"];
    assert_eq!(w["mode"], "auto", "{w}");
    assert!(w["opened"].as_u64().unwrap() >= 1, "windows opened while the heap grew: {w}");
    assert!(w["skipped_no_growth"].as_u64().unwrap() >= 4, "no windows once growth stopped: {w}");
    let leak = verdicts_at(&report, "leak", "KEPT.append(bytearray(2000))");
    assert!(!leak.iter().any(|(v, ..)| v == "leak" || v == "growing"), "{leak:?}\n{report:#}");
}

/// `--window auto` on a steady process (churn and a full small cache, nothing kept): neither
/// its resident size nor its anonymous mappings (glibc's and pymalloc's arenas) rise, so no
/// window opens and its allocations are never trapped.
#[test]
fn a_steady_process_opens_no_window_under_auto() {
    if !require_root() {
        return;
    }
    let Some(python) = python311() else { return };
    let _g = serial();
    let env = [("DURATION", "16"), ("STOP_GROWING_AFTER", "0"), ("CACHE_SIZE", "10")];
    let (report, truth) = record_fixture(&python, &env, &["--window", "auto:1s/3s"], 13);
    assert_eq!(truth["kept"], 0, "the fixture kept nothing: {truth}");
    let w = &report["windows"];
    assert_eq!(w["mode"], "auto", "{w}");
    assert_eq!(w["opened"], 0, "a steady process opened a window: {w}");
    assert!(w["skipped_no_growth"].as_u64().unwrap() >= 3, "every period went without: {w}");
    let churn = verdicts_at(&report, "churn", "buf = bytearray(3000)");
    assert!(churn.is_empty(), "no allocation was trapped: {churn:?}");
}

/// Every way a windowed recording ends (inside a window, between windows, the target exiting)
/// leaves no probe behind, and between windows only the rare probes stay attached.
#[test]
fn windows_detach_on_every_exit_path() {
    if !require_root() {
        return;
    }
    let Some(python) = python311() else { return };
    let _g = serial();
    for (label, wait_ms, inside) in [("inside a window", 400, true), ("between windows", 1800, false)] {
        let mut fx = Fixture::start(&python, FIXTURE, &[("DURATION", "60")]);
        fx.trigger();
        fx.expect_line("ready");
        let pid = fx.pid().to_string();
        let mut tracer = Tracer::start(&["-p", &pid, "-i", "500ms", "-q", "--window", "1s/3s"]);
        tracer.wait_attached();
        std::thread::sleep(Duration::from_millis(wait_ms));
        let held = bpf_ids_held_by(tracer.child.id());
        let patched = patched_libc_functions(fx.pid());
        assert!(patched.contains(&"munmap".to_string()), "{label}: the rare probes stay: {patched:?}");
        assert_eq!(patched.contains(&"malloc".to_string()), inside, "{label}: {patched:?}");
        assert_eq!(patched.contains(&"free".to_string()), inside, "{label}: {patched:?}");
        tracer.interrupt();
        let (code, report) = tracer.finish();
        assert_eq!(code, 0, "{label}");
        assert_eq!(report["final_view"], "interrupted", "{label}");
        assert_released(&held, label);
        assert!(patched_libc_functions(fx.pid()).is_empty(), "{label}: no breakpoint left in the target");
    }
    // The target ends while the window schedule runs: the recording ends with it.
    let mut fx = Fixture::start(&python, FIXTURE, &[("DURATION", "60")]);
    fx.trigger();
    fx.expect_line("ready");
    let pid = fx.pid().to_string();
    let mut tracer = Tracer::start(&["-p", &pid, "-i", "500ms", "-q", "--window", "1s/2s"]);
    tracer.wait_attached();
    let held = bpf_ids_held_by(tracer.child.id());
    std::thread::sleep(Duration::from_millis(3500));
    drop(fx); // killed between windows
    let (code, report) = tracer.finish();
    assert_eq!(code, 0);
    assert_eq!(report["final_view"], "target_exited");
    assert_released(&held, "target ended");
    assert_no_leftover_probes();
}

/// A bounded cache whose evictions fall mostly between windows: not a leak. Its blocks are
/// reused size for size (ABA), which is not caught from outside; before `leaks` asked for 8
/// periods of growth and no turnover among window survivors (docs/probes.md), 1 run in 3 here
/// came out `leak`. Passed 4 of 4 runs since.
#[test]
fn a_bounded_cache_is_not_a_leak() {
    if !require_root() {
        return;
    }
    let Some(python) = python311() else { return };
    let _g = serial();
    let env = [("DURATION", "54"), ("CACHE_SIZE", "1000")];
    let (report, _) = record_fixture(&python, &env, &["--window", "1s/5s"], 50);
    let cache = verdicts_at(&report, "cache", "CACHE[key] = bytearray(3000 + key * 37 % 2000)");
    assert!(cache.iter().map(|c| c.2).sum::<u64>() > 500, "the cache was seen: {cache:?}");
    // Its evictions fall mostly between windows and their blocks are handed out again at once;
    // the chunks' state shows most of those deaths. It turns over within about a period, so
    // its recorded part rises within the first window or two and then goes up and down:
    // bounded or stable, never a leak.
    assert!(!cache.iter().any(|(v, ..)| v == "leak" || v == "growing"), "cache: {cache:?}\n{report:#}");
    assert!(cache.iter().all(|(v, ..)| v == "bounded" || v == "stable"), "cache: {cache:?}");
}
