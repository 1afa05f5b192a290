//! Every export format through the binary: one real capture (`record -f json`, real eBPF, root),
//! then `tracer report` into each format, each output read back by what reads it (`go tool pprof`
//! for pprof, a folded-line parser, an XML parser and a headless Chromium for the flame graph,
//! speedscope's schema and speedscope itself, JSON round trip); the format picked from `-o`'s
//! extension; `tracer report` on missing and corrupt input; and an output path that cannot be
//! written (the report goes to stdout instead: no data lost). The writers' own unit tests are in
//! src/export/tests.rs.

#[path = "common/chromium.rs"]
mod chromium;
mod common;
#[path = "common/flamegraph.rs"]
mod flamegraph;
#[path = "common/json_schema.rs"]
mod json_schema;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

const FIXTURE: &str = "two_leaks.py";

/// One capture shared by every test of this file: (directory, path of the JSON report).
/// None when not root or without CPython 3.11.
fn capture() -> Option<&'static (tempfile::TempDir, PathBuf)> {
    static CAPTURE: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            if !is_root() {
                println!("skipped: not root (the capture needs real eBPF)");
                return None;
            }
            let python = pythons_of(11).into_iter().next()?;
            let _g = serial();
            let dir = tempfile::tempdir().unwrap();
            let json = dir.path().join("capture.json");
            let script = fixture(FIXTURE);
            let (code, _out, err) = run_tracer(&[
                "record",
                "-i",
                "500ms",
                "-q",
                "-f",
                "json",
                "-o",
                json.to_str().unwrap(),
                "--",
                python.path.to_str().unwrap(),
                script.to_str().unwrap(),
                "4",
            ]);
            assert_eq!(code, 0, "record: {err}");
            Some((dir, json))
        })
        .as_ref()
}

fn leak_line() -> u64 {
    line_of(FIXTURE, "KEPT_SMALL.append")
}

/// `tracer report CAPTURE ARGS...`; returns (code, stdout bytes, stderr).
fn report(input: &Path, args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new(tracer_bin()).arg("report").arg(input).args(args).output().expect("run tracer report");
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Renders the capture to `name` in `dir` (with `-f format` when given) and returns the bytes.
fn render(dir: &Path, input: &Path, name: &str, format: Option<&str>) -> Vec<u8> {
    let path = dir.join(name);
    let mut args = vec!["-o", path.to_str().unwrap()];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    let (code, _out, err) = report(input, &args);
    assert_eq!(code, 0, "report -o {name} {format:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{name} not written ({e}): {err}"))
}

fn pprof_top(file: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(file)
        .env("PPROF_TMPDIR", dir.path())
        .env("HOME", dir.path())
        .output()
        .expect("go tool pprof (apt-get install golang-go)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "go tool pprof -top {}: {text}", file.display());
    text
}

fn check_folded(bytes: &[u8]) {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let frame = format!("leak_small ({}:{})", fixture(FIXTURE).display(), leak_line());
    let mut found = false;
    for line in text.lines() {
        let (stack, weight) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no weight: {line}"));
        assert!(weight.parse::<u64>().is_ok_and(|w| w > 0), "weight of {line}");
        let frames: Vec<&str> = stack.split(';').collect();
        if let Some(i) = frames.iter().position(|f| *f == frame) {
            found = true;
            // Root first: the module body, then main, then the leaking function, native last.
            assert!(frames[0].starts_with("<module> ("), "root-first: {line}");
            assert!(i >= 1 && frames[i - 1].starts_with("main ("), "main calls leak_small: {line}");
            assert!(frames.last().unwrap().ends_with(']'), "the native allocator frame is the leaf: {line}");
        }
    }
    assert!(found, "no folded stack with the frame {frame:?}:\n{text}");
}

/// The leaking line as the flame graph labels it: function first, short file name.
fn leak_label() -> String {
    format!("leak_small ({FIXTURE}:{})", leak_line())
}

/// XML, with a legend, the leaking line painted with its verdict (red for a leak, orange while it
/// only grows: a short capture may not be conclusive) and titled with its full path, every box
/// painted.
fn check_svg(original: &Value, bytes: &[u8]) {
    use flamegraph::*;
    let text = std::str::from_utf8(bytes).expect("the SVG is UTF-8");
    let doc = parse_svg(text);
    let legend = text_of(&doc, "legend");
    assert!(legend.contains("leak: ") && legend.contains("bounded / stable: "), "{legend}");
    let subtitle = text_of(&doc, "subtitle");
    assert!(subtitle.starts_with("pid ") && subtitle.contains(" \u{b7} CPython 3.11"), "{subtitle}");
    assert!(subtitle.contains(FIXTURE) && subtitle.contains(" outstanding in "), "{subtitle}");
    let boxes = svg_boxes(text);
    let verdict = suspects_at(original, "leak_small", FIXTURE, leak_line())[0]["verdict"].as_str().unwrap();
    let leak = svg_box(&boxes, &leak_label());
    assert_eq!(leak.class, verdict, "{leak:?}");
    match verdict {
        "leak" => assert!(is_red(&leak.fill), "{leak:?}"),
        "growing" => assert!(is_orange(&leak.fill), "{leak:?}"),
        other => panic!("the capture calls leak_small {other}"),
    }
    let full = format!("{}:{}", fixture(FIXTURE).display(), leak_line());
    // The verdict first (a stack through the same box may add "+ stable"), the full path last.
    assert!(leak.title.contains(&format!("({verdict}")) && leak.title.contains(&full), "{leak:?}");
    assert!(boxes.iter().all(|b| !b.class.is_empty()), "a box left unpainted: {boxes:#?}");
}

fn check_pprof(dir: &Path, bytes: &[u8]) {
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "pprof is gzipped");
    let file = dir.join("check.pb.gz");
    std::fs::write(&file, bytes).unwrap();
    let top = pprof_top(&file);
    println!("go tool pprof -top (tracer report -f pprof):\n{top}");
    assert!(top.contains("Type: inuse_space"), "{top}");
    assert!(top.contains("leak_small") && top.contains("leak_big"), "{top}");
}

/// Valid against speedscope's schema, and the leaking line is a leaf with its file and line.
fn check_speedscope(bytes: &[u8]) {
    let v: Value = serde_json::from_slice(bytes).expect("speedscope is JSON");
    let schema: Value = serde_json::from_str(json_schema::SPEEDSCOPE_SCHEMA).unwrap();
    let errors = json_schema::validate(&schema, &v);
    assert!(errors.is_empty(), "not valid against speedscope's schema: {errors:#?}");
    let frames = v["shared"]["frames"].as_array().expect("shared.frames");
    let leak = frames
        .iter()
        .position(|f| {
            f["name"] == "leak_small"
                && f["line"].as_u64() == Some(leak_line())
                && f["file"].as_str() == fixture(FIXTURE).to_str()
        })
        .unwrap_or_else(|| panic!("no leak_small frame with its file and line: {frames:#?}"));
    let profiles = v["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 1);
    let samples = profiles[0]["samples"].as_array().unwrap();
    let leaves: Vec<u64> = samples.iter().filter_map(|s| s.as_array()?.last()?.as_u64()).collect();
    assert!(leaves.contains(&(leak as u64)), "leak_small is a leaf (the Python line, not the allocator)");
}

fn check_text(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(text.contains("leak_small"), "{text}");
}

fn check_json(original: &Value, bytes: &[u8]) {
    let again: Value = serde_json::from_slice(bytes).expect("json is JSON");
    assert_eq!(&again, original, "JSON round trip changed the report");
}

#[test]
fn every_format_from_a_saved_capture() {
    let Some((_keep, json)) = capture() else { return };
    let original: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert!(
        !suspects_at(&original, "leak_small", FIXTURE, leak_line()).is_empty(),
        "capture has the leak: {original:#}"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // -f wins over the extension (all written to `.out`).
    check_folded(&render(d, json, "a.out", Some("folded")));
    check_svg(&original, &render(d, json, "b.out", Some("svg")));
    check_pprof(d, &render(d, json, "c.out", Some("pprof")));
    check_speedscope(&render(d, json, "d.out", Some("speedscope")));
    check_text(&render(d, json, "e.out", Some("text")));
    check_json(&original, &render(d, json, "f.out", Some("json")));
}

#[test]
fn format_follows_the_output_extension() {
    let Some((_keep, json)) = capture() else { return };
    let original: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    check_folded(&render(d, json, "x.folded", None));
    check_svg(&original, &render(d, json, "x.svg", None));
    check_pprof(d, &render(d, json, "x.pb.gz", None));
    check_pprof(d, &render(d, json, "x.pprof", None));
    check_speedscope(&render(d, json, "x.speedscope.json", None));
    check_json(&original, &render(d, json, "x.json", None));
    let text = render(d, json, "x.txt", None);
    check_text(&text);
    // An unknown extension is the default format, text.
    assert_eq!(render(d, json, "x.unknown", None), text);
    // Without -o: text on stdout.
    let (code, stdout, err) = report(json, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout, text);
}

fn assert_clean_user_error(code: i32, stderr: &str, what: &str) {
    assert_eq!(code, 1, "{what}: exit status; stderr: {stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{what}: no error line: {stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("hint: ")), "{what}: no hint line: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

#[test]
fn report_on_missing_or_corrupt_input_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let (code, out, err) = report(&missing, &["-f", "svg"]);
    assert_clean_user_error(code, &err, "missing file");
    assert!(out.is_empty());
    assert!(err.contains("nope.json"), "names the file: {err}");

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"{not json".to_vec()),
        ("empty", Vec::new()),
        ("binary", vec![0x1f, 0x8b, 0, 0xff, 0xfe]),
        ("another schema", br#"{"schema": 99, "suspects": []}"#.to_vec()),
        ("right schema, wrong shape", br#"{"schema": 1, "suspects": "many"}"#.to_vec()),
        ("a JSON array", b"[1, 2, 3]".to_vec()),
    ];
    if let Some((_keep, json)) = capture() {
        let text = std::fs::read(json).unwrap();
        cases.push(("truncated capture", text[..text.len() / 2].to_vec()));
    }
    for (what, bytes) in cases {
        let path = dir.path().join("corrupt.json");
        std::fs::write(&path, &bytes).unwrap();
        for format in ["text", "pprof"] {
            let (code, out, err) = report(&path, &["-f", format]);
            assert_clean_user_error(code, &err, what);
            assert!(out.is_empty(), "{what}: nothing on stdout");
        }
    }
    // A directory is not a report either.
    let (code, _out, err) = report(dir.path(), &[]);
    assert_clean_user_error(code, &err, "a directory");
}

/// An `-o` that cannot be written is refused before any work (issue #21: checked when the run
/// starts), with the path in the error and a hint, and nothing half-written anywhere. A write
/// that fails only at the end still prints the report on stdout (`output::write`).
fn assert_refused_up_front(code: i32, out: &str, err: &str) {
    assert_eq!(code, 1, "an -o that cannot be written is an error: {err}");
    assert!(err.lines().any(|l| l.starts_with("error: ") && l.contains("/nonexistent/dir/x.json")), "{err}");
    assert!(err.lines().any(|l| l.starts_with("hint: ") && l.contains("-o")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.contains("\"schema\""), "no report was made: {out}");
    assert!(!Path::new("/nonexistent/dir/x.json").exists());
}

#[test]
fn unwritable_output_is_refused_before_rendering() {
    let Some((_keep, json)) = capture() else { return };
    let (code, out, err) = report(json, &["-o", "/nonexistent/dir/x.json"]);
    println!("report -o /nonexistent/dir/x.json: exit {code}; stderr: {err}");
    assert_refused_up_front(code, &String::from_utf8_lossy(&out), &err);
}

#[test]
fn record_with_unwritable_output_is_refused_before_the_command_runs() {
    if !is_root() {
        println!("skipped: not root (real eBPF)");
        return;
    }
    let Some(python) = pythons_of(11).into_iter().next() else { return };
    let _g = serial();
    let script = fixture(FIXTURE);
    let (code, out, err) = run_tracer(&[
        "record",
        "-q",
        "-o",
        "/nonexistent/dir/x.json",
        "--",
        python.path.to_str().unwrap(),
        script.to_str().unwrap(),
        "2",
    ]);
    println!("record -o /nonexistent/dir/x.json: exit {code}; stderr: {err}");
    assert_refused_up_front(code, &out, &err);
    assert!(!out.contains("ready"), "the command never started: {out}");
}

/// `tracer report CAPTURE -o NAME ARGS...` in `dir`; returns the path written.
fn render_with(dir: &Path, input: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut all = vec!["-o", path.to_str().unwrap()];
    all.extend(args);
    let (code, _out, err) = report(input, &all);
    assert_eq!(code, 0, "report -o {name} {args:?}: {err}");
    path
}

#[test]
fn flame_graph_shows_verdicts_and_loads_in_chromium() {
    use flamegraph::*;
    let Some((_keep, json)) = capture() else { return };
    let original: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let leaks = render_with(dir.path(), json, "leaks.svg", &[]);
    let all = render_with(dir.path(), json, "all.svg", &["--all-stacks"]);
    for svg in [&leaks, &all] {
        check_svg(&original, &std::fs::read(svg).unwrap());
    }
    // With every stack drawn, what does not leak is grey and the leak stays red.
    let boxes = svg_boxes(&std::fs::read_to_string(&all).unwrap());
    let stable: Vec<&SvgBox> = boxes.iter().filter(|b| b.class == "stable").collect();
    assert!(!stable.is_empty(), "the capture has stable stacks (start-up)");
    assert!(stable.iter().all(|b| is_grey(&b.fill)), "{stable:#?}");
    assert!(boxes.iter().filter(|b| b.class == "leak").all(|b| is_red(&b.fill)));
    assert!(boxes.iter().filter(|b| b.class == "growing").all(|b| is_orange(&b.fill)));

    let Some(browser) = chromium::chromium() else {
        println!("skipped: no chromium (apt-get install chromium): the flame graph was not loaded in a browser");
        return;
    };
    for svg in [&leaks, &all] {
        // Narrow, so that labels must be cut.
        let page = chromium::load(&browser, &format!("file://{}", svg.display()), 700, 900);
        println!("chromium {}: {} console messages", svg.display(), page.console.len());
        assert!(page.errors().is_empty(), "console: {:#?}", page.console);
        assert!(!page.dom.contains("parsererror"), "Chromium could not parse it: {}", page.dom);
        let doc = parse_svg(&page.dom);
        // inferno's script ran: a fluid drawing drops the fixed width, and relabels every box.
        assert_eq!(doc.root_element().attribute("width"), None, "the flame graph's script did not run");
        // Labels are cut on the right: what a box shows is the start of its label.
        let boxes = svg_boxes(&page.dom);
        for b in &boxes {
            let label = b.title.rfind(" (").map_or("", |i| &b.title[..i]);
            assert!(label.starts_with(b.text.trim_end().trim_end_matches("..")), "{b:?}");
        }
        if svg == &leaks {
            // Wide enough here for the function's name, whatever the file part needs.
            let leak = svg_box(&boxes, &leak_label());
            assert!(leak.text.starts_with("leak_small"), "the label keeps the function name: {leak:?}");
        }
    }
}

/// The rows of `go tool pprof -top` as (flat is non-zero, name).
fn top_rows(top: &str) -> Vec<(bool, String)> {
    top.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 6).then(|| (cols[0] != "0", cols[5..].join(" ")))
        })
        .collect()
}

#[test]
fn pprof_top_puts_the_leaking_lines_first() {
    let Some((_keep, json)) = capture() else { return };
    let report: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let natives: std::collections::BTreeSet<String> = report["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["stack"].as_array().unwrap())
        .filter(|f| f["kind"] == "native")
        .map(|f| f["function"].as_str().unwrap().to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let profile = render_with(dir.path(), json, "heap.pb.gz", &[]);

    let top = pprof_top_with(&profile, &[]);
    println!("go tool pprof -top:\n{top}");
    let rows = top_rows(&top);
    let at = |name: &str| rows.iter().position(|(_, n)| n == name).unwrap_or_else(|| panic!("no {name} row:\n{top}"));
    let first_native = rows.iter().position(|(flat, n)| *flat && natives.contains(n)).unwrap_or(rows.len());
    for leak in ["leak_small", "leak_big"] {
        assert!(rows[at(leak)].0, "{leak} has flat bytes:\n{top}");
        assert!(at(leak) < first_native, "{leak} comes before anything native:\n{top}");
    }
    // By line, and with the leaks alone.
    let lines = pprof_top_with(&profile, &["-lines"]);
    let line = format!("leak_small {}:{}", fixture(FIXTURE).display(), leak_line());
    assert!(top_rows(&lines).iter().any(|(flat, n)| *flat && *n == line), "{line} in:\n{lines}");
    // A 4 s capture may call them growing rather than leak yet.
    let leaks = pprof_top_with(&profile, &["-tagfocus=verdict=leak|growing"]);
    let first = top_rows(&leaks).first().map(|r| r.1.clone()).unwrap_or_default();
    assert!(
        first == "leak_big" || first == "leak_small",
        "-tagfocus=verdict=leak|growing starts with {first}:\n{leaks}"
    );
    // -list starts at the def line.
    let list = pprof_top_with(&profile, &["-list=leak_small"]);
    assert!(list.contains("def leak_small():"), "{list}");

    // --native-leaf: the recorded shape, the allocator's caller gets the flat bytes.
    let native = render_with(dir.path(), json, "native.pb.gz", &["--native-leaf"]);
    let top = pprof_top_with(&native, &[]);
    let rows = top_rows(&top);
    assert!(natives.contains(&rows[0].1), "--native-leaf: a native function first:\n{top}");
    assert!(rows.iter().any(|(flat, n)| !flat && n == "leak_small"), "--native-leaf: leak_small has 0 flat:\n{top}");
}

/// `go tool pprof -top ARGS FILE` (`-list=...` replaces `-top`'s report).
fn pprof_top_with(file: &Path, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("go");
    cmd.args(["tool", "pprof"]);
    if !args.iter().any(|a| a.starts_with("-list")) {
        cmd.arg("-top");
    }
    let out = cmd
        .args(args)
        .arg(file)
        .env("PPROF_TMPDIR", dir.path())
        .env("HOME", dir.path())
        .output()
        .expect("go tool pprof (apt-get install golang-go)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "go tool pprof {args:?} {}: {text}", file.display());
    text
}

/// speedscope's own app (the npm package `cargo xtask test` unpacks into target/speedscope).
fn speedscope_app() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let index = target.join("speedscope/package/dist/release/index.html");
    index.is_file().then_some(index)
}

/// Opens `file` in speedscope the way its command line does, and returns the page's title.
fn open_in_speedscope(browser: &Path, app: &Path, file: &Path) -> String {
    use std::io::Write;
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let bytes = std::fs::read(file).unwrap();
    let loader = tempfile::Builder::new().suffix(".js").tempfile().unwrap();
    let base64 = base64_encode(&bytes);
    write!(loader.as_file(), "speedscope.loadFileFromBase64({}, {:?})", Value::from(name), base64).unwrap();
    let url = format!("file://{}#localProfilePath={}", app.display(), loader.path().display());
    let page = chromium::load(browser, &url, 1200, 800);
    println!("speedscope console for {}: {:#?}", file.display(), page.console);
    assert!(page.console.iter().any(|m| m.contains("Importing as speedscope json file")), "{:#?}", page.console);
    assert!(page.errors().is_empty(), "speedscope failed to import {}: {:#?}", file.display(), page.console);
    let title = page.dom.split("<title>").nth(1).and_then(|t| t.split("</title>").next()).unwrap_or_default();
    title.to_string()
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn speedscope_has_a_profile_per_process_and_loads_in_speedscope() {
    let Some((_keep, json)) = capture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let one = render_with(dir.path(), json, "one.speedscope.json", &[]);
    check_speedscope(&std::fs::read(&one).unwrap());

    // Two processes (as host mode reports them): the capture, and a quiet copy under another pid.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let mut quiet = report.clone();
    quiet["target"]["pid"] = Value::from(report["target"]["pid"].as_u64().unwrap() + 1);
    quiet["suspects"].as_array_mut().unwrap().retain(|s| s["verdict"] == "stable");
    let multi = dir.path().join("multi.json");
    let both = serde_json::json!({"schema": 1, "processes": [quiet, report]});
    std::fs::write(&multi, serde_json::to_vec(&both).unwrap()).unwrap();
    let two = render_with(dir.path(), &multi, "two.speedscope.json", &["--all-stacks"]);
    let v: Value = serde_json::from_slice(&std::fs::read(&two).unwrap()).unwrap();
    let schema: Value = serde_json::from_str(json_schema::SPEEDSCOPE_SCHEMA).unwrap();
    assert_eq!(json_schema::validate(&schema, &v), Vec::<String>::new());
    let profiles = v["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 2, "one profile per process");
    let pid = both["processes"][1]["target"]["pid"].as_u64().unwrap();
    assert!(profiles[1]["name"].as_str().unwrap().starts_with(&format!("outstanding memory: pid {pid} ")));
    assert!(v["shared"]["frames"].as_array().unwrap().iter().all(|f| !f["name"].as_str().unwrap().starts_with("pid ")));

    let Some(browser) = chromium::chromium() else {
        println!("skipped: no chromium (apt-get install chromium): speedscope was not opened");
        return;
    };
    let Some(app) = speedscope_app() else {
        println!("skipped: no speedscope app in target/speedscope (cargo xtask test unpacks `npm pack speedscope`)");
        return;
    };
    let title = open_in_speedscope(&browser, &app, &one);
    assert!(title.starts_with("outstanding memory: pid ") && title.ends_with(" - speedscope"), "{title}");
    let title = open_in_speedscope(&browser, &app, &two);
    assert!(title.starts_with("outstanding memory: pids ") && title.ends_with(" - speedscope"), "{title}");
}
