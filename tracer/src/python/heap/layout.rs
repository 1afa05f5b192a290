//! The per-version offsets the heap readers use (x86-64, GIL builds), as data: what each field
//! means, and where it was measured ("containers §N" = docs/cpython/containers.md).

/// Where a version keeps dict keys' entries (containers §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysLayout {
    /// 3.10: `dk_size` @8 (i64), `dk_nentries` @32, indices @40, 24-byte entries.
    V310,
    /// 3.11+: `dk_log2_size` @8, `dk_log2_index_bytes` @9, `dk_kind` @10, `dk_nentries` @24,
    /// indices @32; GENERAL entries 24 B, UNICODE/SPLIT 16 B.
    V311,
}

/// Where a version keeps instance attributes (containers §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceLayout {
    /// 3.10: `tp_dictoffset` only.
    DictOffset,
    /// 3.11: `MANAGED_DICT`: obj−32 values array, obj−24 dict.
    Managed311,
    /// 3.12: obj−24 `PyDictOrValues` (bit 0 set ⇒ values = word + 1).
    Tagged312,
    /// 3.13+: obj−24 dict; else `INLINE_VALUES` at obj + `tp_basicsize` (8-byte header).
    Inline313,
}

/// Per-version offsets (x86-64, GIL builds), as data. Values that are the same in every version
/// are still fields so a reader sees the whole layout in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapLayout {
    pub major: u32,
    pub minor: u32,
    // containers §1.1 (runtime → sys.modules)
    pub runtime_interp_main: u64,
    pub interp_modules: u64,
    // containers §2.1 (header, refcount, types)
    /// 3.14 splits `ob_refcnt` (u32 + u16 overflow + u16 flags).
    pub split_refcnt: bool,
    pub tp_name: u64,
    pub tp_basicsize: u64,
    pub tp_itemsize: u64,
    pub tp_flags: u64,
    pub tp_members: u64,
    pub tp_base: u64,
    pub tp_dict: u64,
    pub tp_dictoffset: u64,
    pub type_size: u64,
    pub ht_cached_keys: u64,
    // containers §2.2 (containers, modules, functions, cells, code)
    pub tuple_items: u64,
    pub list_size: u64,
    pub list_items: u64,
    pub list_allocated: u64,
    pub dict_used: u64,
    pub dict_keys: u64,
    pub dict_values: u64,
    pub set_fill: u64,
    pub set_used: u64,
    pub set_mask: u64,
    pub set_table: u64,
    pub set_size: u64,
    pub deque_len: u64,
    /// `dequeobject`: leftblock @24, rightblock @32, leftindex @40, rightindex @48 (all versions;
    /// `block` = {leftlink @0, data[64] @8, rightlink @520}). Checked live by the harness.
    pub deque_rightblock: u64,
    pub deque_rightindex: u64,
    pub deque_size: u64,
    pub module_dict: u64,
    pub func_code: u64,
    pub func_closure: u64,
    pub cell_ref: u64,
    /// 3.10: `co_freevars` tuple offset; 3.11+: 0 (use `co_nfreevars` + `co_localsplusnames`).
    pub code_freevars: u64,
    pub code_nfreevars: u64,
    pub code_localsplusnames: u64,
    pub member_size: u64,
    // containers §2.3 (dict keys)
    pub keys: KeysLayout,
    /// Bytes of `PyDictValues` header before `values[]` (0 on 3.10–3.12, 8 on 3.13+).
    pub values_header: u64,
    // containers §3 (instance attributes)
    pub instance: InstanceLayout,
    /// Bytes read before each object (managed pre-header; 0 on 3.10).
    pub pre_header: u64,
    // cpython-frames.md "Strings"
    pub str_ascii_data: u64,
    pub str_compact_data: u64,
}

impl HeapLayout {
    /// The table for CPython `major.minor` (3.10..=3.14), or `None`.
    pub fn for_version(major: u32, minor: u32) -> Option<HeapLayout> {
        if major != 3 || !(10..=14).contains(&minor) {
            return None;
        }
        let m = minor;
        let pick = |v: [u64; 5]| v[(m - 10) as usize];
        Some(HeapLayout {
            major,
            minor,
            // §1.1 table
            runtime_interp_main: pick([40, 48, 48, 640, 816]),
            interp_modules: pick([856, 888, 944, 7656, 7688]),
            // §2.1 table
            split_refcnt: m >= 14,
            tp_name: 24,
            tp_basicsize: 32,
            tp_itemsize: 40,
            tp_flags: 168,
            tp_members: 240,
            tp_base: 256,
            tp_dict: 264,
            tp_dictoffset: 288,
            type_size: pick([408, 408, 416, 416, 416]),
            ht_cached_keys: pick([872, 872, 880, 880, 880]),
            // §2.2 table
            tuple_items: if m >= 14 { 32 } else { 24 },
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
            deque_size: if m == 10 { 80 } else { 216 },
            module_dict: 16,
            func_code: 48,
            func_closure: 72,
            cell_ref: 16,
            code_freevars: if m == 10 { 80 } else { 0 },
            code_nfreevars: pick([0, 92, 88, 88, 88]),
            code_localsplusnames: if m == 10 { 0 } else { 96 },
            member_size: 40,
            // §2.3
            keys: if m == 10 { KeysLayout::V310 } else { KeysLayout::V311 },
            values_header: if m >= 13 { 8 } else { 0 },
            // §3 table
            instance: match m {
                10 => InstanceLayout::DictOffset,
                11 => InstanceLayout::Managed311,
                12 => InstanceLayout::Tagged312,
                _ => InstanceLayout::Inline313,
            },
            pre_header: if m == 10 { 0 } else { 32 },
            // cpython-frames.md "Strings"
            str_ascii_data: if m <= 11 { 48 } else { 40 },
            str_compact_data: if m <= 11 { 72 } else { 56 },
        })
    }

    /// Whether `rc` can be a live object's reference count (containers §4).
    pub(crate) fn refcnt_plausible(&self, rc: u64) -> bool {
        if self.split_refcnt {
            // containers §4: low 32 bits ≠ 0, ob_overflow (bits 32–47) = 0
            (rc & 0xffff_ffff) != 0 && (rc >> 32) & 0xffff == 0
        } else {
            rc > 0 && rc < (1 << 32)
        }
    }
}
