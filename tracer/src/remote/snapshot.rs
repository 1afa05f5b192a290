//! A copy of the parts of a target's heap that a walk reads densely, taken in one pass before
//! the walk, so that it reads those pages once instead of once per object: the kernel's cost of
//! `process_vm_readv` is per remote region and page, not per byte.
//!
//! Which parts: the 1 MiB chunks of the anonymous writable mappings (pymalloc's arenas, glibc's
//! heaps, the interpreter's frame chunks) of which the previous walk asked at least
//! 1/[`DENSE`] of the bytes, densest first, up to a cap. A heap a walk barely touches (a
//! million objects of which it reaches thousands) is not copied, nor are idle thread stacks.
//! The first walk copies every such mapping if they fit under the cap, and none otherwise.
//!
//! Consistency: the copy is not atomic. It is taken in address order over some milliseconds
//! while the target runs, so it is a slightly smeared picture of the heap, like the live walk's
//! own reads (which take longer). Reads that prove a structure was not changed while it was
//! read (header re-checks, retries) go to the live process ([`Memory::read_batch_live`]): a
//! structure changed since it was copied fails its re-check and is read again live.

use std::cell::RefCell;
use std::ops::Range;

use bytes::Bytes;

use super::Memory;

/// A chunk is copied when the last walk asked at least 1/DENSE of its bytes.
const DENSE: u64 = 16;
/// The unit of demand and of copying: a chunk that cannot be read is served live.
const CHUNK_SHIFT: u32 = 20;
const CHUNK: u64 = 1 << CHUNK_SHIFT;
/// Chunks counted at most (16 GiB of address space): reads past them are not planned for.
const MAX_CHUNKS: usize = 1 << 14;

/// Bytes the last walk asked of each 1 MiB chunk of the address space, by chunk number, sorted
/// (a heap spans a few hundred chunks: a binary search beats hashing here).
#[derive(Debug, Default, Clone)]
pub struct Demand(Vec<(u64, u64)>);

impl Demand {
    fn note(&mut self, regions: &[(u64, usize)]) {
        for &(addr, len) in regions {
            let chunk = addr >> CHUNK_SHIFT;
            match self.0.binary_search_by_key(&chunk, |e| e.0) {
                Ok(k) => self.0[k].1 += len as u64,
                Err(k) if self.0.len() < MAX_CHUNKS => self.0.insert(k, (chunk, len as u64)),
                Err(_) => {}
            }
        }
    }

    fn asked(&self, chunk: u64) -> u64 {
        self.0.binary_search_by_key(&chunk, |e| e.0).map_or(0, |k| self.0[k].1)
    }

    /// The parts of `mappings` worth copying: 1 MiB-aligned chunks (cut to their mapping) the
    /// last walk asked at least 1/[`DENSE`] of, densest first while together at most `cap`
    /// bytes; returned by address, adjacent ones joined.
    /// Before any walk (nothing asked yet): all of `mappings`, if together at most `cap`.
    pub fn dense_parts(&self, mappings: &[Range<u64>], cap: u64) -> Vec<Range<u64>> {
        if self.0.is_empty() {
            let total: u64 = mappings.iter().map(|m| m.end - m.start).sum();
            return if total <= cap { join_adjacent(mappings.to_vec()) } else { Vec::new() };
        }
        let mut chunks: Vec<(u64, Range<u64>)> = Vec::new();
        for m in mappings {
            let mut start = m.start;
            while start < m.end {
                let end = ((start >> CHUNK_SHIFT) + 1).saturating_mul(CHUNK).min(m.end);
                let asked = self.asked(start >> CHUNK_SHIFT);
                if asked.saturating_mul(DENSE) >= end - start {
                    chunks.push((asked / ((end - start) >> 10).max(1), start..end));
                }
                start = end;
            }
        }
        chunks.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.start.cmp(&b.1.start)));
        let mut total = 0u64;
        let mut parts: Vec<Range<u64>> = Vec::new();
        for (_, r) in chunks {
            if total + (r.end - r.start) > cap {
                continue;
            }
            total += r.end - r.start;
            parts.push(r);
        }
        parts.sort_by_key(|r| r.start);
        join_adjacent(parts)
    }
}

fn join_adjacent(parts: Vec<Range<u64>>) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(parts.len());
    for r in parts {
        match out.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

/// A walk's memory: the copied parts, the live process for everything else, and a count of
/// what the walk asked where (the next walk's [`Demand`]).
pub struct Snapshot<'a> {
    live: &'a dyn Memory,
    /// The copy: one buffer, reused across walks when no view of it is left.
    whole: Bytes,
    /// Copied parts: address, view of `whole`; sorted by address, disjoint.
    parts: Vec<(u64, Bytes)>,
    demand: RefCell<Demand>,
}

impl<'a> Snapshot<'a> {
    /// Copies `parts` of `live` (each read as one, in address order) into `buf`'s allocation. A
    /// part that cannot be read whole is left out: reads there go live.
    pub fn take(live: &'a dyn Memory, parts: &[Range<u64>], mut buf: Vec<u8>) -> Self {
        let total: usize = parts.iter().map(|r| (r.end - r.start) as usize).sum();
        if buf.capacity() < total {
            // A new buffer with room for a growing heap, not a reallocation that copies the old.
            buf = Vec::with_capacity(total + total / 4);
        }
        // Every byte kept is overwritten by its part's read: no need to zero a reused buffer.
        if buf.len() >= total {
            buf.truncate(total);
        } else {
            buf.resize(total, 0);
        }
        let mut copied: Vec<(u64, Range<usize>)> = Vec::new();
        let mut off = 0usize;
        for r in parts {
            let len = (r.end - r.start) as usize;
            if live.read(r.start, &mut buf[off..off + len]).is_ok() {
                copied.push((r.start, off..off + len));
            }
            off += len;
        }
        let whole = Bytes::from(buf);
        let parts = copied.into_iter().map(|(a, r)| (a, whole.slice(r))).collect();
        Snapshot { live, whole, parts, demand: RefCell::default() }
    }

    /// Bytes copied into the snapshot.
    pub fn copied(&self) -> u64 {
        self.parts.iter().map(|p| p.1.len() as u64).sum()
    }

    /// What the walk asked (for the next walk's plan), and the buffer for the next copy (empty
    /// when a view of it is still held somewhere).
    pub fn finish(self) -> (Demand, Vec<u8>) {
        let Snapshot { whole, parts, demand, .. } = self;
        drop(parts);
        (demand.into_inner(), whole.try_into_mut().map(Vec::from).unwrap_or_default())
    }

    /// The copied bytes of `[addr, addr + len)`, when one part holds all of them.
    fn find(&self, addr: u64, len: usize) -> Option<Bytes> {
        let (k, off) = self.locate(addr, len)?;
        Some(self.parts[k].1.slice(off..off + len))
    }

    /// The part holding all of `[addr, addr + len)`, and where in it `addr` is.
    fn locate(&self, addr: u64, len: usize) -> Option<(usize, usize)> {
        let k = self.parts.partition_point(|p| p.0 <= addr).checked_sub(1)?;
        let (start, bytes) = &self.parts[k];
        let off = usize::try_from(addr - start).ok()?;
        (off.checked_add(len)? <= bytes.len()).then_some((k, off))
    }
}

impl Memory for Snapshot<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.demand.borrow_mut().note(&[(addr, buf.len())]);
        match self.find(addr, buf.len()) {
            Some(b) => {
                buf.copy_from_slice(&b);
                Ok(())
            }
            None => self.live.read(addr, buf),
        }
    }

    fn read_batch(&self, regions: &[(u64, usize)]) -> Vec<Option<Bytes>> {
        self.demand.borrow_mut().note(regions);
        let mut out: Vec<Option<Bytes>> = Vec::with_capacity(regions.len());
        let (mut missed_at, mut missed) = (Vec::new(), Vec::new());
        for (i, &(addr, len)) in regions.iter().enumerate() {
            let hit = self.find(addr, len);
            if hit.is_none() {
                missed_at.push(i);
                missed.push((addr, len));
            }
            out.push(hit);
        }
        if !missed.is_empty() {
            for (i, r) in missed_at.into_iter().zip(self.live.read_batch(&missed)) {
                out[i] = r;
            }
        }
        out
    }

    fn copied(&self, addr: u64, len: usize) -> Option<&[u8]> {
        // Not noted as demand: what is read this way (type words, items' headers) lies in chunks
        // the walk reads anyway.
        let (k, off) = self.locate(addr, len)?;
        Some(&self.parts[k].1[off..off + len])
    }

    fn read_batch_live(&self, regions: &[(u64, usize)]) -> Vec<Option<Bytes>> {
        self.demand.borrow_mut().note(regions);
        self.live.read_batch_live(regions)
    }

    fn bytes_copied(&self) -> Option<u64> {
        self.live.bytes_copied()
    }

    fn writable_mappings(&self) -> Vec<Range<u64>> {
        self.live.writable_mappings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory whose byte at `a` is `a as u8`, readable in `ok` only, counting live reads.
    struct Counting {
        ok: Range<u64>,
        reads: RefCell<u64>,
    }

    impl Memory for Counting {
        fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            *self.reads.borrow_mut() += 1;
            if addr < self.ok.start || addr + buf.len() as u64 > self.ok.end {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            for (k, b) in buf.iter_mut().enumerate() {
                *b = (addr + k as u64) as u8;
            }
            Ok(())
        }
    }

    #[test]
    fn dense_chunks_are_copied_densest_first_under_the_cap() {
        let mut d = Demand::default();
        // Before any walk: everything that fits, else nothing.
        let maps = [0x10_0000..0x18_0000, 0x18_0000..0x20_0000, 0x40_0000..0x41_0000];
        assert_eq!(d.dense_parts(&maps, 2 << 20), vec![0x10_0000..0x20_0000, 0x40_0000..0x41_0000]);
        assert_eq!(d.dense_parts(&maps, 1 << 20), vec![]);
        // chunk 0x10: 1 MiB asked (dense); 0x11: 300 KiB (dense); 0x12: just under the threshold.
        let under = (CHUNK / DENSE - 1) as usize;
        d.note(&[(0x10 << 20, 1 << 20), (0x11 << 20, 300 << 10), ((0x12 << 20) + 5, under)]);
        let map = [Range { start: 0x10 << 20, end: 0x13 << 20 }];
        assert_eq!(d.dense_parts(&map, 8 << 20), vec![(0x10 << 20)..(0x12 << 20)]);
        // Room for one chunk: the denser.
        assert_eq!(d.dense_parts(&map, 1 << 20), vec![(0x10 << 20)..(0x11 << 20)]);
        // A mapping that ends inside a chunk: only its own part, judged by its own length.
        let short = [Range { start: 0x12 << 20, end: (0x12 << 20) + (256 << 10) }];
        assert_eq!(d.dense_parts(&short, 8 << 20), short.to_vec());
    }

    #[test]
    fn reads_inside_the_copy_are_served_from_it_the_rest_live() {
        let mem = Counting { ok: 0x10_0000..0x30_0000, reads: RefCell::new(0) };
        // The second part is partly unreadable: left out, served live (and failing there).
        let snap = Snapshot::take(&mem, &[0x10_0000..0x20_0000, 0x2f_0000..0x31_0000], Vec::new());
        assert_eq!(snap.copied(), 1 << 20);
        let before = *mem.reads.borrow();
        let got = snap.read_batch(&[(0x10_0010, 4), (0x1f_fffe, 4), (0x2f_0000, 2), (0x30_0000, 2)]);
        assert_eq!(got[0].as_deref(), Some(&[0x10u8, 0x11, 0x12, 0x13][..]));
        // Crossing the copy's end: read live, same bytes.
        assert_eq!(got[1].as_deref(), Some(&[0xfeu8, 0xff, 0x00, 0x01][..]));
        assert_eq!(got[2].as_deref(), Some(&[0u8, 1][..]));
        assert_eq!(got[3], None);
        assert_eq!(*mem.reads.borrow() - before, 3, "one live read per miss, none for the hit");
        // A word from the copy only: none where the copy does not hold it whole, and no live read.
        assert_eq!(snap.copied_u64(0x10_0008), Some(u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15])));
        assert_eq!((snap.copied_u64(0x1f_fffc), snap.copied_u64(0x20_0000)), (None, None));
        assert_eq!(*mem.reads.borrow() - before, 3);
        drop(got);
        let (demand, buf) = snap.finish();
        assert!(buf.capacity() >= 1 << 20, "the buffer comes back for the next copy");
        assert_eq!((demand.asked(1), demand.asked(2), demand.asked(3)), (8, 2, 2));
    }
}
