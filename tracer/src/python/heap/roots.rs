//! Roots beyond modules: the locals of every thread's frames, of every suspended coroutine,
//! generator and async generator, and the running event loops. Coroutines, generators, loops and
//! tasks are found by the census (every GC-tracked object, by type); thread frames from the
//! interpreter's thread states. A frame's locals become the first hop of a path named as a person
//! says it: `main() → app`, `task audit_consumer() → seen`, `asyncio event loop → _scheduled`.
//!
//! Layouts (x86-64, GIL builds), measured on this machine by reading a suspended coroutine's own
//! words from inside each interpreter (its code object and two marked locals):
//!
//! | | 3.10 | 3.11 | 3.12 | 3.13 | 3.14 | 3.15 |
//! |---|---|---|---|---|---|---|
//! | frame in a generator object | `gi_frame` pointer @16 | embedded @80 | @72 | @72 | @72 | @72 |
//! | code in the frame | `f_code` @32 | @32 | @0 | @0 | @0 (tagged) | @0 (tagged) |
//! | locals in the frame | `f_localsplus` @352 | @72 | @72 | @72 | @80 | @80 |
//! | names of the locals | `co_varnames` @72 | `co_localsplusnames` | same | same | same | same |
//! | generator state (int8) | — (`gi_frame` NULL when done) | `gi_frame_state` @75 | @67 | @67 | @67 | @67 |
//! | done from (COMPLETED) | — | 1 | 1 | 1 | 1 | 5 (CREATED 0 ... EXECUTING 4) |
//!
//! 3.10 names only plain locals (`co_varnames`); cell variables are then not named.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::paths::{is_dunder, quote, PathId, Seg};
use super::runner::is_runner_file;
use super::{plausible_ptr, Name, Node, Obj, Parent, Scan};
use crate::python::frames::FrameLayout;
use crate::python::versions::Offsets;
use crate::remote::le_u64;

/// Locals read per frame; a frame with more is read up to this many.
const MAX_LOCALS: u64 = 256;
const MAX_THREADS: usize = 256;
const MAX_FRAMES: usize = 1024;
/// Frames with an owner at or above this have no locals of their own (C-stack entry frames).
const OWNED_BY_CSTACK: u8 = 3;
/// Bytes of a code object read: every field used lies below.
const CODE_READ: usize = 136;

/// What the census found that is a root, by the type of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RootKind {
    Coroutine,
    Generator,
    AsyncGenerator,
    EventLoop,
    /// An asyncio Task (names its coroutine `task NAME()`); not a root itself.
    Task,
}

impl RootKind {
    /// The kind of objects of type `tp_name`, if they are roots (or tasks).
    pub fn of_type(tp_name: &str) -> Option<RootKind> {
        Some(match tp_name {
            "coroutine" => RootKind::Coroutine,
            "generator" => RootKind::Generator,
            "async_generator" => RootKind::AsyncGenerator,
            "_asyncio.Task" | "Task" => RootKind::Task,
            n if n.ends_with("EventLoop") && !n.contains('.') => RootKind::EventLoop,
            _ => return None,
        })
    }
}

/// Where a path starts: its kind (`module`, `frame`, `task`, `coroutine`, `generator`,
/// `async generator`, `event loop`) and its name (`__main__`, `main()`, `audit_consumer()`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RootName {
    pub kind: &'static str,
    pub name: super::Name,
}

/// Where frames and their locals are, per version (module docs).
#[derive(Debug, Clone, Copy)]
pub struct RootLayout {
    frames: FrameLayout,
    /// Offset of the frame in a generator object (3.10: of the `gi_frame` pointer).
    gen_frame: u64,
    localsplus: u64,
    /// 3.10: `co_varnames`; else 0 (`co_localsplusnames` of the heap layout).
    code_varnames: u64,
    /// Masks a tagged code reference (3.14+).
    code_mask: u64,
    /// 3.11+: the generator's `gi_frame_state` (int8) and the first value at which its frame is
    /// gone (COMPLETED); 3.10: none (a finished generator's `gi_frame` is NULL).
    gen_state: Option<(u64, i8)>,
    /// 3.11+: where a frame object (`PyFrameObject`) points at its `_PyInterpreterFrame`
    /// (`f_frame` @24, census §5.1); 3.10: none, the frame object is the frame.
    frame_object_frame: Option<u64>,
}

impl RootLayout {
    pub fn of(offsets: &Offsets) -> Option<RootLayout> {
        let (gen_frame, localsplus, code_varnames) = match offsets.minor {
            10 => (16, 352, 72),
            11 => (80, 72, 0),
            12 | 13 => (72, 72, 0),
            14 | 15 => (72, 80, 0),
            _ => return None,
        };
        let code_mask = !offsets.frames.code_tag_bits & !3;
        let frame_object_frame = (offsets.minor > 10).then_some(24);
        let gen_state = match offsets.minor {
            10 => None,
            11 => Some((75, 1)),
            12..=14 => Some((67, 1)),
            // CREATED 0, SUSPENDED 1-3, EXECUTING 4, COMPLETED 5 (measured on sid's 3.15.2)
            _ => Some((67, 5)),
        };
        Some(RootLayout {
            frames: offsets.frames,
            gen_frame,
            localsplus,
            code_varnames,
            code_mask,
            frame_object_frame,
            gen_state,
        })
    }
}

/// One frame whose locals are read, and what it belongs to.
struct FrameRoot {
    frame: u64,
    /// The generator object owning it, if any.
    gen: Option<(u64, RootKind)>,
    code: u64,
    names: u64,
    /// The code object's `co_qualname` (3.10: `co_name`), then the root's label.
    name_ptr: u64,
    /// The code object's `co_filename`.
    file_ptr: u64,
    label: String,
    locals: Vec<u64>,
    names_list: Vec<u64>,
}

impl Scan<'_> {
    /// The roots beyond modules: event loops (as nodes of the first level) and the locals of
    /// every frame (as nodes of the second level, one hop from their frame). Ranks start at
    /// `rank0`; `names` gets one entry per rank used.
    pub(crate) fn frame_roots(
        &mut self,
        rl: &RootLayout,
        runtime_addr: u64,
        found: &[(u64, RootKind)],
        names: &mut Vec<RootName>,
    ) -> (Vec<Node>, Vec<Node>) {
        let mut level0 = Vec::new();
        let loops: Vec<u64> = found.iter().filter(|r| r.1 == RootKind::EventLoop).map(|r| r.0).collect();
        for (k, addr) in loops.into_iter().enumerate() {
            let name = if k == 0 { "asyncio event loop".to_string() } else { format!("asyncio event loop #{}", k + 1) };
            let path = self.paths.root(Name::from(name.as_str()));
            level0.push(Node { addr, path, depth: 0, rank: names.len(), parent: Parent::Root });
            names.push(RootName { kind: "event loop", name: name.into() });
        }
        let gens = self.generator_frames(rl, found);
        let gen_frames: HashSet<u64> = gens.iter().map(|g| g.frame).collect();
        let mut frames = self.thread_frames(rl, runtime_addr);
        // A running coroutine's frame is on its thread's stack too: it is named as a coroutine.
        frames.retain(|f| !gen_frames.contains(&f.frame));
        frames.extend(gens);
        let frames = self.read_frames(rl, frames);
        let tasks = self.task_coroutines(found);
        // A coroutine that a thread's frame holds (`asyncio.run`'s `main`) is named as the
        // function it runs: `main()`. It keeps that name while it lives, also in a scan whose
        // read of the thread's stack was cut short by a call or return.
        let mut on_stack: HashSet<u64> =
            frames.iter().filter(|f| f.gen.is_none()).flat_map(|f| f.locals.iter().copied()).collect();
        for f in &frames {
            if let Some((g, _)) = f.gen {
                if on_stack.contains(&g) || self.stack_held_before.contains(&g) {
                    on_stack.insert(g);
                    self.stack_held.insert(g);
                }
            }
        }
        let mut level1 = Vec::new();
        let mut used: HashMap<String, u32> = HashMap::new();
        for f in frames {
            let (kind, label) = match f.gen {
                None => ("frame", f.label.clone()),
                Some((g, _)) if on_stack.contains(&g) && tasks.contains(&g) => ("task", f.label.clone()),
                Some((g, _)) if on_stack.contains(&g) => ("coroutine", f.label.clone()),
                Some((g, RootKind::Coroutine)) if tasks.contains(&g) => ("task", format!("task {}", f.label)),
                Some((_, RootKind::Coroutine)) => ("coroutine", format!("coroutine {}", f.label)),
                Some((_, RootKind::AsyncGenerator)) => ("async generator", format!("async generator {}", f.label)),
                Some(_) => ("generator", format!("generator {}", f.label)),
            };
            let n = used.entry(label.clone()).or_insert(0);
            *n += 1;
            let label = if *n == 1 { label } else { format!("{label} #{n}") };
            let rank = names.len();
            let root = self.paths.root(Name::from(label.as_str()));
            level1.extend(self.local_nodes(&f, root, 1, rank));
            names.push(RootName { kind, name: label.into() });
        }
        (level0, level1)
    }

    /// The named locals of a frame read by [`Scan::read_frames`], as nodes `LABEL → name`.
    fn local_nodes(&mut self, f: &FrameRoot, label: PathId, depth: u32, rank: usize) -> Vec<Node> {
        let mut out = Vec::new();
        for (name, v) in f.names_list.iter().zip(&f.locals) {
            let Some(name) = self.str_cache.get(name).cloned().flatten() else { continue };
            if *v == 0 || *v == self.types.none || is_dunder(&name) {
                continue;
            }
            let path = self.paths.child(label, Seg::Arrow(name));
            out.push(Node { addr: *v & !1, path, depth, rank, parent: Parent::Other });
        }
        out
    }

    /// The locals of frame objects met in the walk (a traceback's `tb_frame`): `PATH → name`.
    pub(crate) fn frame_object_locals(&mut self, objs: &[&Obj]) -> Vec<Node> {
        let Some(rl) = self.root_layout else { return vec![] };
        let mut owner: HashMap<u64, Node> = HashMap::new();
        let mut frames = Vec::new();
        for o in objs {
            let frame = match rl.frame_object_frame {
                Some(off) => o.w(off),
                None => o.node.addr,
            };
            if plausible_ptr(frame) && owner.insert(frame, o.node.clone()).is_none() {
                frames.push(FrameRoot::new(frame, None));
            }
        }
        let frames = self.read_frames(&rl, frames);
        let mut out = Vec::new();
        for f in &frames {
            if let Some(node) = owner.get(&f.frame) {
                out.extend(self.local_nodes(f, node.path, node.depth + 1, node.rank));
            }
        }
        out
    }

    /// Every thread's frame chain, innermost first (frames with locals only).
    fn thread_frames(&mut self, rl: &RootLayout, runtime_addr: u64) -> Vec<FrameRoot> {
        let (f, l) = (&rl.frames, self.layout);
        let word = |s: &mut Self, a: u64| s.batch(&[(a, 8)])[0].as_ref().map(|b| le_u64(b, 0)).unwrap_or(0);
        let interp = word(self, runtime_addr + l.runtime_interp_main);
        let mut out = Vec::new();
        if !plausible_ptr(interp) {
            return out;
        }
        let mut tstate = word(self, interp + f.interp_threads_head);
        let mut seen = HashSet::new();
        for _ in 0..MAX_THREADS {
            if !plausible_ptr(tstate) || !seen.insert(tstate) {
                break;
            }
            let mut frame = word(self, tstate + f.tstate_frame);
            if let Some(cf) = f.cframe_current_frame {
                frame = if plausible_ptr(frame) { word(self, frame + cf) } else { 0 };
            }
            for _ in 0..MAX_FRAMES {
                if !plausible_ptr(frame) || !seen.insert(frame) {
                    break;
                }
                let owner = match f.frame_owner {
                    Some(o) => self.batch(&[(frame + o, 1)])[0].as_ref().map(|b| b[0]).unwrap_or(OWNED_BY_CSTACK),
                    None => 0,
                };
                if owner < OWNED_BY_CSTACK {
                    out.push(FrameRoot::new(frame, None));
                }
                frame = word(self, frame + f.frame_previous);
            }
            tstate = word(self, tstate + f.tstate_next);
        }
        out
    }

    /// The frames of the census's coroutines and generators.
    fn generator_frames(&mut self, rl: &RootLayout, found: &[(u64, RootKind)]) -> Vec<FrameRoot> {
        let gens: Vec<(u64, RootKind)> = found
            .iter()
            .copied()
            .filter(|r| matches!(r.1, RootKind::Coroutine | RootKind::Generator | RootKind::AsyncGenerator))
            .collect();
        if let Some((state, done)) = rl.gen_state {
            // A finished generator's frame holds stale pointers to freed objects: only those
            // created, suspended or running are read (census §5.2).
            let got = self.batch(&gens.iter().map(|g| (g.0 + state, 1)).collect::<Vec<_>>());
            return gens
                .into_iter()
                .zip(got)
                .filter(|(_, b)| b.as_ref().is_some_and(|b| (b[0] as i8) < done))
                .map(|(g, _)| FrameRoot::new(g.0 + rl.gen_frame, Some(g)))
                .collect();
        }
        let regions: Vec<(u64, usize)> = gens.iter().map(|g| (g.0 + rl.gen_frame, 8)).collect();
        let got = self.batch(&regions);
        gens.into_iter()
            .zip(got)
            .filter_map(|(g, b)| Some(FrameRoot::new(b.map(|b| le_u64(&b, 0)).filter(|&p| plausible_ptr(p))?, Some(g))))
            .collect()
    }

    /// Coroutines held by an asyncio Task: any word of the task's first 256 bytes that is one.
    fn task_coroutines(&mut self, found: &[(u64, RootKind)]) -> HashSet<u64> {
        let coros: HashSet<u64> = found.iter().filter(|r| r.1 == RootKind::Coroutine).map(|r| r.0).collect();
        let regions: Vec<(u64, usize)> = found.iter().filter(|r| r.1 == RootKind::Task).map(|r| (r.0, 256)).collect();
        let mut out = HashSet::new();
        for b in self.batch(&regions).into_iter().flatten() {
            out.extend((2..32).map(|k| le_u64(&b, k * 8)).filter(|w| coros.contains(w)));
        }
        out
    }

    /// Reads each frame's code object, its names and its locals; frames that fail a check are
    /// left out (counted as dropped).
    fn read_frames(&mut self, rl: &RootLayout, mut frames: Vec<FrameRoot>) -> Vec<FrameRoot> {
        let (f, l) = (&rl.frames, self.layout);
        let got = self.batch(&frames.iter().map(|fr| (fr.frame + f.frame_code, 8)).collect::<Vec<_>>());
        for (fr, b) in frames.iter_mut().zip(got) {
            fr.code = b.map(|b| le_u64(&b, 0) & rl.code_mask).unwrap_or(0);
        }
        frames.retain(|fr| plausible_ptr(fr.code));
        let got = self.batch(&frames.iter().map(|fr| (fr.code, CODE_READ)).collect::<Vec<_>>());
        let codes: Vec<Option<Bytes>> = got;
        let tys: Vec<u64> = codes.iter().flatten().map(|b| le_u64(b, 8)).collect();
        self.resolve_types(&tys);
        let mut keep = Vec::new();
        let mut strs = Vec::new();
        for (mut fr, b) in frames.into_iter().zip(codes) {
            let ok = b.filter(|b| {
                l.refcnt_plausible(le_u64(b, 0)) && self.type_info(le_u64(b, 8)).is_some_and(|t| &*t.name == "code")
            });
            let Some(b) = ok else {
                self.stats.dropped += 1;
                continue;
            };
            let names_at = if rl.code_varnames != 0 { rl.code_varnames } else { l.code_localsplusnames };
            fr.names = le_u64(&b, names_at as usize);
            fr.name_ptr = le_u64(&b, f.co_qualname.unwrap_or(f.co_name) as usize);
            fr.file_ptr = le_u64(&b, f.co_filename as usize);
            strs.extend([fr.name_ptr, fr.file_ptr]);
            keep.push(fr);
        }
        self.read_strs(&strs);
        keep.retain(|fr| !self.str_cache.get(&fr.file_ptr).cloned().flatten().is_some_and(|f| is_runner_file(&f)));
        self.frame_locals(rl, &mut keep);
        let names: Vec<u64> = keep.iter().flat_map(|fr| fr.names_list.iter().copied()).collect();
        self.read_strs(&names);
        for fr in &mut keep {
            let name = self.str_cache.get(&fr.name_ptr).cloned().flatten().unwrap_or_else(|| "?".into());
            fr.label = format!("{}()", code_name(&name));
        }
        keep
    }

    /// Each frame's names tuple, then its locals (as many as it has names).
    fn frame_locals(&mut self, rl: &RootLayout, frames: &mut [FrameRoot]) {
        let l = self.layout;
        let regions: Vec<(u64, usize)> =
            frames.iter().map(|fr| (fr.names, (l.tuple_items + 8 * MAX_LOCALS) as usize)).collect();
        let mut got = self.batch(&regions);
        // A tuple near the end of a mapping: read its header alone.
        let short: Vec<usize> = (0..frames.len()).filter(|&k| got[k].is_none()).collect();
        let again = self.batch(&short.iter().map(|&k| (frames[k].names, l.tuple_items as usize)).collect::<Vec<_>>());
        let mut lens = vec![0u64; frames.len()];
        for (k, b) in got.iter().enumerate() {
            lens[k] = b.as_ref().map(|b| tuple_len(b, self.types.tuple)).unwrap_or(0);
        }
        for (&k, b) in short.iter().zip(&again) {
            lens[k] = b.as_ref().map(|b| tuple_len(b, self.types.tuple)).unwrap_or(0);
            if lens[k] > 0 {
                got[k] = self.batch(&[(frames[k].names, (l.tuple_items + 8 * lens[k]) as usize)]).pop().flatten();
            }
        }
        let regions: Vec<(u64, usize)> =
            frames.iter().zip(&lens).map(|(fr, &n)| (fr.frame + rl.localsplus, 8 * n as usize)).collect();
        let vals = self.batch(&regions);
        for ((fr, names), (vals, &n)) in frames.iter_mut().zip(got).zip(vals.into_iter().zip(&lens)) {
            let (Some(names), Some(vals)) = (names, vals) else { continue };
            fr.names_list = (0..n).map(|k| le_u64(&names, (l.tuple_items + 8 * k) as usize)).collect();
            fr.locals = (0..n).map(|k| le_u64(&vals, 8 * k as usize)).collect();
        }
    }
}

impl FrameRoot {
    fn new(frame: u64, gen: Option<(u64, RootKind)>) -> FrameRoot {
        FrameRoot {
            frame,
            gen,
            code: 0,
            names: 0,
            name_ptr: 0,
            file_ptr: 0,
            label: String::new(),
            locals: vec![],
            names_list: vec![],
        }
    }
}

/// The length of a tuple whose header is `b`, capped at [`MAX_LOCALS`]; 0 if not a tuple.
fn tuple_len(b: &[u8], tuple_type: u64) -> u64 {
    if le_u64(b, 8) != tuple_type {
        return 0;
    }
    le_u64(b, 16).min(MAX_LOCALS)
}

/// A code object's (qualified) name as shown: dotted identifiers and `<locals>`/`<lambda>`
/// parts as they are, anything else quoted.
fn code_name(s: &str) -> String {
    let plain = |p: &str| super::paths::is_identifier(p) || (p.starts_with('<') && p.ends_with('>') && p.len() < 32);
    if !s.is_empty() && s.split('.').all(plain) {
        s.to_string()
    } else {
        quote(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::heap::paths::{NameStyle, Paths};

    #[test]
    fn roots_are_known_by_type_name() {
        assert_eq!(RootKind::of_type("coroutine"), Some(RootKind::Coroutine));
        assert_eq!(RootKind::of_type("async_generator"), Some(RootKind::AsyncGenerator));
        assert_eq!(RootKind::of_type("_UnixSelectorEventLoop"), Some(RootKind::EventLoop));
        assert_eq!(RootKind::of_type("_asyncio.Task"), Some(RootKind::Task));
        assert_eq!(RootKind::of_type("uvloop.Loop"), None);
        assert_eq!(RootKind::of_type("mod.MyEventLoop"), None, "a C type outside asyncio is not assumed a loop");
        assert_eq!(RootKind::of_type("list"), None);
    }

    #[test]
    fn root_paths_read_as_said() {
        let mut p = Paths::default();
        let task = p.root("task audit_consumer()".into());
        let seen = p.child(task, Seg::Arrow("seen".into()));
        assert_eq!(p.text(seen), "task audit_consumer() → seen");
        let f = p.root("f()".into());
        let odd = p.child(f, Seg::Arrow(".0".into()));
        assert_eq!(p.text(odd), "f() → \".0\"");
        assert_eq!(code_name("Runner.run"), "Runner.run");
        assert_eq!(code_name("main.<locals>.inner"), "main.<locals>.inner");
        assert_eq!(code_name("bad\nname"), "\"bad\\x0aname\"");
        let loop_ = p.root("asyncio event loop".into());
        let scheduled = p.named(loop_, &"_scheduled".into(), NameStyle::Root).unwrap();
        assert_eq!(p.text(scheduled), "asyncio event loop → _scheduled");
        assert_eq!(p.named(loop_, &"__dict__".into(), NameStyle::Root), None);
    }

    #[test]
    fn every_supported_version_has_a_frame_layout() {
        for minor in crate::python::versions::SUPPORTED {
            let o = crate::python::versions::offsets(minor).unwrap();
            let rl = RootLayout::of(&o).unwrap_or_else(|| panic!("3.{minor}"));
            assert_eq!(rl.gen_state.is_none(), minor == 10, "3.10 alone points at a frame object");
        }
    }
}
