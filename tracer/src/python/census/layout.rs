//! Where a version keeps its lists of GC-tracked objects (x86-64, GIL builds). Values per version
//! are in versions.rs; provenance: docs/cpython/census.md §1 (gdb `ptype /o` of
//! `struct _gc_runtime_state` per version, checked live: walking the lists gives the count of
//! `gc.get_objects()`, and 3.14/3.15 `heap_size` equals the walk's count).

/// The GC state of one interpreter (`PyInterpreterState.gc`, `struct _gc_runtime_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcLayout {
    /// Offset of `gc` in `PyInterpreterState`.
    pub interp_gc: u64,
    /// List heads (`PyGC_Head`, 16 bytes) relative to `gc`: generation 0, 1, 2 (3.14+: young,
    /// old[0], old[1]) and the permanent generation (`gc.freeze`), walked in that order because
    /// objects only move young → old.
    pub heads: [u64; 4],
    /// `int collecting`: 1 while a collection runs (its lists are then private and `_gc_prev`
    /// holds `gc_refs`).
    pub collecting: u64,
    /// `PyGC_Head *generation0`, which always points at the first head: a cheap check that this
    /// entry fits the running interpreter.
    pub generation0: u64,
    /// `Py_ssize_t heap_size` (3.14+): the number of tracked objects, a coverage check.
    pub heap_size: Option<u64>,
    /// `tp_flags` bits whose objects carry a 16-byte pre-header before the GC head
    /// (3.11: `MANAGED_DICT`; 3.12+: also `MANAGED_WEAKREF`).
    pub preheader_flags: u64,
}

impl GcLayout {
    /// 3.10 to 3.13: `trash_delete_*`, `enabled`, `debug`, then `generations[3]`,
    /// `generation0`, `permanent_generation`, `generation_stats[3]`, `collecting`.
    pub const fn classic(interp_gc: u64, preheader_flags: u64) -> GcLayout {
        GcLayout {
            interp_gc,
            heads: [24, 48, 72, 104],
            collecting: 200,
            generation0: 96,
            heap_size: None,
            preheader_flags,
        }
    }
}

/// `_gc_prev` bit 1: the object belongs to a collection in progress.
pub const PREV_MASK_COLLECTING: u64 = 2;
/// Both GC-head words carry flag bits in their low two bits.
pub const PTR_MASK: u64 = !3;
