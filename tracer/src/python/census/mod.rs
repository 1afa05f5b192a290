//! The census: every GC-tracked object of a running CPython, counted by type, read from outside.
//!
//! The interpreter keeps every object that can take part in a reference cycle (instances of
//! classes, lists, dicts, tuples of objects, functions, frames, coroutines, exceptions, asyncio
//! handles, ...) on one of four doubly linked lists (`PyGC_Head` before each object: the three
//! generations and the permanent one). Walking those lists from outside is a complete census of
//! them, whoever holds the objects: a module, a frame, a task, a reference cycle nobody holds, a
//! C extension. Objects that are never tracked (str, int, float, bytes; tuples and dicts of only
//! those) are not on the lists and not counted. docs/cpython/census.md has the layouts.
//!
//! # A scan
//! `_PyRuntime` → main interpreter → `interp->gc` (checked: `generation0` must point at the first
//! head, or the scan stops with a reason). Wait (at most [`GC_WAIT`]) while a collection runs,
//! then walk each list from its head, reading through a [`blocks::NodeStore`] (each 64 KiB block read once, its nodes kept as small records). Every
//! node is checked before it is counted (§3.1 of the doc): `_gc_prev` points back at the node it
//! was reached from and has no COLLECTING bit, the refcount is plausible, `ob_type` is a valid
//! type object with `HAVE_GC` (the holders view's type checks, cached across scans).
//!
//! # Torn reads
//! The target runs while it is read, so a list can change under the walk. A failed node is
//! repaired (wait for the collector, flush the cache, re-read the node it was reached from live
//! and follow its fresh `_gc_next`) up to [`MAX_REPAIRS`] times per list; after that, or when that
//! node has left the list, the list is completed from its tail backwards until a node already
//! counted is met; when that fails too the rest of the list is dropped. Every repair, tail
//! completion and drop is counted in [`CensusStats`]. An object seen twice (it moved to an older
//! generation behind the walker) is counted once. All loops are bounded by steps.
//!
//! # Budget
//! A scan stops after [`CensusBudget::max_objects`] objects or `max_bytes` bytes read and says so
//! (`cut_by_budget`, and how many objects it skipped when the interpreter keeps a count).

mod blocks;
pub mod layout;
#[cfg(test)]
mod tests;
mod walk;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use layout::GcLayout;

use crate::python::heap::types::{TypeAddrs, TypeCache};
use crate::python::heap::{HeapLayout, RootKind};
use crate::python::pystr::StrLayout;
use crate::python::versions::Offsets;
use crate::remote::Memory;

/// Repairs of one list before it is completed from its tail.
pub const MAX_REPAIRS: u32 = 16;
/// Longest wait for a running collection to end, per scan.
pub const GC_WAIT: Duration = Duration::from_millis(200);

/// Limits for one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CensusBudget {
    pub max_objects: u64,
    pub max_bytes: u64,
    /// Largest block cache (the tracer's own memory for a scan).
    pub cache_bytes: usize,
}

impl Default for CensusBudget {
    fn default() -> Self {
        CensusBudget { max_objects: 2_000_000, max_bytes: 1 << 30, cache_bytes: 64 << 20 }
    }
}

/// Live objects of one type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeCount {
    pub count: u64,
    /// Estimate: GC head, pre-header, `tp_basicsize`, `tp_itemsize` × length, a list's item
    /// array. Not what the objects keep alive.
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CensusStats {
    /// Tracked objects counted (each once).
    pub objects: u64,
    pub bytes_read: u64,
    /// Read requests made (one `process_vm_readv` each).
    pub reads: u64,
    pub duration_s: f64,
    /// Nodes that failed a check and were repaired by a fresh read.
    pub torn_repaired: u64,
    /// Lists finished from their tail backwards.
    pub tail_completions: u64,
    /// Lists whose rest was dropped (neither repair nor the tail worked).
    pub torn_dropped: u64,
    /// Objects met twice (moved to an older list behind the walker).
    pub duplicates: u64,
    /// Times the walk waited for a running collection.
    pub gc_waits: u64,
    pub cut_by_budget: bool,
    /// The interpreter's own count of tracked objects (3.14+), read before the walk.
    pub heap_size: Option<u64>,
}

/// One scan's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    /// By `tp_name`.
    pub by_type: BTreeMap<String, TypeCount>,
    /// By `tp_name`: addresses of its newest objects (the last met in the youngest list
    /// holding that type), newest last.
    pub newest: BTreeMap<String, Vec<u64>>,
    pub stats: CensusStats,
    /// Why nothing could be counted (layout mismatch, unreadable runtime), if so.
    pub error: Option<String>,
    /// Objects that start paths of the holders view: coroutines, generators, event loops and
    /// asyncio tasks, with their kind.
    pub roots: Vec<(u64, RootKind)>,
}

/// The census reader of one process. Keeps a type cache across scans.
pub struct CensusReader {
    mem: Box<dyn Memory + Send>,
    gc: GcLayout,
    heap: HeapLayout,
    strs: StrLayout,
    types: TypeAddrs,
    runtime_addr: u64,
    type_cache: TypeCache,
    known: walk::KnownTypes,
}

impl CensusReader {
    pub fn new(mem: impl Memory + Send + 'static, offsets: &Offsets, types: TypeAddrs, runtime_addr: u64) -> Self {
        CensusReader {
            mem: Box::new(mem),
            gc: offsets.gc,
            heap: offsets.heap.clone(),
            strs: offsets.str,
            types,
            runtime_addr,
            type_cache: TypeCache::default(),
            known: walk::KnownTypes::default(),
        }
    }

    /// One census of every tracked object (see the module docs).
    pub fn scan(&mut self, budget: &CensusBudget) -> Census {
        let t0 = Instant::now();
        self.type_cache.next_generation();
        let mut w = walk::Walk::new(
            &*self.mem,
            &self.gc,
            &self.heap,
            self.strs,
            &self.types,
            (&mut self.type_cache, &mut self.known),
            *budget,
        );
        let error = w.run(self.runtime_addr).err();
        let mut census = w.finish();
        census.error = error;
        census.stats.duration_s = t0.elapsed().as_secs_f64();
        census
    }
}
