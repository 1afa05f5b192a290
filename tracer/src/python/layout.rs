//! Where CPython keeps threads, frames and code objects, per minor version (x86-64, GIL builds).
//!
//! Provenance: offsetof() programs compiled against each version's headers and gdb on the
//! DWARF of pyenv 3.10.13/3.11.7/3.12.1/3.13.0 and Debian sid 3.14.10, then used live to walk
//! stacks (shared/facts/cpython-frames.md §1.1, §2). 3.11.2 (Debian) and 3.11.7 agree on every
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
            finalizing_since_ns: 0,
            instance: 0,
        }
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
}
