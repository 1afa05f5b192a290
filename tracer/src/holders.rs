//! The holders view over time: scans the target's containers at every interval and keeps each
//! one's length as a bounded series, keyed by the path a person would type. The census of every
//! tracked object by type (census.rs) is read at the same moments.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::census::CensusView;
use crate::python::census::CensusBudget;
use crate::python::heap::{ContainerSample, HeapScanner, Name, ScanBudget, ScanStats, TypeAddrs};
use crate::remote::ProcessMemory;
use crate::report::Origin;
use crate::series::Series;
use crate::target::Target;

pub struct HolderTrack {
    pub last: ContainerSample,
    pub series: Series,
    /// Where its newest items were made, read when its length last grew.
    pub origin: Option<Origin>,
    /// The scan that last reached it.
    seen_in_scan: u64,
}

/// Points kept per container: enough for a trend, and a service reaches tens of thousands of
/// containers (a series per session dict), so the default 512 would cost ~8 KiB each.
const HOLDER_POINTS: usize = 128;

/// A container no scan has reached for this many scans is gone (a finished request's dict, an
/// expired session's): its track is dropped, or a service that churns keys would grow the
/// tracer without bound.
const FORGET_AFTER_SCANS: u64 = 30;

/// Growing holders whose newest items' origins are read per scan (the fastest growing).
const ORIGIN_HOLDERS_PER_SCAN: usize = 8;

/// Totals over all scans, for the report.
#[derive(Debug, Clone, Default)]
pub struct ScanTotals {
    pub scans: u64,
    pub objects_visited: u64,
    pub bytes_read: u64,
    pub duration_s: f64,
    pub max_duration_s: f64,
    pub torn_retried: u64,
    pub dropped: u64,
    pub cut_by_budget: u64,
    /// Container items not followed (past the per-container limit), over all scans.
    pub items_not_followed: u64,
    /// Bytes copied in whole chunks before the walks, over all scans.
    pub snapshot_bytes: u64,
    /// Intervals without a scan because the last one took long (at most [`MAX_DUTY`]).
    pub paced: u64,
}

impl ScanTotals {
    fn add(&mut self, s: &ScanStats) {
        self.scans += 1;
        self.objects_visited += s.objects_visited;
        self.bytes_read += s.bytes_read;
        self.duration_s += s.duration_s;
        self.max_duration_s = self.max_duration_s.max(s.duration_s);
        self.torn_retried += s.torn_retried;
        self.dropped += s.dropped;
        self.cut_by_budget += s.cut_by_budget as u64;
        self.items_not_followed += s.items_not_followed;
        self.snapshot_bytes += s.snapshot_bytes;
    }
}

pub struct Holders {
    scanner: HeapScanner,
    budget: ScanBudget,
    /// By (path, type name); hashed fast: tens of thousands of lookups per scan on a big service.
    pub tracks: HashMap<(Name, Name), HolderTrack, foldhash::fast::RandomState>,
    pub totals: ScanTotals,
    /// Every tracked object by type; `None` when disabled (`--census-budget 0`).
    pub census: Option<CensusView>,
    /// No scan before this time: a scan (census and containers) takes at most [`MAX_DUTY`] of
    /// the time.
    next_at_s: f64,
}

/// The largest share of wall time the containers scan and the census may spend together.
const MAX_DUTY: f64 = 0.1;

impl Holders {
    /// `None` when this interpreter's containers cannot be read (its types are not exported).
    pub fn new(target: &Target, budget: ScanBudget, census: Option<CensusBudget>) -> Option<Self> {
        let interp = &target.interpreter;
        let types = TypeAddrs::from_lookup(|name| target.python.runtime_addr(name))?;
        let scanner = HeapScanner::new(ProcessMemory::new(target.pid), &interp.offsets, types, interp.runtime)
            .with_static_objects(target.python.start..target.python.end);
        let census = census.map(|b| CensusView::new(target, types, b));
        Some(Self {
            scanner,
            budget,
            tracks: HashMap::default(),
            totals: ScanTotals::default(),
            census,
            next_at_s: 0.0,
        })
    }

    pub fn scan(&mut self, t_s: f64) {
        if t_s < self.next_at_s {
            self.totals.paced += 1;
            return;
        }
        let t0 = std::time::Instant::now();
        if let Some(c) = self.census.as_mut() {
            c.scan(t_s);
        }
        let roots = self.census.as_ref().map(|c| c.roots.as_slice()).unwrap_or(&[]);
        let (samples, stats) = self.scanner.scan(&self.budget, roots);
        self.totals.add(&stats);
        let scan_no = self.totals.scans;
        let mut grew: Vec<(u64, (Name, Name))> = Vec::new();
        for mut sample in samples {
            // The key is moved out of the sample and back (tens of thousands of containers per
            // scan on a big service: no count of references changes for one already tracked).
            let key = (std::mem::take(&mut sample.path), std::mem::take(&mut sample.type_name));
            let track = match self.tracks.entry(key) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let (path, type_name) = e.key().clone();
                    let first = ContainerSample { path, type_name, ..sample.clone() };
                    e.insert(HolderTrack {
                        last: first,
                        series: Series::with_capacity(HOLDER_POINTS),
                        origin: None,
                        seen_in_scan: scan_no,
                    })
                }
            };
            track.seen_in_scan = scan_no;
            if sample.len > track.last.len {
                grew.push((sample.len - track.last.len, (track.last.path.clone(), track.last.type_name.clone())));
            }
            track.series.push(t_s, sample.len as f64);
            if sample.item_types.is_empty() && sample.len > 0 {
                // This scan's sample was torn (a busy container): keep the last good one.
                sample.item_types = std::mem::take(&mut track.last.item_types);
                sample.newest_items = std::mem::take(&mut track.last.newest_items);
            }
            sample.path = std::mem::take(&mut track.last.path);
            sample.type_name = std::mem::take(&mut track.last.type_name);
            track.last = sample;
        }
        self.tracks.retain(|_, t| scan_no - t.seen_in_scan < FORGET_AFTER_SCANS);
        self.read_origins(grew);
        self.next_at_s = t_s + t0.elapsed().as_secs_f64() / MAX_DUTY;
    }

    /// Where the newest items of the fastest growing holders were made (through the census's
    /// origin reader; none without the census).
    fn read_origins(&mut self, mut grew: Vec<(u64, (Name, Name))>) {
        let Some(census) = self.census.as_mut() else { return };
        grew.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, key) in grew.into_iter().take(ORIGIN_HOLDERS_PER_SCAN) {
            let track = self.tracks.get_mut(&key).expect("tracked above");
            if let Some(o) = census.origin_of_items(&track.last.newest_items) {
                track.origin = Some(o);
            }
        }
    }
}
