//! Exporters: one file per format behind one `write(format, &Report, opts, out)`.
//!
//! They only format. What is a leak is decided elsewhere (`leaks`) and arrives here as each
//! suspect's `verdict`, `score` and `reason`; nothing in this module second-guesses it. The one
//! choice made here is which stacks a flame format draws (see [`ExportOptions`]), and that choice
//! is made from the verdicts (and, when nothing leaks or grows, from outstanding bytes).

use std::io::Write;
use std::path::Path;

use crate::report::{Frame, MultiReport, Report, Reports, Suspect};

mod folded;
mod json;
mod leaf;
mod paths;
mod people;
mod pprof;
pub mod prometheus;
mod speedscope;
mod svg;
mod text;

#[cfg(test)]
mod tests;

/// An output format. `text` is the default of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The human report.
    Text,
    /// The JSON contract (`"schema": 1`); `tracer report` reads it back.
    Json,
    /// Brendan Gregg's collapsed stacks, weighted by outstanding bytes.
    Folded,
    /// A flame graph of outstanding bytes (inferno).
    Svg,
    /// Gzipped profile.proto with alloc_objects/alloc_space/inuse_objects/inuse_space.
    Pprof,
    /// The speedscope file format.
    Speedscope,
}

impl Format {
    /// Every format, in the order the command line documents them.
    pub const ALL: [Format; 6] =
        [Format::Text, Format::Json, Format::Folded, Format::Svg, Format::Pprof, Format::Speedscope];

    /// The name `-f` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Folded => "folded",
            Format::Svg => "svg",
            Format::Pprof => "pprof",
            Format::Speedscope => "speedscope",
        }
    }

    /// Parses a `-f` value: `text`, `json`, `folded`, `svg`, `pprof` or `speedscope`.
    pub fn parse(s: &str) -> Result<Format, String> {
        let wanted = s.trim().to_ascii_lowercase();
        Format::ALL.into_iter().find(|f| f.name() == wanted).ok_or_else(|| {
            let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
            format!("unknown format {s:?}: expected one of {}", names.join(", "))
        })
    }

    /// The format an output path asks for by its extension, if it is one we know:
    /// `.speedscope.json`, `.json`, `.folded`, `.svg`, `.pb.gz`, `.pprof`, `.txt`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        // Longest suffix first: `.speedscope.json` is also a `.json`.
        const SUFFIXES: [(&str, Format); 7] = [
            (".speedscope.json", Format::Speedscope),
            (".json", Format::Json),
            (".folded", Format::Folded),
            (".svg", Format::Svg),
            (".pb.gz", Format::Pprof),
            (".pprof", Format::Pprof),
            (".txt", Format::Text),
        ];
        SUFFIXES
            .into_iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix))
            .map(|(_, format)| format)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        Format::parse(s)
    }
}

/// What to include.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Flame formats (folded, svg, speedscope): `false` draws only the stacks whose verdict is
    /// `leak` or `growing`, or, when there are none, the `top` stacks by outstanding bytes;
    /// `true` draws every stack of the report. JSON and pprof always carry every stack (pprof
    /// labels each sample with its `verdict`, so `-tagfocus verdict=leak` narrows it).
    pub all_stacks: bool,
    /// How many suspects the text report shows in detail (and per section), and how many stacks
    /// the flame formats draw when nothing leaks. Taken literally: 0 shows none.
    pub top: usize,
    /// pprof and speedscope: keep the native allocating frame as the leaf, as recorded. By
    /// default the innermost Python frame is the leaf and gets the flat bytes (see `leaf.rs`).
    pub native_leaf: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { all_stacks: false, top: 10, native_leaf: false }
    }
}

/// Writes one process's report in `format`.
pub fn write(format: Format, report: &Report, opts: &ExportOptions, out: &mut dyn Write) -> anyhow::Result<()> {
    let reports = std::slice::from_ref(report);
    match format {
        Format::Text => text::write(&people::report(report), opts, out),
        Format::Json => json::write(report, out),
        Format::Folded => folded::write(&Selection::new(reports, false, opts), out),
        Format::Svg => svg::write(reports, &Selection::new(reports, false, opts), out),
        Format::Speedscope => speedscope::write(reports, &Selection::new(reports, false, opts), opts, out),
        Format::Pprof => pprof::write(reports, false, opts, out),
    }
}

/// Writes the reports of several processes in `format`: JSON is the `MultiReport` as-is, text has
/// one section per process (`== PID 123: <cmdline> ==`), folded and svg put each process under a
/// root frame `pid 123`, speedscope gives each process its own profile, and pprof labels each
/// sample with `pid`.
pub fn write_multi(
    format: Format,
    multi: &MultiReport,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let reports = multi.processes.as_slice();
    match format {
        Format::Text => {
            let processes = multi.processes.iter().map(people::report).collect();
            text::write_multi(&MultiReport { processes, ..multi.clone() }, opts, out)
        }
        Format::Json => json::write(multi, out),
        Format::Folded => folded::write(&Selection::new(reports, true, opts), out),
        Format::Svg => svg::write(reports, &Selection::new(reports, true, opts), out),
        Format::Speedscope => speedscope::write(reports, &Selection::new(reports, true, opts), opts, out),
        Format::Pprof => pprof::write(reports, true, opts, out),
    }
}

/// Writes one report or several (`write` or `write_multi`).
pub fn write_reports(
    format: Format,
    reports: &Reports,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match reports {
        Reports::One(r) => write(format, r, opts, out),
        Reports::Many(m) => write_multi(format, m, opts, out),
    }
}

/// One stack a flame format draws.
#[derive(Debug, Clone, Copy)]
struct Sample<'a> {
    /// The process, when several are exported together (it becomes the root frame `pid N`).
    pid: Option<u32>,
    /// The report the stack belongs to.
    report: &'a Report,
    suspect: &'a Suspect,
}

impl Sample<'_> {
    /// Frame labels root first, with the `pid N` root in a multi-process export. A suspect with no
    /// frames is drawn as one `[no stack]` frame so its bytes are still accounted for.
    fn labels_root_first(&self) -> Vec<String> {
        let mut labels = Vec::with_capacity(self.suspect.stack.len() + 1);
        if let Some(pid) = self.pid {
            labels.push(format!("pid {pid}"));
        }
        if self.suspect.stack.is_empty() {
            labels.push(NO_STACK.to_string());
        }
        labels.extend(self.suspect.stack.iter().rev().map(Frame::label));
        labels
    }
}

const NO_STACK: &str = "[no stack]";

/// Which stacks the flame formats draw, and why.
#[derive(Debug)]
struct Selection<'a> {
    samples: Vec<Sample<'a>>,
    chosen: Chosen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chosen {
    /// Every stack (`--all-stacks`).
    All,
    /// The leak and growing stacks.
    Growing,
    /// Nothing leaks or grows: the `top` largest stacks.
    Largest(usize),
}

impl<'a> Selection<'a> {
    /// With several processes the choice is made over all of them: if any process has a `leak`
    /// or `growing` stack, only those are drawn; otherwise the `top` largest stacks overall.
    fn new(reports: &'a [Report], multi: bool, opts: &ExportOptions) -> Selection<'a> {
        let all = reports.iter().flat_map(|r| {
            let pid = multi.then_some(r.target.pid);
            r.suspects.iter().map(move |suspect| Sample { pid, report: r, suspect })
        });
        if opts.all_stacks {
            return Selection { samples: all.collect(), chosen: Chosen::All };
        }
        let growing: Vec<Sample<'a>> = all.clone().filter(|s| s.suspect.verdict.is_growing()).collect();
        if !growing.is_empty() {
            return Selection { samples: growing, chosen: Chosen::Growing };
        }
        let mut samples: Vec<Sample<'a>> = all.collect();
        // Stable: equal sizes keep the report's rank order.
        samples.sort_by_key(|s| std::cmp::Reverse(s.suspect.outstanding_bytes));
        samples.truncate(opts.top);
        Selection { samples, chosen: Chosen::Largest(opts.top) }
    }
}
