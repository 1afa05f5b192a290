//! Where an object comes from, read from the object itself in the target (never stopped or
//! written): a function, lambda or bound method → the file:line of its code; an exception → the
//! innermost file:line of its traceback; a coroutine or generator → where it is suspended; an
//! asyncio `Handle`/`TimerHandle` → its callback's origin; `functools.partial` → its function's;
//! an instance → its class, and the origin of a callback it holds (`callback`, `_callback`,
//! `func`, `target`). Facts: docs/cpython/census.md §4; layouts per version
//! below, each checked by reading an object of that kind in a real process (tests/census.rs).
//!
//! Wrappers are followed to the application's own code: the origin shown is the first one
//! outside the standard library and site-packages, and the whole chain is kept (JSON). Only
//! code and type names are read, never the value of a `str` or `bytes` (production data).
//! Every read is checked (a code object must have `PyCode_Type`, a type must pass the holders
//! view's type checks) and every loop is bounded, so random memory gives no origin, not a wrong
//! one.

use tracer_ebpf::RawFrame;

use super::code::CodeResolver;
use super::heap::types::{TypeAddrs, TypeCache, TypeInfo, TPFLAGS_BASE_EXC_SUBCLASS};
use super::heap::{plausible_ptr, HeapLayout, Scan, ScanBudget};
use super::pystr::StrLayout;
use super::Interpreter;
use crate::remote::{le_u32, le_u64, Memory};
use crate::report::{Origin, OriginLink as Link};

/// Wrappers followed from one object at most.
const MAX_DEPTH: usize = 8;
/// `tb_next` links followed to the innermost traceback entry.
const MAX_TB: usize = 256;
/// Items of a handle's `_args` tried when its callback is not the application's.
const MAX_ARGS: usize = 4;
/// Bytes read at an object's start: every field used lies below.
const OBJ: usize = 128;
/// Attribute names under which an instance keeps the callable it wraps.
const CALLBACK_ATTRS: &[&str] = &["_callback", "callback", "func", "_func", "target", "_target"];

/// The origin of a chain: the first link in the application's own code, else the last with a
/// file, else the first.
pub fn make_origin(chain: Vec<Link>) -> Option<Origin> {
    if chain.is_empty() {
        return None;
    }
    let shown = chain
        .iter()
        .position(|l| l.file.as_deref().is_some_and(is_app_file))
        .or_else(|| chain.iter().rposition(|l| l.file.is_some()))
        .unwrap_or(0);
    Some(Origin { chain, shown })
}

/// Whether the link an origin shows lies in the application's own code.
pub fn in_app(o: &Origin) -> bool {
    o.link().file.as_deref().is_some_and(is_app_file)
}

/// Whether `file` is the application's: not the standard library, not site-packages, not
/// frozen or generated code.
pub fn is_app_file(file: &str) -> bool {
    if file.starts_with('<') || file.contains("/site-packages/") || file.contains("/dist-packages/") {
        return false;
    }
    // The standard library: .../lib/python3.X/<module> (site-packages excluded above).
    let stdlib = file.split('/').any(|part| {
        part.strip_prefix("python3.").is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
    }) && file.contains("/lib");
    !stdlib
}

/// Per-version offsets the origin reader needs beyond the frames and heap layouts.
#[derive(Debug, Clone, Copy)]
struct Layout {
    minor: u32,
    /// 3.11+: the `_PyInterpreterFrame` embedded in a generator (`gi_iframe`); 3.10: none
    /// (`gi_frame` @16 points at a frame object).
    gi_iframe: Option<u64>,
}

impl Layout {
    fn of(minor: u32) -> Layout {
        let gi_iframe = match minor {
            10 => None,
            11 => Some(80),
            _ => Some(72),
        };
        Layout { minor, gi_iframe }
    }
}

/// Reads origins of objects in one process. Keeps its code and type caches across calls.
pub struct OriginReader<M: Memory + Clone> {
    mem: M,
    code: CodeResolver<M>,
    heap: HeapLayout,
    strs: StrLayout,
    types: TypeAddrs,
    type_cache: TypeCache,
    layout: Layout,
    frames: super::frames::FrameLayout,
}

/// An object's first bytes and its checked type.
struct Obj {
    addr: u64,
    b: Vec<u8>,
    ty: TypeInfo,
}

impl Obj {
    fn w(&self, off: u64) -> u64 {
        le_u64(&self.b, off as usize)
    }
}

impl<M: Memory + Clone> OriginReader<M> {
    pub fn new(mem: M, interp: &Interpreter, image_range: std::ops::Range<u64>, types: TypeAddrs) -> Self {
        let o = &interp.offsets;
        OriginReader {
            code: CodeResolver::new(mem.clone(), interp, image_range),
            mem,
            heap: o.heap.clone(),
            strs: o.str,
            types,
            type_cache: TypeCache::default(),
            layout: Layout::of(o.minor),
            frames: o.frames,
        }
    }

    /// The origin of every object in `addrs` (`None` where the object tells nothing readable).
    /// The one entry point for the census and the holders view.
    pub fn origins(&mut self, addrs: &[u64]) -> Vec<Option<Origin>> {
        self.type_cache.next_generation();
        addrs.iter().map(|&a| self.origin(a)).collect()
    }

    /// The origin of one object, with the type name it must have (`None` if it has another:
    /// the address was reused since it was counted).
    pub fn origin_of_type(&mut self, addr: u64, type_name: &str) -> Option<Origin> {
        self.type_cache.next_generation();
        let o = self.object(addr)?;
        if *o.ty.name != *type_name {
            return None;
        }
        self.origins(&[addr]).pop().flatten()
    }

    fn origin(&mut self, addr: u64) -> Option<Origin> {
        let mut chain = Vec::new();
        self.follow(addr, &mut chain, 0);
        make_origin(chain)
    }

    /// Reads `addr`'s first bytes and checks its type.
    fn object(&mut self, addr: u64) -> Option<Obj> {
        if !plausible_ptr(addr) {
            return None;
        }
        let b = self.mem.read_vec(addr, OBJ).ok()?;
        if !self.heap.refcnt_plausible(le_u64(&b, 0)) {
            return None;
        }
        let ty = self.type_info(le_u64(&b, 8))?;
        Some(Obj { addr, b, ty })
    }

    fn type_info(&mut self, t: u64) -> Option<TypeInfo> {
        if !plausible_ptr(t) {
            return None;
        }
        let budget = ScanBudget { max_objects: 64, max_bytes: 1 << 20, max_depth: 0 };
        let mut scan = Scan::new(&self.mem, &self.heap, self.strs, &self.types, &mut self.type_cache, budget);
        scan.resolve_types(&[t]);
        scan.resolve_slots(&[t]);
        scan.type_info(t).cloned()
    }

    /// Appends the links from the object at `addr` to the code it leads to.
    fn follow(&mut self, addr: u64, chain: &mut Vec<Link>, depth: usize) {
        if depth >= MAX_DEPTH {
            return;
        }
        let Some(o) = self.object(addr) else { return };
        let name = o.ty.name.clone();
        if self.types.function != 0 && le_u64(&o.b, 8) == self.types.function {
            let code = o.w(self.heap.func_code);
            chain.push(self.code_link("function", code, None));
            return;
        }
        match &*name {
            "method" => {
                chain.push(Link { what: "bound method".into(), function: None, file: None, line: None });
                self.follow(o.w(16), chain, depth + 1);
            }
            "functools.partial" => {
                chain.push(Link { what: name.to_string(), function: None, file: None, line: None });
                self.follow(o.w(16), chain, depth + 1);
            }
            "cell" => self.follow(o.w(self.heap.cell_ref), chain, depth + 1),
            "coroutine" | "generator" | "async_generator" => chain.push(self.suspended(&o, &name)),
            "traceback" => chain.push(self.innermost("traceback", o.addr)),
            "frame" => chain.push(self.frame_link(o.addr)),
            _ if o.ty.flags & TPFLAGS_BASE_EXC_SUBCLASS != 0 => {
                let tb = o.w(self.heap.exc_traceback);
                chain.push(self.innermost(&format!("exception {name}"), tb));
            }
            _ => self.instance(&o, chain, depth),
        }
    }

    /// A link for the code object at `code`: at `instr` (a frame's instruction) or its
    /// definition line; the link names `what` alone when the code cannot be read.
    fn code_link(&mut self, what: &str, code: u64, instr: Option<u64>) -> Link {
        let mut link = Link { what: what.into(), function: None, file: None, line: None };
        if !plausible_ptr(code) {
            return link;
        }
        let raw = RawFrame { code, instr: instr.unwrap_or(0) };
        if let Some((function, file, line, def)) = self.code.code_frame(raw) {
            link.function = Some(function);
            link.file = Some(file);
            link.line = Some(if instr.is_some() { line } else { def });
        }
        link
    }

    /// Where a generator or coroutine is suspended (its definition when it has no frame).
    fn suspended(&mut self, o: &Obj, kind: &str) -> Link {
        let f = self.frames;
        let (code, instr) = match self.layout.gi_iframe {
            None => {
                let frame = o.w(16);
                let Some(fb) = self.read(frame, OBJ) else {
                    return Link { what: kind.into(), function: None, file: None, line: None };
                };
                (le_u64(&fb, f.frame_code as usize), u64::from(le_u32(&fb, f.frame_instr as usize)))
            }
            Some(off) => {
                let Some(ib) = self.read(o.addr + off, 128) else {
                    return Link { what: kind.into(), function: None, file: None, line: None };
                };
                (le_u64(&ib, f.frame_code as usize) & !f.code_tag_bits, le_u64(&ib, f.frame_instr as usize))
            }
        };
        self.code_link(kind, code, Some(instr))
    }

    /// Where the frame object at `frame` is (or stopped).
    fn frame_link(&mut self, frame: u64) -> Link {
        let f = self.frames;
        let at = if self.layout.minor == 10 {
            self.read(frame, OBJ)
                .map(|b| (le_u64(&b, f.frame_code as usize), u64::from(le_u32(&b, f.frame_instr as usize))))
        } else {
            let iframe = self.read(frame + 24, 8).map(|x| le_u64(&x, 0)).unwrap_or(0);
            self.read(iframe, 128)
                .map(|b| (le_u64(&b, f.frame_code as usize) & !f.code_tag_bits, le_u64(&b, f.frame_instr as usize)))
        };
        match at {
            Some((code, instr)) => self.code_link("frame", code, Some(instr)),
            None => Link { what: "frame".into(), function: None, file: None, line: None },
        }
    }

    /// The innermost entry of the traceback at `tb`: its code and line.
    fn innermost(&mut self, what: &str, mut tb: u64) -> Link {
        let mut last = None;
        for _ in 0..MAX_TB {
            let Some(b) = self.read(tb, 40).filter(|_| plausible_ptr(tb)) else { break };
            last = Some(b.clone());
            tb = le_u64(&b, 16);
            if tb == 0 {
                break;
            }
        }
        let Some(b) = last else { return Link { what: what.into(), function: None, file: None, line: None } };
        let (frame, lasti, lineno) = (le_u64(&b, 24), le_u32(&b, 32) as i32, le_u32(&b, 36) as i32);
        let f = self.frames;
        let code = if self.layout.minor == 10 {
            self.read(frame, OBJ).map(|fb| le_u64(&fb, f.frame_code as usize))
        } else {
            let iframe = self.read(frame + 24, 8).map(|x| le_u64(&x, 0)).unwrap_or(0);
            self.read(iframe, 64).map(|ib| le_u64(&ib, f.frame_code as usize) & !f.code_tag_bits)
        };
        let Some(code) = code else { return Link { what: what.into(), function: None, file: None, line: None } };
        if lineno > 0 {
            let mut link = self.code_link(what, code, None);
            if link.file.is_some() {
                link.line = Some(lineno as u32);
            }
            return link;
        }
        // 3.11+: tb_lineno is computed lazily; tb_lasti is a byte offset into the bytecode.
        let instr = self.code.bytecode_start(code).map(|s| s + lasti.max(0) as u64);
        self.code_link(what, code, instr)
    }

    /// An instance: its class, then the callable it wraps (a handle's `_callback`, a
    /// `PeriodicCallback`'s `callback`), then, when that is not the application's code, the
    /// arguments it passes (a trampoline's `_args[0]`).
    fn instance(&mut self, o: &Obj, chain: &mut Vec<Link>, depth: usize) {
        let name = o.ty.name.clone();
        chain.push(Link { what: format!("instance of {name}"), function: None, file: None, line: None });
        let slots = o.ty.slots.clone().unwrap_or_default();
        let slot = |want: &str| slots.iter().find(|(n, _)| n == want).map(|&(_, off)| off);
        let mut callee = None;
        for attr in CALLBACK_ATTRS {
            if let Some(off) = slot(attr) {
                callee = self.read(o.addr + off, 8).map(|b| le_u64(&b, 0)).filter(|&p| p != 0);
                if callee.is_some() {
                    break;
                }
            }
        }
        let Some(callee) = callee.or_else(|| self.callback_attr(o)) else { return };
        let mut sub = Vec::new();
        self.follow(callee, &mut sub, depth + 1);
        let app = make_origin(sub.clone()).is_some_and(|x| in_app(&x));
        chain.extend(sub);
        if app {
            return;
        }
        let Some(args) = slot("_args").and_then(|off| self.read(o.addr + off, 8)).map(|b| le_u64(&b, 0)) else {
            return;
        };
        for item in self.tuple_items(args) {
            let mut sub = Vec::new();
            self.follow(item, &mut sub, depth + 1);
            if make_origin(sub.clone()).is_some_and(|x| in_app(&x)) {
                chain.extend(sub);
                return;
            }
        }
    }

    /// The first [`CALLBACK_ATTRS`] entry of an instance's attribute dict.
    fn callback_attr(&mut self, o: &Obj) -> Option<u64> {
        let budget = ScanBudget { max_objects: 64, max_bytes: 1 << 20, max_depth: 0 };
        let mut scan = Scan::new(&self.mem, &self.heap, self.strs, &self.types, &mut self.type_cache, budget);
        let entries = scan.instance_entries(o.addr)?;
        CALLBACK_ATTRS.iter().find_map(|a| entries.iter().find(|(n, _)| n.as_deref() == Some(a)).map(|&(_, v)| v))
    }

    /// The first items of a tuple (none when `t` is not one).
    fn tuple_items(&mut self, t: u64) -> Vec<u64> {
        let Some(o) = self.object(t) else { return vec![] };
        if le_u64(&o.b, 8) != self.types.tuple {
            return vec![];
        }
        let n = (o.w(16) as usize).min(MAX_ARGS);
        let items = self.heap.tuple_items;
        (0..n).map(|i| o.w(items + 8 * i as u64)).filter(|&p| p != 0).collect()
    }

    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        if !plausible_ptr(addr) {
            return None;
        }
        self.mem.read_vec(addr, len).ok()
    }
}
