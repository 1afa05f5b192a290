//! The BPF side's diagnostics (tracer-ebpf/src/diag.rs), printed through `log` under the target
//! `tracer::bpf`: asked for with `-vv`, or `RUST_LOG=warn,tracer::bpf=debug` for them alone
//! (docs/probes.md "Diagnostics"). A thread drains aya-log's ring buffer while the probes live.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use aya::Ebpf;
use aya_log::EbpfLogger;

/// The `log` target of the BPF side's records (set by tracer-ebpf/src/diag.rs).
pub const TARGET: &str = "tracer::bpf";
/// aya-log's ring buffer, and its size when nothing is logged (one page: the smallest there is).
pub const MAP: &str = "AYA_LOGS";
pub const UNUSED_MAP_BYTES: u32 = 4096;

/// Whether the diagnostics are asked for.
pub fn wanted() -> bool {
    log::log_enabled!(target: TARGET, log::Level::Debug)
}

/// Prints the BPF side's log records until dropped.
pub struct BpfLog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BpfLog {
    /// Takes aya-log's map out of `ebpf` (after every program that needs it has been loaded
    /// or relocated against it) and starts draining it.
    pub fn start(ebpf: &mut Ebpf) -> Result<Self> {
        let mut logger = EbpfLogger::init(ebpf).context("reading the BPF programs' log")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let fd = logger.as_raw_fd();
            while !stopping.load(Ordering::Relaxed) {
                if readable(fd, 200) {
                    logger.flush();
                }
            }
            logger.flush();
        });
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for BpfLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits up to `timeout_ms` for `fd` to have data.
fn readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut pollfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let n = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    n > 0 && pollfd.revents & libc::POLLIN != 0
}
