//! Planted leaks looked for in the tracer's JSON reports, for the probe-windows leg
//! (`windows.rs`): how soon after attaching a report names bench/workload.py's planted leak
//! (`detect`), and whether the Tornado fixture's three planted leaks are named at their
//! file:line while its bounded LRU is not a leak (`tornado_fixture`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::proc::{Proc, Stream};
use super::report::{self, Report, Verdict};
use super::runs::Ctx;

/// One fresh recording of the detection ladder: what its report said about the planted leak.
pub struct Step {
    /// Seconds from attaching to the report (`record -d`).
    pub seconds: u64,
    pub said: String,
    pub leak: bool,
}

/// The ladder: recordings of increasing length until one report calls the planted leak `leak`.
pub struct Detection {
    pub steps: Vec<Step>,
}

impl Detection {
    /// The length of the first recording whose report called it a leak.
    pub fn found_after(&self) -> Option<u64> {
        self.steps.iter().find(|s| s.leak).map(|s| s.seconds)
    }
}

/// One planted leak (or control) of the Tornado fixture, as its report showed it.
pub struct Planted {
    pub name: &'static str,
    /// `file:line` (file name only).
    pub site: String,
    pub said: String,
    /// None when the report has no stack at that line (nothing to judge).
    pub pass: Option<bool>,
}

/// The Tornado fixture under the windows: its planted leaks, its LRU, and the load it served.
pub struct FixtureCheck {
    pub leaks: Vec<Planted>,
    pub lru: Planted,
    pub requests: u64,
    pub errors: u64,
    pub windows_opened: Option<u64>,
}

const FIXTURE: &str = "tracer/tests/fixtures/tornado_app.py";
const LOADGEN: &str = "tracer/tests/fixtures/loadgen.py";
/// The load generator's rate: tracer/tests/tornado.rs's (5 leaking requests of each kind a second).
const FIXTURE_RATE: &str = "50";
/// (what, a unique text of the line that allocates it, whether that line is the innermost
/// Python frame: the uploads are copied inside Tornado, called from the app's line).
const FIXTURE_LEAKS: [(&str, &str, bool); 3] = [
    ("kept exceptions", "payload = bytearray(20_000)", true),
    ("callback registry", "state = bytearray(8_000)", true),
    ("upload caches", "tornado.httputil.parse_body_arguments(ctype", false),
];
const FIXTURE_LRU: &str = "self.data[key] = bytearray(4_000)";

/// bench/workload.py running its work loop without end (its planted leak growing), recorded
/// afresh for each of `ladder`'s lengths in turn with the tracer's `args`, until a report calls
/// the planted leak `leak`.
pub fn detect(ctx: &Ctx, args: &[String], ladder: &[u64]) -> Result<Detection> {
    let dir = fresh_dir(ctx, "detect")?;
    let script = ctx.repo.join("bench/workload.py");
    let site = site_of(&script, "LEAK.append(")?;
    let go = dir.join("go");
    let mut cmd = ctx.python_cmd(&ctx.python);
    cmd.arg(&script).args(["--iterations", "100000000000", "--go"]).arg(&go).args(&ctx.workload_args);
    let mut wl = Proc::spawn("workload", &mut cmd)?;
    wl.wait_line("`ready` line", Duration::from_secs(60), |s, l| s == Stream::Out && l.starts_with("ready "))?;
    fs::write(&go, b"")?;
    let mut steps = Vec::new();
    for &seconds in ladder {
        let out = dir.join(format!("detect-{seconds}.json"));
        let tracer = start_recording(ctx, wl.pid, args, seconds, &out)?;
        let report = finish_recording(tracer, wl.pid, seconds, &out)?;
        let (said, leak) = report.planted(&site, true);
        println!("bench: windows: a recording of {seconds} s: {said}");
        steps.push(Step { seconds, said, leak });
        if leak {
            break;
        }
    }
    drop(wl); // killed: it never ends by itself
    let _ = fs::remove_dir_all(&dir);
    Ok(Detection { steps })
}

/// tracer/tests/fixtures/tornado_app.py under loadgen.py's mix (as tracer/tests/tornado.rs loads
/// it), recorded for `seconds` with the tracer's `args` after an untraced warm-up.
pub fn tornado_fixture(ctx: &Ctx, args: &[String], seconds: u64) -> Result<FixtureCheck> {
    let dir = fresh_dir(ctx, "fixture")?;
    let app = ctx.repo.join(FIXTURE);
    let mut server = Proc::spawn("tornado fixture", ctx.python_cmd(&ctx.python).arg(&app).arg("0"))?;
    let (_, line) = server.wait_line("`listening` line", Duration::from_secs(60), |s, l| {
        s == Stream::Out && l.starts_with("listening ")
    })?;
    let port = line["listening ".len()..].trim().to_string();
    // The first requests compile regexes and fill Tornado's caches: not what is judged.
    finish_load(start_load(ctx, &port, 2.0)?, 2.0)?;
    let out = dir.join("fixture.json");
    let tracer = start_recording(ctx, server.pid, args, seconds, &out)?;
    let load = start_load(ctx, &port, seconds as f64 + 1.5)?;
    let report = finish_recording(tracer, server.pid, seconds, &out)?;
    let (requests, errors) = finish_load(load, seconds as f64)?;
    drop(server);
    let check = judge_fixture(&report, &app, requests, errors)?;
    let _ = fs::remove_dir_all(&dir);
    Ok(check)
}

fn judge_fixture(report: &Report, app: &Path, requests: u64, errors: u64) -> Result<FixtureCheck> {
    let mut leaks = Vec::new();
    for (name, needle, innermost) in FIXTURE_LEAKS {
        let site = site_of(app, needle)?;
        let (said, leak) = report.planted(&site, innermost);
        leaks.push(Planted { name, site: short(&site), said, pass: Some(leak) });
    }
    let site = site_of(app, FIXTURE_LRU)?;
    let at: Vec<Verdict> =
        report.suspects.iter().filter(|s| s.python_line().as_deref() == Some(&site)).map(|s| s.verdict).collect();
    let lru = Planted {
        name: "bounded LRU",
        site: short(&site),
        said: if at.is_empty() {
            "not in the report".into()
        } else {
            at.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
        },
        pass: (!at.is_empty()).then(|| !at.contains(&Verdict::Leak)),
    };
    let windows_opened = report.windows.as_ref().map(|w| w.opened);
    Ok(FixtureCheck { leaks, lru, requests, errors, windows_opened })
}

/// `tracer record -p PID -d SECONDSs -o OUT` with `args`, once it has attached.
fn start_recording(ctx: &Ctx, pid: u32, args: &[String], seconds: u64, out: &Path) -> Result<Proc> {
    let mut cmd = Command::new(&ctx.tracer);
    cmd.args(["record", "-q", "-f", "json", "-p", &pid.to_string(), "-d", &format!("{seconds}s"), "-o"])
        .arg(out)
        .args(args);
    let mut tracer = Proc::spawn("tracer", &mut cmd)?;
    tracer.wait_line("`tracer: tracing pid` line", Duration::from_secs(120), |s, l| {
        s == Stream::Err && l.starts_with("tracer: tracing pid")
    })?;
    Ok(tracer)
}

/// Waits for a recording's end; its report of `pid`.
fn finish_recording(mut tracer: Proc, pid: u32, seconds: u64, out: &Path) -> Result<Report> {
    let status = tracer.wait(Duration::from_secs(seconds + 120))?;
    if !status.success() {
        bail!("tracer exited with {status}\n{}", tracer.tail(8));
    }
    let text = fs::read_to_string(out).with_context(|| format!("the tracer wrote no report at {}", out.display()))?;
    report::of_pid(&text, pid)
}

fn start_load(ctx: &Ctx, port: &str, seconds: f64) -> Result<Proc> {
    let mut cmd = Command::new(&ctx.python);
    cmd.arg(ctx.repo.join(LOADGEN))
        .arg(port)
        .args(["--rate", FIXTURE_RATE, "--duration", &seconds.to_string()])
        .current_dir(&ctx.repo);
    Proc::spawn("loadgen.py", &mut cmd)
}

/// The load generator's `done REQUESTS ERRORS`.
fn finish_load(mut load: Proc, seconds: f64) -> Result<(u64, u64)> {
    let (_, line) = load.wait_line("`done` line", Duration::from_secs_f64(seconds + 60.0), |s, l| {
        s == Stream::Out && l.starts_with("done ")
    })?;
    load.wait(Duration::from_secs(10))?;
    let mut n = line.split_whitespace().skip(1).map(|x| x.parse::<u64>());
    match (n.next(), n.next()) {
        (Some(Ok(requests)), Some(Ok(errors))) => Ok((requests, errors)),
        _ => bail!("loadgen.py said {line:?}"),
    }
}

/// `path:line` of the first line of `path` that contains `needle`.
fn site_of(path: &Path, needle: &str) -> Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text.lines().position(|l| l.contains(needle));
    let line = line.with_context(|| format!("{} has no line with {needle:?}", path.display()))?;
    Ok(format!("{}:{}", path.display(), line + 1))
}

fn short(site: &str) -> String {
    site.rsplit('/').next().unwrap_or(site).to_string()
}

fn fresh_dir(ctx: &Ctx, name: &str) -> Result<PathBuf> {
    let dir = ctx.tmp.join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util;

    #[test]
    fn finds_the_fixtures_lines() {
        let repo = util::repo_root();
        let site = site_of(&repo.join("bench/workload.py"), "LEAK.append(").unwrap();
        assert!(site.ends_with("bench/workload.py:41"), "{site}");
        let app = repo.join(FIXTURE);
        for (_, needle, _) in FIXTURE_LEAKS {
            site_of(&app, needle).unwrap();
        }
        site_of(&app, FIXTURE_LRU).unwrap();
        assert!(site_of(&app, "no such text").is_err());
    }

    #[test]
    fn judges_the_golden_report() {
        // The golden report's leak is at /srv/app.py:12: none of the fixture's lines is there.
        let text = fs::read_to_string(util::repo_root().join("tracer/tests/data/export/report.json")).unwrap();
        let report = report::of_pid(&text, 4242).unwrap();
        let check = judge_fixture(&report, &util::repo_root().join(FIXTURE), 10, 0).unwrap();
        assert!(check.leaks.iter().all(|l| l.pass == Some(false) && l.said.ends_with("not in the report")));
        assert_eq!(check.lru.pass, None, "no stack at the LRU's line: nothing judged");
        assert_eq!(report.planted("/srv/app.py:12", true), ("app.py:12 leak, rank 1, 4.1 MiB".to_string(), true));
    }
}
