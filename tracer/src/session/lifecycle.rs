//! How traced processes come and go: forks (`--follow-forks`), execs, host-mode newcomers, a
//! PID taken by a new process, and which processes ended and how. Every process is handled
//! alike; only in single mode does the first one's end stop the recording.

use std::time::{Duration, Instant};

use crate::collector::Announcement;
use crate::host::HostFilter;
use crate::report::FinalView;
use crate::target;

use super::{Mode, Session};

/// How often the traced processes are checked for having exited without finalizing (killed,
/// or `os._exit`): finalization and exec are announced by the BPF side at once, an exit is not.
const EXIT_CHECK: Duration = Duration::from_millis(250);

/// Where a traced process is in its life, as the session saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcState {
    /// Its interpreter started finalizing.
    pub finalizing: bool,
    /// It ended, and how; set once.
    pub ended: Option<FinalView>,
}

impl ProcState {
    /// Whether it ended, and how, judged now: it finalized (its final view is the memory as it
    /// was before module teardown), or it exec'd another program or exited (`runs` is asked
    /// only when the other signs say nothing).
    pub fn ending(&self, execed: bool, runs: impl FnOnce() -> bool) -> Option<FinalView> {
        if self.ended.is_some() {
            return None;
        }
        if self.finalizing {
            return Some(FinalView::Finalization);
        }
        (execed || !runs()).then_some(FinalView::TargetExited)
    }

    /// The view its report takes: how it ended, or `running` while it runs.
    pub fn view(&self, running: FinalView) -> FinalView {
        self.ended.unwrap_or(running)
    }
}

/// The view of the processes still running when the recording stopped because of `stop`: the
/// duration or a signal stops all of them alike; when the first process's end stopped it, the
/// others were live.
pub fn view_of_running(stop: FinalView) -> FinalView {
    match stop {
        FinalView::Duration | FinalView::Interrupted | FinalView::Live => stop,
        FinalView::Finalization | FinalView::TargetExited => FinalView::Live,
    }
}

/// One housekeeping step: handles what the BPF side announced (in order), ends the processes
/// that finalized or exited, and in host mode attaches the newcomers that are ready. `Some`
/// when that stops the recording (single mode: the first process ended), with its view.
pub fn follow(session: &mut Session) -> Option<FinalView> {
    session.absorb();
    let mut stop = None;
    // Ending a process drains the ring buffer again, which may queue more.
    while !session.pending.is_empty() {
        for a in std::mem::take(&mut session.pending) {
            match a {
                Announcement::NewStack(_) => {}
                Announcement::Finalizing(pid) => {
                    if let Some(i) = session.live_index(pid) {
                        session.procs[i].state.finalizing = true;
                    }
                }
                Announcement::Exec(pid) => {
                    if let Some(i) = session.live_index(pid) {
                        stop = stop.or(end(session, &[(i, FinalView::TargetExited)]));
                        // A followed child that execs is traced again as what it became.
                        if let (Some(execed), true) = (session.execed.as_mut(), i > 0) {
                            execed.add(pid);
                        }
                    }
                    if let Mode::Host(h) = &mut session.mode {
                        h.newcomers.add(pid);
                    }
                }
                Announcement::Forked { child, parent } => {
                    // A new process never gets a live PID: a traced one with this PID has ended.
                    if let Some(i) = session.live_index(child) {
                        stop = stop.or(end(session, &[(i, FinalView::TargetExited)]));
                    }
                    follow_fork(session, child, parent);
                }
            }
        }
    }
    let check_exits = session.last_exit_check.elapsed() >= EXIT_CHECK;
    if check_exits {
        session.last_exit_check = Instant::now();
    }
    let ending: Vec<(usize, FinalView)> = (0..session.procs.len())
        .filter_map(|i| {
            let p = &session.procs[i];
            p.state.ending(false, || !check_exits || p.target.still_runs()).map(|view| (i, view))
        })
        .collect();
    if !ending.is_empty() {
        stop = stop.or(end(session, &ending));
    }
    add_newcomers(session);
    stop
}

/// Ends these processes: each keeps the report it has now, and lets go of its probes and map
/// entries. In single mode the first process's end stops the recording instead: its report is
/// built with the others' when the session finishes (`Some(view)` is returned).
fn end(session: &mut Session, ending: &[(usize, FinalView)]) -> Option<FinalView> {
    let single = matches!(session.mode, Mode::Single);
    let stops_recording = |i: usize| i == 0 && single;
    let mut stop = None;
    let frozen: Vec<(usize, FinalView)> = ending.iter().copied().filter(|&(i, _)| !stops_recording(i)).collect();
    if !frozen.is_empty() {
        // One more point of every stack's series: the reports cover the processes up to now.
        session.sample_stacks();
        let counters = session.counters().unwrap_or_default();
        let ages = session.oldest_ages(crate::clock::monotonic_ns());
        for &(i, view) in &frozen {
            session.procs[i].frozen = Some(session.report(i, view, &counters, &ages));
        }
    }
    for &(i, view) in ending {
        session.procs[i].state.ended = Some(view);
        if stops_recording(i) {
            stop = Some(view);
        } else {
            session.release(i);
            let pid = session.procs[i].target.pid;
            if session.is_host() {
                eprintln!("tracer: pid {pid} ended ({view}); its last report is kept");
            } else {
                log::info!("pid {pid} ended ({view})");
            }
        }
    }
    stop
}

/// Processes (forked children, host-mode newcomers) that were not traced: a fork storm must not flood stderr (a thousand
/// short-lived children made a thousand warnings), so the first few that could have been
/// followed are named, and the rest are counted and summed up at the end.
#[derive(Debug, Default)]
pub struct Unfollowed {
    /// Processes that exited before they could be inspected or attached to (the usual case in
    /// a storm).
    pub exited: u64,
    /// Children still running that could not be traced.
    pub refused: u64,
}

/// Children still running that are named on stderr; the others are counted.
const UNFOLLOWED_NAMED: u64 = 3;

impl Unfollowed {
    /// One line for everything that was only counted.
    pub fn summarize(&self) {
        let quiet = self.refused.saturating_sub(UNFOLLOWED_NAMED);
        if self.exited == 0 && quiet == 0 {
            return;
        }
        let mut parts = Vec::new();
        if self.exited > 0 {
            parts.push(format!("{} exited before they could be traced", crate::units::count(self.exited)));
        }
        if quiet > 0 {
            parts.push(format!("{} more could not be traced (-v names them)", crate::units::count(quiet)));
        }
        eprintln!("tracer: processes not traced: {}", parts.join(", "));
    }
}

/// Traces a child the BPF side saw fork from a traced process (`--follow-forks`).
fn follow_fork(session: &mut Session, child: u32, parent: u32) {
    match target::inspect(child) {
        Ok(t) => {
            session.add(t, &format!("forked from {parent}"));
        }
        Err(e) => {
            if let Some(p) = session.probes.as_mut() {
                p.remove_target(child);
            }
            let u = &mut session.unfollowed;
            if !crate::procfs::is_running(child) {
                u.exited += 1;
                log::info!("not following pid {child} (forked from {parent}): it exited first ({e:#})");
                return;
            }
            u.refused += 1;
            if u.refused <= UNFOLLOWED_NAMED {
                let more = if u.refused == UNFOLLOWED_NAMED { "; further ones are counted, not listed" } else { "" };
                log::warn!("not following pid {child} (forked from {parent}): {e:#}{more}");
            } else {
                log::info!("not following pid {child} (forked from {parent}): {e:#}");
            }
        }
    }
}

/// Host mode: traces the processes started after the tracer once they are inspectable CPython
/// processes, up to `--max-processes` traced at once. With `--follow-forks`, the followed
/// children that exec'd a CPython program.
fn add_newcomers(session: &mut Session) {
    if let Some(execed) = session.execed.as_mut() {
        let anyone = HostFilter { matching: None, exclude: Vec::new(), max_processes: usize::MAX };
        let mut not_python = Vec::new();
        for t in execed.poll(&anyone, &mut not_python) {
            session.add(t, "exec'd by a followed process");
        }
        for s in not_python {
            log::info!("not following pid {} after its exec: {}", s.pid, s.reason);
        }
    }
    let live = session.live().count();
    let Mode::Host(h) = &mut session.mode else { return };
    let ready = h.newcomers.poll(&h.filter, &mut h.skipped);
    let cap = h.filter.max_processes;
    let mut added = 0;
    for t in ready {
        if live + added >= cap {
            eprintln!("tracer: not tracing pid {}: the --max-processes cap of {cap} is reached", t.pid);
            continue;
        }
        if session.add(t, "started after the tracer") {
            added += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_finalized_takes_the_finalization_view_even_once_gone() {
        let s = ProcState { finalizing: true, ended: None };
        assert_eq!(s.ending(false, || true), Some(FinalView::Finalization));
        assert_eq!(s.ending(true, || false), Some(FinalView::Finalization));
    }

    #[test]
    fn exec_or_exit_without_finalizing_is_target_exited() {
        let s = ProcState::default();
        assert_eq!(s.ending(true, || panic!("not asked: the exec says it")), Some(FinalView::TargetExited));
        assert_eq!(s.ending(false, || false), Some(FinalView::TargetExited));
        assert_eq!(s.ending(false, || true), None, "still running");
    }

    #[test]
    fn an_ended_process_ends_once_and_keeps_its_view() {
        let s = ProcState { finalizing: true, ended: Some(FinalView::Finalization) };
        assert_eq!(s.ending(true, || false), None);
        assert_eq!(s.view(FinalView::Live), FinalView::Finalization);
        assert_eq!(s.view(FinalView::Duration), FinalView::Finalization);
        assert_eq!(ProcState::default().view(FinalView::Interrupted), FinalView::Interrupted);
    }

    #[test]
    fn processes_still_running_at_the_end() {
        assert_eq!(view_of_running(FinalView::Duration), FinalView::Duration);
        assert_eq!(view_of_running(FinalView::Interrupted), FinalView::Interrupted);
        assert_eq!(view_of_running(FinalView::Live), FinalView::Live);
        // The first process's end stopped the recording; the others were still running.
        assert_eq!(view_of_running(FinalView::Finalization), FinalView::Live);
        assert_eq!(view_of_running(FinalView::TargetExited), FinalView::Live);
    }
}
