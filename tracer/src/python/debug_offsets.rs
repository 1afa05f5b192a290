//! `_Py_DebugOffsets` (3.13+): the interpreter's own table of where its structures are, at the
//! start of `_PyRuntime`. It is not self-describing (fields are inserted mid-struct between
//! versions), so each minor version has its own list of field positions (u64 indexes).
//!
//! Positions for 3.13 were read from pyenv 3.13.0's `.PyRuntime` section and matched against
//! the offsets in docs/cpython/frames.md §3; 3.14 from Debian sid 3.14.10 likewise.

use super::layout::Layout;

pub const COOKIE: &[u8; 8] = b"xdebugpy";
/// Bytes read from the start of `_PyRuntime` (the whole table fits).
pub const TABLE_BYTES: usize = 1024;

/// u64 index of each field this tracer uses.
struct Positions {
    interpreters_head: usize,
    threads_head: usize,
    tstate_next: usize,
    tstate_current_frame: usize,
    tstate_thread_id: usize,
    frame_previous: usize,
    frame_executable: usize,
    frame_instr_ptr: usize,
    frame_owner: usize,
    co_filename: usize,
    co_name: usize,
    co_qualname: usize,
    co_linetable: usize,
    co_firstlineno: usize,
    co_code_adaptive: usize,
}

fn positions(minor: u32) -> Option<Positions> {
    match minor {
        13 => Some(Positions {
            interpreters_head: 5,
            threads_head: 9,
            tstate_next: 21,
            tstate_current_frame: 23,
            tstate_thread_id: 24,
            frame_previous: 29,
            frame_executable: 30,
            frame_instr_ptr: 31,
            frame_owner: 33,
            co_filename: 35,
            co_name: 36,
            co_qualname: 37,
            co_linetable: 38,
            co_firstlineno: 39,
            co_code_adaptive: 43,
        }),
        14 => Some(Positions {
            interpreters_head: 5,
            threads_head: 9,
            tstate_next: 24,
            tstate_current_frame: 26,
            tstate_thread_id: 27,
            frame_previous: 32,
            frame_executable: 33,
            frame_instr_ptr: 34,
            frame_owner: 36,
            co_filename: 40,
            co_name: 41,
            co_qualname: 42,
            co_linetable: 43,
            co_firstlineno: 44,
            co_code_adaptive: 48,
        }),
        _ => None,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// The table matches the built-in layout.
    Match,
    /// The table disagrees on these fields; the table's values are used.
    Differs(Vec<&'static str>),
}

/// Parses the table and returns the layout it describes, plus how it compares with the
/// built-in one. `None` when the bytes are not a debug-offsets table of a known version.
pub fn parse(bytes: &[u8]) -> Option<(u64, Layout, Check)> {
    if bytes.len() < TABLE_BYTES.min(512) || &bytes[..8] != COOKIE {
        return None;
    }
    let word = |i: usize| -> Option<u64> {
        let b = bytes.get(i * 8..i * 8 + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    let version_hex = word(1)?;
    let free_threaded = word(2)?;
    let minor = ((version_hex >> 16) & 0xff) as u32;
    if version_hex >> 24 != 3 || free_threaded != 0 {
        return None;
    }
    let p = positions(minor)?;
    let builtin = Layout::for_minor(minor)?;
    let from_table = Layout {
        runtime_interp_head: word(p.interpreters_head)?,
        interp_threads_head: word(p.threads_head)?,
        tstate_next: word(p.tstate_next)?,
        tstate_frame: word(p.tstate_current_frame)?,
        tstate_thread_id: word(p.tstate_thread_id)?,
        frame_previous: word(p.frame_previous)?,
        frame_code: word(p.frame_executable)?,
        frame_instr: word(p.frame_instr_ptr)?,
        frame_owner: Some(word(p.frame_owner)?),
        co_filename: word(p.co_filename)?,
        co_name: word(p.co_name)?,
        co_qualname: Some(word(p.co_qualname)?),
        co_linetable: word(p.co_linetable)?,
        co_firstlineno: word(p.co_firstlineno)?,
        co_code_adaptive: Some(word(p.co_code_adaptive)?),
        ..builtin
    };
    let fields: [(&'static str, u64, u64); 15] = [
        ("interpreters_head", builtin.runtime_interp_head, from_table.runtime_interp_head),
        ("threads_head", builtin.interp_threads_head, from_table.interp_threads_head),
        ("tstate.next", builtin.tstate_next, from_table.tstate_next),
        ("tstate.current_frame", builtin.tstate_frame, from_table.tstate_frame),
        ("tstate.thread_id", builtin.tstate_thread_id, from_table.tstate_thread_id),
        ("frame.previous", builtin.frame_previous, from_table.frame_previous),
        ("frame.executable", builtin.frame_code, from_table.frame_code),
        ("frame.instr_ptr", builtin.frame_instr, from_table.frame_instr),
        ("frame.owner", builtin.frame_owner.unwrap_or(0), from_table.frame_owner.unwrap_or(0)),
        ("code.filename", builtin.co_filename, from_table.co_filename),
        ("code.name", builtin.co_name, from_table.co_name),
        ("code.qualname", builtin.co_qualname.unwrap_or(0), from_table.co_qualname.unwrap_or(0)),
        ("code.linetable", builtin.co_linetable, from_table.co_linetable),
        ("code.firstlineno", builtin.co_firstlineno, from_table.co_firstlineno),
        ("code.co_code_adaptive", builtin.co_code_adaptive.unwrap_or(0), from_table.co_code_adaptive.unwrap_or(0)),
    ];
    let differing: Vec<&'static str> = fields.iter().filter(|(_, a, b)| a != b).map(|(n, _, _)| *n).collect();
    let check = if differing.is_empty() { Check::Match } else { Check::Differs(differing) };
    Some((version_hex, from_table, check))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_313() -> Vec<u8> {
        // The first 48 words of pyenv 3.13.0's _Py_DebugOffsets.
        let words: [u64; 48] = [
            u64::from_le_bytes(*COOKIE),
            0x030d00f0,
            0,
            283320,
            608,
            632,
            194968,
            7272,
            7264,
            7344,
            7400,
            7656,
            7640,
            7648,
            16,
            7752,
            0,
            7768,
            7760,
            304,
            0,
            8,
            16,
            72,
            152,
            160,
            232,
            32,
            80,
            8,
            0,
            56,
            72,
            70,
            208,
            112,
            120,
            128,
            136,
            68,
            52,
            96,
            104,
            200,
            16,
            8,
            416,
            24,
        ];
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.resize(TABLE_BYTES, 0);
        bytes
    }

    #[test]
    fn real_313_table_matches_builtin_layout() {
        let (hex, layout, check) = parse(&table_313()).unwrap();
        assert_eq!(hex, 0x030d00f0);
        assert_eq!(check, Check::Match);
        assert_eq!(layout, Layout::for_minor(13).unwrap());
    }

    #[test]
    fn real_314_table_matches_builtin_layout() {
        // The first 50 words of Debian sid 3.14.10's _Py_DebugOffsets.
        let words: [u64; 50] = [
            u64::from_le_bytes(*COOKIE),
            0x030e0af0,
            0,
            316616,
            784,
            808,
            225864,
            7280,
            7272,
            7344,
            7360,
            7408,
            7688,
            7672,
            7680,
            16,
            7784,
            0,
            7800,
            7792,
            7992,
            0,
            832,
            0,
            8,
            16,
            72,
            152,
            160,
            232,
            32,
            88,
            8,
            0,
            56,
            80,
            74,
            64,
            0,
            216,
            112,
            120,
            128,
            136,
            68,
            52,
            96,
            104,
            208,
            0,
        ];
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.resize(TABLE_BYTES, 0);
        let (hex, layout, check) = parse(&bytes).unwrap();
        assert_eq!(hex, 0x030e0af0);
        assert_eq!(check, Check::Match);
        assert_eq!(layout, Layout::for_minor(14).unwrap());
    }

    #[test]
    fn a_changed_field_is_reported_and_the_table_wins() {
        let mut t = table_313();
        t[24 * 8..24 * 8 + 8].copy_from_slice(&160u64.to_le_bytes());
        let (_, layout, check) = parse(&t).unwrap();
        assert_eq!(check, Check::Differs(vec!["tstate.thread_id"]));
        assert_eq!(layout.tstate_thread_id, 160);
    }

    #[test]
    fn garbage_and_unknown_versions_are_rejected() {
        assert!(parse(&[0u8; 1024]).is_none());
        let mut t = table_313();
        t[8..16].copy_from_slice(&0x030c00f0u64.to_le_bytes());
        assert!(parse(&t).is_none());
        assert!(parse(&t[..100]).is_none());
    }
}
