//! Reading another process's memory without stopping it: `process_vm_readv`, batched.

use std::io::IoSliceMut;

use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

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
    /// at a time unless the implementation can batch (a live process does).
    fn read_batch(&self, regions: &[(u64, usize)]) -> Vec<Option<Vec<u8>>> {
        regions.iter().map(|&(addr, len)| self.read_vec(addr, len).ok()).collect()
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
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    pub pid: u32,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    /// Reads many regions in as few syscalls as possible. Each result is `None` when that region
    /// (or a region before it in the same batch) could not be read; such regions are retried
    /// alone, so one bad pointer never spoils its neighbours.
    pub fn read_many(&self, regions: &[(u64, usize)]) -> Vec<Option<Vec<u8>>> {
        const IOV_MAX: usize = 1024;
        let mut out: Vec<Option<Vec<u8>>> = regions.iter().map(|_| None).collect();
        for (chunk_idx, chunk) in regions.chunks(IOV_MAX).enumerate() {
            let base = chunk_idx * IOV_MAX;
            let mut bufs: Vec<Vec<u8>> = chunk.iter().map(|&(_, len)| vec![0u8; len]).collect();
            let remote: Vec<RemoteIoVec> =
                chunk.iter().map(|&(addr, len)| RemoteIoVec { base: addr as usize, len }).collect();
            let got = {
                let mut local: Vec<IoSliceMut> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                process_vm_readv(Pid::from_raw(self.pid as i32), &mut local, &remote).unwrap_or(0)
            };
            let mut consumed = 0usize;
            for (i, buf) in bufs.into_iter().enumerate() {
                let len = buf.len();
                if consumed + len <= got {
                    out[base + i] = Some(buf);
                    consumed += len;
                } else {
                    // The kernel stops at the first faulting region: read the rest one by one.
                    let (addr, len) = chunk[i];
                    out[base + i] = self.read_vec(addr, len).ok();
                    consumed = usize::MAX / 2;
                }
            }
        }
        out
    }
}

impl Memory for ProcessMemory {
    fn read_batch(&self, regions: &[(u64, usize)]) -> Vec<Option<Vec<u8>>> {
        self.read_many(regions)
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        let remote = [RemoteIoVec { base: addr as usize, len }];
        let mut local = [IoSliceMut::new(buf)];
        let n = process_vm_readv(Pid::from_raw(self.pid as i32), &mut local, &remote).map_err(std::io::Error::from)?;
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
    fn one_bad_region_spoils_only_itself() {
        let mem = Region(0x1000, (0..32).collect());
        let got = mem.read_batch(&[(0x1000, 4), (0x0fff, 4), (0x101c, 4), (0x101d, 4)]);
        assert_eq!(got, vec![Some(vec![0, 1, 2, 3]), None, Some(vec![28, 29, 30, 31]), None]);
    }
}
