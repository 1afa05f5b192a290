//! Where CPython keeps threads, frames and code objects (x86-64, GIL builds): what the BPF side
//! walks and code.rs reads. The values per version are in versions.rs.

use tracer_ebpf::{TargetConfig, NO_FIELD};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    // _PyRuntime
    pub runtime_interp_head: u64,
    // PyInterpreterState
    pub interp_threads_head: u64,
    // PyThreadState
    pub tstate_next: u64,
    pub tstate_thread_id: u64,
    pub tstate_frame: u64,
    pub cframe_current_frame: Option<u64>,
    // frames
    pub frame_previous: u64,
    pub frame_code: u64,
    pub frame_instr: u64,
    pub frame_owner: Option<u64>,
    /// 3.10 keeps `f_lasti`, an instruction index; later versions an instruction pointer.
    pub instr_is_index: bool,
    /// 3.14's `f_executable` is a tagged `_PyStackRef`.
    pub code_tag_bits: u64,
    // PyCodeObject
    pub co_firstlineno: u64,
    pub co_filename: u64,
    pub co_name: u64,
    pub co_qualname: Option<u64>,
    pub co_linetable: u64,
    pub co_code_adaptive: Option<u64>,
}

/// Frames with an owner at or above this are C-stack/interpreter entry frames (3.12+).
const OWNED_BY_CSTACK: u64 = 3;

impl FrameLayout {
    /// The BPF side's view of this layout for one process.
    pub fn target_config(&self, runtime_addr: u64) -> TargetConfig {
        TargetConfig {
            runtime_addr,
            runtime_interp_head: self.runtime_interp_head,
            interp_threads_head: self.interp_threads_head,
            tstate_next: self.tstate_next,
            tstate_thread_id: self.tstate_thread_id,
            tstate_frame: self.tstate_frame,
            cframe_current_frame: self.cframe_current_frame.unwrap_or(NO_FIELD),
            frame_previous: self.frame_previous,
            frame_code: self.frame_code,
            frame_instr: self.frame_instr,
            frame_owner: self.frame_owner.unwrap_or(NO_FIELD),
            owner_skip_from: OWNED_BY_CSTACK,
            code_mask: !self.code_tag_bits,
            instr_is_index: self.instr_is_index as u64,
            frame_read_start: self.frame_window().0,
            frame_read_len: self.frame_window().1,
            tstate_read_start: self.tstate_window().0,
            tstate_read_len: self.tstate_window().1,
            finalizing_since_ns: 0,
            instance: 0,
        }
    }

    /// The BPF side reads whole 8-byte words: a frame read spans (start, length) from the
    /// first word a field lies in to the end of the last.
    fn frame_window(&self) -> (u64, u64) {
        let fields = [Some(self.frame_previous), Some(self.frame_code), Some(self.frame_instr), self.frame_owner];
        word_window(fields.iter().flatten().copied(), tracer_ebpf::FRAME_READ as u64)
    }

    /// What a known thread state is read for: its top frame, and its owner to check it is
    /// still this thread's.
    fn tstate_window(&self) -> (u64, u64) {
        word_window([self.tstate_frame, self.tstate_thread_id].into_iter(), tracer_ebpf::TSTATE_READ as u64)
    }

    /// Every offset the BPF side indexes its read buffers with must fit them.
    pub fn fits_bpf_buffers(&self) -> bool {
        use tracer_ebpf::{FRAME_READ, TSTATE_READ};
        let frame_fields = [Some(self.frame_previous), Some(self.frame_code), Some(self.frame_instr), self.frame_owner];
        let tstate_fields = [self.tstate_next, self.tstate_thread_id, self.tstate_frame];
        frame_fields.iter().flatten().all(|&o| o + 8 <= FRAME_READ as u64)
            && tstate_fields.iter().all(|&o| o + 8 <= TSTATE_READ as u64)
    }
}

/// (start, length) of the smallest run of whole 8-byte words holding every offset, at most
/// `max` bytes long.
fn word_window(offsets: impl Iterator<Item = u64>, max: u64) -> (u64, u64) {
    let (lo, hi) = offsets.fold((u64::MAX, 0), |(lo, hi), o| (lo.min(o & !7), hi.max((o & !7) + 8)));
    if lo == u64::MAX {
        return (0, max);
    }
    (lo, (hi - lo).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::versions::SUPPORTED;

    fn frames(minor: u32) -> FrameLayout {
        crate::python::versions::offsets(minor).unwrap().frames
    }

    #[test]
    fn every_supported_version_fits_the_bpf_buffers() {
        for minor in SUPPORTED {
            assert!(frames(minor).fits_bpf_buffers(), "3.{minor}");
        }
    }

    #[test]
    fn config_marks_missing_fields() {
        let c = frames(10).target_config(0x1000);
        assert_eq!(c.frame_owner, NO_FIELD);
        assert_eq!(c.cframe_current_frame, NO_FIELD);
        assert_eq!(c.instr_is_index, 1);
        let c = frames(14).target_config(0x1000);
        assert_eq!(c.code_mask, !7);
    }

    #[test]
    fn reads_span_only_the_fields_used() {
        // 3.11: code 32, previous 48, prev_instr 56, owner byte 69 (in the word at 64).
        let c = frames(11).target_config(1);
        assert_eq!((c.frame_read_start, c.frame_read_len), (32, 40));
        // 3.11: cframe 56, thread_id 152.
        assert_eq!((c.tstate_read_start, c.tstate_read_len), (56, 104));
        for minor in SUPPORTED {
            let l = frames(minor);
            let c = l.target_config(1);
            let frame_fields = [Some(l.frame_previous), Some(l.frame_code), Some(l.frame_instr), l.frame_owner];
            for o in frame_fields.into_iter().flatten() {
                assert!(o >= c.frame_read_start && o < c.frame_read_start + c.frame_read_len, "3.{minor}: {o}");
            }
            for o in [l.tstate_frame, l.tstate_thread_id] {
                assert!(o >= c.tstate_read_start && o + 8 <= c.tstate_read_start + c.tstate_read_len, "3.{minor}: {o}");
            }
            assert!(
                c.frame_read_len <= tracer_ebpf::FRAME_READ as u64
                    && c.tstate_read_len <= tracer_ebpf::TSTATE_READ as u64
            );
        }
        assert_eq!(word_window([].into_iter(), 64), (0, 64));
    }
}
