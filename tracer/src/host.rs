//! Host mode (`--all`): which processes on the host are CPython, filtered by the user, and the
//! ones that start later (announced by exec events, inspected once their libraries are mapped).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::target::{self, Target};

/// What to trace on the host.
#[derive(Debug, Clone)]
pub struct HostFilter {
    /// Only processes whose command line matches.
    pub matching: Option<Regex>,
    pub exclude: Vec<u32>,
    /// At most this many traced processes.
    pub max_processes: usize,
}

/// A process that was looked at and not traced, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub pid: u32,
    pub cmdline: String,
    pub reason: String,
}

impl HostFilter {
    fn wants(&self, pid: u32, cmdline: &str) -> bool {
        pid != std::process::id()
            && !self.exclude.contains(&pid)
            && self.matching.as_ref().is_none_or(|re| re.is_match(cmdline))
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline")).map(|r| crate::procfs::parse_cmdline(&r)).unwrap_or_default()
}

/// A cheap first look: does anything mapped into the process mention python?
fn maps_mention_python(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("python"))
}

/// Every process on the host now, inspected: CPython 3.10+ ones to trace, others skipped with
/// the reason (only those that look like Python are listed, not every shell and daemon).
pub fn discover(filter: &HostFilter) -> (Vec<Target>, Vec<Skipped>) {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    let mut traced = Vec::new();
    let mut skipped = Vec::new();
    for pid in pids {
        let cmd = cmdline(pid);
        if cmd.is_empty() || !filter.wants(pid, &cmd) || !maps_mention_python(pid) {
            continue;
        }
        match inspect(pid) {
            Ok(t) if traced.len() < filter.max_processes => traced.push(t),
            Ok(_) => skipped.push(Skipped {
                pid,
                cmdline: cmd,
                reason: format!("over the --max-processes cap of {}", filter.max_processes),
            }),
            Err(reason) => skipped.push(Skipped { pid, cmdline: cmd, reason }),
        }
    }
    (traced, skipped)
}

fn inspect(pid: u32) -> Result<Target, String> {
    target::inspect(pid).map_err(|e| match e.downcast_ref::<crate::error::UserError>() {
        Some(u) => u.message.clone(),
        None => format!("{e:#}"),
    })
}

/// How long a newly exec'd process is given to map its interpreter.
const NEW_PROCESS_PATIENCE: Duration = Duration::from_secs(3);

/// Processes that exec'd recently, waiting for their libraries to be mapped.
#[derive(Default)]
pub struct Newcomers {
    waiting: HashMap<u32, Instant>,
}

impl Newcomers {
    pub fn add(&mut self, pid: u32) {
        self.waiting.entry(pid).or_insert_with(Instant::now);
    }

    /// The newcomers that are now inspectable CPython processes; the rest wait or, past their
    /// patience (or once gone), are dropped and reported as skipped when they look like Python.
    pub fn poll(&mut self, filter: &HostFilter, skipped: &mut Vec<Skipped>) -> Vec<Target> {
        let mut ready = Vec::new();
        let mut done = Vec::new();
        for (&pid, &since) in &self.waiting {
            let cmd = cmdline(pid);
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() || (!cmd.is_empty() && !filter.wants(pid, &cmd))
            {
                done.push(pid);
                continue;
            }
            let expired = since.elapsed() > NEW_PROCESS_PATIENCE;
            if !maps_mention_python(pid) {
                if expired {
                    done.push(pid);
                }
                continue;
            }
            match inspect(pid) {
                Ok(t) => {
                    ready.push(t);
                    done.push(pid);
                }
                Err(reason) if expired => {
                    skipped.push(Skipped { pid, cmdline: cmd, reason });
                    done.push(pid);
                }
                Err(_) => {}
            }
        }
        for pid in done {
            self.waiting.remove(&pid);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_by_cmdline_and_pid() {
        let f = HostFilter { matching: Regex::new("gunicorn|app\\.py").ok(), exclude: vec![42], max_processes: 8 };
        assert!(f.wants(7, "python3 app.py --port 1"));
        assert!(!f.wants(42, "python3 app.py"));
        assert!(!f.wants(7, "python3 other.py"));
        assert!(!f.wants(std::process::id(), "python3 app.py"));
    }
}
