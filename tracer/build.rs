//! Builds the BPF object (tracer-ebpf's `tracer-bpf` binary) with aya-build, so that a plain
//! `cargo build --release` builds everything. The object lands in OUT_DIR/tracer-bpf.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("tracer crate has no parent directory"))?
        .join("tracer-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    let package = aya_build::Package { name: "tracer-ebpf", root_dir: root, ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building the BPF programs (needs nightly + rust-src + bpf-linker: run `cargo xtask setup`)")
}
