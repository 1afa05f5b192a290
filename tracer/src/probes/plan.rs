//! What is attached where, as data: the probe set is listed once, here, with the allocators
//! taken from `tracer_ebpf::for_each_allocator!` (the same list the BPF programs are generated
//! from). `Probes` executes a plan and reads nothing else; the benchmark's variants
//! (`TRACER_PROBE_VARIANT`) are other plans. Why the probes sit where they do: docs/probes.md.

use anyhow::Result;
use tracer_ebpf::{programs, AllocKind};
use uprobe_multi::Mode;

use crate::error::user_error;
use crate::uprobe_multi;

/// The binary a probe goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Libc,
    /// The interpreter (the executable, or libpython when it is shared).
    Python,
}

/// How one function is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// An allocator's session program at its entry (one uprobe_multi session link, Linux 6.13+):
    /// the return traps only for the calls the entry records. If the link cannot be made, the
    /// allocator falls back to its classic pair.
    Session(AllocKind),
    /// A perf-event uprobe at the entry and a uretprobe (`ret`; None: no return probe at all,
    /// a benchmark variant). The entry stays at +0, where the return probe's breakpoint is.
    Classic { entry: &'static str, ret: Option<&'static str> },
    /// A program that needs no return (free, munmap), on the first instruction of the prologue
    /// the kernel emulates; through a uprobe_multi link (`multi`), else a perf-event uprobe.
    EntryOnly { program: &'static str, multi: bool },
    /// An entry-only perf-event uprobe in the interpreter, like `EntryOnly`. Optional: if it
    /// cannot be attached, the recording goes on and `without` says what is lost.
    Python { program: &'static str, without: &'static str },
}

/// One function and how it is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub binary: Binary,
    pub symbol: &'static str,
    pub attach: Attach,
}

impl Probe {
    /// Attached only while a probe window is open (`--window`): the allocators and free, the
    /// probes hit at every allocation. The rare ones (mmap, munmap, the interpreter's
    /// finalization) stay attached throughout.
    pub fn windowed(&self) -> bool {
        self.binary == Binary::Libc && !matches!(self.symbol, "mmap" | "munmap")
    }
}

/// Which of a plan's probes to attach (see `Probe::windowed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    All,
    /// The windowed ones only (a window opens).
    Windowed,
    /// All but the windowed ones (a process added while the window is shut).
    Steady,
}

impl Which {
    pub fn takes(self, probe: &Probe) -> bool {
        match self {
            Which::All => true,
            Which::Windowed => probe.windowed(),
            Which::Steady => !probe.windowed(),
        }
    }
}

/// Programs on kernel tracepoints, attached once at load (not per process): process lifecycle.
pub const TRACEPOINTS: [(&str, &str); 2] =
    [(programs::ON_FORK, "sched_process_fork"), (programs::ON_EXEC, "sched_process_exec")];

/// The libc functions that take memory back: their programs need no return value.
const RELEASES: [(&str, &str); 2] = [("munmap", programs::MUNMAP), ("free", programs::FREE)];

/// Everything attached to each traced process, plus the two settings that are not about where
/// a probe goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePlan {
    pub probes: Vec<Probe>,
    /// Entry-only probes move past a leading instruction the kernel would single-step (a
    /// second trap); false puts every probe at its function's first instruction.
    pub prologue_offsets: bool,
    /// The programs walk the Python stack; false registers targets without their interpreter,
    /// so every stack is native only.
    pub python_stacks: bool,
}

impl ProbePlan {
    /// The tracer as shipped. `has_sessions`: the kernel can load session programs (6.13+),
    /// so the allocators take session links and the entry-only probes uprobe_multi links.
    pub fn standard(has_sessions: bool) -> Self {
        let allocators = AllocKind::ALL.iter().map(|&kind| Probe {
            binary: Binary::Libc,
            symbol: kind.symbol(),
            attach: if has_sessions {
                Attach::Session(kind)
            } else {
                let p = kind.programs();
                Attach::Classic { entry: p.entry, ret: Some(p.ret) }
            },
        });
        let releases = RELEASES.iter().map(|&(symbol, program)| Probe {
            binary: Binary::Libc,
            symbol,
            attach: Attach::EntryOnly { program, multi: has_sessions },
        });
        let python = [
            Probe {
                binary: Binary::Python,
                symbol: "Py_FinalizeEx",
                attach: Attach::Python {
                    program: programs::PY_FINALIZE,
                    without: "leaks are read when the process exits",
                },
            },
            // `sys.exit()` in the main module ends in Py_Exit, which on 3.13+ finalizes through
            // the internal _Py_Finalize without passing Py_FinalizeEx. The program reports once.
            Probe {
                binary: Binary::Python,
                symbol: "Py_Exit",
                attach: Attach::Python {
                    program: programs::PY_FINALIZE,
                    without: "a sys.exit() is seen when the process exits",
                },
            },
        ];
        Self { probes: allocators.chain(releases).chain(python).collect(), prologue_offsets: true, python_stacks: true }
    }

    /// The plan a benchmark variant stands for: the standard one, changed only as each switch
    /// of `ProbeVariant` documents.
    pub fn for_variant(variant: ProbeVariant, has_sessions: bool) -> Self {
        let mut plan = Self::standard(has_sessions && !variant.bare && !variant.classic_returns);
        if variant.bare {
            plan.use_empty_programs();
        }
        if variant.no_returns {
            plan.drop_returns();
        }
        plan.prologue_offsets = !variant.entry_offsets;
        plan.python_stacks = !variant.no_python_stack;
        plan
    }

    /// `bare`: the empty programs at every attach point.
    fn use_empty_programs(&mut self) {
        for probe in &mut self.probes {
            probe.attach = match probe.attach {
                Attach::Session(_) | Attach::Classic { .. } => {
                    Attach::Classic { entry: programs::BARE_ENTER, ret: Some(programs::BARE_EXIT) }
                }
                Attach::EntryOnly { multi, .. } => Attach::EntryOnly { program: programs::BARE_ENTER, multi },
                Attach::Python { without, .. } => Attach::Python { program: programs::BARE_ENTER, without },
            };
        }
    }

    /// `no-returns`: the allocators' entry programs alone.
    fn drop_returns(&mut self) {
        for probe in &mut self.probes {
            probe.attach = match probe.attach {
                Attach::Session(kind) => Attach::Classic { entry: kind.programs().entry, ret: None },
                Attach::Classic { entry, .. } => Attach::Classic { entry, ret: None },
                other => other,
            };
        }
    }

    /// The programs loaded with bpf(2) for uprobe_multi links (uprobe_multi.rs), each once.
    pub fn multi_programs(&self) -> Vec<(&'static str, Mode)> {
        let mut names = Vec::new();
        for probe in &self.probes {
            let program = match probe.attach {
                Attach::Session(kind) => (kind.programs().session, Mode::Session),
                Attach::EntryOnly { program, multi: true } => (program, Mode::Entry),
                _ => continue,
            };
            if !names.contains(&program) {
                names.push(program);
            }
        }
        names
    }

    /// The programs attached as perf-event uprobes (aya loads these), each once. A session or
    /// uprobe_multi link that cannot be made falls back to one of these, loaded then.
    pub fn perf_event_programs(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for probe in &self.probes {
            let programs = match probe.attach {
                Attach::Classic { entry, ret } => [Some(entry), ret],
                Attach::EntryOnly { program, multi: false } | Attach::Python { program, .. } => [Some(program), None],
                Attach::Session(_) | Attach::EntryOnly { multi: true, .. } => continue,
            };
            for name in programs.into_iter().flatten() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }
}

/// What is attached, for the benchmark's before/after figures: `TRACER_PROBE_VARIANT`, a
/// comma-separated list of the switches below (not a user feature, so not a flag). Every
/// variant probes the same functions of the same process; `ProbePlan::for_variant` turns it
/// into a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeVariant {
    /// `bare`: empty programs at the same attach points, the bare cost of the probes (perf-event
    /// uprobes and uretprobes: an empty session program cannot skip its return).
    pub bare: bool,
    /// `entry-offsets`: every probe at its function's first instruction, without decoding the
    /// prologue.
    pub entry_offsets: bool,
    /// `no-python-stack`: the programs without the Python stack walk.
    pub no_python_stack: bool,
    /// `classic-returns`: perf-event uprobes and uretprobes even where session uprobes could
    /// skip a return.
    pub classic_returns: bool,
    /// `no-returns`: no return probes (allocations are then never recorded): what the traps
    /// cost if no call needed its return value.
    pub no_returns: bool,
}

impl ProbeVariant {
    pub const ENV: &'static str = "TRACER_PROBE_VARIANT";

    pub fn from_env() -> Result<Self> {
        let text = std::env::var(Self::ENV).unwrap_or_default();
        let variant = Self::parse(&text)?;
        if variant != Self::default() {
            log::warn!("{}={text}: a benchmark variant, not the tracer as shipped", Self::ENV);
        }
        Ok(variant)
    }

    fn parse(text: &str) -> Result<Self> {
        let mut variant = Self::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "standard" => {}
                "bare" => variant.bare = true,
                "entry-offsets" => variant.entry_offsets = true,
                "no-python-stack" => variant.no_python_stack = true,
                "no-returns" => variant.no_returns = true,
                "classic-returns" => variant.classic_returns = true,
                other => {
                    return Err(user_error(
                        format!("{}: `{other}` is not a probe variant", Self::ENV),
                        "use a comma-separated list of bare, entry-offsets, no-python-stack, no-returns, classic-returns (benchmarks only), or unset it",
                    ))
                }
            }
        }
        Ok(variant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc_symbols(plan: &ProbePlan) -> Vec<&'static str> {
        plan.probes.iter().filter(|p| p.binary == Binary::Libc).map(|p| p.symbol).collect()
    }

    #[test]
    fn standard_plan_attaches_every_allocator_exactly_once() {
        for has_sessions in [true, false] {
            let plan = ProbePlan::standard(has_sessions);
            let symbols = libc_symbols(&plan);
            for kind in AllocKind::ALL {
                assert_eq!(symbols.iter().filter(|s| **s == kind.symbol()).count(), 1, "{kind:?}");
            }
            let mut unique = symbols.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), symbols.len(), "a libc function probed twice: {symbols:?}");
            assert_eq!(symbols.len(), AllocKind::ALL.len() + 2, "the allocators, free and munmap");
        }
    }

    #[test]
    fn entry_only_probes_are_the_ones_that_need_no_return() {
        for has_sessions in [true, false] {
            let plan = ProbePlan::standard(has_sessions);
            for probe in &plan.probes {
                let is_allocator = AllocKind::ALL.iter().any(|k| k.symbol() == probe.symbol);
                let sees_return = match probe.attach {
                    Attach::Session(_) => true,
                    Attach::Classic { ret, .. } => ret.is_some(),
                    Attach::EntryOnly { .. } | Attach::Python { .. } => false,
                };
                assert_eq!(sees_return, is_allocator, "{probe:?}: only an allocator's return value matters");
            }
        }
    }

    #[test]
    fn windows_toggle_the_hot_probes_only() {
        for has_sessions in [true, false] {
            let plan = ProbePlan::standard(has_sessions);
            let windowed: Vec<_> = plan.probes.iter().filter(|p| p.windowed()).map(|p| p.symbol).collect();
            assert!(windowed.contains(&"malloc") && windowed.contains(&"free"), "{windowed:?}");
            assert_eq!(windowed.len(), AllocKind::ALL.len(), "every allocator but mmap, and free");
            for p in &plan.probes {
                assert_ne!(Which::Windowed.takes(p), Which::Steady.takes(p), "{p:?}");
                assert!(Which::All.takes(p));
            }
        }
    }

    #[test]
    fn sessions_decide_the_link_kind_only() {
        let with = ProbePlan::standard(true);
        let without = ProbePlan::standard(false);
        assert_eq!(with.probes.len(), without.probes.len());
        for (a, b) in with.probes.iter().zip(&without.probes) {
            assert_eq!((a.binary, a.symbol), (b.binary, b.symbol));
            match (a.attach, b.attach) {
                (Attach::Session(kind), Attach::Classic { entry, ret }) => {
                    assert_eq!((entry, ret), (kind.programs().entry, Some(kind.programs().ret)));
                }
                (Attach::EntryOnly { program: p, multi: true }, Attach::EntryOnly { program: q, multi: false }) => {
                    assert_eq!(p, q)
                }
                (x, y) => assert_eq!(x, y),
            }
        }
        assert!(without.multi_programs().is_empty());
        assert_eq!(with.multi_programs().len(), AllocKind::ALL.len() + 2);
        assert_eq!(with.perf_event_programs(), [programs::PY_FINALIZE]);
    }

    #[test]
    fn no_switch_is_the_standard_plan() {
        for has_sessions in [true, false] {
            assert_eq!(
                ProbePlan::for_variant(ProbeVariant::default(), has_sessions),
                ProbePlan::standard(has_sessions)
            );
        }
        assert_eq!(ProbeVariant::parse("standard").unwrap(), ProbeVariant::default());
    }

    fn variant(text: &str) -> ProbePlan {
        ProbePlan::for_variant(ProbeVariant::parse(text).unwrap(), true)
    }

    /// Every variant probes the same functions of the same binaries.
    fn same_functions(plan: &ProbePlan) {
        let standard = ProbePlan::standard(true);
        let sites = |p: &ProbePlan| p.probes.iter().map(|p| (p.binary, p.symbol)).collect::<Vec<_>>();
        assert_eq!(sites(plan), sites(&standard));
    }

    #[test]
    fn bare_puts_empty_programs_on_perf_event_probes_only() {
        let plan = variant("bare");
        same_functions(&plan);
        assert!(plan.multi_programs().is_empty(), "an empty session program cannot skip its return");
        assert_eq!(plan.perf_event_programs(), [programs::BARE_ENTER, programs::BARE_EXIT]);
        assert!(plan.prologue_offsets && plan.python_stacks);
    }

    #[test]
    fn no_returns_keeps_the_entries_and_drops_every_return() {
        for text in ["no-returns", "bare,no-returns"] {
            let plan = variant(text);
            same_functions(&plan);
            for probe in &plan.probes {
                assert!(
                    !matches!(probe.attach, Attach::Session(_) | Attach::Classic { ret: Some(_), .. }),
                    "{probe:?}"
                );
            }
        }
        let plan = variant("no-returns");
        let malloc = plan.probes.iter().find(|p| p.symbol == "malloc").unwrap();
        assert_eq!(malloc.attach, Attach::Classic { entry: "malloc_enter", ret: None });
    }

    #[test]
    fn classic_returns_is_the_plan_without_sessions() {
        assert_eq!(variant("classic-returns"), ProbePlan::standard(false));
    }

    #[test]
    fn offsets_and_stack_switches_change_only_their_setting() {
        let standard = ProbePlan::standard(true);
        assert_eq!(variant("entry-offsets"), ProbePlan { prologue_offsets: false, ..standard.clone() });
        assert_eq!(variant("no-python-stack"), ProbePlan { python_stacks: false, ..standard });
    }

    #[test]
    fn an_unknown_switch_is_a_user_error() {
        let e = ProbeVariant::parse("bare,fast").unwrap_err();
        assert!(e.to_string().contains("`fast` is not a probe variant"), "{e}");
        assert_eq!(
            ProbeVariant::parse(" bare , entry-offsets ").unwrap(),
            ProbeVariant { bare: true, entry_offsets: true, ..Default::default() }
        );
    }
}
