//! Names for native return addresses (the C function that called the allocator), through
//! blazesym, cached per address. Must run while the target is alive.
//!
//! One `Symbolizer` serves every traced process (the caller owns it): blazesym keys its parsed
//! files by device and inode, so 20 processes of one interpreter parse its libpython once
//! instead of 20 times (about 25 MiB each).

use std::collections::HashMap;

use blazesym::symbolize::{
    source::{Process, Source},
    Input, Symbolized, Symbolizer,
};

use crate::procfs::MapEntry;
use crate::report::Frame;

pub struct NativeSymbols {
    pid: u32,
    cache: HashMap<u64, Frame>,
    maps: Vec<MapEntry>,
}

fn module_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

impl NativeSymbols {
    pub fn new(pid: u32) -> Self {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map(|t| crate::procfs::parse_maps(&t))
            .unwrap_or_default();
        Self { pid, cache: HashMap::new(), maps }
    }

    /// Symbolizes one address in every executable mapping once, so that the symbol tables are
    /// parsed before the target runs (launch mode) rather than while new stacks wait.
    pub fn warmed_up(pid: u32, symbolizer: &Symbolizer) -> Self {
        let mut s = Self::new(pid);
        let starts: Vec<u64> =
            s.maps.iter().filter(|m| m.perms.contains('x') && m.path.is_some()).map(|m| m.start).collect();
        for start in starts {
            s.lookup(symbolizer, start + 1);
        }
        s
    }

    pub fn frame(&mut self, symbolizer: &Symbolizer, ip: u64) -> Frame {
        if let Some(f) = self.cache.get(&ip) {
            return f.clone();
        }
        let frame = self.lookup(symbolizer, ip);
        self.cache.insert(ip, frame.clone());
        frame
    }

    fn mapping(&mut self, ip: u64) -> Option<MapEntry> {
        let find = |maps: &[MapEntry]| maps.iter().find(|m| ip >= m.start && ip < m.end).cloned();
        if let Some(m) = find(&self.maps) {
            return Some(m);
        }
        // A library loaded after we started (dlopen): refresh once.
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)) {
            self.maps = crate::procfs::parse_maps(&t);
        }
        find(&self.maps)
    }

    fn lookup(&mut self, symbolizer: &Symbolizer, ip: u64) -> Frame {
        let mapping = self.mapping(ip);
        let module =
            mapping.as_ref().and_then(|m| m.path.as_deref()).map(module_name).unwrap_or_else(|| "[anon]".into());
        let mut process = Process::new(self.pid.into());
        process.debug_syms = false;
        process.perf_map = false;
        let src = Source::Process(process);
        // The return address points after the call: look up the call instruction itself.
        let addr = ip.saturating_sub(1);
        if let Ok(Symbolized::Sym(sym)) = symbolizer.symbolize_single(&src, Input::AbsAddr(addr)) {
            return Frame::Native { function: sym.name.to_string(), module };
        }
        let offset = mapping.map(|m| ip - m.start + m.offset).unwrap_or(ip);
        Frame::Native { function: format!("[unknown] {module}+0x{offset:x}"), module }
    }
}
