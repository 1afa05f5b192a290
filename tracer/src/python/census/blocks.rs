//! A cache of 64 KiB blocks of the target's memory: the census reads every tracked object's
//! header, and neighbours in a GC list are mostly neighbours in memory, so one big read serves
//! hundreds of objects (docs/cpython/census.md §3: ~450 reads instead of ~170 000 for a Tornado
//! heap). The cache is a copy, not a snapshot: a failed check means "flush and re-read", which
//! the list walk does. Its size is capped; when full it starts over.

use std::collections::HashMap;

use super::walk::AddrMap;
use crate::remote::Memory;

pub const BLOCK: u64 = 64 << 10;
const PAGE: u64 = 4096;

/// What one block of the cache holds.
enum Block {
    /// The whole block.
    Full(Box<[u8]>),
    /// The block could not be read whole (it crosses the end of a mapping): its pages, each
    /// read on first use (`None`: unreadable).
    Pages(HashMap<u64, Option<Box<[u8]>>>),
}

pub struct BlockCache<'a> {
    mem: &'a dyn Memory,
    blocks: AddrMap<Block>,
    cached: usize,
    cap: usize,
    /// Bytes copied out of the target, and read requests made.
    pub bytes_read: u64,
    pub reads: u64,
}

impl<'a> BlockCache<'a> {
    pub fn new(mem: &'a dyn Memory, cap: usize) -> Self {
        BlockCache { mem, blocks: AddrMap::default(), cached: 0, cap: cap.max(BLOCK as usize), bytes_read: 0, reads: 0 }
    }

    /// Forgets every cached byte (after a failed check: the copy is stale).
    pub fn flush(&mut self) {
        self.blocks.clear();
        self.cached = 0;
    }

    /// Fills `out` from `addr` through the cache; `false` when any byte is unreadable.
    pub fn read(&mut self, addr: u64, out: &mut [u8]) -> bool {
        let Some(end) = addr.checked_add(out.len() as u64) else { return false };
        if addr < 0x1_0000 || end > 0x7fff_ffff_f000 {
            return false;
        }
        let mut done = 0usize;
        while done < out.len() {
            let a = addr + done as u64;
            let n = ((PAGE - a % PAGE) as usize).min(out.len() - done);
            let Some(src) = self.page_slice(a, n) else { return false };
            out[done..done + n].copy_from_slice(src);
            done += n;
        }
        true
    }

    /// Reads `len` bytes straight from the target (no cache): for words that change under the
    /// walk (list heads, the `collecting` flag) and for re-checks.
    pub fn read_live(&mut self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.reads += 1;
        let v = self.mem.read_vec(addr, len).ok()?;
        self.bytes_read += len as u64;
        Some(v)
    }

    /// `n` bytes at `a`, all within one page.
    fn page_slice(&mut self, a: u64, n: usize) -> Option<&[u8]> {
        let base = a - a % BLOCK;
        if !self.blocks.contains_key(&base) {
            self.load(base);
        }
        let off = (a - base) as usize;
        match self.blocks.get_mut(&base)? {
            Block::Full(b) => b.get(off..off + n),
            Block::Pages(pages) => {
                let page = a - a % PAGE;
                let (mem, reads, bytes, cached) = (self.mem, &mut self.reads, &mut self.bytes_read, &mut self.cached);
                let p = pages.entry(page).or_insert_with(|| {
                    *reads += 1;
                    let got = mem.read_vec(page, PAGE as usize).ok().map(Vec::into_boxed_slice);
                    if got.is_some() {
                        *bytes += PAGE;
                        *cached += PAGE as usize;
                    }
                    got
                });
                let p = p.as_ref()?;
                let o = (a - page) as usize;
                p.get(o..o + n)
            }
        }
    }

    fn load(&mut self, base: u64) {
        if self.cached + BLOCK as usize > self.cap {
            self.flush();
        }
        self.reads += 1;
        let block = match self.mem.read_vec(base, BLOCK as usize) {
            Ok(v) => {
                self.bytes_read += BLOCK;
                self.cached += BLOCK as usize;
                Block::Full(v.into_boxed_slice())
            }
            Err(_) => Block::Pages(HashMap::new()),
        };
        self.blocks.insert(base, block);
    }
}
