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
/// Offsets that a program masks with before indexing a read buffer (buffers are this + 8 long).
pub const OFFSET_MASK: u64 = 0xff;
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
    pub const EVENTS: &str = "EVENTS";
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
}

/// Which libc (or kernel) entry point made an allocation.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocKind {
    Malloc = 0,
    Calloc = 1,
    Realloc = 2,
    Reallocarray = 3,
    PosixMemalign = 4,
    AlignedAlloc = 5,
    Memalign = 6,
    Valloc = 7,
    Pvalloc = 8,
    Mmap = 9,
}

pub const ALLOC_KIND_NAMES: [&str; 10] = [
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "mmap",
];

/// Per-CPU event and loss counters, indexed by these values.
pub mod counter {
    pub const ALLOC_CALLS: u32 = 0;
    pub const FREE_CALLS: u32 = 1;
    pub const ALLOCS_RECORDED: u32 = 2;
    pub const FREES_MATCHED: u32 = 3;
    /// The ALLOCS map was full: an allocation went untracked.
    pub const LOST_ALLOCS_MAP_FULL: u32 = 4;
    /// The STACKS map was full: the allocation was charged to the "unknown stack" bucket.
    pub const LOST_STACKS_MAP_FULL: u32 = 5;
    /// The STACK_STATS map was full.
    pub const LOST_STATS_MAP_FULL: u32 = 6;
    /// A return probe fired without its entry record (table evicted or entry missed).
    pub const LOST_MISSED_RETURN: u32 = 7;
    /// A Python stack was deeper than MAX_FRAMES: outer frames were dropped.
    pub const LOST_STACK_TRUNCATED: u32 = 8;
    /// Reading the interpreter's memory faulted mid-walk: the stack is partial.
    pub const LOST_READ_FAULT: u32 = 9;
    /// More than MAX_THREADS threads were searched without finding the caller's thread state.
    pub const LOST_THREAD_LIMIT: u32 = 10;
    /// Allocations made on threads with no Python thread state (native-only stacks).
    pub const NO_PYTHON_THREAD: u32 = 11;
    /// Allocator calls made from inside another traced allocator call (glibc internals).
    pub const NESTED_CALLS: u32 = 12;
    /// Frees of addresses not allocated while tracing (made before attach).
    pub const FREES_UNMATCHED: u32 = 13;
    /// An address was allocated again without a free being seen in between.
    pub const LOST_FREE_MISSED: u32 = 14;
    /// Events after the interpreter began finalizing (not applied: the final view is kept).
    pub const AFTER_FINALIZE: u32 = 15;
    /// Allocations not sampled (sampling mode only).
    pub const UNSAMPLED: u32 = 16;
    pub const COUNT: u32 = 17;
}

/// Names of the loss counters as they appear in `totals.lost`.
pub const LOST_COUNTERS: [(u32, &str); 7] = [
    (counter::LOST_ALLOCS_MAP_FULL, "allocs_map_full"),
    (counter::LOST_STACKS_MAP_FULL, "stacks_map_full"),
    (counter::LOST_STATS_MAP_FULL, "stats_map_full"),
    (counter::LOST_MISSED_RETURN, "missed_return"),
    (counter::LOST_STACK_TRUNCATED, "stack_truncated"),
    (counter::LOST_READ_FAULT, "read_fault"),
    (counter::LOST_THREAD_LIMIT, "thread_limit"),
];

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
