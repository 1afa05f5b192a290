//! ELF images of the target's libc and interpreter: symbols, file offsets, static data, and
//! where each is mapped in the target.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use anyhow::{Context, Result};
use object::{Object, ObjectSegment, ObjectSymbol};

#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
}

/// The most bytes one `bytes_at` reads (its callers read tables of a few hundred bytes).
const MAX_BYTES_AT: usize = 1 << 20;

/// The parts of an ELF file the tracer uses, parsed once.
pub struct ElfImage {
    /// How this process's copy was opened (uprobes are attached through it).
    pub path: PathBuf,
    parsed: Arc<Parsed>,
}

struct Parsed {
    /// Where initialised bytes are read from: the file itself, kept open rather than in memory
    /// (a libpython is ~25 MiB and only a few hundred bytes of it are ever read again; the open
    /// file stays the one that is mapped even if a package upgrade replaces the path).
    bytes: Bytes,
    /// Defined symbols from .dynsym and .symtab (dynsym wins), name -> virtual address.
    symbols: HashMap<String, u64>,
    segments: Vec<Segment>,
}

/// (device, inode, size, mtime): the same file, whichever path or process it is seen through.
type FileKey = (u64, u64, u64, i64, i64);

enum Bytes {
    File(std::fs::File),
    /// Images parsed from memory (tests).
    #[cfg(test)]
    Memory(Vec<u8>),
}

impl Bytes {
    fn get(&self, off: u64, len: usize) -> Option<Vec<u8>> {
        match self {
            Bytes::File(f) => {
                let mut buf = vec![0; len];
                f.read_exact_at(&mut buf, off).ok()?;
                Some(buf)
            }
            #[cfg(test)]
            Bytes::Memory(data) => {
                let off = usize::try_from(off).ok()?;
                data.get(off..off.checked_add(len)?).map(<[u8]>::to_vec)
            }
        }
    }
}

/// Files parsed and still held by some `ElfImage`. In host mode twenty processes of one
/// interpreter share one copy of its libpython (about 25 MiB) instead of holding twenty.
static PARSED: Mutex<Vec<(FileKey, Weak<Parsed>)>> = Mutex::new(Vec::new());

impl ElfImage {
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        let key: FileKey = (meta.dev(), meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec());
        let mut cache = PARSED.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(_, w)| w.strong_count() > 0);
        if let Some(parsed) = cache.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
            return Ok(Self { path: path.to_path_buf(), parsed });
        }
        let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).with_context(|| format!("reading {}", path.display()))?;
        let (symbols, segments) = Self::parse_tables(path, &data)?;
        drop(data);
        let image =
            Self { path: path.to_path_buf(), parsed: Arc::new(Parsed { bytes: Bytes::File(file), symbols, segments }) };
        cache.push((key, Arc::downgrade(&image.parsed)));
        Ok(image)
    }

    /// An image parsed from bytes in memory.
    #[cfg(test)]
    pub fn parse(path: PathBuf, data: Vec<u8>) -> Result<Self> {
        let (symbols, segments) = Self::parse_tables(&path, &data)?;
        Ok(Self { path, parsed: Arc::new(Parsed { bytes: Bytes::Memory(data), symbols, segments }) })
    }

    fn parse_tables(path: &Path, data: &[u8]) -> Result<(HashMap<String, u64>, Vec<Segment>)> {
        let tables = {
            let file = object::File::parse(data).with_context(|| format!("{} is not an ELF file", path.display()))?;
            let mut symbols = HashMap::new();
            for sym in file.symbols().chain(file.dynamic_symbols()) {
                if sym.is_undefined() || sym.address() == 0 {
                    continue;
                }
                if let Ok(name) = sym.name() {
                    // Versioned names ("malloc@@GLIBC_2.2.5") also answer to the bare name.
                    let bare = name.split('@').next().unwrap_or(name);
                    symbols.insert(bare.to_string(), sym.address());
                }
            }
            let segments = file
                .segments()
                .map(|s| {
                    let (offset, filesz) = s.file_range();
                    Segment { vaddr: s.address(), memsz: s.size(), offset, filesz }
                })
                .collect();
            (symbols, segments)
        };
        Ok(tables)
    }

    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.parsed.symbols.get(name).copied()
    }

    /// File offset of a virtual address (what a uprobe is attached at).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        // Differences, not sums: a corrupt segment can end past 2^64.
        self.parsed
            .segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz.min(s.memsz))
            .and_then(|s| (vaddr - s.vaddr).checked_add(s.offset))
    }

    /// Virtual address that file offset `offset` is loaded at (before the load bias).
    pub fn vaddr_of_offset(&self, offset: u64) -> Option<u64> {
        self.parsed
            .segments
            .iter()
            .find(|s| s.filesz > 0 && offset >= s.offset && offset - s.offset < s.filesz)
            .and_then(|s| s.vaddr.checked_add(offset - s.offset))
    }

    /// Initialised bytes at a virtual address, straight from the file (constants in .rodata).
    pub fn bytes_at(&self, vaddr: u64, len: usize) -> Option<Vec<u8>> {
        if len > MAX_BYTES_AT {
            return None;
        }
        self.parsed.bytes.get(self.file_offset(vaddr)?, len)
    }

    /// Bytes of the function at `vaddr`, for decoding its prologue.
    pub fn code_at(&self, vaddr: u64, len: usize) -> Option<Vec<u8>> {
        self.bytes_at(vaddr, len)
    }
}

/// An ELF object mapped into the target.
pub struct Mapped {
    /// Path inside the target's mount namespace, as /proc/PID/maps shows it.
    pub path: String,
    /// Load bias: runtime address = ELF virtual address + bias.
    pub bias: u64,
    pub start: u64,
    pub end: u64,
    pub elf: ElfImage,
}

impl Mapped {
    /// Where `symbol` is in the target's address space.
    pub fn runtime_addr(&self, symbol: &str) -> Option<u64> {
        self.elf.symbol(symbol).map(|v| v + self.bias)
    }
}
