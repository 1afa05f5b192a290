//! Every export format through the binary: one real capture (`record -f json`, real eBPF, root),
//! then `tracer report` into each format, each output read back by what reads it (`go tool pprof`
//! for pprof, a folded-line parser, the speedscope schema, JSON round trip); the format picked
//! from `-o`'s extension; `tracer report` on missing and corrupt input; and an output path that
//! cannot be written (the report goes to stdout instead: no data lost). The writers' own unit
//! tests are in src/export/tests.rs.

mod common;

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

fn check_svg(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(text.contains("<svg"), "not an SVG");
    assert!(text.contains("leak_small"), "flame graph without leak_small");
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

fn check_speedscope(bytes: &[u8]) {
    let v: Value = serde_json::from_slice(bytes).expect("speedscope is JSON");
    assert_eq!(v["$schema"], "https://www.speedscope.app/file-format-schema.json");
    let frames = v["shared"]["frames"].as_array().expect("shared.frames");
    assert!(frames.iter().any(|f| f["name"].as_str().is_some_and(|n| n.contains("leak_small"))), "no leak_small frame");
    assert!(!v["profiles"].as_array().unwrap().is_empty());
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
    check_svg(&render(d, json, "b.out", Some("svg")));
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
    check_svg(&render(d, json, "x.svg", None));
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

#[test]
fn unwritable_output_goes_to_stdout_instead() {
    let Some((_keep, json)) = capture() else { return };
    let original: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let (code, out, err) = report(json, &["-o", "/nonexistent/dir/x.json"]);
    println!("report -o /nonexistent/dir/x.json: exit {code}; stderr: {err}");
    assert_eq!(code, 1, "a report that could not be written where asked is an error: {err}");
    assert!(err.lines().any(|l| l.starts_with("error: ") && l.contains("/nonexistent/dir/x.json")), "{err}");
    assert!(err.lines().any(|l| l.starts_with("hint: ") && l.contains("stdout")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let printed: Value = serde_json::from_slice(&out).expect("the JSON report on stdout");
    assert_eq!(printed, original, "the report on stdout is the whole report");
    assert!(!Path::new("/nonexistent/dir/x.json").exists());
}

#[test]
fn record_with_unwritable_output_prints_the_report() {
    if !is_root() {
        println!("skipped: not root (real eBPF)");
        return;
    }
    let Some(python) = pythons_of(11).into_iter().next() else { return };
    let _g = serial();
    let script = fixture(FIXTURE);
    let (code, out, err) = run_tracer(&[
        "record",
        "-i",
        "500ms",
        "-q",
        "-o",
        "/nonexistent/dir/x.json",
        "--",
        python.path.to_str().unwrap(),
        script.to_str().unwrap(),
        "2",
    ]);
    println!("record -o /nonexistent/dir/x.json: exit {code}; stderr: {err}");
    assert_eq!(code, 1, "a report that could not be written where asked is an error: {err}");
    assert!(err.lines().any(|l| l.starts_with("error: ") && l.contains("/nonexistent/dir/x.json")), "{err}");
    assert!(err.lines().any(|l| l.starts_with("hint: ") && l.contains("stdout")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The launched fixture shares stdout (it prints "ready" and its counts): the report is the
    // pretty-printed JSON object that starts with its schema.
    let start = out.find("{\n  \"schema\"").unwrap_or_else(|| panic!("no JSON report on stdout: {out}"));
    let printed: Value =
        serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("no JSON report on stdout ({e}): {out}"));
    assert!(!suspects_at(&printed, "leak_small", FIXTURE, leak_line()).is_empty(), "the report on stdout has the leak");
}
