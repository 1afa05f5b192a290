//! Developer and CI tasks for `tracer`: `cargo xtask <command>`.
//!
//!   setup   install what is missing (nightly rust-src, llvm-22-dev, bpf-linker; and, unless
//!           --build-only, the test tools: bpftool, go, Python venvs, CPython 3.14 and 3.15 from
//!           Debian sid).
//!           Idempotent; a second run takes seconds.
//!   build   cargo build --release (tracer/build.rs builds the BPF object via aya-build)
//!   demo    setup + build, then `tracer record -d 12s -i 1s -- python3.11 examples/leaky_service.py`
//!   lint    the fmt and clippy gate: `cargo fmt --all --check`, `cargo clippy --workspace
//!           --all-targets --release -- -D warnings`, and clippy on the BPF programs (see lint.rs)
//!   test    setup + lint + build, then `cargo test --release --workspace [-- ARGS]`;
//!           `--test NAME [-- ARGS]` runs tracer/tests/NAME.rs, ARGS going to that test binary
//!   bench   the tracer's cost vs untraced, memray and bcc memleak; Tornado throughput;
//!           writes BENCHMARKS.md (see xtask/src/bench.rs)
//!   dist    the stripped release binary (glibc only, checked with ldd), shell completions and
//!           a man page from its clap definitions, packed as target/dist/tracer_<v>_<arch>.deb
//!
//! Environment variables `cargo xtask test` sets for the tests (tracer/tests/):
//!
//!   TRACER_BIN          absolute path of target/release/tracer (always set)
//!   TRACER_VENV_PYTHON  python of the fixtures venv: pyenv CPython 3.11.7 with tornado 6 and
//!                       pytest (target/pyenv-venv/bin/python)
//!   TRACER_PY314        patched Debian sid CPython 3.14
//!                       (target/cpython-sid/3.14/root/usr/bin/python3.14-sid); unset when it could
//!                       not be fetched: tests then report "skipped: no CPython 3.14"
//!   TRACER_PY315        the same for Debian sid CPython 3.15 ("skipped: no CPython 3.15")
//!   TRACER_PY313        the same for 3.13; only set when pyenv has no 3.13 and sid's was fetched
//!   TRACER_PYTHONS      every CPython 3 interpreter found (pyenv, /usr/bin/python3.N, sid),
//!                       `:`-separated like PATH
//!   TRACER_VENVS        target/venvs/index.tsv: one line per interpreter found,
//!                       `label<TAB>version<TAB>interpreter<TAB>venv python` (the venv column is
//!                       empty when the interpreter has no tornado venv: < 3.10, or making it
//!                       failed); `#` starts a comment line
//!
//! PATH is also extended with the directories of bpf-linker, bpftool and go when they were found
//! outside it (e.g. ~/.cargo/bin, /usr/sbin).

mod bench;
mod build;
mod cycles;
mod demo;
mod dist;
mod lint;
mod pythons;
mod setup;
mod sid;
mod soak;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about = "Developer and CI tasks for tracer", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building (and, unless --build-only, testing) needs; skips what is present
    Setup {
        /// Only the build prerequisites (nightly rust-src, llvm-22-dev, bpf-linker)
        #[arg(long)]
        build_only: bool,
    },
    /// cargo build --release of the workspace
    Build,
    /// Set up, build, and record examples/leaky_service.py under the tracer (needs root)
    Demo {
        /// Do not run setup first
        #[arg(long)]
        skip_setup: bool,
        /// Do not build first (use the existing target/release/tracer)
        #[arg(long)]
        skip_build: bool,
    },
    /// The fmt and clippy gate that `test` runs first (no setup, no build)
    Lint,
    /// Set up (with test tools), lint, build, and run the test suite; args after `--` go to
    /// cargo test
    Test {
        /// Do not run setup first (use what target/ already has)
        #[arg(long)]
        skip_setup: bool,
        /// Do not run the fmt and clippy gate first (a local loop over one test; CI never
        /// passes it)
        #[arg(long)]
        skip_lint: bool,
        /// Run only tracer/tests/NAME.rs; the arguments after `--` then go to that test binary
        /// (e.g. `--test versions -- --nocapture FILTER`)
        #[arg(long, value_name = "NAME")]
        test: Option<String>,
        /// Extra arguments for `cargo test` (e.g. `-- --test e2e -- --nocapture`), or with
        /// --test for the test binary
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Measure the tracer's cost side by side with memray and bcc memleak (needs root);
    /// writes BENCHMARKS.md
    Bench(bench::BenchArgs),
    /// Build the release .deb (stripped binary, completions, man page) under target/dist/
    Dist,
    /// Run bench/workload.py under `tracer record` for --minutes (default 10), sample the
    /// tracer's RSS every 10 s and write the Soak section of BENCHMARKS.md (needs root)
    Soak(soak::SoakArgs),
}

/// The benchmarks, soaks and tests stop the tracer with SIGINT, as a person's Ctrl-C does. A task
/// started in the background by a script inherits SIGINT ignored, which the tracer keeps (as a
/// background job should): its children get the default back, so SIGINT stops them.
fn sigint_to_default() {
    // SAFETY: sets a disposition to the default before any thread is started.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    sigint_to_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup { build_only } => setup::run(setup::Options { test_tools: !build_only }).map(|_| 0),
        Cmd::Build => build::run_build().map(|_| 0),
        Cmd::Demo { skip_setup, skip_build } => demo::run(demo::DemoArgs { skip_setup, skip_build }).map(|_| 0),
        Cmd::Lint => lint::run().map(|_| 0),
        Cmd::Test { skip_setup, skip_lint, test, cargo_args } => {
            test::run(test::TestArgs { skip_setup, skip_lint, cargo_args: test::cargo_test_args(test, cargo_args) })
        }
        Cmd::Bench(args) => bench::bench(args),
        Cmd::Dist => dist::run_dist().map(|_| 0),
        Cmd::Soak(args) => soak::run(args),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_args(argv: &[&str]) -> Vec<String> {
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Cmd::Test { cargo_args, .. }) => cargo_args,
            _ => panic!("not parsed as `test`: {argv:?}"),
        }
    }

    #[test]
    fn test_passes_args_after_double_dash_to_cargo_test() {
        assert!(test_args(&["xtask", "test"]).is_empty());
        assert_eq!(
            test_args(&["xtask", "test", "--", "--test", "e2e", "--", "--nocapture"]),
            ["--test", "e2e", "--", "--nocapture"]
        );
    }

    #[test]
    fn test_with_a_test_name_passes_the_rest_to_that_test() {
        let args = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Cmd::Test { test, cargo_args, .. }) => test::cargo_test_args(test, cargo_args),
            _ => panic!("not parsed as `test`: {argv:?}"),
        };
        assert_eq!(args(&["xtask", "test", "--skip-setup", "--test", "exports"]), ["--test", "exports"]);
        assert_eq!(
            args(&["xtask", "test", "--test", "versions", "--", "--nocapture", "asyncio"]),
            ["--test", "versions", "--", "--nocapture", "asyncio"]
        );
        assert_eq!(args(&["xtask", "test", "--", "--test", "e2e"]), ["--test", "e2e"]);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
