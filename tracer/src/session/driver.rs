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

/// How far apart the first samples of a recording are (with `Cadence::DenseStart`).
pub const DENSE: Duration = Duration::from_millis(100);

/// When the session is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Every interval (`serve`: each sample rebuilds and publishes the live report).
    Fixed,
    /// Dense at the start, coarser as the recording goes on (`record`): a tenth of the time
    /// elapsed, from [`DENSE`] up to the interval. A 1-second script gets about ten samples, a
    /// 6-second one about thirty, and from 10 x the interval on it is the interval: long runs
    /// are sampled as before. Each series stays bounded (`crate::series`).
    DenseStart,
}

impl Cadence {
    /// The time from a sample to the next, `elapsed` into the recording, when sampling took
    /// `sampling`: never under twice that (the tracer spends at most a third of its time
    /// reading), never over `interval`.
    pub fn gap(self, elapsed: Duration, interval: Duration, sampling: Duration) -> Duration {
        match self {
            Cadence::Fixed => interval,
            Cadence::DenseStart => (elapsed / 10).clamp(DENSE.min(interval), interval).max(sampling * 2).min(interval),
        }
    }
}

/// One sampling interval, as `on_tick` sees it.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// Intervals sampled so far, this one included.
    pub number: u64,
    /// Time the sampling took.
    pub sampling: Duration,
}

/// Drives `session` until `deadline` (from now), a signal, or (single mode) the end of its first
/// process; returns the view the recording stopped at. The session is sampled at once, then at
/// the `cadence` (at most every `interval`), and after each sample `on_tick` runs.
pub async fn drive(
    session: &mut Session,
    stops: &mut Stops,
    (interval, cadence): (Duration, Cadence),
    deadline: Option<Duration>,
    mut on_tick: impl FnMut(&mut Session, Tick),
) -> Result<FinalView> {
    let Stops { int: sigint, term: sigterm, hup: sighup } = stops;
    let deadline = deadline.map(|d| tokio::time::Instant::now() + d);
    let started = tokio::time::Instant::now();
    let (mut next_sample, mut next_scan) = (started, started);
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
            _ = tokio::time::sleep_until(next_sample) => {
                let began = Instant::now();
                session.sample_series();
                // Containers are read on their own cadence: a scan costs more than the maps.
                if tokio::time::Instant::now() >= next_scan {
                    let scan = Instant::now();
                    session.scan_holders();
                    next_scan = tokio::time::Instant::now() + cadence.gap(started.elapsed(), interval, scan.elapsed());
                }
                ticks += 1;
                let tick = Tick { number: ticks, sampling: began.elapsed() };
                on_tick(session, tick);
                // Not slowed by the time sampling took: that is mostly naming new stacks, a
                // one-off cost that is highest exactly while a short program starts.
                next_sample = tokio::time::Instant::now() + cadence.gap(started.elapsed(), interval, Duration::ZERO);
                log::debug!("sample {ticks} at {:.3} s took {:?}", started.elapsed().as_secs_f64(), tick.sampling);
            }
        }
    };
    Ok(view)
}

/// The signals that stop a recording (SIGINT, SIGTERM, SIGHUP), listened to from before the
/// session starts: a Ctrl-C while the probes are being attached stops the recording as soon as
/// they are, with a report, instead of killing the tracer with none.
pub struct Stops {
    int: Stop,
    term: Stop,
    hup: Stop,
}

impl Stops {
    /// Within the runtime, before `Session::start`.
    pub fn new() -> Result<Stops> {
        Ok(Stops { int: Stop::new(libc::SIGINT)?, term: Stop::new(libc::SIGTERM)?, hup: Stop::new(libc::SIGHUP)? })
    }
}

/// A signal that stops the tracer, unless it was ignored when the tracer started (`nohup`
/// ignores SIGHUP, a background job of a script SIGINT): that choice is kept, not replaced by a
/// handler.
pub struct Stop(Option<tokio::signal::unix::Signal>);

impl Stop {
    pub fn new(signo: libc::c_int) -> Result<Stop> {
        if ignored(signo) {
            return Ok(Stop(None));
        }
        Ok(Stop(Some(signal(SignalKind::from_raw(signo))?)))
    }

    /// Completes when the signal arrives; never when it is ignored.
    pub async fn recv(&mut self) {
        match self.0.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Whether `signo`'s disposition is "ignore" (left as it was inherited, or set before any
/// handler of ours: tokio's handlers stay installed once registered).
fn ignored(signo: libc::c_int) -> bool {
    // SAFETY: a null new action only reads the current disposition into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signo, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_recording_is_sampled_densely_at_first_then_at_the_interval() {
        let gap = |elapsed_ms: u64, sampling_ms: u64| {
            Cadence::DenseStart.gap(ms(elapsed_ms), 2000 * MS, ms(sampling_ms)).as_millis()
        };
        assert_eq!(gap(0, 1), 100);
        assert_eq!(gap(900, 1), 100);
        assert_eq!(gap(3000, 1), 300);
        assert_eq!(gap(20_000, 1), 2000);
        assert_eq!(gap(600_000, 1), 2000, "long runs: the interval");
        assert_eq!(gap(500, 70), 140, "sampling takes at most a third of the time");
        assert_eq!(gap(500, 1200), 2000, "never over the interval");
        assert_eq!(Cadence::DenseStart.gap(Duration::ZERO, 50 * MS, MS), 50 * MS, "a short interval stays");
        assert_eq!(Cadence::Fixed.gap(Duration::ZERO, 2000 * MS, MS), 2000 * MS);
    }
}
