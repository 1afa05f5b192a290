//! `cargo xtask bench`: the tracer's cost measured side by side with its peers, and
//! `cargo xtask dist` (later work).
//!
//! One invocation runs, interleaved and repeated (each configuration's ratio is taken against the
//! untraced runs just before and after it, so drift in the machine's speed cancels out):
//!
//! - bench/workload.py, allocation-heavy (malloc, calloc, realloc, free, pymalloc arenas) with a
//!   planted leak, under: untraced; `tracer record -p PID` (full fidelity);
//!   `tracer record -p PID --sample-bytes N`; `memray run`; bcc `memleak-bpfcc -p PID`;
//!   `tracer record -p PID --holders-only`. The workload reports its own work-loop time (it waits
//!   for a trigger file, so start-up and attaching are not measured).
//! - bench/tornado_bench.py: a Tornado app saturated by a bounded loopback load generator,
//!   untraced vs traced: requests per second.
//! - host mode: the same workload traced alone (`record -p PID`) vs traced by `record --all
//!   --match TAG` beside 20 idle CPython processes that are traced too (see `host.rs`).
//!
//! It prints a table (median over rounds) with pass/fail against the project's targets and,
//! unless `--quick` (then only with `--write`), writes BENCHMARKS.md. The measured processes run
//! against a private copy of libc (their own inode), so probes elsewhere on the machine do not
//! touch them. bcc runs only while no `tracer` process exists on the machine.

mod host;
pub mod json;
mod levers;
pub mod proc;
mod render;
mod runs;
pub mod tools;

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::build;
use crate::util::{self, elapsed};
use runs::{Config, Ctx, Run, Tool};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// One round of a smaller workload and a short Tornado run (CI smoke, under two minutes);
    /// prints the table, writes BENCHMARKS.md only with --write
    #[arg(long)]
    pub quick: bool,
    /// Rounds of the interleaved runs [default: 3, --quick: 1]
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Iterations of bench/workload.py (about 9 libc calls each) [default: 1000000, --quick: 150000]
    #[arg(long)]
    pub iterations: Option<u64>,
    /// N for the sampled configuration (`tracer record --sample-bytes N`)
    #[arg(long, default_value_t = 524288)]
    pub sample_bytes: u64,
    /// Seconds of load per Tornado run [default: 10, --quick: 3]
    #[arg(long)]
    pub tornado_seconds: Option<f64>,
    /// Load generator threads for the Tornado runs
    #[arg(long, default_value_t = 4)]
    pub tornado_threads: u32,
    /// Write the results to BENCHMARKS.md (the default without --quick)
    #[arg(long)]
    pub write: bool,
    /// A remark printed at the top of BENCHMARKS.md (e.g. about the machine's state)
    #[arg(long)]
    pub note: Option<String>,
    /// Where to write the results
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
    /// Leave out bcc's memleak
    #[arg(long)]
    pub no_bcc: bool,
    /// Leave out memray
    #[arg(long)]
    pub no_memray: bool,
    /// Leave out the Tornado benchmark
    #[arg(long)]
    pub no_tornado: bool,
    /// Leave out the levers (the tracer's design choices measured before/after, and empty
    /// programs at the same probes)
    #[arg(long)]
    pub no_levers: bool,
    /// Leave out the host-mode comparison (busy process alone vs beside 20 traced idle ones)
    #[arg(long)]
    pub no_host: bool,
    /// Run only these workload configurations (comma-separated keys: full, sampled, memray,
    /// bcc, holders; host for the host-mode section), e.g. to debug one of them
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Do not install anything (use what target/ and the machine already have)
    #[arg(long)]
    pub skip_setup: bool,
    /// Do not build (use the existing target/release/tracer)
    #[arg(long)]
    pub skip_build: bool,
}

pub fn bench(args: BenchArgs) -> Result<i32> {
    let start = Instant::now();
    if !util::is_root() {
        bail!("the benchmark attaches eBPF probes and needs root.\nhint: run it as root (sudo -E cargo xtask bench)");
    }
    let tracer = build::prepare(args.skip_setup, args.skip_build)?;
    let _machine = util::machine_lock()?;
    let python = tools::bench_venv(!args.skip_setup)?;
    let memray = python.with_file_name("memray");
    let memray = util::is_executable(&memray).then_some(memray);
    let bcc = if args.no_bcc {
        Err("left out (--no-bcc)".to_string())
    } else {
        tools::bcc(!args.skip_setup).map_err(|e| format!("{e:#}"))
    };
    if let Err(why) = &bcc {
        println!("bench: bcc memleak: n/a ({why})");
    }
    let libc_dir = match tools::private_libc() {
        Ok(dir) => Some(dir),
        Err(e) => {
            println!("bench: warning: no private libc copy ({e:#}); using the system libc");
            None
        }
    };
    let has_sampling = tools::tracer_has_flag(&tracer, "--sample-bytes");

    let quick = args.quick;
    let rounds = args.rounds.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let iterations = args.iterations.unwrap_or(if quick { 150_000 } else { 1_000_000 });
    let tornado_seconds = args.tornado_seconds.unwrap_or(if quick { 3.0 } else { 10.0 });
    let tmp = util::target_dir().join("bench/tmp");
    util::remove_dir(&tmp)?;
    util::mkdirs(&tmp)?;
    let ctx = Ctx {
        repo: util::repo_root(),
        python: python.clone(),
        memray: memray.clone(),
        tracer: tracer.clone(),
        bcc: bcc.clone().ok(),
        libc_dir,
        tmp: tmp.clone(),
        iterations,
        tornado_seconds,
        tornado_threads: args.tornado_threads,
        counter: Default::default(),
        tag: format!("tracer-bench-{}", std::process::id()),
    };
    let machine = tools::machine(&python, memray.as_deref());

    // The configurations; those that cannot run here are listed with the reason.
    let sample = args.sample_bytes.to_string();
    let full = Config { key: "full", label: "tracer record -p PID".into(), tool: Tool::Tracer(vec![]) };
    let mut configs = vec![full.clone()];
    let mut unavailable: Vec<(Config, String)> = Vec::new();
    let sampled = Config {
        key: "sampled",
        label: format!("tracer record -p PID --sample-bytes {sample}"),
        tool: Tool::Tracer(vec!["--sample-bytes".into(), sample.clone()]),
    };
    if has_sampling {
        configs.push(sampled.clone());
    } else {
        unavailable.push((sampled.clone(), "n/a (not built yet: the tracer rejects --sample-bytes)".into()));
    }
    let memray_cfg = Config { key: "memray", label: "memray run (in-process)".into(), tool: Tool::Memray };
    match (&memray, args.no_memray) {
        (_, true) => unavailable.push((memray_cfg, "left out (--no-memray)".into())),
        (None, _) => unavailable.push((memray_cfg, "n/a (memray not installed)".into())),
        (Some(_), false) => configs.push(memray_cfg),
    }
    let bcc_cfg = Config { key: "bcc", label: "bcc memleak-bpfcc -p PID".into(), tool: Tool::Bcc };
    match &bcc {
        Ok(_) => configs.push(bcc_cfg),
        Err(why) if args.no_bcc => unavailable.push((bcc_cfg, why.clone())),
        Err(why) => unavailable.push((bcc_cfg, format!("n/a ({why})"))),
    }
    configs.push(Config {
        key: "holders",
        label: "tracer record -p PID --holders-only".into(),
        tool: Tool::Tracer(vec!["--holders-only".into()]),
    });
    if !args.only.is_empty() {
        for (cfg, why) in configs
            .iter()
            .filter(|c| !args.only.iter().any(|k| k == c.key))
            .map(|c| (c.clone(), "left out (--only)".to_string()))
            .collect::<Vec<_>>()
        {
            unavailable.push((cfg, why));
        }
        configs.retain(|c| args.only.iter().any(|k| k == c.key));
    }
    let base = Config { key: "untraced", label: "untraced".into(), tool: Tool::None };

    println!(
        "bench: {rounds} round(s) of bench/workload.py --iterations {iterations} under: untraced, {}; load average {}",
        configs.iter().map(|c| c.key).collect::<Vec<_>>().join(", "),
        machine.loadavg
    );
    let workload = interleave(&ctx, &base, &configs, rounds, runs::workload, "workload");

    let levers_iterations = if quick { levers::QUICK_ITERATIONS } else { levers::ITERATIONS };
    let levers = (!args.no_levers && args.only.is_empty()).then(|| {
        let mut lctx = ctx.clone();
        lctx.iterations = levers_iterations;
        let configs = levers::configs(args.sample_bytes);
        println!(
            "bench: {rounds} round(s) of the levers (bench/workload.py --iterations {levers_iterations}): {}",
            configs.iter().map(|c| c.key).collect::<Vec<_>>().join(", ")
        );
        interleave(&lctx, &base, &configs, rounds, runs::workload, "levers")
    });

    let tornado = if args.no_tornado {
        None
    } else {
        let mut tc = vec![full.clone()];
        if has_sampling {
            tc.push(sampled.clone());
        }
        println!(
            "bench: {rounds} round(s) of the Tornado app, {tornado_seconds} s of load each, {} threads",
            args.tornado_threads
        );
        Some(interleave(&ctx, &base, &tc, rounds, runs::tornado, "tornado"))
    };
    let host = if args.no_host || (!args.only.is_empty() && !args.only.iter().any(|k| k == host::HOST)) {
        None
    } else {
        println!(
            "bench: {rounds} round(s) of bench/workload.py traced alone vs with --all beside {} idle CPython processes",
            host::IDLE
        );
        match host::run(&ctx, &base, rounds) {
            Ok(h) => Some(h),
            Err(e) => {
                println!("bench: host mode: could not run: {e:#}");
                None
            }
        }
    };
    let _ = fs::remove_dir_all(&tmp);

    let command = format!("cargo xtask bench{}", if quick { " --quick" } else { "" });
    let results = render::Results {
        command,
        machine,
        rounds,
        iterations,
        sample_bytes: args.sample_bytes,
        tornado_seconds,
        tornado_threads: args.tornado_threads,
        workload,
        unavailable,
        tornado,
        levers,
        levers_iterations,
        host,
        end_loadavg: tools::loadavg(),
        minutes: start.elapsed().as_secs_f64() / 60.0,
        note: args.note.clone(),
    };
    let text = render::markdown(&results);
    println!("\n{}", render::terminal(&results));
    if !quick || args.write {
        let path = if args.output.is_absolute() { args.output.clone() } else { util::repo_root().join(&args.output) };
        // The soak's section is `cargo xtask soak`'s: kept as it was.
        let old = fs::read_to_string(&path).unwrap_or_default();
        let text = match crate::soak::section_of(&old) {
            Some(soak) => crate::soak::replace_section(&text, soak),
            None => text,
        };
        fs::write(&path, text)?;
        println!("bench: wrote {}", path.display());
    }
    println!("bench: done in {}", elapsed(start));
    Ok(0)
}

/// The runs of one configuration over the rounds.
pub struct Series {
    pub cfg: Config,
    pub runs: Vec<Run>,
    /// value / mean(value of the untraced runs before and after), per round
    pub ratios: Vec<f64>,
    pub errors: Vec<String>,
}

/// Untraced, C1, untraced, C2, untraced, ... per round (the order of the Cs rotates by round).
fn interleave(
    ctx: &Ctx,
    base: &Config,
    configs: &[Config],
    rounds: u32,
    run: fn(&Ctx, &Config) -> Result<Run>,
    what: &str,
) -> (Series, Vec<Series>) {
    let mut baseline = Series { cfg: base.clone(), runs: vec![], ratios: vec![], errors: vec![] };
    let mut series: Vec<Series> =
        configs.iter().map(|c| Series { cfg: c.clone(), runs: vec![], ratios: vec![], errors: vec![] }).collect();
    let k = configs.len();
    let run_base = |baseline: &mut Series, round: u32| -> Option<f64> {
        match run(ctx, base) {
            Ok(r) => {
                println!("bench: {what} round {round}: {:<9} {}", base.key, render::value_text(what, r.value));
                let v = r.value;
                baseline.runs.push(r);
                Some(v)
            }
            Err(e) => {
                println!("bench: {what} round {round}: untraced failed: {e:#}");
                baseline.errors.push(format!("{e:#}"));
                None
            }
        }
    };
    for round in 1..=rounds {
        let mut before = run_base(&mut baseline, round);
        for j in 0..k {
            let i = (j + round as usize - 1) % k;
            let s = &mut series[i];
            if matches!(s.cfg.tool, Tool::Bcc) {
                let tracers = proc::pids_named("tracer");
                if !tracers.is_empty() {
                    let msg = format!(
                        "skipped: a `tracer` process is running (pid {tracers:?}); bcc never runs beside another uprobe tracer"
                    );
                    println!("bench: {what} round {round}: bcc {msg}");
                    s.errors.push(msg);
                    continue;
                }
            }
            let result = run(ctx, &s.cfg);
            let after = run_base(&mut baseline, round);
            match result {
                Ok(r) => {
                    let neighbours: Vec<f64> = before.iter().chain(after.iter()).copied().collect();
                    let ratio = (!neighbours.is_empty())
                        .then(|| r.value / (neighbours.iter().sum::<f64>() / neighbours.len() as f64));
                    println!(
                        "bench: {what} round {round}: {:<9} {}{}",
                        s.cfg.key,
                        render::value_text(what, r.value),
                        ratio.map(|x| format!("  ({})", render::ratio_text(what, x))).unwrap_or_default()
                    );
                    if let Some(x) = ratio {
                        s.ratios.push(x);
                    }
                    s.runs.push(r);
                }
                Err(e) => {
                    println!("bench: {what} round {round}: {} failed: {e:#}", s.cfg.key);
                    s.errors.push(format!("{e:#}"));
                }
            }
            before = after;
        }
    }
    (baseline, series)
}
