//! A traced process's life around its allocations: the interpreter starts finalizing, the
//! process forks, the process execs.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{raw_tracepoint, uprobe},
    programs::{ProbeContext, RawTracePointContext},
};
use tracer_ebpf::{event, TargetConfig};

use crate::maps::{global, notify, ANY_FINALIZING, FOLLOW_FORKS, TARGETS, TGID_OFFSET, WATCH_EXECS};

/// `Py_FinalizeEx` entry: the program's own work is over and module teardown is about to free
/// everything. Freeze this target's view from here on.
#[uprobe]
pub fn py_finalize(_ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(cfg) = TARGETS.get_ptr_mut(&tgid) {
        let now = unsafe { bpf_ktime_get_ns() };
        unsafe {
            if (*cfg).finalizing_since_ns == 0 {
                (*cfg).finalizing_since_ns = now;
                if let Some(any) = ANY_FINALIZING.get_ptr_mut(0) {
                    *any = 1;
                }
                notify(event::FINALIZING, tgid, now);
            }
        }
    }
    0
}

/// A traced process forks: with --follow-forks the child is registered right away (its
/// allocations count from the moment its probes are attached) and announced.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn on_fork(ctx: RawTracePointContext) -> i32 {
    if global(&FOLLOW_FORKS) == 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(cfg) = (unsafe { TARGETS.get(&parent) }).copied() else { return 0 };
    let child_task: u64 = ctx.arg(1);
    let offset = global(&TGID_OFFSET);
    if child_task == 0 || offset == 0 {
        return 0;
    }
    let Ok(child) = (unsafe { bpf_probe_read_kernel((child_task + offset) as *const i32) }) else { return 0 };
    let child = child as u32;
    if child == parent || child == 0 {
        return 0; // a new thread, not a new process
    }
    // A PID that was traced before belongs to a process that has exited (a new process never
    // gets a live PID): its entry is stale and replaced. Userspace assigns the instance.
    let fresh = TargetConfig { finalizing_since_ns: 0, instance: 0, ..cfg };
    if TARGETS.insert(&child, &fresh, BPF_ANY as u64).is_ok() {
        notify(event::FORKED, child, parent as u64);
    }
    0
}

/// A traced process replaced its program: its layout no longer applies, so it stops being
/// traced at once. In host mode every exec is announced, to find new Python processes.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn on_exec(_ctx: RawTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let traced = unsafe { TARGETS.get(&tgid) }.is_some();
    if traced {
        let _ = TARGETS.remove(&tgid);
    }
    if traced || global(&WATCH_EXECS) != 0 {
        notify(event::EXEC, tgid, traced as u64);
    }
    0
}
