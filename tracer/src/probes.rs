//! The BPF object, embedded once; the table of probes; one attach loop. Dropping `Probes`
//! detaches everything (and the kernel does the same if the tracer is killed: the links live
//! only as long as our file descriptors).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::{RawTracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use tracer_ebpf::{globals, maps, TargetConfig};

use crate::elf::ElfImage;
use crate::error::user_error;
use crate::target::Target;
use crate::uprobe_multi::{Mode, SessionPrograms};

static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-bpf"));

/// Map sizes; flags with these defaults are documented in the README.
#[derive(Debug, Clone, Copy)]
pub struct MapSizes {
    pub max_allocs: u32,
    pub max_stacks: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self { max_allocs: 1 << 20, max_stacks: 16384 }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Entry,
    Return,
}

struct ProbeSpec {
    program: &'static str,
    symbol: &'static str,
    kind: Kind,
}

const fn entry(program: &'static str, symbol: &'static str) -> ProbeSpec {
    ProbeSpec { program, symbol, kind: Kind::Entry }
}

const fn ret(program: &'static str, symbol: &'static str) -> ProbeSpec {
    ProbeSpec { program, symbol, kind: Kind::Return }
}

/// Every libc entry point that hands out or takes back heap memory.
const LIBC_PROBES: &[ProbeSpec] = &[
    entry("malloc_enter", "malloc"),
    ret("malloc_exit", "malloc"),
    entry("calloc_enter", "calloc"),
    ret("calloc_exit", "calloc"),
    entry("realloc_enter", "realloc"),
    ret("realloc_exit", "realloc"),
    entry("reallocarray_enter", "reallocarray"),
    ret("reallocarray_exit", "reallocarray"),
    entry("posix_memalign_enter", "posix_memalign"),
    ret("posix_memalign_exit", "posix_memalign"),
    entry("aligned_alloc_enter", "aligned_alloc"),
    ret("aligned_alloc_exit", "aligned_alloc"),
    entry("memalign_enter", "memalign"),
    ret("memalign_exit", "memalign"),
    entry("valloc_enter", "valloc"),
    ret("valloc_exit", "valloc"),
    entry("pvalloc_enter", "pvalloc"),
    ret("pvalloc_exit", "pvalloc"),
    entry("mmap_enter", "mmap"),
    ret("mmap_exit", "mmap"),
    entry("munmap_enter", "munmap"),
    entry("free_enter", "free"),
];

/// Entry-only probes move past a leading instruction the kernel would have to single-step
/// (`endbr64`, `test %rdi,%rdi`) onto the next one, which it emulates: one trap instead of
/// two. Such instructions change neither the argument registers nor the control flow.
/// Functions with a return probe keep their entry probe at +0, where the return probe's
/// breakpoint already is.
pub fn cheap_probe_offset(code: &[u8]) -> u64 {
    let mut at = 0usize;
    for _ in 0..2 {
        let rest = &code[at.min(code.len())..];
        if rest.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
            at += 4; // endbr64
        } else if rest.len() >= 3 && rest[0] == 0x48 && rest[1] == 0x85 && rest[2] == 0xff {
            at += 3; // test %rdi,%rdi
        } else {
            break;
        }
    }
    let next = &code[at.min(code.len())..];
    let emulated = matches!(next.first(), Some(0x50..=0x57 | 0x70..=0x7f | 0xe8 | 0xe9 | 0xeb))
        || (next.len() >= 2 && next[0] == 0x41 && (0x50..=0x57).contains(&next[1]))
        || (next.len() >= 2 && next[0] == 0x0f && (0x80..=0x8f).contains(&next[1]));
    if emulated {
        at as u64
    } else {
        0
    }
}

/// What is attached, for the benchmark's before/after figures: `TRACER_PROBE_VARIANT`, a
/// comma-separated list of the switches below (not a user feature, so not a flag). Every
/// variant probes the same functions of the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeVariant {
    /// `bare`: empty programs at the same attach points, the bare cost of the probes.
    pub bare: bool,
    /// `entry-offsets`: every probe at its function's first instruction, without decoding the
    /// prologue.
    pub entry_offsets: bool,
    /// `no-python-stack`: the programs without the Python stack walk.
    pub no_python_stack: bool,
    /// `classic-returns`: return probes even where session uprobes could skip them.
    pub classic_returns: bool,
    /// `no-returns`: no return probes (allocations are then never recorded): what the traps
    /// cost if no call needed its return value.
    pub no_returns: bool,
}

impl ProbeVariant {
    pub const ENV: &'static str = "TRACER_PROBE_VARIANT";

    pub fn from_env() -> Result<Self> {
        let text = std::env::var(Self::ENV).unwrap_or_default();
        let mut variant = Self::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "standard" => {}
                "bare" => variant.bare = true,
                "entry-offsets" => variant.entry_offsets = true,
                "no-python-stack" => variant.no_python_stack = true,
                "no-returns" => variant.no_returns = true,
                "classic-returns" => variant.classic_returns = true,
                other => {
                    return Err(user_error(
                        format!("{}: `{other}` is not a probe variant", Self::ENV),
                        "use a comma-separated list of bare, entry-offsets, no-python-stack, no-returns, classic-returns (benchmarks only), or unset it",
                    ))
                }
            }
        }
        if variant != Self::default() {
            log::warn!("{}={text}: a benchmark variant, not the tracer as shipped", Self::ENV);
        }
        Ok(variant)
    }

    /// The program attached in place of `program`, if any.
    fn program(self, program: &'static str, kind: Kind) -> Option<&'static str> {
        match (kind, self.bare) {
            (Kind::Return, _) if self.no_returns => None,
            (Kind::Entry, true) => Some("bare_enter"),
            (Kind::Return, true) => Some("bare_exit"),
            _ => Some(program),
        }
    }
}

/// Everything fixed at load time.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub fsbase_offset: u64,
    pub tgid_offset: u64,
    pub sample_bytes: u64,
    pub follow_forks: bool,
    pub watch_execs: bool,
    pub sizes: MapSizes,
    pub variant: ProbeVariant,
}

/// Programs on kernel tracepoints (not uprobes): process lifecycle.
const PROCESS_EVENTS: [(&str, &str); 2] = [("on_fork", "sched_process_fork"), ("on_exec", "sched_process_exec")];

pub struct Probes {
    ebpf: Ebpf,
    /// Kernel memory held by all our maps right after loading (bytes).
    pub map_memory: u64,
    pub attach_time: Duration,
    pub attached: usize,
    variant: ProbeVariant,
    /// Uprobe links per traced process, to detach one process without touching the others.
    links: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// Session programs (sampled mode on kernels that have them) and their links per process.
    sessions: Option<SessionPrograms>,
    session_links: HashMap<u32, Vec<OwnedFd>>,
    /// The last `TargetConfig::instance` handed out (0 is never one).
    last_instance: u64,
    /// Threads detaching the probes of processes that ended (see `release_target`).
    releasing: Vec<std::thread::JoinHandle<()>>,
}

impl Probes {
    pub fn load(options: LoadOptions) -> Result<Self> {
        let follow = options.follow_forks as u64;
        let watch = options.watch_execs as u64;
        let ebpf = EbpfLoader::new()
            .override_global(globals::FSBASE_OFFSET, &options.fsbase_offset, true)
            .override_global(globals::TGID_OFFSET, &options.tgid_offset, true)
            .override_global(globals::SAMPLE_BYTES, &options.sample_bytes, true)
            .override_global(globals::FOLLOW_FORKS, &follow, true)
            .override_global(globals::WATCH_EXECS, &watch, true)
            .map_max_entries(maps::ALLOCS, options.sizes.max_allocs)
            .map_max_entries(maps::STACKS, options.sizes.max_stacks)
            .map_max_entries(maps::STACK_STATS, options.sizes.max_stacks)
            .load(BPF_OBJECT)
            .map_err(|e| match e {
                aya::EbpfError::MapError(m) => user_error(
                    format!("cannot create the BPF maps: {m}"),
                    "run as root; if memory is short, lower --max-allocs / --max-stacks",
                ),
                other => anyhow::Error::new(other).context("loading the BPF programs"),
            })?;
        let map_memory = ebpf.maps().filter_map(|(_, m)| map_memlock(m)).sum();
        let mut probes = Self {
            ebpf,
            map_memory,
            attach_time: Duration::ZERO,
            attached: 0,
            variant: options.variant,
            links: HashMap::new(),
            sessions: None,
            session_links: HashMap::new(),
            last_instance: 0,
            releasing: Vec::new(),
        };
        if !options.variant.bare && !options.variant.classic_returns {
            match probes.load_sessions() {
                Ok(sessions) => probes.sessions = Some(sessions),
                Err(e) => log::info!("no session uprobes ({e:#}); unsampled calls keep their return probe"),
            }
        }
        let names: Vec<String> = probes.ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for name in names {
            if PROCESS_EVENTS.iter().any(|(p, _)| *p == name) {
                let program: &mut RawTracePoint = probes.ebpf.program_mut(&name).context("program")?.try_into()?;
                program.load().with_context(|| format!("verifying BPF program {name}"))?;
                program
                    .attach(PROCESS_EVENTS.iter().find(|(p, _)| *p == name).map(|(_, tp)| *tp).unwrap_or_default())
                    .with_context(|| format!("attaching {name} to its tracepoint"))?;
                continue;
            }
            // Verifying a program that walks stacks takes ~50-150 ms: the classic programs the
            // session ones stand for are loaded only if a session link cannot be made.
            let replaced = name.ends_with("_session")
                || probes.sessions.is_some() && LIBC_PROBES.iter().any(|s| s.program == name);
            if !replaced {
                probes.ensure_loaded(&name)?;
            }
        }
        Ok(probes)
    }

    fn ensure_loaded(&mut self, name: &str) -> Result<()> {
        let program = self.program(name)?;
        if program.fd().is_err() {
            program.load().with_context(|| format!("verifying BPF program {name}"))?;
        }
        Ok(())
    }

    fn load_sessions(&self) -> Result<SessionPrograms> {
        let fds: HashMap<String, RawFd> = self
            .ebpf
            .maps()
            .filter_map(|(name, map)| map_data(map).map(|d| (name.to_string(), d.fd().as_fd().as_raw_fd())))
            .collect();
        let mut names: Vec<(&str, Mode)> =
            LIBC_PROBES.iter().filter_map(|s| session_program(s.program)).map(|n| (n, Mode::Session)).collect();
        names.extend(ENTRY_ONLY.iter().map(|n| (*n, Mode::Entry)));
        SessionPrograms::load(BPF_OBJECT, &fds, &names)
    }

    fn program(&mut self, name: &str) -> Result<&mut UProbe> {
        let p = self.ebpf.program_mut(name).with_context(|| format!("no BPF program {name}"))?;
        Ok(p.try_into()?)
    }

    /// Registers a target's interpreter layout under a new instance number (returned; a later
    /// process with the same PID gets another), then attaches every probe to its libc and
    /// interpreter, scoped to that process.
    pub fn add_target(&mut self, target: &Target, mut config: TargetConfig) -> Result<u64> {
        if self.variant.no_python_stack {
            config.runtime_addr = 0;
        }
        let started = Instant::now();
        self.last_instance += 1;
        config.instance = self.last_instance;
        let mut targets: BpfHashMap<&mut MapData, u32, TargetConfig> =
            BpfHashMap::try_from(self.ebpf.map_mut(maps::TARGETS).context("TARGETS map")?)?;
        targets.insert(target.pid, config, 0).context("registering the target")?;
        let result = self.attach_all(target);
        if result.is_err() {
            self.remove_target(target.pid);
        }
        self.attach_time += started.elapsed();
        result.map(|()| config.instance)
    }

    /// Detaches one process's probes and forgets its registration (it exited or exec'd).
    pub fn remove_target(&mut self, pid: u32) {
        self.unregister(pid);
        drop(self.take_links(pid));
    }

    /// Like `remove_target` without waiting: the process is unregistered at once (a probe hit
    /// returns at once), and its links are dropped on a helper thread, since the kernel takes a
    /// grace period per uprobe (~0.1 s each) and recording must go on meanwhile (a new process
    /// may need attaching). For processes that ended or exec'd.
    pub fn release_target(&mut self, pid: u32) {
        self.unregister(pid);
        let owned = self.take_links(pid);
        self.releasing.retain(|h| !h.is_finished());
        self.releasing.push(std::thread::spawn(move || drop(owned)));
    }

    fn unregister(&mut self, pid: u32) {
        if let Some(map) = self.ebpf.map_mut(maps::TARGETS) {
            if let Ok(mut targets) = BpfHashMap::<&mut MapData, u32, TargetConfig>::try_from(map) {
                let _ = targets.remove(&pid);
            }
        }
    }

    /// A process's links, owned: dropping one detaches it.
    fn take_links(&mut self, pid: u32) -> Vec<OwnedLink> {
        let mut owned = Vec::new();
        for (program, link) in self.links.remove(&pid).unwrap_or_default() {
            if let Ok(link) = self.program(program).and_then(|p| Ok(p.take_link(link)?)) {
                owned.push(OwnedLink::Aya(link));
            }
        }
        owned.extend(self.session_links.remove(&pid).unwrap_or_default().into_iter().map(OwnedLink::Session));
        owned
    }

    /// Detaches every probe. The targets are unregistered first (until its breakpoint is gone,
    /// a probe hit returns at once); then the links are dropped on several threads at once:
    /// the kernel waits for a grace period per uprobe, and concurrent waits overlap instead
    /// of adding up (~0.1 s each, more on a busy machine).
    pub fn detach_all(&mut self) {
        const THREADS: usize = 8;
        let pids = self.traced_pids();
        for &pid in &pids {
            self.unregister(pid);
        }
        let mut links: Vec<_> = pids.into_iter().flat_map(|pid| self.take_links(pid)).collect();
        let per = links.len().div_ceil(THREADS).max(1);
        while !links.is_empty() {
            let chunk: Vec<_> = links.drain(..per.min(links.len())).collect();
            self.releasing.push(std::thread::spawn(move || drop(chunk)));
        }
        for h in self.releasing.drain(..) {
            let _ = h.join();
        }
    }

    pub fn traced_pids(&self) -> Vec<u32> {
        self.links.keys().copied().collect()
    }

    fn attach_all(&mut self, target: &Target) -> Result<()> {
        let pid = NonZeroU32::new(target.pid).context("PID 0")?;
        // Return probes first: an entry seen without its return would leave an entry record
        // that makes the thread's next calls look nested (and go unrecorded) for a while.
        let returns_first = LIBC_PROBES
            .iter()
            .filter(|s| s.kind == Kind::Return)
            .chain(LIBC_PROBES.iter().filter(|s| s.kind == Kind::Entry));
        let mut by_multi = Vec::new();
        if self.sessions.is_some() {
            for spec in LIBC_PROBES.iter().filter(|s| s.kind == Kind::Entry) {
                let (program, at_entry) = match session_program(spec.program) {
                    Some(session) => (session, true),
                    None if ENTRY_ONLY.contains(&spec.program) => (spec.program, false),
                    None => continue,
                };
                match self.attach_multi(program, spec.symbol, &target.libc.elf, target.pid, at_entry) {
                    Ok(true) => by_multi.push(spec.symbol),
                    Ok(false) => {}
                    Err(e) => log::warn!("{e:#}; {} keeps a perf-event uprobe", spec.symbol),
                }
            }
        }
        for spec in returns_first.filter(|s| !by_multi.contains(&s.symbol)) {
            self.attach_symbol(spec, &target.libc.elf, target.pid, pid)?;
        }
        let finalize = ProbeSpec { program: "py_finalize", symbol: "Py_FinalizeEx", kind: Kind::Entry };
        if let Err(e) = self.attach_symbol(&finalize, &target.python.elf, target.pid, pid) {
            log::warn!("no finalization probe ({e:#}): leaks are read when the process exits");
        }
        // `sys.exit()` in the main module ends in Py_Exit, which on 3.13+ finalizes through the
        // internal _Py_Finalize without passing Py_FinalizeEx. The program reports once.
        let exit = ProbeSpec { program: "py_finalize", symbol: "Py_Exit", kind: Kind::Entry };
        if let Err(e) = self.attach_symbol(&exit, &target.python.elf, target.pid, pid) {
            log::warn!("no probe on Py_Exit ({e:#}): a sys.exit() is seen when the process exits");
        }
        Ok(())
    }

    /// A uprobe_multi link for `program` on `symbol`: at its entry (a session program: where a
    /// return probe sits) or on the first cheap instruction of its prologue; false when the
    /// library has no such symbol.
    fn attach_multi(&mut self, program: &str, symbol: &str, elf: &ElfImage, pid: u32, at_entry: bool) -> Result<bool> {
        let Some(offset) = self.probe_offset(symbol, elf, !at_entry)? else { return Ok(false) };
        let sessions = self.sessions.as_ref().context("no session programs")?;
        let link = sessions.attach(program, &elf.path, offset, pid)?;
        self.session_links.entry(pid).or_default().push(link);
        self.attached += 1;
        Ok(true)
    }

    /// The file offset to probe `symbol` at: on the first instruction of its prologue the kernel
    /// emulates when `entry_only` (a return probe must sit at the entry); None when the library
    /// has no such symbol (older glibc lacks reallocarray; that is fine).
    fn probe_offset(&self, symbol: &str, elf: &ElfImage, entry_only: bool) -> Result<Option<u64>> {
        let Some(vaddr) = elf.symbol(symbol) else {
            log::debug!("{symbol} not in {}", elf.path.display());
            return Ok(None);
        };
        let mut offset = elf.file_offset(vaddr).with_context(|| format!("{symbol} has no file offset"))?;
        if entry_only && !self.variant.entry_offsets {
            offset += elf.code_at(vaddr, 16).map(cheap_probe_offset).unwrap_or(0);
        }
        Ok(Some(offset))
    }

    fn attach_symbol(&mut self, spec: &ProbeSpec, elf: &ElfImage, pid_raw: u32, pid: NonZeroU32) -> Result<()> {
        let entry_only =
            spec.kind == Kind::Entry && !spec.program.ends_with("_enter") || ENTRY_ONLY.contains(&spec.program);
        let Some(offset) = self.probe_offset(spec.symbol, elf, entry_only)? else { return Ok(()) };
        let path = elf.path.clone();
        let Some(program_name) = self.variant.program(spec.program, spec.kind) else { return Ok(()) };
        self.ensure_loaded(program_name)?;
        let program = self.program(program_name)?;
        let link = program
            .attach(UProbeAttachLocation::AbsoluteOffset(offset), &path, UProbeScope::OneProcess(pid))
            .map_err(|e| attach_error(e, spec.symbol, &path, pid_raw))?;
        self.links.entry(pid_raw).or_default().push((program_name, link));
        self.attached += 1;
        Ok(())
    }

    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf.take_map(name).with_context(|| format!("no BPF map {name}"))
    }
}

/// A link that detaches when dropped (held only to be dropped).
#[allow(dead_code)]
enum OwnedLink {
    Aya(aya::programs::uprobe::UProbeLink),
    Session(OwnedFd),
}

/// Entry-only libc probes, attached through uprobe_multi links when the kernel has them.
const ENTRY_ONLY: [&str; 2] = ["free_enter", "munmap_enter"];

/// The session program standing for an entry program with a return probe (`malloc_enter` ->
/// `malloc_session`); free and munmap have no return to see.
fn session_program(entry: &str) -> Option<&'static str> {
    const SESSIONS: &[(&str, &str)] = &[
        ("malloc_enter", "malloc_session"),
        ("calloc_enter", "calloc_session"),
        ("realloc_enter", "realloc_session"),
        ("reallocarray_enter", "reallocarray_session"),
        ("posix_memalign_enter", "posix_memalign_session"),
        ("aligned_alloc_enter", "aligned_alloc_session"),
        ("memalign_enter", "memalign_session"),
        ("valloc_enter", "valloc_session"),
        ("pvalloc_enter", "pvalloc_session"),
        ("mmap_enter", "mmap_session"),
    ];
    SESSIONS.iter().find(|(e, _)| *e == entry).map(|(_, s)| *s)
}

fn map_data(map: &aya::maps::Map) -> Option<&MapData> {
    use aya::maps::Map;
    match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::RingBuf(d)
        | Map::PerCpuHashMap(d) => Some(d),
        _ => None,
    }
}

/// Kernel memory of one map (bytes), from the kernel's own accounting.
fn map_memlock(map: &aya::maps::Map) -> Option<u64> {
    let data = map_data(map)?;
    let fd = data.fd().as_fd().as_raw_fd();
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok())
}

fn attach_error(e: aya::programs::ProgramError, symbol: &str, path: &std::path::Path, pid: u32) -> anyhow::Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prologues() {
        // glibc 2.36 free: test %rdi,%rdi; je ...
        assert_eq!(cheap_probe_offset(&[0x48, 0x85, 0xff, 0x74, 0x20]), 3);
        // with endbr64 first
        assert_eq!(cheap_probe_offset(&[0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xff, 0x0f, 0x84, 0, 0, 0, 0]), 7);
        // malloc: push %r12 is emulated already
        assert_eq!(cheap_probe_offset(&[0x41, 0x54, 0x55]), 0);
        // mov %rdi,%rbx after test: not emulated, stay at the entry
        assert_eq!(cheap_probe_offset(&[0x48, 0x85, 0xff, 0x48, 0x89, 0xfb]), 0);
        assert_eq!(cheap_probe_offset(&[]), 0);
    }
}
