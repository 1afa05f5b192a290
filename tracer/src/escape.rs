//! The one escaping rule for what people read (the text report, stderr, SVG, HTML): strings that
//! come from a target (function and file names, command lines, container keys) may hold control
//! characters that forge lines or drive a terminal (newline, ESC/OSC sequences), DEL, or bidi
//! controls that reorder what is shown. Each such character is written as an escape (`\x1b`,
//! `\u{202e}`), so the name stays readable, the line stays one line and an XML document stays
//! well-formed (XML 1.0 cannot carry most of them).

use std::borrow::Cow;

/// Whether `c` is shown as an escape: C0 and C1 controls, DEL, the bidi embedding, override,
/// isolate and mark characters, and the two XML noncharacters.
pub fn is_hidden(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{fffe}'
            | '\u{ffff}'
    )
}

/// `s` with every hidden character (`is_hidden`) written as an escape: `\x1b` below U+0100,
/// `\u{202e}` above. Unchanged (borrowed) when there is none.
pub fn visible(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_hidden(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// Escapes `s` in place.
pub fn make_visible(s: &mut String) {
    if let Cow::Owned(o) = visible(s) {
        *s = o;
    }
}

/// `s` for XML and HTML text and attributes: visible, then `&<>"'` as entities.
pub fn markup(s: &str) -> String {
    let shown = visible(s);
    let mut out = String::with_capacity(shown.len());
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_del_and_bidi_are_escaped() {
        assert_eq!(visible("plain name é"), "plain name é");
        assert!(matches!(visible("plain"), Cow::Borrowed(_)));
        assert_eq!(visible("a\nb"), "a\\x0ab");
        assert_eq!(visible("\x1b]0;owned\x07"), "\\x1b]0;owned\\x07");
        assert_eq!(visible("x\u{7f}\u{85}"), "x\\x7f\\x85");
        assert_eq!(visible("evil\u{202e}txt.py"), "evil\\u{202e}txt.py");
        assert_eq!(visible("\u{2066}\u{2069}\u{200f}"), "\\u{2066}\\u{2069}\\u{200f}");
        assert_eq!(markup("<a href=\"x\">&'\u{1}"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;\\x01");
    }
}
