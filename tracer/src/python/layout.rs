//! Where CPython keeps threads, frames and code objects, per minor version (x86-64, GIL builds).
//!
//! Provenance: offsetof() programs compiled against each version's headers and gdb on the
//! DWARF of pyenv 3.10.13/3.11.7/3.12.1/3.13.0 and Debian sid 3.14.10, then used live to walk
//! stacks (docs/cpython/frames.md §1.1, §2). 3.11.2 (Debian) and 3.11.7 agree on every
//! field. For 3.13+ the target's own `_Py_DebugOffsets` is read at attach time and checked
//! against this table (see debug_offsets.rs); on disagreement the target's values win.

use tracer_ebpf::{TargetConfig, NO_FIELD};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub minor: u32,
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

impl Layout {
    pub fn for_minor(minor: u32) -> Option<Layout> {
        let l = match minor {
            10 => Layout {
                minor,
                runtime_interp_head: 32,
                interp_threads_head: 8,
                tstate_next: 8,
                tstate_thread_id: 176,
                tstate_frame: 24,
                cframe_current_frame: None,
                frame_previous: 24,
                frame_code: 32,
                frame_instr: 96,
                frame_owner: None,
                instr_is_index: true,
                code_tag_bits: 0,
                co_firstlineno: 40,
                co_filename: 104,
                co_name: 112,
                co_qualname: None,
                co_linetable: 120,
                co_code_adaptive: None,
            },
            11 => Layout {
                minor,
                runtime_interp_head: 40,
                interp_threads_head: 16,
                tstate_next: 8,
                tstate_thread_id: 152,
                tstate_frame: 56,
                cframe_current_frame: Some(8),
                frame_previous: 48,
                frame_code: 32,
                frame_instr: 56,
                frame_owner: Some(69),
                instr_is_index: false,
                code_tag_bits: 0,
                co_firstlineno: 72,
                co_filename: 112,
                co_name: 120,
                co_qualname: Some(128),
                co_linetable: 136,
                co_code_adaptive: Some(184),
            },
            12 => Layout {
                minor,
                runtime_interp_head: 40,
                interp_threads_head: 72,
                tstate_next: 8,
                tstate_thread_id: 136,
                tstate_frame: 56,
                cframe_current_frame: Some(0),
                frame_previous: 8,
                frame_code: 0,
                frame_instr: 56,
                frame_owner: Some(70),
                instr_is_index: false,
                code_tag_bits: 0,
                co_firstlineno: 68,
                co_filename: 112,
                co_name: 120,
                co_qualname: Some(128),
                co_linetable: 136,
                co_code_adaptive: Some(192),
            },
            13 => Layout {
                minor,
                runtime_interp_head: 632,
                interp_threads_head: 7344,
                tstate_next: 8,
                tstate_thread_id: 152,
                tstate_frame: 72,
                cframe_current_frame: None,
                frame_previous: 8,
                frame_code: 0,
                frame_instr: 56,
                frame_owner: Some(70),
                instr_is_index: false,
                code_tag_bits: 0,
                co_firstlineno: 68,
                co_filename: 112,
                co_name: 120,
                co_qualname: Some(128),
                co_linetable: 136,
                co_code_adaptive: Some(200),
            },
            14 => Layout {
                minor,
                runtime_interp_head: 808,
                interp_threads_head: 7344,
                tstate_next: 8,
                tstate_thread_id: 152,
                tstate_frame: 72,
                cframe_current_frame: None,
                frame_previous: 8,
                frame_code: 0,
                frame_instr: 56,
                frame_owner: Some(74),
                instr_is_index: false,
                code_tag_bits: 7,
                co_firstlineno: 68,
                co_filename: 112,
                co_name: 120,
                co_qualname: Some(128),
                co_linetable: 136,
                co_code_adaptive: Some(208),
            },
            _ => return None,
        };
        Some(l)
    }

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

    #[test]
    fn every_supported_version_fits_the_bpf_buffers() {
        for minor in 10..=14 {
            let l = Layout::for_minor(minor).unwrap();
            assert!(l.fits_bpf_buffers(), "3.{minor}");
        }
        assert!(Layout::for_minor(9).is_none());
    }

    #[test]
    fn config_marks_missing_fields() {
        let c = Layout::for_minor(10).unwrap().target_config(0x1000);
        assert_eq!(c.frame_owner, NO_FIELD);
        assert_eq!(c.cframe_current_frame, NO_FIELD);
        assert_eq!(c.instr_is_index, 1);
        let c = Layout::for_minor(14).unwrap().target_config(0x1000);
        assert_eq!(c.code_mask, !7);
    }

    #[test]
    fn reads_span_only_the_fields_used() {
        // 3.11: code 32, previous 48, prev_instr 56, owner byte 69 (in the word at 64).
        let c = Layout::for_minor(11).unwrap().target_config(1);
        assert_eq!((c.frame_read_start, c.frame_read_len), (32, 40));
        // 3.11: cframe 56, thread_id 152.
        assert_eq!((c.tstate_read_start, c.tstate_read_len), (56, 104));
        for minor in 10..=14 {
            let l = Layout::for_minor(minor).unwrap();
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
