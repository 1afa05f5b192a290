//! Type validation: which type an object has, whether that type object is sane (readable,
//! `Py_TPFLAGS_READY`, its own type `type` or a metatype, sane sizes, a `tp_base` chain that
//! reaches `object`, subclass flag bits consistent with that chain: containers §4), what kind of
//! object it makes, and the `__slots__` members of heap types. Results are cached per type address
//! across scans and re-checked once per scan.

use std::collections::{HashMap, HashSet};

use super::paths::is_identifier;
use super::{plausible_ptr, Scan, MAX_BASE_CHAIN, MAX_TYPE_ROUNDS};
use crate::python::addrs::AddrMap;
use crate::remote::{le_u32, le_u64};

pub(crate) const TPFLAGS_INLINE_VALUES: u64 = 1 << 2;
pub(crate) const TPFLAGS_MANAGED_DICT: u64 = 1 << 4;
pub(crate) const TPFLAGS_HEAPTYPE: u64 = 1 << 9;
pub(crate) const TPFLAGS_READY: u64 = 1 << 12;
pub(crate) const TPFLAGS_HAVE_GC: u64 = 1 << 14;
pub(crate) const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
pub(crate) const TPFLAGS_LIST_SUBCLASS: u64 = 1 << 25;
pub(crate) const TPFLAGS_TUPLE_SUBCLASS: u64 = 1 << 26;
pub(crate) const TPFLAGS_BYTES_SUBCLASS: u64 = 1 << 27;
pub(crate) const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;
pub(crate) const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;
pub(crate) const TPFLAGS_BASE_EXC_SUBCLASS: u64 = 1 << 30;
pub(crate) const TPFLAGS_TYPE_SUBCLASS: u64 = 1 << 31;
pub(crate) const SUBCLASS_BITS: u64 = TPFLAGS_LONG_SUBCLASS
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
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
    /// `bytearray`: its buffer is a separate allocation (`ob_alloc` @24).
    ByteArray,
    Type,
    Function,
    Cell,
    NoneType,
    /// Anything else (instances of classes, builtin objects).
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct TypeInfo {
    // Raw fields, compared on revalidation.
    pub(crate) meta: u64,
    pub(crate) name_ptr: u64,
    pub(crate) basicsize: u64,
    pub(crate) itemsize: u64,
    pub(crate) flags: u64,
    pub(crate) members: u64,
    pub(crate) base: u64,
    pub(crate) dict: u64,
    pub(crate) dictoffset: i64,
    pub(crate) cached_keys: u64,
    // Derived.
    pub(crate) valid: bool,
    pub(crate) name: super::Name,
    pub(crate) kind: Kind,
    /// `__slots__` object members along the heap-type `tp_base` chain: (name, offset).
    pub(crate) slots: Option<Vec<(String, u64)>>,
    /// Scan generation in which the raw fields were last re-read and found unchanged.
    pub(crate) checked: u64,
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
    pub(crate) fn heap(&self) -> bool {
        self.flags & TPFLAGS_HEAPTYPE != 0
    }
}

/// Type information kept across scans, keyed by type address.
#[derive(Default)]
pub(crate) struct TypeCache {
    map: AddrMap<TypeInfo>,
    /// A heap type's `__module__`, by (type address, its dict's address); `None`: not a str.
    pub(crate) modules: std::collections::HashMap<(u64, u64), Option<String>>,
    /// The current scan's number: an entry is trusted only when `checked` equals it.
    generation: u64,
}

impl TypeCache {
    /// Starts a scan: every entry must be re-read before it is trusted again. A cache grown past
    /// 50 000 types (a process making classes at run time) starts over.
    pub(crate) fn next_generation(&mut self) {
        self.generation += 1;
        if self.map.len() > 50_000 {
            self.map.clear();
        }
        if self.modules.len() > 50_000 {
            self.modules.clear();
        }
    }

    fn checked_now(&self, t: u64) -> Option<&TypeInfo> {
        self.map.get(&t).filter(|i| i.checked == self.generation)
    }

    fn invalidate(&mut self, t: u64) {
        self.map.insert(t, invalid_type(self.generation));
    }
}

/// A type's dependency (its metatype or base) is either known in this scan or still to be read.
enum Dep<T> {
    Known(T),
    Missing(u64),
}

impl Scan<'_> {
    /// A type checked in this scan and found valid.
    pub(crate) fn type_info(&self, t: u64) -> Option<&TypeInfo> {
        self.type_cache.checked_now(t).filter(|i| i.valid)
    }

    fn parse_type(&self, b: &[u8]) -> TypeInfo {
        let l = self.layout;
        let w = |off: u64| le_u64(b, off as usize);
        let flags = w(l.tp_flags);
        let cached_keys = if flags & TPFLAGS_HEAPTYPE != 0 { w(l.ht_cached_keys) } else { 0 };
        TypeInfo {
            meta: w(8),
            name_ptr: w(l.tp_name),
            basicsize: w(l.tp_basicsize),
            itemsize: w(l.tp_itemsize),
            flags,
            members: w(l.tp_members),
            base: w(l.tp_base),
            dict: w(l.tp_dict),
            dictoffset: w(l.tp_dictoffset) as i64,
            cached_keys,
            valid: l.refcnt_plausible(w(0)),
            name: "".into(),
            kind: Kind::Other,
            slots: None,
            checked: 0,
        }
    }

    /// Makes sure every address in `addrs` has a `TypeInfo` checked in this scan (valid or not).
    /// A type is valid only once its metatype and base are; those are read in later rounds.
    pub(crate) fn resolve_types(&mut self, addrs: &[u64]) {
        let mut want: Vec<u64> = addrs.iter().copied().filter(|&a| self.type_cache.checked_now(a).is_none()).collect();
        want.sort_unstable();
        want.dedup();
        // Read, named, waiting for their metatype and base.
        let mut pending: HashMap<u64, TypeInfo> = HashMap::new();
        for _round in 0..MAX_TYPE_ROUNDS {
            let fresh: Vec<u64> = want
                .iter()
                .copied()
                .filter(|a| !pending.contains_key(a) && self.type_cache.checked_now(*a).is_none())
                .collect();
            want.clear();
            if !fresh.is_empty() {
                self.read_types(&fresh, &mut pending);
            }
            want = self.finish_types(&mut pending);
            want.sort_unstable();
            want.dedup();
            // Nothing to read: done, or the rest depend on each other (a cycle) and cannot finish.
            if want.is_empty() {
                break;
            }
        }
        for (a, _) in pending {
            self.type_cache.invalidate(a);
        }
        for a in want {
            if self.type_cache.checked_now(a).is_none() {
                self.type_cache.invalidate(a);
            }
        }
    }

    /// Reads the type objects at `fresh` and their names; the sane ones join `pending`, an
    /// unchanged cached one without re-reading its name.
    fn read_types(&mut self, fresh: &[u64], pending: &mut HashMap<u64, TypeInfo>) {
        let l = self.layout;
        let heap_read = (l.ht_cached_keys + 8) as usize;
        // Two regions per type: the fields up to tp_dictoffset, and the heap-type
        // `ht_cached_keys` word (for static types that word is unused and may fail).
        let head = (l.tp_dictoffset + 8) as usize;
        let mut regions: Vec<(u64, usize)> = Vec::with_capacity(2 * fresh.len());
        for &a in fresh {
            regions.push((a, head));
            regions.push((a.wrapping_add(l.ht_cached_keys), 8));
        }
        let raw = self.batch(&regions);
        let mut named = Vec::new();
        for (&a, pair) in fresh.iter().zip(raw.chunks(2)) {
            let Some(b) = pair[0].as_ref().map(|h| {
                let mut b = h.to_vec();
                if let Some(ck) = &pair[1] {
                    b.resize(heap_read, 0);
                    b[l.ht_cached_keys as usize..heap_read].copy_from_slice(ck);
                }
                b
            }) else {
                self.type_cache.invalidate(a);
                continue;
            };
            let mut info = self.parse_type(&b);
            if info.flags & TPFLAGS_HEAPTYPE != 0 && b.len() < heap_read {
                info.valid = false;
            }
            if !info.valid || !type_fields_sane(&info) {
                self.type_cache.invalidate(a);
                continue;
            }
            if let Some(old) = self.type_cache.map.get(&a) {
                if old.valid && old.raw_eq(&info) {
                    // Unchanged: its name and slots still hold; its base and metatype are
                    // re-checked like a new type's.
                    let mut old = old.clone();
                    old.checked = self.type_cache.generation;
                    pending.insert(a, old);
                    continue;
                }
            }
            named.push((a, info));
        }
        let ptrs: Vec<u64> = named.iter().map(|(_, i)| i.name_ptr).collect();
        let names = self.read_cstrs(&ptrs);
        for ((a, mut info), name) in named.into_iter().zip(names) {
            match name {
                Some(name) => {
                    info.name = name.into();
                    info.slots = None;
                    pending.insert(a, info);
                }
                None => self.type_cache.invalidate(a),
            }
        }
    }

    /// Moves every pending type whose metatype and base are known into the cache (valid or
    /// not), until no more can move; returns the dependencies still to be read.
    fn finish_types(&mut self, pending: &mut HashMap<u64, TypeInfo>) -> Vec<u64> {
        let mut want = Vec::new();
        let mut progress = true;
        let mut guard = 0;
        while progress && guard < 1000 {
            guard += 1;
            progress = false;
            let keys: Vec<u64> = pending.keys().copied().collect();
            for a in keys {
                let (meta, base) = {
                    let info = &pending[&a];
                    (self.meta_check(a, info), self.base_check(a, info))
                };
                let (meta_ok, base_kind) = match (meta, base) {
                    (Dep::Known(m), Dep::Known(b)) => (m, b),
                    (meta, base) => {
                        for dep in [dep_missing(&meta), dep_missing(&base)].into_iter().flatten() {
                            if !pending.contains_key(&dep) {
                                want.push(dep);
                            }
                        }
                        continue;
                    }
                };
                let Some(mut info) = pending.remove(&a) else { continue };
                progress = true;
                match base_kind {
                    Some(bk) if meta_ok => {
                        let kind = self.own_kind(a, &info.name).unwrap_or(bk);
                        info.kind = kind;
                        info.valid = flags_consistent(kind, info.flags);
                    }
                    _ => info.valid = false,
                }
                info.checked = self.type_cache.generation;
                if !info.valid {
                    info = invalid_type(self.type_cache.generation);
                }
                self.type_cache.map.insert(a, info);
            }
        }
        want
    }

    /// Whether the metatype of type `a` makes it a type: `type` itself or a valid metatype.
    fn meta_check(&self, a: u64, info: &TypeInfo) -> Dep<bool> {
        if info.meta == self.types.type_ {
            return Dep::Known(true);
        }
        if info.meta == a {
            return Dep::Known(false);
        }
        match self.type_cache.checked_now(info.meta) {
            Some(m) => Dep::Known(m.valid && m.flags & TPFLAGS_TYPE_SUBCLASS != 0 && m.kind == Kind::Type),
            None => Dep::Missing(info.meta),
        }
    }

    /// The kind inherited along `tp_base`: `None` inside when the chain is broken.
    fn base_check(&self, a: u64, info: &TypeInfo) -> Dep<Option<Kind>> {
        if info.base == 0 {
            return Dep::Known((a == self.types.base_object).then_some(Kind::Other));
        }
        if info.base == a {
            return Dep::Known(None);
        }
        match self.type_cache.checked_now(info.base) {
            Some(b) => Dep::Known(b.valid.then_some(b.kind)),
            None => Dep::Missing(info.base),
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
            _ if name == "bytearray" => Kind::ByteArray,
            _ if name == "NoneType" => Kind::NoneType,
            _ => return None,
        })
    }

    /// `__slots__` members (object-typed) of `t` and its heap-type bases; cached per type.
    pub(crate) fn resolve_slots(&mut self, tys: &[u64]) {
        let l = self.layout;
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
        let regions: Vec<(u64, usize)> = all
            .iter()
            .map(|&t| (self.type_info(t).map(|i| i.members).unwrap_or(0), MAX_MEMBERS * l.member_size as usize))
            .collect();
        let got = self.batch(&regions);
        let mut members: HashMap<u64, Vec<(u64, u64)>> = HashMap::new(); // type → (name ptr, offset)
        let mut name_ptrs = Vec::new();
        for (&t, b) in all.iter().zip(got) {
            let Some(b) = b else { continue };
            let basic = self.type_info(t).map(|i| i.basicsize).unwrap_or(0);
            let v = slot_members(&b, basic, l.member_size as usize);
            name_ptrs.extend(v.iter().map(|m| m.0));
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
            if let Some(i) = self.type_cache.map.get_mut(&t) {
                i.slots = Some(slots);
            }
        }
    }

    /// Reads NUL-terminated C strings (type and member names): printable, 1..=200 bytes.
    pub(crate) fn read_cstrs(&mut self, ptrs: &[u64]) -> Vec<Option<String>> {
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
}

/// Members read per type (`PyMemberDef` array, NULL-name terminated).
const MAX_MEMBERS: usize = 32;

/// The `__slots__` members in a type's `PyMemberDef` array `b`: (name pointer, offset).
fn slot_members(b: &[u8], basicsize: u64, member_size: usize) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    for k in 0..MAX_MEMBERS {
        let o = k * member_size;
        let name = le_u64(b, o);
        if name == 0 {
            break;
        }
        let mtype = le_u32(b, o + 8);
        let off = le_u64(b, o + 16);
        let flags = le_u32(b, o + 24);
        // T_OBJECT (6) / T_OBJECT_EX (16), not READONLY: what __slots__ creates.
        if (mtype == 6 || mtype == 16)
            && flags & 1 == 0
            && off >= 16
            && off < basicsize
            && basicsize - off >= 8
            && off.is_multiple_of(8)
        {
            v.push((name, off));
        }
    }
    v
}

fn dep_missing<T>(d: &Dep<T>) -> Option<u64> {
    match d {
        Dep::Missing(a) => Some(*a),
        Dep::Known(_) => None,
    }
}

pub(crate) fn invalid_type(gen: u64) -> TypeInfo {
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
        name: "".into(),
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
