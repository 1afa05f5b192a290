//! Prometheus text exposition (format 0.0.4) of the reports a daemon serves (`serve`'s
//! `/metrics`). Like the other exporters it only formats: one family per measure, the target's
//! figures, each process's event and loss counters, the suspects keyed by their allocating line, the holders.
//!
//! With several processes (host mode) every per-process series carries the process's `pid`
//! label; one process alone keeps the label-free series it always had.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use crate::report::{CensusType, FinalView, Frame, Holder, Report, Verdict};

/// What the daemon adds about itself to the reports' own figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Daemon {
    /// Intervals sampled so far.
    pub samples: u64,
    /// Seconds the last interval's sampling and report took.
    pub build_s: f64,
    /// When the served reports were built (Unix time, seconds).
    pub built_unix_s: f64,
}

/// A series' labels as name/value pairs.
type Labels = Vec<(&'static str, String)>;
/// A suspect's innermost Python line: (function, file, line).
type LineKey = (String, String, u32);

/// Lines (and holders) of one process that get series of their own, the first by evidence:
/// verdict, then score, then bytes. The others are summed into one `[other]` series, so a
/// process never makes more than this many + 1 series per family (README, "Metrics").
pub const MAX_SERIES: usize = 50;

/// A line's sums over every stack that ends in it, whatever each stack's verdict.
#[derive(Debug, Clone, Copy)]
struct LineSums {
    bytes: f64,
    growth: f64,
    score: f64,
    /// The most serious verdict of its stacks.
    verdict: Verdict,
}

/// The metrics of `reports` (`multi`: several processes, each labelled by its `pid`).
pub fn write(reports: &[Report], multi: bool, daemon: &Daemon) -> String {
    let mut out = String::new();
    target_families(&mut out, reports, multi);
    daemon_families(&mut out, reports, daemon);
    counter_families(&mut out, reports, multi);
    suspect_families(&mut out, reports, multi);
    holder_families(&mut out, reports, multi);
    census_families(&mut out, reports, multi);
    out
}

/// `more` after the process's `pid` label (host mode only).
fn labels(r: &Report, multi: bool, more: Labels) -> Labels {
    let mut labels = if multi { vec![("pid", r.target.pid.to_string())] } else { vec![] };
    labels.extend(more);
    labels
}

/// `tracer_target_info` and, with several processes, `tracer_processes` by state.
fn target_families(out: &mut String, reports: &[Report], multi: bool) {
    let view = |r: &Report| r.final_view.map_or("", FinalView::as_str).to_string();
    let info: Vec<_> = reports
        .iter()
        .map(|r| {
            let mut labels = vec![
                ("pid", r.target.pid.to_string()),
                ("python", r.target.python.clone()),
                ("exe", r.target.exe.clone()),
                ("libc", r.target.libc.clone()),
            ];
            if multi {
                labels.push(("cmdline", r.target.cmdline.clone()));
                labels.push(("final_view", view(r)));
            }
            (labels, 1.0)
        })
        .collect();
    let help = if multi {
        "A traced process (always 1; final_view is live while it runs)."
    } else {
        "The traced process (always 1)."
    };
    family(out, "tracer_target_info", "gauge", help, &info);
    if multi {
        let ended = reports.iter().filter(|r| r.final_view != Some(FinalView::Live)).count() as f64;
        let states = [
            (vec![("state", "live".to_string())], reports.len() as f64 - ended),
            (vec![("state", "ended".to_string())], ended),
        ];
        let help = "Processes traced, by state (ended ones keep their last report).";
        family(out, "tracer_processes", "gauge", help, &states);
    }
}

/// The daemon's own figures, then each process's outstanding memory.
fn daemon_families(out: &mut String, reports: &[Report], daemon: &Daemon) {
    let duration_s = reports.iter().map(|r| r.duration_s).fold(0.0, f64::max);
    family(out, "tracer_traced_seconds", "gauge", "Seconds since the tracer attached.", &[(vec![], duration_s)]);
    family(out, "tracer_samples_total", "counter", "Intervals sampled.", &[(vec![], daemon.samples as f64)]);
    let help = "Time the last interval's sampling and report took.";
    family(out, "tracer_report_build_seconds", "gauge", help, &[(vec![], daemon.build_s)]);
    let help = "When the served report was built (Unix time).";
    family(out, "tracer_report_timestamp_seconds", "gauge", help, &[(vec![], daemon.built_unix_s)]);
}

/// Per process: outstanding memory, its allocation and free events and its losses (each
/// section's totals are its own; an ended process keeps the values it ended with).
fn counter_families(out: &mut String, reports: &[Report], multi: bool) {
    let per_process = |f: fn(&Report) -> u64| -> Vec<(Labels, f64)> {
        reports.iter().map(|r| (labels(r, multi, vec![]), f(r) as f64)).collect()
    };
    let help = "Bytes allocated since the tracer attached and not freed.";
    family(out, "tracer_outstanding_bytes", "gauge", help, &per_process(|r| r.totals.outstanding_bytes));
    let help = "Allocations made since the tracer attached and not freed.";
    family(out, "tracer_outstanding_allocations", "gauge", help, &per_process(|r| r.totals.outstanding_count));
    let rss: Vec<_> =
        reports.iter().filter_map(|r| Some((labels(r, multi, vec![]), r.totals.rss_bytes? as f64))).collect();
    let help = "Resident set size of the traced process (RSS, bytes) when the report was built.";
    family(out, "tracer_target_rss_bytes", "gauge", help, &rss);
    let events: Vec<_> = reports
        .iter()
        .flat_map(|r| {
            [
                (labels(r, multi, vec![("kind", "alloc".to_string())]), r.totals.allocs as f64),
                (labels(r, multi, vec![("kind", "free".to_string())]), r.totals.frees as f64),
            ]
        })
        .collect();
    family(out, "tracer_events_total", "counter", "Allocation and free events recorded.", &events);
    let lost: Vec<_> = reports
        .iter()
        .flat_map(|r| {
            r.totals.lost.iter().map(|(name, &n)| (labels(r, multi, vec![("counter", name.clone())]), n as f64))
        })
        .collect();
    family(out, "tracer_lost_total", "counter", "Events that could not be recorded, by cause.", &lost);
}

/// Stacks by verdict, then per allocating line: one series per line (function, file, line),
/// summed over the stacks that end there whatever their verdict, so a line keeps its series
/// when its verdict changes; the verdict is a gauge of its own ([`verdict_level`]).
fn suspect_families(out: &mut String, reports: &[Report], multi: bool) {
    let mut verdicts = Vec::new();
    let mut lines: Vec<(Labels, LineSums)> = Vec::new();
    for r in reports {
        let mut by_verdict: BTreeMap<&str, f64> =
            ["leak", "growing", "bounded", "stable"].into_iter().map(|v| (v, 0.0)).collect();
        for s in &r.suspects {
            *by_verdict.entry(s.verdict.as_str()).or_default() += 1.0;
        }
        verdicts.extend(by_verdict.iter().map(|(v, n)| (labels(r, multi, vec![("verdict", v.to_string())]), *n)));
        for ((function, file, line), sums) in per_line(r) {
            let more = vec![("function", function), ("file", file), ("line", line.to_string())];
            lines.push((labels(r, multi, more), sums));
        }
    }
    family(out, "tracer_suspects", "gauge", "Stacks in the report, by verdict.", &verdicts);
    let pick =
        |f: fn(&LineSums) -> f64| -> Vec<(Labels, f64)> { lines.iter().map(|(l, v)| (l.clone(), f(v))).collect() };
    let help = "Outstanding bytes of the stacks ending in this Python line (function, file, line).";
    family(out, "tracer_suspect_outstanding_bytes", "gauge", help, &pick(|v| v.bytes));
    let help = "Growth of the outstanding bytes of the stacks ending in this Python line.";
    family(out, "tracer_suspect_growth_bytes_per_second", "gauge", help, &pick(|v| v.growth));
    let help = "Leak evidence in [0, 1] (highest of the stacks ending in this line).";
    family(out, "tracer_suspect_score", "gauge", help, &pick(|v| v.score));
    let help = "Verdict of this Python line (its most serious stack): 3 leak, 2 growing, 1 bounded, 0 stable.";
    family(out, "tracer_suspect_verdict", "gauge", help, &pick(|v| verdict_level(v.verdict)));
}

/// A verdict as a number an alert can compare: 3 leak, 2 growing, 1 bounded, 0 stable.
fn verdict_level(v: Verdict) -> f64 {
    match v {
        Verdict::Leak => 3.0,
        Verdict::Growing => 2.0,
        Verdict::Bounded => 1.0,
        Verdict::Stable => 0.0,
    }
}

/// A report's suspects summed per innermost Python line, the [`MAX_SERIES`] first by evidence,
/// then the rest summed under `[other]`.
fn per_line(r: &Report) -> Vec<(LineKey, LineSums)> {
    let mut per_line: Vec<(LineKey, LineSums)> = Vec::new();
    for s in &r.suspects {
        let key = innermost(&s.stack);
        let add = LineSums {
            bytes: s.outstanding_bytes as f64,
            growth: s.growth_bytes_per_s,
            score: s.score,
            verdict: s.verdict,
        };
        match per_line.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = v.add(&add),
            None => per_line.push((key, add)),
        }
    }
    per_line.sort_by(|a, b| a.1.evidence_order(&b.1));
    if per_line.len() > MAX_SERIES {
        let rest = per_line.split_off(MAX_SERIES);
        let other = rest.iter().skip(1).fold(rest[0].1, |acc, (_, v)| acc.add(v));
        per_line.push((("[other]".into(), String::new(), 0), other));
    }
    per_line
}

impl LineSums {
    fn add(&self, o: &LineSums) -> LineSums {
        LineSums {
            bytes: self.bytes + o.bytes,
            growth: self.growth + o.growth,
            score: self.score.max(o.score),
            verdict: self.verdict.min(o.verdict),
        }
    }

    /// Most evidence first: verdict, score, bytes.
    fn evidence_order(&self, o: &LineSums) -> std::cmp::Ordering {
        self.verdict.cmp(&o.verdict).then(o.score.total_cmp(&self.score)).then(o.bytes.total_cmp(&self.bytes))
    }
}

/// Each process's live objects by type, and what the census costs.
fn census_families(out: &mut String, reports: &[Report], multi: bool) {
    let series = |f: fn(&CensusType) -> f64| -> Vec<(Labels, f64)> {
        // The type alone names a series, so it stays one series when its verdict changes.
        let of = |t: &CensusType| vec![("type", t.type_name.clone())];
        reports.iter().flat_map(|r| r.census.iter().map(move |t| (labels(r, multi, of(t)), f(t)))).collect()
    };
    let help = "Verdict on a type's live objects: 3 leak, 2 growing, 1 bounded, 0 stable.";
    family(out, "tracer_census_verdict", "gauge", help, &series(|t| verdict_level(t.verdict)));
    let help = "Live GC-tracked objects of a type in the target (the census).";
    family(out, "tracer_census_objects", "gauge", help, &series(|t| t.count as f64));
    let help = "Live objects of a type added per second (the census).";
    family(out, "tracer_census_growth_per_second", "gauge", help, &series(|t| t.growth_per_s));
    let help = "Estimated bytes of the live objects of a type (their own size).";
    family(out, "tracer_census_bytes_estimate", "gauge", help, &series(|t| t.bytes_est as f64));
    let scans: Vec<&Report> = reports.iter().filter(|r| r.census_scan.is_some()).collect();
    let cost = |f: fn(&crate::report::CensusSummary) -> f64| -> Vec<(Labels, f64)> {
        scans.iter().filter_map(|r| r.census_scan.as_ref().map(|c| (labels(r, multi, vec![]), f(c)))).collect()
    };
    let help = "Mean seconds one census scan takes.";
    family(out, "tracer_census_scan_seconds", "gauge", help, &cost(|c| c.mean_scan_s));
    let help = "Objects one census scan visits.";
    family(out, "tracer_census_scan_objects", "gauge", help, &cost(|c| c.objects_per_scan as f64));
    let help = "Bytes of the target one census scan reads.";
    family(out, "tracer_census_scan_bytes_read", "gauge", help, &cost(|c| c.bytes_read_per_scan as f64));
}

/// Each process's containers, by path and type (the first of a path and type when a report
/// lists it twice), the [`MAX_SERIES`] first by evidence and the rest summed under `[other]`;
/// the verdict is a gauge of its own, so a holder keeps its series when its verdict changes.
fn holder_families(out: &mut String, reports: &[Report], multi: bool) {
    let mut rows: Vec<(Labels, [f64; 4])> = Vec::new();
    for r in reports {
        let mut seen = HashSet::new();
        let mut hs: Vec<&Holder> =
            r.holders.iter().filter(|h| seen.insert((h.path.as_str(), h.type_name.as_str()))).collect();
        hs.sort_by(|a, b| a.verdict.cmp(&b.verdict).then(b.score.total_cmp(&a.score)));
        let values = |h: &Holder| [h.len as f64, h.growth_per_s, h.retained_bytes_est as f64, verdict_level(h.verdict)];
        for h in hs.iter().take(MAX_SERIES) {
            rows.push((labels(r, multi, vec![("path", h.path.clone()), ("type", h.type_name.clone())]), values(h)));
        }
        if hs.len() > MAX_SERIES {
            let mut sum = [0.0; 4];
            for h in &hs[MAX_SERIES..] {
                let v = values(h);
                (0..3).for_each(|i| sum[i] += v[i]);
                sum[3] = sum[3].max(v[3]);
            }
            rows.push((labels(r, multi, vec![("path", "[other]".into()), ("type", String::new())]), sum));
        }
    }
    let series = |i: usize| -> Vec<(Labels, f64)> { rows.iter().map(|(l, v)| (l.clone(), v[i])).collect() };
    let help = "Items in a container of the target, by path.";
    family(out, "tracer_holder_length", "gauge", help, &series(0));
    let help = "Items added per second to a container of the target.";
    family(out, "tracer_holder_growth_per_second", "gauge", help, &series(1));
    let help = "Estimated bytes kept alive by a container of the target.";
    family(out, "tracer_holder_retained_bytes_estimate", "gauge", help, &series(2));
    let help = "Verdict of a container of the target: 3 leak, 2 growing, 1 bounded, 0 stable.";
    family(out, "tracer_holder_verdict", "gauge", help, &series(3));
}

/// The innermost Python frame of a stack as (function, file, line); a stack without one is
/// named by its innermost frame (file = module, line 0).
fn innermost(stack: &[Frame]) -> (String, String, u32) {
    let python = stack.iter().find_map(|f| match f {
        Frame::Python { function, file, line, .. } => Some((function.clone(), file.clone(), *line)),
        Frame::Native { .. } => None,
    });
    python.unwrap_or_else(|| match stack.first() {
        Some(Frame::Native { function, module }) => (function.clone(), module.clone(), 0),
        Some(Frame::Python { .. }) => unreachable!("found above"),
        None => ("[no stack]".into(), String::new(), 0),
    })
}

/// One metric family: HELP, TYPE, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(Labels, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", label_value(v));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {}", sample_value(*value));
    }
}

/// `"..."` content of a label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn sample_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::live_report as report;

    const DAEMON: Daemon = Daemon { samples: 3, build_s: 0.01, built_unix_s: 1.7e9 };

    #[test]
    fn metrics_are_prometheus_text() {
        let text = write(&[report()], false, &DAEMON);
        // Two leak stacks ending in the same line are one series, summed.
        let line = r#"tracer_suspect_outstanding_bytes{function="leak \"x\"",file="/srv/a\\b.py",line="7"} 300"#;
        assert!(text.lines().any(|l| l == line), "{text}");
        let verdict = r#"tracer_suspect_verdict{function="leak \"x\"",file="/srv/a\\b.py",line="7"} 3"#;
        assert!(text.lines().any(|l| l == verdict), "{text}");
        assert!(text.contains(r#"tracer_holder_length{path="__main__.KEPT",type="list"} 10"#), "{text}");
        assert!(text.contains(r#"tracer_holder_verdict{path="__main__.KEPT",type="list"} 3"#), "{text}");
        assert!(text.contains(&format!("tracer_target_rss_bytes {}", 50u64 << 20)), "{text}");
        assert!(text.contains("tracer_lost_total{counter=\"map_full\"} 0"), "{text}");
        assert!(text.contains("tracer_outstanding_bytes 300"), "{text}");
        let mut names = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                assert!(names.insert(rest.split(' ').next().unwrap().to_string()), "family declared twice: {l}");
                continue;
            }
            if l.starts_with('#') {
                continue;
            }
            let (series, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value), "{l}");
            assert!(series.starts_with("tracer_"), "{l}");
        }
        assert_eq!(sample_value(f64::INFINITY), "+Inf");
        assert_eq!(label_value("a\nb"), "a\\nb");
    }

    #[test]
    fn host_mode_metrics_label_every_process_series_with_its_pid() {
        let mut other = report();
        other.target.pid = 43;
        other.final_view = Some(FinalView::Finalization);
        let text = write(&[report(), other], true, &DAEMON);
        for pid in ["42", "43"] {
            let line = format!(
                r#"tracer_suspect_outstanding_bytes{{pid="{pid}",function="leak \"x\"",file="/srv/a\\b.py",line="7"}} 300"#
            );
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
            assert!(text.contains(&format!("tracer_outstanding_bytes{{pid=\"{pid}\"}} 300")), "{text}");
            assert!(
                text.contains(&format!(r#"tracer_holder_length{{pid="{pid}",path="__main__.KEPT",type="list"}} 10"#)),
                "{text}"
            );
        }
        assert!(text.contains(r#"tracer_processes{state="ended"} 1"#), "{text}");
        let per_process = [
            "tracer_events_total",
            "tracer_lost_total",
            "tracer_outstanding_bytes",
            "tracer_outstanding_allocations",
            "tracer_suspects",
            "tracer_suspect_",
            "tracer_holder_",
            "tracer_target_info",
        ];
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            if per_process.iter().any(|p| l.starts_with(p)) {
                assert!(l.contains("pid=\""), "per-process series without pid: {l}");
            }
        }
    }

    #[test]
    fn a_line_is_one_series_whatever_its_stacks_verdicts() {
        let mut r = report();
        r.suspects[1].verdict = Verdict::Growing;
        let text = write(&[r], false, &DAEMON);
        let of_line: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tracer_suspect_outstanding_bytes{") && l.contains("line=\"7\""))
            .collect();
        assert_eq!(of_line.len(), 1, "{text}");
        assert!(of_line[0].ends_with(" 300"), "{text}");
        assert!(
            text.contains(r#"tracer_suspect_verdict{function="leak \"x\"",file="/srv/a\\b.py",line="7"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn a_census_type_is_one_series_and_its_verdict_a_gauge() {
        let mut r = report();
        let timer = |verdict| CensusType {
            type_name: "TimerHandle".into(),
            count: 1200,
            bytes_est: 96_000,
            growth_per_s: 10.0,
            verdict,
            score: 0.9,
            reason: String::new(),
            origin: None,
        };
        r.census = vec![timer(Verdict::Growing)];
        let growing = write(&[r.clone()], false, &DAEMON);
        r.census = vec![timer(Verdict::Leak)];
        let leak = write(&[r], false, &DAEMON);
        let objects = r#"tracer_census_objects{type="TimerHandle"} 1200"#;
        assert!(growing.lines().any(|l| l == objects) && leak.lines().any(|l| l == objects), "{leak}");
        assert!(growing.contains(r#"tracer_census_verdict{type="TimerHandle"} 2"#), "{growing}");
        assert!(leak.contains(r#"tracer_census_verdict{type="TimerHandle"} 3"#), "{leak}");
    }

    #[test]
    fn series_are_capped_per_process_and_the_rest_summed() {
        let mut r = report();
        let base = r.suspects[0].clone();
        r.suspects = (0..120u32)
            .map(|i| {
                let mut s = base.clone();
                s.outstanding_bytes = 1000 + u64::from(i);
                s.score = f64::from(i) / 200.0;
                if let Frame::Python { line, .. } = &mut s.stack[1] {
                    *line = 100 + i;
                }
                s
            })
            .collect();
        let text = write(&[r], false, &DAEMON);
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("tracer_suspect_outstanding_bytes{")).collect();
        assert_eq!(series.len(), MAX_SERIES + 1, "{text}");
        // the highest scores keep their own series; the 70 others are summed
        assert!(series.iter().any(|l| l.contains("line=\"219\"")), "{text}");
        assert!(!series.iter().any(|l| l.contains("line=\"100\"")), "{text}");
        let other = series.iter().find(|l| l.contains("[other]")).expect("an [other] series");
        let want: u64 = (0..70u64).map(|i| 1000 + i).sum();
        assert!(other.ends_with(&format!(" {want}")), "{other}");
    }
}
