//! What tracer knows about each CPython version, in one table: which versions it reads
//! ([`SUPPORTED`]) and, per minor version, one entry ([`Offsets`]) with where that version keeps
//! its threads, frames and code objects ([`FrameLayout`]: the BPF stack walk and code.rs), its
//! objects and containers ([`HeapLayout`]: the holders view), its `str` objects ([`StrLayout`]),
//! and where its own `_Py_DebugOffsets` (3.13+) records those same fields. [`offsets`] is the one
//! place that picks an entry.
//!
//! Adding a version: one entry below (start from the previous version's and change what the new
//! headers change), its debug-offset positions, its measurements in docs/cpython/, and the end
//! of [`SUPPORTED`]. Unit tests check that every supported version has an entry (here), that it
//! fits the BPF side's read buffers (frames.rs), and that a real `_Py_DebugOffsets` table of
//! each 3.13+ version agrees with it (debug_offsets.rs).
//!
//! Provenance (x86-64, GIL builds): offsetof() programs compiled against each version's headers
//! and gdb on the DWARF of pyenv 3.10.13/3.11.7/3.12.1/3.13.0 and Debian sid 3.14.10 and
//! 3.15.2 (the -dbg packages' debug files), then used live to walk stacks and scan containers
//! (docs/cpython/frames.md §1.1, §2, §3; docs/cpython/containers.md §1-§3). 3.11.2 (Debian)
//! and 3.11.7 agree on every field. For 3.13+ the target's own `_Py_DebugOffsets` is read at
//! attach time and compared with its entry; on disagreement the target's values win.

use std::ops::RangeInclusive;

use super::census::GcLayout;
use super::debug_offsets::Field::{self, *};
use super::frames::FrameLayout;
use super::heap::layout::{HeapLayout, InstanceLayout, KeysLayout};
use super::pystr::StrLayout;

/// `tp_flags` whose objects have a 16-byte pre-header: `MANAGED_DICT` (3.11+), `MANAGED_WEAKREF` (3.12+).
const MANAGED_DICT: u64 = 1 << 4;
const MANAGED: u64 = MANAGED_DICT | 1 << 3;

/// The CPython 3 minor versions tracer reads.
pub const SUPPORTED: RangeInclusive<u32> = 10..=15;

/// The hint for an interpreter outside [`SUPPORTED`].
pub fn supported_hint() -> String {
    format!("tracer supports CPython 3.{} to 3.{}", SUPPORTED.start(), SUPPORTED.end())
}

/// Where one CPython minor version keeps what tracer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offsets {
    pub minor: u32,
    pub frames: FrameLayout,
    pub heap: HeapLayout,
    pub str: StrLayout,
    /// Where its lists of GC-tracked objects are (the census).
    pub gc: GcLayout,
    /// Where the version's `_Py_DebugOffsets` records fields of this entry, as (field, u64
    /// index in the table); empty before 3.13, which has no such table.
    pub debug_offsets: &'static [(Field, usize)],
}

/// The entry of CPython 3.`minor`, or `None` when tracer does not read that version.
pub fn offsets(minor: u32) -> Option<Offsets> {
    let entry = match minor {
        10 => V3_10,
        11 => V3_11,
        12 => V3_12,
        13 => V3_13,
        14 => V3_14,
        15 => V3_15,
        _ => return None,
    };
    Some(entry)
}

/// 3.10 is the base every later entry starts from; its heap layout lists every field.
const V3_10: Offsets = Offsets {
    minor: 10,
    frames: FrameLayout {
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
    heap: HeapLayout {
        // containers §1.1
        runtime_interp_main: 40,
        interp_modules: 856,
        // containers §2.1
        split_refcnt: false,
        tp_name: 24,
        tp_basicsize: 32,
        tp_itemsize: 40,
        tp_flags: 168,
        tp_members: 240,
        tp_base: 256,
        tp_dict: 264,
        tp_dictoffset: 288,
        type_size: 408,
        ht_cached_keys: 872,
        // containers §2.2
        tuple_items: 24,
        list_size: 16,
        list_items: 24,
        list_allocated: 32,
        dict_used: 16,
        dict_keys: 32,
        dict_values: 40,
        set_fill: 16,
        set_used: 24,
        set_mask: 32,
        set_table: 40,
        set_size: 200,
        deque_len: 16,
        deque_rightblock: 32,
        deque_rightindex: 48,
        deque_size: 80,
        module_dict: 16,
        func_code: 48,
        func_closure: 72,
        func_defaults: 56,
        func_kwdefaults: 64,
        func_dict: 88,
        cell_ref: 16,
        exc_traceback: 32,
        code_freevars: 80,
        code_nfreevars: 0,
        code_localsplusnames: 0,
        member_size: 40,
        long_size_in_tag: false,
        // containers §2.3
        keys: KeysLayout::V310,
        values_header: 0,
        // containers §3
        instance: InstanceLayout::DictOffset,
        pre_header: 0,
        managed_dict_pre: 0,
    },
    str: StrLayout { ascii_data: 48, compact_data: 72 },
    gc: GcLayout::classic(616, 0),
    debug_offsets: &[],
};

/// 3.11: `_PyInterpreterFrame` and `_PyCFrame`, co_qualname, the 3.11 location table, managed
/// dicts and the new dict keys.
const V3_11: Offsets = Offsets {
    minor: 11,
    frames: FrameLayout {
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
    heap: HeapLayout {
        runtime_interp_main: 48,
        interp_modules: 888,
        deque_size: 216,
        code_freevars: 0,
        code_nfreevars: 92,
        code_localsplusnames: 96,
        keys: KeysLayout::V311,
        instance: InstanceLayout::Managed311,
        pre_header: 32,
        managed_dict_pre: 16,
        exc_traceback: 40,
        ..V3_10.heap
    },
    str: StrLayout { ascii_data: 48, compact_data: 72 },
    gc: GcLayout::classic(648, MANAGED_DICT),
    debug_offsets: &[],
};

/// 3.12: `_PyCFrame.current_frame` at 0, tagged dict-or-values, no `wstr` in `str`.
const V3_12: Offsets = Offsets {
    minor: 12,
    frames: FrameLayout {
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
    heap: HeapLayout {
        interp_modules: 944,
        type_size: 416,
        ht_cached_keys: 880,
        code_nfreevars: 88,
        long_size_in_tag: true,
        instance: InstanceLayout::Tagged312,
        ..V3_11.heap
    },
    str: StrLayout { ascii_data: 40, compact_data: 56 },
    gc: GcLayout::classic(112, MANAGED),
    debug_offsets: &[],
};

/// 3.13: `current_frame` in the thread state, inline instance values, `_Py_DebugOffsets`.
const V3_13: Offsets = Offsets {
    minor: 13,
    frames: FrameLayout {
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
    heap: HeapLayout {
        runtime_interp_main: 640,
        interp_modules: 7656,
        values_header: 8,
        instance: InstanceLayout::Inline313,
        ..V3_12.heap
    },
    str: StrLayout { ascii_data: 40, compact_data: 56 },
    gc: GcLayout::classic(7400, MANAGED),
    debug_offsets: &[
        (InterpretersHead, 5),
        (ThreadsHead, 9),
        (ImportsModules, 11),
        (TstateNext, 21),
        (TstateCurrentFrame, 23),
        (TstateThreadId, 24),
        (FramePrevious, 29),
        (FrameExecutable, 30),
        (FrameInstrPtr, 31),
        (FrameOwner, 33),
        (CodeFilename, 35),
        (CodeName, 36),
        (CodeQualname, 37),
        (CodeLinetable, 38),
        (CodeFirstlineno, 39),
        (CodeAdaptive, 43),
        (TpName, 47),
        (TpFlags, 49),
        (TupleItems, 51),
        (ListItems, 54),
        (ListSize, 55),
        (DictKeys, 57),
        (DictValues, 58),
        (StrAsciiSize, 70),
    ],
};

/// 3.14: `f_executable` is a tagged `_PyStackRef`, split refcounts, tuples' cached hash.
const V3_14: Offsets = Offsets {
    minor: 14,
    frames: FrameLayout {
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
    heap: HeapLayout {
        runtime_interp_main: 816,
        interp_modules: 7688,
        split_refcnt: true,
        tuple_items: 32,
        ..V3_13.heap
    },
    str: StrLayout { ascii_data: 40, compact_data: 56 },
    gc: GcLayout {
        interp_gc: 7408,
        heads: [24, 48, 72, 96],
        collecting: 192,
        generation0: 256,
        heap_size: Some(216),
        preheader_flags: MANAGED,
    },
    debug_offsets: &[
        (InterpretersHead, 5),
        (ThreadsHead, 9),
        (ImportsModules, 12),
        (TstateNext, 24),
        (TstateCurrentFrame, 26),
        (TstateThreadId, 27),
        (FramePrevious, 32),
        (FrameExecutable, 33),
        (FrameInstrPtr, 34),
        (FrameOwner, 36),
        (CodeFilename, 40),
        (CodeName, 41),
        (CodeQualname, 42),
        (CodeLinetable, 43),
        (CodeFirstlineno, 44),
        (CodeAdaptive, 48),
        (TpName, 53),
        (TpFlags, 55),
        (TupleItems, 57),
        (ListItems, 60),
        (ListSize, 61),
        (SetUsed, 63),
        (SetTable, 64),
        (SetMask, 65),
        (DictKeys, 67),
        (DictValues, 68),
        (StrAsciiSize, 80),
    ],
};

/// 3.15 (Debian sid 3.15.2; docs/cpython/frames.md §9, containers.md §12): a bigger thread
/// state (`thread_id` at 176) and runtime, `PyTypeObject` grows to 424 bytes (so
/// `ht_cached_keys` moves to 888). Frames, code objects, containers and instances are 3.14's.
const V3_15: Offsets = Offsets {
    minor: 15,
    frames: FrameLayout { runtime_interp_head: 936, interp_threads_head: 7336, tstate_thread_id: 176, ..V3_14.frames },
    heap: HeapLayout {
        runtime_interp_main: 944,
        interp_modules: 7592,
        type_size: 424,
        ht_cached_keys: 888,
        ..V3_14.heap
    },
    str: StrLayout { ascii_data: 40, compact_data: 56 },
    gc: GcLayout {
        interp_gc: 7400,
        heads: [8, 32, 56, 80],
        collecting: 120,
        generation0: 168,
        heap_size: Some(144),
        preheader_flags: MANAGED,
    },
    debug_offsets: &[
        (InterpretersHead, 5),
        (ThreadsHead, 9),
        (ImportsModules, 12),
        (TstateNext, 24),
        (TstateCurrentFrame, 26),
        (TstateThreadId, 30),
        (FramePrevious, 40),
        (FrameExecutable, 41),
        (FrameInstrPtr, 42),
        (FrameOwner, 44),
        (CodeFilename, 48),
        (CodeName, 49),
        (CodeQualname, 50),
        (CodeLinetable, 51),
        (CodeFirstlineno, 52),
        (CodeAdaptive, 56),
        (TpName, 61),
        (TpFlags, 63),
        (TpBasicsize, 64),
        (TpDictoffset, 65),
        (HtCachedKeys, 67),
        (TupleItems, 69),
        (ListItems, 72),
        (ListSize, 73),
        (SetUsed, 75),
        (SetTable, 76),
        (SetMask, 77),
        (DictKeys, 79),
        (DictValues, 80),
        (StrAsciiSize, 92),
        (StrCompactSize, 93),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_version_has_its_entry() {
        for minor in SUPPORTED {
            assert_eq!(offsets(minor).map(|o| o.minor), Some(minor));
        }
        assert!(offsets(SUPPORTED.start() - 1).is_none() && offsets(SUPPORTED.end() + 1).is_none());
        assert!(supported_hint().starts_with("tracer supports CPython 3.10 to 3.1"), "{}", supported_hint());
    }
}
