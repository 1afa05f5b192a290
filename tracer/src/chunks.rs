//! Whether a block glibc's malloc handed out is still in use, read from outside the process
//! (`Memory`: process_vm_readv) without stopping it. Probe windows (`--window`) use it between
//! windows, when the free probe is detached: a block recorded in a window whose free went
//! unseen is found dead here. Layouts are glibc 2.26+ on x86-64 (docs/probes.md, "Probe
//! windows"); every check errs towards "still in use", so a leak is never hidden by it.
//!
//! A block at user pointer `p` has its chunk header at `p - 16` (`prev_size`, then `size` with
//! the flags PREV_INUSE 1, IS_MMAPPED 2, NON_MAIN_ARENA 4 in its low bits). It is dead when:
//! - its memory is unmapped (an mmapped chunk is unmapped on free);
//! - its size word no longer fits the size it was asked for (merged, split, reused otherwise);
//! - the word at `p + 8` is the process's tcache key (glibc 2.34+ writes it into every chunk
//!   put in a tcache bin; older ones the tcache's address);
//! - the next chunk's PREV_INUSE bit is clear (freed into the unsorted, small or large bins);
//! - its fingerprint changed: the type pointer of the Python object it held when first seen
//!   (reuse by another kind of object at the same address).
//!
//! Not caught: a block reused at the same address by an object of the same type and size
//! (ABA), and fastbin chunks (small, freed when their tcache bin is full). Such a record stays
//! until its address is handed out again inside a window (`alloc.rs`: a recorded address
//! returned again proves the old block died).

use crate::remote::{le_u64, Memory};

/// Why a block is known dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Death {
    Unmapped,
    SizeChanged,
    InTcache,
    NextChunkFree,
    Reused,
}

impl Death {
    pub fn as_str(self) -> &'static str {
        match self {
            Death::Unmapped => "unmapped",
            Death::SizeChanged => "size_changed",
            Death::InTcache => "in_tcache",
            Death::NextChunkFree => "next_chunk_free",
            Death::Reused => "reused",
        }
    }
}

/// One recorded block to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub addr: u64,
    /// The size asked for, when known exactly (not under `--sample-bytes`, where a record
    /// stands for the sampling period).
    pub size: Option<u64>,
    /// See `fingerprint`.
    pub fingerprint: Option<Fingerprint>,
}

/// The type pointer of the Python object a block held when first seen, and where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub offset: u64,
    pub type_ptr: u64,
}

const HEADER: u64 = 16;
const MIN_CHUNK: u64 = 32;
const SIZE_BITS: u64 = 7;
const PREV_INUSE: u64 = 1;
const IS_MMAPPED: u64 = 2;
const PAGE: u64 = 4096;
/// Where an object's `ob_type` can sit in its block: a plain object (refcount, type), one
/// after a 16-byte GC header, one after 3.12's managed-dict pre-header too.
const TYPE_OFFSETS: [u64; 3] = [8, 24, 40];

/// The chunk size malloc uses for a request of `n` bytes (`request2size`).
fn chunk_size_for(n: u64) -> u64 {
    (n.saturating_add(8 + 15) & !15).max(MIN_CHUNK)
}

/// Checks `blocks`; `tcache_key` is the process's (see `tcache_key`), if known. One read per
/// block for its header and first words, one more for the next chunk's header.
pub fn check(mem: &dyn Memory, blocks: &[Block], tcache_key: Option<u64>) -> Vec<Option<Death>> {
    let heads: Vec<(u64, usize)> = blocks.iter().map(|b| (b.addr.wrapping_sub(HEADER), 64)).collect();
    let heads = mem.read_batch(&heads);
    let mut verdicts: Vec<Option<Death>> = Vec::with_capacity(blocks.len());
    let mut next_reads = Vec::new();
    for (i, (b, head)) in blocks.iter().zip(&heads).enumerate() {
        let Some(head) = head else {
            verdicts.push(Some(Death::Unmapped));
            continue;
        };
        let verdict = check_head(b, head, tcache_key);
        if verdict.is_none() && le_u64(head, 8) & IS_MMAPPED == 0 {
            let csize = le_u64(head, 8) & !SIZE_BITS;
            next_reads.push((i, (b.addr - HEADER + csize + 8, 8)));
        }
        verdicts.push(verdict);
    }
    let regions: Vec<(u64, usize)> = next_reads.iter().map(|&(_, r)| r).collect();
    for ((i, _), next) in next_reads.iter().zip(mem.read_batch(&regions)) {
        verdicts[*i] = match next {
            Some(w) if le_u64(&w, 0) & PREV_INUSE == 0 => Some(Death::NextChunkFree),
            Some(_) => None,
            // A chunk in use always has a readable successor (the top chunk at least).
            None => Some(Death::SizeChanged),
        };
    }
    verdicts
}

/// The checks that need only the block's first 64 bytes from its header on (`head`).
fn check_head(b: &Block, head: &[u8], tcache_key: Option<u64>) -> Option<Death> {
    let size_word = le_u64(head, 8);
    let csize = size_word & !SIZE_BITS;
    if let Some(f) = b.fingerprint {
        if le_u64(head, (HEADER + f.offset) as usize) != f.type_ptr {
            return Some(Death::Reused);
        }
    }
    if size_word & IS_MMAPPED != 0 {
        let fits = b.size.is_none_or(|n| csize >= n + HEADER && csize <= (n + HEADER + 2 * PAGE));
        return if fits { None } else { Some(Death::SizeChanged) };
    }
    let fits = match b.size {
        Some(n) => (chunk_size_for(n)..chunk_size_for(n) + MIN_CHUNK).contains(&csize),
        None => (MIN_CHUNK..1 << 40).contains(&csize),
    };
    if !fits {
        return Some(Death::SizeChanged);
    }
    if tcache_key.is_some_and(|k| k != 0 && le_u64(head, 24) == k) {
        return Some(Death::InTcache);
    }
    None
}

/// The process's tcache key, read from the main thread's tcache (at the start of `[heap]`,
/// right after its chunk header): any non-empty bin's first chunk holds it at `+8`.
pub fn tcache_key(mem: &dyn Memory, heap_start: u64) -> Option<u64> {
    const BINS: usize = 64;
    let tcache = heap_start + HEADER;
    let raw = mem.read_vec(tcache, BINS * 2 + BINS * 8).ok()?;
    let mut keys = (0..BINS).filter_map(|i| {
        let count = u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]]);
        let entry = le_u64(&raw, BINS * 2 + 8 * i);
        (count > 0 && entry != 0).then_some(entry)
    });
    let first = keys.next()?;
    let key = mem.read_u64(first + 8).ok()?;
    // A second bin, when there is one, must agree.
    match keys.next().and_then(|e| mem.read_u64(e + 8).ok()) {
        Some(other) if other != key => None,
        _ => (key != 0).then_some(key),
    }
}

/// The start of a process's `[heap]` mapping (where the main arena's chunks live).
pub fn heap_start(maps: &str) -> Option<u64> {
    let line = maps.lines().find(|l| l.trim_end().ends_with("[heap]"))?;
    u64::from_str_radix(line.split('-').next()?, 16).ok()
}

/// The fingerprint of the block at `addr`, if it holds a Python object: the first of
/// `TYPE_OFFSETS` whose word points to a type object (its type's type is `type`, or a
/// metaclass whose type is `type`).
pub fn fingerprint(mem: &dyn Memory, addr: u64) -> Option<Fingerprint> {
    let words = mem.read_vec(addr, 48).ok()?;
    TYPE_OFFSETS.iter().find_map(|&offset| {
        let t = le_u64(&words, offset as usize);
        is_type(mem, t).then_some(Fingerprint { offset, type_ptr: t })
    })
}

fn is_type(mem: &dyn Memory, t: u64) -> bool {
    let pointer = |p: u64| p >= 0x1000 && p.is_multiple_of(8) && p < 1 << 47;
    if !pointer(t) {
        return false;
    }
    let Ok(meta) = mem.read_u64(t + 8) else { return false };
    if !pointer(meta) {
        return false;
    }
    let Ok(meta_type) = mem.read_u64(meta + 8) else { return false };
    if meta_type == meta {
        return true;
    }
    mem.read_u64(meta_type + 8).is_ok_and(|tt| tt == meta_type && pointer(meta_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory image: one region of 64 KiB at 0x10000.
    struct Image(Vec<u8>);

    const BASE: u64 = 0x10000;

    impl Image {
        fn new() -> Image {
            Image(vec![0; 1 << 16])
        }
        fn put(&mut self, addr: u64, v: u64) {
            let o = (addr - BASE) as usize;
            self.0[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
        /// An in-use chunk for a request of `n` bytes at user pointer `p`, with an in-use
        /// successor.
        fn chunk(&mut self, p: u64, n: u64) {
            let c = chunk_size_for(n);
            self.put(p - 8, c | PREV_INUSE);
            self.put(p - 16 + c + 8, 0x40 | PREV_INUSE);
        }
    }

    impl Memory for Image {
        fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            let o = addr.checked_sub(BASE).ok_or(std::io::ErrorKind::InvalidInput)? as usize;
            let src = self.0.get(o..o + buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    fn block(addr: u64, size: u64) -> Block {
        Block { addr, size: Some(size), fingerprint: None }
    }

    #[test]
    fn request_sizes_map_to_chunk_sizes() {
        assert_eq!(chunk_size_for(0), 32);
        assert_eq!(chunk_size_for(24), 32);
        assert_eq!(chunk_size_for(25), 48);
        assert_eq!(chunk_size_for(2001), 2016);
        assert_eq!(chunk_size_for(4001), 4016);
    }

    #[test]
    fn each_sign_of_death_and_of_life() {
        let mut m = Image::new();
        let key = 0x5eed_5eed_1234_5678;
        let p = 0x11010;
        m.chunk(p, 2001);
        assert_eq!(check(&m, &[block(p, 2001)], Some(key)), [None], "in use");
        // Asked for a different size: the chunk is another block now.
        assert_eq!(check(&m, &[block(p, 100)], Some(key)), [Some(Death::SizeChanged)]);
        // Unknown size (sampled): any sane chunk size passes.
        assert_eq!(check(&m, &[Block { size: None, ..block(p, 0) }], Some(key)), [None]);
        // Freed into tcache: the key at p + 8.
        m.put(p + 8, key);
        assert_eq!(check(&m, &[block(p, 2001)], Some(key)), [Some(Death::InTcache)]);
        assert_eq!(check(&m, &[block(p, 2001)], None), [None], "no key known: no inference");
        m.put(p + 8, 0);
        // Freed into a bin: the next chunk's PREV_INUSE is cleared.
        m.put(p - 16 + 2016 + 8, 0x40);
        assert_eq!(check(&m, &[block(p, 2001)], Some(key)), [Some(Death::NextChunkFree)]);
        // Unmapped.
        assert_eq!(check(&m, &[block(0x900_0000, 64)], Some(key)), [Some(Death::Unmapped)]);
    }

    #[test]
    fn mmapped_chunks_and_batches() {
        let mut m = Image::new();
        let p = 0x12010;
        m.put(p - 8, (200_000 + 16 + 4095) & !4095 | IS_MMAPPED);
        let q = 0x18010;
        m.chunk(q, 100);
        let v = check(&m, &[block(p, 200_000), block(q, 100), block(p, 64)], None);
        assert_eq!(v, [None, None, Some(Death::SizeChanged)]);
    }

    #[test]
    fn a_fingerprint_catches_reuse_by_another_object() {
        let mut m = Image::new();
        // `type` at 0x13000 (its own type), a class at 0x13100, another at 0x13200.
        m.put(0x13008, 0x13000);
        m.put(0x13108, 0x13000);
        m.put(0x13208, 0x13000);
        let p = 0x11010;
        m.chunk(p, 100);
        m.put(p + 24, 0x13100); // a GC object: its type after the 16-byte GC header
        let f = fingerprint(&m, p).expect("a Python object");
        assert_eq!(f, Fingerprint { offset: 24, type_ptr: 0x13100 });
        let b = Block { fingerprint: Some(f), ..block(p, 100) };
        assert_eq!(check(&m, &[b], None), [None]);
        m.put(p + 24, 0x13200);
        assert_eq!(check(&m, &[b], None), [Some(Death::Reused)]);
        // Data (a buffer of zeros or text) has no fingerprint.
        let q = 0x15010;
        m.chunk(q, 100);
        m.put(q + 8, 0x4141_4141_4141_4141);
        assert_eq!(fingerprint(&m, q), None);
    }

    #[test]
    fn the_tcache_key_comes_from_any_non_empty_bin() {
        let mut m = Image::new();
        let heap = 0x10000;
        assert_eq!(tcache_key(&m, heap), None, "every bin empty");
        let key = 0xdead_beef_0bad_f00d;
        // Bin 3 holds one chunk at 0x14010, bin 10 one at 0x15010.
        m.put(heap + 16 + 6, 1);
        m.put(heap + 16 + 128 + 3 * 8, 0x14010);
        m.put(0x14018, key);
        assert_eq!(tcache_key(&m, heap), Some(key));
        m.put(heap + 16 + 20, 1);
        m.put(heap + 16 + 128 + 10 * 8, 0x15010);
        m.put(0x15018, key ^ 1);
        assert_eq!(tcache_key(&m, heap), None, "bins disagree: not a key");
        let maps = "55d0c000-55d0e000 rw-p 00000000 00:00 0 \n55d0e000-55f0e000 rw-p 00000000 00:00 0                          [heap]\n";
        assert_eq!(heap_start(maps), Some(0x55d0_e000));
    }
}
