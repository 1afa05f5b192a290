//! Attaching one process's probes as the plan says: uprobe_multi links first (a session link
//! is the entry and the return at once), then perf-event uprobes with the return probes before
//! the entries, then the interpreter's optional probes.

use std::num::NonZeroU32;
use std::path::Path;

use anyhow::{Context, Result};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};

use super::plan::{Attach, Binary, Probe, Which};
use super::prologue::cheap_probe_offset;
use super::{ensure_loaded, Probes};
use crate::elf::ElfImage;
use crate::error::user_error;
use crate::target::Target;

/// Where in its function a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// The first instruction: where a return probe must sit (and its entry with it).
    Entry,
    /// The first instruction the kernel emulates (see `prologue`), unless the plan says not to.
    Prologue,
}

/// A probe that could not be attached is worth a warning, unless its process has just exited
/// (a fork storm's children do, while they are being attached): then it is a debug line.
fn warn_unless_gone(pid: NonZeroU32, message: std::fmt::Arguments) {
    if crate::procfs::is_running(pid.get()) {
        log::warn!("{message}");
    } else {
        log::debug!("pid {pid} exited while being attached: {message}");
    }
}

/// A perf-event uprobe to attach.
struct PerfProbe {
    symbol: &'static str,
    /// Detached when a probe window closes (`Probe::windowed`).
    windowed: bool,
    program: &'static str,
    placement: Placement,
    is_return: bool,
}

impl Probes {
    pub(super) fn attach_all(&mut self, target: &Target, which: Which) -> Result<()> {
        let pid = NonZeroU32::new(target.pid).context("PID 0")?;
        let libc = &target.libc.elf;
        let mut perf = Vec::new();
        let plan: Vec<Probe> = self.plan.probes.iter().copied().filter(|p| which.takes(p)).collect();
        for probe in plan.iter().filter(|p| p.binary == Binary::Libc) {
            let (symbol, hot) = (probe.symbol, probe.windowed());
            match probe.attach {
                Attach::Session(kind) => {
                    if let Err(e) = self.attach_multi(kind.programs().session, probe, libc, pid, Placement::Entry) {
                        warn_unless_gone(pid, format_args!("{e:#}; {symbol} keeps a perf-event uprobe"));
                        let p = kind.programs();
                        perf.extend(classic(symbol, hot, p.entry, Some(p.ret)));
                    }
                }
                Attach::EntryOnly { program, multi: true } => {
                    if let Err(e) = self.attach_multi(program, probe, libc, pid, Placement::Prologue) {
                        warn_unless_gone(pid, format_args!("{e:#}; {symbol} keeps a perf-event uprobe"));
                        perf.push(entry_only(symbol, hot, program));
                    }
                }
                Attach::EntryOnly { program, multi: false } => perf.push(entry_only(symbol, hot, program)),
                Attach::Classic { entry, ret } => perf.extend(classic(symbol, hot, entry, ret)),
                Attach::Python { .. } => unreachable!("an interpreter probe in libc: {probe:?}"),
            }
        }
        // Return probes first: an entry seen without its return would leave an entry record
        // that makes the thread's next calls look nested (and go unrecorded) for a while.
        perf.sort_by_key(|p| !p.is_return);
        for p in &perf {
            self.attach_perf(p, libc, pid)?;
        }
        for probe in plan.iter().filter(|p| p.binary == Binary::Python) {
            self.attach_python(probe, &target.python.elf, pid);
        }
        Ok(())
    }

    /// An optional probe in the interpreter: without it the recording goes on.
    fn attach_python(&mut self, probe: &Probe, elf: &ElfImage, pid: NonZeroU32) {
        let Attach::Python { program, without } = probe.attach else {
            unreachable!("not an interpreter probe: {probe:?}");
        };
        let p = entry_only(probe.symbol, false, program);
        if let Err(e) = self.attach_perf(&p, elf, pid) {
            warn_unless_gone(pid, format_args!("no probe on {} ({e:#}): {without}", probe.symbol));
        }
    }

    /// A uprobe_multi link for `program` on `symbol`, in process `pid` only; nothing when the
    /// library has no such symbol.
    fn attach_multi(
        &mut self,
        program: &str,
        probe: &Probe,
        elf: &ElfImage,
        pid: NonZeroU32,
        placement: Placement,
    ) -> Result<()> {
        let Some(offset) = self.probe_offset(probe.symbol, elf, placement)? else { return Ok(()) };
        let multi = self.multi.as_ref().context("no uprobe_multi programs")?;
        let link = multi.attach(program, &elf.path, offset, pid.get())?;
        self.multi_links.entry(pid.get()).or_default().push((link, probe.windowed()));
        self.attached += 1;
        Ok(())
    }

    fn attach_perf(&mut self, p: &PerfProbe, elf: &ElfImage, pid: NonZeroU32) -> Result<()> {
        let Some(offset) = self.probe_offset(p.symbol, elf, p.placement)? else { return Ok(()) };
        ensure_loaded(&mut self.ebpf, p.program)?;
        let link = self
            .program(p.program)?
            .attach(UProbeAttachLocation::AbsoluteOffset(offset), &elf.path, UProbeScope::OneProcess(pid))
            .map_err(|e| attach_error(e, p.symbol, &elf.path, pid.get()))?;
        self.links.entry(pid.get()).or_default().push((p.program, link, p.windowed));
        self.attached += 1;
        Ok(())
    }

    /// The file offset to probe `symbol` at; None when the library has no such symbol (older
    /// glibc lacks reallocarray; that is fine).
    fn probe_offset(&self, symbol: &str, elf: &ElfImage, placement: Placement) -> Result<Option<u64>> {
        let Some(vaddr) = elf.symbol(symbol) else {
            log::debug!("{symbol} not in {}", elf.path.display());
            return Ok(None);
        };
        let mut offset = elf.file_offset(vaddr).with_context(|| format!("{symbol} has no file offset"))?;
        if placement == Placement::Prologue && self.plan.prologue_offsets {
            offset += elf.code_at(vaddr, 16).map(|code| cheap_probe_offset(&code)).unwrap_or(0);
        }
        Ok(Some(offset))
    }
}

fn classic(symbol: &'static str, windowed: bool, entry: &'static str, ret: Option<&'static str>) -> Vec<PerfProbe> {
    let ret = ret.map(|program| PerfProbe { symbol, windowed, program, placement: Placement::Entry, is_return: true });
    let entry = PerfProbe { symbol, windowed, program: entry, placement: Placement::Entry, is_return: false };
    ret.into_iter().chain([entry]).collect()
}

fn entry_only(symbol: &'static str, windowed: bool, program: &'static str) -> PerfProbe {
    PerfProbe { symbol, windowed, program, placement: Placement::Prologue, is_return: false }
}

fn attach_error(e: aya::programs::ProgramError, symbol: &str, path: &Path, pid: u32) -> anyhow::Error {
    let text = format!("{e:#}");
    let source = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
    if text.contains("EINVAL") || source.contains("Invalid argument") {
        return user_error(
            format!(
                "cannot attach to {symbol} in {} of process {pid}: another tracer holds a conflicting probe there",
                path.display()
            ),
            "stop other uprobe tracers on this libc first (bcc's memleak, bpftrace); `bpftool perf list` shows them",
        );
    }
    anyhow::Error::new(e).context(format!("attaching to {symbol} in {}", path.display()))
}
