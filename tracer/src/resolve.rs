//! Names raw stacks: the code objects of a stack's Python frames (read from the target's memory
//! while they are certainly alive) and the native caller of the allocator (symbols), into the
//! `StackKey` a person reads.

use std::collections::HashMap;

use tracer_ebpf::{AllocKind, StackTrace, UNKNOWN_STACK};

use crate::python::code::CodeResolver;
use crate::remote::ProcessMemory;
use crate::report::Frame;
use crate::stacks::StackKey;
use crate::symbolize::NativeSymbols;

/// How to name one traced process's frames.
struct ProcessNames {
    code: CodeResolver<ProcessMemory>,
    native: NativeSymbols,
    instance: u64,
}

pub struct Resolver {
    processes: HashMap<u32, ProcessNames>,
    /// Shared by every process's `NativeSymbols` (see `symbolize`).
    symbolizer: blazesym::symbolize::Symbolizer,
    /// The first process added, (pid, instance): a stack that could not be read names no
    /// process, and is counted in this one's section.
    first: Option<(u32, u64)>,
}

/// A raw stack named: its id, the stack a person reads, and whether the BPF side cut it short.
pub struct Named {
    pub id: u64,
    pub key: StackKey,
    pub truncated: bool,
}

impl Resolver {
    pub fn new() -> Self {
        Resolver { processes: HashMap::new(), symbolizer: blazesym::symbolize::Symbolizer::new(), first: None }
    }

    /// Starts naming the stacks of process `pid` (as `instance`). The first process's symbol
    /// tables are parsed now, before it runs (launch mode) rather than while new stacks wait;
    /// the processes added later mostly share its files, which the symbolizer keeps.
    pub fn add_process(&mut self, pid: u32, instance: u64, code: CodeResolver<ProcessMemory>) {
        let native = match self.first {
            None => NativeSymbols::warmed_up(pid, &self.symbolizer),
            Some(_) => NativeSymbols::new(pid),
        };
        self.first.get_or_insert((pid, instance));
        self.processes.insert(pid, ProcessNames { code, native, instance });
    }

    /// The process ended: its memory is gone.
    pub fn remove_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Whether the stacks of `pid` are named (it is traced and has not ended).
    pub fn knows(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Names raw stacks (`None`: the BPF side could not record or keep it): the Python frames of
    /// all of them first (their code objects may be freed soon after, e.g. a module body that
    /// finishes executing), native names after.
    pub fn name(&mut self, stacks: Vec<(u64, Option<StackTrace>)>) -> Vec<Named> {
        let with_python: Vec<(u64, Option<StackTrace>, Vec<Frame>)> = stacks
            .into_iter()
            .map(|(id, trace)| {
                let python = trace.as_ref().map(|t| self.python_frames(id, t)).unwrap_or_default();
                (id, trace, python)
            })
            .collect();
        with_python.into_iter().map(|(id, trace, python)| self.key(id, trace, python)).collect()
    }

    fn python_frames(&mut self, id: u64, t: &StackTrace) -> Vec<Frame> {
        let Some(process) = self.processes.get_mut(&t.tgid).filter(|p| p.instance == t.instance) else {
            return Vec::new();
        };
        let depth = (t.depth as usize).min(t.frames.len());
        if log::log_enabled!(log::Level::Trace) {
            log::trace!("stack {id:x}: {:x?}", &t.frames[..depth]);
        }
        t.frames[..depth].iter().filter_map(|raw| process.code.resolve(*raw)).collect()
    }

    fn key(&mut self, id: u64, trace: Option<StackTrace>, python: Vec<Frame>) -> Named {
        let Some(t) = trace else {
            let what =
                if id == UNKNOWN_STACK { "[stack not recorded: stack table full]" } else { "[stack not readable]" };
            let frames = vec![Frame::Native { function: what.into(), module: "tracer".into() }];
            let (pid, instance) = self.first.unwrap_or_default();
            return Named { id, key: StackKey { pid, instance, allocator: "unknown", frames }, truncated: false };
        };
        let allocator = AllocKind::from_raw(t.kind).map_or("unknown", AllocKind::symbol);
        let native = match self.processes.get_mut(&t.tgid).filter(|p| p.instance == t.instance) {
            Some(p) => p.native.frame(&self.symbolizer, t.native_ip),
            None => Frame::Native { function: format!("[unknown] 0x{:x}", t.native_ip), module: "?".into() },
        };
        let mut frames = Vec::with_capacity(python.len() + 1);
        frames.push(native);
        frames.extend(python);
        Named {
            id,
            key: StackKey { pid: t.tgid, instance: t.instance, allocator, frames },
            truncated: t.truncated != 0,
        }
    }
}
