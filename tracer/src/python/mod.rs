//! CPython knowledge: which version a target runs, where its structures are (offsets kept as
//! data per version), and how to turn raw frames into `function (file:line)`.

pub mod code;
pub mod debug_offsets;
pub mod heap;
pub mod layout;
pub mod linetable;

use anyhow::Result;

use crate::elf::Mapped;
use crate::error::user_error;
use crate::remote::{Memory, ProcessMemory};

pub use layout::Layout;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PyVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

/// `micro` when the build does not say (3.10 without a symbol table).
pub const MICRO_UNKNOWN: u32 = u32::MAX;

impl std::fmt::Display for PyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.micro == MICRO_UNKNOWN {
            write!(f, "{}.{}", self.major, self.minor)
        } else {
            write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
        }
    }
}

impl PyVersion {
    /// From `PY_VERSION_HEX` (0x030B07F0 = 3.11.7 final).
    pub fn from_hex(hex: u64) -> Self {
        Self {
            major: ((hex >> 24) & 0xff) as u32,
            minor: ((hex >> 16) & 0xff) as u32,
            micro: ((hex >> 8) & 0xff) as u32,
        }
    }

    /// From "3.10.13" (anything after the third number is ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let micro_str: String = it.next().unwrap_or("0").chars().take_while(|c| c.is_ascii_digit()).collect();
        let micro = micro_str.parse().unwrap_or(0);
        Some(Self { major, minor, micro })
    }
}

pub const OLDEST_SUPPORTED: (u32, u32) = (3, 10);
pub const NEWEST_SUPPORTED: (u32, u32) = (3, 14);

/// The running interpreter's version, read from the target: `Py_Version` (3.11+); for older
/// builds, which API they export (3.10 added `PyModule_AddObjectRef`) and the text of
/// `sys.version` in the target's memory for the micro version.
pub fn detect_version(pid: u32, python: &Mapped) -> Result<PyVersion> {
    let mem = ProcessMemory::new(pid);
    let from_symbol = python
        .runtime_addr("Py_Version")
        .and_then(|a| mem.read_u64(a).ok())
        .or_else(|| {
            python
                .elf
                .symbol("Py_Version")
                .and_then(|v| python.elf.bytes_at(v, 8))
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        })
        .map(PyVersion::from_hex)
        .filter(|v| v.major == 3);
    let version = match from_symbol {
        Some(v) => v,
        None if python.elf.symbol("PyModule_AddObjectRef").is_some() => {
            let micro = running_version_text(&mem, python).filter(|v| v.minor == 10).map_or(MICRO_UNKNOWN, |v| v.micro);
            PyVersion { major: 3, minor: 10, micro }
        }
        None => {
            return Err(user_error(
                format!("process {pid} runs CPython 3.9 or older ({}), which tracer does not support", python.path),
                "tracer supports CPython 3.10 to 3.14",
            ))
        }
    };
    let mm = (version.major, version.minor);
    if mm < OLDEST_SUPPORTED || mm > NEWEST_SUPPORTED {
        return Err(user_error(
            format!("CPython {version} is not supported (process {pid}, {})", python.path),
            "tracer supports CPython 3.10 to 3.14",
        ));
    }
    Ok(version)
}

/// `Py_GetVersion`'s buffer ("3.10.13 (main, ...") when the symbol table names it.
fn running_version_text(mem: &ProcessMemory, python: &Mapped) -> Option<PyVersion> {
    let addr = python.runtime_addr("version.0").or_else(|| python.runtime_addr("version"))?;
    let bytes = mem.read_vec(addr, 16).ok()?;
    let text: String = bytes.iter().take_while(|&&b| b != 0 && b != b' ').map(|&b| b as char).collect();
    PyVersion::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_hex_and_text() {
        assert_eq!(PyVersion::from_hex(0x030b07f0), PyVersion { major: 3, minor: 11, micro: 7 });
        assert_eq!(PyVersion::from_hex(0x030e0af0).to_string(), "3.14.10");
        assert_eq!(PyVersion::parse("3.10.13"), Some(PyVersion { major: 3, minor: 10, micro: 13 }));
        assert_eq!(PyVersion::parse("3.15.0a1").map(|v| v.minor), Some(15));
        assert_eq!(PyVersion::parse("garbage"), None);
        assert_eq!(PyVersion { major: 3, minor: 10, micro: MICRO_UNKNOWN }.to_string(), "3.10");
    }
}
