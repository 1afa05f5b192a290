//! The few statistics the tables and targets take over runs and rounds.

use super::rounds::Series;
use super::runs::Run;

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// The median of one figure over the runs that have it.
pub fn med_of(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    median(runs.iter().filter_map(f).collect())
}

/// The largest value of one figure over the runs that have it.
pub fn max_of(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    runs.iter().filter_map(f).reduce(f64::max)
}

/// A configuration's slowdown: the median of its per-round ratios to the untraced runs beside it.
pub fn slowdown(s: &Series) -> Option<f64> {
    median(s.ratios.clone())
}

/// The series of the configuration `key`.
pub fn find<'a>(list: &'a [Series], key: &str) -> Option<&'a Series> {
    list.iter().find(|s| s.cfg.key == key)
}

/// The slowdown of the configuration `key`, when it was measured.
pub fn slowdown_of(list: &[Series], key: &str) -> Option<f64> {
    find(list, key).and_then(slowdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
