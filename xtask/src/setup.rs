//! `cargo xtask setup`: install what building and testing need, idempotently.
//!
//! Every step checks first and prints one `setup: ...` line; when everything is present the whole
//! run takes a second or two and changes nothing. Steps:
//!
//! build (always):
//!   - nightly rustc must be on LLVM 22 (bpf-linker's LLVM major must match it); error otherwise
//!   - `rust-src` for the nightly (`rustup component add`; never `rustup update`)
//!   - LLVM 22 dev files (`apt-get install llvm-22-dev`) for building bpf-linker
//!   - `bpf-linker` (`cargo install bpf-linker --no-default-features --features llvm-22`)
//!
//! test tools (`cargo xtask test`, and `cargo xtask setup` unless `--build-only`):
//!   - `rustfmt` and `clippy` for the toolchain that runs cargo here, and `clippy` for the
//!     nightly (the lint gate, lint.rs; `rustup component add`, never `rustup update`)
//!   - `bpftool`, `go` and `chromium` (apt: bpftool, golang-go, chromium)
//!   - speedscope's app (`npm pack speedscope@1.25.0`) into target/speedscope (best effort)
//!   - the fixtures venv (CPython 3.11.7 + tornado 6 + pytest) at target/pyenv-venv
//!   - CPython 3.14 and 3.15 (and 3.13 when pyenv has none) from Debian sid, into target/cpython-sid
//!     (best effort: a warning when offline)
//!   - one venv per other CPython >= 3.10 found (best effort), listed in target/venvs/index.tsv

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::pythons::{self, Python};
use crate::sid;
use crate::util::{self, elapsed, run_quiet, stdout_of, step, which};

/// The LLVM major that bpf-linker is built against; the nightly must use the same.
const LLVM_MAJOR: &str = "22";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Also install the test-only tools, venvs and extra interpreters.
    pub test_tools: bool,
}

/// What the test step needs to know about the result.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Python of the fixtures venv (3.11.7 + tornado + pytest).
    pub venv_python: Option<PathBuf>,
    /// Patched Debian sid CPython 3.14, if it could be fetched.
    pub py314: Option<PathBuf>,
    /// Patched Debian sid CPython 3.15, if it could be fetched.
    pub py315: Option<PathBuf>,
    /// Patched Debian sid CPython 3.13, if one was fetched (only when pyenv has no 3.13).
    pub py313: Option<PathBuf>,
    /// Every interpreter found, with its venv when one could be made.
    pub pythons: Vec<Python>,
    /// target/venvs/index.tsv
    pub venv_index: Option<PathBuf>,
}

pub fn run(opts: Options) -> Result<Outcome> {
    let start = Instant::now();
    let mut apt = Apt::default();

    dev_null()?;
    nightly_llvm()?;
    rustup_components(Some("nightly"), &["rust-src"])?;
    llvm_dev(&mut apt)?;
    bpf_linker()?;

    let mut outcome = Outcome::default();
    if opts.test_tools {
        rustup_components(None, &["rustfmt", "clippy"])?;
        rustup_components(Some("nightly"), &["clippy"])?;
        apt_tool(&mut apt, "bpftool", "bpftool", &["/usr/sbin", "/sbin"])?;
        apt_tool(&mut apt, "go", "golang-go", &["/usr/lib/go/bin"])?;
        apt_tool(&mut apt, "chromium", "chromium", &[])?;
        speedscope_app();
        outcome = test_pythons()?;
    }
    println!("setup: done in {}", elapsed(start));
    Ok(outcome)
}

/// Cargo probes rustc with its standard input on /dev/null. Once a file has been renamed over
/// /dev/null (an earlier tracer did that for `-o /dev/null`), every build reads what others wrote
/// there and fails with "unknown start of token". Put the device back.
fn dev_null() -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let null = Path::new("/dev/null");
    if std::fs::symlink_metadata(null).is_ok_and(|m| m.file_type().is_char_device()) {
        return Ok(());
    }
    println!("setup: /dev/null is not the null device (a file was renamed over it); restoring it");
    let _ = std::fs::remove_file(null);
    util::run(Command::new("mknod").args(["-m", "666", "/dev/null", "c", "1", "3"]))
        .context("could not restore /dev/null\nhint: as root, `rm /dev/null && mknod -m 666 /dev/null c 1 3`")
}

fn nightly_llvm() -> Result<()> {
    let out = stdout_of(Command::new("rustc").args(["+nightly", "-vV"])).context(
        "the `nightly` toolchain is needed to build the BPF programs, but `rustc +nightly -vV` \
         failed.\nhint: install a nightly that uses LLVM 22 (e.g. `rustup toolchain install \
         nightly-2026-05-19` and name it `nightly`); do not `rustup update`",
    )?;
    let release = field(&out, "release: ").unwrap_or("?");
    let llvm = field(&out, "LLVM version: ").unwrap_or("?");
    if llvm.split('.').next() != Some(LLVM_MAJOR) {
        bail!(
            "nightly rustc {release} uses LLVM {llvm}, but the BPF linker (bpf-linker with \
             --features llvm-{LLVM_MAJOR}) needs a nightly on LLVM {LLVM_MAJOR}: their LLVM major \
             versions must match.\nhint: use the image's nightly (1.97.0-nightly 2026-05-19, \
             LLVM 22.1); never `rustup update` it"
        );
    }
    println!("setup: nightly LLVM ok (rustc {release}, LLVM {llvm})");
    Ok(())
}

fn field<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(prefix)).map(str::trim)
}

/// `rustup component add` what `toolchain` (None: the one that runs cargo in the repository)
/// lacks; one line either way.
fn rustup_components(toolchain: Option<&str>, components: &[&str]) -> Result<()> {
    let name = toolchain.unwrap_or("the active toolchain");
    let with_toolchain = |cmd: &mut Command| {
        if let Some(t) = toolchain {
            cmd.args(["--toolchain", t]);
        }
        cmd.current_dir(util::repo_root());
    };
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed"]);
    with_toolchain(&mut list);
    let installed = stdout_of(&mut list).with_context(|| format!("listing the rustup components of {name}"))?;
    let missing: Vec<&str> = components.iter().copied().filter(|c| !has_component(&installed, c)).collect();
    if missing.is_empty() {
        println!("setup: {} for {name} ok (present)", components.join(", "));
        return Ok(());
    }
    step("setup", &format!("installing {} for {name}", missing.join(", ")), || {
        let mut add = Command::new("rustup");
        add.args(["component", "add"]).args(&missing);
        with_toolchain(&mut add);
        run_quiet(&mut add).map(drop)
    })
}

/// Does `rustup component list --installed` output list `component` (`rust-src`, or
/// `clippy-x86_64-unknown-linux-gnu` for `clippy`)?
fn has_component(installed: &str, component: &str) -> bool {
    let for_host = format!("{component}-{}-", env::consts::ARCH);
    installed.lines().map(str::trim).any(|l| l == component || l.starts_with(&for_host))
}

fn llvm_dev(apt: &mut Apt) -> Result<()> {
    let lib = Path::new(LLVM_PREFIX).join("lib/libLLVM.so");
    if lib.exists() {
        println!("setup: llvm-22-dev ok (present)");
        return Ok(());
    }
    apt.install("llvm-22-dev")
}

/// Directories cargo installs binaries into (they may not be on PATH in a fresh shell).
fn cargo_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(root) = env::var_os("CARGO_INSTALL_ROOT") {
        dirs.push(PathBuf::from(root).join("bin"));
    }
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    dirs.push(util::home_join(".cargo/bin"));
    dirs
}

fn bpf_linker() -> Result<()> {
    let dirs = cargo_bin_dirs();
    if let Some(path) = which("bpf-linker", &dirs) {
        if let Ok(version) = stdout_of(Command::new(&path).arg("--version")) {
            add_to_path(&path);
            check_linker_llvm(&path);
            println!("setup: bpf-linker ok ({version}, {})", path.display());
            return Ok(());
        }
        println!("setup: {} does not run (its libLLVM gone?); reinstalling", path.display());
    }
    let path = step("setup", "installing bpf-linker (cargo install, about 2 minutes)", || install_bpf_linker(&dirs))?;
    add_to_path(&path);
    println!("setup: bpf-linker ok ({})", path.display());
    Ok(())
}

fn install_bpf_linker(dirs: &[PathBuf]) -> Result<PathBuf> {
    let mut cmd = util::cargo();
    cmd.args([
        "install",
        "--force",
        "bpf-linker",
        "--no-default-features",
        "--features",
        &format!("llvm-{LLVM_MAJOR}"),
    ])
    .env("LLVM_PREFIX", LLVM_PREFIX)
    .current_dir(util::home_join(""));
    run_quiet(&mut cmd).context("installing bpf-linker")?;
    which("bpf-linker", dirs)
        .context("`cargo install bpf-linker` succeeded but bpf-linker is not on PATH nor in ~/.cargo/bin")
}

/// bpf-linker links libLLVM dynamically; warn when its SONAME names another LLVM major.
fn check_linker_llvm(path: &Path) {
    let Ok(bytes) = fs::read(path) else { return };
    let needle = b"libLLVM.so.";
    let Some(pos) = bytes.windows(needle.len()).position(|w| w == needle) else {
        return; // statically linked: nothing to compare cheaply
    };
    let major: String =
        bytes[pos + needle.len()..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
    if !major.is_empty() && major != LLVM_MAJOR {
        println!(
            "setup: warning: {} links libLLVM.so.{major}, but the nightly is on LLVM \
             {LLVM_MAJOR}; reinstall it with `LLVM_PREFIX={LLVM_PREFIX} cargo install --force \
             bpf-linker --no-default-features --features llvm-{LLVM_MAJOR}`",
            path.display()
        );
    }
}

/// Make sure the directory of `exe` is on PATH for the builds we start (aya-build's nested
/// cargo finds `bpf-linker` through PATH).
fn add_to_path(exe: &Path) {
    let Some(dir) = exe.parent() else { return };
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|p| p == dir) {
        return;
    }
    let joined = env::join_paths(std::iter::once(dir.to_path_buf()).chain(env::split_paths(&path)));
    if let Ok(joined) = joined {
        // Single-threaded at this point; child processes inherit it.
        env::set_var("PATH", joined);
    }
}

fn apt_tool(apt: &mut Apt, exe: &str, package: &str, extra: &[&str]) -> Result<()> {
    let extra: Vec<PathBuf> = extra.iter().map(PathBuf::from).collect();
    if let Some(path) = which(exe, &extra) {
        add_to_path(&path);
        println!("setup: {exe} ok (present, {})", path.display());
        return Ok(());
    }
    apt.install(package)?;
    if let Some(path) = which(exe, &extra) {
        add_to_path(&path);
    }
    Ok(())
}

/// speedscope's own app, for the exports tests to open speedscope files in (through Chromium).
/// Best effort: without npm or the registry the tests say "skipped: no speedscope app".
fn speedscope_app() {
    let dir = util::target_dir().join("speedscope");
    if dir.join("package/dist/release/index.html").is_file() {
        println!("setup: speedscope app ok (present, {})", dir.display());
        return;
    }
    let result = step("setup", "fetching speedscope 1.25.0 (npm pack)", || {
        fs::create_dir_all(&dir)?;
        run_quiet(Command::new("npm").args(["pack", "speedscope@1.25.0"]).current_dir(&dir)).context("npm pack")?;
        run_quiet(Command::new("tar").args(["xzf", "speedscope-1.25.0.tgz"]).current_dir(&dir)).map(drop)
    });
    if let Err(err) = result {
        println!(
            "setup: warning: no speedscope app; tests will report \"skipped: no speedscope app\"\n  cause: {err:#}"
        );
    }
}

/// Install Debian packages that only `cargo xtask bench` needs (bcc, kernel headers).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let mut apt = Apt::default();
    for package in packages {
        apt.install(package)?;
    }
    Ok(())
}

/// apt-get, with `apt-get update` run at most once per setup.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, package: &str) -> Result<()> {
        if !util::is_root() {
            bail!(
                "`{package}` is missing and installing it needs root.\nhint: run as root, or \
                 `sudo apt-get install -y {package}` and run again"
            );
        }
        step("setup", &format!("installing {package} (apt)"), || {
            if !self.updated {
                run_quiet(Command::new("apt-get").args(["update", "-q"])).context("apt-get update")?;
                self.updated = true;
            }
            run_quiet(
                Command::new("apt-get").args(["install", "-y", "-q", package]).env("DEBIAN_FRONTEND", "noninteractive"),
            )
            .with_context(|| format!("installing {package}"))
            .map(drop)
        })
    }
}

/// Fixture venv, sid interpreters and per-interpreter venvs.
fn test_pythons() -> Result<Outcome> {
    let target = util::target_dir();
    let base = pythons::base_python()?;
    let venv_python = pythons::fixtures_venv(&target, &base)?;

    let py314 = sid_python(&target, "3.14", &base);
    let py315 = sid_python(&target, "3.15", &base);
    let py313 = if pythons::pyenv_has("3.13") { None } else { sid_python(&target, "3.13", &base) };

    let mut found = pythons::discover(&target);
    pythons::make_venvs(&target, &base, &venv_python, &mut found);
    let index = pythons::write_index(&target, &found)?;
    Ok(Outcome { venv_python: Some(venv_python), py314, py315, py313, pythons: found, venv_index: Some(index) })
}

/// Fetch a sid interpreter; a failure is a warning (tests then report it as skipped).
fn sid_python(target: &Path, minor: &str, base: &Path) -> Option<PathBuf> {
    match sid::ensure(target, minor, base) {
        Ok(path) => Some(path),
        Err(err) => {
            println!(
                "setup: warning: could not get CPython {minor} from Debian sid; tests will \
                 report \"skipped: no CPython {minor}\"\n  cause: {err:#}"
            );
            None
        }
    }
}

/// What a previous setup left in target/, without installing anything (`--skip-setup`).
pub fn existing() -> Outcome {
    let target = util::target_dir();
    let venv = target.join("pyenv-venv/bin/python");
    let venv_python = util::is_executable(&venv).then_some(venv);
    let sid_exe = |minor: &str| {
        let exe = sid::patched_python(&target, minor);
        util::is_executable(&exe).then_some(exe)
    };
    let base = pythons::base_python().ok();
    let mut found = pythons::discover(&target);
    for py in &mut found {
        let venv = if Some(&py.path) == base.as_ref() {
            venv_python.clone()
        } else {
            Some(target.join("venvs").join(&py.label).join("bin/python"))
        };
        py.venv_python = venv.filter(|v| util::is_executable(v));
    }
    let venv_index = pythons::write_index(&target, &found).ok();
    Outcome {
        venv_python,
        py314: sid_exe("3.14"),
        py315: sid_exe("3.15"),
        py313: sid_exe("3.13"),
        pythons: found,
        venv_index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rustups_component_list() {
        let list = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\nrust-src\nrust-std-x86_64-unknown-linux-gnu\n";
        assert!(has_component(list, "clippy"));
        assert!(has_component(list, "rust-src"));
        assert!(!has_component(list, "rustfmt"));
        assert!(!has_component(list, "rust"));
    }
}
