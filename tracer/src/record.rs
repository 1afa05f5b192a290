//! `tracer record`: start a session (attach or launch), drive it until the window ends with a
//! progress line, write the reports. Every exit path drops the probes (detaching them) and
//! writes what was seen.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::RecordCommand;
use crate::export;
use crate::launch::Launched;
use crate::output;
use crate::report::{CommandEnd, FinalView, Reports, Verdict};
use crate::session::{driver, Session};

/// Exit status of `record --fail-on-leak` when a leak was found.
pub const EXIT_LEAK_FOUND: u8 = 3;

/// How long a launched command is waited for after a signal stopped the recording (it usually
/// got the same Ctrl-C from the terminal).
const SIGNAL_GRACE: Duration = Duration::from_secs(3);

/// `tracer record`: the command line's request to the exit status.
pub fn run(command: RecordCommand) -> Result<ExitCode> {
    let RecordCommand { config, destination, fail_on_leak } = command;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut reports, ended) = runtime.block_on(async {
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
        let launched = session.take_launched();
        let reports = session.finish(stop);
        let ended = match launched {
            Some(l) => Some(wait_for_command(l, stop).await?),
            None => None,
        };
        anyhow::Ok((reports, ended))
    })?;
    if let Some(end) = &ended {
        eprintln!("tracer: the command {end}");
        record_command_end(&mut reports, end);
    }
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
    }
    written?;
    Ok(ExitCode::from(exit_status(fail_on_leak, leaking.len(), ended.as_ref())))
}

/// The exit status (README, "Exit status"): a leak found under `--fail-on-leak` decides; else
/// the launched command's own status (128 + the signal when one killed it); else 0.
fn exit_status(fail_on_leak: bool, leaks: usize, command: Option<&CommandEnd>) -> u8 {
    if fail_on_leak && leaks > 0 {
        return EXIT_LEAK_FOUND;
    }
    command.map_or(0, CommandEnd::shell_status)
}

/// The command's end goes into the first process's report (the one launched).
fn record_command_end(reports: &mut Reports, end: &CommandEnd) {
    let first = match reports {
        Reports::One(r) => Some(r),
        Reports::Many(m) => m.processes.first_mut(),
    };
    if let Some(r) = first {
        r.command = Some(end.clone());
    }
}

/// Waits for the launched command to end: for as long as it takes when its end stopped the
/// recording, a short grace after a signal, not at all after the duration. A signal to the
/// tracer stops the wait.
async fn wait_for_command(mut launched: Launched, stop: FinalView) -> Result<CommandEnd> {
    let budget = match stop {
        FinalView::Finalization | FinalView::TargetExited => None,
        FinalView::Interrupted => Some(SIGNAL_GRACE),
        FinalView::Duration | FinalView::Live => Some(Duration::ZERO),
    };
    let started = Instant::now();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut told = false;
    loop {
        if let Some(end) = launched.ended() {
            return Ok(end);
        }
        if budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        if !told && started.elapsed() >= Duration::from_secs(2) {
            eprintln!("tracer: waiting for the command (pid {}) to end; Ctrl-C stops waiting", launched.pid);
            told = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    Ok(CommandEnd::StillRunning { pid: launched.pid })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_under_fail_on_leak_decides_else_the_command_does() {
        let failed = CommandEnd::Exited { status: 1 };
        let segv = CommandEnd::Killed { signal: 11, name: "SIGSEGV".into(), core_dumped: false };
        let running = CommandEnd::StillRunning { pid: 9 };
        assert_eq!(exit_status(true, 2, Some(&failed)), EXIT_LEAK_FOUND);
        assert_eq!(exit_status(true, 2, None), EXIT_LEAK_FOUND);
        assert_eq!(exit_status(false, 2, None), 0, "without --fail-on-leak a leak is only reported");
        assert_eq!(exit_status(false, 2, Some(&failed)), 1);
        assert_eq!(exit_status(true, 0, Some(&failed)), 1);
        assert_eq!(exit_status(true, 0, Some(&segv)), 139);
        assert_eq!(exit_status(true, 0, Some(&running)), 0);
        assert_eq!(exit_status(true, 0, Some(&CommandEnd::Exited { status: 0 })), 0);
    }
}
