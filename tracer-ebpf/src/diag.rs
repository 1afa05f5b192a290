//! Diagnostics on rare paths, through aya-log: a map that filled, an interpreter or thread
//! state that does not read as the layout says, a return without its entry. Each is logged the
//! first time it happens (its counter, if it has one, keeps counting), and only when userspace
//! set `DIAGNOSTICS` (`tracer -vv`).
//!
//! `report` is called only from branches that are already cold, and is out of line so that its
//! call sites cost what a counter's does. Its first test reads a global in a frozen read-only
//! map: at 0 the verifier knows the answer and removes the logging code (docs/probes.md
//! "Diagnostics").

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::map, maps::Array};
use tracer_ebpf::{AllocKind, MAX_THREADS};

use crate::maps::{global, DIAGNOSTICS};

/// One line at debug level under the `log` target userspace filters on. aya-log 0.2 does not
/// use its context argument.
macro_rules! log {
    ($($arg:tt)+) => {
        aya_log_ebpf::debug!(&(), target: "tracer::bpf", $($arg)+)
    };
}

/// What went wrong, one bit each in `DIAGNOSED`.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Diag {
    AllocsMapFull,
    StacksMapFull,
    StatsMapFull,
    /// `value`: the `AllocKind` returning.
    ReturnWithoutEntry,
    /// `value`: the entry record's age (ns).
    StaleEntry,
    /// `value`: the address of `_PyRuntime`.
    RuntimeUnreadable,
    /// `value`: the address of the interpreter state.
    InterpreterUnreadable,
    /// `value`: the address of the thread state.
    ThreadStateUnreadable,
    /// `value`: the main thread's fs base (its `thread_id`).
    MainThreadUnknown,
    ThreadLimit,
    /// `value`: the address of the frame.
    FrameUnreadable,
}

/// The diagnostics already logged (a bit per `Diag`), for all CPUs.
#[map]
static DIAGNOSED: Array<u64> = Array::with_max_entries(1, 0);

/// Logs `diag` the first time it happens, if diagnostics are on.
#[inline(never)]
pub(crate) fn report(diag: Diag, value: u64) {
    if global(&DIAGNOSTICS) == 0 {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    let (pid, tid) = ((id >> 32) as u32, id as u32);
    // Other threads may have no state (native threads): only the main thread always has one.
    if diag == Diag::MainThreadUnknown && pid != tid {
        return;
    }
    if !first_time(diag) {
        return;
    }
    match diag {
        Diag::AllocsMapFull => log!("pid {}: ALLOCS is full, allocations go untracked (--max-allocs)", pid),
        Diag::StacksMapFull => log!("pid {}: STACKS is full, new stacks count as unknown (--max-stacks)", pid),
        Diag::StatsMapFull => log!("pid {}: STACK_STATS is full, a stack goes uncounted (--max-stacks)", pid),
        Diag::ReturnWithoutEntry => {
            let symbol = AllocKind::from_raw(value as u32).map_or("?", AllocKind::symbol);
            log!("pid {} tid {}: a return from {} without its entry record", pid, tid, symbol)
        }
        Diag::StaleEntry => log!("pid {} tid {}: an entry record {} ns old: its return was missed", pid, tid, value),
        Diag::RuntimeUnreadable => {
            log!("pid {}: _PyRuntime at {:x} is unreadable: does the layout match?", pid, value)
        }
        Diag::InterpreterUnreadable => {
            log!("pid {}: the interpreter at {:x} is unreadable: does the layout match?", pid, value)
        }
        Diag::ThreadStateUnreadable => {
            log!("pid {}: the thread state at {:x} is unreadable: does the layout match?", pid, value)
        }
        Diag::MainThreadUnknown => {
            log!("pid {}: no thread state has the main thread's id {:x}: does the layout match?", pid, value)
        }
        Diag::ThreadLimit => log!("pid {}: more than {} threads searched for a thread state", pid, MAX_THREADS),
        Diag::FrameUnreadable => log!("pid {} tid {}: the frame at {:x} is unreadable", pid, tid, value),
    }
}

/// Whether `diag` has not been logged yet (two CPUs racing may both log it: harmless).
#[inline(always)]
fn first_time(diag: Diag) -> bool {
    let Some(seen) = DIAGNOSED.get_ptr_mut(0) else { return false };
    let bit = 1u64 << diag as u32;
    unsafe {
        if *seen & bit != 0 {
            return false;
        }
        *seen |= bit;
    }
    true
}
