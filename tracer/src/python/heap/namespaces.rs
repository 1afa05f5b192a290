//! Namespaces: the (name → value) pairs of module globals, class dicts and instance attributes,
//! and the tail entries of dicts being sampled. Where an instance keeps its attributes differs in
//! every version from 3.10 to 3.13 (containers §3); how a dict's keys object lays out its entries
//! changed in 3.11 (containers §2.3). A namespace is read in stages batched across all namespaces
//! of a BFS level (headers, keys, entries, then key strings and re-checks), and a torn one is read
//! again up to [`MAX_RETRIES`] times (containers §5).

use bytes::Bytes;

use super::layout::{InstanceLayout, KeysLayout};
use super::types::{Kind, TypeInfo, TPFLAGS_INLINE_VALUES, TPFLAGS_MANAGED_DICT};
use super::{plausible_ptr, Name, Obj, Scan, MAX_NS_ENTRIES, MAX_RETRIES, OBJ_READ, SAMPLE_ITEMS};
use crate::remote::le_u64;

/// Where a namespace's (name → value) pairs come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NsSource {
    /// A dict object (header read first).
    Dict(u64),
    /// Instance values without a dict: names from `keys` (the type's cached keys), values at
    /// `values` (the `PyObject*` array; with the 3.13+ header at `values - 8`). `recheck` is a
    /// (address, expected word) re-read after the body (0 address: none).
    Values { keys: u64, values: u64, header: bool, recheck: (u64, u64) },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NsMode {
    /// All entries, with names (str keys only).
    Full,
    /// The last entries' values only (container sampling).
    Tail,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct NsResult {
    /// (name, value) for Full; (None, value) for Tail.
    pub(crate) entries: Vec<(Option<Name>, u64)>,
    /// `ma_used` (dicts) or live count.
    pub(crate) used: u64,
    /// Allocation size of the keys object plus split values (retained estimate).
    pub(crate) table_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeysInfo {
    nentries: u64,
    entries_addr: u64,
    esize: u64,
    /// Allocation size of the keys object (`_PyDict_KeysSize`).
    pub(crate) bytes: u64,
}

/// Where an instance's attributes are, once its pre-header and type are known.
pub(crate) enum Attrs {
    None,
    /// A namespace to read.
    At(NsSource),
    /// The dict pointer lies past the object bytes read: read this word first.
    DictPointerAt(u64),
}

impl Scan<'_> {
    /// Where instance `o` (of valid type `ti`) keeps its attributes (containers §3).
    pub(crate) fn instance_attrs(&self, o: &Obj, ti: &TypeInfo) -> Attrs {
        let l = self.layout;
        let managed = ti.flags & TPFLAGS_MANAGED_DICT != 0 && l.instance != InstanceLayout::DictOffset;
        if managed {
            return managed_attrs(l.instance, o, ti);
        }
        if ti.dictoffset == 0 {
            return Attrs::None;
        }
        let off = if ti.dictoffset > 0 {
            ti.dictoffset as u64
        } else {
            // var-sized: off + round8(basicsize + |ob_size| * itemsize)
            let size = (o.w(16) as i64).unsigned_abs().min(1 << 24);
            let total = (ti.basicsize + size * ti.itemsize + 7) & !7;
            total.wrapping_add(ti.dictoffset as u64)
        };
        if !(16..(1 << 24)).contains(&off) {
            return Attrs::None;
        }
        if off + 8 > OBJ_READ as u64 {
            return Attrs::DictPointerAt(o.node.addr + off);
        }
        match o.w(off) {
            0 => Attrs::None,
            dict => Attrs::At(NsSource::Dict(dict)),
        }
    }

    /// The (name, value) attributes of the instance at `addr` (dict, managed dict or inline
    /// values; not `__slots__`), for the origin reader. `None` when it cannot be read.
    pub(crate) fn instance_entries(&mut self, addr: u64) -> Option<Vec<(Option<Name>, u64)>> {
        let path = self.paths.root(Name::from(""));
        let node = super::Node { addr, path, depth: 0, rank: 0, parent: super::Parent::Other };
        let o = self.read_objects(vec![node]).pop()?;
        let ti = self.type_info(o.ty)?.clone();
        let src = match self.instance_attrs(&o, &ti) {
            Attrs::At(src) => src,
            Attrs::DictPointerAt(at) => {
                let dict =
                    self.batch(&[(at, 8)]).pop().flatten().map(|b| le_u64(&b, 0)).filter(|&d| plausible_ptr(d))?;
                NsSource::Dict(dict)
            }
            Attrs::None => return None,
        };
        self.read_namespaces(&[(src, NsMode::Full)]).pop().flatten().map(|r| r.entries)
    }

    /// Reads namespaces / dict contents, batched across jobs, with re-checks and retries.
    pub(crate) fn read_namespaces(&mut self, jobs: &[(NsSource, NsMode)]) -> Vec<Option<NsResult>> {
        let mut results: Vec<Option<NsResult>> = vec![None; jobs.len()];
        let mut todo: Vec<usize> = (0..jobs.len()).collect();
        for attempt in 0..=MAX_RETRIES {
            if todo.is_empty() || !self.budget_left() && attempt > 0 {
                break;
            }
            if attempt > 0 {
                self.stats.torn_retried += todo.len() as u64;
            }
            let mut pass = NamespaceRead::new(jobs);
            // A retry reads live throughout; the re-checks always do.
            self.reading_live(attempt > 0, |s| {
                pass.read_headers(s, &todo);
                pass.read_keys(s);
                pass.read_entries(s);
            });
            for (i, r) in pass.recheck(self) {
                results[i] = Some(r);
            }
            todo = pass.failed;
        }
        self.stats.dropped += todo.len() as u64;
        results
    }

    pub(crate) fn parse_keys(&self, keys: u64, b: &[u8]) -> Option<KeysInfo> {
        if !plausible_ptr(keys) {
            return None;
        }
        // dk_refcnt: a count, or immortal (3.14's static Py_EMPTY_KEYS reads 0x8000_0000_0000_0000,
        // `_Py_DICT_IMMORTAL_INITIAL_REFCNT`; seen live on 3.14.10).
        let rc = le_u64(b, 0);
        if (rc == 0 || rc >= 1 << 32) && rc != 1 << 63 {
            return None;
        }
        match self.layout.keys {
            KeysLayout::V310 => parse_keys_310(keys, b),
            KeysLayout::V311 => parse_keys_311(keys, b),
        }
    }
}

/// Managed dicts (3.11+): the pre-header words before the object, per version.
fn managed_attrs(layout: InstanceLayout, o: &Obj, ti: &TypeInfo) -> Attrs {
    match layout {
        InstanceLayout::Managed311 => {
            let (dict, values) = (o.pre_w(24), o.pre_w(32));
            if dict != 0 {
                Attrs::At(NsSource::Dict(dict))
            } else if values != 0 {
                Attrs::At(NsSource::Values {
                    keys: ti.cached_keys,
                    values,
                    header: false,
                    recheck: (o.node.addr - 32, values),
                })
            } else {
                Attrs::None
            }
        }
        InstanceLayout::Tagged312 => {
            let w = o.pre_w(24);
            if w & 1 == 1 {
                Attrs::At(NsSource::Values {
                    keys: ti.cached_keys,
                    values: w.wrapping_add(1),
                    header: false,
                    recheck: (o.node.addr - 24, w),
                })
            } else if w != 0 {
                Attrs::At(NsSource::Dict(w))
            } else {
                Attrs::None
            }
        }
        InstanceLayout::Inline313 => {
            let dict = o.pre_w(24);
            if dict != 0 {
                Attrs::At(NsSource::Dict(dict))
            } else if ti.flags & TPFLAGS_INLINE_VALUES != 0 {
                Attrs::At(NsSource::Values {
                    keys: ti.cached_keys,
                    values: o.node.addr + ti.basicsize + 8,
                    header: true,
                    recheck: (o.node.addr - 24, 0),
                })
            } else {
                Attrs::None
            }
        }
        InstanceLayout::DictOffset => Attrs::None,
    }
}

/// 3.10: `dk_size` @8 (i64), `dk_nentries` @32, indices @40, 24-byte entries.
fn parse_keys_310(keys: u64, b: &[u8]) -> Option<KeysInfo> {
    let size = le_u64(b, 8);
    let nentries = le_u64(b, 32);
    if size == 0 || !size.is_power_of_two() || size > 1 << 30 {
        return None;
    }
    if size == 1 {
        // Py_EMPTY_KEYS
        return (nentries == 0).then_some(KeysInfo { nentries: 0, entries_addr: keys + 48, esize: 24, bytes: 0 });
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

/// 3.11+: `dk_log2_size` @8, `dk_log2_index_bytes` @9, `dk_kind` @10, `dk_nentries` @24,
/// indices @32; GENERAL entries 24 B, UNICODE/SPLIT 16 B.
fn parse_keys_311(keys: u64, b: &[u8]) -> Option<KeysInfo> {
    let log2 = b.get(8).copied().unwrap_or(0) as u64;
    let log2_idx = b.get(9).copied().unwrap_or(0) as u64;
    let kind = b.get(10).copied().unwrap_or(0);
    let nentries = le_u64(b, 24);
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

/// One namespace on its way through the stages of a [`NamespaceRead`].
struct DictRead {
    /// Index of its job.
    job: usize,
    keys: u64,
    /// The values array (split dicts and instance values), or 0.
    values: u64,
    /// A 3.13+ `PyDictValues` header precedes the values.
    values_hdr: bool,
    /// `ma_used` from the dict header (dicts only).
    used: Option<u64>,
    /// The dict's address, or 0 for instance values.
    dict: u64,
    /// `(ma_keys, ma_values)` as first read, compared on the re-read.
    hdr_words: (u64, u64),
    recheck: (u64, u64),
    keys_info: Option<KeysInfo>,
    /// Entries to read: first the values' capacity, then the end of the entries read.
    cap: u64,
    /// The first entry read (Tail mode reads only the last ones).
    first: u64,
    entries: Bytes,
    vals: Bytes,
}

impl DictRead {
    fn new(job: usize, keys: u64, values: u64, values_hdr: bool) -> Self {
        DictRead {
            job,
            keys,
            values,
            values_hdr,
            used: None,
            dict: 0,
            hdr_words: (0, 0),
            recheck: (0, 0),
            keys_info: None,
            cap: u64::MAX,
            first: 0,
            entries: Bytes::new(),
            vals: Bytes::new(),
        }
    }
}

/// One attempt at a batch of namespaces: each stage is one batched read for all of them, and a
/// namespace that fails a stage's checks moves to `failed` (to be tried again).
struct NamespaceRead<'j> {
    jobs: &'j [(NsSource, NsMode)],
    reads: Vec<DictRead>,
    failed: Vec<usize>,
}

impl<'j> NamespaceRead<'j> {
    fn new(jobs: &'j [(NsSource, NsMode)]) -> Self {
        NamespaceRead { jobs, reads: Vec::new(), failed: Vec::new() }
    }

    fn is_dict(&self, r: &DictRead) -> bool {
        matches!(self.jobs[r.job].0, NsSource::Dict(_))
    }

    fn mode(&self, r: &DictRead) -> NsMode {
        self.jobs[r.job].1
    }

    /// Stage H: the dict headers (type, `ma_used`, `ma_keys`, `ma_values`); instance values
    /// start here with their pointers checked.
    fn read_headers(&mut self, scan: &mut Scan, todo: &[usize]) {
        let l = scan.layout;
        let jobs = self.jobs;
        let dicts: Vec<(usize, u64)> = todo
            .iter()
            .filter_map(|&i| match jobs[i].0 {
                NsSource::Dict(a) => Some((i, a)),
                NsSource::Values { .. } => None,
            })
            .collect();
        let got = scan.batch(&dicts.iter().map(|&(_, a)| (a, 48)).collect::<Vec<_>>());
        let mut hdrs = Vec::new();
        for (&(i, a), b) in dicts.iter().zip(got) {
            match b {
                Some(b) if l.refcnt_plausible(le_u64(&b, 0)) => hdrs.push((i, a, b)),
                _ => self.failed.push(i),
            }
        }
        scan.resolve_types(&hdrs.iter().map(|(_, _, b)| le_u64(b, 8)).collect::<Vec<_>>());
        for (i, a, b) in hdrs {
            let ty_ok = scan.type_info(le_u64(&b, 8)).is_some_and(|t| t.kind == Kind::Dict);
            let keys = le_u64(&b, l.dict_keys as usize);
            let values = le_u64(&b, l.dict_values as usize);
            let used = le_u64(&b, l.dict_used as usize);
            if !ty_ok || !plausible_ptr(keys) || (values != 0 && !plausible_ptr(values)) || used > 1 << 31 {
                self.failed.push(i);
                continue;
            }
            let mut r = DictRead::new(i, keys, values, values != 0 && l.values_header > 0);
            r.used = Some(used);
            r.dict = a;
            r.hdr_words = (keys, values);
            self.reads.push(r);
        }
        for &i in todo {
            if let NsSource::Values { keys, values, header, recheck } = jobs[i].0 {
                if !plausible_ptr(keys) || !plausible_ptr(values) {
                    self.failed.push(i);
                    continue;
                }
                let mut r = DictRead::new(i, keys, values, header);
                r.recheck = recheck;
                self.reads.push(r);
            }
        }
    }

    /// Stage K: the keys headers (+ the 3.13+ values headers).
    fn read_keys(&mut self, scan: &mut Scan) {
        let mut regions = Vec::new();
        for r in &self.reads {
            regions.push((r.keys, 40usize));
            regions.push(if r.values_hdr {
                (r.values.wrapping_sub(if self.is_dict(r) { 0 } else { 8 }), 8usize)
            } else {
                (0, 0)
            });
        }
        let got = scan.batch(&regions);
        let mut it = got.into_iter();
        for mut r in std::mem::take(&mut self.reads) {
            let kb = it.next().flatten();
            let vb = it.next().flatten();
            let Some(ki) = kb.and_then(|b| scan.parse_keys(r.keys, &b)) else {
                self.failed.push(r.job);
                continue;
            };
            if r.values_hdr {
                // PyDictValues {capacity u8, size u8, embedded u8, valid u8}; dict ma_values points at the
                // header, instance inline values are given as the values[] start.
                let Some(vb) = vb else {
                    self.failed.push(r.job);
                    continue;
                };
                let is_dict = self.is_dict(&r);
                if !is_dict && vb.get(3).copied().unwrap_or(0) == 0 {
                    // inline values not valid: the instance has a materialised dict; nothing here
                    self.failed.push(r.job);
                    continue;
                }
                r.cap = vb.first().copied().unwrap_or(0) as u64;
                if is_dict {
                    r.values += 8;
                }
            }
            if r.used.is_some_and(|u| u > ki.nentries) {
                self.failed.push(r.job);
                continue;
            }
            r.keys_info = Some(ki);
            self.reads.push(r);
        }
    }

    /// Stage E: the entries (all, or the last ones in Tail mode) and the split values.
    fn read_entries(&mut self, scan: &mut Scan) {
        let mut regions = Vec::new();
        for k in 0..self.reads.len() {
            let mode = self.mode(&self.reads[k]);
            let r = &mut self.reads[k];
            let ki = r.keys_info.unwrap_or_default();
            let mut n = ki.nentries;
            if r.values != 0 {
                n = n.min(r.cap);
            }
            if mode == NsMode::Full && n > MAX_NS_ENTRIES {
                n = 0; // too big to be a namespace: treat as unreadable
            }
            r.first = if mode == NsMode::Tail { n.saturating_sub(2 * SAMPLE_ITEMS as u64) } else { 0 };
            let cnt = n - r.first;
            regions.push(if cnt > 0 {
                (ki.entries_addr + r.first * ki.esize, (cnt * ki.esize) as usize)
            } else {
                (0, 0)
            });
            regions.push(if cnt > 0 && r.values != 0 { (r.values + r.first * 8, (cnt * 8) as usize) } else { (0, 0) });
            r.cap = n;
        }
        let got = scan.batch(&regions);
        let mut it = got.into_iter();
        for mut r in std::mem::take(&mut self.reads) {
            let e = it.next().flatten();
            let v = it.next().flatten();
            let cnt = r.cap - r.first;
            if cnt > 0 && (e.is_none() || (r.values != 0 && v.is_none())) {
                self.failed.push(r.job);
                continue;
            }
            r.entries = e.unwrap_or_default();
            r.vals = v.unwrap_or_default();
            self.reads.push(r);
        }
    }

    /// Stage S: decodes the live (key, value) pairs, reads the key strings, re-reads the headers
    /// and checks nothing moved meanwhile (containers §5). Returns the namespaces read whole.
    fn recheck(&mut self, scan: &mut Scan) -> Vec<(usize, NsResult)> {
        let l = scan.layout;
        let reads = std::mem::take(&mut self.reads);
        let pairs: Vec<Vec<(u64, u64)>> = reads.iter().map(live_pairs).collect();
        let mut key_ptrs = Vec::new();
        for (r, p) in reads.iter().zip(&pairs) {
            if self.mode(r) == NsMode::Full {
                key_ptrs.extend(p.iter().map(|p| p.0));
            }
        }
        let mut names = scan.read_strs(&key_ptrs).into_iter();
        let regions: Vec<(u64, usize)> = reads
            .iter()
            .map(|r| {
                if r.dict != 0 {
                    (r.dict, 48)
                } else if r.recheck.0 != 0 {
                    (r.recheck.0, 8)
                } else {
                    (0, 0)
                }
            })
            .collect();
        let rechecks = scan.batch_live(&regions);
        let keys_rechecks = scan.batch_live(&reads.iter().map(|r| (r.keys, 40usize)).collect::<Vec<_>>());
        let mut done = Vec::new();
        for (((r, pairs), rb), kb) in reads.into_iter().zip(pairs).zip(rechecks).zip(keys_rechecks) {
            let full = self.mode(&r) == NsMode::Full;
            let names: Vec<Option<Name>> =
                if full { (0..pairs.len()).map(|_| names.next().flatten()).collect() } else { vec![] };
            let ki = r.keys_info.unwrap_or_default();
            let mut ok =
                kb.as_ref().is_some_and(|kb| scan.parse_keys(r.keys, kb).is_some_and(|k2| k2.nentries >= ki.nentries));
            let mut used = pairs.len() as u64;
            if r.dict != 0 {
                match &rb {
                    Some(rb) => {
                        let keys2 = le_u64(rb, l.dict_keys as usize);
                        let values2 = le_u64(rb, l.dict_values as usize);
                        let used2 = le_u64(rb, l.dict_used as usize);
                        ok &= (keys2, values2) == r.hdr_words;
                        if full {
                            ok &= pairs.len() as u64 == r.used.unwrap_or(0) || pairs.len() as u64 == used2;
                        }
                        used = used2;
                    }
                    None => ok = false,
                }
            } else if r.recheck.0 != 0 {
                ok &= rb.as_ref().is_some_and(|b| le_u64(b, 0) == r.recheck.1);
            }
            if !ok {
                self.failed.push(r.job);
                continue;
            }
            let entries = if full {
                pairs.iter().zip(names).map(|(&(_, v), n)| (n, v)).collect()
            } else {
                pairs.iter().rev().take(SAMPLE_ITEMS).map(|&(_, v)| (None, v)).collect()
            };
            let split_bytes = if r.values != 0 && r.dict != 0 { l.values_header + 8 * ki.nentries } else { 0 };
            done.push((r.job, NsResult { entries, used, table_bytes: ki.bytes + split_bytes }));
        }
        done
    }
}

/// The (key, value) pairs of the entries read whose value is set.
fn live_pairs(r: &DictRead) -> Vec<(u64, u64)> {
    let ki = r.keys_info.unwrap_or_default();
    let cnt = (r.cap - r.first) as usize;
    let koff = if ki.esize == 24 { 8 } else { 0 };
    (0..cnt)
        .filter_map(|k| {
            let base = k * ki.esize as usize;
            let key = le_u64(&r.entries, base + koff);
            let val = if r.values != 0 { le_u64(&r.vals, k * 8) } else { le_u64(&r.entries, base + koff + 8) };
            (val != 0).then_some((key, val))
        })
        .collect()
}
