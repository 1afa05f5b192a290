//! The calling thread's Python frames: find its `PyThreadState` (cached per CPU and per thread),
//! then walk the frame chain from the innermost frame out, reading one window of each frame
//! into the per-CPU buffer and hashing what is kept into the stack's id.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_probe_read_user_buf,
    },
};
use tracer_ebpf::{
    AllocKind, Counter, RawFrame, StackTrace, TargetConfig, ThreadCache, FRAME_READ, MAX_FRAMES, MAX_THREADS, NO_FIELD,
    NO_TSTATE_RECHECK_NS, OFFSET_MASK, TSTATE_READ, UNKNOWN_STACK,
};

use crate::diag::{report, Diag};
use crate::maps::{count, global, lose, ReadBuf, FSBASE_OFFSET, LAST_THREAD, SCRATCH, TSTATES};

/// Extra loop iterations for interpreter-internal frames that are skipped, not recorded.
const SKIPPED_FRAMES_ALLOWANCE: usize = 16;

#[inline(always)]
fn buf_u64(buf: &ReadBuf, offset: u64) -> u64 {
    buf[((offset & OFFSET_MASK & !7) >> 3) as usize]
}

#[inline(always)]
fn buf_u32(buf: &ReadBuf, offset: u64) -> u32 {
    let word = buf_u64(buf, offset);
    (word >> ((offset & 4) * 8)) as u32
}

#[inline(always)]
fn buf_u8(buf: &ReadBuf, offset: u64) -> u8 {
    let word = buf_u64(buf, offset);
    (word >> ((offset & 7) * 8)) as u8
}

#[inline(always)]
fn read_into(buf: &mut ReadBuf, addr: u64, len: usize) -> bool {
    let bytes = unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, len) };
    unsafe { bpf_probe_read_user_buf(addr as *const u8, bytes) }.is_ok()
}

#[inline(always)]
pub(crate) fn read_user_u64(addr: u64) -> Option<u64> {
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

#[inline(always)]
fn mix(h: u64, x: u64) -> u64 {
    let h = (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// Walks the calling thread's Python frames into the per-CPU trace and returns the stack's id
/// (a hash of everything recorded).
#[inline(always)]
pub(crate) fn walk_stack(tgid: u32, cfg: &TargetConfig, kind: AllocKind, native_ip: u64) -> u64 {
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

/// The loop keeps its carried state (depth, hash) in map memory through volatile accesses:
/// the verifier does not track values stored there, so the two outcomes of each frame (kept
/// or skipped) converge instead of doubling the states to verify at every iteration.
#[inline(always)]
fn walk_frames(cfg: &TargetConfig, top: u64, trace: &mut StackTrace, buf: &mut ReadBuf, hash: &mut u64) {
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
            lose(Counter::LostStackTruncated);
            break;
        }
        if !read_into(buf, frame + start, read_len) {
            lose(Counter::LostReadFault);
            report(Diag::FrameUnreadable, frame);
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
fn current_frame(cfg: &TargetConfig, buf: &mut ReadBuf) -> Option<u64> {
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
                count(Counter::NoPythonThread);
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
            count(Counter::NoPythonThread);
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
fn find_tstate(cfg: &TargetConfig, fsbase: u64, buf: &mut ReadBuf) -> u64 {
    let Some(interp) = read_user_u64(cfg.runtime_addr + cfg.runtime_interp_head) else {
        report(Diag::RuntimeUnreadable, cfg.runtime_addr);
        return 0;
    };
    if interp == 0 {
        return 0;
    }
    let Some(mut t) = read_user_u64(interp + cfg.interp_threads_head) else {
        report(Diag::InterpreterUnreadable, interp);
        return 0;
    };
    for _ in 0..MAX_THREADS {
        if t == 0 {
            report(Diag::MainThreadUnknown, fsbase);
            return 0;
        }
        if !read_into(buf, t, TSTATE_READ) {
            lose(Counter::LostReadFault);
            report(Diag::ThreadStateUnreadable, t);
            return 0;
        }
        if buf_u64(buf, cfg.tstate_thread_id) == fsbase {
            return t;
        }
        t = buf_u64(buf, cfg.tstate_next);
    }
    if t != 0 {
        lose(Counter::LostThreadLimit);
        report(Diag::ThreadLimit, 0);
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
