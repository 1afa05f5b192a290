//! Decoding of CPython line tables read out of a target process.
//!
//! Everything here is a pure function over bytes that were copied out of another process while it
//! kept running, so any input may be torn or garbage: no function indexes without a bounds check,
//! every loop advances through a finite slice, and arithmetic is checked. Malformed input gives
//! `None` or whatever line CPython itself would compute from the same bytes.
//!
//! Formats (ground truth: `tests/data/linetable/gen.py`, which dumps what each CPython's own
//! `co_lines()` / `co_positions()` say for every instruction slot):
//! - 3.10: PEP 626 `co_linetable`, pairs `(sdelta: u8 bytes, ldelta: i8 lines)`, `ldelta == -128`
//!   means "no line" and leaves the running line untouched.
//! - 3.11+: the location table of CPython's `Objects/locations.md`. Each entry starts with a byte
//!   with bit 7 set: bits 3..=6 are the code, bits 0..=2 the number of code units covered minus one.
//!   Code 15 = no location, 14 = long form (svarint line delta, then end-line delta, col+1, end-col+1
//!   varints), 13 = no columns (svarint line delta), 10..=12 = one-line form (line delta code-10, two
//!   column bytes), 0..=9 = short form (same line, one column byte). Varints are 6-bit little-endian
//!   chunks with 0x40 as the continuation bit; svarint `v` means `v >> 1`, negated when `v & 1`.

/// Largest number of 6-bit chunks we accept in one varint (36 bits; CPython writes at most 6 for
/// an `int`). Anything longer is garbage from a torn read.
const MAX_VARINT_CHUNKS: u32 = 6;

/// CPython 3.11+ location table (co_linetable, "Objects/locations.md" format). `code_unit` is the
/// index of the instruction in 2-byte code units (what _PyInterpreterFrame_LASTI gives).
/// Returns the line of the entry covering that code unit; None for "no location" entries or out of range.
///
/// Note: CPython itself reports line 0 for some artificial instructions (the `RESUME` at the start
/// of a module's code); that comes back as `Some(0)`, exactly as `co_lines()` says.
pub fn line_311(linetable: &[u8], firstlineno: i32, code_unit: u32) -> Option<u32> {
    let target = u64::from(code_unit);
    let mut line = i64::from(firstlineno);
    let mut unit: u64 = 0;
    let mut pos = 0usize;
    while let Some(&first) = linetable.get(pos) {
        let code = (first >> 3) & 0x0f;
        let units = u64::from(first & 0x07) + 1;
        let (delta, has_line) = match code {
            15 => (0, false),
            13 | 14 => (read_svarint(linetable, pos + 1)?, true),
            10..=12 => (i64::from(code) - 10, true),
            _ => (0, true),
        };
        line = line.checked_add(delta)?;
        let end = unit + units;
        if target < end {
            return if has_line { u32::try_from(line).ok() } else { None };
        }
        unit = end;
        // Like CPython's `advance()`: the next entry is the next byte with bit 7 set (varint and
        // column bytes never have it).
        pos += 1;
        while linetable.get(pos).is_some_and(|b| b & 0x80 == 0) {
            pos += 1;
        }
    }
    None
}

/// CPython 3.10 PEP 626 co_linetable: (sdelta u8, ldelta i8) pairs, ldelta -128 = no line.
/// `byte_offset` = 2 * f_lasti.
pub fn line_310(linetable: &[u8], firstlineno: i32, byte_offset: u32) -> Option<u32> {
    let target = u64::from(byte_offset);
    let mut line = i64::from(firstlineno);
    let mut start: u64 = 0;
    for pair in linetable.chunks_exact(2) {
        let end = start + u64::from(pair[0]);
        let ldelta = pair[1] as i8;
        let has_line = ldelta != -128;
        if has_line {
            line += i64::from(ldelta);
        }
        if target < end {
            // Ranges are contiguous from 0 and `target >= start` holds here (we would have returned
            // at an earlier pair otherwise); zero-length ranges never match.
            return if has_line { u32::try_from(line).ok() } else { None };
        }
        start = end;
    }
    None
}

/// Unsigned varint starting at `pos` (6-bit chunks, 0x40 = more). None if truncated or too long.
fn read_varint(table: &[u8], mut pos: usize) -> Option<u64> {
    let mut val: u64 = 0;
    for chunk in 0..MAX_VARINT_CHUNKS {
        let b = *table.get(pos)?;
        val |= u64::from(b & 0x3f) << (6 * chunk);
        if b & 0x40 == 0 {
            return Some(val);
        }
        pos += 1;
    }
    None
}

/// Signed varint: `v & 1` is the sign, `v >> 1` the magnitude.
fn read_svarint(table: &[u8], pos: usize) -> Option<i64> {
    let v = read_varint(table, pos)?;
    // v < 2^36, so the magnitude always fits an i64.
    let mag = (v >> 1) as i64;
    Some(if v & 1 != 0 { -mag } else { mag })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;

    /// Ground truth dumped by tests/data/linetable/gen.py from each CPython on the build machine.
    pub(crate) const VERSIONS: &[(&str, &str)] = &[
        ("3.10.13", include_str!("../../tests/data/linetable/py3.10.13.json")),
        ("3.11.2", include_str!("../../tests/data/linetable/py3.11.2.json")),
        ("3.11.7", include_str!("../../tests/data/linetable/py3.11.7.json")),
        ("3.12.1", include_str!("../../tests/data/linetable/py3.12.1.json")),
        ("3.13.0", include_str!("../../tests/data/linetable/py3.13.0.json")),
        ("3.14.10", include_str!("../../tests/data/linetable/py3.14.10.json")),
        ("3.15.2", include_str!("../../tests/data/linetable/py3.15.2.json")),
    ];

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    pub(crate) fn load(name: &str, text: &str) -> Value {
        let doc: Value = serde_json::from_str(text).expect("json");
        assert_eq!(doc["python"].as_str(), Some(name));
        doc
    }

    /// Line of slot `i` (an instruction index on 3.10, a code unit on 3.11+) by the right decoder.
    fn decode(minor: u32, table: &[u8], first: i32, i: u32) -> Option<u32> {
        if minor >= 11 {
            line_311(table, first, i)
        } else {
            line_310(table, first, 2 * i)
        }
    }

    #[test]
    fn every_instruction_of_every_version_matches_cpython() {
        for (name, text) in VERSIONS {
            let doc = load(name, text);
            let minor = doc["minor"].as_u64().expect("minor") as u32;
            let mut checked = 0usize;
            let mut names = Vec::new();
            for code in doc["codes"].as_array().expect("codes") {
                let cname = code["name"].as_str().expect("name");
                names.push(cname.to_string());
                let table = unhex(code["linetable"].as_str().expect("linetable"));
                let first = code["firstlineno"].as_i64().expect("firstlineno") as i32;
                let lines = code["lines"].as_array().expect("lines");
                for (i, want) in lines.iter().enumerate() {
                    let want = want.as_u64().map(|l| l as u32);
                    let got = decode(minor, &table, first, i as u32);
                    assert_eq!(got, want, "{name} {cname} slot {i}");
                    checked += 1;
                }
                // One past the last instruction, and far out: no line.
                assert_eq!(decode(minor, &table, first, lines.len() as u32), None, "{name} {cname} end");
                assert_eq!(decode(minor, &table, first, u32::MAX / 2), None, "{name} {cname} far");
            }
            // The fixture's shapes are all there (3.12+ inlines the list comprehension, PEP 709).
            for want in [
                "alloc_first",
                "multi_line",
                "handle",
                "<lambda>",
                "generator",
                "coroutine",
                "inner",
                "with_try",
                "long_line",
                "far_jump",
            ] {
                assert!(names.iter().any(|n| n.ends_with(want)), "{name}: no code object {want}");
            }
            assert_eq!(names.iter().any(|n| n.ends_with("<listcomp>")), minor <= 11, "{name}");
            assert!(checked > 400, "{name}: only {checked} slots");
        }
    }

    #[test]
    fn first_line_of_a_function() {
        // alloc_first: `def` on line 4, the allocation (`return bytearray(n)`) on line 5.
        for (name, text) in VERSIONS {
            let doc = load(name, text);
            let minor = doc["minor"].as_u64().expect("minor") as u32;
            let code = doc["codes"]
                .as_array()
                .expect("codes")
                .iter()
                .find(|c| c["name"] == "alloc_first")
                .expect("alloc_first");
            let table = unhex(code["linetable"].as_str().expect("linetable"));
            assert_eq!(code["firstlineno"], 4);
            if minor >= 11 {
                // RESUME at code unit 0 belongs to the `def` line; the body starts right after it
                // and its inline CACHE unit (one from 3.15 on, none before).
                let body = if minor >= 15 { 2 } else { 1 };
                assert_eq!(line_311(&table, 4, 0), Some(4), "{name}");
                assert_eq!(line_311(&table, 4, body - 1), Some(4), "{name}");
                assert_eq!(line_311(&table, 4, body), Some(5), "{name}");
            } else {
                assert_eq!(line_310(&table, 4, 0), Some(5), "{name}");
            }
        }
    }

    #[test]
    fn cache_units_are_covered() {
        // 3.11+ tables cover the inline CACHE units too (a LASTI can never point at one, but a
        // torn read might produce such an index); the JSON lines include them, check they exist.
        for (name, text) in VERSIONS {
            let doc = load(name, text);
            let caches: u64 = doc["codes"]
                .as_array()
                .expect("codes")
                .iter()
                .map(|c| c["cache_units"].as_u64().expect("cache_units"))
                .sum();
            if doc["minor"].as_u64() >= Some(11) {
                assert!(caches > 100, "{name}: {caches} cache units");
            } else {
                assert_eq!(caches, 0, "{name}");
            }
        }
    }

    #[test]
    fn hand_built_311_tables() {
        // short form (code 0, 2 units), one-line +2 (code 12, 1 unit), no-columns -3 (svarint 7,
        // 3 units), no location (code 15, 1 unit), long form +200 (svarint 400 = 0x190: chunks
        // 0x10|more, 0x06), 8 units.
        #[rustfmt::skip]
        let table = [
            0x80 | 1, 5,                                        // units 0..2, line 10
            0x80 | (12 << 3), 1, 4,                             // unit 2, line 12
            0x80 | (13 << 3) | 2, 7,                            // units 3..6, line 9
            0x80 | (15 << 3),                                   // unit 6: none
            0x80 | (14 << 3) | 7, 0x40 | 0x10, 0x06, 0, 1, 1,   // units 7..15, line 209
        ];
        let got: Vec<_> = (0..16).map(|u| line_311(&table, 10, u)).collect();
        let mut want = vec![Some(10), Some(10), Some(12), Some(9), Some(9), Some(9), None];
        want.extend([Some(209); 8]);
        want.push(None);
        assert_eq!(got, want);
        // Lines that go negative are not lines; a truncated varint ends the table.
        assert_eq!(line_311(&[0x80 | (13 << 3), 7], 1, 0), None);
        assert_eq!(line_311(&[0x80 | (13 << 3), 0x40 | 2], 1, 0), None);
        assert_eq!(line_311(&[0x80 | (13 << 3), 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 2], 1, 0), None);
        assert_eq!(line_311(&[], 1, 0), None);
        assert_eq!(line_311(&[0x80 | 7], i32::MAX, 0), Some(i32::MAX as u32));
    }

    #[test]
    fn hand_built_310_tables() {
        // (6 bytes, +1), (0 bytes, +127), (4 bytes, +3), (2 bytes, no line), (2 bytes, -2)
        let table = [6, 1, 0, 127, 4, 3, 2, 0x80, 2, 0xfe];
        let got: Vec<_> = (0..8).map(|i| line_310(&table, 1, 2 * i)).collect();
        assert_eq!(got, [Some(2), Some(2), Some(2), Some(132), Some(132), None, Some(130), None]);
        assert_eq!(line_310(&table, 1, 5), Some(2)); // odd offsets fall in their range too
        assert_eq!(line_310(&[2, 0xff], 0, 0), None); // line -1
        assert_eq!(line_310(&[2], 0, 0), None); // half a pair
        assert_eq!(line_310(&[], 7, 0), None);
    }

    /// xorshift64*: deterministic pseudo-random bytes with no extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, max_len: usize) -> Vec<u8> {
            let len = (self.next() % (max_len as u64 + 1)) as usize;
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..5000 {
            let mut table = rng.bytes(96);
            // Half the time, make it look like a location table (entry bytes with bit 7 set).
            if round % 2 == 0 {
                for b in table.iter_mut().step_by(3) {
                    *b |= 0x80;
                }
            }
            let first = match round % 4 {
                0 => i32::MAX,
                1 => i32::MIN,
                _ => rng.next() as i32,
            };
            let unit = match round % 3 {
                0 => rng.next() as u32,
                _ => (rng.next() % 128) as u32,
            };
            let _ = line_311(&table, first, unit);
            let _ = line_310(&table, first, unit);
        }
    }
}
