//! The speedscope file format (its 1.25 schema, `file-format-schema.json` in the speedscope
//! package): a shared frames table and one "sampled" profile per process, whose samples are
//! stacks (root first) weighted by outstanding bytes. The innermost Python frame is the leaf
//! (see `leaf.rs`), so the Sandwich view's self column names Python lines; `--native-leaf` keeps
//! the native allocating frame on top.

use std::collections::HashMap;
use std::io::Write;

use serde::Serialize;

use super::leaf::profile_stack;
use super::{ExportOptions, Selection};
use crate::report::{Frame, Report};

const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Serialize)]
struct File {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared,
    profiles: Vec<Profile>,
    name: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    exporter: &'static str,
}

#[derive(Serialize)]
struct Shared {
    frames: Vec<SsFrame>,
}

#[derive(Serialize, Clone, PartialEq, Eq, Hash)]
struct SsFrame {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

#[derive(Serialize)]
struct Profile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
}

/// The frames table: each distinct frame once, numbered in order of first use.
#[derive(Default)]
struct Frames {
    table: Vec<SsFrame>,
    index: HashMap<SsFrame, usize>,
}

impl Frames {
    fn id(&mut self, frame: SsFrame) -> usize {
        if let Some(&id) = self.index.get(&frame) {
            return id;
        }
        let id = self.table.len();
        self.table.push(frame.clone());
        self.index.insert(frame, id);
        id
    }
}

fn ss_frame(frame: &Frame) -> SsFrame {
    match frame {
        Frame::Python { function, file, line, .. } => {
            SsFrame { name: function.clone(), file: Some(file.clone()), line: Some(*line) }
        }
        // A module is no source file: keep it in the name, as the other formats do.
        Frame::Native { .. } => SsFrame { name: frame.label(), file: None, line: None },
    }
}

/// `outstanding memory: pid 4242 python3 app.py`.
fn profile_name(report: &Report) -> String {
    let t = &report.target;
    let command = if t.cmdline.is_empty() { &t.exe } else { &t.cmdline };
    let mut name = if command.is_empty() {
        format!("outstanding memory: pid {}", t.pid)
    } else {
        format!("outstanding memory: pid {} {command}", t.pid)
    };
    if let Some(i) = &report.inconclusive {
        name.push_str(&format!(" ({})", i.reason));
    }
    name
}

pub(super) fn write(
    reports: &[Report],
    selection: &Selection<'_>,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut frames = Frames::default();
    let mut profiles = Vec::with_capacity(reports.len());
    for report in reports {
        let mut samples = Vec::new();
        let mut weights = Vec::new();
        let drawn = selection.samples.iter().filter(|s| std::ptr::eq(s.report, report));
        for sample in drawn {
            let bytes = sample.suspect.outstanding_bytes;
            if bytes == 0 {
                continue;
            }
            let stack = profile_stack(sample.suspect, opts.native_leaf);
            let mut ids: Vec<usize> = stack.frames.iter().rev().map(|f| frames.id(ss_frame(f))).collect();
            if ids.is_empty() {
                ids.push(frames.id(SsFrame { name: stack.placeholder.to_string(), file: None, line: None }));
            }
            samples.push(ids);
            weights.push(bytes);
        }
        profiles.push(Profile {
            kind: "sampled",
            name: profile_name(report),
            unit: "bytes",
            start_value: 0,
            end_value: weights.iter().fold(0, |sum: u64, w| sum.saturating_add(*w)),
            samples,
            weights,
        });
    }
    let name = match reports {
        [r] => profile_name(r),
        _ => {
            let pids: Vec<String> = reports.iter().map(|r| r.target.pid.to_string()).collect();
            format!("outstanding memory: pids {}", pids.join(", "))
        }
    };
    // Open on the first process that has something drawn.
    let active_profile_index = profiles.iter().position(|p| !p.samples.is_empty()).unwrap_or(0);
    let file = File {
        schema: SCHEMA,
        shared: Shared { frames: frames.table },
        profiles,
        name,
        active_profile_index,
        exporter: "tracer",
    };
    serde_json::to_writer_pretty(&mut *out, &file)?;
    out.write_all(b"\n")?;
    Ok(())
}
