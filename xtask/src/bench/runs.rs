//! One measured run: start the workload (or the Tornado server), attach a tool, let it work,
//! stop the tool, and collect what the run cost and what the tool saw.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::proc::{self, PeakRss, Proc, Stream};
use super::report::{self, Report};

/// What measures a configuration.
#[derive(Clone, Debug)]
pub enum Tool {
    /// No tool: the baseline.
    None,
    /// `tracer record -p PID -f json -o report.json -q` plus these arguments.
    Tracer(Vec<String>),
    /// The same with `TRACER_PROBE_VARIANT` set: a before/after figure of one design lever.
    TracerVariant { variant: &'static str, args: Vec<String> },
    /// Host mode: `tracer record --all --match TAG -f json -o report.json -q`, which must find
    /// this many processes (the workload and the idle ones carrying `Ctx::tag`).
    Host { processes: usize },
    /// `memray run` running the workload itself (in-process).
    Memray,
    /// bcc's `memleak-bpfcc -p PID`.
    Bcc,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Short stable name (used in tables and targets).
    pub key: &'static str,
    /// What a reader sees, e.g. the command line.
    pub label: String,
    pub tool: Tool,
}

/// Everything one run measured. `value` is what the ratio is taken on: the workload's own
/// elapsed seconds, or for Tornado the seconds per request (1 / requests per second).
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub value: f64,
    pub rps: Option<f64>,
    pub attach_s: Option<f64>,
    /// SIGINT -> the tool holds no probe fd any more.
    pub probes_off_s: Option<f64>,
    /// SIGINT -> the tool exited (report written).
    pub exit_s: Option<f64>,
    pub rss_kb: Option<u64>,
    /// (memlock bytes, number of maps)
    pub maps: Option<(u64, usize)>,
    pub events: Option<u64>,
    pub events_per_s: Option<f64>,
    pub lost: Option<u64>,
    pub lost_detail: Vec<(String, u64)>,
    /// What became of the planted leak in the report: text, and whether it was called a leak.
    pub leak: Option<(String, bool)>,
    /// Allocations by allocator (from the report's stacks).
    pub allocators: Vec<(String, u64)>,
    /// Seconds from attaching to the report's view (the report's `duration_s`).
    pub traced_s: Option<f64>,
    /// Probe windows opened (`--window`; the report's `windows.opened`).
    pub windows_opened: Option<u64>,
    pub note: Option<String>,
}

/// The line of JSON bench/workload.py prints after its work loop (the fields read here).
#[derive(Deserialize)]
struct WorkloadResult {
    /// Seconds of the work loop alone.
    elapsed_s: f64,
    /// `path:line` of the planted leak.
    leak_site: String,
}

/// The line of JSON bench/tornado_bench.py's load generator prints at the end.
#[derive(Deserialize)]
struct LoadResult {
    rps: f64,
    errors: u64,
}

#[derive(Clone)]
pub struct Ctx {
    pub repo: PathBuf,
    pub python: PathBuf,
    pub memray: Option<PathBuf>,
    pub tracer: PathBuf,
    pub bcc: Option<Bcc>,
    /// A directory holding a private byte-identical copy of libc.so.6 (LD_LIBRARY_PATH).
    pub libc_dir: Option<PathBuf>,
    pub tmp: PathBuf,
    pub iterations: u64,
    /// More arguments of bench/workload.py (e.g. the probe-windows leg's steady and idle runs).
    pub workload_args: Vec<String>,
    pub tornado_seconds: f64,
    pub tornado_threads: u32,
    pub counter: std::cell::Cell<u32>,
    /// On the command line of the workload and of the idle processes, for `--all --match`.
    pub tag: String,
}

#[derive(Clone, Debug)]
pub struct Bcc {
    pub memleak: PathBuf,
    pub kernel_source: PathBuf,
}

impl Ctx {
    fn fresh_dir(&self) -> Result<PathBuf> {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let dir = self.tmp.join(format!("run-{n:03}"));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    pub fn python_cmd(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some(dir) = &self.libc_dir {
            cmd.env("LD_LIBRARY_PATH", dir);
        }
        cmd.current_dir(&self.repo);
        cmd
    }
}

const READY: Duration = Duration::from_secs(60);
const ATTACH: Duration = Duration::from_secs(120);
const WORK: Duration = Duration::from_secs(1800);
const STOP: Duration = Duration::from_secs(300);

/// An attached tool.
struct Attached {
    proc: Proc,
    attach_s: f64,
    peak: Option<PeakRss>,
    maps: Option<(u64, usize)>,
    report: Option<PathBuf>,
}

/// The allocation-heavy workload under one configuration.
pub fn workload(ctx: &Ctx, cfg: &Config) -> Result<Run> {
    let dir = ctx.fresh_dir()?;
    let (go, hold) = (dir.join("go"), dir.join("hold"));
    let script = ctx.repo.join("bench/workload.py");
    let mut cmd = match &cfg.tool {
        Tool::Memray => {
            let memray = ctx.memray.as_ref().context("memray is not installed")?;
            let mut c = ctx.python_cmd(memray);
            c.args(["run", "-q", "-f", "-o"]).arg(dir.join("memray.bin"));
            c
        }
        _ => ctx.python_cmd(&ctx.python),
    };
    cmd.arg(&script)
        .arg("--iterations")
        .arg(ctx.iterations.to_string())
        .arg("--go")
        .arg(&go)
        .arg("--hold")
        .arg(&hold)
        .arg("--tag")
        .arg(&ctx.tag)
        .args(&ctx.workload_args);
    let mut wl = Proc::spawn("workload", &mut cmd)?;
    let (_, ready) = wl.wait_line("`ready` line", READY, |s, l| s == Stream::Out && l.starts_with("ready "))?;
    let pid: u32 = ready[6..].trim().parse().context("workload's ready line")?;

    let mut attached = attach(ctx, &cfg.tool, pid, &dir)?;

    fs::write(&go, b"")?;
    let (_, result) = wl.wait_line("result line", WORK, |s, l| s == Stream::Out && l.starts_with('{'))?;
    let result: WorkloadResult = serde_json::from_str(&result).context("workload's result line")?;
    let mut run = Run { value: result.elapsed_s, ..Run::default() };
    let leak_site = result.leak_site;

    if let Some(att) = attached.as_mut() {
        stop(att, &mut run)?;
    }
    fs::write(&hold, b"")?;
    wl.wait(Duration::from_secs(60))?;

    if let Some(report) = attached.as_ref().and_then(|a| a.report.clone()) {
        // --holders-only has no allocation stacks: nothing to find the leak in
        let probes = !matches!(&cfg.tool, Tool::Tracer(a) if a.iter().any(|a| a == "--holders-only"));
        read_report(&report, pid, if probes { &leak_site } else { "" }, run.value, &mut run)?;
    }
    if matches!(cfg.tool, Tool::Memray) {
        let bin = dir.join("memray.bin");
        if let Ok(meta) = fs::metadata(&bin) {
            run.note = Some(format!("capture {:.0} MiB", meta.len() as f64 / 1048576.0));
        }
    }
    drop(attached);
    let _ = fs::remove_dir_all(&dir);
    Ok(run)
}

/// The Tornado server under one configuration, loaded by the bounded generator.
pub fn tornado(ctx: &Ctx, cfg: &Config) -> Result<Run> {
    let dir = ctx.fresh_dir()?;
    let script = ctx.repo.join("bench/tornado_bench.py");
    let mut server = Proc::spawn("tornado server", ctx.python_cmd(&ctx.python).arg(&script).arg("serve"))?;
    let (_, ready) = server.wait_line("`ready` line", READY, |s, l| s == Stream::Out && l.starts_with("ready "))?;
    let mut parts = ready.split_whitespace().skip(1);
    let port: u16 = parts.next().unwrap_or("").parse().context("server's port")?;
    let pid: u32 = parts.next().unwrap_or("").parse().context("server's pid")?;

    let mut attached = attach(ctx, &cfg.tool, pid, &dir)?;

    let mut load = Proc::spawn(
        "load generator",
        Command::new(&ctx.python)
            .arg(&script)
            .args(["load", "--port", &port.to_string()])
            .args(["--seconds", &ctx.tornado_seconds.to_string()])
            .args(["--threads", &ctx.tornado_threads.to_string()])
            .current_dir(&ctx.repo),
    )?;
    let (_, result) = load.wait_line("result line", Duration::from_secs_f64(ctx.tornado_seconds + 120.0), |s, l| {
        s == Stream::Out && l.starts_with('{')
    })?;
    load.wait(Duration::from_secs(30))?;
    let LoadResult { rps, errors } = serde_json::from_str(&result).context("load generator's result")?;
    if rps <= 0.0 {
        bail!("the load generator completed no request ({errors} errors)");
    }
    let mut run = Run { value: 1.0 / rps, rps: Some(rps), ..Run::default() };
    if errors > 0 {
        run.note = Some(format!("{errors} request errors"));
    }
    if let Some(att) = attached.as_mut() {
        stop(att, &mut run)?;
    }
    server.signal("TERM")?;
    server.wait(Duration::from_secs(30))?;
    if let Some(report) = attached.as_ref().and_then(|a| a.report.clone()) {
        read_report(&report, pid, "", ctx.tornado_seconds, &mut run)?;
    }
    drop(attached);
    let _ = fs::remove_dir_all(&dir);
    Ok(run)
}

fn attach(ctx: &Ctx, tool: &Tool, pid: u32, dir: &Path) -> Result<Option<Attached>> {
    match tool {
        Tool::None | Tool::Memray => Ok(None),
        Tool::Tracer(_) | Tool::TracerVariant { .. } => {
            let (variant, extra) = match tool {
                Tool::TracerVariant { variant, args } => (*variant, args.as_slice()),
                Tool::Tracer(args) => ("", args.as_slice()),
                _ => unreachable!(),
            };
            let report = dir.join("report.json");
            let mut cmd = Command::new(&ctx.tracer);
            cmd.args(["record", "-q", "-f", "json", "-p", &pid.to_string(), "-o"])
                .arg(&report)
                .args(extra)
                .env("TRACER_PROBE_VARIANT", variant);
            let mut proc = Proc::spawn("tracer", &mut cmd)?;
            let (at, _) = proc.wait_line("`tracer: tracing pid` line", ATTACH, |s, l| {
                s == Stream::Err && l.starts_with("tracer: tracing pid")
            })?;
            let attach_s = (at - proc.started).as_secs_f64();
            let maps = proc::bpf_map_memlock(proc.pid);
            let peak = Some(PeakRss::start(proc.pid));
            Ok(Some(Attached { proc, attach_s, peak, maps, report: Some(report) }))
        }
        Tool::Host { processes } => {
            let report = dir.join("report.json");
            let mut cmd = Command::new(&ctx.tracer);
            cmd.args(["record", "-q", "-f", "json", "--all", "--match", &ctx.tag, "-o"]).arg(&report);
            let mut proc = Proc::spawn("tracer --all", &mut cmd)?;
            // Printed once every process found at the start is attached.
            let (at, line) = proc.wait_line("`tracer: tracing N CPython processes` line", ATTACH, |s, l| {
                s == Stream::Err && l.starts_with("tracer: tracing ") && l.contains("CPython processes on this host")
            })?;
            let found: usize = line.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or(0);
            if found != *processes {
                let tail = proc.tail(8);
                bail!("tracer --all traces {found} processes, expected {processes} (the workload and the idle ones)\n{tail}");
            }
            let attach_s = (at - proc.started).as_secs_f64();
            let maps = proc::bpf_map_memlock(proc.pid);
            let peak = Some(PeakRss::start(proc.pid));
            Ok(Some(Attached { proc, attach_s, peak, maps, report: Some(report) }))
        }
        Tool::Bcc => {
            let bcc = ctx.bcc.as_ref().context("bcc is not available")?;
            let mut cmd = Command::new(&bcc.memleak);
            cmd.args(["-p", &pid.to_string()])
                .env("BCC_KERNEL_SOURCE", &bcc.kernel_source)
                .env("PYTHONUNBUFFERED", "1");
            let mut proc = Proc::spawn("memleak-bpfcc", &mut cmd)?;
            proc.wait_line("`Attaching to pid` line", ATTACH, |s, l| {
                s == Stream::Out && l.starts_with("Attaching to pid")
            })?;
            // bcc prints that line before it attaches: wait until its probe count settles.
            let attached_at = settle_probes(&mut proc)?;
            let attach_s = (attached_at - proc.started).as_secs_f64();
            let maps = proc::bpf_map_memlock(proc.pid);
            let peak = Some(PeakRss::start(proc.pid));
            Ok(Some(Attached { proc, attach_s, peak, maps, report: None }))
        }
    }
}

/// The time at which a process's probe fd count became non-zero and then stayed the same for
/// 300 ms.
fn settle_probes(proc: &mut Proc) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (0usize, Instant::now());
    loop {
        if proc.try_exited().is_some() {
            let tail = proc.tail(8);
            bail!("{} exited while attaching\n{tail}", proc.name);
        }
        let n = proc::probe_fds(proc.pid).unwrap_or(0);
        let now = Instant::now();
        if n != last {
            last = n;
            since = now;
        } else if n > 0 && now - since >= Duration::from_millis(300) {
            return Ok(since);
        }
        if now > deadline {
            let tail = proc.tail(8);
            bail!("{} attached no probe within 30 s\n{tail}", proc.name);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// SIGINT, then watch the probe fds disappear and the process exit.
fn stop(att: &mut Attached, run: &mut Run) -> Result<()> {
    let pid = att.proc.pid;
    if let Some(p) = &att.peak {
        p.poke(pid);
    }
    if att.maps.is_none() {
        att.maps = proc::bpf_map_memlock(pid);
    }
    let t0 = Instant::now();
    att.proc.signal("INT")?;
    let mut probes_off = None;
    loop {
        if att.proc.try_exited().is_some() {
            break;
        }
        let now = Instant::now();
        if probes_off.is_none() && proc::probe_fds(pid) == Some(0) {
            probes_off = Some((now - t0).as_secs_f64());
        }
        if now - t0 > STOP {
            bail!("{} did not exit within {:.0} s of SIGINT (killed)", att.proc.name, STOP.as_secs_f64());
        }
        thread::sleep(Duration::from_millis(1));
    }
    let exit_s = (att.proc.exit_time().unwrap_or_else(Instant::now) - t0).as_secs_f64();
    run.attach_s = Some(att.attach_s);
    run.exit_s = Some(exit_s);
    run.probes_off_s = probes_off.or(Some(exit_s));
    run.maps = att.maps;
    run.rss_kb = att.peak.take().and_then(PeakRss::finish);
    let status = att.proc.wait(Duration::from_secs(1))?;
    if !status.success() && !matches!(status.code(), Some(3)) {
        // bcc exits through KeyboardInterrupt with status 0; the tracer with 0 (3 = leaks found).
        let tail = att.proc.tail(8);
        bail!("{} exited with {status}\n{tail}", att.proc.name);
    }
    Ok(())
}

/// Totals, lost events and the planted leak from the tracer's JSON report (in host mode, the
/// section of the measured process `pid`).
fn read_report(path: &Path, pid: u32, leak_site: &str, seconds: f64, run: &mut Run) -> Result<()> {
    let text = fs::read_to_string(path).with_context(|| format!("the tracer wrote no report at {}", path.display()))?;
    let report = report::of_pid(&text, pid)?;
    summarize(&report, leak_site, seconds, run);
    Ok(())
}

/// What a run's table cells need from its report; `leak_site` empty when not looked for.
fn summarize(report: &Report, leak_site: &str, seconds: f64, run: &mut Run) {
    let totals = &report.totals;
    let events = totals.allocs + totals.frees;
    run.events = Some(events);
    run.events_per_s = Some(events as f64 / seconds.max(1e-9));
    // holders_* count container-scan cuts, not lost allocation events
    run.lost_detail = totals.lost.iter().filter(|(_, &n)| n > 0).map(|(name, &n)| (name.clone(), n)).collect();
    run.lost = Some(totals.lost.iter().filter(|(name, _)| !name.starts_with("holders_")).map(|(_, n)| n).sum());

    let mut by_alloc: Vec<(String, u64)> = Vec::new();
    for s in &report.suspects {
        match by_alloc.iter_mut().find(|(k, _)| *k == s.allocator) {
            Some((_, v)) => *v += s.allocs,
            None => by_alloc.push((s.allocator.clone(), s.allocs)),
        }
    }
    by_alloc.sort_by_key(|a| std::cmp::Reverse(a.1));
    run.allocators = by_alloc;

    run.traced_s = Some(report.duration_s);
    run.windows_opened = report.windows.as_ref().map(|w| w.opened);
    if !leak_site.is_empty() {
        run.leak = Some(report.planted(leak_site, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util;

    #[test]
    fn summarizes_the_tracers_golden_report() {
        let path = util::repo_root().join("tracer/tests/data/export/report.json");
        let mut run = Run::default();
        read_report(&path, 4242, "/srv/app.py:12", 10.0, &mut run).unwrap();
        assert_eq!(run.events, Some(120_345 + 118_000));
        assert_eq!(run.events_per_s, Some(23_834.5));
        assert_eq!(run.lost, Some(15));
        assert_eq!(run.lost_detail, [("allocs_map_full".to_string(), 12), ("stack_truncated".to_string(), 3)]);
        // summed per allocator over the suspects, most first
        let by_alloc = [("mmap".to_string(), 80_000), ("malloc".to_string(), 6_045), ("calloc".to_string(), 80)];
        assert_eq!(run.allocators, by_alloc);
        assert_eq!(run.leak, Some(("app.py:12 leak, rank 1, 4.1 MiB".to_string(), true)));

        let mut elsewhere = Run::default();
        read_report(&path, 4242, "/srv/other.py:3", 10.0, &mut elsewhere).unwrap();
        assert_eq!(elsewhere.leak, Some(("other.py:3 not in the report".to_string(), false)));
    }

    #[test]
    fn reads_the_workloads_and_load_generators_lines() {
        let w: WorkloadResult = serde_json::from_str(
            r#"{"elapsed_s": 2.5, "cpu_s": 2.4, "iterations": 10, "leak_site": "/b/workload.py:61", "checksum": 1}"#,
        )
        .unwrap();
        assert_eq!((w.elapsed_s, w.leak_site.as_str()), (2.5, "/b/workload.py:61"));
        let l: LoadResult =
            serde_json::from_str(r#"{"requests": 30, "errors": 0, "seconds": 3, "threads": 4, "rps": 10.0}"#).unwrap();
        assert_eq!((l.rps, l.errors), (10.0, 0));
    }
}
