//! The robust statistics `judge` rests on: medians, the jitter of a series, Theil-Sen slopes and
//! the Mann-Kendall trend test. Pure functions of slices, no policy.

/// Most points used for the pairwise statistics (Theil-Sen, Mann-Kendall); longer parts are
/// thinned evenly, which keeps `judge` well under a millisecond per series.
pub(super) const MAX_PAIRWISE: usize = 200;

pub(super) fn median(xs: &[f64]) -> f64 {
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
pub(super) fn step_noise(vs: &[f64]) -> f64 {
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
pub(super) fn thin(ts: &[f64], vs: &[f64], max: usize) -> (Vec<f64>, Vec<f64>) {
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
pub(super) fn theil_sen(ts: &[f64], vs: &[f64]) -> f64 {
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
pub(super) fn mann_kendall(vs: &[f64]) -> (f64, f64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform scatter in [-1, 1) from a fixed seed (standard deviation 1/sqrt(3)).
    fn scatter(n: usize) -> Vec<f64> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                2.0 * ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64) - 1.0
            })
            .collect()
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, -1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn step_noise_sees_scatter_only() {
        // Steady growth, a change of slope and occasional steps are no noise.
        let line: Vec<f64> = (0..40).map(|i| 5.0 * i as f64).collect();
        assert_eq!(step_noise(&line), 0.0);
        let bent: Vec<f64> = (0..40).map(|i| if i < 20 { 0.0 } else { 7.0 * (i - 20) as f64 }).collect();
        assert_eq!(step_noise(&bent), 0.0);
        let steps: Vec<f64> = (0..40).map(|i| (i / 8) as f64 * 1000.0).collect();
        assert_eq!(step_noise(&steps), 0.0);
        // Scatter of standard deviation 0.58 on top of growth reads as about that.
        let noisy: Vec<f64> = scatter(200).iter().enumerate().map(|(i, e)| 3.0 * i as f64 + e).collect();
        let sigma = step_noise(&noisy);
        assert!((0.3..1.0).contains(&sigma), "{sigma}");
        assert_eq!(step_noise(&[1.0, 9.0]), 0.0);
    }

    #[test]
    fn thin_keeps_the_ends_and_spreads_evenly() {
        let ts: Vec<f64> = (0..1000).map(f64::from).collect();
        let (t, v) = thin(&ts, &ts, 200);
        assert_eq!((t.len(), t[0], t[199]), (200, 0.0, 999.0));
        assert_eq!(t, v);
        let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (4.0..=6.0).contains(g)), "{gaps:?}");
        assert_eq!(thin(&ts[..10], &ts[..10], 200).0.len(), 10);
    }

    #[test]
    fn theil_sen_ignores_outliers_and_equal_times() {
        let ts: Vec<f64> = (0..30).map(f64::from).collect();
        let mut vs: Vec<f64> = ts.iter().map(|t| 2.0 * t + 7.0).collect();
        assert_eq!(theil_sen(&ts, &vs), 2.0);
        vs[5] = 1e9;
        vs[20] = -1e9;
        assert_eq!(theil_sen(&ts, &vs), 2.0);
        assert_eq!(theil_sen(&[1.0, 1.0, 1.0], &[0.0, 5.0, 9.0]), 0.0);
        assert_eq!(theil_sen(&[], &[]), 0.0);
    }

    #[test]
    fn mann_kendall_of_rising_falling_and_flat() {
        // Five rising samples: tau 1, z = (10 - 1) / sqrt(5 * 4 * 15 / 18), just above 2.
        let (tau, z) = mann_kendall(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(tau, 1.0);
        assert!((z - 9.0 / (50.0f64 / 3.0).sqrt()).abs() < 1e-12 && z > 2.0, "{z}");
        let (tau, z) = mann_kendall(&[5.0, 4.0, 3.0, 2.0, 1.0]);
        assert!(tau == -1.0 && z < -2.0);
        assert_eq!(mann_kendall(&[3.0; 10]), (0.0, 0.0));
        assert_eq!(mann_kendall(&[1.0]), (0.0, 0.0));
    }
}
