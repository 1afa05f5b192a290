//! Assembling the report from a finished session: totals, judged suspects and holders,
//! timeline. The judging itself is `leaks`'s alone.

use std::collections::BTreeMap;

use tracer_ebpf::{counter, LOST_COUNTERS};

use crate::collector::Collector;
use crate::holders::Holders;
use crate::leaks::{self, Criteria, Evidence, Unit};
use crate::record::{EndReason, Session};
use crate::report::{Holder, Report, Suspect, TargetInfo, TimelinePoint, Totals, Verdict, SCHEMA};

/// Stacks listed in the report besides leaks and growing ones (largest first), so a reader sees
/// what was cleared without the report growing with every short-lived stack.
const MAX_CLEARED_STACKS: usize = 200;
/// Stable containers listed (largest first) besides the leaking, growing and bounded ones.
const MAX_STABLE_HOLDERS: usize = 20;

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

pub fn target_info(target: &crate::target::Target) -> TargetInfo {
    TargetInfo {
        pid: target.pid,
        exe: target.exe.clone(),
        python: target.interpreter.version.to_string(),
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
        if members.len() < 2 {
            continue;
        }
        let best_member =
            members.iter().filter_map(|&i| judged[i].as_ref()).map(|s| s.verdict).min().unwrap_or(Verdict::Stable);
        let mut stats = tracer_ebpf::StackStats::default();
        let mut oldest = 0.0f64;
        for &i in &members {
            let s = collector.records[i].stats;
            stats.allocs += s.allocs;
            stats.alloc_bytes += s.alloc_bytes;
            stats.frees += s.frees;
            stats.outstanding_bytes += s.outstanding_bytes.max(0);
            stats.outstanding_count += s.outstanding_count.max(0);
            oldest = oldest.max(ages.get(i).copied().unwrap_or(0.0));
        }
        let evidence = Evidence {
            allocs: stats.allocs,
            live_count: stats.outstanding_count as u64,
            oldest_age_s: oldest,
            window_s,
        };
        let mut j = leaks::judge(&site.series, Some(&evidence), criteria, Unit::Bytes);
        if j.verdict >= best_member || !matches!(j.verdict, Verdict::Leak | Verdict::Growing) {
            continue;
        }
        let largest =
            *members.iter().max_by_key(|&&i| collector.records[i].stats.outstanding_bytes).unwrap_or(&members[0]);
        j.reason = format!("{}; across {} call paths (the largest shown)", j.reason, members.len());
        let record = &collector.records[largest];
        let merged = suspect(record.key.allocator, record.key.frames.clone(), stats, &evidence, j);
        for &i in &members {
            judged[i] = None;
        }
        judged[largest] = Some(merged);
    }
    let judged: Vec<Suspect> = judged.into_iter().flatten().collect();
    let order =
        leaks::rank(&judged.iter().map(|s| (s.verdict, s.score, s.outstanding_bytes as f64)).collect::<Vec<_>>());
    let mut suspects: Vec<Suspect> = Vec::new();
    let mut cleared = 0usize;
    for i in order {
        let s = &judged[i];
        if !matches!(s.verdict, Verdict::Leak | Verdict::Growing) {
            if cleared >= MAX_CLEARED_STACKS || s.outstanding_bytes == 0 && s.allocs < 2 {
                continue;
            }
            cleared += 1;
        }
        let mut s = s.clone();
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
        LOST_COUNTERS.iter().map(|(i, name)| (name.to_string(), counters.get(*i))).collect();
    let mine = || collector.records.iter().filter(|r| r.key.instance == instance);
    let outstanding_bytes: i64 = mine().map(|r| r.stats.outstanding_bytes.max(0)).sum();
    let outstanding_count: i64 = mine().map(|r| r.stats.outstanding_count.max(0)).sum();
    Totals {
        allocs: counters.get(counter::ALLOCS_RECORDED),
        frees: counters.get(counter::FREES_MATCHED),
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
    let order = leaks::rank(&judged.iter().map(|h| (h.verdict, h.score, h.len as f64)).collect::<Vec<_>>());
    let mut slots: Vec<Option<Holder>> = judged.into_iter().map(Some).collect();
    let mut ordered = Vec::new();
    let mut stable = 0;
    for i in order {
        let Some(h) = slots[i].take() else { continue };
        if h.verdict == Verdict::Stable {
            if stable >= MAX_STABLE_HOLDERS {
                continue;
            }
            stable += 1;
        }
        ordered.push(h);
    }
    ordered
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
