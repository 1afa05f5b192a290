//! `tracer record`: attach (or launch), sample until the window ends, write the report. Every
//! exit path drops the probes (detaching them) and writes what was seen.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, SignalKind};

use crate::collector::{monotonic_ns, Collector};
use crate::error::user_error;
use crate::holders::Holders;
use crate::host::{self, HostFilter, Newcomers, Skipped};
use crate::launch::{self, Launched};
use crate::leaks::Criteria;
use crate::probes::{LoadOptions, MapSizes, ProbeVariant, Probes};
use crate::python::code::CodeResolver;
use crate::python::heap::ScanBudget;
use crate::remote::ProcessMemory;
use crate::report::Report;
use crate::target::{self, Target};
use crate::{btf, build_report};

/// Everything `record` needs, with the command line already interpreted.
pub struct RecordConfig {
    pub pid: Option<u32>,
    pub command: Vec<String>,
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub sizes: MapSizes,
    pub criteria: Criteria,
    pub python_malloc: bool,
    pub sample_bytes: u64,
    pub follow_forks: bool,
    /// Host mode: every CPython process on the host that passes this filter.
    pub host: Option<HostFilter>,
    pub progress: bool,
    pub holders: HoldersMode,
    pub holder_budget: ScanBudget,
}

/// Whether the containers of the target are scanned (the holders view), and whether the
/// allocation probes are attached at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldersMode {
    Off,
    On,
    /// No probes: only the containers are read. The cheapest first look.
    Only,
}

/// Why the recording ended; becomes `final_view` in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Duration,
    Interrupted,
    Finalization,
    TargetExited,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Duration => "duration",
            EndReason::Interrupted => "interrupted",
            EndReason::Finalization => "finalization",
            EndReason::TargetExited => "target_exited",
        }
    }
}

/// How often the target's liveness is checked (new stacks are handled as they are announced).
const HOUSEKEEPING: Duration = Duration::from_millis(20);

/// A descriptor owned elsewhere (the ring buffer map), registered with tokio for readiness.
struct BorrowedFd(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for BorrowedFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// Wakes up when the BPF side announces something (new stacks, finalization, forks, execs).
/// Without probes nothing is announced: it then waits on a pipe nobody writes to.
pub struct Announcements {
    events: AsyncFd<BorrowedFd>,
    _quiet: (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
}

impl Announcements {
    pub fn new(session: &Session) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let quiet = nix::unistd::pipe()?;
        let fd = session.collector.as_ref().map(|c| c.events_fd()).unwrap_or_else(|| quiet.0.as_raw_fd());
        // SAFETY: the descriptor (the collector's ring buffer, or `quiet`) outlives `events`:
        // the session outlives this value, and `quiet` is dropped with it.
        let events = unsafe { AsyncFd::register_with_interest(BorrowedFd(fd), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { events, _quiet: quiet })
    }

    /// Waits for an announcement; the caller then drains them (see `handle_events`).
    pub async fn wait(&self) {
        if let Ok(mut guard) = self.events.readable().await {
            guard.clear_ready();
        }
    }
}

pub fn require_root() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(user_error(
            "tracer needs root to load BPF programs and read the target's memory",
            "run it with sudo (or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE; see the README)",
        ));
    }
    Ok(())
}

pub struct Session {
    pub target: Target,
    /// Absent in `--holders-only` mode.
    pub probes: Option<Probes>,
    pub collector: Option<Collector>,
    pub holders: Option<Holders>,
    pub launched: Option<Launched>,
    pub started: Instant,
    /// Set when the recording ends: the window the report covers.
    pub window: Option<Duration>,
    /// Other traced processes: forked children (--follow-forks), or in host mode every
    /// CPython process besides the first.
    pub children: Vec<Target>,
    pub host: Option<HostState>,
}

/// Host mode's bookkeeping: what to trace, who is waiting to be inspected, who was skipped,
/// who ended.
pub struct HostState {
    pub filter: HostFilter,
    pub newcomers: Newcomers,
    pub skipped: Vec<Skipped>,
    pub ended: crate::ended::Ended,
}

/// Attaches to a running process or launches the command, and starts collecting.
pub fn start(config: &RecordConfig) -> Result<Session> {
    require_root()?;
    if let Some(filter) = &config.host {
        return start_host(config, filter.clone());
    }
    let (pid, launched) = match config.pid {
        Some(pid) => (pid, None),
        None => {
            let l = launch::spawn_stopped(&config.command, config.python_malloc)?;
            (l.pid, Some(l))
        }
    };
    let result = attach(pid, config);
    match (result, launched) {
        (Ok((target, probes, collector, holders)), launched) => {
            if let Some(l) = &launched {
                l.release()?;
            }
            eprintln!(
                "tracer: tracing pid {} (CPython {}, {}); {}",
                target.pid,
                target.interpreter.version,
                target.libc.path,
                match config.duration {
                    Some(d) => format!("for {}", crate::leaks::human_duration(d.as_secs_f64())),
                    None => "Ctrl-C to stop".to_string(),
                }
            );
            Ok(Session {
                target,
                probes,
                collector,
                holders,
                launched,
                started: Instant::now(),
                window: None,
                children: Vec::new(),
                host: None,
            })
        }
        (Err(e), Some(l)) => {
            // The command still runs, untraced, as if started without the tracer.
            let _ = l.release();
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// Host mode: attaches to every CPython process found now; more are added as they start.
fn start_host(config: &RecordConfig, filter: HostFilter) -> Result<Session> {
    let (mut found, skipped) = host::discover(&filter);
    for s in &skipped {
        eprintln!("tracer: skipping pid {} ({}): {}", s.pid, s.cmdline, s.reason);
    }
    if found.is_empty() {
        return Err(user_error(
            "no CPython 3.10+ process to trace on this host (with these filters)",
            "start the service first, or loosen --match / --exclude-pid",
        ));
    }
    let first = found.remove(0);
    let (target, probes, collector, _) = attach(first.pid, config)?;
    eprintln!("tracer: tracing pid {} (found on the host): {}", target.pid, target.cmdline);
    let mut session = Session {
        target,
        probes,
        collector,
        holders: None,
        launched: None,
        started: Instant::now(),
        window: None,
        children: Vec::new(),
        host: Some(HostState {
            filter,
            newcomers: Newcomers::default(),
            skipped,
            ended: crate::ended::Ended::new(config.criteria.clone(), config.sample_bytes),
        }),
    };
    for t in found {
        add_process(&mut session, t, "found on the host");
    }
    eprintln!(
        "tracer: tracing {} CPython processes on this host; new ones are added as they start",
        session.children.len() + 1
    );
    Ok(session)
}

/// Attaches one process's probes with its interpreter's layout (setting its instance); returns
/// the reader of its code objects.
fn trace_target(probes: &mut Probes, target: &mut Target) -> Result<CodeResolver<ProcessMemory>> {
    let config = target.interpreter.probe_config()?;
    target.instance = probes.add_target(target, config)?;
    Ok(CodeResolver::new(ProcessMemory::new(target.pid), &target.interpreter, target.python.start..target.python.end))
}

/// Traces one more process in this session (a forked child or a host-mode newcomer).
fn add_process(session: &mut Session, mut t: Target, why: &str) {
    let (Some(collector), Some(probes)) = (session.collector.as_mut(), session.probes.as_mut()) else { return };
    let pid = t.pid;
    let attached = trace_target(probes, &mut t).map(|resolver| collector.add_process(pid, t.instance, resolver));
    match attached {
        Ok(()) => {
            eprintln!("tracer: tracing pid {pid} ({why}): {}", t.cmdline);
            session.children.push(t);
        }
        Err(e) => {
            probes.remove_target(pid);
            log::warn!("not tracing pid {pid} ({why}): {e:#}");
        }
    }
}

type Attached = (Target, Option<Probes>, Option<Collector>, Option<Holders>);

fn attach(pid: u32, config: &RecordConfig) -> Result<Attached> {
    let mut target = target::inspect(pid)?;
    let holders = match config.holders {
        _ if config.host.is_some() => None,
        HoldersMode::Off => None,
        _ => {
            let h = Holders::new(&target, config.holder_budget);
            if h.is_none() {
                log::warn!("the containers of CPython {} cannot be read: no holders view", target.interpreter.version);
            }
            h
        }
    };
    if config.holders == HoldersMode::Only {
        return Ok((target, None, None, holders));
    }
    let kernel = btf::Btf::from_kernel().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    let mut probes = Probes::load(LoadOptions {
        fsbase_offset: kernel.offset_of("task_struct", &["thread", "fsbase"])?,
        tgid_offset: kernel.offset_of("task_struct", &["tgid"])?,
        sample_bytes: config.sample_bytes,
        follow_forks: config.follow_forks,
        watch_execs: config.host.is_some(),
        sizes: config.sizes,
        variant: ProbeVariant::from_env()?,
    })?;
    let resolver = trace_target(&mut probes, &mut target)?;
    let collector = Collector::new(&mut probes, pid, target.instance, resolver)?;
    log::info!(
        "attached {} probes to pid {pid} ({} {}) in {:.0} ms; BPF maps hold {} of kernel memory",
        probes.attached,
        target.python.path,
        target.interpreter.version,
        probes.attach_time.as_secs_f64() * 1e3,
        crate::leaks::human_bytes(probes.map_memory as f64)
    );
    Ok((target, Some(probes), Some(collector), holders))
}

/// Whether the target still runs (not exited, not a zombie). Also used by `serve`.
pub fn alive(session: &mut Session) -> bool {
    if session.host.is_some() {
        return true; // host mode ends at the duration or a signal, not with any one process
    }
    match &mut session.launched {
        Some(l) => matches!(l.child.try_wait(), Ok(None)),
        None => running(session.target.pid),
    }
}

/// Whether the process exists and is not a zombie.
pub fn running(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/stat")).exists() && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|t| crate::procfs::parse_status(&t).state == 'Z')
        .unwrap_or(true)
}

/// Samples until the duration ends, a signal arrives, the interpreter finalizes or the
/// target exits.
pub async fn run(session: &mut Session, config: &RecordConfig) -> Result<EndReason> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let deadline = config.duration.map(|d| tokio::time::Instant::now() + d);
    let mut sample_tick = tokio::time::interval(config.interval);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let progress = config.progress && std::io::stderr().is_terminal();
    let started = Instant::now();
    // In host mode no single process's shutdown ends the recording.
    let ends_with_main = session.host.is_none();
    let events = Announcements::new(session)?;
    let test_panic = crate::crash::panic_after_attach().map(|d| tokio::time::Instant::now() + d);
    let reason = loop {
        tokio::select! {
            _ = sleep_until(test_panic) => panic!("{} is set (safety test hook)", crate::crash::PANIC_AFTER_ATTACH_ENV),
            _ = events.wait() => {
                // Resolve new stacks while their code objects are certainly alive.
                if let Some(reason) = handle_events(session, ends_with_main) {
                    break reason;
                }
            }
            _ = sigint.recv() => break EndReason::Interrupted,
            _ = sigterm.recv() => break EndReason::Interrupted,
            _ = sighup.recv() => break EndReason::Interrupted,
            _ = sleep_until(deadline) => break EndReason::Duration,
            _ = sample_tick.tick() => {
                sample(session);
                if progress {
                    print_progress(session, started.elapsed());
                }
            }
            _ = housekeeping.tick() => {
                if let Some(reason) = handle_events(session, ends_with_main) {
                    break reason;
                }
                if !alive(session) {
                    // It may have announced its finalization just before exiting.
                    break handle_events(session, ends_with_main).unwrap_or(EndReason::TargetExited);
                }
            }
        }
    };
    if progress {
        eprintln!();
    }
    sample(session);
    Ok(reason)
}

/// Attaches to children the BPF side saw fork (--follow-forks) and to new CPython processes
/// (host mode), and lets go of processes that exec'd. True when the main target itself exec'd
/// outside host mode: what it was is over.
pub fn follow_process_events(session: &mut Session) -> bool {
    let Some(collector) = session.collector.as_mut() else { return false };
    let execed = std::mem::take(&mut collector.execed);
    let forked = std::mem::take(&mut collector.forked);
    let traced: Vec<u32> = session.probes.as_ref().map(|p| p.traced_pids()).unwrap_or_default();
    let mut main_execed = false;
    let mut execed_traced = Vec::new();
    for pid in execed {
        if traced.contains(&pid) {
            retire(session, pid);
            main_execed |= pid == session.target.pid;
            execed_traced.push(pid);
        }
        if let Some(h) = session.host.as_mut() {
            h.newcomers.add(pid);
        }
    }
    for (child, parent) in forked {
        // A new process never gets a live PID: a traced one with this PID has ended.
        if traced.contains(&child) {
            retire(session, child);
        }
        match target::inspect(child) {
            Ok(t) => add_process(session, t, &format!("forked from {parent}")),
            Err(e) => {
                if let Some(p) = session.probes.as_mut() {
                    p.remove_target(child);
                }
                log::warn!("not following pid {child} (forked from {parent}): {e:#}");
            }
        }
    }
    if session.host.is_some() {
        // Before any newcomer is added: an exec'd process may come back under the same PID.
        crate::ended::retire(session, &execed_traced);
    }
    let traced_now = crate::ended::live_pids(session).len();
    if let Some(h) = session.host.as_mut() {
        let ready = h.newcomers.poll(&h.filter, &mut h.skipped);
        let cap = h.filter.max_processes;
        let mut added = 0;
        for t in ready {
            if traced_now + added >= cap {
                eprintln!("tracer: not tracing pid {}: the --max-processes cap of {cap} is reached", t.pid);
                continue;
            }
            let before = session.children.len();
            add_process(session, t, "started after the tracer");
            added += session.children.len() - before;
        }
        return false;
    }
    main_execed
}

/// Lets go of a traced process that ended: its probes are detached, its stacks keep their last
/// totals, its entries leave the BPF maps (a later process with its PID starts clean).
pub fn retire(session: &mut Session, pid: u32) {
    if let Some(p) = session.probes.as_mut() {
        p.release_target(pid);
    }
    if let Some(c) = session.collector.as_mut() {
        c.retire(pid);
    }
}

/// Retires the traced processes that are gone (exited, or their PID names another process
/// now). The main target ends the recording instead, except in host mode.
fn retire_ended(session: &mut Session) {
    let Some(collector) = session.collector.as_ref() else { return };
    let main = std::iter::once(&session.target).filter(|_| session.host.is_some());
    let ended: Vec<u32> = main
        .chain(&session.children)
        .filter(|t| !collector.is_retired(t.instance) && !t.still_runs())
        .map(|t| t.pid)
        .collect();
    for pid in ended {
        retire(session, pid);
    }
}

/// One point of every time series: stacks' outstanding memory, containers' lengths. Also used
/// by `serve` at every interval.
pub fn sample(session: &mut Session) {
    retire_ended(session);
    let t = session.started.elapsed().as_secs_f64();
    if let Some(c) = session.collector.as_mut() {
        c.sample(t);
    }
    if let Some(h) = session.holders.as_mut() {
        h.scan(t);
    }
}

/// Handles what the BPF side announced; `Some` when that ends the recording (the main target
/// finalizing, unless `ends_with_main` is false, or exec'ing).
pub fn handle_events(session: &mut Session, ends_with_main: bool) -> Option<EndReason> {
    if let Some(c) = session.collector.as_mut() {
        c.drain_events();
        if c.finalizing && ends_with_main {
            return Some(EndReason::Finalization);
        }
    }
    follow_process_events(session).then_some(EndReason::TargetExited)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn print_progress(session: &Session, elapsed: Duration) {
    let Some(collector) = session.collector.as_ref() else {
        eprint!("\r\x1b[2K[{:>6.1}s] scanning containers", elapsed.as_secs_f64());
        return;
    };
    let c = collector.counters();
    let outstanding: i64 = collector.records.iter().map(|r| r.stats.outstanding_bytes.max(0)).sum();
    let top = collector
        .records
        .iter()
        .max_by_key(|r| r.stats.outstanding_bytes)
        .and_then(|r| r.key.frames.iter().find(|f| matches!(f, crate::report::Frame::Python { .. })))
        .map(|f| f.label())
        .unwrap_or_default();
    let events = c.get(tracer_ebpf::counter::ALLOC_CALLS) + c.get(tracer_ebpf::counter::FREE_CALLS);
    let rate = events as f64 / elapsed.as_secs_f64().max(0.001);
    eprint!(
        "\r\x1b[2K[{:>6.1}s] {:>9.0} events/s  outstanding {}  top: {}",
        elapsed.as_secs_f64(),
        rate,
        crate::leaks::human_bytes(outstanding as f64),
        top
    );
}

/// What a recording produced: one report per traced process (the main target first) and, in
/// host mode, the processes that were looked at and not traced.
pub struct Finished {
    pub reports: Vec<Report>,
    pub skipped: Option<Vec<Skipped>>,
}

/// Ends the session: detaches every probe first (the targets stop paying for them at once;
/// the maps stay readable), then builds the reports (the main target first, then the other
/// traced processes) from the final state.
pub fn finish(mut session: Session, reason: EndReason, config: &RecordConfig) -> Finished {
    let end_ns = monotonic_ns();
    session.window = Some(session.started.elapsed());
    if let Some(c) = session.collector.as_mut() {
        c.freeze_counters();
    }
    if let Some(mut probes) = session.probes.take() {
        let t = Instant::now();
        probes.detach_all();
        drop(probes);
        log::info!("probes detached in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    }
    let reports = reports(&mut session, reason.as_str(), &config.criteria, end_ns, config.sample_bytes);
    Finished { reports, skipped: session.host.take().map(|h| h.skipped) }
}

/// Every traced process's report as of now: the main target's (with `main_view` as its final
/// view), then the added processes' (each with its own view: live, finalization or exited),
/// then, in host mode, the reports of the processes that ended, as they were when they ended.
pub fn reports(
    session: &mut Session,
    main_view: &str,
    criteria: &Criteria,
    end_ns: u64,
    sample_bytes: u64,
) -> Vec<Report> {
    let main_ended = session.host.as_ref().is_some_and(|h| h.ended.main_ended);
    let mut reports = Vec::new();
    if !main_ended {
        let pid = session.target.pid;
        reports.push(build_report::build_process(session, pid, main_view, criteria, end_ns));
    }
    let children: Vec<(u64, crate::report::TargetInfo)> =
        session.children.iter().map(|t| (t.instance, build_report::target_info(t))).collect();
    for (instance, info) in children {
        reports.push(build_report::build_child(session, instance, info, criteria, end_ns));
    }
    for r in &mut reports {
        r.sample_bytes = sample_bytes;
    }
    if let Some(h) = session.host.as_ref() {
        reports.extend(h.ended.reports.iter().cloned());
    }
    reports
}
