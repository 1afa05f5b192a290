//! Assembling the report from a finished session: totals, judged suspects, timeline. The
//! judging itself is `leaks`'s alone.

use std::collections::BTreeMap;

use tracer_ebpf::{counter, LOST_COUNTERS};

use crate::leaks::{self, Criteria, Evidence, Unit};
use crate::record::{EndReason, Session};
use crate::report::{Report, Suspect, TargetInfo, TimelinePoint, Totals, SCHEMA};

/// Stacks listed in the report besides leaks and growing ones (largest first), so a reader sees
/// what was cleared without the report growing with every short-lived stack.
const MAX_CLEARED_STACKS: usize = 200;

pub fn build(session: &mut Session, reason: EndReason, criteria: &Criteria, end_ns: u64) -> Report {
    let collector = &mut session.collector;
    let window_s = collector.started.elapsed().as_secs_f64();
    let ages = collector.oldest_ages(end_ns);
    let counters = collector.counters();

    let mut judged: Vec<Suspect> = Vec::new();
    for (i, record) in collector.records.iter().enumerate() {
        let s = record.stats;
        if s.allocs == 0 && s.outstanding_count <= 0 {
            continue;
        }
        let evidence = Evidence {
            allocs: s.allocs,
            live_count: s.outstanding_count.max(0) as u64,
            oldest_age_s: ages.get(i).copied().unwrap_or(0.0),
            window_s,
        };
        let j = leaks::judge(&record.series, Some(&evidence), criteria, Unit::Bytes);
        judged.push(Suspect {
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
            allocator: record.key.allocator.to_string(),
            reason: j.reason,
            stack: record.key.frames.clone(),
        });
    }
    let order = leaks::rank(&judged.iter().map(|s| (s.verdict, s.score, s.outstanding_bytes as f64)).collect::<Vec<_>>());
    let mut suspects: Vec<Suspect> = Vec::new();
    let mut cleared = 0usize;
    for i in order {
        let s = &judged[i];
        let listed = matches!(s.verdict, crate::report::Verdict::Leak | crate::report::Verdict::Growing);
        if !listed {
            if cleared >= MAX_CLEARED_STACKS || s.outstanding_bytes == 0 && s.allocs < 2 {
                continue;
            }
            cleared += 1;
        }
        let mut s = s.clone();
        s.rank = suspects.len() as u32 + 1;
        suspects.push(s);
    }

    let lost: BTreeMap<String, u64> = LOST_COUNTERS.iter().map(|(i, name)| (name.to_string(), counters.get(*i))).collect();
    let outstanding_bytes: i64 = collector.records.iter().map(|r| r.stats.outstanding_bytes.max(0)).sum();
    let outstanding_count: i64 = collector.records.iter().map(|r| r.stats.outstanding_count.max(0)).sum();
    let target = &session.target;
    Report {
        schema: SCHEMA,
        target: TargetInfo {
            pid: target.pid,
            exe: target.exe.clone(),
            python: target.version.to_string(),
            libc: target.libc.path.clone(),
            cmdline: target.cmdline.clone(),
        },
        duration_s: window_s,
        final_view: reason.as_str().to_string(),
        totals: Totals {
            allocs: counters.get(counter::ALLOCS_RECORDED),
            frees: counters.get(counter::FREES_MATCHED),
            outstanding_bytes: outstanding_bytes as u64,
            outstanding_count: outstanding_count as u64,
            lost,
        },
        suspects,
        holders: Vec::new(),
        timeline: collector
            .timeline
            .points()
            .iter()
            .map(|&(t, v)| TimelinePoint { t, outstanding_bytes: v as u64 })
            .collect(),
        sample_bytes: 0,
    }
}
