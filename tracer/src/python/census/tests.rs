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
