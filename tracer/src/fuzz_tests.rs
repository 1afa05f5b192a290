//! Property tests of every parser that reads input the tracer does not control: /proc files,
//! ELF images, saved JSON reports (parsed and rendered in every format), kernel BTF. Random
//! and corrupted inputs (an xorshift generator, fixed seeds: failures reproduce) must give an
//! answer or an error: never a panic, never a loop (each property runs under a deadline). The
//! interesting inputs found along the way live in tests/data/corpus/ and are replayed first.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::btf::Btf;
use crate::elf::ElfImage;
use crate::export::{self, ExportOptions, Format};
use crate::procfs;
use crate::report::Reports;

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    /// `TRACER_FUZZ_SEED=N` explores other cases than the fixed ones.
    fn new(seed: u64) -> Self {
        let extra: u64 = std::env::var("TRACER_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        Rng((seed ^ extra.wrapping_mul(0x9e37_79b9_7f4a_7c15)).max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Flips, overwrites, inserts and deletes a few bytes.
    fn mutate_bytes(&mut self, data: &mut Vec<u8>, edits: usize) {
        for _ in 0..edits {
            let at = self.below(data.len().max(1));
            match self.below(6) {
                0 if !data.is_empty() => data[at] ^= 1 << self.below(8),
                1 if !data.is_empty() => data[at] = self.next() as u8,
                2 if !data.is_empty() => {
                    data[at] = *self.pick(&[0u8, 0xff, 0x7f, 0x80, b'\n', b' ', b'-', b':', b'"', b'{', b'}'])
                }
                3 => data.insert(at.min(data.len()), self.next() as u8),
                4 if !data.is_empty() => {
                    data.remove(at);
                }
                _ => data.truncate(at),
            }
        }
    }
}

/// Runs `body` on another thread and fails the test if it does not finish in `limit` (a
/// parser that loops) or panics.
fn within(limit: Duration, name: &str, body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            body();
            let _ = tx.send(());
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(()) => handle.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = handle.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: did not finish within {limit:?} (a parser loops?)"),
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus")
}

/// The corpus files whose names start with `prefix`, sorted.
fn corpus(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    assert!(!files.is_empty(), "corpus files {prefix}* in {}", corpus_dir().display());
    files
}

fn check_maps(text: &str) {
    for e in procfs::parse_maps(text) {
        assert!(e.start <= e.end && e.perms.len() == 4, "{e:?} from {text:?}");
        assert!(e.path.as_deref().is_none_or(|p| p.starts_with('/')), "{e:?}");
    }
    let _ = procfs::parse_status(text);
    let _ = procfs::parse_cmdline(text.as_bytes());
}

#[test]
fn proc_parsers_take_any_text() {
    within(Duration::from_secs(60), "proc", || {
        for (name, bytes) in corpus("maps_").into_iter().chain(corpus("status_")).chain(corpus("cmdline_")) {
            let text = String::from_utf8_lossy(&bytes);
            check_maps(&text);
            let _ = procfs::parse_cmdline(&bytes);
            if name.starts_with("maps_") {
                // The corpus's well-formed lines are kept.
                assert!(!procfs::parse_maps(&text).is_empty(), "{name}");
            }
        }
        let real_maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let real_status = std::fs::read_to_string("/proc/self/status").unwrap();
        let real_cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        let alphabet = b"0123456789abcdefx- /:rwxps\n\t[]()\0\xc3\xa9";
        let mut rng = Rng::new(0x5eed_0001);
        for case in 0..6000 {
            let text = match case % 3 {
                0 => {
                    let n = rng.below(200);
                    let bytes: Vec<u8> = (0..n).map(|_| *rng.pick(alphabet)).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                1 => {
                    let mut bytes = real_maps.as_bytes().to_vec();
                    let edits = 1 + rng.below(20);
                    rng.mutate_bytes(&mut bytes, edits);
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                _ => {
                    let mut bytes = real_status.as_bytes().to_vec();
                    let edits = 1 + rng.below(20);
                    rng.mutate_bytes(&mut bytes, edits);
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            };
            check_maps(&text);
            let mut cmd = real_cmdline.clone();
            let edits = rng.below(8);
            rng.mutate_bytes(&mut cmd, edits);
            let _ = procfs::parse_cmdline(&cmd);
        }
    });
}

/// Every query an ElfImage answers, at addresses taken from the image and at random ones.
fn exercise_elf(image: &ElfImage, rng: &mut Rng) {
    for name in ["malloc", "free", "_PyRuntime", "", "malloc@@GLIBC_2.2.5"] {
        if let Some(v) = image.symbol(name) {
            let _ = image.file_offset(v);
            let _ = image.code_at(v, 16);
            let _ = image.bytes_at(v, 4096);
        }
    }
    for _ in 0..8 {
        let addr = match rng.below(3) {
            0 => rng.next(),
            1 => rng.next() % (4 << 20),
            _ => u64::MAX - rng.next() % 64,
        };
        let _ = image.file_offset(addr);
        let _ = image.vaddr_of_offset(addr);
        let _ = image.bytes_at(addr, rng.below(1 << 16));
        let _ = image.bytes_at(addr, usize::MAX - rng.below(8));
    }
}

#[test]
fn elf_parser_takes_truncated_and_corrupted_images() {
    within(Duration::from_secs(240), "elf", || {
        let mut rng = Rng::new(0x5eed_0002);
        for (name, bytes) in corpus("elf_") {
            if let Ok(image) = ElfImage::parse(name.into(), bytes) {
                exercise_elf(&image, &mut rng);
            }
        }
        let libc = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
            .iter()
            .find_map(|p| std::fs::read(p).ok());
        let Some(libc) = libc else {
            eprintln!("skipped: no libc.so.6 to corrupt");
            return;
        };
        let whole = ElfImage::parse("libc".into(), libc.clone()).expect("the real libc parses");
        assert!(whole.symbol("malloc").is_some());
        // Truncated: mostly inside the headers and tables, some anywhere.
        for case in 0..400 {
            let len = if case % 2 == 0 { rng.below(16 << 10) } else { rng.below(libc.len()) };
            if let Ok(image) = ElfImage::parse("truncated".into(), libc[..len].to_vec()) {
                exercise_elf(&image, &mut rng);
            }
        }
        // Corrupted: a few bytes in the ELF header, program and section headers, or anywhere.
        let shoff = u64::from_le_bytes(libc[0x28..0x30].try_into().unwrap()) as usize;
        for case in 0..400 {
            let mut data = libc.clone();
            for _ in 0..1 + rng.below(12) {
                let at = match case % 4 {
                    0 => rng.below(64),
                    1 => 64 + rng.below(14 * 56),
                    2 => shoff + rng.below(data.len().saturating_sub(shoff).max(1)),
                    _ => rng.below(data.len()),
                }
                .min(data.len() - 1);
                data[at] = match rng.below(4) {
                    0 => 0xff,
                    1 => 0,
                    _ => rng.next() as u8,
                };
            }
            if let Ok(image) = ElfImage::parse("corrupted".into(), data) {
                exercise_elf(&image, &mut rng);
            }
        }
        // Noise behind an ELF magic.
        for _ in 0..2000 {
            let n = rng.below(512);
            let mut data: Vec<u8> = b"\x7fELF\x02\x01\x01\0".to_vec();
            data.extend((0..n).map(|_| rng.next() as u8));
            if let Ok(image) = ElfImage::parse("noise".into(), data) {
                exercise_elf(&image, &mut rng);
            }
        }
    });
}

const FORMATS: [Format; 6] =
    [Format::Text, Format::Json, Format::Folded, Format::Svg, Format::Pprof, Format::Speedscope];

/// Parses a saved report; when it parses, renders it in every format (as `tracer report`
/// does) with and without every stack.
fn report_roundtrip(text: &str) -> bool {
    let Ok(saved) = Reports::parse(text) else { return false };
    for format in FORMATS {
        let native_leaf = ExportOptions { all_stacks: true, top: 1, native_leaf: true, ..ExportOptions::default() };
        for opts in
            [ExportOptions { all_stacks: false, top: 10, native_leaf: false, ..ExportOptions::default() }, native_leaf]
        {
            let mut out = Vec::new();
            let _ = export::write_reports(format, &saved, &opts, &mut out);
        }
    }
    true
}

/// A random place in a JSON tree gets an odd value, loses a key, or is emptied.
#[expect(clippy::too_many_lines, reason = "one match over every JSON value kind and mutation")]
fn mutate_json(v: &mut Value, rng: &mut Rng, depth: u32) {
    let descend = depth < 12 && rng.below(5) != 0;
    match v {
        Value::Object(map) if descend && !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            if rng.below(8) == 0 {
                map.remove(&key);
            } else {
                mutate_json(map.get_mut(&key).unwrap(), rng, depth + 1);
            }
        }
        Value::Array(items) if descend && !items.is_empty() => {
            let i = rng.below(items.len());
            match rng.below(8) {
                0 => {
                    items.remove(i);
                }
                1 => {
                    let copy = items[i].clone();
                    items.push(copy);
                }
                _ => mutate_json(&mut items[i], rng, depth + 1),
            }
        }
        // Mostly the same type with an odd value, so that the mutant is often still a report.
        Value::Number(_) if rng.below(5) != 0 => {
            let numbers = [
                serde_json::json!(0),
                serde_json::json!(u64::MAX),
                serde_json::json!(u32::MAX),
                serde_json::json!(1u64 << 53),
                serde_json::json!(1e308),
                serde_json::json!(-1e308),
                serde_json::json!(-0.0),
                serde_json::json!(5e-324),
                serde_json::json!(-1),
            ];
            *v = rng.pick(&numbers).clone();
        }
        Value::String(_) if rng.below(5) != 0 => {
            let strings = [
                "",
                ";",
                " ",
                "\n",
                "<svg>&amp;\"'",
                "\u{0}",
                "\u{202e}é日本",
                "leak",
                "growing",
                "bounded",
                "stable",
                "python",
                "native",
                "json",
                "[native] x",
            ];
            *v = Value::String(rng.pick(&strings).to_string());
        }
        _ => {
            let odd = [
                Value::Null,
                Value::Bool(true),
                serde_json::json!(0),
                serde_json::json!(-1),
                serde_json::json!(u64::MAX),
                serde_json::json!(i64::MIN),
                serde_json::json!(1e308),
                serde_json::json!(-1e308),
                serde_json::json!(5e-324),
                serde_json::json!(0.5),
                serde_json::json!(""),
                serde_json::json!("<svg>&amp;\"';\n\t\u{0}\u{202e}é"),
                serde_json::json!("x".repeat(5000)),
                serde_json::json!([]),
                serde_json::json!({}),
                serde_json::json!("leak"),
                serde_json::json!("python"),
                serde_json::json!("native"),
            ];
            *v = rng.pick(&odd).clone();
        }
    }
}

#[test]
fn saved_reports_parse_or_fail_cleanly_and_render() {
    within(Duration::from_secs(240), "report", || {
        let mut rng = Rng::new(0x5eed_0003);
        for (name, bytes) in corpus("report_") {
            let text = String::from_utf8_lossy(&bytes);
            let parsed = report_roundtrip(&text);
            if name.contains("_ok") {
                assert!(parsed, "{name} is a valid report");
            }
        }
        let one = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/export/report.json"))
            .unwrap();
        assert!(report_roundtrip(&one));
        let one_value: Value = serde_json::from_str(&one).unwrap();
        let multi_value =
            serde_json::json!({"schema": 1, "processes": [one_value.clone(), one_value.clone()], "skipped": []});
        let multi = multi_value.to_string();
        assert!(report_roundtrip(&multi));
        let mut parsed = 0;
        for case in 0..6000 {
            let base = if case % 2 == 0 { &one_value } else { &multi_value };
            if case % 3 == 0 {
                let mut bytes = if case % 2 == 0 { one.as_bytes().to_vec() } else { multi.as_bytes().to_vec() };
                let edits = 1 + rng.below(6);
                rng.mutate_bytes(&mut bytes, edits);
                parsed += report_roundtrip(&String::from_utf8_lossy(&bytes)) as usize;
            } else {
                let mut v = base.clone();
                for _ in 0..1 + rng.below(2) {
                    mutate_json(&mut v, &mut rng, 0);
                }
                parsed += report_roundtrip(&v.to_string()) as usize;
            }
        }
        // Enough mutants are still reports to exercise the renderers, not only the parser.
        assert!(parsed > 500, "only {parsed} mutants parsed");
    });
}

fn exercise_btf(btf: &Btf) {
    let _ = btf.offset_of("task_struct", &["thread", "fsbase"]);
    let _ = btf.offset_of("task_struct", &["tgid"]);
    let _ = btf.offset_of("", &[""]);
}

#[test]
fn btf_parser_takes_corrupted_blobs() {
    within(Duration::from_secs(240), "btf", || {
        for (name, bytes) in corpus("btf_") {
            if let Ok(btf) = Btf::parse(bytes) {
                exercise_btf(&btf);
            } else {
                assert!(!name.contains("_ok"), "{name} parses");
            }
        }
        let Ok(vmlinux) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux");
            return;
        };
        let mut rng = Rng::new(0x5eed_0004);
        let hdr_len = u32::from_le_bytes(vmlinux[4..8].try_into().unwrap()) as usize;
        let type_len = u32::from_le_bytes(vmlinux[12..16].try_into().unwrap()) as usize;
        for case in 0..240 {
            let mut data = vmlinux.clone();
            match case % 4 {
                // Header fields set to odd values.
                0 => {
                    let field = 4 + 4 * rng.below(5);
                    let random = rng.next() as u32;
                    let value: u32 = *rng.pick(&[0, 1, 12, u32::MAX, u32::MAX - 3, data.len() as u32, random]);
                    data[field..field + 4].copy_from_slice(&value.to_le_bytes());
                }
                // Truncated anywhere.
                1 => data.truncate(rng.below(vmlinux.len())),
                // Type records corrupted (kinds, vlen, member names and types).
                2 => {
                    for _ in 0..1 + rng.below(64) {
                        let at = hdr_len + rng.below(type_len);
                        data[at] = rng.next() as u8;
                    }
                }
                _ => {
                    let edits = 1 + rng.below(16);
                    rng.mutate_bytes(&mut data, edits);
                }
            }
            if let Ok(btf) = Btf::parse(data) {
                exercise_btf(&btf);
            }
        }
    });
}
