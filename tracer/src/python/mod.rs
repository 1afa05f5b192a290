//! CPython knowledge: which version a target runs and where its structures are
//! ([`Interpreter::inspect`], from the one table in versions.rs), how to turn raw frames into
//! `function (file:line)` (code.rs, linetable.rs), and how to read its containers (heap/).

pub mod addrs;
pub mod census;
pub mod code;
pub mod debug_offsets;
pub mod frames;
pub mod heap;
pub mod linetable;
pub mod origin;
pub mod pystr;
pub mod versions;

use anyhow::{Context, Result};
use tracer_ebpf::TargetConfig;

use crate::elf::Mapped;
use crate::error::user_error;
use crate::remote::{Memory, ProcessMemory};

pub use versions::Offsets;

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

/// A target's CPython: its version and where it keeps what tracer reads.
#[derive(Debug, Clone)]
pub struct Interpreter {
    pub version: PyVersion,
    /// The version's entry in versions.rs, with every field the target's own
    /// `_Py_DebugOffsets` (3.13+) records taken from it where the two differ.
    pub offsets: Offsets,
    /// `&_PyRuntime` in the target.
    pub runtime: u64,
    /// `&PyCode_Type` in the target (frames whose code object has another type are not code).
    pub code_type: u64,
}

impl Interpreter {
    /// Which CPython `python` (mapped into process `pid`) is, and where it keeps its
    /// structures. An error a person can act on when tracer does not read that version.
    pub fn inspect(pid: u32, python: &Mapped) -> Result<Interpreter> {
        let version = detect_version(pid, python)?;
        let runtime = python.runtime_addr("_PyRuntime").context("_PyRuntime")?;
        let code_type = python.runtime_addr("PyCode_Type").context("PyCode_Type")?;
        let builtin = versions::offsets(version.minor).context("no offsets for a supported version")?;
        let offsets = with_debug_offsets(pid, python, runtime, builtin);
        Ok(Interpreter { version, offsets, runtime, code_type })
    }

    /// The BPF side's view of this interpreter; an error when its frames lie at offsets the
    /// BPF side's read buffers do not cover.
    pub fn probe_config(&self) -> Result<TargetConfig> {
        let frames = &self.offsets.frames;
        if !frames.fits_bpf_buffers() {
            return Err(user_error(
                format!("CPython {} keeps its frames at offsets this build of tracer cannot read", self.version),
                "please report this interpreter build",
            ));
        }
        Ok(frames.target_config(self.runtime))
    }
}

/// `builtin`, or for 3.13+ the target's own `_Py_DebugOffsets` where it disagrees (read from
/// memory, or from the file before the runtime initialised it). Which one won is logged.
fn with_debug_offsets(pid: u32, python: &Mapped, runtime: u64, builtin: Offsets) -> Offsets {
    if builtin.debug_offsets.is_empty() {
        return builtin;
    }
    let minor = builtin.minor;
    let from_memory = ProcessMemory::new(pid).read_vec(runtime, debug_offsets::TABLE_BYTES).ok();
    let from_file = python.elf.symbol("_PyRuntime").and_then(|v| python.elf.bytes_at(v, debug_offsets::TABLE_BYTES));
    let parsed = [from_memory, from_file]
        .into_iter()
        .flatten()
        .filter_map(|bytes| debug_offsets::parse(&bytes))
        .find(|(hex, _, _)| ((hex >> 16) & 0xff) as u32 == minor);
    match parsed {
        Some((_, offsets, debug_offsets::Check::Match)) => {
            log::info!("_Py_DebugOffsets of the target match the built-in 3.{minor} offsets");
            offsets
        }
        Some((_, offsets, debug_offsets::Check::Differs(fields))) => {
            log::warn!("_Py_DebugOffsets differ from the built-in 3.{minor} offsets in {fields:?}; using the target's");
            offsets
        }
        None => {
            log::warn!("no readable _Py_DebugOffsets in {}; using the built-in offsets", python.path);
            builtin
        }
    }
}

/// The running interpreter's version, read from the target: `Py_Version` (3.11+); for older
/// builds, which API they export (3.10 added `PyModule_AddObjectRef`) and the text of
/// `sys.version` in the target's memory for the micro version.
fn detect_version(pid: u32, python: &Mapped) -> Result<PyVersion> {
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
                versions::supported_hint(),
            ))
        }
    };
    if version.major != 3 || !versions::SUPPORTED.contains(&version.minor) {
        return Err(user_error(
            format!("CPython {version} is not supported (process {pid}, {})", python.path),
            versions::supported_hint(),
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
