//! Strings read from the target's memory (dict keys in holder paths: `CACHE["sk_live_…"]`) are
//! data the target holds, often secrets, which a local user reading a report or the daemon's
//! loopback port could not read from `/proc/PID/mem` themselves. By default they are shown as
//! their type and a short hash (`CACHE[<str #5d41402a>]`: the same key gives the same path, so
//! series and reports still line up); `--show-target-strings` shows them. This is the one rule:
//! every place that puts a target's string into something served or written calls
//! [`write_target_string`].

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static SHOW: AtomicBool = AtomicBool::new(false);

/// Set once at start from `--show-target-strings`.
pub fn show_target_strings(show: bool) {
    SHOW.store(show, Ordering::Relaxed);
}

/// `s` (a value of Python type `type_name` read from the target) written to `w` as it may be
/// shown: quoted as Python would (`"jobs"`) when shown, else `<str #5d41402a>`.
pub fn write_target_string(w: &mut impl Write, type_name: &str, s: &str) -> std::fmt::Result {
    render(w, SHOW.load(Ordering::Relaxed), type_name, s)
}

/// Bytes [`write_target_string`] writes for `s`, without writing (or hashing) it: a walk
/// measures every path it makes and writes out only a few.
pub fn target_string_len(type_name: &str, s: &str) -> usize {
    rendered_len(SHOW.load(Ordering::Relaxed), type_name, s)
}

fn rendered_len(show: bool, type_name: &str, s: &str) -> usize {
    if show {
        python_quote_len(s)
    } else {
        "< #>".len() + type_name.len() + 8
    }
}

/// Bytes [`write_python_quote`] writes for `s`: counted directly when nothing in it is escaped
/// (names almost always), else by writing it to a counter, so the escape rules stay in one place.
pub fn python_quote_len(s: &str) -> usize {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        return 2 + s.len();
    }
    let mut n = ByteCount(0);
    let _ = write_python_quote(&mut n, s);
    n.0
}

/// A writer that only counts the bytes written to it.
struct ByteCount(usize);

impl Write for ByteCount {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn render(w: &mut impl Write, show: bool, type_name: &str, s: &str) -> std::fmt::Result {
    if show {
        write_python_quote(w, s)
    } else {
        write!(w, "<{type_name} #{:08x}>", short_hash(s))
    }
}

/// A Python-style double-quoted literal, control characters escaped.
pub fn python_quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    let _ = write_python_quote(&mut o, s);
    o
}

/// [`python_quote`] written to `w`.
pub fn write_python_quote(w: &mut impl Write, s: &str) -> std::fmt::Result {
    w.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            c if c.is_control() && (c as u32) < 0x100 => write!(w, "\\x{:02x}", c as u32)?,
            c if c.is_control() => write!(w, "\\u{:04x}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    w.write_char('"')
}

/// 32 bits of FNV-1a: stable across runs and machines (no salt), so two reports of one service
/// name a key alike. Not a secret: a short or guessable key can be found from it.
fn short_hash(s: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(show: bool, type_name: &str, s: &str) -> String {
        let mut o = String::new();
        render(&mut o, show, type_name, s).unwrap();
        o
    }

    #[test]
    fn keys_are_hidden_unless_asked_and_stable() {
        let hidden = shown(false, "str", "sk_live_51HxyzSECRET");
        assert!(hidden.starts_with("<str #") && hidden.ends_with('>') && hidden.len() == 15, "{hidden}");
        assert!(!hidden.contains("sk_live"));
        assert_eq!(hidden, shown(false, "str", "sk_live_51HxyzSECRET"), "the same key, the same path");
        assert_ne!(hidden, shown(false, "str", "sk_live_51HxyzSECRET2"));
        assert_eq!(shown(true, "str", "jobs"), "\"jobs\"");
        assert_eq!(shown(true, "str", "a\nb"), "\"a\\x0ab\"");
    }

    #[test]
    fn lengths_are_what_is_written() {
        for s in ["jobs", "", "a\nb", "q\"\\", "é x", "\u{85}\u{7f}", "sk_live_51HxyzSECRET"] {
            for show in [false, true] {
                assert_eq!(rendered_len(show, "str", s), shown(show, "str", s).len(), "{s:?} {show}");
            }
            assert_eq!(python_quote_len(s), python_quote(s).len(), "{s:?}");
        }
    }
}
