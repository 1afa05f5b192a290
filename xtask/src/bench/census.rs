//! The census leg of the benchmark: what one scan of every GC-tracked object costs (time,
//! objects visited, bytes read, the tracer's peak RSS) on a heap of about a million tracked
//! objects and on one of about a hundred thousand (a service's size), read from the tracer's
//! own `census_scan` report; and what the walk from roots (the holders view) costs on the same
//! heaps and on the Tornado service fixture, from its `holders_scan`. `cargo xtask bench --census` runs only this leg and replaces the
//! Census section of BENCHMARKS.md; the full benchmark keeps that section as it is.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::proc::{PeakRss, Proc};
use crate::util;

pub const HEADING: &str = "## Census";

/// (fixture, its arguments, what it stands for). census_million.py: about three tracked objects
/// a record; the Tornado fixture: a service's state in frames, tasks and the loop, serving load.
const HEAPS: &[(&str, &[&str], &str)] = &[
    ("census_million.py", &["330000", "2000"], "1M tracked objects"),
    ("census_million.py", &["30000", "2000"], "~100k tracked objects"),
    ("tornado_service_state.py", &["120"], "Tornado service fixture"),
];

struct Row {
    label: &'static str,
    ready_objects: String,
    scan: serde_json::Value,
    walk: serde_json::Value,
    peak_kb: Option<u64>,
}

/// Runs the leg; returns the markdown section.
pub fn run(tracer: &Path, python: &Path, tmp: &Path) -> Result<String> {
    let mut rows = Vec::new();
    for (k, &(script, args, label)) in HEAPS.iter().enumerate() {
        if script.starts_with("tornado") && !util::python_ok(python, "import tornado") {
            println!("bench: census {label}: left out ({} has no tornado)", python.display());
            continue;
        }
        rows.push(one(tracer, python, &tmp.join(format!("heap-{k}.json")), script, args, label)?);
        let row = rows.last().expect("pushed");
        println!("bench: census {label}: {}\nbench: walk {label}: {}", row.scan, row.walk);
    }
    Ok(markdown(&rows, python))
}

fn one(tracer: &Path, python: &Path, out: &Path, script: &str, args: &[&str], label: &'static str) -> Result<Row> {
    let path = util::repo_root().join("tracer/tests/fixtures").join(script);
    let mut fx = Proc::spawn(script, Command::new(python).arg(&path).args(args))?;
    let (_, line) = fx.wait_line("ready", Duration::from_secs(120), |_, l| l.starts_with("ready"))?;
    let pid = fx.pid.to_string();
    let args = ["record", "-p", &pid, "--holders-only", "-d", "12s", "-i", "1s", "-q", "-f", "json", "-o"];
    let mut t = Proc::spawn("tracer", Command::new(tracer).args(args).arg(out))?;
    let peak = PeakRss::start(t.pid);
    let status = t.wait(Duration::from_secs(60))?;
    let peak_kb = peak.finish();
    anyhow::ensure!(status.success(), "tracer: {status}\n{}", t.tail(8));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?)?;
    let ready = line.trim_start_matches("ready").trim();
    Ok(Row {
        label,
        ready_objects: if ready.is_empty() { "n/a".into() } else { ready.to_string() },
        scan: report["census_scan"].clone(),
        walk: report["holders_scan"].clone(),
        peak_kb,
    })
}

fn markdown(rows: &[Row], python: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}: cost of one scan of every tracked object\n");
    let _ = writeln!(
        s,
        "`cargo xtask bench --census` ({}, load average {}): `tracer/tests/fixtures/census_million.py N 2000` \
         (N records, each an instance, a list and a dict in a cycle; 2,000 replaced per second: cyclic garbage, as a busy service makes) under \
         `tracer record -p PID --holders-only -d 12s -i 1s`; figures from the report's `census_scan`, peak RSS \
         from the tracer's VmHWM. A scan is followed by a pause of ten times its length. The Tornado \
         fixture (`tornado_service_state.py`: state in `main()`'s locals, tasks and the event loop, serving \
         40 requests/s) is recorded the same way. The walk from roots (the holders view: every object \
         reachable from modules, frames, coroutines and loops, each container's newest 1,024 items) is \
         from the same runs' `holders_scan`.\n",
        python.display(),
        super::tools::loadavg()
    );
    let _ = writeln!(
        s,
        "| heap | tracked at start | objects / scan | bytes read / scan | reads / scan | mean scan | max scan | scans \
         | walk: objects / scan | walk: bytes / scan | walk: mean | walk: max | tracer peak RSS |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let c = &r.scan;
        let n = |k: &str| c[k].as_f64().unwrap_or(0.0);
        let w = |k: &str| r.walk[k].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.1} MB | {:.0} | {:.1} ms | {:.1} ms | {:.0} | {:.0} | {:.1} MB | {:.1} ms | {:.1} ms | {} |",
            r.label,
            r.ready_objects,
            n("objects_per_scan"),
            n("bytes_read_per_scan") / 1e6,
            n("reads_per_scan"),
            n("mean_scan_s") * 1e3,
            n("max_scan_s") * 1e3,
            n("scans"),
            w("objects_per_scan"),
            w("bytes_read_per_scan") / 1e6,
            w("mean_scan_s") * 1e3,
            w("max_scan_s") * 1e3,
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
