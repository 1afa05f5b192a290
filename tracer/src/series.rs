//! A bounded time series: what the collector keeps per stack and per call site, and the holders
//! per container, to be judged by `leaks` at the end.
//!
//! A `Series` keeps at most `cap` points (512 by default). When full, adjacent points are merged
//! pairwise (the later one is kept) and from then on only every second sample is kept (every
//! fourth after the next merge, ...), so the points stay evenly spaced in time while the newest
//! sample is always the last point.

/// Default number of points a `Series` keeps.
pub const DEFAULT_CAPACITY: usize = 512;

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

    /// `cap` below 2 is raised to 2. Memory grows with the points kept, not with `cap`: the
    /// holders view keeps one series per live container, tens of thousands on a big service.
    pub fn with_capacity(cap: usize) -> Self {
        let cap = cap.max(2);
        Series { points: Vec::new(), cap, stride: 1, pending: 0 }
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
        let len = self.points.len();
        if len == self.points.capacity() {
            self.points.reserve_exact(len.max(4).min(self.cap - len));
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

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The most points this series keeps.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaks::tests::{bytes, check};
    use crate::report::Verdict;

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
    fn memory_grows_with_the_points_kept() {
        let mut s = Series::new();
        assert_eq!(s.points.capacity(), 0);
        s.push(1.0, 1.0);
        assert!(s.points.capacity() <= 4, "{}", s.points.capacity());
        let mut small = Series::with_capacity(3);
        for i in 0..10 {
            small.push(i as f64, 1.0);
            assert!(small.points.capacity() <= 3, "{}", small.points.capacity());
        }
    }

    #[test]
    fn a_capacity_below_two_is_raised_to_two() {
        let mut s = Series::with_capacity(0);
        assert!(s.is_empty());
        assert_eq!(s.capacity(), 2);
        for i in 0..10 {
            s.push(i as f64, 1.0);
        }
        assert!(s.len() <= 2 && s.last() == Some((9.0, 1.0)), "{s:?}");
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
}
