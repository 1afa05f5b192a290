//! pprof: a gzipped profile.proto, as `go tool pprof`, Parca and Pyroscope read it.
//!
//! Sample types `alloc_objects/count`, `alloc_space/bytes`, `inuse_objects/count`,
//! `inuse_space/bytes` (the Go heap profile's), default `inuse_space`. One Location per distinct
//! frame, each with one Line pointing at a Function (one per Python function, starting at its
//! `def` line, so `-list` shows the whole function); sample locations leaf first, the innermost
//! Python line being the leaf unless `--native-leaf` (see `leaf.rs`). Every sample is labelled
//! with its `verdict`, `allocator` and `native_caller` (and `pid` when several processes are
//! exported), so `go tool pprof -tagfocus verdict=leak` shows the leaks alone. Every stack of
//! the report is included: a heap profile's totals should be the process's.

use std::collections::HashMap;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use super::leaf::profile_stack;
use super::ExportOptions;
use crate::report::{Frame, Report};

// The messages of google/pprof proto/profile.proto (package perftools.profiles), by hand, with
// the field numbers of that file. Fields we never set are left out except where a reader of this
// code would look for them.

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// `string_table[0]` is always "".
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
    #[prost(int64, tag = "3")]
    pub column: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// Builds the profile: string, function and location tables interned as they are met.
#[derive(Default)]
struct Builder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64, bool), u64>,
    locations: HashMap<Frame, u64>,
}

impl Builder {
    fn new() -> Builder {
        let mut b = Builder::default();
        b.string("");
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        let id = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), id);
        id
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType { r#type: self.string(kind), unit: self.string(unit) }
    }

    /// `system_name` is set only for native frames: pprof demangles (and, for names that look
    /// like C++, strips `<...>` and `(...)` from) functions whose name equals their system name,
    /// which would turn Python's `<module>`, `<lambda>` or `<listcomp>` into an empty name.
    fn function(&mut self, name: &str, filename: &str, start_line: i64, native: bool) -> u64 {
        let key = (self.string(name), self.string(filename), start_line, native);
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(Function {
            id,
            name: key.0,
            system_name: if native { key.0 } else { 0 },
            filename: key.1,
            start_line,
        });
        self.functions.insert(key, id);
        id
    }

    fn location(&mut self, frame: &Frame) -> u64 {
        if let Some(&id) = self.locations.get(frame) {
            return id;
        }
        let (function_id, line) = match frame {
            Frame::Python { function, file, line, def_line } => {
                // Unknown in older reports: 0 says so, rather than a line inside the body.
                let start = def_line.map_or(0, i64::from);
                (self.function(function, file, start, false), i64::from(*line))
            }
            Frame::Native { function, module } => (self.function(function, module, 0, true), 0),
        };
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id: MAPPING_ID,
            line: vec![Line { function_id, line, column: 0 }],
            ..Location::default()
        });
        self.locations.insert(frame.clone(), id);
        id
    }

    fn label(&mut self, key: &str, value: &str) -> Label {
        Label { key: self.string(key), str: self.string(value), ..Label::default() }
    }
}

/// One mapping for everything: frames are already symbolized (functions, files and lines), which
/// tells pprof not to look for binaries to symbolize them again.
const MAPPING_ID: u64 = 1;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn profile(reports: &[Report], multi: bool, opts: &ExportOptions) -> Profile {
    let mut b = Builder::new();
    b.profile.sample_type = vec![
        b.value_type("alloc_objects", "count"),
        b.value_type("alloc_space", "bytes"),
        b.value_type("inuse_objects", "count"),
        b.value_type("inuse_space", "bytes"),
    ];
    b.profile.default_sample_type = b.string("inuse_space");
    b.profile.period_type = Some(b.value_type("space", "bytes"));
    b.profile.period = reports.first().map_or(0, |r| to_i64(r.sample_bytes));
    let duration_s = reports.iter().map(|r| r.duration_s).fold(0.0, f64::max);
    // Saturating float-to-int conversions: NaN gives 0.
    b.profile.duration_nanos = (duration_s * 1e9) as i64;
    let started = reports.iter().filter_map(|r| r.started_unix_s).fold(f64::INFINITY, f64::min);
    if started.is_finite() && started > 0.0 {
        b.profile.time_nanos = (started * 1e9) as i64;
    }

    let main_exe = reports.first().map_or("python", |r| r.target.exe.as_str());
    let filename = b.string(main_exe);
    b.profile.mapping = vec![Mapping {
        id: MAPPING_ID,
        filename,
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        ..Mapping::default()
    }];

    for r in reports {
        let t = &r.target;
        let command = if t.cmdline.is_empty() { &t.exe } else { &t.cmdline };
        let mut comment = format!("tracer: pid {} python {} {command}", t.pid, t.python);
        if let Some(view) = r.final_view {
            comment.push_str(&format!(" (final view: {view})"));
        }
        let comment = b.string(&comment);
        b.profile.comment.push(comment);
        if let Some(i) = &r.inconclusive {
            let loss = b.string(&format!("tracer: pid {}: {}", t.pid, i.reason));
            b.profile.comment.push(loss);
        }
    }

    for r in reports {
        for suspect in &r.suspects {
            let stack = profile_stack(suspect, opts.native_leaf);
            let mut location_id: Vec<u64> = stack.frames.iter().map(|f| b.location(f)).collect();
            if location_id.is_empty() {
                let frame = Frame::Native { function: stack.placeholder.to_string(), module: String::new() };
                location_id.push(b.location(&frame));
            }
            let mut label = vec![b.label("verdict", suspect.verdict.as_str())];
            for (key, value) in &stack.labels {
                label.push(b.label(key, value));
            }
            if multi {
                label.push(b.label("pid", &r.target.pid.to_string()));
                // Interned once in the string table, however many samples carry it.
                if !r.target.cmdline.is_empty() {
                    label.push(b.label("cmdline", &r.target.cmdline));
                }
            }
            b.profile.sample.push(Sample {
                location_id,
                value: vec![
                    to_i64(suspect.allocs),
                    to_i64(suspect.alloc_bytes),
                    to_i64(suspect.outstanding_count),
                    to_i64(suspect.outstanding_bytes),
                ],
                label,
            });
        }
    }
    b.profile
}

pub(super) fn write(reports: &[Report], multi: bool, opts: &ExportOptions, out: &mut dyn Write) -> anyhow::Result<()> {
    let bytes = profile(reports, multi, opts).encode_to_vec();
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?;
    Ok(())
}
