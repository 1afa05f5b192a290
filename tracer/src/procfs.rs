//! Parsers of /proc/PID files. They take text and never panic on odd input.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// The path as the target sees it (inside its mount namespace), if file-backed.
    pub path: Option<String>,
}

/// Parses /proc/PID/maps; malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_maps_line).collect()
}

pub fn parse_maps_line(line: &str) -> Option<MapEntry> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?.to_string();
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let _dev = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    let path = fields.next().map(str::trim).filter(|p| !p.is_empty()).map(str::to_string);
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end < start || perms.len() != 4 {
        return None;
    }
    let path = path.filter(|p| p.starts_with('/'));
    Some(MapEntry { start, end, perms, offset, inode, path })
}

/// Fields of /proc/PID/status the tracer cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    /// First letter of `State:` (R, S, D, Z, T, X, I).
    pub state: char,
    pub tgid: u32,
    /// The PID as seen in the process's own (innermost) PID namespace.
    pub ns_pid: u32,
    pub threads: u32,
}

/// This host's name (`/proc/sys/kernel/hostname`), or empty.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Resident set size of `pid` in bytes (`/proc/PID/statm`, field 2, in pages).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    parse_statm_rss(&text, page_size())
}

/// Bytes of `pid`'s anonymous writable mappings (`/proc/PID/maps`): glibc's `[heap]` and its
/// other arenas, pymalloc's arenas, blocks glibc mmapped, thread stacks; counted whether their
/// pages were touched or not, so a new pymalloc arena or a grown arena shows at once where the
/// resident size rises a page at a time (or not at all, when file pages leave meanwhile).
pub fn anon_writable_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(parse_anon_writable(&text))
}

pub fn parse_anon_writable(maps: &str) -> u64 {
    parse_maps(maps).iter().filter(|m| m.path.is_none() && m.perms.starts_with("rw")).map(|m| m.end - m.start).sum()
}

pub fn parse_statm_rss(text: &str, page: u64) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse::<u64>().ok().map(|pages| pages * page)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

pub fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key {
            "Name" => s.name = value.to_string(),
            "State" => s.state = value.chars().next().unwrap_or('?'),
            "Tgid" => s.tgid = value.parse().unwrap_or(0),
            "NSpid" => s.ns_pid = value.split_whitespace().last().and_then(|v| v.parse().ok()).unwrap_or(0),
            "Threads" => s.threads = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    s
}

/// `starttime` of /proc/PID/stat (field 22, clock ticks after boot): with the PID, it names one
/// process even after the PID is reused. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn parse_stat_start_time(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether /proc/PID/stat's flags (field 9) carry PF_KTHREAD: a kernel thread, as opposed to
/// a user process whose memory is gone because it is exiting.
pub fn parse_stat_is_kernel_thread(text: &str) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else { return false };
    rest.split_whitespace().nth(6).and_then(|f| f.parse::<u64>().ok()).is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Whether `pid` is a process that still runs and has its memory (not a zombie, not exiting).
pub fn is_running(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map(|t| parse_status(&t));
    status.is_ok_and(|s| s.state != 'Z' && s.state != 'X')
        && std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| !m.is_empty())
}

/// Whether `pid` is a kernel thread (false when there is no such process).
pub fn is_kernel_thread(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|t| parse_stat_is_kernel_thread(&t))
}

/// The start time of the process `pid` now has; None when there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    parse_stat_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// /proc/PID/cmdline as one line, arguments separated by spaces.
pub fn parse_cmdline(raw: &[u8]) -> String {
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A path inside the target's mount namespace, reachable from ours.
pub fn in_root(pid: u32, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

/// The file mapped at [start, end) in the target, through /proc/PID/map_files (the mapped inode
/// itself, independent of mount namespaces and chroots; opening it needs CAP_SYS_ADMIN).
pub fn map_file(pid: u32, start: u64, end: u64) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
}

/// `MemAvailable` of /proc/meminfo, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let kib = meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_memory_from_meminfo() {
        assert_eq!(mem_available("MemTotal: 100 kB\nMemAvailable:    2048 kB\n"), Some(2 << 20));
        assert_eq!(mem_available("MemTotal: 100 kB\n"), None);
    }

    #[test]
    fn kernel_threads_by_their_flags() {
        assert!(parse_stat_is_kernel_thread("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 25 0 0"));
        assert!(!parse_stat_is_kernel_thread("454 (c) a) R 450 450 11742 0 -1 4194304 123 0 0 0 0 0 0 0 20 0 1 0 9"));
        assert!(!parse_stat_is_kernel_thread("garbage"));
    }

    #[test]
    fn stat_start_time() {
        let stat = "32037 (cat) R 31993 31993 23020 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 1093740 3133440 394";
        assert_eq!(parse_stat_start_time(stat), Some(1093740));
        let odd = "7 (a) b) (c) S 1 7 7 0 -1 4194560 9 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
        assert_eq!(parse_stat_start_time(odd), Some(55));
        assert_eq!(parse_stat_start_time("7 (x) S 1 2"), None);
        assert_eq!(parse_stat_start_time(""), None);
    }

    #[test]
    fn maps_lines() {
        let l = "7f1c2a000000-7f1c2a028000 r--p 00000000 fe:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6";
        let e = parse_maps_line(l).unwrap();
        assert_eq!(e.start, 0x7f1c2a000000);
        assert_eq!(e.offset, 0);
        assert_eq!(e.inode, 1234);
        assert_eq!(e.path.as_deref(), Some("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        let anon = parse_maps_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]").unwrap();
        assert_eq!(anon.path, None);
        let spaced = parse_maps_line("1000-2000 r-xp 00001000 08:01 42 /opt/my app/lib.so").unwrap();
        assert_eq!(spaced.path.as_deref(), Some("/opt/my app/lib.so"));
        let deleted = parse_maps_line("1000-2000 r-xp 00001000 08:01 42 /tmp/x.so (deleted)").unwrap();
        assert_eq!(deleted.path.as_deref(), Some("/tmp/x.so (deleted)"));
        assert!(parse_maps_line("").is_none());
        assert!(parse_maps_line("zzzz-1000 r-xp 0 0 0").is_none());
        assert!(parse_maps_line("2000-1000 r-xp 00000000 00:00 0").is_none());
    }

    #[test]
    fn anonymous_writable_mappings_are_summed() {
        let maps = "\
55d0c6a00000-55d0c6a21000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
7f0000100000-7f0000200000 ---p 00000000 00:00 0 
7f1000000000-7f1000001000 rw-p 00002000 08:01 42                         /usr/lib/libc.so.6
7f2000000000-7f2000010000 r--p 00000000 00:00 0 
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
";
        assert_eq!(parse_anon_writable(maps), 0x21000 + 0x100000 + 0x21000);
        assert_eq!(parse_anon_writable("garbage\n"), 0);
        assert!(anon_writable_bytes(std::process::id()).unwrap() > 1 << 20);
        assert_eq!(anon_writable_bytes(u32::MAX), None);
    }

    #[test]
    fn statm_rss_in_bytes() {
        assert_eq!(parse_statm_rss("5000 1200 300 1 0 900 0\n", 4096), Some(1200 * 4096));
        assert_eq!(parse_statm_rss("5000", 4096), None);
        assert_eq!(parse_statm_rss("", 4096), None);
    }

    #[test]
    fn status_fields() {
        let s = parse_status("Name:\tpython3\nState:\tS (sleeping)\nTgid:\t42\nNSpid:\t42\t7\nThreads:\t3\n");
        assert_eq!(s, Status { name: "python3".into(), state: 'S', tgid: 42, ns_pid: 7, threads: 3 });
        assert_eq!(parse_status("garbage\n:::\n").tgid, 0);
    }

    #[test]
    fn cmdline_joins_args() {
        assert_eq!(parse_cmdline(b"python3\0app.py\0--port\08080\0"), "python3 app.py --port 8080");
        assert_eq!(parse_cmdline(b""), "");
    }

    #[test]
    fn random_text_never_panics() {
        let mut x: u64 = 0x1234_5678;
        for _ in 0..2000 {
            let mut s = String::new();
            for _ in 0..(x % 80) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push(b"0123456789abcdef- /:rwxp\n\t"[(x % 26) as usize] as char);
            }
            let _ = parse_maps(&s);
            let _ = parse_status(&s);
        }
    }
}
