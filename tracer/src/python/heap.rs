//! The holders view: reading a running CPython's live containers from outside and naming them.
//!
//! Everything here reads the target with `process_vm_readv` (through [`BatchRead`]); the target is
//! never stopped and never written. Offsets and rules come from
//! `shared/facts/cpython-containers.md` (cited below as "containers §N") and the string layout
//! from `shared/facts/cpython-frames.md` ("Strings").
//!
//! # What a scan does
//! `_PyRuntime.interpreters.main` → `sys.modules` (containers §1.1). Every value of `sys.modules`
//! that is a module (type chain reaches `PyModule_Type`) is a root at depth 0, `__main__` first,
//! then by name. Breadth-first, each hop adds one path component, up to `ScanBudget::max_depth`
//! hops after the module:
//! * module globals (`md_dict`) → `mod.NAME`;
//! * class attributes (heap type → `tp_dict`) → `mod.Cls.NAME`;
//! * instance attributes (instance dict, 3.11 values, 3.12 tagged values, 3.13+ inline values,
//!   `__slots__` of heap types along the `tp_base` chain) → `mod.OBJ.NAME` (containers §3);
//! * closure cells of functions → `mod.FUNC<closure>.NAME`;
//! * values of a module-global dict with str keys (only dicts with at most
//!   [`MODULE_DICT_DESCEND_MAX`] entries) → `mod.REGISTRY["jobs"]`.
//!
//! Objects are de-duplicated by address; within a BFS level the best path wins (`__main__` first,
//! then module order, then the shorter path, then the lexically smaller one), and an earlier level
//! always beats a later one (BFS ⇒ shortest path).
//!
//! # What is reported
//! list, dict and dict subclasses (OrderedDict, defaultdict, Counter, user subclasses), set, and
//! `collections.deque` (also list/set subclasses). They are leaves: the scanner samples up to 64 of
//! their items for `item_types` but does not descend into them (except the module-global dict rule
//! above).
//!
//! # What is skipped, and why
//! * tuples and frozensets: immutable, they cannot grow, so they are neither reported nor
//!   traversed (a tuple's elements are fixed at creation; following them would cost reads for
//!   containers that are almost always also reachable by a shorter path);
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
//! panic or loop (see the property test below). Reads are batched per BFS level and per stage.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

#[cfg(test)]
use crate::remote::Memory;
use crate::remote::ProcessMemory;

/// How many times a torn multi-read structure is read again before it is dropped.
pub const MAX_RETRIES: u32 = 3;
/// A module-global dict with str keys and at most this many entries is descended into
/// (`mod.REGISTRY["jobs"]`); bigger ones are data (caches), not registries.
pub const MODULE_DICT_DESCEND_MAX: u64 = 256;
/// Items sampled per container for `item_types` and the size estimate.
pub const SAMPLE_ITEMS: usize = 64;

const MAX_REGION: usize = 4 << 20; // no single read is larger than this
const MAX_NS_ENTRIES: u64 = 1 << 16; // namespaces (module/class/instance dicts) bigger than this are skipped
const MAX_STR_CHARS: u64 = 1024; // attribute/key names longer than this are not used
const MAX_TYPE_ROUNDS: usize = 48; // bound on dependent type-resolution rounds per call
const MAX_BASE_CHAIN: usize = 64; // bound on tp_base chains walked for __slots__

// ---------------------------------------------------------------------------------------------
// Memory access
// ---------------------------------------------------------------------------------------------

/// Batched remote reads. Each result is `None` when that region could not be read.
pub trait BatchRead {
    fn read_batch(&self, regions: &[(u64, usize)]) -> Vec<Option<Vec<u8>>>;
}

impl BatchRead for ProcessMemory {
    fn read_batch(&self, regions: &[(u64, usize)]) -> Vec<Option<Vec<u8>>> {
        self.read_many(regions)
    }
}

/// Adapts any [`Memory`] (e.g. a memory image in tests) by reading regions one at a time.
#[cfg(test)]
pub struct Unbatched<M>(pub M);

#[cfg(test)]
impl<M: Memory> BatchRead for Unbatched<M> {
    fn read_batch(&self, regions: &[(u64, usize)]) -> Vec<Option<Vec<u8>>> {
        regions.iter().map(|&(a, l)| self.0.read_vec(a, l).ok()).collect()
    }
}

fn plausible_ptr(p: u64) -> bool {
    (0x1_0000..0x7fff_ffff_f000).contains(&p) && p.is_multiple_of(8)
}

fn rd64(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap())).unwrap_or(0)
}
fn rd32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap())).unwrap_or(0)
}
fn rd8(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Layout tables
// ---------------------------------------------------------------------------------------------

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

    fn refcnt_plausible(&self, rc: u64) -> bool {
        if self.split_refcnt {
            // containers §4: low 32 bits ≠ 0, ob_overflow (bits 32–47) = 0
            (rc & 0xffff_ffff) != 0 && (rc >> 32) & 0xffff == 0
        } else {
            rc > 0 && rc < (1 << 32)
        }
    }
}

const TPFLAGS_INLINE_VALUES: u64 = 1 << 2;
const TPFLAGS_MANAGED_DICT: u64 = 1 << 4;
const TPFLAGS_HEAPTYPE: u64 = 1 << 9;
const TPFLAGS_READY: u64 = 1 << 12;
const TPFLAGS_HAVE_GC: u64 = 1 << 14;
const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
const TPFLAGS_LIST_SUBCLASS: u64 = 1 << 25;
const TPFLAGS_TUPLE_SUBCLASS: u64 = 1 << 26;
const TPFLAGS_BYTES_SUBCLASS: u64 = 1 << 27;
const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;
const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;
const TPFLAGS_TYPE_SUBCLASS: u64 = 1 << 31;
const SUBCLASS_BITS: u64 = TPFLAGS_LONG_SUBCLASS
    | TPFLAGS_LIST_SUBCLASS
    | TPFLAGS_TUPLE_SUBCLASS
    | TPFLAGS_BYTES_SUBCLASS
    | TPFLAGS_UNICODE_SUBCLASS
    | TPFLAGS_DICT_SUBCLASS
    | TPFLAGS_TYPE_SUBCLASS;

/// Addresses in the target of the exported objects the scanner recognises (containers §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TypeAddrs {
    pub list: u64,
    pub tuple: u64,
    pub dict: u64,
    pub set: u64,
    pub frozenset: u64,
    pub module: u64,
    pub unicode: u64,
    pub type_: u64,
    pub function: u64,
    pub cell: u64,
    pub odict: u64,
    pub base_object: u64,
    pub long: u64,
    pub set_dummy: u64,
    pub none: u64,
}

impl TypeAddrs {
    /// The exported `.dynsym` names, in field order.
    pub const SYMBOLS: &'static [&'static str] = &[
        "PyList_Type",
        "PyTuple_Type",
        "PyDict_Type",
        "PySet_Type",
        "PyFrozenSet_Type",
        "PyModule_Type",
        "PyUnicode_Type",
        "PyType_Type",
        "PyFunction_Type",
        "PyCell_Type",
        "PyODict_Type",
        "PyBaseObject_Type",
        "PyLong_Type",
        "_PySet_Dummy",
        "_Py_NoneStruct",
    ];

    /// Resolves every symbol with `f` (address in the target, bias applied); `None` if any is missing.
    pub fn from_lookup(f: impl Fn(&str) -> Option<u64>) -> Option<TypeAddrs> {
        let v: Vec<u64> = Self::SYMBOLS.iter().map(|s| f(s)).collect::<Option<_>>()?;
        Some(TypeAddrs {
            list: v[0],
            tuple: v[1],
            dict: v[2],
            set: v[3],
            frozenset: v[4],
            module: v[5],
            unicode: v[6],
            type_: v[7],
            function: v[8],
            cell: v[9],
            odict: v[10],
            base_object: v[11],
            long: v[12],
            set_dummy: v[13],
            none: v[14],
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Public results
// ---------------------------------------------------------------------------------------------

/// Limits for one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanBudget {
    pub max_objects: usize,
    pub max_bytes: usize,
    pub max_depth: u32,
}

impl Default for ScanBudget {
    fn default() -> Self {
        ScanBudget { max_objects: 200_000, max_bytes: 64 << 20, max_depth: 3 }
    }
}

/// One live container and the path it was reached by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSample {
    pub path: String,
    /// `tp_name` of the container's type (`list`, `dict`, `collections.deque`, `Counter`, ...).
    pub type_name: String,
    pub len: u64,
    /// `tp_name` → count over up to [`SAMPLE_ITEMS`] sampled items (the newest: list/dict/deque
    /// tail, the first slots of a set's table). Empty when the sample was torn and dropped.
    pub item_types: BTreeMap<String, u64>,
    /// Estimate: the container's own allocation (list: header + `allocated`×8; dict: header +
    /// keys table + split values; set: header + (mask+1)×16 when not the inline table; deque:
    /// header + 528 B per 64-item block) plus `len` × the mean size of the sampled items
    /// (item `tp_basicsize` + GC/managed pre-headers + variable part: str/bytes/tuple/int length).
    /// Not a retained-size computation: items' own referents are not counted.
    pub retained_bytes_est: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanStats {
    /// Objects whose header was read and checked.
    pub objects_visited: u64,
    pub bytes_read: u64,
    /// Remote read requests (regions), not syscalls.
    pub reads: u64,
    pub duration_s: f64,
    /// Multi-read structures read again because a re-check failed.
    pub torn_retried: u64,
    /// Structures given up after [`MAX_RETRIES`] or failing validation (objects, namespaces,
    /// container samples).
    pub dropped: u64,
    pub cut_by_budget: bool,
}

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    List,
    Tuple,
    Dict,
    Set,
    FrozenSet,
    Deque,
    Module,
    Str,
    Long,
    Bytes,
    Type,
    Function,
    Cell,
    NoneType,
    /// Anything else (instances of classes, builtin objects).
    Other,
}

#[derive(Debug, Clone)]
struct TypeInfo {
    // Raw fields, compared on revalidation.
    meta: u64,
    name_ptr: u64,
    basicsize: u64,
    itemsize: u64,
    flags: u64,
    members: u64,
    base: u64,
    dict: u64,
    dictoffset: i64,
    cached_keys: u64,
    // Derived.
    valid: bool,
    name: String,
    kind: Kind,
    /// `__slots__` object members along the heap-type `tp_base` chain: (name, offset).
    slots: Option<Vec<(String, u64)>>,
    /// Scan generation in which the raw fields were last re-read and found unchanged.
    checked: u64,
}

impl TypeInfo {
    fn raw_eq(&self, o: &TypeInfo) -> bool {
        self.meta == o.meta
            && self.name_ptr == o.name_ptr
            && self.basicsize == o.basicsize
            && self.itemsize == o.itemsize
            && self.flags == o.flags
            && self.members == o.members
            && self.base == o.base
            && self.dict == o.dict
            && self.dictoffset == o.dictoffset
            && self.cached_keys == o.cached_keys
    }
    fn heap(&self) -> bool {
        self.flags & TPFLAGS_HEAPTYPE != 0
    }
}

// ---------------------------------------------------------------------------------------------
// Scanner
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    SysModules,
    ModuleGlobals,
    Other,
}

#[derive(Debug, Clone)]
struct Node {
    addr: u64,
    path: String,
    depth: u32,
    rank: usize,
    parent: Parent,
}

/// An object whose header passed the checks.
struct Obj {
    node: Node,
    /// `pre_header` bytes before the object, then 96 bytes of the object.
    bytes: Vec<u8>,
    pre: usize,
    ty: u64,
}

impl Obj {
    fn w(&self, off: u64) -> u64 {
        rd64(&self.bytes, self.pre + off as usize)
    }
    /// Word at obj − `back` (pre-header).
    fn pre_w(&self, back: u64) -> u64 {
        if back as usize > self.pre {
            return 0;
        }
        rd64(&self.bytes, self.pre - back as usize)
    }
}

const OBJ_READ: usize = 96;

/// Where a namespace's (name → value) pairs come from.
#[derive(Debug, Clone, Copy)]
enum NsSource {
    /// A dict object (header read first).
    Dict(u64),
    /// Instance values without a dict: names from `keys` (the type's cached keys), values at
    /// `values` (the `PyObject*` array; with the 3.13+ header at `values - 8`). `recheck` is a
    /// (address, expected word) re-read after the body (0 address: none).
    Values { keys: u64, values: u64, header: bool, recheck: (u64, u64) },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NsMode {
    /// All entries, with names (str keys only).
    Full,
    /// The last entries' values only (container sampling).
    Tail,
}

#[derive(Debug, Clone, Default)]
struct NsResult {
    /// (name, value) for Full; (None, value) for Tail.
    entries: Vec<(Option<String>, u64)>,
    /// `ma_used` (dicts) or live count.
    used: u64,
    /// Allocation size of the keys object plus split values (retained estimate).
    table_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct KeysInfo {
    nentries: u64,
    entries_addr: u64,
    esize: u64,
    bytes: u64,
}

/// The holders scanner. Keeps a type cache across scans.
pub struct HeapScanner {
    mem: Box<dyn BatchRead + Send>,
    layout: HeapLayout,
    types: TypeAddrs,
    runtime_addr: u64,
    type_cache: HashMap<u64, TypeInfo>,
    generation: u64,
    // Per-scan state.
    stats: ScanStats,
    budget: ScanBudget,
    str_cache: HashMap<u64, Option<String>>,
}

impl HeapScanner {
    pub fn new(mem: impl BatchRead + Send + 'static, layout: HeapLayout, types: TypeAddrs, runtime_addr: u64) -> Self {
        HeapScanner {
            mem: Box::new(mem),
            layout,
            types,
            runtime_addr,
            type_cache: HashMap::new(),
            generation: 0,
            stats: ScanStats::default(),
            budget: ScanBudget::default(),
            str_cache: HashMap::new(),
        }
    }

    /// One scan of every container reachable from `sys.modules` (see the module docs).
    /// Output is sorted by path; each address appears once.
    pub fn scan(&mut self, budget: &ScanBudget) -> (Vec<ContainerSample>, ScanStats) {
        let t0 = Instant::now();
        self.generation += 1;
        self.stats = ScanStats::default();
        self.budget = *budget;
        self.str_cache.clear();
        if self.type_cache.len() > 50_000 {
            self.type_cache.clear();
        }
        let mut out = Vec::new();
        self.scan_inner(&mut out);
        out.sort_by(|a, b| a.path.cmp(&b.path));
        let mut stats = std::mem::take(&mut self.stats);
        stats.duration_s = t0.elapsed().as_secs_f64();
        self.str_cache.clear();
        (out, stats)
    }

    // ----- reading with budget and stats -----

    fn batch(&mut self, regions: &[(u64, usize)]) -> Vec<Option<Vec<u8>>> {
        let mut out: Vec<Option<Vec<u8>>> = vec![None; regions.len()];
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
        self.stats.bytes_read += req.iter().map(|r| r.1 as u64).sum::<u64>();
        let got = self.mem.read_batch(&req);
        for (k, r) in got.into_iter().enumerate() {
            if let Some(&i) = idx.get(k) {
                out[i] = r.filter(|b| b.len() == regions[i].1);
            }
        }
        out
    }

    fn budget_left(&self) -> bool {
        !self.stats.cut_by_budget
            && (self.stats.objects_visited as usize) < self.budget.max_objects
            && (self.stats.bytes_read as usize) < self.budget.max_bytes
    }

    // ----- strings -----

    /// Reads `str` objects (exact `PyUnicode_Type`, compact) into Rust strings; `None` if not one.
    fn read_strs(&mut self, ptrs: &[u64]) -> Vec<Option<String>> {
        let l = self.layout.clone();
        let mut todo: Vec<u64> =
            ptrs.iter().copied().filter(|p| plausible_ptr(*p) && !self.str_cache.contains_key(p)).collect();
        todo.sort_unstable();
        todo.dedup();
        let first = 64usize;
        let regions: Vec<(u64, usize)> = todo.iter().map(|&p| (p, first)).collect();
        let got = self.batch(&regions);
        let mut more = Vec::new();
        for (&p, b) in todo.iter().zip(got) {
            let parsed = b.and_then(|b| {
                if !l.refcnt_plausible(rd64(&b, 0)) || rd64(&b, 8) != self.types.unicode {
                    return None;
                }
                let len = rd64(&b, 16);
                let state = rd32(&b, 32);
                let kind = (state >> 2) & 7;
                let compact = state & (1 << 5) != 0;
                let ascii = state & (1 << 6) != 0;
                if !compact || !matches!(kind, 1 | 2 | 4) || len > MAX_STR_CHARS || (ascii && kind != 1) {
                    return None;
                }
                let start = if ascii { l.str_ascii_data } else { l.str_compact_data };
                Some((start, len, kind, b))
            });
            match parsed {
                None => {
                    self.str_cache.insert(p, None);
                }
                Some((start, len, kind, b)) => {
                    let nbytes = len * kind as u64;
                    if start + nbytes <= first as u64 {
                        let s = decode_str(&b[start as usize..(start + nbytes) as usize], kind);
                        self.str_cache.insert(p, s);
                    } else {
                        more.push((p, start, nbytes, kind));
                    }
                }
            }
        }
        if !more.is_empty() {
            let regions: Vec<(u64, usize)> = more.iter().map(|&(p, s, n, _)| (p + s, n as usize)).collect();
            let got = self.batch(&regions);
            for (&(p, _, _, kind), b) in more.iter().zip(got) {
                let s = b.and_then(|b| decode_str(&b, kind));
                self.str_cache.insert(p, s);
            }
        }
        ptrs.iter().map(|p| self.str_cache.get(p).cloned().flatten()).collect()
    }

    /// Reads NUL-terminated C strings (type and member names): printable, 1..=200 bytes.
    fn read_cstrs(&mut self, ptrs: &[u64]) -> Vec<Option<String>> {
        let mut out: Vec<Option<String>> = vec![None; ptrs.len()];
        let valid = |p: u64| (0x1_0000..0x7fff_ffff_f000).contains(&p);
        for size in [200usize, 40] {
            let idx: Vec<usize> = (0..ptrs.len()).filter(|&i| out[i].is_none() && valid(ptrs[i])).collect();
            if idx.is_empty() {
                break;
            }
            let regions: Vec<(u64, usize)> = idx.iter().map(|&i| (ptrs[i], size)).collect();
            let got = self.batch(&regions);
            for (&i, b) in idx.iter().zip(got) {
                if let Some(b) = b {
                    if let Some(end) = b.iter().position(|&c| c == 0) {
                        if end > 0 && b[..end].iter().all(|&c| (0x20..0x7f).contains(&c)) {
                            out[i] = Some(String::from_utf8_lossy(&b[..end]).into_owned());
                        }
                    }
                }
            }
        }
        out
    }

    // ----- types -----

    fn type_info(&self, t: u64) -> Option<&TypeInfo> {
        self.type_cache.get(&t).filter(|i| i.valid && i.checked == self.generation)
    }

    fn parse_type(&self, b: &[u8]) -> TypeInfo {
        let l = &self.layout;
        let flags = rd64(b, l.tp_flags as usize);
        let cached_keys = if flags & TPFLAGS_HEAPTYPE != 0 { rd64(b, l.ht_cached_keys as usize) } else { 0 };
        TypeInfo {
            meta: rd64(b, 8),
            name_ptr: rd64(b, l.tp_name as usize),
            basicsize: rd64(b, l.tp_basicsize as usize),
            itemsize: rd64(b, l.tp_itemsize as usize),
            flags,
            members: rd64(b, l.tp_members as usize),
            base: rd64(b, l.tp_base as usize),
            dict: rd64(b, l.tp_dict as usize),
            dictoffset: rd64(b, l.tp_dictoffset as usize) as i64,
            cached_keys,
            valid: false,
            name: String::new(),
            kind: Kind::Other,
            slots: None,
            checked: 0,
        }
        .with_refcnt_check(l.refcnt_plausible(rd64(b, 0)))
    }

    /// Makes sure every address in `addrs` has a `TypeInfo` checked in this scan (valid or not).
    fn resolve_types(&mut self, addrs: &[u64]) {
        let gen = self.generation;
        let mut want: Vec<u64> =
            addrs.iter().copied().filter(|a| self.type_cache.get(a).is_none_or(|i| i.checked != gen)).collect();
        want.sort_unstable();
        want.dedup();
        // address → (info parsed from this read, waiting for name)
        let mut pending: HashMap<u64, TypeInfo> = HashMap::new();
        let l = self.layout.clone();
        let heap_read = (l.ht_cached_keys + 8) as usize;
        for _round in 0..MAX_TYPE_ROUNDS {
            // 1. read structs of wanted types not yet pending
            let fresh: Vec<u64> = want
                .iter()
                .copied()
                .filter(|a| !pending.contains_key(a) && self.type_cache.get(a).is_none_or(|i| i.checked != gen))
                .collect();
            want.clear();
            if !fresh.is_empty() {
                // Two regions per type: the fields up to tp_dictoffset, and the heap-type
                // `ht_cached_keys` word (for static types that word is unused and may fail).
                let head = (l.tp_dictoffset + 8) as usize;
                let mut regions: Vec<(u64, usize)> = Vec::with_capacity(2 * fresh.len());
                for &a in &fresh {
                    regions.push((a, head));
                    regions.push((a.wrapping_add(l.ht_cached_keys), 8));
                }
                let raw = self.batch(&regions);
                let mut got: Vec<Option<Vec<u8>>> = Vec::with_capacity(fresh.len());
                for pair in raw.chunks(2) {
                    got.push(pair[0].as_ref().map(|h| {
                        let mut b = h.clone();
                        if let Some(ck) = &pair[1] {
                            b.resize(heap_read, 0);
                            b[l.ht_cached_keys as usize..heap_read].copy_from_slice(ck);
                        }
                        b
                    }));
                }
                let mut names = Vec::new();
                for (&a, b) in fresh.iter().zip(got) {
                    let Some(b) = b else {
                        self.type_cache.insert(a, invalid_type(gen));
                        continue;
                    };
                    let mut info = self.parse_type(&b);
                    if info.flags & TPFLAGS_HEAPTYPE != 0 && b.len() < heap_read {
                        info.valid = false;
                    }
                    if !info.valid || !type_fields_sane(&info) {
                        self.type_cache.insert(a, invalid_type(gen));
                        continue;
                    }
                    if let Some(old) = self.type_cache.get(&a) {
                        if old.valid && old.raw_eq(&info) {
                            let mut old = old.clone();
                            old.checked = gen;
                            // base and meta must be re-checked too: they are in the cache and
                            // will be revalidated when encountered; require them below.
                            pending.insert(a, old);
                            continue;
                        }
                    }
                    names.push((a, info));
                }
                let ptrs: Vec<u64> = names.iter().map(|(_, i)| i.name_ptr).collect();
                let strs = self.read_cstrs(&ptrs);
                for ((a, mut info), s) in names.into_iter().zip(strs) {
                    match s {
                        Some(s) => {
                            info.name = s;
                            info.slots = None;
                            pending.insert(a, info);
                        }
                        None => {
                            self.type_cache.insert(a, invalid_type(gen));
                        }
                    }
                }
            }
            // 2. finalize pending entries whose dependencies are known
            let mut progress = true;
            let mut guard = 0;
            while progress && guard < 1000 {
                guard += 1;
                progress = false;
                let keys: Vec<u64> = pending.keys().copied().collect();
                for a in keys {
                    let info = pending.get(&a).unwrap().clone();
                    let mut deps_missing = Vec::new();
                    let meta_ok = if info.meta == self.types.type_ {
                        Some(true)
                    } else if info.meta == a {
                        Some(false)
                    } else {
                        match self.type_cache.get(&info.meta).filter(|i| i.checked == gen) {
                            Some(m) => Some(m.valid && m.flags & TPFLAGS_TYPE_SUBCLASS != 0 && m.kind == Kind::Type),
                            None => {
                                deps_missing.push(info.meta);
                                None
                            }
                        }
                    };
                    let base_kind = if info.base == 0 {
                        if a == self.types.base_object {
                            Some(Some(Kind::Other))
                        } else {
                            Some(None)
                        }
                    } else if info.base == a {
                        Some(None)
                    } else {
                        match self.type_cache.get(&info.base).filter(|i| i.checked == gen) {
                            Some(b) => Some(if b.valid { Some(b.kind) } else { None }),
                            None => {
                                deps_missing.push(info.base);
                                None
                            }
                        }
                    };
                    if !deps_missing.is_empty() {
                        for d in deps_missing {
                            if !pending.contains_key(&d) {
                                want.push(d);
                            }
                        }
                        continue;
                    }
                    let mut info = pending.remove(&a).unwrap();
                    progress = true;
                    let (Some(meta_ok), Some(base_kind)) = (meta_ok, base_kind) else { unreachable!() };
                    match base_kind {
                        Some(bk) if meta_ok => {
                            let kind = self.own_kind(a, &info.name).unwrap_or(bk);
                            info.kind = kind;
                            info.valid = flags_consistent(kind, info.flags);
                        }
                        _ => info.valid = false,
                    }
                    info.checked = gen;
                    if !info.valid {
                        info = invalid_type(gen);
                    }
                    self.type_cache.insert(a, info);
                }
            }
            want.sort_unstable();
            want.dedup();
            if want.is_empty() && pending.is_empty() {
                break;
            }
            if want.is_empty() {
                // Dependencies among pending only (a cycle): nothing can finish.
                break;
            }
        }
        for (a, _) in pending {
            self.type_cache.insert(a, invalid_type(gen));
        }
        for a in want {
            if self.type_cache.get(&a).is_none_or(|i| i.checked != gen) {
                self.type_cache.insert(a, invalid_type(gen));
            }
        }
    }

    fn own_kind(&self, a: u64, name: &str) -> Option<Kind> {
        let t = &self.types;
        Some(match a {
            x if x == t.list => Kind::List,
            x if x == t.tuple => Kind::Tuple,
            x if x == t.dict => Kind::Dict,
            x if x == t.set => Kind::Set,
            x if x == t.frozenset => Kind::FrozenSet,
            x if x == t.module => Kind::Module,
            x if x == t.unicode => Kind::Str,
            x if x == t.type_ => Kind::Type,
            x if x == t.function => Kind::Function,
            x if x == t.cell => Kind::Cell,
            x if x == t.long => Kind::Long,
            _ if name == "collections.deque" => Kind::Deque,
            _ if name == "bytes" => Kind::Bytes,
            _ if name == "NoneType" => Kind::NoneType,
            _ => return None,
        })
    }

    /// `__slots__` members (object-typed) of `t` and its heap-type bases; cached per type.
    fn resolve_slots(&mut self, tys: &[u64]) {
        let l = self.layout.clone();
        let mut need: Vec<u64> =
            tys.iter().copied().filter(|t| self.type_info(*t).is_some_and(|i| i.slots.is_none())).collect();
        need.sort_unstable();
        need.dedup();
        if need.is_empty() {
            return;
        }
        // Collect all heap types on the base chains that have tp_members.
        let mut chains: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut all: HashSet<u64> = HashSet::new();
        for &t in &need {
            let mut chain = Vec::new();
            let mut cur = t;
            for _ in 0..MAX_BASE_CHAIN {
                let Some(i) = self.type_info(cur) else { break };
                if i.heap() && i.members != 0 {
                    chain.push(cur);
                    all.insert(cur);
                }
                if i.base == 0 {
                    break;
                }
                cur = i.base;
            }
            chains.insert(t, chain);
        }
        let all: Vec<u64> = all.into_iter().collect();
        const MAXM: usize = 32;
        let regions: Vec<(u64, usize)> = all
            .iter()
            .map(|&t| (self.type_info(t).map(|i| i.members).unwrap_or(0), MAXM * l.member_size as usize))
            .collect();
        let got = self.batch(&regions);
        let mut members: HashMap<u64, Vec<(u64, u64)>> = HashMap::new(); // type → (name ptr, offset)
        let mut name_ptrs = Vec::new();
        for (&t, b) in all.iter().zip(got) {
            let Some(b) = b else { continue };
            let basic = self.type_info(t).map(|i| i.basicsize).unwrap_or(0);
            let mut v = Vec::new();
            for k in 0..MAXM {
                let o = k * l.member_size as usize;
                let name = rd64(&b, o);
                if name == 0 {
                    break;
                }
                let mtype = rd32(&b, o + 8);
                let off = rd64(&b, o + 16);
                let flags = rd32(&b, o + 24);
                // T_OBJECT (6) / T_OBJECT_EX (16), not READONLY: what __slots__ creates.
                if (mtype == 6 || mtype == 16)
                    && flags & 1 == 0
                    && off >= 16
                    && off < basic
                    && basic - off >= 8
                    && off.is_multiple_of(8)
                {
                    v.push((name, off));
                    name_ptrs.push(name);
                }
            }
            members.insert(t, v);
        }
        let names = self.read_cstrs(&name_ptrs);
        let name_of: HashMap<u64, String> =
            name_ptrs.iter().zip(names).filter_map(|(&p, n)| n.filter(|n| is_identifier(n)).map(|n| (p, n))).collect();
        for t in need {
            let mut slots = Vec::new();
            for ct in chains.get(&t).cloned().unwrap_or_default() {
                for &(np, off) in members.get(&ct).map(|v| v.as_slice()).unwrap_or(&[]) {
                    if let Some(n) = name_of.get(&np) {
                        if !slots.iter().any(|(_, o)| *o == off) {
                            slots.push((n.clone(), off));
                        }
                    }
                }
            }
            if let Some(i) = self.type_cache.get_mut(&t) {
                i.slots = Some(slots);
            }
        }
    }

    // ----- objects -----

    /// Reads and checks object headers; returns those whose type is valid.
    fn read_objects(&mut self, nodes: Vec<Node>) -> Vec<Obj> {
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
            if !self.layout.refcnt_plausible(rd64(&b, pre)) {
                self.stats.dropped += 1;
                continue;
            }
            let ty = rd64(&b, pre + 8);
            objs.push(Obj { node: n, bytes: b, pre, ty });
        }
        let tys: Vec<u64> = objs.iter().map(|o| o.ty).collect();
        self.resolve_types(&tys);
        let before = objs.len();
        objs.retain(|o| self.type_info(o.ty).is_some());
        self.stats.dropped += (before - objs.len()) as u64;
        objs
    }

    // ----- dict keys -----

    fn parse_keys(&self, keys: u64, b: &[u8]) -> Option<KeysInfo> {
        if !plausible_ptr(keys) {
            return None;
        }
        // dk_refcnt: a count, or immortal (3.14's static Py_EMPTY_KEYS reads 0x8000_0000_0000_0000,
        // `_Py_DICT_IMMORTAL_INITIAL_REFCNT`; seen live on 3.14.10).
        let rc = rd64(b, 0);
        if (rc == 0 || rc >= 1 << 32) && rc != 1 << 63 {
            return None;
        }
        match self.layout.keys {
            KeysLayout::V310 => {
                let size = rd64(b, 8);
                let nentries = rd64(b, 32);
                if size == 0 || !size.is_power_of_two() || size > 1 << 30 {
                    return None;
                }
                if size == 1 {
                    // Py_EMPTY_KEYS
                    return (nentries == 0).then_some(KeysInfo {
                        nentries: 0,
                        entries_addr: keys + 48,
                        esize: 24,
                        bytes: 0,
                    });
                }
                let usable = (size << 1) / 3;
                if nentries > usable || size < 8 {
                    return None;
                }
                let width = if size <= 0xff {
                    1
                } else if size <= 0xffff {
                    2
                } else if size <= 0xffff_ffff {
                    4
                } else {
                    8
                };
                let entries_addr = keys + 40 + size * width;
                Some(KeysInfo { nentries, entries_addr, esize: 24, bytes: 40 + size * width + usable * 24 })
            }
            KeysLayout::V311 => {
                let log2 = rd8(b, 8) as u64;
                let log2_idx = rd8(b, 9) as u64;
                let kind = rd8(b, 10);
                let nentries = rd64(b, 24);
                if log2 > 30 || kind > 2 {
                    return None;
                }
                let esize = if kind == 0 { 24 } else { 16 };
                if log2 == 0 {
                    // shared empty keys (3.14: log2_index_bytes == 3; containers §2.3)
                    return (nentries == 0 && log2_idx <= 3).then_some(KeysInfo {
                        nentries: 0,
                        entries_addr: keys + 32,
                        esize,
                        bytes: 0,
                    });
                }
                let expect = log2
                    + if log2 < 8 {
                        0
                    } else if log2 < 16 {
                        1
                    } else if log2 < 32 {
                        2
                    } else {
                        3
                    };
                if log2_idx != expect || log2 < 3 {
                    return None;
                }
                let usable = (2u64 << log2) / 3;
                if nentries > usable {
                    return None;
                }
                let entries_addr = keys + 32 + (1u64 << log2_idx);
                Some(KeysInfo { nentries, entries_addr, esize, bytes: 32 + (1u64 << log2_idx) + usable * esize })
            }
        }
    }

    /// Reads namespaces / dict contents, batched across jobs, with re-checks and retries.
    fn read_namespaces(&mut self, jobs: &[(NsSource, NsMode)]) -> Vec<Option<NsResult>> {
        let mut results: Vec<Option<NsResult>> = vec![None; jobs.len()];
        let mut todo: Vec<usize> = (0..jobs.len()).collect();
        for attempt in 0..=MAX_RETRIES {
            if todo.is_empty() || !self.budget_left() && attempt > 0 {
                break;
            }
            if attempt > 0 {
                self.stats.torn_retried += todo.len() as u64;
            }
            let (done, failed) = self.read_namespaces_once(jobs, &todo);
            for (i, r) in done {
                results[i] = Some(r);
            }
            todo = failed;
        }
        self.stats.dropped += todo.len() as u64;
        results
    }

    fn read_namespaces_once(
        &mut self,
        jobs: &[(NsSource, NsMode)],
        todo: &[usize],
    ) -> (Vec<(usize, NsResult)>, Vec<usize>) {
        let l = self.layout.clone();
        let mut failed = Vec::new();
        // Stage H: dict headers.
        struct St {
            i: usize,
            keys: u64,
            values: u64,
            values_hdr: bool,
            used: Option<u64>,
            dict: u64,
            hdr_keys_word: (u64, u64),
            recheck: (u64, u64),
            ki: Option<KeysInfo>,
            cap: u64,
            first: u64,
            entries: Vec<u8>,
            vals: Vec<u8>,
        }
        let mut sts: Vec<St> = Vec::new();
        let dict_idx: Vec<usize> = todo.iter().copied().filter(|&i| matches!(jobs[i].0, NsSource::Dict(_))).collect();
        let regions: Vec<(u64, usize)> =
            dict_idx.iter().map(|&i| if let NsSource::Dict(a) = jobs[i].0 { (a, 48) } else { (0, 0) }).collect();
        let got = self.batch(&regions);
        let mut hdr_types = Vec::new();
        let mut hdrs = Vec::new();
        for (&i, b) in dict_idx.iter().zip(got) {
            let NsSource::Dict(a) = jobs[i].0 else { continue };
            match b {
                Some(b) if l.refcnt_plausible(rd64(&b, 0)) => {
                    hdr_types.push(rd64(&b, 8));
                    hdrs.push((i, a, b));
                }
                _ => failed.push(i),
            }
        }
        self.resolve_types(&hdr_types);
        for (i, a, b) in hdrs {
            let ty_ok = self.type_info(rd64(&b, 8)).is_some_and(|t| t.kind == Kind::Dict);
            let keys = rd64(&b, l.dict_keys as usize);
            let values = rd64(&b, l.dict_values as usize);
            let used = rd64(&b, l.dict_used as usize);
            if !ty_ok || !plausible_ptr(keys) || (values != 0 && !plausible_ptr(values)) || used > 1 << 31 {
                failed.push(i);
                continue;
            }
            sts.push(St {
                i,
                keys,
                values,
                values_hdr: values != 0 && l.values_header > 0,
                used: Some(used),
                dict: a,
                hdr_keys_word: (keys, values),
                recheck: (0, 0),
                ki: None,
                cap: u64::MAX,
                first: 0,
                entries: vec![],
                vals: vec![],
            });
        }
        for &i in todo {
            if let NsSource::Values { keys, values, header, recheck } = jobs[i].0 {
                if !plausible_ptr(keys) || !plausible_ptr(values) {
                    failed.push(i);
                    continue;
                }
                sts.push(St {
                    i,
                    keys,
                    values,
                    values_hdr: header,
                    used: None,
                    dict: 0,
                    hdr_keys_word: (0, 0),
                    recheck,
                    ki: None,
                    cap: u64::MAX,
                    first: 0,
                    entries: vec![],
                    vals: vec![],
                });
            }
        }
        // Stage K: keys headers (+ 3.13 values headers).
        let mut regions = Vec::new();
        for s in &sts {
            regions.push((s.keys, 40usize));
            regions.push(if s.values_hdr {
                (s.values.wrapping_sub(if matches!(jobs[s.i].0, NsSource::Dict(_)) { 0 } else { 8 }), 8usize)
            } else {
                (0, 0)
            });
        }
        let got = self.batch(&regions);
        let mut it = got.into_iter();
        let mut next = Vec::new();
        for mut s in sts {
            let kb = it.next().flatten();
            let vb = it.next().flatten();
            let Some(ki) = kb.and_then(|b| self.parse_keys(s.keys, &b)) else {
                failed.push(s.i);
                continue;
            };
            if s.values_hdr {
                // PyDictValues {capacity u8, size u8, embedded u8, valid u8}; dict ma_values points at the
                // header, instance inline values are given as the values[] start.
                let Some(vb) = vb else {
                    failed.push(s.i);
                    continue;
                };
                let is_dict = matches!(jobs[s.i].0, NsSource::Dict(_));
                if !is_dict && rd8(&vb, 3) == 0 {
                    // inline values not valid: the instance has a materialised dict; nothing here
                    failed.push(s.i);
                    continue;
                }
                s.cap = rd8(&vb, 0) as u64;
                if is_dict {
                    s.values += 8;
                }
            }
            if let Some(u) = s.used {
                if u > ki.nentries {
                    failed.push(s.i);
                    continue;
                }
            }
            s.ki = Some(ki);
            next.push(s);
        }
        let mut sts = next;
        // Stage E: entries and split values.
        let mut regions = Vec::new();
        for s in sts.iter_mut() {
            let ki = s.ki.unwrap();
            let mut n = ki.nentries;
            if s.values != 0 {
                n = n.min(s.cap);
            }
            if jobs[s.i].1 == NsMode::Full && n > MAX_NS_ENTRIES {
                n = 0; // too big to be a namespace: treat as unreadable
            }
            let first = if jobs[s.i].1 == NsMode::Tail { n.saturating_sub(2 * SAMPLE_ITEMS as u64) } else { 0 };
            s.first = first;
            let cnt = n - first;
            regions.push(if cnt > 0 {
                (ki.entries_addr + first * ki.esize, (cnt * ki.esize) as usize)
            } else {
                (0, 0)
            });
            regions.push(if cnt > 0 && s.values != 0 { (s.values + first * 8, (cnt * 8) as usize) } else { (0, 0) });
            s.cap = n;
        }
        let got = self.batch(&regions);
        let mut it = got.into_iter();
        let mut next = Vec::new();
        for mut s in sts {
            let e = it.next().flatten();
            let v = it.next().flatten();
            let cnt = s.cap - s.first;
            if cnt > 0 && (e.is_none() || (s.values != 0 && v.is_none())) {
                failed.push(s.i);
                continue;
            }
            s.entries = e.unwrap_or_default();
            s.vals = v.unwrap_or_default();
            next.push(s);
        }
        let sts = next;
        // Decode pairs; stage S: key strings + header re-read.
        let mut decoded: Vec<(St, Vec<(u64, u64)>)> = Vec::new();
        for s in sts {
            let ki = s.ki.unwrap();
            let cnt = (s.cap - s.first) as usize;
            let mut pairs = Vec::with_capacity(cnt);
            let koff = if ki.esize == 24 { 8 } else { 0 };
            for k in 0..cnt {
                let base = k * ki.esize as usize;
                let key = rd64(&s.entries, base + koff);
                let val = if s.values != 0 { rd64(&s.vals, k * 8) } else { rd64(&s.entries, base + koff + 8) };
                if val != 0 {
                    pairs.push((key, val));
                }
            }
            decoded.push((s, pairs));
        }
        let mut key_ptrs = Vec::new();
        for (s, pairs) in &decoded {
            if jobs[s.i].1 == NsMode::Full {
                key_ptrs.extend(pairs.iter().map(|p| p.0));
            }
        }
        let names = self.read_strs(&key_ptrs);
        let mut names_it = names.into_iter();
        let regions: Vec<(u64, usize)> = decoded
            .iter()
            .map(|(s, _)| {
                if s.dict != 0 {
                    (s.dict, 48)
                } else if s.recheck.0 != 0 {
                    (s.recheck.0, 8)
                } else {
                    (0, 0)
                }
            })
            .collect();
        let rechecks = self.batch(&regions);
        let keys_rechecks = self.batch(&decoded.iter().map(|(s, _)| (s.keys, 40usize)).collect::<Vec<_>>());
        let mut done = Vec::new();
        for (((s, pairs), rb), kb) in decoded.into_iter().zip(rechecks).zip(keys_rechecks) {
            let full = jobs[s.i].1 == NsMode::Full;
            let names: Vec<Option<String>> =
                if full { (0..pairs.len()).map(|_| names_it.next().flatten()).collect() } else { vec![] };
            let ki = s.ki.unwrap();
            // Re-checks (containers §5).
            let mut ok = match &kb {
                Some(kb) => self.parse_keys(s.keys, kb).is_some_and(|k2| k2.nentries >= ki.nentries),
                None => false,
            };
            let mut used = pairs.len() as u64;
            if s.dict != 0 {
                match &rb {
                    Some(rb) => {
                        let keys2 = rd64(rb, l.dict_keys as usize);
                        let values2 = rd64(rb, l.dict_values as usize);
                        let used2 = rd64(rb, l.dict_used as usize);
                        let used1 = s.used.unwrap_or(0);
                        ok &= (keys2, values2) == s.hdr_keys_word;
                        if full {
                            ok &= pairs.len() as u64 == used1 || pairs.len() as u64 == used2;
                        }
                        used = used2;
                    }
                    None => ok = false,
                }
            } else if s.recheck.0 != 0 {
                ok &= rb.as_ref().is_some_and(|b| rd64(b, 0) == s.recheck.1);
            }
            if !ok {
                failed.push(s.i);
                continue;
            }
            let entries = if full {
                pairs.iter().zip(names).map(|(&(_, v), n)| (n, v)).collect()
            } else {
                pairs.iter().rev().take(SAMPLE_ITEMS).map(|&(_, v)| (None, v)).collect()
            };
            let split_bytes = if s.values != 0 && s.dict != 0 { l.values_header + 8 * ki.nentries } else { 0 };
            done.push((s.i, NsResult { entries, used, table_bytes: ki.bytes + split_bytes }));
        }
        (done, failed)
    }

    // ----- scanning -----

    fn scan_inner(&mut self, out: &mut Vec<ContainerSample>) {
        let l = self.layout.clone();
        // Runtime → main interpreter → sys.modules (containers §1.1).
        let got = self.batch(&[(self.runtime_addr + l.runtime_interp_main, 8)]);
        let interp = got[0].as_ref().map(|b| rd64(b, 0)).unwrap_or(0);
        if !plausible_ptr(interp) {
            self.stats.dropped += 1;
            return;
        }
        let got = self.batch(&[(interp + l.interp_modules, 8)]);
        let modules = got[0].as_ref().map(|b| rd64(b, 0)).unwrap_or(0);
        let r = self.read_namespaces(&[(NsSource::Dict(modules), NsMode::Full)]);
        let Some(Some(mods)) = r.into_iter().next() else { return };
        let mut roots: Vec<(String, u64)> =
            mods.entries.into_iter().filter_map(|(n, v)| n.filter(|n| module_name_ok(n)).map(|n| (n, v))).collect();
        roots.sort_by(|a, b| (a.0 != "__main__", &a.0).cmp(&(b.0 != "__main__", &b.0)));
        let mut frontier: Vec<Node> = roots
            .into_iter()
            .enumerate()
            .map(|(rank, (name, addr))| Node { addr, path: name, depth: 0, rank, parent: Parent::SysModules })
            .collect();
        let mut visited: HashSet<u64> = HashSet::new();
        visited.insert(self.types.none);
        for _depth in 0..=self.budget.max_depth {
            if frontier.is_empty() || !self.budget_left() {
                if !frontier.is_empty() {
                    self.stats.cut_by_budget = true;
                }
                break;
            }
            // Dedup: earlier levels win; within a level the best (rank, len, path).
            frontier.retain(|n| plausible_ptr(n.addr) && !visited.contains(&n.addr));
            frontier
                .sort_by(|a, b| (a.addr, a.rank, a.path.len(), &a.path).cmp(&(b.addr, b.rank, b.path.len(), &b.path)));
            frontier.dedup_by_key(|n| n.addr);
            let room = self.budget.max_objects.saturating_sub(self.stats.objects_visited as usize);
            if frontier.len() > room {
                frontier.sort_by(|a, b| (a.rank, a.path.len(), &a.path).cmp(&(b.rank, b.path.len(), &b.path)));
                frontier.truncate(room);
                self.stats.cut_by_budget = true;
            }
            for n in &frontier {
                visited.insert(n.addr);
            }
            let objs = self.read_objects(std::mem::take(&mut frontier));
            frontier = self.process_level(objs, out);
        }
    }

    /// Classifies one BFS level's objects, reports containers, and returns the next level.
    fn process_level(&mut self, objs: Vec<Obj>, out: &mut Vec<ContainerSample>) -> Vec<Node> {
        let l = self.layout.clone();
        let maxd = self.budget.max_depth;
        let mut next: Vec<Node> = Vec::new();
        let mut ns_jobs: Vec<(NsSource, NsMode)> = Vec::new();
        // For each ns job: how to name children (prefix, style, depth, rank, parent kind).
        let mut ns_owner: Vec<(String, NameStyle, u32, usize, Parent)> = Vec::new();
        let mut containers: Vec<(Obj, Kind)> = Vec::new();
        let mut funcs: Vec<Obj> = Vec::new();
        let mut instances: Vec<Obj> = Vec::new();
        let mut type_objs: Vec<u64> = Vec::new();
        let mut pending_types: Vec<Obj> = Vec::new();
        for o in objs {
            let ti = self.type_info(o.ty).unwrap();
            let kind = ti.kind;
            let d = o.node.depth;
            if o.node.parent == Parent::SysModules {
                if kind == Kind::Module {
                    let md = o.w(l.module_dict);
                    if plausible_ptr(md) {
                        ns_jobs.push((NsSource::Dict(md), NsMode::Full));
                        ns_owner.push((o.node.path.clone(), NameStyle::Attr, 1, o.node.rank, Parent::ModuleGlobals));
                    }
                }
                continue;
            }
            match kind {
                Kind::List | Kind::Dict | Kind::Set | Kind::Deque => containers.push((o, kind)),
                Kind::Type if d < maxd => {
                    type_objs.push(o.node.addr);
                    pending_types.push(o);
                }
                Kind::Function if d < maxd => funcs.push(o),
                Kind::Other if d < maxd => instances.push(o),
                _ => {}
            }
        }
        // Class attributes: the object is itself a type.
        self.resolve_types(&type_objs);
        for o in pending_types {
            if let Some(ti) = self.type_info(o.node.addr) {
                if ti.heap() && plausible_ptr(ti.dict) {
                    ns_jobs.push((NsSource::Dict(ti.dict), NsMode::Full));
                    ns_owner.push((o.node.path.clone(), NameStyle::Attr, o.node.depth + 1, o.node.rank, Parent::Other));
                }
            }
        }
        // Instance attributes (containers §3).
        let inst_tys: Vec<u64> = instances.iter().map(|o| o.ty).collect();
        self.resolve_slots(&inst_tys);
        let mut slot_reads: Vec<(u64, String, u32, usize)> = Vec::new();
        let mut word_reads: Vec<(u64, usize)> = Vec::new(); // (addr of dict pointer, instance index)
        for (k, o) in instances.iter().enumerate() {
            let ti = self.type_info(o.ty).unwrap().clone();
            let path = &o.node.path;
            let child = |src: NsSource| (src, NsMode::Full);
            let owner = (path.clone(), NameStyle::Attr, o.node.depth + 1, o.node.rank, Parent::Other);
            let managed = ti.flags & TPFLAGS_MANAGED_DICT != 0 && l.instance != InstanceLayout::DictOffset;
            if managed {
                match l.instance {
                    InstanceLayout::Managed311 => {
                        let dict = o.pre_w(24);
                        let values = o.pre_w(32);
                        if dict != 0 {
                            ns_jobs.push(child(NsSource::Dict(dict)));
                            ns_owner.push(owner.clone());
                        } else if values != 0 {
                            ns_jobs.push(child(NsSource::Values {
                                keys: ti.cached_keys,
                                values,
                                header: false,
                                recheck: (o.node.addr - 32, values),
                            }));
                            ns_owner.push(owner.clone());
                        }
                    }
                    InstanceLayout::Tagged312 => {
                        let w = o.pre_w(24);
                        if w & 1 == 1 {
                            ns_jobs.push(child(NsSource::Values {
                                keys: ti.cached_keys,
                                values: w.wrapping_add(1),
                                header: false,
                                recheck: (o.node.addr - 24, w),
                            }));
                            ns_owner.push(owner.clone());
                        } else if w != 0 {
                            ns_jobs.push(child(NsSource::Dict(w)));
                            ns_owner.push(owner.clone());
                        }
                    }
                    InstanceLayout::Inline313 => {
                        let dict = o.pre_w(24);
                        if dict != 0 {
                            ns_jobs.push(child(NsSource::Dict(dict)));
                            ns_owner.push(owner.clone());
                        } else if ti.flags & TPFLAGS_INLINE_VALUES != 0 {
                            let values = o.node.addr + ti.basicsize + 8;
                            ns_jobs.push(child(NsSource::Values {
                                keys: ti.cached_keys,
                                values,
                                header: true,
                                recheck: (o.node.addr - 24, 0),
                            }));
                            ns_owner.push(owner.clone());
                        }
                    }
                    InstanceLayout::DictOffset => {}
                }
            } else if ti.dictoffset != 0 {
                let off = if ti.dictoffset > 0 {
                    ti.dictoffset as u64
                } else {
                    // var-sized: off + round8(basicsize + |ob_size| * itemsize)
                    let size = (o.w(16) as i64).unsigned_abs().min(1 << 24);
                    let total = (ti.basicsize + size * ti.itemsize + 7) & !7;
                    total.wrapping_add(ti.dictoffset as u64)
                };
                if (16..(1 << 24)).contains(&off) {
                    if off + 8 <= OBJ_READ as u64 {
                        let dict = o.w(off);
                        if dict != 0 {
                            ns_jobs.push(child(NsSource::Dict(dict)));
                            ns_owner.push(owner.clone());
                        }
                    } else {
                        word_reads.push((o.node.addr + off, k));
                    }
                }
            }
            for (name, off) in ti.slots.clone().unwrap_or_default() {
                slot_reads.push((o.node.addr + off, format!("{path}.{name}"), o.node.depth + 1, o.node.rank));
            }
        }
        if !word_reads.is_empty() {
            let regions: Vec<(u64, usize)> = word_reads.iter().map(|&(a, _)| (a, 8)).collect();
            for (&(_, k), b) in word_reads.iter().zip(self.batch(&regions)) {
                let dict = b.map(|b| rd64(&b, 0)).unwrap_or(0);
                if dict != 0 {
                    let o = &instances[k];
                    ns_jobs.push((NsSource::Dict(dict), NsMode::Full));
                    ns_owner.push((o.node.path.clone(), NameStyle::Attr, o.node.depth + 1, o.node.rank, Parent::Other));
                }
            }
        }
        if !slot_reads.is_empty() {
            let regions: Vec<(u64, usize)> = slot_reads.iter().map(|s| (s.0, 8)).collect();
            for (s, b) in slot_reads.into_iter().zip(self.batch(&regions)) {
                let v = b.map(|b| rd64(&b, 0)).unwrap_or(0);
                if v != 0 {
                    next.push(Node { addr: v, path: s.1, depth: s.2, rank: s.3, parent: Parent::Other });
                }
            }
        }
        // Module-global dicts with str keys: one level into their values.
        for (o, kind) in &containers {
            if *kind == Kind::Dict && o.node.parent == Parent::ModuleGlobals && o.node.depth < maxd {
                let used = o.w(l.dict_used);
                if used > 0 && used <= MODULE_DICT_DESCEND_MAX {
                    ns_jobs.push((NsSource::Dict(o.node.addr), NsMode::Full));
                    ns_owner.push((o.node.path.clone(), NameStyle::Key, o.node.depth + 1, o.node.rank, Parent::Other));
                }
            }
        }
        // Closures.
        next.extend(self.closure_children(&funcs));
        // Namespaces → children.
        let res = self.read_namespaces(&ns_jobs);
        for (r, (prefix, style, depth, rank, parent)) in res.into_iter().zip(ns_owner) {
            let Some(r) = r else { continue };
            for (name, v) in r.entries {
                let Some(name) = name else { continue };
                if v == self.types.none || v == 0 {
                    continue;
                }
                let path = match style {
                    NameStyle::Attr => {
                        if is_dunder(&name) {
                            continue;
                        }
                        attr_path(&prefix, &name)
                    }
                    NameStyle::Key => format!("{prefix}[{}]", quote(&name)),
                };
                next.push(Node { addr: v, path, depth, rank, parent });
            }
        }
        // Containers → samples.
        out.extend(self.sample_containers(containers));
        next
    }

    fn closure_children(&mut self, funcs: &[Obj]) -> Vec<Node> {
        let l = self.layout.clone();
        let funcs: Vec<&Obj> =
            funcs.iter().filter(|f| plausible_ptr(f.w(l.func_closure)) && plausible_ptr(f.w(l.func_code))).collect();
        if funcs.is_empty() {
            return vec![];
        }
        const MAXC: u64 = 32;
        // Stage 1: closure tuples and code objects.
        let mut regions = Vec::new();
        for f in &funcs {
            regions.push((f.w(l.func_closure), (l.tuple_items + 8 * MAXC) as usize));
            regions.push((f.w(l.func_code), 104usize));
        }
        let got = self.batch(&regions);
        let mut st = Vec::new(); // (func, cells, names tuple, nfree)
        let mut it = got.into_iter();
        for f in funcs {
            let (Some(tb), Some(cb)) = (it.next().flatten(), it.next().flatten()) else {
                self.stats.dropped += 1;
                continue;
            };
            if rd64(&tb, 8) != self.types.tuple
                || !l.refcnt_plausible(rd64(&tb, 0))
                || !l.refcnt_plausible(rd64(&cb, 0))
            {
                self.stats.dropped += 1;
                continue;
            }
            let n = rd64(&tb, 16);
            if n == 0 || n > MAXC {
                continue;
            }
            let cells: Vec<u64> = (0..n).map(|k| rd64(&tb, (l.tuple_items + 8 * k) as usize)).collect();
            let (names_tuple, nfree) = if l.code_freevars != 0 {
                (rd64(&cb, l.code_freevars as usize), None)
            } else {
                (rd64(&cb, l.code_localsplusnames as usize), Some(rd32(&cb, l.code_nfreevars as usize) as u64))
            };
            st.push((f, cells, names_tuple, nfree));
        }
        // Stage 2: cells and names tuple headers.
        let mut regions = Vec::new();
        for (_, cells, nt, _) in &st {
            regions.push((*nt, l.tuple_items as usize));
            for &c in cells {
                regions.push((c, 24usize));
            }
        }
        let got = self.batch(&regions);
        let mut it = got.into_iter();
        let mut st2 = Vec::new();
        for (f, cells, nt, nfree) in st {
            let ntb = it.next().flatten();
            let cbs: Vec<Option<Vec<u8>>> = cells.iter().map(|_| it.next().flatten()).collect();
            let Some(ntb) = ntb else { continue };
            if rd64(&ntb, 8) != self.types.tuple {
                continue;
            }
            let ntotal = rd64(&ntb, 16);
            let n = cells.len() as u64;
            let first = match nfree {
                None => 0,
                Some(nf) if nf == n && ntotal >= nf && ntotal < 1 << 16 => ntotal - nf,
                _ => continue,
            };
            if nfree.is_none() && ntotal != n {
                continue;
            }
            let refs: Vec<u64> = cbs
                .iter()
                .map(|b| match b {
                    Some(b) if rd64(b, 8) == self.types.cell && l.refcnt_plausible(rd64(b, 0)) => {
                        rd64(b, l.cell_ref as usize)
                    }
                    _ => 0,
                })
                .collect();
            st2.push((f, refs, nt + l.tuple_items + 8 * first, n));
        }
        // Stage 3: name pointers, then strings.
        let regions: Vec<(u64, usize)> = st2.iter().map(|s| (s.2, (8 * s.3) as usize)).collect();
        let got = self.batch(&regions);
        let mut ptrs = Vec::new();
        let mut st3 = Vec::new();
        for (s, b) in st2.into_iter().zip(got) {
            let Some(b) = b else { continue };
            let nps: Vec<u64> = (0..s.3 as usize).map(|k| rd64(&b, 8 * k)).collect();
            ptrs.extend(nps.iter().copied());
            st3.push((s.0, s.1, nps.len()));
        }
        let names = self.read_strs(&ptrs);
        let mut nit = names.into_iter();
        let mut out = Vec::new();
        for (f, refs, n) in st3 {
            for &v in refs.iter().take(n) {
                let name = nit.next().flatten();
                if let Some(name) = name.filter(|n| is_identifier(n)) {
                    if v != 0 && v != self.types.none {
                        out.push(Node {
                            addr: v,
                            path: format!("{}<closure>.{name}", f.node.path),
                            depth: f.node.depth + 1,
                            rank: f.node.rank,
                            parent: Parent::Other,
                        });
                    }
                }
            }
        }
        out
    }

    fn sample_containers(&mut self, containers: Vec<(Obj, Kind)>) -> Vec<ContainerSample> {
        let l = self.layout.clone();
        struct C {
            obj: Obj,
            kind: Kind,
            len: u64,
            own: u64,
            items: Vec<u64>,
            ok: bool,
        }
        let mut cs: Vec<C> = Vec::new();
        let mut dict_jobs = Vec::new();
        let mut dict_idx = Vec::new();
        for (o, kind) in containers {
            let ti = self.type_info(o.ty).unwrap();
            let hdr = ti.basicsize + if ti.flags & TPFLAGS_HAVE_GC != 0 { 16 } else { 0 };
            let (len, own, valid) = match kind {
                Kind::List => {
                    let (n, items, alloc) = (o.w(l.list_size), o.w(l.list_items), o.w(l.list_allocated));
                    let ok = n <= alloc && alloc < 1 << 34 && (alloc == 0 || plausible_ptr(items));
                    (n, hdr.saturating_add(alloc.saturating_mul(8)), ok)
                }
                Kind::Set => {
                    let (fill, used, mask) = (o.w(l.set_fill), o.w(l.set_used), o.w(l.set_mask));
                    let table = o.w(l.set_table);
                    let ok = mask < 1 << 34
                        && (mask + 1).is_power_of_two()
                        && mask >= 7
                        && used <= fill
                        && fill <= mask + 1
                        && plausible_ptr(table);
                    let tb = if ok && mask + 1 > 8 { (mask + 1) * 16 } else { 0 };
                    (used, hdr + tb, ok)
                }
                Kind::Dict => {
                    let used = o.w(l.dict_used);
                    (used, hdr, used < 1 << 34)
                }
                Kind::Deque => {
                    let n = o.w(l.deque_len);
                    let ri = o.w(l.deque_rightindex);
                    let ok = n < 1 << 40 && ri < 64 && plausible_ptr(o.w(l.deque_rightblock));
                    (n, hdr.saturating_add((n / 64 + 1).saturating_mul(528)), ok)
                }
                _ => (0, 0, false),
            };
            if !valid {
                self.stats.dropped += 1;
                continue;
            }
            if kind == Kind::Dict {
                dict_jobs.push((NsSource::Dict(o.node.addr), NsMode::Tail));
                dict_idx.push(cs.len());
            }
            cs.push(C { obj: o, kind, len, own, items: vec![], ok: true });
        }
        // Dicts: tail entries via the namespace reader (validated and retried there).
        let res = self.read_namespaces(&dict_jobs);
        for (r, &k) in res.into_iter().zip(&dict_idx) {
            match r {
                Some(r) => {
                    cs[k].items = r.entries.iter().map(|e| e.1).collect();
                    cs[k].own += r.table_bytes;
                    cs[k].len = r.used;
                }
                None => cs[k].ok = false,
            }
        }
        // Lists, sets, deques: items + header re-read, retried.
        let mut todo: Vec<usize> = (0..cs.len()).filter(|&k| cs[k].kind != Kind::Dict).collect();
        for attempt in 0..=MAX_RETRIES {
            if todo.is_empty() {
                break;
            }
            if attempt > 0 {
                self.stats.torn_retried += todo.len() as u64;
            }
            let mut regions = Vec::new();
            for &k in &todo {
                let o = &cs[k].obj;
                let r = match cs[k].kind {
                    Kind::List => {
                        let n = o.w(l.list_size);
                        let m = n.min(SAMPLE_ITEMS as u64);
                        if m == 0 {
                            (0, 0)
                        } else {
                            (o.w(l.list_items) + 8 * (n - m), (8 * m) as usize)
                        }
                    }
                    Kind::Set => {
                        let slots = (o.w(l.set_mask) + 1).min(512);
                        (o.w(l.set_table), (16 * slots) as usize)
                    }
                    Kind::Deque => {
                        let ri = o.w(l.deque_rightindex);
                        if o.w(l.deque_len) == 0 {
                            (0, 0)
                        } else {
                            (o.w(l.deque_rightblock) + 8, (8 * (ri + 1)) as usize)
                        }
                    }
                    _ => (0, 0),
                };
                regions.push(r);
                regions.push((o.node.addr, OBJ_READ));
            }
            let got = self.batch(&regions);
            let mut it = got.into_iter();
            let mut failed = Vec::new();
            for (&k, r) in todo.iter().zip(regions.chunks(2)) {
                let body = it.next().flatten();
                let hdr = it.next().flatten();
                let c = &mut cs[k];
                let o = &c.obj;
                let Some(h) = hdr else {
                    failed.push(k);
                    continue;
                };
                let hw = |off: u64| rd64(&h, off as usize);
                let same_type = hw(8) == o.ty && l.refcnt_plausible(hw(0));
                let (stable, items) = match c.kind {
                    Kind::List => {
                        let st = hw(l.list_items) == o.w(l.list_items)
                            && hw(l.list_allocated) == o.w(l.list_allocated)
                            && hw(l.list_size) <= hw(l.list_allocated);
                        let items: Vec<u64> = body
                            .as_ref()
                            .map(|b| (0..b.len() / 8).map(|i| rd64(b, 8 * i)).collect())
                            .unwrap_or_default();
                        (st && items.iter().all(|&p| p != 0), items)
                    }
                    Kind::Set => {
                        let st = hw(l.set_table) == o.w(l.set_table)
                            && hw(l.set_mask) == o.w(l.set_mask)
                            && hw(l.set_used) <= hw(l.set_fill);
                        let dummy = self.types.set_dummy;
                        let items: Vec<u64> = body
                            .as_ref()
                            .map(|b| {
                                (0..b.len() / 16)
                                    .map(|i| rd64(b, 16 * i))
                                    .filter(|&p| p != 0 && p != dummy)
                                    .take(SAMPLE_ITEMS)
                                    .collect()
                            })
                            .unwrap_or_default();
                        // whole table read: non-dummy count must equal `used`
                        let whole = o.w(l.set_mask) < 512;
                        (
                            st && (!whole
                                || items.len() as u64 == hw(l.set_used).min(SAMPLE_ITEMS as u64)
                                || items.len() == SAMPLE_ITEMS),
                            items,
                        )
                    }
                    Kind::Deque => {
                        let st = hw(l.deque_rightblock) == o.w(l.deque_rightblock)
                            && hw(l.deque_rightindex) == o.w(l.deque_rightindex);
                        let n = o.w(l.deque_len).min(SAMPLE_ITEMS as u64) as usize;
                        let items: Vec<u64> = body
                            .as_ref()
                            .map(|b| (0..b.len() / 8).rev().take(n).map(|i| rd64(b, 8 * i)).collect())
                            .unwrap_or_default();
                        (st && items.iter().all(|&p| p != 0), items)
                    }
                    _ => (false, vec![]),
                };
                let body_ok = body.is_some() || r[0].1 == 0;
                if same_type && stable && body_ok {
                    // the length is one word: take the newest value
                    c.len = match c.kind {
                        Kind::List => hw(l.list_size),
                        Kind::Set => hw(l.set_used),
                        Kind::Deque => hw(l.deque_len),
                        _ => c.len,
                    };
                    c.items = items;
                } else if !same_type {
                    c.ok = false; // no longer this container
                } else {
                    failed.push(k);
                }
            }
            todo = failed;
        }
        for &k in &todo {
            // Torn every time: keep the (single-word, validated) length, drop the sample.
            cs[k].items.clear();
            self.stats.dropped += 1;
        }
        // Item headers → type names and sizes.
        let mut item_ptrs: Vec<u64> = cs.iter().filter(|c| c.ok).flat_map(|c| c.items.iter().copied()).collect();
        item_ptrs.sort_unstable();
        item_ptrs.dedup();
        let item_ptrs: Vec<u64> = item_ptrs.into_iter().filter(|&p| plausible_ptr(p)).collect();
        let regions: Vec<(u64, usize)> = item_ptrs.iter().map(|&p| (p, 40usize)).collect();
        let got = self.batch(&regions);
        let mut hdrs: HashMap<u64, Vec<u8>> = HashMap::new();
        for (&p, b) in item_ptrs.iter().zip(got) {
            if let Some(b) = b {
                if l.refcnt_plausible(rd64(&b, 0)) {
                    hdrs.insert(p, b);
                }
            }
        }
        let tys: Vec<u64> = hdrs.values().map(|b| rd64(b, 8)).collect();
        self.resolve_types(&tys);
        let mut out = Vec::new();
        for c in cs {
            if !c.ok {
                self.stats.dropped += 1;
                continue;
            }
            let mut item_types = BTreeMap::new();
            let mut total = 0u64;
            let mut n = 0u64;
            for p in &c.items {
                let Some(h) = hdrs.get(p) else { continue };
                let Some(ti) = self.type_info(rd64(h, 8)) else { continue };
                *item_types.entry(ti.name.clone()).or_insert(0u64) += 1;
                total += self.item_size(ti, h);
                n += 1;
            }
            let mean = total.checked_div(n).unwrap_or(0);
            let ti = self.type_info(c.obj.ty).unwrap();
            out.push(ContainerSample {
                path: c.obj.node.path,
                type_name: ti.name.clone(),
                len: c.len,
                item_types,
                retained_bytes_est: c.own.saturating_add(c.len.saturating_mul(mean)),
            });
        }
        out
    }

    fn item_size(&self, ti: &TypeInfo, h: &[u8]) -> u64 {
        let l = &self.layout;
        let mut size = ti.basicsize;
        if ti.flags & TPFLAGS_HAVE_GC != 0 {
            size += 16;
        }
        if ti.flags & TPFLAGS_MANAGED_DICT != 0 && l.minor >= 11 {
            size += 16;
        }
        let w16 = rd64(h, 16);
        match ti.kind {
            Kind::Str => {
                let state = rd32(h, 32);
                let kind = ((state >> 2) & 7).max(1) as u64;
                let start = if state & (1 << 6) != 0 { l.str_ascii_data } else { l.str_compact_data };
                size = start + (w16.min(1 << 30) + 1) * kind;
            }
            Kind::Long => {
                let nd = if l.minor >= 12 { w16 >> 3 } else { (w16 as i64).unsigned_abs() };
                size += 4 * nd.min(1 << 20);
            }
            _ if ti.itemsize > 0 && ti.itemsize <= 64 => {
                size += (w16 as i64).unsigned_abs().min(1 << 24) * ti.itemsize;
            }
            _ => {}
        }
        size
    }
}

impl TypeInfo {
    fn with_refcnt_check(mut self, ok: bool) -> Self {
        self.valid = ok;
        self
    }
}

fn invalid_type(gen: u64) -> TypeInfo {
    TypeInfo {
        meta: 0,
        name_ptr: 0,
        basicsize: 0,
        itemsize: 0,
        flags: 0,
        members: 0,
        base: 0,
        dict: 0,
        dictoffset: 0,
        cached_keys: 0,
        valid: false,
        name: String::new(),
        kind: Kind::Other,
        slots: None,
        checked: gen,
    }
}

fn type_fields_sane(i: &TypeInfo) -> bool {
    i.flags & TPFLAGS_READY != 0
        && (16..=1 << 20).contains(&i.basicsize)
        && i.itemsize <= 1 << 16
        && plausible_ptr(i.meta)
        && (i.base == 0 || plausible_ptr(i.base))
        && (i.dict == 0 || plausible_ptr(i.dict))
        && (i.members == 0 || (0x1_0000..0x7fff_ffff_f000).contains(&i.members))
        && (i.cached_keys == 0 || plausible_ptr(i.cached_keys))
        && i.dictoffset.unsigned_abs() < 1 << 20
        && i.name_ptr != 0
}

/// The `Py_TPFLAGS_*_SUBCLASS` bits must agree with the kind found along `tp_base`.
fn flags_consistent(kind: Kind, flags: u64) -> bool {
    let want = match kind {
        Kind::Long => TPFLAGS_LONG_SUBCLASS,
        Kind::List => TPFLAGS_LIST_SUBCLASS,
        Kind::Tuple => TPFLAGS_TUPLE_SUBCLASS,
        Kind::Bytes => TPFLAGS_BYTES_SUBCLASS,
        Kind::Str => TPFLAGS_UNICODE_SUBCLASS,
        Kind::Dict => TPFLAGS_DICT_SUBCLASS,
        Kind::Type => TPFLAGS_TYPE_SUBCLASS,
        _ => 0,
    };
    // bool is a subclass of int: the kind chain says Long there too, fine. Other kinds: no bits.
    flags & SUBCLASS_BITS & !TPFLAGS_BYTES_SUBCLASS == want & !TPFLAGS_BYTES_SUBCLASS
        || (kind == Kind::Other && flags & SUBCLASS_BITS == 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameStyle {
    Attr,
    Key,
}

fn decode_str(b: &[u8], kind: u32) -> Option<String> {
    let s: String = match kind {
        1 => b.iter().map(|&c| c as char).collect(),
        2 => char::decode_utf16(b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])))
            .collect::<Result<_, _>>()
            .ok()?,
        4 => b
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_le_bytes(c.try_into().unwrap())))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    Some(s)
}

fn is_identifier(s: &str) -> bool {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) if c == '_' || c.is_alphabetic() => {}
        _ => return false,
    }
    cs.all(|c| c == '_' || c.is_alphanumeric())
}

fn is_dunder(s: &str) -> bool {
    s.len() > 4 && s.starts_with("__") && s.ends_with("__")
}

fn module_name_ok(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_identifier)
}

/// `prefix.name` for identifiers, `prefix["odd name"]` otherwise.
fn attr_path(prefix: &str, name: &str) -> String {
    if is_identifier(name) {
        format!("{prefix}.{name}")
    } else {
        format!("{prefix}[{}]", quote(name))
    }
}

/// A Python-style double-quoted literal, control characters escaped.
fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_control() => o.push_str(
                &format!("\\x{:02x}", c as u32).replace("\\x", if (c as u32) < 0x100 { "\\x" } else { "\\u" }),
            ),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    //! Memory-image tests. `tests/data/heap/image_3.X.json` are captured from the idle holders
    //! fixture (`tests/fixtures/holders_fixture.py 60 idle`, run with `-S`): every region one cold
    //! depth-2 scan read, the runtime and type addresses, and that scan's result. Replaying the
    //! image must give exactly that result; damaged or random images must never panic or hang.

    use super::*;
    use std::io;

    /// A memory image: non-overlapping regions by start address.
    #[derive(Clone, Default)]
    struct ImageMemory {
        regions: BTreeMap<u64, Vec<u8>>,
    }

    impl Memory for ImageMemory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
            let fault = || io::Error::other("unmapped");
            let (&start, data) = self.regions.range(..=addr).next_back().ok_or_else(fault)?;
            let off = (addr - start) as usize;
            let end = off.checked_add(buf.len()).ok_or_else(fault)?;
            buf.copy_from_slice(data.get(off..end).ok_or_else(fault)?);
            Ok(())
        }
    }

    struct Image {
        layout: HeapLayout,
        types: TypeAddrs,
        runtime: u64,
        mem: ImageMemory,
        expect: Vec<ContainerSample>,
    }

    fn hex_u64(v: &serde_json::Value) -> u64 {
        u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    fn load(name: &str) -> Image {
        let path = format!("{}/tests/data/heap/{name}", env!("CARGO_MANIFEST_DIR"));
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).unwrap();
        let layout =
            HeapLayout::for_version(j["major"].as_u64().unwrap() as u32, j["minor"].as_u64().unwrap() as u32).unwrap();
        let types = TypeAddrs::from_lookup(|s| j["types"].get(s).map(hex_u64)).unwrap();
        let mut mem = ImageMemory::default();
        for r in j["regions"].as_array().unwrap() {
            let h = r[1].as_str().unwrap().as_bytes();
            let bytes = h.chunks(2).map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap()).collect();
            mem.regions.insert(hex_u64(&r[0]), bytes);
        }
        let expect = j["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| ContainerSample {
                path: e["path"].as_str().unwrap().to_string(),
                type_name: e["type"].as_str().unwrap().to_string(),
                len: e["len"].as_u64().unwrap(),
                item_types: e["item_types"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                    .collect(),
                retained_bytes_est: e["retained_bytes_est"].as_u64().unwrap(),
            })
            .collect();
        Image { layout, types, runtime: hex_u64(&j["runtime"]), mem, expect }
    }

    const DEPTH2: ScanBudget = ScanBudget { max_objects: 200_000, max_bytes: 64 << 20, max_depth: 2 };
    const IMAGES: [&str; 3] = ["image_3.10.json", "image_3.12.json", "image_3.13.json"];

    fn get<'a>(v: &'a [ContainerSample], p: &str) -> &'a ContainerSample {
        v.iter().find(|c| c.path == p).unwrap_or_else(|| panic!("{p} missing"))
    }

    #[test]
    fn replay_real_images() {
        for name in IMAGES {
            let img = load(name);
            let mut sc = HeapScanner::new(Unbatched(img.mem.clone()), img.layout.clone(), img.types, img.runtime);
            let (got, stats) = sc.scan(&DEPTH2);
            assert_eq!(got, img.expect, "{name}");
            assert_eq!((stats.dropped, stats.torn_retried, stats.cut_by_budget), (0, 0, false), "{name}: {stats:?}");
            // The fixture after 100 ticks, every naming route.
            let failed = get(&got, "__main__.FAILED");
            assert_eq!((failed.type_name.as_str(), failed.len), ("list", 100));
            assert_eq!(failed.item_types.get("ValueError"), Some(&64));
            assert_eq!(get(&got, "__main__.CALLBACKS").item_types.get("function"), Some(&64));
            assert_eq!(get(&got, "__main__.DISPATCHER.pending").item_types.get("tuple"), Some(&64));
            assert_eq!(get(&got, "__main__.CACHE").len, 100);
            assert_eq!(get(&got, "__main__.Registry.handlers").len, 3);
            assert_eq!(get(&got, "__main__.HIT<closure>.seen").len, 4);
            assert_eq!(get(&got, "__main__.SLOTTED.queue").type_name, "collections.deque");
            assert_eq!(get(&got, "__main__.D2.items").len, 2);
            assert_eq!(get(&got, "__main__.D3.attr39").len, 1);
            assert_eq!(get(&got, "__main__.REGISTRY[\"jobs\"]").len, 6);
            assert_eq!(get(&got, "__main__.COUNTS").type_name, "Counter");
            // A second scan with warm caches gives the same answer with fewer bytes.
            let (again, stats2) = sc.scan(&DEPTH2);
            assert_eq!(again, got, "{name} warm");
            assert!(stats2.bytes_read < stats.bytes_read, "{name}: {stats2:?} vs {stats:?}");
        }
    }

    #[test]
    fn budget_cuts_are_reported() {
        let img = load("image_3.12.json");
        let mut sc = HeapScanner::new(Unbatched(img.mem.clone()), img.layout.clone(), img.types, img.runtime);
        for b in [ScanBudget { max_objects: 50, ..DEPTH2 }, ScanBudget { max_bytes: 100_000, ..DEPTH2 }] {
            let (got, stats) = sc.scan(&b);
            assert!(stats.cut_by_budget, "{b:?}: {stats:?}");
            assert!(stats.objects_visited as usize <= b.max_objects && stats.bytes_read as usize <= b.max_bytes);
            // Whatever was found is still correct.
            for c in &got {
                if let Some(e) = img.expect.iter().find(|e| e.path == c.path) {
                    assert_eq!(c.len, e.len, "{}", c.path);
                }
            }
        }
        let (got, _) = sc.scan(&ScanBudget { max_depth: 1, ..DEPTH2 });
        assert!(got.iter().all(|c| !c.path.contains("Registry.") && !c.path.contains('[')));
        assert!(got.iter().any(|c| c.path == "__main__.FAILED"));
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    fn sane(v: &[ContainerSample]) {
        let mut paths: Vec<&str> = v.iter().map(|c| c.path.as_str()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), v.len(), "duplicate paths");
        for c in v {
            assert!(!c.path.is_empty() && c.path.chars().all(|ch| !ch.is_control()), "{:?}", c.path);
            assert!(c.item_types.values().sum::<u64>() <= SAMPLE_ITEMS as u64);
            assert!(c.len < 1 << 40);
        }
    }

    /// A real image with random bytes flipped: the scanner must not panic or hang, and what it
    /// reports must still be well-formed.
    #[test]
    fn damaged_images_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for name in IMAGES {
            let img = load(name);
            let keys: Vec<u64> = img.mem.regions.keys().copied().collect();
            for round in 0..40 {
                let mut mem = img.mem.clone();
                let flips = 1 + (rng.next() % 400) as usize;
                for _ in 0..flips {
                    let k = keys[(rng.next() % keys.len() as u64) as usize];
                    let r = mem.regions.get_mut(&k).unwrap();
                    let i = (rng.next() % r.len() as u64) as usize;
                    r[i] = match rng.next() % 3 {
                        0 => rng.next() as u8,
                        1 => r[i] ^ (1 << (rng.next() % 8)),
                        _ => 0xff,
                    };
                }
                let t = Instant::now();
                let mut sc = HeapScanner::new(Unbatched(mem), img.layout.clone(), img.types, img.runtime);
                let (got, stats) = sc.scan(&ScanBudget::default());
                assert!(t.elapsed().as_secs_f64() < 10.0, "{name} round {round}: {stats:?}");
                sane(&got);
            }
        }
    }

    /// Random memory (own xorshift, no crates): words are random, pointers into the image, small
    /// ints, the runtime or the known type addresses. Must terminate without panicking.
    #[test]
    fn random_memory_never_panics() {
        for minor in 10..=14 {
            let layout = HeapLayout::for_version(3, minor).unwrap();
            let (mut visited, mut found) = (0u64, 0u64);
            for seed in 1..=60u64 {
                let mut rng = XorShift(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
                let base = 0x5555_0000_0000u64;
                let size = 1usize << 18;
                let nreg = 4;
                let region_start = |k: u64| base + k * 0x10_0000;
                let types = TypeAddrs {
                    list: region_start(0) + 0x100,
                    tuple: region_start(0) + 0x500,
                    dict: region_start(0) + 0x900,
                    set: region_start(0) + 0xd00,
                    frozenset: region_start(0) + 0x1100,
                    module: region_start(0) + 0x1500,
                    unicode: region_start(0) + 0x1900,
                    type_: region_start(0) + 0x1d00,
                    function: region_start(0) + 0x2100,
                    cell: region_start(0) + 0x2500,
                    odict: region_start(0) + 0x2900,
                    base_object: region_start(0) + 0x2d00,
                    long: region_start(0) + 0x3100,
                    set_dummy: region_start(0) + 0x3500,
                    none: region_start(0) + 0x3900,
                };
                let special = [
                    types.list,
                    types.dict,
                    types.type_,
                    types.unicode,
                    types.module,
                    types.set,
                    types.function,
                    types.base_object,
                ];
                let mut mem = ImageMemory::default();
                for k in 0..nreg {
                    let mut v = vec![0u8; size];
                    for w in v.chunks_exact_mut(8) {
                        let r = rng.next();
                        let word = match r % 8 {
                            0 | 1 => region_start(rng.next() % nreg) + (rng.next() % size as u64) / 8 * 8,
                            2 => rng.next() % 64,
                            3 => special[(rng.next() % special.len() as u64) as usize],
                            4 => 0,
                            5 => rng.next() & 0xffff_ffff,
                            _ => rng.next(),
                        };
                        w.copy_from_slice(&word.to_le_bytes());
                    }
                    mem.regions.insert(region_start(k), v);
                }
                // Plant valid-looking skeletons so random objects reach the deep readers:
                // type objects at the type addresses, str objects, and runtime → interp →
                // sys.modules dict with a valid keys header and random entries.
                plant(&mut mem, &layout, &types, &mut rng, region_start(0), region_start(1));
                let runtime = region_start(1);
                let t = Instant::now();
                let mut sc = HeapScanner::new(Unbatched(mem), layout.clone(), types, runtime);
                for _ in 0..2 {
                    let (got, stats) = sc.scan(&ScanBudget { max_objects: 20_000, max_bytes: 8 << 20, max_depth: 3 });
                    sane(&got);
                    visited += stats.objects_visited;
                    found += got.len() as u64;
                }
                assert!(t.elapsed().as_secs_f64() < 10.0, "3.{minor} seed {seed}");
            }
            // The planted skeletons must make random objects reach the readers.
            eprintln!("3.{minor}: {visited} objects visited, {found} containers reported over 120 random scans");
            assert!(visited > 1000, "3.{minor}: fuzz stays shallow ({visited} objects)");
        }
    }

    fn put(mem: &mut ImageMemory, addr: u64, word: u64) {
        let (&start, r) = mem.regions.range_mut(..=addr).next_back().unwrap();
        let o = (addr - start) as usize;
        r[o..o + 8].copy_from_slice(&word.to_le_bytes());
    }

    fn plant(mem: &mut ImageMemory, l: &HeapLayout, t: &TypeAddrs, rng: &mut XorShift, r0: u64, r1: u64) {
        let names = [
            (t.list, "list", TPFLAGS_LIST_SUBCLASS | TPFLAGS_HAVE_GC),
            (t.tuple, "tuple", TPFLAGS_TUPLE_SUBCLASS),
            (t.dict, "dict", TPFLAGS_DICT_SUBCLASS),
            (t.set, "set", 0),
            (t.frozenset, "frozenset", 0),
            (t.module, "module", 0),
            (t.unicode, "str", TPFLAGS_UNICODE_SUBCLASS),
            (t.type_, "type", TPFLAGS_TYPE_SUBCLASS),
            (t.function, "function", 0),
            (t.cell, "cell", 0),
            (t.odict, "collections.OrderedDict", TPFLAGS_DICT_SUBCLASS),
            (t.base_object, "object", 0),
            (t.long, "int", TPFLAGS_LONG_SUBCLASS),
        ];
        for (k, &(a, name, flags)) in names.iter().enumerate() {
            let np = r0 + 0x8000 + 32 * k as u64;
            let (&start, r) = mem.regions.range_mut(..=np).next_back().unwrap();
            let o = (np - start) as usize;
            r[o..o + 32].fill(0);
            r[o..o + name.len()].copy_from_slice(name.as_bytes());
            put(mem, a, 1);
            put(mem, a + 8, t.type_);
            put(mem, a + l.tp_name, np);
            put(mem, a + l.tp_basicsize, 16 + 8 * (rng.next() % 8));
            put(mem, a + l.tp_itemsize, 0);
            put(
                mem,
                a + l.tp_flags,
                flags
                    | TPFLAGS_READY
                    | if rng.next().is_multiple_of(2) {
                        TPFLAGS_HEAPTYPE | TPFLAGS_MANAGED_DICT | TPFLAGS_INLINE_VALUES
                    } else {
                        0
                    },
            );
            put(
                mem,
                a + l.tp_base,
                if a == t.base_object {
                    0
                } else if a == t.odict {
                    t.dict
                } else {
                    t.base_object
                },
            );
            put(mem, a + l.tp_dictoffset, if rng.next().is_multiple_of(2) { 16 } else { 0 });
            put(mem, a + l.tp_members, 0);
            put(mem, a + l.tp_dict, 0);
            put(mem, a + l.ht_cached_keys, if rng.next().is_multiple_of(4) { r0 + 0x3_0000 } else { 0 });
        }
        // str objects: compact ASCII identifiers; random words below point at them often.
        let strs: Vec<u64> = (0..64).map(|k| r0 + 0xa000 + 128 * k).collect();
        for (k, &sa) in strs.iter().enumerate() {
            put(mem, sa, 1);
            put(mem, sa + 8, t.unicode);
            put(mem, sa + 16, 3);
            put(mem, sa + 32, (1 << 2) | (1 << 5) | (1 << 6));
            let text = [b'a' + (k % 26) as u8, b'_', b'a' + (k / 26) as u8, 0];
            let d = sa + l.str_ascii_data;
            let (&start, r) = mem.regions.range_mut(..=d).next_back().unwrap();
            let o = (d - start) as usize;
            r[o..o + 4].copy_from_slice(&text);
        }
        // Sprinkle str/type pointers through the random words of region 1..
        let keys: Vec<u64> = mem.regions.keys().copied().collect();
        for _ in 0..4000 {
            let k = keys[1 + (rng.next() % (keys.len() as u64 - 1)) as usize];
            let off = (rng.next() % 0x1_0000) / 8 * 8;
            let w = if rng.next().is_multiple_of(2) {
                strs[(rng.next() % 64) as usize]
            } else {
                [t.list, t.dict, t.set, t.module, t.type_, t.function][(rng.next() % 6) as usize]
            };
            put(mem, k + off, w);
        }
        // runtime (= r1) → interp → sys.modules; 8 planted modules whose globals dicts hold
        // random pointers, planted lists/sets/dicts with sane headers and random contents.
        let interp = r1 + 0x1000;
        put(mem, r1 + l.runtime_interp_main, interp);
        put(mem, interp + l.interp_modules, r1 + 0x4000);
        let rand_ptr =
            |rng: &mut XorShift| keys[(rng.next() % keys.len() as u64) as usize] + (rng.next() % 0xf000) / 16 * 16;
        let mut objs = Vec::new();
        for k in 0..24u64 {
            let a = r1 + 0xc000 + 0x100 * k;
            put(mem, a, 1 + rng.next() % 3);
            match k % 3 {
                0 => {
                    put(mem, a + 8, t.list);
                    let alloc = rng.next() % 100;
                    put(mem, a + l.list_size, rng.next() % (alloc + 1));
                    put(mem, a + l.list_items, rand_ptr(rng));
                    put(mem, a + l.list_allocated, alloc);
                }
                1 => {
                    put(mem, a + 8, t.set);
                    let mask = (8u64 << (rng.next() % 6)) - 1;
                    let fill = rng.next() % (mask + 1);
                    put(mem, a + l.set_fill, fill);
                    put(mem, a + l.set_used, rng.next() % (fill + 1));
                    put(mem, a + l.set_mask, mask);
                    put(mem, a + l.set_table, rand_ptr(rng));
                }
                _ => {
                    let vals: Vec<u64> = (0..8).map(|_| rand_ptr(rng)).collect();
                    plant_dict(mem, l, t, a, r1 + 0x2_0000 + 0x400 * k, &strs[..8], &vals);
                }
            }
            objs.push(a);
        }
        let mut mods = Vec::new();
        for k in 0..8u64 {
            let m = r1 + 0x8000 + 0x100 * k;
            put(mem, m, 1);
            put(mem, m + 8, t.module);
            put(mem, m + l.module_dict, m + 0x80);
            let vals: Vec<u64> = (0..30)
                .map(|_| {
                    if rng.next().is_multiple_of(2) {
                        objs[(rng.next() % objs.len() as u64) as usize]
                    } else {
                        rand_ptr(rng)
                    }
                })
                .collect();
            plant_dict(mem, l, t, m + 0x80, r1 + 0x3_0000 + 0x800 * k, &strs[8..38], &vals);
            mods.push(m);
        }
        let vals: Vec<u64> = (0..40).map(|k| if k < 8 { mods[k] } else { rand_ptr(rng) }).collect();
        plant_dict(mem, l, t, r1 + 0x4000, r1 + 0x5000, &strs[..40], &vals);
    }

    /// A combined dict at `a` with a valid keys object at `keys_obj` (64 slots).
    fn plant_dict(
        mem: &mut ImageMemory,
        l: &HeapLayout,
        t: &TypeAddrs,
        a: u64,
        keys_obj: u64,
        names: &[u64],
        vals: &[u64],
    ) {
        let n = names.len().min(vals.len()) as u64;
        put(mem, a, 1);
        put(mem, a + 8, t.dict);
        put(mem, a + l.dict_used, n);
        put(mem, a + l.dict_keys, keys_obj);
        put(mem, a + l.dict_values, 0);
        put(mem, keys_obj, 1);
        let (entries, esize, koff) = match l.keys {
            KeysLayout::V310 => {
                put(mem, keys_obj + 8, 64);
                put(mem, keys_obj + 32, n);
                (keys_obj + 40 + 64, 24, 8)
            }
            KeysLayout::V311 => {
                put(mem, keys_obj + 8, 6 | (6 << 8) | (1 << 16));
                put(mem, keys_obj + 24, n);
                (keys_obj + 32 + 64, 16, 0)
            }
        };
        for k in 0..n {
            put(mem, entries + k * esize + koff, names[k as usize]);
            put(mem, entries + k * esize + koff + 8, vals[k as usize]);
        }
    }

    #[test]
    fn layout_table_bounds() {
        assert!(HeapLayout::for_version(3, 9).is_none());
        assert!(HeapLayout::for_version(3, 15).is_none());
        assert!(HeapLayout::for_version(2, 12).is_none());
        let l14 = HeapLayout::for_version(3, 14).unwrap();
        assert_eq!((l14.tuple_items, l14.interp_modules, l14.runtime_interp_main), (32, 7688, 816));
        assert!(l14.refcnt_plausible(0x0005_0000_c000_0000));
        assert!(!l14.refcnt_plausible(0x0000_7f00_0000_0001));
        let l12 = HeapLayout::for_version(3, 12).unwrap();
        assert!(l12.refcnt_plausible(0xffff_ffff) && !l12.refcnt_plausible(0) && !l12.refcnt_plausible(1 << 40));
        assert!(TypeAddrs::from_lookup(|s| (s != "_PySet_Dummy").then_some(0x1000)).is_none());
        assert_eq!(TypeAddrs::SYMBOLS.len(), 15);
    }

    #[test]
    fn path_formatting() {
        assert_eq!(attr_path("m", "x"), "m.x");
        assert_eq!(attr_path("m", "a b"), "m[\"a b\"]");
        assert_eq!(quote("q\"\n"), "\"q\\\"\\x0a\"");
        assert!(is_dunder("__builtins__") && !is_dunder("__") && !is_dunder("_x_"));
        assert!(module_name_ok("a.b_c") && !module_name_ok("a..b") && !module_name_ok(""));
    }
}
