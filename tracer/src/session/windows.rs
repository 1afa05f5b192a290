//! When probe windows open and close (`--window`): the schedule, the growth gate of
//! `--window auto`, and what the report says about them. The probes' side (attaching,
//! detaching off the loop) is `probes::window`.
//!
//! A window of ON out of every EVERY runs in three phases: *recording* (allocations and frees
//! seen) for the first 90% of ON, *closing* (frees seen, no new allocation recorded, so a
//! block born just before the close is seen dying) for the rest, then *shut* until the next
//! period. The stacks are sampled once per period, when its window closes (or, in auto mode,
//! when a period passes without growth): sampled so, the outstanding bytes of a leaking line
//! rise by the same step every period, a straight line whose slope is the true rate times the
//! recorded share of the time (`recorded_share`), which `leaks` scales back.

use std::time::{Duration, Instant};

use crate::config::{WindowMode, WindowSpec};
use crate::probes::Probes;
use crate::procfs;
use crate::report::WindowsInfo;
use crate::target::Target;

/// `--window auto`: a window opens on a traced process only when its resident memory or its
/// anonymous writable mappings (`Heap`) rose by at least this much above their highest so far.
pub const AUTO_GROWTH_BYTES: u64 = 64 * 1024;

/// What auto mode watches of a process's heap, read from outside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Heap {
    /// Resident memory (`/proc/PID/statm`).
    resident: u64,
    /// Anonymous writable mappings (`/proc/PID/maps`): glibc's arenas (`[heap]` and the
    /// others), pymalloc's arenas and mmapped blocks, touched or not: the Python heap's growth
    /// shows here even while the resident size stays flat.
    mapped: u64,
}

impl Heap {
    fn of(pid: u32) -> Option<Heap> {
        Some(Heap { resident: procfs::rss_bytes(pid)?, mapped: procfs::anon_writable_bytes(pid).unwrap_or(0) })
    }

    /// Whether `now` rose `AUTO_GROWTH_BYTES` above these marks in either measure.
    fn outgrown_by(&self, now: Heap) -> bool {
        now.resident >= self.resident.saturating_add(AUTO_GROWTH_BYTES)
            || now.mapped >= self.mapped.saturating_add(AUTO_GROWTH_BYTES)
    }

    fn raise_to(&mut self, now: Heap) {
        self.resident = self.resident.max(now.resident);
        self.mapped = self.mapped.max(now.mapped);
    }
}

/// The share of a window spent closing (see the module doc).
const CLOSING_SHARE: f64 = 0.1;

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No window open; the next period starts at `next`.
    Shut { next: Instant },
    /// A window opened at `opened`, recording.
    Recording { opened: Instant },
    /// The window that opened at `opened` no longer records new allocations.
    Closing { opened: Instant },
}

/// What the session's loop does at a window event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// A window is due: follow the earlier windows' blocks (`sweep`), then `open` it.
    Open,
    /// A period ended (its window closed, or auto mode saw no growth): sample the stacks.
    SampleStacks,
}

pub struct Windows {
    spec: WindowSpec,
    auto: bool,
    phase: Phase,
    opened: u64,
    /// Auto mode: periods that passed without a window (no growth).
    skipped: u64,
    /// Time allocations were recorded.
    recorded: Duration,
    /// Auto mode: each process's highest heap marks so far.
    highest: std::collections::HashMap<u32, Heap>,
    /// Auto mode: the processes that grew in the period that just ended, the only ones whose
    /// allocation probes the next window attaches. In host mode an idle process then holds no
    /// allocation link, which would otherwise make every other traced process's calls dearer
    /// (docs/probes.md, "Host mode").
    growing: Vec<u32>,
}

impl Windows {
    /// The schedule `mode` asks for; None when the probes stay attached.
    pub fn new(mode: WindowMode, now: Instant) -> Option<Windows> {
        let spec = mode.spec()?;
        let auto = matches!(mode, WindowMode::Auto(_));
        // Auto mode waits a period to see growth first; a fixed schedule opens at once.
        let next = if auto { now + spec.every } else { now };
        Some(Windows {
            spec,
            auto,
            phase: Phase::Shut { next },
            opened: 0,
            skipped: 0,
            recorded: Duration::ZERO,
            highest: Default::default(),
            growing: Vec::new(),
        })
    }

    fn recording_length(&self) -> Duration {
        self.spec.on.mul_f64(1.0 - CLOSING_SHARE)
    }

    /// The share of the timeline in which allocations are recorded, by the schedule: what a
    /// rate measured on the per-period samples is scaled by.
    pub fn recorded_share(&self) -> f64 {
        self.recording_length().as_secs_f64() / self.spec.every.as_secs_f64()
    }

    /// A window is open (recording or closing).
    pub fn is_open(&self) -> bool {
        !matches!(self.phase, Phase::Shut { .. })
    }

    /// When the next event is due.
    pub fn next_event(&self) -> Instant {
        match self.phase {
            Phase::Shut { next } => next,
            Phase::Recording { opened } => opened + self.recording_length(),
            Phase::Closing { opened } => opened + self.spec.on,
        }
    }

    /// Moves the schedule on if its next event is due; `targets` are the live processes.
    pub fn step<'a>(&mut self, now: Instant, probes: &mut Probes, targets: impl Iterator<Item = &'a Target>) -> Step {
        if now < self.next_event() {
            return Step::Nothing;
        }
        match self.phase {
            Phase::Shut { next } => {
                // A late loop skips the periods it missed rather than opening them back to back.
                let mut following = next + self.spec.every;
                while following <= now {
                    following += self.spec.every;
                }
                self.phase = Phase::Shut { next: following };
                if self.auto {
                    self.growing = self.grew(targets);
                    log::debug!("auto windows: grew in the last period: {:?}", self.growing);
                    if self.growing.is_empty() {
                        self.skipped += 1;
                        return Step::SampleStacks;
                    }
                }
                Step::Open
            }
            Phase::Recording { opened } => {
                probes.stop_recording();
                self.recorded += now.saturating_duration_since(opened);
                self.phase = Phase::Closing { opened };
                Step::Nothing
            }
            Phase::Closing { opened } => {
                probes.close_window();
                let mut next = opened + self.spec.every;
                while next <= now {
                    next += self.spec.every;
                }
                self.phase = Phase::Shut { next };
                Step::SampleStacks
            }
        }
    }

    /// Opens the window `step` said was due (if the last one's probes are gone; else this
    /// period goes without): on every process, or in auto mode on those that grew.
    pub fn open<'a>(&mut self, now: Instant, probes: &mut Probes, targets: impl Iterator<Item = &'a Target>) {
        let (auto, growing) = (self.auto, &self.growing);
        if probes.open_window(targets.filter(|t| !auto || growing.contains(&t.pid))) {
            self.opened += 1;
            self.phase = Phase::Recording { opened: now };
        }
    }

    /// Auto mode's gate: the processes whose resident memory or anonymous mappings rose above
    /// their highest so far by `AUTO_GROWTH_BYTES`. (Every process's marks are raised.)
    fn grew<'a>(&mut self, targets: impl Iterator<Item = &'a Target>) -> Vec<u32> {
        let mut grew = Vec::new();
        for t in targets {
            let Some(now) = Heap::of(t.pid) else { continue };
            let high = self.highest.entry(t.pid).or_insert(now);
            if high.outgrown_by(now) {
                grew.push(t.pid);
            }
            high.raise_to(now);
        }
        grew
    }

    /// Auto mode: a process's starting point (its heap when it is first traced).
    pub fn watch(&mut self, pid: u32) {
        if self.auto {
            if let Some(now) = Heap::of(pid) {
                self.highest.insert(pid, now);
            }
        }
    }

    /// What the report says about the windows, `elapsed` into the recording.
    pub fn info(&self, elapsed: Duration) -> WindowsInfo {
        let mut recorded = self.recorded;
        if let Phase::Recording { opened } = self.phase {
            recorded += opened.elapsed();
        }
        WindowsInfo {
            mode: if self.auto { "auto".to_string() } else { "fixed".to_string() },
            on_s: self.spec.on.as_secs_f64(),
            every_s: self.spec.every.as_secs_f64(),
            recorded_share: self.recorded_share(),
            recorded_s: recorded.as_secs_f64(),
            elapsed_s: elapsed.as_secs_f64(),
            opened: self.opened,
            skipped_no_growth: self.skipped,
            inferred_frees: 0,
            inferred_by: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_share_leaves_out_the_closing_part() {
        let spec = WindowSpec { on: Duration::from_secs(1), every: Duration::from_secs(10) };
        let w = Windows::new(WindowMode::Fixed(spec), Instant::now()).unwrap();
        assert!((w.recorded_share() - 0.09).abs() < 1e-9, "{}", w.recorded_share());
        assert!(Windows::new(WindowMode::Off, Instant::now()).is_none());
    }

    #[test]
    fn a_fixed_schedule_opens_at_once_and_auto_waits_a_period() {
        let now = Instant::now();
        let fixed = Windows::new(WindowMode::Fixed(WindowSpec::AUTO), now).unwrap();
        assert_eq!(fixed.next_event(), now);
        let auto = Windows::new(WindowMode::Auto(WindowSpec::AUTO), now).unwrap();
        assert_eq!(auto.next_event(), now + WindowSpec::AUTO.every);
    }

    #[test]
    fn either_measure_opens_a_window_and_the_marks_only_rise() {
        let mut high = Heap { resident: 10 << 20, mapped: 50 << 20 };
        let flat_rss_grown_heap = Heap { resident: 10 << 20, mapped: (50 << 20) + AUTO_GROWTH_BYTES };
        assert!(high.outgrown_by(flat_rss_grown_heap), "pymalloc/glibc arenas grew, RSS flat");
        assert!(high.outgrown_by(Heap { resident: (10 << 20) + AUTO_GROWTH_BYTES, mapped: 50 << 20 }));
        assert!(!high.outgrown_by(Heap { resident: (10 << 20) + 4096, mapped: (50 << 20) + 4096 }), "a page is noise");
        assert!(!high.outgrown_by(Heap { resident: 1 << 20, mapped: 1 << 20 }), "shrinking is not growth");
        high.raise_to(Heap { resident: 1 << 20, mapped: 60 << 20 });
        assert_eq!(high, Heap { resident: 10 << 20, mapped: 60 << 20 });
        assert!(!high.outgrown_by(flat_rss_grown_heap), "back under the highest mark: no window");
        assert!(Heap::of(std::process::id()).unwrap().mapped > 0);
    }
}
