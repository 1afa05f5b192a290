//! Small process and path helpers shared by the xtask commands.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The workspace root (the parent of the xtask crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `<repo>/target`, or `$CARGO_TARGET_DIR` when set.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// The `cargo` that runs us (cargo sets `$CARGO`), else `cargo` from PATH.
pub fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
}

/// A human-readable form of a command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Run a command with inherited stdio; error if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Run a command with captured output; on failure the error carries the tail of its output.
pub fn run_quiet(cmd: &mut Command) -> Result<Output> {
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!("`{}` failed ({})\n{}", describe(cmd), out.status, tail(&out, 12));
    }
    Ok(out)
}

/// Run a command with captured output and no stdin, whatever its exit status.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null()).output().with_context(|| format!("could not start `{}`", describe(cmd)))
}

/// Stdout of a successful command, trimmed.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = run_quiet(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The last `n` lines of a command's stdout and stderr, indented.
pub fn tail(out: &Output, n: usize) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")
}

/// Find an executable on PATH, then in the given extra directories.
pub fn which(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path).chain(extra_dirs.iter().cloned()).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// `$HOME/<rel>` (falls back to /root, where this project runs).
pub fn home_join(rel: &str) -> PathBuf {
    env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root")).join(rel)
}

/// Does `python -c CODE` succeed?
pub fn python_ok(python: &Path, code: &str) -> bool {
    capture(Command::new(python).args(["-c", code])).map(|o| o.status.success()).unwrap_or(false)
}

/// `X.Y.Z` of a Python interpreter.
pub fn python_version(python: &Path) -> Result<String> {
    stdout_of(Command::new(python).args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]))
}

/// Seconds since `start`, formatted for status lines.
pub fn elapsed(start: Instant) -> String {
    format!("{:.1}s", start.elapsed().as_secs_f64())
}

/// Remove a directory tree if it exists.
pub fn remove_dir(path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

pub fn mkdirs(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))
}

/// Files in `dir` whose names start with `prefix` and end with `suffix`, sorted.
pub fn files_matching(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(OsStr::to_str).is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix)))
        .collect();
    found.sort();
    found
}

/// Is this process running as root?
pub fn is_root() -> bool {
    // /proc/self/status "Uid:\treal\teffective\t..."; avoids a libc dependency.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Run one setup/demo step: print `<prefix>: <msg> ... `, then `done (Ns)` or `failed`.
pub fn step<T>(prefix: &str, msg: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use std::io::Write;
    let t = Instant::now();
    print!("{prefix}: {msg} ... ");
    let _ = std::io::stdout().flush();
    match f() {
        Ok(v) => {
            println!("done ({})", elapsed(t));
            Ok(v)
        }
        Err(e) => {
            println!("failed");
            Err(e)
        }
    }
}

/// The lock file that tracer's tests, benchmarks and soaks share: one tracer on the machine's
/// libc at a time (see tracer/tests/common/mod.rs). Held until the returned file is dropped.
pub fn machine_lock() -> Result<fs::File> {
    let path = "/tmp/tracer-tests.lock";
    let file =
        fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {path}"))?;
    if file.try_lock().is_err() {
        println!("waiting for {path}: another tracer test, bench or soak runs on this machine");
        file.lock().with_context(|| format!("locking {path}"))?;
    }
    Ok(file)
}
