//! Turning the BPF side's raw frames (code object address, instruction) into
//! `function (file:line)`, by reading code objects out of the live target.

use std::collections::HashMap;
use std::sync::Arc;

use tracer_ebpf::RawFrame;

use super::frames::FrameLayout;
use super::linetable;
use super::pystr::{self, StrLayout};
use super::Interpreter;
use crate::remote::{le_u32, le_u64, Memory};
use crate::report::Frame;

/// Bytes read from a code object's start: every field we use lies below this.
const CODE_HEADER: usize = 224;
const MAX_NAME: usize = 4096;
const MAX_LINETABLE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct CodeInfo {
    /// The header words that identify this code object (to notice address reuse).
    identity: [u64; 3],
    function: String,
    file: String,
    firstlineno: i32,
    linetable: Vec<u8>,
    bytecode_start: u64,
}

pub struct CodeResolver<M: Memory> {
    mem: M,
    layout: FrameLayout,
    strs: StrLayout,
    code_type: u64,
    /// Static code objects inside the interpreter image: frozen modules, and the 3.13+
    /// `__init__` cleanup shim, which is hidden.
    image_range: std::ops::Range<u64>,
    cache: HashMap<u64, Arc<CodeInfo>>,
}

impl<M: Memory> CodeResolver<M> {
    /// A resolver of `interp`'s code objects read through `mem`; `image_range` is where the
    /// interpreter's image is mapped.
    pub fn new(mem: M, interp: &Interpreter, image_range: std::ops::Range<u64>) -> Self {
        let (layout, strs) = (interp.offsets.frames, interp.offsets.str);
        Self { mem, layout, strs, code_type: interp.code_type, image_range, cache: HashMap::new() }
    }

    /// Resolves a frame; `None` for shim frames that a person should not see, and a
    /// placeholder frame when the code object can no longer be read.
    pub fn resolve(&mut self, raw: RawFrame) -> Option<Frame> {
        let Some(info) = self.code_info(raw.code) else {
            return Some(Frame::Python {
                function: format!("[freed code object 0x{:x}]", raw.code),
                file: "?".into(),
                line: 0,
                def_line: None,
            });
        };
        if info.file == "__init__" && self.image_range.contains(&raw.code) {
            return None;
        }
        let line = self.line(&info, raw.instr);
        let def_line = Some(info.firstlineno.max(0) as u32);
        Some(Frame::Python { function: info.function.clone(), file: info.file.clone(), line, def_line })
    }

    /// (function, file, line at `raw.instr`, definition line) of a readable code object, for
    /// the origin reader; `None` when `raw.code` is not a code object.
    pub fn code_frame(&mut self, raw: RawFrame) -> Option<(String, String, u32, u32)> {
        let info = self.code_info(raw.code)?;
        let line = self.line(&info, raw.instr);
        Some((info.function.clone(), info.file.clone(), line, info.firstlineno.max(0) as u32))
    }

    /// Where the bytecode of the code object at `code` starts (3.11+; a traceback's byte
    /// offset counts from there).
    pub fn bytecode_start(&mut self, code: u64) -> Option<u64> {
        self.code_info(code).map(|i| i.bytecode_start)
    }

    fn line(&self, info: &CodeInfo, instr: u64) -> u32 {
        let first = info.firstlineno.max(0) as u32;
        let line = if self.layout.instr_is_index {
            // f_lasti is an instruction index (-1 before the first instruction).
            let lasti = instr as u32 as i32;
            if lasti < 0 {
                return first;
            }
            linetable::line_310(&info.linetable, info.firstlineno, (lasti as u32).saturating_mul(2))
        } else {
            if instr < info.bytecode_start {
                return first;
            }
            let unit = (instr - info.bytecode_start) / 2;
            linetable::line_311(&info.linetable, info.firstlineno, unit.min(u32::MAX as u64) as u32)
        };
        match line {
            Some(l) if l > 0 => l,
            _ => first,
        }
    }

    fn code_info(&mut self, addr: u64) -> Option<Arc<CodeInfo>> {
        let header = match self.mem.read_vec(addr, CODE_HEADER) {
            Ok(h) => h,
            Err(e) => {
                log::debug!("code object 0x{addr:x}: unreadable ({e})");
                return None;
            }
        };
        if le_u64(&header, 8) != self.code_type {
            log::debug!("code object 0x{addr:x}: type 0x{:x} is not code", le_u64(&header, 8));
            self.cache.remove(&addr);
            return None;
        }
        let l = self.layout;
        let name_field = l.co_qualname.unwrap_or(l.co_name);
        let identity = [
            le_u64(&header, l.co_filename as usize),
            le_u64(&header, name_field as usize),
            le_u64(&header, l.co_linetable as usize),
        ];
        if let Some(info) = self.cache.get(&addr) {
            if info.identity == identity {
                return Some(info.clone());
            }
        }
        let (Some(function), Some(file)) = (self.read_str(identity[1]), self.read_str(identity[0])) else {
            log::debug!("code object 0x{addr:x}: names unreadable");
            return None;
        };
        let info = Arc::new(CodeInfo {
            identity,
            function,
            file,
            firstlineno: le_u32(&header, l.co_firstlineno as usize) as i32,
            linetable: self.read_bytes(identity[2]).unwrap_or_default(),
            bytecode_start: addr + l.co_code_adaptive.unwrap_or(0),
        });
        self.cache.insert(addr, info.clone());
        Some(info)
    }

    fn read_str(&self, addr: u64) -> Option<String> {
        pystr::read(&self.mem, &self.strs, addr, MAX_NAME)
    }

    fn read_bytes(&self, addr: u64) -> Option<Vec<u8>> {
        let size = self.mem.read_u64(addr + 16).ok()? as usize;
        if size > MAX_LINETABLE {
            return None;
        }
        self.mem.read_vec(addr + 32, size).ok()
    }
}
