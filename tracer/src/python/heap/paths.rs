//! Paths a person would type for what the scanner reaches: `mod.NAME`, `mod.Cls.NAME`,
//! `mod.FUNC<closure>.NAME`, `mod.REGISTRY["jobs"]`, with names that are not identifiers quoted.

use std::fmt::Write;
use std::hash::{BuildHasher, Hash, Hasher};

use super::Name;

/// How a namespace's names join its owner's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameStyle {
    /// Attributes: `owner.name` (dunder names skipped).
    Attr,
    /// Dict keys: `owner["key"]`.
    Key,
    /// Attributes of a root that is not a module: `asyncio event loop → _scheduled`.
    Root,
}

/// A path in one scan's [`Paths`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathId(u32);

/// The last part of a path, as it is written after its parent's.
#[derive(Debug, Clone)]
pub(crate) enum Seg {
    /// Where a path starts, as is: `__main__`, `task audit_consumer()`, `asyncio event loop`.
    Root(Name),
    /// `.name`, or `["odd name"]`.
    Attr(Name),
    /// ` → name` (a root's attribute, a frame's local), or ` → "odd name"`.
    Arrow(Name),
    /// `[<str #5d41402a>]`: a dict's str key, as [`crate::redact`] lets it be shown.
    Key(Name),
    /// `[#3]`: the 4th entry of a dict, whose key is not a str.
    NthKey(u32),
    /// `[12]`: a list, tuple or deque item.
    Index(u64),
    /// `{#3}`: a set's member, by table order.
    Member(u32),
    /// A C field as written, dot included: `.__traceback__`.
    Field(&'static str),
    /// `<closure>.name`: a function's closure cell.
    Closure(Name),
}

impl Seg {
    fn write(&self, w: &mut impl Write) -> std::fmt::Result {
        match self {
            Seg::Root(s) => w.write_str(s),
            Seg::Attr(n) if is_identifier(n) => write!(w, ".{n}"),
            Seg::Arrow(n) if is_identifier(n) => write!(w, "{ARROW}{n}"),
            Seg::Attr(n) => {
                w.write_char('[')?;
                crate::redact::write_python_quote(w, n)?;
                w.write_char(']')
            }
            Seg::Arrow(n) => {
                w.write_str(ARROW)?;
                crate::redact::write_python_quote(w, n)
            }
            Seg::Key(n) => {
                w.write_char('[')?;
                crate::redact::write_target_string(w, "str", n)?;
                w.write_char(']')
            }
            Seg::NthKey(k) => write!(w, "[#{k}]"),
            Seg::Index(k) => write!(w, "[{k}]"),
            Seg::Member(k) => write!(w, "{{#{k}}}"),
            Seg::Field(f) => w.write_str(f),
            Seg::Closure(n) => write!(w, "<closure>.{n}"),
        }
    }

    /// Feeds what it is (kind and payload) to `h`: paths with equal fingerprints are written alike.
    fn fingerprint(&self, h: &mut impl Hasher) {
        std::mem::discriminant(self).hash(h);
        match self {
            Seg::Root(n) | Seg::Attr(n) | Seg::Arrow(n) | Seg::Key(n) | Seg::Closure(n) => n.hash(h),
            Seg::NthKey(k) | Seg::Member(k) => k.hash(h),
            Seg::Index(k) => k.hash(h),
            Seg::Field(f) => f.hash(h),
        }
    }

    /// Bytes it is written in, counted without writing it: every object the walk reaches gets a
    /// path, and only a few are written out.
    fn len(&self) -> usize {
        use crate::redact::{python_quote_len, target_string_len};
        match self {
            Seg::Root(s) => s.len(),
            Seg::Attr(n) if is_identifier(n) => 1 + n.len(),
            Seg::Arrow(n) if is_identifier(n) => ARROW.len() + n.len(),
            Seg::Attr(n) => 2 + python_quote_len(n),
            Seg::Arrow(n) => ARROW.len() + python_quote_len(n),
            Seg::Key(n) => 2 + target_string_len("str", n),
            Seg::NthKey(k) | Seg::Member(k) => 3 + digits(u64::from(*k)),
            Seg::Index(k) => 2 + digits(*k),
            Seg::Field(f) => f.len(),
            Seg::Closure(n) => "<closure>.".len() + n.len(),
        }
    }
}

const ARROW: &str = " → ";

/// Decimal digits of `k`.
fn digits(k: u64) -> usize {
    k.checked_ilog10().map_or(1, |d| d as usize + 1)
}

struct Part {
    /// `NO_PARENT` for a root.
    parent: u32,
    /// Bytes of the whole path written out.
    len: u32,
    seg: Seg,
}

const NO_PARENT: u32 = u32::MAX;

/// One scan's paths, a part each: a path is its parent's and one segment, so a walk over a
/// hundred thousand objects builds no string per object; only the paths of reported containers,
/// and of rivals for one object whose rank and length tie, are written out.
#[derive(Default)]
pub(crate) struct Paths {
    parts: Vec<Part>,
    /// [`Paths::cmp`]'s buffers, kept between calls.
    scratch: std::cell::RefCell<Scratch>,
    /// Fingerprints computed so far, by part (0: not yet).
    fingerprints: Vec<u64>,
}

/// Fingerprints are compared across scans: one fixed seed.
const FINGERPRINT: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x7472_6163_6572);

#[derive(Default)]
struct Scratch {
    below_a: Vec<u32>,
    below_b: Vec<u32>,
    text_a: String,
    text_b: String,
}

impl Paths {
    pub(crate) fn with_capacity(parts: usize) -> Paths {
        Paths { parts: Vec::with_capacity(parts), ..Paths::default() }
    }

    /// Paths made so far.
    pub(crate) fn made(&self) -> usize {
        self.parts.len()
    }

    pub(crate) fn root(&mut self, name: Name) -> PathId {
        self.push(NO_PARENT, 0, Seg::Root(name))
    }

    pub(crate) fn child(&mut self, parent: PathId, seg: Seg) -> PathId {
        let base = self.parts.get(parent.0 as usize).map_or(0, |p| p.len);
        self.push(parent.0, base, seg)
    }

    /// `name` under `parent` in `style`; `None` for interpreter plumbing (dunder attributes).
    pub(crate) fn named(&mut self, parent: PathId, name: &Name, style: NameStyle) -> Option<PathId> {
        let seg = match style {
            NameStyle::Attr | NameStyle::Root if is_dunder(name) => return None,
            NameStyle::Root => Seg::Arrow(name.clone()),
            NameStyle::Attr => Seg::Attr(name.clone()),
            NameStyle::Key => Seg::Key(name.clone()),
        };
        Some(self.child(parent, seg))
    }

    fn push(&mut self, parent: u32, base: u32, seg: Seg) -> PathId {
        let len = base.saturating_add(u32::try_from(seg.len()).unwrap_or(u32::MAX));
        let id = PathId(u32::try_from(self.parts.len()).unwrap_or(NO_PARENT - 1));
        self.parts.push(Part { parent, len, seg });
        id
    }

    /// Bytes of the path written out.
    pub(crate) fn len(&self, id: PathId) -> u32 {
        self.parts.get(id.0 as usize).map_or(0, |p| p.len)
    }

    /// A 64-bit hash of the path's parts, the same in every scan for the same path: what its
    /// text is cached by between scans. Shared beginnings are hashed once.
    pub(crate) fn fingerprint(&mut self, id: PathId) -> u64 {
        let mut chain = Vec::new();
        let mut at = id.0;
        let mut base = 0;
        while let Some(p) = self.parts.get(at as usize) {
            match self.fingerprints.get(at as usize) {
                Some(&fp) if fp != 0 => {
                    base = fp;
                    break;
                }
                _ => chain.push(at),
            }
            if p.parent >= at {
                break;
            }
            at = p.parent;
        }
        self.fingerprints.resize(self.parts.len(), 0);
        for &k in chain.iter().rev() {
            let mut h = FINGERPRINT.build_hasher();
            base.hash(&mut h);
            self.parts[k as usize].seg.fingerprint(&mut h);
            base = h.finish().max(1);
            self.fingerprints[k as usize] = base;
        }
        base
    }

    /// The path written out.
    pub(crate) fn text(&self, id: PathId) -> String {
        let mut chain = Vec::new();
        let mut at = id.0;
        while let Some(p) = self.parts.get(at as usize) {
            chain.push(&p.seg);
            // Parents are made before their children: a chain always ends.
            if p.parent >= at {
                break;
            }
            at = p.parent;
        }
        let mut out = String::with_capacity(self.len(id) as usize);
        for seg in chain.iter().rev() {
            let _ = seg.write(&mut out);
        }
        out
    }

    /// Orders two paths as their texts would be: by length, then lexically. Paths that share a
    /// beginning (a common ancestor) are compared by what follows it, written into scratch
    /// buffers: thousands of rivals of one length (the same `str` in every session's list) are
    /// compared without writing whole paths.
    pub(crate) fn cmp(&self, a: PathId, b: PathId) -> std::cmp::Ordering {
        if a == b {
            return std::cmp::Ordering::Equal;
        }
        self.len(a).cmp(&self.len(b)).then_with(|| {
            let mut s = self.scratch.borrow_mut();
            let Scratch { below_a, below_b, text_a, text_b } = &mut *s;
            below_a.clear();
            below_b.clear();
            let (mut x, mut y) = (a.0, b.0);
            // Parents are made before their children: climb the younger until they meet or
            // both run out.
            while x != y {
                let climb = if x == NO_PARENT {
                    (&mut y, &mut *below_b)
                } else if y == NO_PARENT || x > y {
                    (&mut x, &mut *below_a)
                } else {
                    (&mut y, &mut *below_b)
                };
                let Some(p) = self.parts.get(*climb.0 as usize) else { break };
                climb.1.push(*climb.0);
                *climb.0 = if p.parent >= *climb.0 { NO_PARENT } else { p.parent };
            }
            let write = |below: &[u32], out: &mut String| {
                out.clear();
                for &k in below.iter().rev() {
                    let _ = self.parts[k as usize].seg.write(out);
                }
            };
            write(below_a, text_a);
            write(below_b, text_b);
            (*text_a).cmp(&*text_b)
        })
    }
}

pub(crate) fn is_identifier(s: &str) -> bool {
    if let [first, rest @ ..] = s.as_bytes() {
        if s.is_ascii() {
            return (*first == b'_' || first.is_ascii_alphabetic())
                && rest.iter().all(|c| *c == b'_' || c.is_ascii_alphanumeric());
        }
    }
    let mut cs = s.chars();
    match cs.next() {
        Some(c) if c == '_' || c.is_alphabetic() => {}
        _ => return false,
    }
    cs.all(|c| c == '_' || c.is_alphanumeric())
}

pub(crate) fn is_dunder(s: &str) -> bool {
    s.len() > 4 && s.starts_with("__") && s.ends_with("__")
}

pub(crate) fn module_name_ok(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_identifier)
}

/// A Python-style double-quoted literal, control characters escaped.
pub(crate) fn quote(s: &str) -> String {
    crate::redact::python_quote(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rivals_of_one_length_order_by_what_follows_their_common_beginning() {
        let mut p = Paths::default();
        let m = p.root("m".into());
        let shards = p.named(m, &"shards".into(), NameStyle::Attr).unwrap();
        let (s3, s5) = (p.child(shards, Seg::Index(3)), p.child(shards, Seg::Index(5)));
        let a = p.named(s5, &"ab".into(), NameStyle::Attr).unwrap();
        let b = p.named(s3, &"zz".into(), NameStyle::Attr).unwrap();
        let other = p.root("n".into());
        let c = p.named(other, &"shards".into(), NameStyle::Attr).unwrap();
        let c = p.child(c, Seg::Index(0));
        let c = p.named(c, &"aa".into(), NameStyle::Attr).unwrap();
        assert_eq!(
            (p.text(a), p.text(b), p.text(c)),
            ("m.shards[5].ab".into(), "m.shards[3].zz".into(), "n.shards[0].aa".into())
        );
        assert!(p.cmp(b, a).is_lt() && p.cmp(a, b).is_gt() && p.cmp(a, c).is_lt() && p.cmp(c, b).is_gt());
    }

    #[test]
    fn a_path_has_one_fingerprint_in_every_scan() {
        let make = |p: &mut Paths, extra: bool| {
            let m = p.root("__main__".into());
            if extra {
                p.named(m, &"noise".into(), NameStyle::Attr);
            }
            let r = p.named(m, &"REGISTRY".into(), NameStyle::Attr).unwrap();
            let k = p.named(r, &"jobs".into(), NameStyle::Key).unwrap();
            (
                p.child(k, Seg::Index(7)),
                p.child(k, Seg::Member(7)),
                p.named(r, &"jobs".into(), NameStyle::Attr).unwrap(),
            )
        };
        let (mut one, mut two) = (Paths::default(), Paths::default());
        let (a1, b1, c1) = make(&mut one, false);
        let (a2, b2, c2) = make(&mut two, true);
        assert_eq!(one.fingerprint(a1), two.fingerprint(a2));
        assert_eq!(one.fingerprint(b1), two.fingerprint(b2));
        assert_eq!(one.fingerprint(c1), two.fingerprint(c2));
        // `[7]` and `{#7}`, `["jobs"]` and `.jobs`: written differently, told apart.
        let fps = [one.fingerprint(a1), one.fingerprint(b1), one.fingerprint(c1)];
        assert!(fps[0] != fps[1] && fps[1] != fps[2] && fps[0] != fps[2]);
    }

    #[test]
    fn path_formatting() {
        let mut p = Paths::default();
        let m = p.root("m".into());
        let x = p.named(m, &"x".into(), NameStyle::Attr).unwrap();
        let odd = p.named(m, &"a b".into(), NameStyle::Attr).unwrap();
        assert_eq!((p.text(x), p.text(odd)), ("m.x".to_string(), "m[\"a b\"]".to_string()));
        assert_eq!(p.named(m, &"__dict__".into(), NameStyle::Attr), None);
        let items = p.child(x, Seg::Index(3));
        let member = p.child(items, Seg::Member(1));
        let local = p.named(member, &"é x".into(), NameStyle::Root).unwrap();
        let tb = p.child(local, Seg::Field(".__traceback__"));
        let cell = p.child(tb, Seg::Closure("f".into()));
        let nth = p.child(cell, Seg::NthKey(2));
        let big = p.child(nth, Seg::Index(1_000_000));
        let zero = p.child(big, Seg::Member(0));
        let key = p.named(nth, &"k".into(), NameStyle::Key).unwrap();
        let text = p.text(key);
        assert!(text.starts_with("m.x[3]{#1} → \"é x\".__traceback__<closure>.f[#2][<str #"), "{text}");
        // Every part's length is the length of its path written out.
        for id in [m, x, odd, items, member, local, tb, cell, nth, key, big, zero] {
            assert_eq!(p.len(id) as usize, p.text(id).len(), "{}", p.text(id));
        }
        assert_eq!(p.cmp(x, odd), std::cmp::Ordering::Less);
        // Compared without writing them whole, paths order as their texts do.
        let all = [m, x, odd, items, member, local, tb, cell, nth, key, big, zero];
        for a in all {
            for b in all {
                let by_text = p.len(a).cmp(&p.len(b)).then_with(|| p.text(a).cmp(&p.text(b)));
                assert_eq!(p.cmp(a, b), by_text, "{} vs {}", p.text(a), p.text(b));
            }
        }
        assert_eq!(p.cmp(items, x), std::cmp::Ordering::Greater);
        assert_eq!(quote("q\"\n"), "\"q\\\"\\x0a\"");
        assert!(is_identifier("_a1") && is_identifier("é") && !is_identifier("1a") && !is_identifier(""));
        assert!(is_dunder("__builtins__") && !is_dunder("__") && !is_dunder("_x_"));
        assert!(module_name_ok("a.b_c") && !module_name_ok("a..b") && !module_name_ok(""));
    }
}
