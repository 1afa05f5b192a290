//! Host mode (`record --all`): every CPython process, started before or after the tracer, in
//! its own section; processes that are not CPython never get a probe (their malloc has no
//! breakpoint in it).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_leaker(python: &Python, seconds: &str) -> Killed {
    Killed(Command::new(&python.path).arg(fixture("two_leaks.py")).arg(seconds).stdout(Stdio::null()).spawn().unwrap())
}

#[test]
fn every_cpython_process_in_its_own_section_and_nothing_else_probed() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let _g = serial();
    let all = pythons();
    let pick = |minor: u32| all.iter().find(|p| p.minor == minor).cloned();
    let first = pick(11).expect("pyenv 3.11.7 is always there");
    let second = pick(12).or_else(|| pick(10)).unwrap_or_else(|| first.clone());
    let later = pick(13).or_else(|| pick(14)).unwrap_or_else(|| first.clone());
    let a = start_leaker(&first, "40");
    let b = start_leaker(&second, "40");
    let native = Killed(
        Command::new("perl")
            .args(["-e", "my $end = time + 40; while (time < $end) { my $x = 'a' x 100000; }"])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut tracer = Tracer::start(&["--all", "--match", "two_leaks|perl -e", "-d", "16s", "-i", "1s", "-q"]);
    tracer.wait_attached();
    std::thread::sleep(Duration::from_secs(2));
    let c = start_leaker(&later, "30");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        malloc_first_byte(native.0.id()),
        malloc_first_byte(std::process::id()),
        "the non-Python process has no probe in its malloc"
    );
    assert_eq!(malloc_first_byte(a.0.id()), 0xcc, "a traced process has its probe");
    let (code, report) = tracer.finish();
    assert_eq!(code, 0, "{report:#}");
    let processes = report["processes"].as_array().expect("one section per process");
    let section = |pid: u32| processes.iter().find(|p| p["target"]["pid"].as_u64() == Some(pid as u64));
    assert!(section(native.0.id()).is_none(), "the non-Python process is not traced");
    let line = line_of("two_leaks.py", "KEPT_SMALL.append");
    for (proc_, python, label) in
        [(&a, &first, "started before"), (&b, &second, "started before"), (&c, &later, "started after")]
    {
        let s: &Value = section(proc_.0.id())
            .unwrap_or_else(|| panic!("{label}: {} (pid {}) traced: {report:#}", python.label, proc_.0.id()));
        assert_eq!(s["target"]["python"].as_str().unwrap().split('.').nth(1).unwrap(), python.minor.to_string());
        // The blocks (malloc); the list holding them grows by realloc on the same line.
        let leak: Vec<&Value> = suspects_at(s, "leak_small", "two_leaks.py", line)
            .into_iter()
            .filter(|l| l["allocator"] == "malloc")
            .collect();
        assert!(sum(&leak, "outstanding_count") > 20, "{label} {}: leak_small under its own pid", python.label);
        assert!(leak.iter().all(|l| l["outstanding_bytes"].as_u64().unwrap() % 1001 == 0), "{label}: 1001-byte blocks");
    }
    drop((a, b, c, native));
    assert_no_leftover_probes();
}

#[test]
fn match_without_all_is_a_clear_error() {
    let (code, _, err) = run_tracer(&["record", "--match", "x", "-p", "1"]);
    assert_ne!(code, 0);
    assert!(err.contains("error:"), "{err}");
}
