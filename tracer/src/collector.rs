//! The userspace side of the BPF maps, and nothing else: what the BPF side announced (ring
//! buffer), the per-stack totals, the outstanding allocations, the counters; and forgetting a
//! process's entries when it ends. Naming stacks is `resolve`'s job, keeping them `stacks`'s.

use std::collections::HashMap;

use anyhow::Result;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use tracer_ebpf::Counter;
use tracer_ebpf::{event, maps, AllocInfo, AllocKey, Event, ProcLosses, StackStats, StackTrace, UNKNOWN_STACK};

use crate::clock::monotonic_ns;
use crate::probes::Probes;

/// Something the BPF side announced through the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// A stack id was stored for the first time: name it now, while its code objects live.
    NewStack(u64),
    /// A traced interpreter started finalizing.
    Finalizing(u32),
    /// A traced process forked (the child is registered already).
    Forked { child: u32, parent: u32 },
    /// A process called exec (if it was traced, it no longer is).
    Exec(u32),
}

/// Counters summed over CPUs, and each traced process's own loss counters.
#[derive(Debug, Clone, Default)]
pub struct Counters(pub [u64; Counter::COUNT], pub HashMap<u32, ProcLosses>);

impl Counters {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    /// Process `pid`'s own count of the loss `counter` (0 when it lost nothing, or for a
    /// counter that is not a loss).
    pub fn lost_by(&self, pid: u32, counter: Counter) -> u64 {
        match (self.1.get(&pid), counter.loss_slot()) {
            (Some(l), Some(slot)) => l.counts[slot],
            _ => 0,
        }
    }
}

pub struct Collector {
    stats: BpfHashMap<MapData, u64, StackStats>,
    stacks: BpfHashMap<MapData, u64, StackTrace>,
    allocs: BpfHashMap<MapData, AllocKey, AllocInfo>,
    counters: PerCpuArray<MapData, u64>,
    losses: BpfHashMap<MapData, u32, ProcLosses>,
    events: RingBuf<MapData>,
    frozen_counters: Option<Counters>,
}

impl Collector {
    pub fn new(probes: &mut Probes) -> Result<Self> {
        Ok(Self {
            stats: BpfHashMap::try_from(probes.take_map(maps::STACK_STATS)?)?,
            stacks: BpfHashMap::try_from(probes.take_map(maps::STACKS)?)?,
            allocs: BpfHashMap::try_from(probes.take_map(maps::ALLOCS)?)?,
            counters: PerCpuArray::try_from(probes.take_map(maps::COUNTERS)?)?,
            losses: BpfHashMap::try_from(probes.take_map(maps::PROC_LOSSES)?)?,
            events: RingBuf::try_from(probes.take_map(maps::EVENTS)?)?,
            frozen_counters: None,
        })
    }

    /// The ring buffer's descriptor, to wake up as soon as the BPF side announces something.
    pub fn events_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.events.as_raw_fd()
    }

    /// What the BPF side announced since the last call, in order.
    pub fn drain(&mut self) -> Vec<Announcement> {
        let mut announced = Vec::new();
        while let Some(item) = self.events.next() {
            if item.len() < std::mem::size_of::<Event>() {
                continue;
            }
            // SAFETY: the item holds at least one `Event` (plain data, any bit pattern valid).
            let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
            announced.push(match ev.kind {
                event::NEW_STACK => {
                    log::trace!(
                        "new stack {:x} announced {} us ago",
                        ev.value,
                        monotonic_ns().saturating_sub(ev.ts_ns) / 1000
                    );
                    Announcement::NewStack(ev.value)
                }
                event::FINALIZING => Announcement::Finalizing(ev.tgid),
                event::FORKED => Announcement::Forked { child: ev.tgid, parent: ev.value as u32 },
                event::EXEC => Announcement::Exec(ev.tgid),
                _ => continue,
            });
        }
        announced
    }

    /// The raw stack `id` (`None`: the stack table was full, or it is gone).
    pub fn stack(&self, id: u64) -> Option<StackTrace> {
        if id == UNKNOWN_STACK {
            return None;
        }
        self.stacks.get(&id, 0).ok()
    }

    /// Every raw stack's totals as the BPF side holds them now.
    pub fn read_stats(&self) -> Vec<(u64, StackStats)> {
        self.stats.iter().filter_map(|r| r.ok()).collect()
    }

    /// The totals of these raw stacks (those the map still holds).
    pub fn stats_of(&self, ids: &[u64]) -> Vec<(u64, StackStats)> {
        ids.iter().filter_map(|&id| self.stats.get(&id, 0).ok().map(|s| (id, s))).collect()
    }

    /// Per raw stack id, the monotonic time of its oldest outstanding allocation, over the
    /// processes `traced` accepts (one pass over the allocation table).
    pub fn oldest_allocs(&self, traced: impl Fn(u32) -> bool) -> HashMap<u64, u64> {
        let mut oldest: HashMap<u64, u64> = HashMap::new();
        for (key, info) in self.allocs.iter().filter_map(|r| r.ok()) {
            if traced(key.tgid) {
                let e = oldest.entry(info.stack_id).or_insert(info.ts_ns);
                *e = (*e).min(info.ts_ns);
            }
        }
        oldest
    }

    /// The outstanding allocation records of these processes.
    pub fn records_of(&self, pids: &[u32]) -> Vec<(AllocKey, AllocInfo)> {
        self.allocs.iter().filter_map(|r| r.ok()).filter(|(k, _)| pids.contains(&k.tgid)).collect()
    }

    /// These records' blocks are known dead (freed while no free probe was attached): each
    /// leaves the allocation table and its stack's totals drop as a seen free would make them.
    /// Only while no allocation or free probe is attached (between probe windows): the totals
    /// are updated with a read and a write. Returns how many were dropped.
    pub fn drop_dead(&mut self, dead: &[(AllocKey, AllocInfo)]) -> usize {
        let mut dropped = 0;
        for (key, info) in dead {
            // The record may have gone meanwhile (munmap); only the one who removes it counts it.
            if self.allocs.remove(key).is_err() {
                continue;
            }
            dropped += 1;
            if let Ok(mut s) = self.stats.get(&info.stack_id, 0) {
                s.frees += info.count;
                s.outstanding_bytes -= info.size as i64;
                s.outstanding_count -= info.count as i64;
                let _ = self.stats.insert(info.stack_id, s, 0);
            }
        }
        dropped
    }

    /// Process `pid` ended: its outstanding allocations and the raw stacks `ids` leave the maps,
    /// so that a later process with its PID starts clean and the maps do not fill with the
    /// dead. Returns what the allocations showed: per raw stack id, the monotonic time of its
    /// oldest allocation still outstanding.
    pub fn forget(&mut self, pid: u32, ids: &[u64]) -> HashMap<u64, u64> {
        let mut oldest: HashMap<u64, u64> = HashMap::new();
        let mut dead: Vec<AllocKey> = Vec::new();
        for (key, info) in self.allocs.iter().filter_map(|r| r.ok()) {
            if key.tgid != pid {
                continue;
            }
            dead.push(key);
            let e = oldest.entry(info.stack_id).or_insert(info.ts_ns);
            *e = (*e).min(info.ts_ns);
        }
        for key in &dead {
            let _ = self.allocs.remove(key);
        }
        let _ = self.losses.remove(&pid);
        for id in ids {
            let _ = self.stats.remove(id);
            let _ = self.stacks.remove(id);
        }
        log::info!(
            "pid {pid} ended: {} stacks kept as they were, {} allocation records dropped from the BPF map",
            ids.len(),
            dead.len()
        );
        oldest
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
        c.1 = self.losses.iter().filter_map(|r| r.ok()).collect();
        c
    }

    /// Keeps the counters as they are now: detaching takes a while, and a return probe still
    /// attached after its entry probe is gone would count returns without entries.
    pub fn freeze_counters(&mut self) {
        self.frozen_counters = Some(self.counters());
    }
}
