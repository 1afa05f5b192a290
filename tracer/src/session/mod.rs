//! A recording session: the one owner of a recording, for `record` and `serve` alike. It holds
//! every traced process (`procs`, in the order they were attached: the processes given on the
//! command line or found on the host, forked children, host-mode newcomers), the probes, the
//! reader of the BPF maps, the stacks seen so far and each process's containers.
//!
//! - `attach`: starting a session (attach to a PID, launch a command, or find the host's CPython
//!   processes) and attaching one more process;
//! - `lifecycle`: forks, execs, newcomers, PID reuse, and which processes ended and how;
//! - `driver`: the one loop that samples, follows lifecycles and stops;
//! - `windows`: probe windows (`--window`): when the allocation probes are attached.
//!
//! Every process is handled alike: when one ends, its report is built then and kept as it was
//! (later samples of a dead process would be flat and turn a leak into "bounded"). The one
//! difference between the modes is when the recording ends: in single mode (`-p`, a command)
//! with the first process; in host mode only at the duration or a signal.

pub mod attach;
pub mod driver;
pub mod lifecycle;
pub mod sweep;
pub mod windows;

use std::time::{Duration, Instant};

use tracer_ebpf::{Counter, UNKNOWN_STACK};

use crate::clock::monotonic_ns;
use crate::collector::{Announcement, Collector, Counters};
use crate::holders::Holders;
use crate::host::{HostFilter, Newcomers, Skipped};
use crate::launch::Launched;
use crate::leaks::{Capacities, Criteria, Outlived};
use crate::probes::Probes;
use crate::report::build::{self, Stacks};
use crate::report::{FinalView, MultiReport, Report, Reports, WindowsInfo, SCHEMA};
use crate::resolve::Resolver;
use crate::stacks::StackTable;
use crate::target::Target;

pub use attach::require_root;
use lifecycle::ProcState;

/// One traced process.
pub struct Traced {
    pub target: Target,
    /// Its containers over time (the holders view), when they are read.
    pub holders: Option<Holders>,
    pub state: ProcState,
    /// Its report as it was when it ended (see the module doc).
    frozen: Option<Report>,
}

impl Traced {
    fn new(target: Target, holders: Option<Holders>) -> Traced {
        Traced { target, holders, state: ProcState::default(), frozen: None }
    }

    pub fn is_live(&self) -> bool {
        self.state.ended.is_none()
    }
}

pub enum Mode {
    /// The processes given on the command line and their forks: the recording ends when the
    /// first one ends.
    Single,
    /// Every CPython process on the host that passes the filter, also those started later.
    Host(HostState),
}

/// Host mode's bookkeeping: what to trace, who is waiting to be inspected, who was skipped.
pub struct HostState {
    pub filter: HostFilter,
    pub newcomers: Newcomers,
    pub skipped: Vec<Skipped>,
}

pub struct Session {
    pub procs: Vec<Traced>,
    /// Absent in `--holders-only` mode, and so are the collector's maps.
    probes: Option<Probes>,
    collector: Option<Collector>,
    resolver: Resolver,
    /// The command the session started (launch mode), to reap when it has ended.
    launched: Option<Launched>,
    pub stacks: StackTable,
    pub mode: Mode,
    started: Instant,
    /// Set when the recording ends: the window the reports cover.
    window: Option<Duration>,
    /// Lifecycle announcements drained from the ring buffer, not yet handled.
    pending: Vec<Announcement>,
    last_exit_check: Instant,
    criteria: Criteria,
    sample_bytes: u64,
    capacities: Capacities,
    /// The tables already said to be full (warned once each, as soon as they fill).
    warned_full: Vec<Counter>,
    /// With `--follow-forks`: followed children that exec'd, waiting to be traced again as the
    /// program they became (a pytest-xdist worker is a fork of pytest that execs Python).
    execed: Option<Newcomers>,
    /// Forked children that could not be followed (`--follow-forks`), said in one line at the end.
    unfollowed: lifecycle::Unfollowed,
    /// Probe windows (`--window`); None when the probes stay attached.
    windows: Option<windows::Windows>,
    /// Follows the blocks recorded in earlier windows (with `windows`).
    sweeper: sweep::Sweeper,
}

impl Session {
    pub fn is_host(&self) -> bool {
        matches!(self.mode, Mode::Host(_))
    }

    /// The processes still traced.
    pub fn live(&self) -> impl Iterator<Item = &Traced> {
        self.procs.iter().filter(|p| p.is_live())
    }

    fn live_index(&self, pid: u32) -> Option<usize> {
        self.procs.iter().rposition(|p| p.is_live() && p.target.pid == pid)
    }

    /// The ring buffer's descriptor (`None` without probes: nothing is ever announced).
    pub fn events_fd(&self) -> Option<std::os::fd::RawFd> {
        self.collector.as_ref().map(|c| c.events_fd())
    }

    /// The BPF counters (all traced processes together); `None` without probes.
    pub fn counters(&self) -> Option<Counters> {
        self.collector.as_ref().map(|c| c.counters())
    }

    /// Reads what the BPF side announced: new stacks are named now (while their code objects
    /// are certainly alive); the rest waits for `lifecycle::follow`.
    fn absorb(&mut self) {
        let Some(collector) = self.collector.as_mut() else { return };
        let mut new = Vec::new();
        for a in collector.drain() {
            match a {
                Announcement::NewStack(id) => new.push(id),
                other => self.pending.push(other),
            }
        }
        self.intern(new);
    }

    /// Names and interns the raw stacks not seen yet, in the order given.
    fn intern(&mut self, mut ids: Vec<u64>) {
        let Some(collector) = self.collector.as_ref() else { return };
        let mut seen = std::collections::HashSet::new();
        ids.retain(|&id| self.stacks.index_of(id).is_none() && seen.insert(id));
        if ids.is_empty() {
            return;
        }
        let raw = ids.into_iter().map(|id| (id, collector.stack(id))).collect();
        for named in self.resolver.name(raw) {
            self.stacks.intern(named.id, named.key, named.truncated);
        }
    }

    /// One point of every time series: stacks' outstanding memory, containers' lengths. With
    /// probe windows the stacks are sampled once per period instead (`step_windows`).
    pub fn sample(&mut self) {
        self.sample_series();
        self.scan_holders();
    }

    /// One point of every stack's series, unless probe windows sample them once per period.
    fn sample_series(&mut self) {
        if self.windows.is_none() {
            self.sample_stacks();
        }
    }

    /// One point of every container's series (the holders view), if containers are read.
    fn scan_holders(&mut self) {
        let t = self.started.elapsed().as_secs_f64();
        for p in self.procs.iter_mut().filter(|p| p.is_live()) {
            if let Some(h) = p.holders.as_mut() {
                h.scan(t);
            }
        }
    }

    /// When the probe windows' next event is due (None without windows).
    pub fn next_window_event(&self) -> Option<Instant> {
        self.windows.as_ref().map(windows::Windows::next_event)
    }

    /// Opens, stops or closes the probe window when due; samples the stacks once per period.
    pub fn step_windows(&mut self) {
        let (Some(w), Some(probes)) = (self.windows.as_mut(), self.probes.as_mut()) else { return };
        let live = self.procs.iter().filter(|p| p.is_live()).map(|p| &p.target);
        match w.step(Instant::now(), probes, live.clone()) {
            windows::Step::Nothing => {}
            windows::Step::SampleStacks => self.sample_stacks(),
            windows::Step::Open => {
                if let Some(collector) = self.collector.as_mut() {
                    let pids: Vec<u32> = live.clone().map(|t| t.pid).collect();
                    self.sweeper.sweep(collector, &pids, self.sample_bytes);
                }
                w.open(Instant::now(), probes, live);
            }
        }
    }

    /// One point of every stack's series (and the sites' and the timeline).
    fn sample_stacks(&mut self) {
        self.absorb();
        let t = self.started.elapsed().as_secs_f64();
        if let Some(collector) = self.collector.as_ref() {
            let entries = collector.read_stats();
            self.intern(entries.iter().map(|&(id, _)| id).collect());
            self.stacks.push_totals(t, &entries);
        }
        self.warn_full_tables();
    }

    /// Says once, as soon as it happens, that a table filled: from then on the verdicts are
    /// inconclusive (the report says so too).
    fn warn_full_tables(&mut self) {
        let Some(c) = self.counters() else { return };
        let tables = [
            (Counter::LostAllocsMapFull, "allocation", "--max-allocs", self.capacities.allocs, "not recorded"),
            (Counter::LostStacksMapFull, "stack", "--max-stacks", self.capacities.stacks, "charged to no stack"),
            (Counter::LostStatsMapFull, "stack totals", "--max-stacks", self.capacities.stacks, "not counted"),
        ];
        for (counter, table, flag, capacity, what) in tables {
            if c.get(counter) == 0 || self.warned_full.contains(&counter) {
                continue;
            }
            self.warned_full.push(counter);
            eprintln!(
                "tracer: warning: the {table} table is full ({flag} {}): allocations are {what} from now on \
                 and the verdict will be inconclusive; raise {flag}",
                crate::units::count(capacity)
            );
        }
    }

    /// Lets go of process `procs[i]`, which ended: its probes are detached, its stacks keep
    /// their last totals, its entries leave the BPF maps (a later process with its PID starts
    /// clean).
    fn release(&mut self, i: usize) {
        let (pid, instance) = (self.procs[i].target.pid, self.procs[i].target.instance);
        if let Some(p) = self.probes.as_mut() {
            p.release_target(pid);
        }
        if !self.resolver.knows(pid) {
            return;
        }
        // Its last new stacks first: they are its entries too.
        self.absorb();
        if let Some(collector) = self.collector.as_mut() {
            // The unknown stack is shared by every process: it stays.
            let ids: Vec<u64> = self.stacks.ids_of(instance).into_iter().filter(|&id| id != UNKNOWN_STACK).collect();
            let finals = collector.stats_of(&ids);
            let oldest = collector.forget(pid, &ids);
            self.stacks.retire(instance, &ids, &finals, &oldest);
        }
        self.resolver.remove_process(pid);
    }

    /// Per stack record, the age of its oldest outstanding allocation at `end_ns`.
    fn oldest_ages(&self, end_ns: u64) -> Vec<f64> {
        let live = match self.collector.as_ref() {
            Some(c) => c.oldest_allocs(|pid| self.resolver.knows(pid)),
            None => Default::default(),
        };
        self.stacks.oldest_ages(end_ns, &live)
    }

    /// Per stack record, under probe windows: its allocations that outlived a window and how
    /// many of them died later (empty without windows).
    fn outlived(&self) -> Vec<Outlived> {
        let mut per_record = Vec::new();
        if self.windows.is_none() {
            return per_record;
        }
        per_record.resize(self.stacks.records.len(), Outlived::default());
        for (&id, t) in &self.sweeper.turnover {
            if let Some(o) = self.stacks.index_of(id).and_then(|i| per_record.get_mut(i)) {
                *o = *o + *t;
            }
        }
        per_record
    }

    /// The report of `procs[i]` as of now, taken at `view`.
    fn report(&self, i: usize, view: FinalView, counters: &Counters, ages: &[f64]) -> Report {
        let p = &self.procs[i];
        let window = self.window.unwrap_or_else(|| self.started.elapsed());
        let outlived = self.outlived();
        build::build(build::Input {
            target: build::target_info(&p.target),
            instance: p.target.instance,
            view,
            started_unix_s: crate::clock::unix_time_s(self.started),
            window_s: window.as_secs_f64(),
            stacks: self.collector.as_ref().map(|_| Stacks {
                table: &self.stacks,
                counters,
                ages,
                outlived: &outlived,
                per_process: self.procs.len() > 1 || self.is_host(),
            }),
            holders: p.holders.as_ref(),
            criteria: &self.criteria,
            sample_bytes: self.sample_bytes,
            rss_bytes: crate::procfs::rss_bytes(p.target.pid),
            capacities: self.capacities,
            windows: self.windows.as_ref().map(|w| {
                let (inferred_frees, inferred_by) = self.sweeper.summary();
                WindowsInfo { inferred_frees, inferred_by, ..w.info(window) }
            }),
            cwd: cwd_of(p.target.pid),
        })
    }

    /// Every traced process's report, in the order they were attached: those that ended as they
    /// were then, the others as of now, taken at `running`.
    pub fn reports(&self, running: FinalView) -> Reports {
        let counters = self.counters().unwrap_or_default();
        let ages = self.oldest_ages(monotonic_ns());
        let processes: Vec<Report> = (0..self.procs.len())
            .map(|i| match &self.procs[i].frozen {
                Some(r) => r.clone(),
                None => self.report(i, self.procs[i].state.view(running), &counters, &ages),
            })
            .collect();
        match &self.mode {
            Mode::Single if processes.len() == 1 => Reports::One(processes.into_iter().next().expect("one")),
            Mode::Single => Reports::Many(MultiReport { schema: SCHEMA, processes, skipped: Vec::new() }),
            Mode::Host(h) => Reports::Many(MultiReport { schema: SCHEMA, processes, skipped: h.skipped.clone() }),
        }
    }

    /// The command the session launched, for the caller to wait for (after `finish`, so that
    /// its end costs nothing and changes no figure).
    pub fn take_launched(&mut self) -> Option<Launched> {
        self.launched.take()
    }

    /// Ends the session: detaches every probe first (the targets stop paying for them at once;
    /// the maps stay readable), then builds the reports from the final state. `stop` is why the
    /// recording stopped.
    pub fn finish(mut self, stop: FinalView) -> Reports {
        if self.windows.as_ref().is_some_and(windows::Windows::is_open) {
            // The recording ends inside a window: what it saw so far is the last point.
            self.sample_stacks();
        }
        self.window = Some(self.started.elapsed());
        if let Some(c) = self.collector.as_mut() {
            c.freeze_counters();
        }
        self.unfollowed.summarize();
        if let Some(mut probes) = self.probes.take() {
            let t = Instant::now();
            probes.detach_all();
            drop(probes);
            log::info!("probes detached in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
        }
        self.reports(lifecycle::view_of_running(stop))
    }
}

/// The directory a process runs in, or (once it has gone) the tracer's own: a launched command
/// runs in the tracer's.
fn cwd_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .or_else(|_| std::env::current_dir())
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}
