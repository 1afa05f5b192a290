//! The probe shims: thin programs over the helpers in `alloc`. Every allocator in
//! `tracer_ebpf::for_each_allocator!` gets three programs, under the names that list gives:
//! - a classic pair, an entry uprobe and a return uretprobe (the return traps at every call,
//!   whatever its program decides);
//! - a session program (BPF_TRACE_UPROBE_SESSION, Linux 6.13+, loaded and attached by
//!   tracer/src/uprobe_multi.rs): one program at the entry and, only when the entry returns
//!   0, at the return, so an unsampled call costs one trap instead of two (docs/probes.md).
//!
//! Userspace picks one kind per allocator (tracer/src/probes/plan.rs).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_func_ip},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_ebpf::{AllocKey, AllocKind, Counter};

use crate::alloc::{alloc_call, enter, exit_alloc, release, target};
use crate::maps::{count, ALLOCS, ANY_FINALIZING};

/// The entry of a classic uprobe/uretprobe pair: the return probe traps whatever it decides.
#[inline(always)]
fn classic_enter(ctx: &ProbeContext, kind: AllocKind) {
    if let Some((size, arg)) = alloc_call(ctx, kind) {
        let _ = enter(kind, size, arg);
    }
}

/// At the return the instruction pointer is back in the caller; at the entry it is the probed
/// address itself.
#[inline(always)]
fn is_return(ctx: &ProbeContext) -> bool {
    unsafe { (*ctx.regs).rip != bpf_get_func_ip(ctx.regs as *mut _) }
}

/// Returns 0 to see this call's return (it is recorded), 1 to let it return untrapped.
#[inline(always)]
fn session(ctx: &ProbeContext, kind: AllocKind) -> u32 {
    if is_return(ctx) {
        exit_alloc(ctx.regs, kind);
        return 0;
    }
    match alloc_call(ctx, kind) {
        Some((size, arg)) if enter(kind, size, arg) => 0,
        _ => 1,
    }
}

/// The session programs are written without `#[uprobe]`, whose wrapper always returns 0: here
/// the return value is the decision.
macro_rules! alloc_programs {
    ($(($symbol:ident, $kind:ident, $entry:ident, $ret:ident, $session:ident)),* $(,)?) => {$(
        #[uprobe]
        pub fn $entry(ctx: ProbeContext) -> u32 {
            classic_enter(&ctx, AllocKind::$kind);
            0
        }

        #[uretprobe]
        pub fn $ret(ctx: RetProbeContext) -> u32 {
            exit_alloc(ctx.regs, AllocKind::$kind);
            0
        }

        #[unsafe(no_mangle)]
        #[unsafe(link_section = "uprobe")]
        pub extern "C" fn $session(raw: *mut core::ffi::c_void) -> u32 {
            session(&ProbeContext::new(raw), AllocKind::$kind)
        }
    )*};
}

tracer_ebpf::for_each_allocator!(alloc_programs);

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    count(Counter::FreeCalls);
    let addr = ctx.arg::<u64>(0).unwrap_or(0);
    if addr == 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let finalizing_somewhere = ANY_FINALIZING.get(0).is_none_or(|v| *v != 0);
    if !finalizing_somewhere || target(tgid).is_some() {
        release(tgid, addr);
    }
    0
}

#[uprobe]
pub fn munmap_enter(ctx: ProbeContext) -> u32 {
    let addr = ctx.arg::<u64>(0).unwrap_or(0);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if addr != 0 && target(tgid).is_some() {
        let key = AllocKey { tgid, _pad: 0, addr };
        // Most munmaps release memory we never tracked (malloc's own chunks): stay quiet.
        if unsafe { ALLOCS.get(&key) }.is_some() {
            release(tgid, addr);
        }
    }
    0
}

/// Empty programs attached where the real ones are (`TRACER_PROBE_VARIANT=bare`): what the
/// probes cost before any of our work, the baseline the benchmark measures our work against.
#[uprobe]
pub fn bare_enter(_ctx: ProbeContext) -> u32 {
    0
}

#[uretprobe]
pub fn bare_exit(_ctx: RetProbeContext) -> u32 {
    0
}
