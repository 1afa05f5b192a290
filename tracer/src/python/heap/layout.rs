//! What the heap readers need to know about a version's objects (x86-64, GIL builds): what each
//! field means and where it was measured ("containers §N" = docs/cpython/containers.md). The
//! values per version are in versions.rs.

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
    /// `__defaults__`, `__kwdefaults__` and `__dict__` of a function (census §6).
    pub func_defaults: u64,
    pub func_kwdefaults: u64,
    pub func_dict: u64,
    pub cell_ref: u64,
    /// `PyBaseExceptionObject.traceback`; `__context__` and `__cause__` follow it (census §6).
    pub exc_traceback: u64,
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
    /// Bytes of the managed-dict pre-header of objects whose type has `MANAGED_DICT` (3.11+:
    /// 16, before the GC head); 0 where the flag does not exist (3.10).
    pub managed_dict_pre: u64,
    // containers §2.2 (sizes of items, for the retained estimate)
    /// 3.12+: an int's digit count is `lv_tag >> 3` (@16); before, `|ob_size|` (@16).
    pub long_size_in_tag: bool,
}

impl HeapLayout {
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
