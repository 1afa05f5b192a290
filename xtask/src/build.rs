//! `cargo xtask build`: `cargo build --release` of the workspace's default members (tracer,
//! xtask). tracer/build.rs builds the BPF object through aya-build; nothing BPF-specific here.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::util::{self, run};

/// Build everything in release mode; returns the absolute path of target/release/tracer.
pub fn run_build() -> Result<PathBuf> {
    println!("build: cargo build --release");
    run(util::cargo().args(["build", "--release"]).current_dir(util::repo_root()))
        .context("building the workspace (cargo build --release)")?;
    tracer_bin()
}

/// target/release/tracer, which must exist.
pub fn tracer_bin() -> Result<PathBuf> {
    let bin = util::target_dir().join("release/tracer");
    if !util::is_executable(&bin) {
        anyhow::bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

/// Set-up (unless skipped; never the test-only tools), then the release build (unless skipped):
/// the tracer binary to run.
pub fn prepare(skip_setup: bool, skip_build: bool) -> Result<PathBuf> {
    if !skip_setup {
        crate::setup::run(crate::setup::Options { test_tools: false })?;
    }
    if skip_build {
        tracer_bin()
    } else {
        run_build()
    }
}
