//! Golden outputs for every format, built from one small hand-made report. Goldens live in
//! `tests/data/export/`; `UPDATE_GOLDEN=1 cargo test` rewrites them (then read the diff).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use prost::Message;

use super::*;
use crate::report::{Holder, MultiReport, TargetInfo, TimelinePoint, Totals, Verdict, SCHEMA};

macro_rules! golden {
    ($name:literal) => {
        ($name, include_str!(concat!("../../tests/data/export/", $name)))
    };
}

fn check(golden: (&str, &str), actual: &[u8]) {
    let (name, expected) = golden;
    let actual = std::str::from_utf8(actual).expect("output is UTF-8");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/export").join(name);
        std::fs::write(&path, actual).unwrap();
        return;
    }
    assert!(
        actual == expected,
        "output differs from golden {name} (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

/// A Python frame whose function starts at the line of its `def` in the hand-made app.py.
fn py(function: &str, file: &str, line: u32) -> Frame {
    let def_line = match function {
        "<module>" => 1,
        "leak_bytes" => 10,
        "cache_put" => 28,
        "handle" => 38,
        "register_callback" => 70,
        "read_body" => 88,
        _ => line,
    };
    Frame::Python { function: function.into(), file: file.into(), line, def_line: Some(def_line) }
}

fn native(function: &str, module: &str) -> Frame {
    Frame::Native { function: function.into(), module: module.into() }
}

#[expect(
    clippy::too_many_lines,
    reason = "the fixture report is one literal: a realistic report with every kind of field set"
)]
fn report() -> Report {
    let lost = BTreeMap::from([
        ("allocs_map_full".to_string(), 12),
        ("read_fault".to_string(), 0),
        ("stack_truncated".to_string(), 3),
    ]);
    Report {
        schema: SCHEMA,
        target: TargetInfo {
            pid: 4242,
            exe: "/usr/bin/python3.11".into(),
            python: "3.11.7".into(),
            libc: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            cmdline: "/usr/bin/python3.11 app.py".into(),
        },
        duration_s: 60.0,
        started_unix_s: Some(1_764_669_600.5),
        final_view: Some(crate::report::FinalView::Duration),
        totals: Totals {
            allocs: 120_345,
            frees: 118_000,
            outstanding_bytes: 13_002_342,
            outstanding_count: 2_345,
            lost,
            rss_bytes: Some(48_234_496),
        },
        suspects: vec![
            Suspect {
                rank: 1,
                verdict: Verdict::Leak,
                score: 0.97,
                outstanding_bytes: 4_299_161,
                outstanding_count: 1_024,
                allocs: 1_045,
                alloc_bytes: 4_390_000,
                live_fraction: 0.98,
                growth_bytes_per_s: 69_939.2,
                oldest_age_s: 59.8,
                allocator: "malloc".into(),
                reason: "+4.1 MiB over 60 s, 98% of 1,045 allocations still live, oldest 59.8 s".into(),
                tests: Vec::new(),
                // Innermost first: the native allocating call, then the Python line behind it.
                stack: vec![
                    native("PyByteArray_Resize", "python3.11"),
                    py("leak_bytes", "/srv/app.py", 12),
                    py("handle", "/srv/app.py", 40),
                    py("<module>", "/srv/app.py", 55),
                ],
            },
            Suspect {
                rank: 2,
                verdict: Verdict::Growing,
                score: 0.55,
                outstanding_bytes: 262_144,
                outstanding_count: 64,
                allocs: 80,
                alloc_bytes: 327_680,
                live_fraction: 0.8,
                growth_bytes_per_s: 2_048.0,
                oldest_age_s: 30.5,
                allocator: "calloc".into(),
                reason: String::new(),
                tests: Vec::new(),
                stack: vec![
                    py("register_callback", "/srv/app.py", 71),
                    py("handle", "/srv/app.py", 40),
                    py("<module>", "/srv/app.py", 55),
                ],
            },
            Suspect {
                rank: 3,
                verdict: Verdict::Bounded,
                score: 0.1,
                outstanding_bytes: 1_048_576,
                outstanding_count: 256,
                allocs: 5_000,
                alloc_bytes: 20_480_000,
                live_fraction: 0.0512,
                growth_bytes_per_s: 0.0,
                oldest_age_s: 55.0,
                allocator: "malloc".into(),
                reason: "grew to 1.0 MiB in 5 s, then flat for 55 s".into(),
                tests: Vec::new(),
                stack: vec![
                    py("cache_put", "/srv/app.py", 30),
                    py("handle", "/srv/app.py", 40),
                    py("<module>", "/srv/app.py", 55),
                ],
            },
            Suspect {
                rank: 4,
                verdict: Verdict::Stable,
                score: 0.0,
                outstanding_bytes: 0,
                outstanding_count: 0,
                allocs: 80_000,
                alloc_bytes: 800_000_000,
                live_fraction: 0.0,
                growth_bytes_per_s: 0.0,
                oldest_age_s: 0.0,
                allocator: "mmap".into(),
                reason: "allocated 762.9 MiB, all of it freed".into(),
                tests: Vec::new(),
                stack: vec![py("read_body", "/srv/app.py", 90), py("handle", "/srv/app.py", 40)],
            },
        ],
        holders: vec![
            Holder {
                path: "app.CACHE".into(),
                type_name: "dict".into(),
                len: 512,
                growth_per_s: 0.0,
                item_types: BTreeMap::from([("bytes".to_string(), 512)]),
                retained_bytes_est: 1_048_576,
                verdict: Verdict::Bounded,
                score: 0.1,
                reason: "reached 512 items at 5.0 s, flat since".into(),
                tests: Vec::new(),
                root: None,
                newest_items: Vec::new(),
                origin: None,
            },
            Holder {
                path: "__main__.FAILED_REQUESTS".into(),
                type_name: "list".into(),
                len: 2_835,
                growth_per_s: 141.7,
                item_types: BTreeMap::from([("ValueError".to_string(), 2_835)]),
                retained_bytes_est: 3_145_728,
                verdict: Verdict::Leak,
                score: 0.95,
                reason: "+2,835 items in 60.0 s, never shrank".into(),
                tests: Vec::new(),
                root: None,
                newest_items: Vec::new(),
                origin: None,
            },
        ],
        timeline: vec![
            TimelinePoint { t: 0.0, outstanding_bytes: 0 },
            TimelinePoint { t: 30.0, outstanding_bytes: 6_000_000 },
            TimelinePoint { t: 60.0, outstanding_bytes: 13_002_342 },
        ],
        sample_bytes: 0,
        windows: None,
        holders_scan: None,
        inconclusive: None,
        command: None,
        census: vec![],
        census_scan: None,
    }
}

/// A second process with nothing leaking: only a cache and an allocator that frees.
fn quiet_report() -> Report {
    let mut r = report();
    r.target.pid = 4343;
    r.target.cmdline = "/usr/bin/python3.11 worker.py".into();
    r.suspects.retain(|s| !matches!(s.verdict, Verdict::Leak | Verdict::Growing));
    for (i, s) in r.suspects.iter_mut().enumerate() {
        s.rank = i as u32 + 1;
    }
    r.holders.retain(|h| h.verdict != Verdict::Leak);
    r
}

fn empty_report() -> Report {
    Report {
        schema: SCHEMA,
        target: TargetInfo { pid: 1, ..TargetInfo::default() },
        duration_s: 0.0,
        started_unix_s: None,
        final_view: None,
        totals: Totals::default(),
        suspects: vec![],
        holders: vec![],
        timeline: vec![],
        sample_bytes: 0,
        windows: None,
        holders_scan: None,
        inconclusive: None,
        command: None,
        census: vec![],
        census_scan: None,
    }
}

fn multi() -> MultiReport {
    MultiReport { schema: SCHEMA, processes: vec![report(), quiet_report()], skipped: vec![] }
}

fn render(format: Format, report: &Report, opts: &ExportOptions) -> Vec<u8> {
    let mut out = Vec::new();
    write(format, report, opts, &mut out).unwrap();
    out
}

fn render_multi(format: Format, multi: &MultiReport, opts: &ExportOptions) -> Vec<u8> {
    let mut out = Vec::new();
    write_multi(format, multi, opts, &mut out).unwrap();
    out
}

const DEFAULT: ExportOptions = ExportOptions { all_stacks: false, top: 10, native_leaf: false, width: text::WIDTH };
const ALL: ExportOptions = ExportOptions { all_stacks: true, top: 10, native_leaf: false, width: text::WIDTH };
const NATIVE_LEAF: ExportOptions = ExportOptions { all_stacks: false, top: 10, native_leaf: true, width: text::WIDTH };

// ---- formats and paths ----

#[test]
fn format_names_parse() {
    for f in Format::ALL {
        assert_eq!(Format::parse(f.name()), Ok(f));
        assert_eq!(f.to_string().parse::<Format>(), Ok(f));
    }
    assert_eq!(Format::parse("SVG"), Ok(Format::Svg));
    let err = Format::parse("flame").unwrap_err();
    assert!(err.contains("text, json, folded, svg, pprof, speedscope"), "{err}");
}

#[test]
fn format_follows_the_extension() {
    let f = |p: &str| Format::from_path(Path::new(p));
    assert_eq!(f("leaks.json"), Some(Format::Json));
    assert_eq!(f("leaks.speedscope.json"), Some(Format::Speedscope));
    assert_eq!(f("/tmp/x/leaks.folded"), Some(Format::Folded));
    assert_eq!(f("leaks.svg"), Some(Format::Svg));
    assert_eq!(f("LEAKS.SVG"), Some(Format::Svg));
    assert_eq!(f("heap.pb.gz"), Some(Format::Pprof));
    assert_eq!(f("heap.pprof"), Some(Format::Pprof));
    assert_eq!(f("report.txt"), Some(Format::Text));
    assert_eq!(f("report"), None);
    assert_eq!(f("report.gz"), None);
    assert_eq!(f(".json"), None);
    assert_eq!(f(""), None);
}

// ---- text ----

#[test]
fn text_golden() {
    check(golden!("report.txt"), &render(Format::Text, &report(), &DEFAULT));
}

#[test]
fn text_top_limits_every_section() {
    let opts = ExportOptions { top: 1, ..DEFAULT };
    check(golden!("report_top1.txt"), &render(Format::Text, &report(), &opts));
}

#[test]
fn text_says_plainly_when_nothing_leaks() {
    let mut r = quiet_report();
    r.holders.clear();
    let text = String::from_utf8(render(Format::Text, &r, &DEFAULT)).unwrap();
    assert!(text.contains("No leaks: nothing grew steadily during the 1 min window."), "{text}");
    assert!(!text.contains("LEAKS AND GROWTH"));
    assert!(text.contains("NOT LEAKS"));
}

#[test]
fn text_points_at_holders_when_only_a_holder_leaks() {
    let mut r = quiet_report();
    r.holders = report().holders;
    let text = String::from_utf8(render(Format::Text, &r, &DEFAULT)).unwrap();
    assert!(text.contains("No allocation stack grew steadily"), "{text}");
    assert!(text.contains("   LEAK     __main__.FAILED_REQUESTS  list"), "{text}");
}

#[test]
fn text_fits_100_columns() {
    let text = String::from_utf8(render(Format::Text, &report(), &DEFAULT)).unwrap();
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line:?}");
        assert_eq!(line, line.trim_end(), "trailing blanks: {line:?}");
    }
}

#[test]
fn text_multi_golden() {
    check(golden!("multi.txt"), &render_multi(Format::Text, &multi(), &DEFAULT));
}

#[test]
fn text_empty_golden() {
    check(golden!("empty.txt"), &render(Format::Text, &empty_report(), &DEFAULT));
}

// ---- json ----

#[test]
fn json_golden() {
    check(golden!("report.json"), &render(Format::Json, &report(), &DEFAULT));
}

#[test]
fn json_round_trips() {
    let r = report();
    let back: Report = serde_json::from_slice(&render(Format::Json, &r, &DEFAULT)).unwrap();
    assert_eq!(back, r);

    let m = multi();
    let back: MultiReport = serde_json::from_slice(&render_multi(Format::Json, &m, &DEFAULT)).unwrap();
    assert_eq!(back, m);

    let e = empty_report();
    let back: Report = serde_json::from_slice(&render(Format::Json, &e, &DEFAULT)).unwrap();
    assert_eq!(back, e);
}

#[test]
fn json_keeps_the_contract_shape() {
    let v: serde_json::Value = serde_json::from_slice(&render(Format::Json, &report(), &DEFAULT)).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["target"]["pid"], 4242);
    assert_eq!(v["suspects"][0]["verdict"], "leak");
    assert_eq!(v["suspects"][0]["stack"][0]["kind"], "native");
    assert_eq!(v["suspects"][0]["stack"][1]["kind"], "python");
    assert_eq!(v["suspects"][0]["stack"][1]["line"], 12);
    assert_eq!(v["holders"][1]["type"], "list");
}

// ---- folded ----

#[test]
fn folded_golden_leaks_only() {
    check(golden!("report.folded"), &render(Format::Folded, &report(), &DEFAULT));
}

#[test]
fn folded_golden_all_stacks() {
    // The stable stack has nothing outstanding: it is left out even with all stacks.
    check(golden!("report_all.folded"), &render(Format::Folded, &report(), &ALL));
}

#[test]
fn folded_without_leaks_draws_the_largest() {
    let mut r = quiet_report();
    r.suspects[1].outstanding_bytes = 2_000_000; // the stable one, now larger than the cache
    let opts = ExportOptions { top: 1, ..DEFAULT };
    let folded = String::from_utf8(render(Format::Folded, &r, &opts)).unwrap();
    assert_eq!(folded, "handle (/srv/app.py:40);read_body (/srv/app.py:90) 2000000\n");
}

#[test]
fn folded_multi_golden() {
    check(golden!("multi.folded"), &render_multi(Format::Folded, &multi(), &DEFAULT));
}

#[test]
fn folded_names_cannot_break_the_format() {
    let mut r = report();
    r.suspects.truncate(1);
    r.suspects[0].stack = vec![native("std::array<u8; 8>::new\nx", "lib;c")];
    let folded = String::from_utf8(render(Format::Folded, &r, &DEFAULT)).unwrap();
    assert_eq!(folded, "std::array<u8, 8>::new x [lib,c] 4299161\n");
}

#[test]
fn folded_merges_identical_stacks() {
    let mut r = report();
    r.suspects[1].stack = r.suspects[0].stack.clone();
    let folded = String::from_utf8(render(Format::Folded, &r, &DEFAULT)).unwrap();
    assert_eq!(folded.lines().count(), 1);
    assert!(folded.ends_with(&format!(" {}\n", 4_299_161 + 262_144)), "{folded}");
}

// ---- speedscope ----

#[path = "../../tests/common/json_schema.rs"]
mod json_schema;

fn speedscope_json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).expect("speedscope output is JSON")
}

/// Valid against speedscope's own schema, and every sample names frames that exist.
fn assert_valid_speedscope(v: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_str(json_schema::SPEEDSCOPE_SCHEMA).unwrap();
    let errors = json_schema::validate(&schema, v);
    assert!(errors.is_empty(), "not valid against speedscope's schema: {errors:#?}\n{v:#}");
    let frames = v["shared"]["frames"].as_array().unwrap().len() as u64;
    for p in v["profiles"].as_array().unwrap() {
        let samples = p["samples"].as_array().unwrap();
        let weights = p["weights"].as_array().unwrap();
        assert_eq!(samples.len(), weights.len());
        assert!(samples.iter().flat_map(|s| s.as_array().unwrap()).all(|f| f.as_u64().unwrap() < frames));
        let total: u64 = weights.iter().map(|w| w.as_u64().unwrap()).sum();
        assert_eq!(p["endValue"].as_u64(), Some(total));
    }
    let active = v["activeProfileIndex"].as_u64().unwrap() as usize;
    assert!(active < v["profiles"].as_array().unwrap().len().max(1));
}

/// The frames of a profile's samples, root first, as `name file:line` (or `name`).
fn speedscope_stacks(v: &serde_json::Value, profile: usize) -> Vec<Vec<String>> {
    let frames = v["shared"]["frames"].as_array().unwrap();
    let name = |i: &serde_json::Value| {
        let f = &frames[i.as_u64().unwrap() as usize];
        match (f["file"].as_str(), f["line"].as_u64()) {
            (Some(file), Some(line)) => format!("{} {file}:{line}", f["name"].as_str().unwrap()),
            _ => f["name"].as_str().unwrap().to_string(),
        }
    };
    let samples = v["profiles"][profile]["samples"].as_array().unwrap();
    samples.iter().map(|s| s.as_array().unwrap().iter().map(name).collect()).collect()
}

#[test]
fn the_schema_checker_rejects_what_the_schema_forbids() {
    let schema: serde_json::Value = serde_json::from_str(json_schema::SPEEDSCOPE_SCHEMA).unwrap();
    let good = serde_json::json!({
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": "f", "file": "a.py", "line": 3}]},
        "profiles": [{"type": "sampled", "name": "p", "unit": "bytes", "startValue": 0, "endValue": 5,
                      "samples": [[0]], "weights": [5]}]
    });
    assert_eq!(json_schema::validate(&schema, &good), Vec::<String>::new());
    for (path, bad) in [
        ("/profiles/0/unit", serde_json::json!("furlongs")),
        ("/profiles/0/type", serde_json::json!("sample")),
        ("/shared/frames/0/line", serde_json::json!("3")),
        ("/$schema", serde_json::json!("x")),
        ("/profiles/0/weights", serde_json::json!({})),
    ] {
        let mut doc = good.clone();
        *doc.pointer_mut(path).unwrap() = bad;
        assert!(!json_schema::validate(&schema, &doc).is_empty(), "{path} accepted");
    }
    let mut doc = good;
    doc["profiles"][0].as_object_mut().unwrap().remove("weights");
    assert!(!json_schema::validate(&schema, &doc).is_empty(), "missing weights accepted");
}

#[test]
fn speedscope_golden() {
    check(golden!("report.speedscope.json"), &render(Format::Speedscope, &report(), &DEFAULT));
}

#[test]
fn speedscope_puts_the_python_line_at_the_leaf() {
    let v = speedscope_json(&render(Format::Speedscope, &report(), &DEFAULT));
    assert_valid_speedscope(&v);
    let stacks = speedscope_stacks(&v, 0);
    assert_eq!(stacks[0], ["<module> /srv/app.py:55", "handle /srv/app.py:40", "leak_bytes /srv/app.py:12"]);
    assert!(!v.to_string().contains("PyByteArray_Resize"), "the native frame is not drawn by default");

    let v = speedscope_json(&render(Format::Speedscope, &report(), &NATIVE_LEAF));
    assert_valid_speedscope(&v);
    let stacks = speedscope_stacks(&v, 0);
    assert_eq!(stacks[0].last().unwrap(), "PyByteArray_Resize [python3.11]");
    assert_eq!(stacks[0].len(), 4);

    let mut r = report();
    r.suspects[0].stack = vec![native("_PyObject_ArenaMmap", "libpython3.11.so.1.0")];
    let v = speedscope_json(&render(Format::Speedscope, &r, &DEFAULT));
    assert_eq!(speedscope_stacks(&v, 0)[0], ["[no Python frame]"]);
}

#[test]
fn speedscope_multi_has_a_profile_per_process() {
    for opts in [ALL, DEFAULT] {
        let v = speedscope_json(&render_multi(Format::Speedscope, &multi(), &opts));
        assert_valid_speedscope(&v);
        let profiles = v["profiles"].as_array().unwrap();
        let names: Vec<&str> = profiles.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "outstanding memory: pid 4242 /usr/bin/python3.11 app.py",
                "outstanding memory: pid 4343 /usr/bin/python3.11 worker.py"
            ]
        );
        assert_eq!(v["name"], "outstanding memory: pids 4242, 4343");
        let frames = v["shared"]["frames"].as_array().unwrap();
        assert!(frames.iter().all(|f| !f["name"].as_str().unwrap().starts_with("pid ")), "no pid root frames");
        let leaks = speedscope_stacks(&v, 0);
        assert!(leaks.iter().any(|s| s.last().unwrap() == "leak_bytes /srv/app.py:12"), "{leaks:?}");
        let quiet = speedscope_stacks(&v, 1);
        if opts.all_stacks {
            assert_eq!(quiet, [["<module> /srv/app.py:55", "handle /srv/app.py:40", "cache_put /srv/app.py:30"]]);
        } else {
            // Something leaks in pid 4242: only leaking and growing stacks are drawn, anywhere.
            assert!(quiet.is_empty(), "{quiet:?}");
        }
        assert_eq!(v["activeProfileIndex"], 0);
    }
}

#[test]
fn speedscope_is_valid_for_every_report_shape() {
    let mut odd = report();
    odd.suspects[0].stack.insert(1, native("[unknown] libfoo.so+0x10", "libfoo.so"));
    odd.suspects[1].stack = vec![native("malloc_hook", "libc.so.6")];
    odd.suspects[2].stack.clear();
    let cases = [report(), empty_report(), quiet_report(), odd];
    for opts in [DEFAULT, ALL, NATIVE_LEAF] {
        for r in &cases {
            assert_valid_speedscope(&speedscope_json(&render(Format::Speedscope, r, &opts)));
        }
        assert_valid_speedscope(&speedscope_json(&render_multi(Format::Speedscope, &multi(), &opts)));
        let none = MultiReport { schema: SCHEMA, processes: vec![], skipped: vec![] };
        assert_valid_speedscope(&speedscope_json(&render_multi(Format::Speedscope, &none, &opts)));
    }
}

// ---- pprof ----

fn decode(gz: &[u8]) -> pprof::Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut raw).unwrap();
    pprof::Profile::decode(raw.as_slice()).unwrap()
}

/// Each sample's frames, leaf first, as (function, file, line, function's start line).
fn pprof_stacks(p: &pprof::Profile) -> Vec<Vec<(String, String, i64, i64)>> {
    let s = |i: i64| p.string_table[i as usize].clone();
    let location = |id: u64| p.location.iter().find(|l| l.id == id).unwrap();
    let function = |id: u64| p.function.iter().find(|f| f.id == id).unwrap();
    p.sample
        .iter()
        .map(|sample| {
            sample
                .location_id
                .iter()
                .map(|&id| {
                    let loc = location(id);
                    assert_eq!(loc.line.len(), 1);
                    let f = function(loc.line[0].function_id);
                    (s(f.name), s(f.filename), loc.line[0].line, f.start_line)
                })
                .collect()
        })
        .collect()
}

fn pprof_labels(p: &pprof::Profile, sample: usize) -> Vec<(String, String)> {
    let s = |i: i64| p.string_table[i as usize].clone();
    p.sample[sample].label.iter().map(|l| (s(l.key), s(l.str))).collect()
}

#[test]
fn pprof_decodes_to_the_report() {
    let r = report();
    let p = decode(&render(Format::Pprof, &r, &DEFAULT));
    let s = |i: i64| p.string_table[i as usize].as_str();

    assert_eq!(p.string_table[0], "");
    let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
    assert_eq!(
        types,
        [("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"), ("inuse_space", "bytes")]
    );
    assert_eq!(s(p.default_sample_type), "inuse_space");
    assert_eq!(p.duration_nanos, 60_000_000_000);
    assert_eq!(p.time_nanos, 1_764_669_600_500_000_000, "when tracing started");

    // Every stack, with its numbers and verdict, in report order.
    assert_eq!(p.sample.len(), r.suspects.len());
    for (i, (sample, suspect)) in p.sample.iter().zip(&r.suspects).enumerate() {
        assert_eq!(
            sample.value,
            [
                suspect.allocs as i64,
                suspect.alloc_bytes as i64,
                suspect.outstanding_count as i64,
                suspect.outstanding_bytes as i64
            ]
        );
        let labels = pprof_labels(&p, i);
        assert_eq!(labels[0], ("verdict".to_string(), suspect.verdict.as_str().to_string()));
        assert!(labels.contains(&("allocator".to_string(), suspect.allocator.clone())), "{labels:?}");
    }

    // Leaf first, and the leaf is the Python line: leak_bytes at line 12, in a function that
    // starts at its def (line 10). The native allocating call is a label.
    let stacks = pprof_stacks(&p);
    let frame = |f: &str, line: i64, def: i64| (f.to_string(), "/srv/app.py".to_string(), line, def);
    assert_eq!(stacks[0], [frame("leak_bytes", 12, 10), frame("handle", 40, 38), frame("<module>", 55, 1)]);
    assert!(pprof_labels(&p, 0).contains(&("native_caller".into(), "PyByteArray_Resize [python3.11]".into())));
    assert_eq!(stacks[1][0], frame("register_callback", 71, 70));
    assert!(!pprof_labels(&p, 1).iter().any(|(k, _)| k == "native_caller"), "no native frame in stack 2");

    // One location per distinct frame drawn: `handle (/srv/app.py:40)` is shared by all four stacks.
    let distinct: std::collections::HashSet<&Frame> =
        r.suspects.iter().flat_map(|x| &x.stack).filter(|f| matches!(f, Frame::Python { .. })).collect();
    assert_eq!(p.location.len(), distinct.len());
    let ids: std::collections::HashSet<u64> = p.location.iter().map(|l| l.id).collect();
    assert_eq!(ids.len(), p.location.len());
    assert!(!ids.contains(&0));
}

#[test]
fn pprof_native_leaf_keeps_the_recorded_stack() {
    let p = decode(&render(Format::Pprof, &report(), &NATIVE_LEAF));
    let stacks = pprof_stacks(&p);
    assert_eq!(stacks[0].len(), 4);
    assert_eq!(stacks[0][0], ("PyByteArray_Resize".to_string(), "python3.11".to_string(), 0, 0));
    assert_eq!(stacks[0][1].0, "leak_bytes");
    assert!(!pprof_labels(&p, 0).iter().any(|(k, _)| k == "native_caller"));
}

#[test]
fn pprof_draws_a_stack_without_python_as_one_frame() {
    let mut r = report();
    r.suspects[0].stack = vec![native("_PyObject_ArenaMmap", "libpython3.11.so.1.0")];
    let p = decode(&render(Format::Pprof, &r, &DEFAULT));
    assert_eq!(pprof_stacks(&p)[0], [("[no Python frame]".to_string(), String::new(), 0, 0)]);
    let caller = ("native_caller".to_string(), "_PyObject_ArenaMmap [libpython3.11.so.1.0]".to_string());
    assert!(pprof_labels(&p, 0).contains(&caller), "{:?}", pprof_labels(&p, 0));
    let p = decode(&render(Format::Pprof, &r, &NATIVE_LEAF));
    assert_eq!(pprof_stacks(&p)[0][0].0, "_PyObject_ArenaMmap");
}

#[test]
fn pprof_has_one_function_per_python_function() {
    let mut r = report();
    // Another line of `handle`, and a frame from a report written before def lines were kept.
    r.suspects[1].stack[1] = py("handle", "/srv/app.py", 41);
    r.suspects[2].stack[0] =
        Frame::Python { function: "old".into(), file: "/srv/old.py".into(), line: 7, def_line: None };
    let p = decode(&render(Format::Pprof, &r, &DEFAULT));
    let s = |i: i64| p.string_table[i as usize].as_str();
    let handles: Vec<&pprof::Function> = p.function.iter().filter(|f| s(f.name) == "handle").collect();
    assert_eq!(handles.len(), 1, "lines 40 and 41 of handle are one function");
    assert_eq!(handles[0].start_line, 38);
    let handle_lines: std::collections::BTreeSet<i64> =
        p.location.iter().filter(|l| l.line[0].function_id == handles[0].id).map(|l| l.line[0].line).collect();
    assert_eq!(handle_lines, [40, 41].into());
    let old = p.function.iter().find(|f| s(f.name) == "old").unwrap();
    assert_eq!(old.start_line, 0, "unknown, not a line inside the body");
}

#[test]
fn pprof_multi_labels_pid() {
    let p = decode(&render_multi(Format::Pprof, &multi(), &DEFAULT));
    let s = |i: i64| p.string_table[i as usize].as_str();
    let pids: Vec<&str> = p
        .sample
        .iter()
        .map(|x| {
            let l = x.label.iter().find(|l| s(l.key) == "pid").expect("pid label");
            s(l.str)
        })
        .collect();
    assert_eq!(pids, ["4242", "4242", "4242", "4242", "4343", "4343"]);
    let cmdlines: std::collections::BTreeSet<&str> =
        p.sample.iter().flat_map(|x| x.label.iter().filter(|l| s(l.key) == "cmdline").map(|l| s(l.str))).collect();
    let m = multi();
    let want: std::collections::BTreeSet<&str> =
        m.processes.iter().map(|r| r.target.cmdline.as_str()).filter(|c| !c.is_empty()).collect();
    assert_eq!(cmdlines.len(), want.len(), "one cmdline label value per process with a command line");
}

#[test]
fn pprof_is_deterministic() {
    let r = report();
    assert_eq!(render(Format::Pprof, &r, &DEFAULT), render(Format::Pprof, &r, &DEFAULT));
}

#[test]
fn pprof_without_a_start_time_has_none() {
    let mut r = report();
    r.started_unix_s = None;
    assert_eq!(decode(&render(Format::Pprof, &r, &DEFAULT)).time_nanos, 0);
}

// ---- svg ----

#[path = "../../tests/common/flamegraph.rs"]
mod flamegraph;

use flamegraph::{is_grey, is_orange, is_red, parse_svg, svg_box, svg_boxes, text_of, SvgBox};

fn svg(report: &Report, opts: &ExportOptions) -> String {
    String::from_utf8(render(Format::Svg, report, opts)).unwrap()
}

#[test]
fn svg_colours_boxes_by_verdict() {
    let boxes = svg_boxes(&svg(&report(), &ALL));
    let leak = svg_box(&boxes, "leak_bytes (app.py:12)");
    assert_eq!(leak.class, "leak");
    assert!(is_red(&leak.fill), "{leak:?}");
    let native = svg_box(&boxes, "PyByteArray_Resize [python3.11]");
    assert!(native.class == "leak" && is_red(&native.fill), "{native:?}");
    let growing = svg_box(&boxes, "register_callback (app.py:71)");
    assert!(growing.class == "growing" && is_orange(&growing.fill), "{growing:?}");
    let cache = svg_box(&boxes, "cache_put (app.py:30)");
    assert!(cache.class == "bounded" && is_grey(&cache.fill), "a bounded cache is grey, not red: {cache:?}");
    // Shared by the leak, the growing stack and the cache: the most severe.
    let handle = svg_box(&boxes, "handle (app.py:40)");
    assert!(handle.class == "leak" && is_red(&handle.fill), "{handle:?}");
    // Every box was found and painted, the root ("all") too.
    assert!(boxes.iter().all(|b| !b.class.is_empty()), "{boxes:#?}");
    assert!(boxes.iter().any(|b| b.title.starts_with("all (leak + growing + bounded of 3 stacks")), "{boxes:#?}");

    // Without --all-stacks the cache is not drawn at all.
    let boxes = svg_boxes(&svg(&report(), &DEFAULT));
    assert!(!boxes.iter().any(|b| b.title.contains("cache_put")));
    assert_eq!(svg_box(&boxes, "handle (app.py:40)").class, "leak");
}

#[test]
fn svg_tooltips_say_verdict_bytes_and_growth() {
    let boxes = svg_boxes(&svg(&report(), &ALL));
    let leak = svg_box(&boxes, "leak_bytes (app.py:12)");
    assert_eq!(
        leak.title,
        "leak_bytes (app.py:12) (leak, 4.1 MiB in 1,024 blocks, 76.6%, +4.0 MiB/min, /srv/app.py:12)"
    );
    let handle = svg_box(&boxes, "handle (app.py:40)");
    assert_eq!(
        handle.title,
        "handle (app.py:40) (leak + growing + bounded of 3 stacks, 5.3 MiB in 1,344 blocks, 100.0%, +4.1 MiB/min, \
         /srv/app.py:40)"
    );
    let native = svg_box(&boxes, "PyByteArray_Resize [python3.11]");
    assert!(native.title.ends_with(", python3.11)"), "{native:?}");
}

#[test]
fn svg_labels_keep_the_function_name() {
    let text = svg(&report(), &ALL);
    // Function first, short file name; inferno's script cuts labels on the right.
    assert!(text.contains("var truncate_text_right = true;"));
    let boxes = svg_boxes(&text);
    assert!(svg_box(&boxes, "leak_bytes (app.py:12)").text.starts_with("leak_bytes"));
    assert!(!boxes.iter().any(|b| b.text.starts_with("..")), "{boxes:#?}");
    assert_script_labels_match(&boxes);
}

/// inferno's script relabels boxes from their titles, cutting the last parenthesis: what is left
/// must be the label drawn (of which a narrow box shows the start).
fn assert_script_labels_match(boxes: &[SvgBox]) {
    for b in boxes {
        let cut = b.title.rfind('(').map(|i| b.title[..i].trim_end()).unwrap();
        let shown = b.text.trim_end_matches("..");
        assert!(cut.starts_with(shown), "the script would relabel {shown:?} as {cut:?}: {b:?}");
    }
}

#[test]
fn svg_has_a_legend_and_a_subtitle() {
    let text = svg(&report(), &DEFAULT);
    let doc = parse_svg(&text);
    let legend = doc.descendants().find(|n| n.attribute("id") == Some("legend")).expect("a legend");
    let words = text_of(&doc, "legend");
    assert!(words.contains("leak: 1 stack, 4.1 MiB"), "{words}");
    assert!(words.contains("growing: 1 stack, 256 KiB"), "{words}");
    assert!(words.contains("bounded / stable: not drawn (--all-stacks draws them)"), "{words}");
    let swatches: Vec<(&str, &str)> =
        legend.children().filter_map(|n| Some((n.attribute("class")?, n.attribute("fill")?))).collect();
    assert_eq!(swatches.len(), 3);
    assert!(is_red(swatches[0].1) && is_orange(swatches[1].1) && is_grey(swatches[2].1), "{swatches:?}");
    let subtitle = text_of(&doc, "subtitle");
    assert_eq!(
        subtitle,
        "pid 4242 \u{b7} CPython 3.11.7 \u{b7} python3.11 app.py \u{b7} 1 min \u{b7} 12 MiB outstanding in 2,345 \
         blocks"
    );
    let all = text_of(&parse_svg(&svg(&report(), &ALL)), "legend");
    assert!(all.contains("bounded / stable: 1 stack, 1.0 MiB"), "{all}");
    // Nothing leaks: the largest stacks are drawn, and the subtitle says so.
    let quiet = svg(&quiet_report(), &DEFAULT);
    let quiet = parse_svg(&quiet);
    let subtitle = text_of(&quiet, "subtitle");
    assert!(
        subtitle.ends_with("12 MiB outstanding in 2,345 blocks \u{b7} no leaks: the 10 largest stacks"),
        "{subtitle}"
    );
    let legend = text_of(&quiet, "legend");
    assert!(legend.contains("leak: none drawn") && legend.contains("bounded / stable: 1 stack, 1.0 MiB"), "{legend}");
}

#[test]
fn svg_multi_has_a_root_per_process() {
    let text = String::from_utf8(render_multi(Format::Svg, &multi(), &ALL)).unwrap();
    let boxes = svg_boxes(&text);
    let p1 = svg_box(&boxes, "pid 4242");
    assert_eq!(p1.class, "leak");
    assert!(p1.title.ends_with(", /usr/bin/python3.11 app.py)"), "{p1:?}");
    let p2 = svg_box(&boxes, "pid 4343");
    assert_eq!(p2.class, "bounded", "nothing leaks in the second process: {p2:?}");
}

#[test]
fn svg_is_xml_whatever_the_names() {
    let mut r = report();
    let hostile = "<script>alert('x')</script> & \"q\" ]]> \u{1b}[31m;\0\u{7}\u{85}\u{fffe}\u{ffff} \u{1F600}";
    r.target.cmdline = format!("python3 {hostile}");
    r.target.python = hostile.into();
    r.suspects[0].stack = vec![
        native(hostile, hostile),
        Frame::Python { function: hostile.into(), file: format!("/srv/{hostile}.py"), line: 1, def_line: None },
        py("# not a comment", "(weird) dir/x.py", 2),
        py("  ", "", 3),
    ];
    r.suspects[1].stack = vec![py("f 12", "a.py", 4)];
    for opts in [DEFAULT, ALL] {
        let text = svg(&r, &opts);
        parse_svg(&text);
        assert!(!text.contains("<script>alert"), "escaped");
        assert!(!text.contains('\u{1b}') && !text.contains('\0') && !text.contains('\u{fffe}'), "no raw controls");
        let boxes = svg_boxes(&text);
        assert!(boxes.iter().all(|b| !b.class.is_empty()), "{boxes:#?}");
        let weird = boxes.iter().find(|b| b.title.contains("\\x1b[31m")).expect("escapes shown");
        assert!(weird.title.contains("\\x00") && weird.title.contains("\\u{fffe}"), "{weird:?}");
        assert!(svg_box(&boxes, "\\x23 not a comment").class == "leak");
        assert_script_labels_match(&boxes);
    }
    let multi = MultiReport { schema: SCHEMA, processes: vec![r.clone(), quiet_report()], skipped: vec![] };
    parse_svg(&String::from_utf8(render_multi(Format::Svg, &multi, &ALL)).unwrap());
    parse_svg(&svg(&empty_report(), &DEFAULT));
    let mut empty = empty_report();
    empty.target.cmdline = hostile.into();
    let text = svg(&empty, &DEFAULT);
    parse_svg(&text);
    assert!(text.contains("No outstanding memory"));
}

// ---- empty reports ----

#[test]
fn empty_reports_never_panic() {
    let mut no_frames = report();
    for s in &mut no_frames.suspects {
        s.stack.clear();
    }
    let empty_multi = MultiReport { schema: SCHEMA, processes: vec![], skipped: vec![] };
    let zero_top = ExportOptions { top: 0, ..DEFAULT };
    for format in Format::ALL {
        for opts in [DEFAULT, ALL, zero_top, NATIVE_LEAF] {
            render(format, &empty_report(), &opts);
            render(format, &no_frames, &opts);
            render_multi(format, &empty_multi, &opts);
            render_multi(
                format,
                &MultiReport { schema: SCHEMA, processes: vec![empty_report(), no_frames.clone()], skipped: vec![] },
                &opts,
            );
        }
    }
    let svg = String::from_utf8(render(Format::Svg, &empty_report(), &DEFAULT)).unwrap();
    assert!(svg.contains("No outstanding memory"));
    assert!(render(Format::Folded, &empty_report(), &DEFAULT).is_empty());
    let folded = String::from_utf8(render(Format::Folded, &no_frames, &DEFAULT)).unwrap();
    assert_eq!(folded, "[no stack] 4561305\n");
    let p = decode(&render(Format::Pprof, &no_frames, &DEFAULT));
    assert!(p.sample.iter().all(|s| s.location_id.len() == 1));
    let text = String::from_utf8(render(Format::Text, &no_frames, &DEFAULT)).unwrap();
    assert!(text.contains("(no stack recorded)"));
}

#[test]
fn dump_for_manual_checks() {
    let Some(dir) = std::env::var_os("DUMP_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, format) in [
        ("report.pb.gz", Format::Pprof),
        ("report.svg", Format::Svg),
        ("report.speedscope.json", Format::Speedscope),
        ("report.txt", Format::Text),
    ] {
        std::fs::write(dir.join(name), render(format, &report(), &ALL)).unwrap();
    }
    std::fs::write(dir.join("multi.pb.gz"), render_multi(Format::Pprof, &multi(), &ALL)).unwrap();
    std::fs::write(dir.join("empty.pb.gz"), render(Format::Pprof, &empty_report(), &ALL)).unwrap();
    std::fs::write(dir.join("empty.svg"), render(Format::Svg, &empty_report(), &ALL)).unwrap();
}
