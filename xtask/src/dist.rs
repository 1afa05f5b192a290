//! `cargo xtask dist`: the release binary (stripped), checked to need nothing but glibc, with
//! shell completions and a man page generated from its own clap definitions (the hidden
//! `tracer completions SHELL` and `tracer man`), packed as a `.deb` under target/dist/ with
//! `dpkg-deb` from a staged tree. No cargo-deb.
//!
//!   target/dist/tracer_<version>_<arch>.deb
//!     /usr/bin/tracer
//!     /usr/share/man/man1/tracer.1.gz, tracer-record.1.gz, tracer-report.1.gz, tracer-serve.1.gz
//!     /usr/share/bash-completion/completions/tracer
//!     /usr/share/zsh/vendor-completions/_tracer
//!     /usr/share/fish/vendor_completions.d/tracer.fish
//!     /usr/share/doc/tracer/copyright

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{self, run, run_quiet, stdout_of};

/// Shared objects of glibc's own set: the binary may depend on these and nothing else.
const GLIBC_SET: [&str; 9] = [
    "linux-vdso.so.1",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
];

/// The oldest glibc the package declares; more when the binary's symbol versions need more.
const MIN_GLIBC: (u32, u32) = (2, 31);

pub fn run_dist() -> Result<PathBuf> {
    let root = util::repo_root();
    println!("dist: cargo build --release -p tracer");
    run(util::cargo().args(["build", "--release", "-p", "tracer"]).current_dir(&root)).context("building tracer")?;
    let built = util::target_dir().join("release/tracer");
    let dist = util::target_dir().join("dist");
    let stage = dist.join("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let bin = stage.join("usr/bin/tracer");
    util::mkdirs(bin.parent().unwrap())?;
    fs::copy(&built, &bin).with_context(|| format!("copying {}", built.display()))?;
    run_quiet(Command::new("strip").arg("--strip-unneeded").arg(&bin)).context("strip (binutils)")?;
    let libs = check_dynamic_deps(&bin)?;
    println!("dist: {} needs only {}", bin.display(), libs.join(", "));
    let needs = newest_glibc_needed(&bin).map_or(MIN_GLIBC, |v| v.max(MIN_GLIBC));

    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/tracer"),
        ("zsh", "usr/share/zsh/vendor-completions/_tracer"),
        ("fish", "usr/share/fish/vendor_completions.d/tracer.fish"),
    ] {
        let out = run_quiet(Command::new(&bin).args(["completions", shell]))?;
        write(&stage.join(path), &out.stdout)?;
    }
    for sub in [None, Some("record"), Some("report"), Some("serve")] {
        let man = run_quiet(Command::new(&bin).arg("man").args(sub))?;
        let name = sub.map_or("tracer".to_string(), |s| format!("tracer-{s}"));
        let man_path = stage.join(format!("usr/share/man/man1/{name}.1"));
        write(&man_path, &man.stdout)?;
        run_quiet(Command::new("gzip").args(["-9", "-n", "-f"]).arg(&man_path)).context("gzip")?;
    }
    write(
        &stage.join("usr/share/doc/tracer/copyright"),
        format!("tracer {}\nLicense: {}\n", env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_LICENSE")).as_bytes(),
    )?;

    let arch = stdout_of(Command::new("dpkg").arg("--print-architecture")).unwrap_or_else(|_| "amd64".into());
    let version = env!("CARGO_PKG_VERSION");
    let installed_kb = dir_size(&stage)?.div_ceil(1024);
    let control = format!(
        "Package: tracer\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: tracer developers <tracer@localhost>\n\
         Installed-Size: {installed_kb}\n\
         Depends: libc6 (>= {}.{})\n\
         Recommends: ca-certificates\n\
         Section: devel\n\
         Priority: optional\n\
         Description: find the Python lines that leak memory in a running CPython process\n \
         tracer attaches to a running CPython 3.10-3.14 process with eBPF uprobes (root), records\n \
         every outstanding allocation with the Python stack that made it, and reports which lines\n \
         leak, telling leaks apart from caches, freed buffers and start-up imports.\n",
        needs.0, needs.1
    );
    write(&stage.join("DEBIAN/control"), control.as_bytes())?;
    let deb = dist.join(format!("tracer_{version}_{arch}.deb"));
    run_quiet(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&stage).arg(&deb))
        .context("dpkg-deb --build")?;
    let info = stdout_of(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    if !info.contains("Package: tracer") {
        bail!("{} does not read back: {info}", deb.display());
    }
    println!("dist: {} ({} KiB)", deb.display(), fs::metadata(&deb)?.len() / 1024);
    Ok(deb)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    util::mkdirs(path.parent().unwrap())?;
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

/// `ldd`: every shared object the binary loads belongs to glibc's set.
fn check_dynamic_deps(bin: &Path) -> Result<Vec<String>> {
    let out = stdout_of(Command::new("ldd").arg(bin))?;
    let names = parse_ldd(&out);
    let foreign: Vec<&String> = names.iter().filter(|n| !GLIBC_SET.contains(&n.as_str())).collect();
    if !foreign.is_empty() {
        bail!("{} depends on more than glibc: {foreign:?}\n{out}", bin.display());
    }
    if !names.iter().any(|n| n == "libc.so.6") {
        bail!("{} does not link the system libc:\n{out}", bin.display());
    }
    Ok(names)
}

/// The names of the shared objects in `ldd` output (`libc.so.6 => /lib/... (0x...)`).
fn parse_ldd(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|first| first.rsplit('/').next().unwrap_or(first).to_string())
        .filter(|n| n.contains(".so"))
        .collect()
}

/// The newest GLIBC_x.y symbol version the binary needs (`objdump -T`): the package depends
/// on at least that glibc (and never less than MIN_GLIBC).
fn newest_glibc_needed(bin: &Path) -> Option<(u32, u32)> {
    let out = Command::new("objdump").arg("-T").arg(bin).output().ok()?;
    let newest = newest_glibc(&String::from_utf8_lossy(&out.stdout));
    if let Some(v) = newest {
        println!("dist: newest glibc symbol version needed: GLIBC_{}.{}", v.0, v.1);
    }
    newest
}

fn newest_glibc(objdump_t: &str) -> Option<(u32, u32)> {
    objdump_t
        .split_whitespace()
        .filter_map(|w| w.trim_start_matches('(').trim_end_matches(')').strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_read() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x7f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(parse_ldd(out), ["linux-vdso.so.1", "libgcc_s.so.1", "libc.so.6", "ld-linux-x86-64.so.2"]);
    }

    #[test]
    fn glibc_versions_are_compared() {
        let t = "0000 DF *UND* 0 (GLIBC_2.2.5) malloc\n0000 DF *UND* 0 (GLIBC_2.34) pthread_create\n0000 DF *UND* 0 GLIBC_2.17 clock\n";
        assert_eq!(newest_glibc(t), Some((2, 34)));
        assert_eq!(newest_glibc(""), None);
    }
}
