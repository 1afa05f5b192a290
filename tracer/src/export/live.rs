//! `/live.json`, what `serve`'s live page (`/`) draws: per process a header (target, RSS and
//! outstanding memory in human units), the chart's series (outstanding memory, then each line
//! and holder whose verdict is `leak`), the leak table (verdict, line, growth, why) and the
//! holders. Like every exporter it only formats: verdicts come from the report, histories from
//! the daemon ([`Track`]), and every number a person reads is formatted by `units`.

use serde::Serialize;

use crate::report::{Frame, Report, Reports, Verdict};
use crate::units::{self, Unit};

/// What a chart series follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// The process's outstanding bytes.
    Total,
    /// The outstanding bytes of the stacks ending in one Python line.
    Line,
    /// The estimated bytes a container keeps alive.
    Holder,
}

/// One series over time, kept by the daemon between snapshots (seconds since tracing started,
/// bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub pid: u32,
    pub kind: TrackKind,
    /// The line (`function (file:line)`) or the holder's path; empty for the total.
    pub key: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Serialize)]
struct Page {
    samples: u64,
    processes: Vec<Process>,
}

#[derive(Serialize)]
struct Process {
    pid: u32,
    command: String,
    python: String,
    traced: String,
    rss: String,
    outstanding: String,
    chart: Chart,
    leaks: Vec<LeakRow>,
    holders: Vec<HolderRow>,
}

#[derive(Serialize)]
struct Chart {
    series: Vec<Series>,
    /// Top of the y axis (bytes) and its ticks as (bytes, label).
    y_max: f64,
    y_ticks: Vec<(f64, String)>,
    /// The x axis (seconds since tracing started) and its ticks.
    x_min: f64,
    x_max: f64,
    x_ticks: Vec<(f64, String)>,
}

#[derive(Serialize)]
struct Series {
    kind: TrackKind,
    name: String,
    now: String,
    points: Vec<(f64, f64)>,
}

#[derive(Serialize)]
struct LeakRow {
    verdict: &'static str,
    line: String,
    outstanding: String,
    growth: String,
    why: String,
}

#[derive(Serialize)]
struct HolderRow {
    verdict: &'static str,
    path: String,
    r#type: String,
    len: String,
    growth: String,
    retained: String,
}

/// The live page's JSON for `reports` and the daemon's `tracks`.
pub fn write(reports: &Reports, tracks: &[Track], samples: u64) -> String {
    let processes = reports.as_slice().iter().map(|r| process(r, tracks)).collect();
    serde_json::to_string(&Page { samples, processes }).unwrap_or_else(|_| "{}".into())
}

fn process(r: &Report, tracks: &[Track]) -> Process {
    let command = if r.target.cmdline.is_empty() { r.target.exe.clone() } else { r.target.cmdline.clone() };
    Process {
        pid: r.target.pid,
        command,
        python: r.target.python.clone(),
        traced: units::duration(r.duration_s),
        rss: r.totals.rss_bytes.map_or_else(|| "?".into(), |b| units::bytes(b as f64)),
        outstanding: units::bytes(r.totals.outstanding_bytes as f64),
        chart: chart(r, tracks),
        leaks: leak_rows(r),
        holders: r.holders.iter().map(holder_row).collect(),
    }
}

/// A line with a stack judged `leak` or `growing`: its label, most serious verdict, bytes and
/// growth summed over its stacks, the reason of its highest-ranked stack, and its frame.
pub type LeakLine<'a> = (String, Verdict, u64, f64, &'a str, Option<&'a Frame>);

/// The lines with a stack judged `leak` or `growing`, each once (see [`LeakLine`]).
pub fn leak_lines_with_site(r: &Report) -> Vec<LeakLine<'_>> {
    let mut rows: Vec<LeakLine<'_>> = Vec::new();
    for s in &r.suspects {
        let site = s.site();
        let line = site.map_or_else(|| "[no stack]".to_string(), |f| f.label());
        match rows.iter_mut().find(|row| row.0 == line) {
            Some(row) => {
                row.1 = row.1.min(s.verdict);
                row.2 += s.outstanding_bytes;
                row.3 += s.growth_bytes_per_s;
            }
            None => rows.push((line, s.verdict, s.outstanding_bytes, s.growth_bytes_per_s, s.reason.as_str(), site)),
        }
    }
    rows.retain(|row| matches!(row.1, Verdict::Leak | Verdict::Growing));
    rows
}

/// [`leak_lines_with_site`] without the frame.
pub fn leak_lines(r: &Report) -> Vec<(String, Verdict, u64, f64, &str)> {
    leak_lines_with_site(r).into_iter().map(|(a, b, c, d, e, _)| (a, b, c, d, e)).collect()
}

fn leak_rows(r: &Report) -> Vec<LeakRow> {
    leak_lines(r)
        .into_iter()
        .map(|(line, verdict, bytes, growth, why)| LeakRow {
            verdict: verdict.as_str(),
            line,
            outstanding: units::bytes(bytes as f64),
            growth: units::rate(growth, Unit::Bytes),
            why: why.to_string(),
        })
        .collect()
}

fn holder_row(h: &crate::report::Holder) -> HolderRow {
    HolderRow {
        verdict: h.verdict.as_str(),
        path: h.path.clone(),
        r#type: h.type_name.clone(),
        len: units::count(h.len),
        growth: units::rate(h.growth_per_s, Unit::Items),
        retained: units::bytes(h.retained_bytes_est as f64),
    }
}

/// The total, then each line and holder of `r` judged `leak` now, with their histories.
fn chart(r: &Report, tracks: &[Track]) -> Chart {
    let leaking_lines: Vec<String> =
        leak_lines(r).into_iter().filter(|row| row.1 == Verdict::Leak).map(|row| row.0).collect();
    let leaking_holders: Vec<&str> =
        r.holders.iter().filter(|h| h.verdict == Verdict::Leak).map(|h| h.path.as_str()).collect();
    let wanted = |t: &&Track| {
        t.pid == r.target.pid
            && match t.kind {
                TrackKind::Total => true,
                TrackKind::Line => leaking_lines.contains(&t.key),
                TrackKind::Holder => leaking_holders.contains(&t.key.as_str()),
            }
    };
    let mut chosen: Vec<&Track> = tracks.iter().filter(wanted).collect();
    chosen.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
    let series: Vec<Series> = chosen
        .into_iter()
        .map(|t| Series {
            kind: t.kind,
            name: if t.kind == TrackKind::Total { "outstanding memory".into() } else { t.key.clone() },
            now: units::bytes(t.points.last().map_or(0.0, |p| p.1)),
            points: t.points.clone(),
        })
        .collect();
    let all = || series.iter().flat_map(|s| s.points.iter());
    let y_top = all().map(|p| p.1).fold(0.0, f64::max);
    let x_min = all().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_max = all().map(|p| p.0).fold(0.0, f64::max);
    let x_min = if x_min.is_finite() { x_min } else { 0.0 };
    let y_max = nice_ceiling(y_top);
    let y_ticks = (0..=4).map(|i| y_max * f64::from(i) / 4.0).map(|v| (v, units::bytes(v))).collect();
    let span = (x_max - x_min).max(1.0);
    let x_ticks = (0..=4).map(|i| x_min + span * f64::from(i) / 4.0).map(|v| (v, units::duration(v))).collect();
    Chart { series, y_max, y_ticks, x_min, x_max: x_min + span, x_ticks }
}

/// The smallest of 1, 2, 4 or 5 times a power of 1024 or of ten above `v` (so the four tick
/// steps read evenly): at least 1 KiB.
fn nice_ceiling(v: f64) -> f64 {
    let mut unit = 1024.0;
    while unit * 1024.0 <= v {
        unit *= 1024.0;
    }
    let x = v / unit;
    let steps = [1.0, 2.0, 4.0, 8.0, 10.0, 20.0, 40.0, 80.0, 100.0, 200.0, 400.0, 800.0, 1024.0];
    steps.iter().map(|s| s * unit).find(|&c| c >= v * 1.05).unwrap_or(x.ceil() * unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::live_report as report;

    #[test]
    fn live_json_has_the_leaking_line_and_holder_as_series() {
        let r = report();
        let line = r.suspects[0].site().unwrap().label();
        let tracks = vec![
            Track { pid: 42, kind: TrackKind::Total, key: String::new(), points: vec![(0.0, 100.0), (1.0, 300.0)] },
            Track { pid: 42, kind: TrackKind::Line, key: line.clone(), points: vec![(1.0, 300.0)] },
            Track { pid: 42, kind: TrackKind::Holder, key: "__main__.KEPT".into(), points: vec![(1.0, 1000.0)] },
            Track { pid: 42, kind: TrackKind::Line, key: "gone (x.py:1)".into(), points: vec![(0.0, 5.0)] },
            Track { pid: 7, kind: TrackKind::Total, key: String::new(), points: vec![(0.0, 1.0)] },
        ];
        let v: serde_json::Value = serde_json::from_str(&write(&Reports::One(r), &tracks, 3)).unwrap();
        let p = &v["processes"][0];
        assert_eq!(p["rss"], "50 MiB");
        assert_eq!(p["outstanding"], "300 B");
        let names: Vec<&str> =
            p["chart"]["series"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["outstanding memory", line.as_str(), "__main__.KEPT"]);
        assert_eq!(p["leaks"].as_array().unwrap().len(), 1, "two stacks, one line: {p:#}");
        assert_eq!(p["leaks"][0]["line"], line);
        assert_eq!(p["leaks"][0]["outstanding"], "300 B");
        assert_eq!(p["chart"]["y_max"], 2048.0);
        assert_eq!(p["chart"]["y_ticks"][4][1], "2.0 KiB");
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1024.0);
        assert_eq!(nice_ceiling(3000.0), 4096.0);
        assert_eq!(nice_ceiling(150.0 * 1048576.0), 200.0 * 1048576.0);
    }
}
