use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::pt_regs,
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_func_ip, bpf_get_prandom_u32, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_buf,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use tracer_ebpf::{
    counter, event, AllocInfo, AllocKey, AllocKind, Event, Pending, RawFrame, StackStats, StackTrace, TargetConfig,
    ThreadCache, FRAME_READ, MAX_FRAMES, MAX_THREADS, NO_FIELD, NO_TSTATE_RECHECK_NS, PENDING_STALE_NS, TSTATE_READ,
    UNKNOWN_STACK,
};

const EEXIST: i32 = -17;
const MAP_ANONYMOUS: u64 = 0x20;
const PROT_WRITE: u64 = 0x2;
/// Extra loop iterations for interpreter-internal frames that are skipped, not recorded.
const SKIPPED_FRAMES_ALLOWANCE: usize = 16;

#[no_mangle]
static FSBASE_OFFSET: u64 = 0;
#[no_mangle]
static SAMPLE_BYTES: u64 = 0;
#[no_mangle]
static TGID_OFFSET: u64 = 0;
#[no_mangle]
static FOLLOW_FORKS: u64 = 0;
#[no_mangle]
static WATCH_EXECS: u64 = 0;

#[map]
static TARGETS: HashMap<u32, TargetConfig> = HashMap::with_max_entries(1024, 0);
#[map]
static ALLOCS: HashMap<AllocKey, AllocInfo> = HashMap::with_max_entries(1 << 20, 0);
#[map]
static STACKS: HashMap<u64, StackTrace> = HashMap::with_max_entries(16384, 0);
#[map]
static STACK_STATS: HashMap<u64, StackStats> = HashMap::with_max_entries(16384, 0);
#[map]
static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);
#[map]
static TSTATES: LruHashMap<u32, ThreadCache> = LruHashMap::with_max_entries(16384, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// Set once any traced process starts finalizing: until then a free need not look its process
/// up (an array lookup is inlined by the verifier; a hash lookup is a helper call).
#[map]
static ANY_FINALIZING: Array<u64> = Array::with_max_entries(1, 0);
/// The thread that last allocated on this CPU and its thread state: most calls come from the
/// same thread as the one before, and an array lookup costs less than a hash lookup.
#[map]
static LAST_THREAD: PerCpuArray<LastThread> = PerCpuArray::with_max_entries(1, 0);
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct LastThread {
    tid: u32,
    _pad: u32,
    /// The thread's `task_struct` and fs base: a thread's fs base is fixed at its creation, so
    /// the same task on the same CPU needs no kernel read for it.
    task: u64,
    fsbase: u64,
    tstate: u64,
}

/// Per-CPU working memory: the stack being built and a buffer for one struct read from the
/// target. The buffer is 8-byte aligned and 8 bytes longer than any masked offset.
#[repr(C)]
struct Scratch {
    trace: StackTrace,
    buf: [u64; 33],
    hash: u64,
}

#[inline(always)]
fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn global(v: &'static u64) -> u64 {
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
fn buf_u64(buf: &[u64; 33], offset: u64) -> u64 {
    buf[((offset & 0xf8) >> 3) as usize]
}

#[inline(always)]
fn buf_u32(buf: &[u64; 33], offset: u64) -> u32 {
    let word = buf_u64(buf, offset);
    (word >> ((offset & 4) * 8)) as u32
}

#[inline(always)]
fn buf_u8(buf: &[u64; 33], offset: u64) -> u8 {
    let word = buf_u64(buf, offset);
    (word >> ((offset & 7) * 8)) as u8
}

#[inline(always)]
fn read_into(buf: &mut [u64; 33], addr: u64, len: usize) -> bool {
    let bytes = unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, len) };
    unsafe { bpf_probe_read_user_buf(addr as *const u8, bytes) }.is_ok()
}

#[inline(always)]
fn read_user_u64(addr: u64) -> Option<u64> {
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

#[inline(always)]
fn mix(h: u64, x: u64) -> u64 {
    let h = (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

// ---- entry and return shims -------------------------------------------------------------

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

/// An allocation call starts; returns whether its return must be seen (it is recorded). This thread's entry record is reused in place (a record with
/// `ts_ns == 0` is free): a map update or delete takes a lock, a lookup does not.
#[inline(always)]
fn enter(kind: AllocKind, size: u64, arg: u64) -> bool {
    count(counter::ALLOC_CALLS);
    let id = bpf_get_current_pid_tgid();
    let now = unsafe { bpf_ktime_get_ns() };
    let slot = PENDING.get_ptr_mut(&id);
    if let Some(p) = slot {
        let started = unsafe { (*p).ts_ns };
        if started != 0 {
            if now.wrapping_sub(started) < PENDING_STALE_NS {
                // glibc calls its public entry points internally (realloc(NULL, n) -> malloc,
                // malloc -> mmap): the outer call owns this allocation.
                count(counter::NESTED_CALLS);
                return false;
            }
            count(counter::LOST_MISSED_RETURN);
            unsafe { (*p).ts_ns = 0 };
        }
    }
    if !sampled(size) {
        count(counter::UNSAMPLED);
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
                count(counter::LOST_MISSED_RETURN);
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

#[inline(always)]
fn target(tgid: u32) -> Option<&'static TargetConfig> {
    let cfg = unsafe { TARGETS.get(&tgid) }?;
    if cfg.finalizing_since_ns != 0 {
        count(counter::AFTER_FINALIZE);
        return None;
    }
    Some(cfg)
}

#[inline(always)]
fn exit_alloc(regs: *const pt_regs, kind: AllocKind) {
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
            count(counter::LOST_FREE_MISSED);
            if ALLOCS.insert(&key, &info, BPF_ANY as u64).is_err() {
                count(counter::LOST_ALLOCS_MAP_FULL);
                return;
            }
        }
        Err(_) => {
            count(counter::LOST_ALLOCS_MAP_FULL);
            return;
        }
    }
    match known {
        Some(s) => add_stats(s, bytes, blocks),
        None => stats_add(stack_id, bytes, blocks),
    }
    count(counter::ALLOCS_RECORDED);
}

#[inline(always)]
fn release(tgid: u32, addr: u64) {
    let key = AllocKey { tgid, _pad: 0, addr };
    let Some(info) = (unsafe { ALLOCS.get(&key) }).copied() else {
        count(counter::FREES_UNMATCHED);
        return;
    };
    if ALLOCS.remove(&key).is_ok() {
        stats_release(info.stack_id, info.size, info.count);
        count(counter::FREES_MATCHED);
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
        None => count(counter::LOST_STATS_MAP_FULL),
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

// ---- the Python stack -------------------------------------------------------------------

/// Walks the calling thread's Python frames into the per-CPU trace and returns the stack's id
/// (a hash of everything recorded).
#[inline(always)]
fn walk_stack(tgid: u32, cfg: &TargetConfig, kind: AllocKind, native_ip: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return UNKNOWN_STACK };
    let scratch = unsafe { &mut *scratch };
    let trace = &mut scratch.trace;
    trace.tgid = tgid;
    trace.kind = kind as u32;
    trace.depth = 0;
    trace.truncated = 0;
    trace.native_ip = native_ip;
    trace.instance = cfg.instance;
    scratch.hash = mix(mix(mix(0xcbf2_9ce4_8422_2325, ((kind as u64) << 32) | tgid as u64), cfg.instance), native_ip);
    if cfg.runtime_addr != 0 {
        if let Some(top) = current_frame(cfg, &mut scratch.buf) {
            walk_frames(cfg, top, trace, &mut scratch.buf, &mut scratch.hash);
        }
    }
    let h = unsafe { core::ptr::read_volatile(&scratch.hash) };
    if h == UNKNOWN_STACK {
        1
    } else {
        h
    }
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
                count(counter::LOST_STACKS_MAP_FULL);
                return UNKNOWN_STACK;
            }
        }
    }
    hash
}

/// The loop keeps its carried state (depth, hash) in map memory through volatile accesses:
/// the verifier does not track values stored there, so the two outcomes of each frame (kept
/// or skipped) converge instead of doubling the states to verify at every iteration.
#[inline(always)]
fn walk_frames(cfg: &TargetConfig, top: u64, trace: &mut StackTrace, buf: &mut [u64; 33], hash: &mut u64) {
    let depth_slot = &raw mut trace.depth;
    let (start, read_len) = match cfg.frame_read_len as usize {
        n @ 8..=FRAME_READ => (cfg.frame_read_start, n),
        _ => (0, FRAME_READ),
    };
    let mut frame = top;
    for _ in 0..(MAX_FRAMES + SKIPPED_FRAMES_ALLOWANCE) {
        if frame == 0 {
            break;
        }
        let depth = unsafe { core::ptr::read_volatile(depth_slot) } as usize;
        if depth >= MAX_FRAMES {
            trace.truncated = 1;
            count(counter::LOST_STACK_TRUNCATED);
            break;
        }
        if !read_into(buf, frame + start, read_len) {
            count(counter::LOST_READ_FAULT);
            break;
        }
        let previous = buf_u64(buf, cfg.frame_previous - start);
        let code = buf_u64(buf, cfg.frame_code - start) & cfg.code_mask;
        let instr = if cfg.instr_is_index != 0 {
            buf_u32(buf, cfg.frame_instr - start) as u64
        } else {
            buf_u64(buf, cfg.frame_instr - start)
        };
        let internal =
            cfg.frame_owner != NO_FIELD && buf_u8(buf, cfg.frame_owner - start) as u64 >= cfg.owner_skip_from;
        let keep = (!internal && code != 0) as u64;
        trace.frames[depth & (MAX_FRAMES - 1)] = RawFrame { code, instr };
        unsafe {
            core::ptr::write_volatile(depth_slot, (depth as u64 + keep) as u32);
            let h = core::ptr::read_volatile(hash);
            core::ptr::write_volatile(hash, mix(mix(h, code.wrapping_mul(keep)), instr.wrapping_mul(keep)));
        }
        frame = previous;
    }
}

/// The calling thread's innermost Python frame. Its `PyThreadState` comes from this CPU's last
/// thread, else a per-thread cache, else a search of the interpreter's thread list; a cached
/// one is checked to still be this thread's on every use (thread ids are reused).
#[inline(always)]
fn current_frame(cfg: &TargetConfig, buf: &mut [u64; 33]) -> Option<u64> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let task = unsafe { bpf_get_current_task() };
    let last = LAST_THREAD.get_ptr_mut(0)?;
    let same_thread = unsafe { (*last).tid == tid && (*last).task == task && (*last).fsbase != 0 };
    let fsbase = if same_thread { unsafe { (*last).fsbase } } else { current_fsbase(task)? };
    let mut tstate = if same_thread { unsafe { (*last).tstate } } else { 0 };
    if tstate == 0 {
        if let Some(cached) = unsafe { TSTATES.get(&tid) } {
            let cached = *cached;
            let now = unsafe { bpf_ktime_get_ns() };
            if cached.tstate == 0 && now.wrapping_sub(cached.checked_ns) < NO_TSTATE_RECHECK_NS {
                count(counter::NO_PYTHON_THREAD);
                return None;
            }
            tstate = cached.tstate;
        }
    }
    let (start, len) = match cfg.tstate_read_len as usize {
        n @ 8..=TSTATE_READ => (cfg.tstate_read_start, n),
        _ => (0, TSTATE_READ),
    };
    let mut frame;
    if tstate != 0 && read_into(buf, tstate + start, len) && buf_u64(buf, cfg.tstate_thread_id - start) == fsbase {
        frame = buf_u64(buf, cfg.tstate_frame - start);
    } else {
        tstate = find_tstate(cfg, fsbase, buf);
        let entry = ThreadCache { tstate, checked_ns: unsafe { bpf_ktime_get_ns() } };
        let _ = TSTATES.insert(&tid, &entry, BPF_ANY as u64);
        if tstate == 0 {
            count(counter::NO_PYTHON_THREAD);
            return None;
        }
        // `buf` holds the whole thread state found.
        frame = buf_u64(buf, cfg.tstate_frame);
    }
    unsafe {
        (*last).tid = tid;
        (*last).task = task;
        (*last).fsbase = fsbase;
        (*last).tstate = tstate;
    }
    if cfg.cframe_current_frame != NO_FIELD && frame != 0 {
        frame = read_user_u64(frame + cfg.cframe_current_frame)?;
    }
    Some(frame)
}

/// Searches the main interpreter's thread list for the state whose `thread_id` is this
/// thread's fs base (pthread_self()): found whether or not the thread holds the GIL.
#[inline(always)]
fn find_tstate(cfg: &TargetConfig, fsbase: u64, buf: &mut [u64; 33]) -> u64 {
    let Some(interp) = read_user_u64(cfg.runtime_addr + cfg.runtime_interp_head) else {
        return 0;
    };
    if interp == 0 {
        return 0;
    }
    let Some(mut t) = read_user_u64(interp + cfg.interp_threads_head) else { return 0 };
    for _ in 0..MAX_THREADS {
        if t == 0 {
            return 0;
        }
        if !read_into(buf, t, TSTATE_READ) {
            count(counter::LOST_READ_FAULT);
            return 0;
        }
        if buf_u64(buf, cfg.tstate_thread_id) == fsbase {
            return t;
        }
        t = buf_u64(buf, cfg.tstate_next);
    }
    if t != 0 {
        count(counter::LOST_THREAD_LIMIT);
    }
    0
}

#[inline(always)]
fn current_fsbase(task: u64) -> Option<u64> {
    let offset = global(&FSBASE_OFFSET);
    if task == 0 || offset == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((task + offset) as *const u64) }.ok()
}

#[inline(always)]
fn notify(kind: u32, tgid: u32, value: u64) {
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let _ = EVENTS.output::<Event>(&Event { kind, tgid, value, ts_ns }, 0);
}

/// An allocation call's (size, argument) from its registers at the entry: the argument is the
/// block realloc/reallocarray release, or posix_memalign's result slot. None for a mapping
/// that is not heap: only writable anonymous mappings are (pymalloc arenas, big buffers, thread
/// stacks); file mappings and PROT_NONE address-space reservations (glibc's arena heaps) are not.
#[inline(always)]
fn alloc_call(ctx: &ProbeContext, kind: AllocKind) -> Option<(u64, u64)> {
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

/// The entry of a classic uprobe/uretprobe pair: the return probe traps whatever it decides.
#[inline(always)]
fn classic_enter(ctx: &ProbeContext, kind: AllocKind) {
    if let Some((size, arg)) = alloc_call(ctx, kind) {
        let _ = enter(kind, size, arg);
    }
}

// ---- probes -------------------------------------------------------------------------------

#[uprobe]
pub fn malloc_enter(ctx: ProbeContext) -> u32 {
    classic_enter(&ctx, AllocKind::Malloc);
    0
}

#[uretprobe]
pub fn malloc_exit(ctx: RetProbeContext) -> u32 {
    exit_alloc(ctx.regs, AllocKind::Malloc);
    0
}

#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    classic_enter(&ctx, AllocKind::Calloc);
    0
}

#[uretprobe]
pub fn calloc_exit(ctx: RetProbeContext) -> u32 {
    exit_alloc(ctx.regs, AllocKind::Calloc);
    0
}

#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    classic_enter(&ctx, AllocKind::Realloc);
    0
}

#[uretprobe]
pub fn realloc_exit(ctx: RetProbeContext) -> u32 {
    exit_alloc(ctx.regs, AllocKind::Realloc);
    0
}

#[uprobe]
pub fn reallocarray_enter(ctx: ProbeContext) -> u32 {
    classic_enter(&ctx, AllocKind::Reallocarray);
    0
}

#[uretprobe]
pub fn reallocarray_exit(ctx: RetProbeContext) -> u32 {
    exit_alloc(ctx.regs, AllocKind::Reallocarray);
    0
}

#[uprobe]
pub fn posix_memalign_enter(ctx: ProbeContext) -> u32 {
    classic_enter(&ctx, AllocKind::PosixMemalign);
    0
}

#[uretprobe]
pub fn posix_memalign_exit(ctx: RetProbeContext) -> u32 {
    exit_alloc(ctx.regs, AllocKind::PosixMemalign);
    0
}

#[uprobe]
pub fn aligned_alloc_enter(ctx: ProbeContext) -> u32 {
    classic_enter(&ctx, AllocKind::AlignedAlloc);
    0
}

#[uretprobe]
pub fn aligned_alloc_exit(ctx: RetProbeContext) -> u32 {
    exit_alloc(ctx.regs, AllocKind::AlignedAlloc);
    0
}

#[uprobe]
pub fn memalign_enter(ctx: ProbeContext) -> u32 {
    classic_enter(&ctx, AllocKind::Memalign);
    0
}

#[uretprobe]
pub fn memalign_exit(ctx: RetProbeContext) -> u32 {
    exit_alloc(ctx.regs, AllocKind::Memalign);
    0
}

#[uprobe]
pub fn valloc_enter(ctx: ProbeContext) -> u32 {
    classic_enter(&ctx, AllocKind::Valloc);
    0
}

#[uretprobe]
pub fn valloc_exit(ctx: RetProbeContext) -> u32 {
    exit_alloc(ctx.regs, AllocKind::Valloc);
    0
}

#[uprobe]
pub fn pvalloc_enter(ctx: ProbeContext) -> u32 {
    classic_enter(&ctx, AllocKind::Pvalloc);
    0
}

#[uretprobe]
pub fn pvalloc_exit(ctx: RetProbeContext) -> u32 {
    exit_alloc(ctx.regs, AllocKind::Pvalloc);
    0
}

#[uprobe]
pub fn mmap_enter(ctx: ProbeContext) -> u32 {
    classic_enter(&ctx, AllocKind::Mmap);
    0
}

#[uretprobe]
pub fn mmap_exit(ctx: RetProbeContext) -> u32 {
    exit_alloc(ctx.regs, AllocKind::Mmap);
    0
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    count(counter::FREE_CALLS);
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

// ---- session uprobes (sampled mode) -----------------------------------------------------

/// One program at a function's entry and, only when the entry returns 0, at its return
/// (BPF_TRACE_UPROBE_SESSION, loaded and attached by tracer/src/session.rs): an unsampled
/// call costs one trap instead of two. They are written without `#[uprobe]`, whose wrapper
/// always returns 0: here the return value is the decision.
macro_rules! session_program {
    ($name:ident, $kind:ident) => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = "uprobe")]
        pub extern "C" fn $name(raw: *mut core::ffi::c_void) -> u32 {
            session(&ProbeContext::new(raw), AllocKind::$kind)
        }
    };
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

session_program!(malloc_session, Malloc);
session_program!(calloc_session, Calloc);
session_program!(realloc_session, Realloc);
session_program!(reallocarray_session, Reallocarray);
session_program!(posix_memalign_session, PosixMemalign);
session_program!(aligned_alloc_session, AlignedAlloc);
session_program!(memalign_session, Memalign);
session_program!(valloc_session, Valloc);
session_program!(pvalloc_session, Pvalloc);
session_program!(mmap_session, Mmap);

// ---- benchmark baseline ----------------------------------------------------------------

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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
