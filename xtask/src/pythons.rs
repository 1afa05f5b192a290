//! The CPython interpreters on this machine and the venvs (tornado 6 + pytest) the tests use.
//!
//! - target/pyenv-venv: the fixtures venv, made with the guaranteed pyenv CPython 3.11.7.
//! - target/venvs/<label>: one venv per other interpreter >= 3.10 (best effort), where label is
//!   `pyenv-3.12.1`, `system-python3.11` or `sid-python3.15`.
//! - target/venvs/index.tsv: one line per interpreter found:
//!   `label<TAB>version<TAB>interpreter<TAB>venv python (empty when none)`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::sid;
use crate::util::{self, files_matching, remove_dir, run_quiet, step};

/// The interpreter the machine guarantees (pyenv).
pub const BASE_VERSION: &str = "3.11.7";
/// Oldest CPython that gets a venv (the tracer's supported range starts here).
const MIN_VENV: (u32, u32) = (3, 10);
const PIP_FLAGS: &[&str] = &["--disable-pip-version-check", "--no-input", "-q"];
const REQUIREMENTS: &[&str] = &["tornado>=6,<7", "pytest"];
/// The fixtures venv only: parallel pytest suites (`pytest -n 4`).
const XDIST: &str = "pytest-xdist>=3,<4";

#[derive(Clone, Debug)]
pub struct Python {
    pub label: String,
    pub version: String,
    pub path: PathBuf,
    pub venv_python: Option<PathBuf>,
}

pub fn pyenv_root() -> PathBuf {
    env::var_os("PYENV_ROOT").filter(|r| !r.is_empty()).map(PathBuf::from).unwrap_or_else(|| util::home_join(".pyenv"))
}

/// The guaranteed pyenv CPython 3.11.7.
pub fn base_python() -> Result<PathBuf> {
    let path = pyenv_root().join("versions").join(BASE_VERSION).join("bin/python3");
    if !util::is_executable(&path) {
        bail!(
            "{} not found: this project needs pyenv's CPython {BASE_VERSION}.\nhint: `pyenv \
             install {BASE_VERSION}`",
            path.display()
        );
    }
    Ok(path)
}

/// Is there a pyenv CPython `minor` ("3.13") installed?
pub fn pyenv_has(minor: &str) -> bool {
    pyenv_versions().iter().any(|(name, _)| name == minor || name.starts_with(&format!("{minor}.")))
}

/// (version dir name, bin/python3) for each pyenv CPython 3.x.
fn pyenv_versions() -> Vec<(String, PathBuf)> {
    let dir = pyenv_root().join("versions");
    let mut found: Vec<(String, PathBuf)> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let exe = e.path().join("bin/python3");
            (name.starts_with("3.") && util::is_executable(&exe)).then_some((name, exe))
        })
        .collect();
    found.sort_by_key(|(name, _)| version_key(name));
    found
}

fn version_key(v: &str) -> Vec<u32> {
    v.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok()).collect()
}

/// All CPython 3 interpreters: pyenv, /usr/bin/python3.N, and the sid ones under target/.
pub fn discover(target: &Path) -> Vec<Python> {
    let mut candidates: Vec<(String, PathBuf)> =
        pyenv_versions().into_iter().map(|(name, exe)| (format!("pyenv-{name}"), exe)).collect();
    for exe in files_matching(Path::new("/usr/bin"), "python3.", "") {
        let name = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name["python3.".len()..].chars().all(|c| c.is_ascii_digit()) && util::is_executable(&exe) {
            candidates.push((format!("system-{name}"), exe));
        }
    }
    for minor in ["3.13", "3.14", "3.15"] {
        let exe = sid::patched_python(target, minor);
        if util::is_executable(&exe) {
            candidates.push((format!("sid-python{minor}"), exe));
        }
    }
    candidates
        .into_iter()
        .filter_map(|(label, path)| match util::python_version(&path) {
            Ok(version) => Some(Python { label, version, path, venv_python: None }),
            Err(err) => {
                println!("setup: warning: skipping {} (does not run: {err:#})", path.display());
                None
            }
        })
        .collect()
}

/// Make the fixtures venv (3.11.7); an error if it cannot be made.
pub fn fixtures_venv(target: &Path, base: &Path) -> Result<PathBuf> {
    let dir = target.join("pyenv-venv");
    let python = ensure_venv(base, BASE_VERSION, &dir, base, "fixtures venv (CPython 3.11.7)")?;
    ensure_xdist(&python)?;
    Ok(python)
}

/// pytest-xdist in the fixtures venv, for the parallel-suite test (`pytest -n 4`); installed
/// once, skipped when it imports.
fn ensure_xdist(python: &Path) -> Result<()> {
    if util::python_ok(python, "import xdist") {
        println!("setup: pytest-xdist ok (present in the fixtures venv)");
        return Ok(());
    }
    step("setup", "installing pytest-xdist into the fixtures venv", || {
        run_quiet(Command::new(python).args(["-m", "pip", "install"]).args(PIP_FLAGS).arg(XDIST))
            .context("pip install pytest-xdist")?;
        Ok(())
    })
}

/// Give every interpreter >= 3.10 a venv (best effort: a failure is a message, not an error).
pub fn make_venvs(target: &Path, base: &Path, fixtures: &Path, pythons: &mut [Python]) {
    for py in pythons.iter_mut() {
        if py.path == base {
            py.venv_python = Some(fixtures.to_path_buf());
            continue;
        }
        if version_key(&py.version) < vec![MIN_VENV.0, MIN_VENV.1] {
            continue;
        }
        let dir = target.join("venvs").join(&py.label);
        let what = format!("venv for {} ({})", py.label, py.version);
        match ensure_venv(&py.path, &py.version, &dir, base, &what) {
            Ok(venv) => py.venv_python = Some(venv),
            Err(err) => {
                let _ = remove_dir(&dir);
                println!("setup: warning: skipping {what}\n  cause: {err:#}");
            }
        }
    }
}

/// Write target/venvs/index.tsv; returns its path.
pub fn write_index(target: &Path, pythons: &[Python]) -> Result<PathBuf> {
    let dir = target.join("venvs");
    util::mkdirs(&dir)?;
    let mut text = String::from("# label\tversion\tinterpreter\tvenv python (empty: none)\n");
    for py in pythons {
        let venv = py.venv_python.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        text.push_str(&format!("{}\t{}\t{}\t{venv}\n", py.label, py.version, py.path.display()));
    }
    let path = dir.join("index.tsv");
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Check the venv at `dir`; (re)make it when it is missing, broken or from another interpreter.
fn ensure_venv(interp: &Path, version: &str, dir: &Path, base: &Path, what: &str) -> Result<PathBuf> {
    let python = dir.join("bin/python");
    let check = check_code(version);
    if util::python_ok(&python, &check) {
        println!("setup: {what} ok (present, {})", dir.display());
        return Ok(python);
    }
    step("setup", &format!("making {what} at {}", dir.display()), || {
        make_venv(interp, dir, base)?;
        if !util::python_ok(&python, &check) {
            let out = util::capture(Command::new(&python).args(["-c", &check]))?;
            bail!("the new venv fails its check:\n{}", util::tail(&out, 10));
        }
        Ok(python.clone())
    })
}

/// tornado 6 and pytest import, under the expected interpreter version.
fn check_code(version: &str) -> String {
    format!(
        "import sys, tornado, pytest; assert tornado.version_info[0] == 6; \
         assert '%d.%d.%d' % sys.version_info[:3] == '{version}'"
    )
}

fn make_venv(interp: &Path, dir: &Path, base: &Path) -> Result<()> {
    remove_dir(dir)?;
    let with_pip = util::capture(Command::new(interp).args(["-m", "venv"]).arg(dir))?;
    if !with_pip.status.success() {
        // Debian's interpreters ship without ensurepip: bootstrap pip from its wheel instead.
        remove_dir(dir)?;
        run_quiet(Command::new(interp).args(["-m", "venv", "--without-pip"]).arg(dir))?;
        bootstrap_pip(&dir.join("bin/python"), base, &dir.join(".wheels"))?;
    }
    run_quiet(Command::new(dir.join("bin/python")).args(["-m", "pip", "install"]).args(PIP_FLAGS).args(REQUIREMENTS))
        .context("pip install tornado pytest")?;
    Ok(())
}

/// Install pip into a venv made `--without-pip`: fetch the pip wheel with the base interpreter's
/// pip and run pip from inside that wheel.
fn bootstrap_pip(python: &Path, base: &Path, wheels: &Path) -> Result<()> {
    run_quiet(
        Command::new(base)
            .args(["-m", "pip", "download"])
            .args(PIP_FLAGS)
            .args(["--no-deps", "--only-binary=:all:", "pip", "-d"])
            .arg(wheels),
    )
    .context("downloading the pip wheel")?;
    let wheel = files_matching(wheels, "pip-", ".whl").pop().context("no pip wheel downloaded")?;
    run_quiet(Command::new(python).arg(wheel.join("pip")).args(["install", "--no-index"]).args(PIP_FLAGS).arg(&wheel))
        .context("installing pip from its wheel")?;
    Ok(())
}
