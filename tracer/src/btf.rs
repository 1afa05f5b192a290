//! A reader of the kernel's BTF (/sys/kernel/btf/vmlinux) that answers one question: at which
//! byte offset does a (nested) struct member live. The BPF programs have no CO-RE relocations,
//! so kernel struct offsets they need are computed here for the running kernel (docs/probes.md,
//! "What aya 0.14 cannot do").

use anyhow::{anyhow, bail, Context, Result};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// Member records one lookup may visit (task_struct and what it nests: a few hundred).
const MEMBER_BUDGET: u32 = 1 << 16;

struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// For modifiers and typedefs: the referenced type id.
    type_ref: u32,
    /// Byte range of the member records (struct/union only).
    members: std::ops::Range<usize>,
}

pub struct Btf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// Index 0 is the void type.
    types: Vec<Type>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    let b = data.get(at..at + 4).ok_or_else(|| anyhow!("BTF truncated at {at}"))?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl Btf {
    pub fn from_kernel() -> Result<Self> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        Self::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            bail!("not a little-endian BTF blob");
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if types_end > data.len() || strings.end > data.len() {
            bail!("BTF sections out of bounds");
        }
        let mut types = vec![Type { name_off: 0, kind: 0, kind_flag: false, type_ref: 0, members: 0..0 }];
        let mut at = types_start;
        while at + 12 <= types_end {
            let name_off = u32_at(&data, at)?;
            let info = u32_at(&data, at + 4)?;
            let size_or_type = u32_at(&data, at + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            at += 12;
            let extra = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
                _ => 0,
            };
            let members = if kind == KIND_STRUCT || kind == KIND_UNION { at..at + extra } else { 0..0 };
            types.push(Type { name_off, kind, kind_flag: info >> 31 == 1, type_ref: size_or_type, members });
            at += extra;
        }
        Ok(Self { data, strings, types })
    }

    fn name(&self, off: u32) -> &str {
        let start = self.strings.start + off as usize;
        if start >= self.strings.end {
            return "";
        }
        let rest = &self.data[start..self.strings.end];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn strip_modifiers(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(t.kind, KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) =>
                {
                    id = t.type_ref
                }
                _ => break,
            }
        }
        id
    }

    fn struct_named(&self, name: &str) -> Option<u32> {
        self.types.iter().position(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name).map(|i| i as u32)
    }

    /// (byte offset, member type id) of `member` in struct/union `id`, looking through
    /// anonymous struct/union members.
    /// `budget` bounds the member records visited in all: anonymous members nest, and in a
    /// corrupt blob they can nest into themselves, many times per level.
    fn member(&self, id: u32, member: &str, depth: u32, budget: &mut u32) -> Option<(u64, u32)> {
        let t = self.types.get(id as usize)?;
        if depth > 8 || t.members.is_empty() {
            return None;
        }
        for rec in t.members.clone().step_by(12) {
            *budget = budget.checked_sub(1)?;
            let name_off = u32_at(&self.data, rec).ok()?;
            let type_id = u32_at(&self.data, rec + 4).ok()?;
            let raw_offset = u32_at(&self.data, rec + 8).ok()?;
            let bit_offset = if t.kind_flag { raw_offset & 0xff_ffff } else { raw_offset };
            let name = self.name(name_off);
            if name == member {
                return Some((bit_offset as u64 / 8, self.strip_modifiers(type_id)));
            }
            if name.is_empty() {
                let inner = self.strip_modifiers(type_id);
                if let Some((off, ty)) = self.member(inner, member, depth + 1, budget) {
                    return Some((bit_offset as u64 / 8 + off, ty));
                }
            }
        }
        None
    }

    /// Byte offset of `path` (e.g. ["thread", "fsbase"]) inside struct `root`.
    pub fn offset_of(&self, root: &str, path: &[&str]) -> Result<u64> {
        let mut id = self.struct_named(root).ok_or_else(|| anyhow!("struct {root} not in BTF"))?;
        let mut total = 0;
        for field in path {
            let mut budget = MEMBER_BUDGET;
            let (off, ty) = self
                .member(id, field, 0, &mut budget)
                .ok_or_else(|| anyhow!("no member {field} in the BTF of struct {root}"))?;
            total += off;
            id = ty;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_task_struct_fsbase_is_found() {
        let Ok(btf) = Btf::from_kernel() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux");
            return;
        };
        let off = btf.offset_of("task_struct", &["thread", "fsbase"]).unwrap();
        let thread = btf.offset_of("task_struct", &["thread"]).unwrap();
        assert!(off > thread && off < thread + 256, "fsbase {off} thread {thread}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(vec![0u8; 10]).is_err());
        let mut blob = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        blob.extend_from_slice(&[0xff; 16]);
        assert!(Btf::parse(blob).is_err());
    }
}
