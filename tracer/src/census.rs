//! The census view over time: at every interval, every GC-tracked object of the target counted
//! by type (`python::census`), each type's count kept as a bounded series that `leaks` judges
//! like a holder's length (`ValueError +12/s leak`). It catches leaks no single container shows:
//! objects each kept by a different owner, reference cycles while `gc` is disabled, objects held
//! by a C extension.

use std::collections::HashMap;

use crate::python::census::{Census, CensusBudget, CensusReader, TypeCount};
use crate::python::heap::{RootKind, TypeAddrs};
use crate::python::origin::{in_app, OriginReader};
use crate::remote::ProcessMemory;
use crate::report::Origin;
use crate::series::Series;
use crate::target::Target;

pub struct CensusTrack {
    pub last: TypeCount,
    pub series: Series,
    /// Where its newest objects were made, read when its count last grew.
    pub origin: Option<Origin>,
}

/// Growing types whose newest objects' origins are read per scan (the fastest growing).
const ORIGIN_TYPES_PER_SCAN: usize = 8;

/// Totals over all scans, for the report.
#[derive(Debug, Clone, Default)]
pub struct CensusTotals {
    pub scans: u64,
    /// Scans whose counts were not used: a list was dropped half-read (torn) or the scan failed.
    pub scans_discarded: u64,
    pub scans_cut_by_budget: u64,
    /// Intervals without a scan because the last one took long (at most `MAX_DUTY` of the time).
    pub scans_paced: u64,
    pub objects: u64,
    pub bytes_read: u64,
    pub reads: u64,
    pub duration_s: f64,
    pub max_duration_s: f64,
    pub torn_repaired: u64,
    pub tail_completions: u64,
    pub torn_dropped: u64,
    /// Objects the last scan did not reach because of the budget (when known).
    pub skipped_last: Option<u64>,
    /// Why the last scan failed, if it did.
    pub last_error: Option<String>,
}

pub struct CensusView {
    reader: CensusReader,
    origins: OriginReader<ProcessMemory>,
    budget: CensusBudget,
    pub tracks: HashMap<String, CensusTrack>,
    pub totals: CensusTotals,
    /// Objects counted by the last complete scan (estimates what a cut scan skipped).
    last_complete: Option<u64>,
    /// The roots beyond modules the last complete scan met (for the holders view).
    pub roots: Vec<(u64, RootKind)>,
    /// No scan before this time: a big heap is scanned less often, so that the census takes at
    /// most `MAX_DUTY` of the tracer's time (and of the reads the target's memory sees).
    next_at_s: f64,
}

/// The largest share of wall time the census may spend scanning.
const MAX_DUTY: f64 = 0.1;

impl CensusView {
    pub fn new(target: &Target, types: TypeAddrs, budget: CensusBudget) -> Self {
        let interp = &target.interpreter;
        let mem = ProcessMemory::new(target.pid);
        let reader = CensusReader::new(mem, &interp.offsets, types, interp.runtime);
        let origins =
            OriginReader::new(ProcessMemory::new(target.pid), interp, target.python.start..target.python.end, types);
        CensusView {
            reader,
            origins,
            budget,
            tracks: HashMap::new(),
            totals: CensusTotals::default(),
            last_complete: None,
            roots: Vec::new(),
            next_at_s: 0.0,
        }
    }

    pub fn scan(&mut self, t_s: f64) {
        if t_s < self.next_at_s {
            self.totals.scans_paced += 1;
            return;
        }
        let mut census = self.reader.scan(&self.budget);
        self.next_at_s = t_s + census.stats.duration_s / MAX_DUTY;
        self.account(&census);
        if census.error.is_none() {
            self.roots = std::mem::take(&mut census.roots);
        }
        if census.error.is_some() || census.stats.torn_dropped > 0 {
            self.totals.scans_discarded += 1;
            return;
        }
        let mut grew: Vec<(u64, &String)> = Vec::new();
        for (name, count) in &census.by_type {
            let track = self.tracks.entry(name.clone()).or_insert_with(|| CensusTrack {
                last: TypeCount::default(),
                series: Series::new(),
                origin: None,
            });
            if !track.series.points().is_empty() && count.count > track.last.count {
                grew.push((count.count - track.last.count, name));
            }
            track.series.push(t_s, count.count as f64);
            track.last = *count;
        }
        grew.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        for (_, name) in grew.into_iter().take(ORIGIN_TYPES_PER_SCAN) {
            let newest = census.newest.get(name).map(Vec::as_slice).unwrap_or_default();
            if let Some(o) = self.newest_origin(name, newest) {
                self.tracks.get_mut(name).expect("tracked above").origin = Some(o);
            }
        }
        // A type no longer seen has no live objects left.
        for (name, track) in self.tracks.iter_mut() {
            if !census.by_type.contains_key(name) {
                track.series.push(t_s, 0.0);
                track.last = TypeCount::default();
            }
        }
    }

    /// The origin of a holder's newest items (`addrs`, newest first): the first in the
    /// application's own code, else the first that has one.
    pub fn origin_of_items(&mut self, addrs: &[u64]) -> Option<Origin> {
        let mut first = None;
        for o in self.origins.origins(addrs).into_iter().flatten() {
            if in_app(&o) {
                return Some(o);
            }
            first.get_or_insert(o);
        }
        first
    }

    /// The origin of the newest object of type `name` that has one, preferring the
    /// application's own code (newest first).
    fn newest_origin(&mut self, name: &str, newest: &[u64]) -> Option<Origin> {
        let mut first = None;
        for &addr in newest.iter().rev() {
            let Some(o) = self.origins.origin_of_type(addr, name) else { continue };
            if in_app(&o) {
                return Some(o);
            }
            first.get_or_insert(o);
        }
        first
    }

    fn account(&mut self, c: &Census) {
        let (t, s) = (&mut self.totals, &c.stats);
        t.scans += 1;
        t.objects += s.objects;
        t.bytes_read += s.bytes_read;
        t.reads += s.reads;
        t.duration_s += s.duration_s;
        t.max_duration_s = t.max_duration_s.max(s.duration_s);
        t.torn_repaired += s.torn_repaired;
        t.tail_completions += s.tail_completions;
        t.torn_dropped += s.torn_dropped;
        t.last_error = c.error.clone();
        if s.cut_by_budget {
            t.scans_cut_by_budget += 1;
            let total = s.heap_size.or(self.last_complete);
            t.skipped_last = total.map(|n| n.saturating_sub(s.objects));
        } else if c.error.is_none() && s.torn_dropped == 0 {
            self.last_complete = Some(s.objects);
            t.skipped_last = None;
        }
    }
}
