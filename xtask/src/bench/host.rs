//! The host-mode figure: a busy process traced alone (`tracer record -p PID`) against the same
//! busy process traced with `tracer record --all --match TAG` while 20 idle CPython processes
//! carrying the same tag are traced too (bench/idle.py: ten wake-ups a second, one small
//! malloc/free each). The idle processes run during every run of this section, untraced ones
//! included, so the comparison isolates what tracing them costs the busy one.

use std::time::Duration;

use anyhow::{Context, Result};

use super::proc::{Proc, Stream};
use super::rounds::{interleave, Section};
use super::runs::{self, Config, Ctx, Tool};

/// Idle CPython processes beside the busy one.
pub const IDLE: usize = 20;

/// Keys of the two configurations (tables and targets find them by these).
pub const ALONE: &str = "alone";
pub const HOST: &str = "host";

/// Runs the section: starts the idle processes, interleaves untraced / alone / host runs of the
/// workload, stops the idle processes.
pub fn run(ctx: &Ctx, base: &Config, rounds: u32) -> Result<Section> {
    let idle = start_idle(ctx)?;
    let configs = [
        Config { key: ALONE, label: "tracer record -p PID".into(), tool: Tool::Tracer(vec![]) },
        Config {
            key: HOST,
            label: format!("tracer record --all --match TAG ({IDLE} idle + the busy one)"),
            tool: Tool::Host { processes: IDLE + 1 },
        },
    ];
    let result = interleave(ctx, base, &configs, rounds, runs::workload, "host");
    drop(idle); // kills them
    Ok(result)
}

fn start_idle(ctx: &Ctx) -> Result<Vec<Proc>> {
    let script = ctx.repo.join("bench/idle.py");
    let mut procs = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut cmd = ctx.python_cmd(&ctx.python);
        cmd.arg(&script).arg(&ctx.tag);
        let mut p = Proc::spawn(&format!("idle process {i}"), &mut cmd)?;
        p.wait_line("`ready` line", Duration::from_secs(60), |s, l| s == Stream::Out && l == "ready")
            .with_context(|| format!("starting idle process {i}"))?;
        procs.push(p);
    }
    // Let them settle into their sleep loop (imports done, first wake-ups made).
    std::thread::sleep(Duration::from_millis(500));
    Ok(procs)
}
