//! How the bench prints a figure: one formatter per kind, shared by the progress lines, the
//! tables and the targets ("–" where nothing was measured).

/// A run's value as measured: seconds of work loop, or requests per second for Tornado (whose
/// value is seconds per request).
pub fn value_text(what: &str, v: f64) -> String {
    if what == "tornado" {
        format!("{:>8.0} req/s", 1.0 / v)
    } else {
        format!("{v:>7.2} s")
    }
}

/// A ratio to the untraced runs: a slowdown, or for Tornado the change in throughput.
pub fn ratio_text(what: &str, x: f64) -> String {
    if what == "tornado" {
        format!("throughput {:+.1}%", (1.0 / x - 1.0) * 100.0)
    } else {
        format!("{x:.2}x")
    }
}

/// A slowdown as the tables print it ("7.25x", or "–" when not measured).
pub fn times(v: Option<f64>) -> String {
    opt(v, |v| format!("{v:.2}x"))
}

/// A throughput loss in percent from a slowdown of seconds per request.
pub fn loss_percent(slowdown: f64) -> f64 {
    (1.0 - 1.0 / slowdown) * 100.0
}

/// `f(v)`, or "–" when not measured.
pub fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

pub fn percent(v: Option<f64>) -> String {
    opt(v, |v| format!("{:.0}%", v * 100.0))
}

pub fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

pub fn mib(kb: f64) -> String {
    format!("{:.1} MiB", kb / 1024.0)
}

pub fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// Per-round ratios, e.g. "7.20x, 7.31x".
pub fn per_round(ratios: &[f64]) -> String {
    ratios.iter().map(|x| format!("{x:.2}x")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        assert_eq!(times(Some(7.254)), "7.25x");
        assert_eq!(times(None), "–");
        assert_eq!(secs(0.63), "630 ms");
        assert_eq!(secs(1.5), "1.50 s");
        assert_eq!(count(1_234_567.0), "1.23 M");
        assert_eq!(count(4_200.0), "4.2 k");
        assert_eq!(mib(43_008.0), "42.0 MiB");
        assert_eq!(ratio_text("tornado", 1.25), "throughput -20.0%");
        assert_eq!(value_text("workload", 2.5), "   2.50 s");
        assert_eq!(per_round(&[1.0, 2.345]), "1.00x, 2.35x");
    }
}
