//! What the benchmark needs beyond the build: a venv with memray and tornado, bcc's memleak with
//! kernel headers it accepts, a private copy of libc, and a description of the machine.
//! Everything is best effort: a missing peer tool makes its configuration "n/a", never an error.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::runs::Bcc;
use crate::pythons;
use crate::setup;
use crate::util::{self, run_quiet, stdout_of, step};

const BENCH_REQUIREMENTS: &[&str] = &["memray", "tornado>=6,<7"];

/// target/bench-venv (pyenv CPython 3.11.7 + memray + tornado); returns its python.
pub fn bench_venv(install: bool) -> Result<PathBuf> {
    let target = util::target_dir();
    let venv = target.join("bench-venv");
    let python = venv.join("bin/python");
    let ok = |p: &Path| util::python_ok(p, "import memray, tornado");
    if util::is_executable(&python) && ok(&python) {
        println!("bench: venv ok ({})", venv.display());
        return Ok(python);
    }
    if !install {
        bail!("{} has no memray/tornado; run without --skip-setup", venv.display());
    }
    let base = pythons::base_python()?;
    step("bench", "making target/bench-venv (memray, tornado)", || -> Result<()> {
        util::remove_dir(&venv)?;
        run_quiet(Command::new(&base).args(["-m", "venv"]).arg(&venv))?;
        run_quiet(
            Command::new(&python)
                .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
                .args(BENCH_REQUIREMENTS),
        )?;
        Ok(())
    })?;
    if !ok(&python) {
        bail!("{} cannot import memray and tornado", python.display());
    }
    Ok(python)
}

/// bcc's memleak and a kernel-headers tree it accepts. The running kernel has no headers package,
/// and bcc wants one tree, so Debian's 6.1 -common and -amd64 trees are merged into one under
/// target/bench/kheaders (BENCHMARKS.md, "How bcc's memleak is run"). Err = why not.
pub fn bcc(install: bool) -> Result<Bcc> {
    let find = || util::which("memleak-bpfcc", &[PathBuf::from("/usr/sbin")]);
    let have_headers = || !header_trees().is_empty();
    if (find().is_none() || !have_headers()) && install {
        if let Err(e) = setup::apt_install(&["bpfcc-tools", "linux-headers-amd64"]) {
            println!("bench: warning: could not install bcc: {e:#}");
        }
    }
    let memleak = find().context("memleak-bpfcc not installed (apt-get install bpfcc-tools)")?;
    let trees = header_trees();
    let (common, arch) = trees
        .last()
        .cloned()
        .context("no Debian linux-headers-*-common/-amd64 pair in /usr/src (apt-get install linux-headers-amd64)")?;
    let merged = util::target_dir().join("bench/kheaders");
    let stamp = merged.join(".merged-from");
    let want = format!("{}\n{}\n", common.display(), arch.display());
    if fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        util::remove_dir(&merged)?;
        util::mkdirs(&merged)?;
        // cp -as: a tree of symlinks; the arch tree wins where both have a file.
        run_quiet(
            Command::new("cp").arg("-as").arg(format!("{}/.", common.display())).arg(format!("{}/", merged.display())),
        )?;
        run_quiet(
            Command::new("cp")
                .args(["-asf", "--remove-destination"])
                .arg(format!("{}/.", arch.display()))
                .arg(format!("{}/", merged.display())),
        )?;
        fs::write(&stamp, want)?;
    }
    Ok(Bcc { memleak, kernel_source: merged })
}

/// (…-common, …-amd64) header directory pairs in /usr/src, sorted by name.
fn header_trees() -> Vec<(PathBuf, PathBuf)> {
    let mut pairs: Vec<(PathBuf, PathBuf)> = util::files_matching(Path::new("/usr/src"), "linux-headers-", "-common")
        .into_iter()
        .filter_map(|common| {
            let name = common.file_name()?.to_str()?.to_string();
            let arch = common.with_file_name(name.replace("-common", "-amd64"));
            arch.is_dir().then_some((common, arch))
        })
        .collect();
    pairs.sort();
    pairs
}

/// A byte-identical private copy of the system libc, so that the measured processes use their
/// own inode: probes other people put on the system libc do not slow them, and bcc's probes
/// (which carry a reference counter) do not conflict with another tracer on the system libc.
pub fn private_libc() -> Result<PathBuf> {
    let system = fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").context("no /lib/x86_64-linux-gnu/libc.so.6")?;
    let dir = util::target_dir().join("bench/libc");
    let copy = dir.join("libc.so.6");
    let same = match (fs::read(&system), fs::read(&copy)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        util::mkdirs(&dir)?;
        let tmp = dir.join("libc.so.6.tmp");
        fs::copy(&system, &tmp)?;
        fs::rename(&tmp, &copy)?;
    }
    Ok(dir)
}

/// Does this tracer binary accept `record --sample-bytes`?
pub fn tracer_has_flag(tracer: &Path, flag: &str) -> bool {
    util::capture(Command::new(tracer).args(["record", "--help"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
        .unwrap_or(false)
}

/// The machine, for the report header.
pub struct Machine {
    pub nproc: String,
    pub cpu: String,
    pub kernel: String,
    pub python: String,
    pub glibc: String,
    pub tracer_commit: String,
    pub date: String,
    pub loadavg: String,
    pub memray: String,
    pub bcc: String,
}

pub fn machine(python: &Path, memray: Option<&Path>) -> Machine {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "?".into());
    let cmd = |c: &mut Command| stdout_of(c).unwrap_or_else(|_| "?".into());
    let commit = cmd(Command::new("git").args(["-C"]).arg(util::repo_root()).args(["describe", "--always", "--dirty"]));
    Machine {
        nproc: std::thread::available_parallelism().map(|n| n.to_string()).unwrap_or_else(|_| "?".into()),
        cpu,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        python: util::python_version(python).unwrap_or_else(|_| "?".into()),
        glibc: cmd(Command::new("ldd").arg("--version")).lines().next().unwrap_or("?").to_string(),
        tracer_commit: commit,
        date: cmd(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        loadavg: loadavg(),
        memray: memray.map(|m| cmd(Command::new(m).arg("--version"))).unwrap_or_else(|| "not installed".into()),
        bcc: cmd(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "bpfcc-tools"])),
    }
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
