//! Processes the benchmark starts: line readers with timestamps, signals by PID, /proc sampling.
//! Every child is killed (by its own PID) when its handle is dropped, so no tracer is ever left
//! attached when a step fails.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::describe;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// A started process whose stdout and stderr are read line by line, with arrival times.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub started: Instant,
    child: Option<Child>,
    lines: Receiver<(Stream, Instant, String)>,
    /// Every line seen so far (for error messages and later parsing).
    pub seen: Vec<(Stream, String)>,
    exited: Option<(ExitStatus, Instant)>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("could not start `{}`", describe(cmd)))?;
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        for (stream, pipe) in
            [(Stream::Out, Box::new(out) as Box<dyn std::io::Read + Send>), (Stream::Err, Box::new(err))]
        {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((stream, Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Proc {
            name: name.to_string(),
            pid: child.id(),
            started,
            child: Some(child),
            lines: rx,
            seen: Vec::new(),
            exited: None,
        })
    }

    /// Waits for a line that `pred` accepts; errors when the process closes its output or the
    /// time runs out.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(Stream, &str) -> bool,
    ) -> Result<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((stream, at, line)) => {
                    let hit = pred(stream, &line);
                    self.seen.push((stream, line.clone()));
                    if hit {
                        return Ok((at, line));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let tail = self.tail(8);
                    bail!("{}: no {what} within {:.0} s\n{tail}", self.name, timeout.as_secs_f64(),)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait(Duration::from_secs(5)).ok();
                    let tail = self.tail(8);
                    bail!(
                        "{} ended before {what} ({})\n{tail}",
                        self.name,
                        status.map(|s| s.to_string()).unwrap_or_else(|| "still running".into()),
                    )
                }
            }
        }
    }

    /// Takes in the lines that have arrived so far without waiting.
    pub fn drain(&mut self) {
        while let Ok((stream, _, line)) = self.lines.try_recv() {
            self.seen.push((stream, line));
        }
    }

    pub fn tail(&mut self, n: usize) -> String {
        self.drain();
        let start = self.seen.len().saturating_sub(n);
        self.seen[start..].iter().map(|(_, l)| format!("    | {l}")).collect::<Vec<_>>().join("\n")
    }

    pub fn try_exited(&mut self) -> Option<(ExitStatus, Instant)> {
        if self.exited.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.exited = Some((status, Instant::now()));
                }
            }
        }
        self.exited
    }

    /// Waits for exit, polling every millisecond (so the exit time is known to ~1 ms).
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((status, _)) = self.try_exited() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} (pid {}) did not exit within {:.0} s", self.name, self.pid, timeout.as_secs_f64());
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn exit_time(&self) -> Option<Instant> {
        self.exited.map(|(_, t)| t)
    }

    pub fn signal(&self, sig: &str) -> Result<()> {
        signal(self.pid, sig)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill(); // SIGKILL to this child's own PID
                let _ = child.wait();
            }
        }
    }
}

/// `kill -s SIG PID` (no libc dependency in xtask).
pub fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -s {sig} {pid} failed");
    }
    Ok(())
}

/// A `kB` field of /proc/PID/status (VmHWM, VmRSS).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Samples VmHWM (peak RSS) of a process every 50 ms until stopped; the last good reading is
/// the peak up to then.
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl PeakRss {
    pub fn start(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kb) = status_kb(pid, "VmHWM") {
                    p.fetch_max(kb, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        PeakRss { stop, peak, handle: Some(handle) }
    }

    /// One more reading now (e.g. just before the process is asked to stop).
    pub fn poke(&self, pid: u32) {
        if let Some(kb) = status_kb(pid, "VmHWM") {
            self.peak.fetch_max(kb, Ordering::Relaxed);
        }
    }

    pub fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        Some(self.peak.load(Ordering::Relaxed)).filter(|&kb| kb > 0)
    }
}

/// Sum of `memlock:` over the BPF map fds of a process (/proc/PID/fdinfo), in bytes, and how
/// many maps.
pub fn bpf_map_memlock(pid: u32) -> Option<(u64, usize)> {
    let dir = fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?;
    let (mut total, mut maps) = (0u64, 0usize);
    for entry in dir.flatten() {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        if !text.lines().any(|l| l.starts_with("map_type:")) {
            continue;
        }
        maps += 1;
        if let Some(v) =
            text.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse::<u64>().ok())
        {
            total += v;
        }
    }
    (maps > 0).then_some((total, maps))
}

/// How many probe attachments a process holds: fds that are perf events (uprobes) or BPF links.
pub fn probe_fds(pid: u32) -> Option<usize> {
    let dir = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.flatten()
            .filter(|e| {
                fs::read_link(e.path())
                    .map(|t| {
                        let t = t.to_string_lossy();
                        t.contains("perf_event") || t.contains("bpf_link")
                    })
                    .unwrap_or(false)
            })
            .count(),
    )
}

/// PIDs of processes whose name is exactly `name` (like `pgrep -x`).
pub fn pids_named(name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(comm) = fs::read_to_string(entry.path().join("comm")) {
            if comm.trim_end() == name {
                found.push(pid);
            }
        }
    }
    found
}
