//! tracer: find the Python lines that leak memory in a running CPython process.

mod btf;
mod build_report;
mod cli;
mod collector;
mod crash;
mod elf;
mod ended;
mod error;
mod export;
mod holders;
mod host;
mod launch;
mod leaks;
mod output;
mod pairing;
mod probes;
mod procfs;
mod python;
mod record;
mod remote;
mod report;
mod series;
mod serve;
mod symbolize;
mod target;
mod units;
mod uprobe_multi;

#[cfg(test)]
mod fuzz_tests;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command, RecordArgs, ReportArgs};
use error::{user_error, UserError};

/// Exit status of `record --fail-on-leak` when a leak was found.
pub const EXIT_LEAK_FOUND: u8 = 3;

fn main() -> ExitCode {
    crash::install_hook();
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).format_timestamp(None).init();
    let result = match cli.command {
        Command::Record(args) => run_record(args),
        Command::Report(args) => run_report(args),
        Command::Serve(args) => serve::main(args),
        Command::Completions { shell } => print_completions(shell),
        Command::Man { subcommand } => print_man(subcommand.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<UserError>() {
                Some(u) => {
                    eprintln!("error: {}", u.message);
                    eprintln!("hint: {}", u.hint);
                }
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

fn run_record(args: RecordArgs) -> Result<ExitCode> {
    let pid = match args.pid {
        None if args.command.is_empty() && !args.all => {
            return Err(user_error(
                "nothing to trace",
                "give a PID (tracer record -p PID) or a command (tracer record -- python3 app.py)",
            ))
        }
        None => None,
        Some(p) if p <= 0 || p > u32::MAX as i64 => {
            return Err(user_error(
                format!("{p} is not a valid PID"),
                "PIDs are positive numbers; find yours with `pgrep -f app.py`",
            ))
        }
        Some(p) => Some(p as u32),
    };
    let host = args.host.filter(args.all, "record")?;
    let criteria = args.tracing.criteria();
    let config = record::RecordConfig {
        pid,
        command: args.command.clone(),
        duration: args.duration,
        interval: args.interval,
        sizes: args.tracing.sizes(),
        criteria,
        python_malloc: args.python_malloc,
        sample_bytes: args.tracing.sample_bytes,
        follow_forks: args.follow_forks,
        host,
        progress: !args.quiet,
        holders: if args.holders_only {
            record::HoldersMode::Only
        } else if args.no_holders {
            record::HoldersMode::Off
        } else {
            record::HoldersMode::On
        },
        holder_budget: args.tracing.holder_budget(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let finished = runtime.block_on(async {
        let mut session = record::start(&config)?;
        let reason = record::run(&mut session, &config).await?;
        anyhow::Ok(record::finish(session, reason, &config))
    })?;
    let record::Finished { reports, skipped } = finished;
    // An unwritable -o still prints the report (on stdout); its error is returned last, so
    // that --fail-on-leak's list is printed too and the exit status is the error's.
    let written = match (reports.as_slice(), &skipped) {
        ([one], None) => output::write_report(one, &args.output),
        _ => output::write_saved(
            &output::Saved::Many(report::MultiReport {
                schema: report::SCHEMA,
                processes: reports.clone(),
                skipped: skipped.unwrap_or_default(),
            }),
            &args.output,
        ),
    };
    let leaking: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            let stacks = r.suspects.iter().filter(|s| s.verdict == report::Verdict::Leak).map(move |s| {
                let site = s.stack.iter().find(|f| matches!(f, report::Frame::Python { .. })).or(s.stack.first());
                format!("pid {}: {} ({})", r.target.pid, site.map(|f| f.label()).unwrap_or_default(), s.reason)
            });
            let holders = r
                .holders
                .iter()
                .filter(|h| h.verdict == report::Verdict::Leak)
                .map(move |h| format!("pid {}: {} {} ({})", r.target.pid, h.path, h.type_name, h.reason));
            stacks.chain(holders)
        })
        .collect();
    if args.fail_on_leak && !leaking.is_empty() {
        eprintln!("tracer: {} leaks found", leaking.len());
        for l in &leaking {
            eprintln!("  leak: {l}");
        }
        written?;
        return Ok(ExitCode::from(EXIT_LEAK_FOUND));
    }
    written?;
    Ok(ExitCode::SUCCESS)
}

/// `tracer completions SHELL` (hidden): the completion script, generated from the clap definitions.
fn print_completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "tracer", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// `tracer man [SUBCOMMAND]` (hidden): tracer(1) or tracer-SUBCOMMAND(1) (roff), generated
/// from the clap definitions.
fn print_man(subcommand: Option<&str>) -> Result<ExitCode> {
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

/// A saved report larger than this is not one of ours (and an endless input must not exhaust
/// memory).
const MAX_REPORT_BYTES: u64 = 256 << 20;

fn read_limited(path: &std::path::Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {limit} bytes")));
    }
    Ok(text)
}

fn run_report(args: ReportArgs) -> Result<ExitCode> {
    let text = read_limited(&args.input, MAX_REPORT_BYTES).map_err(|e| {
        user_error(
            format!("cannot read {}: {e}", args.input.display()),
            "pass a JSON report written by `tracer record -f json -o FILE`",
        )
    })?;
    let saved = output::parse_saved(&text).map_err(|e| {
        user_error(
            format!("{} is not a tracer JSON report: {e}", args.input.display()),
            "pass a file written by `tracer record -f json -o FILE`",
        )
    })?;
    output::write_saved(&saved, &args.output)?;
    Ok(ExitCode::SUCCESS)
}
