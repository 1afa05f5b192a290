//! `cargo xtask bench`: the tracer's cost measured side by side with its peers.
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
//! - probe windows (`--window 1s/10s` and `auto`): their costs against untraced runs, and
//!   whether the planted leaks are still found, and how soon (see `windows.rs`;
//!   `--only windows` runs this leg alone and replaces only its section of BENCHMARKS.md).
//!
//! It prints a table (median over rounds) with pass/fail against the project's targets and,
//! unless `--quick` (then only with `--write`), writes BENCHMARKS.md. The measured processes run
//! against a private copy of libc (their own inode), so probes elsewhere on the machine do not
//! touch them. bcc runs only while no `tracer` process exists on the machine.

//!
//! The modules, in the order a run flows through them: `tools` (what is installed, the machine),
//! `runs` (one measured run of one configuration; `proc` watches the processes, `report` reads the
//! tracer's JSON report), `rounds` (the
//! interleaving), `levers`, `host` and `windows` (the sections beyond the workload; `planted`
//! finds the windows leg's planted leaks in the reports), `stats` and `format`
//! (figures), `targets` (PASS/FAIL) and `render` (the tables).

mod census;
mod format;
mod host;
mod levers;
mod planted;
pub mod proc;
mod render;
pub mod report;
mod rounds;
mod runs;
mod stats;
mod targets;
pub mod tools;
mod windows;

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::build;
use crate::util::{self, elapsed};
use rounds::{interleave, Section};
use runs::{Config, Ctx, Tool};

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
    /// Leave out the probe-windows leg (`--window 1s/10s` and `auto` against untraced runs)
    #[arg(long)]
    pub no_windows: bool,
    /// Run only these workload configurations (comma-separated keys: full, sampled, memray,
    /// bcc, holders) and sections (tornado, host, windows), e.g. to debug one of them;
    /// `--only windows` writes only the probe-windows section of BENCHMARKS.md
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Do not install anything (use what target/ and the machine already have)
    #[arg(long)]
    pub skip_setup: bool,
    /// Do not build (use the existing target/release/tracer)
    #[arg(long)]
    pub skip_build: bool,
    /// Run only the census leg (one scan of every tracked object on a 1M- and a ~100k-object
    /// heap) and replace the Census section of BENCHMARKS.md
    #[arg(long)]
    pub census: bool,
}

pub fn bench(args: BenchArgs) -> Result<i32> {
    let start = Instant::now();
    if !util::is_root() {
        bail!("the benchmark attaches eBPF probes and needs root.\nhint: run it as root (sudo -E cargo xtask bench)");
    }
    let tracer = build::prepare(args.skip_setup, args.skip_build)?;
    let _machine = util::machine_lock()?;
    if args.census {
        return census_only(&args, &tracer);
    }
    let plan = Plan::new(&args);
    let env = environment(&args, &plan, tracer)?;
    let machine = tools::machine(&env.ctx.python, env.ctx.memray.as_deref());
    let base = Config { key: "untraced", label: "untraced".into(), tool: Tool::None };
    if args.only.iter().all(|k| k == windows::KEY) && !args.only.is_empty() {
        return windows_only(&args, &plan, &env.ctx, &base, &machine, start);
    }

    let (configs, unavailable) = workload_configs(&args, &env);
    println!(
        "bench: {} round(s) of bench/workload.py --iterations {} under: untraced, {}; load average {}",
        plan.rounds,
        plan.iterations,
        configs.iter().map(|c| c.key).collect::<Vec<_>>().join(", "),
        machine.loadavg
    );
    let workload = interleave(&env.ctx, &base, &configs, plan.rounds, runs::workload, "workload");
    let levers = levers_section(&args, &plan, &env.ctx, &base);
    let tornado = tornado_section(&args, &plan, &env, &base);
    let host = host_section(&args, &plan, &env.ctx, &base);
    let windows = windows_section(&args, &plan, &env.ctx, &base);
    let _ = fs::remove_dir_all(&env.ctx.tmp);

    let results = render::Results {
        command: plan.command(&args),
        machine,
        rounds: plan.rounds,
        iterations: plan.iterations,
        sample_bytes: args.sample_bytes,
        tornado_seconds: plan.tornado_seconds,
        tornado_threads: args.tornado_threads,
        workload,
        unavailable,
        tornado,
        levers,
        levers_iterations: plan.levers_iterations,
        host,
        windows,
        end_loadavg: tools::loadavg(),
        minutes: start.elapsed().as_secs_f64() / 60.0,
        note: args.note.clone(),
    };
    println!("\n{}", render::terminal(&results));
    if !plan.quick || args.write {
        write_markdown(&args, &results)?;
    }
    println!("bench: done in {}", elapsed(start));
    Ok(0)
}

/// The sizes of this invocation: the full benchmark or `--quick`, with the flags' overrides.
struct Plan {
    quick: bool,
    rounds: u32,
    iterations: u64,
    levers_iterations: u64,
    tornado_seconds: f64,
}

impl Plan {
    fn command(&self, args: &BenchArgs) -> String {
        let mut c = String::from("cargo xtask bench");
        if !args.only.is_empty() {
            c.push_str(&format!(" --only {}", args.only.join(",")));
        }
        if self.quick {
            c.push_str(" --quick");
        }
        if let Some(r) = args.rounds {
            c.push_str(&format!(" --rounds {r}"));
        }
        c
    }
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        let quick = args.quick;
        Plan {
            quick,
            rounds: args.rounds.unwrap_or(if quick { 1 } else { 3 }).max(1),
            iterations: args.iterations.unwrap_or(if quick { 150_000 } else { 1_000_000 }),
            levers_iterations: if quick { levers::QUICK_ITERATIONS } else { levers::ITERATIONS },
            tornado_seconds: args.tornado_seconds.unwrap_or(if quick { 3.0 } else { 10.0 }),
        }
    }
}

/// What the runs need from this machine, and what it lacks.
struct Env {
    ctx: Ctx,
    /// Why bcc's memleak cannot run, if it cannot.
    bcc_missing: Option<String>,
    /// The tracer accepts `--sample-bytes`.
    has_sampling: bool,
}

fn environment(args: &BenchArgs, plan: &Plan, tracer: PathBuf) -> Result<Env> {
    let python = tools::bench_venv(!args.skip_setup)?;
    let memray = python.with_file_name("memray");
    let memray = util::is_executable(&memray).then_some(memray);
    let bcc = if args.no_bcc {
        Err("left out (--no-bcc)".to_string())
    } else if !args.only.is_empty() && !args.only.iter().any(|k| k == "bcc") {
        Err("left out (--only)".to_string())
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
    let tmp = util::target_dir().join("bench/tmp");
    util::remove_dir(&tmp)?;
    util::mkdirs(&tmp)?;
    let (bcc, bcc_missing) = match bcc {
        Ok(b) => (Some(b), None),
        Err(why) => (None, Some(why)),
    };
    let ctx = Ctx {
        repo: util::repo_root(),
        python,
        memray,
        tracer,
        bcc,
        libc_dir,
        tmp,
        iterations: plan.iterations,
        workload_args: Vec::new(),
        tornado_seconds: plan.tornado_seconds,
        tornado_threads: args.tornado_threads,
        counter: Default::default(),
        tag: format!("tracer-bench-{}", std::process::id()),
    };
    Ok(Env { ctx, bcc_missing, has_sampling })
}

fn full_config() -> Config {
    Config { key: "full", label: "tracer record -p PID".into(), tool: Tool::Tracer(vec![]) }
}

fn sampled_config(sample_bytes: u64) -> Config {
    let sample = sample_bytes.to_string();
    Config {
        key: "sampled",
        label: format!("tracer record -p PID --sample-bytes {sample}"),
        tool: Tool::Tracer(vec!["--sample-bytes".into(), sample]),
    }
}

/// The workload's configurations, and those that cannot run here with the reason.
fn workload_configs(args: &BenchArgs, env: &Env) -> (Vec<Config>, Vec<(Config, String)>) {
    let mut configs = vec![full_config()];
    let mut unavailable: Vec<(Config, String)> = Vec::new();
    let sampled = sampled_config(args.sample_bytes);
    if env.has_sampling {
        configs.push(sampled);
    } else {
        unavailable.push((sampled, "n/a (not built yet: the tracer rejects --sample-bytes)".into()));
    }
    let memray = Config { key: "memray", label: "memray run (in-process)".into(), tool: Tool::Memray };
    match (&env.ctx.memray, args.no_memray) {
        (_, true) => unavailable.push((memray, "left out (--no-memray)".into())),
        (None, _) => unavailable.push((memray, "n/a (memray not installed)".into())),
        (Some(_), false) => configs.push(memray),
    }
    let bcc = Config { key: "bcc", label: "bcc memleak-bpfcc -p PID".into(), tool: Tool::Bcc };
    match &env.bcc_missing {
        None => configs.push(bcc),
        Some(why) if args.no_bcc => unavailable.push((bcc, why.clone())),
        Some(why) => unavailable.push((bcc, format!("n/a ({why})"))),
    }
    configs.push(Config {
        key: "holders",
        label: "tracer record -p PID --holders-only".into(),
        tool: Tool::Tracer(vec!["--holders-only".into()]),
    });
    if !args.only.is_empty() {
        let (kept, left): (Vec<Config>, Vec<Config>) =
            configs.into_iter().partition(|c| args.only.iter().any(|k| k == c.key));
        unavailable.extend(left.into_iter().map(|c| (c, "left out (--only)".to_string())));
        configs = kept;
    }
    (configs, unavailable)
}

/// The levers: the workload, shorter, under variants of the tracer (none with --only).
fn levers_section(args: &BenchArgs, plan: &Plan, ctx: &Ctx, base: &Config) -> Option<Section> {
    if args.no_levers || !args.only.is_empty() {
        return None;
    }
    let mut lctx = ctx.clone();
    lctx.iterations = plan.levers_iterations;
    let configs = levers::configs(args.sample_bytes);
    println!(
        "bench: {} round(s) of the levers (bench/workload.py --iterations {}): {}",
        plan.rounds,
        plan.levers_iterations,
        configs.iter().map(|c| c.key).collect::<Vec<_>>().join(", ")
    );
    Some(interleave(&lctx, base, &configs, plan.rounds, runs::workload, "levers"))
}

/// Tornado's throughput, untraced vs the tracer at full fidelity (and sampled).
fn tornado_section(args: &BenchArgs, plan: &Plan, env: &Env, base: &Config) -> Option<Section> {
    if args.no_tornado || !selected(args, "tornado") {
        return None;
    }
    let mut configs = vec![full_config()];
    if env.has_sampling {
        configs.push(sampled_config(args.sample_bytes));
    }
    println!(
        "bench: {} round(s) of the Tornado app, {} s of load each, {} threads",
        plan.rounds, plan.tornado_seconds, args.tornado_threads
    );
    Some(interleave(&env.ctx, base, &configs, plan.rounds, runs::tornado, "tornado"))
}

/// The workload traced alone vs with `--all` beside idle processes (`--only host` selects it).
fn host_section(args: &BenchArgs, plan: &Plan, ctx: &Ctx, base: &Config) -> Option<Section> {
    if args.no_host || !selected(args, host::HOST) {
        return None;
    }
    println!(
        "bench: {} round(s) of bench/workload.py traced alone vs with --all beside {} idle CPython processes",
        plan.rounds,
        host::IDLE
    );
    host::run(ctx, base, plan.rounds).map_err(|e| println!("bench: host mode: could not run: {e:#}")).ok()
}

/// The section `key` runs: no `--only`, or `--only` naming it.
fn selected(args: &BenchArgs, key: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|k| k == key)
}

/// The probe-windows leg (`--only windows` selects it).
fn windows_section(args: &BenchArgs, plan: &Plan, ctx: &Ctx, base: &Config) -> Option<windows::Windows> {
    if args.no_windows || !selected(args, windows::KEY) {
        return None;
    }
    Some(windows::run(ctx, base, windows::Sizes::new(plan.quick), plan.rounds))
}

/// `--only windows`: the probe-windows leg alone, written into its section of BENCHMARKS.md
/// (the other sections kept as they are).
fn windows_only(
    args: &BenchArgs,
    plan: &Plan,
    ctx: &Ctx,
    base: &Config,
    machine: &tools::Machine,
    start: Instant,
) -> Result<i32> {
    let w = windows::run(ctx, base, windows::Sizes::new(plan.quick), plan.rounds);
    let _ = fs::remove_dir_all(&ctx.tmp);
    let context = format!(
        "`{}` ({:.1} minutes, {}; tracer {}, CPython {}, {} CPUs)",
        plan.command(args),
        start.elapsed().as_secs_f64() / 60.0,
        machine.date,
        machine.tracer_commit,
        machine.python,
        machine.nproc
    );
    let section = windows::markdown(&w, &context);
    println!("\n{section}");
    if !plan.quick || args.write {
        let path = output_path(args);
        let old = fs::read_to_string(&path).unwrap_or_default();
        fs::write(&path, crate::soak::replace_named(&old, windows::HEADING, &section))?;
        println!("bench: wrote {}", path.display());
    }
    println!("bench: done in {}", elapsed(start));
    Ok(0)
}

fn output_path(args: &BenchArgs) -> PathBuf {
    if args.output.is_absolute() {
        args.output.clone()
    } else {
        util::repo_root().join(&args.output)
    }
}

/// BENCHMARKS.md (or --output), keeping the Soak section `cargo xtask soak` wrote.
/// `--census`: the census leg alone, written into its section of BENCHMARKS.md.
fn census_only(args: &BenchArgs, tracer: &std::path::Path) -> Result<i32> {
    // The census needs no package: any CPython with a census does (the bench venv's first).
    let pyenv = std::path::PathBuf::from("/root/.pyenv/versions/3.11.7/bin/python3");
    let python = match tools::bench_venv(!args.skip_setup) {
        Ok(p) => p,
        Err(_) if util::is_executable(&pyenv) => pyenv,
        Err(e) => return Err(e),
    };
    let tmp = util::target_dir().join("bench/tmp-census");
    util::remove_dir(&tmp)?;
    util::mkdirs(&tmp)?;
    let section = census::run(tracer, &python, &tmp)?;
    println!("\n{section}");
    let path = output_path(args);
    let old = fs::read_to_string(&path).unwrap_or_default();
    fs::write(&path, crate::soak::replace_named(&old, census::HEADING, &section))?;
    println!("bench: wrote {}", path.display());
    Ok(0)
}

fn write_markdown(args: &BenchArgs, results: &render::Results) -> Result<()> {
    let path = output_path(args);
    let old = fs::read_to_string(&path).unwrap_or_default();
    let mut text = render::markdown(results);
    // Sections this run did not measure are kept as they were.
    let mut kept = vec![census::HEADING];
    if results.windows.is_none() {
        kept.push(windows::HEADING);
    }
    for heading in kept {
        if let Some(c) = crate::soak::section_named(&old, heading) {
            text = crate::soak::replace_named(&text, heading, c);
        }
    }
    let text = match crate::soak::section_of(&old) {
        Some(soak) => crate::soak::replace_section(&text, soak),
        None => text,
    };
    fs::write(&path, text)?;
    println!("bench: wrote {}", path.display());
    Ok(())
}
