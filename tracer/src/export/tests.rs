//! Golden outputs for every format, built from one small hand-made report. Goldens live in
//! `tests/data/export/`; `UPDATE_GOLDEN=1 cargo test` rewrites them (then read the diff).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use prost::Message;

use super::*;
use crate::report::{Holder, MultiReport, TargetInfo, TimelinePoint, Totals, SCHEMA};

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

fn py(function: &str, file: &str, line: u32) -> Frame {
    Frame::Python { function: function.into(), file: file.into(), line }
}

fn native(function: &str, module: &str) -> Frame {
    Frame::Native { function: function.into(), module: module.into() }
}

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
        final_view: Some(crate::report::FinalView::Duration),
        totals: Totals {
            allocs: 120_345,
            frees: 118_000,
            outstanding_bytes: 13_002_342,
            outstanding_count: 2_345,
            lost,
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
            },
        ],
        timeline: vec![
            TimelinePoint { t: 0.0, outstanding_bytes: 0 },
            TimelinePoint { t: 30.0, outstanding_bytes: 6_000_000 },
            TimelinePoint { t: 60.0, outstanding_bytes: 13_002_342 },
        ],
        sample_bytes: 0,
        holders_scan: None,
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
        final_view: None,
        totals: Totals::default(),
        suspects: vec![],
        holders: vec![],
        timeline: vec![],
        sample_bytes: 0,
        holders_scan: None,
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

const DEFAULT: ExportOptions = ExportOptions { all_stacks: false, top: 10 };
const ALL: ExportOptions = ExportOptions { all_stacks: true, top: 10 };

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
    let opts = ExportOptions { all_stacks: false, top: 1 };
    check(golden!("report_top1.txt"), &render(Format::Text, &report(), &opts));
}

#[test]
fn text_says_plainly_when_nothing_leaks() {
    let mut r = quiet_report();
    r.holders.clear();
    let text = String::from_utf8(render(Format::Text, &r, &DEFAULT)).unwrap();
    assert!(text.contains("No leaks: nothing grew steadily during the 60.0 s window."), "{text}");
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
    let opts = ExportOptions { all_stacks: false, top: 1 };
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

#[test]
fn speedscope_golden() {
    check(golden!("report.speedscope.json"), &render(Format::Speedscope, &report(), &DEFAULT));
}

#[test]
fn speedscope_multi_has_pid_roots() {
    let v: serde_json::Value = serde_json::from_slice(&render_multi(Format::Speedscope, &multi(), &ALL)).unwrap();
    let frames = v["shared"]["frames"].as_array().unwrap();
    let profile = &v["profiles"][0];
    assert_eq!(profile["name"], "outstanding memory (pids 4242, 4343)");
    let samples = profile["samples"].as_array().unwrap();
    let weights = profile["weights"].as_array().unwrap();
    assert_eq!(samples.len(), weights.len());
    let roots: Vec<&str> =
        samples.iter().map(|s| frames[s[0].as_u64().unwrap() as usize]["name"].as_str().unwrap()).collect();
    assert!(roots.contains(&"pid 4242") && roots.contains(&"pid 4343"), "{roots:?}");
    assert!(roots.iter().all(|r| r.starts_with("pid ")));
    let total: u64 = weights.iter().map(|w| w.as_u64().unwrap()).sum();
    assert_eq!(profile["endValue"].as_u64(), Some(total));
}

// ---- pprof ----

fn decode(gz: &[u8]) -> pprof::Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut raw).unwrap();
    pprof::Profile::decode(raw.as_slice()).unwrap()
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

    // Every stack, with its numbers and verdict, in report order.
    assert_eq!(p.sample.len(), r.suspects.len());
    for (sample, suspect) in p.sample.iter().zip(&r.suspects) {
        assert_eq!(
            sample.value,
            [
                suspect.allocs as i64,
                suspect.alloc_bytes as i64,
                suspect.outstanding_count as i64,
                suspect.outstanding_bytes as i64
            ]
        );
        assert_eq!(sample.label.len(), 1);
        assert_eq!(s(sample.label[0].key), "verdict");
        assert_eq!(s(sample.label[0].str), suspect.verdict.as_str());
        assert_eq!(sample.location_id.len(), suspect.stack.len());
    }

    // Leaf first: the native allocating call, then leak_bytes at line 12.
    let location = |id: u64| p.location.iter().find(|l| l.id == id).unwrap();
    let function = |id: u64| p.function.iter().find(|f| f.id == id).unwrap();
    let frames: Vec<(String, String, i64)> = p.sample[0]
        .location_id
        .iter()
        .map(|&id| {
            let loc = location(id);
            assert_eq!(loc.line.len(), 1);
            let f = function(loc.line[0].function_id);
            (s(f.name).to_string(), s(f.filename).to_string(), loc.line[0].line)
        })
        .collect();
    assert_eq!(
        frames,
        [
            ("PyByteArray_Resize".to_string(), "python3.11".to_string(), 0),
            ("leak_bytes".to_string(), "/srv/app.py".to_string(), 12),
            ("handle".to_string(), "/srv/app.py".to_string(), 40),
            ("<module>".to_string(), "/srv/app.py".to_string(), 55),
        ]
    );
    assert_eq!(function(location(p.sample[0].location_id[1]).line[0].function_id).start_line, 12);

    // One location per distinct frame: `handle (/srv/app.py:40)` is shared by all four stacks.
    let distinct: std::collections::HashSet<&Frame> = r.suspects.iter().flat_map(|x| &x.stack).collect();
    assert_eq!(p.location.len(), distinct.len());
    let ids: std::collections::HashSet<u64> = p.location.iter().map(|l| l.id).collect();
    assert_eq!(ids.len(), p.location.len());
    assert!(!ids.contains(&0));
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

// ---- svg ----

#[test]
fn svg_is_a_flame_graph() {
    let svg = String::from_utf8(render(Format::Svg, &report(), &DEFAULT)).unwrap();
    assert!(svg.starts_with("<?xml"), "{}", &svg[..100]);
    assert!(svg.contains("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("Outstanding memory by Python stack"));
    assert!(svg.contains("pid 4242  python 3.11.7"));
    assert!(svg.contains("leak_bytes (/srv/app.py:12)"));
    assert!(svg.contains("register_callback (/srv/app.py:71)"));
    assert!(svg.contains("bytes"));
    // Leaks only by default: the cache is not drawn.
    assert!(!svg.contains("cache_put"));
    let all = String::from_utf8(render(Format::Svg, &report(), &ALL)).unwrap();
    assert!(all.contains("cache_put (/srv/app.py:30)"));
    let multi = String::from_utf8(render_multi(Format::Svg, &multi(), &DEFAULT)).unwrap();
    assert!(multi.contains("pid 4242"));
}

// ---- empty reports ----

#[test]
fn empty_reports_never_panic() {
    let mut no_frames = report();
    for s in &mut no_frames.suspects {
        s.stack.clear();
    }
    let empty_multi = MultiReport { schema: SCHEMA, processes: vec![], skipped: vec![] };
    let zero_top = ExportOptions { all_stacks: false, top: 0 };
    for format in Format::ALL {
        for opts in [DEFAULT, ALL, zero_top] {
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
