//! The results as tables: on the terminal and in BENCHMARKS.md.

use std::fmt::Write;

use super::format::{count, loss_percent, mib, opt, per_round, secs, value_text};
use super::host;
use super::levers;
use super::rounds::{Section, Series};
use super::runs::{Config, Run};
use super::stats::{max_of, med_of, slowdown};
use super::targets::{self, leak_text};
use super::tools::Machine;
use super::windows::{self, Windows};

pub struct Results {
    pub command: String,
    pub machine: Machine,
    pub rounds: u32,
    pub iterations: u64,
    pub sample_bytes: u64,
    pub tornado_seconds: f64,
    pub tornado_threads: u32,
    pub workload: Section,
    pub unavailable: Vec<(Config, String)>,
    pub tornado: Option<Section>,
    pub levers: Option<Section>,
    pub levers_iterations: u64,
    /// Host mode: untraced, traced alone, traced with `--all` beside the idle processes.
    pub host: Option<Section>,
    /// The probe-windows leg.
    pub windows: Option<Windows>,
    pub end_loadavg: String,
    pub minutes: f64,
    pub note: Option<String>,
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
        let row_slow = slowdown_cell(s);
        let per_round = per_round(&s.ratios);
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

/// The median slowdown in bold, or why there is none.
fn slowdown_cell(s: &Series) -> String {
    match slowdown(s) {
        Some(x) => format!("**{x:.2}x**"),
        None if !s.errors.is_empty() => first_error(s),
        None => "–".into(),
    }
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
        let loss = slowdown(s).map(loss_percent);
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
            s.ratios.iter().map(|&x| format!("{:.1}%", loss_percent(x))).collect::<Vec<_>>().join(", "),
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
            slowdown_cell(s),
            per_round(&s.ratios),
            opt(med_of(runs, |r| r.events_per_s), count),
            opt(med_of(runs, |r| r.attach_s), secs),
            opt(max_of(runs, |r| r.rss_kb.map(|k| k as f64)), mib),
            opt(max_of(runs, |r| r.maps.map(|(b, _)| b as f64)), |b| mib(b / 1024.0)),
            leak_text(s),
        );
    }
    Some(t)
}

fn targets_table(r: &Results) -> String {
    let mut t = String::from("| target | measured | |\n|---|---|---|\n");
    let all = targets::all(&r.workload.1, r.tornado.as_ref(), r.levers.as_ref(), r.host.as_ref());
    for targets::Target { name, measured, pass } in all {
        let verdict = match pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a",
        };
        let _ = writeln!(t, "| {name} | {measured} | {verdict} |");
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
        t.push_str(&levers::table(levers, r.levers_iterations));
    }
    if let Some(ht) = host_table(r) {
        let _ = writeln!(t, "\nHost mode (the workload beside {} idle CPython processes):\n", host::IDLE);
        t.push_str(&ht);
    }
    if let Some(w) = &r.windows {
        let _ = writeln!(t, "\n{}", windows::markdown(w, &format!("`{}`", r.command)));
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
        t.push_str(&levers::table(levers, r.levers_iterations));
    }
    if let Some(ht) = host_table(r) {
        let _ = writeln!(
            t,
            "\n## Host mode\n\nThe same workload (carrying a tag on its command line) beside {} idle CPython processes\n(`bench/idle.py`: ten wake-ups a second, one 1 KiB malloc/free each) carrying the tag too; the idle\nprocesses run during every run of this section. `alone` traces only the workload; `--all --match TAG`\ntraces all {} processes with one tracer. Interleaved like the sections above.\n",
            host::IDLE,
            host::IDLE + 1
        );
        t.push_str(&ht);
    }
    if let Some(w) = &r.windows {
        let _ = write!(t, "\n{}", windows::markdown(w, &format!("`{}`", r.command)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::runs::Tool;

    fn run(value: f64, i: u64) -> Run {
        Run {
            value,
            rps: Some(1.0 / value),
            attach_s: Some(0.5 + i as f64 * 0.1),
            probes_off_s: Some(0.01),
            exit_s: Some(0.2),
            rss_kb: Some(40_000 + i * 1000),
            maps: Some((50_000_000, 12)),
            events: Some(1_000_000),
            events_per_s: Some(2.0e6 + i as f64),
            lost: Some(i),
            lost_detail: vec![("allocs_map_full".into(), i + 1), ("holders_cut".into(), 3)],
            leak: Some(("workload.py:42 leak, rank 1, 1.0 MiB".into(), i != 1)),
            allocators: vec![("malloc".into(), 1000), ("calloc".into(), 20)],
            traced_s: Some(value),
            windows_opened: None,
            note: (i == 2).then(|| "a note".to_string()),
        }
    }

    fn series(key: &'static str, tool: Tool, ratios: &[f64]) -> Series {
        Series {
            cfg: Config { key, label: format!("label {key}"), tool },
            runs: ratios.iter().enumerate().map(|(i, r)| run(*r * 5.0, i as u64)).collect(),
            ratios: ratios.to_vec(),
            errors: vec![],
        }
    }

    fn section(keys: &[(&'static str, Tool, &[f64])]) -> (Series, Vec<Series>) {
        let base = series("untraced", Tool::None, &[1.0, 1.01, 0.99]);
        (base, keys.iter().map(|(k, t, r)| series(k, t.clone(), r)).collect())
    }

    /// Every section measured; bcc skipped, one run that missed the planted leak.
    fn fixture() -> Results {
        let tr = || Tool::Tracer(vec![]);
        let var = |v: &'static str| Tool::TracerVariant { variant: v, args: vec![] };
        let mut workload = section(&[
            ("full", tr(), &[2.5, 2.7, 2.6]),
            ("sampled", tr(), &[1.5, 1.6, 1.7]),
            ("memray", Tool::Memray, &[4.0, 4.2, 4.1]),
            ("bcc", Tool::Bcc, &[]),
            ("holders", tr(), &[1.01, 1.0, 1.02]),
        ]);
        workload.1[3].errors.push("skipped: a `tracer` process is running\nmore".into());
        let levers = section(&[
            ("bare", var("bare"), &[2.0, 2.1, 2.2]),
            ("bare-at-0", var("bare,entry-offsets"), &[3.0, 3.1]),
            ("bare-no-ret", var("bare,no-returns"), &[1.4]),
            ("full", var(""), &[2.6]),
            ("full-classic", var("classic-returns"), &[3.3]),
            ("full-at-0", var("entry-offsets"), &[3.9]),
            ("no-walk", var("no-python-stack"), &[2.2]),
            ("small-maps", var(""), &[2.61]),
            ("sampled", var(""), &[1.6]),
            ("sampled-classic", var("classic-returns"), &[2.4]),
        ]);
        let tornado = section(&[("full", tr(), &[1.05, 1.08, 1.07]), ("sampled", tr(), &[1.02, 1.03, 1.01])]);
        let mut host = section(&[("alone", tr(), &[2.6, 2.7]), ("host", Tool::Host { processes: 21 }, &[2.8, 2.75])]);
        host.0.errors.push("untraced | failed".into());
        Results {
            command: "cargo xtask bench".into(),
            machine: Machine {
                nproc: "2".into(),
                cpu: "cpu".into(),
                kernel: "6.1".into(),
                python: "3.11.7".into(),
                glibc: "glibc 2.36".into(),
                tracer_commit: "abc".into(),
                date: "2026-12-01".into(),
                loadavg: "0.1".into(),
                memray: "1.0".into(),
                bcc: "0.26".into(),
            },
            rounds: 3,
            iterations: 1000,
            sample_bytes: 524288,
            tornado_seconds: 10.0,
            tornado_threads: 4,
            workload,
            unavailable: vec![(Config { key: "x", label: "label x".into(), tool: Tool::None }, "n/a (why)".into())],
            tornado: Some(tornado),
            levers: Some(levers),
            levers_iterations: 250,
            host: Some(host),
            windows: None,
            end_loadavg: "0.2".into(),
            minutes: 12.5,
            note: Some("a note".into()),
        }
    }

    #[test]
    fn every_section_and_target_is_rendered() {
        let r = fixture();
        let md = markdown(&r);
        for heading in [
            "## Allocation-heavy workload",
            "## Tornado saturation",
            "## Levers",
            "## Host mode",
            "## Targets",
            "## Runs",
            "## How it is measured",
        ] {
            assert!(md.contains(heading), "{heading} missing");
        }
        let targets = md.split("## Targets").nth(1).unwrap().split("## Runs").next().unwrap();
        let verdicts: Vec<&str> =
            targets.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| target")).collect();
        assert_eq!(verdicts.len(), 14, "{targets}");
        assert!(targets.contains("| full fidelity ≤ 3.0x | 2.60x | PASS |"), "{targets}");
        assert!(targets.contains("| 2.60x vs bcc – | n/a |"), "bcc was skipped: {targets}");
        // one run of three did not find the planted leak
        assert!(targets.contains("| 2/3 runs: workload.py:42 leak, rank 1, 1.0 MiB | FAIL |"), "{targets}");
        assert!(targets.contains("| +45% (full 2.60x vs empty programs 2.10x) | FAIL |"), "{targets}");
        assert!(targets.contains("| 2.77x vs 2.65x alone (× 1.047) | PASS |"), "{targets}");
        assert!(md.contains("| `label bcc` | skipped (a tracer was running) |"), "{md}");
        assert!(md.contains("| `label x` | n/a (why) |"), "{md}");
        assert!(!md.contains(windows::HEADING), "no windows leg in this run");
        let with = Results { windows: Some(windows::tests::fixture("0.2")), ..fixture() };
        let md = markdown(&with);
        let at = md.find(windows::HEADING).expect("the windows section");
        assert!(at > md.find("## Host mode").unwrap() && at < md.find("## Targets").unwrap(), "{md}");
        assert!(terminal(&with).contains(windows::HEADING));
        let term = terminal(&r);
        assert!(term.contains("errors:\n- `label bcc`: skipped"), "{term}");
        assert!(term.contains("| full fidelity ≤ 3.0x | 2.60x | PASS |"), "{term}");
    }
}
