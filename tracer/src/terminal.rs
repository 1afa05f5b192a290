//! The terminal the tracer talks to: its width, and text made to fit it (long paths shortened
//! in the middle, where the least telling part of a path is).

use std::os::fd::AsRawFd;

/// Columns of the terminal on `fd`, if it is one (`TIOCGWINSZ`), else `$COLUMNS` when set.
pub fn width(fd: &impl AsRawFd) -> Option<usize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct passed; the fd is borrowed.
    let ok = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        return Some(ws.ws_col as usize);
    }
    std::env::var("COLUMNS").ok()?.trim().parse().ok().filter(|&c: &usize| c > 0)
}

/// `s` in at most `max` characters: unchanged when it fits, else its start and end around `…`
/// (the end gets the larger half: a path's file and line are what a person reads).
pub fn middle(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max <= 1 {
        return "…".chars().take(max).collect();
    }
    let keep = max - 1;
    let head = keep / 3;
    let tail = keep - head;
    let start: String = s.chars().take(head).collect();
    let end: String = s.chars().skip(n - tail).collect();
    format!("{start}…{end}")
}

/// A holder's path shortened to `max` characters: the keys inside `[...]` give way first
/// (`sys.path_importer_cache[…]._path_cache`: the names around them say what it is), then the middle.
pub fn path(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut keyless = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '[' => {
                if depth == 0 {
                    keyless.push_str("[…");
                }
                depth += 1;
            }
            ']' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    keyless.push(']');
                }
            }
            _ if depth == 0 => keyless.push(c),
            _ => {}
        }
    }
    if depth > 0 {
        keyless.push(']');
    }
    middle(&keyless, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_drops_its_keys_before_its_names() {
        let p = "sys.path_importer_cache['/root/.pyenv/versions/3.11.7/lib/python3.11']._path_cache";
        assert_eq!(path(p, 40), "sys.path_importer_cache[…]._path_cache");
        assert_eq!(path("__main__.CACHE", 40), "__main__.CACHE");
        assert_eq!(path("a[b[c]]d", 4), "a…]d");
        assert_eq!(path("x[unclosed key", 5), "x[…]");
    }

    #[test]
    fn shortened_in_the_middle() {
        assert_eq!(middle("short", 10), "short");
        let p = "remember_request (/srv/app/services/leaky_service.py:29)";
        let m = middle(p, 30);
        assert_eq!(m.chars().count(), 30);
        assert!(m.ends_with("leaky_service.py:29)") && m.starts_with("remember") && m.contains('…'), "{m}");
        assert_eq!(middle("abc", 1), "…");
        assert_eq!(middle("abc", 0), "");
        assert_eq!(middle("ééééé", 4).chars().count(), 4);
    }
}
