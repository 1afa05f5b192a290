//! Host mode: a traced process that ends (its interpreter starts finalizing, it exits or it
//! execs another program) keeps its last report. The report is built once, at the moment the
//! end is seen, and its probes are removed; the daemon keeps serving that report as it was
//! (later samples of a dead process would be flat and turn a leak into "bounded").

use std::time::{Duration, Instant};

use crate::collector::monotonic_ns;
use crate::leaks::Criteria;
use crate::record::{self, Session};
use crate::report::Report;

/// How often the traced processes are checked for having exited without finalizing (killed):
/// finalization and exec are announced by the BPF side at once, an exit is not.
const EXIT_CHECK: Duration = Duration::from_millis(250);

/// The reports of the processes that ended, and what building them needs.
pub struct Ended {
    pub reports: Vec<Report>,
    /// The session's first target (`Session::target`) is among `reports`.
    pub main_ended: bool,
    criteria: Criteria,
    sample_bytes: u64,
    last_exit_check: Instant,
}

impl Ended {
    pub fn new(criteria: Criteria, sample_bytes: u64) -> Ended {
        Ended { reports: Vec::new(), main_ended: false, criteria, sample_bytes, last_exit_check: Instant::now() }
    }
}

/// The processes of the session still traced live: the first target (unless it ended) and the
/// added ones.
pub fn live_pids(session: &Session) -> Vec<u32> {
    let main_ended = session.host.as_ref().is_some_and(|h| h.ended.main_ended);
    let main = (!main_ended).then_some(session.target.pid);
    main.into_iter().chain(session.children.iter().map(|t| t.pid)).collect()
}

/// The instance (`Target::instance`) of the live traced process `pid`; 0 if none.
fn instance_of(session: &Session, pid: u32) -> u64 {
    let main_ended = session.host.as_ref().is_some_and(|h| h.ended.main_ended);
    let main = (!main_ended && session.target.pid == pid).then_some(&session.target);
    main.or_else(|| session.children.iter().rev().find(|t| t.pid == pid)).map_or(0, |t| t.instance)
}

/// Host mode: freezes the report of every traced process that finalized, exited, or is in
/// `execed` (it exec'd another program; its probes are already gone).
pub fn retire(session: &mut Session, execed: &[u32]) {
    let Some(host) = session.host.as_mut() else { return };
    let check_exits = host.ended.last_exit_check.elapsed() >= EXIT_CHECK;
    if check_exits {
        host.ended.last_exit_check = Instant::now();
    }
    let ending: Vec<(u32, &str)> = live_pids(session)
        .into_iter()
        .filter_map(|pid| {
            if session.collector.as_ref().is_some_and(|c| c.process_finalizing(pid, instance_of(session, pid))) {
                Some((pid, "finalization"))
            } else if execed.contains(&pid) || (check_exits && !record::running(pid)) {
                Some((pid, "target_exited"))
            } else {
                None
            }
        })
        .collect();
    if ending.is_empty() {
        return;
    }
    // One more point of every series: the report covers the process up to now.
    record::sample(session);
    let end_ns = monotonic_ns();
    for (pid, view) in ending {
        let Some(host) = session.host.as_ref() else { return };
        let (criteria, sample_bytes) = (host.ended.criteria.clone(), host.ended.sample_bytes);
        let mut report = crate::build_report::build_process(session, pid, view, &criteria, end_ns);
        report.sample_bytes = sample_bytes;
        record::retire(session, pid);
        let Some(host) = session.host.as_mut() else { return };
        if pid == session.target.pid && !host.ended.main_ended {
            host.ended.main_ended = true;
        } else {
            session.children.retain(|t| t.pid != pid);
        }
        host.ended.reports.push(report);
        eprintln!("tracer: pid {pid} ended ({view}); its last report is kept");
    }
}
