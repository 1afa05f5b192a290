//! The foundation, end to end on real CPython processes with real eBPF (root): exact bytes by
//! file:line on both 3.11 builds, PYTHONMALLOC=malloc, threads (with and without the GIL),
//! launch mode, the error cases, and no probe left behind.

mod common;

use common::*;
use serde_json::Value;

fn require_root() -> bool {
    if !is_root() {
        println!("skipped: not root (real eBPF tests need root)");
    }
    is_root()
}

/// Attaches with -p to the known-leaks fixture, lets it leak, stops the tracer with SIGINT.
fn trace_known_leaks(python: &Python, env: &[(&str, &str)]) -> Value {
    let mut fx = Fixture::start(python, "known_leaks.py", env);
    let pid = fx.pid().to_string();
    let mut tracer = Tracer::start(&["-p", &pid, "-i", "500ms", "-q", "--all-stacks"]);
    tracer.wait_attached();
    fx.trigger();
    fx.expect_line("done");
    std::thread::sleep(std::time::Duration::from_millis(700));
    tracer.interrupt();
    let (code, report) = tracer.finish();
    assert_eq!(code, 0, "tracer exit code");
    assert_eq!(report["final_view"], "interrupted");
    assert_eq!(report["target"]["pid"].as_u64(), Some(fx.pid() as u64));
    report
}

fn assert_exact_leaks(report: &Value, label: &str) {
    let small_line = line_of("known_leaks.py", "KEPT.append(bytearray(1000))");
    let big_line = line_of("known_leaks.py", "KEPT.append(bytearray(5000))");
    let churn_line = line_of("known_leaks.py", "buf = bytearray(3000)");
    let small = suspects_at(report, "leak_small", "known_leaks.py", small_line);
    let big = suspects_at(report, "leak_big", "known_leaks.py", big_line);
    assert_eq!(sum(&small, "outstanding_bytes"), 200 * 1001, "{label}: leak_small bytes; report: {report:#}");
    assert_eq!(sum(&small, "outstanding_count"), 200, "{label}: leak_small count");
    assert_eq!(sum(&big, "outstanding_bytes"), 100 * 5001, "{label}: leak_big bytes");
    assert_eq!(sum(&big, "outstanding_count"), 100, "{label}: leak_big count");
    let churn = suspects_at(report, "churn", "known_leaks.py", churn_line);
    assert_eq!(sum(&churn, "outstanding_bytes"), 0, "{label}: churn frees everything");
    assert!(sum(&churn, "allocs") >= 200, "{label}: churn allocations were seen");
    // The stack continues outwards: leak_small is called from main.
    let frames: Vec<&str> = small[0]["stack"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "python")
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert_eq!(&frames[..3], &["leak_small", "main", "<module>"], "{label}");
    assert_eq!(small[0]["stack"][0]["kind"], "native", "{label}: innermost is the native caller");
    for (name, value) in report["totals"]["lost"].as_object().unwrap() {
        if !name.starts_with("holders_") {
            assert_eq!(value.as_u64(), Some(0), "{label}: lost {name}");
        }
    }
}

#[test]
fn exact_bytes_by_line_on_pyenv_311() {
    if !require_root() {
        return;
    }
    let _g = serial();
    for python in pythons_of(11).into_iter().filter(|p| p.label.starts_with("pyenv")) {
        let report = trace_known_leaks(&python, &[]);
        assert_exact_leaks(&report, &python.label);
        assert_no_leftover_probes();
    }
}

#[test]
fn exact_bytes_by_line_on_debian_311_static_lto() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python_by_path("/usr/bin/python3.11") else { return };
    let report = trace_known_leaks(&python, &[]);
    assert_exact_leaks(&report, &python.label);
    assert_no_leftover_probes();
}

#[test]
fn pythonmalloc_malloc_counts_small_objects() {
    if !require_root() {
        return;
    }
    let _g = serial();
    for python in pythons_of(11) {
        let line = line_of("known_leaks.py", "KEPT.append(\"x\" * 90");
        let report = trace_known_leaks(&python, &[("PYTHONMALLOC", "malloc")]);
        let small = suspects_at(&report, "keep_small", "known_leaks.py", line);
        let count = sum(&small, "outstanding_count");
        assert!(count >= 300, "{}: 300 small strings kept, saw {count}", python.label);
        let bytes = sum(&small, "outstanding_bytes");
        assert!(
            (300 * 140..=300 * 400).contains(&bytes),
            "{}: {bytes} bytes for 300 strings of 100 chars",
            python.label
        );
        // Under pymalloc the same strings never reach libc.
        let report = trace_known_leaks(&python, &[]);
        let small = suspects_at(&report, "keep_small", "known_leaks.py", line);
        assert!(sum(&small, "outstanding_count") < 30, "{}: pymalloc hides small objects", python.label);
    }
    assert_no_leftover_probes();
}

#[test]
fn threads_get_their_own_stacks_with_and_without_the_gil() {
    if !require_root() {
        return;
    }
    let _g = serial();
    for python in pythons_of(11) {
        let mut fx = Fixture::start(&python, "threads.py", &[]);
        let pid = fx.pid().to_string();
        let mut tracer = Tracer::start(&["-p", &pid, "-i", "500ms", "-q", "--all-stacks"]);
        tracer.wait_attached();
        fx.trigger();
        fx.expect_line("done");
        std::thread::sleep(std::time::Duration::from_millis(600));
        tracer.interrupt();
        let (code, report) = tracer.finish();
        assert_eq!(code, 0);
        let a = suspects_at(&report, "worker_a", "threads.py", line_of("threads.py", "bytearray(7000)"));
        let b = suspects_at(&report, "worker_b", "threads.py", line_of("threads.py", "bytearray(9000)"));
        let n = suspects_at(&report, "native_worker", "threads.py", line_of("threads.py", "LIBC.malloc(7777)"));
        assert_eq!(sum(&a, "outstanding_bytes"), 50 * 7001, "{}: worker_a", python.label);
        assert_eq!(sum(&b, "outstanding_bytes"), 50 * 9001, "{}: worker_b", python.label);
        assert_eq!(sum(&n, "outstanding_bytes"), 50 * 7777, "{}: GIL released in ctypes", python.label);
        for s in report["suspects"].as_array().unwrap() {
            let Some((function, _, _)) = innermost_python(s) else { continue };
            let size_each = s["outstanding_bytes"].as_u64().unwrap() / s["outstanding_count"].as_u64().unwrap().max(1);
            for (f, size) in [("worker_a", 7001), ("worker_b", 9001), ("native_worker", 7777)] {
                if size_each == size {
                    assert_eq!(function, f, "{}: a {size}-byte block charged to the wrong thread", python.label);
                }
            }
        }
    }
    assert_no_leftover_probes();
}

#[test]
fn launch_mode_sees_startup_and_ends_with_the_child() {
    if !require_root() {
        return;
    }
    let _g = serial();
    for python in pythons_of(11).into_iter().take(1) {
        let script = fixture("two_leaks.py");
        let mut tracer =
            Tracer::start(&["-i", "500ms", "-q", "--", python.path.to_str().unwrap(), script.to_str().unwrap(), "3"]);
        tracer.wait_attached();
        let (code, report) = tracer.finish();
        assert_eq!(code, 0, "{}", tracer_stderr_hint());
        let view = report["final_view"].as_str().unwrap();
        assert!(view == "finalization" || view == "target_exited", "final view {view}");
        let small = suspects_at(&report, "leak_small", "two_leaks.py", line_of("two_leaks.py", "KEPT_SMALL.append"));
        assert!(sum(&small, "outstanding_count") >= 200, "{}: leak_small in launch mode: {report:#}", python.label);
        // Start-up (imports) was seen: something was allocated under <module> before main ran.
        let startup = report["suspects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| innermost_python(s).is_some_and(|(f, file, _)| file != "two_leaks.py" || f == "<module>"));
        assert!(startup, "start-up allocations recorded");
    }
    assert_no_leftover_probes();
}

fn tracer_stderr_hint() -> &'static str {
    "tracer failed; run it by hand to see stderr"
}

fn assert_user_error(args: &[&str], message: &str) {
    let (code, _out, err) = run_tracer(args);
    assert_ne!(code, 0, "{args:?} must fail");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("error: ") && l.contains(message)),
        "{args:?}: want error containing {message:?}, got:\n{err}"
    );
    assert!(lines.iter().any(|l| l.starts_with("hint: ")), "{args:?}: no hint line:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
}

#[test]
fn clear_errors_for_bad_targets() {
    if !require_root() {
        return;
    }
    let _g = serial();
    assert_user_error(&["record", "-p", "0"], "not a valid PID");
    assert_user_error(&["record", "-p", "-5"], "not a valid PID");
    assert_user_error(&["record", "-p", "4194303"], "no such process");
    assert_user_error(&["record"], "nothing to trace");
    // A kernel thread (kthreadd is PID 2 on Linux).
    assert_user_error(&["record", "-p", "2"], "kernel thread");
    // Not Python: a sleep process.
    let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    assert_user_error(&["record", "-p", &sleeper.id().to_string()], "not a CPython process");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    // Unsupported versions present on this machine.
    for (version, needle) in [("2.7", "not support"), ("3.9", "3.9 or older"), ("3.6", "not support")] {
        let dir = std::fs::read_dir("/root/.pyenv/versions").ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{version}."))))
        });
        let Some(dir) = dir else {
            println!("skipped: no CPython {version}");
            continue;
        };
        let mut old = std::process::Command::new(dir.join("bin/python"))
            .args(["-c", "import time; time.sleep(30)"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_user_error(&["record", "-p", &old.id().to_string()], needle);
        let _ = old.kill();
        let _ = old.wait();
    }
    // A zombie: a child that exited and was not reaped.
    let zombie = std::process::Command::new("true").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_user_error(&["record", "-p", &zombie.id().to_string()], "zombie");
    drop(zombie);
    assert_no_leftover_probes();
}

#[test]
fn not_root_is_a_clear_error() {
    if !require_root() {
        return;
    }
    // Drop to nobody for one run of the tracer.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(tracer_bin())
        .args(["record", "-p", "1"])
        .output();
    let Ok(out) = out else {
        println!("skipped: no setpriv");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("error: tracer needs root"), "{err}");
    assert!(err.contains("hint: "), "{err}");
}
