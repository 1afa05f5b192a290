//! The speedscope file format (https://www.speedscope.app/file-format-schema.json): a shared
//! frames table and one "sampled" profile whose samples are stacks (root first) weighted by
//! outstanding bytes.

use std::collections::HashMap;
use std::io::Write;

use serde::Serialize;

use super::{Selection, NO_STACK};
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
        Frame::Python { function, file, line } => {
            SsFrame { name: function.clone(), file: Some(file.clone()), line: Some(*line) }
        }
        // A module is no source file: keep it in the name, as the other formats do.
        Frame::Native { .. } => SsFrame { name: frame.label(), file: None, line: None },
    }
}

fn named(name: String) -> SsFrame {
    SsFrame { name, file: None, line: None }
}

pub(super) fn write(reports: &[Report], selection: &Selection<'_>, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut frames = Frames::default();
    let mut samples = Vec::new();
    let mut weights = Vec::new();
    for sample in &selection.samples {
        let bytes = sample.suspect.outstanding_bytes;
        if bytes == 0 {
            continue;
        }
        let mut stack = Vec::with_capacity(sample.suspect.stack.len() + 1);
        if let Some(pid) = sample.pid {
            stack.push(frames.id(named(format!("pid {pid}"))));
        }
        if sample.suspect.stack.is_empty() {
            stack.push(frames.id(named(NO_STACK.to_string())));
        }
        for frame in sample.suspect.stack.iter().rev() {
            stack.push(frames.id(ss_frame(frame)));
        }
        samples.push(stack);
        weights.push(bytes);
    }
    let pids: Vec<String> = reports.iter().map(|r| r.target.pid.to_string()).collect();
    let name = match pids.len() {
        1 => format!("outstanding memory (pid {})", pids[0]),
        _ => format!("outstanding memory (pids {})", pids.join(", ")),
    };
    let file = File {
        schema: SCHEMA,
        shared: Shared { frames: frames.table },
        profiles: vec![Profile {
            kind: "sampled",
            name: name.clone(),
            unit: "bytes",
            start_value: 0,
            end_value: weights.iter().fold(0, |sum: u64, w| sum.saturating_add(*w)),
            samples,
            weights,
        }],
        name,
        active_profile_index: 0,
        exporter: "tracer",
    };
    serde_json::to_writer_pretty(&mut *out, &file)?;
    out.write_all(b"\n")?;
    Ok(())
}
