//! One allocating line reached through many call paths (each test of a suite, each route of a
//! router) leaks a little per path, maybe too little for any path to look like a leak. So every
//! allocating line is judged as a whole too, and when that verdict is worse than each of its
//! paths' own and is leak or growing, the line replaces its paths in the report.

use super::{judge, Criteria, Evidence, Judgement, Outlived};
use crate::report::{Suspect, Verdict};
use crate::series::Series;
use crate::units::Unit;

/// One call path of a line, as judged on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallPath {
    pub verdict: Verdict,
    /// Allocations made from it during the recording.
    pub allocs: u64,
    /// Of which still outstanding.
    pub live_count: u64,
    pub outstanding_bytes: u64,
    /// Age of its oldest outstanding allocation.
    pub oldest_age_s: f64,
    /// Under probe windows: its allocations that outlived a window, and their deaths.
    pub outlived: Outlived,
}

impl From<&Suspect> for CallPath {
    fn from(s: &Suspect) -> CallPath {
        CallPath {
            verdict: s.verdict,
            allocs: s.allocs,
            live_count: s.outstanding_count,
            outstanding_bytes: s.outstanding_bytes,
            oldest_age_s: s.oldest_age_s,
            outlived: Outlived::default(),
        }
    }
}

/// A line judged as a whole, standing for its call paths.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedSite {
    /// Its reason says across how many call paths.
    pub judgement: Judgement,
    /// The paths' facts together: allocations and live ones summed, the oldest of all.
    pub evidence: Evidence,
    /// Which of the paths (an index into them) shows its stack: the one holding the most.
    pub shown: usize,
}

/// Judges a line from its own series (outstanding bytes of all its paths together) and its
/// paths' facts. `None` keeps the paths: fewer than two, or the line as a whole is not leak or
/// growing, or is no worse than its worst path.
pub fn merge_call_paths(line: &Series, paths: &[CallPath], window_s: f64, criteria: &Criteria) -> Option<MergedSite> {
    if paths.len() < 2 {
        return None;
    }
    let worst_path = paths.iter().map(|p| p.verdict).min().unwrap_or(Verdict::Stable);
    let evidence = Evidence {
        allocs: paths.iter().map(|p| p.allocs).sum(),
        live_count: paths.iter().map(|p| p.live_count).sum(),
        oldest_age_s: paths.iter().map(|p| p.oldest_age_s).fold(0.0, f64::max),
        window_s,
        outlived: paths.iter().fold(Outlived::default(), |acc, p| acc + p.outlived),
    };
    let mut judgement = judge(line, Some(&evidence), criteria, Unit::Bytes);
    if judgement.verdict >= worst_path || !judgement.verdict.is_growing() {
        return None;
    }
    // The last of equally large paths, as `Iterator::max_by_key` picks.
    let shown = paths.iter().enumerate().max_by_key(|(_, p)| p.outstanding_bytes).map_or(0, |(i, _)| i);
    judgement.reason = format!("{}; across {} call paths (the largest shown)", judgement.reason, paths.len());
    Some(MergedSite { judgement, evidence, shown })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: f64 = 1024.0;

    fn line(f: impl Fn(f64) -> f64) -> Series {
        let mut s = Series::new();
        for i in 0..=30 {
            s.push(i as f64 * 2.0, f(i as f64 * 2.0));
        }
        s
    }

    fn path(verdict: Verdict, outstanding_bytes: u64) -> CallPath {
        CallPath {
            verdict,
            allocs: 100,
            live_count: 90,
            outstanding_bytes,
            oldest_age_s: 50.0,
            outlived: Outlived::default(),
        }
    }

    #[test]
    fn a_line_leaking_a_little_per_path_replaces_its_paths() {
        // Ten routes each keep 2 KiB/s: none grows enough alone, the line does.
        let paths: Vec<CallPath> = (0..10).map(|i| path(Verdict::Stable, 1000 + i % 3)).collect();
        let merged = merge_call_paths(&line(|t| 20.0 * KIB * t), &paths, 60.0, &Criteria::for_bytes()).unwrap();
        assert_eq!(merged.judgement.verdict, Verdict::Leak, "{merged:?}");
        assert!(merged.judgement.reason.ends_with("; across 10 call paths (the largest shown)"), "{merged:?}");
        assert_eq!(
            merged.evidence,
            Evidence { allocs: 1000, live_count: 900, oldest_age_s: 50.0, window_s: 60.0, ..Default::default() }
        );
        // The largest path; of equals, the last.
        assert_eq!(merged.shown, 8);
    }

    #[test]
    fn a_line_no_worse_than_its_worst_path_keeps_the_paths() {
        let leaking = line(|t| 20.0 * KIB * t);
        let c = Criteria::for_bytes();
        let paths = [path(Verdict::Leak, 10), path(Verdict::Stable, 20)];
        assert_eq!(merge_call_paths(&leaking, &paths, 60.0, &c), None);
        // Growing paths, and the line only growing too: every live allocation is young.
        let young = CallPath { oldest_age_s: 1.0, ..path(Verdict::Growing, 10) };
        assert_eq!(merge_call_paths(&leaking, &[young, young], 60.0, &c), None);
        // The same paths with old allocations: the line is a leak, worse than its paths.
        let old = path(Verdict::Growing, 10);
        let merged = merge_call_paths(&leaking, &[old, young], 60.0, &c).unwrap();
        assert_eq!(merged.judgement.verdict, Verdict::Leak, "{merged:?}");
        assert_eq!(merged.evidence.oldest_age_s, 50.0);
    }

    #[test]
    fn a_line_that_is_not_growing_keeps_the_paths() {
        let paths = [path(Verdict::Stable, 10), path(Verdict::Stable, 20)];
        let c = Criteria::for_bytes();
        let flat = line(|_| 300.0 * KIB);
        assert_eq!(merge_call_paths(&flat, &paths, 60.0, &c), None);
        let cache = line(|t| 30.0 * KIB * t.min(10.0));
        assert_eq!(merge_call_paths(&cache, &paths, 60.0, &c), None);
    }

    #[test]
    fn one_path_is_not_merged() {
        let c = Criteria::for_bytes();
        assert_eq!(merge_call_paths(&line(|t| 20.0 * KIB * t), &[path(Verdict::Stable, 1)], 60.0, &c), None);
        assert_eq!(merge_call_paths(&line(|t| 20.0 * KIB * t), &[], 60.0, &c), None);
    }
}
