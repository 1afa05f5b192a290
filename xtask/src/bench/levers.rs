//! The design levers, each measured before and after in the same interleaved run: the same
//! workload under variants of the tracer that differ by one choice (`TRACER_PROBE_VARIANT`,
//! see docs/probes.md) or by one flag, and under empty programs at the same attach points
//! (the bare cost of the probes, which the tracer's own work is judged against).

use std::fmt::Write;

use super::format::{opt, per_round, percent, times as x};
use super::rounds::{Section, Series};
use super::runs::{Config, Tool};
use super::stats::{median, slowdown, slowdown_of as of};

/// Iterations of bench/workload.py per lever run (the full table's run is 4x longer).
pub const ITERATIONS: u64 = 250_000;
pub const QUICK_ITERATIONS: u64 = 60_000;

fn variant(key: &'static str, label: &str, variant: &'static str, args: &[&str]) -> Config {
    Config {
        key,
        label: label.into(),
        tool: Tool::TracerVariant { variant, args: args.iter().map(|a| a.to_string()).collect() },
    }
}

pub fn configs(sample_bytes: u64) -> Vec<Config> {
    let sample = sample_bytes.to_string();
    vec![
        variant("bare", "empty programs at the tracer's attach points", "bare", &[]),
        variant("bare-at-0", "empty programs, every probe at its function's entry", "bare,entry-offsets", &[]),
        variant("bare-no-ret", "empty programs, entry probes only (no return probes)", "bare,no-returns", &[]),
        variant("full", "tracer record -p PID", "", &[]),
        variant("full-classic", "tracer record -p PID, perf-event uprobes and uretprobes", "classic-returns", &[]),
        variant("full-at-0", "tracer record -p PID, every probe at its function's entry", "entry-offsets", &[]),
        variant("no-walk", "tracer record -p PID without the Python stack walk", "no-python-stack", &[]),
        variant(
            "small-maps",
            "tracer record -p PID --max-allocs 65536 --max-stacks 4096",
            "",
            &["--max-allocs", "65536", "--max-stacks", "4096"],
        ),
        variant("sampled", &format!("tracer record -p PID --sample-bytes {sample}"), "", &["--sample-bytes", &sample]),
        // Windows with the duty of 1s/10s, short enough for a lever run of a few seconds (a
        // window opens at once, so a run shorter than a period would see only its first window).
        variant("window", "tracer record -p PID --window 200ms/2s (the duty of 1s/10s)", "", &["--window", "200ms/2s"]),
        variant(
            "window-sampled",
            &format!("tracer record -p PID --window 200ms/2s --sample-bytes {sample}"),
            "",
            &["--window", "200ms/2s", "--sample-bytes", &sample],
        ),
        variant(
            "sampled-classic",
            &format!("tracer record -p PID --sample-bytes {sample}, perf-event uprobes and uretprobes"),
            "classic-returns",
            &["--sample-bytes", &sample],
        ),
    ]
}

/// Cost over the untraced run, as a share of another configuration's cost.
fn share(part: Option<f64>, whole: Option<f64>) -> String {
    match (part, whole) {
        (Some(p), Some(w)) if w > 1.0 => format!("{:.0}%", (p - 1.0) / (w - 1.0) * 100.0),
        _ => "–".into(),
    }
}

/// The BPF programs' own work on top of the bare probes, as a share of the bare probes' cost.
pub fn own_work_share(series: &[Series]) -> Option<f64> {
    let (full, bare) = (of(series, "full")?, of(series, "bare")?);
    (bare > 1.0).then(|| (full - bare) / (bare - 1.0))
}

/// The levers section: each lever before/after, the floor's share, then every variant's row.
pub fn table(levers: &Section, iterations: u64) -> String {
    let (base, series) = levers;
    let s = series.as_slice();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "`bench/workload.py --iterations {iterations}`, {} untraced (median); every row is a slowdown against the untraced runs beside it.\n",
        opt(median(base.runs.iter().map(|r| r.value).collect()), |v| format!("{v:.2} s"))
    );
    t.push_str("| lever | before | after | what it changes |\n|---|---|---|---|\n");
    for (lever, before, after, note) in rows(s) {
        let _ = writeln!(t, "| {lever} | {before} | {after} | {note} |");
    }
    let _ = writeln!(
        t,
        "\nThe probes alone (empty programs) cost {} of the tracer's full-fidelity cost; the programs' own work adds {} on top of the bare probes' cost.\n",
        share(of(s, "bare"), of(s, "full")),
        percent(own_work_share(s))
    );
    t.push_str(&variants_table(s));
    t
}

/// (lever, before, after, what it changes), from the variants' slowdowns.
fn rows(s: &[Series]) -> [(&'static str, String, String, String); 7] {
    [
        (
            "probe placement: decode each entry-only probe's prologue and sit on an instruction the kernel emulates (`free+3` after `test %rdi,%rdi`)",
            format!("empty programs at +0: {}", x(of(s, "bare-at-0"))),
            format!("as placed: {}", x(of(s, "bare"))),
            "one trap per free instead of two (single-stepping)".to_string(),
        ),
        (
            "the same, with the tracer's programs",
            format!("at +0: {}", x(of(s, "full-at-0"))),
            format!("as placed: {}", x(of(s, "full"))),
            String::new(),
        ),
        (
            "return probes only where a return value is needed: session uprobes (uprobe_multi links, loaded with bpf(2) since aya 0.14 cannot), sampled mode",
            format!("uretprobe on every call: {}", x(of(s, "sampled-classic"))),
            format!("session, return only for sampled calls: {}", x(of(s, "sampled"))),
            format!(
                "an unsampled call takes one trap instead of two; floor with no return probe at all (empty programs): {}",
                x(of(s, "bare-no-ret"))
            ),
        ),
        (
            "the same links at full fidelity (every return is needed; one consumer per function, a lock-free per-hit filter)",
            format!("perf-event uprobe + uretprobe: {}", x(of(s, "full-classic"))),
            format!("session: {}", x(of(s, "full"))),
            String::new(),
        ),
        (
            "Python stack walked in BPF (thread state cached per thread, one read per frame sized to the version)",
            format!("no walk: {}", x(of(s, "no-walk"))),
            format!("walk: {}", x(of(s, "full"))),
            format!("the walk is {} of the tracer's cost", share_diff(of(s, "full"), of(s, "no-walk"))),
        ),
        (
            "map sizes (outstanding allocations / distinct stacks)",
            format!("65536 / 4096: {}", x(of(s, "small-maps"))),
            format!("1 M / 16 K (defaults): {}", x(of(s, "full"))),
            "preallocated hash maps: size changes memory, not the lookup cost".to_string(),
        ),
        (
            "sampling by bytes (the walk and map work only for sampled calls; every trap stays)",
            format!("every allocation: {}", x(of(s, "full"))),
            format!("sampled: {}", x(of(s, "sampled"))),
            String::new(),
        ),
    ]
}

/// One row per variant: its slowdown, per round, and the events it lost.
fn variants_table(s: &[Series]) -> String {
    let mut t = String::from("| configuration | slowdown (median) | per round | lost events |\n|---|---|---|---|\n");
    for v in s {
        let lost = v.runs.iter().filter_map(|r| r.lost).max().map(|l| l.to_string()).unwrap_or_default();
        let _ = writeln!(
            t,
            "| {} (`TRACER_PROBE_VARIANT={}`) | {} | {} | {lost} |",
            v.cfg.label,
            match &v.cfg.tool {
                Tool::TracerVariant { variant, .. } => variant,
                _ => "",
            },
            x(slowdown(v)),
            per_round(&v.ratios)
        );
    }
    t
}

/// (a - b) as a share of (a - 1): the part of a's cost that b does not have.
fn share_diff(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 1.0 => format!("{:.0}%", (a - b) / (a - 1.0) * 100.0),
        _ => "–".into(),
    }
}
