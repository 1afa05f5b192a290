//! The census leg of the benchmark: what one scan of every GC-tracked object costs (time,
//! objects visited, bytes read, the tracer's peak RSS) on a heap of about a million tracked
//! objects and on one of about a hundred thousand (a service's size), read from the tracer's
//! own `census_scan` report. `cargo xtask bench --census` runs only this leg and replaces the
//! Census section of BENCHMARKS.md; the full benchmark keeps that section as it is.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::proc::{PeakRss, Proc};
use crate::util;

pub const HEADING: &str = "## Census";

/// (records of census_million.py, what it stands for): about three tracked objects a record.
const HEAPS: &[(u64, &str)] = &[(330_000, "1M tracked objects"), (30_000, "~100k tracked objects")];
/// Records the fixture replaces per second (cyclic garbage, as a busy service makes).
const CHURN: u64 = 2_000;

struct Row {
    label: &'static str,
    ready_objects: String,
    scan: serde_json::Value,
    peak_kb: Option<u64>,
}

/// Runs the leg; returns the markdown section.
pub fn run(tracer: &Path, python: &Path, tmp: &Path) -> Result<String> {
    let mut rows = Vec::new();
    for &(records, label) in HEAPS {
        rows.push(one(tracer, python, tmp, records, label)?);
        println!("bench: census {label}: {}", rows.last().expect("pushed").scan);
    }
    Ok(markdown(&rows, python))
}

fn one(tracer: &Path, python: &Path, tmp: &Path, records: u64, label: &'static str) -> Result<Row> {
    let script = util::repo_root().join("tracer/tests/fixtures/census_million.py");
    let mut fx = Proc::spawn(
        "census_million.py",
        Command::new(python).arg(&script).arg(records.to_string()).arg(CHURN.to_string()),
    )?;
    let (_, line) = fx.wait_line("ready", Duration::from_secs(120), |_, l| l.starts_with("ready"))?;
    let out = tmp.join(format!("census-{records}.json"));
    let pid = fx.pid.to_string();
    let args = ["record", "-p", &pid, "--holders-only", "-d", "12s", "-i", "1s", "-q", "-f", "json", "-o"];
    let mut t = Proc::spawn("tracer", Command::new(tracer).args(args).arg(&out))?;
    let peak = PeakRss::start(t.pid);
    let status = t.wait(Duration::from_secs(60))?;
    let peak_kb = peak.finish();
    anyhow::ensure!(status.success(), "tracer: {status}\n{}", t.tail(8));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?)?;
    Ok(Row {
        label,
        ready_objects: line.trim_start_matches("ready").trim().to_string(),
        scan: report["census_scan"].clone(),
        peak_kb,
    })
}

fn markdown(rows: &[Row], python: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}: cost of one scan of every tracked object\n");
    let _ = writeln!(
        s,
        "`cargo xtask bench --census` ({}, load average {}): `tracer/tests/fixtures/census_million.py N {CHURN}` \
         (N records, each an instance, a list and a dict in a cycle; {CHURN} replaced per second) under \
         `tracer record -p PID --holders-only -d 12s -i 1s`; figures from the report's `census_scan`, peak RSS \
         from the tracer's VmHWM. A scan is followed by a pause of ten times its length.\n",
        python.display(),
        super::tools::loadavg()
    );
    let _ = writeln!(s, "| heap | tracked at start | objects / scan | bytes read / scan | reads / scan | mean scan | max scan | scans | tracer peak RSS |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let c = &r.scan;
        let n = |k: &str| c[k].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.1} MB | {:.0} | {:.1} ms | {:.1} ms | {:.0} | {} |",
            r.label,
            r.ready_objects,
            n("objects_per_scan"),
            n("bytes_read_per_scan") / 1e6,
            n("reads_per_scan"),
            n("mean_scan_s") * 1e3,
            n("max_scan_s") * 1e3,
            n("scans"),
            r.peak_kb.map(|kb| format!("{:.0} MB", kb as f64 / 1e3)).unwrap_or_else(|| "n/a".into()),
        );
    }
    s.push_str(BEFORE);
    s
}

/// The figures before the census kept compact node records (measured the same way by hand,
/// commit 8dd4363, pyenv 3.11.7, load average 4-9).
const BEFORE: &str = "\nBefore (8dd4363: a cache of 64 KiB blocks capped at 64 MiB, flushed when full, and a hash set \
of seen addresses), same fixture and flags with `-d 8s -i 2s`: 1M objects 565 ms mean scan (633 ms max), 785 MB \
read in 13,006 reads per scan, tracer peak RSS 120 MB (earlier, on a busier machine: 2.2-4.0 s); ~100k \
(148k objects) 65 ms, 29 MB in 791 reads, 69 MB. Now each 64 KiB block is read once per scan and only its \
GC nodes are kept (32 bytes each), with one seen-bit per 16-byte slot: the heap is read about once.\n";
