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

#[cfg(test)]
mod tests {
    use super::*;

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
