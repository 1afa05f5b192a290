//! The style and lint gate: `cargo xtask lint`, and the first step of `cargo xtask test` (so CI
//! runs it). Each check fails with the command that fixes or re-checks it.
//!
//! 1. `cargo fmt --all --check`: the style of rustfmt.toml.
//! 2. `cargo clippy --workspace --all-targets --release -- -D warnings`: tracer, xtask and, built
//!    for the host, tracer-ebpf's shared ABI (its lib.rs). The lints the workspace chose are in the
//!    root Cargo.toml (`[workspace.lints]`); this adds clippy's defaults and denies every warning.
//! 3. clippy on tracer-ebpf for the BPF target. The BPF programs are `cfg(target_arch = "bpf")`,
//!    so the host pass above never sees them; this pass compiles the crate the way tracer/build.rs
//!    (aya-build) does: the nightly, `-Z build-std=core`, `--target bpfel-unknown-none` and
//!    `--cfg bpf_target_arch`. It only checks (no bpf-linker) and keeps its own target directory,
//!    target/clippy-bpf, so it never invalidates the release build.
//! 4. No import cycle among the modules of tracer/src and xtask/src (cycles.rs), run before clippy.

use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{self, describe};

/// Lints the BPF pass allows for now, each with the reason. needless_borrows_for_generic_args:
/// tracer-ebpf/src/programs.rs passes map keys and values as `&key` to aya-ebpf's
/// `impl Borrow<K>` parameters (30 sites when this pass was added); remove the entry once they
/// pass by value.
const BPF_ALLOWED: &[&str] = &["clippy::needless_borrows_for_generic_args"];

/// Runs the three checks; the first failure is an error that names the fixing command.
pub fn run() -> Result<()> {
    fmt()?;
    cycles()?;
    clippy_host()?;
    clippy_bpf()
}

/// 4. No import cycle among the modules of tracer/src and xtask/src (cycles.rs).
fn cycles() -> Result<()> {
    for crate_src in ["tracer/src", "xtask/src"] {
        let found = crate::cycles::find(&util::repo_root().join(crate_src))?;
        if !found.is_empty() {
            let list: Vec<String> = found.iter().map(|c| c.join(" <-> ")).collect();
            bail!(
                "import cycles among the modules of {crate_src}:\n  {}\nhint: move what both sides need into a \
                 module that neither imports, so that imports go one way (docs/structure.md)",
                list.join("\n  ")
            );
        }
    }
    println!("lint: no import cycle in tracer/src or xtask/src");
    Ok(())
}

fn fmt() -> Result<()> {
    let mut cmd = util::cargo();
    cmd.args(["fmt", "--all", "--check"]).current_dir(util::repo_root());
    if !status(&mut cmd, "lint")? {
        bail!(
            "the code is not formatted as rustfmt.toml says (the diff is above).\nhint: run `cargo fmt --all`, \
             review and commit the result"
        );
    }
    Ok(())
}

fn clippy_host() -> Result<()> {
    let mut cmd = util::cargo();
    cmd.args(["clippy", "--workspace", "--all-targets", "--release", "--", "-D", "warnings"])
        .current_dir(util::repo_root());
    if !status(&mut cmd, "lint")? {
        bail!(
            "clippy found warnings, and CI denies them (listed above).\nhint: fix them (`cargo clippy --workspace \
             --all-targets --release --fix --allow-dirty` applies clippy's own suggestions), then re-check with \
             `cargo xtask lint`"
        );
    }
    Ok(())
}

fn clippy_bpf() -> Result<()> {
    let mut cmd = bpf_clippy_command();
    if !status(&mut cmd, "lint")? {
        bail!(
            "clippy found warnings in the BPF programs (tracer-ebpf built for the BPF target, listed above).\n\
             hint: fix them, then re-check with `cargo xtask lint`"
        );
    }
    Ok(())
}

/// `rustup run nightly cargo clippy -p tracer-ebpf` for the BPF target, with aya-build's flags.
fn bpf_clippy_command() -> Command {
    let target = if cfg!(target_endian = "big") { "bpfeb-unknown-none" } else { "bpfel-unknown-none" };
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "clippy", "--package", "tracer-ebpf", "--release", "--target", target])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(util::target_dir().join("clippy-bpf"))
        .args(["--", "-D", "warnings"]);
    for lint in BPF_ALLOWED {
        cmd.args(["-A", lint]);
    }
    // The BPF programs read registers per architecture (aya-ebpf's bpf_target_arch).
    cmd.env("CARGO_ENCODED_RUSTFLAGS", format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH))
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .current_dir(util::repo_root());
    cmd
}

/// Runs `cmd` with inherited output after a `prefix: <command>` line; did it succeed?
fn status(cmd: &mut Command, prefix: &str) -> Result<bool> {
    println!("{prefix}: {}", describe(cmd));
    let status = cmd.status();
    match status {
        Ok(s) => Ok(s.success()),
        Err(e) => bail!(
            "could not start `{}`: {e}\nhint: run `cargo xtask setup` (it installs rustfmt and clippy)",
            describe(cmd)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_pass_is_aya_builds_compilation_checked() {
        let text = describe(&bpf_clippy_command());
        for part in ["run nightly cargo clippy", "--package tracer-ebpf", "-Z build-std=core", "-- -D warnings"] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
        assert!(text.contains("clippy-bpf"), "own target dir: {text}");
    }
}
