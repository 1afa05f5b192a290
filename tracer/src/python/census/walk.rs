//! One census scan: the walk of the four GC lists with its checks and its repair ladder
//! (module docs of `census`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::blocks::{Lookup, NodeStore, Rec, BLOCK};
use super::layout::{GcLayout, PREV_MASK_COLLECTING, PTR_MASK};
use super::{Census, CensusBudget, CensusStats, TypeCount, GC_WAIT, MAX_REPAIRS};
use crate::python::addrs::{AddrMap, AddrSet};
use crate::python::heap::types::{Kind, TypeAddrs, TypeCache, TPFLAGS_HAVE_GC};
use crate::python::heap::{plausible_ptr, HeapLayout, RootKind, Scan, ScanBudget};
use crate::python::pystr::StrLayout;
use crate::remote::{le_u32, le_u64, Memory};

/// Bytes read per node: `_gc_next`, `_gc_prev`, then the object's refcount, type, `ob_size`
/// (variable-size objects) and, for lists, `allocated` (object + 32).
pub(super) const NODE: usize = 56;
/// Types first met while extracting a block's nodes that may be checked per scan (random words
/// at a type's position must not cost a read each without bound); beyond, the block is marked
/// partial and its other positions are read live when asked for.
const MAX_EXTRACT_VALIDATIONS: u32 = 4096;
/// Larger lengths are not lengths (a pointer, or a torn word).
const MAX_ITEMS: u64 = 1 << 28;
/// Fewest steps allowed per list; beyond, 2 × the objects budget.
const MIN_STEPS: u64 = 1_000_000;
/// Words judged not to be types kept across scans at most (then forgotten).
const MAX_KNOWN_INVALID: usize = 200_000;

/// What earlier scans learnt about type addresses. A word once judged not a type is not
/// checked again while extracting a block (the block is marked partial instead, so a node with
/// that type would be read live); the valid ones are re-checked at the start of each scan.
#[derive(Default)]
pub(super) struct KnownTypes {
    valid: Vec<u64>,
    invalid: AddrSet,
}

/// Newest objects kept per type (their origins are read for growing types).
pub(super) const NEWEST: usize = 3;

/// A node read and checked: where it leads and what it is.
#[derive(Debug, Clone, Copy)]
struct Node {
    next: u64,
    prev: u64,
    ty: usize,
    bytes: u64,
}

/// What the census needs of a type, per scan.
struct Row {
    name: String,
    basicsize: u64,
    itemsize: u64,
    pre: u64,
    list: bool,
    /// Objects of this type start paths of the holders view (coroutines, event loops, ...).
    root: Option<RootKind>,
}

pub(super) struct Walk<'a> {
    cache: NodeStore<'a>,
    scan: Scan<'a>,
    gc: &'a GcLayout,
    heap: &'a HeapLayout,
    budget: CensusBudget,
    /// Type address → row in `rows` (`None`: not a valid GC type).
    type_rows: AddrMap<Option<usize>>,
    rows: Vec<Row>,
    counts: Vec<TypeCount>,
    roots: Vec<(u64, RootKind)>,
    /// Per row: the youngest list it was met in, and its last objects there (the newest).
    row_gen: Vec<u8>,
    newest: Vec<Vec<u64>>,
    gen: u8,
    validations_left: u32,
    /// Type addresses judged in earlier scans.
    known: &'a mut KnownTypes,
    /// Nodes read live because the store could not tell (debug figures).
    live_lookups: u64,
    partial_blocks: u64,
    stats: CensusStats,
    collecting_at: u64,
    heads: [u64; 4],
    waited: Duration,
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        mem: &'a dyn Memory,
        gc: &'a GcLayout,
        heap: &'a HeapLayout,
        strs: StrLayout,
        types: &'a TypeAddrs,
        (type_cache, known): (&'a mut TypeCache, &'a mut KnownTypes),
        budget: CensusBudget,
    ) -> Self {
        let type_budget = ScanBudget { max_objects: usize::MAX, max_bytes: 256 << 20, max_depth: 0 };
        Walk {
            cache: NodeStore::new(mem, budget.cache_bytes),
            scan: Scan::new(mem, heap, strs, types, type_cache, type_budget),
            gc,
            heap,
            budget,
            type_rows: AddrMap::default(),
            rows: Vec::new(),
            counts: Vec::new(),
            roots: Vec::new(),
            row_gen: Vec::new(),
            newest: Vec::new(),
            gen: 0,
            validations_left: MAX_EXTRACT_VALIDATIONS,
            known,
            live_lookups: 0,
            partial_blocks: 0,
            stats: CensusStats::default(),
            collecting_at: 0,
            heads: [0; 4],
            waited: Duration::ZERO,
        }
    }

    /// Finds the GC state, then walks the four lists in order.
    pub(super) fn run(&mut self, runtime_addr: u64) -> Result<(), String> {
        let word = |c: &mut NodeStore, a: u64| c.read_live(a, 8).map(|b| le_u64(&b, 0));
        let interp = word(&mut self.cache, runtime_addr + self.heap.runtime_interp_main).unwrap_or(0);
        if !plausible_ptr(interp) {
            return Err("the main interpreter could not be read".into());
        }
        let gc = interp + self.gc.interp_gc;
        let gen0 = word(&mut self.cache, gc + self.gc.generation0).unwrap_or(0);
        if gen0 != gc + self.gc.heads[0] {
            return Err(format!("the GC state of this interpreter is not where expected (generation0 {gen0:#x})"));
        }
        self.collecting_at = gc + self.gc.collecting;
        self.heads = self.gc.heads.map(|h| gc + h);
        self.stats.heap_size = self.gc.heap_size.and_then(|o| word(&mut self.cache, gc + o));
        // The types of the last scan, re-checked in one batch: blocks are then judged whole.
        let valid = std::mem::take(&mut self.known.valid);
        self.scan.resolve_types(&valid);
        for t in valid {
            self.type_row(t);
        }
        for (g, head) in self.heads.into_iter().enumerate() {
            self.gen = g as u8;
            if !self.walk_list(head) {
                break;
            }
        }
        Ok(())
    }

    /// Walks one list from its head; `false` when the budget ran out.
    fn walk_list(&mut self, head: u64) -> bool {
        self.wait_collector();
        let Some(first) = self.cache.read_live(head, 16).map(|b| le_u64(&b, 0) & PTR_MASK) else {
            self.stats.torn_dropped += 1;
            return true;
        };
        let (mut prev, mut cur) = (head, first);
        let (mut repairs, mut steps) = (0u32, 0u64);
        let max_steps = MIN_STEPS.max(self.budget.max_objects.saturating_mul(2));
        loop {
            if cur == head {
                // A stale cached block can show an old tail: the end counts only when the last
                // node, read live, still ends the list.
                match self.live_next(prev, head) {
                    Some(next) if next != head && repairs < MAX_REPAIRS => {
                        repairs += 1;
                        self.stats.torn_repaired += 1;
                        cur = next;
                    }
                    _ => return true,
                }
            }
            if !self.budget_left() {
                self.stats.cut_by_budget = true;
                return false;
            }
            steps += 1;
            let other_head = self.heads.contains(&cur);
            match self.node(cur, prev).filter(|_| !other_head && steps <= max_steps) {
                Some(n) => {
                    self.count(cur, &n);
                    (prev, cur) = (cur, n.next);
                }
                None if repairs < MAX_REPAIRS && steps <= max_steps => {
                    repairs += 1;
                    match self.repair(prev, head) {
                        Some(next) => cur = next,
                        None => return self.complete_from_tail(head),
                    }
                }
                None => return self.complete_from_tail(head),
            }
        }
    }

    /// `_gc_next` of `node` (or of the head) read live, if `node` is still a sane node.
    fn live_next(&mut self, node: u64, head: u64) -> Option<u64> {
        if node == head {
            return self.cache.read_live(head, 16).map(|b| le_u64(&b, 0) & PTR_MASK);
        }
        let b = self.cache.read_live(node, NODE)?;
        self.check(&b).map(|n| n.next)
    }

    /// The node at `cur`, reached from `prev`, if every check passes.
    fn node(&mut self, cur: u64, prev: u64) -> Option<Node> {
        self.fetch(cur).filter(|n| n.prev == prev)
    }

    /// The node at `addr` from the store (its block read and its nodes extracted on first
    /// use), or read live where the store cannot tell.
    fn fetch(&mut self, addr: u64) -> Option<Node> {
        if !plausible_ptr(addr) {
            return None;
        }
        if self.cache.needs_load(addr) {
            self.load_block(addr);
        }
        match self.cache.lookup(addr) {
            Lookup::Node(r) => Some(Node { next: r.next, prev: r.prev, ty: r.ty as usize, bytes: u64::from(r.bytes) }),
            Lookup::NotANode => None,
            Lookup::Unknown => {
                self.live_lookups += 1;
                let b = self.cache.read_live(addr, NODE)?;
                self.check(&b)
            }
        }
    }

    /// Reads the block holding `addr` once and keeps every node in it that passes the checks.
    fn load_block(&mut self, addr: u64) {
        let raw = self.cache.read_block(addr, NODE);
        let mut partial = !raw.whole();
        let mut found = Vec::new();
        for pos in (0..BLOCK as usize).step_by(super::blocks::ALIGN as usize) {
            let Some(b) = raw.node(pos, NODE) else { continue };
            if !quick_node(b) {
                continue;
            }
            let t = le_u64(b, 24);
            if !self.type_rows.contains_key(&t) {
                if self.validations_left == 0 || self.known.invalid.contains(&t) {
                    partial = true;
                    continue;
                }
                self.validations_left -= 1;
            }
            if let Some(n) = self.check(b) {
                found.push((pos, Rec::new(n.next, n.prev, n.ty, n.bytes)));
            }
        }
        self.partial_blocks += u64::from(partial);
        self.cache.store(raw.base, found, partial);
    }

    /// The checks that do not depend on where a node was reached from.
    fn check(&mut self, b: &[u8]) -> Option<Node> {
        let (next, prev_word) = (le_u64(b, 0), le_u64(b, 8));
        if next & PTR_MASK == 0 || prev_word & PREV_MASK_COLLECTING != 0 {
            return None;
        }
        if !self.heap.refcnt_plausible(le_u64(b, 16)) {
            return None;
        }
        let ty = self.type_row(le_u64(b, 24))?;
        let row = &self.rows[ty];
        let mut bytes = 16 + row.pre + row.basicsize;
        // `ob_size` of variable-size objects; types with an item size but no `ob_size` there
        // (3.11+ frames) hold a pointer in that word, which is not a length.
        let len = (le_u64(b, 32) as i64).unsigned_abs();
        if row.itemsize > 0 && len < MAX_ITEMS {
            bytes += row.itemsize * len;
        }
        let allocated = le_u64(b, 48);
        if row.list && allocated < MAX_ITEMS {
            bytes += 8 * allocated;
        }
        Some(Node { next: next & PTR_MASK, prev: prev_word & PTR_MASK, ty, bytes })
    }

    /// The row of a valid GC type at `t`, read and checked on first sight in this scan.
    fn type_row(&mut self, t: u64) -> Option<usize> {
        if let Some(r) = self.type_rows.get(&t) {
            return *r;
        }
        let mut row = None;
        if plausible_ptr(t) {
            self.scan.resolve_types(&[t]);
            row = self.scan.type_info(t).filter(|i| i.flags & TPFLAGS_HAVE_GC != 0).map(|i| Row {
                name: i.name.to_string(),
                basicsize: i.basicsize,
                itemsize: i.itemsize,
                pre: if i.flags & self.gc.preheader_flags != 0 { 16 } else { 0 },
                list: i.kind == Kind::List,
                root: RootKind::of_type(&i.name),
            });
        }
        let idx = row.map(|r| {
            self.rows.push(r);
            self.counts.push(TypeCount::default());
            self.row_gen.push(u8::MAX);
            self.newest.push(Vec::new());
            self.rows.len() - 1
        });
        self.type_rows.insert(t, idx);
        idx
    }

    fn count(&mut self, addr: u64, n: &Node) {
        if !self.cache.mark_seen(addr) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.objects += 1;
        if let Some(k) = self.rows[n.ty].root {
            // `addr` is the GC head; the object follows it.
            self.roots.push((addr + 16, k));
        }
        let c = &mut self.counts[n.ty];
        c.count += 1;
        c.bytes += n.bytes;
        // Lists append at their tail: the last objects met in the youngest list are the newest.
        let g = &mut self.row_gen[n.ty];
        if *g == u8::MAX {
            *g = self.gen;
        }
        if *g == self.gen {
            let v = &mut self.newest[n.ty];
            if v.len() == NEWEST {
                v.remove(0);
            }
            // The object starts after its 16-byte GC head.
            v.push(addr + 16);
        }
    }

    /// After a failed node: wait for the collector, drop the stale cache, and take `prev`'s
    /// fresh `_gc_next` if `prev` is still a sane node (or the head).
    fn repair(&mut self, prev: u64, head: u64) -> Option<u64> {
        self.stats.torn_repaired += 1;
        self.wait_collector();
        self.cache.flush();
        self.live_next(prev, head)
    }

    /// Completes a list from its tail backwards until a node already counted is met; `false`
    /// when the budget ran out.
    fn complete_from_tail(&mut self, head: u64) -> bool {
        self.stats.tail_completions += 1;
        self.cache.flush();
        let Some(mut node) = self.cache.read_live(head, 16).map(|b| le_u64(&b, 8) & PTR_MASK) else {
            self.stats.torn_dropped += 1;
            return true;
        };
        let mut later = head;
        let max_steps = MIN_STEPS.max(self.budget.max_objects.saturating_mul(2));
        for _ in 0..max_steps {
            if node == head || self.cache.was_seen(node) {
                return true;
            }
            if !self.budget_left() {
                self.stats.cut_by_budget = true;
                return false;
            }
            match self.fetch(node).filter(|n| n.next == later) {
                Some(n) => {
                    self.count(node, &n);
                    (later, node) = (node, n.prev);
                }
                None => break,
            }
        }
        self.stats.torn_dropped += 1;
        true
    }

    /// Waits (within [`GC_WAIT`] per scan) while a collection runs.
    fn wait_collector(&mut self) {
        let mut counted = false;
        while self.waited < GC_WAIT {
            let busy = self.cache.read_live(self.collecting_at, 4).map(|b| le_u32(&b, 0) != 0).unwrap_or(false);
            if !busy {
                return;
            }
            if !counted {
                self.stats.gc_waits += 1;
                counted = true;
            }
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(2));
            self.waited += t.elapsed();
        }
    }

    fn budget_left(&self) -> bool {
        self.stats.objects < self.budget.max_objects && self.cache.bytes_read < self.budget.max_bytes
    }

    pub(super) fn finish(self) -> Census {
        log::debug!(
            "census: {} nodes read live, {} partial blocks, {} types checked in blocks",
            self.live_lookups,
            self.partial_blocks,
            MAX_EXTRACT_VALIDATIONS - self.validations_left
        );
        if self.known.invalid.len() > MAX_KNOWN_INVALID {
            self.known.invalid.clear();
        }
        for (&t, row) in &self.type_rows {
            match row {
                Some(_) => self.known.valid.push(t),
                None => {
                    self.known.invalid.insert(t);
                }
            }
        }
        let mut by_type: BTreeMap<String, TypeCount> = BTreeMap::new();
        let mut newest: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for ((row, c), addrs) in self.rows.iter().zip(&self.counts).zip(&self.newest) {
            if c.count > 0 {
                let v = newest.entry(row.name.clone()).or_default();
                v.extend(addrs);
                let cut = v.len().saturating_sub(NEWEST);
                v.drain(..cut);
                let e = by_type.entry(row.name.clone()).or_default();
                e.count += c.count;
                e.bytes += c.bytes;
            }
        }
        let mut stats = self.stats;
        stats.bytes_read = self.cache.bytes_read + self.scan.stats.bytes_read;
        stats.reads = self.cache.reads + self.scan.stats.reads;
        Census { by_type, newest, stats, error: None, roots: self.roots }
    }
}

/// Cheap checks on a position's first words before the full ones: both links plausible
/// pointers, no collection in progress, a plausible type pointer.
fn quick_node(b: &[u8]) -> bool {
    let (next, prev) = (le_u64(b, 0) & PTR_MASK, le_u64(b, 8));
    plausible_ptr(next)
        && prev & PREV_MASK_COLLECTING == 0
        && plausible_ptr(prev & PTR_MASK)
        && plausible_ptr(le_u64(b, 24))
}
