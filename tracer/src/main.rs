//! tracer: find the Python lines that leak memory in a running CPython process.

mod btf;
mod census;
mod chunks;
mod cli;
mod clock;
mod cmd;
mod collector;
mod config;
mod crash;
mod elf;
mod error;
mod escape;
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
mod redact;
mod remote;
mod report;
mod resolve;
mod safe_write;
mod series;
mod serve;
mod session;
mod stacks;
mod symbolize;
mod target;
mod terminal;
mod units;
mod uprobe_multi;

#[cfg(test)]
mod fuzz_tests;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use error::UserError;

/// Each heap scan builds and drops tens of megabytes of short-lived buffers. With glibc's
/// defaults the big ones are fresh mappings and the freed top of the heap goes back to the
/// kernel, so every scan page-faulted its memory in again (a tenth of a scan's time, measured
/// with perf). Keeping them in the heap costs no more than the peak, which is measured anyway.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    crash::install_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A flag's own check that found a mistake a person can fix: `error:` and `hint:`.
        Err(e) => match cli::user_error_of(&e) {
            Some(u) => return report_user_error(u),
            None => e.exit(),
        },
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).format_timestamp(None).init();
    let result = match cli.command {
        Command::Record(args) => args.into_config().and_then(record::run),
        Command::Report(args) => {
            let (input, destination) = args.into_config();
            cmd::report(&input, &destination)
        }
        Command::Serve(args) => args.into_config().and_then(serve::run),
        Command::Completions { shell } => cmd::completions(shell),
        Command::Man { subcommand } => cmd::man(subcommand.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<UserError>() {
            Some(u) => report_user_error(u),
            None => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn report_user_error(u: &UserError) -> ExitCode {
    eprintln!("error: {}", u.message);
    eprintln!("hint: {}", u.hint);
    ExitCode::from(1)
}
