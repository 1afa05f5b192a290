//! Inspecting a target process through /proc: is it there, is it CPython, where are its libc
//! and its interpreter, which version. Everything is read through /proc/PID/root so that a
//! process in another mount namespace (a container) is inspected the same way.

use anyhow::Result;

use crate::elf::{ElfImage, Mapped};
use crate::error::user_error;
use crate::procfs::{self, MapEntry};
use crate::python::{versions, Interpreter};

pub struct Target {
    pub pid: u32,
    pub exe: String,
    pub cmdline: String,
    pub libc: Mapped,
    pub python: Mapped,
    /// The CPython in `python`: version and where it keeps its structures.
    pub interpreter: Interpreter,
    /// `starttime` from /proc/PID/stat: tells this process from a later one with the same PID.
    pub start_time: Option<u64>,
    /// Set when probes are attached (`Probes::add_target`): this process's stacks carry it.
    pub instance: u64,
}

/// Files mapped by the target: path -> its mappings, in address order.
fn mapped_files(maps: &[MapEntry]) -> Vec<(String, Vec<&MapEntry>)> {
    let mut files: Vec<(String, Vec<&MapEntry>)> = Vec::new();
    for m in maps {
        let Some(path) = &m.path else { continue };
        match files.iter_mut().find(|(p, _)| p == path) {
            Some((_, v)) => v.push(m),
            None => files.push((path.clone(), vec![m])),
        }
    }
    files
}

fn open_mapped(pid: u32, path: &str, entries: &[&MapEntry]) -> Result<Mapped> {
    let first = entries.iter().min_by_key(|e| e.offset).expect("at least one mapping");
    // The mapped file itself, whatever the namespaces: seen from another mount namespace, a
    // chroot'ed target's maps paths are relative to its namespace's root, not to its root
    // directory, so /proc/PID/root + path can miss (or name a different file). map_files needs
    // CAP_SYS_ADMIN; without it, fall back to the path under the target's root.
    let mapped = procfs::map_file(pid, first.start, first.end);
    let elf = match ElfImage::open(&mapped) {
        Ok(elf) => elf,
        Err(_) => ElfImage::open(&procfs::in_root(pid, path))?,
    };
    let vaddr = elf.vaddr_of_offset(first.offset).unwrap_or(0) & !0xfff;
    Ok(Mapped {
        path: path.to_string(),
        bias: first.start.wrapping_sub(vaddr),
        start: entries.iter().map(|e| e.start).min().unwrap_or(0),
        end: entries.iter().map(|e| e.end).max().unwrap_or(0),
        elf,
    })
}

fn is_libc(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libc.so") || (name.starts_with("libc-") && name.ends_with(".so"))
}

fn is_musl(path: &str) -> bool {
    path.contains("ld-musl") || path.contains("libc.musl")
}

/// Checks that `pid` names a live, traceable user process and returns its maps.
pub fn check_process(pid: u32) -> Result<Vec<MapEntry>> {
    if pid == 0 {
        return Err(user_error(
            "PID 0 is not a process",
            "pass the PID of a running Python process, e.g. from `pgrep -f app.py`",
        ));
    }
    if pid == std::process::id() {
        return Err(user_error("refusing to trace the tracer itself", "pass the PID of the Python process to trace"));
    }
    let status_text = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(t) => t,
        Err(_) => {
            return Err(user_error(
                format!("no such process: {pid}"),
                "check the PID with `ps -p PID` or find it with `pgrep -f app.py`",
            ))
        }
    };
    let status = procfs::parse_status(&status_text);
    if status.state == 'Z' || status.state == 'X' {
        return Err(user_error(
            format!("process {pid} ({}) is a zombie: it has exited and has no memory left to trace", status.name),
            "trace a running process; its parent has not yet reaped this one",
        ));
    }
    if status.tgid != 0 && status.tgid != pid {
        return Err(user_error(
            format!("{pid} is a thread of process {}, not a process", status.tgid),
            format!("pass the process ID: tracer record -p {}", status.tgid),
        ));
    }
    let maps_text = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| {
        user_error(
            format!("cannot read the memory map of process {pid}: {e}"),
            crate::error::as_root_or(
                "run as root (sudo) or with CAP_SYS_PTRACE",
                "you are root already: a security module (SELinux, AppArmor, Yama ptrace_scope 3) denies reading \
                 it, or the process is exiting",
            ),
        )
    })?;
    let maps = procfs::parse_maps(&maps_text);
    if maps.is_empty() {
        if procfs::is_kernel_thread(pid) {
            return Err(user_error(
                format!("process {pid} ({}) is a kernel thread: it has no user memory", status.name),
                "pass the PID of a Python process",
            ));
        }
        return Err(user_error(
            format!("process {pid} ({}) is exiting: its memory is already gone", status.name),
            "trace a process that is still running",
        ));
    }
    Ok(maps)
}

impl Target {
    /// Whether the process inspected still runs: same PID, same start time, not a zombie.
    pub fn still_runs(&self) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).map(|t| procfs::parse_status(&t));
        status.is_ok_and(|s| s.state != 'Z' && s.state != 'X') && procfs::start_time(self.pid) == self.start_time
    }
}

/// How long a process that is still being loaded (its dynamic loader mapped, libc not yet) is
/// given to finish: attaching right after a process starts races with ld.so.
const LOADING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Finds the libc and the CPython runtime of `pid`, or explains why not.
pub fn inspect(pid: u32) -> Result<Target> {
    let deadline = std::time::Instant::now() + LOADING_GRACE;
    loop {
        let maps = check_process(pid)?;
        let mapped = |want: fn(&str) -> bool| maps.iter().filter_map(|m| m.path.as_deref()).any(want);
        let loading = !mapped(is_libc) && mapped(|p| p.contains("/ld-linux"));
        if !loading || std::time::Instant::now() >= deadline {
            return inspect_maps(pid, &maps);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn inspect_maps(pid: u32, maps: &[MapEntry]) -> Result<Target> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).map(|r| procfs::parse_cmdline(&r)).unwrap_or_default();
    let files = mapped_files(maps);

    let python = find_python(pid, &files, &exe, &cmdline)?;
    let interpreter = Interpreter::inspect(pid, &python)?;

    let libc = match files.iter().find(|(p, _)| is_libc(p)) {
        Some((path, entries)) => open_mapped(pid, path, entries)?,
        None if files.iter().any(|(p, _)| is_musl(p)) => {
            return Err(user_error(
                format!("process {pid} uses musl libc, which tracer does not probe yet"),
                "trace a glibc-based build of the service (Debian/Ubuntu/RHEL images); Alpine images use musl",
            ))
        }
        None => {
            return Err(user_error(
                format!("no libc found in process {pid} ({exe}): it looks statically linked"),
                "tracer probes the target's shared glibc; a statically linked Python cannot be traced",
            ))
        }
    };
    let start_time = procfs::start_time(pid);
    Ok(Target { pid, exe, cmdline, libc, python, interpreter, start_time, instance: 0 })
}

/// The mapped ELF that holds the CPython runtime (`_PyRuntime`): the executable itself
/// (static libpython builds) or libpython3.X.so; any other mapped object as a last resort
/// (an interpreter started through an explicit loader).
fn find_python(pid: u32, files: &[(String, Vec<&MapEntry>)], exe: &str, cmdline: &str) -> Result<Mapped> {
    let likely = |p: &str| p == exe || p.contains("python");
    let ordered = files.iter().filter(|(p, _)| likely(p)).chain(files.iter().filter(|(p, _)| !likely(p)));
    let mut saw_old_python = None;
    for (path, entries) in ordered {
        // A runtime that is not mapped executable is not running: another tool (a profiler, a
        // second tracer symbolizing its own target) can map libpython read-only to read it.
        if path.ends_with(".pyc") || path.contains("/locale/") || !entries.iter().any(|e| e.perms.contains('x')) {
            continue;
        }
        let Ok(obj) = open_mapped(pid, path, entries) else { continue };
        if obj.elf.symbol("_PyRuntime").is_some() {
            return Ok(obj);
        }
        if obj.elf.symbol("Py_Initialize").is_some() {
            saw_old_python = Some(if obj.elf.symbol("PyString_FromString").is_some() { "2" } else { "3.6 or older" });
        }
    }
    let name = if cmdline.is_empty() { exe.to_string() } else { cmdline.to_string() };
    match saw_old_python {
        Some(v) => Err(user_error(
            format!("process {pid} runs Python {v}, which tracer does not support"),
            versions::supported_hint(),
        )),
        None => Err(user_error(
            format!("process {pid} ({name}) is not a CPython process: no Python runtime is mapped"),
            "pass the PID of a python3 process (e.g. `pgrep -f app.py`); PyPy and other runtimes are not supported",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_names() {
        assert!(is_libc("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_libc("/lib/libc-2.31.so"));
        assert!(!is_libc("/usr/lib/libcrypto.so.3"));
        assert!(!is_libc("/usr/lib/libcap.so.2"));
        assert!(is_musl("/lib/ld-musl-x86_64.so.1"));
    }
}
