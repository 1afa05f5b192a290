//! Userspace side of the BPF maps: resolves new stacks as soon as they appear (while their code
//! objects are alive), samples per-stack outstanding memory at every interval into bounded
//! time series, and reads the final state for the report.

use std::collections::HashMap;

use anyhow::Result;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use tracer_ebpf::{event, maps, AllocInfo, AllocKey, AllocKind, Counter, Event, StackStats, StackTrace, UNKNOWN_STACK};

use crate::probes::Probes;
use crate::python::code::CodeResolver;
use crate::remote::ProcessMemory;
use crate::report::Frame;
use crate::series::Series;
use crate::symbolize::NativeSymbols;

/// A stack as a person reads it; raw stacks that resolve to the same frames are one stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub pid: u32,
    /// Which process had `pid` (see `TargetConfig::instance`).
    pub instance: u64,
    pub allocator: &'static str,
    /// Innermost first: the native caller of the allocator, then Python frames.
    pub frames: Vec<Frame>,
}

/// The line that allocates: the innermost Python frame of a stack. One leaking line reached
/// through many call paths (every test of a suite, every route of a router) is one site.
pub type Site = Frame;

/// Outstanding memory of all stacks that share an allocating line.
pub struct SiteRecord {
    pub series: Series,
    /// Indexes into `Collector::records`.
    pub records: Vec<usize>,
}

/// What is known about one logical stack.
pub struct StackRecord {
    pub key: StackKey,
    pub site: Option<usize>,
    pub truncated: bool,
    pub series: Series,
    pub stats: StackStats,
    /// Its process ended: `stats` are final and its entries are gone from the BPF maps.
    pub retired: bool,
}

/// Counters summed over CPUs.
#[derive(Debug, Clone, Default)]
pub struct Counters(pub [u64; Counter::COUNT]);

impl Counters {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }
}

pub struct Collector {
    stats: BpfHashMap<MapData, u64, StackStats>,
    stacks: BpfHashMap<MapData, u64, StackTrace>,
    allocs: BpfHashMap<MapData, AllocKey, AllocInfo>,
    counters: PerCpuArray<MapData, u64>,
    events: RingBuf<MapData>,
    /// Per traced process: how to read its code objects and name its native frames.
    processes: HashMap<u32, ProcessView>,
    /// Shared by every process's `NativeSymbols` (see `symbolize`).
    symbolizer: blazesym::symbolize::Symbolizer,
    /// Processes the BPF side saw fork from a traced one: (child, parent), to attach.
    pub forked: Vec<(u32, u32)>,
    /// Traced processes that called exec (they are no longer traced).
    pub execed: Vec<u32>,
    /// Raw stack id -> index into `records`.
    by_id: HashMap<u64, usize>,
    by_key: HashMap<StackKey, usize>,
    pub records: Vec<StackRecord>,
    pub sites: Vec<SiteRecord>,
    site_index: HashMap<(u64, Site), usize>,
    pub timeline: Series,
    /// The main target started finalizing.
    pub finalizing: bool,
    pub stacks_resolved: u64,
    main_pid: u32,
    main_instance: u64,
    frozen_counters: Option<Counters>,
    /// Ended processes: instance -> the oldest allocation still live at its end, per record.
    retired: HashMap<u64, HashMap<usize, u64>>,
    /// Ended processes that had started finalizing.
    retired_finalizing: Vec<u64>,
}

pub struct ProcessView {
    code: CodeResolver<ProcessMemory>,
    native: NativeSymbols,
    pub finalizing: bool,
    instance: u64,
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Collector {
    pub fn new(probes: &mut Probes, pid: u32, instance: u64, code: CodeResolver<ProcessMemory>) -> Result<Self> {
        let symbolizer = blazesym::symbolize::Symbolizer::new();
        let native = NativeSymbols::warmed_up(pid, &symbolizer);
        Ok(Self {
            stats: BpfHashMap::try_from(probes.take_map(maps::STACK_STATS)?)?,
            stacks: BpfHashMap::try_from(probes.take_map(maps::STACKS)?)?,
            allocs: BpfHashMap::try_from(probes.take_map(maps::ALLOCS)?)?,
            counters: PerCpuArray::try_from(probes.take_map(maps::COUNTERS)?)?,
            events: RingBuf::try_from(probes.take_map(maps::EVENTS)?)?,
            processes: HashMap::from([(pid, ProcessView { code, native, finalizing: false, instance })]),
            symbolizer,
            forked: Vec::new(),
            execed: Vec::new(),
            main_pid: pid,
            main_instance: instance,
            frozen_counters: None,
            retired: HashMap::new(),
            retired_finalizing: Vec::new(),
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            records: Vec::new(),
            sites: Vec::new(),
            site_index: HashMap::new(),
            timeline: Series::new(),
            finalizing: false,
            stacks_resolved: 0,
        })
    }

    /// Starts reading a forked child's stacks (its probes are attached by the caller).
    pub fn add_process(&mut self, pid: u32, instance: u64, code: CodeResolver<ProcessMemory>) {
        self.processes.insert(pid, ProcessView { code, native: NativeSymbols::new(pid), finalizing: false, instance });
    }

    pub fn is_retired(&self, instance: u64) -> bool {
        self.retired.contains_key(&instance)
    }

    pub fn process_finalizing(&self, pid: u32, instance: u64) -> bool {
        self.processes.get(&pid).is_some_and(|p| p.finalizing && p.instance == instance)
            || self.retired_finalizing.contains(&instance)
    }

    /// The ring buffer's descriptor, to wake up as soon as the BPF side announces something.
    pub fn events_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.events.as_raw_fd()
    }

    /// Handles what the BPF side announced since the last call: new stacks are resolved now.
    pub fn drain_events(&mut self) {
        let mut new_ids = Vec::new();
        while let Some(item) = self.events.next() {
            if item.len() < std::mem::size_of::<Event>() {
                continue;
            }
            let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
            match ev.kind {
                event::NEW_STACK => {
                    log::trace!(
                        "new stack {:x} announced {} us ago",
                        ev.value,
                        monotonic_ns().saturating_sub(ev.ts_ns) / 1000
                    );
                    new_ids.push(ev.value)
                }
                event::FINALIZING => {
                    if let Some(p) = self.processes.get_mut(&ev.tgid) {
                        p.finalizing = true;
                    }
                    self.finalizing |= ev.tgid == self.main_pid;
                }
                event::FORKED => self.forked.push((ev.tgid, ev.value as u32)),
                event::EXEC => self.execed.push(ev.tgid),
                _ => {}
            }
        }
        self.resolve_new(&new_ids);
    }

    /// Resolves new stack ids: the Python frames of all of them first (their code objects may
    /// be freed soon after, e.g. a module body that finishes executing), native names after.
    fn resolve_new(&mut self, ids: &[u64]) {
        let mut pending = Vec::new();
        for &id in ids {
            if self.by_id.contains_key(&id) {
                continue;
            }
            let trace = if id == UNKNOWN_STACK { None } else { self.stacks.get(&id, 0).ok() };
            let python: Vec<Frame> = trace
                .as_ref()
                .and_then(|t| {
                    let process = self.processes.get_mut(&t.tgid).filter(|p| p.instance == t.instance)?;
                    let depth = (t.depth as usize).min(t.frames.len());
                    if log::log_enabled!(log::Level::Trace) {
                        log::trace!("stack {id:x}: {:x?}", &t.frames[..depth]);
                    }
                    Some(t.frames[..depth].iter().filter_map(|raw| process.code.resolve(*raw)).collect())
                })
                .unwrap_or_default();
            pending.push((id, trace, python));
        }
        for (id, trace, python) in pending {
            let (key, truncated) = match trace {
                Some(t) => {
                    let allocator = AllocKind::from_raw(t.kind).map_or("unknown", AllocKind::symbol);
                    let mut frames = Vec::with_capacity(python.len() + 1);
                    let native = match self.processes.get_mut(&t.tgid).filter(|p| p.instance == t.instance) {
                        Some(p) => p.native.frame(&self.symbolizer, t.native_ip),
                        None => {
                            Frame::Native { function: format!("[unknown] 0x{:x}", t.native_ip), module: "?".into() }
                        }
                    };
                    frames.push(native);
                    frames.extend(python);
                    (StackKey { pid: t.tgid, instance: t.instance, allocator, frames }, t.truncated != 0)
                }
                None => {
                    let what = if id == UNKNOWN_STACK {
                        "[stack not recorded: stack table full]"
                    } else {
                        "[stack not readable]"
                    };
                    let frames = vec![Frame::Native { function: what.into(), module: "tracer".into() }];
                    (StackKey { pid: self.main_pid, instance: self.main_instance, allocator: "unknown", frames }, false)
                }
            };
            self.intern(id, key, truncated);
        }
    }

    fn intern(&mut self, id: u64, key: StackKey, truncated: bool) -> usize {
        self.stacks_resolved += 1;
        let index = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.records.len();
                let site = key.frames.iter().find(|f| matches!(f, Frame::Python { .. })).cloned().map(|frame| {
                    let next = self.sites.len();
                    let s = *self.site_index.entry((key.instance, frame)).or_insert(next);
                    if s == next {
                        self.sites.push(SiteRecord { series: Series::new(), records: Vec::new() });
                    }
                    self.sites[s].records.push(i);
                    s
                });
                self.by_key.insert(key.clone(), i);
                self.records.push(StackRecord {
                    key,
                    site,
                    truncated,
                    series: Series::new(),
                    stats: StackStats::default(),
                    retired: false,
                });
                i
            }
        };
        self.records[index].truncated |= truncated;
        self.by_id.insert(id, index);
        index
    }

    fn resolve(&mut self, id: u64) -> usize {
        if let Some(&i) = self.by_id.get(&id) {
            return i;
        }
        self.resolve_new(&[id]);
        self.by_id[&id]
    }

    /// Reads every stack's current totals and appends one point to each series.
    pub fn sample(&mut self, t: f64) {
        self.drain_events();
        let mut totals: Vec<StackStats> =
            self.records.iter().map(|r| if r.retired { r.stats } else { StackStats::default() }).collect();
        let entries: Vec<(u64, StackStats)> = self.stats.iter().filter_map(|r| r.ok()).collect();
        for (id, s) in entries {
            let i = self.resolve(id);
            if self.records[i].retired {
                continue;
            }
            if i >= totals.len() {
                totals.resize(i + 1, StackStats::default());
            }
            let acc = &mut totals[i];
            acc.allocs += s.allocs;
            acc.alloc_bytes += s.alloc_bytes;
            acc.frees += s.frees;
            acc.outstanding_bytes += s.outstanding_bytes;
            acc.outstanding_count += s.outstanding_count;
        }
        let mut outstanding = 0i64;
        let mut by_site = vec![0i64; self.sites.len()];
        for (record, s) in self.records.iter_mut().zip(totals) {
            record.stats = s;
            record.series.push(t, s.outstanding_bytes.max(0) as f64);
            outstanding += s.outstanding_bytes.max(0);
            if let Some(site) = record.site {
                by_site[site] += s.outstanding_bytes.max(0);
            }
        }
        for (site, bytes) in self.sites.iter_mut().zip(by_site) {
            site.series.push(t, bytes as f64);
        }
        self.timeline.push(t, outstanding as f64);
    }

    /// The BPF counters, or their values when the recording ended (see `freeze_counters`).
    pub fn counters(&self) -> Counters {
        if let Some(c) = &self.frozen_counters {
            return c.clone();
        }
        let mut c = Counters::default();
        for (i, slot) in c.0.iter_mut().enumerate() {
            if let Ok(values) = self.counters.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        c
    }

    /// Keeps the counters as they are now: detaching takes a while, and a return probe still
    /// attached after its entry probe is gone would count returns without entries.
    pub fn freeze_counters(&mut self) {
        self.frozen_counters = Some(self.counters());
    }

    /// Age in seconds, at `end_ns` (monotonic), of the oldest outstanding allocation of each
    /// record (one pass over the allocation table).
    pub fn oldest_ages(&mut self, end_ns: u64) -> Vec<f64> {
        let mut oldest: HashMap<u64, u64> = HashMap::new();
        for (key, info) in self.allocs.iter().filter_map(|r| r.ok()) {
            if !self.processes.contains_key(&key.tgid) {
                continue;
            }
            let e = oldest.entry(info.stack_id).or_insert(info.ts_ns);
            *e = (*e).min(info.ts_ns);
        }
        let mut ages = vec![0.0f64; self.records.len()];
        let age = |ts: u64| end_ns.saturating_sub(ts) as f64 / 1e9;
        for (id, ts) in oldest {
            if let Some(&i) = self.by_id.get(&id) {
                ages[i] = ages[i].max(age(ts));
            }
        }
        for (&i, &ts) in self.retired.values().flatten() {
            ages[i] = ages[i].max(age(ts));
        }
        ages
    }

    /// A traced process ended (exited, exec'd, or its PID was taken by a new process): its
    /// stacks keep their totals as they are now, and its entries leave the BPF maps (its
    /// allocations, stacks and per-stack totals). A later process with the same PID then
    /// starts clean, and the maps do not fill with the dead. Its probes are the caller's.
    pub fn retire(&mut self, pid: u32) {
        self.drain_events();
        let Some(view) = self.processes.remove(&pid) else { return };
        let instance = view.instance;
        let ids: Vec<(u64, usize)> = self
            .by_id
            .iter()
            .filter(|&(&id, &i)| id != UNKNOWN_STACK && self.records[i].key.instance == instance)
            .map(|(&id, &i)| (id, i))
            .collect();
        let mut final_stats: HashMap<usize, StackStats> = HashMap::new();
        for &(id, i) in &ids {
            let acc = final_stats.entry(i).or_default();
            if let Ok(s) = self.stats.get(&id, 0) {
                acc.allocs += s.allocs;
                acc.alloc_bytes += s.alloc_bytes;
                acc.frees += s.frees;
                acc.outstanding_bytes += s.outstanding_bytes;
                acc.outstanding_count += s.outstanding_count;
            }
        }
        for (i, s) in final_stats {
            self.records[i].stats = s;
            self.records[i].retired = true;
        }
        let mut oldest: HashMap<usize, u64> = HashMap::new();
        let mut dead: Vec<AllocKey> = Vec::new();
        for (key, info) in self.allocs.iter().filter_map(|r| r.ok()) {
            if key.tgid != pid {
                continue;
            }
            dead.push(key);
            if let Some(&i) = self.by_id.get(&info.stack_id).filter(|&&i| self.records[i].key.instance == instance) {
                let e = oldest.entry(i).or_insert(info.ts_ns);
                *e = (*e).min(info.ts_ns);
            }
        }
        for key in &dead {
            let _ = self.allocs.remove(key);
        }
        for &(id, _) in &ids {
            let _ = self.stats.remove(&id);
            let _ = self.stacks.remove(&id);
            self.by_id.remove(&id);
        }
        log::info!(
            "pid {pid} ended: {} stacks kept as they were, {} allocation records dropped from the BPF map",
            ids.len(),
            dead.len()
        );
        self.retired.insert(instance, oldest);
        if view.finalizing {
            self.retired_finalizing.push(instance);
        }
    }
}
