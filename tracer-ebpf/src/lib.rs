//! The ABI shared by the BPF programs and userspace: map names, records, counters and the
//! per-target interpreter layout. Everything here is `#[repr(C)]` plain data.
#![no_std]

/// Python frames recorded per stack; deeper stacks keep their innermost frames and count
/// `stack_truncated`.
pub const MAX_FRAMES: usize = 64;
/// Threads examined when looking up the current thread's `PyThreadState`.
pub const MAX_THREADS: u32 = 256;
/// Bytes read from a `PyThreadState` in one call; every field we need lies below this.
pub const TSTATE_READ: usize = 192;
/// Bytes read from a frame in one call.
pub const FRAME_READ: usize = 112;
/// Offsets that a program masks with before indexing a read buffer: the verifier must see
/// every index in bounds.
pub const OFFSET_MASK: u64 = 0xff;
/// Words in a read buffer: enough for an 8-byte read at any offset `OFFSET_MASK` lets through.
pub const READ_BUF_WORDS: usize = (OFFSET_MASK as usize + 8).div_ceil(8);
const _: () = assert!(TSTATE_READ <= READ_BUF_WORDS * 8 && FRAME_READ <= READ_BUF_WORDS * 8);
/// "This field does not exist in this version."
pub const NO_FIELD: u64 = u64::MAX;

pub mod maps {
    pub const TARGETS: &str = "TARGETS";
    pub const ALLOCS: &str = "ALLOCS";
    pub const STACKS: &str = "STACKS";
    pub const STACK_STATS: &str = "STACK_STATS";
    pub const PENDING: &str = "PENDING";
    pub const TSTATES: &str = "TSTATES";
    pub const COUNTERS: &str = "COUNTERS";
    /// Per traced process (tgid): its own loss counters (`ProcLosses`), beside the session's.
    pub const PROC_LOSSES: &str = "PROC_LOSSES";
    pub const EVENTS: &str = "EVENTS";
    /// One u64: nonzero while a probe window is closing (`--window`): allocation calls are not
    /// recorded then (frees still are), so blocks born just before the close are seen dying.
    pub const WINDOW_CLOSING: &str = "WINDOW_CLOSING";
}

/// Names of the global variables that userspace sets before loading.
pub mod globals {
    /// Byte offset of `thread.fsbase` in the kernel's `task_struct` (from vmlinux BTF).
    pub const FSBASE_OFFSET: &str = "FSBASE_OFFSET";
    /// Sampling period in bytes; 0 records every allocation.
    pub const SAMPLE_BYTES: &str = "SAMPLE_BYTES";
    /// Byte offset of `tgid` in the kernel's `task_struct` (from vmlinux BTF).
    pub const TGID_OFFSET: &str = "TGID_OFFSET";
    /// 1: a traced process's children (fork) are traced too.
    pub const FOLLOW_FORKS: &str = "FOLLOW_FORKS";
    /// 1: announce every exec on the host (host mode discovers new Python processes).
    pub const WATCH_EXECS: &str = "WATCH_EXECS";
    /// 1: log the BPF side's diagnostics on rare paths through aya-log (a full map, a thread
    /// state that does not validate, a return without its entry). At 0 the verifier removes
    /// their code: see docs/probes.md "Diagnostics".
    pub const DIAGNOSTICS: &str = "DIAGNOSTICS";
}

/// The one list of the allocators probed: each libc symbol, its `AllocKind`, and the BPF
/// programs that serve it (a classic entry/return pair, and a session program that does both,
/// see docs/probes.md). `$m` is invoked once with every row, so the kind enum, the BPF programs
/// (tracer-ebpf/src/programs.rs) and the userspace attach plan (tracer/src/probes/plan.rs) are
/// all generated from these rows and cannot drift apart. The order is the `AllocKind` numbering
/// that reaches userspace in `StackTrace::kind`: append, never reorder.
#[macro_export]
macro_rules! for_each_allocator {
    ($m:ident) => {
        $m! {
            // symbol        kind            entry program          return program        session program
            (malloc,         Malloc,         malloc_enter,          malloc_exit,          malloc_session),
            (calloc,         Calloc,         calloc_enter,          calloc_exit,          calloc_session),
            (realloc,        Realloc,        realloc_enter,         realloc_exit,         realloc_session),
            (reallocarray,   Reallocarray,   reallocarray_enter,    reallocarray_exit,    reallocarray_session),
            (posix_memalign, PosixMemalign,  posix_memalign_enter,  posix_memalign_exit,  posix_memalign_session),
            (aligned_alloc,  AlignedAlloc,   aligned_alloc_enter,   aligned_alloc_exit,   aligned_alloc_session),
            (memalign,       Memalign,       memalign_enter,        memalign_exit,        memalign_session),
            (valloc,         Valloc,         valloc_enter,          valloc_exit,          valloc_session),
            (pvalloc,        Pvalloc,        pvalloc_enter,         pvalloc_exit,         pvalloc_session),
            (mmap,           Mmap,           mmap_enter,            mmap_exit,            mmap_session),
        }
    };
}

/// The names of an allocator's BPF programs (see `for_each_allocator!`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocPrograms {
    /// At the function's entry; its return probe is `ret`.
    pub entry: &'static str,
    pub ret: &'static str,
    /// Entry and (when the entry asks for it) return in one program, on kernels with session
    /// uprobes.
    pub session: &'static str,
}

macro_rules! alloc_kind {
    ($(($symbol:ident, $kind:ident, $entry:ident, $ret:ident, $session:ident)),* $(,)?) => {
        /// Which libc entry point made an allocation.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum AllocKind {
            $($kind),*
        }

        impl AllocKind {
            /// Every kind, in numbering order.
            pub const ALL: &'static [AllocKind] = &[$(AllocKind::$kind),*];

            /// The libc symbol probed.
            pub const fn symbol(self) -> &'static str {
                match self {
                    $(AllocKind::$kind => stringify!($symbol)),*
                }
            }

            pub const fn programs(self) -> AllocPrograms {
                match self {
                    $(AllocKind::$kind => AllocPrograms {
                        entry: stringify!($entry),
                        ret: stringify!($ret),
                        session: stringify!($session),
                    }),*
                }
            }
        }
    };
}

for_each_allocator!(alloc_kind);

const _: () = {
    let mut i = 0;
    while i < AllocKind::ALL.len() {
        assert!(AllocKind::ALL[i] as usize == i, "AllocKind::ALL is in numbering order");
        i += 1;
    }
    assert!(AllocKind::Mmap as u32 == 9, "the numbering reaches userspace: append, never reorder");
};

impl AllocKind {
    /// The kind numbered `raw` (as in `StackTrace::kind`).
    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.get(raw as usize).copied()
    }
}

/// Names of the BPF programs that are not per allocator.
pub mod programs {
    /// Entry-only probes on the functions that give memory back.
    pub const FREE: &str = "free_enter";
    pub const MUNMAP: &str = "munmap_enter";
    /// At the entry of `Py_FinalizeEx` and `Py_Exit`.
    pub const PY_FINALIZE: &str = "py_finalize";
    /// Raw tracepoints `sched_process_fork` and `sched_process_exec`.
    pub const ON_FORK: &str = "on_fork";
    pub const ON_EXEC: &str = "on_exec";
    /// Empty programs, the benchmark's baseline (`TRACER_PROBE_VARIANT=bare`).
    pub const BARE_ENTER: &str = "bare_enter";
    pub const BARE_EXIT: &str = "bare_exit";
}

/// Per-CPU event and loss counters: the index of each in the COUNTERS map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    AllocCalls,
    FreeCalls,
    AllocsRecorded,
    FreesMatched,
    /// The ALLOCS map was full: an allocation went untracked.
    LostAllocsMapFull,
    /// The STACKS map was full: the allocation was charged to the "unknown stack" bucket.
    LostStacksMapFull,
    /// The STACK_STATS map was full.
    LostStatsMapFull,
    /// A return probe fired without its entry record (table evicted or entry missed).
    LostMissedReturn,
    /// A Python stack was deeper than MAX_FRAMES: outer frames were dropped.
    LostStackTruncated,
    /// Reading the interpreter's memory faulted mid-walk: the stack is partial.
    LostReadFault,
    /// More than MAX_THREADS threads were searched without finding the caller's thread state.
    LostThreadLimit,
    /// Allocations made on threads with no Python thread state (native-only stacks).
    NoPythonThread,
    /// Allocator calls made from inside another traced allocator call (glibc internals).
    NestedCalls,
    /// Frees of addresses not allocated while tracing (made before attach).
    FreesUnmatched,
    /// An address was allocated again without a free being seen in between.
    LostFreeMissed,
    /// Events after the interpreter began finalizing (not applied: the final view is kept).
    AfterFinalize,
    /// Allocations not sampled (sampling mode only).
    Unsampled,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; Counter::COUNT] = [
        Counter::AllocCalls,
        Counter::FreeCalls,
        Counter::AllocsRecorded,
        Counter::FreesMatched,
        Counter::LostAllocsMapFull,
        Counter::LostStacksMapFull,
        Counter::LostStatsMapFull,
        Counter::LostMissedReturn,
        Counter::LostStackTruncated,
        Counter::LostReadFault,
        Counter::LostThreadLimit,
        Counter::NoPythonThread,
        Counter::NestedCalls,
        Counter::FreesUnmatched,
        Counter::LostFreeMissed,
        Counter::AfterFinalize,
        Counter::Unsampled,
    ];
    pub const COUNT: usize = Counter::Unsampled as usize + 1;

    /// The counter's name in the report's `totals.lost` (users and tests read these names), or
    /// None for a counter that is not a loss.
    pub const fn lost_name(self) -> Option<&'static str> {
        Some(match self {
            Counter::LostAllocsMapFull => "allocs_map_full",
            Counter::LostStacksMapFull => "stacks_map_full",
            Counter::LostStatsMapFull => "stats_map_full",
            Counter::LostMissedReturn => "missed_return",
            Counter::LostStackTruncated => "stack_truncated",
            Counter::LostReadFault => "read_fault",
            Counter::LostThreadLimit => "thread_limit",
            _ => return None,
        })
    }
}

/// The loss counters kept per process too (`ProcLosses`), in slot order: every counter with a
/// `lost_name`.
pub const LOSS_SLOTS: usize = 7;

impl Counter {
    /// This counter's slot in `ProcLosses::counts`, or None for a counter that is not a loss.
    pub const fn loss_slot(self) -> Option<usize> {
        Some(match self {
            Counter::LostAllocsMapFull => 0,
            Counter::LostStacksMapFull => 1,
            Counter::LostStatsMapFull => 2,
            Counter::LostMissedReturn => 3,
            Counter::LostStackTruncated => 4,
            Counter::LostReadFault => 5,
            Counter::LostThreadLimit => 6,
            _ => return None,
        })
    }
}

/// One process's loss counters (the PROC_LOSSES map's value), indexed by `Counter::loss_slot`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcLosses {
    pub counts: [u64; LOSS_SLOTS],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ProcLosses {}

const _: () = {
    let mut i = 0;
    let mut slots = 0;
    while i < Counter::COUNT {
        let c = Counter::ALL[i];
        assert!(c.lost_name().is_some() == c.loss_slot().is_some(), "every loss counter has a slot");
        if let Some(slot) = c.loss_slot() {
            assert!(slot < LOSS_SLOTS, "slots are in range");
            slots += 1;
        }
        i += 1;
    }
    assert!(slots == LOSS_SLOTS, "one slot per loss counter");
};

const _: () = {
    let mut i = 0;
    while i < Counter::COUNT {
        assert!(Counter::ALL[i] as usize == i, "Counter::ALL is in index order");
        i += 1;
    }
};

/// Where to find things in one target's interpreter. Field offsets are relative to the struct
/// named; `NO_FIELD` marks a field this version lacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetConfig {
    /// Address of `_PyRuntime` in the target (0: not a Python process, native stacks only).
    pub runtime_addr: u64,
    /// `_PyRuntime.interpreters.head`.
    pub runtime_interp_head: u64,
    /// `PyInterpreterState` -> first `PyThreadState`.
    pub interp_threads_head: u64,
    pub tstate_next: u64,
    /// `PyThreadState.thread_id` (= pthread_self() = the thread's fs base on x86-64 glibc).
    pub tstate_thread_id: u64,
    /// `PyThreadState` -> top frame: `frame` (3.10), `cframe` (3.11/3.12), `current_frame` (3.13+).
    pub tstate_frame: u64,
    /// `_PyCFrame.current_frame` when `tstate_frame` points to a cframe; else NO_FIELD.
    pub cframe_current_frame: u64,
    pub frame_previous: u64,
    pub frame_code: u64,
    /// `f_lasti` (3.10, an i32 instruction index) or `prev_instr`/`instr_ptr` (a pointer).
    pub frame_instr: u64,
    /// `owner` byte (3.11+), else NO_FIELD.
    pub frame_owner: u64,
    /// Frames whose owner is >= this are interpreter-internal (C-stack entry frames) and skipped.
    pub owner_skip_from: u64,
    /// Mask applied to the code pointer (3.14 tags `_PyStackRef` low bits).
    pub code_mask: u64,
    /// 1 when `frame_instr` is a 32-bit index rather than a pointer.
    pub instr_is_index: u64,
    /// The part of a frame read at each step: from the first word a field is in to the end
    /// of the last (at most FRAME_READ bytes). A read's cost grows with its size.
    pub frame_read_start: u64,
    pub frame_read_len: u64,
    /// The same for a known thread state: the words of `tstate_frame` and `tstate_thread_id`.
    pub tstate_read_start: u64,
    pub tstate_read_len: u64,
    /// Set by the BPF side when the interpreter starts finalizing: from then on nothing changes,
    /// so the final view is the program's state before module teardown.
    pub finalizing_since_ns: u64,
    /// Which process this is, assigned by userspace when it attaches (a PID can be reused by a
    /// later process): mixed into stack ids and kept in each stack, so that two processes that
    /// had the same PID never share a stack.
    pub instance: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for TargetConfig {}

/// One Python frame as the BPF side saw it: resolved to file:line in userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawFrame {
    pub code: u64,
    /// Instruction pointer into the code object's bytecode, or (3.10) instruction index.
    pub instr: u64,
}

/// A distinct allocation stack: the Python frames, innermost first, and the native caller.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackTrace {
    pub tgid: u32,
    pub kind: u32,
    /// Number of valid entries in `frames`.
    pub depth: u32,
    /// 1 when frames beyond MAX_FRAMES were dropped.
    pub truncated: u32,
    /// Return address in the caller of the allocator (the innermost native frame).
    pub native_ip: u64,
    /// `TargetConfig::instance` of the process.
    pub instance: u64,
    pub frames: [RawFrame; MAX_FRAMES],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for StackTrace {}

/// Aggregates per stack id, updated atomically by the BPF side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StackStats {
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
    pub outstanding_bytes: i64,
    pub outstanding_count: i64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for StackStats {}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllocKey {
    pub tgid: u32,
    pub _pad: u32,
    pub addr: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for AllocKey {}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AllocInfo {
    /// Bytes this record stands for (the size, or the sampling period when sampled).
    pub size: u64,
    pub stack_id: u64,
    pub ts_ns: u64,
    /// Allocations this record stands for (1, or period/size when sampled).
    pub count: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for AllocInfo {}

/// What an entry probe leaves for its return probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Pending {
    pub kind: u32,
    pub _pad: u32,
    pub ts_ns: u64,
    pub size: u64,
    /// realloc/reallocarray: the old pointer; posix_memalign: the `memptr` out-parameter.
    pub arg: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Pending {}

/// Stack id used when a stack could not be stored (map full).
pub const UNKNOWN_STACK: u64 = 0;

/// Rare events pushed to userspace through the EVENTS ring buffer, so that it can read the target
/// while the objects involved are still alive.
pub mod event {
    /// A stack id was stored for the first time: resolve its code objects now.
    pub const NEW_STACK: u32 = 1;
    /// The interpreter started finalizing: the final view is frozen from here on.
    pub const FINALIZING: u32 = 2;
    /// A traced process forked: `tgid` is the child (already registered), `value` the parent.
    pub const FORKED: u32 = 3;
    /// `tgid` called exec: if it was traced it no longer is (its registration is gone).
    pub const EXEC: u32 = 4;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Event {
    pub kind: u32,
    pub tgid: u32,
    pub value: u64,
    pub ts_ns: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Event {}

/// An entry record older than this is stale (its return was missed) and no longer marks the
/// thread as "inside an allocator".
pub const PENDING_STALE_NS: u64 = 1_000_000_000;
/// How long a thread found to have no Python thread state is trusted to still have none. Short:
/// a new Python thread allocates before its state is bound to it, and must be found right after.
pub const NO_TSTATE_RECHECK_NS: u64 = 1_000_000;

/// Cache entry: a thread's `PyThreadState` (0 = none found at `checked_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadCache {
    pub tstate: u64,
    pub checked_ns: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ThreadCache {}

// The records cross the BPF/userspace boundary as raw bytes: their sizes are part of the ABI.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<TargetConfig>() == 20 * 8);
    assert!(size_of::<RawFrame>() == 16);
    assert!(size_of::<StackTrace>() == 32 + MAX_FRAMES * 16);
    assert!(size_of::<StackStats>() == 40);
    assert!(size_of::<AllocKey>() == 16);
    assert!(size_of::<AllocInfo>() == 32);
    assert!(size_of::<Pending>() == 32);
    assert!(size_of::<Event>() == 24);
    assert!(size_of::<ThreadCache>() == 16);
};
