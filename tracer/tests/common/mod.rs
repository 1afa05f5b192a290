//! Shared test harness: real CPython fixtures, the real tracer binary, real eBPF (root).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One tracer at a time: the machine has two cores and the tests compare timings loosely.
static SERIAL: Mutex<()> = Mutex::new(());

/// Held while a test runs: this process's lock, and a machine-wide `flock` so that test runs
/// of several checkouts (or a bench) never put two tracers on one libc at once.
pub struct Serial {
    _machine: std::fs::File,
    _local: MutexGuard<'static, ()>,
}

/// The lock file every tracer test run on this machine shares.
pub const MACHINE_LOCK: &str = "/tmp/tracer-tests.lock";

pub fn serial() -> Serial {
    let local = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(MACHINE_LOCK)
        .expect("open the machine-wide test lock");
    // Blocks until no other test run on this machine holds it; released when `file` closes.
    file.lock().expect("lock the machine-wide test lock");
    Serial { _machine: file, _local: local }
}

pub fn tracer_bin() -> PathBuf {
    std::env::var_os("TRACER_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tracer")))
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A CPython interpreter found on this machine.
#[derive(Debug, Clone)]
pub struct Python {
    pub label: String,
    pub minor: u32,
    pub path: PathBuf,
}

/// Every interpreter 3.10+ the machine has: pyenv's, Debian's /usr/bin/python3.X, and the
/// Debian-sid 3.14 and 3.15 that `cargo xtask test` fetches (TRACER_PY314, TRACER_PY315).
pub fn pythons() -> Vec<Python> {
    let mut found = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/root/.pyenv/versions") {
        let mut names: Vec<String> =
            dir.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for name in names {
            let minor: Option<u32> =
                name.strip_prefix("3.").and_then(|r| r.split('.').next()).and_then(|m| m.parse().ok());
            let path = PathBuf::from(format!("/root/.pyenv/versions/{name}/bin/python3"));
            if let Some(minor) = minor.filter(|m| *m >= 10) {
                if path.exists() {
                    found.push(Python { label: format!("pyenv {name}"), minor, path });
                }
            }
        }
    }
    for minor in 10..=15 {
        let path = PathBuf::from(format!("/usr/bin/python3.{minor}"));
        if path.exists() {
            found.push(Python { label: format!("Debian python3.{minor}"), minor, path });
        }
    }
    for minor in [14, 15] {
        if let Some(p) = std::env::var_os(format!("TRACER_PY3{minor}")).map(PathBuf::from).filter(|p| p.exists()) {
            found.push(Python { label: format!("Debian sid python3.{minor}"), minor, path: p });
        }
    }
    found
}

/// The interpreters of one minor version, or a "skipped: no CPython 3.X" line.
pub fn pythons_of(minor: u32) -> Vec<Python> {
    let v: Vec<Python> = pythons().into_iter().filter(|p| p.minor == minor).collect();
    if v.is_empty() {
        println!("skipped: no CPython 3.{minor}");
    }
    v
}

pub fn python_by_path(path: &str) -> Option<Python> {
    let p = pythons().into_iter().find(|p| p.path == Path::new(path));
    if p.is_none() {
        println!("skipped: no CPython at {path}");
    }
    p
}

/// A running fixture that waits for its trigger file.
pub struct Fixture {
    pub child: Child,
    pub trigger: PathBuf,
    stdout: BufReader<std::process::ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub fn start(python: &Python, script: &str, env: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let trigger = dir.path().join("go");
        let mut cmd = Command::new(&python.path);
        cmd.arg(fixture(script)).arg(&trigger).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start fixture");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut fx = Fixture { child, trigger, stdout, _dir: dir };
        fx.expect_line("waiting");
        fx
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn expect_line(&mut self, want: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "fixture ended before printing {want:?}");
            if line.trim() == want {
                return;
            }
        }
    }

    /// The fixture's standard output, to read what it prints.
    pub fn stdout(&mut self) -> &mut BufReader<std::process::ChildStdout> {
        &mut self.stdout
    }

    pub fn trigger(&mut self) {
        std::fs::write(&self.trigger, b"go").unwrap();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `tracer record`, started with the given arguments plus `-f json -o FILE`.
pub struct Tracer {
    pub child: Child,
    pub output: PathBuf,
    stderr: BufReader<ChildStderr>,
    pub stderr_text: String,
    _dir: tempfile::TempDir,
}

impl Tracer {
    pub fn start(args: &[&str]) -> Tracer {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("report.json");
        let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        let mut cmd = Command::new(tracer_bin());
        cmd.arg("record")
            .args(&args[..split])
            .arg("-o")
            .arg(&output)
            .args(&args[split..])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Tests stop it with SIGINT and SIGHUP: not ignored even when the tests run as a
        // background job or under nohup (the tracer keeps an inherited "ignore").
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start tracer");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        Tracer { child, output, stderr, stderr_text: String::new(), _dir: dir }
    }

    /// Waits for the "tracer: tracing pid" line; panics with what the tracer said otherwise.
    pub fn wait_attached(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stderr.read_line(&mut line).unwrap_or(0);
            self.stderr_text.push_str(&line);
            assert!(n > 0, "tracer ended before attaching: {}", self.stderr_text);
            if line.starts_with("tracer: tracing pid") {
                return;
            }
        }
    }

    pub fn interrupt(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Waits for the tracer to exit and returns (exit code, parsed report).
    pub fn finish(mut self) -> (i32, Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "tracer did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stderr, &mut rest);
        self.stderr_text.push_str(&rest);
        let text = std::fs::read_to_string(&self.output)
            .unwrap_or_else(|e| panic!("no report ({e}); tracer said: {}", self.stderr_text));
        let report: Value = serde_json::from_str(&text).expect("report is JSON");
        (status.code().unwrap_or(-1), report)
    }
}

/// Runs the tracer to completion with these arguments; returns (code, stdout, stderr).
pub fn run_tracer(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tracer_bin()).args(args).output().expect("run tracer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The innermost Python frame of a suspect: (function, file name, line).
pub fn innermost_python(suspect: &Value) -> Option<(String, String, u64)> {
    suspect["stack"].as_array()?.iter().find(|f| f["kind"] == "python").map(|f| {
        let file = f["file"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
        (f["function"].as_str().unwrap_or("").to_string(), file, f["line"].as_u64().unwrap_or(0))
    })
}

/// Suspects whose innermost Python frame is `function` at `file:line`.
pub fn suspects_at<'a>(report: &'a Value, function: &str, file: &str, line: u64) -> Vec<&'a Value> {
    report["suspects"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|s| innermost_python(s).is_some_and(|(f, fl, l)| f == function && fl == file && l == line))
                .collect()
        })
        .unwrap_or_default()
}

pub fn sum(suspects: &[&Value], field: &str) -> u64 {
    suspects.iter().map(|s| s[field].as_u64().unwrap_or(0)).sum()
}

/// The line number of the first line of `file` containing `needle` (so tests survive edits).
pub fn line_of(file: &str, needle: &str) -> u64 {
    let text = std::fs::read_to_string(fixture(file)).unwrap();
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("{needle} not in {file}"))
}

/// Our BPF programs still attached anywhere on the machine (by program name), per bpftool.
pub fn leftover_probes() -> Vec<String> {
    const OURS: [&str; 6] = ["malloc_enter", "malloc_exit", "free_enter", "mmap_enter", "calloc_enter", "py_finalize"];
    let mut left = Vec::new();
    for args in [["-j", "perf", "list"], ["-j", "link", "list"]] {
        let Ok(out) = Command::new("bpftool").args(args).output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let progs: Vec<u64> = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["prog_id"].as_u64())
            .collect();
        for id in progs {
            let Ok(out) = Command::new("bpftool").args(["-j", "prog", "show", "id", &id.to_string()]).output() else {
                continue;
            };
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if let Some(name) = v["name"].as_str() {
                if OURS.iter().any(|o| name.starts_with(&o[..o.len().min(15)])) {
                    left.push(format!("{} {name}", args[1]));
                }
            }
        }
    }
    left
}

/// Checks the whole machine for probes of ours; skipped while another tracer process runs
/// (developers share this machine; CI runs one tracer at a time).
pub fn assert_no_leftover_probes() {
    let others = Command::new("pgrep").args(["-x", "tracer"]).output().map(|o| !o.stdout.is_empty()).unwrap_or(false);
    if others {
        println!("leftover-probe check skipped: another tracer process is running");
        return;
    }
    let left = leftover_probes();
    assert!(left.is_empty(), "probes of ours still attached: {left:?}");
}

/// The BPF program and link IDs a process holds open (from /proc/PID/fdinfo).
pub fn bpf_ids_held_by(pid: u32) -> Vec<(String, u64)> {
    let mut ids = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return ids };
    for entry in dir.filter_map(|e| e.ok()) {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        for line in text.lines() {
            for key in ["prog_id", "link_id"] {
                if let Some(v) =
                    line.strip_prefix(key).and_then(|r| r.strip_prefix(':')).and_then(|v| v.trim().parse().ok())
                {
                    ids.push((key.to_string(), v));
                }
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

pub fn bpftool_ids(args: &[&str]) -> Vec<u64> {
    let Ok(out) = std::process::Command::new("bpftool").args(args).output() else { return Vec::new() };
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .collect()
}

/// Other `tracer` processes alive on the machine (engineers working in parallel).
pub fn other_tracers() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&p| {
                    p != me && std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "tracer")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// After our tracer exited: none of the programs or links it held exists any more, and when no
/// other tracer runs on the machine, no probe of ours is attached anywhere.
pub fn assert_released(held: &[(String, u64)], label: &str) {
    assert!(held.iter().any(|(k, _)| k == "prog_id"), "{label}: saw no BPF programs held by the tracer");
    // The kernel frees programs after a grace period once their last descriptor is closed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let progs = bpftool_ids(&["-j", "prog", "show"]);
        let links = bpftool_ids(&["-j", "link", "list"]);
        let left: Vec<&(String, u64)> = held
            .iter()
            .filter(|(k, id)| if k == "prog_id" { progs.contains(id) } else { links.contains(id) })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{label}: BPF objects of the finished tracer still exist: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let others = other_tracers();
    if others.is_empty() {
        assert_no_leftover_probes();
    } else {
        println!(
            "note: other tracer processes {others:?} are running; checked only this tracer's own programs and links"
        );
    }
}

/// The first byte of `malloc` in the process's own libc, read from its memory: 0xCC (int3)
/// while a uprobe is installed in that process.
pub fn malloc_first_byte(pid: u32) -> u8 {
    let bytes = libc_function_bytes(pid, &["malloc"], 1);
    let (_, _, in_memory) = bytes.first().unwrap_or_else(|| panic!("malloc not in the libc of {pid}"));
    in_memory[0]
}

/// For each of `names` that the process's libc exports: (name, its first `len` bytes in the libc
/// file, the same bytes in the process's memory).
fn libc_function_bytes(pid: u32, names: &[&str], len: usize) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))
        .expect("libc mapped")
        .to_string();
    let data = std::fs::read(format!("/proc/{pid}/root{libc}")).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut found = Vec::new();
    for &name in names {
        let Some(vaddr) = file.dynamic_symbols().find(|s| s.name().is_ok_and(|n| n == name)).map(|s| s.address())
        else {
            continue;
        };
        let seg = file.segments().find(|s| vaddr >= s.address() && vaddr < s.address() + s.size()).unwrap();
        let file_off = vaddr - seg.address() + seg.file_range().0;
        let on_disk = data[file_off as usize..file_off as usize + len].to_vec();
        let mapping = maps.lines().filter(|l| l.ends_with(&libc)).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (start, end) = f[0].split_once('-')?;
            let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
            let off = u64::from_str_radix(f[2], 16).ok()?;
            (file_off >= off && file_off < off + (end - start)).then_some(start + file_off - off)
        });
        let addr = mapping.unwrap_or_else(|| panic!("{name} not mapped in {pid}"));
        let mut in_memory = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&mem, &mut in_memory, addr).unwrap();
        found.push((name.to_string(), on_disk, in_memory));
    }
    found
}

/// Every libc function the tracer probes (tracer/src/probes/plan.rs).
const PROBED: [&str; 12] = [
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "mmap",
    "munmap",
    "free",
];

/// Bytes compared at the start of each probed function (free's probe sits at free+3).
const PROBE_WINDOW: usize = 16;

/// The first PROBE_WINDOW bytes of every probed libc function, read from the process's memory
/// and from its libc file: the names whose bytes differ (a uprobe's int3 is in them).
pub fn patched_libc_functions(pid: u32) -> Vec<String> {
    let bytes = libc_function_bytes(pid, &PROBED, PROBE_WINDOW);
    bytes.into_iter().filter(|(_, on_disk, in_memory)| on_disk != in_memory).map(|(name, _, _)| name).collect()
}

/// Starts `script` (with the argument `60`) under `python` with `env`, waits for its "ready"
/// line, traces it with `tracer record -p PID ARGS` and returns the JSON report; the fixture is
/// ended afterwards.
pub fn record_ready_fixture(python: &Python, script: &str, env: &[(&str, &str)], args: &[&str]) -> Value {
    let mut cmd = Command::new(&python.path);
    cmd.arg(fixture(script)).arg("60").stdout(Stdio::piped());
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "ready" {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "fixture died");
    }
    let pid = child.id().to_string();
    let mut all = vec!["-p", pid.as_str()];
    all.extend_from_slice(args);
    let mut tracer = Tracer::start(&all);
    tracer.wait_attached();
    let (code, report) = tracer.finish();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 0);
    report
}
