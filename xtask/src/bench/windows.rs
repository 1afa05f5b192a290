//! The probe-windows leg (`cargo xtask bench --only windows`, and part of the full benchmark):
//! what `--window` costs and whether it still gives the right answers, each cost a ratio against
//! untraced runs of the same invocation, interleaved in rounds like the other sections
//! (issue 19, "Right answers at low cost"):
//!
//! - a steady process (bench/workload.py keeping nothing) and an idle one (the same work in
//!   short bursts ten times a second, `--pace`) under `--window auto`: within 1% of untraced,
//!   shown beside the machine's load average (run first, after the load average has had a
//!   moment to settle; above 1.0 the figure is shown but not claimed);
//! - bench/workload.py under `--window 1s/10s`: its slowdown and its planted leak in the
//!   report; then how soon after attaching a report calls it `leak` (`planted::detect`);
//! - the Tornado benchmark at saturation under `--window 1s/10s`: its throughput loss; and the
//!   Tornado fixture's planted leaks under the same windows (`planted::tornado_fixture`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::format::{loss_percent, opt, per_round, secs};
use super::planted::{self, Detection, FixtureCheck, Planted};
use super::rounds::{interleave, Section, Series};
use super::runs::{self, Config, Ctx, Tool};
use super::stats::{med_of, slowdown};
use super::targets::leak_text;
use super::tools;

/// `--only` key of this leg.
pub const KEY: &str = "windows";
/// Its section of BENCHMARKS.md (the heading starts with this).
pub const HEADING: &str = "## Probe windows";
/// The fixed windows the targets are set for.
const FIXED: &str = "1s/10s";
/// A one-minute load average above this: other work on the machine, a 1% difference cannot be
/// resolved.
const QUIET_LOAD: f64 = 1.0;
/// How long to wait for the load average to fall below QUIET_LOAD before the auto runs.
const SETTLE: Duration = Duration::from_secs(90);
/// `--leak-every` of the steady and idle processes: they keep the first iteration's block only.
const NO_LEAK: &str = "1000000000000";
/// Iterations per wake-up of the idle process (ten a second): a few milliseconds of work.
const IDLE_PACE: u64 = 500;
/// The longest a planted leak may take to be called `leak` after attaching (issue 19).
const DETECT_WITHIN_S: f64 = 120.0;

/// The leg's lengths: the full benchmark's, or `--quick`'s.
pub struct Sizes {
    /// bench/workload.py under the fixed windows: long enough for several periods.
    pub iterations: u64,
    /// Lengths of the fresh recordings that look for the planted leak, in seconds.
    pub ladder: &'static [u64],
    pub tornado_seconds: f64,
    pub fixture_seconds: u64,
    pub steady_iterations: u64,
    pub idle_seconds: u64,
}

impl Sizes {
    pub fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                iterations: 3_000_000,
                ladder: &[20, 40, 60],
                tornado_seconds: 20.0,
                fixture_seconds: 60,
                steady_iterations: 1_500_000,
                idle_seconds: 15,
            }
        } else {
            Sizes {
                iterations: 10_000_000,
                ladder: &[20, 40, 60, 90, 120],
                tornado_seconds: 60.0,
                fixture_seconds: 120,
                steady_iterations: 5_000_000,
                idle_seconds: 40,
            }
        }
    }
}

/// Everything the leg measured.
pub struct Windows {
    pub sizes: Sizes,
    pub rounds: u32,
    pub tornado_threads: u32,
    pub steady: Section,
    pub idle: Section,
    /// Load average just before the auto runs (after settling) and just after them.
    pub load_before: String,
    pub load_after: String,
    pub workload: Section,
    pub detection: Result<Detection, String>,
    pub tornado: Section,
    pub fixture: Result<FixtureCheck, String>,
}

fn tracer(key: &'static str, window: &str) -> Config {
    Config {
        key,
        label: format!("tracer record -p PID --window {window}"),
        tool: Tool::Tracer(vec!["--window".into(), window.into()]),
    }
}

/// Runs the leg (every part; a part that fails shows its error in its row).
pub fn run(ctx: &Ctx, base: &Config, sizes: Sizes, rounds: u32) -> Windows {
    let (fixed, auto) = (tracer("fixed", FIXED), tracer("auto", "auto"));
    let load_before = settle();
    println!("bench: windows: {rounds} round(s) of a steady and an idle process under --window auto; load average {load_before}");
    let steady =
        interleave(&steady_ctx(ctx, &sizes), base, std::slice::from_ref(&auto), rounds, runs::workload, "steady");
    let idle = interleave(&idle_ctx(ctx, &sizes), base, &[auto], rounds, runs::workload, "idle");
    let load_after = tools::loadavg();

    println!(
        "bench: windows: {rounds} round(s) of bench/workload.py --iterations {} under --window {FIXED}",
        sizes.iterations
    );
    let mut wctx = ctx.clone();
    wctx.iterations = sizes.iterations;
    let workload = interleave(&wctx, base, std::slice::from_ref(&fixed), rounds, runs::workload, "windows");
    let args = ["--window".to_string(), FIXED.to_string()];
    let detection = planted::detect(ctx, &args, sizes.ladder).map_err(|e| format!("{e:#}"));

    println!(
        "bench: windows: {rounds} round(s) of the Tornado benchmark, {} s of load, under --window {FIXED}",
        sizes.tornado_seconds
    );
    let mut tctx = ctx.clone();
    tctx.tornado_seconds = sizes.tornado_seconds;
    let tornado = interleave(&tctx, base, &[fixed], rounds, runs::tornado, "tornado");
    println!("bench: windows: the Tornado fixture under --window {FIXED} for {} s", sizes.fixture_seconds);
    let fixture = planted::tornado_fixture(ctx, &args, sizes.fixture_seconds).map_err(|e| format!("{e:#}"));
    if let Err(e) = &fixture {
        println!("bench: windows: the Tornado fixture failed: {e}");
    }
    Windows {
        sizes,
        rounds,
        tornado_threads: ctx.tornado_threads,
        steady,
        idle,
        load_before,
        load_after,
        workload,
        detection,
        tornado,
        fixture,
    }
}

fn steady_ctx(ctx: &Ctx, sizes: &Sizes) -> Ctx {
    let mut c = ctx.clone();
    c.iterations = sizes.steady_iterations;
    c.workload_args = vec!["--leak-every".into(), NO_LEAK.into()];
    c
}

fn idle_ctx(ctx: &Ctx, sizes: &Sizes) -> Ctx {
    let mut c = steady_ctx(ctx, sizes);
    c.iterations = sizes.idle_seconds * 10 * IDLE_PACE;
    c.workload_args.extend(["--pace".into(), IDLE_PACE.to_string()]);
    c
}

/// Waits (at most SETTLE) for the one-minute load average to fall to QUIET_LOAD, which the
/// benchmark's own earlier runs raise; the load average then.
fn settle() -> String {
    let start = Instant::now();
    let mut told = false;
    while one_minute(&tools::loadavg()).is_some_and(|l| l > QUIET_LOAD) && start.elapsed() < SETTLE {
        if !told {
            println!(
                "bench: windows: waiting up to {} s for the load average to fall to {QUIET_LOAD:.1}",
                SETTLE.as_secs()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    tools::loadavg()
}

fn one_minute(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

/// The highest one-minute load average around the auto runs, when it says the machine was busy.
fn loaded(w: &Windows) -> Option<f64> {
    [&w.load_before, &w.load_after].iter().filter_map(|l| one_minute(l)).reduce(f64::max).filter(|&l| l > QUIET_LOAD)
}

/// One row of the costs table: (what, configuration, untraced, traced, ratio, per round, target, verdict).
type Row = [String; 8];

fn verdict(pass: Option<bool>) -> String {
    match pass {
        Some(true) => "PASS".into(),
        Some(false) => "FAIL".into(),
        None => "n/a".into(),
    }
}

/// A cost row from one section: its one traced series against its untraced runs.
fn cost_row(
    what: String,
    section: &Section,
    value: fn(f64) -> String,
    judge: impl Fn(f64) -> (String, Option<bool>),
    target: &str,
) -> Row {
    let (base, series) = section;
    let Some(s) = series.first() else {
        return [
            what,
            "–".into(),
            "–".into(),
            "–".into(),
            "not run".into(),
            String::new(),
            target.into(),
            "n/a".into(),
        ];
    };
    let ratio = slowdown(s);
    let (shown, pass) = match ratio {
        Some(r) => judge(r),
        None => (first_error(s, base), None),
    };
    [
        what,
        format!("`{}`", s.cfg.label),
        untraced_cell(base, value),
        opt(med_of(&s.runs, |r| Some(r.value)), value),
        shown,
        per_round(&s.ratios),
        target.into(),
        verdict(pass),
    ]
}

/// The untraced runs' median, and how far apart they were (max - min over the median): the
/// drift the interleaving has to cancel.
fn untraced_cell(base: &Series, value: fn(f64) -> String) -> String {
    let values: Vec<f64> = base.runs.iter().map(|r| r.value).collect();
    let Some(median) = med_of(&base.runs, |r| Some(r.value)) else {
        return "–".into();
    };
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if values.len() < 2 {
        return value(median);
    }
    format!("{} (runs {:.0}% apart)", value(median), (hi - lo) / median * 100.0)
}

fn first_error(s: &Series, base: &Series) -> String {
    let e = s.errors.first().or(base.errors.first()).map(|e| e.lines().next().unwrap_or("").replace('|', "/"));
    e.map(|e| format!("failed: {e}")).unwrap_or_else(|| "–".into())
}

fn rps(seconds_per_request: f64) -> String {
    format!("{:.0} req/s", 1.0 / seconds_per_request)
}

fn cost_rows(w: &Windows) -> Vec<Row> {
    let busy = loaded(w);
    let within_1 = |r: f64| {
        let text = format!("{:+.2}%", (r - 1.0) * 100.0);
        match busy {
            Some(l) => (format!("{text} (not claimed: load average {l:.2} > {QUIET_LOAD:.1})"), None),
            None => (format!("**{text}**"), Some(r <= 1.01)),
        }
    };
    vec![
        cost_row(
            format!("bench/workload.py --iterations {}: slowdown", w.sizes.iterations),
            &w.workload,
            secs,
            |r| (format!("**{r:.2}x**"), Some(r <= 1.5)),
            "≤ 1.5x",
        ),
        cost_row(
            format!("Tornado benchmark at saturation ({} s of load, {} threads): throughput loss", w.sizes.tornado_seconds, w.tornado_threads),
            &w.tornado,
            rps,
            |r| (format!("**{:.1}%**", loss_percent(r)), Some(loss_percent(r) <= 8.0)),
            "≤ 8%",
        ),
        cost_row(
            format!("steady process (bench/workload.py --iterations {} keeping nothing): work-loop time", w.sizes.steady_iterations),
            &w.steady,
            secs,
            within_1,
            "within 1%",
        ),
        cost_row(
            format!(
                "idle process (bench/workload.py --pace {IDLE_PACE}: {IDLE_PACE} iterations ten times a second for {} s): time spent working",
                w.sizes.idle_seconds
            ),
            &w.idle,
            secs,
            within_1,
            "within 1%",
        ),
    ]
}

/// (question, answer, target, verdict) rows: the planted leaks.
fn answer_rows(w: &Windows) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    if let Some(s) = w.workload.1.first() {
        // A report taken sooner than the target allows cannot fail it.
        let checks: Vec<bool> = s
            .runs
            .iter()
            .filter_map(|r| r.leak.as_ref().map(|l| (l.1, r.traced_s.unwrap_or(0.0))))
            .filter(|&(leak, at)| leak || at >= DETECT_WITHIN_S)
            .map(|(leak, _)| leak)
            .collect();
        let at = opt(med_of(&s.runs, |r| r.traced_s), secs);
        rows.push([
            "bench/workload.py's planted leak in the reports of the runs above".into(),
            format!("{} (report taken {at} after attaching)", leak_text(s)),
            format!("`leak` at its file:line (a report taken before {DETECT_WITHIN_S:.0} s cannot fail)"),
            verdict((!checks.is_empty()).then(|| checks.iter().all(|&c| c))),
        ]);
    }
    rows.push(detection_row(&w.detection));
    match &w.fixture {
        Ok(f) => {
            let load = format!(
                " ({} requests, {} errors, {} windows)",
                f.requests,
                f.errors,
                opt(f.windows_opened.map(|n| n as f64), |n| format!("{n:.0}"))
            );
            for (i, p) in f.leaks.iter().enumerate() {
                let extra = if i == 0 { load.as_str() } else { "" };
                rows.push(planted_row(p, "`leak` at its file:line", extra));
            }
            rows.push(planted_row(&f.lru, "not `leak`", ""));
        }
        Err(e) => rows.push([
            "Tornado fixture's planted leaks".into(),
            format!("failed: {}", e.lines().next().unwrap_or("").replace('|', "/")),
            "`leak` at their file:line".into(),
            "n/a".into(),
        ]),
    }
    rows
}

fn detection_row(d: &Result<Detection, String>) -> [String; 4] {
    let question =
        "how soon after attaching a report calls it `leak` (fresh recordings of growing length on one long run)"
            .to_string();
    let target = format!("≤ {DETECT_WITHIN_S:.0} s");
    match d {
        Ok(d) => {
            let steps = d.steps.iter().map(|s| format!("{} s: {}", s.seconds, s.said)).collect::<Vec<_>>().join("; ");
            let found = d.found_after();
            let answer = match found {
                Some(s) => format!("**{s} s** ({steps})"),
                None => format!("not within {} s ({steps})", d.steps.last().map(|s| s.seconds).unwrap_or(0)),
            };
            let pass = match found {
                Some(s) => Some(s as f64 <= DETECT_WITHIN_S),
                None if d.steps.last().is_some_and(|s| s.seconds as f64 >= DETECT_WITHIN_S) => Some(false),
                None => None,
            };
            [question, answer, target, verdict(pass)]
        }
        Err(e) => {
            [question, format!("failed: {}", e.lines().next().unwrap_or("").replace('|', "/")), target, "n/a".into()]
        }
    }
}

fn planted_row(p: &Planted, target: &str, extra: &str) -> [String; 4] {
    [format!("Tornado fixture: {} ({})", p.name, p.site), format!("{}{extra}", p.said), target.into(), verdict(p.pass)]
}

/// The windows opened on the auto runs' processes (none is expected: they do not grow).
fn auto_windows(s: &Section) -> String {
    let opened: Vec<String> =
        s.1.iter().flat_map(|s| s.runs.iter()).filter_map(|r| r.windows_opened).map(|n| n.to_string()).collect();
    if opened.is_empty() {
        "–".into()
    } else {
        opened.join(", ")
    }
}

/// The section, for BENCHMARKS.md and the terminal; `context` says which invocation measured it.
pub fn markdown(w: &Windows, context: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{HEADING}: costs and answers under `--window`\n");
    let _ = writeln!(
        t,
        "{context}, {} round(s). Every cost is a ratio against untraced runs of the same invocation, interleaved (untraced, traced, untraced, …; the median over the rounds).\n",
        w.rounds
    );
    t.push_str("| what | configuration | untraced (median; spread) | traced (median) | ratio (median) | per round | target | |\n|---|---|---|---|---|---|---|---|\n");
    for row in cost_rows(w) {
        let _ = writeln!(t, "| {} |", row.join(" | "));
    }
    let _ = writeln!(
        t,
        "\nLoad average {} just before the auto runs (after waiting up to {} s for it to fall to {QUIET_LOAD:.1}), {} just after them. Windows opened under auto: steady {}, idle {}.",
        w.load_before,
        SETTLE.as_secs(),
        w.load_after,
        auto_windows(&w.steady),
        auto_windows(&w.idle)
    );
    if let Some(l) = loaded(w) {
        let _ = writeln!(
            t,
            "**The machine was loaded (one-minute load average {l:.2} > {QUIET_LOAD:.1}): a 1% difference cannot be resolved, so the auto rows are shown and not claimed; the other ratios are only as good as the untraced runs' spread.**"
        );
    }
    t.push_str("\n| planted leak | what the report said | target | |\n|---|---|---|---|\n");
    for row in answer_rows(w) {
        let _ = writeln!(t, "| {} |", row.join(" | "));
    }
    t.push_str(&errors(w));
    t.push_str(HOW);
    t
}

fn errors(w: &Windows) -> String {
    let mut t = String::new();
    for (b, s) in [&w.steady, &w.idle, &w.workload, &w.tornado] {
        for series in std::iter::once(b).chain(s.iter()) {
            for e in &series.errors {
                let _ = writeln!(t, "- `{}`: {}", series.cfg.label, e.replace('\n', "\n  "));
            }
        }
    }
    if t.is_empty() {
        t
    } else {
        format!("\nErrors:\n\n{t}")
    }
}

const HOW: &str = "
How: the steady process is `bench/workload.py --leak-every 1000000000000` (it keeps one block, so its
heap does not grow and no auto window should open); the idle one is the same with `--pace`, which
sleeps between its bursts and reports the time spent working. The workload's planted leak is looked
for in the report the tracer writes (`-f json -o`): the suspect whose innermost Python line is the
`# LEAK-SITE` line. Detection: one run of the workload without end, recorded afresh with
`-d 20s`, `-d 40s`, … (each recording attaches anew) until a report calls the planted leak `leak`.
The Tornado fixture (`tracer/tests/fixtures/tornado_app.py`) is loaded by `loadgen.py`'s mix at
50 requests/s after a 2 s warm-up, as `tracer/tests/tornado.rs` does, and recorded with `-d`: its
kept exceptions and callback registry are the innermost line of their stacks, its uploads are
copied inside Tornado and named by the app's line that calls it; the LRU's insert line must not
be `leak`.
";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::runs::Run;

    fn series(key: &'static str, values: &[f64], ratios: &[f64]) -> Series {
        Series {
            cfg: tracer(key, FIXED),
            runs: values
                .iter()
                .map(|&v| Run { value: v, traced_s: Some(50.0), windows_opened: Some(0), ..Run::default() })
                .collect(),
            ratios: ratios.to_vec(),
            errors: vec![],
        }
    }

    fn section(ratio: f64) -> Section {
        (series("untraced", &[10.0, 10.0], &[]), vec![series("x", &[10.0 * ratio], &[ratio])])
    }

    /// Every part measured (the Tornado fixture failed), at one-minute load average `load`.
    pub(crate) fn fixture(load: &str) -> Windows {
        Windows {
            sizes: Sizes::new(true),
            rounds: 1,
            tornado_threads: 4,
            steady: section(1.004),
            idle: section(0.995),
            load_before: load.into(),
            load_after: "0.50 0.4 0.3".into(),
            workload: section(1.3),
            detection: Ok(Detection {
                steps: vec![
                    planted::Step { seconds: 20, said: "workload.py:41 growing".into(), leak: false },
                    planted::Step { seconds: 40, said: "workload.py:41 leak".into(), leak: true },
                ],
            }),
            tornado: section(1.1),
            fixture: Err("the fixture did not start\nmore".into()),
        }
    }

    #[test]
    fn renders_costs_answers_and_the_load() {
        let md = markdown(&fixture("0.20 0.3 0.4"), "`cargo xtask bench --only windows`");
        assert!(md.starts_with(HEADING), "{md}");
        assert!(md.contains("| 10.00 s (runs 0% apart) | 13.00 s | **1.30x** | 1.30x | ≤ 1.5x | PASS |"), "{md}");
        assert!(md.contains("| **9.1%** | 1.10x | ≤ 8% | FAIL |"), "{md}");
        assert!(md.contains("| **+0.40%** | 1.00x | within 1% | PASS |"), "{md}");
        assert!(
            md.contains("| **40 s** (20 s: workload.py:41 growing; 40 s: workload.py:41 leak) | ≤ 120 s | PASS |"),
            "{md}"
        );
        assert!(md.contains("failed: the fixture did not start |"), "{md}");
        assert!(!md.contains("not claimed"), "{md}");

        let busy = markdown(&fixture("1.70 0.3 0.4"), "x");
        assert!(busy.contains("| +0.40% (not claimed: load average 1.70 > 1.0) | 1.00x | within 1% | n/a |"), "{busy}");
        assert!(busy.contains("a 1% difference cannot be resolved"), "{busy}");
    }

    #[test]
    fn a_report_taken_too_soon_cannot_fail_the_planted_leak() {
        let row = |traced: f64, leak: bool| {
            let mut w = fixture("0.2");
            let run = &mut w.workload.1[0].runs[0];
            run.traced_s = Some(traced);
            run.leak = Some(("workload.py:41 x".into(), leak));
            answer_rows(&w)[0][3].clone()
        };
        assert_eq!(row(50.0, false), "n/a");
        assert_eq!(row(50.0, true), "PASS");
        assert_eq!(row(130.0, false), "FAIL");
    }

    #[test]
    fn reads_the_one_minute_load_average() {
        assert_eq!(one_minute("0.52 1.10 2.00"), Some(0.52));
        assert_eq!(one_minute(""), None);
    }
}
