//! CPython `str` objects read out of a target: the one reader of compact strings, used for code
//! object names (code.rs) and for attribute, key and closure names (heap/).
//!
//! Layout (docs/cpython/frames.md, "Strings"): `PyASCIIObject` has `length` @16 and the `state`
//! bitfield @32 (`interned:2`, `kind:3` (1 = UCS1, 2 = UCS2, 4 = UCS4), `compact:1`, `ascii:1`;
//! bit 7 and up are other flags or padding CPython leaves uninitialised). A compact string's
//! characters follow its header: right after `PyASCIIObject` when ASCII, after
//! `PyCompactUnicodeObject` otherwise; where that is depends on the version ([`StrLayout`]).
//!
//! The bytes come from a process that kept running, so anything may be torn: every length is
//! checked before it is used and invalid input gives `None`, never a panic.

use crate::remote::{le_u32, le_u64, Memory};

/// Where a version's compact `str` objects keep their characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrLayout {
    /// `sizeof(PyASCIIObject)`: 48 on 3.10/3.11 (the header still has `wstr`), 40 on 3.12+.
    pub ascii_data: u64,
    /// `sizeof(PyCompactUnicodeObject)`: 72 on 3.10/3.11, 56 on 3.12+.
    pub compact_data: u64,
}

/// Bytes of a str object's header that hold `length` and `state`.
pub const HEADER: usize = 40;

const STATE_COMPACT: u32 = 1 << 5;
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

    /// Where a string's characters are, from the object's start: (offset, bytes).
    pub fn data(&self, h: &StrHeader) -> (u64, usize) {
        (self.data_offset(h.state), h.length * h.kind())
    }
}

/// The header of a compact string with a valid kind: what its characters need to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrHeader {
    /// In characters.
    pub length: usize,
    pub state: u32,
}

impl StrHeader {
    /// From a str object's first [`HEADER`] bytes; `None` unless compact, of kind 1, 2 or 4
    /// (ASCII only with kind 1), and at most `max_chars` long.
    pub fn parse(b: &[u8], max_chars: usize) -> Option<StrHeader> {
        if b.len() < HEADER {
            return None;
        }
        let (length, state) = (le_u64(b, 16), le_u32(b, 32));
        let length = usize::try_from(length).ok().filter(|&l| l <= max_chars)?;
        valid_state(state).then_some(StrHeader { length, state })
    }

    /// Bytes per character.
    pub fn kind(&self) -> usize {
        ((self.state >> 2) & 0x07) as usize
    }
}

fn valid_state(state: u32) -> bool {
    let kind = (state >> 2) & 0x07;
    state & STATE_COMPACT != 0 && matches!(kind, 1 | 2 | 4) && (state & STATE_ASCII == 0 || kind == 1)
}

/// Reads the compact string at `addr`: its header, then its characters.
pub fn read(mem: &impl Memory, layout: &StrLayout, addr: u64, max_chars: usize) -> Option<String> {
    let header = mem.read_vec(addr, HEADER).ok()?;
    let h = StrHeader::parse(&header, max_chars)?;
    let (offset, len) = layout.data(&h);
    let data = mem.read_vec(addr.checked_add(offset)?, len).ok()?;
    decode(h.state, h.length, &data)
}

/// Decodes the characters of a compact string, given its `state` word and length. `data` may be
/// longer than `length * kind` bytes (the excess is ignored), not shorter. Lone surrogates
/// (legal in a Python `str`, e.g. undecodable file names under `surrogateescape`) become
/// U+FFFD; code points past U+10FFFF, non-ASCII bytes under the ascii flag, or a state that is
/// not a compact string's give `None`.
pub fn decode(state: u32, length: usize, data: &[u8]) -> Option<String> {
    if !valid_state(state) {
        return None;
    }
    let kind = ((state >> 2) & 0x07) as usize;
    let bytes = data.get(..length.checked_mul(kind)?)?;
    match kind {
        1 if state & STATE_ASCII != 0 => bytes.is_ascii().then(|| bytes.iter().map(|&b| char::from(b)).collect()),
        1 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        2 => bytes.chunks_exact(2).map(|c| code_point(u32::from(u16::from_le_bytes([c[0], c[1]])))).collect(),
        _ => bytes.chunks_exact(4).map(|c| code_point(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
    }
}

/// One UCS2/UCS4 code unit to a char: surrogates become U+FFFD, values past U+10FFFF are invalid.
fn code_point(v: u32) -> Option<char> {
    match v {
        0xD800..=0xDFFF => Some(char::REPLACEMENT_CHARACTER),
        _ => char::from_u32(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::linetable::tests::{load, unhex, VERSIONS};
    use crate::python::versions::{self, SUPPORTED};

    fn layout(minor: u32) -> StrLayout {
        versions::offsets(minor).unwrap().str
    }

    /// Strings dumped by tests/data/linetable/gen.py from live objects of each CPython on the
    /// build machine (ASCII, Latin-1, UCS2, UCS4, lone surrogates): each version's layout finds
    /// their characters, and they decode to what CPython holds.
    #[test]
    fn real_str_objects_decode_at_the_right_offset() {
        for (name, text) in VERSIONS {
            let doc = load(name, text);
            let minor = doc["minor"].as_u64().expect("minor") as u32;
            for s in doc["strings"].as_array().expect("strings") {
                let state = s["state"].as_u64().expect("state") as u32;
                let length = s["length"].as_u64().expect("length") as usize;
                let data = unhex(s["data"].as_str().expect("data"));
                let utf8 = unhex(s["text_hex"].as_str().expect("text_hex"));
                // The generator stores UTF-8 with surrogatepass; lone surrogates decode lossily.
                let want = String::from_utf8_lossy(&utf8).replace("\u{FFFD}\u{FFFD}\u{FFFD}", "\u{FFFD}");
                let offset = s["offset"].as_u64().expect("offset");
                assert_eq!(layout(minor).data_offset(state), offset, "{name} {want:?} state {state:#x}");
                assert_eq!(decode(state, length, &data).as_deref(), Some(want.as_str()), "{name} state {state:#x}");
            }
        }
    }

    // state words: kind << 2 | compact (0x20) | ascii (0x40); 0x80 = ready (<= 3.11).
    const ASCII: u32 = 0x80 | 0x40 | 0x20 | (1 << 2);
    const UCS1: u32 = 0x80 | 0x20 | (1 << 2);
    const UCS2: u32 = 0x80 | 0x20 | (2 << 2);
    const UCS4: u32 = 0x80 | 0x20 | (4 << 2);

    fn units16(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|c| c.to_le_bytes()).collect()
    }

    fn units32(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|c| c.to_le_bytes()).collect()
    }

    #[test]
    fn decode_by_hand() {
        assert_eq!(decode(ASCII, 7, b"handler").as_deref(), Some("handler"));
        // Longer buffer than needed (the reader copies a fixed cap): only `length` chars are used.
        assert_eq!(decode(ASCII, 3, b"app\0junk").as_deref(), Some("app"));
        assert_eq!(decode(ASCII, 0, b"").as_deref(), Some(""));
        assert_eq!(decode(UCS1, 4, b"caf\xe9").as_deref(), Some("café"));
        let omega = units16(&[0x03a9, b'!' as u16]);
        assert_eq!(decode(UCS2, 2, &omega).as_deref(), Some("Ω!"));
        assert_eq!(decode(UCS4, 2, &units32(&[0x1d11e, b'x' as u32])).as_deref(), Some("𝄞x"));
        // Lone surrogates (a surrogateescape'd file name byte) -> U+FFFD, in UCS2 and UCS4.
        assert_eq!(decode(UCS2, 2, &units16(&[0xdcff, b'a' as u16])).as_deref(), Some("\u{FFFD}a"));
        assert_eq!(decode(UCS2, 2, &units16(&[b'a' as u16, 0xd800])).as_deref(), Some("a\u{FFFD}"));
        assert_eq!(decode(UCS4, 1, &units32(&[0xdfff])).as_deref(), Some("\u{FFFD}"));
        // Garbage in the padding bits of the state word is ignored.
        assert_eq!(decode(UCS2 | 0xdead_0000, 2, &omega).as_deref(), Some("Ω!"));
        // 3.12+ state (bit 7 = statically_allocated instead of ready) decodes the same.
        assert_eq!(decode(ASCII & !0x80, 1, b"x").as_deref(), Some("x"));
    }

    #[test]
    fn decode_rejects_invalid() {
        assert_eq!(decode(ASCII, 8, b"handler"), None); // short data
        assert_eq!(decode(ASCII, 4, b"caf\xe9"), None); // non-ASCII under ascii flag
        assert_eq!(decode(ASCII & !0x20, 1, b"x"), None); // not compact
        assert_eq!(decode(0x20 | (3 << 2), 1, b"xxx"), None); // kind 3
        assert_eq!(decode(0x20, 1, b"x"), None); // kind 0
        assert_eq!(decode(0x40 | 0x20 | (2 << 2), 1, b"x\0"), None); // ascii + UCS2
        assert_eq!(decode(UCS4, 1, &0x11_0000u32.to_le_bytes()), None); // > U+10FFFF
        assert_eq!(decode(UCS4, usize::MAX, &[0; 8]), None); // length * kind overflows
        assert_eq!(decode(UCS2, usize::MAX / 2 + 1, &[0; 8]), None);
    }

    #[test]
    fn data_offsets() {
        for minor in [10, 11] {
            assert_eq!(layout(minor).data_offset(ASCII), 48);
            assert_eq!(layout(minor).data_offset(UCS1), 72);
            assert_eq!(layout(minor).data_offset(UCS4), 72);
        }
        for minor in 12..=*SUPPORTED.end() {
            assert_eq!(layout(minor).data_offset(ASCII), 40);
            assert_eq!(layout(minor).data_offset(UCS2), 56);
        }
    }

    /// A str object at 0x1000 in an otherwise unmapped address space.
    struct OneStr(Vec<u8>);

    impl Memory for OneStr {
        fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            let off = addr.checked_sub(0x1000).ok_or(std::io::ErrorKind::InvalidInput)? as usize;
            let end = off.checked_add(buf.len()).ok_or(std::io::ErrorKind::InvalidInput)?;
            buf.copy_from_slice(self.0.get(off..end).ok_or(std::io::ErrorKind::UnexpectedEof)?);
            Ok(())
        }
    }

    /// A compact str object as `layout` places it: header, then `chars` at the data offset.
    fn object(layout: StrLayout, state: u32, length: u64, chars: &[u8]) -> OneStr {
        let at = layout.data_offset(state) as usize;
        let mut b = vec![0u8; at];
        b[..8].copy_from_slice(&1u64.to_le_bytes());
        b[16..24].copy_from_slice(&length.to_le_bytes());
        b[32..36].copy_from_slice(&state.to_le_bytes());
        b.extend_from_slice(chars);
        OneStr(b)
    }

    #[test]
    fn read_every_kind_at_every_version() {
        for minor in SUPPORTED {
            let l = layout(minor);
            let read = |m: &OneStr| super::read(m, &l, 0x1000, 64);
            assert_eq!(read(&object(l, ASCII, 5, b"hello")).as_deref(), Some("hello"), "3.{minor}");
            assert_eq!(read(&object(l, UCS1, 4, b"caf\xe9")).as_deref(), Some("café"), "3.{minor}");
            let sur = units16(&[0x03a9, 0xdc80]);
            assert_eq!(read(&object(l, UCS2, 2, &sur)).as_deref(), Some("Ω\u{FFFD}"), "3.{minor}");
            let clef = units32(&[0x1d11e]);
            assert_eq!(read(&object(l, UCS4, 1, &clef)).as_deref(), Some("𝄞"), "3.{minor}");
            // Longer than allowed, characters cut short, not a compact string: nothing.
            assert_eq!(read(&object(l, ASCII, 65, &[b'a'; 65])), None, "3.{minor}");
            assert_eq!(read(&object(l, ASCII, 6, b"hello")), None, "3.{minor}");
            assert_eq!(read(&object(l, ASCII & !0x20, 5, b"hello")), None, "3.{minor}");
        }
        assert_eq!(super::read(&OneStr(vec![0; 8]), &layout(14), 0x1000, 64), None);
    }

    #[test]
    fn fuzz_never_panics() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..5000 {
            let data: Vec<u8> = (0..next() % 97).map(|_| next() as u8).collect();
            let state = next() as u32;
            let length = if round % 3 == 0 { next() as usize } else { (next() % 40) as usize };
            if let Some(s) = decode(state, length, &data) {
                assert_eq!(s.chars().count(), length);
            }
            let mut header = data.clone();
            header.resize(HEADER, 0);
            if let Some(h) = StrHeader::parse(&header, 1 << 20) {
                for minor in SUPPORTED {
                    let (offset, len) = layout(minor).data(&h);
                    assert!([40, 48, 56, 72].contains(&offset) && len == h.length * h.kind());
                }
            }
        }
    }
}
