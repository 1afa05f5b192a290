//! The small commands: `tracer report` (re-render a saved report), and the hidden
//! `completions` and `man` generated from the clap definitions.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::Cli;
use crate::config::Destination;
use crate::error::user_error;
use crate::output;
use crate::report::Reports;

/// A saved report larger than this is not one of ours (and an endless input must not exhaust
/// memory).
const MAX_REPORT_BYTES: u64 = 256 << 20;

/// `tracer report FILE`: a saved JSON report (one process or several) in another format;
/// `tracer report -` reads it from stdin.
pub fn report(input: &Path, destination: &Destination) -> Result<ExitCode> {
    output::check(destination)?;
    let stdin = input == Path::new("-");
    let name = if stdin { "stdin".to_string() } else { input.display().to_string() };
    let read = if stdin {
        read_limited(std::io::stdin().lock(), MAX_REPORT_BYTES)
    } else {
        std::fs::File::open(input).and_then(|f| read_limited(f, MAX_REPORT_BYTES))
    };
    let text = read.map_err(|e| {
        user_error(format!("cannot read {name}: {e}"), "pass a JSON report written by `tracer record -f json -o FILE`")
    })?;
    let reports = Reports::parse(&text).map_err(|e| {
        user_error(
            format!("{name} is not a tracer JSON report: {e}"),
            "pass a file written by `tracer record -f json -o FILE`",
        )
    })?;
    output::write(&reports, destination)?;
    Ok(ExitCode::SUCCESS)
}

fn read_limited(input: impl std::io::Read, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    input.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {limit} bytes")));
    }
    Ok(text)
}

/// `tracer completions SHELL` (hidden): the completion script, generated from the clap definitions.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "tracer", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// `tracer man [SUBCOMMAND]` (hidden): tracer(1) or tracer-SUBCOMMAND(1) (roff), generated
/// from the clap definitions.
pub fn man(subcommand: Option<&str>) -> Result<ExitCode> {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    cli.build();
    let page = match subcommand {
        None => cli,
        Some(name) => {
            let sub = cli
                .find_subcommand(name)
                .filter(|s| !s.is_hide_set())
                .cloned()
                .ok_or_else(|| user_error(format!("no subcommand {name}"), "one of: record, report, serve"))?;
            // A one-shot process: the page's name may live until exit.
            let full: &'static str = Box::leak(format!("tracer-{name}").into_boxed_str());
            sub.name(full).version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    std::io::Write::write_all(&mut std::io::stdout(), &out)?;
    Ok(ExitCode::SUCCESS)
}
