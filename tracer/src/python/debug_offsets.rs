//! `_Py_DebugOffsets` (3.13+): the interpreter's own table of where its structures are, at the
//! start of `_PyRuntime` (docs/cpython/frames.md §3). It is not self-describing (fields are
//! inserted mid-struct between versions), so each version's entry in versions.rs lists where the
//! fields this tracer uses sit in it (u64 indexes). The target's table is compared with the
//! built-in entry at attach time; where they differ, the target's values are used.

use super::versions::{self, Offsets};
use crate::remote::le_u64;

pub const COOKIE: &[u8; 8] = b"xdebugpy";
/// Bytes read from the start of `_PyRuntime`: the whole table fits (584 bytes in 3.13, 760 in
/// 3.14, 888 in 3.15).
pub const TABLE_BYTES: usize = 1024;

/// A field of [`Offsets`] that `_Py_DebugOffsets` records too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    InterpretersHead,
    ThreadsHead,
    ImportsModules,
    TstateNext,
    TstateCurrentFrame,
    TstateThreadId,
    FramePrevious,
    FrameExecutable,
    FrameInstrPtr,
    FrameOwner,
    CodeFilename,
    CodeName,
    CodeQualname,
    CodeLinetable,
    CodeFirstlineno,
    CodeAdaptive,
    TpName,
    TpFlags,
    TpBasicsize,
    TpDictoffset,
    HtCachedKeys,
    TupleItems,
    ListItems,
    ListSize,
    SetUsed,
    SetTable,
    SetMask,
    DictKeys,
    DictValues,
    StrAsciiSize,
    StrCompactSize,
}

impl Field {
    /// The field's name in CPython's `_Py_DebugOffsets`.
    pub fn name(self) -> &'static str {
        use Field::*;
        match self {
            InterpretersHead => "runtime_state.interpreters_head",
            ThreadsHead => "interpreter_state.threads_head",
            ImportsModules => "interpreter_state.imports_modules",
            TstateNext => "thread_state.next",
            TstateCurrentFrame => "thread_state.current_frame",
            TstateThreadId => "thread_state.thread_id",
            FramePrevious => "interpreter_frame.previous",
            FrameExecutable => "interpreter_frame.executable",
            FrameInstrPtr => "interpreter_frame.instr_ptr",
            FrameOwner => "interpreter_frame.owner",
            CodeFilename => "code_object.filename",
            CodeName => "code_object.name",
            CodeQualname => "code_object.qualname",
            CodeLinetable => "code_object.linetable",
            CodeFirstlineno => "code_object.firstlineno",
            CodeAdaptive => "code_object.co_code_adaptive",
            TpName => "type_object.tp_name",
            TpFlags => "type_object.tp_flags",
            TpBasicsize => "type_object.tp_basicsize",
            TpDictoffset => "type_object.tp_dictoffset",
            HtCachedKeys => "heap_type_object.ht_cached_keys",
            TupleItems => "tuple_object.ob_item",
            ListItems => "list_object.ob_item",
            ListSize => "list_object.ob_size",
            SetUsed => "set_object.used",
            SetTable => "set_object.table",
            SetMask => "set_object.mask",
            DictKeys => "dict_object.ma_keys",
            DictValues => "dict_object.ma_values",
            StrAsciiSize => "unicode_object.asciiobject_size",
            StrCompactSize => "unicode_object.compactunicodeobject_size",
        }
    }

    /// The value the entry `o` holds for this field (0 for one the version lacks).
    pub fn get(self, o: &Offsets) -> u64 {
        use Field::*;
        match self {
            InterpretersHead => o.frames.runtime_interp_head,
            ThreadsHead => o.frames.interp_threads_head,
            ImportsModules => o.heap.interp_modules,
            TstateNext => o.frames.tstate_next,
            TstateCurrentFrame => o.frames.tstate_frame,
            TstateThreadId => o.frames.tstate_thread_id,
            FramePrevious => o.frames.frame_previous,
            FrameExecutable => o.frames.frame_code,
            FrameInstrPtr => o.frames.frame_instr,
            FrameOwner => o.frames.frame_owner.unwrap_or(0),
            CodeFilename => o.frames.co_filename,
            CodeName => o.frames.co_name,
            CodeQualname => o.frames.co_qualname.unwrap_or(0),
            CodeLinetable => o.frames.co_linetable,
            CodeFirstlineno => o.frames.co_firstlineno,
            CodeAdaptive => o.frames.co_code_adaptive.unwrap_or(0),
            TpName => o.heap.tp_name,
            TpFlags => o.heap.tp_flags,
            TpBasicsize => o.heap.tp_basicsize,
            TpDictoffset => o.heap.tp_dictoffset,
            HtCachedKeys => o.heap.ht_cached_keys,
            TupleItems => o.heap.tuple_items,
            ListItems => o.heap.list_items,
            ListSize => o.heap.list_size,
            SetUsed => o.heap.set_used,
            SetTable => o.heap.set_table,
            SetMask => o.heap.set_mask,
            DictKeys => o.heap.dict_keys,
            DictValues => o.heap.dict_values,
            StrAsciiSize => o.str.ascii_data,
            StrCompactSize => o.str.compact_data,
        }
    }

    fn set(self, o: &mut Offsets, v: u64) {
        use Field::*;
        match self {
            InterpretersHead => o.frames.runtime_interp_head = v,
            ThreadsHead => o.frames.interp_threads_head = v,
            ImportsModules => o.heap.interp_modules = v,
            TstateNext => o.frames.tstate_next = v,
            TstateCurrentFrame => o.frames.tstate_frame = v,
            TstateThreadId => o.frames.tstate_thread_id = v,
            FramePrevious => o.frames.frame_previous = v,
            FrameExecutable => o.frames.frame_code = v,
            FrameInstrPtr => o.frames.frame_instr = v,
            FrameOwner => o.frames.frame_owner = Some(v),
            CodeFilename => o.frames.co_filename = v,
            CodeName => o.frames.co_name = v,
            CodeQualname => o.frames.co_qualname = Some(v),
            CodeLinetable => o.frames.co_linetable = v,
            CodeFirstlineno => o.frames.co_firstlineno = v,
            CodeAdaptive => o.frames.co_code_adaptive = Some(v),
            TpName => o.heap.tp_name = v,
            TpFlags => o.heap.tp_flags = v,
            TpBasicsize => o.heap.tp_basicsize = v,
            TpDictoffset => o.heap.tp_dictoffset = v,
            HtCachedKeys => o.heap.ht_cached_keys = v,
            TupleItems => o.heap.tuple_items = v,
            ListItems => o.heap.list_items = v,
            ListSize => o.heap.list_size = v,
            SetUsed => o.heap.set_used = v,
            SetTable => o.heap.set_table = v,
            SetMask => o.heap.set_mask = v,
            DictKeys => o.heap.dict_keys = v,
            DictValues => o.heap.dict_values = v,
            StrAsciiSize => o.str.ascii_data = v,
            StrCompactSize => o.str.compact_data = v,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// The table matches the built-in entry.
    Match,
    /// The table disagrees on these fields; the table's values are used.
    Differs(Vec<&'static str>),
}

/// Parses the table and returns the version it names (`PY_VERSION_HEX`), the built-in entry of
/// that version with every field the table records taken from the table, and how the two
/// compare. `None` when the bytes are not a debug-offsets table of a supported GIL build.
pub fn parse(bytes: &[u8]) -> Option<(u64, Offsets, Check)> {
    if bytes.len() < TABLE_BYTES.min(512) || &bytes[..8] != COOKIE {
        return None;
    }
    let word = |i: usize| (i * 8 + 8 <= bytes.len()).then(|| le_u64(bytes, i * 8));
    let version_hex = word(1)?;
    let free_threaded = word(2)?;
    let minor = ((version_hex >> 16) & 0xff) as u32;
    if version_hex >> 24 != 3 || free_threaded != 0 {
        return None;
    }
    let builtin = versions::offsets(minor)?;
    if builtin.debug_offsets.is_empty() {
        return None;
    }
    let mut from_table = builtin.clone();
    let mut differing = Vec::new();
    for &(field, index) in builtin.debug_offsets {
        let v = word(index)?;
        if field.get(&builtin) != v {
            differing.push(field.name());
        }
        field.set(&mut from_table, v);
    }
    let check = if differing.is_empty() { Check::Match } else { Check::Differs(differing) };
    Some((version_hex, from_table, check))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::versions::SUPPORTED;

    /// Words 1-79 of pyenv 3.13.0's `_Py_DebugOffsets` (the .PyRuntime data of
    /// libpython3.13.so.1.0), from `version` through `unicode_object`; word 0 is the cookie.
    const TABLE_313: [u64; 79] = [
        0x030d00f0, 0, 283320, 608, 632, 194968, 7272, 7264, 7344, 7400, 7656, 7640, 7648, 16, 7752, 0, 7768, 7760,
        304, 0, 8, 16, 72, 152, 160, 232, 32, 80, 8, 0, 56, 72, 70, 208, 112, 120, 128, 136, 68, 52, 96, 104, 200, 16,
        8, 416, 24, 88, 168, 32, 24, 16, 40, 24, 16, 48, 32, 40, 24, 16, 32, 16, 24, 40, 16, 32, 64, 32, 16, 40, 240,
        200, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// Words 1-89 of Debian sid 3.14.10's `_Py_DebugOffsets`, through `gen_object`.
    const TABLE_314: [u64; 89] = [
        0x030e0af0, 0, 316616, 784, 808, 225864, 7280, 7272, 7344, 7360, 7408, 7688, 7672, 7680, 16, 7784, 0, 7800,
        7792, 7992, 0, 832, 0, 8, 16, 72, 152, 160, 232, 32, 88, 8, 0, 56, 80, 74, 64, 0, 216, 112, 120, 128, 136, 68,
        52, 96, 104, 208, 0, 16, 8, 416, 24, 88, 168, 40, 32, 16, 40, 24, 16, 200, 24, 40, 32, 48, 32, 40, 24, 16, 32,
        16, 24, 40, 16, 32, 64, 32, 16, 40, 264, 192, 160, 24, 72, 67, 0, 8, 24,
    ];

    /// Words 1-110 (all) of Debian sid 3.15.2's `_Py_DebugOffsets` (888 bytes; it adds
    /// `tp_basicsize`, `tp_dictoffset`, `heap_type_object` and `compactunicodeobject_size`).
    const TABLE_315: [u64; 110] = [
        0x030f02f0, 0, 346568, 912, 936, 226240, 7272, 7264, 7336, 7352, 7400, 7592, 7576, 7584, 16, 7736, 0, 7752,
        7744, 7944, 0, 888, 0, 8, 16, 72, 80, 88, 96, 176, 184, 256, 32, 36, 40, 136, 288, 0, 88, 8, 0, 56, 80, 74, 64,
        0, 216, 112, 120, 128, 136, 68, 52, 96, 104, 208, 0, 16, 8, 424, 24, 88, 168, 32, 288, 944, 888, 40, 32, 16,
        40, 24, 16, 200, 24, 40, 32, 48, 32, 40, 24, 16, 32, 16, 24, 40, 16, 32, 64, 32, 16, 40, 56, 176, 112, 120,
        1120, 104, 160, 24, 72, 67, 0, 8, 24, 344, 8028, 0, 4, 512,
    ];

    /// A table read from a target: the cookie, then `words`.
    fn bytes(words: &[u64]) -> Vec<u8> {
        let mut b: Vec<u8> = COOKIE.iter().copied().chain(words.iter().flat_map(|w| w.to_le_bytes())).collect();
        b.resize(TABLE_BYTES, 0);
        b
    }

    fn check_real_table(words: &[u64], minor: u32) {
        let (hex, offsets, check) = parse(&bytes(words)).unwrap();
        assert_eq!((hex >> 16) & 0xff, minor as u64);
        assert_eq!(check, Check::Match, "3.{minor}");
        assert_eq!(offsets, versions::offsets(minor).unwrap(), "3.{minor}");
    }

    #[test]
    fn real_313_table_matches_builtin_offsets() {
        check_real_table(&TABLE_313, 13);
    }

    #[test]
    fn real_314_table_matches_builtin_offsets() {
        check_real_table(&TABLE_314, 14);
    }

    #[test]
    fn real_315_table_matches_builtin_offsets() {
        check_real_table(&TABLE_315, 15);
    }

    /// A version with a table but no real one checked above is a version added on trust.
    #[test]
    fn every_version_with_a_table_has_a_real_one_checked() {
        let checked = [(13, &TABLE_313[..]), (14, &TABLE_314[..]), (15, &TABLE_315[..])];
        for minor in SUPPORTED.filter(|&m| !versions::offsets(m).unwrap().debug_offsets.is_empty()) {
            let table = checked.iter().find(|(m, _)| *m == minor).map(|(_, t)| *t);
            check_real_table(table.unwrap_or_else(|| panic!("no real 3.{minor} table in these tests")), minor);
        }
    }

    #[test]
    fn a_changed_field_is_reported_and_the_table_wins() {
        let mut t = TABLE_313;
        t[24 - 1] = 160; // thread_state.thread_id (word 24)
        t[11 - 1] = 7000; // interpreter_state.imports_modules (word 11)
        let (_, offsets, check) = parse(&bytes(&t)).unwrap();
        assert_eq!(check, Check::Differs(vec!["interpreter_state.imports_modules", "thread_state.thread_id"]));
        assert_eq!((offsets.frames.tstate_thread_id, offsets.heap.interp_modules), (160, 7000));
    }

    #[test]
    fn garbage_and_unknown_versions_are_rejected() {
        assert!(parse(&[0u8; 1024]).is_none());
        let mut t = bytes(&TABLE_313);
        t[8..16].copy_from_slice(&0x030c00f0u64.to_le_bytes()); // 3.12 has no table
        assert!(parse(&t).is_none());
        assert!(parse(&bytes(&TABLE_313)[..100]).is_none());
        let mut t = bytes(&TABLE_313);
        t[16..24].copy_from_slice(&1u64.to_le_bytes()); // free-threaded
        assert!(parse(&t).is_none());
    }

    /// Every position of every entry lies inside the bytes read, and each field is listed once.
    #[test]
    fn positions_fit_the_table_read() {
        for minor in SUPPORTED {
            let o = versions::offsets(minor).unwrap();
            assert_eq!(o.debug_offsets.is_empty(), minor < 13, "3.{minor}: the table exists from 3.13");
            for (k, &(field, index)) in o.debug_offsets.iter().enumerate() {
                assert!(index >= 3 && (index + 1) * 8 <= TABLE_BYTES, "3.{minor} {}", field.name());
                assert!(o.debug_offsets[..k].iter().all(|&(f, i)| f != field && i != index), "3.{minor} {field:?}");
            }
        }
    }
}
