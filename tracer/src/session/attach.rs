//! Starting a session (attach to a PID, launch a command, or find the host's CPython processes)
//! and attaching one more process: its interpreter's layout, its probes, its code reader.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::btf;
use crate::collector::Collector;
use crate::config::{HoldersMode, RecordConfig, Targets};
use crate::error::user_error;
use crate::escape::visible;
use crate::holders::Holders;
use crate::host::{self, HostFilter, Newcomers};
use crate::launch;
use crate::leaks::Capacities;
use crate::probes::{LoadOptions, ProbeVariant, Probes};
use crate::python::code::CodeResolver;
use crate::remote::ProcessMemory;
use crate::resolve::Resolver;
use crate::stacks::StackTable;
use crate::target::{self, Target};

use super::windows::Windows;
use super::{HostState, Mode, Session, Traced};

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(user_error(
            "tracer needs root to load BPF programs and read the target's memory",
            "run it with sudo (or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE; see the README)",
        ));
    }
    Ok(())
}

/// Attaches one process's probes with its interpreter's layout (setting its instance); returns
/// the reader of its code objects.
fn trace_target(probes: &mut Probes, target: &mut Target) -> Result<CodeResolver<ProcessMemory>> {
    let config = target.interpreter.probe_config()?;
    target.instance = probes.add_target(target, config)?;
    Ok(CodeResolver::new(ProcessMemory::new(target.pid), &target.interpreter, target.python.start..target.python.end))
}

/// The largest share of the host's available memory the maps may take without `--force`.
const MAX_MEMORY_SHARE: f64 = 0.25;

/// Refuses table sizes whose kernel memory (invisible in the tracer's RSS, and taken at once)
/// exceeds a quarter of the host's available memory, unless `--force`.
fn check_map_memory(sizes: crate::probes::MapSizes, force: bool) -> Result<()> {
    let need = sizes.kernel_memory();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let Some(available) = crate::procfs::mem_available(&meminfo) else { return Ok(()) };
    if force || (need as f64) <= available as f64 * MAX_MEMORY_SHARE {
        return Ok(());
    }
    Err(user_error(
        format!(
            "--max-allocs {} and --max-stacks {} would take about {} of kernel memory, more than a quarter of the {} available",
            crate::units::count(sizes.max_allocs),
            crate::units::count(sizes.max_stacks),
            crate::units::bytes(need as f64),
            crate::units::bytes(available as f64)
        ),
        "lower them (or record with --sample-bytes), or pass --force to take it anyway",
    ))
}

fn load_probes(config: &RecordConfig) -> Result<Probes> {
    check_map_memory(config.tracing.sizes, config.tracing.force)?;
    let kernel = btf::Btf::from_kernel().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    Probes::load(LoadOptions {
        fsbase_offset: kernel.offset_of("task_struct", &["thread", "fsbase"])?,
        tgid_offset: kernel.offset_of("task_struct", &["tgid"])?,
        sample_bytes: config.tracing.sample_bytes,
        follow_forks: config.follow_forks,
        watch_execs: config.targets.is_host(),
        sizes: config.tracing.sizes,
        variant: ProbeVariant::from_env()?,
    })
}

impl Session {
    /// Attaches to a running process, launches the command, or (host mode) attaches to every
    /// CPython process found now; then collects until the session is finished.
    pub fn start(config: &RecordConfig) -> Result<Session> {
        require_root()?;
        crate::redact::show_target_strings(config.tracing.show_target_strings);
        match &config.targets {
            Targets::Host(filter) => start_host(config, filter.clone()),
            Targets::Pid(pid) => start_single(config, *pid),
            Targets::Launch { argv, python_malloc } => {
                let launched = launch::spawn_stopped(argv, *python_malloc)?;
                match start_single(config, launched.pid) {
                    Ok(mut session) => {
                        launched.release()?;
                        session.launched = Some(launched);
                        Ok(session)
                    }
                    // Refused before a line of it ran: it is ended, not left to run untraced.
                    Err(e) => {
                        let pid = launched.pid;
                        launched.kill();
                        eprintln!("tracer: the command (pid {pid}) was stopped before it ran: it cannot be traced");
                        Err(e)
                    }
                }
            }
        }
    }

    /// A session with no process yet: the probes loaded (unless only containers are read).
    fn empty(config: &RecordConfig, mode: Mode) -> Result<Session> {
        let mut probes = match config.holders {
            HoldersMode::Only => None,
            HoldersMode::On | HoldersMode::Off => Some(load_probes(config)?),
        };
        let windows = probes.as_ref().and_then(|_| Windows::new(config.tracing.window, Instant::now()));
        if let (Some(p), Some(_)) = (probes.as_mut(), windows.as_ref()) {
            p.use_windows();
        }
        let collector = probes.as_mut().map(Collector::new).transpose()?;
        Ok(Session {
            procs: Vec::new(),
            probes,
            collector,
            resolver: Resolver::new(),
            launched: None,
            stacks: StackTable::new(),
            mode,
            started: Instant::now(),
            window: None,
            pending: Vec::new(),
            last_exit_check: Instant::now(),
            criteria: config.tracing.criteria.clone(),
            sample_bytes: config.tracing.sample_bytes,
            capacities: Capacities {
                allocs: u64::from(config.tracing.sizes.max_allocs),
                stacks: u64::from(config.tracing.sizes.max_stacks),
            },
            warned_full: Vec::new(),
            unfollowed: Default::default(),
            execed: (config.follow_forks && !config.targets.is_host()).then(Newcomers::default),
            windows,
            sweeper: Default::default(),
        })
    }

    /// Traces `target`: its probes are attached (with its interpreter's layout) and its stacks
    /// named from now on.
    fn attach(&mut self, mut target: Target, holders: Option<Holders>) -> Result<()> {
        if let Some(probes) = self.probes.as_mut() {
            match trace_target(probes, &mut target) {
                Ok(code) => {
                    self.resolver.add_process(target.pid, target.instance, code);
                    if let Some(w) = self.windows.as_mut() {
                        w.watch(target.pid);
                    }
                }
                Err(e) => {
                    probes.remove_target(target.pid);
                    return Err(e);
                }
            }
        }
        self.procs.push(Traced::new(target, holders));
        Ok(())
    }

    /// Traces one more process (a forked child or a host-mode newcomer); one that cannot be
    /// traced is logged and left alone. Whether it is traced now.
    pub(super) fn add(&mut self, target: Target, why: &str) -> bool {
        if self.probes.is_none() {
            return false;
        }
        let (pid, cmdline) = (target.pid, target.cmdline.clone());
        match self.attach(target, None) {
            Ok(()) => {
                eprintln!("tracer: tracing pid {pid} ({why}): {}", visible(&cmdline));
                true
            }
            Err(e) if !crate::procfs::is_running(pid) => {
                log::debug!("not tracing pid {pid} ({why}): it exited while being attached ({e:#})");
                self.unfollowed.exited += 1;
                false
            }
            Err(e) => {
                log::warn!("not tracing pid {pid} ({why}): {e:#}");
                false
            }
        }
    }

    fn log_attached(&self) {
        let (Some(probes), Some(first)) = (self.probes.as_ref(), self.procs.first()) else { return };
        let t = &first.target;
        log::info!(
            "attached {} probes to pid {} ({} {}) in {:.0} ms; BPF maps hold {} of kernel memory",
            probes.attached,
            t.pid,
            t.python.path,
            t.interpreter.version,
            probes.attach_time.as_secs_f64() * 1e3,
            crate::units::bytes(probes.map_memory as f64)
        );
        eprintln!(
            "tracer: the BPF maps take {} of kernel memory (--max-allocs {}, --max-stacks {})",
            crate::units::bytes(probes.map_memory as f64),
            crate::units::count(self.capacities.allocs),
            crate::units::count(self.capacities.stacks)
        );
    }
}

/// One process given on the command line (`-p`, or the launched command).
fn start_single(config: &RecordConfig, pid: u32) -> Result<Session> {
    let target = target::inspect(pid)?;
    let holders = match config.holders {
        HoldersMode::Off => None,
        HoldersMode::On | HoldersMode::Only => {
            let h = Holders::new(&target, config.tracing.holder_budget, config.tracing.census_budget);
            if h.is_none() {
                log::warn!("the containers of CPython {} cannot be read: no holders view", target.interpreter.version);
            }
            h
        }
    };
    let mut session = Session::empty(config, Mode::Single)?;
    session.attach(target, holders)?;
    session.log_attached();
    let t = &session.procs[0].target;
    eprintln!(
        "tracer: tracing pid {} (CPython {}, {}); {}",
        t.pid,
        t.interpreter.version,
        t.libc.path,
        match config.duration {
            Some(d) => format!("for {}", crate::units::duration(d.as_secs_f64())),
            None => "Ctrl-C to stop".to_string(),
        }
    );
    Ok(session)
}

/// Host mode: attaches to every CPython process found now; more are added as they start. The
/// containers are not read in host mode.
fn start_host(config: &RecordConfig, filter: HostFilter) -> Result<Session> {
    let (mut found, skipped) = host::discover(&filter);
    for s in &skipped {
        eprintln!("tracer: skipping pid {} ({}): {}", s.pid, visible(&s.cmdline), visible(&s.reason));
    }
    if found.is_empty() {
        return Err(user_error(
            "no CPython 3.10+ process to trace on this host (with these filters)",
            "start the service first, or loosen --match / --exclude-pid",
        ));
    }
    let first = found.remove(0);
    let host = HostState { filter, newcomers: Newcomers::default(), skipped };
    let mut session = Session::empty(config, Mode::Host(host))?;
    let (pid, cmdline) = (first.pid, first.cmdline.clone());
    session.attach(first, None)?;
    session.log_attached();
    eprintln!("tracer: tracing pid {pid} (found on the host): {}", visible(&cmdline));
    for t in found {
        session.add(t, "found on the host");
    }
    eprintln!(
        "tracer: tracing {} CPython processes on this host; new ones are added as they start",
        session.procs.len()
    );
    Ok(session)
}
