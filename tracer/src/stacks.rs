//! The stacks seen so far, as plain data: raw stack ids interned to the stack a person reads
//! (`StackKey`), the allocating lines they share (sites), one time series per stack and per
//! site, and the totals of processes that ended. No BPF map here: the session reads the maps
//! (`collector`), names the frames (`resolve`) and hands the results to this table.

use std::collections::HashMap;

use tracer_ebpf::StackStats;

use crate::report::Frame;
use crate::series::Series;

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

/// Outstanding memory of all stacks of one process that share an allocating line (the
/// innermost Python frame). One leaking line reached through many call paths (every test of a
/// suite, every route of a router) is one site.
pub struct SiteRecord {
    pub series: Series,
    /// Indexes into `StackTable::records`.
    pub records: Vec<usize>,
}

/// What is known about one logical stack.
pub struct StackRecord {
    pub key: StackKey,
    /// Index into `StackTable::sites`; `None` for a stack without a Python frame.
    pub site: Option<usize>,
    pub truncated: bool,
    pub series: Series,
    pub stats: StackStats,
    /// Its process ended: `stats` are final (the BPF maps no longer hold its entries).
    pub retired: bool,
}

#[derive(Default)]
pub struct StackTable {
    /// Raw stack id -> index into `records`.
    by_id: HashMap<u64, usize>,
    by_key: HashMap<StackKey, usize>,
    pub records: Vec<StackRecord>,
    pub sites: Vec<SiteRecord>,
    site_index: HashMap<(u64, Frame), usize>,
    /// Outstanding bytes of all stacks together.
    pub timeline: Series,
    /// Ended processes: instance -> the oldest allocation still live at its end, per record.
    retired: HashMap<u64, HashMap<usize, u64>>,
}

/// Adds `s` to `acc`, field by field.
pub fn add_stats(acc: &mut StackStats, s: &StackStats) {
    acc.allocs += s.allocs;
    acc.alloc_bytes += s.alloc_bytes;
    acc.frees += s.frees;
    acc.outstanding_bytes += s.outstanding_bytes;
    acc.outstanding_count += s.outstanding_count;
}

impl StackTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The record a raw stack id was interned to.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// Records raw stack `id` as the stack `key`; raw ids with equal keys share one record.
    /// Returns the record's index.
    pub fn intern(&mut self, id: u64, key: StackKey, truncated: bool) -> usize {
        let index = match self.by_key.get(&key) {
            Some(&i) => i,
            None => self.insert(key),
        };
        self.records[index].truncated |= truncated;
        self.by_id.insert(id, index);
        index
    }

    fn insert(&mut self, key: StackKey) -> usize {
        let i = self.records.len();
        let line = key.frames.iter().find(|f| matches!(f, Frame::Python { .. })).cloned();
        let site = line.map(|frame| {
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
            truncated: false,
            series: Series::new(),
            stats: StackStats::default(),
            retired: false,
        });
        i
    }

    /// One point of every series at time `t` (seconds), from the per-raw-id totals the BPF map
    /// holds now. Retired records keep their final totals; ids not interned are ignored.
    pub fn push_totals(&mut self, t: f64, entries: &[(u64, StackStats)]) {
        let mut totals: Vec<StackStats> =
            self.records.iter().map(|r| if r.retired { r.stats } else { StackStats::default() }).collect();
        for (id, s) in entries {
            match self.by_id.get(id) {
                Some(&i) if !self.records[i].retired => add_stats(&mut totals[i], s),
                _ => {}
            }
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

    /// The raw ids interned to the records of process `instance`.
    pub fn ids_of(&self, instance: u64) -> Vec<u64> {
        let mut ids: Vec<u64> =
            self.by_id.iter().filter(|&(_, &i)| self.records[i].key.instance == instance).map(|(&id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    /// Process `instance` ended: its records take `finals` (per raw id, as the BPF map held them
    /// last) as their totals for good, and remember the oldest allocation still live per record
    /// (`oldest`: raw id -> monotonic ns). The raw ids are forgotten: the BPF side may hand
    /// them out again, for another process.
    pub fn retire(&mut self, instance: u64, ids: &[u64], finals: &[(u64, StackStats)], oldest: &HashMap<u64, u64>) {
        let mine = |table: &Self, id: &u64| {
            table.by_id.get(id).copied().filter(|&i| table.records[i].key.instance == instance)
        };
        let mut final_stats: HashMap<usize, StackStats> = HashMap::new();
        for id in ids {
            if let Some(i) = mine(self, id) {
                final_stats.entry(i).or_default();
            }
        }
        for (id, s) in finals {
            if let Some(i) = mine(self, id) {
                add_stats(final_stats.entry(i).or_default(), s);
            }
        }
        let mut oldest_by_record: HashMap<usize, u64> = HashMap::new();
        for (id, &ts) in oldest {
            if let Some(i) = mine(self, id) {
                let e = oldest_by_record.entry(i).or_insert(ts);
                *e = (*e).min(ts);
            }
        }
        for (i, s) in final_stats {
            self.records[i].stats = s;
            self.records[i].retired = true;
        }
        for id in ids {
            if mine(self, id).is_some() {
                self.by_id.remove(id);
            }
        }
        self.retired.insert(instance, oldest_by_record);
    }

    /// Age in seconds, at `end_ns` (monotonic), of the oldest outstanding allocation of each
    /// record: from `live` (raw id -> oldest allocation's monotonic ns, of the processes still
    /// traced) and from what retired processes left.
    pub fn oldest_ages(&self, end_ns: u64, live: &HashMap<u64, u64>) -> Vec<f64> {
        let mut ages = vec![0.0f64; self.records.len()];
        let age = |ts: u64| end_ns.saturating_sub(ts) as f64 / 1e9;
        for (id, &ts) in live {
            if let Some(&i) = self.by_id.get(id) {
                ages[i] = ages[i].max(age(ts));
            }
        }
        for (&i, &ts) in self.retired.values().flatten() {
            ages[i] = ages[i].max(age(ts));
        }
        ages
    }

    /// Outstanding bytes of all stacks together, as of the last point.
    pub fn outstanding_bytes(&self) -> i64 {
        self.records.iter().map(|r| r.stats.outstanding_bytes.max(0)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(function: &str, line: u32) -> Frame {
        Frame::Python { function: function.into(), file: "app.py".into(), line, def_line: None }
    }

    fn native(function: &str) -> Frame {
        Frame::Native { function: function.into(), module: "python3.11".into() }
    }

    fn key(instance: u64, frames: Vec<Frame>) -> StackKey {
        StackKey { pid: 100 + instance as u32, instance, allocator: "malloc", frames }
    }

    fn stats(outstanding_bytes: i64, allocs: u64) -> StackStats {
        StackStats {
            allocs,
            alloc_bytes: allocs * 100,
            frees: 0,
            outstanding_bytes,
            outstanding_count: outstanding_bytes / 100,
        }
    }

    #[test]
    fn two_raw_ids_that_resolve_alike_are_one_stack() {
        let mut t = StackTable::new();
        let frames = vec![native("PyByteArray_Resize"), py("leak", 7), py("main", 20)];
        let a = t.intern(0xa, key(1, frames.clone()), false);
        let b = t.intern(0xb, key(1, frames.clone()), true);
        assert_eq!(a, b);
        assert_eq!(t.records.len(), 1);
        assert!(t.records[a].truncated, "one truncated raw stack marks the record");
        // The same frames in another process are another stack.
        let c = t.intern(0xc, key(2, frames), false);
        assert_ne!(a, c);
        t.push_totals(1.0, &[(0xa, stats(300, 3)), (0xb, stats(200, 2)), (0xc, stats(50, 1))]);
        assert_eq!(t.records[a].stats.outstanding_bytes, 500, "the raw ids' totals are summed");
        assert_eq!(t.records[a].stats.allocs, 5);
        assert_eq!(t.records[c].stats.outstanding_bytes, 50);
        assert_eq!(t.timeline.points(), &[(1.0, 550.0)]);
    }

    #[test]
    fn stacks_ending_in_one_line_of_one_process_share_a_site() {
        let mut t = StackTable::new();
        let via_a = t.intern(1, key(1, vec![native("malloc"), py("leak", 7), py("route_a", 30)]), false);
        let via_b = t.intern(2, key(1, vec![native("malloc"), py("leak", 7), py("route_b", 40)]), false);
        let other_line = t.intern(3, key(1, vec![native("malloc"), py("leak", 8), py("route_a", 30)]), false);
        let other_process = t.intern(4, key(2, vec![native("malloc"), py("leak", 7), py("route_a", 30)]), false);
        let no_python = t.intern(5, key(1, vec![native("malloc")]), false);
        let site = t.records[via_a].site.unwrap();
        assert_eq!(t.records[via_b].site, Some(site));
        assert_eq!(t.sites[site].records, [via_a, via_b]);
        assert_ne!(t.records[other_line].site, Some(site));
        assert_ne!(t.records[other_process].site, Some(site));
        assert_eq!(t.records[no_python].site, None);
        t.push_totals(1.0, &[(1, stats(100, 1)), (2, stats(250, 2)), (3, stats(7, 1))]);
        assert_eq!(t.sites[site].series.points(), &[(1.0, 350.0)]);
    }

    #[test]
    fn totals_outlive_a_retired_process() {
        let mut t = StackTable::new();
        let dead = t.intern(1, key(1, vec![py("keep_a", 3)]), false);
        let alive = t.intern(2, key(2, vec![py("keep_b", 4)]), false);
        t.push_totals(1.0, &[(1, stats(300, 3)), (2, stats(100, 1))]);
        // Process 1 ends: the map held 400 bytes for it last; its oldest live block dates from 2 s.
        let oldest = HashMap::from([(1u64, 2_000_000_000u64)]);
        assert_eq!(t.ids_of(1), [1]);
        t.retire(1, &[1], &[(1, stats(400, 4))], &oldest);
        assert!(t.records[dead].retired && !t.records[alive].retired);
        assert_eq!(t.index_of(1), None, "the raw id is free for another process");
        // Later points: the map no longer has process 1's entries; an id reused by the BPF side
        // for a new stack of another process is not added to the retired record.
        t.push_totals(2.0, &[(2, stats(150, 2))]);
        t.push_totals(3.0, &[(1, stats(9999, 9)), (2, stats(200, 3))]);
        assert_eq!(t.records[dead].stats.outstanding_bytes, 400);
        assert!(t.records[dead].retired);
        assert_eq!(t.records[dead].series.points(), &[(1.0, 300.0), (2.0, 400.0), (3.0, 400.0)]);
        assert_eq!(t.records[alive].stats.outstanding_bytes, 200);
        assert_eq!(t.outstanding_bytes(), 600);
        // Ages: the retired process's oldest block, and the live one's from the allocation table.
        let ages = t.oldest_ages(10_000_000_000, &HashMap::from([(2u64, 9_000_000_000u64)]));
        assert_eq!(ages[dead], 8.0);
        assert_eq!(ages[alive], 1.0);
    }

    #[test]
    fn a_retired_process_without_a_final_entry_keeps_zero() {
        let mut t = StackTable::new();
        let r = t.intern(1, key(1, vec![py("f", 1)]), false);
        t.push_totals(1.0, &[(1, stats(100, 1))]);
        t.retire(1, &[1], &[], &HashMap::new());
        t.push_totals(2.0, &[]);
        assert!(t.records[r].retired);
        assert_eq!(t.records[r].stats.outstanding_bytes, 0);
    }
}
