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
