//! `cargo xtask soak [--minutes N]`: bench/workload.py allocating as fast as it can for N
//! minutes under `tracer record -p PID`, the tracer's resident memory (VmRSS) sampled every
//! 10 s. Flat means: the last sample is at most 10% above the first one after the warm-up
//! (the first minute, or the first tenth of a shorter run). Writes the "Soak" section of
//! BENCHMARKS.md (only that section; `cargo xtask bench` keeps it when it rewrites the file).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::bench::proc::{status_kb, Proc, Stream};
use crate::bench::report;
use crate::bench::tools;
use crate::build;
use crate::util::{self, elapsed};

#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// How long the tracer records
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Seconds between two VmRSS samples
    #[arg(long, default_value_t = 10)]
    pub every: u64,
    /// Do not install anything (use what target/ and the machine already have)
    #[arg(long)]
    pub skip_setup: bool,
    /// Do not build (use the existing target/release/tracer)
    #[arg(long)]
    pub skip_build: bool,
    /// Print the section without writing BENCHMARKS.md
    #[arg(long)]
    pub no_write: bool,
}

/// The section this task owns in BENCHMARKS.md.
pub const HEADING: &str = "## Soak";

/// The planted leak of bench/workload.py, slowed down: a soak is about the tracer's memory, not
/// about the target's.
const LEAK_EVERY: &str = "25000";
/// Allowed growth of the tracer's RSS from the end of the warm-up to the end.
const FLAT: f64 = 1.10;

pub fn run(args: SoakArgs) -> Result<i32> {
    let start = Instant::now();
    if !util::is_root() {
        bail!("the soak attaches eBPF probes and needs root.\nhint: run it as root (sudo -E cargo xtask soak)");
    }
    let tracer = build::prepare(args.skip_setup, args.skip_build)?;
    let _machine = util::machine_lock()?;
    let soaked = soak(&args, &tracer)?;
    let verdict = judge(&soaked.series);
    let section = render(&args, &soaked.series, &verdict, soaked.hwm, soaked.allocs, soaked.stop_s);
    println!("\n{section}");
    if !args.no_write {
        let path = util::repo_root().join("BENCHMARKS.md");
        let old = fs::read_to_string(&path).unwrap_or_default();
        fs::write(&path, replace_section(&old, &section))?;
        println!("soak: wrote the Soak section of {}", path.display());
    }
    println!("soak: done in {}", elapsed(start));
    Ok(if verdict.pass { 0 } else { 1 })
}

/// What one soak measured.
struct Soaked {
    /// (seconds since the start, tracer VmRSS in kB)
    series: Vec<(f64, u64)>,
    /// The tracer's VmHWM at the end, kB.
    hwm: Option<u64>,
    /// Allocations in the tracer's report.
    allocs: Option<u64>,
    /// SIGINT -> the tracer exited.
    stop_s: f64,
}

/// The workload under `tracer record -p PID` for --minutes, then SIGINT.
fn soak(args: &SoakArgs, tracer: &Path) -> Result<Soaked> {
    // The workload needs no package: the project's base CPython runs it.
    let python = crate::pythons::base_python()?;
    let tmp = util::target_dir().join("soak");
    util::remove_dir(&tmp)?;
    util::mkdirs(&tmp)?;
    let go = tmp.join("go");
    let report = tmp.join("soak.json");
    let workload_py = util::repo_root().join("bench/workload.py");
    let mut workload = Proc::spawn(
        "workload",
        Command::new(&python)
            .arg(&workload_py)
            .args(["--iterations", "1000000000000", "--leak-every", LEAK_EVERY, "--go"])
            .arg(&go),
    )?;
    workload.wait_line("ready line", Duration::from_secs(60), |s, l| s == Stream::Out && l.starts_with("ready"))?;
    let pid = workload.pid;
    let mut rec =
        Proc::spawn("tracer", Command::new(tracer).args(["record", "-p", &pid.to_string(), "-q", "-o"]).arg(&report))?;
    rec.wait_line("attach line", Duration::from_secs(60), |s, l| {
        s == Stream::Err && l.starts_with("tracer: tracing pid")
    })?;
    fs::write(&go, b"go")?;
    let every = Duration::from_secs(args.every.max(1));
    println!(
        "soak: {} under `tracer record -p {pid}` for {:.0} min, VmRSS every {} s",
        workload_py.display(),
        args.minutes,
        every.as_secs()
    );
    println!("soak: python {}", python.display());
    let series = sample_rss(&mut rec, &mut workload, Duration::from_secs_f64(args.minutes * 60.0), every)?;
    let hwm = status_kb(rec.pid, "VmHWM");
    let stop = Instant::now();
    rec.signal("INT")?;
    let status = rec.wait(Duration::from_secs(120))?;
    let stop_s = stop.elapsed().as_secs_f64();
    drop(workload);
    if !status.success() {
        bail!("the tracer failed: {status}\n{}", rec.tail(8));
    }
    let allocs = fs::read_to_string(&report).ok().and_then(|t| report::of_pid(&t, pid).ok()).map(|r| r.totals.allocs);
    Ok(Soaked { series, hwm, allocs, stop_s })
}

/// The tracer's VmRSS every `every` for `length`; an error if either process ends meanwhile.
fn sample_rss(rec: &mut Proc, workload: &mut Proc, length: Duration, every: Duration) -> Result<Vec<(f64, u64)>> {
    let began = Instant::now();
    let mut series = Vec::new();
    loop {
        let t = began.elapsed();
        if rec.try_exited().is_some() || workload.try_exited().is_some() {
            bail!("the tracer or the workload ended during the soak\n{}\n{}", rec.tail(8), workload.tail(8));
        }
        if let Some(kb) = status_kb(rec.pid, "VmRSS") {
            series.push((t.as_secs_f64(), kb));
            println!("soak: {:>6.0} s  tracer VmRSS {:>7} kB", t.as_secs_f64(), kb);
        }
        if t >= length {
            return Ok(series);
        }
        std::thread::sleep(every.min(length - t));
    }
}

pub struct Verdict {
    pub warm_kb: u64,
    pub last_kb: u64,
    pub max_kb: u64,
    pub pass: bool,
}

/// Flat: the last sample at most FLAT times the first sample after the warm-up.
pub fn judge(series: &[(f64, u64)]) -> Verdict {
    let end = series.last().map(|s| s.0).unwrap_or(0.0);
    let warm_up = 60f64.min(end / 10.0);
    let warm_kb = series.iter().find(|s| s.0 >= warm_up).map(|s| s.1).unwrap_or(0);
    let last_kb = series.last().map(|s| s.1).unwrap_or(0);
    let max_kb = series.iter().map(|s| s.1).max().unwrap_or(0);
    Verdict { warm_kb, last_kb, max_kb, pass: warm_kb > 0 && last_kb as f64 <= warm_kb as f64 * FLAT }
}

fn render(
    args: &SoakArgs,
    series: &[(f64, u64)],
    v: &Verdict,
    hwm: Option<u64>,
    allocs: Option<u64>,
    stop_s: f64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let minutes = series.last().map(|p| p.0 / 60.0).unwrap_or(0.0);
    let _ = writeln!(
        s,
        "`cargo xtask soak --minutes {}`: bench/workload.py (endless, planted leak slowed to one block per {LEAK_EVERY} iterations) \
         under `tracer record -p PID` for {minutes:.1} min; the tracer's VmRSS every {} s. Machine load average at the end: {}.\n",
        args.minutes,
        args.every,
        tools::loadavg()
    );
    let rate = allocs
        .map(|a| format!("{:.0} allocations/s recorded ({a} in all)", a as f64 / (minutes * 60.0).max(1.0)))
        .unwrap_or_else(|| "allocations: n/a".into());
    let _ = writeln!(
        s,
        "**{}**: VmRSS {} kB after the warm-up, {} kB at the end ({:+.1}%), at most {} kB; VmHWM {}; {rate}; stopping (SIGINT to exit) took {stop_s:.1} s.\n",
        if v.pass { "PASS (flat)" } else { "FAIL (grows)" },
        v.warm_kb,
        v.last_kb,
        (v.last_kb as f64 / v.warm_kb.max(1) as f64 - 1.0) * 100.0,
        v.max_kb,
        hwm.map(|k| format!("{k} kB")).unwrap_or_else(|| "n/a".into()),
    );
    let _ = writeln!(s, "| t (s) | VmRSS (kB) |\n|---:|---:|");
    for (t, kb) in series {
        let _ = writeln!(s, "| {t:.0} | {kb} |");
    }
    s
}

/// `text` with its Soak section (from HEADING to the next `## ` heading) replaced by
/// `section`, or `section` appended when it has none.
pub fn replace_section(text: &str, section: &str) -> String {
    replace_named(text, HEADING, section)
}

/// `text` with its section under `heading` (to the next `## ` heading) replaced by `section`,
/// or `section` appended.
pub fn replace_named(text: &str, heading: &str, section: &str) -> String {
    let section = section.trim_end();
    match find_section(text, heading) {
        Some((start, end)) => {
            let rest = &text[end..];
            let sep = if rest.is_empty() { "\n" } else { "\n\n" };
            format!("{}{section}{sep}{rest}", &text[..start])
        }
        None if text.trim().is_empty() => format!("{section}\n"),
        None => format!("{}\n\n{section}\n", text.trim_end()),
    }
}

/// The Soak section of `text`, if it has one.
pub fn section_of(text: &str) -> Option<&str> {
    section_named(text, HEADING)
}

/// The section of `text` whose heading starts with `heading`, if it has one.
pub fn section_named<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    find_section(text, heading).map(|(s, e)| text[s..e].trim_end())
}

fn find_section(text: &str, heading: &str) -> Option<(usize, usize)> {
    let start = if text.starts_with(heading) { 0 } else { text.find(&format!("\n{heading}"))? + 1 };
    let after = start + heading.len();
    let end = text[after..].find("\n## ").map(|i| after + i + 1).unwrap_or(text.len());
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections() {
        let doc = "# Bench\n\nintro\n\n## Results\n\nrows\n";
        let with = replace_section(doc, "## Soak\n\nfirst\n");
        assert_eq!(with, "# Bench\n\nintro\n\n## Results\n\nrows\n\n## Soak\n\nfirst\n");
        let again = replace_section(&with, "## Soak\n\nsecond");
        assert_eq!(again, "# Bench\n\nintro\n\n## Results\n\nrows\n\n## Soak\n\nsecond\n");
        let middle = "# B\n\n## Soak\n\nold\n\n## After\n\nz\n";
        assert_eq!(replace_section(middle, "## Soak\n\nnew\n"), "# B\n\n## Soak\n\nnew\n\n## After\n\nz\n");
        assert_eq!(section_of(middle), Some("## Soak\n\nold"));
        assert_eq!(section_of(doc), None);
    }

    #[test]
    fn flatness() {
        let flat: Vec<(f64, u64)> =
            (0..61).map(|i| (i as f64 * 10.0, if i < 3 { 9000 } else { 20000 + (i % 3) as u64 * 100 })).collect();
        assert!(judge(&flat).pass);
        let growing: Vec<(f64, u64)> = (0..61).map(|i| (i as f64 * 10.0, 20000 + i as u64 * 200)).collect();
        let v = judge(&growing);
        assert!(!v.pass && v.warm_kb == 21200 && v.last_kb == 32000, "{}", v.warm_kb);
    }
}
