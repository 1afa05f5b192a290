//! The import-cycle check of `cargo xtask lint`: no module of a crate may depend, through
//! `crate::` paths, on a module that depends back on it. A module's tests (`#[cfg(test)] mod
//! tests { ... }` at its end) do not count, nor do a module's own submodules and parents.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// Module name (`session::driver`, `crate` for main.rs/lib.rs) -> its source, tests cut off.
fn modules(src: &Path) -> Result<BTreeMap<String, String>> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src)?.with_extension("");
            let mut parts: Vec<String> =
                rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let name = match parts.as_slice() {
                [] => "crate".to_string(),
                [one] if one == "main" || one == "lib" => "crate".to_string(),
                _ => parts.join("::"),
            };
            let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            found.insert(name, without_tests(&text).to_string());
        }
    }
    Ok(found)
}

/// The source up to its `#[cfg(test)] mod tests` block.
fn without_tests(text: &str) -> &str {
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]") {
        let start = from + at;
        let rest = text[start + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod tests") {
            return &text[..start];
        }
        from = start + 1;
    }
    text
}

/// Every `crate::a::b::c` path in `text`, as its segments.
fn crate_paths(text: &str) -> Vec<Vec<&str>> {
    let mut paths = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `$crate::` or an identifier ending in "crate"
        }
        let mut segments = Vec::new();
        let mut rest = &text[at + "crate::".len()..];
        loop {
            let len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            if len == 0 {
                break;
            }
            segments.push(&rest[..len]);
            rest = &rest[len..];
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => break,
            }
        }
        paths.push(segments);
    }
    paths
}

/// Import cycles among the modules of the crate at `src` (each sorted; empty when none).
pub fn find(src: &Path) -> Result<Vec<Vec<String>>> {
    let mods = modules(src)?;
    let owner = |segments: &[&str]| -> Option<String> {
        (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|name| mods.contains_key(name))
    };
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, text) in &mods {
        let out = edges.entry(name).or_default();
        if name == "crate" {
            continue;
        }
        for path in crate_paths(text) {
            let Some(to) = owner(&path) else { continue };
            let nested = to.starts_with(&format!("{name}::")) || name.starts_with(&format!("{to}::"));
            if to != *name && to != "crate" && !nested {
                out.insert(to);
            }
        }
    }
    Ok(strongly_connected(&edges).into_iter().filter(|c| c.len() > 1).collect())
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &BTreeMap<&str, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<&'a str, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on_stack: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    fn visit(s: &mut State, v: &str) {
        let n = s.index.len();
        s.index.insert(v.to_string(), n);
        s.low.insert(v.to_string(), n);
        s.stack.push(v.to_string());
        s.on_stack.insert(v.to_string());
        let next: Vec<String> = s.edges.get(v).map(|e| e.iter().cloned().collect()).unwrap_or_default();
        for w in next {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let low = s.low[v].min(s.low[&w]);
                s.low.insert(v.to_string(), low);
            } else if s.on_stack.contains(&w) {
                let low = s.low[v].min(s.index[&w]);
                s.low.insert(v.to_string(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(*v) {
            visit(&mut state, v);
        }
    }
    state.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempdir::Dir {
        let dir = tempdir::Dir::new();
        for (path, text) in files {
            let p = dir.0.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        dir
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                let p = std::env::temp_dir().join(format!("xtask-cycles-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn a_cycle_is_found_and_tests_parents_and_children_do_not_count() {
        let d = tree(&[
            ("main.rs", "mod a; mod b; mod c;"),
            ("a.rs", "use crate::b::thing;"),
            ("b.rs", "use crate::a::other;\n#[cfg(test)]\nmod tests { use crate::c::x; }"),
            ("c/mod.rs", "use crate::c::inner::y; use crate::a;"),
            ("c/inner.rs", "use crate::c::z;"),
        ]);
        assert_eq!(find(&d.0).unwrap(), vec![vec!["a".to_string(), "b".to_string()]]);
    }

    #[test]
    fn no_cycle_is_no_cycle() {
        let d = tree(&[("main.rs", "mod a; mod b;"), ("a.rs", "use crate::b::thing;"), ("b.rs", "fn f() {}")]);
        assert!(find(&d.0).unwrap().is_empty());
    }
}
