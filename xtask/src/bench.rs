//! `cargo xtask bench` and `cargo xtask dist`: later work.

use anyhow::{bail, Result};

pub fn bench(quick: bool) -> Result<()> {
    let _ = quick;
    bail!("bench: not implemented yet")
}

pub fn dist() -> Result<()> {
    bail!("dist: not implemented yet")
}
