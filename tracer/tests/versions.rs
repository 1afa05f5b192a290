//! Every CPython 3.10–3.15 on the machine, with real eBPF (root): one fixture with a leak in
//! each kind of Python frame (function, method, comprehension, lambda, generator, coroutine under
//! asyncio, threading.Thread, run_in_executor, allocation on the first body line), each of its
//! own size, and for each interpreter the innermost Python frame's function and line and the
//! exact outstanding bytes of every site. Also: a target inside its own PID and mount namespace
//! (a container), addressed by its host PID.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const FIXTURE: &str = "versions_fixture.py";
/// Blocks kept per site (N in the fixture).
const N: u64 = 20;

fn require_root() -> bool {
    if !is_root() {
        println!("skipped: not root (real eBPF tests need root)");
    }
    is_root()
}

/// One leak site of the fixture.
struct Site {
    label: &'static str,
    /// The innermost Python frame's function as 3.11+ names it (co_qualname).
    qualname: &'static str,
    /// The same on 3.10, which has no co_qualname (co_name).
    name_310: &'static str,
    /// The text of the allocating line in the fixture.
    needle: &'static str,
    /// malloc size of each block up to 3.14 (bytearray(n) asks n+1; see `Site::size`).
    size: u64,
}

const SITES: [Site; 9] = [
    Site {
        label: "function",
        qualname: "plain_leak",
        name_310: "plain_leak",
        needle: "PLAIN[k] = bytearray(1100)",
        size: 1101,
    },
    Site {
        label: "method",
        qualname: "Klass.method",
        name_310: "method",
        needle: "METHOD[i] = bytearray(1200)",
        size: 1201,
    },
    Site {
        label: "list comprehension",
        qualname: "comp_leak.<locals>.<listcomp>",
        name_310: "<listcomp>",
        needle: "[bytearray(1300) for",
        size: 1301,
    },
    Site {
        label: "lambda",
        qualname: "<lambda>",
        name_310: "<lambda>",
        needle: "LAMBDA = lambda: bytearray(1400)",
        size: 1401,
    },
    Site {
        label: "generator",
        qualname: "gen_leak",
        name_310: "gen_leak",
        needle: "yield bytearray(1500)",
        size: 1501,
    },
    Site {
        label: "coroutine",
        qualname: "coro_leak",
        name_310: "coro_leak",
        needle: "CORO[i] = bytearray(1600)",
        size: 1601,
    },
    Site {
        label: "thread",
        qualname: "thread_leak",
        name_310: "thread_leak",
        needle: "THREAD[i] = bytearray(1700)",
        size: 1701,
    },
    Site {
        label: "executor",
        qualname: "executor_leak",
        name_310: "executor_leak",
        needle: "EXECUTOR[i] = bytearray(1800)",
        size: 1801,
    },
    Site {
        label: "first body line",
        qualname: "first_line_leak",
        name_310: "first_line_leak",
        needle: "FIRST[i] = bytearray(1900)",
        size: 1901,
    },
];

impl Site {
    /// The malloc size of each block on this interpreter. From 3.15 a bytearray keeps its bytes
    /// in a bytes object (`ob_bytes_object`), allocated with its 32-byte header: n+33.
    fn size(&self, minor: u32) -> u64 {
        if minor >= 15 {
            self.size + 32
        } else {
            self.size
        }
    }

    /// The innermost Python function this interpreter reports for the site. From 3.12 on,
    /// comprehensions are inlined into the function that contains them (PEP 709).
    fn function(&self, minor: u32) -> &'static str {
        if self.label == "list comprehension" && minor >= 12 {
            return "comp_leak";
        }
        if minor == 10 {
            self.name_310
        } else {
            self.qualname
        }
    }
}

/// Python frames of a stack, innermost first: (function, file as reported, line).
fn python_frames(suspect: &Value) -> Vec<(String, String, u64)> {
    suspect["stack"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|f| f["kind"] == "python")
                .map(|f| {
                    (
                        f["function"].as_str().unwrap_or("").to_string(),
                        f["file"].as_str().unwrap_or("").to_string(),
                        f["line"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Suspects at the site whose blocks all have the site's size (list growth and other
/// allocations on the same line have other sizes).
fn site_suspects<'a>(report: &'a Value, function: &str, file: &str, line: u64, size: u64) -> Vec<&'a Value> {
    suspects_at(report, function, file, line)
        .into_iter()
        .filter(|s| {
            let count = s["outstanding_count"].as_u64().unwrap_or(0);
            count > 0 && s["outstanding_bytes"].as_u64() == Some(count * size)
        })
        .collect()
}

/// Suspects anywhere whose blocks have this size: where the site's bytes went when it fails.
fn by_size(report: &Value, size: u64) -> Vec<String> {
    report["suspects"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|s| {
                    let count = s["outstanding_count"].as_u64().unwrap_or(0);
                    count > 0 && s["outstanding_bytes"].as_u64() == Some(count * size)
                })
                .map(|s| {
                    let frames: Vec<String> = python_frames(s)
                        .iter()
                        .take(3)
                        .map(|(f, file, l)| format!("{f} ({}:{l})", file.rsplit('/').next().unwrap_or("")))
                        .collect();
                    format!("{} bytes in {}: {}", s["outstanding_bytes"], s["outstanding_count"], frames.join(" <- "))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Attaches with -p to the fixture, triggers it, waits for "done", stops the tracer with SIGINT;
/// checks that the tracer left nothing attached.
fn trace_fixture(python: &Python) -> Value {
    let mut fx = Fixture::start(python, FIXTURE, &[]);
    let pid = fx.pid().to_string();
    let mut tracer = Tracer::start(&["-p", &pid, "-i", "500ms", "-q", "--all-stacks"]);
    tracer.wait_attached();
    let held = bpf_ids_held_by(tracer.child.id());
    fx.trigger();
    fx.expect_line("done");
    std::thread::sleep(Duration::from_millis(700));
    tracer.interrupt();
    let (code, report) = tracer.finish();
    assert_eq!(code, 0, "{}: tracer exit code", python.label);
    assert_eq!(report["final_view"], "interrupted", "{}", python.label);
    assert_eq!(report["target"]["pid"].as_u64(), Some(fx.pid() as u64), "{}", python.label);
    assert_released(&held, &python.label);
    report
}

/// Checks every site of one report; returns the failures (one line each) and prints a table.
fn check_sites(report: &Value, python: &Python) -> Vec<String> {
    let mut failures = Vec::new();
    let minor = python.minor;
    for site in &SITES {
        let function = site.function(minor);
        let line = line_of(FIXTURE, site.needle);
        let size = site.size(minor);
        let found = site_suspects(report, function, FIXTURE, line, size);
        let bytes = sum(&found, "outstanding_bytes");
        let count = sum(&found, "outstanding_count");
        let mut problems = Vec::new();
        if bytes != N * size || count != N {
            problems.push(format!(
                "want {} bytes in {N} blocks at {function} ({FIXTURE}:{line}), got {bytes} in {count}; blocks of {} bytes went to: {:?}",
                N * size,
                size,
                by_size(report, size)
            ));
        }
        if let Some(first) = found.first() {
            let frames = python_frames(first);
            let names: Vec<&str> = frames.iter().map(|(f, _, _)| f.as_str()).collect();
            let ends_with = |f: &str, suffix: &str| f == suffix || f.ends_with(&format!(".{suffix}"));
            let outer_ok = match site.label {
                // Resumed by the event loop: Handle._run in asyncio/events.py, then the loop.
                "coroutine" => {
                    frames.iter().skip(1).any(|(_, file, _)| file.contains("/asyncio/"))
                        && names.iter().any(|f| ends_with(f, "_run"))
                        && names.iter().any(|f| ends_with(f, "run_until_complete"))
                }
                "executor" => names.contains(&"_worker") && names.iter().any(|f| ends_with(f, "_bootstrap")),
                "thread" => {
                    names.iter().any(|f| ends_with(f, "run")) && names.iter().any(|f| ends_with(f, "_bootstrap"))
                }
                "list comprehension" if minor < 12 => {
                    names.get(1) == Some(&"comp_leak") && names.get(2) == Some(&"main")
                }
                _ => names.get(1) == Some(&"main") && names.last() == Some(&"<module>"),
            };
            if !outer_ok {
                problems.push(format!("outer frames wrong: {names:?}"));
            }
        }
        let verdict = if problems.is_empty() { "pass" } else { "FAIL" };
        let native = found.first().map(|s| s["stack"][0].clone()).unwrap_or(Value::Null);
        let native = if native["kind"] == "native" {
            format!("{} [{}]", native["function"].as_str().unwrap_or(""), native["module"].as_str().unwrap_or(""))
        } else {
            "(no native frame)".into()
        };
        println!("{:<24} {:<20} {verdict}  native: {native}", python.label, site.label);
        if let Some(first) = found.first() {
            let chain: Vec<String> = python_frames(first)
                .iter()
                .map(|(f, file, l)| format!("{f} ({}:{l})", file.rsplit('/').next().unwrap_or("")))
                .collect();
            println!("    {}", chain.join(" <- "));
        }
        for p in problems {
            failures.push(format!("{} / {}: {p}", python.label, site.label));
        }
    }
    // Every loss on the allocation path must be zero. The holders view's own counters (reads of
    // containers that changed while being read) say nothing about allocation stacks: shown only.
    for (name, value) in report["totals"]["lost"].as_object().cloned().unwrap_or_default() {
        if name.starts_with("holders_") {
            if value.as_u64() != Some(0) {
                println!("note: {}: {name} = {value} (holders view, not asserted here)", python.label);
            }
        } else if value.as_u64() != Some(0) {
            failures.push(format!("{}: lost {name} = {value}", python.label));
        }
    }
    assert!(
        report["totals"]["lost"].as_object().is_some_and(|m| m.keys().any(|k| !k.starts_with("holders_"))),
        "{}: no loss counters in the report",
        python.label
    );
    failures
}

fn every_site_on(minor: u32, filter: impl Fn(&Python) -> bool) {
    if !require_root() {
        return;
    }
    let _g = serial();
    let mut failures = Vec::new();
    for python in pythons_of(minor).into_iter().filter(|p| filter(p)) {
        let report = trace_fixture(&python);
        failures.extend(check_sites(&report, &python));
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_site_on_310() {
    every_site_on(10, |_| true);
}

#[test]
fn every_site_on_pyenv_311() {
    every_site_on(11, |p| p.label.starts_with("pyenv"));
}

#[test]
fn every_site_on_debian_311_static_lto() {
    if python_by_path("/usr/bin/python3.11").is_none() {
        return;
    }
    every_site_on(11, |p| p.path == std::path::Path::new("/usr/bin/python3.11"));
}

#[test]
fn every_site_on_312() {
    every_site_on(12, |_| true);
}

#[test]
fn every_site_on_313() {
    every_site_on(13, |_| true);
}

#[test]
fn every_site_on_314() {
    every_site_on(14, |_| true);
}

#[test]
fn every_site_on_315() {
    every_site_on(15, |_| true);
}

/// A root tree under /tmp with the host's /usr and /dev and one pyenv interpreter bind-mounted
/// at /opt/py (a path the host does not have), and the fixture at /app; the fixture runs inside
/// `unshare --pid --mount --fork` + chroot, so it is PID 1 of its own PID namespace and its
/// files are reachable from the host only through /proc/PID (root, map_files). The mounts live
/// only in the new mount namespace and vanish with it.
struct Container {
    unshare: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    root: std::path::PathBuf,
    /// The fixture's PID as the host sees it.
    host_pid: u32,
}

/// Directories made in the root tree, children before parents (the order they are removed in).
const CONTAINER_DIRS: [&str; 7] = ["usr", "opt/py", "opt", "proc", "tmp", "dev", "app"];

impl Container {
    fn start(python_tree: &std::path::Path) -> Container {
        use std::io::BufRead;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let root = std::env::temp_dir().join(format!("tracer-container-{}-{nanos}", std::process::id()));
        for d in CONTAINER_DIRS {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for (link, to) in [("lib", "usr/lib"), ("lib64", "usr/lib64"), ("bin", "usr/bin")] {
            std::os::unix::fs::symlink(to, root.join(link)).unwrap();
        }
        std::fs::copy(fixture(FIXTURE), root.join("app").join(FIXTURE)).unwrap();
        // pyenv's RUNPATH names the host path of libpython, absent in the container.
        let script = r#"set -e
mount --bind /usr "$1/usr"
mount --bind "$2" "$1/opt/py"
mount --bind /dev "$1/dev"
mount -t proc proc "$1/proc"
exec chroot "$1" /usr/bin/env LD_LIBRARY_PATH=/opt/py/lib /opt/py/bin/python3 "/app/$3" /tmp/go"#;
        let mut unshare = std::process::Command::new("unshare")
            .args(["--pid", "--mount", "--fork", "--kill-child", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(&root)
            .arg(python_tree)
            .arg(FIXTURE)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start unshare");
        let stdout = std::io::BufReader::new(unshare.stdout.take().unwrap());
        let mut c = Container { unshare, stdout, root, host_pid: 0 };
        let mut line = String::new();
        c.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "waiting", "the fixture did not start in the container");
        c.host_pid = c.find_host_pid();
        c
    }

    /// The child of unshare that is PID 1 of the new PID namespace (NSpid: HOST 1).
    fn find_host_pid(&self) -> u32 {
        let parent = self.unshare.id();
        for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            let ns_pid = field("NSpid:");
            if field("PPid:").first().map(String::as_str) == Some(&parent.to_string())
                && ns_pid.len() == 2
                && ns_pid[1] == "1"
            {
                assert_eq!(ns_pid[0], pid.to_string());
                return pid;
            }
        }
        panic!("no process of unshare {parent} is PID 1 of a new PID namespace");
    }

    fn trigger(&self) {
        std::fs::write(self.root.join("tmp/go"), b"go").unwrap();
    }

    fn expect_line(&mut self, want: &str) {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "container fixture ended before {want:?}");
            if line.trim() == want {
                return;
            }
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // PID 1 of the namespace: its death ends every process in it, and the mount namespace.
        if self.host_pid != 0 {
            unsafe { libc::kill(self.host_pid as i32, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        // Never a recursive removal: these directories were mount points.
        let _ = std::fs::remove_file(self.root.join("app").join(FIXTURE));
        let _ = std::fs::remove_file(self.root.join("tmp/go"));
        for link in ["lib", "lib64", "bin"] {
            let _ = std::fs::remove_file(self.root.join(link));
        }
        for d in CONTAINER_DIRS {
            let _ = std::fs::remove_dir(self.root.join(d));
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// A target in its own PID and mount namespace (chroot, interpreter at a path the host does
/// not have), addressed by its host PID: every site by file:line and exact bytes.
#[test]
fn container_target_by_host_pid() {
    if !require_root() {
        return;
    }
    if std::process::Command::new("unshare").arg("--version").output().is_err() {
        println!("skipped: no unshare");
        return;
    }
    let _g = serial();
    let Some(python) = pythons_of(11).into_iter().find(|p| p.label.starts_with("pyenv")) else { return };
    let tree = python.path.parent().and_then(|b| b.parent()).unwrap().to_path_buf();
    let mut c = Container::start(&tree);
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(ns(c.host_pid), ns(std::process::id()), "the fixture runs in its own PID namespace");
    let pid = c.host_pid.to_string();
    let mut tracer = Tracer::start(&["-p", &pid, "-i", "500ms", "-q", "--all-stacks"]);
    tracer.wait_attached();
    let held = bpf_ids_held_by(tracer.child.id());
    c.trigger();
    c.expect_line("done");
    std::thread::sleep(Duration::from_millis(700));
    tracer.interrupt();
    let (code, report) = tracer.finish();
    assert_eq!(code, 0, "tracer exit code");
    assert_eq!(report["target"]["pid"].as_u64(), Some(c.host_pid as u64));
    assert_eq!(report["target"]["python"].as_str(), python.label.strip_prefix("pyenv "));
    assert_released(&held, "container");
    // The interpreter knows its files by their in-container paths.
    let files: Vec<&str> = report["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["stack"].as_array().unwrap().iter())
        .filter_map(|f| f["file"].as_str())
        .collect();
    assert!(files.contains(&"/app/versions_fixture.py"), "co_filename as the container sees it: {files:?}");
    let label = Python { label: format!("container {}", python.label), ..python.clone() };
    let failures = check_sites(&report, &label);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// 3.7 and 3.8 (2.7, 3.6 and 3.9 are checked in foundation.rs): one `error:` and one `hint:`.
#[test]
fn unsupported_37_and_38_are_clear_errors() {
    if !require_root() {
        return;
    }
    let _g = serial();
    for version in ["3.7", "3.8"] {
        let dir = std::fs::read_dir("/root/.pyenv/versions").ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{version}."))))
        });
        let Some(dir) = dir else {
            println!("skipped: no CPython {version}");
            continue;
        };
        let mut old = std::process::Command::new(dir.join("bin/python3"))
            .args(["-c", "import time; time.sleep(30)"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let (code, _out, err) = run_tracer(&["record", "-p", &old.id().to_string()]);
        let _ = old.kill();
        let _ = old.wait();
        assert_eq!(code, 1, "{version}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines.iter().any(|l| l.starts_with("error: ") && l.contains("3.9 or older") && l.contains("not support")),
            "{version}: {err}"
        );
        assert!(lines.iter().any(|l| l.starts_with("hint: ") && l.contains("3.10 to 3.15")), "{version}: {err}");
        assert!(!err.contains("panicked"), "{version}: {err}");
    }
}
