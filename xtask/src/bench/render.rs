//! The results as tables: on the terminal and in BENCHMARKS.md.

use std::fmt::Write;

use super::runs::{Config, Run, Tool};
use super::tools::Machine;
use super::Series;

pub struct Results {
    pub command: String,
    pub machine: Machine,
    pub rounds: u32,
    pub iterations: u64,
    pub sample_bytes: u64,
    pub tornado_seconds: f64,
    pub tornado_threads: u32,
    pub workload: (Series, Vec<Series>),
    pub unavailable: Vec<(Config, String)>,
    pub tornado: Option<(Series, Vec<Series>)>,
    pub levers: Option<(Series, Vec<Series>)>,
    pub levers_iterations: u64,
    /// Host mode: untraced, traced alone, traced with `--all` beside the idle processes.
    pub host: Option<(Series, Vec<Series>)>,
    pub end_loadavg: String,
    pub minutes: f64,
    pub note: Option<String>,
}

/// The shortest window over which the tracer calls growth a leak (README: "at least 8 s").
const MIN_LEAK_WINDOW_S: f64 = 8.0;

pub fn value_text(what: &str, v: f64) -> String {
    if what == "tornado" {
        format!("{:>8.0} req/s", 1.0 / v)
    } else {
        format!("{v:>7.2} s")
    }
}

pub fn ratio_text(what: &str, x: f64) -> String {
    if what == "tornado" {
        format!("throughput {:+.1}%", (1.0 / x - 1.0) * 100.0)
    } else {
        format!("{x:.2}x")
    }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn med_of(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    median(runs.iter().filter_map(f).collect())
}

fn max_of(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    runs.iter().filter_map(f).reduce(f64::max)
}

/// A slowdown as the tables print it ("7.25x", or "–" when not measured).
pub fn times(v: Option<f64>) -> String {
    opt(v, |v| format!("{v:.2}x"))
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn mib(kb: f64) -> String {
    format!("{:.1} MiB", kb / 1024.0)
}

fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn is_tracer(s: &Series) -> bool {
    matches!(s.cfg.tool, Tool::Tracer(_) | Tool::TracerVariant { .. } | Tool::Host { .. })
}

fn find<'a>(list: &'a [Series], key: &str) -> Option<&'a Series> {
    list.iter().find(|s| s.cfg.key == key)
}

pub fn slowdown(s: &Series) -> Option<f64> {
    median(s.ratios.clone())
}

/// The main table: one row per configuration of the workload.
fn workload_table(r: &Results) -> String {
    let (base, series) = &r.workload;
    let mut t = String::new();
    t.push_str("| configuration | slowdown (median) | per round | events/s | lost events | attach | stop: probes gone / exit | peak RSS | BPF maps | planted leak |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let _ = writeln!(
        t,
        "| untraced | 1.00x ({} work loop) | {} | | | | | | | |",
        opt(med_of(&base.runs, |r| Some(r.value)), secs),
        base.runs.iter().map(|r| format!("{:.2} s", r.value)).collect::<Vec<_>>().join(", ")
    );
    for s in series {
        let runs = &s.runs;
        let row_slow = match slowdown(s) {
            Some(x) => format!("**{x:.2}x**"),
            None if !s.errors.is_empty() => first_error(s),
            None => "–".into(),
        };
        let per_round = s.ratios.iter().map(|x| format!("{x:.2}x")).collect::<Vec<_>>().join(", ");
        let leak = leak_text(s);
        let lost = lost_text(runs);
        let _ = writeln!(
            t,
            "| `{}` | {row_slow} | {per_round} | {} | {lost} | {} | {} | {} | {} | {leak} |",
            s.cfg.label,
            opt(med_of(runs, |r| r.events_per_s), count),
            opt(med_of(runs, |r| r.attach_s), secs),
            match (med_of(runs, |r| r.probes_off_s), med_of(runs, |r| r.exit_s)) {
                (Some(a), Some(b)) => format!("{} / {}", secs(a), secs(b)),
                _ => "–".into(),
            },
            opt(max_of(runs, |r| r.rss_kb.map(|k| k as f64)), mib),
            opt(max_of(runs, |r| r.maps.map(|(b, _)| b as f64)), |b| {
                let n = runs.iter().filter_map(|r| r.maps.map(|m| m.1)).max().unwrap_or(0);
                format!("{} in {n} maps", mib(b / 1024.0))
            }),
        );
    }
    for (cfg, why) in &r.unavailable {
        let _ = writeln!(t, "| `{}` | {why} | | | | | | | | |", cfg.label);
    }
    t
}

fn first_error(s: &Series) -> String {
    let e = s.errors.first().map(String::as_str).unwrap_or("");
    let line = e.lines().next().unwrap_or("");
    if line.starts_with("skipped") {
        "skipped (a tracer was running)".into()
    } else {
        format!("failed: {}", line.replace('|', "/"))
    }
}

fn leak_text(s: &Series) -> String {
    let checks: Vec<&(String, bool)> = s.runs.iter().filter_map(|r| r.leak.as_ref()).collect();
    if checks.is_empty() {
        return String::new();
    }
    let ok = checks.iter().filter(|c| c.1).count();
    format!("{ok}/{} runs: {}", checks.len(), checks.last().map(|c| c.0.as_str()).unwrap_or(""))
}

fn lost_text(runs: &[Run]) -> String {
    let Some(max) = runs.iter().filter_map(|r| r.lost).max() else {
        return String::new();
    };
    // counter name -> largest value over the runs
    let mut counters: Vec<(String, u64)> = Vec::new();
    for r in runs {
        for (n, v) in &r.lost_detail {
            match counters.iter_mut().find(|(k, _)| k == n) {
                Some((_, m)) => *m = (*m).max(*v),
                None => counters.push((n.clone(), *v)),
            }
        }
    }
    let (scans, events): (Vec<_>, Vec<_>) = counters.iter().partition(|(n, _)| n.starts_with("holders_"));
    let list = |v: &[&(String, u64)]| {
        v.iter().map(|(n, c)| format!("{n} {}", count(*c as f64))).collect::<Vec<_>>().join(", ")
    };
    let mut text = count(max as f64);
    if !events.is_empty() {
        text.push_str(&format!(" ({})", list(&events)));
    }
    if !scans.is_empty() {
        text.push_str(&format!("; container scans: {}", list(&scans)));
    }
    text
}

fn tornado_table(r: &Results) -> Option<String> {
    let (base, series) = r.tornado.as_ref()?;
    let mut t = String::new();
    t.push_str("| configuration | requests/s (median) | throughput loss (median) | per round | events/s | lost events | attach | peak RSS |\n");
    t.push_str("|---|---|---|---|---|---|---|---|\n");
    let _ = writeln!(
        t,
        "| untraced | {} | | {} | | | | |",
        opt(med_of(&base.runs, |r| r.rps), |v| format!("{v:.0}")),
        base.runs.iter().filter_map(|r| r.rps).map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
    );
    for s in series {
        let loss = slowdown(s).map(|x| (1.0 - 1.0 / x) * 100.0);
        let _ = writeln!(
            t,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
            s.cfg.label,
            opt(med_of(&s.runs, |r| r.rps), |v| format!("{v:.0}")),
            match loss {
                Some(l) => format!("**{l:.1}%**"),
                None if !s.errors.is_empty() => first_error(s),
                None => "–".into(),
            },
            s.ratios.iter().map(|x| format!("{:.1}%", (1.0 - 1.0 / x) * 100.0)).collect::<Vec<_>>().join(", "),
            opt(med_of(&s.runs, |r| r.events_per_s), count),
            lost_text(&s.runs),
            opt(med_of(&s.runs, |r| r.attach_s), secs),
            opt(max_of(&s.runs, |r| r.rss_kb.map(|k| k as f64)), mib),
        );
    }
    Some(t)
}

/// The host-mode comparison: one row per configuration, all beside the same idle processes.
fn host_table(r: &Results) -> Option<String> {
    let (base, series) = r.host.as_ref()?;
    let mut t = String::new();
    t.push_str(
        "| configuration | slowdown (median) | per round | events/s | attach | peak RSS | BPF maps | planted leak |\n",
    );
    t.push_str("|---|---|---|---|---|---|---|---|\n");
    let _ = writeln!(
        t,
        "| untraced | 1.00x ({} work loop) | {} | | | | | |",
        opt(med_of(&base.runs, |r| Some(r.value)), secs),
        base.runs.iter().map(|r| format!("{:.2} s", r.value)).collect::<Vec<_>>().join(", ")
    );
    for s in series {
        let runs = &s.runs;
        let _ = writeln!(
            t,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
            s.cfg.label,
            match slowdown(s) {
                Some(x) => format!("**{x:.2}x**"),
                None if !s.errors.is_empty() => first_error(s),
                None => "–".into(),
            },
            s.ratios.iter().map(|x| format!("{x:.2}x")).collect::<Vec<_>>().join(", "),
            opt(med_of(runs, |r| r.events_per_s), count),
            opt(med_of(runs, |r| r.attach_s), secs),
            opt(max_of(runs, |r| r.rss_kb.map(|k| k as f64)), mib),
            opt(max_of(runs, |r| r.maps.map(|(b, _)| b as f64)), |b| mib(b / 1024.0)),
            leak_text(s),
        );
    }
    Some(t)
}

/// How much more the busy process may pay when the idle ones are traced too: run-to-run noise
/// of single rounds on this 2-core machine is a few percent.
const HOST_TOLERANCE: f64 = 1.10;

/// (target, measured, pass) with pass None when it could not be measured.
fn targets(r: &Results) -> Vec<(String, String, Option<bool>)> {
    let series = &r.workload.1;
    let full = find(series, "full").and_then(slowdown);
    let sampled = find(series, "sampled").and_then(slowdown);
    let memray = find(series, "memray").and_then(slowdown);
    let bcc = find(series, "bcc").and_then(slowdown);
    let holders = find(series, "holders").and_then(slowdown);
    let x = times;
    let mut out = Vec::new();
    out.push(("full fidelity ≤ 3.0x".into(), x(full), full.map(|f| f <= 3.0)));
    out.push((
        "full fidelity ≤ 0.4 × bcc memleak's slowdown".into(),
        match (full, bcc) {
            (Some(f), Some(b)) => format!("{f:.2}x vs 0.4 × {b:.2}x = {:.2}x", 0.4 * b),
            _ => format!("{} vs bcc {}", x(full), x(bcc)),
        },
        full.zip(bcc).map(|(f, b)| f <= 0.4 * b),
    ));
    out.push(("sampled ≤ 2.0x".into(), x(sampled), sampled.map(|s| s <= 2.0)));
    out.push((
        "sampled below memray's slowdown".into(),
        format!("{} vs memray {}", x(sampled), x(memray)),
        sampled.zip(memray).map(|(s, m)| s < m),
    ));
    for key in ["sampled", "full"] {
        let s = find(series, key);
        // A `leak` verdict needs >= 8 s of steady growth (tracer/src/leaks.rs): shorter runs
        // (--quick) cannot pass or fail this target.
        let checks: Vec<bool> = s
            .map(|s| {
                s.runs
                    .iter()
                    .filter(|r| r.value >= MIN_LEAK_WINDOW_S)
                    .filter_map(|r| r.leak.as_ref().map(|l| l.1))
                    .collect()
            })
            .unwrap_or_default();
        let mut text = s.map(leak_text).filter(|t| !t.is_empty()).unwrap_or_else(|| "–".into());
        if checks.is_empty() && s.is_some_and(|s| !s.runs.is_empty()) {
            text.push_str(&format!(" (runs shorter than the {MIN_LEAK_WINDOW_S:.0} s a leak verdict needs)"));
        }
        out.push((
            format!("{key}: planted leak reported as `leak` at its file:line"),
            text,
            (!checks.is_empty()).then(|| checks.iter().all(|&c| c)),
        ));
    }
    let attach: Vec<f64> = ["full", "sampled"]
        .iter()
        .filter_map(|k| find(series, k))
        .filter_map(|s| med_of(&s.runs, |r| r.attach_s))
        .collect();
    let worst_attach = attach.iter().copied().reduce(f64::max);
    out.push((
        "attach < 1 s (median, worst probing configuration)".into(),
        opt(worst_attach, secs),
        worst_attach.map(|a| a < 1.0),
    ));
    let mut rss: Vec<f64> = series
        .iter()
        .filter(|s| is_tracer(s))
        .flat_map(|s| s.runs.iter().filter_map(|r| r.rss_kb.map(|k| k as f64)))
        .collect();
    if let Some((_, ts)) = &r.tornado {
        rss.extend(ts.iter().flat_map(|s| s.runs.iter().filter_map(|r| r.rss_kb.map(|k| k as f64))));
    }
    let peak = rss.into_iter().reduce(f64::max);
    out.push(("tracer peak RSS < 100 MB (every run)".into(), opt(peak, mib), peak.map(|kb| kb * 1024.0 < 100e6)));
    let tornado =
        r.tornado.as_ref().and_then(|(_, ts)| find(ts, "full")).and_then(slowdown).map(|x| (1.0 - 1.0 / x) * 100.0);
    out.push((
        "Tornado throughput loss ≤ 10% (full fidelity)".into(),
        opt(tornado, |l| format!("{l:.1}%")),
        tornado.map(|l| l <= 10.0),
    ));
    out.push((
        "--holders-only within 2% of untraced".into(),
        opt(holders, |h| format!("{:+.1}%", (h - 1.0) * 100.0)),
        holders.map(|h| h <= 1.02),
    ));
    if let Some((_, levers)) = &r.levers {
        out.extend(super::levers::targets(levers));
    }
    if let Some((_, hs)) = &r.host {
        let alone = find(hs, super::host::ALONE).and_then(slowdown);
        let host = find(hs, super::host::HOST).and_then(slowdown);
        out.push((
            format!("host mode: busy + {} idle traced ≤ {HOST_TOLERANCE:.2} × busy traced alone", super::host::IDLE),
            match (host, alone) {
                (Some(h), Some(a)) => format!("{h:.2}x vs {a:.2}x alone (× {:.3})", h / a),
                _ => format!("{} vs alone {}", x(host), x(alone)),
            },
            host.zip(alone).map(|(h, a)| h <= a * HOST_TOLERANCE),
        ));
    }
    out
}

fn targets_table(r: &Results) -> String {
    let mut t = String::from("| target | measured | |\n|---|---|---|\n");
    for (name, value, pass) in targets(r) {
        let verdict = match pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a",
        };
        let _ = writeln!(t, "| {name} | {value} | {verdict} |");
    }
    t
}

fn machine_line(r: &Results) -> String {
    let m = &r.machine;
    format!(
        "{} CPUs ({}), kernel {}, {}, CPython {} (pyenv), tracer {}, memray {}, bcc {}; load average {} at the start, {} at the end",
        m.nproc, m.cpu, m.kernel, m.glibc, m.python, m.tracer_commit, m.memray, m.bcc, m.loadavg, r.end_loadavg
    )
}

pub fn terminal(r: &Results) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{} — {}", r.command, r.machine.date);
    let _ = writeln!(t, "{}\n", machine_line(r));
    let _ = writeln!(
        t,
        "bench/workload.py --iterations {}, {} round(s), slowdown = work-loop time / untraced neighbours:\n",
        r.iterations, r.rounds
    );
    t.push_str(&workload_table(r));
    if let Some(tt) = tornado_table(r) {
        let _ = writeln!(t, "\nTornado ({} s of load, {} threads, loopback):\n", r.tornado_seconds, r.tornado_threads);
        t.push_str(&tt);
    }
    if let Some(levers) = &r.levers {
        t.push_str("\nLevers:\n\n");
        t.push_str(&super::levers::table(levers, r.levers_iterations));
    }
    if let Some(ht) = host_table(r) {
        let _ = writeln!(t, "\nHost mode (the workload beside {} idle CPython processes):\n", super::host::IDLE);
        t.push_str(&ht);
    }
    t.push('\n');
    t.push_str(&targets_table(r));
    let errors = errors_text(r);
    if !errors.is_empty() {
        t.push_str("\nerrors:\n");
        t.push_str(&errors);
    }
    t
}

fn errors_text(r: &Results) -> String {
    let mut t = String::new();
    let mut all: Vec<&Series> = vec![&r.workload.0];
    all.extend(r.workload.1.iter());
    for (b, s) in r.tornado.iter().chain(r.levers.iter()) {
        all.push(b);
        all.extend(s.iter());
    }
    if let Some((b, s)) = &r.host {
        all.push(b);
        all.extend(s.iter());
    }
    for s in all {
        for e in &s.errors {
            let _ = writeln!(t, "- `{}`: {}", s.cfg.label, e.replace('\n', "\n  "));
        }
    }
    t
}

fn raw_runs(r: &Results) -> String {
    let mut t = String::new();
    let mut all: Vec<(&str, &Series)> = vec![("workload", &r.workload.0)];
    all.extend(r.workload.1.iter().map(|s| ("workload", s)));
    if let Some((b, s)) = &r.tornado {
        all.push(("tornado", b));
        all.extend(s.iter().map(|s| ("tornado", s)));
    }
    if let Some((b, s)) = &r.host {
        all.push(("host", b));
        all.extend(s.iter().map(|s| ("host", s)));
    }
    t.push_str(
        "| benchmark | configuration | runs | allocations by allocator (report) | notes |\n|---|---|---|---|---|\n",
    );
    for (what, s) in all {
        let values = s.runs.iter().map(|r| value_text(what, r.value).trim().to_string()).collect::<Vec<_>>().join(", ");
        let allocators = s
            .runs
            .last()
            .map(|r| {
                r.allocators.iter().map(|(a, n)| format!("{a} {}", count(*n as f64))).collect::<Vec<_>>().join(", ")
            })
            .unwrap_or_default();
        let notes = s.runs.iter().filter_map(|r| r.note.clone()).collect::<Vec<_>>().join("; ");
        let _ = writeln!(t, "| {what} | `{}` | {values} | {allocators} | {notes} |", s.cfg.label);
    }
    t
}

pub fn markdown(r: &Results) -> String {
    let mut t = String::new();
    t.push_str("# Benchmarks\n\n");
    t.push_str("What `tracer` costs the process it traces, measured side by side with the tools people use\ntoday. Written by `cargo xtask bench` (this file is generated: re-run it rather than edit).\n\n");
    if let Some(note) = &r.note {
        let _ = writeln!(t, "> **Note:** {note}\n");
    }
    let _ = writeln!(t, "- command: `{}` ({:.1} minutes)", r.command, r.minutes);
    let _ = writeln!(t, "- date: {}", r.machine.date);
    let _ = writeln!(t, "- machine: {}", machine_line(r));
    let _ = writeln!(
        t,
        "- workload: `bench/workload.py --iterations {}` ({} round(s)); sampled mode: `--sample-bytes {}`",
        r.iterations, r.rounds, r.sample_bytes
    );
    t.push_str("\n## Allocation-heavy workload\n\n");
    t.push_str(&workload_table(r));
    if let Some(tt) = tornado_table(r) {
        let _ = writeln!(
            t,
            "\n## Tornado saturation\n\n`bench/tornado_bench.py`: {} s of load per run from {} keep-alive `http.client` threads on\n127.0.0.1 after a 1 s warm-up; the server (one process, one event loop) is the traced process.\n",
            r.tornado_seconds, r.tornado_threads
        );
        t.push_str(&tt);
    }
    if let Some(levers) = &r.levers {
        t.push_str("\n## Levers: each design choice before and after\n\n");
        t.push_str(&super::levers::table(levers, r.levers_iterations));
    }
    if let Some(ht) = host_table(r) {
        let _ = writeln!(
            t,
            "\n## Host mode\n\nThe same workload (carrying a tag on its command line) beside {} idle CPython processes\n(`bench/idle.py`: ten wake-ups a second, one 1 KiB malloc/free each) carrying the tag too; the idle\nprocesses run during every run of this section. `alone` traces only the workload; `--all --match TAG`\ntraces all {} processes with one tracer. Interleaved like the sections above.\n",
            super::host::IDLE,
            super::host::IDLE + 1
        );
        t.push_str(&ht);
    }
    t.push_str("\n## Targets\n\n");
    t.push_str(&targets_table(r));
    t.push_str("\n## Runs\n\n");
    t.push_str(&raw_runs(r));
    let errors = errors_text(r);
    if !errors.is_empty() {
        t.push_str("\nErrors and skipped runs:\n\n");
        t.push_str(&errors);
    }
    t.push_str(METHOD);
    t
}

const METHOD: &str = r#"
## How it is measured

- **Interleaved rounds.** Each round runs untraced, C1, untraced, C2, …, untraced (the order of
  the configurations rotates from round to round); a configuration's slowdown in a round is its
  time over the mean of the two untraced runs beside it, and the table shows the median over the
  rounds. Machine drift (other jobs, thermal, frequency) then mostly cancels out.
- **What is timed.** `bench/workload.py` prints `ready PID`, waits for a trigger file, runs its
  work loop and prints its own elapsed time as JSON: interpreter start-up, attaching and the
  tracer's start are outside the measurement. For memray (`memray run`, which runs the script in
  its own process) the same work-loop time is used. The workload makes about 9 libc allocator
  calls per iteration (malloc, calloc via `bytes(n)`, realloc via growing bytearrays and lists,
  free) and ~40 small pymalloc objects, and appends one 4 KiB buffer to a module-level list every
  250 iterations (the planted leak, the line marked `# LEAK-SITE`).
- **events/s**: the tracer's JSON report totals, `allocs + frees`, over the work loop's traced
  time. **lost events**: the sum of `totals.lost` (the `holders_*` counters, which count cut
  container scans and not allocation events, are named but not summed).
- **attach**: from starting `tracer record -p PID` to its `tracer: tracing pid` line (for bcc:
  until its probe fds stop changing, which includes compiling its C program).
  **stop**: from SIGINT until the tool holds no perf-event/BPF-link fd (probes gone, polled every
  millisecond) and until it exits (the report is built before the probes are detached and written
  after, so "exit" includes building and writing the JSON report).
- **peak RSS**: the tracer's `VmHWM` (/proc/PID/status) sampled every 50 ms. **BPF maps**: the sum
  of `memlock:` over the tracer's map fds in /proc/PID/fdinfo.
- **planted leak**: the report's suspect whose innermost Python frame is the `# LEAK-SITE` line,
  with its verdict and rank.
- **Levers.** The same workload (fewer iterations) under variants of the tracer that differ by one
  design choice, selected with `TRACER_PROBE_VARIANT` (a comma-separated list: `bare` = empty
  programs at the same attach points, `entry-offsets` = every probe at its function's entry,
  `no-python-stack` = no frame walk, `no-returns` = no return probes; benchmarks only), or by one
  flag. The empty-program rows are the floor: what the probe traps cost before any of our work.
- **Isolation.** The measured processes run against a private, byte-identical copy of libc
  (`LD_LIBRARY_PATH`, its own inode), so probes elsewhere on the machine cannot slow them and
  bcc's reference-counted uprobes cannot conflict with another tracer on the system libc. bcc is
  still only started when no `tracer` process exists on the machine, and never two tools at once.

### How bcc's memleak is run

`apt-get install bpfcc-tools linux-headers-amd64` (done by the benchmark's setup). bcc needs kernel
headers and this kernel has none; Debian's 6.1 headers work for uprobe programs once the split
`-common` and `-amd64` trees are merged into one symlink tree:

```sh
KH=target/bench/kheaders; mkdir -p $KH
cp -as /usr/src/linux-headers-6.1.*-common/. $KH/
cp -asf --remove-destination /usr/src/linux-headers-6.1.*-amd64/. $KH/
BCC_KERNEL_SOURCE=$KH memleak-bpfcc -p PID       # default: every allocation, report every 5 s
```
"#;
