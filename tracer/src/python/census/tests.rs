//! Census walks over memory images built here (3.11 layout): counts by type, torn lists repaired
//! or completed from the tail, the budget, a wrong layout, and random bytes that must never make
//! the walk panic or loop.

use std::collections::BTreeMap;
use std::io;
use std::time::Instant;

use super::*;
use crate::python::heap::types::TypeAddrs;
use crate::python::versions;

const BASE: u64 = 0x10_0000;
const SIZE: usize = 4 << 20;
const RUNTIME: u64 = BASE;
const INTERP: u64 = BASE + 0x1000;
const TYPES: u64 = BASE + 0x1_0000;
const OBJS: u64 = BASE + 0x10_0000;
const READY: u64 = 1 << 12;
const HAVE_GC: u64 = 1 << 14;
const MANAGED_DICT: u64 = 1 << 4;

/// One region of memory at [`BASE`].
#[derive(Clone)]
struct Image {
    bytes: Vec<u8>,
}

impl Memory for Image {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let off = addr.checked_sub(BASE).ok_or_else(|| io::Error::other("unmapped"))? as usize;
        let src = off.checked_add(buf.len()).and_then(|e| self.bytes.get(off..e));
        buf.copy_from_slice(src.ok_or_else(|| io::Error::other("unmapped"))?);
        Ok(())
    }
}

impl Image {
    fn put(&mut self, addr: u64, v: u64) {
        let o = (addr - BASE) as usize;
        self.bytes[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn get(&self, addr: u64) -> u64 {
        let o = (addr - BASE) as usize;
        u64::from_le_bytes(self.bytes[o..o + 8].try_into().unwrap())
    }
}

/// The 3.11 image: `type`, `object`, and classes `A` (managed dict) and `B`; objects are
/// linked into the GC lists by [`World::link`].
struct World {
    img: Image,
    offsets: versions::Offsets,
    types: TypeAddrs,
    next_obj: u64,
}

fn type_addr(i: u64) -> u64 {
    TYPES + i * 0x1000
}

impl World {
    fn new() -> World {
        let offsets = versions::offsets(11).unwrap();
        let mut w = World { img: Image { bytes: vec![0; SIZE] }, offsets, types: TypeAddrs::default(), next_obj: OBJS };
        w.types.type_ = type_addr(0);
        w.types.base_object = type_addr(1);
        w.img.put(RUNTIME + w.offsets.heap.runtime_interp_main, INTERP);
        let gc = INTERP + w.offsets.gc.interp_gc;
        for h in w.offsets.gc.heads {
            w.img.put(gc + h, gc + h);
            w.img.put(gc + h + 8, gc + h);
        }
        w.img.put(gc + w.offsets.gc.generation0, gc + w.offsets.gc.heads[0]);
        w.make_type(0, "type", READY | HAVE_GC | (1 << 31), type_addr(1), 900);
        w.make_type(1, "object", READY, 0, 16);
        w.make_type(2, "A", READY | HAVE_GC | MANAGED_DICT, type_addr(1), 16);
        w.make_type(3, "B", READY | HAVE_GC, type_addr(1), 40);
        w
    }

    fn make_type(&mut self, i: u64, name: &str, flags: u64, base: u64, basicsize: u64) {
        let (t, h) = (type_addr(i), &self.offsets.heap);
        let name_at = t + 0x800;
        self.img.put(t, 1);
        self.img.put(t + 8, type_addr(0));
        self.img.put(t + h.tp_name, name_at);
        self.img.put(t + h.tp_basicsize, basicsize);
        self.img.put(t + h.tp_flags, flags);
        self.img.put(t + h.tp_base, base);
        let o = (name_at - BASE) as usize;
        self.img.bytes[o..o + name.len()].copy_from_slice(name.as_bytes());
    }

    fn gc_head(&self, gen: usize) -> u64 {
        INTERP + self.offsets.gc.interp_gc + self.offsets.gc.heads[gen]
    }

    /// New objects of type `ty` (index) appended to list `gen`; returns their GC heads.
    fn link(&mut self, gen: usize, ty: u64, n: usize) -> Vec<u64> {
        let head = self.gc_head(gen);
        let mut made = Vec::new();
        for _ in 0..n {
            let node = self.next_obj;
            self.next_obj += 64;
            let tail = self.img.get(head + 8);
            self.img.put(node, head);
            self.img.put(node + 8, tail);
            self.img.put(node + 16, 1);
            self.img.put(node + 24, type_addr(ty));
            self.img.put(tail, node);
            self.img.put(head + 8, node);
            made.push(node);
        }
        made
    }

    fn scan(&self, budget: &CensusBudget) -> Census {
        CensusReader::new(self.img.clone(), &self.offsets, self.types, RUNTIME).scan(budget)
    }
}

fn counts(c: &Census) -> BTreeMap<String, u64> {
    c.by_type.iter().map(|(k, v)| (k.clone(), v.count)).collect()
}

#[test]
fn every_list_is_counted_by_type_with_sizes() {
    let mut w = World::new();
    w.link(0, 2, 3);
    w.link(1, 3, 2);
    w.link(2, 2, 100);
    w.link(3, 3, 1);
    let c = w.scan(&CensusBudget::default());
    assert_eq!(c.error, None);
    assert_eq!(counts(&c), BTreeMap::from([("A".into(), 103), ("B".into(), 3)]));
    // A: GC head 16 + managed pre-header 16 + basicsize 16; B: 16 + 40.
    assert_eq!(c.by_type["A"].bytes, 103 * 48);
    assert_eq!(c.by_type["B"].bytes, 3 * 56);
    assert_eq!(c.stats.objects, 106);
    assert_eq!((c.stats.torn_repaired, c.stats.tail_completions, c.stats.torn_dropped), (0, 0, 0));
    assert!(!c.stats.cut_by_budget);
    // One block, the heads and flags read live, the four types: far fewer than one per object.
    assert!(c.stats.reads < 40, "block reads, not one per object: {}", c.stats.reads);
}

#[test]
fn a_torn_node_is_repaired_or_the_list_completed_from_its_tail() {
    let mut w = World::new();
    let objs = w.link(2, 2, 50);
    // A node whose type word is garbage: the walk cannot pass it forwards.
    w.img.put(objs[20] + 24, 0xdead_beef_0000);
    let c = w.scan(&CensusBudget::default());
    assert_eq!(counts(&c), BTreeMap::from([("A".into(), 49)]));
    assert_eq!(c.stats.torn_repaired, MAX_REPAIRS as u64);
    assert_eq!(c.stats.tail_completions, 1);
    // The tail walk stopped at the bad node too: the rest is dropped, and counted.
    assert_eq!(c.stats.torn_dropped, 1);
}

#[test]
fn a_moved_node_is_followed_by_its_fresh_link() {
    let mut w = World::new();
    let objs = w.link(2, 3, 10);
    // objs[5] back-link points elsewhere (it was unlinked and re-linked): the walk re-reads
    // objs[4] and follows it; the node fails again, so the tail completes the list.
    w.img.put(objs[5] + 8, objs[7]);
    let c = w.scan(&CensusBudget::default());
    assert_eq!(c.by_type["B"].count, 10, "{:?}", c.stats);
    assert_eq!(c.stats.tail_completions, 1);
    assert_eq!(c.stats.torn_dropped, 0);
}

#[test]
fn a_list_that_loops_ends() {
    let mut w = World::new();
    let objs = w.link(0, 2, 10);
    w.img.put(objs[9], objs[3]);
    let head = w.gc_head(0);
    w.img.put(head + 8, objs[9]);
    let c = w.scan(&CensusBudget::default());
    assert_eq!(c.by_type["A"].count, 10);
}

#[test]
fn the_budget_cuts_a_scan_and_says_so() {
    let mut w = World::new();
    w.link(2, 2, 500);
    let c = w.scan(&CensusBudget { max_objects: 100, ..CensusBudget::default() });
    assert!(c.stats.cut_by_budget);
    assert_eq!(c.stats.objects, 100);
}

#[test]
fn a_wrong_layout_is_an_error_not_a_census() {
    let mut w = World::new();
    w.link(0, 2, 5);
    w.img.put(INTERP + w.offsets.gc.interp_gc + w.offsets.gc.generation0, 0);
    let c = w.scan(&CensusBudget::default());
    assert!(c.error.as_deref().unwrap_or("").contains("GC state"), "{:?}", c.error);
    assert!(c.by_type.is_empty());
    // No interpreter at all.
    w.img.put(RUNTIME + w.offsets.heap.runtime_interp_main, 7);
    assert!(w.scan(&CensusBudget::default()).error.is_some());
}

/// Random memory: random words, many of them pointers into the image (own xorshift).
#[test]
fn random_memory_never_panics_or_loops() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..40 {
        let mut w = World::new();
        w.link(2, 2, 200);
        let start = if round % 2 == 0 { OBJS } else { BASE };
        let words = (SIZE as u64 - (start - BASE)) / 8;
        for i in 0..words {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) {
                let v = if x.is_multiple_of(2) { (BASE + (x >> 8) % SIZE as u64) & !7 } else { x };
                w.img.put(start + i * 8, v);
            }
        }
        let t = Instant::now();
        let c = w.scan(&CensusBudget { max_objects: 100_000, ..CensusBudget::default() });
        assert!(t.elapsed().as_secs() < 10, "round {round}: {:?}", c.stats);
        assert!(c.stats.objects <= 100_000);
    }
}

// ---------------------------------------------------------------------------------------------
// Origins (python/origin.rs) over the same 3.11 images: code objects, functions, partials,
// exceptions with a traceback, and random memory.
// ---------------------------------------------------------------------------------------------

mod origins {
    use super::*;
    use crate::python::origin::OriginReader;
    use crate::python::{Interpreter, PyVersion};

    const CODE_TYPE: u64 = TYPES + 0x8000;
    const MISC: u64 = BASE + 0x30_0000;
    const TPFLAGS_BASE_EXC: u64 = 1 << 30;

    impl World {
        /// An ASCII str object at `at` (3.11 layout: characters from +48).
        fn put_str(&mut self, at: u64, s: &str) {
            self.img.put(at, 1);
            self.img.put(at + 16, s.len() as u64);
            self.img.put(at + 32, (1 << 5) | (1 << 6) | (1 << 2));
            let o = (at + 48 - BASE) as usize;
            self.img.bytes[o..o + s.len()].copy_from_slice(s.as_bytes());
        }

        /// A code object at `at` named `func` in `file`, defined at `line` (empty line table).
        fn put_code(&mut self, at: u64, func: &str, file: &str, line: u64) {
            let f = self.offsets.frames;
            self.img.put(at, 1);
            self.img.put(at + 8, CODE_TYPE);
            self.img.put(at + f.co_firstlineno, line);
            self.put_str(at + 0x400, file);
            self.put_str(at + 0x600, func);
            self.img.put(at + f.co_filename, at + 0x400);
            self.img.put(at + f.co_qualname.unwrap(), at + 0x600);
            self.img.put(at + f.co_name, at + 0x600);
            self.img.put(at + f.co_linetable, at + 0x800); // a bytes object of size 0
        }

        /// An object of type index `ty` at `at` with `words` from +16.
        fn put_obj(&mut self, at: u64, ty: u64, words: &[(u64, u64)]) {
            self.img.put(at, 1);
            self.img.put(at + 8, type_addr(ty));
            for &(off, v) in words {
                self.img.put(at + off, v);
            }
        }

        fn reader(&self) -> OriginReader<Image> {
            let interp = Interpreter {
                version: PyVersion { major: 3, minor: 11, micro: 7 },
                offsets: self.offsets.clone(),
                runtime: RUNTIME,
                code_type: CODE_TYPE,
            };
            OriginReader::new(self.img.clone(), &interp, 0..0, self.types)
        }
    }

    /// `function` (4), `functools.partial` (5), `ValueError` (6), `traceback` (7), `frame` (8).
    fn world() -> World {
        let mut w = World::new();
        w.make_type(4, "function", READY | HAVE_GC, type_addr(1), 136);
        w.make_type(5, "functools.partial", READY | HAVE_GC, type_addr(1), 56);
        w.make_type(6, "ValueError", READY | HAVE_GC | TPFLAGS_BASE_EXC, type_addr(1), 72);
        w.make_type(7, "traceback", READY | HAVE_GC, type_addr(1), 40);
        w.make_type(8, "frame", READY | HAVE_GC, type_addr(1), 72);
        w.types.function = type_addr(4);
        w
    }

    #[test]
    fn a_partial_is_followed_to_its_function_and_the_app_line_is_shown() {
        let mut w = world();
        let (code, func, partial) = (MISC, MISC + 0x1000, MISC + 0x1100);
        w.put_code(code, "on_tick", "/srv/app/app.py", 42);
        w.put_obj(func, 4, &[(w.offsets.heap.func_code, code)]);
        w.put_obj(partial, 5, &[(16, func)]);
        let got = w.reader().origins(&[partial, func, MISC + 0x2000]);
        let o = got[0].as_ref().expect("an origin");
        assert_eq!(o.chain.len(), 2, "{o:?}");
        assert_eq!(o.chain[0].what, "functools.partial");
        let l = o.link();
        assert_eq!(
            (l.file.as_deref(), l.line, l.function.as_deref()),
            (Some("/srv/app/app.py"), Some(42), Some("on_tick"))
        );
        assert_eq!(got[1].as_ref().unwrap().chain.len(), 1);
        assert!(got[2].is_none(), "zeros are no object: {:?}", got[2]);
    }

    #[test]
    fn library_code_is_shown_only_when_nothing_is_the_apps() {
        assert!(!crate::python::origin::is_app_file("/usr/lib/python3.11/asyncio/events.py"));
        assert!(!crate::python::origin::is_app_file("/v/lib/python3.12/site-packages/tornado/ioloop.py"));
        assert!(!crate::python::origin::is_app_file("<frozen runpy>"));
        assert!(crate::python::origin::is_app_file("/srv/app/python3.11-tools/app.py"));
        assert!(crate::python::origin::is_app_file("/home/me/app.py"));
        let mut w = world();
        let (code, func, partial) = (MISC, MISC + 0x1000, MISC + 0x1100);
        w.put_code(code, "Handle._run", "/usr/lib/python3.11/asyncio/events.py", 80);
        w.put_obj(func, 4, &[(w.offsets.heap.func_code, code)]);
        w.put_obj(partial, 5, &[(16, func)]);
        let o = w.reader().origins(&[partial]).pop().flatten().unwrap();
        assert_eq!(o.shown, 1, "the last link with a file: {o:?}");
        assert_eq!(o.link().line, Some(80));
    }

    #[test]
    fn an_exception_is_placed_at_its_innermost_traceback_entry() {
        let mut w = world();
        let (outer_code, inner_code) = (MISC, MISC + 0x1000);
        w.put_code(outer_code, "handle", "/srv/app/app.py", 10);
        w.put_code(inner_code, "validate", "/srv/app/app.py", 20);
        let (exc, tb1, tb2, fr1, fr2, if1, if2) =
            (MISC + 0x2000, MISC + 0x2100, MISC + 0x2200, MISC + 0x2300, MISC + 0x2400, MISC + 0x2500, MISC + 0x2600);
        let code_at = w.offsets.frames.frame_code;
        w.img.put(if1 + code_at, outer_code);
        w.img.put(if2 + code_at, inner_code);
        w.put_obj(fr1, 8, &[(24, if1)]);
        w.put_obj(fr2, 8, &[(24, if2)]);
        // tb_next @16, tb_frame @24, tb_lasti @32 (i32), tb_lineno @36 (i32).
        w.put_obj(tb1, 7, &[(16, tb2), (24, fr1), (32, 12 << 32)]);
        w.put_obj(tb2, 7, &[(16, 0), (24, fr2), (32, 23 << 32)]);
        w.put_obj(exc, 6, &[(40, tb1)]);
        let o = w.reader().origins(&[exc]).pop().flatten().unwrap();
        assert_eq!(o.chain[0].what, "exception ValueError");
        let l = o.link();
        assert_eq!((l.function.as_deref(), l.line), (Some("validate"), Some(23)), "{o:?}");
    }

    /// Random memory: no panic, no loop, and no origin names garbage as code.
    #[test]
    fn random_memory_never_panics_or_loops() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..20 {
            let mut w = world();
            let words = SIZE as u64 / 8;
            for i in 0..words {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(2) {
                    let v = if x.is_multiple_of(3) { (BASE + (x >> 8) % SIZE as u64) & !7 } else { x >> (x % 40) };
                    w.img.put(BASE + i * 8, v);
                }
            }
            let addrs: Vec<u64> = (0..2000).map(|i| (BASE + (i * 2053 * 16) % SIZE as u64) & !15).collect();
            let t = Instant::now();
            let got = w.reader().origins(&addrs);
            assert!(t.elapsed().as_secs() < 10, "round {round}");
            for o in got.into_iter().flatten() {
                assert!(o.shown < o.chain.len());
                // Code is named only through an object of PyCode_Type, which random bytes lack.
                assert!(o.chain.iter().all(|l| l.file.is_none()), "round {round}: {o:?}");
            }
        }
    }
}
