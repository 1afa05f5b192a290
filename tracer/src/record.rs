//! `tracer record`: start a session (attach or launch), drive it until the window ends with a
//! progress line, write the reports. Every exit path drops the probes (detaching them) and
//! writes what was seen.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use crate::config::RecordCommand;
use crate::export;
use crate::output;
use crate::report::{Reports, Verdict};
use crate::session::{driver, Session};

/// Exit status of `record --fail-on-leak` when a leak was found.
pub const EXIT_LEAK_FOUND: u8 = 3;

/// `tracer record`: the command line's request to the exit status.
pub fn run(command: RecordCommand) -> Result<ExitCode> {
    let RecordCommand { config, destination, fail_on_leak } = command;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reports = runtime.block_on(async {
        let mut session = Session::start(&config)?;
        let progress = config.progress && std::io::stderr().is_terminal();
        let started = Instant::now();
        let stop = driver::drive(&mut session, config.interval, config.duration, |session, _| {
            if progress {
                print_progress(session, started.elapsed().as_secs_f64());
            }
        })
        .await?;
        if progress {
            eprintln!();
        }
        session.sample();
        anyhow::Ok(session.finish(stop))
    })?;
    // An unwritable -o still prints the report (on stdout); its error is returned last, so
    // that --fail-on-leak's list is printed too and the exit status is the error's.
    let written = output::write(&reports, &destination);
    if destination.path.is_some() && written.is_ok() {
        let width = crate::terminal::width(&std::io::stderr()).unwrap_or(100).max(40);
        eprintln!("{}", crate::terminal::middle(&export::text::verdict_line(&reports), width - 1));
    }
    let leaking = leaks_found(&reports);
    if fail_on_leak && !leaking.is_empty() {
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

/// One line per leak verdict (stacks and containers), for `--fail-on-leak`.
fn leaks_found(reports: &Reports) -> Vec<String> {
    reports
        .as_slice()
        .iter()
        .flat_map(|r| {
            let stacks = r.suspects.iter().filter(|s| s.verdict == Verdict::Leak).map(move |s| {
                format!("pid {}: {} ({})", r.target.pid, s.site().map(|f| f.label()).unwrap_or_default(), s.reason)
            });
            let holders = r
                .holders
                .iter()
                .filter(|h| h.verdict == Verdict::Leak)
                .map(move |h| format!("pid {}: {} {} ({})", r.target.pid, h.path, h.type_name, h.reason));
            stacks.chain(holders)
        })
        .collect()
}

/// The progress line, rewritten in place (`\r`, erase line) and never wider than the terminal
/// (a wrapped line could not be rewritten): the top line is shortened in the middle to fit.
fn print_progress(session: &Session, elapsed_s: f64) {
    let width = crate::terminal::width(&std::io::stderr()).unwrap_or(80).max(20) - 1;
    let Some(c) = session.counters() else {
        let line = format!("[{}] scanning containers", crate::units::duration(elapsed_s));
        eprint!("\r\x1b[2K{}", crate::terminal::middle(&line, width));
        return;
    };
    let records = &session.stacks.records;
    let top = records
        .iter()
        .max_by_key(|r| r.stats.outstanding_bytes)
        .and_then(|r| r.key.frames.iter().find(|f| matches!(f, crate::report::Frame::Python { .. })))
        .map(|f| f.label())
        .unwrap_or_default();
    let events = c.get(tracer_ebpf::Counter::AllocCalls) + c.get(tracer_ebpf::Counter::FreeCalls);
    let rate = events as f64 / elapsed_s.max(0.001);
    let head = format!(
        "[{:>6}] {} events/s  outstanding {}",
        crate::units::duration(elapsed_s),
        crate::units::count(rate.round()),
        crate::units::bytes(session.stacks.outstanding_bytes() as f64),
    );
    let room = width.saturating_sub(head.chars().count() + "  top: ".len());
    let line = if top.is_empty() || room < 12 {
        crate::terminal::middle(&head, width)
    } else {
        format!("{head}  top: {}", crate::terminal::middle(&top, room))
    };
    eprint!("\r\x1b[2K{line}");
}
