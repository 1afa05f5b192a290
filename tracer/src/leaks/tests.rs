//! The behaviour of `judge` on series shaped like real programs' memory: each test is named as
//! the claim it checks.

use super::*;
use crate::series::DEFAULT_CAPACITY;

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

pub(crate) fn bytes(s: &Series) -> Judgement {
    judge(s, None, &Criteria::for_bytes(), Unit::Bytes)
}

fn items(s: &Series) -> Judgement {
    judge(s, None, &Criteria::for_items(), Unit::Items)
}

pub(crate) fn check(j: &Judgement, v: Verdict) {
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
    let e = Evidence { allocs: 3000, live_count: 2940, oldest_age_s: 598.0, window_s: 600.0, ..Default::default() };
    let j = judge(&s, Some(&e), &Criteria::for_bytes(), Unit::Bytes);
    check(&j, Verdict::Leak);
    assert_eq!(j.reason, "+1.2 MiB/min for 10 min, 98% of 3,000 allocations still live, oldest 9m58s");
}

#[test]
fn churn_plus_growth_is_still_leak_with_lower_score() {
    let s = series(60.0, 2.0, |t| 100.0 * KIB * t);
    let kept = Evidence { allocs: 3000, live_count: 2900, oldest_age_s: 59.0, window_s: 60.0, ..Default::default() };
    let churn =
        Evidence { allocs: 300_000, live_count: 3000, oldest_age_s: 59.0, window_s: 60.0, ..Default::default() };
    let a = judge(&s, Some(&kept), &Criteria::for_bytes(), Unit::Bytes);
    let b = judge(&s, Some(&churn), &Criteria::for_bytes(), Unit::Bytes);
    check(&a, Verdict::Leak);
    check(&b, Verdict::Leak);
    assert!(a.score > b.score, "{a:?} {b:?}");
    assert!(b.reason.contains("1% of 300,000 allocations"), "{}", b.reason);
}

#[test]
fn under_windows_blocks_that_outlived_a_window_and_died_later_are_turnover_not_leak() {
    // A cache whose evictions fall between windows and whose blocks are handed out again at
    // once to identical new ones: its series rises like a leak's while those deaths go unseen.
    let s = series(120.0, 10.0, |t| 20.0 * KIB * t);
    let c = Criteria::for_bytes().under_windows(10.0, 0.1);
    let e = |survivors, died| Evidence {
        allocs: 300,
        live_count: 280,
        oldest_age_s: 119.0,
        window_s: 120.0,
        outlived: Outlived { survivors, died },
    };
    let cache = judge(&s, Some(&e(300, 20)), &c, Unit::Bytes);
    check(&cache, Verdict::Growing);
    assert!(
        cache.reason.ends_with("memory turns over: 20 of 300 allocations live at a window's close died later"),
        "{}",
        cache.reason
    );
    // A leak's survivors never die; one inferred death (5% at least, and 2) is not turnover.
    check(&judge(&s, Some(&e(300, 0)), &c, Unit::Bytes), Verdict::Leak);
    check(&judge(&s, Some(&e(300, 1)), &c, Unit::Bytes), Verdict::Leak);
    check(&judge(&s, Some(&e(300, 14)), &c, Unit::Bytes), Verdict::Leak);
}

#[test]
fn under_windows_a_leak_needs_eight_periods_of_growth() {
    let e = Evidence { allocs: 60, live_count: 60, oldest_age_s: 70.0, window_s: 70.0, ..Default::default() };
    let c = Criteria::for_bytes().under_windows(10.0, 0.1);
    let short = judge(&series(70.0, 10.0, |t| 20.0 * KIB * t), Some(&e), &c, Unit::Bytes);
    check(&short, Verdict::Growing);
    assert!(short.reason.contains("only 1m10s (need 1m20s)"), "{}", short.reason);
    let e = Evidence { oldest_age_s: 90.0, window_s: 90.0, ..e };
    check(&judge(&series(90.0, 10.0, |t| 20.0 * KIB * t), Some(&e), &c, Unit::Bytes), Verdict::Leak);
    // Without windows, 8 seconds are enough.
    check(
        &judge(&series(70.0, 10.0, |t| 20.0 * KIB * t), Some(&e), &Criteria::for_bytes(), Unit::Bytes),
        Verdict::Leak,
    );
}

#[test]
fn young_outstanding_memory_is_turnover_not_leak() {
    let s = series(60.0, 2.0, |t| 100.0 * KIB * t);
    let e = Evidence { allocs: 300_000, live_count: 3000, oldest_age_s: 3.0, window_s: 60.0, ..Default::default() };
    let j = judge(&s, Some(&e), &Criteria::for_bytes(), Unit::Bytes);
    check(&j, Verdict::Growing);
    assert!(j.reason.contains("memory turns over"), "{}", j.reason);
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
    let s =
        series(60.0, 1.0, |t| 3.0 * MIB + 0.2 * MIB * r.sym() + if t < 30.0 { 0.0 } else { 200.0 * KIB * (t - 30.0) });
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
        recorded_share: f64::NAN,
    };
    let e =
        Evidence { allocs: 0, live_count: 7, oldest_age_s: f64::NAN, window_s: f64::INFINITY, ..Default::default() };
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

/// Sample times as `record` takes them (`session::driver::Cadence::DenseStart` with a 2 s
/// interval): every tenth of the time elapsed, from 100 ms to 2 s.
fn dense_series(run_s: f64, mut f: impl FnMut(f64) -> f64) -> Series {
    let mut s = Series::new();
    let mut t = 0.0;
    while t < run_s {
        s.push(t, f(t));
        t += (t / 10.0).clamp(0.1, 2.0);
    }
    s.push(run_s, f(run_s));
    s
}

fn at_exit(s: &Series, run_s: f64, oldest_s: f64) -> Judgement {
    let c = Criteria::for_bytes().for_view(FinalView::Finalization, run_s);
    let e = Evidence { allocs: 500, live_count: 500, oldest_age_s: oldest_s, window_s: run_s, ..Default::default() };
    judge(s, Some(&e), &c, Unit::Bytes)
}

/// A short script: 0.4 s of start-up imports (2 MiB), then what `f` does from there.
fn script(run_s: f64, f: impl Fn(f64) -> f64) -> Series {
    dense_series(run_s, |t| 2.0 * MIB * (t / 0.4).min(1.0) + if t > 0.4 { f(t - 0.4) } else { 0.0 })
}

#[test]
fn a_short_run_that_ended_normally_is_judged_as_a_whole() {
    for run in [1.0, 3.0, 6.0] {
        // 9 kB every 10 ms kept to the end: a leak at exit, however short the run.
        let leak = dense_series(run, |t| if t < 0.4 { 0.0 } else { 900_000.0 * (t - 0.4) });
        let j = at_exit(&leak, run, run - 0.4);
        check(&j, Verdict::Leak);
        // The same series seen live (or stopped by -d) is judged by the long-run criteria.
        let live = judge(&leak, None, &Criteria::for_bytes().for_view(FinalView::Duration, run), Unit::Bytes);
        check(&live, Verdict::Growing);
        // Start-up imports only; a warm cache filled once; a 20 MB buffer freed before exit.
        let imports = script(run, |_| 0.0);
        let cache = script(run, |t| 1.8 * MIB * (t / 0.1).min(1.0));
        let freed = script(run, |t| if t < run - 0.6 { 20e6 } else { 0.0 });
        for (what, s) in [("imports", imports), ("cache", cache), ("freed buffer", freed)] {
            let j = at_exit(&s, run, run);
            assert!(!j.verdict.is_growing(), "{run} s, {what}: {j:?}");
        }
    }
}

#[test]
fn long_runs_and_other_views_keep_the_documented_criteria() {
    let c = Criteria::for_bytes();
    assert_eq!(c.for_view(FinalView::Finalization, 24.0), c);
    assert_eq!(c.for_view(FinalView::Finalization, 3600.0), c);
    for view in [FinalView::Duration, FinalView::Interrupted, FinalView::Live, FinalView::TargetExited] {
        assert_eq!(c.for_view(view, 3.0), c, "{view:?}");
    }
    assert_eq!(c.for_view(FinalView::Finalization, 3.0).min_window_s, 1.0);
    assert_eq!(c.for_view(FinalView::Finalization, f64::NAN), c);
}

/// Seconds from a duration as `units::duration` prints it (`0.7 s`, `12 s`, `1 min`, `9m58s`,
/// `2 h`, `1h05m`).
fn seconds(text: &str) -> f64 {
    let t = text.trim();
    if let Some(x) = t.strip_suffix(" s") {
        return x.parse().unwrap();
    }
    if let Some(x) = t.strip_suffix(" min") {
        return 60.0 * x.parse::<f64>().unwrap();
    }
    if let Some(x) = t.strip_suffix(" h") {
        return 3600.0 * x.parse::<f64>().unwrap();
    }
    if let Some((m, s)) = t.strip_suffix('s').and_then(|x| x.split_once('m')) {
        return 60.0 * m.parse::<f64>().unwrap() + s.parse::<f64>().unwrap();
    }
    let (h, m) = t.strip_suffix('m').and_then(|x| x.split_once('h')).unwrap_or_else(|| panic!("{t}"));
    3600.0 * h.parse::<f64>().unwrap() + 60.0 * m.parse::<f64>().unwrap()
}

/// `only X (need Y)` as two numbers read by `read`, or `None` for `just under Y`.
fn shortfall(clause: &str, read: impl Fn(&str) -> f64) -> Option<(f64, f64)> {
    if clause.starts_with("just under ") {
        return None;
    }
    let body = clause.strip_prefix("only ").unwrap_or_else(|| panic!("{clause}"));
    let (have, need) =
        body.strip_suffix(')').and_then(|b| b.split_once(" (need ")).unwrap_or_else(|| panic!("{clause}"));
    Some((read(have), read(need)))
}

/// Checks one clause of "not yet conclusive: ..." against the criteria it names: the printed
/// figure must fall short of the printed need. Returns which kind of clause it was.
fn check_clause(clause: &str, reason: &str) -> &'static str {
    let (kind, rest, read): (&str, &str, fn(&str) -> f64) =
        if let Some(r) = clause.strip_prefix("noisy: Kendall's tau ") {
            ("steadiness", r, |x| x.parse().unwrap())
        } else if let Some(r) = clause.strip_prefix("trend not yet significant: z ") {
            ("trend", r, |x| x.parse().unwrap())
        } else if let Some(r) = clause.strip_prefix("memory turns over: oldest live allocation ") {
            ("turnover", r, seconds)
        } else if clause.ends_with(')') && clause.contains(" samples (need ") {
            ("samples", clause, |x| x.trim_end_matches(" samples").parse().unwrap())
        } else {
            ("duration", clause, seconds)
        };
    if let Some((have, need)) = shortfall(rest, read) {
        assert!(have < need, "{kind}: {have} is not short of {need}: {reason}");
    }
    kind
}

#[test]
fn every_reason_clause_agrees_with_the_verdict() {
    let mut kinds = std::collections::BTreeSet::new();
    let mut verdicts = std::collections::BTreeSet::new();
    for seed in 0..60u64 {
        let mut rng = Rng::new(seed);
        for (run, interval) in [(1.0, 0.25), (3.0, 0.5), (4.0, 1.0), (7.9, 2.0), (12.0, 1.0), (60.0, 2.0)] {
            let noise = [0.0, 20.0 * KIB, 200.0 * KIB][(seed % 3) as usize];
            let slope = 100.0 * KIB * (1.0 + (seed % 5) as f64);
            let s = series(run, interval, |t| MIB + slope * t + noise * rng.sym());
            let oldest = run * [1.0, 0.2][(seed % 2) as usize];
            let e = Evidence { allocs: 100, live_count: 50, oldest_age_s: oldest, window_s: run, ..Default::default() };
            let c = if seed % 4 == 0 {
                Criteria::for_bytes().for_view(FinalView::Finalization, run)
            } else {
                Criteria::for_bytes()
            };
            let j = judge(&s, Some(&e), &c, Unit::Bytes);
            verdicts.insert(j.verdict);
            let (head, not_yet) = match j.reason.split_once("; not yet conclusive: ") {
                Some((h, n)) => (h, Some(n)),
                None => (j.reason.as_str(), None),
            };
            assert_eq!(not_yet.is_some(), j.verdict == Verdict::Growing, "{j:?}");
            let Some(clauses) = not_yet else {
                if j.verdict == Verdict::Leak {
                    // "+X for D, ...": the growing part lasted long enough.
                    let dur = head.split(", ").next().and_then(|h| h.split_once(" for ")).map(|(_, d)| seconds(d));
                    assert!(dur.unwrap() >= c.min_window_s - 0.05, "{j:?}");
                }
                continue;
            };
            assert!(!clauses.is_empty(), "{j:?}");
            for clause in clauses.split(", ") {
                kinds.insert(check_clause(clause, &j.reason));
            }
        }
    }
    assert!(verdicts.contains(&Verdict::Leak) && verdicts.contains(&Verdict::Growing), "{verdicts:?}");
    for kind in ["samples", "duration", "steadiness", "trend", "turnover"] {
        assert!(kinds.contains(kind), "no clause of kind {kind} was checked: {kinds:?}");
    }
}

#[test]
fn four_rising_samples_are_not_called_noisy() {
    // The case: 4 samples over 4 s, every pair rising.
    let s = series(4.0, 4.0 / 3.0, |t| 850.0 * KIB * t);
    let j = bytes(&s);
    check(&j, Verdict::Growing);
    assert!(!j.reason.contains("noisy"), "{j:?}");
    assert!(j.reason.ends_with("trend not yet significant: z only 1.70 (need 2.00)"), "{j:?}");
}

/// Probe windows: a leak sampled once per 10 s period with allocations recorded 0.9 s of each
/// rises 9% as fast as it truly grows; the rate is stated for the whole timeline.
#[test]
fn windowed_rates_are_scaled_to_the_whole_timeline() {
    let true_rate = 20.0 * 1024.0;
    let share = 0.09;
    let mut s = Series::default();
    for k in 0..12 {
        let t = 1.0 + 10.0 * k as f64;
        s.push(t, 1e6 + true_rate * share * t);
    }
    let c = Criteria { recorded_share: share, ..Criteria::for_bytes() };
    let j = judge(&s, None, &c, Unit::Bytes);
    check(&j, Verdict::Leak);
    assert!((j.growth_per_s / true_rate - 1.0).abs() < 0.01, "{j:?}");
    assert!(j.reason.contains("scaled from the 9% of the time recorded"), "{j:?}");
    let unscaled = judge(&s, None, &Criteria::for_bytes(), Unit::Bytes);
    assert!((unscaled.growth_per_s / (true_rate * share) - 1.0).abs() < 0.01, "{unscaled:?}");
    assert!(!unscaled.reason.contains("scaled"), "{unscaled:?}");
}
