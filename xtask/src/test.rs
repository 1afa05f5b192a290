//! `cargo xtask test`: set up (with the test tools), the fmt and clippy gate (lint.rs), build,
//! then `cargo test --release --workspace [ARGS]` with the TRACER_* variables set (see main.rs).

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result};

use crate::build;
use crate::lint;
use crate::setup::{self, Options, Outcome};
use crate::util::{self, describe};

pub struct TestArgs {
    pub skip_setup: bool,
    pub skip_lint: bool,
    pub cargo_args: Vec<String>,
}

/// The arguments after `cargo test --release --workspace`: with a test name, `--test NAME` and
/// the rest for that test binary (after `--`); without, the rest as given.
pub fn cargo_test_args(test: Option<String>, rest: Vec<String>) -> Vec<String> {
    let Some(name) = test else { return rest };
    let mut args = vec!["--test".to_string(), name];
    if !rest.is_empty() {
        args.push("--".into());
        args.extend(rest);
    }
    args
}

/// Returns the exit code of `cargo test`.
pub fn run(args: TestArgs) -> Result<i32> {
    let outcome = if args.skip_setup {
        println!("test: --skip-setup: using what target/ already has");
        setup::existing()
    } else {
        setup::run(Options { test_tools: true })?
    };
    if args.skip_lint {
        println!("test: --skip-lint: no fmt and clippy gate (CI always runs it)");
    } else {
        lint::run()?;
    }
    let tracer = build::run_build()?;
    print_interpreters(&outcome);

    let mut cmd = util::cargo();
    cmd.args(["test", "--release", "--workspace"]).args(&args.cargo_args).current_dir(util::repo_root());
    // Show what passing tests printed too: "skipped: no CPython 3.X" must be seen, not buried.
    match args.cargo_args.iter().position(|a| a == "--") {
        None => {
            cmd.args(["--", "--show-output"]);
        }
        Some(i) if !args.cargo_args[i..].iter().any(|a| a == "--show-output" || a == "--nocapture") => {
            cmd.arg("--show-output");
        }
        Some(_) => {}
    }
    for (key, value) in test_env(&tracer, &outcome) {
        println!("test: {}={}", key, value.to_string_lossy());
        cmd.env(key, value);
    }
    println!("test: {}", describe(&cmd));
    let status = cmd.status().context("could not start `cargo test`")?;
    let code = status.code().unwrap_or(1);
    if status.success() {
        println!("test: passed");
    } else {
        println!("test: FAILED ({status})");
    }
    Ok(code)
}

fn print_interpreters(outcome: &Outcome) {
    println!("test: interpreters found ({}):", outcome.pythons.len());
    for py in &outcome.pythons {
        let venv = match &py.venv_python {
            Some(v) => format!("venv {}", v.display()),
            None => "no venv".to_string(),
        };
        println!("test:   {:<20} {:<8} {}  ({venv})", py.label, py.version, py.path.display());
    }
    for (minor, exe) in [("3.14", &outcome.py314), ("3.15", &outcome.py315)] {
        if exe.is_none() {
            println!("test:   no CPython {minor} (tests needing it report \"skipped: no CPython {minor}\")");
        }
    }
}

fn test_env(tracer: &Path, outcome: &Outcome) -> Vec<(&'static str, OsString)> {
    let mut vars = vec![("TRACER_BIN", tracer.as_os_str().to_owned())];
    let optional = [
        ("TRACER_VENV_PYTHON", outcome.venv_python.as_deref()),
        ("TRACER_PY314", outcome.py314.as_deref()),
        ("TRACER_PY315", outcome.py315.as_deref()),
        ("TRACER_PY313", outcome.py313.as_deref()),
        ("TRACER_VENVS", outcome.venv_index.as_deref()),
    ];
    for (key, value) in optional {
        if let Some(path) = value {
            vars.push((key, path.as_os_str().to_owned()));
        }
    }
    let pythons: Vec<_> = outcome.pythons.iter().map(|p| p.path.clone()).collect();
    if let Ok(joined) = std::env::join_paths(pythons) {
        vars.push(("TRACER_PYTHONS", joined));
    }
    vars
}
