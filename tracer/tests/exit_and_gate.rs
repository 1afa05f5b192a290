//! Programs that end: the final view is taken when the interpreter starts finalizing (before
//! module teardown frees everything), and `--fail-on-leak` turns a leak into a failing step.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn venv_python() -> Option<String> {
    let p = std::env::var("TRACER_VENV_PYTHON")
        .unwrap_or_else(|_| format!("{}/../target/pyenv-venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let ok = Command::new(&p)
        .args(["-c", "import pytest"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("skipped: no venv with pytest (run `cargo xtask setup`)");
    }
    ok.then_some(p)
}

fn read_report(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written")).expect("JSON")
}

fn kept_count(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("kept "))
        .and_then(|n| n.trim().parse().ok())
        .expect("fixture printed its count")
}

fn assert_exit_leak_found(report: &Value, kept: u64, label: &str) {
    assert_eq!(report["final_view"], "finalization", "{label}: the view before module teardown");
    let line = line_of("exit_leak.py", "KEPT[COUNT] = bytearray(4096)");
    let at = suspects_at(report, "remember", "exit_leak.py", line);
    assert_eq!(sum(&at, "outstanding_bytes"), kept * 4097, "{label}: bytes kept at exit; {report:#}");
    assert!(
        at.iter().any(|s| s["verdict"] == "leak"),
        "{label}: verdict leak: {:#}",
        at.first().map(|s| &s["reason"]).unwrap_or(&Value::Null)
    );
}

#[test]
fn leak_in_a_script_that_exits_normally_is_reported() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    for python in pythons_of(11).into_iter().chain(pythons_of(13)).chain(pythons_of(14)) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r.json");
        let script = fixture("exit_leak.py");
        let (code, stdout, stderr) = run_tracer(&[
            "record",
            "-i",
            "500ms",
            "-q",
            "-o",
            out.to_str().unwrap(),
            "--",
            python.path.to_str().unwrap(),
            script.to_str().unwrap(),
            "10",
        ]);
        assert_eq!(code, 0, "{}: {stderr}", python.label);
        assert_exit_leak_found(&read_report(&out), kept_count(&stdout), &python.label);
    }
    assert_no_leftover_probes();
}

#[test]
fn attached_target_that_exits_normally_keeps_its_final_view() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    for python in pythons_of(11).into_iter().take(1) {
        let child =
            Command::new(&python.path).arg(fixture("exit_leak.py")).arg("10").stdout(Stdio::piped()).spawn().unwrap();
        let pid = child.id().to_string();
        let mut tracer = Tracer::start(&["-p", &pid, "-i", "500ms", "-q"]);
        tracer.wait_attached();
        let out = child.wait_with_output().unwrap();
        let (code, report) = tracer.finish();
        assert_eq!(code, 0);
        let kept = kept_count(&String::from_utf8_lossy(&out.stdout));
        // Attached after the start: the first blocks may predate the probes.
        let line = line_of("exit_leak.py", "KEPT[COUNT] = bytearray(4096)");
        let at = suspects_at(&report, "remember", "exit_leak.py", line);
        assert_eq!(report["final_view"], "finalization");
        let seen = sum(&at, "outstanding_count");
        assert!(seen * 10 >= kept * 8 && seen <= kept, "{}: saw {seen} of {kept}", python.label);
        assert_eq!(sum(&at, "outstanding_bytes"), seen * 4097);
    }
    assert_no_leftover_probes();
}

#[test]
fn fail_on_leak_gates_a_pytest_suite() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let Some(python) = venv_python() else { return };
    let _g = serial();
    let run = |suite: &str| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r.json");
        let path = fixture(suite);
        let (code, _stdout, stderr) = run_tracer(&[
            "record",
            "--fail-on-leak",
            "-i",
            "500ms",
            "-q",
            "-o",
            out.to_str().unwrap(),
            "--",
            &python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            path.to_str().unwrap(),
        ]);
        (code, stderr, read_report(&out))
    };
    let (code, stderr, report) = run("pytest_leaky");
    assert_eq!(code, 3, "a leaking suite fails the gate: {stderr}");
    assert!(stderr.contains("leak: pid ") && stderr.contains("run_case ("), "the gate names the line: {stderr}");
    let line = line_of("pytest_leaky/test_leaky.py", "CACHE.append(bytearray(200_000))");
    let at = suspects_at(&report, "run_case", "test_leaky.py", line);
    assert_eq!(at.len(), 1, "the 20 call paths are one suspect");
    assert_eq!(at[0]["verdict"], "leak");
    assert_eq!(at[0]["outstanding_bytes"].as_u64(), Some(20 * 200_001));
    let (code, stderr, _) = run("pytest_clean");
    assert_eq!(code, 0, "a clean suite passes the gate: {stderr}");
    assert_no_leftover_probes();
}

#[test]
fn follow_forks_traces_a_multiprocessing_worker_in_its_own_section() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    for python in pythons_of(11).into_iter().take(1).chain(pythons_of(13)) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r.json");
        let script = fixture("mp_leak.py");
        let (code, stdout, stderr) = run_tracer(&[
            "record",
            "--follow-forks",
            "-i",
            "500ms",
            "-q",
            "-o",
            out.to_str().unwrap(),
            "--",
            python.path.to_str().unwrap(),
            script.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{}: {stderr}", python.label);
        assert!(stdout.contains("worker kept 100"), "{stdout}");
        let multi = read_report(&out);
        let processes = multi["processes"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: a section per process: {multi:#}", python.label));
        assert_eq!(processes.len(), 2, "{}: parent and worker", python.label);
        let line = line_of("mp_leak.py", "KEPT[i] = bytearray(6000)");
        let parent = &processes[0];
        let worker = &processes[1];
        assert_ne!(parent["target"]["pid"], worker["target"]["pid"]);
        assert_eq!(
            sum(&suspects_at(parent, "worker", "mp_leak.py", line), "outstanding_bytes"),
            0,
            "{}: the parent does not leak",
            python.label
        );
        // Only the blocks: on 3.13 a pymalloc arena (mmap) is also made on that line.
        let at: Vec<&Value> = suspects_at(worker, "worker", "mp_leak.py", line)
            .into_iter()
            .filter(|s| s["allocator"] != "mmap")
            .collect();
        assert_eq!(sum(&at, "outstanding_bytes"), 100 * 6001, "{}: the worker's leak: {worker:#}", python.label);
    }
    assert_no_leftover_probes();
}

/// Each process's section counts its own allocations, frees and losses (issue 21 item 6): the
/// parent makes 500 allocations from a stack deeper than 64 frames (each counts
/// `stack_truncated`), the child it forks 61. Counted for the session, both would show 561.
#[test]
fn follow_forks_counts_allocations_and_losses_per_process() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    let Some(python) = pythons_of(12).into_iter().chain(pythons_of(11)).next() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let script = fixture("fork_counts.py");
    let (code, stdout, stderr) = run_tracer(&[
        "record",
        "--follow-forks",
        "-i",
        "500ms",
        "-q",
        "-o",
        out.to_str().unwrap(),
        "--",
        python.path.to_str().unwrap(),
        script.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{}: {stderr}", python.label);
    assert!(stdout.contains("child kept 61") && stdout.contains("parent kept 500"), "{stdout}");
    let multi = read_report(&out);
    let processes = multi["processes"].as_array().unwrap_or_else(|| panic!("a section per process: {multi:#}"));
    assert_eq!(processes.len(), 2, "parent and child: {multi:#}");
    let (parent, child) = (&processes[0], &processes[1]);
    let line = line_of("fork_counts.py", "keep[i] = bytearray(5000)");
    let blocks = |r: &Value| -> u64 {
        let at: Vec<&Value> =
            suspects_at(r, "deep", "fork_counts.py", line).into_iter().filter(|s| s["allocator"] != "mmap").collect();
        sum(&at, "allocs")
    };
    let truncated = |r: &Value| r["totals"]["lost"]["stack_truncated"].as_u64().unwrap_or(0);
    let allocs = |r: &Value| r["totals"]["allocs"].as_u64().unwrap_or(0);
    println!(
        "{}: parent {} allocs, {} truncated; child {} allocs, {} truncated",
        python.label,
        allocs(parent),
        truncated(parent),
        allocs(child),
        truncated(child)
    );
    assert_eq!(blocks(parent), 500, "the parent's line: {parent:#}");
    assert_eq!(blocks(child), 61, "the child's line: {child:#}");
    assert!((61..=90).contains(&truncated(child)), "the child's own losses: {}", truncated(child));
    assert!(truncated(parent) >= 500, "the parent's own losses: {}", truncated(parent));
    assert!(
        allocs(child) >= 61 && allocs(child) < allocs(parent),
        "the child's own allocations: {} (parent {})",
        allocs(child),
        allocs(parent)
    );
    assert_no_leftover_probes();
}

#[test]
fn a_target_that_execs_ends_the_recording_cleanly() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    let Some(python) = pythons_of(11).into_iter().next() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let code_text = "import os, time\nkeep = [bytearray(3000) for _ in range(50)]\ntime.sleep(1)\nos.execv('/bin/sleep', ['sleep', '1'])\n";
    let (code, _stdout, stderr) = run_tracer(&[
        "record",
        "-i",
        "500ms",
        "-q",
        "-o",
        out.to_str().unwrap(),
        "--",
        python.path.to_str().unwrap(),
        "-c",
        code_text,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report = read_report(&out);
    assert_eq!(report["final_view"], "target_exited", "exec ends what was traced");
    let kept: u64 = report["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| innermost_python(s).is_some_and(|(f, _, l)| f == "<listcomp>" || (f == "<module>" && l == 2)))
        .map(|s| s["outstanding_count"].as_u64().unwrap())
        .sum();
    assert!(kept >= 50, "the allocations made before exec are reported: {report:#}");
    assert_no_leftover_probes();
}

/// Launch mode: the command's status is the tracer's (or 128 + the signal that killed it),
/// unless `--fail-on-leak` found a leak; the report and stderr say how it ended.
#[test]
fn launch_mode_returns_the_commands_status() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    let Some(python) = pythons_of(11).into_iter().next() else { return };
    let run = |command: &[&str], fail_on_leak: bool| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r.json");
        let mut args = vec!["record", "-i", "200ms", "-q", "-o", out.to_str().unwrap()];
        if fail_on_leak {
            args.push("--fail-on-leak");
        }
        args.extend(["--", python.path.to_str().unwrap()]);
        args.extend(command);
        let (code, _stdout, stderr) = run_tracer(&args);
        (code, stderr, read_report(&out))
    };
    let (code, stderr, report) = run(&["-c", "import sys; x = [bytearray(100) for _ in range(10)]; sys.exit(1)"], true);
    assert_eq!(code, 1, "a failing command fails the tracer: {stderr}");
    assert!(stderr.contains("tracer: the command exited with status 1"), "{stderr}");
    assert_eq!(report["command"], serde_json::json!({"ended": "exited", "status": 1}));

    let (code, stderr, report) = run(&["-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], false);
    assert_eq!(code, 128 + 11, "killed by SIGSEGV: {stderr}");
    assert!(stderr.contains("killed by SIGSEGV (signal 11"), "{stderr}");
    assert_eq!(report["command"]["ended"], "killed");
    assert_eq!(report["command"]["signal"], 11);

    let (code, stderr, report) = run(&["-c", "import sys; sys.exit(0)"], true);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["command"]["status"], 0);

    // A leak under --fail-on-leak decides over the command's own status.
    let script = fixture("exit_leak.py");
    let leaky = [script.to_str().unwrap(), "10", "2"];
    let (code, stderr, report) = run(&leaky, true);
    assert_eq!(code, 3, "the leak decides: {stderr}");
    assert!(stderr.contains("the command exited with status 2"), "{stderr}");
    assert_eq!(report["command"]["status"], 2);
    let (code, stderr, _) = run(&[script.to_str().unwrap(), "1", "2"], false);
    assert_eq!(code, 2, "without the gate the command's status: {stderr}");
    assert_no_leftover_probes();
}

/// A command the tracer refuses (not CPython) is ended before it runs, not left running
/// untraced; one still running when `-d` ends is said to be, and keeps running.
#[test]
fn a_refused_command_does_not_run_and_a_running_one_is_named() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let script = format!("sleep 1; touch {}", marker.display());
    let (code, _stdout, stderr) = run_tracer(&["record", "-q", "--", "/bin/sh", "-c", &script]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("was stopped before it ran"), "{stderr}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!marker.exists(), "the refused command ran on: {stderr}");

    let Some(python) = pythons_of(11).into_iter().next() else { return };
    let out = dir.path().join("r.json");
    let (code, _stdout, stderr) = run_tracer(&[
        "record",
        "-q",
        "-d",
        "1s",
        "-o",
        out.to_str().unwrap(),
        "--",
        python.path.to_str().unwrap(),
        "-c",
        "import time; time.sleep(30)",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report = read_report(&out);
    assert_eq!(report["command"]["ended"], "still_running", "{report:#}");
    let pid = report["command"]["pid"].as_u64().unwrap() as i32;
    assert!(stderr.contains(&format!("is still running (pid {pid})")), "{stderr}");
    // SAFETY: kill(2) on the child this test's tracer started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "it was still running");
    assert_no_leftover_probes();
}
