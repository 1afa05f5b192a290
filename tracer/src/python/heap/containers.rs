//! Reported containers: list, dict (and subclasses), set, `collections.deque`. Each is read as a
//! leaf: its length (one word, tear-free), an estimate of what it holds, and the types of up to
//! [`SAMPLE_ITEMS`] of its newest items. Per kind: which header words are sane, where the sampled
//! items are, and how a re-read header proves the sample was not torn (containers §2.2, §5).

use bytes::Bytes;

use super::layout::HeapLayout;
use super::namespaces::{NsMode, NsSource};
use super::types::{Kind, TypeInfo, TPFLAGS_HAVE_GC, TPFLAGS_MANAGED_DICT};
use super::{
    plausible_ptr, ContainerSample, ItemTypes, Name, Obj, Sample, Scan, MAX_RETRIES, NEWEST_ITEMS, OBJ_READ,
    SAMPLE_ITEMS,
};
use crate::python::addrs::AddrMap;
use crate::python::pystr::StrLayout;
use crate::remote::{le_u32, le_u64};

/// Bytes of one deque block: leftlink, 64 item slots, rightlink.
const DEQUE_BLOCK: u64 = 528;
/// `PyByteArrayObject.ob_alloc`: the buffer's allocated size (every version 3.10–3.15).
const BYTEARRAY_ALLOC: u64 = 24;
/// Bytes read of each sampled item (header, length words, `ob_alloc`, a dict's keys pointer).
const ITEM_READ: usize = 40;
/// Set table slots read for the sample (16 bytes each).
const SET_SLOTS_READ: u64 = 512;

/// A container on its way to a [`ContainerSample`].
struct Sampled {
    obj: Obj,
    kind: Kind,
    len: u64,
    /// The container's own allocation (header, table, blocks).
    own: u64,
    items: Vec<u64>,
    /// Its sample was taken by the follow (`Sample`).
    sampled: bool,
    /// False once the object turned out not to be this container any more.
    ok: bool,
}

/// The containers whose items are read straight from their body: list, set, deque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seq {
    List,
    Set,
    Deque,
}

impl Seq {
    pub(crate) fn of(kind: Kind) -> Option<Seq> {
        match kind {
            Kind::List => Some(Seq::List),
            Kind::Set => Some(Seq::Set),
            Kind::Deque => Some(Seq::Deque),
            _ => None,
        }
    }

    /// Length and own allocation from the object's first words (`hdr` = its header bytes with
    /// the GC head); `None` when the words are not those of a sane container.
    pub(crate) fn shape(self, l: &HeapLayout, o: &Obj, hdr: u64) -> Option<(u64, u64)> {
        match self {
            Seq::List => {
                let (n, items, alloc) = (o.w(l.list_size), o.w(l.list_items), o.w(l.list_allocated));
                let ok = n <= alloc && alloc < 1 << 34 && (alloc == 0 || plausible_ptr(items));
                ok.then(|| (n, hdr.saturating_add(alloc.saturating_mul(8))))
            }
            Seq::Set => {
                let (fill, used, mask) = (o.w(l.set_fill), o.w(l.set_used), o.w(l.set_mask));
                let ok = mask < 1 << 34
                    && (mask + 1).is_power_of_two()
                    && mask >= 7
                    && used <= fill
                    && fill <= mask + 1
                    && plausible_ptr(o.w(l.set_table));
                // The first 8 slots live inside the object.
                ok.then(|| (used, hdr + if mask + 1 > 8 { (mask + 1) * 16 } else { 0 }))
            }
            Seq::Deque => {
                let n = o.w(l.deque_len);
                let ri = o.w(l.deque_rightindex);
                let ok = n < 1 << 40 && ri < 64 && plausible_ptr(o.w(l.deque_rightblock));
                ok.then(|| (n, hdr.saturating_add(deque_blocks(o.w(deque_leftindex(l)), n))))
            }
        }
    }

    /// Where the sampled items are: a list's last slots, a set's first table slots, the filled
    /// part of a deque's rightmost block. `(0, 0)` when there is nothing to read.
    pub(crate) fn body(self, l: &HeapLayout, o: &Obj) -> (u64, usize) {
        match self {
            Seq::List => {
                let n = o.w(l.list_size);
                let m = n.min(SAMPLE_ITEMS as u64);
                if m == 0 {
                    (0, 0)
                } else {
                    (o.w(l.list_items) + 8 * (n - m), (8 * m) as usize)
                }
            }
            Seq::Set => {
                let slots = (o.w(l.set_mask) + 1).min(SET_SLOTS_READ);
                (o.w(l.set_table), (16 * slots) as usize)
            }
            Seq::Deque => {
                if o.w(l.deque_len) == 0 {
                    (0, 0)
                } else {
                    (o.w(l.deque_rightblock) + 8, (8 * (o.w(l.deque_rightindex) + 1)) as usize)
                }
            }
        }
    }

    /// The items in `body`, newest first where the kind has an order, and whether the header
    /// re-read after it (`h`) shows the body was not replaced or resized meanwhile.
    pub(crate) fn items(self, l: &HeapLayout, o: &Obj, h: &[u8], body: Option<&[u8]>, dummy: u64) -> (bool, Vec<u64>) {
        let hw = |off: u64| le_u64(h, off as usize);
        let words = |stride: usize| -> Vec<u64> {
            body.map(|b| (0..b.len() / stride).map(|i| le_u64(b, stride * i)).collect()).unwrap_or_default()
        };
        match self {
            Seq::List => {
                let stable = hw(l.list_items) == o.w(l.list_items)
                    && hw(l.list_allocated) == o.w(l.list_allocated)
                    && hw(l.list_size) <= hw(l.list_allocated);
                let items = words(8);
                (stable && items.iter().all(|&p| p != 0), items)
            }
            Seq::Set => {
                let stable = hw(l.set_table) == o.w(l.set_table)
                    && hw(l.set_mask) == o.w(l.set_mask)
                    && hw(l.set_used) <= hw(l.set_fill);
                let items: Vec<u64> =
                    words(16).into_iter().filter(|&p| p != 0 && p != dummy).take(SAMPLE_ITEMS).collect();
                // whole table read: non-dummy count must equal `used`
                let whole = o.w(l.set_mask) < SET_SLOTS_READ;
                let counted = !whole
                    || items.len() as u64 == hw(l.set_used).min(SAMPLE_ITEMS as u64)
                    || items.len() == SAMPLE_ITEMS;
                (stable && counted, items)
            }
            Seq::Deque => {
                let stable = hw(l.deque_rightblock) == o.w(l.deque_rightblock)
                    && hw(l.deque_rightindex) == o.w(l.deque_rightindex);
                let n = o.w(l.deque_len).min(SAMPLE_ITEMS as u64) as usize;
                let items: Vec<u64> = words(8).into_iter().rev().take(n).collect();
                (stable && items.iter().all(|&p| p != 0), items)
            }
        }
    }

    /// The length word of the header `h`.
    pub(crate) fn len(self, l: &HeapLayout, h: &[u8]) -> u64 {
        let off = match self {
            Seq::List => l.list_size,
            Seq::Set => l.set_used,
            Seq::Deque => l.deque_len,
        };
        le_u64(h, off as usize)
    }
}

impl Scan<'_> {
    /// Samples the containers found in one BFS level; `taken` holds the samples the follow
    /// already read (by address), the others are read here.
    pub(crate) fn sample_containers(
        &mut self,
        containers: Vec<(Obj, Kind)>,
        mut taken: AddrMap<Sample>,
    ) -> Vec<ContainerSample> {
        let mut cs = self.container_shapes(containers);
        for c in cs.iter_mut() {
            if let Some(s) = taken.remove(&c.obj.node.addr) {
                c.len = s.len;
                c.own += s.table_bytes;
                c.items = s.items;
                c.sampled = true;
            }
        }
        self.sample_dicts(&mut cs);
        self.sample_sequences(&mut cs);
        self.describe(cs)
    }

    /// Checks each container's header words; the sane ones go on with their length and size.
    fn container_shapes(&mut self, containers: Vec<(Obj, Kind)>) -> Vec<Sampled> {
        let l = self.layout;
        let mut cs = Vec::new();
        for (o, kind) in containers {
            let Some(ti) = self.type_info(o.ty) else { continue };
            let hdr = ti.basicsize + if ti.flags & TPFLAGS_HAVE_GC != 0 { 16 } else { 0 };
            let shape = match Seq::of(kind) {
                Some(seq) => seq.shape(l, &o, hdr),
                None if kind == Kind::Dict => Some(o.w(l.dict_used)).filter(|&u| u < 1 << 34).map(|u| (u, hdr)),
                None => None,
            };
            let Some((len, own)) = shape else {
                self.stats.dropped += 1;
                continue;
            };
            cs.push(Sampled { obj: o, kind, len, own, items: vec![], sampled: false, ok: true });
        }
        cs
    }

    /// Dicts: the tail entries through the namespace reader (validated and retried there).
    fn sample_dicts(&mut self, cs: &mut [Sampled]) {
        let dicts: Vec<usize> = (0..cs.len()).filter(|&k| cs[k].kind == Kind::Dict && !cs[k].sampled).collect();
        let jobs: Vec<(NsSource, NsMode)> =
            dicts.iter().map(|&k| (NsSource::Dict(cs[k].obj.node.addr), NsMode::Tail)).collect();
        let res = self.read_namespaces(&jobs);
        for (r, &k) in res.into_iter().zip(&dicts) {
            match r {
                Some(r) => {
                    cs[k].items = r.entries.iter().map(|e| e.1).collect();
                    cs[k].own += r.table_bytes;
                    cs[k].len = r.used;
                }
                None => cs[k].ok = false,
            }
        }
    }

    /// Lists, sets, deques: the items and the header re-read after them, retried while torn.
    /// One torn every time keeps its (single-word, validated) length and loses its sample.
    fn sample_sequences(&mut self, cs: &mut [Sampled]) {
        let l = self.layout;
        let mut todo: Vec<usize> = (0..cs.len()).filter(|&k| cs[k].kind != Kind::Dict && !cs[k].sampled).collect();
        for attempt in 0..=MAX_RETRIES {
            if todo.is_empty() {
                break;
            }
            if attempt > 0 {
                self.stats.torn_retried += todo.len() as u64;
            }
            let bodies: Vec<(u64, usize)> =
                todo.iter().map(|&k| Seq::of(cs[k].kind).map_or((0, 0), |seq| seq.body(l, &cs[k].obj))).collect();
            // A retry reads the body live too; the header is always re-read live, after the body.
            let got = self.reading_live(attempt > 0, |s| s.batch(&bodies));
            let hdrs = self.batch_live(&todo.iter().map(|&k| (cs[k].obj.node.addr, OBJ_READ)).collect::<Vec<_>>());
            let mut failed = Vec::new();
            for (((&k, r), body), hdr) in todo.iter().zip(&bodies).zip(got).zip(hdrs) {
                let c = &mut cs[k];
                let (Some(h), Some(seq)) = (hdr, Seq::of(c.kind)) else {
                    failed.push(k);
                    continue;
                };
                let same_type = le_u64(&h, 8) == c.obj.ty && l.refcnt_plausible(le_u64(&h, 0));
                let (stable, items) = seq.items(l, &c.obj, &h, body.as_deref(), self.types.set_dummy);
                let body_ok = body.is_some() || r.1 == 0;
                if same_type && stable && body_ok {
                    // the length is one word: take the newest value
                    c.len = seq.len(l, &h);
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
            cs[k].items.clear();
            self.stats.dropped += 1;
        }
    }

    /// Reads the sampled items' headers for their type names and sizes.
    fn describe(&mut self, cs: Vec<Sampled>) -> Vec<ContainerSample> {
        let items: Vec<u64> = cs.iter().filter(|c| c.ok).flat_map(|c| c.items.iter().copied()).collect();
        let mut infos = self.item_infos(&items).into_iter();
        let mut out = Vec::with_capacity(cs.len());
        for c in cs {
            if !c.ok {
                self.stats.dropped += 1;
                continue;
            }
            let mut item_types = ItemTypes::default();
            let (mut total, mut n) = (0u64, 0u64);
            for _ in &c.items {
                let Some((ty, size)) = infos.next().flatten() else { continue };
                let Some(ti) = self.type_info(ty) else { continue };
                item_types.add(&ti.name);
                total += size;
                n += 1;
            }
            let mean = total.checked_div(n).unwrap_or(0);
            let Some(type_name) = self.type_info(c.obj.ty).map(|ti| ti.name.clone()) else { continue };
            let root = self.roots.get(c.obj.node.rank).cloned().unwrap_or_default();
            let newest_items = c.items.iter().rev().take(NEWEST_ITEMS).copied().collect();
            out.push(ContainerSample {
                root,
                newest_items,
                path: self.path_text(c.obj.node.path),
                type_name,
                len: c.len,
                item_types,
                retained_bytes_est: c.own.saturating_add(c.len.saturating_mul(mean)),
            });
        }
        out
    }

    /// A reported container's path written out, or as the last scan wrote it.
    fn path_text(&mut self, id: super::paths::PathId) -> Name {
        let fp = self.paths.fingerprint(id);
        let len = self.paths.len(id) as usize;
        let text = match self.texts_before.remove(&fp).filter(|t| t.len() == len) {
            Some(t) => t,
            None => Name::from(self.paths.text(id)),
        };
        self.texts.insert(fp, text.clone());
        text
    }

    /// Per item of `items`: its type and its size ([`item_size`] and [`Scan::owned_elsewhere`]),
    /// when its first [`ITEM_READ`] bytes read as an object's. The headers come from the copy of
    /// the heap where it holds them, without copying them again (a service's containers sample
    /// a hundred thousand items per scan); the rest are read in one batch.
    fn item_infos(&mut self, items: &[u64]) -> Vec<Option<(u64, u64)>> {
        let l = self.layout;
        let mem = self.mem;
        let mut heads: Vec<Option<&[u8]>> = Vec::with_capacity(items.len());
        let mut missing = Vec::new();
        for (k, &p) in items.iter().enumerate() {
            let h = plausible_ptr(p).then(|| mem.copied(p, ITEM_READ)).flatten();
            if h.is_none() && plausible_ptr(p) {
                missing.push(k);
            }
            heads.push(h);
        }
        let fetched = self.batch(&missing.iter().map(|&k| (items[k], ITEM_READ)).collect::<Vec<_>>());
        let fetched: Vec<(usize, Bytes)> =
            missing.into_iter().zip(fetched).filter_map(|(k, b)| Some((k, b?))).collect();
        for (k, b) in &fetched {
            heads[*k] = Some(b);
        }
        for h in heads.iter_mut() {
            if h.is_some_and(|h| !l.refcnt_plausible(le_u64(h, 0))) {
                *h = None;
            }
        }
        let mut tys: Vec<u64> = heads.iter().flatten().map(|h| le_u64(h, 8)).collect();
        tys.sort_unstable();
        tys.dedup();
        self.resolve_types(&tys);
        // Dicts and deques own what takes a read of its own.
        let (at, owners): (Vec<usize>, Vec<(u64, &[u8])>) = heads
            .iter()
            .enumerate()
            .filter_map(|(k, h)| {
                let h = (*h)?;
                let kind = self.type_info(le_u64(h, 8))?.kind;
                matches!(kind, Kind::Dict | Kind::Deque).then_some((k, (items[k], h)))
            })
            .unzip();
        let mut extra = at.into_iter().zip(self.owned_elsewhere(&owners)).peekable();
        heads
            .iter()
            .enumerate()
            .map(|(k, h)| {
                let x = extra.next_if(|(at, _)| *at == k).map_or(0, |(_, x)| x);
                let h = (*h)?;
                let ty = le_u64(h, 8);
                self.type_info(ty).map(|ti| (ty, item_size(l, &self.strs, ti, h) + x))
            })
            .collect()
    }

    /// Per item, what it owns outside the bytes read, as `sys.getsizeof` counts it: a dict's
    /// keys (unshared only: shared keys are the type's), a deque's blocks (from its `leftindex`
    /// word, past the header read; taken as 0 if it cannot be read). 0 for other items.
    fn owned_elsewhere(&mut self, hdrs: &[(u64, &[u8])]) -> Vec<u64> {
        let l = self.layout;
        let kind = |s: &Self, h: &[u8]| s.type_info(le_u64(h, 8)).map(|t| t.kind);
        let regions: Vec<(u64, usize)> = hdrs
            .iter()
            .map(|(p, h)| match kind(self, h) {
                Some(Kind::Dict) => {
                    Some(le_u64(h, l.dict_keys as usize)).filter(|&k| plausible_ptr(k)).map_or((0, 0), |k| (k, 40))
                }
                Some(Kind::Deque) => (p + deque_leftindex(l), 8),
                _ => (0, 0),
            })
            .collect();
        let got = self.batch(&regions);
        hdrs.iter()
            .zip(regions)
            .zip(got)
            .map(|(((_, h), (at, _)), b)| match kind(self, h) {
                Some(Kind::Dict) => b
                    .filter(|b| le_u64(b, 0) == 1) // dk_refcnt
                    .and_then(|b| self.parse_keys(at, &b))
                    .map_or(0, |k| k.bytes),
                Some(Kind::Deque) => {
                    deque_blocks(b.map_or(0, |b| le_u64(&b, 0)), le_u64(h, l.deque_len as usize).min(1 << 40))
                }
                _ => 0,
            })
            .collect()
    }
}

/// `dequeobject.leftindex`: the word after `rightblock` (layout.rs).
fn deque_leftindex(l: &HeapLayout) -> u64 {
    l.deque_rightblock + 8
}

/// A deque's blocks as `sys.getsizeof` counts them: `(leftindex + len + 64) / 64` blocks.
fn deque_blocks(leftindex: u64, len: u64) -> u64 {
    (leftindex.min(64) + len + 64) / 64 * DEQUE_BLOCK
}

/// What an item owns outside its object, as `sys.getsizeof` counts it: a bytearray's buffer
/// (`ob_alloc`), a list's slots, a set's table (beyond the 8 inline slots). A dict's keys and
/// a deque's blocks take a read of their own ([`Scan::owned_elsewhere`]).
fn item_outside(l: &HeapLayout, kind: Kind, h: &[u8]) -> u64 {
    let w = |off: u64| le_u64(h, off as usize);
    match kind {
        Kind::ByteArray => w(BYTEARRAY_ALLOC).min(1 << 40),
        Kind::List => w(l.list_allocated).min(1 << 34) * 8,
        Kind::Set | Kind::FrozenSet => {
            let slots = w(l.set_mask).min(1 << 34) + 1;
            if slots > 8 {
                slots * 16
            } else {
                0
            }
        }
        _ => 0,
    }
}

/// Bytes of one item: its type's basic size, the GC and managed-dict pre-headers, its
/// variable part (str/bytes/tuple/int length) and what it owns outside the object
/// ([`item_outside`]), read from its first [`ITEM_READ`] bytes `h`.
pub(crate) fn item_size(l: &HeapLayout, strs: &StrLayout, ti: &TypeInfo, h: &[u8]) -> u64 {
    let mut size = ti.basicsize;
    if ti.flags & TPFLAGS_HAVE_GC != 0 {
        size += 16;
    }
    if ti.flags & TPFLAGS_MANAGED_DICT != 0 {
        size += l.managed_dict_pre;
    }
    let w16 = le_u64(h, 16);
    match ti.kind {
        Kind::Str => {
            let state = le_u32(h, 32);
            let kind = ((state >> 2) & 7).max(1) as u64;
            size = strs.data_offset(state) + (w16.min(1 << 30) + 1) * kind;
        }
        Kind::Long => {
            let nd = if l.long_size_in_tag { w16 >> 3 } else { (w16 as i64).unsigned_abs() };
            size += 4 * nd.min(1 << 20);
        }
        _ if ti.itemsize > 0 && ti.itemsize <= 64 => {
            size += (w16 as i64).unsigned_abs().min(1 << 24) * ti.itemsize;
        }
        _ => {}
    }
    size + item_outside(l, ti.kind, h)
}
