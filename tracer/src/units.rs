//! The one way numbers are printed for a person: sizes, counts, durations, rates and shares.
//! Every reason, report line and progress message goes through these, so one quantity never
//! reads two ways ("832.5 KiB" in a table and "832 KiB" in its reason).
//!
//! The rules:
//! * sizes in binary units, one decimal below 10 and none from 10 up: `512 B`, `1.2 MiB`,
//!   `120 KiB`, `3.0 GiB` (three significant figures at most);
//! * counts as whole numbers with thousands separators: `3,000`;
//! * durations in the largest unit that keeps them short: `2.5 s`, `20 s`, `9m58s`, `1h05m`;
//! * rates of bytes per minute below 1 MiB/s and per second from there (`+1.2 MiB/min`,
//!   `+2.0 MiB/s`), of items per second from 1 item/s and per minute below (`+141 items/s`,
//!   `+30 items/min`); a rate always carries its sign, except zero;
//! * shares as whole percents, never rounding to 0% or 100% what is not: `<1%`, `>99%`.

/// What a number counts: bytes (allocation stacks) or items (containers' lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Bytes,
    Items,
}

/// `512 B`, `120 KiB`, `1.2 MiB`, `3.0 GiB`: binary units, one decimal below 10.
pub fn bytes(b: f64) -> String {
    if !b.is_finite() {
        return "?".to_string();
    }
    if b < 0.0 {
        return format!("-{}", bytes(-b));
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

/// A short duration in milliseconds: `0.4 ms`, `48 ms`, `1,250 ms` (scan costs).
pub fn millis(s: f64) -> String {
    if !s.is_finite() {
        return "?".to_string();
    }
    let ms = s * 1000.0;
    if ms.abs() < 9.95 {
        format!("{ms:.1} ms")
    } else {
        format!("{} ms", count(ms.round().max(0.0) as u64))
    }
}

/// `2.5 s`, `20 s`, `10 min`, `9m58s`, `2 h`, `1h05m`, `3d04h`.
pub fn duration(s: f64) -> String {
    if !s.is_finite() {
        return "?".to_string();
    }
    if s < 0.0 {
        return format!("-{}", duration(-s));
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

/// A number `count` prints: integers exactly, floats rounded to a whole number.
pub trait Whole: Copy {
    /// The sign (true: negative) and the decimal digits; `None` when not a finite number.
    fn sign_and_digits(self) -> Option<(bool, String)>;
}

impl Whole for u64 {
    fn sign_and_digits(self) -> Option<(bool, String)> {
        Some((false, self.to_string()))
    }
}

impl Whole for usize {
    fn sign_and_digits(self) -> Option<(bool, String)> {
        Some((false, self.to_string()))
    }
}

impl Whole for u32 {
    fn sign_and_digits(self) -> Option<(bool, String)> {
        Some((false, self.to_string()))
    }
}

impl Whole for i64 {
    fn sign_and_digits(self) -> Option<(bool, String)> {
        Some((self < 0, self.unsigned_abs().to_string()))
    }
}

impl Whole for f64 {
    fn sign_and_digits(self) -> Option<(bool, String)> {
        self.is_finite().then(|| (self < 0.0, format!("{:.0}", self.abs())))
    }
}

/// A test statistic (Kendall's tau, a z score): two decimals, `0.31`, `1.70`.
pub fn statistic(x: f64) -> String {
    if x.is_finite() {
        format!("{:.2}", x)
    } else {
        "?".to_string()
    }
}

/// A criterion a figure fell short of, both formatted by `fmt`: `only 4 s (need 8 s)`, or
/// `just under 8 s` when the figure would read as the threshold itself once rounded (a reason
/// must never read "only 8 s (need 8 s)").
pub fn short_of(have: f64, need: f64, fmt: impl Fn(f64) -> String) -> String {
    let (h, n) = (fmt(have), fmt(need));
    if h == n {
        format!("just under {n}")
    } else {
        format!("only {h} (need {n})")
    }
}

/// `3,000`, `-1,500`, `18,446,744,073,709,551,615`: a whole number with thousands separators
/// (`?` for a float that is not a finite number).
pub fn count(n: impl Whole) -> String {
    let Some((negative, digits)) = n.sign_and_digits() else {
        return "?".to_string();
    };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if negative && out != "0" {
        out.insert(0, '-');
    }
    out
}

/// An amount in a unit: `1.2 MiB`, `1 item`, `2,000 items`.
pub fn amount(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => bytes(x),
        Unit::Items => {
            let s = count(x);
            if s == "1" {
                "1 item".to_string()
            } else {
                format!("{} items", s)
            }
        }
    }
}

/// `+1.2 MiB/min`, `+2.0 MiB/s`, `+141 items/s`, `+30 items/min`, `0 B/s`; `? B/s` when not a
/// finite number.
pub fn rate(per_s: f64, unit: Unit) -> String {
    let name = match unit {
        Unit::Bytes => "B",
        Unit::Items => "items",
    };
    if !per_s.is_finite() {
        return format!("? {name}/s");
    }
    if per_s == 0.0 {
        return format!("0 {name}/s");
    }
    let sign = if per_s < 0.0 { "-" } else { "+" };
    let a = per_s.abs();
    match unit {
        Unit::Bytes => {
            if a >= 1024.0 * 1024.0 {
                format!("{}{}/s", sign, bytes(a))
            } else {
                format!("{}{}/min", sign, bytes(a * 60.0))
            }
        }
        Unit::Items => {
            let (x, per) = if a >= 1.0 { (a, "s") } else { (a * 60.0, "min") };
            let num = if x >= 10.0 { count(x) } else { format!("{:.1}", x) };
            format!("{}{} items/{}", sign, num, per)
        }
    }
}

/// `98%`, `<1%`, `>99%`: a share in [0, 1] as a whole percent that reads 0% and 100% only
/// when it is.
pub fn percent(share: f64) -> String {
    let p = 100.0 * share;
    if p > 0.0 && p < 1.0 {
        "<1%".to_string()
    } else if p < 100.0 && p > 99.0 {
        ">99%".to_string()
    } else {
        format!("{:.0}%", p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: f64 = 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;

    // Moved here with the formatters from leaks.rs; the assertions are those of leaks.rs's
    // `formatting_helpers`, under the formatters' new names.
    #[test]
    fn formatting_helpers() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1023.0), "1023 B");
        assert_eq!(bytes(1024.0), "1.0 KiB");
        assert_eq!(bytes(120.0 * KIB), "120 KiB");
        assert_eq!(bytes(1.2 * MIB), "1.2 MiB");
        assert_eq!(bytes(3.1 * MIB), "3.1 MiB");
        assert_eq!(bytes(1023.99 * KIB), "1.0 MiB");
        assert_eq!(bytes(3.0 * 1024.0 * MIB), "3.0 GiB");
        assert_eq!(bytes(-2048.0), "-2.0 KiB");
        assert_eq!(bytes(f64::NAN), "?");
        assert_eq!(duration(0.0), "0 s");
        assert_eq!(duration(2.5), "2.5 s");
        assert_eq!(duration(20.0), "20 s");
        assert_eq!(duration(59.6), "1 min");
        assert_eq!(duration(600.0), "10 min");
        assert_eq!(duration(598.0), "9m58s");
        assert_eq!(duration(7200.0), "2 h");
        assert_eq!(duration(3900.0), "1h05m");
        assert_eq!(duration(3.0 * 86400.0 + 4.0 * 3600.0), "3d04h");
        assert_eq!(duration(f64::INFINITY), "?");
        assert_eq!(count(3000.0), "3,000");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1_234_567.0), "1,234,567");
        assert_eq!(count(-1500.0), "-1,500");
        assert_eq!(rate(20.0 * KIB, Unit::Bytes), "+1.2 MiB/min");
        assert_eq!(rate(2.0 * MIB, Unit::Bytes), "+2.0 MiB/s");
        assert_eq!(rate(141.7, Unit::Items), "+142 items/s");
        assert_eq!(rate(0.5, Unit::Items), "+30 items/min");
    }

    #[test]
    fn sizes_switch_unit_before_reading_1024() {
        assert_eq!(bytes(1_048_575.0), "1.0 MiB");
        assert_eq!(bytes(4_299_161.0), "4.1 MiB");
        assert_eq!(bytes(9.96 * KIB), "10 KiB");
        // The README's session cache: the table and its reason print it the same way.
        assert_eq!(bytes(852_480.0), "832 KiB");
        assert_eq!(bytes(u64::MAX as f64), "16384 PiB");
    }

    #[test]
    fn counts_are_exact_for_integers_of_every_width() {
        assert_eq!(count(0u64), "0");
        assert_eq!(count(999u64), "999");
        assert_eq!(count(1_000u64), "1,000");
        assert_eq!(count(120_345usize), "120,345");
        assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(count(i64::MIN), "-9,223,372,036,854,775,808");
        assert_eq!(count(-0.4), "0");
        assert_eq!(count(f64::NAN), "?");
        assert_eq!(count(2_835u32), "2,835");
    }

    #[test]
    fn amounts_name_their_unit() {
        assert_eq!(amount(1.0, Unit::Items), "1 item");
        assert_eq!(amount(2000.0, Unit::Items), "2,000 items");
        assert_eq!(amount(3.25 * MIB, Unit::Bytes), "3.2 MiB");
    }

    #[test]
    fn rates_use_one_convention_for_a_unit() {
        // Below 1 MiB/s per minute, so a slow leak reads in whole figures.
        assert_eq!(rate(400.1 * KIB, Unit::Bytes), "+23 MiB/min");
        // The text report's column said "+68.3 KiB/s" for this one.
        assert_eq!(rate(69_939.2, Unit::Bytes), "+4.0 MiB/min");
        assert_eq!(rate(-2048.0, Unit::Bytes), "-120 KiB/min");
        assert_eq!(rate(1024.0 * KIB, Unit::Bytes), "+1.0 MiB/s");
        assert_eq!(rate(0.0, Unit::Bytes), "0 B/s");
        assert_eq!(rate(f64::NAN, Unit::Bytes), "? B/s");
        assert_eq!(rate(100.0, Unit::Items), "+100 items/s");
        assert_eq!(rate(2.5, Unit::Items), "+2.5 items/s");
        assert_eq!(rate(0.0, Unit::Items), "0 items/s");
        assert_eq!(rate(-0.01, Unit::Items), "-0.6 items/min");
    }

    #[test]
    fn percents_never_round_to_the_ends() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.004), "<1%");
        assert_eq!(percent(0.98), "98%");
        assert_eq!(percent(0.996), ">99%");
        assert_eq!(percent(1.0), "100%");
    }
}
