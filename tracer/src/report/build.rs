//! The one report builder: a process's report from the recording's state (its stacks, the
//! counters, its containers), with the final view it was taken at. Totals, judged suspects and
//! holders, timeline. The judging itself is `leaks`'s alone. Plain data in, no BPF map and no
//! process: the session gathers the input.

use std::collections::BTreeMap;

use tracer_ebpf::Counter;

use crate::census::CensusView;
use crate::collector::Counters;
use crate::holders::{HolderTrack, Holders};
use crate::leaks::{self, CallPath, Capacities, Criteria, Evidence, ListedStack, Outlived, Unit};
use crate::report::{
    CensusSummary, CensusType, FinalView, Holder, HolderRoot, Report, Suspect, TargetInfo, TimelinePoint, Totals,
    WindowsInfo, SCHEMA,
};
use crate::stacks::StackTable;

/// What one process's report is made from.
pub struct Input<'a> {
    pub target: TargetInfo,
    /// The process's instance (`Target::instance`): its stacks carry it.
    pub instance: u64,
    pub view: FinalView,
    /// When tracing started, in seconds since the Unix epoch.
    pub started_unix_s: Option<f64>,
    /// Seconds the report covers.
    pub window_s: f64,
    /// The allocation side; absent with `--holders-only`.
    pub stacks: Option<Stacks<'a>>,
    /// The process's containers over time (the holders view), if they were read.
    pub holders: Option<&'a Holders>,
    pub criteria: &'a Criteria,
    /// Allocation-sampling period in bytes (0: every allocation).
    pub sample_bytes: u64,
    /// The target's resident set size now, if it could be read.
    pub rss_bytes: Option<u64>,
    /// The tables' sizes: a full one makes the verdict inconclusive.
    pub capacities: Capacities,
    /// Probe windows, if the allocation probes were attached only part of the time.
    pub windows: Option<WindowsInfo>,
    /// The directory the target runs in: test names are relative to it (`leaks::pytest`).
    pub cwd: Option<String>,
}

/// The stacks of every traced process, and what is shared by all of them.
#[derive(Clone, Copy)]
pub struct Stacks<'a> {
    pub table: &'a StackTable,
    /// Kept for all traced processes together.
    pub counters: &'a Counters,
    /// Per record of `table`: age in seconds of its oldest outstanding allocation.
    pub ages: &'a [f64],
    /// Per record of `table`, under probe windows: its allocations that outlived a window and
    /// how many of them died later (empty without windows).
    pub outlived: &'a [Outlived],
    /// Several processes are traced: allocations and frees are counted from each process's own
    /// stacks, losses from its own loss counters (the session's counters sum all processes).
    pub per_process: bool,
}

pub fn target_info(target: &crate::target::Target) -> TargetInfo {
    TargetInfo {
        pid: target.pid,
        exe: target.exe.clone(),
        python: target.interpreter.version.to_string(),
        libc: target.libc.path.clone(),
        cmdline: target.cmdline.clone(),
    }
}

pub fn build(input: Input) -> Report {
    let Input {
        target,
        instance,
        view,
        started_unix_s,
        window_s,
        stacks,
        holders,
        criteria,
        sample_bytes,
        capacities,
        windows,
        cwd,
        rss_bytes,
    } = input;
    // Rates measured on the recorded share of the timeline are scaled to the whole of it (leaks).
    let mut criteria = criteria.for_view(view, window_s);
    if let Some(w) = &windows {
        criteria = criteria.under_windows(w.every_s, w.recorded_share);
    }
    let criteria = &criteria;
    let mut totals = Totals::default();
    let mut suspects = Vec::new();
    let mut timeline = Vec::new();
    if let Some(s) = stacks {
        let whole_run = view == FinalView::Finalization;
        suspects = judge_stacks(&s, instance, criteria, (window_s, whole_run, cwd.as_deref()));
        totals = stack_totals(&s, instance, target.pid);
        timeline =
            s.table.timeline.points().iter().map(|&(t, v)| TimelinePoint { t, outstanding_bytes: v as u64 }).collect();
    }
    totals.rss_bytes = rss_bytes;
    let mut judged_holders = Vec::new();
    if let Some(h) = holders {
        judged_holders = judge_holders(h, &Criteria::for_items().for_view(view, window_s));
        let t = &h.totals;
        totals.lost.insert("holders_torn_dropped".into(), t.dropped);
        totals.lost.insert("holders_scans_cut_by_budget".into(), t.cut_by_budget);
        crate::pairing::link(target.pid, &mut suspects, &mut judged_holders);
    }
    let inconclusive = stacks.and_then(|_| leaks::inconclusive(&totals.lost, capacities));
    Report {
        schema: SCHEMA,
        target,
        duration_s: window_s,
        started_unix_s,
        final_view: Some(view),
        totals,
        suspects,
        holders: judged_holders,
        holders_scan: holders.map(scan_summary),
        census: holders.and_then(|h| h.census.as_ref()).map(judge_census).unwrap_or_default(),
        census_scan: holders.and_then(|h| h.census.as_ref()).map(census_summary),
        timeline,
        sample_bytes,
        inconclusive,
        command: None,
        windows,
    }
}

/// `run`: the seconds the report covers, whether the run ended normally (a call path under a test
/// is then also judged as the test's own run), and the directory tests are named from.
fn judge_stacks(stacks: &Stacks, instance: u64, criteria: &Criteria, run: (f64, bool, Option<&str>)) -> Vec<Suspect> {
    let (window_s, whole_run, root) = run;
    let Stacks { table, ages, outlived, .. } = *stacks;
    let evidence_of = |i: usize| {
        let s = table.records[i].stats;
        Evidence {
            allocs: s.allocs,
            live_count: s.outstanding_count.max(0) as u64,
            oldest_age_s: ages.get(i).copied().unwrap_or(0.0),
            window_s,
            outlived: outlived.get(i).copied().unwrap_or_default(),
        }
    };
    let mut judged: Vec<Option<Suspect>> = table
        .records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let s = record.stats;
            if record.key.instance != instance || s.allocs == 0 && s.outstanding_count <= 0 {
                return None;
            }
            let evidence = evidence_of(i);
            let mut j = leaks::judge(&record.series, Some(&evidence), criteria, Unit::Bytes);
            let tests = leaks::by_test([(&record.key.frames[..], s.outstanding_bytes.max(0) as u64)], root);
            if whole_run && !tests.is_empty() && !j.verdict.is_growing() {
                j = leaks::judge_test_path(&record.series, &evidence, criteria).unwrap_or(j);
            }
            let mut sus = suspect(record.key.allocator, record.key.frames.clone(), s, &evidence, j);
            sus.tests = tests;
            Some(sus)
        })
        .collect();

    // One leaking line reached through many call paths (each test of a suite, each route) leaks
    // a little per path: judge every allocating line as a whole too.
    for site in &table.sites {
        let members: Vec<usize> = site.records.iter().copied().filter(|&i| judged[i].is_some()).collect();
        let paths: Vec<CallPath> = members
            .iter()
            .filter_map(|&i| judged[i].as_ref().map(|s| (i, s)))
            .map(|(i, s)| CallPath { outlived: outlived.get(i).copied().unwrap_or_default(), ..CallPath::from(s) })
            .collect();
        let Some(merged) = leaks::merge_call_paths(&site.series, &paths, window_s, criteria) else { continue };
        let mut stats = tracer_ebpf::StackStats::default();
        for &i in &members {
            let s = table.records[i].stats;
            stats.allocs += s.allocs;
            stats.alloc_bytes += s.alloc_bytes;
            stats.frees += s.frees;
            stats.outstanding_bytes += s.outstanding_bytes.max(0);
            stats.outstanding_count += s.outstanding_count.max(0);
        }
        let tests = leaks::by_test(
            members
                .iter()
                .map(|&i| (&table.records[i].key.frames[..], table.records[i].stats.outstanding_bytes.max(0) as u64)),
            root,
        );
        let largest = members[merged.shown];
        let record = &table.records[largest];
        let mut merged =
            suspect(record.key.allocator, record.key.frames.clone(), stats, &merged.evidence, merged.judgement);
        merged.tests = tests;
        for &i in &members {
            judged[i] = None;
        }
        judged[largest] = Some(merged);
    }
    let judged: Vec<Suspect> = judged.into_iter().flatten().collect();
    let listed = leaks::stacks_to_list(&judged.iter().map(ListedStack::from).collect::<Vec<_>>());
    let mut suspects: Vec<Suspect> = Vec::new();
    for i in listed {
        let mut s = judged[i].clone();
        s.rank = suspects.len() as u32 + 1;
        suspects.push(s);
    }
    suspects
}

fn suspect(
    allocator: &str,
    stack: Vec<crate::report::Frame>,
    s: tracer_ebpf::StackStats,
    evidence: &Evidence,
    j: leaks::Judgement,
) -> Suspect {
    Suspect {
        rank: 0,
        verdict: j.verdict,
        score: j.score,
        outstanding_bytes: s.outstanding_bytes.max(0) as u64,
        outstanding_count: s.outstanding_count.max(0) as u64,
        allocs: s.allocs,
        alloc_bytes: s.alloc_bytes,
        live_fraction: if s.allocs > 0 { evidence.live_count as f64 / s.allocs as f64 } else { 0.0 },
        growth_bytes_per_s: j.growth_per_s,
        oldest_age_s: evidence.oldest_age_s,
        allocator: allocator.to_string(),
        reason: j.reason,
        stack,
        tests: Vec::new(),
    }
}

/// One process's totals: with several processes, each counts its own allocations, frees
/// (from its stacks) and losses (the BPF side's per-process loss counters); alone, the
/// session's counters are its own.
fn stack_totals(s: &Stacks, instance: u64, pid: u32) -> Totals {
    let counters = s.counters;
    let lost_of = |c: Counter| if s.per_process { counters.lost_by(pid, c) } else { counters.get(c) };
    let lost: BTreeMap<String, u64> =
        Counter::ALL.into_iter().filter_map(|c| Some((c.lost_name()?.to_string(), lost_of(c)))).collect();
    let mine = || s.table.records.iter().filter(|r| r.key.instance == instance);
    let outstanding_bytes: i64 = mine().map(|r| r.stats.outstanding_bytes.max(0)).sum();
    let outstanding_count: i64 = mine().map(|r| r.stats.outstanding_count.max(0)).sum();
    let (allocs, frees) = if s.per_process {
        (mine().map(|r| r.stats.allocs).sum(), mine().map(|r| r.stats.frees).sum())
    } else {
        (counters.get(Counter::AllocsRecorded), counters.get(Counter::FreesMatched))
    };
    Totals {
        allocs,
        frees,
        outstanding_bytes: outstanding_bytes as u64,
        outstanding_count: outstanding_count as u64,
        lost,
        rss_bytes: None,
    }
}

fn judge_holders(holders: &Holders, criteria: &Criteria) -> Vec<Holder> {
    // Every container is judged; only the listed ones are written out (a service has tens of
    // thousands of small stable ones).
    let tracks: Vec<&HolderTrack> = holders.tracks.values().collect();
    let judged: Vec<leaks::Judgement> =
        tracks.iter().map(|track| leaks::judge(&track.series, None, criteria, Unit::Items)).collect();
    let listed = leaks::holders_to_list(
        &judged.iter().zip(&tracks).map(|(j, t)| (j.verdict, j.score, t.last.retained_bytes_est)).collect::<Vec<_>>(),
    );
    let mut judged: Vec<Option<leaks::Judgement>> = judged.into_iter().map(Some).collect();
    listed
        .into_iter()
        .filter_map(|i| {
            let j = judged[i].take()?;
            let track = tracks[i];
            Some(Holder {
                path: track.last.path.to_string(),
                type_name: track.last.type_name.to_string(),
                len: track.last.len,
                growth_per_s: j.growth_per_s,
                item_types: track.last.item_types.to_map(),
                retained_bytes_est: track.last.retained_bytes_est,
                verdict: j.verdict,
                score: j.score,
                reason: j.reason,
                tests: Vec::new(),
                root: holder_root(&track.last),
                newest_items: track.last.newest_items.clone(),
                origin: track.origin.clone(),
            })
        })
        .collect()
}

/// The parts of a holder's path: its root and what follows it.
fn holder_root(s: &crate::python::heap::ContainerSample) -> Option<HolderRoot> {
    let rest = s.path.strip_prefix(&*s.root.name).filter(|_| !s.root.kind.is_empty())?;
    let rest = rest.strip_prefix(" → ").or_else(|| rest.strip_prefix('.')).unwrap_or(rest);
    Some(HolderRoot { kind: s.root.kind.to_string(), name: s.root.name.to_string(), rest: rest.to_string() })
}

/// Every type's count judged like a holder's length; listed like holders (every suspect and
/// bounded type, the first stable ones).
fn judge_census(c: &CensusView) -> Vec<CensusType> {
    let criteria = Criteria::for_items();
    let judged: Vec<CensusType> = c
        .tracks
        .iter()
        .map(|(name, track)| {
            let j = leaks::judge(&track.series, None, &criteria, Unit::Items);
            CensusType {
                type_name: name.clone(),
                count: track.last.count,
                bytes_est: track.last.bytes,
                growth_per_s: j.growth_per_s,
                verdict: j.verdict,
                score: j.score,
                reason: j.reason,
                origin: if j.verdict.is_growing() { track.origin.clone() } else { None },
            }
        })
        .collect();
    let listed = leaks::holders_to_list(&judged.iter().map(|t| (t.verdict, t.score, t.count)).collect::<Vec<_>>());
    let mut slots: Vec<Option<CensusType>> = judged.into_iter().map(Some).collect();
    listed.into_iter().filter_map(|i| slots[i].take()).collect()
}

fn census_summary(c: &CensusView) -> CensusSummary {
    let t = &c.totals;
    let n = t.scans.max(1) as f64;
    let per = |v: u64| (v as f64 / n).round() as u64;
    CensusSummary {
        scans: t.scans,
        objects_per_scan: per(t.objects),
        bytes_read_per_scan: per(t.bytes_read),
        reads_per_scan: per(t.reads),
        mean_scan_s: t.duration_s / n,
        max_scan_s: t.max_duration_s,
        torn_repaired: t.torn_repaired,
        tail_completions: t.tail_completions,
        torn_dropped: t.torn_dropped,
        scans_discarded: t.scans_discarded,
        scans_cut_by_budget: t.scans_cut_by_budget,
        scans_paced: t.scans_paced,
        skipped_objects: t.skipped_last,
        error: t.last_error.clone(),
    }
}

fn scan_summary(h: &Holders) -> crate::report::ScanSummary {
    let t = &h.totals;
    let n = t.scans.max(1) as f64;
    crate::report::ScanSummary {
        scans: t.scans,
        objects_per_scan: (t.objects_visited as f64 / n).round() as u64,
        bytes_read_per_scan: (t.bytes_read as f64 / n).round() as u64,
        mean_scan_s: t.duration_s / n,
        max_scan_s: t.max_duration_s,
        torn_reads_retried: t.torn_retried,
        items_not_followed_per_scan: (t.items_not_followed as f64 / n).round() as u64,
        copied_whole_per_scan: (t.snapshot_bytes as f64 / n).round() as u64,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tracer_ebpf::StackStats;

    use super::*;
    use crate::report::{Frame, Verdict};
    use crate::stacks::StackKey;

    fn key(instance: u64, line: u32) -> StackKey {
        StackKey {
            pid: 40 + instance as u32,
            instance,
            allocator: "malloc",
            frames: vec![Frame::Python { function: "f".into(), file: "app.py".into(), line, def_line: None }],
        }
    }

    /// Stacks of two processes: instance 1 keeps 10 kB more every second on line 10;
    /// instance 2 allocates and frees on line 20.
    fn table() -> StackTable {
        let mut t = StackTable::new();
        t.intern(1, key(1, 10), false);
        t.intern(2, key(2, 20), false);
        for i in 0..30u64 {
            let kept = StackStats {
                allocs: i + 1,
                alloc_bytes: (i + 1) * 10_000,
                frees: 0,
                outstanding_bytes: (i as i64 + 1) * 10_000,
                outstanding_count: i as i64 + 1,
            };
            let freed = StackStats { allocs: i + 1, alloc_bytes: (i + 1) * 10, frees: i + 1, ..Default::default() };
            t.push_totals(i as f64, &[(1, kept), (2, freed)]);
        }
        t
    }

    fn input<'a>(stacks: Option<Stacks<'a>>, instance: u64, criteria: &'a Criteria) -> Input<'a> {
        Input {
            target: TargetInfo { pid: 40 + instance as u32, ..TargetInfo::default() },
            instance,
            view: FinalView::TargetExited,
            started_unix_s: None,
            window_s: 30.0,
            stacks,
            holders: None,
            criteria,
            sample_bytes: 4096,
            rss_bytes: None,
            capacities: Capacities { allocs: 1 << 20, stacks: 16_384 },
            windows: None,
            cwd: None,
        }
    }

    #[test]
    fn a_report_holds_only_its_own_process_and_what_was_asked() {
        let t = table();
        let mut counters = Counters::default();
        counters.0[Counter::AllocsRecorded as usize] = 60;
        counters.0[Counter::LostStackTruncated as usize] = 70;
        let mut own = tracer_ebpf::ProcLosses::default();
        own.counts[Counter::LostStackTruncated.loss_slot().unwrap()] = 61;
        counters.1.insert(41, own);
        let ages = t.oldest_ages(30_000_000_000, &HashMap::from([(1u64, 1_000_000_000u64)]));
        let stacks = Stacks { table: &t, counters: &counters, ages: &ages, outlived: &[], per_process: false };
        let criteria = Criteria::for_bytes();
        let r = build(input(Some(stacks), 1, &criteria));
        assert_eq!(r.final_view, Some(FinalView::TargetExited));
        assert_eq!(r.sample_bytes, 4096, "set by the builder");
        assert_eq!(r.target.pid, 41);
        assert_eq!(r.suspects.len(), 1, "{:#?}", r.suspects);
        let s = &r.suspects[0];
        assert_eq!((s.rank, s.verdict, s.outstanding_bytes), (1, Verdict::Leak, 300_000));
        assert_eq!(s.oldest_age_s, 29.0);
        assert_eq!(r.totals.outstanding_bytes, 300_000);
        assert_eq!(r.totals.allocs, 60, "one process: the session's counters");
        assert_eq!(r.totals.lost["stack_truncated"], 70, "one process: the session's losses");
        assert!(Counter::ALL.iter().filter_map(|c| c.lost_name()).all(|name| r.totals.lost.contains_key(name)));
        assert_eq!(r.timeline.len(), 30);
        assert!(r.holders.is_empty() && r.holders_scan.is_none());

        let other = build(input(Some(stacks), 2, &criteria));
        assert_eq!(other.totals.outstanding_bytes, 0);
        assert!(other.suspects.iter().all(|s| s.verdict != Verdict::Leak));

        // Several processes: each counts its own allocations and frees.
        let apart = Stacks { per_process: true, ..stacks };
        let one = build(input(Some(apart), 1, &criteria)).totals;
        let two = build(input(Some(apart), 2, &criteria)).totals;
        assert_eq!((one.allocs, one.frees), (30, 0));
        assert_eq!((two.allocs, two.frees), (30, 30));
        assert_eq!((one.lost["stack_truncated"], two.lost["stack_truncated"]), (61, 0), "and its own losses");
    }

    #[test]
    fn without_probes_a_report_has_no_stacks() {
        let criteria = Criteria::for_bytes();
        let r = build(input(None, 1, &criteria));
        assert!(r.suspects.is_empty() && r.timeline.is_empty() && r.totals.lost.is_empty());
        assert_eq!(r.duration_s, 30.0);
    }
}
