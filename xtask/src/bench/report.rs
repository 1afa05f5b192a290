//! The fields of the tracer's JSON report (`tracer record -f json`, tracer/src/report.rs) that
//! the bench and the soak read, typed: a field the tracer renames or retypes fails the golden
//! test below, which parses the tracer's own golden report (tracer/tests/data/export/), at
//! test time rather than in the middle of a benchmark. Fields not listed here are ignored.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Deserialize;

/// One traced process's report.
#[derive(Debug, Deserialize)]
pub struct Report {
    pub target: Target,
    /// Seconds from attaching to the view the report was taken at.
    pub duration_s: f64,
    pub totals: Totals,
    /// Ordered by rank.
    pub suspects: Vec<Suspect>,
    /// Probe windows (`--window`): absent when the allocation probes were attached throughout.
    #[serde(default)]
    pub windows: Option<Windows>,
}

#[derive(Debug, Deserialize)]
pub struct Windows {
    /// Windows opened (in auto mode, only while the heap grew).
    pub opened: u64,
}

#[derive(Debug, Deserialize)]
pub struct Target {
    pub pid: u32,
}

#[derive(Debug, Deserialize)]
pub struct Totals {
    pub allocs: u64,
    pub frees: u64,
    /// Every path where something could not be recorded, by counter name.
    pub lost: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
pub struct Suspect {
    pub rank: u32,
    pub verdict: Verdict,
    pub outstanding_bytes: u64,
    pub allocs: u64,
    pub allocator: String,
    /// Innermost first.
    pub stack: Vec<Frame>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Leak,
    Growing,
    Bounded,
    Stable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Leak => "leak",
            Verdict::Growing => "growing",
            Verdict::Bounded => "bounded",
            Verdict::Stable => "stable",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Frame {
    Python { file: String, line: u32 },
    Native {},
}

impl Suspect {
    /// `file:line` of the innermost Python frame.
    pub fn python_line(&self) -> Option<String> {
        self.python_lines().next()
    }

    /// `file:line` of every Python frame, innermost first.
    pub fn python_lines(&self) -> impl Iterator<Item = String> + '_ {
        self.stack.iter().filter_map(|f| match f {
            Frame::Python { file, line } => Some(format!("{file}:{line}")),
            Frame::Native {} => None,
        })
    }
}

impl Report {
    /// What the report says about a planted leak at `site` (`path:line`), the innermost Python
    /// line of its stacks (`innermost`) or any line of them: "file.py:41 leak, rank 1, 15.8 MiB"
    /// (its first leak suspect there, else its first suspect there), and whether it is a leak.
    pub fn planted(&self, site: &str, innermost: bool) -> (String, bool) {
        let at = |s: &&Suspect| {
            if innermost {
                s.python_line().as_deref() == Some(site)
            } else {
                s.python_lines().any(|l| l == site)
            }
        };
        let there: Vec<&Suspect> = self.suspects.iter().filter(at).collect();
        let short = site.rsplit('/').next().unwrap_or(site);
        match there.iter().find(|s| s.verdict == Verdict::Leak).or(there.first()) {
            Some(s) => (
                format!(
                    "{short} {}, rank {}, {:.1} MiB",
                    s.verdict.as_str(),
                    s.rank,
                    s.outstanding_bytes as f64 / 1048576.0
                ),
                s.verdict == Verdict::Leak,
            ),
            None => (format!("{short} not in the report"), false),
        }
    }
}

/// `{"schema": 1, "processes": [...]}`: host mode and forks write one report per process.
#[derive(Deserialize)]
struct MultiReport {
    processes: Vec<Report>,
}

/// The report of process `pid` in the text of a report file (single-process, or the section of
/// `pid` in a multi-process one).
pub fn of_pid(text: &str, pid: u32) -> Result<Report> {
    let whole: serde_json::Value = serde_json::from_str(text).context("the tracer's report is not JSON")?;
    if whole.get("processes").is_none() {
        return serde_json::from_value(whole).context("reading the tracer's JSON report");
    }
    let multi: MultiReport = serde_json::from_value(whole).context("reading the tracer's multi-process report")?;
    multi
        .processes
        .into_iter()
        .find(|p| p.target.pid == pid)
        .with_context(|| format!("the multi-process report has no section for pid {pid}"))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::util;

    /// The tracer's golden JSON report, which its exporter tests keep in step with its schema.
    fn golden() -> String {
        let path = util::repo_root().join("tracer/tests/data/export/report.json");
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn reads_the_tracers_golden_report() {
        let r = of_pid(&golden(), 4242).unwrap();
        assert_eq!(r.target.pid, 4242);
        assert_eq!((r.totals.allocs, r.totals.frees), (120_345, 118_000));
        assert_eq!(r.totals.lost.get("allocs_map_full"), Some(&12));
        assert_eq!(r.suspects.len(), 4);
        let first = &r.suspects[0];
        assert_eq!((first.rank, first.verdict, first.allocator.as_str()), (1, Verdict::Leak, "malloc"));
        assert_eq!(first.python_line().as_deref(), Some("/srv/app.py:12"));
        assert!(first.outstanding_bytes > 0 && first.allocs > 0);
    }

    #[test]
    fn every_golden_json_report_parses() {
        // The exporter goldens that are reports (not speedscope or other formats' JSON).
        let dir = util::repo_root().join("tracer/tests/data/export");
        let reports = util::files_matching(&dir, "report", ".json");
        let reports: Vec<_> = reports
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().matches('.').count() == 1))
            .collect();
        assert!(!reports.is_empty(), "no report*.json in {}", dir.display());
        for path in reports {
            let text = fs::read_to_string(path).unwrap();
            let pid = serde_json::from_str::<serde_json::Value>(&text).unwrap()["target"]["pid"].as_u64().unwrap();
            of_pid(&text, pid as u32).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        }
    }

    #[test]
    fn finds_a_process_in_a_multi_process_report() {
        let one = golden();
        let other = one.replace("\"pid\": 4242", "\"pid\": 77");
        assert_ne!(one, other, "the golden report's pid field moved");
        let multi = format!("{{\"schema\": 1, \"processes\": [{other}, {one}]}}");
        assert_eq!(of_pid(&multi, 4242).unwrap().target.pid, 4242);
        assert_eq!(of_pid(&multi, 77).unwrap().target.pid, 77);
        let err = of_pid(&multi, 5).unwrap_err();
        assert!(format!("{err:#}").contains("no section for pid 5"), "{err:#}");
    }

    #[test]
    fn a_renamed_field_is_an_error() {
        let renamed = golden().replace("\"outstanding_bytes\"", "\"outstanding\"");
        assert!(of_pid(&renamed, 4242).is_err());
    }
}
