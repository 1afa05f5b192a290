//! Assembling the report from a finished session: totals, judged suspects and holders,
//! timeline. The judging itself, and which judged stacks and holders are listed, is `leaks`'s
//! alone.

use std::collections::BTreeMap;

use tracer_ebpf::Counter;

use crate::collector::Collector;
use crate::holders::Holders;
use crate::leaks::{self, CallPath, Criteria, Evidence, ListedStack, Unit};
use crate::record::{EndReason, Session};
use crate::report::{Holder, Report, Suspect, TargetInfo, TimelinePoint, Totals, SCHEMA};

/// The main target's report.
pub fn build(session: &mut Session, reason: EndReason, criteria: &Criteria, end_ns: u64) -> Report {
    let instance = session.target.instance;
    let info = target_info(&session.target);
    build_for(session, instance, info, reason.as_str(), criteria, end_ns)
}

/// A followed child's report (its own section), `instance` naming the process (its PID may
/// have been reused).
pub fn build_child(session: &mut Session, instance: u64, info: TargetInfo, criteria: &Criteria, end_ns: u64) -> Report {
    let pid = info.pid;
    let view = match session.collector.as_ref() {
        Some(c) if c.process_finalizing(pid, instance) => "finalization",
        Some(c) if c.is_retired(instance) => "target_exited",
        _ if session.children.iter().any(|t| t.instance == instance && t.still_runs()) => "live",
        _ => "target_exited",
    };
    build_for(session, instance, info, view, criteria, end_ns)
}

/// The report of one traced process of the session (the first target or an added one) as seen
/// now, with the given `final_view`; a PID the session does not trace gets an empty target.
pub fn build_process(session: &mut Session, pid: u32, view: &str, criteria: &Criteria, end_ns: u64) -> Report {
    let main_ended = session.host.as_ref().is_some_and(|h| h.ended.main_ended);
    let target = if pid == session.target.pid && !main_ended {
        Some(&session.target)
    } else {
        session.children.iter().rev().find(|t| t.pid == pid)
    };
    let info = target.map(target_info).unwrap_or(TargetInfo { pid, ..TargetInfo::default() });
    // 0 is never an instance: a PID the session does not trace gets an empty report.
    let instance = target.map(|t| t.instance).unwrap_or(0);
    build_for(session, instance, info, view, criteria, end_ns)
}

/// The wall-clock time of `instant`, in seconds since the Unix epoch.
fn unix_time_s(instant: std::time::Instant) -> Option<f64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(now.checked_sub(instant.elapsed())?.as_secs_f64())
}

pub fn target_info(target: &crate::target::Target) -> TargetInfo {
    TargetInfo {
        pid: target.pid,
        exe: target.exe.clone(),
        python: target.version.to_string(),
        libc: target.libc.path.clone(),
        cmdline: target.cmdline.clone(),
    }
}

fn build_for(
    session: &mut Session,
    instance: u64,
    target: TargetInfo,
    final_view: &str,
    criteria: &Criteria,
    end_ns: u64,
) -> Report {
    let window_s = session.window.unwrap_or_else(|| session.started.elapsed()).as_secs_f64();
    let main = instance == session.target.instance;
    let pid = target.pid;
    let mut totals = Totals::default();
    let mut suspects = Vec::new();
    let mut timeline = Vec::new();
    if let Some(collector) = session.collector.as_mut() {
        suspects = judge_stacks(collector, instance, criteria, window_s, end_ns);
        totals = stack_totals(collector, instance);
        timeline = collector
            .timeline
            .points()
            .iter()
            .map(|&(t, v)| TimelinePoint { t, outstanding_bytes: v as u64 })
            .collect();
    }
    let mut holders = Vec::new();
    if let Some(h) = session.holders.as_ref().filter(|_| main) {
        holders = judge_holders(h);
        let t = &h.totals;
        totals.lost.insert("holders_torn_dropped".into(), t.dropped);
        totals.lost.insert("holders_scans_cut_by_budget".into(), t.cut_by_budget);
    }
    if main {
        crate::pairing::link(pid, &mut suspects, &mut holders);
    }
    Report {
        schema: SCHEMA,
        target,
        duration_s: window_s,
        started_unix_s: unix_time_s(session.started),
        final_view: final_view.to_string(),
        totals,
        suspects,
        holders,
        holders_scan: session.holders.as_ref().filter(|_| main).map(scan_summary),
        timeline,
        sample_bytes: 0,
    }
}

fn judge_stacks(
    collector: &mut Collector,
    instance: u64,
    criteria: &Criteria,
    window_s: f64,
    end_ns: u64,
) -> Vec<Suspect> {
    let ages = collector.oldest_ages(end_ns);
    let evidence_of = |i: usize| {
        let s = collector.records[i].stats;
        Evidence {
            allocs: s.allocs,
            live_count: s.outstanding_count.max(0) as u64,
            oldest_age_s: ages.get(i).copied().unwrap_or(0.0),
            window_s,
        }
    };
    let mut judged: Vec<Option<Suspect>> = collector
        .records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let s = record.stats;
            if record.key.instance != instance || s.allocs == 0 && s.outstanding_count <= 0 {
                return None;
            }
            let evidence = evidence_of(i);
            let j = leaks::judge(&record.series, Some(&evidence), criteria, Unit::Bytes);
            Some(suspect(record.key.allocator, record.key.frames.clone(), s, &evidence, j))
        })
        .collect();

    // One leaking line reached through many call paths (each test of a suite, each route) leaks
    // a little per path: judge every allocating line as a whole too.
    for site in &collector.sites {
        let members: Vec<usize> = site.records.iter().copied().filter(|&i| judged[i].is_some()).collect();
        let paths: Vec<CallPath> = members.iter().filter_map(|&i| judged[i].as_ref()).map(CallPath::from).collect();
        let Some(merged) = leaks::merge_call_paths(&site.series, &paths, window_s, criteria) else { continue };
        let mut stats = tracer_ebpf::StackStats::default();
        for &i in &members {
            let s = collector.records[i].stats;
            stats.allocs += s.allocs;
            stats.alloc_bytes += s.alloc_bytes;
            stats.frees += s.frees;
            stats.outstanding_bytes += s.outstanding_bytes.max(0);
            stats.outstanding_count += s.outstanding_count.max(0);
        }
        let largest = members[merged.shown];
        let record = &collector.records[largest];
        let merged =
            suspect(record.key.allocator, record.key.frames.clone(), stats, &merged.evidence, merged.judgement);
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
    }
}

/// Counters are kept for all traced processes together; outstanding memory per process.
fn stack_totals(collector: &Collector, instance: u64) -> Totals {
    let counters = collector.counters();
    let lost: BTreeMap<String, u64> =
        Counter::ALL.into_iter().filter_map(|c| Some((c.lost_name()?.to_string(), counters.get(c)))).collect();
    let mine = || collector.records.iter().filter(|r| r.key.instance == instance);
    let outstanding_bytes: i64 = mine().map(|r| r.stats.outstanding_bytes.max(0)).sum();
    let outstanding_count: i64 = mine().map(|r| r.stats.outstanding_count.max(0)).sum();
    Totals {
        allocs: counters.get(Counter::AllocsRecorded),
        frees: counters.get(Counter::FreesMatched),
        outstanding_bytes: outstanding_bytes as u64,
        outstanding_count: outstanding_count as u64,
        lost,
    }
}

fn judge_holders(holders: &Holders) -> Vec<Holder> {
    let criteria = Criteria::for_items();
    let judged: Vec<Holder> = holders
        .tracks
        .values()
        .map(|track| {
            let j = leaks::judge(&track.series, None, &criteria, Unit::Items);
            Holder {
                path: track.last.path.clone(),
                type_name: track.last.type_name.clone(),
                len: track.last.len,
                growth_per_s: j.growth_per_s,
                item_types: track.last.item_types.clone(),
                retained_bytes_est: track.last.retained_bytes_est,
                verdict: j.verdict,
                score: j.score,
                reason: j.reason,
            }
        })
        .collect();
    let listed = leaks::holders_to_list(&judged.iter().map(|h| (h.verdict, h.score, h.len)).collect::<Vec<_>>());
    let mut slots: Vec<Option<Holder>> = judged.into_iter().map(Some).collect();
    listed.into_iter().filter_map(|i| slots[i].take()).collect()
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
    }
}
