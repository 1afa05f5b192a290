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
//! A `Series` keeps at most `cap` points (512 by default). When full, adjacent points are merged
//! pairwise (the later one is kept) and from then on only every second sample is kept (every
//! fourth after the next merge, ...), so the points stay evenly spaced in time while the newest
//! sample is always the last point.

use crate::report::Verdict;

/// Default number of points a `Series` keeps.
pub const DEFAULT_CAPACITY: usize = 512;

/// Most points used for the pairwise statistics (Theil-Sen, Mann-Kendall); longer parts are
/// thinned evenly, which keeps `judge` well under a millisecond per series.
const MAX_PAIRWISE: usize = 200;

// ---------------------------------------------------------------------------------------------
// Series
// ---------------------------------------------------------------------------------------------

/// A bounded time series: at most `cap` points (default 512); when full, adjacent points are
/// merged pairwise (keeping the later value; the series then has half the resolution) so memory
/// stays bounded over hours.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    points: Vec<(f64, f64)>,
    cap: usize,
    /// Raw samples per stored point (1, 2, 4, ...): doubles at every merge.
    stride: usize,
    /// Raw samples folded into the last point while it is still provisional (0: committed).
    pending: usize,
}

impl Default for Series {
    fn default() -> Self {
        Self::new()
    }
}

impl Series {
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// `cap` below 2 is raised to 2.
    pub fn with_capacity(cap: usize) -> Self {
        let cap = cap.max(2);
        Series { points: Vec::with_capacity(cap), cap, stride: 1, pending: 0 }
    }

    /// Adds a sample. Non-finite times or values are ignored, and so is a sample older than the
    /// last one; a sample at the same time as the last one replaces its value.
    pub fn push(&mut self, t_s: f64, value: f64) {
        if !t_s.is_finite() || !value.is_finite() {
            return;
        }
        if let Some(last) = self.points.last_mut() {
            if t_s < last.0 {
                return;
            }
            if t_s == last.0 {
                last.1 = value;
                return;
            }
        }
        if self.pending > 0 {
            // The last point stands for the current stride-sized group: move it forward.
            if let Some(last) = self.points.last_mut() {
                *last = (t_s, value);
            }
            self.pending += 1;
            if self.pending >= self.stride {
                self.pending = 0;
            }
            return;
        }
        if self.points.len() >= self.cap {
            self.compact();
        }
        self.points.push((t_s, value));
        if self.stride > 1 {
            self.pending = 1;
        }
    }

    fn compact(&mut self) {
        let n = self.points.len();
        let mut w = 0;
        let mut r = 0;
        while r < n {
            // Keep the later point of each pair; an unpaired last point stays.
            let keep = if r + 1 < n { r + 1 } else { r };
            self.points[w] = self.points[keep];
            w += 1;
            r += 2;
        }
        self.points.truncate(w);
        self.stride = self.stride.saturating_mul(2);
    }

    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    #[cfg(test)]
    pub fn last(&self) -> Option<(f64, f64)> {
        self.points.last().copied()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.points.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Criteria, evidence, judgement
// ---------------------------------------------------------------------------------------------

/// What a series measures: outstanding bytes (stacks) or items (holders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Bytes,
    Items,
}

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
        }
    }

    /// Defaults for holders (container lengths, in items).
    pub fn for_items() -> Self {
        Criteria { min_growth_per_s: 0.01, min_total_growth: 20.0, ..Self::for_bytes() }
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
}

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

// ---------------------------------------------------------------------------------------------
// judge
// ---------------------------------------------------------------------------------------------

pub fn judge(series: &Series, evidence: Option<&Evidence>, criteria: &Criteria, unit: Unit) -> Judgement {
    let c = criteria.sane();
    let mut pts: Vec<(f64, f64)> =
        series.points().iter().copied().filter(|(t, v)| t.is_finite() && v.is_finite()).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = pts.len();
    if n == 0 {
        return stable(0.0, 0.0, "no samples".to_string());
    }
    let ts: Vec<f64> = pts.iter().map(|p| p.0).collect();
    let vs: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let window = ts[n - 1] - ts[0];
    if n == 1 || window <= 0.0 {
        return stable(0.0, 0.0, format!("flat at {} (one sample)", amount(vs[n - 1], unit)));
    }

    let whole_slope = theil_sen(&ts, &vs);
    let sigma = step_noise(&vs);
    let tol = c.noise_k * sigma;
    let base = vs.iter().copied().fold(f64::INFINITY, f64::min);
    let top = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = top - base;
    let sig = c.min_total_growth.max(tol);
    let level = median(&vs);
    let updown = |peak: f64| {
        if range < 0.1 * level.abs() {
            format!("flat at {} (±{})", amount(level, unit), amount(range / 2.0, unit).trim_end_matches(" items"))
        } else {
            format!("went up and down (peak {}), nothing kept", amount(peak, unit))
        }
    };

    // 3. Anything at all?
    if range <= 0.0 || range < sig {
        let reason = if range > 0.0 && range >= c.min_total_growth {
            updown(top)
        } else {
            format!("flat at {}", amount(level, unit))
        };
        return stable(0.0, whole_slope, reason);
    }

    // 4. Kept level (suffix minimum) and onset.
    let mut kept = vs.clone();
    for i in (0..n - 1).rev() {
        kept[i] = kept[i].min(kept[i + 1]);
    }
    let onset_tol = tol.max(1e-9 * range);
    let k = (0..n).rev().find(|&i| kept[i] <= base + onset_tol).unwrap_or(0);
    let first_level = median(&vs[..(n / 8).clamp(1, 5)]);
    let shrank_or_updown = |end: f64| -> String {
        if first_level - end >= 0.8 * range {
            format!("shrank from {} to {}", amount(first_level, unit), amount(end, unit))
        } else {
            updown(top)
        }
    };
    // 5. The growing part must be new ground: either kept growth (the kept level rose before the
    // final run up) or a rise above everything seen before that final run up. A noisy series
    // whose growth shows only statistically gets a second chance below.
    let structural = (|| -> Result<(usize, f64), String> {
        if k + 1 >= n || ts[n - 1] - ts[k] <= 0.0 {
            return Err(shrank_or_updown(vs[n - 1]));
        }
        let m = n - k;
        let lvl_end = median(&vs[n - (m / 8).clamp(1, 5)..]);
        let rise = lvl_end - vs[k];
        // A rise seen in one or two samples at the very end cannot be told from a spike yet.
        if m < 3 {
            return Err(format!("{} (rose at the last sample)", updown(top)));
        }
        let e = (k + 1..n).rev().find(|&i| vs[i] < vs[i - 1] - onset_tol).unwrap_or(k);
        let kept_rise = kept[e] - kept[k];
        let prior_high = vs[..e].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let beyond = lvl_end - prior_high.max(vs[k]);
        let floor = c.min_total_growth.max(tol);
        let new_ground = (kept_rise >= floor && kept_rise >= 0.25 * rise) || (beyond >= floor && beyond >= 0.5 * rise);
        if rise < sig || !new_ground {
            return Err(shrank_or_updown(lvl_end));
        }
        Ok((k, vs[k]))
    })();
    let (k, lvl_start) = match structural {
        Ok(x) => x,
        Err(reason) => {
            // A trend that only statistics can see: Mann-Kendall z >= 3 over the whole series,
            // Kendall's tau >= 0.3 and a fitted rise of at least the minimum total growth.
            // Only for noise: a series that fell by more than twice the noise tolerance went up
            // and down for real.
            let mut run_max = f64::NEG_INFINITY;
            let mut drawdown = 0.0f64;
            for &v in &vs {
                run_max = run_max.max(v);
                drawdown = drawdown.max(run_max - v);
            }
            let (_, pv) = thin(&ts, &vs, MAX_PAIRWISE);
            let (tau_all, z_all) = mann_kendall(&pv);
            let trend = drawdown <= 2.0 * tol
                && z_all >= c.min_trend_z.max(3.0)
                && tau_all >= 0.3
                && whole_slope * window >= c.min_total_growth.max(f64::MIN_POSITIVE);
            if !trend {
                return stable(0.02, whole_slope, reason);
            }
            let q = (n / 8).clamp(1, 5);
            (0, median(&vs[..q]))
        }
    };

    let (st, sv) = (&ts[k..], &vs[k..]);
    let m = sv.len();
    let dur = st[m - 1] - st[0];
    let q = (m / 8).clamp(1, 5);
    let lvl_end = median(&sv[m - q..]);
    let rise = lvl_end - lvl_start;
    if dur <= 0.0 || rise <= 0.0 || rise < c.min_total_growth {
        return stable(0.02, whole_slope, updown(top));
    }

    // 6. Plateau: medians of the thirds of the growing part; 7. or fell back from the peak.
    let third = |lo: f64, hi: f64, last: bool| -> Vec<f64> {
        st.iter()
            .zip(sv)
            .filter(|(t, _)| {
                let x = **t - st[0];
                x >= lo && (x < hi || (last && x <= hi))
            })
            .map(|(_, v)| *v)
            .collect()
    };
    let mid = third(dur / 3.0, 2.0 * dur / 3.0, false);
    let end3 = third(2.0 * dur / 3.0, dur, true);
    let first3 = third(0.0, dur / 3.0, false);
    let thirds = [median(&first3), median(&mid), median(&end3)];
    let peak = thirds.iter().copied().fold(lvl_end, f64::max);
    let fell_back = peak - lvl_end > c.drop_share * (peak - lvl_start);
    let tail_start = n - end3.len().max(1);
    let tail_slope = theil_sen(&ts[tail_start..], &vs[tail_start..]).max(0.0);
    // A steady leak under a start-up surge grows little against the surge, but as fast in the
    // last third as in the middle one; a cache approaching its size slows down.
    let mid_start = n - (mid.len() + end3.len()).max(1);
    let mid_slope =
        theil_sen(&ts[mid_start..tail_start.max(mid_start + 1)], &vs[mid_start..tail_start.max(mid_start + 1)]);
    let still_growing =
        thirds[2] - thirds[1] >= c.min_total_growth.max(tol) && tail_slope >= 0.5 * mid_slope && tail_slope > 0.0;
    let plateau = !mid.is_empty()
        && !end3.is_empty()
        && thirds[2] - thirds[1] < c.plateau_share * rise
        && tail_slope < 0.5 * rise / dur
        && !still_growing;
    // 6b. Or growth visibly stopped: a flat tail since the kept level reached its end level.
    // When did the kept level reach the plateau?
    let reach_tol = tol.max(0.1 * rise);
    let ri = (k..n).find(|&i| kept[i] >= lvl_end - reach_tol).unwrap_or(n - 1);
    let stopped = !plateau && !fell_back && growth_stopped(&ts, &vs, &kept, k, ri, rise, reach_tol, onset_tol, &c);
    if plateau || fell_back || stopped {
        if fell_back {
            return Judgement {
                verdict: Verdict::Bounded,
                score: 0.1,
                growth_per_s: tail_slope,
                reason: format!(
                    "peaked at {}, fell back to {} (+{} kept)",
                    amount(peak, unit),
                    amount(lvl_end, unit),
                    amount(rise, unit)
                ),
            };
        }
        {
            let fill_s = ts[ri] - ts[k];
            let flat_s = ts[n - 1] - ts[ri];
            // Only when the series starts with the recording (times count from its start).
            if k == 0 && ri <= 1 && ts[0] <= ts[1] - ts[0] {
                return stable(
                    0.0,
                    tail_slope,
                    format!("allocated at start ({}), unchanged for {}", amount(lvl_end, unit), human_duration(flat_s)),
                );
            }
            let fill_share = if fill_s + flat_s > 0.0 { fill_s / (fill_s + flat_s) } else { 0.0 };
            return Judgement {
                verdict: Verdict::Bounded,
                score: 0.1 + 0.15 * fill_share.clamp(0.0, 1.0),
                growth_per_s: tail_slope,
                reason: format!(
                    "grew to {} in {}, then flat for {}",
                    amount(lvl_end, unit),
                    human_duration(fill_s),
                    human_duration(flat_s)
                ),
            };
        }
    }

    // 8. Rate.
    let (pt, pv) = thin(st, sv, MAX_PAIRWISE);
    let slope = theil_sen(&pt, &pv);
    let rate = if slope > 0.0 { slope } else { rise / dur };
    if rate < c.min_growth_per_s {
        return stable(
            0.05,
            rate,
            format!(
                "{} for {}, below the minimum growth of {}",
                signed_rate(rate, unit),
                human_duration(dur),
                signed_rate(c.min_growth_per_s, unit).trim_start_matches('+')
            ),
        );
    }

    // 9. Leak or growing.
    let (tau, z) = mann_kendall(&pv);
    let mut not_yet: Vec<String> = Vec::new();
    if m < c.min_points {
        not_yet.push(format!("only {} samples (need {})", m, c.min_points));
    }
    if dur < c.min_window_s {
        not_yet.push(format!("only {} (need {})", human_duration(dur), human_duration(c.min_window_s)));
    }
    if tau < c.min_steadiness || z < c.min_trend_z {
        not_yet.push(format!("noisy (rose in {:.0}% of sample pairs)", 100.0 * (1.0 + tau.max(-1.0)) / 2.0));
    }
    let live = evidence.and_then(|e| e.live_fraction());
    if let Some(e) = evidence {
        if e.live_count > 0
            && e.oldest_age_s.is_finite()
            && e.oldest_age_s > 0.0
            && e.oldest_age_s < c.min_oldest_age_share * dur
        {
            not_yet.push(format!(
                "oldest live allocation only {} old (turnover, not retention)",
                human_duration(e.oldest_age_s)
            ));
        }
    }

    // Evidence strength in [0, 1].
    let steady = ((tau - 0.2) / 0.8).clamp(0.0, 1.0);
    let dur_f = if c.min_window_s > 0.0 { 1.0 - (-dur / (2.0 * c.min_window_s)).exp() } else { 1.0 };
    let pts_f = 1.0 - (-(m as f64) / (2.0 * c.min_points.max(1) as f64)).exp();
    let recording = evidence.map(|e| e.window_s).filter(|w| w.is_finite()).unwrap_or(0.0).max(window);
    let cover = (dur / recording).clamp(0.0, 1.0);
    let (mut acc, mut wsum) = (0.35 * steady + 0.15 * dur_f + 0.15 * pts_f + 0.10 * cover, 0.75);
    if let Some(lf) = live {
        acc += 0.25 * lf;
        wsum += 0.25;
    }
    let strength = (acc / wsum).clamp(0.0, 1.0);

    let mut reason = format!("{} for {}", signed_rate(rate, unit), human_duration(dur));
    if let Some(e) = evidence {
        if let Some(lf) = live {
            reason.push_str(&format!(", {} of {} allocations still live", percent(lf), human_count(e.allocs as f64)));
        }
        if e.live_count > 0 && e.oldest_age_s.is_finite() && e.oldest_age_s > 0.0 {
            reason.push_str(&format!(", oldest {}", human_duration(e.oldest_age_s)));
        }
    }
    if not_yet.is_empty() {
        Judgement { verdict: Verdict::Leak, score: 0.6 + 0.4 * strength, growth_per_s: rate, reason }
    } else {
        reason.push_str("; not yet conclusive: ");
        reason.push_str(&not_yet.join(", "));
        Judgement { verdict: Verdict::Growing, score: 0.3 + 0.25 * strength, growth_per_s: rate, reason }
    }
}

/// Share of the growing part a flat tail must last for growth to count as stopped (step 6b).
const PLATEAU_TAIL_SHARE: f64 = 0.25;

/// Step 6b: growth stopped at `ri` (where the kept level reached the end level within
/// `reach_tol`) and the series stayed flat since. The flat tail must be clean (`reach_tol` at
/// most a quarter of the rise), last at least three intervals and a quarter of the growing part
/// [PLATEAU_TAIL_SHARE], be at least twice as long as the longest pause between rises of the
/// kept level before it (so a leak that grows in steps is not cut at its last step), and rise
/// from its start to its end (medians of a few samples) by less than the minimum total growth
/// (or the noise tolerance, if larger). A steady leak cannot pass: its kept level comes within
/// 10% of the end level only in the last tenth of the growing part.
#[allow(clippy::too_many_arguments)]
fn growth_stopped(
    ts: &[f64],
    vs: &[f64],
    kept: &[f64],
    k: usize,
    ri: usize,
    rise: f64,
    reach_tol: f64,
    onset_tol: f64,
    c: &Criteria,
) -> bool {
    let n = ts.len();
    if ri <= k || ri + 4 > n || rise <= 0.0 || reach_tol > 0.25 * rise {
        return false;
    }
    let dur = ts[n - 1] - ts[k];
    let flat_s = ts[n - 1] - ts[ri];
    if dur <= 0.0 || flat_s < PLATEAU_TAIL_SHARE * dur {
        return false;
    }
    let mut last_rise = ts[k];
    let mut longest_pause = 0.0f64;
    for i in k + 1..=ri {
        if kept[i] > kept[i - 1] + onset_tol {
            longest_pause = longest_pause.max(ts[i] - last_rise);
            last_rise = ts[i];
        }
    }
    if flat_s < 2.0 * longest_pause {
        return false;
    }
    // Medians of a few samples at each end: robust to noise, blind to the shape in between (a
    // cache nearing its size slows down inside the tolerance; a step in the tail counts).
    let q = ((n - ri) / 3).clamp(1, 5);
    let tail_rise = median(&vs[n - q..]) - median(&vs[ri..ri + q]);
    tail_rise < c.min_total_growth.max(onset_tol)
}

fn stable(score: f64, growth: f64, reason: String) -> Judgement {
    Judgement { verdict: Verdict::Stable, score, growth_per_s: if growth.is_finite() { growth } else { 0.0 }, reason }
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

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Jitter of one sample, robustly: the smaller of two estimates from the median absolute
/// deviation of the first differences (blind to steady growth and to occasional steps) and of
/// the second differences (blind to changes of slope, e.g. a leak that starts halfway). Both
/// are about the standard deviation for pure scatter.
fn step_noise(vs: &[f64]) -> f64 {
    if vs.len() < 3 {
        return 0.0;
    }
    let mad = |d: &[f64]| {
        let md = median(d);
        let dev: Vec<f64> = d.iter().map(|x| (x - md).abs()).collect();
        1.4826 * median(&dev)
    };
    let d1: Vec<f64> = vs.windows(2).map(|w| w[1] - w[0]).collect();
    let s1 = mad(&d1) / std::f64::consts::SQRT_2;
    if vs.len() < 4 {
        return s1;
    }
    let d2: Vec<f64> = d1.windows(2).map(|w| w[1] - w[0]).collect();
    let s2 = mad(&d2) / 6f64.sqrt();
    s1.min(s2)
}

/// At most `max` points, evenly spread, always including the first and the last.
fn thin(ts: &[f64], vs: &[f64], max: usize) -> (Vec<f64>, Vec<f64>) {
    let n = ts.len();
    if n <= max || max < 2 {
        return (ts.to_vec(), vs.to_vec());
    }
    let mut t = Vec::with_capacity(max);
    let mut v = Vec::with_capacity(max);
    for j in 0..max {
        let i = (j * (n - 1)) / (max - 1);
        t.push(ts[i]);
        v.push(vs[i]);
    }
    (t, v)
}

/// Theil-Sen slope: the median of the slopes between all pairs of points.
fn theil_sen(ts: &[f64], vs: &[f64]) -> f64 {
    let (ts, vs) = thin(ts, vs, MAX_PAIRWISE);
    let n = ts.len();
    let mut slopes = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let dt = ts[j] - ts[i];
            if dt > 0.0 {
                let s = (vs[j] - vs[i]) / dt;
                if s.is_finite() {
                    slopes.push(s);
                }
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    let mid = slopes.len() / 2;
    let (_, hi, _) = slopes.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let hi = *hi;
    if slopes.len() % 2 == 1 {
        hi
    } else {
        let lo = slopes[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + hi) / 2.0
    }
}

/// Kendall's tau (concordant minus discordant pairs over all pairs) and the Mann-Kendall z
/// (with continuity correction, no tie correction: conservative for step-like series).
fn mann_kendall(vs: &[f64]) -> (f64, f64) {
    let n = vs.len();
    if n < 2 {
        return (0.0, 0.0);
    }
    let scale = vs.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let eps = scale * 1e-12;
    let mut s: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            let d = vs[j] - vs[i];
            if d > eps {
                s += 1;
            } else if d < -eps {
                s -= 1;
            }
        }
    }
    let nf = n as f64;
    let pairs = nf * (nf - 1.0) / 2.0;
    let tau = s as f64 / pairs;
    let var = nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0;
    let z = if s > 0 {
        (s as f64 - 1.0) / var.sqrt()
    } else if s < 0 {
        (s as f64 + 1.0) / var.sqrt()
    } else {
        0.0
    };
    (tau, z)
}

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

/// "512 B", "120 KiB", "1.2 MiB", "3.0 GiB": binary units, one decimal below 10.
pub fn human_bytes(b: f64) -> String {
    if !b.is_finite() {
        return "?".to_string();
    }
    if b < 0.0 {
        return format!("-{}", human_bytes(-b));
    }
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024.0 {
        return format!("{:.0} B", b);
    }
    let mut x = b;
    let mut u = 0;
    while u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
        // Stop unless the rounded figure would read as 1024 of this unit.
        let rounded = if x < 10.0 { (x * 10.0).round() / 10.0 } else { x.round() };
        if rounded < 1024.0 {
            break;
        }
    }
    if x < 9.95 {
        format!("{:.1} {}", x, UNITS[u])
    } else {
        format!("{:.0} {}", x, UNITS[u])
    }
}

/// "2.5 s", "20 s", "10 min", "9m58s", "2 h", "1h05m", "3d04h".
pub fn human_duration(s: f64) -> String {
    if !s.is_finite() {
        return "?".to_string();
    }
    if s < 0.0 {
        return format!("-{}", human_duration(-s));
    }
    if s < 9.95 {
        let r = (s * 10.0).round() / 10.0;
        return if r.fract() == 0.0 { format!("{:.0} s", r) } else { format!("{:.1} s", r) };
    }
    let secs = s.round() as u64;
    if secs < 60 {
        return format!("{} s", secs);
    }
    if secs < 3600 {
        let (m, r) = (secs / 60, secs % 60);
        return if r == 0 { format!("{} min", m) } else { format!("{}m{:02}s", m, r) };
    }
    let mins = (s / 60.0).round() as u64;
    if mins < 24 * 60 {
        let (h, r) = (mins / 60, mins % 60);
        return if r == 0 { format!("{} h", h) } else { format!("{}h{:02}m", h, r) };
    }
    let hours = (s / 3600.0).round() as u64;
    let (d, r) = (hours / 24, hours % 24);
    if r == 0 {
        format!("{} d", d)
    } else {
        format!("{}d{:02}h", d, r)
    }
}

/// "3,000": a whole number with thousands separators.
pub fn human_count(x: f64) -> String {
    if !x.is_finite() {
        return "?".to_string();
    }
    let neg = x < 0.0;
    let digits = format!("{:.0}", x.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if neg && out != "0" {
        out.insert(0, '-');
    }
    out
}

/// An amount in the series' unit: "1.2 MiB" or "2,000 items".
fn amount(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => human_bytes(x),
        Unit::Items => {
            let s = human_count(x);
            if s == "1" {
                "1 item".to_string()
            } else {
                format!("{} items", s)
            }
        }
    }
}

/// "+1.2 MiB/min", "+3.0 MiB/s", "+141 items/s", "+30 items/min".
fn signed_rate(r: f64, unit: Unit) -> String {
    let sign = if r < 0.0 { "-" } else { "+" };
    let a = r.abs();
    match unit {
        Unit::Bytes => {
            if a >= 1024.0 * 1024.0 {
                format!("{}{}/s", sign, human_bytes(a))
            } else {
                format!("{}{}/min", sign, human_bytes(a * 60.0))
            }
        }
        Unit::Items => {
            let (x, per) = if a >= 1.0 { (a, "s") } else { (a * 60.0, "min") };
            let num = if x >= 10.0 { human_count(x) } else { format!("{:.1}", x) };
            format!("{}{} items/{}", sign, num, per)
        }
    }
}

fn percent(f: f64) -> String {
    let p = 100.0 * f;
    if p > 0.0 && p < 1.0 {
        "<1%".to_string()
    } else if p < 100.0 && p > 99.0 {
        ">99%".to_string()
    } else {
        format!("{:.0}%", p)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: f64 = 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;

    /// Deterministic pseudo-noise (xorshift64*), uniform in [-1, 1).
    struct Rng(u64);
    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn sym(&mut self) -> f64 {
            2.0 * self.unit() - 1.0
        }
    }

    fn series(duration_s: f64, interval_s: f64, f: impl FnMut(f64) -> f64) -> Series {
        let mut f = f;
        let mut s = Series::new();
        let n = (duration_s / interval_s).round() as usize;
        for i in 0..=n {
            let t = i as f64 * interval_s;
            s.push(t, f(t));
        }
        s
    }

    fn bytes(s: &Series) -> Judgement {
        judge(s, None, &Criteria::for_bytes(), Unit::Bytes)
    }

    fn items(s: &Series) -> Judgement {
        judge(s, None, &Criteria::for_items(), Unit::Items)
    }

    fn check(j: &Judgement, v: Verdict) {
        assert_eq!(j.verdict, v, "{j:?}");
        assert!((0.0..=1.0).contains(&j.score), "{j:?}");
        assert!(j.growth_per_s.is_finite(), "{j:?}");
        assert!(!j.reason.is_empty() && !j.reason.contains('\n'), "{j:?}");
    }

    #[test]
    fn linear_growth_is_leak() {
        // ~20 KB per request at ~50 req/s: ~1 MB/s, 60 s at 2 s.
        let s = series(60.0, 2.0, |t| 5.0 * MIB + 1_000_000.0 * t);
        let j = bytes(&s);
        check(&j, Verdict::Leak);
        assert!((j.growth_per_s - 1_000_000.0).abs() < 1.0, "{j:?}");
        assert!(j.score > 0.8, "{j:?}");
        assert!(j.reason.starts_with("+"), "{}", j.reason);
    }

    #[test]
    fn leak_reason_with_evidence() {
        let s = series(600.0, 2.0, |t| 1.2 * MIB / 60.0 * t);
        let e = Evidence { allocs: 3000, live_count: 2940, oldest_age_s: 598.0, window_s: 600.0 };
        let j = judge(&s, Some(&e), &Criteria::for_bytes(), Unit::Bytes);
        check(&j, Verdict::Leak);
        assert_eq!(j.reason, "+1.2 MiB/min for 10 min, 98% of 3,000 allocations still live, oldest 9m58s");
    }

    #[test]
    fn churn_plus_growth_is_still_leak_with_lower_score() {
        let s = series(60.0, 2.0, |t| 100.0 * KIB * t);
        let kept = Evidence { allocs: 3000, live_count: 2900, oldest_age_s: 59.0, window_s: 60.0 };
        let churn = Evidence { allocs: 300_000, live_count: 3000, oldest_age_s: 59.0, window_s: 60.0 };
        let a = judge(&s, Some(&kept), &Criteria::for_bytes(), Unit::Bytes);
        let b = judge(&s, Some(&churn), &Criteria::for_bytes(), Unit::Bytes);
        check(&a, Verdict::Leak);
        check(&b, Verdict::Leak);
        assert!(a.score > b.score, "{a:?} {b:?}");
        assert!(b.reason.contains("1% of 300,000 allocations"), "{}", b.reason);
    }

    #[test]
    fn young_outstanding_memory_is_turnover_not_leak() {
        let s = series(60.0, 2.0, |t| 100.0 * KIB * t);
        let e = Evidence { allocs: 300_000, live_count: 3000, oldest_age_s: 3.0, window_s: 60.0 };
        let j = judge(&s, Some(&e), &Criteria::for_bytes(), Unit::Bytes);
        check(&j, Verdict::Growing);
        assert!(j.reason.contains("turnover"), "{}", j.reason);
    }

    #[test]
    fn step_then_flat_is_bounded() {
        // An LRU cache filling to 30 MiB over the first 6 s, then exactly flat.
        let s = series(60.0, 1.0, |t| 2.0 * MIB + 30.0 * MIB * (t / 6.0).min(1.0));
        let j = bytes(&s);
        check(&j, Verdict::Bounded);
        assert!(j.reason.starts_with("grew to 32 MiB in 6 s, then flat for 54 s"), "{}", j.reason);
        assert_eq!(j.growth_per_s, 0.0);
    }

    #[test]
    fn cache_filling_later_in_the_window_is_bounded() {
        let s = series(60.0, 2.0, |t| if t < 20.0 { 0.0 } else { 8.0 * MIB * ((t - 20.0) / 10.0).min(1.0) });
        check(&bytes(&s), Verdict::Bounded);
    }

    /// What `record -p` sees of a full LRU cache that keeps evicting entries made before the
    /// recording: only the replacements are tracked, so the stack's outstanding memory rises
    /// until the whole cache has turned over, then stays flat.
    fn lru_turnover(window_s: f64, turnover_s: f64, seed: u64) -> Series {
        let mut r = Rng::new(seed);
        let per_s = 200.0 / turnover_s;
        let mut inserted = 0.0f64;
        series(window_s, 1.0, |t| {
            if t > 0.0 {
                inserted += (per_s * (1.0 + 0.3 * r.sym())).round();
            }
            4_033.0 * inserted.min(200.0) + 6_000.0
        })
    }

    #[test]
    fn cache_turning_over_past_the_middle_of_the_window_is_bounded() {
        // The thirds test needs the fill to end before the middle third; a flat tail of a
        // quarter of the growing part is enough when nothing paused like that before.
        for seed in 0..20 {
            for (window, turnover) in [(20.0, 9.5), (20.0, 13.0), (30.0, 20.0), (15.0, 8.0)] {
                let j = bytes(&lru_turnover(window, turnover, seed));
                assert_eq!(j.verdict, Verdict::Bounded, "{seed} {window} {turnover}: {j:?}");
                check(&j, Verdict::Bounded);
                assert!(j.reason.starts_with("grew to 794 KiB in"), "{seed} {window} {turnover}: {}", j.reason);
            }
        }
    }

    #[test]
    fn cache_nearing_its_size_after_the_middle_is_bounded() {
        // Simulated from tornado_app.py's LRU under loadgen.py's steady mix (21 lookups/s,
        // some hits on entries made before the recording): tracked entries per second.
        let entries = [0, 16, 31, 44, 62, 79, 101, 122, 143, 165, 176, 183, 188, 195, 200, 200, 200, 200, 200, 200];
        let mut s = Series::new();
        for (i, e) in entries.iter().enumerate() {
            s.push(i as f64, 4_033.0 * *e as f64 + 6_000.0);
        }
        let j = bytes(&s);
        check(&j, Verdict::Bounded);
        assert!(j.reason.starts_with("grew to 794 KiB in 11 s, then flat for 8 s"), "{}", j.reason);
    }

    #[test]
    fn cache_still_turning_over_at_the_end_is_not_cleared() {
        // Until the cache has turned over, it grows like a leak: no tail, no plateau.
        for seed in 0..10 {
            let j = bytes(&lru_turnover(12.0, 11.0, seed));
            assert!(matches!(j.verdict, Verdict::Leak | Verdict::Growing), "{seed}: {j:?}");
        }
    }

    #[test]
    fn step_leak_is_not_cut_at_its_last_step() {
        // 1 MiB every 8 s: after the last step the tail is flat for 10 s (over a quarter of the
        // growing part), but the series paused that long before and grew again.
        let s = series(34.0, 1.0, |t| 4.0 * MIB + MIB * (t / 8.0).floor());
        let j = bytes(&s);
        assert!(matches!(j.verdict, Verdict::Leak | Verdict::Growing), "{j:?}");
        // Every 3 s, sampled every second, stopping 6 s before the end: still a pause of at
        // most 3 s before a 6 s tail, and a leak over the 30 s before.
        let s = series(40.0, 1.0, |t| 4.0 * MIB + MIB * (t.min(33.0) / 3.0).floor());
        let j = bytes(&s);
        check(&j, Verdict::Leak);
    }

    #[test]
    fn fast_then_slow_growth_is_still_leak() {
        // 10 MB in the first 5 s, then +100 KB/s to the end: growth never stopped.
        let s = series(30.0, 1.0, |t| if t < 5.0 { 2e6 * t } else { 10e6 + 100e3 * (t - 5.0) });
        let j = bytes(&s);
        check(&j, Verdict::Leak);
    }

    #[test]
    fn noisy_plateau_is_bounded() {
        let mut r = Rng::new(7);
        let s = series(60.0, 1.0, |t| 20.0 * MIB * (t / 10.0).min(1.0) + 0.3 * MIB * r.sym());
        check(&bytes(&s), Verdict::Bounded);
    }

    #[test]
    fn startup_step_is_stable() {
        // Imports: a step during the first interval, then flat.
        let s = series(60.0, 2.0, |t| if t == 0.0 { 1.0 * MIB } else { 25.0 * MIB });
        let j = bytes(&s);
        check(&j, Verdict::Stable);
        assert!(j.reason.starts_with("allocated at start (25 MiB)"), "{}", j.reason);
        // Already allocated at the first sample and never changed.
        let s = series(60.0, 2.0, |_| 25.0 * MIB);
        let j = bytes(&s);
        check(&j, Verdict::Stable);
        assert_eq!(j.reason, "flat at 25 MiB");
    }

    #[test]
    fn gc_sawtooth_is_not_leak() {
        // Rises 2 MiB over 10 s, collected, again; ends in the middle and at the top of a tooth.
        for &end in &[55.0, 59.0, 60.0] {
            let s = series(end, 1.0, |t| 1.0 * MIB + 0.2 * MIB * (t % 10.0));
            let j = bytes(&s);
            check(&j, Verdict::Stable);
            assert!(j.reason.starts_with("went up and down"), "{}", j.reason);
        }
        // A longer period (20 s) sampled every 2 s: the last tooth alone has 10 samples.
        let s = series(58.0, 2.0, |t| 0.1 * MIB * (t % 20.0));
        check(&bytes(&s), Verdict::Stable);
    }

    #[test]
    fn sawtooth_at_any_phase_and_window_is_not_a_suspect() {
        for i in 0..60 {
            let phase = i as f64 / 60.0;
            let period = 8.0 + (i % 5) as f64 * 3.0;
            let end = 30.0 + (i % 7) as f64 * 5.0;
            let interval = if i % 2 == 0 { 1.0 } else { 2.0 };
            let s = series(end, interval, |t| MIB + 0.15 * MIB * ((t + phase * period) % period));
            let j = bytes(&s);
            assert!(matches!(j.verdict, Verdict::Stable | Verdict::Bounded), "{i}: {j:?}");
        }
    }

    #[test]
    fn noisy_growth_is_found_at_any_seed() {
        for seed in 0..50 {
            let mut r = Rng::new(seed);
            // 100 KB/s with +-1 MB of scatter (sd ~ 3 intervals of growth at 2 s).
            let s = series(60.0, 2.0, |t| 20e6 + 100e3 * t + 1e6 * r.sym());
            let j = bytes(&s);
            assert!(matches!(j.verdict, Verdict::Leak | Verdict::Growing), "{seed}: {j:?}");
        }
    }

    #[test]
    fn jitter_around_a_large_level_reads_flat() {
        let mut r = Rng::new(8);
        let s = series(60.0, 2.0, |_| 50.0 * MIB + MIB * r.sym());
        let j = bytes(&s);
        check(&j, Verdict::Stable);
        assert!(j.reason.starts_with("flat at 50 MiB (±"), "{}", j.reason);
    }

    #[test]
    fn judge_is_fast_on_a_full_series() {
        let mut r = Rng::new(4);
        let s = series(1022.0, 2.0, |t| 1e3 * t + 1e5 * r.sym());
        assert_eq!(s.len(), DEFAULT_CAPACITY);
        let t0 = std::time::Instant::now();
        for _ in 0..20 {
            let _ = bytes(&s);
        }
        // Generous even for an unoptimised build on a busy machine.
        assert!(t0.elapsed().as_secs_f64() < 5.0, "{:?}", t0.elapsed());
    }

    #[test]
    fn sawtooth_with_rising_troughs_is_leak() {
        // GC churn on top of a 100 KiB/s leak.
        let s = series(60.0, 1.0, |t| 100.0 * KIB * t + 0.4 * MIB * ((t % 10.0) / 10.0));
        let j = bytes(&s);
        check(&j, Verdict::Leak);
        assert!(j.growth_per_s > 80.0 * KIB && j.growth_per_s < 160.0 * KIB, "{j:?}");
    }

    #[test]
    fn noisy_growth_is_leak() {
        let mut r = Rng::new(42);
        // 200 KiB per 2 s interval, uniform noise of +-300 KiB (sd ~ 0.9 steps).
        let s = series(60.0, 2.0, |t| 10.0 * MIB + 100.0 * KIB * t + 300.0 * KIB * r.sym());
        let j = bytes(&s);
        check(&j, Verdict::Leak);
        assert!((j.growth_per_s - 100.0 * KIB).abs() < 20.0 * KIB, "{j:?}");
    }

    #[test]
    fn very_noisy_growth_is_growing_not_leak() {
        let mut r = Rng::new(3);
        // Trend 1 MiB over the minute, noise +-4 MiB.
        let s = series(60.0, 2.0, |t| 10.0 * MIB + MIB / 60.0 * t * 3.0 + 4.0 * MIB * r.sym());
        let j = bytes(&s);
        assert_ne!(j.verdict, Verdict::Leak, "{j:?}");
    }

    #[test]
    fn leak_starting_halfway_is_leak() {
        let s = series(60.0, 2.0, |t| 3.0 * MIB + if t < 30.0 { 0.0 } else { 20_000.0 * 50.0 * (t - 30.0) });
        let j = bytes(&s);
        check(&j, Verdict::Leak);
        assert!((j.growth_per_s - 1_000_000.0).abs() < 1.0, "{j:?}");
        assert!(j.reason.contains("for 30 s"), "{}", j.reason);
    }

    #[test]
    fn noisy_leak_starting_halfway_is_leak() {
        let mut r = Rng::new(11);
        let s = series(60.0, 1.0, |t| {
            3.0 * MIB + 0.2 * MIB * r.sym() + if t < 30.0 { 0.0 } else { 200.0 * KIB * (t - 30.0) }
        });
        let j = bytes(&s);
        check(&j, Verdict::Leak);
        assert!((j.growth_per_s - 200.0 * KIB).abs() < 40.0 * KIB, "{j:?}");
    }

    #[test]
    fn leak_starting_near_the_end_is_growing() {
        // Starts at 54 s of 60: 4 samples of growth over 6 s.
        let s = series(60.0, 2.0, |t| 3.0 * MIB + if t < 54.0 { 0.0 } else { 1_000_000.0 * (t - 54.0) });
        let j = bytes(&s);
        check(&j, Verdict::Growing);
        assert!(j.reason.contains("not yet conclusive"), "{}", j.reason);
    }

    #[test]
    fn flat_constant_is_stable() {
        let s = series(60.0, 2.0, |_| 120.0 * KIB);
        let j = bytes(&s);
        check(&j, Verdict::Stable);
        assert_eq!(j.reason, "flat at 120 KiB");
        assert_eq!(j.score, 0.0);
    }

    #[test]
    fn small_jitter_is_stable() {
        let mut r = Rng::new(5);
        let s = series(60.0, 2.0, |_| 5.0 * MIB + 8.0 * KIB * r.sym());
        check(&bytes(&s), Verdict::Stable);
    }

    #[test]
    fn arena_steps_are_leak() {
        // pymalloc arenas: +1 MiB every 5 s, sampled every second.
        let s = series(30.0, 1.0, |t| 4.0 * MIB + MIB * (t / 5.0).floor());
        let j = bytes(&s);
        check(&j, Verdict::Leak);
        assert!((j.growth_per_s - MIB / 5.0).abs() < 0.05 * MIB, "{j:?}");
        // Same at the default 2 s interval, with the steps off the sampling grid.
        let s = series(60.0, 2.0, |t| 4.0 * MIB + MIB * ((t + 1.3) / 5.3).floor());
        check(&bytes(&s), Verdict::Leak);
    }

    #[test]
    fn random_buffer_spikes_are_stable() {
        // A 3 MB buffer per request, freed: 0 or 3 MB at random sample times.
        for seed in 1..=40u64 {
            for &p in &[0.1, 0.3, 0.5, 0.7] {
                let mut r = Rng::new(seed);
                let s = series(60.0, 2.0, |_| 200.0 * KIB + if r.unit() < p { 3_000_000.0 } else { 0.0 });
                let j = bytes(&s);
                check(&j, Verdict::Stable);
                assert!(j.score < 0.1);
            }
        }
        let mut r = Rng::new(9);
        let s = series(60.0, 2.0, |_| if r.unit() < 0.5 { 3.25 * MIB } else { 0.0 });
        let j = bytes(&s);
        assert_eq!(j.reason, "went up and down (peak 3.2 MiB), nothing kept");
    }

    #[test]
    fn short_growth_is_growing() {
        let s = series(4.0, 2.0, |t| 1.0 * MIB + 1_000_000.0 * t);
        assert_eq!(s.len(), 3);
        let j = bytes(&s);
        check(&j, Verdict::Growing);
        assert!(j.reason.contains("only 3 samples"), "{}", j.reason);
    }

    #[test]
    fn small_leak_outscores_big_bounded_cache() {
        let leak = bytes(&series(60.0, 2.0, |t| 20.0 * KIB * t));
        let cache = bytes(&series(60.0, 2.0, |t| 30.0 * MIB * (t / 10.0).min(1.0)));
        let buffer = {
            let mut r = Rng::new(1);
            bytes(&series(60.0, 2.0, |_| if r.unit() < 0.5 { 3.0 * MIB } else { 0.0 }))
        };
        check(&leak, Verdict::Leak);
        check(&cache, Verdict::Bounded);
        check(&buffer, Verdict::Stable);
        assert!(leak.score > cache.score && cache.score > buffer.score, "{leak:?} {cache:?} {buffer:?}");
        let order = rank(&[
            (buffer.verdict, buffer.score, 3.0 * MIB),
            (cache.verdict, cache.score, 30.0 * MIB),
            (leak.verdict, leak.score, 1.2 * MIB),
        ]);
        assert_eq!(order, vec![2, 1, 0]);
    }

    #[test]
    fn shrinking_is_stable() {
        let s = series(60.0, 2.0, |t| 50.0 * MIB - 0.5 * MIB * t);
        let j = bytes(&s);
        check(&j, Verdict::Stable);
        assert!(j.reason.starts_with("shrank from"), "{}", j.reason);
    }

    #[test]
    fn slow_growth_below_minimum_is_stable() {
        // +30 B/s for an hour: 105 KiB, above the total but below 64 B/s.
        let s = series(3600.0, 10.0, |t| 1.0 * MIB + 30.0 * t);
        let j = bytes(&s);
        check(&j, Verdict::Stable);
        assert!(j.reason.contains("below the minimum growth"), "{}", j.reason);
    }

    #[test]
    fn holder_growing_141_per_second_is_leak() {
        let s = series(20.0, 1.0, |t| (141.0 * t).floor());
        let j = items(&s);
        check(&j, Verdict::Leak);
        assert_eq!(j.reason, "+141 items/s for 20 s");
    }

    #[test]
    fn holder_capped_is_bounded() {
        let s = series(60.0, 2.0, |t| (250.0 * t).min(2000.0));
        let j = items(&s);
        check(&j, Verdict::Bounded);
        assert_eq!(j.reason, "grew to 2,000 items in 8 s, then flat for 52 s");
    }

    #[test]
    fn holder_up_and_down_is_stable() {
        // A queue that fills and drains: triangle waves of 500 items, period 20 s.
        let s = series(60.0, 1.0, |t| {
            let p = t % 20.0;
            if p < 10.0 {
                50.0 * p
            } else {
                50.0 * (20.0 - p)
            }
        });
        let j = items(&s);
        check(&j, Verdict::Stable);
        assert!(j.reason.starts_with("went up and down (peak 500 items)"), "{}", j.reason);
        // One hump that returns to where it started.
        let s = series(40.0, 2.0, |t| if t <= 20.0 { 250.0 * t } else { 250.0 * (40.0 - t) });
        check(&items(&s), Verdict::Stable);
        // Rose and fell back partly: not a leak.
        let s = series(40.0, 2.0, |t| if t <= 20.0 { 250.0 * t } else { 5000.0 - 150.0 * (t - 20.0) });
        let j = items(&s);
        assert!(matches!(j.verdict, Verdict::Bounded | Verdict::Stable), "{j:?}");
    }

    #[test]
    fn holder_small_changes_are_stable() {
        let mut r = Rng::new(2);
        let s = series(60.0, 2.0, |_| 300.0 + (5.0 * r.sym()).round());
        check(&items(&s), Verdict::Stable);
    }

    #[test]
    fn series_capacity_is_bounded_and_long_leak_still_found() {
        let mut s = Series::new();
        for i in 0..100_000u64 {
            s.push(i as f64 * 2.0, 4096.0 * i as f64);
            assert!(s.points().len() <= DEFAULT_CAPACITY);
        }
        assert!(s.points.capacity() <= DEFAULT_CAPACITY, "{}", s.points.capacity());
        assert_eq!(s.last(), Some((199_998.0, 4096.0 * 99_999.0)));
        // Evenly spaced apart from the provisional last point.
        let p = s.points();
        let gaps: Vec<f64> = p.windows(2).map(|w| w[1].0 - w[0].0).collect();
        let g0 = gaps[0];
        assert!(gaps[..gaps.len() - 1].iter().all(|g| (g - g0).abs() < 1e-9), "{gaps:?}");
        let j = bytes(&s);
        check(&j, Verdict::Leak);
        assert!((j.growth_per_s - 2048.0).abs() < 1.0, "{j:?}");
    }

    #[test]
    fn series_small_capacity_merges_keep_later_points() {
        let mut s = Series::with_capacity(4);
        for i in 0..4 {
            s.push(i as f64, i as f64);
        }
        assert_eq!(s.points(), &[(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]);
        s.push(4.0, 4.0);
        assert_eq!(s.points(), &[(1.0, 1.0), (3.0, 3.0), (4.0, 4.0)]);
        s.push(5.0, 5.0);
        assert_eq!(s.points(), &[(1.0, 1.0), (3.0, 3.0), (5.0, 5.0)]);
        s.push(6.0, 6.0);
        assert_eq!(s.points(), &[(1.0, 1.0), (3.0, 3.0), (5.0, 5.0), (6.0, 6.0)]);
    }

    #[test]
    fn series_ignores_bad_samples() {
        let mut s = Series::new();
        s.push(0.0, 1.0);
        s.push(f64::NAN, 2.0);
        s.push(1.0, f64::NAN);
        s.push(2.0, f64::INFINITY);
        s.push(f64::NEG_INFINITY, 3.0);
        s.push(-1.0, 3.0); // older than the last sample
        assert_eq!(s.points(), &[(0.0, 1.0)]);
        s.push(0.0, 5.0); // same time: replaces
        assert_eq!(s.last(), Some((0.0, 5.0)));
    }

    #[test]
    fn no_panics_on_degenerate_input() {
        let c = Criteria::for_bytes();
        let empty = Series::new();
        let j = judge(&empty, None, &c, Unit::Bytes);
        check(&j, Verdict::Stable);
        let mut one = Series::new();
        one.push(1.0, 5.0);
        check(&judge(&one, None, &c, Unit::Items), Verdict::Stable);
        let mut same_t = Series::new();
        same_t.push(3.0, 1.0);
        same_t.push(3.0, 1e12);
        check(&judge(&same_t, None, &c, Unit::Bytes), Verdict::Stable);
        let mut bad = Series::new();
        for i in 0..40 {
            let v = match i % 4 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => f64::NEG_INFINITY,
                _ => i as f64 * 1e6,
            };
            bad.push(i as f64, v);
        }
        let j = judge(&bad, None, &c, Unit::Bytes);
        check(&j, Verdict::Leak);
        // Huge and negative values, zero and absurd criteria, evidence with nonsense.
        let s = series(10.0, 1.0, |t| if t < 5.0 { -1e300 } else { 1e300 });
        let weird = Criteria {
            min_points: 0,
            min_window_s: f64::NAN,
            min_growth_per_s: -1.0,
            min_total_growth: f64::INFINITY,
            min_steadiness: f64::NAN,
            min_trend_z: f64::INFINITY,
            plateau_share: f64::NAN,
            drop_share: -3.0,
            noise_k: f64::NAN,
            min_oldest_age_share: f64::NAN,
        };
        let e = Evidence { allocs: 0, live_count: 7, oldest_age_s: f64::NAN, window_s: f64::INFINITY };
        for cr in [&c, &weird, &Criteria::for_items()] {
            for ev in [None, Some(&e)] {
                for u in [Unit::Bytes, Unit::Items] {
                    for ser in [&s, &empty, &one, &bad] {
                        let j = judge(ser, ev, cr, u);
                        assert!((0.0..=1.0).contains(&j.score), "{j:?}");
                        assert!(j.growth_per_s.is_finite(), "{j:?}");
                    }
                }
            }
        }
        // Zero thresholds: any steady rise can count, nothing divides by zero.
        let zero = Criteria { min_points: 0, min_window_s: 0.0, min_growth_per_s: 0.0, min_total_growth: 0.0, ..c };
        let j = judge(&series(4.0, 1.0, |t| t), None, &zero, Unit::Items);
        assert_eq!(j.verdict, Verdict::Leak, "{j:?}");
        check(&judge(&series(4.0, 1.0, |_| 0.0), None, &zero, Unit::Items), Verdict::Stable);
    }

    #[test]
    fn rank_orders_by_verdict_then_score_then_value() {
        let items = [
            (Verdict::Stable, 0.0, 900.0),
            (Verdict::Leak, 0.7, 10.0),
            (Verdict::Bounded, 0.2, 1e9),
            (Verdict::Leak, 0.9, 5.0),
            (Verdict::Growing, 0.4, 1.0),
            (Verdict::Leak, 0.7, 20.0),
            (Verdict::Stable, 0.0, f64::NAN),
            (Verdict::Leak, f64::NAN, 1e12),
            (Verdict::Stable, 0.02, 1.0),
        ];
        assert_eq!(rank(&items), vec![3, 5, 1, 7, 4, 2, 8, 0, 6]);
        assert!(rank(&[]).is_empty());
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1023.0), "1023 B");
        assert_eq!(human_bytes(1024.0), "1.0 KiB");
        assert_eq!(human_bytes(120.0 * KIB), "120 KiB");
        assert_eq!(human_bytes(1.2 * MIB), "1.2 MiB");
        assert_eq!(human_bytes(3.1 * MIB), "3.1 MiB");
        assert_eq!(human_bytes(1023.99 * KIB), "1.0 MiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * MIB), "3.0 GiB");
        assert_eq!(human_bytes(-2048.0), "-2.0 KiB");
        assert_eq!(human_bytes(f64::NAN), "?");
        assert_eq!(human_duration(0.0), "0 s");
        assert_eq!(human_duration(2.5), "2.5 s");
        assert_eq!(human_duration(20.0), "20 s");
        assert_eq!(human_duration(59.6), "1 min");
        assert_eq!(human_duration(600.0), "10 min");
        assert_eq!(human_duration(598.0), "9m58s");
        assert_eq!(human_duration(7200.0), "2 h");
        assert_eq!(human_duration(3900.0), "1h05m");
        assert_eq!(human_duration(3.0 * 86400.0 + 4.0 * 3600.0), "3d04h");
        assert_eq!(human_duration(f64::INFINITY), "?");
        assert_eq!(human_count(3000.0), "3,000");
        assert_eq!(human_count(999.0), "999");
        assert_eq!(human_count(1_234_567.0), "1,234,567");
        assert_eq!(human_count(-1500.0), "-1,500");
        assert_eq!(signed_rate(20.0 * KIB, Unit::Bytes), "+1.2 MiB/min");
        assert_eq!(signed_rate(2.0 * MIB, Unit::Bytes), "+2.0 MiB/s");
        assert_eq!(signed_rate(141.7, Unit::Items), "+142 items/s");
        assert_eq!(signed_rate(0.5, Unit::Items), "+30 items/min");
    }
}
