//! An allocation call's entry and return, and what they record: the block (ALLOCS), its stack's
//! totals (STACK_STATS) and, the first time a stack is seen, the stack itself (STACKS).

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{pt_regs, BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::ProbeContext,
};
use tracer_ebpf::{
    event, AllocInfo, AllocKey, AllocKind, Counter, Pending, StackStats, TargetConfig, PENDING_STALE_NS, UNKNOWN_STACK,
};

use crate::diag::{report, Diag};
use crate::maps::{
    count, global, lose, notify, ALLOCS, PENDING, SAMPLE_BYTES, SCRATCH, STACKS, STACK_STATS, TARGETS, WINDOW_CLOSING,
};
use crate::pystack::{read_user_u64, walk_stack};

const EEXIST: i32 = -17;
const MAP_ANONYMOUS: u64 = 0x20;
const PROT_WRITE: u64 = 0x2;

/// Sampling by bytes: an allocation of `size` is recorded with probability min(1, size / N)
/// and then stands for N bytes (see `weights`), so the expected totals are the true ones.
#[inline(always)]
fn sampled(size: u64) -> bool {
    let period = global(&SAMPLE_BYTES);
    if period == 0 || size >= period {
        return true;
    }
    let r = (unsafe { bpf_get_prandom_u32() } as u64 * period) >> 32;
    r < size
}

/// (bytes, count) one recorded allocation of `size` stands for.
#[inline(always)]
fn weights(size: u64) -> (u64, u64) {
    let period = global(&SAMPLE_BYTES);
    if period == 0 || size >= period {
        (size, 1)
    } else {
        (period, period / size.max(1))
    }
}

/// An allocation call's (size, argument) from its registers at the entry: the argument is the
/// block realloc/reallocarray release, or posix_memalign's result slot. None for a mapping
/// that is not heap: only writable anonymous mappings are (pymalloc arenas, big buffers, thread
/// stacks); file mappings and PROT_NONE address-space reservations (glibc's arena heaps) are not.
#[inline(always)]
pub(crate) fn alloc_call(ctx: &ProbeContext, kind: AllocKind) -> Option<(u64, u64)> {
    let arg = |i| ctx.arg::<u64>(i).unwrap_or(0);
    Some(match kind {
        AllocKind::Malloc | AllocKind::Valloc | AllocKind::Pvalloc => (arg(0), 0),
        AllocKind::Calloc => (arg(0).wrapping_mul(arg(1)), 0),
        AllocKind::Realloc => (arg(1), arg(0)),
        AllocKind::Reallocarray => (arg(1).wrapping_mul(arg(2)), arg(0)),
        AllocKind::PosixMemalign => (arg(2), arg(0)),
        AllocKind::AlignedAlloc | AllocKind::Memalign => (arg(1), 0),
        AllocKind::Mmap => {
            if arg(3) & MAP_ANONYMOUS == 0 || arg(2) & PROT_WRITE == 0 {
                return None;
            }
            (arg(1), 0)
        }
    })
}

/// An allocation call starts; returns whether its return must be seen (it is recorded). This
/// thread's entry record is reused in place (a record with `ts_ns == 0` is free): a map update
/// or delete takes a lock, a lookup does not.
#[inline(always)]
pub(crate) fn enter(kind: AllocKind, size: u64, arg: u64) -> bool {
    count(Counter::AllocCalls);
    let id = bpf_get_current_pid_tgid();
    let now = unsafe { bpf_ktime_get_ns() };
    let slot = PENDING.get_ptr_mut(&id);
    if let Some(p) = slot {
        let started = unsafe { (*p).ts_ns };
        if started != 0 {
            if now.wrapping_sub(started) < PENDING_STALE_NS {
                // glibc calls its public entry points internally (realloc(NULL, n) -> malloc,
                // malloc -> mmap): the outer call owns this allocation.
                count(Counter::NestedCalls);
                return false;
            }
            lose(Counter::LostMissedReturn);
            report(Diag::StaleEntry, now.wrapping_sub(started));
            unsafe { (*p).ts_ns = 0 };
        }
    }
    let closing = WINDOW_CLOSING.get(0).is_some_and(|v| *v != 0);
    if closing || !sampled(size) {
        count(Counter::Unsampled);
        if matches!(kind, AllocKind::Realloc | AllocKind::Reallocarray) && arg != 0 {
            // The old block is (almost always) released by this call; it may have been sampled.
            release((id >> 32) as u32, arg);
        }
        return false;
    }
    let pending = Pending { kind: kind as u32, _pad: 0, ts_ns: now, size, arg };
    match slot {
        Some(p) => unsafe { *p = pending },
        None => {
            let _ = PENDING.insert(&id, &pending, BPF_ANY as u64);
        }
    }
    true
}

/// Takes this thread's entry record if it belongs to `kind`; a record of another kind means
/// this return is of a nested call and is ignored.
#[inline(always)]
fn take_pending(kind: AllocKind) -> Option<Pending> {
    let id = bpf_get_current_pid_tgid();
    let slot = PENDING.get_ptr_mut(&id);
    let pending = match slot {
        Some(p) if unsafe { (*p).ts_ns } != 0 => unsafe { *p },
        _ => {
            // Unsampled calls and file mappings leave no entry record on purpose.
            if kind != AllocKind::Mmap && global(&SAMPLE_BYTES) == 0 {
                lose(Counter::LostMissedReturn);
                report(Diag::ReturnWithoutEntry, kind as u64);
            }
            return None;
        }
    };
    if pending.kind != kind as u32 {
        return None;
    }
    if let Some(p) = slot {
        unsafe { (*p).ts_ns = 0 };
    }
    Some(pending)
}

/// The configuration of a traced process that has not started finalizing.
#[inline(always)]
pub(crate) fn target(tgid: u32) -> Option<&'static TargetConfig> {
    let cfg = unsafe { TARGETS.get(&tgid) }?;
    if cfg.finalizing_since_ns != 0 {
        count(Counter::AfterFinalize);
        return None;
    }
    Some(cfg)
}

/// An allocation call returns: records the block it handed out, if its entry was recorded.
#[inline(always)]
pub(crate) fn exit_alloc(regs: *const pt_regs, kind: AllocKind) {
    let Some(pending) = take_pending(kind) else { return };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(cfg) = target(tgid) else { return };
    let ret: u64 = unsafe { (*regs).rax };
    let addr = match kind {
        AllocKind::Realloc | AllocKind::Reallocarray => {
            // Success (or realloc(p, 0), which frees p) releases the old block.
            if pending.arg != 0 && (ret != 0 || pending.size == 0) {
                release(tgid, pending.arg);
            }
            ret
        }
        AllocKind::PosixMemalign => {
            if ret as u32 != 0 {
                return;
            }
            read_user_u64(pending.arg).unwrap_or(0)
        }
        AllocKind::Mmap => {
            if ret == u64::MAX {
                return;
            }
            ret
        }
        _ => ret,
    };
    if addr == 0 {
        return;
    }
    let native_ip = unsafe { (*regs).rip };
    record(tgid, cfg, kind, addr, pending.size, native_ip, pending.ts_ns);
}

#[inline(always)]
fn record(tgid: u32, cfg: &TargetConfig, kind: AllocKind, addr: u64, size: u64, native_ip: u64, ts_ns: u64) {
    let hash = walk_stack(tgid, cfg, kind, native_ip);
    // A stack seen before has its totals already: one lookup finds them, and its trace (stored
    // when first seen) need not be looked at.
    let known = STACK_STATS.get_ptr_mut(&hash);
    let stack_id = if known.is_some() { hash } else { store_stack(tgid, hash) };
    let (bytes, blocks) = weights(size);
    let info = AllocInfo { size: bytes, stack_id, ts_ns, count: blocks };
    let key = AllocKey { tgid, _pad: 0, addr };
    match ALLOCS.insert(&key, &info, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(EEXIST) => {
            // The block's free was not seen (e.g. freed through a path we do not probe).
            if let Some(old) = unsafe { ALLOCS.get(&key) } {
                let old = *old;
                stats_release(old.stack_id, old.size, old.count);
            }
            count(Counter::LostFreeMissed);
            if ALLOCS.insert(&key, &info, BPF_ANY as u64).is_err() {
                allocs_map_full();
                return;
            }
        }
        Err(_) => {
            allocs_map_full();
            return;
        }
    }
    match known {
        Some(s) => add_stats(s, bytes, blocks),
        None => stats_add(stack_id, bytes, blocks),
    }
    count(Counter::AllocsRecorded);
}

#[inline(always)]
fn allocs_map_full() {
    lose(Counter::LostAllocsMapFull);
    report(Diag::AllocsMapFull, 0);
}

/// Stores the per-CPU trace just walked under `hash` the first time that stack is seen and
/// announces it; returns the id to record the allocation under.
#[inline(always)]
fn store_stack(tgid: u32, hash: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return UNKNOWN_STACK };
    let trace = unsafe { &(*scratch).trace };
    if unsafe { STACKS.get(&hash) }.is_none() {
        match STACKS.insert(&hash, trace, BPF_NOEXIST as u64) {
            Ok(()) => notify(event::NEW_STACK, tgid, hash),
            Err(EEXIST) => {}
            Err(_) => {
                lose(Counter::LostStacksMapFull);
                report(Diag::StacksMapFull, 0);
                return UNKNOWN_STACK;
            }
        }
    }
    hash
}

/// A block is given back (free, munmap, realloc): its stack's totals drop.
#[inline(always)]
pub(crate) fn release(tgid: u32, addr: u64) {
    let key = AllocKey { tgid, _pad: 0, addr };
    let Some(info) = (unsafe { ALLOCS.get(&key) }).copied() else {
        count(Counter::FreesUnmatched);
        return;
    };
    if ALLOCS.remove(&key).is_ok() {
        stats_release(info.stack_id, info.size, info.count);
        count(Counter::FreesMatched);
    }
}

#[inline(always)]
fn stats_add(stack_id: u64, size: u64, blocks: u64) {
    if let Some(s) = STACK_STATS.get_ptr_mut(&stack_id) {
        add_stats(s, size, blocks);
        return;
    }
    let fresh = StackStats {
        allocs: blocks,
        alloc_bytes: size,
        frees: 0,
        outstanding_bytes: size as i64,
        outstanding_count: blocks as i64,
    };
    if STACK_STATS.insert(&stack_id, &fresh, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // Another CPU inserted it first, or the map is full.
    match STACK_STATS.get_ptr_mut(&stack_id) {
        Some(s) => add_stats(s, size, blocks),
        None => {
            lose(Counter::LostStatsMapFull);
            report(Diag::StatsMapFull, 0);
        }
    }
}

#[inline(always)]
fn add_stats(s: *mut StackStats, size: u64, blocks: u64) {
    unsafe {
        add(&raw mut (*s).allocs, blocks);
        add(&raw mut (*s).alloc_bytes, size);
        add_signed(&raw mut (*s).outstanding_bytes, size as i64);
        add_signed(&raw mut (*s).outstanding_count, blocks as i64);
    }
}

/// Atomic add on a map value shared by all CPUs (BPF_ATOMIC | BPF_ADD).
#[inline(always)]
unsafe fn add(dst: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
}

#[inline(always)]
unsafe fn add_signed(dst: *mut i64, v: i64) {
    unsafe { atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(dst, v) };
}

#[inline(always)]
fn stats_release(stack_id: u64, size: u64, blocks: u64) {
    if let Some(s) = STACK_STATS.get_ptr_mut(&stack_id) {
        unsafe {
            add(&raw mut (*s).frees, blocks);
            add_signed(&raw mut (*s).outstanding_bytes, (size as i64).wrapping_neg());
            add_signed(&raw mut (*s).outstanding_count, (blocks as i64).wrapping_neg());
        }
    }
}
