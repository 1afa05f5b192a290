//! The census's copy of the target's GC nodes, kept compact: each 64 KiB block of the target's
//! memory is read once (one `process_vm_readv`), every 16-byte-aligned position in it that
//! passes the node checks is kept as a 32-byte [`Rec`], and the raw bytes are dropped. A
//! million-object heap (~165 MB) then fits in ~35 MB of records instead of a block cache that
//! had to be flushed and re-read many times over (BENCHMARKS.md, census: 785 MB read per scan
//! before, once the heap size after).
//!
//! The store is a copy, not a snapshot: a failed check means "flush and re-read", which the
//! list walk does. Which objects were already counted is kept apart from the records (one bit
//! per 16-byte slot of each block touched), so it survives a flush.

use crate::python::addrs::{AddrMap, AddrSet};
use crate::remote::Memory;

pub const BLOCK: u64 = 64 << 10;
/// Objects (and so GC heads) start on 16-byte boundaries with every allocator CPython uses.
pub const ALIGN: u64 = 16;
const SLOTS: usize = (BLOCK / ALIGN) as usize;
const PAGE: u64 = 4096;

/// A node found in a block: the checks that do not depend on where it was reached from passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    /// `_gc_next` and `_gc_prev`, flag bits masked off.
    pub next: u64,
    pub prev: u64,
    /// Estimated bytes of the object.
    pub bytes: u32,
    /// Row of its type in the walk's table.
    pub ty: u32,
    slot: u16,
}

impl Rec {
    pub fn new(next: u64, prev: u64, ty: usize, bytes: u64) -> Rec {
        Rec { next, prev, bytes: bytes.min(u64::from(u32::MAX)) as u32, ty: ty as u32, slot: 0 }
    }
}

/// What the store knows about one address.
pub enum Lookup {
    /// A node that passed the checks when its block was read.
    Node(Rec),
    /// Its block was read whole and nothing there passed the checks.
    NotANode,
    /// Unknown: the block is not loaded, or only partly readable, or the address is not
    /// 16-byte aligned. The caller reads it live.
    Unknown,
}

#[derive(Default)]
struct Slot {
    /// Sorted by `slot`; `None`: not loaded (or flushed).
    recs: Option<Vec<Rec>>,
    /// Some positions could not be judged (unreadable bytes, a type left unchecked).
    partial: bool,
    /// Bit per 16-byte slot: counted in this scan.
    seen: Option<Box<[u64; SLOTS / 64]>>,
}

/// Bytes of a block as read for extraction: the block plus the start of the next one (a node
/// near the end spans into it), and which 16-byte positions have all of [`super::walk::NODE`]
/// bytes readable.
pub struct Raw {
    pub base: u64,
    pub bytes: Vec<u8>,
    /// Readable byte ranges of `bytes`.
    readable: Vec<(usize, usize)>,
}

impl Raw {
    /// The bytes of the node at `pos` (offset in the block), if all of them were read.
    pub fn node(&self, pos: usize, len: usize) -> Option<&[u8]> {
        self.readable.iter().any(|&(a, b)| a <= pos && pos + len <= b).then(|| &self.bytes[pos..pos + len])
    }
    pub fn whole(&self) -> bool {
        self.readable.len() == 1 && self.readable[0] == (0, self.bytes.len())
    }
}

pub struct NodeStore<'a> {
    mem: &'a dyn Memory,
    index: AddrMap<usize>,
    slots: Vec<Slot>,
    /// Records kept now, against `cap_recs`.
    kept: usize,
    cap_recs: usize,
    /// Counted objects at addresses that are not 16-byte aligned (none in practice).
    seen_odd: AddrSet,
    /// Bytes copied out of the target, and read requests made.
    pub bytes_read: u64,
    pub reads: u64,
}

impl<'a> NodeStore<'a> {
    /// `cap` bounds the records' memory; when full the records start over (the seen bits stay).
    pub fn new(mem: &'a dyn Memory, cap: usize) -> Self {
        NodeStore {
            mem,
            index: AddrMap::default(),
            slots: Vec::new(),
            kept: 0,
            cap_recs: (cap / std::mem::size_of::<Rec>()).max(SLOTS),
            seen_odd: AddrSet::default(),
            bytes_read: 0,
            reads: 0,
        }
    }

    /// Forgets every record (after a failed check: the copy is stale); keeps what was counted.
    pub fn flush(&mut self) {
        for s in &mut self.slots {
            s.recs = None;
            s.partial = false;
        }
        self.kept = 0;
    }

    fn slot_of(&mut self, base: u64) -> usize {
        let n = self.slots.len();
        *self.index.entry(base).or_insert_with(|| {
            self.slots.push(Slot::default());
            n
        })
    }

    /// What the store holds about `addr` (see [`Lookup`]).
    pub fn lookup(&mut self, addr: u64) -> Lookup {
        if !addr.is_multiple_of(ALIGN) {
            return Lookup::Unknown;
        }
        let base = addr - addr % BLOCK;
        let Some(&i) = self.index.get(&base) else { return Lookup::Unknown };
        let s = &self.slots[i];
        let Some(recs) = &s.recs else { return Lookup::Unknown };
        let slot = ((addr - base) / ALIGN) as u16;
        match recs.binary_search_by_key(&slot, |r| r.slot) {
            Ok(k) => Lookup::Node(recs[k]),
            Err(_) if s.partial => Lookup::Unknown,
            Err(_) => Lookup::NotANode,
        }
    }

    /// Whether the block holding `addr` needs reading before [`Self::lookup`] can answer.
    pub fn needs_load(&self, addr: u64) -> bool {
        if !addr.is_multiple_of(ALIGN) || !(0x1_0000..0x7fff_ffff_0000).contains(&addr) {
            return false;
        }
        let base = addr - addr % BLOCK;
        self.index.get(&base).is_none_or(|&i| self.slots[i].recs.is_none())
    }

    /// Reads the block holding `addr` (plus `tail` bytes of the next) in one request, or page by
    /// page where the whole cannot be read (the end of a mapping).
    pub fn read_block(&mut self, addr: u64, tail: usize) -> Raw {
        let base = addr - addr % BLOCK;
        let len = BLOCK as usize + tail;
        self.reads += 1;
        let mut bytes = vec![0u8; len];
        if self.mem.read(base, &mut bytes).is_ok() {
            self.bytes_read += len as u64;
            return Raw { base, bytes, readable: vec![(0, len)] };
        }
        let mut readable: Vec<(usize, usize)> = Vec::new();
        let mut off = 0usize;
        while off < len {
            let n = (PAGE as usize).min(len - off);
            self.reads += 1;
            if self.mem.read(base + off as u64, &mut bytes[off..off + n]).is_ok() {
                self.bytes_read += n as u64;
                match readable.last_mut() {
                    Some(r) if r.1 == off => r.1 = off + n,
                    _ => readable.push((off, off + n)),
                }
            }
            off += n;
        }
        Raw { base, bytes, readable }
    }

    /// Keeps the nodes found in a block read by [`Self::read_block`]: `found` holds (offset in
    /// the block, record), in increasing offsets.
    pub fn store(&mut self, base: u64, found: Vec<(usize, Rec)>, partial: bool) {
        if self.kept + found.len() > self.cap_recs {
            self.flush();
        }
        self.kept += found.len();
        let recs: Vec<Rec> = found.into_iter().map(|(off, r)| Rec { slot: (off as u64 / ALIGN) as u16, ..r }).collect();
        let i = self.slot_of(base);
        let s = &mut self.slots[i];
        s.recs = Some(recs);
        s.partial = partial;
    }

    /// Marks `addr` counted; `false` when it already was in this scan.
    pub fn mark_seen(&mut self, addr: u64) -> bool {
        if !addr.is_multiple_of(ALIGN) {
            return self.seen_odd.insert(addr);
        }
        let base = addr - addr % BLOCK;
        let i = self.slot_of(base);
        let bits = self.slots[i].seen.get_or_insert_with(|| Box::new([0u64; SLOTS / 64]));
        let k = ((addr - base) / ALIGN) as usize;
        let (w, b) = (k / 64, 1u64 << (k % 64));
        let fresh = bits[w] & b == 0;
        bits[w] |= b;
        fresh
    }

    pub fn was_seen(&self, addr: u64) -> bool {
        if !addr.is_multiple_of(ALIGN) {
            return self.seen_odd.contains(&addr);
        }
        let base = addr - addr % BLOCK;
        let Some(bits) = self.index.get(&base).and_then(|&i| self.slots[i].seen.as_ref()) else { return false };
        let k = ((addr - base) / ALIGN) as usize;
        bits[k / 64] & (1 << (k % 64)) != 0
    }

    /// Reads `len` bytes straight from the target (no store): for words that change under the
    /// walk (list heads, the `collecting` flag) and for re-checks.
    pub fn read_live(&mut self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.reads += 1;
        let v = self.mem.read_vec(addr, len).ok()?;
        self.bytes_read += len as u64;
        Some(v)
    }
}
