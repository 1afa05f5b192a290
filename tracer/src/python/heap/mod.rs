//! The holders view: reading a running CPython's live containers from outside and naming them.
//!
//! Everything here reads the target with `process_vm_readv` (through [`Memory::read_batch`]); the
//! target is never stopped and never written. Offsets and rules come from
//! `docs/cpython/containers.md` (cited below as "containers §N") and the string layout from
//! `docs/cpython/frames.md` ("Strings").
//!
//! # What a scan does
//! `_PyRuntime.interpreters.main` → `sys.modules` (containers §1.1). Every value of `sys.modules`
//! that is a module (type chain reaches `PyModule_Type`) is a root at depth 0, `__main__` first,
//! then by name; then the roots beyond modules (roots.rs: frames, coroutines, tasks, event loops).
//! Breadth-first, each hop adds one path component, with no depth limit of its own (the objects
//! and bytes budgets bound a scan):
//! * module globals (`md_dict`) → `mod.NAME`;
//! * class attributes (heap type → `tp_dict`) → `mod.Cls.NAME`;
//! * instance attributes (instance dict, 3.11 values, 3.12 tagged values, 3.13+ inline values,
//!   `__slots__` of heap types along the `tp_base` chain) → `mod.OBJ.NAME` (containers §3);
//! * closure cells of functions → `mod.FUNC<closure>.NAME`;
//! * dict values → `mod.REGISTRY["jobs"]` (`mod.SESSIONS[#3]`: the 4th entry, a key that is
//!   not a str);
//! * container items, C objects' reference fields (bound methods, partials, tracebacks,
//!   exceptions, asyncio futures and tasks, ...) and frame objects' locals (edges.rs).
//!
//! Objects are de-duplicated by address; within a BFS level the best path wins (`__main__` first,
//! then module order, then the shorter path, then the lexically smaller one), and an earlier level
//! always beats a later one (BFS ⇒ shortest path).
//!
//! # What is reported
//! list, dict and dict subclasses (OrderedDict, defaultdict, Counter, user subclasses), set, and
//! `collections.deque` (also list/set subclasses), with up to 64 sampled items for `item_types`.
//! Their items are followed too (up to [`edges::FOLLOW_ITEMS`] per container, the newest).
//!
//! # What is skipped, and why
//! * tuples and frozensets are not reported (they cannot grow), only followed;
//! * dunder names (`__x__`, including `__builtins__`, `__dict__`, `__module__`,
//!   `__warningregistry__`): interpreter plumbing, not program state;
//! * modules reached as attributes (`import os` → `__main__.os`): every module is scanned as a
//!   root under its own `sys.modules` name, and de-duplication keeps that name;
//! * static (non-heap) types' dicts: builtin methods only, and `NULL` on 3.12+ (containers §2.1);
//! * `sys.modules` values that are not modules (e.g. `None` for blocked imports).
//!   `sys.modules` itself stays visible as `sys.modules` (a dict that grows only when modules are
//!   imported, so it is a true statement, not a false positive).
//!
//! # Robustness
//! Every pointer is range-checked before it is read; every object read is checked (refcount
//! plausible, `ob_type` a valid type: readable, `Py_TPFLAGS_READY`, its own type `type` or a
//! metatype, sane sizes, `tp_base` chain resolving to `object`, subclass flag bits consistent with
//! the chain; containers §4). Multi-read structures are re-checked after the body was read
//! (dict: header pointers unchanged and live entries == `ma_used`; list: `ob_item`/`allocated`
//! unchanged; set: `table`/`mask` unchanged) and retried up to [`MAX_RETRIES`] times, then dropped
//! (counted in [`ScanStats::dropped`]). A list/set/deque whose sample stays torn is still reported
//! with its length (one word, read with a checked header) and empty `item_types`; a dict whose
//! keys/entries stay torn is left out of that scan (its length is only trusted with a sane keys
//! object). All loops are bounded; random bytes cannot make the scanner
//! panic or loop (see the property tests in tests.rs). Reads are batched per BFS level and per stage.
//!
//! # Where things are
//! This file: the scanner, one scan's reads under its budget ([`Scan`]), object headers and the
//! BFS level loop. layout.rs: the offsets per version. types.rs: type validation.
//! namespaces.rs: module, class and instance namespaces and dict entries. containers.rs: the
//! reported containers, per kind. closures.rs: closure cells. edges.rs: items and C fields.
//! roots.rs: roots beyond modules and frame locals. paths.rs: naming.

mod closures;
mod containers;
mod edges;
pub mod layout;
mod namespaces;
mod paths;
mod roots;
mod runner;
#[cfg(test)]
mod tests;
pub mod types;

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

/// A name read from the target (an attribute, key or local), shared rather than copied.
pub(crate) type Name = std::rc::Rc<str>;

pub use layout::HeapLayout;
pub use roots::{RootKind, RootLayout, RootName};
pub use types::TypeAddrs;

use crate::python::addrs::{AddrMap, AddrSet};
use crate::python::pystr::{self, StrLayout};
use crate::python::versions::Offsets;
use crate::remote::{le_u64, Demand, Memory, Snapshot};
use namespaces::{Attrs, NsMode, NsSource};
use paths::{module_name_ok, NameStyle, PathId, Paths, Seg};
use types::{Kind, TypeCache};

/// How many times a torn multi-read structure is read again before it is dropped.
pub const MAX_RETRIES: u32 = 3;
/// Items sampled per container for `item_types` and the size estimate.
pub const SAMPLE_ITEMS: usize = 64;
/// Item addresses kept per container for origins.
pub const NEWEST_ITEMS: usize = 8;

const MAX_REGION: usize = 4 << 20; // no single read is larger than this
/// The largest copy of the heap taken before a walk (remote/snapshot.rs); at most half the
/// byte budget too. Kept between scans: the tracer's resident size grows by as much.
const SNAPSHOT_MAX: u64 = 64 << 20;
const MAX_NS_ENTRIES: u64 = 1 << 16; // namespaces (module/class/instance dicts) bigger than this are skipped
const MAX_STR_CHARS: usize = 1024; // attribute/key names longer than this are not used
const MAX_TYPE_ROUNDS: usize = 48; // bound on dependent type-resolution rounds per call
const MAX_BASE_CHAIN: usize = 64; // bound on tp_base chains walked for __slots__
/// Bytes of each object read (after its pre-header): every header field used lies below.
const OBJ_READ: usize = 96;

pub(crate) fn plausible_ptr(p: u64) -> bool {
    (0x1_0000..0x7fff_ffff_f000).contains(&p) && p.is_multiple_of(8)
}

// ---------------------------------------------------------------------------------------------
// Public results
// ---------------------------------------------------------------------------------------------

/// Hops followed from a root by default: no limit of its own; the objects and bytes budgets
/// bound the cost (tests use small depths).
pub const DEFAULT_DEPTH: u32 = u32::MAX;

/// Limits for one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanBudget {
    pub max_objects: usize,
    /// Bytes copied out of the target (a live process's batched reads copy the gaps between
    /// close regions too: ~1.4x what is asked on a Tornado heap).
    pub max_bytes: usize,
    pub max_depth: u32,
}

impl Default for ScanBudget {
    fn default() -> Self {
        ScanBudget { max_objects: 200_000, max_bytes: 128 << 20, max_depth: DEFAULT_DEPTH }
    }
}

/// One live container and the path it was reached by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSample {
    /// Shared with the scans before that wrote the same path.
    pub path: Name,
    /// `tp_name` of the container's type (`list`, `dict`, `collections.deque`, `Counter`, ...),
    /// shared with the type cache.
    pub type_name: Name,
    pub len: u64,
    /// `tp_name` → count over up to [`SAMPLE_ITEMS`] sampled items (the newest: list/dict/deque
    /// tail, the first slots of a set's table). Empty when the sample was torn and dropped.
    pub item_types: ItemTypes,
    /// Estimate: the container's own allocation (list: header + `allocated`×8; dict: header +
    /// keys table + split values; set: header + (mask+1)×16 when not the inline table; deque:
    /// header + 528 B per 64-item block) plus `len` × the mean size of the sampled items
    /// (item `tp_basicsize` + GC/managed pre-headers + variable part: str/bytes/tuple/int length).
    /// Not a retained-size computation: items' own referents are not counted.
    pub retained_bytes_est: u64,
    /// Where its path starts (`module __main__`, `task audit_consumer()`, `event loop`).
    pub root: RootName,
    /// Addresses of up to [`NEWEST_ITEMS`] of its newest sampled items (list/deque tail, last
    /// dict values): where an origin reader starts to say where the items were made.
    pub newest_items: Vec<u64>,
}

/// `tp_name` → count, sorted by name: a few types per container, kept per container reached
/// (tens of thousands on a big service), so a small vector rather than a map's nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemTypes(Vec<(Name, u64)>);

impl ItemTypes {
    pub fn add(&mut self, name: &Name) {
        match self.0.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(i) => self.0[i].1 += 1,
            Err(i) => self.0.insert(i, (name.clone(), 1)),
        }
    }

    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&u64> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|i| &self.0[i].1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub fn values(&self) -> impl Iterator<Item = &u64> {
        self.0.iter().map(|(_, n)| n)
    }

    pub fn to_map(&self) -> BTreeMap<String, u64> {
        self.0.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }
}

impl FromIterator<(String, u64)> for ItemTypes {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(iter: I) -> Self {
        let mut v: Vec<(Name, u64)> = iter.into_iter().map(|(n, c)| (Name::from(n), c)).collect();
        v.sort();
        v.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
        ItemTypes(v)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanStats {
    /// Objects whose header was read and checked (not the `str`s and `int`s known as such by
    /// their type word in the copy of the heap: they hold nothing and are not read).
    pub objects_visited: u64,
    /// Bytes copied out of the target (see [`ScanBudget::max_bytes`]).
    pub bytes_read: u64,
    /// Remote read requests (regions), not syscalls.
    pub reads: u64,
    pub duration_s: f64,
    /// Multi-read structures read again because a re-check failed.
    pub torn_retried: u64,
    /// Structures given up after [`MAX_RETRIES`] or failing validation (objects, namespaces,
    /// container samples).
    pub dropped: u64,
    /// Bytes of the heap copied whole before the walk (part of `bytes_read`).
    pub snapshot_bytes: u64,
    pub cut_by_budget: bool,
    /// Items of containers not followed (past [`edges::FOLLOW_ITEMS`] per container).
    pub items_not_followed: u64,
}

// ---------------------------------------------------------------------------------------------
// Scanner
// ---------------------------------------------------------------------------------------------

/// The holders scanner. Keeps a type cache across scans.
pub struct HeapScanner {
    mem: Box<dyn Memory + Send>,
    layout: HeapLayout,
    strs: StrLayout,
    types: TypeAddrs,
    runtime_addr: u64,
    type_cache: TypeCache,
    roots: Option<RootLayout>,
    static_objects: std::ops::Range<u64>,
    /// Paths the last scan made: the next one reserves as many at once.
    paths_made: usize,
    /// What the last walk read where: which parts of the heap the next one copies first.
    demand: Demand,
    /// The last copy's buffer, reused.
    snapshot_buf: Vec<u8>,
    /// Coroutines the last scan found held by a thread's frame (named as their function).
    stack_held: AddrSet,
    /// The last scan's reported paths written out, by fingerprint.
    texts: PathTexts,
}

/// Reported containers' paths written out, by [`Paths::fingerprint`]: most are the same in
/// every scan (a service's tens of thousands of session dicts), so each is written once.
pub(crate) type PathTexts = std::collections::HashMap<u64, Name, foldhash::fast::RandomState>;

impl HeapScanner {
    /// A scanner of the process whose memory is `mem`, an interpreter with these `offsets`,
    /// exported `types` and `_PyRuntime` at `runtime_addr`.
    pub fn new(mem: impl Memory + Send + 'static, offsets: &Offsets, types: TypeAddrs, runtime_addr: u64) -> Self {
        HeapScanner {
            mem: Box::new(mem),
            layout: offsets.heap.clone(),
            strs: offsets.str,
            types,
            runtime_addr,
            type_cache: TypeCache::default(),
            roots: RootLayout::of(offsets),
            static_objects: 0..0,
            paths_made: 0,
            demand: Demand::default(),
            snapshot_buf: Vec::new(),
            stack_held: AddrSet::default(),
            texts: PathTexts::default(),
        }
    }

    /// Objects in `range` (the interpreter's own image: static types, small ints, `True`,
    /// singletons, static strings) are never containers nor hold any: the walk does not read
    /// them.
    pub fn with_static_objects(mut self, range: std::ops::Range<u64>) -> Self {
        self.static_objects = range;
        self
    }

    /// One scan of every container reachable from `sys.modules`, the threads' frames and
    /// `found` (coroutines, generators, event loops and tasks the census met; see the module
    /// docs). Output is sorted by path; each address appears once.
    pub fn scan(&mut self, budget: &ScanBudget, found: &[(u64, RootKind)]) -> (Vec<ContainerSample>, ScanStats) {
        let t0 = Instant::now();
        self.type_cache.next_generation();
        let copied_at_start = self.mem.bytes_copied();
        let cap = SNAPSHOT_MAX.min(budget.max_bytes as u64 / 2);
        let parts = self.demand.dense_parts(&self.mem.writable_mappings(), cap);
        let snap = Snapshot::take(&*self.mem, &parts, std::mem::take(&mut self.snapshot_buf));
        let mut scan = Scan::new(&snap, &self.layout, self.strs, &self.types, &mut self.type_cache, *budget);
        scan.static_objects = self.static_objects.clone();
        scan.stack_held_before = std::mem::take(&mut self.stack_held);
        scan.texts_before = std::mem::take(&mut self.texts);
        scan.copied_at_start = copied_at_start;
        scan.stats.snapshot_bytes = snap.copied();
        scan.stats.bytes_read = snap.copied();
        scan.paths = Paths::with_capacity(self.paths_made);
        let mut out = scan.walk_from_roots(self.runtime_addr, self.roots.as_ref(), found);
        self.paths_made = scan.paths.made();
        self.stack_held = std::mem::take(&mut scan.stack_held);
        self.texts = std::mem::take(&mut scan.texts);
        let mut stats = scan.stats;
        (self.demand, self.snapshot_buf) = snap.finish();
        // In place: tens of thousands of samples, no scratch copy of them.
        out.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        stats.duration_s = t0.elapsed().as_secs_f64();
        (out, stats)
    }
}

/// One scan's view of the target: its memory read in batches under the budget (every read
/// counted), the interpreter's layout and exported types, the type cache kept across scans, and
/// this scan's strings. The readers of each concern (types.rs, namespaces.rs, containers.rs,
/// closures.rs) are its methods, so a walker that finds objects another way can use them too.
pub(crate) struct Scan<'a> {
    mem: &'a dyn Memory,
    layout: &'a HeapLayout,
    strs: StrLayout,
    types: &'a TypeAddrs,
    type_cache: &'a mut TypeCache,
    budget: ScanBudget,
    pub(crate) stats: ScanStats,
    /// `str` objects read in this scan, by address (names shared by every path they are in).
    str_cache: AddrMap<Option<Name>>,
    /// Where each path starts, by rank.
    roots: Vec<RootName>,
    /// Where frames keep their locals (frame objects met in the walk too).
    root_layout: Option<RootLayout>,
    /// Not read by the walk ([`HeapScanner::with_static_objects`]).
    static_objects: std::ops::Range<u64>,
    /// Coroutines the last scan found held by a thread's frame, and those this scan finds.
    stack_held_before: AddrSet,
    pub(crate) stack_held: AddrSet,
    /// The paths of this scan's nodes.
    pub(crate) paths: Paths,
    /// Reported paths written out by the last scan, and by this one.
    texts_before: PathTexts,
    texts: PathTexts,
    /// `mem`'s count of bytes copied when the walk began: `bytes_read` is then what was copied
    /// (set by the walk alone, whose memory no other reader shares).
    copied_at_start: Option<u64>,
    /// Every read goes to the target as it is now (the roots, a torn structure's retry), none to a copy.
    live_reads: bool,
}

/// A reached object and the path it was reached by.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) addr: u64,
    pub(crate) path: PathId,
    /// Hops since its module.
    pub(crate) depth: u32,
    /// Its module's position (`__main__` first, then by name): lower wins a tie.
    pub(crate) rank: usize,
    pub(crate) parent: Parent,
}

/// What kind of namespace a node was found in (the traversal rules differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parent {
    SysModules,
    ModuleGlobals,
    /// A root beyond modules (an event loop): its attributes are named `root → name`.
    Root,
    Other,
}

/// A reported container's sample taken from the reads that followed its items (a dict's
/// entries, a list's, set's or deque's body), so it is not read twice.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    /// Its length as the re-checked read saw it.
    pub(crate) len: u64,
    /// Up to [`SAMPLE_ITEMS`] items, in the order sampling gives them.
    pub(crate) items: Vec<u64>,
    /// A dict's keys table and split values (0 for the others).
    pub(crate) table_bytes: u64,
}

/// An object whose header passed the checks.
pub(crate) struct Obj {
    pub(crate) node: Node,
    /// `pre_header` bytes before the object, then [`OBJ_READ`] bytes of the object.
    bytes: Bytes,
    pre: usize,
    pub(crate) ty: u64,
}

impl Obj {
    /// The word at `off` in the object.
    pub(crate) fn w(&self, off: u64) -> u64 {
        le_u64(&self.bytes, self.pre + off as usize)
    }

    /// Word at obj − `back` (pre-header).
    fn pre_w(&self, back: u64) -> u64 {
        if back as usize > self.pre {
            return 0;
        }
        le_u64(&self.bytes, self.pre - back as usize)
    }
}

impl<'a> Scan<'a> {
    pub(crate) fn new(
        mem: &'a dyn Memory,
        layout: &'a HeapLayout,
        strs: StrLayout,
        types: &'a TypeAddrs,
        type_cache: &'a mut TypeCache,
        budget: ScanBudget,
    ) -> Self {
        Scan {
            mem,
            layout,
            strs,
            types,
            type_cache,
            budget,
            stats: ScanStats::default(),
            str_cache: AddrMap::default(),
            roots: Vec::new(),
            root_layout: None,
            static_objects: 0..0,
            stack_held_before: AddrSet::default(),
            stack_held: AddrSet::default(),
            paths: Paths::default(),
            texts_before: PathTexts::default(),
            texts: PathTexts::default(),
            copied_at_start: None,
            live_reads: false,
        }
    }

    /// Reads regions in one batch. A region that is empty, too large, outside user space or past
    /// the byte budget is not read (`None`), nor is a short read accepted.
    fn batch(&mut self, regions: &[(u64, usize)]) -> Vec<Option<Bytes>> {
        self.batch_from(regions, self.live_reads)
    }

    /// [`Scan::batch`] from the target as it is now, never from the copy taken before the walk:
    /// the re-read that proves a structure was not changed while it was read.
    fn batch_live(&mut self, regions: &[(u64, usize)]) -> Vec<Option<Bytes>> {
        self.batch_from(regions, true)
    }

    /// Runs `f` with every read going live when `live` (or when it already was).
    fn reading_live<T>(&mut self, live: bool, f: impl FnOnce(&mut Self) -> T) -> T {
        let was = self.live_reads;
        self.live_reads = was || live;
        let out = f(self);
        self.live_reads = was;
        out
    }

    fn batch_from(&mut self, regions: &[(u64, usize)], live: bool) -> Vec<Option<Bytes>> {
        let mut out: Vec<Option<Bytes>> = vec![None; regions.len()];
        let mut idx = Vec::new();
        let mut req = Vec::new();
        let mut total = self.stats.bytes_read as usize;
        for (i, &(a, l)) in regions.iter().enumerate() {
            if l == 0 || l > MAX_REGION || a < 0x1_0000 || a.checked_add(l as u64).is_none_or(|e| e > 0x7fff_ffff_f000)
            {
                continue;
            }
            if total + l > self.budget.max_bytes {
                self.stats.cut_by_budget = true;
                continue;
            }
            total += l;
            idx.push(i);
            req.push((a, l));
        }
        if req.is_empty() {
            return out;
        }
        self.stats.reads += req.len() as u64;
        let asked: u64 = req.iter().map(|r| r.1 as u64).sum();
        let got = if live { self.mem.read_batch_live(&req) } else { self.mem.read_batch(&req) };
        // What was copied, the gaps between close regions included, when the memory counts it.
        self.stats.bytes_read = match (self.copied_at_start, self.mem.bytes_copied()) {
            (Some(start), Some(now)) => now.saturating_sub(start),
            _ => self.stats.bytes_read + asked,
        };
        for (k, r) in got.into_iter().enumerate() {
            if let Some(&i) = idx.get(k) {
                out[i] = r.filter(|b| b.len() == regions[i].1);
            }
        }
        out
    }

    /// A `str` or `int` by the type word in the copy of the heap: it holds nothing, so the walk
    /// neither reads nor counts it (a third of what a service's containers hold).
    fn is_leaf(&self, addr: u64) -> bool {
        self.mem.copied_u64(addr.wrapping_add(8)).is_some_and(|t| t == self.types.unicode || t == self.types.long)
    }

    fn budget_left(&self) -> bool {
        !self.stats.cut_by_budget
            && (self.stats.objects_visited as usize) < self.budget.max_objects
            && (self.stats.bytes_read as usize) < self.budget.max_bytes
    }

    /// Reads `str` objects (exact `PyUnicode_Type`, compact) into Rust strings; `None` if not one.
    /// One batch of headers (with the characters of short strings), one of the longer strings'
    /// characters.
    fn read_strs(&mut self, ptrs: &[u64]) -> Vec<Option<Name>> {
        let l = self.layout;
        let mut todo: Vec<u64> =
            ptrs.iter().copied().filter(|p| plausible_ptr(*p) && !self.str_cache.contains_key(p)).collect();
        todo.sort_unstable();
        todo.dedup();
        let first = 64usize;
        let got = self.batch(&todo.iter().map(|&p| (p, first)).collect::<Vec<_>>());
        let mut more = Vec::new();
        for (&p, b) in todo.iter().zip(got) {
            let header = b.and_then(|b| {
                let is_str = l.refcnt_plausible(le_u64(&b, 0)) && le_u64(&b, 8) == self.types.unicode;
                Some((pystr::StrHeader::parse(&b, MAX_STR_CHARS).filter(|_| is_str)?, b))
            });
            let Some((h, b)) = header else {
                self.str_cache.insert(p, None);
                continue;
            };
            let (start, len) = self.strs.data(&h);
            match b.get(start as usize..).filter(|d| d.len() >= len) {
                Some(data) => {
                    self.str_cache.insert(p, pystr::decode(h.state, h.length, data).map(Name::from));
                }
                None => more.push((p, h, start, len)),
            }
        }
        if !more.is_empty() {
            let regions: Vec<(u64, usize)> = more.iter().map(|&(p, _, start, len)| (p + start, len)).collect();
            let got = self.batch(&regions);
            for (&(p, h, _, _), b) in more.iter().zip(got) {
                self.str_cache.insert(p, b.and_then(|b| pystr::decode(h.state, h.length, &b)).map(Name::from));
            }
        }
        ptrs.iter().map(|p| self.str_cache.get(p).cloned().flatten()).collect()
    }

    /// Reads and checks object headers; returns those whose type is valid.
    pub(crate) fn read_objects(&mut self, nodes: Vec<Node>) -> Vec<Obj> {
        let pre = self.layout.pre_header as usize;
        let regions: Vec<(u64, usize)> =
            nodes.iter().map(|n| (n.addr.wrapping_sub(pre as u64), pre + OBJ_READ)).collect();
        let got = self.batch(&regions);
        self.stats.objects_visited += nodes.len() as u64;
        let mut objs = Vec::new();
        for (n, b) in nodes.into_iter().zip(got) {
            let Some(b) = b else {
                self.stats.dropped += 1;
                continue;
            };
            if !self.layout.refcnt_plausible(le_u64(&b, pre)) {
                self.stats.dropped += 1;
                continue;
            }
            let ty = le_u64(&b, pre + 8);
            objs.push(Obj { node: n, bytes: b, pre, ty });
        }
        let tys: Vec<u64> = objs.iter().map(|o| o.ty).collect();
        self.resolve_types(&tys);
        let before = objs.len();
        objs.retain(|o| self.type_info(o.ty).is_some());
        self.stats.dropped += (before - objs.len()) as u64;
        objs
    }

    // ----- the walk -----

    /// Every module, then the roots beyond modules (roots.rs), breadth-first to `max_depth`
    /// hops: a frame's locals are one hop from their frame.
    fn walk_from_roots(
        &mut self,
        runtime_addr: u64,
        rl: Option<&RootLayout>,
        found: &[(u64, RootKind)],
    ) -> Vec<ContainerSample> {
        let mut frontier = self.module_roots(runtime_addr);
        self.roots =
            frontier.iter().map(|n| RootName { kind: "module", name: self.paths.text(n.path).into() }).collect();
        let mut later = Vec::new();
        self.root_layout = rl.copied();
        if let Some(rl) = rl {
            let mut names = std::mem::take(&mut self.roots);
            // Live: a thread's stack changes with every call, so a copy of it taken apart from
            // its thread state's frame pointer would seldom agree with it.
            let (level0, level1) = self.reading_live(true, |s| s.frame_roots(rl, runtime_addr, found, &mut names));
            self.roots = names;
            frontier.extend(level0);
            later = level1;
        }
        self.walk(frontier, later)
    }

    /// Runtime → main interpreter → `sys.modules` (containers §1.1): every module, `__main__`
    /// first, then by name.
    fn module_roots(&mut self, runtime_addr: u64) -> Vec<Node> {
        let l = self.layout;
        let got = self.batch(&[(runtime_addr + l.runtime_interp_main, 8)]);
        let interp = got[0].as_ref().map(|b| le_u64(b, 0)).unwrap_or(0);
        if !plausible_ptr(interp) {
            self.stats.dropped += 1;
            return Vec::new();
        }
        let got = self.batch(&[(interp + l.interp_modules, 8)]);
        let modules = got[0].as_ref().map(|b| le_u64(b, 0)).unwrap_or(0);
        let r = self.read_namespaces(&[(NsSource::Dict(modules), NsMode::Full)]);
        let Some(Some(mods)) = r.into_iter().next() else { return Vec::new() };
        let mut roots: Vec<(Name, u64)> = mods
            .entries
            .into_iter()
            .filter_map(|(n, v)| n.filter(|n| module_name_ok(n) && !runner::is_runner_module(n)).map(|n| (n, v)))
            .collect();
        roots.sort_by(|a, b| (&*a.0 != "__main__", &a.0).cmp(&(&*b.0 != "__main__", &b.0)));
        roots
            .into_iter()
            .enumerate()
            .map(|(rank, (name, addr))| Node {
                addr,
                path: self.paths.root(name),
                depth: 0,
                rank,
                parent: Parent::SysModules,
            })
            .collect()
    }

    /// Breadth-first from `frontier` (`later` joins the second level): each level's objects are
    /// read together, and an object is visited once, by the best path of the earliest level that
    /// reaches it.
    fn walk(&mut self, mut frontier: Vec<Node>, mut later: Vec<Node>) -> Vec<ContainerSample> {
        let mut out = Vec::new();
        let mut visited = AddrSet::default();
        visited.insert(self.types.none);
        for _depth in 0..=self.budget.max_depth {
            if frontier.is_empty() || !self.budget_left() {
                if !frontier.is_empty() {
                    self.stats.cut_by_budget = true;
                }
                break;
            }
            // Dedup: earlier levels win; within a level the best (rank, len, path).
            frontier.retain(|n| {
                plausible_ptr(n.addr)
                    && !visited.contains(&n.addr)
                    && !self.static_objects.contains(&n.addr)
                    && !self.is_leaf(n.addr)
            });
            let paths = &self.paths;
            frontier = best_of_each_address(frontier, paths);
            let room = self.budget.max_objects.saturating_sub(self.stats.objects_visited as usize);
            if frontier.len() > room {
                frontier.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| paths.cmp(a.path, b.path)));
                frontier.truncate(room);
                self.stats.cut_by_budget = true;
            }
            for n in &frontier {
                visited.insert(n.addr);
            }
            let objs = self.read_objects(std::mem::take(&mut frontier));
            frontier = self.process_level(objs, &mut out);
            frontier.append(&mut later);
        }
        out
    }

    /// Classifies one BFS level's objects, reports containers, and returns the next level.
    fn process_level(&mut self, objs: Vec<Obj>, out: &mut Vec<ContainerSample>) -> Vec<Node> {
        let objs = self.without_runner_objects(objs);
        let mut level = Level::default();
        let mut found = self.classify(objs, &mut level);
        self.class_attributes(std::mem::take(&mut found.types), &mut level);
        self.instance_attributes(&found.instances, &mut level);
        self.dict_values(&found.containers, &mut level);
        self.function_attributes(&found.funcs, &mut level);
        let closures = self.closure_children(&found.funcs);
        level.next.extend(closures);
        let mut samples = AddrMap::default();
        self.follow_edges(&found, &mut level, &mut samples);
        self.name_children(&mut level, &mut samples);
        out.extend(self.sample_containers(found.containers, samples));
        level.next
    }

    /// Sorts a level's objects by what is done with them; a module's globals become a
    /// namespace to read.
    fn classify(&self, objs: Vec<Obj>, level: &mut Level) -> Found {
        let l = self.layout;
        let maxd = self.budget.max_depth;
        let mut found = Found::default();
        for o in objs {
            let Some(kind) = self.type_info(o.ty).map(|ti| ti.kind) else { continue };
            let below = o.node.depth < maxd;
            if o.node.parent == Parent::SysModules {
                if kind == Kind::Module {
                    let md = o.w(l.module_dict);
                    if plausible_ptr(md) {
                        level.namespace(NsSource::Dict(md), Owner::of(&o.node, NameStyle::Attr, Parent::ModuleGlobals));
                    }
                }
                continue;
            }
            match kind {
                Kind::List | Kind::Dict | Kind::Set | Kind::Deque => found.containers.push((o, kind)),
                Kind::Tuple | Kind::FrozenSet if below => found.immutables.push((o, kind)),
                Kind::Type if below => found.types.push(o),
                Kind::Function if below => found.funcs.push(o),
                Kind::Other if below => found.instances.push(o),
                // A cell (a frame's captured local) is see-through: its content keeps the path.
                Kind::Cell if below => level.next.push(Node {
                    addr: o.w(l.cell_ref),
                    path: o.node.path,
                    depth: o.node.depth + 1,
                    rank: o.node.rank,
                    parent: o.node.parent,
                }),
                _ => {}
            }
        }
        found
    }

    /// Class attributes: the object is itself a type; heap types' `tp_dict` (static types' dicts
    /// hold builtin methods only).
    fn class_attributes(&mut self, types: Vec<Obj>, level: &mut Level) {
        let addrs: Vec<u64> = types.iter().map(|o| o.node.addr).collect();
        self.resolve_types(&addrs);
        for o in types {
            if let Some(ti) = self.type_info(o.node.addr) {
                if ti.heap() && plausible_ptr(ti.dict) {
                    level.namespace(NsSource::Dict(ti.dict), Owner::of(&o.node, NameStyle::Attr, Parent::Other));
                }
            }
        }
    }

    /// Instance attributes (containers §3) and `__slots__`.
    fn instance_attributes(&mut self, instances: &[Obj], level: &mut Level) {
        let tys: Vec<u64> = instances.iter().map(|o| o.ty).collect();
        self.resolve_slots(&tys);
        // (address of a slot, its path, depth, rank)
        let mut slot_reads: Vec<(u64, PathId, u32, usize)> = Vec::new();
        // (address of a dict pointer, instance index)
        let mut word_reads: Vec<(u64, usize)> = Vec::new();
        // Each type's `__slots__` names, made once per level rather than once per instance.
        let mut slots_of: AddrMap<std::rc::Rc<[(Name, u64)]>> = AddrMap::default();
        for (k, o) in instances.iter().enumerate() {
            let Some(ti) = self.type_info(o.ty) else { continue };
            match self.instance_attrs(o, ti) {
                Attrs::At(src) => level.namespace(src, Owner::of(&o.node, NameStyle::Attr, Parent::Other)),
                Attrs::DictPointerAt(addr) => word_reads.push((addr, k)),
                Attrs::None => {}
            }
            if ti.slots.as_ref().is_none_or(|s| s.is_empty()) {
                continue;
            }
            let slots = slots_of
                .entry(o.ty)
                .or_insert_with(|| ti.slots.iter().flatten().map(|(n, off)| (Name::from(n.as_str()), *off)).collect())
                .clone();
            let style = Owner::style_under(&o.node, NameStyle::Attr);
            for (name, off) in slots.iter() {
                let Some(path) = self.paths.named(o.node.path, name, style) else { continue };
                slot_reads.push((o.node.addr + off, path, o.node.depth + 1, o.node.rank));
            }
        }
        if !word_reads.is_empty() {
            let regions: Vec<(u64, usize)> = word_reads.iter().map(|&(a, _)| (a, 8)).collect();
            for (&(_, k), b) in word_reads.iter().zip(self.batch(&regions)) {
                let dict = b.map(|b| le_u64(&b, 0)).unwrap_or(0);
                if dict != 0 {
                    level
                        .namespace(NsSource::Dict(dict), Owner::of(&instances[k].node, NameStyle::Attr, Parent::Other));
                }
            }
        }
        if !slot_reads.is_empty() {
            let regions: Vec<(u64, usize)> = slot_reads.iter().map(|s| (s.0, 8)).collect();
            for ((_, path, depth, rank), b) in slot_reads.into_iter().zip(self.batch(&regions)) {
                let v = b.map(|b| le_u64(&b, 0)).unwrap_or(0);
                if v != 0 {
                    level.next.push(Node { addr: v, path, depth, rank, parent: Parent::Other });
                }
            }
        }
    }

    /// Dict values: all of a dict with at most [`edges::FOLLOW_ITEMS`] entries, by key
    /// (`mod.REGISTRY["jobs"]`, `main() → app.settings["bus"]`); the newest of a bigger one.
    fn dict_values(&mut self, containers: &[(Obj, Kind)], level: &mut Level) {
        for (o, kind) in containers {
            if *kind == Kind::Dict && o.node.depth < self.budget.max_depth {
                let used = o.w(self.layout.dict_used);
                let mode = if used <= edges::FOLLOW_ITEMS { NsMode::Full } else { NsMode::Tail };
                if used > 0 {
                    let owner = Owner::of(&o.node, NameStyle::Key, Parent::Other);
                    level.reported_dicts.push(level.jobs.len());
                    level.jobs.push((NsSource::Dict(o.node.addr), mode));
                    level.owners.push(owner);
                }
                if mode == NsMode::Tail {
                    self.stats.items_not_followed += used.saturating_sub(SAMPLE_ITEMS as u64);
                }
            }
        }
    }

    /// A function's own attributes (`func.registry = []` → `mod.func.registry`).
    fn function_attributes(&self, funcs: &[Obj], level: &mut Level) {
        for f in funcs {
            let dict = f.w(self.layout.func_dict);
            if plausible_ptr(dict) {
                level.namespace(NsSource::Dict(dict), Owner::of(&f.node, NameStyle::Attr, Parent::Other));
            }
        }
    }

    /// Container items, C objects' reference fields, functions' defaults and frame objects'
    /// locals (edges.rs, roots.rs).
    fn follow_edges(&mut self, found: &Found, level: &mut Level, samples: &mut AddrMap<Sample>) {
        let maxd = self.budget.max_depth;
        let seqs: Vec<(&Obj, Kind)> = found
            .containers
            .iter()
            .chain(&found.immutables)
            .filter(|(o, _)| o.node.depth < maxd)
            .map(|(o, k)| (o, *k))
            .collect();
        let items = self.item_children(&seqs, samples);
        level.next.extend(items);
        let with_fields: Vec<&Obj> = found.instances.iter().chain(&found.funcs).collect();
        let fields = self.field_children(&with_fields);
        level.next.extend(fields);
        let frames: Vec<&Obj> =
            found.instances.iter().filter(|o| self.type_info(o.ty).is_some_and(|t| &*t.name == "frame")).collect();
        let locals = self.frame_object_locals(&frames);
        level.next.extend(locals);
    }

    /// Reads the level's namespaces; each named value becomes a node of the next level. The
    /// newest values of a reported dict are also its sample (`samples`).
    fn name_children(&mut self, level: &mut Level, samples: &mut AddrMap<Sample>) {
        let res = self.read_namespaces(&level.jobs);
        let mut reported = level.reported_dicts.iter().copied().peekable();
        for (job, (r, owner)) in res.into_iter().zip(&level.owners).enumerate() {
            let sampled = reported.next_if_eq(&job).is_some();
            let Some(r) = r else { continue };
            if let (true, NsSource::Dict(addr)) = (sampled, level.jobs[job].0) {
                // Full: oldest first; Tail: newest first already.
                let newest: Vec<u64> = match level.jobs[job].1 {
                    NsMode::Full => r.entries.iter().rev().take(SAMPLE_ITEMS).map(|e| e.1).collect(),
                    NsMode::Tail => r.entries.iter().take(SAMPLE_ITEMS).map(|e| e.1).collect(),
                };
                samples.insert(addr, Sample { len: r.used, items: newest, table_bytes: r.table_bytes });
            }
            for (k, (name, v)) in r.entries.into_iter().enumerate() {
                if v == self.types.none || v == 0 {
                    continue;
                }
                let path = match (name, owner.style) {
                    (Some(name), style) => self.paths.named(owner.prefix, &name, style),
                    // the k-th entry, whose key is not a str (or of a big dict's newest)
                    (None, NameStyle::Key) => Some(self.paths.child(owner.prefix, Seg::NthKey(k as u32))),
                    (None, _) => None,
                };
                let Some(path) = path else { continue };
                level.next.push(Node { addr: v, path, depth: owner.depth, rank: owner.rank, parent: owner.parent });
            }
        }
    }
}

/// One node per address: the best of its paths (lowest rank, then shortest, then lexically
/// smallest). Only rivals tied on rank and length are compared by their text.
fn best_of_each_address(mut nodes: Vec<Node>, paths: &Paths) -> Vec<Node> {
    nodes.sort_unstable_by_key(|n| (n.addr, n.rank, paths.len(n.path)));
    let mut kept = Vec::with_capacity(nodes.len());
    let mut i = 0;
    while i < nodes.len() {
        let first = &nodes[i];
        let key = (first.rank, paths.len(first.path));
        let mut best = i;
        let mut j = i + 1;
        while j < nodes.len() && nodes[j].addr == first.addr {
            if (nodes[j].rank, paths.len(nodes[j].path)) == key && paths.cmp(nodes[j].path, nodes[best].path).is_lt() {
                best = j;
            }
            j += 1;
        }
        kept.push(nodes[best].clone());
        i = j;
    }
    kept
}

/// A level's objects by what is done with them.
#[derive(Default)]
struct Found {
    containers: Vec<(Obj, Kind)>,
    /// Tuples and frozensets: followed, not reported.
    immutables: Vec<(Obj, Kind)>,
    types: Vec<Obj>,
    funcs: Vec<Obj>,
    instances: Vec<Obj>,
}

/// How to name and place what a namespace holds.
struct Owner {
    prefix: PathId,
    style: NameStyle,
    depth: u32,
    rank: usize,
    parent: Parent,
}

impl Owner {
    /// The children of `node`: one hop deeper, from its module.
    fn of(node: &Node, style: NameStyle, parent: Parent) -> Owner {
        let style = Owner::style_under(node, style);
        Owner { prefix: node.path, style, depth: node.depth + 1, rank: node.rank, parent }
    }

    /// Attributes of a root beyond modules join it with ` → `.
    fn style_under(node: &Node, style: NameStyle) -> NameStyle {
        if node.parent == Parent::Root && style == NameStyle::Attr {
            NameStyle::Root
        } else {
            style
        }
    }
}

/// One BFS level's work: namespaces to read (with how to name what they hold) and the nodes of
/// the next level found so far.
#[derive(Default)]
struct Level {
    jobs: Vec<(NsSource, NsMode)>,
    owners: Vec<Owner>,
    /// Indices into `jobs` of the reported dicts' own entries, ascending.
    reported_dicts: Vec<usize>,
    next: Vec<Node>,
}

impl Level {
    fn namespace(&mut self, src: NsSource, owner: Owner) {
        self.jobs.push((src, NsMode::Full));
        self.owners.push(owner);
    }
}
