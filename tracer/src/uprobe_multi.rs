//! uprobe_multi links (Linux 6.6+) and session uprobes (6.13+). A session program runs at a
//! function's entry and, only when the entry returns 0, at its return: in sampled mode an
//! unsampled call then costs one trap instead of two (a classic return probe traps at every
//! return whatever its program decides). Entry-only programs (free, munmap) go through the same
//! kind of link: the kernel's per-hit filter for these is a pointer compare, where a
//! perf-event uprobe takes a lock.
//!
//! aya 0.14 can neither load a program with the expected attach type a session link needs nor
//! create such a link, so this module does both with bpf(2): it takes the programs' instructions
//! from the same embedded object, relocated against the maps aya already created (so they
//! share every map and global), and keeps the program and link file descriptors. Closing a
//! link's descriptor detaches it, as for aya's links.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
/// `enum bpf_attach_type`: BPF_TRACE_UPROBE_MULTI, and BPF_TRACE_UPROBE_SESSION (after
/// BPF_TRACE_KPROBE_SESSION = 56).
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
const BPF_TRACE_UPROBE_SESSION: u32 = 57;

/// How a program runs: at the entry only, or at the entry and (when it asks) the return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Entry,
    Session,
}

impl Mode {
    fn attach_type(self) -> u32 {
        match self {
            Mode::Entry => BPF_TRACE_UPROBE_MULTI,
            Mode::Session => BPF_TRACE_UPROBE_SESSION,
        }
    }
}

/// The head of `union bpf_attr` for BPF_PROG_LOAD (the rest stays zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE with its `uprobe_multi` member.
#[repr(C)]
#[derive(Default)]
struct UprobeMultiLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The session programs, loaded and verified.
pub struct SessionPrograms {
    programs: HashMap<String, (OwnedFd, Mode)>,
}

impl SessionPrograms {
    /// Loads `names` from `object`, relocated against `maps` (name -> fd of the map aya made).
    pub fn load(object: &[u8], maps: &HashMap<String, RawFd>, names: &[(&str, Mode)]) -> Result<Self> {
        let mut obj = aya_obj::Object::parse(object).context("parsing the BPF object")?;
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        let defs = obj.maps.clone();
        let mut relocations = Vec::new();
        for (name, def) in &defs {
            let fd = maps.get(name).with_context(|| format!("no file descriptor for BPF map {name}"))?;
            relocations.push((name.as_str(), *fd, def));
        }
        obj.relocate_maps(relocations.into_iter(), &text_sections).context("relocating map references")?;
        obj.relocate_calls(&text_sections).context("relocating calls")?;
        let mut code = Vec::new();
        for &(name, mode) in names {
            let program = obj.programs.get(name).with_context(|| format!("no BPF program {name}"))?;
            let function = obj.functions.get(&program.function_key()).with_context(|| format!("no code for {name}"))?;
            code.push((name, mode, &function.instructions, &program.license));
        }
        // The verifier takes ~50-150 ms per program that walks stacks: verify on every CPU.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(code.len().max(1));
        let loaded: Vec<Result<(String, OwnedFd, Mode)>> = std::thread::scope(|scope| {
            let chunks: Vec<_> = code.chunks(code.len().div_ceil(threads).max(1)).collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|(name, mode, insns, license)| {
                                Ok((name.to_string(), load_program(name, insns, license, *mode)?, *mode))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        let mut programs = HashMap::new();
        for result in loaded {
            let (name, fd, mode) = result?;
            programs.insert(name, (fd, mode));
        }
        if programs.len() != names.len() {
            bail!("a program loading thread failed");
        }
        Ok(Self { programs })
    }

    /// Attaches `program` at `offset` of the file at `path`, in process `pid` only. The link
    /// lives as long as the returned descriptor.
    pub fn attach(&self, program: &str, path: &Path, offset: u64, pid: u32) -> Result<OwnedFd> {
        let (prog, mode) = self.programs.get(program).with_context(|| format!("no session program {program}"))?;
        let path_c = CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")?;
        let offsets = [offset];
        let mut attr = UprobeMultiLinkAttr {
            prog_fd: std::os::fd::AsRawFd::as_raw_fd(prog) as u32,
            attach_type: mode.attach_type(),
            path: path_c.as_ptr() as u64,
            offsets: offsets.as_ptr() as u64,
            cnt: 1,
            pid,
            ..Default::default()
        };
        bpf(BPF_LINK_CREATE, &mut attr)
            .with_context(|| format!("creating a session uprobe link for {program} on {}", path.display()))
    }
}

fn load_program(name: &str, insns: &[aya_obj::generated::bpf_insn], license: &CString, mode: Mode) -> Result<OwnedFd> {
    let mut prog_name = [0u8; 16];
    for (slot, byte) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte;
    }
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type: mode.attach_type(),
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 1 << 20];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let text = String::from_utf8_lossy(&log);
            let tail: Vec<&str> = text.trim_end_matches('\0').lines().rev().take(4).collect();
            bail!(
                "loading {name} as a {mode:?} uprobe_multi program: {first} ({})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            )
        }
    }
}
