//! What the walk follows beyond namespaces and closures, so that anything reachable from a root
//! is reachable by the view (census §6, "outgoing references per type"):
//! * the items of lists, tuples, deques, sets and frozensets → `PATH[3]`, `PATH{#3}` (the 4th
//!   member met in a set's table); dict values are read as namespaces (`PATH["key"]`, `PATH[#3]`
//!   for the 4th entry when its key is not a str);
//! * the fields C objects keep references in: bound methods (`.__func__`, `.__self__`), builtin
//!   methods (`.__self__`), `functools.partial` (`.func`, `.args`, `.keywords`), class and static
//!   methods, tracebacks (`.tb_next`, `.tb_frame`), exceptions (`.args`, `.__traceback__`,
//!   `.__context__`, `.__cause__`), asyncio futures and tasks (`._callbacks`, `.result()`,
//!   `.exception()`), `functools.lru_cache` wrappers (`<lru_cache>`, `.__wrapped__`), and a
//!   function's `.__defaults__`, `.__kwdefaults__` and attributes;
//! * a frame object's locals (roots.rs): `PATH.tb_frame → request`.
//!
//! Each container gives at most [`FOLLOW_ITEMS`] of its items, the newest where it has an order;
//! the rest are counted in [`ScanStats::items_not_followed`](super::ScanStats).

use super::containers::Seq;
use super::layout::HeapLayout;
use super::paths::{PathId, Seg};
use super::types::{Kind, TypeInfo, TPFLAGS_BASE_EXC_SUBCLASS};
use super::{plausible_ptr, Node, Obj, Parent, Sample, Scan, OBJ_READ, SAMPLE_ITEMS};
use crate::python::addrs::AddrMap;
use crate::remote::le_u64;

/// Items followed per container.
pub const FOLLOW_ITEMS: u64 = 1024;
/// Set table slots read to find [`FOLLOW_ITEMS`] members.
const SET_SLOTS_FOLLOWED: u64 = 4 * FOLLOW_ITEMS;
/// `tp_base` links looked through for a known C base (a Python subclass of `asyncio.Future`).
const MAX_BASES: usize = 8;

/// Reference fields (offset in the object, how the value is named) of C objects, by `tp_name`
/// of the type or of a base. Offsets are the same in 3.10–3.15 (census §6, §5.3).
const C_FIELDS: &[(&str, &[(u64, &str)])] = &[
    ("method", &[(16, ".__func__"), (24, ".__self__")]),
    ("builtin_function_or_method", &[(24, ".__self__")]),
    ("classmethod", &[(16, ".__func__")]),
    ("staticmethod", &[(16, ".__func__")]),
    ("functools.partial", &[(16, ".func"), (24, ".args"), (32, ".keywords")]),
    ("traceback", &[(16, ".tb_next"), (24, ".tb_frame")]),
    ("functools._lru_cache_wrapper", &[(72, "<lru_cache>"), (88, ".__wrapped__")]),
    ("_asyncio.Future", FUTURE_FIELDS),
    ("_asyncio.Task", FUTURE_FIELDS),
];
/// A Task is a Future: the same fields before its own (its coroutine is a root already).
const FUTURE_FIELDS: &[(u64, &str)] =
    &[(24, "._callbacks[0]"), (40, "._callbacks"), (48, ".exception()"), (64, ".result()")];

/// One container's items on their way to nodes.
struct Items<'o> {
    obj: &'o Obj,
    seq: Option<Seq>,
    /// Index of the first item read (lists and tuples), for naming.
    first: u64,
    /// The length when read.
    len: u64,
    /// A reported container (list, set, deque): its newest items are its sample too.
    reported: bool,
}

impl Scan<'_> {
    /// The values of the reference fields of C objects and of functions (`objs` are below the
    /// depth limit).
    pub(crate) fn field_children(&mut self, objs: &[&Obj]) -> Vec<Node> {
        let l = self.layout;
        let mut out = Vec::new();
        for o in objs {
            let Some(ti) = self.type_info(o.ty) else { continue };
            let fields: Vec<(u64, &str)> = if ti.kind == Kind::Function {
                vec![(l.func_defaults, ".__defaults__"), (l.func_kwdefaults, ".__kwdefaults__")]
            } else if ti.flags & TPFLAGS_BASE_EXC_SUBCLASS != 0 {
                let tb = l.exc_traceback;
                vec![(24, ".args"), (tb, ".__traceback__"), (tb + 8, ".__context__"), (tb + 16, ".__cause__")]
            } else {
                self.c_fields(ti).to_vec()
            };
            for (off, label) in fields {
                let v = if off as usize + 8 <= OBJ_READ { o.w(off) } else { 0 };
                if plausible_ptr(v) && v != self.types.none {
                    out.push(child(o, self.paths.child(o.node.path, Seg::Field(label)), v));
                }
            }
        }
        out
    }

    /// The reference fields of the C type of `ti` or of its nearest known base.
    fn c_fields(&self, ti: &TypeInfo) -> &'static [(u64, &'static str)] {
        let mut t = Some(ti);
        for _ in 0..MAX_BASES {
            let Some(cur) = t else { break };
            if let Some((_, f)) = C_FIELDS.iter().find(|(n, _)| **n == *cur.name) {
                return f;
            }
            t = self.type_info(cur.base);
        }
        &[]
    }

    /// Up to [`FOLLOW_ITEMS`] items of each list, tuple, deque, set and frozenset in `objs`
    /// (below the depth limit). A body whose header changed while it was read is left for the
    /// next scan (counted as dropped).
    /// The newest items of each list, set and deque read here are also its sample for the
    /// report (`samples`, by address), so sampling does not read them again.
    pub(crate) fn item_children(&mut self, objs: &[(&Obj, Kind)], samples: &mut AddrMap<Sample>) -> Vec<Node> {
        let l = self.layout;
        let mut todo = Vec::new();
        let (mut bodies, mut headers) = (Vec::new(), Vec::new());
        for &(o, kind) in objs {
            let (seq, len, first, body) = match kind {
                Kind::Tuple => {
                    let n = o.w(16);
                    if n > 1 << 32 {
                        continue;
                    }
                    let m = n.min(FOLLOW_ITEMS);
                    (None, n, 0, (o.node.addr + l.tuple_items, 8 * m as usize))
                }
                Kind::List => {
                    let n = o.w(l.list_size);
                    if n > o.w(l.list_allocated) || n > 1 << 34 {
                        continue;
                    }
                    let m = n.min(FOLLOW_ITEMS);
                    (Some(Seq::List), n, n - m, (o.w(l.list_items) + 8 * (n - m), 8 * m as usize))
                }
                Kind::Set | Kind::FrozenSet => {
                    let mask = o.w(l.set_mask);
                    if mask >= 1 << 34 || !(mask + 1).is_power_of_two() {
                        continue;
                    }
                    let slots = (mask + 1).min(SET_SLOTS_FOLLOWED);
                    (Some(Seq::Set), o.w(l.set_used), 0, (o.w(l.set_table), 16 * slots as usize))
                }
                Kind::Deque => {
                    let (n, ri) = (o.w(l.deque_len), o.w(l.deque_rightindex));
                    if n == 0 || ri >= 64 {
                        continue;
                    }
                    (Some(Seq::Deque), n, 0, (o.w(l.deque_rightblock) + 8, 8 * (ri + 1) as usize))
                }
                _ => continue,
            };
            if body.1 == 0 {
                continue;
            }
            let reported = matches!(kind, Kind::List | Kind::Set | Kind::Deque);
            todo.push(Items { obj: o, seq, first, len, reported });
            bodies.push(body);
            headers.push(if seq.is_some() { (o.node.addr, OBJ_READ) } else { (0, 0) });
        }
        let bodies = self.batch(&bodies);
        // The header again, after the body and from the live target: proves the body was not
        // replaced since the header was read.
        let headers = self.batch_live(&headers);
        let mut out = Vec::new();
        for ((c, body), hdr) in todo.into_iter().zip(bodies).zip(headers) {
            let Some(body) = body else {
                self.stats.dropped += 1;
                continue;
            };
            let items = match c.seq {
                None => (0..body.len() / 8).map(|k| le_u64(&body, 8 * k)).collect(),
                Some(seq) => {
                    let Some(h) = hdr.filter(|h| le_u64(h, 8) == c.obj.ty) else {
                        self.stats.dropped += 1;
                        continue;
                    };
                    let (stable, items) = match seq {
                        Seq::Set => set_members(l, c.obj, &h, &body, self.types.set_dummy),
                        _ => seq.items(l, c.obj, &h, Some(&body), self.types.set_dummy),
                    };
                    if !stable {
                        self.stats.dropped += 1;
                        continue;
                    }
                    if let Some(s) = c.reported.then(|| sample_of(l, seq, c.obj, &h, &items)).flatten() {
                        samples.insert(c.obj.node.addr, s);
                    }
                    items
                }
            };
            self.stats.items_not_followed += c.len.saturating_sub(items.len() as u64);
            out.extend(self.item_nodes(&c, items));
        }
        out
    }

    /// Nodes for the items read of one container, named by index (set members: `{#k}`).
    fn item_nodes(&mut self, c: &Items, items: Vec<u64>) -> Vec<Node> {
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items.into_iter().enumerate() {
            if !plausible_ptr(v) || v == self.types.none {
                continue;
            }
            let seg = match c.seq {
                Some(Seq::Set) => Seg::Member(k as u32),
                // newest first: the rightmost item is the last index
                Some(Seq::Deque) => Seg::Index(c.len.saturating_sub(1 + k as u64)),
                _ => Seg::Index(c.first + k as u64),
            };
            out.push(child(c.obj, self.paths.child(c.obj.node.path, seg), v));
        }
        out
    }
}

/// The members in a set's table slots `body` (up to [`FOLLOW_ITEMS`]), and whether the header
/// re-read after it (`h`) shows the same table.
fn set_members(l: &HeapLayout, o: &Obj, h: &[u8], body: &[u8], dummy: u64) -> (bool, Vec<u64>) {
    let same = |off: u64| le_u64(h, off as usize) == o.w(off);
    let stable = same(l.set_table) && same(l.set_mask);
    let members = (0..body.len() / 16)
        .map(|k| le_u64(body, 16 * k))
        .filter(|&p| p != 0 && p != dummy)
        .take(FOLLOW_ITEMS as usize)
        .collect();
    (stable, members)
}

/// The report's sample of a container from the items the follow read (`items`, in the order
/// [`Seq::items`] and [`set_members`] give them) and the header re-read after them (`h`):
/// what sampling would read, [`SAMPLE_ITEMS`] of them. `None` for a set whose whole table was
/// read but whose members do not add up to its length (torn: sampling reads it again).
fn sample_of(l: &HeapLayout, seq: Seq, o: &Obj, h: &[u8], items: &[u64]) -> Option<Sample> {
    let len = seq.len(l, h);
    let items = match seq {
        // oldest to newest: the newest are the last
        Seq::List => items[items.len().saturating_sub(SAMPLE_ITEMS)..].to_vec(),
        Seq::Deque => items.iter().take(SAMPLE_ITEMS).copied().collect(),
        Seq::Set => {
            let first: Vec<u64> = items.iter().take(SAMPLE_ITEMS).copied().collect();
            let whole = o.w(l.set_mask) < SET_SLOTS_FOLLOWED;
            let counted = !whole || first.len() as u64 == len.min(SAMPLE_ITEMS as u64) || first.len() == SAMPLE_ITEMS;
            if !counted {
                return None;
            }
            first
        }
    };
    Some(Sample { len, items, table_bytes: 0 })
}

/// A node one hop below `o`.
fn child(o: &Obj, path: PathId, addr: u64) -> Node {
    Node { addr, path, depth: o.node.depth + 1, rank: o.node.rank, parent: Parent::Other }
}
