//! `cargo xtask demo`: set up, build, then record examples/leaky_service.py under the tracer and
//! print the text report.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build;
use crate::pythons;
use crate::util::{self, describe};

pub struct DemoArgs {
    pub skip_setup: bool,
    pub skip_build: bool,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let tracer = build::prepare(args.skip_setup, args.skip_build)?;
    let python = pythons::base_python()?;
    let script = util::repo_root().join("examples/leaky_service.py");
    if !script.exists() {
        bail!("{} is missing", script.display());
    }
    if !util::is_root() {
        println!("demo: note: the tracer loads eBPF programs and needs root; expect an error otherwise");
    }
    let mut cmd = Command::new(&tracer);
    cmd.args(["record", "-d", "12s", "-i", "1s", "--"]).arg(&python).arg(&script).current_dir(util::repo_root());
    println!("demo: {}", describe(&cmd));
    // The report goes to our stdout; live progress to stderr.
    let status = cmd.status().with_context(|| format!("could not start {}", tracer.display()))?;
    if !status.success() {
        bail!("the tracer failed ({status})");
    }
    Ok(())
}
