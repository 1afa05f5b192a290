//! Probe windows (`--window ON/EVERY`): the windowed probes (`Probe::windowed`: the allocators
//! and free, hit at every allocation) are attached only while a window is open; the rare ones
//! stay attached throughout. When to open and close is the session's business
//! (`session::windows`); this is the mechanics:
//!
//! - opening attaches the windowed probes of every traced process (~11 ms per probe);
//! - `stop_recording` makes the allocation programs record nothing new (frees are still seen)
//!   for the last part of a window, so that a block born just before the close is seen dying;
//! - closing takes the windowed links and drops them on a helper thread: the kernel waits for a
//!   grace period per uprobe (~80 ms each), and the tracer's loop must not;
//! - the next opening first clears the entry records (PENDING) of calls that entered before the
//!   close and returned after it (their return was not seen): left there, they would make the
//!   thread's next calls look nested. Such a call is simply not recorded.

use std::thread::JoinHandle;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use tracer_ebpf::{maps, Pending};

use super::plan::Which;
use super::Probes;
use crate::target::Target;

/// Whether windows are used, whether one is open, and the detaching of the last one.
#[derive(Default)]
pub(super) struct State {
    enabled: bool,
    open: bool,
    /// The thread dropping the last window's links, and whose links they were.
    closing: Option<(JoinHandle<()>, Vec<u32>)>,
}

impl State {
    /// Which probes a process added now gets.
    pub(super) fn which(&self) -> Which {
        if !self.enabled || self.open {
            Which::All
        } else {
            Which::Steady
        }
    }

    /// Waits for the last window's links to be gone (at the end of a session).
    pub(super) fn join_closing(&mut self) {
        if let Some((h, _)) = self.closing.take() {
            let _ = h.join();
        }
    }
}

impl Probes {
    /// From now on (call before adding any process) the windowed probes are attached only
    /// while a window is open; none is open yet.
    pub fn use_windows(&mut self) {
        self.windows.enabled = true;
    }

    /// Opens a window on `targets` (the traced processes): their windowed probes are attached.
    /// False (nothing done) while the last window's probes are still being detached.
    pub fn open_window<'a>(&mut self, targets: impl IntoIterator<Item = &'a Target>) -> bool {
        if let Some((h, _)) = &self.windows.closing {
            if !h.is_finished() {
                log::debug!("probe window skipped: the last one's probes are still being detached");
                return false;
            }
        }
        if let Some((h, pids)) = self.windows.closing.take() {
            let _ = h.join();
            self.clear_entries(&pids);
        }
        self.set_closing(false);
        self.windows.open = true;
        for target in targets {
            if let Err(e) = self.attach_all(target, Which::Windowed) {
                log::warn!("probe window: pid {} not traced in this window: {e:#}", target.pid);
                drop(self.take_windowed(target.pid));
            }
        }
        true
    }

    /// The last part of a window: allocation calls are no longer recorded, frees still are.
    pub fn stop_recording(&mut self) {
        self.set_closing(true);
    }

    /// Closes the window: every windowed link is dropped on a helper thread (see the module doc).
    pub fn close_window(&mut self) {
        self.windows.open = false;
        let pids = self.traced_pids();
        let links: Vec<_> = pids.iter().flat_map(|&pid| self.take_windowed(pid)).collect();
        // A window closed before the last one's links were gone (never with sane windows).
        self.windows.join_closing();
        self.windows.closing = Some((std::thread::spawn(move || drop(links)), pids));
    }

    fn set_closing(&mut self, closing: bool) {
        let Some(map) = self.ebpf.map_mut(maps::WINDOW_CLOSING) else { return };
        if let Ok(mut flag) = Array::<&mut MapData, u64>::try_from(map) {
            if let Err(e) = flag.set(0, u64::from(closing), 0) {
                log::warn!("probe window: cannot set the closing flag: {e}");
            }
        }
    }

    /// Forgets the entry records of `pids`' threads: calls whose return went unseen.
    fn clear_entries(&mut self, pids: &[u32]) {
        let Some(map) = self.ebpf.map_mut(maps::PENDING) else { return };
        let Ok(mut pending) = BpfHashMap::<&mut MapData, u64, Pending>::try_from(map) else { return };
        let stale: Vec<u64> =
            pending.keys().filter_map(Result::ok).filter(|k| pids.contains(&((k >> 32) as u32))).collect();
        for key in stale {
            let _ = pending.remove(&key);
        }
    }
}
