//! Memory-image tests. `tests/data/heap/image_3.X.json` are captured from the idle holders
//! fixture (`tests/fixtures/holders_fixture.py 60 idle`, run with `-S`): every region one cold
//! depth-2 scan read, the runtime and type addresses, and that scan's result. Replaying the
//! image must give exactly that result; damaged or random images must never panic or hang.

use std::collections::BTreeMap;
use std::io;
use std::time::Instant;

use super::layout::{HeapLayout, KeysLayout};
use super::types::*;
use super::*;
use crate::python::versions::{self, Offsets, SUPPORTED};
use crate::remote::Memory;

/// A memory image: non-overlapping regions by start address.
#[derive(Clone, Default)]
struct ImageMemory {
    regions: BTreeMap<u64, Vec<u8>>,
}

impl Memory for ImageMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let fault = || io::Error::other("unmapped");
        let (&start, data) = self.regions.range(..=addr).next_back().ok_or_else(fault)?;
        let off = (addr - start) as usize;
        let end = off.checked_add(buf.len()).ok_or_else(fault)?;
        buf.copy_from_slice(data.get(off..end).ok_or_else(fault)?);
        Ok(())
    }
}

struct Image {
    layout: Offsets,
    types: TypeAddrs,
    runtime: u64,
    mem: ImageMemory,
    expect: Vec<ContainerSample>,
}

fn hex_u64(v: &serde_json::Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn load(name: &str) -> Image {
    let path = format!("{}/tests/data/heap/{name}", env!("CARGO_MANIFEST_DIR"));
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).unwrap();
    let layout = versions::offsets(j["minor"].as_u64().unwrap() as u32).filter(|_| j["major"] == 3).unwrap();
    let types = TypeAddrs::from_lookup(|s| j["types"].get(s).map(hex_u64)).unwrap();
    let mut mem = ImageMemory::default();
    for r in j["regions"].as_array().unwrap() {
        let h = r[1].as_str().unwrap().as_bytes();
        let bytes = h.chunks(2).map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap()).collect();
        mem.regions.insert(hex_u64(&r[0]), bytes);
    }
    let expect = j["expect"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| ContainerSample {
            // The images were captured showing dict keys; by default they are redacted (`redact`).
            path: redacted_keys(e["path"].as_str().unwrap()).into(),
            type_name: e["type"].as_str().unwrap().into(),
            len: e["len"].as_u64().unwrap(),
            item_types: e["item_types"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect(),
            retained_bytes_est: e["retained_bytes_est"].as_u64().unwrap(),
            // No module of these images has a dotted name.
            root: RootName { kind: "module", name: e["path"].as_str().unwrap().split('.').next().unwrap().into() },
            newest_items: Vec::new(),
        })
        .collect();
    Image { layout, types, runtime: hex_u64(&j["runtime"]), mem, expect }
}

/// `a["k"]` as the scanner names it by default: `a[<str #...>]`.
/// A str key as a path shows it.
fn shown_key(s: &str) -> String {
    let mut o = String::new();
    crate::redact::write_target_string(&mut o, "str", s).unwrap();
    o
}

fn redacted_keys(path: &str) -> String {
    match path.split_once("[\"") {
        Some((owner, rest)) if rest.ends_with("\"]") => {
            format!("{owner}[{}]", shown_key(&rest[..rest.len() - 2]))
        }
        _ => path.to_string(),
    }
}

const DEPTH2: ScanBudget = ScanBudget { max_objects: 200_000, max_bytes: 64 << 20, max_depth: 2 };
const IMAGES: [&str; 3] = ["image_3.10.json", "image_3.12.json", "image_3.13.json"];

fn get<'a>(v: &'a [ContainerSample], p: &str) -> &'a ContainerSample {
    v.iter().find(|c| &*c.path == p).unwrap_or_else(|| panic!("{p} missing"))
}

/// The samples without their items' addresses (the images' expectations do not list them).
fn without_items(mut v: Vec<ContainerSample>) -> Vec<ContainerSample> {
    for c in &mut v {
        c.newest_items.clear();
    }
    v
}

#[test]
fn replay_real_images() {
    for name in IMAGES {
        let img = load(name);
        let mut sc = HeapScanner::new(img.mem.clone(), &img.layout, img.types, img.runtime);
        let (got, stats) = sc.scan(&DEPTH2, &[]);
        // The newest items' addresses (for origins): the list's tail, newest first.
        assert_eq!(get(&got, "__main__.FAILED").newest_items.len(), crate::python::heap::NEWEST_ITEMS, "{name}");
        let got = without_items(got);
        assert_eq!(got, img.expect, "{name}");
        // The images hold what the walker of their day read: what it follows since (items, C
        // fields) lies outside them, fails to read and is dropped, never a wrong result.
        assert!(!stats.cut_by_budget, "{name}: {stats:?}");
        // The fixture after 100 ticks, every naming route.
        let failed = get(&got, "__main__.FAILED");
        assert_eq!((&*failed.type_name, failed.len), ("list", 100));
        assert_eq!(failed.item_types.get("ValueError"), Some(&64));
        assert_eq!(get(&got, "__main__.CALLBACKS").item_types.get("function"), Some(&64));
        assert_eq!(get(&got, "__main__.DISPATCHER.pending").item_types.get("tuple"), Some(&64));
        assert_eq!(get(&got, "__main__.CACHE").len, 100);
        assert_eq!(get(&got, "__main__.Registry.handlers").len, 3);
        assert_eq!(get(&got, "__main__.HIT<closure>.seen").len, 4);
        assert_eq!(&*get(&got, "__main__.SLOTTED.queue").type_name, "collections.deque");
        assert_eq!(get(&got, "__main__.D2.items").len, 2);
        assert_eq!(get(&got, "__main__.D3.attr39").len, 1);
        // Dict keys are the target's data: shown as type and hash by default (`redact`).
        let jobs = format!("__main__.REGISTRY[{}]", shown_key("jobs"));
        assert_eq!(get(&got, &jobs).len, 6);
        assert_eq!(&*get(&got, "__main__.COUNTS").type_name, "Counter");
        // A second scan with warm caches gives the same answer with fewer bytes.
        let (again, stats2) = sc.scan(&DEPTH2, &[]);
        assert_eq!(without_items(again), got, "{name} warm");
        assert!(stats2.bytes_read < stats.bytes_read, "{name}: {stats2:?} vs {stats:?}");
    }
}

/// An image that says where its heap is, so that a walk after the first is served from a copy
/// of the chunks the last one read densely (remote/snapshot.rs).
#[derive(Clone)]
struct MappedImage(ImageMemory);

impl Memory for MappedImage {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read(addr, buf)
    }

    fn writable_mappings(&self) -> Vec<std::ops::Range<u64>> {
        self.0.regions.iter().map(|(&a, d)| a..a + d.len() as u64).collect()
    }
}

#[test]
fn a_walk_served_from_a_copy_of_the_heap_gives_the_same_answer() {
    for name in IMAGES {
        let img = load(name);
        let (_, live) = HeapScanner::new(img.mem.clone(), &img.layout, img.types, img.runtime).scan(&DEPTH2, &[]);
        let mut sc = HeapScanner::new(MappedImage(img.mem.clone()), &img.layout, img.types, img.runtime);
        // The first walk copies the whole (small) heap; the next ones what the last one read.
        let mut before: Option<Vec<ContainerSample>> = None;
        for _ in 0..3 {
            let (got, stats) = sc.scan(&DEPTH2, &[]);
            assert!(stats.snapshot_bytes > 0, "{name}: {stats:?}");
            // The strs and ints it reaches are known by their type word in the copy, not read.
            assert!(stats.objects_visited < live.objects_visited, "{name}: {stats:?} vs {live:?}");
            // A path written by the last scan is not written again.
            if let Some(b) = &before {
                assert!(got.iter().zip(b).all(|(x, y)| std::rc::Rc::ptr_eq(&x.path, &y.path)), "{name}");
            }
            before = Some(got.clone());
            assert_eq!(without_items(got), img.expect, "{name} from the copy");
        }
    }
}

#[test]
fn budget_cuts_are_reported() {
    let img = load("image_3.12.json");
    let mut sc = HeapScanner::new(img.mem.clone(), &img.layout, img.types, img.runtime);
    for b in [ScanBudget { max_objects: 50, ..DEPTH2 }, ScanBudget { max_bytes: 100_000, ..DEPTH2 }] {
        let (got, stats) = sc.scan(&b, &[]);
        assert!(stats.cut_by_budget, "{b:?}: {stats:?}");
        assert!(stats.objects_visited as usize <= b.max_objects && stats.bytes_read as usize <= b.max_bytes);
        // Whatever was found is still correct.
        for c in &got {
            if let Some(e) = img.expect.iter().find(|e| e.path == c.path) {
                assert_eq!(c.len, e.len, "{}", c.path);
            }
        }
    }
    let (got, _) = sc.scan(&ScanBudget { max_depth: 1, ..DEPTH2 }, &[]);
    assert!(got.iter().all(|c| !c.path.contains("Registry.") && !c.path.contains('[')));
    assert!(got.iter().any(|c| &*c.path == "__main__.FAILED"));
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn sane(v: &[ContainerSample]) {
    let mut paths: Vec<&str> = v.iter().map(|c| &*c.path).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), v.len(), "duplicate paths");
    for c in v {
        assert!(!c.path.is_empty() && c.path.chars().all(|ch| !ch.is_control()), "{:?}", c.path);
        assert!(c.item_types.values().sum::<u64>() <= SAMPLE_ITEMS as u64);
        assert!(c.len < 1 << 40);
    }
}

/// A real image with random bytes flipped: the scanner must not panic or hang, and what it
/// reports must still be well-formed.
#[test]
fn damaged_images_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for name in IMAGES {
        let img = load(name);
        let keys: Vec<u64> = img.mem.regions.keys().copied().collect();
        for round in 0..40 {
            let mut mem = img.mem.clone();
            let flips = 1 + (rng.next() % 400) as usize;
            for _ in 0..flips {
                let k = keys[(rng.next() % keys.len() as u64) as usize];
                let r = mem.regions.get_mut(&k).unwrap();
                let i = (rng.next() % r.len() as u64) as usize;
                r[i] = match rng.next() % 3 {
                    0 => rng.next() as u8,
                    1 => r[i] ^ (1 << (rng.next() % 8)),
                    _ => 0xff,
                };
            }
            let t = Instant::now();
            let mut sc = HeapScanner::new(mem, &img.layout, img.types, img.runtime);
            let (got, stats) = sc.scan(&ScanBudget::default(), &[]);
            assert!(t.elapsed().as_secs_f64() < 10.0, "{name} round {round}: {stats:?}");
            sane(&got);
        }
    }
}

/// Random memory (own xorshift, no crates): words are random, pointers into the image, small
/// ints, the runtime or the known type addresses. Must terminate without panicking.
#[test]
fn random_memory_never_panics() {
    for minor in SUPPORTED {
        let layout = versions::offsets(minor).unwrap();
        let (mut visited, mut found) = (0u64, 0u64);
        for seed in 1..=60u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
            let base = 0x5555_0000_0000u64;
            let size = 1usize << 18;
            let nreg = 4;
            let region_start = |k: u64| base + k * 0x10_0000;
            let types = TypeAddrs {
                list: region_start(0) + 0x100,
                tuple: region_start(0) + 0x500,
                dict: region_start(0) + 0x900,
                set: region_start(0) + 0xd00,
                frozenset: region_start(0) + 0x1100,
                module: region_start(0) + 0x1500,
                unicode: region_start(0) + 0x1900,
                type_: region_start(0) + 0x1d00,
                function: region_start(0) + 0x2100,
                cell: region_start(0) + 0x2500,
                odict: region_start(0) + 0x2900,
                base_object: region_start(0) + 0x2d00,
                long: region_start(0) + 0x3100,
                set_dummy: region_start(0) + 0x3500,
                none: region_start(0) + 0x3900,
            };
            let special = [
                types.list,
                types.dict,
                types.type_,
                types.unicode,
                types.module,
                types.set,
                types.function,
                types.base_object,
            ];
            let mut mem = ImageMemory::default();
            for k in 0..nreg {
                let mut v = vec![0u8; size];
                for w in v.chunks_exact_mut(8) {
                    let r = rng.next();
                    let word = match r % 8 {
                        0 | 1 => region_start(rng.next() % nreg) + (rng.next() % size as u64) / 8 * 8,
                        2 => rng.next() % 64,
                        3 => special[(rng.next() % special.len() as u64) as usize],
                        4 => 0,
                        5 => rng.next() & 0xffff_ffff,
                        _ => rng.next(),
                    };
                    w.copy_from_slice(&word.to_le_bytes());
                }
                mem.regions.insert(region_start(k), v);
            }
            // Plant valid-looking skeletons so random objects reach the deep readers:
            // type objects at the type addresses, str objects, and runtime → interp →
            // sys.modules dict with a valid keys header and random entries.
            plant(&mut mem, &layout, &types, &mut rng, region_start(0), region_start(1));
            let runtime = region_start(1);
            let t = Instant::now();
            let mut sc = HeapScanner::new(mem, &layout, types, runtime);
            for _ in 0..2 {
                let (got, stats) = sc.scan(&ScanBudget { max_objects: 20_000, max_bytes: 8 << 20, max_depth: 3 }, &[]);
                sane(&got);
                visited += stats.objects_visited;
                found += got.len() as u64;
            }
            assert!(t.elapsed().as_secs_f64() < 10.0, "3.{minor} seed {seed}");
        }
        // The planted skeletons must make random objects reach the readers.
        eprintln!("3.{minor}: {visited} objects visited, {found} containers reported over 120 random scans");
        assert!(visited > 1000, "3.{minor}: fuzz stays shallow ({visited} objects)");
    }
}

fn put(mem: &mut ImageMemory, addr: u64, word: u64) {
    let (&start, r) = mem.regions.range_mut(..=addr).next_back().unwrap();
    let o = (addr - start) as usize;
    r[o..o + 8].copy_from_slice(&word.to_le_bytes());
}

#[expect(
    clippy::too_many_lines,
    reason = "builds one synthetic interpreter image: each object kind is a few lines in sequence"
)]
fn plant(mem: &mut ImageMemory, offsets: &Offsets, t: &TypeAddrs, rng: &mut XorShift, r0: u64, r1: u64) {
    let l = &offsets.heap;
    let names = [
        (t.list, "list", TPFLAGS_LIST_SUBCLASS | TPFLAGS_HAVE_GC),
        (t.tuple, "tuple", TPFLAGS_TUPLE_SUBCLASS),
        (t.dict, "dict", TPFLAGS_DICT_SUBCLASS),
        (t.set, "set", 0),
        (t.frozenset, "frozenset", 0),
        (t.module, "module", 0),
        (t.unicode, "str", TPFLAGS_UNICODE_SUBCLASS),
        (t.type_, "type", TPFLAGS_TYPE_SUBCLASS),
        (t.function, "function", 0),
        (t.cell, "cell", 0),
        (t.odict, "collections.OrderedDict", TPFLAGS_DICT_SUBCLASS),
        (t.base_object, "object", 0),
        (t.long, "int", TPFLAGS_LONG_SUBCLASS),
    ];
    for (k, &(a, name, flags)) in names.iter().enumerate() {
        let np = r0 + 0x8000 + 32 * k as u64;
        let (&start, r) = mem.regions.range_mut(..=np).next_back().unwrap();
        let o = (np - start) as usize;
        r[o..o + 32].fill(0);
        r[o..o + name.len()].copy_from_slice(name.as_bytes());
        put(mem, a, 1);
        put(mem, a + 8, t.type_);
        put(mem, a + l.tp_name, np);
        put(mem, a + l.tp_basicsize, 16 + 8 * (rng.next() % 8));
        put(mem, a + l.tp_itemsize, 0);
        put(
            mem,
            a + l.tp_flags,
            flags
                | TPFLAGS_READY
                | if rng.next().is_multiple_of(2) {
                    TPFLAGS_HEAPTYPE | TPFLAGS_MANAGED_DICT | TPFLAGS_INLINE_VALUES
                } else {
                    0
                },
        );
        put(
            mem,
            a + l.tp_base,
            if a == t.base_object {
                0
            } else if a == t.odict {
                t.dict
            } else {
                t.base_object
            },
        );
        put(mem, a + l.tp_dictoffset, if rng.next().is_multiple_of(2) { 16 } else { 0 });
        put(mem, a + l.tp_members, 0);
        put(mem, a + l.tp_dict, 0);
        put(mem, a + l.ht_cached_keys, if rng.next().is_multiple_of(4) { r0 + 0x3_0000 } else { 0 });
    }
    // str objects: compact ASCII identifiers; random words below point at them often.
    let strs: Vec<u64> = (0..64).map(|k| r0 + 0xa000 + 128 * k).collect();
    for (k, &sa) in strs.iter().enumerate() {
        put(mem, sa, 1);
        put(mem, sa + 8, t.unicode);
        put(mem, sa + 16, 3);
        put(mem, sa + 32, (1 << 2) | (1 << 5) | (1 << 6));
        let text = [b'a' + (k % 26) as u8, b'_', b'a' + (k / 26) as u8, 0];
        let d = sa + offsets.str.ascii_data;
        let (&start, r) = mem.regions.range_mut(..=d).next_back().unwrap();
        let o = (d - start) as usize;
        r[o..o + 4].copy_from_slice(&text);
    }
    // Sprinkle str/type pointers through the random words of region 1..
    let keys: Vec<u64> = mem.regions.keys().copied().collect();
    for _ in 0..4000 {
        let k = keys[1 + (rng.next() % (keys.len() as u64 - 1)) as usize];
        let off = (rng.next() % 0x1_0000) / 8 * 8;
        let w = if rng.next().is_multiple_of(2) {
            strs[(rng.next() % 64) as usize]
        } else {
            [t.list, t.dict, t.set, t.module, t.type_, t.function][(rng.next() % 6) as usize]
        };
        put(mem, k + off, w);
    }
    // runtime (= r1) → interp → sys.modules; 8 planted modules whose globals dicts hold
    // random pointers, planted lists/sets/dicts with sane headers and random contents.
    let interp = r1 + 0x1000;
    put(mem, r1 + l.runtime_interp_main, interp);
    put(mem, interp + l.interp_modules, r1 + 0x4000);
    let rand_ptr =
        |rng: &mut XorShift| keys[(rng.next() % keys.len() as u64) as usize] + (rng.next() % 0xf000) / 16 * 16;
    let mut objs = Vec::new();
    for k in 0..24u64 {
        let a = r1 + 0xc000 + 0x100 * k;
        put(mem, a, 1 + rng.next() % 3);
        match k % 3 {
            0 => {
                put(mem, a + 8, t.list);
                let alloc = rng.next() % 100;
                put(mem, a + l.list_size, rng.next() % (alloc + 1));
                put(mem, a + l.list_items, rand_ptr(rng));
                put(mem, a + l.list_allocated, alloc);
            }
            1 => {
                put(mem, a + 8, t.set);
                let mask = (8u64 << (rng.next() % 6)) - 1;
                let fill = rng.next() % (mask + 1);
                put(mem, a + l.set_fill, fill);
                put(mem, a + l.set_used, rng.next() % (fill + 1));
                put(mem, a + l.set_mask, mask);
                put(mem, a + l.set_table, rand_ptr(rng));
            }
            _ => {
                let vals: Vec<u64> = (0..8).map(|_| rand_ptr(rng)).collect();
                plant_dict(mem, l, t, a, r1 + 0x2_0000 + 0x400 * k, &strs[..8], &vals);
            }
        }
        objs.push(a);
    }
    let mut mods = Vec::new();
    for k in 0..8u64 {
        let m = r1 + 0x8000 + 0x100 * k;
        put(mem, m, 1);
        put(mem, m + 8, t.module);
        put(mem, m + l.module_dict, m + 0x80);
        let vals: Vec<u64> = (0..30)
            .map(|_| {
                if rng.next().is_multiple_of(2) {
                    objs[(rng.next() % objs.len() as u64) as usize]
                } else {
                    rand_ptr(rng)
                }
            })
            .collect();
        plant_dict(mem, l, t, m + 0x80, r1 + 0x3_0000 + 0x800 * k, &strs[8..38], &vals);
        mods.push(m);
    }
    let vals: Vec<u64> = (0..40).map(|k| if k < 8 { mods[k] } else { rand_ptr(rng) }).collect();
    plant_dict(mem, l, t, r1 + 0x4000, r1 + 0x5000, &strs[..40], &vals);
}

/// A combined dict at `a` with a valid keys object at `keys_obj` (64 slots).
fn plant_dict(
    mem: &mut ImageMemory,
    l: &HeapLayout,
    t: &TypeAddrs,
    a: u64,
    keys_obj: u64,
    names: &[u64],
    vals: &[u64],
) {
    let n = names.len().min(vals.len()) as u64;
    put(mem, a, 1);
    put(mem, a + 8, t.dict);
    put(mem, a + l.dict_used, n);
    put(mem, a + l.dict_keys, keys_obj);
    put(mem, a + l.dict_values, 0);
    put(mem, keys_obj, 1);
    let (entries, esize, koff) = match l.keys {
        KeysLayout::V310 => {
            put(mem, keys_obj + 8, 64);
            put(mem, keys_obj + 32, n);
            (keys_obj + 40 + 64, 24, 8)
        }
        KeysLayout::V311 => {
            put(mem, keys_obj + 8, 6 | (6 << 8) | (1 << 16));
            put(mem, keys_obj + 24, n);
            (keys_obj + 32 + 64, 16, 0)
        }
    };
    for k in 0..n {
        put(mem, entries + k * esize + koff, names[k as usize]);
        put(mem, entries + k * esize + koff + 8, vals[k as usize]);
    }
}

#[test]
fn layout_table_bounds() {
    assert!(versions::offsets(9).is_none());
    assert!(versions::offsets(16).is_none());
    let l14 = versions::offsets(14).unwrap().heap;
    assert_eq!((l14.tuple_items, l14.interp_modules, l14.runtime_interp_main), (32, 7688, 816));
    assert!(l14.refcnt_plausible(0x0005_0000_c000_0000));
    assert!(!l14.refcnt_plausible(0x0000_7f00_0000_0001));
    let l12 = versions::offsets(12).unwrap().heap;
    assert!(l12.refcnt_plausible(0xffff_ffff) && !l12.refcnt_plausible(0) && !l12.refcnt_plausible(1 << 40));
    assert!(TypeAddrs::from_lookup(|s| (s != "_PySet_Dummy").then_some(0x1000)).is_none());
    assert_eq!(TypeAddrs::SYMBOLS.len(), 15);
}
