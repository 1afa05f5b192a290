//! CPython knowledge: which version a target runs, where its structures are (offsets kept as
//! data per version), and how to turn raw frames into `function (file:line)`.

pub mod code;
pub mod debug_offsets;
pub mod heap;
pub mod layout;
pub mod linetable;

use anyhow::Result;

use crate::error::user_error;
use crate::remote::{Memory, ProcessMemory};
use crate::target::MappedObject;

pub use layout::Layout;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PyVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl std::fmt::Display for PyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

impl PyVersion {
    /// From `PY_VERSION_HEX` (0x030B07F0 = 3.11.7 final).
    pub fn from_hex(hex: u64) -> Self {
        Self { major: ((hex >> 24) & 0xff) as u32, minor: ((hex >> 16) & 0xff) as u32, micro: ((hex >> 8) & 0xff) as u32 }
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

/// The running interpreter's version, read from the target: `Py_Version` (3.11+), the debug
/// offsets header (3.13+), or the `PY_VERSION` string in the interpreter's read-only data.
pub fn detect_version(pid: u32, python: &MappedObject) -> Result<PyVersion> {
    let mem = ProcessMemory::new(pid);
    let from_symbol = python.runtime_addr("Py_Version").and_then(|a| mem.read_u64(a).ok()).map(PyVersion::from_hex);
    let version = from_symbol
        .filter(|v| v.major == 3)
        .or_else(|| version_string_in_rodata(python))
        .ok_or_else(|| {
            user_error(
                format!("cannot tell which CPython version {} is", python.path),
                "tracer supports CPython 3.10 to 3.14; please report this build",
            )
        })?;
    let mm = (version.major, version.minor);
    if mm < OLDEST_SUPPORTED || mm > NEWEST_SUPPORTED {
        return Err(user_error(
            format!("CPython {version} is not supported (process {pid}, {})", python.path),
            "tracer supports CPython 3.10 to 3.14",
        ));
    }
    Ok(version)
}

/// 3.10 and older export no `Py_Version`: find the NUL-terminated "3.X.Y" literal that
/// `Py_GetVersion` formats from.
fn version_string_in_rodata(python: &MappedObject) -> Option<PyVersion> {
    let data = python.elf.section_bytes(".rodata")?;
    let mut found: Option<PyVersion> = None;
    for piece in data.split(|&b| b == 0) {
        if piece.len() < 5 || piece.len() > 10 || !piece.starts_with(b"3.") {
            continue;
        }
        let Ok(s) = std::str::from_utf8(piece) else { continue };
        let numeric = s.split('.').count() == 3 && s.chars().all(|c| c.is_ascii_digit() || c == '.');
        let pre_release = s.chars().any(|c| "abrc+".contains(c));
        if !(numeric || pre_release) {
            continue;
        }
        if let Some(v) = PyVersion::parse(s) {
            if v.minor >= 4 {
                found = Some(found.map_or(v, |f| f.max(v)));
            }
        }
    }
    found
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
    }
}
