//! The one loop that drives a session, for `record` and `serve` alike: it samples at every
//! interval (then hands over to the command's `on_tick`), follows the processes' lifecycles as
//! soon as the BPF side announces something (and at least every [`HOUSEKEEPING`]), and stops at
//! the duration, on a signal, or when the session's lifecycle says so.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, SignalKind};

use crate::crash;
use crate::report::FinalView;

use super::{lifecycle, Session};

/// How often lifecycles are followed when nothing is announced (processes that exit are not
/// announced; see `lifecycle`).
pub const HOUSEKEEPING: Duration = Duration::from_millis(20);

/// One sampling interval, as `on_tick` sees it.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// Intervals sampled so far, this one included.
    pub number: u64,
    /// Time the sampling took.
    pub sampling: Duration,
}

/// Drives `session` until `deadline` (from now), a signal, or (single mode) the end of its first
/// process; returns the view the recording stopped at. Every `interval` the session is sampled,
/// then `on_tick` runs.
pub async fn drive(
    session: &mut Session,
    interval: Duration,
    deadline: Option<Duration>,
    mut on_tick: impl FnMut(&mut Session, Tick),
) -> Result<FinalView> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let deadline = deadline.map(|d| tokio::time::Instant::now() + d);
    let mut sample_tick = tokio::time::interval(interval);
    sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let events = Announcements::new(session.events_fd())?;
    let mut ticks = 0u64;
    // Made once: `select!` makes its other futures anew at every turn of the loop.
    let test_hook = panic_when_asked();
    tokio::pin!(test_hook);
    let view = loop {
        tokio::select! {
            _ = &mut test_hook => unreachable!("panic_when_asked never returns"),
            _ = events.wait() => {
                if let Some(view) = lifecycle::follow(session) {
                    break view;
                }
            }
            _ = housekeeping.tick() => {
                if let Some(view) = lifecycle::follow(session) {
                    break view;
                }
            }
            _ = sigint.recv() => break FinalView::Interrupted,
            _ = sigterm.recv() => break FinalView::Interrupted,
            _ = sighup.recv() => break FinalView::Interrupted,
            _ = sleep_until(deadline) => break FinalView::Duration,
            _ = sleep_until(session.next_window_event().map(tokio::time::Instant::from_std)) => {
                session.step_windows();
            }
            _ = sample_tick.tick() => {
                let started = Instant::now();
                session.sample();
                ticks += 1;
                on_tick(session, Tick { number: ticks, sampling: started.elapsed() });
            }
        }
    };
    Ok(view)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The safety test's hook (`crash::PANIC_AFTER_ATTACH_ENV`): panics that long after it is first
/// polled (when the loop starts), so that the test sees the probes go with an unwinding tracer.
/// Never completes otherwise.
async fn panic_when_asked() {
    match crash::panic_after_attach() {
        Some(after) => {
            tokio::time::sleep(after).await;
            panic!("{} is set (safety test hook)", crash::PANIC_AFTER_ATTACH_ENV);
        }
        None => std::future::pending().await,
    }
}

/// A descriptor owned elsewhere (the ring buffer map), registered with tokio for readiness.
struct BorrowedFd(RawFd);

impl AsRawFd for BorrowedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Wakes up when the BPF side announces something (new stacks, finalization, forks, execs).
/// Without probes nothing is announced: it then waits on a pipe nobody writes to.
struct Announcements {
    events: AsyncFd<BorrowedFd>,
    _quiet: (OwnedFd, OwnedFd),
}

impl Announcements {
    fn new(ring_buffer: Option<RawFd>) -> Result<Self> {
        let quiet = nix::unistd::pipe()?;
        let fd = ring_buffer.unwrap_or_else(|| quiet.0.as_raw_fd());
        // SAFETY: the descriptor (the session's ring buffer, or `quiet`) outlives `events`: the
        // session outlives the loop that owns this value, and `quiet` is dropped with it.
        let events = unsafe { AsyncFd::register_with_interest(BorrowedFd(fd), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { events, _quiet: quiet })
    }

    /// Waits for an announcement; the caller then drains them (`lifecycle::follow`).
    async fn wait(&self) {
        if let Ok(mut guard) = self.events.readable().await {
            guard.clear_ready();
        }
    }
}
