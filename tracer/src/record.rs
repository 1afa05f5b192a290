//! `tracer record`: start a session (attach or launch), drive it until the window ends with a
//! progress line, write the reports. Every exit path drops the probes (detaching them) and
//! writes what was seen.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::config::RecordCommand;
use crate::export;
use crate::launch::Launched;
use crate::output;
use crate::report::{CommandEnd, FinalView, Reports, TestShare, Verdict};
use crate::session::{driver, Session};

/// Exit status of `record --fail-on-leak` when a leak was found.
pub const EXIT_LEAK_FOUND: u8 = 3;
/// Exit status of `record --fail-on-leak` when no leak was found but a table filled: "no leak"
/// cannot be told (the report's `inconclusive`).
pub const EXIT_INCONCLUSIVE: u8 = 4;

/// How long a launched command is waited for after a signal stopped the recording (it usually
/// got the same Ctrl-C from the terminal).
const SIGNAL_GRACE: Duration = Duration::from_secs(3);

/// `tracer record`: the command line's request to the exit status.
pub fn run(command: RecordCommand) -> Result<ExitCode> {
    let RecordCommand { config, destination, fail_on_leak } = command;
    output::check(&destination)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut reports, ended) = runtime.block_on(async {
        let mut stops = driver::Stops::new()?;
        let mut session = Session::start(&config)?;
        let progress = config.progress && std::io::stderr().is_terminal();
        let started = Instant::now();
        let stop = driver::drive(
            &mut session,
            &mut stops,
            (config.interval, driver::Cadence::DenseStart),
            config.duration,
            |session, _| {
                if progress {
                    print_progress(session, started.elapsed().as_secs_f64());
                }
            },
        )
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
        // Shortened to the terminal's width on one; whole in a log.
        let line = crate::escape::visible(&export::text::verdict_line(&reports)).into_owned();
        match crate::terminal::width(&std::io::stderr()).filter(|_| std::io::stderr().is_terminal()) {
            Some(w) => eprintln!("{}", crate::terminal::middle(&line, w.max(40) - 1)),
            None => eprintln!("{line}"),
        }
    }
    let leaking = leaks_found(&reports);
    if fail_on_leak && !leaking.is_empty() {
        eprintln!("tracer: {} leaks found", leaking.len());
        for l in &leaking {
            // Escaped piece by piece (`leaks_found`): the tests under a leak are lines of their own.
            eprintln!("  leak: {l}");
        }
    }
    let inconclusive: Vec<&str> =
        reports.as_slice().iter().filter_map(|r| r.inconclusive.as_ref()).map(|i| i.reason.as_str()).collect();
    if let Some(reason) = inconclusive.first() {
        eprintln!("tracer: {reason}");
    }
    written?;
    let status = exit_status(fail_on_leak, leaking.len(), !inconclusive.is_empty(), ended.as_ref());
    Ok(ExitCode::from(status))
}

/// The exit status (README, "Exit status"): a leak found under `--fail-on-leak` decides; else
/// the launched command's own failure (128 + the signal when one killed it); else, under
/// `--fail-on-leak`, a verdict a full table made inconclusive; else 0.
fn exit_status(fail_on_leak: bool, leaks: usize, inconclusive: bool, command: Option<&CommandEnd>) -> u8 {
    if fail_on_leak && leaks > 0 {
        return EXIT_LEAK_FOUND;
    }
    let own = command.map_or(0, CommandEnd::shell_status);
    if own != 0 {
        return own;
    }
    if fail_on_leak && inconclusive {
        return EXIT_INCONCLUSIVE;
    }
    0
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
    let mut sigint = driver::Stop::new(libc::SIGINT)?;
    let mut sigterm = driver::Stop::new(libc::SIGTERM)?;
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

/// One line per leak verdict (stacks and containers), for `--fail-on-leak`, with the tests
/// under it on lines of their own; what comes from the target is escaped (`escape::visible`).
fn leaks_found(reports: &Reports) -> Vec<String> {
    use crate::escape::visible;
    reports
        .as_slice()
        .iter()
        .flat_map(|r| {
            let stacks = r.suspects.iter().filter(|s| s.verdict == Verdict::Leak).map(move |s| {
                let site = s.site().map(|f| f.label()).unwrap_or_default();
                format!("pid {}: {} ({}){}", r.target.pid, visible(&site), visible(&s.reason), in_tests(&s.tests))
            });
            let holders = r.holders.iter().filter(|h| h.verdict == Verdict::Leak).map(move |h| {
                let (path, type_name) = (visible(&h.path), visible(&h.type_name));
                format!("pid {}: {path} {type_name} ({}){}", r.target.pid, visible(&h.reason), in_tests(&h.tests))
            });
            stacks.chain(holders)
        })
        .collect()
}

/// The tests a leak was allocated in, one per line under it (the ten largest), for CI logs.
fn in_tests(tests: &[TestShare]) -> String {
    const SHOWN: usize = 10;
    let mut out = String::new();
    for t in tests.iter().take(SHOWN) {
        let (name, bytes) = (crate::escape::visible(&t.test), crate::units::bytes(t.outstanding_bytes as f64));
        out.push_str(&format!("\n        in test {name} ({bytes})"));
    }
    if tests.len() > SHOWN {
        out.push_str(&format!("\n        and {} more tests", tests.len() - SHOWN));
    }
    out
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
        .map(|f| crate::escape::visible(&f.label()).to_string())
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
        let ok = CommandEnd::Exited { status: 0 };
        assert_eq!(exit_status(true, 2, false, Some(&failed)), EXIT_LEAK_FOUND);
        assert_eq!(exit_status(true, 2, true, None), EXIT_LEAK_FOUND);
        assert_eq!(exit_status(false, 2, false, None), 0, "without --fail-on-leak a leak is only reported");
        assert_eq!(exit_status(false, 2, true, Some(&failed)), 1);
        assert_eq!(exit_status(true, 0, false, Some(&failed)), 1);
        assert_eq!(exit_status(true, 0, true, Some(&segv)), 139, "the command's failure before a full table");
        assert_eq!(exit_status(true, 0, false, Some(&running)), 0);
        assert_eq!(exit_status(true, 0, false, Some(&ok)), 0);
        assert_eq!(exit_status(true, 0, true, Some(&ok)), EXIT_INCONCLUSIVE);
        assert_eq!(exit_status(true, 0, true, None), EXIT_INCONCLUSIVE);
        assert_eq!(exit_status(false, 0, true, None), 0);
    }
}
