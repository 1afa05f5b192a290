//! The BPF object, embedded once, and `Probes`, which loads it and executes a `ProbePlan` per
//! traced process. Dropping `Probes` detaches everything (and the kernel does the same if the
//! tracer is killed: the links live only as long as our file descriptors).
//!
//! - `plan`: what is attached where (the probe set, listed once), and the benchmark variants;
//! - `attach`: attaching one process's probes as its plan says;
//! - `prologue`: where in a function an entry-only probe goes;
//! - `bpf_log`: the BPF side's diagnostics;
//! - `window`: probe windows (`--window`), the hot probes attached part of the time.

mod attach;
mod bpf_log;
mod plan;
mod prologue;
mod window;

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::uprobe::UProbeLinkId;
use aya::programs::{RawTracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use tracer_ebpf::{globals, maps, TargetConfig};

use crate::error::user_error;
use crate::target::Target;
use crate::uprobe_multi::UprobeMultiPrograms;
use bpf_log::BpfLog;
pub use plan::{ProbePlan, ProbeVariant};

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

/// Kernel bytes per preallocated hash-map element beyond its key and value (the element
/// header, per-CPU spares), and per bucket: `--max-allocs 67108864` was measured at 7.5 GB.
const HASH_ELEM_OVERHEAD: u64 = 48;
const HASH_BUCKET: u64 = 16;

fn hash_map_memory(entries: u32, key: usize, value: usize) -> u64 {
    let round = |n: usize| (n as u64).div_ceil(8) * 8;
    let entries = u64::from(entries);
    entries * (round(key) + round(value) + HASH_ELEM_OVERHEAD) + entries.next_power_of_two() * HASH_BUCKET
}

impl MapSizes {
    /// About what the tables these sizes ask for take of kernel memory (the allocation table
    /// and the two stack tables; the fixed-size maps are small).
    pub fn kernel_memory(&self) -> u64 {
        use std::mem::size_of;
        use tracer_ebpf::{AllocInfo, AllocKey, StackStats, StackTrace};
        hash_map_memory(self.max_allocs, size_of::<AllocKey>(), size_of::<AllocInfo>())
            + hash_map_memory(self.max_stacks, size_of::<u64>(), size_of::<StackTrace>())
            + hash_map_memory(self.max_stacks, size_of::<u64>(), size_of::<StackStats>())
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

pub struct Probes {
    ebpf: Ebpf,
    /// Kernel memory held by all our maps right after loading (bytes).
    pub map_memory: u64,
    pub attach_time: Duration,
    pub attached: usize,
    plan: ProbePlan,
    /// Uprobe links per traced process, to detach one process without touching the others;
    /// true for a windowed probe (`Probe::windowed`).
    links: HashMap<u32, Vec<(&'static str, UProbeLinkId, bool)>>,
    /// Programs for uprobe_multi links (session and entry-only ones), if the plan has any and
    /// the kernel loads them, and their links per process (true: windowed).
    multi: Option<UprobeMultiPrograms>,
    multi_links: HashMap<u32, Vec<(OwnedFd, bool)>>,
    /// Probe windows (`--window`): whether they are used and whether one is open.
    windows: window::State,
    /// The last `TargetConfig::instance` handed out (0 is never one).
    last_instance: u64,
    /// Threads detaching the probes of processes that ended (see `release_target`).
    releasing: Vec<std::thread::JoinHandle<()>>,
    /// Declared last: stops after the programs that write to it are gone.
    _bpf_log: Option<BpfLog>,
}

impl Probes {
    pub fn load(options: LoadOptions) -> Result<Self> {
        let diagnostics = bpf_log::wanted();
        let mut ebpf = load_object(&options, diagnostics)?;
        let map_memory = ebpf.maps().filter_map(|(_, m)| map_memlock(m)).sum();
        let wanted = ProbePlan::for_variant(options.variant, true);
        let (plan, multi) = match wanted.multi_programs() {
            names if names.is_empty() => (wanted, None),
            names => match UprobeMultiPrograms::load(BPF_OBJECT, &map_fds(&ebpf), &names) {
                Ok(programs) => (wanted, Some(programs)),
                Err(e) => {
                    log::info!("no session uprobes ({e:#}); unsampled calls keep their return probe");
                    (ProbePlan::for_variant(options.variant, false), None)
                }
            },
        };
        attach_tracepoints(&mut ebpf)?;
        // Verifying a program that walks stacks takes ~50-150 ms: only the plan's are loaded
        // now, a fallback's when it is needed.
        for name in plan.perf_event_programs() {
            ensure_loaded(&mut ebpf, name)?;
        }
        let bpf_log = if diagnostics {
            BpfLog::start(&mut ebpf).map_err(|e| log::warn!("no diagnostics from the BPF side: {e:#}")).ok()
        } else {
            None
        };
        Ok(Self {
            ebpf,
            map_memory,
            attach_time: Duration::ZERO,
            attached: 0,
            plan,
            links: HashMap::new(),
            multi,
            multi_links: HashMap::new(),
            windows: window::State::default(),
            last_instance: 0,
            releasing: Vec::new(),
            _bpf_log: bpf_log,
        })
    }

    /// Registers a target's interpreter layout under a new instance number (returned; a later
    /// process with the same PID gets another), then attaches every probe of the plan to its
    /// libc and interpreter, scoped to that process.
    pub fn add_target(&mut self, target: &Target, mut config: TargetConfig) -> Result<u64> {
        if !self.plan.python_stacks {
            config.runtime_addr = 0;
        }
        let started = Instant::now();
        self.last_instance += 1;
        config.instance = self.last_instance;
        let mut targets: BpfHashMap<&mut MapData, u32, TargetConfig> =
            BpfHashMap::try_from(self.ebpf.map_mut(maps::TARGETS).context("TARGETS map")?)?;
        targets.insert(target.pid, config, 0).context("registering the target")?;
        let result = self.attach_all(target, self.windows.which());
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
        let mut owned = self.take_windowed(pid);
        for (program, link, _) in self.links.remove(&pid).unwrap_or_default() {
            if let Ok(link) = self.program(program).and_then(|p| Ok(p.take_link(link)?)) {
                owned.push(OwnedLink::Aya(link));
            }
        }
        owned.extend(self.multi_links.remove(&pid).unwrap_or_default().into_iter().map(|(fd, _)| OwnedLink::Multi(fd)));
        owned
    }

    /// A process's windowed links (`Probe::windowed`), owned; the others stay.
    fn take_windowed(&mut self, pid: u32) -> Vec<OwnedLink> {
        let mut owned = Vec::new();
        if let Some(links) = self.links.get_mut(&pid) {
            let (hot, rest): (Vec<_>, Vec<_>) = std::mem::take(links).into_iter().partition(|l| l.2);
            *links = rest;
            for (program, link, _) in hot {
                if let Ok(link) = self.program(program).and_then(|p| Ok(p.take_link(link)?)) {
                    owned.push(OwnedLink::Aya(link));
                }
            }
        }
        if let Some(links) = self.multi_links.get_mut(&pid) {
            let (hot, rest): (Vec<_>, Vec<_>) = std::mem::take(links).into_iter().partition(|l| l.1);
            *links = rest;
            owned.extend(hot.into_iter().map(|(fd, _)| OwnedLink::Multi(fd)));
        }
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
        self.windows.join_closing();
    }

    /// The processes with probes attached (by either kind of link).
    pub fn traced_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.links.keys().chain(self.multi_links.keys()).copied().collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn program(&mut self, name: &str) -> Result<&mut UProbe> {
        let p = self.ebpf.program_mut(name).with_context(|| format!("no BPF program {name}"))?;
        Ok(p.try_into()?)
    }

    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf.take_map(name).with_context(|| format!("no BPF map {name}"))
    }
}

/// Creates the maps (with the sizes asked for) and sets the globals.
fn load_object(options: &LoadOptions, diagnostics: bool) -> Result<Ebpf> {
    let follow = options.follow_forks as u64;
    let watch = options.watch_execs as u64;
    let diag = diagnostics as u64;
    let mut loader = EbpfLoader::new();
    loader
        .override_global(globals::FSBASE_OFFSET, &options.fsbase_offset, true)
        .override_global(globals::TGID_OFFSET, &options.tgid_offset, true)
        .override_global(globals::SAMPLE_BYTES, &options.sample_bytes, true)
        .override_global(globals::FOLLOW_FORKS, &follow, true)
        .override_global(globals::WATCH_EXECS, &watch, true)
        .override_global(globals::DIAGNOSTICS, &diag, true)
        .map_max_entries(maps::ALLOCS, options.sizes.max_allocs)
        .map_max_entries(maps::STACKS, options.sizes.max_stacks)
        .map_max_entries(maps::STACK_STATS, options.sizes.max_stacks);
    if !diagnostics {
        loader.map_max_entries(bpf_log::MAP, bpf_log::UNUSED_MAP_BYTES);
    }
    loader.load(BPF_OBJECT).map_err(|e| match e {
        aya::EbpfError::MapError(m) => user_error(
            format!("cannot create the BPF maps: {m}"),
            crate::error::as_root_or(
                "run as root; if memory is short, lower --max-allocs / --max-stacks",
                "memory is short (lower --max-allocs / --max-stacks), or the kernel forbids BPF maps \
                 (lockdown=confidentiality, a container without CAP_BPF)",
            ),
        ),
        other => anyhow::Error::new(other).context("loading the BPF programs"),
    })
}

fn attach_tracepoints(ebpf: &mut Ebpf) -> Result<()> {
    for (name, tracepoint) in plan::TRACEPOINTS {
        let program: &mut RawTracePoint =
            ebpf.program_mut(name).with_context(|| format!("no BPF program {name}"))?.try_into()?;
        program.load().with_context(|| format!("verifying BPF program {name}"))?;
        program.attach(tracepoint).with_context(|| format!("attaching {name} to its tracepoint"))?;
    }
    Ok(())
}

fn ensure_loaded(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let program: &mut UProbe = ebpf.program_mut(name).with_context(|| format!("no BPF program {name}"))?.try_into()?;
    if program.fd().is_err() {
        program.load().with_context(|| format!("verifying BPF program {name}"))?;
    }
    Ok(())
}

/// A link that detaches when dropped (held only to be dropped).
#[allow(dead_code)]
enum OwnedLink {
    Aya(aya::programs::uprobe::UProbeLink),
    Multi(OwnedFd),
}

/// Every map's file descriptor by name, for relocating the uprobe_multi programs against.
fn map_fds(ebpf: &Ebpf) -> HashMap<String, RawFd> {
    ebpf.maps()
        .filter_map(|(name, map)| map_data(map).map(|d| (name.to_string(), d.fd().as_fd().as_raw_fd())))
        .collect()
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
    memlock(&std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?)
}

/// The `memlock:` line of a map's /proc/self/fdinfo entry.
fn memlock(fdinfo: &str) -> Option<u64> {
    fdinfo.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_matches_what_the_kernel_took() {
        // Measured (issue 21): 7.5 GB for 67,108,864 allocations, 5.3 GB for 4,194,304 stacks.
        let allocs = MapSizes { max_allocs: 1 << 26, max_stacks: 16 }.kernel_memory() as f64;
        assert!((allocs / 7.5e9 - 1.0).abs() < 0.15, "{allocs}");
        let stacks = MapSizes { max_allocs: 16, max_stacks: 1 << 22 }.kernel_memory() as f64;
        assert!((stacks / 5.3e9 - 1.0).abs() < 0.25, "{stacks}");
    }

    #[test]
    fn memlock_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nmap_type:\t1\nkey_size:\t16\n\
                    value_size:\t32\nmax_entries:\t1048576\nmap_flags:\t0x0\nmap_extra:\t0x0\n\
                    memlock:\t92413312\nmap_id:\t118\nfrozen:\t0\n";
        assert_eq!(memlock(text), Some(92_413_312));
        assert_eq!(memlock("pos:\t0\n"), None);
    }

    /// The plans name programs by string: each must be in the object, of the kind its attach
    /// needs, and every program in the object must be used by some plan.
    #[test]
    fn every_program_a_plan_names_is_in_the_object() {
        let object = aya_obj::Object::parse(BPF_OBJECT).expect("the embedded BPF object parses");
        let plans = [
            ProbePlan::standard(true),
            ProbePlan::standard(false),
            ProbePlan::for_variant(ProbeVariant { bare: true, ..Default::default() }, true),
        ];
        let mut named: Vec<&str> = plan::TRACEPOINTS.iter().map(|(p, _)| *p).collect();
        for plan in &plans {
            named.extend(plan.perf_event_programs());
            named.extend(plan.multi_programs().into_iter().map(|(p, _)| p));
            for probe in &plan.probes {
                if let plan::Attach::Session(kind) = probe.attach {
                    named.extend([kind.programs().entry, kind.programs().ret]); // its fallback
                }
            }
        }
        for name in &named {
            assert!(object.programs.contains_key(*name), "no BPF program {name}");
        }
        let mut unused: Vec<&String> = object.programs.keys().filter(|p| !named.contains(&p.as_str())).collect();
        unused.sort();
        assert!(unused.is_empty(), "BPF programs no plan attaches: {unused:?}");
    }
}
