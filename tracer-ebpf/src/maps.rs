//! The maps shared with userspace (names in `tracer_ebpf::maps`), the BPF side's private
//! working memory, and the globals userspace sets before loading (`tracer_ebpf::globals`).

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_ebpf::{
    AllocInfo, AllocKey, Counter, Event, Pending, ProcLosses, StackStats, StackTrace, TargetConfig, ThreadCache,
    READ_BUF_WORDS,
};

#[no_mangle]
pub(crate) static FSBASE_OFFSET: u64 = 0;
#[no_mangle]
pub(crate) static SAMPLE_BYTES: u64 = 0;
#[no_mangle]
pub(crate) static TGID_OFFSET: u64 = 0;
#[no_mangle]
pub(crate) static FOLLOW_FORKS: u64 = 0;
#[no_mangle]
pub(crate) static WATCH_EXECS: u64 = 0;
#[no_mangle]
pub(crate) static DIAGNOSTICS: u64 = 0;

#[map]
pub(crate) static TARGETS: HashMap<u32, TargetConfig> = HashMap::with_max_entries(1024, 0);
#[map]
pub(crate) static ALLOCS: HashMap<AllocKey, AllocInfo> = HashMap::with_max_entries(1 << 20, 0);
#[map]
pub(crate) static STACKS: HashMap<u64, StackTrace> = HashMap::with_max_entries(16384, 0);
#[map]
pub(crate) static STACK_STATS: HashMap<u64, StackStats> = HashMap::with_max_entries(16384, 0);
#[map]
pub(crate) static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);
#[map]
pub(crate) static TSTATES: LruHashMap<u32, ThreadCache> = LruHashMap::with_max_entries(16384, 0);
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT as u32, 0);
/// Per traced process, its loss counters (a process's section shows its own). Entries leave
/// when userspace lets the process go; beyond the bound a process's losses are counted only in
/// COUNTERS.
#[map]
pub(crate) static PROC_LOSSES: HashMap<u32, ProcLosses> = HashMap::with_max_entries(4096, 0);
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// Set once any traced process starts finalizing: until then a free need not look its process
/// up (an array lookup is inlined by the verifier; a hash lookup is a helper call).
#[map]
pub(crate) static ANY_FINALIZING: Array<u64> = Array::with_max_entries(1, 0);
/// Nonzero while a probe window closes (see `tracer_ebpf::maps::WINDOW_CLOSING`).
#[map]
pub(crate) static WINDOW_CLOSING: Array<u64> = Array::with_max_entries(1, 0);
/// The thread that last allocated on this CPU and its thread state: most calls come from the
/// same thread as the one before, and an array lookup costs less than a hash lookup.
#[map]
pub(crate) static LAST_THREAD: PerCpuArray<LastThread> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub(crate) static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub(crate) struct LastThread {
    pub(crate) tid: u32,
    _pad: u32,
    /// The thread's `task_struct` and fs base: a thread's fs base is fixed at its creation, so
    /// the same task on the same CPU needs no kernel read for it.
    pub(crate) task: u64,
    pub(crate) fsbase: u64,
    pub(crate) tstate: u64,
}

/// A buffer for one struct read from the target, 8-byte aligned (see `READ_BUF_WORDS`).
pub(crate) type ReadBuf = [u64; READ_BUF_WORDS];

/// Per-CPU working memory: the stack being built and a buffer for one struct read from the
/// target.
#[repr(C)]
pub(crate) struct Scratch {
    pub(crate) trace: StackTrace,
    pub(crate) buf: ReadBuf,
    pub(crate) hash: u64,
}

#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter as u32) {
        unsafe { *p += 1 };
    }
}

/// Counts a loss, for the session (COUNTERS) and for the calling process (PROC_LOSSES). Losses
/// are rare (a full map, a deep stack, a fault): the hash lookup is off the common path.
#[inline(always)]
pub(crate) fn lose(counter: Counter) {
    count(counter);
    let Some(slot) = counter.loss_slot() else { return };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let mut entry = PROC_LOSSES.get_ptr_mut(&tgid);
    if entry.is_none() {
        let _ = PROC_LOSSES.insert(&tgid, &ProcLosses::default(), BPF_NOEXIST as u64);
        entry = PROC_LOSSES.get_ptr_mut(&tgid);
    }
    if let Some(p) = entry {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*p).counts[slot], 1) };
    }
}

/// A global set by userspace before loading. The volatile read keeps the compiler from folding
/// the default; the verifier knows the loaded value (the globals are a frozen read-only map).
#[inline(always)]
pub(crate) fn global(v: &'static u64) -> u64 {
    unsafe { core::ptr::read_volatile(v) }
}

/// Pushes a rare event to userspace (EVENTS).
#[inline(always)]
pub(crate) fn notify(kind: u32, tgid: u32, value: u64) {
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let _ = EVENTS.output::<Event>(&Event { kind, tgid, value, ts_ns }, 0);
}
