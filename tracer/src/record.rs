//! `tracer record`: start a session (attach or launch), drive it until the window ends with a
//! progress line, write the reports. Every exit path drops the probes (detaching them) and
//! writes what was seen.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use crate::config::RecordCommand;
use crate::output;
use crate::report::{Reports, TestShare, Verdict};
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
        let stop = driver::drive(
            &mut session,
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
        anyhow::Ok(session.finish(stop))
    })?;
    // An unwritable -o still prints the report (on stdout); its error is returned last, so
    // that --fail-on-leak's list is printed too and the exit status is the error's.
    let written = output::write(&reports, &destination);
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
                let site = s.site().map(|f| f.label()).unwrap_or_default();
                format!("pid {}: {} ({}){}", r.target.pid, site, s.reason, in_tests(&s.tests))
            });
            let holders = r.holders.iter().filter(|h| h.verdict == Verdict::Leak).map(move |h| {
                format!("pid {}: {} {} ({}){}", r.target.pid, h.path, h.type_name, h.reason, in_tests(&h.tests))
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
        out.push_str(&format!("\n        in test {} ({})", t.test, crate::units::bytes(t.outstanding_bytes as f64)));
    }
    if tests.len() > SHOWN {
        out.push_str(&format!("\n        and {} more tests", tests.len() - SHOWN));
    }
    out
}

fn print_progress(session: &Session, elapsed_s: f64) {
    let Some(c) = session.counters() else {
        eprint!("\r\x1b[2K[{elapsed_s:>6.1}s] scanning containers");
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
    eprint!(
        "\r\x1b[2K[{elapsed_s:>6.1}s] {rate:>9.0} events/s  outstanding {}  top: {}",
        crate::units::bytes(session.stacks.outstanding_bytes() as f64),
        top
    );
}
