//! Deciding what a leak is. This is the one place that does it, for allocation stacks (outstanding
//! bytes) and for holders (container lengths) alike.
//!
//! # How a series is judged
//!
//! Every interval the collector records one value per stack (outstanding bytes) or holder (number
//! of items). `judge` reads that time series and gives a verdict:
//!
//! * **leak**: the value grows steadily until the end of the recording, and the growth is
//!   memory that stays;
//! * **growing**: it grows, but the evidence is not yet conclusive (too few samples, too short a
//!   time, too noisy, or the allocations turn over instead of staying);
//! * **bounded**: it grew, then levelled off (caches, pools, arenas that are reused);
//! * **stable**: no meaningful growth: flat, allocated at the start and never changed, went up
//!   and down (request buffers, GC sawtooth), or shrank.
//!
//! The judgement follows these steps. The numbers in brackets are the defaults (bytes / items).
//!
//! 1. **Clean.** Samples whose time or value is not a finite number are ignored. Growth is
//!    measured from the series itself, not from zero: a value already high at the first sample
//!    counts for nothing.
//! 2. **Noise.** The sample-to-sample jitter is estimated robustly (median absolute deviation of
//!    the first and of the second differences, the smaller of the two). Steady growth, a change
//!    of slope and occasional steps (pymalloc arenas) count as no noise; only scatter counts. A
//!    change must exceed 3x that jitter to matter [noise_k 3].
//! 3. **Anything at all?** If the series never moved by more than the minimum total growth
//!    [64 KiB / 20 items] (nor more than its noise), it is *stable* ("flat at ...").
//! 4. **Kept level and onset.** At each sample the kept level is the lowest value the series
//!    takes from then to the end: memory that was never given back. The growing part starts at
//!    the last sample where the kept level is still at the series' minimum (within noise). A
//!    series whose last sample is back at its minimum, or that rose only in its last one or two
//!    samples, is *stable* ("went up and down, nothing kept"). So a GC sawtooth or a freed
//!    request buffer never has a growing part longer than its last rise, and a leak that starts
//!    halfway has its growing part start there.
//! 5. **New ground.** The growing part must either have raised the kept level (before its final
//!    run up) by at least the minimum total growth and a quarter of its rise, or end above
//!    everything the series reached before that final run up by at least the minimum total
//!    growth and half of its rise. A rise back to where the series already was (the last tooth
//!    of a sawtooth, the next 3 MB spike) is *stable*. A noisy series that fails this only
//!    because of its scatter is still taken as growing from its first sample when statistics
//!    show the trend: it never fell by more than twice the noise tolerance, Mann-Kendall
//!    z >= 3 and Kendall's tau >= 0.3 over the whole series, and the Theil-Sen rise over the
//!    window is at least the minimum total growth.
//! 6. **Plateau.** The growing part is cut into thirds by time. If the median of the last third
//!    is less than 10% of the rise above the median of the middle third [plateau_share 0.1],
//!    and the Theil-Sen slope of the last third is under half the average rate, growth has
//!    stopped: *bounded* ("grew to ... in ..., then flat for ..."). Not when the last third
//!    still rose by more than the minimum total growth (and the noise) at least half as fast
//!    as the middle third: that is a steady leak under a start-up surge, where a cache nearing
//!    its size slows down. Growth has also stopped when the series has a **flat tail**: since
//!    the kept level came within max(noise, 10% of the rise) of the end level, it lasted at
//!    least a quarter of the growing part [PLATEAU_TAIL_SHARE 0.25] and three intervals, at
//!    least twice the longest pause between earlier rises of the kept level, and rose from its
//!    start to its end by less than the minimum total growth (and the noise); the tolerance
//!    must be at most a quarter of the rise. This catches a bounded cache whose fill
//!    ends after the middle third: when `record -p` attaches to a full LRU, only entries made
//!    in the window are tracked, so its stack rises until the cache has turned over once, then
//!    stays flat. (Until then it cannot be told from a leak: record longer than the caches
//!    take to turn over.) If the whole rise
//!    happened within the first sampling interval of the recording (start-up imports,
//!    allocations made before the window; sample times count from the start of the recording),
//!    it is *stable* ("allocated at start"). A steady leak
//!    makes a third of its rise in the last third, and an arena leak with 1 MiB steps every few
//!    seconds still steps there: growth must be visible in the last third of the growing part.
//! 7. **Fell back.** If the end level (median of the last few samples) is below the highest of
//!    the thirds' medians by more than half of the rise [drop_share 0.5], the series went up and
//!    came down: *bounded* ("peaked at ..., fell back to ...").
//! 8. **Rate.** The growth rate is the Theil-Sen slope (median of the slopes between all pairs
//!    of samples) over the growing part: robust to spikes and to steps. Growth slower than the
//!    minimum rate [64 B/s / 0.01 items/s] is ignored (*stable*).
//! 9. **Leak or growing.** It is a *leak* when all of these hold, otherwise *growing* (the
//!    reason says which failed):
//!    * at least 5 samples in the growing part [min_points 5];
//!    * it lasted at least 8 seconds [min_window_s 8];
//!    * it is steady: Kendall's tau over the growing part (pairs of samples where the later is
//!      higher minus pairs where it is lower, over all pairs) is at least 0.5, i.e. at least
//!      three quarters of the sample pairs went up [min_steadiness 0.5], and the Mann-Kendall
//!      trend test gives z >= 2.0 [min_trend_z 2.0] (5 increasing samples just pass);
//!    * when allocation facts are known (stacks): the oldest outstanding allocation is at least
//!      half as old as the growing part [min_oldest_age_share 0.5]. If every outstanding
//!      allocation is young, memory is turning over, not being kept: *growing*.
//!
//! **A program that ended normally is judged as a whole run.** Its final view is taken when the
//! interpreter starts finalizing, and what is still growing then will never be given back: a
//! line whose memory kept growing for at least a third of the run [WHOLE_RUN_SHARE 1/3] (after
//! start-up, to the end) meets the duration condition even when that is under 8 seconds, so a
//! 3-second test that keeps 5 MiB is a *leak*. (A third, not a half: the interpreter's start-up
//! and imports take half a second of a 1-second script.) Every other condition stays (5 samples, steady,
//! significant, memory that stays); sampling is dense at the start of a recording
//! (`session::driver`), so even a 1-second script has them. Start-up imports and a cache filled
//! once stopped growing (step 6), a buffer freed before exit fell back (steps 4 and 7). Runs of
//! 24 seconds and more, and every view other than finalization (a duration, a signal, a live
//! snapshot), are judged by the criteria above unchanged (`Criteria::for_view`).
//!
//! **Under probe windows** (`--window ON/EVERY`) a block's death is seen only when a window sees
//! its free or its address handed out again, or a sweep between windows reads its chunk as
//! freed. A cache that hands a freed block at once to an identical new one keeps the address
//! looking alive until a window happens to see the reuse, which can take several periods. So
//! under windows `leak` also needs:
//!    * growth lasting at least 8 periods [WINDOW_PERIODS 8] (80 s at `1s/10s`);
//!    * memory that does not turn over: of the blocks still live when a window closed, fewer
//!      than 2, or under 5%, found dead later (`Outlived`).
//!
//! The fraction of allocations still outstanding (live / allocated) is not a gate: a stack whose
//! allocations are mostly freed but whose outstanding total still grows steadily is churn plus a
//! leak, and is a leak. The live fraction lowers or raises the score and is shown in the reason.
//!
//! # Score and ranking
//!
//! The score is leak evidence in [0, 1], never size. Each verdict has its own band: stable
//! 0-0.05, bounded 0.10-0.25, growing 0.30-0.55, leak 0.60-1.00. Within the band it rises with
//! steadiness (Kendall's tau), the duration and number of samples of the growing part, the share
//! of the recording it covers and, for stacks, the fraction of allocations still live. A 20 KB/s
//! leak therefore always outranks a 30 MB cache that stopped growing, and a 3 MB buffer that is
//! freed after every request is not a suspect at all. `rank` orders by verdict (leak, growing,
//! bounded, stable), then score, then current value.
//!
//! # Why these defaults
//!
//! * 64 KiB total growth: below a pymalloc arena (256 KiB to 1 MiB) and a few requests' worth of
//!   a typical leak (20 KB per request), above the jitter of interpreter free lists.
//! * 64 B/s: 5.5 MB a day; slower growth is not what pages anyone. Holders: 20 items and
//!   0.01 items/s (36 an hour).
//! * 5 samples and 8 s: with the 2 s default interval, a leak can be called after 8-10 seconds;
//!   fewer samples cannot make the trend test significant.
//!
//! # Bounded memory over long runs
//!
//! A series keeps at most 512 points, evenly spaced in time, the newest sample always last
//! (`crate::series`): judging an hour costs what judging a minute does.
//!
//! # Where the steps live
//!
//! `judge` is the list of the steps above; each is a function of `steps` (the robust statistics
//! they use are in `stats`). When an allocating line judged as a whole replaces its call paths is
//! decided in `sites`, which judged stacks and holders a report lists in `listing`, and which test
//! of a pytest suite leaked in `pytest`.

mod listing;
mod loss;
mod pytest;
mod sites;
mod stats;
mod steps;
#[cfg(test)]
pub(crate) mod tests;

pub use listing::{holders_to_list, stacks_to_list, ListedStack};
pub use loss::{inconclusive, Capacities};
pub use pytest::{by_test, judge_test_path, merge_tests};
pub use sites::{merge_call_paths, CallPath};
use steps::{Points, Shape};

use crate::report::{FinalView, Verdict};
use crate::series::Series;
pub use crate::units::Unit;

/// At finalization, the share of the run growth must have lasted to be long enough for `leak`
/// (see "A program that ended normally" above).
pub const WHOLE_RUN_SHARE: f64 = 1.0 / 3.0;

/// Thresholds; `Default` gives the documented defaults for bytes. The CLI's `--min-leak-bytes`
/// sets `min_total_growth` and `--min-growth` sets `min_growth_per_s` of `for_bytes()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Criteria {
    /// Samples in the growing part needed before anything can be `leak`.
    pub min_points: usize,
    /// Seconds the growing part must last before it can be `leak`.
    pub min_window_s: f64,
    /// Growth slower than this (units per second) is ignored.
    pub min_growth_per_s: f64,
    /// Growth smaller than this in total (units) is ignored.
    pub min_total_growth: f64,
    /// Kendall's tau over the growing part needed for `leak` (0.5: three quarters of the untied
    /// sample pairs went up).
    pub min_steadiness: f64,
    /// Mann-Kendall z needed for `leak`.
    pub min_trend_z: f64,
    /// Rise in the last third (median of last third minus median of middle third), as a share
    /// of the whole rise, below which growth has stopped (`bounded`).
    pub plateau_share: f64,
    /// Fall from the peak, as a share of the rise, above which the series went up and down.
    pub drop_share: f64,
    /// How many times the estimated jitter a change must exceed to count.
    pub noise_k: f64,
    /// With allocation facts: the oldest outstanding allocation must be at least this share of
    /// the growing part's duration old for `leak`.
    pub min_oldest_age_share: f64,
    /// Share of the timeline in which allocations were recorded (1: all of it). With probe
    /// windows (`--window`) the series is sampled once per window, so a leaking line rises by
    /// its true rate times this share: step 8 divides the measured rate by it. Not a threshold
    /// the user sets; the report builder sets it from the windows.
    pub recorded_share: f64,
}

impl Default for Criteria {
    fn default() -> Self {
        Self::for_bytes()
    }
}

impl Criteria {
    /// Defaults for allocation stacks (outstanding bytes).
    pub fn for_bytes() -> Self {
        Criteria {
            min_points: 5,
            min_window_s: 8.0,
            min_growth_per_s: 64.0,
            min_total_growth: 64.0 * 1024.0,
            min_steadiness: 0.5,
            min_trend_z: 2.0,
            plateau_share: 0.1,
            drop_share: 0.5,
            noise_k: 3.0,
            min_oldest_age_share: 0.5,
            recorded_share: 1.0,
        }
    }

    /// Defaults for holders (container lengths, in items).
    pub fn for_items() -> Self {
        Criteria { min_growth_per_s: 0.01, min_total_growth: 20.0, ..Self::for_bytes() }
    }

    /// The criteria under probe windows opening every `every_s` seconds and recording
    /// `recorded_share` of the time (see the module docs).
    pub fn under_windows(&self, every_s: f64, recorded_share: f64) -> Criteria {
        let mut c = self.clone();
        c.recorded_share = recorded_share;
        if every_s.is_finite() && every_s > 0.0 {
            c.min_window_s = c.min_window_s.max(WINDOW_PERIODS * every_s);
        }
        c
    }

    /// The criteria a report taken at `view`, `run_s` seconds into the recording, is judged by:
    /// at finalization (the program ended normally) growth lasting [`WHOLE_RUN_SHARE`] of the
    /// run is long enough, never more than `min_window_s`; any other view, unchanged.
    pub fn for_view(&self, view: FinalView, run_s: f64) -> Criteria {
        let mut c = self.clone();
        if view == FinalView::Finalization && run_s.is_finite() && run_s > 0.0 {
            c.min_window_s = c.min_window_s.min(WHOLE_RUN_SHARE * run_s);
        }
        c
    }

    /// Negative or non-finite thresholds would make every comparison false; use the defaults'
    /// meaning instead (0 for a bad minimum, the default for a bad share).
    fn sane(&self) -> Criteria {
        let d = Criteria::for_bytes();
        let nonneg = |x: f64, dflt: f64| if x.is_finite() && x >= 0.0 { x } else { dflt };
        Criteria {
            min_points: self.min_points,
            min_window_s: nonneg(self.min_window_s, 0.0),
            min_growth_per_s: nonneg(self.min_growth_per_s, 0.0),
            min_total_growth: nonneg(self.min_total_growth, 0.0),
            min_steadiness: if self.min_steadiness.is_finite() { self.min_steadiness } else { d.min_steadiness },
            min_trend_z: if self.min_trend_z.is_finite() { self.min_trend_z } else { d.min_trend_z },
            plateau_share: nonneg(self.plateau_share, d.plateau_share),
            drop_share: nonneg(self.drop_share, d.drop_share),
            noise_k: nonneg(self.noise_k, d.noise_k),
            min_oldest_age_share: nonneg(self.min_oldest_age_share, d.min_oldest_age_share),
            recorded_share: if self.recorded_share > 0.0 && self.recorded_share <= 1.0 {
                self.recorded_share
            } else {
                1.0
            },
        }
    }
}

/// Extra facts about a stack that are not in the series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evidence {
    /// Allocations from this stack during the window.
    pub allocs: u64,
    /// Of which still outstanding.
    pub live_count: u64,
    /// Age of the oldest outstanding allocation.
    pub oldest_age_s: f64,
    /// Length of the recording.
    pub window_s: f64,
    /// Under probe windows: allocations still live when a window closed, and how many of those
    /// died later (0 and 0 without windows).
    pub outlived: Outlived,
}

/// Allocations that outlived a probe window, and of those, how many died later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outlived {
    pub survivors: u64,
    pub died: u64,
}

impl std::ops::Add for Outlived {
    type Output = Outlived;
    fn add(self, o: Outlived) -> Outlived {
        Outlived { survivors: self.survivors + o.survivors, died: self.died + o.died }
    }
}

impl Outlived {
    /// Enough survivors died later that memory turns over, though the deaths seen are too few
    /// to keep the series flat (between windows a dead block handed out again to an identical
    /// one looks alive until a later window sees its address reused).
    pub fn turns_over(&self) -> bool {
        self.died >= MIN_OUTLIVED_DEATHS && self.died * 20 >= self.survivors
    }
}

/// Periods of probe windows a growth must last to be `leak` (module docs).
const WINDOW_PERIODS: f64 = 8.0;

/// Deaths of window survivors that show turnover (with at least 5% of them).
const MIN_OUTLIVED_DEATHS: u64 = 2;

impl Evidence {
    /// live_count / allocs, when there were allocations.
    pub fn live_fraction(&self) -> Option<f64> {
        if self.allocs == 0 {
            None
        } else {
            Some((self.live_count.min(self.allocs)) as f64 / self.allocs as f64)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Leak evidence in [0, 1]; bands: stable < 0.1 <= bounded <= 0.25 < growing <= 0.55 < leak.
    pub score: f64,
    /// Robust slope (units/s): over the growing part for leak and growing, over the last third
    /// for bounded (about 0), over the whole series for stable.
    pub growth_per_s: f64,
    /// One line a person reads: why this verdict.
    pub reason: String,
}

/// Judges a series by the steps of the module doc; each step either passes what it found to the
/// next or ends the judgement with its verdict.
pub fn judge(series: &Series, evidence: Option<&Evidence>, criteria: &Criteria, unit: Unit) -> Judgement {
    let c = criteria.sane();
    match judge_steps(series, evidence, &c, unit) {
        Ok(j) | Err(j) => j,
    }
}

/// `Err` is a verdict reached before the last step.
fn judge_steps(series: &Series, evidence: Option<&Evidence>, c: &Criteria, unit: Unit) -> Result<Judgement, Judgement> {
    let p = Points::clean(series.points(), unit)?; // 1. Clean.
    let shape = Shape::of(&p, c); // 2. Noise (and the series' level and range).
    steps::anything_at_all(&p, &shape, c)?; // 3. Anything at all?
    let onset = steps::onset(&p, &shape); // 4. Kept level and onset.
    let growth = steps::new_ground(&p, &shape, &onset, c)?; // 5. New ground.
    steps::plateau(&p, &shape, &onset, &growth, c)?; // 6. Plateau, 7. fell back.
    let rate = steps::rate(&p, &growth, c)?; // 8. Rate.
    Ok(steps::leak_or_growing(&p, &growth, rate, evidence, c)) // 9. Leak or growing.
}

impl Verdict {
    /// Leak or growing: still growing at the end of the recording, so a suspect. Bounded and
    /// stable ones are cleared.
    pub fn is_growing(self) -> bool {
        matches!(self, Verdict::Leak | Verdict::Growing)
    }
}

/// Orders judged items for the report: by verdict class (leak, growing, bounded, stable), then
/// score descending, then current value descending. Returns indices. Ties keep input order;
/// NaN scores or values sort last within their class.
pub fn rank(items: &[(Verdict, f64, f64)]) -> Vec<usize> {
    fn desc(a: f64, b: f64) -> std::cmp::Ordering {
        match (a.is_nan(), b.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => b.total_cmp(&a),
        }
    }
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.sort_by(|&i, &j| {
        let (vi, si, ci) = items[i];
        let (vj, sj, cj) = items[j];
        vi.cmp(&vj).then_with(|| desc(si, sj)).then_with(|| desc(ci, cj))
    });
    idx
}
