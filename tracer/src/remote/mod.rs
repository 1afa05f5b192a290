//! Reading another process's memory without stopping it: `process_vm_readv`, batched, or
//! from a copy of its densest parts taken before a walk (snapshot.rs).

mod snapshot;

use std::io::IoSliceMut;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

pub use snapshot::{Demand, Snapshot};

/// Read-only access to a target's address space. Implemented by the live process and by memory
/// images in tests.
pub trait Memory {
    /// Fills `buf` from `addr`; errors when any byte is unreadable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()>;

    fn read_u64(&self, addr: u64) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_vec(&self, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    /// Reads many regions; each result is `None` when that region could not be read. One region
    /// at a time unless the implementation can batch (a live process does). A result may share
    /// its buffer with others of the batch (no copy, no allocation per region).
    fn read_batch(&self, regions: &[(u64, usize)]) -> Vec<Option<Bytes>> {
        regions.iter().map(|&(addr, len)| self.read_vec(addr, len).ok().map(Bytes::from)).collect()
    }

    /// Like [`Memory::read_batch`], but from the target as it is now, never from a copy: what
    /// proves a structure was not changed while it was read (a header re-read after a body).
    fn read_batch_live(&self, regions: &[(u64, usize)]) -> Vec<Option<Bytes>> {
        self.read_batch(regions)
    }

    /// The bytes of `[addr, addr + len)` in a copy of the target taken before, when there is one
    /// and it holds them all; never a read of the target itself, nor a copy of the bytes.
    fn copied(&self, _addr: u64, _len: usize) -> Option<&[u8]> {
        None
    }

    /// The word at `addr` in a copy of the target taken before ([`Memory::copied`]).
    fn copied_u64(&self, addr: u64) -> Option<u64> {
        self.copied(addr, 8).map(|b| le_u64(b, 0))
    }

    /// Bytes copied out of the target so far, when the implementation counts them (batched
    /// reads copy the gaps between close regions too).
    fn bytes_copied(&self) -> Option<u64> {
        None
    }

    /// The anonymous writable private mappings (where the heap is), when known: what a
    /// [`Snapshot`] may copy. None for memory that is not a live process.
    fn writable_mappings(&self) -> Vec<Range<u64>> {
        Vec::new()
    }
}

/// The little-endian u64 at `off` in bytes copied out of the target; 0 when `buf` is too short
/// (a short copy reads as zeros, which every caller treats as "absent").
pub fn le_u64(buf: &[u8], off: usize) -> u64 {
    off.checked_add(8)
        .and_then(|end| buf.get(off..end))
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

/// The little-endian u32 at `off`; 0 when `buf` is too short (see [`le_u64`]).
pub fn le_u32(buf: &[u8], off: usize) -> u32 {
    off.checked_add(4)
        .and_then(|end| buf.get(off..end))
        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
}

/// A live process, read with `process_vm_readv` (needs CAP_SYS_PTRACE or the same user).
#[derive(Debug, Clone)]
pub struct ProcessMemory {
    pub pid: u32,
    /// Bytes copied out of the target by reads through this handle (and its clones).
    copied: Arc<AtomicU64>,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        Self { pid, copied: Arc::default() }
    }

    fn count(&self, bytes: usize) {
        self.copied.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Reads many regions in as few syscalls and kernel page walks as possible. Each result is
    /// `None` when that region could not be read. Regions close together in the target (objects
    /// of one allocator pool) are read as one span: the kernel's cost is per remote region and
    /// page, not per byte. A span that faults is read again region by region.
    pub fn read_many(&self, regions: &[(u64, usize)]) -> Vec<Option<Bytes>> {
        let mut order: Vec<usize> = (0..regions.len()).collect();
        order.sort_unstable_by_key(|&i| regions[i].0);
        // (start, end, members as a range of `order`)
        let mut spans: Vec<(u64, u64, std::ops::Range<usize>)> = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let (addr, len) = regions[i];
            let end = addr.saturating_add(len as u64);
            match spans.last_mut() {
                Some(s) if addr <= s.1.saturating_add(SPAN_GAP) && end.max(s.1) - s.0 <= SPAN_MAX => {
                    s.1 = s.1.max(end);
                    s.2.end = k + 1;
                }
                _ => spans.push((addr, end, k..k + 1)),
            }
        }
        let span_regions: Vec<(u64, usize)> = spans.iter().map(|s| (s.0, (s.1 - s.0) as usize)).collect();
        let got = self.read_regions(&span_regions);
        let mut out: Vec<Option<Bytes>> = vec![None; regions.len()];
        let mut retry = Vec::new();
        for (span, buf) in spans.iter().zip(got) {
            for &i in &order[span.2.clone()] {
                match &buf {
                    Some(b) => {
                        let (addr, len) = regions[i];
                        let off = (addr - span.0) as usize;
                        out[i] = Some(b.slice(off..off + len));
                    }
                    None if span.2.len() > 1 => retry.push(i),
                    None => {}
                }
            }
        }
        if !retry.is_empty() {
            let alone: Vec<(u64, usize)> = retry.iter().map(|&i| regions[i]).collect();
            for (i, r) in retry.into_iter().zip(self.read_regions(&alone)) {
                out[i] = r;
            }
        }
        out
    }

    /// Reads each region as it is, in batches of `IOV_MAX` into one buffer per batch (the
    /// results are views of it). The kernel stops a batch at the first region that faults: that
    /// one is read alone (to tell a bad region from a short one) and the batch goes on after it,
    /// so one bad pointer costs two syscalls.
    fn read_regions(&self, regions: &[(u64, usize)]) -> Vec<Option<Bytes>> {
        const IOV_MAX: usize = 1024;
        let mut out: Vec<Option<Bytes>> = vec![None; regions.len()];
        let mut start = 0;
        while start < regions.len() {
            let chunk = &regions[start..regions.len().min(start + IOV_MAX)];
            let total: usize = chunk.iter().map(|r| r.1).sum();
            let mut buf = vec![0u8; total];
            let remote: Vec<RemoteIoVec> =
                chunk.iter().map(|&(addr, len)| RemoteIoVec { base: addr as usize, len }).collect();
            let got = {
                let mut local: Vec<IoSliceMut> = Vec::with_capacity(chunk.len());
                let mut rest = buf.as_mut_slice();
                for &(_, len) in chunk {
                    let (head, tail) = rest.split_at_mut(len);
                    local.push(IoSliceMut::new(head));
                    rest = tail;
                }
                process_vm_readv(Pid::from_raw(self.pid as i32), &mut local, &remote).unwrap_or(0)
            };
            self.count(got);
            let buf = Bytes::from(buf);
            let mut consumed = 0usize;
            let mut next = start + chunk.len();
            for (i, &(addr, len)) in chunk.iter().enumerate() {
                if consumed + len > got {
                    out[start + i] = self.read_vec(addr, len).ok().map(Bytes::from);
                    next = start + i + 1;
                    break;
                }
                out[start + i] = Some(buf.slice(consumed..consumed + len));
                consumed += len;
            }
            start = next;
        }
        out
    }
}

/// Regions at most this far apart are read as one span (bytes in between are read and dropped).
/// 1 KiB halved the kernel's page-pinning time on a Tornado heap but copied ~2.9x the bytes
/// asked for, and on one process with the two builds alternated the walk was no faster
/// (BENCHMARKS.md).
const SPAN_GAP: u64 = 256;
/// The longest span read as one.
const SPAN_MAX: u64 = 64 << 10;

impl Memory for ProcessMemory {
    fn read_batch(&self, regions: &[(u64, usize)]) -> Vec<Option<Bytes>> {
        self.read_many(regions)
    }

    fn bytes_copied(&self) -> Option<u64> {
        Some(self.copied.load(Ordering::Relaxed))
    }

    fn writable_mappings(&self) -> Vec<Range<u64>> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).unwrap_or_default();
        crate::procfs::parse_maps(&maps)
            .into_iter()
            .filter(|m| m.path.is_none() && m.perms.starts_with("rw") && m.perms.ends_with('p'))
            .map(|m| m.start..m.end)
            .collect()
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        let remote = [RemoteIoVec { base: addr as usize, len }];
        let mut local = [IoSliceMut::new(buf)];
        let n = process_vm_readv(Pid::from_raw(self.pid as i32), &mut local, &remote).map_err(std::io::Error::from)?;
        self.count(n);
        if n == len {
            Ok(())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_words_and_short_copies() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le_u64(&b, 0), 0x0807_0605_0403_0201);
        assert_eq!(le_u64(&b, 1), 0x0908_0706_0504_0302);
        assert_eq!(le_u32(&b, 5), 0x0908_0706);
        // Past the end, or an offset that would overflow: zero, never a panic.
        assert_eq!((le_u64(&b, 2), le_u32(&b, 6), le_u64(&b, usize::MAX)), (0, 0, 0));
    }

    /// Reads of this test's own memory: close regions are copied as one span, gap included,
    /// and the count says so; far ones are copied alone.
    #[test]
    fn batched_reads_count_the_bytes_they_copy() {
        let buf: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let base = buf.as_ptr() as u64;
        let mem = ProcessMemory::new(std::process::id());
        let close = mem.read_batch(&[(base, 8), (base + 108, 8)]);
        assert_eq!(close[1].as_deref(), Some(&buf[108..116]));
        assert_eq!(mem.bytes_copied(), Some(116));
        let far = mem.read_batch(&[(base, 8), (base + 2048, 8)]);
        assert_eq!(far[1].as_deref(), Some(&buf[2048..2056]));
        assert_eq!(mem.bytes_copied(), Some(116 + 16));
    }

    /// A memory image of one region, read one region at a time by the default `read_batch`.
    struct Region(u64, Vec<u8>);

    impl Memory for Region {
        fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            let off = addr.checked_sub(self.0).ok_or(std::io::ErrorKind::InvalidInput)? as usize;
            let src = self.1.get(off..off + buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    #[test]
    fn a_live_batch_goes_on_after_a_bad_region() {
        let a: Vec<u8> = (0..64).collect();
        let b: Vec<u8> = (100..164).collect();
        let (pa, pb) = (a.as_ptr() as u64, b.as_ptr() as u64);
        let mem = ProcessMemory::new(std::process::id());
        let mut regions = vec![(pa, 8), (0x10, 8), (pb, 16), (pa + 8, 8)];
        // Past one iovec batch: the faulting region sits in the second.
        regions.extend((0..1100).map(|k| (pa + (k % 56) as u64, 8)));
        regions.push((0x20, 4));
        regions.push((pb + 4, 4));
        let got = mem.read_many(&regions);
        assert_eq!(got[0].as_deref(), Some(&a[0..8]));
        assert_eq!(got[1], None);
        assert_eq!(got[2].as_deref(), Some(&b[0..16]));
        assert_eq!(got[3].as_deref(), Some(&a[8..16]));
        assert!(got[4..1104].iter().enumerate().all(|(k, g)| g.as_deref() == Some(&a[k % 56..k % 56 + 8])));
        assert_eq!(got[1104], None);
        assert_eq!(got[1105].as_deref(), Some(&b[4..8]));
    }

    #[test]
    fn one_bad_region_spoils_only_itself() {
        let mem = Region(0x1000, (0..32).collect());
        let got = mem.read_batch(&[(0x1000, 4), (0x0fff, 4), (0x101c, 4), (0x101d, 4)]);
        let got: Vec<Option<&[u8]>> = got.iter().map(|g| g.as_deref()).collect();
        assert_eq!(got, vec![Some(&[0u8, 1, 2, 3][..]), None, Some(&[28, 29, 30, 31][..]), None]);
    }
}
