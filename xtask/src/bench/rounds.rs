//! Interleaved rounds: untraced, C1, untraced, C2, untraced, ... so that each configuration's
//! ratio is taken against the untraced runs just before and after it and machine drift cancels
//! out.

use anyhow::Result;

use super::format::{ratio_text, value_text};
use super::proc;
use super::runs::{Config, Ctx, Run, Tool};

/// The runs of one configuration over the rounds.
pub struct Series {
    pub cfg: Config,
    pub runs: Vec<Run>,
    /// value / mean(value of the untraced runs before and after), per round
    pub ratios: Vec<f64>,
    pub errors: Vec<String>,
}

impl Series {
    fn new(cfg: &Config) -> Self {
        Series { cfg: cfg.clone(), runs: vec![], ratios: vec![], errors: vec![] }
    }
}

/// One section's result: the untraced runs and one series per configuration.
pub type Section = (Series, Vec<Series>);

/// Untraced, C1, untraced, C2, untraced, ... per round (the order of the Cs rotates by round).
pub fn interleave(
    ctx: &Ctx,
    base: &Config,
    configs: &[Config],
    rounds: u32,
    run: fn(&Ctx, &Config) -> Result<Run>,
    what: &str,
) -> Section {
    let mut baseline = Series::new(base);
    let mut series: Vec<Series> = configs.iter().map(Series::new).collect();
    let k = configs.len();
    if k == 0 {
        return (baseline, series); // nothing to compare the untraced runs with
    }
    let run_base = |baseline: &mut Series, round: u32| -> Option<f64> {
        match run(ctx, base) {
            Ok(r) => {
                println!("bench: {what} round {round}: {:<9} {}", base.key, value_text(what, r.value));
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
            let s = &mut series[(j + round as usize - 1) % k];
            if let Some(msg) = bcc_blocked(&s.cfg) {
                println!("bench: {what} round {round}: bcc {msg}");
                s.errors.push(msg);
                continue;
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
                        value_text(what, r.value),
                        ratio.map(|x| format!("  ({})", ratio_text(what, x))).unwrap_or_default()
                    );
                    s.ratios.extend(ratio);
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

/// bcc never runs beside another uprobe tracer: the reason to skip its run, if a `tracer`
/// process exists.
fn bcc_blocked(cfg: &Config) -> Option<String> {
    if !matches!(cfg.tool, Tool::Bcc) {
        return None;
    }
    let tracers = proc::pids_named("tracer");
    (!tracers.is_empty()).then(|| {
        format!("skipped: a `tracer` process is running (pid {tracers:?}); bcc never runs beside another uprobe tracer")
    })
}
