//! CPython `str` objects read out of a target: where a compact string keeps its characters.

/// Where a version's compact `str` objects keep their characters (docs/cpython/frames.md,
/// "Strings"): right after the `PyASCIIObject` header for ASCII strings, after the
/// `PyCompactUnicodeObject` header otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrLayout {
    /// `sizeof(PyASCIIObject)`: 48 on 3.10/3.11 (the header still has `wstr`), 40 on 3.12+.
    pub ascii_data: u64,
    /// `sizeof(PyCompactUnicodeObject)`: 72 on 3.10/3.11, 56 on 3.12+.
    pub compact_data: u64,
}

/// `state` bit 6: the string is ASCII.
const STATE_ASCII: u32 = 1 << 6;

impl StrLayout {
    /// Where the characters of a compact string with this `state` word start.
    pub fn data_offset(&self, state: u32) -> u64 {
        if state & STATE_ASCII != 0 {
            self.ascii_data
        } else {
            self.compact_data
        }
    }
}
