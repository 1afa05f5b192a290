//! `tracer serve`, end to end with real eBPF (root): a leaking CPython process, the daemon on a
//! free loopback port, every endpoint fetched by a real client (`go tool pprof` for the profile,
//! a plain TcpStream for the rest), the HTTP limits (405, oversized heads), SIGTERM with every
//! probe released, stopping by itself when the target exits, and `--push` to a Pyroscope-style
//! `/ingest` listener run by the test, over http and over https (a private CA made by the test).

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const FIXTURE: &str = "two_leaks.py";

fn require_root() -> bool {
    if !is_root() {
        println!("skipped: not root (real eBPF tests need root)");
    }
    is_root()
}

/// The first CPython 3.11 of the machine (pyenv's first), or None with a "skipped" line.
fn python() -> Option<Python> {
    pythons_of(11).into_iter().next()
}

/// `two_leaks.py SECONDS`, started directly (it leaks from its first tick, no trigger).
struct Target(Child);

impl Target {
    fn start(python: &Python, seconds: u32) -> Target {
        let mut child = Command::new(&python.path)
            .arg(fixture(FIXTURE))
            .arg(seconds.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fixture");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "fixture did not start");
        Target(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `tracer serve`; its stderr is collected by a thread. Killed if still running at
/// drop (a failed assertion must not leave a tracer behind).
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        // These tests check the daemon with its probes attached throughout; serve's default
        // `--window auto` is covered by windows.rs.
        let window: &[&str] = if args.contains(&"--window") { &[] } else { &["--window", "off"] };
        let mut child = Command::new(tracer_bin())
            .arg("serve")
            .args(args)
            .args(window)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracer serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Daemon { child, stderr, reader: Some(reader) }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `/metrics` answers 200; panics with the daemon's stderr otherwise.
    fn wait_answering(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tracer serve exited ({status}) before answering: {}", self.stderr());
            }
            if let Ok((200, _, _)) = try_get(port, "/metrics") {
                return;
            }
            assert!(Instant::now() < deadline, "tracer serve never answered: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the exit (at most `limit`); returns the exit code and the whole stderr.
    fn wait_exit(&mut self, limit: Duration) -> (i32, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "tracer serve did not exit within {limit:?}: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status.code().unwrap_or(-1), self.stderr())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends raw bytes as one request; returns (status, head, body).
fn raw_request(port: u16, request: &[u8]) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(request)?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    let split =
        bytes.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no response head"))?;
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status =
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, head, bytes[split + 4..].to_vec()))
}

fn try_get(port: u16, path: &str) -> std::io::Result<(u16, String, Vec<u8>)> {
    raw_request(port, format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes())
}

fn get(port: u16, path: &str) -> (String, Vec<u8>) {
    let (status, head, body) = try_get(port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "GET {path}: {head}");
    (head, body)
}

/// `go tool pprof -top SOURCE` (a URL or a file), with its downloads kept in a temporary dir.
fn pprof_top(source: &str) -> String {
    pprof_run(&["-top"], source)
}

/// `go tool pprof FLAGS SOURCE`.
fn pprof_run(flags: &[&str], source: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(flags)
        .arg(source)
        .env("PPROF_TMPDIR", dir.path())
        .env("HOME", dir.path())
        .output()
        .expect("go tool pprof (apt-get install golang-go)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "go tool pprof {flags:?} {source} failed:\n{text}");
    text
}

/// One sample of the Prometheus text format: `name{label="value",...} value`.
#[derive(Debug)]
struct PromSample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the text exposition format strictly enough to catch a malformed line: metric and label
/// names, quoted and escaped label values, a float value; `# HELP`/`# TYPE` comments.
fn parse_prometheus(text: &str) -> Vec<PromSample> {
    let is_name = |s: &str, colon: bool| {
        !s.is_empty()
            && s.chars().enumerate().all(|(i, c)| {
                c == '_' || (colon && c == ':') || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut samples = Vec::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or("");
            assert!(kind == "HELP" || kind == "TYPE", "unknown comment: {line}");
            assert!(is_name(name, true), "bad metric name in {line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t), "bad type in {line}");
                assert!(typed.insert(name.to_string()), "TYPE twice for {name}");
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(is_name(name, true), "bad metric name: {line}");
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').unwrap_or_else(|| panic!("bad label in {line}"));
                let key = &rest[..eq];
                assert!(is_name(key, false), "bad label name {key:?} in {line}");
                rest = rest[eq + 1..].strip_prefix('"').unwrap_or_else(|| panic!("unquoted label value in {line}"));
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    let (i, c) = chars.next().unwrap_or_else(|| panic!("unterminated label value in {line}"));
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => panic!("bad escape {other:?} in {line}"),
                        },
                        '"' => break i,
                        c => value.push(c),
                    }
                };
                labels.push((key.to_string(), value));
                rest = &rest[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let value_text = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value: {line}"));
        let value_text = value_text.split(' ').next().unwrap();
        let value = match value_text {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value {v:?} in {line}")),
        };
        samples.push(PromSample { name: name.to_string(), labels, value });
    }
    samples
}

impl PromSample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[test]
fn default_listen_address_is_loopback_6060() {
    let (code, out, err) = run_tracer(&["serve", "--help"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("--listen <ADDR>") && out.contains("[default: 127.0.0.1:6060]"), "{out}");
    for flag in ["--push <URL>", "--interval <INTERVAL>", "--pid <PID>"] {
        assert!(out.contains(flag), "{flag} in:\n{out}");
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one end-to-end scenario: every endpoint of one daemon checked by its real client"
)]
fn serves_every_endpoint_and_stops_on_sigterm() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 120);
    let pid = target.pid().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = Daemon::start(&["-p", &pid, "--listen", &listen, "-i", "1s"]);
    daemon.wait_answering(port);
    let held = bpf_ids_held_by(daemon.child.id());
    std::thread::sleep(Duration::from_secs(10));
    let small_line = line_of(FIXTURE, "KEPT_SMALL.append");

    // The pprof convention, read by the real client.
    let top = pprof_top(&format!("http://{listen}/debug/pprof/heap"));
    println!("go tool pprof -top http://{listen}/debug/pprof/heap:\n{top}");
    assert!(top.contains("Type: inuse_space"), "{top}");
    assert!(top.contains("leak_small") && top.contains("leak_big"), "{top}");

    let (head, svg) = get(port, "/flamegraph.svg");
    assert!(head.contains("Content-Type: image/svg+xml"), "{head}");
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("<svg") && svg.contains("leak_small"), "flame graph without leak_small");

    let (head, json) = get(port, "/report.json");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let report: Value = serde_json::from_slice(&json).expect("report.json is JSON");
    assert_eq!(report["schema"], 1);
    assert_eq!(report["final_view"], "live");
    assert_eq!(report["target"]["pid"].as_u64(), Some(target.pid() as u64));
    let small = suspects_at(&report, "leak_small", FIXTURE, small_line);
    assert!(!small.is_empty(), "leak_small not among the suspects: {report:#}");
    assert!(
        small.iter().any(|s| s["verdict"] == "leak" || s["verdict"] == "growing"),
        "leak_small is neither leak nor growing after 10 s: {:#?}",
        small
    );
    assert!(report["duration_s"].as_f64().unwrap() >= 9.0, "live report keeps growing its window");

    let (head, text) = get(port, "/metrics");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    let text = String::from_utf8(text).unwrap();
    let samples = parse_prometheus(&text);
    let one = |name: &str| {
        samples.iter().find(|s| s.name == name && s.labels.is_empty()).unwrap_or_else(|| panic!("no {name}:\n{text}"))
    };
    assert!(one("tracer_outstanding_bytes").value > 100_000.0, "{text}");
    assert!(
        samples.iter().any(|s| s.name == "tracer_events_total" && s.label("kind") == Some("alloc") && s.value > 0.0),
        "{text}"
    );
    assert!(
        samples.iter().any(|s| s.name == "tracer_lost_total" && s.label("counter") == Some("stack_truncated")),
        "{text}"
    );
    let growth = samples
        .iter()
        .find(|s| {
            s.name == "tracer_suspect_growth_bytes_per_second"
                && s.label("function") == Some("leak_small")
                && s.label("line") == Some(small_line.to_string().as_str())
        })
        .unwrap_or_else(|| panic!("no growth series for leak_small:\n{text}"));
    assert!(growth.value > 10_000.0, "leak_small grows ~100 KB/s: {growth:?}");
    assert!(growth.label("verdict").is_none(), "the verdict is not part of a line's identity: {growth:?}");
    let verdict = samples
        .iter()
        .find(|s| s.name == "tracer_suspect_verdict" && s.label("function") == Some("leak_small"))
        .unwrap_or_else(|| panic!("no verdict series for leak_small:\n{text}"));
    assert!(verdict.value >= 2.0, "leak_small is growing (2) or a leak (3): {verdict:?}");
    let rss = one("tracer_target_rss_bytes").value;
    assert!(rss > 5e6, "the target's RSS: {rss}");
    assert!(growth.label("file").is_some_and(|f| f.ends_with(FIXTURE)), "{growth:?}");
    let holder = samples
        .iter()
        .find(|s| s.name == "tracer_holder_length" && s.label("path") == Some("__main__.KEPT_SMALL"))
        .unwrap_or_else(|| panic!("no holder series for __main__.KEPT_SMALL:\n{text}"));
    assert!(holder.value > 500.0, "{holder:?}");

    let (head, index) = get(port, "/");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    let index = String::from_utf8(index).unwrap();
    for href in ["/debug/pprof/heap", "/flamegraph.svg", "/report.json", "/metrics"] {
        assert!(index.contains(&format!("href=\"{href}\"")), "index links {href}:\n{index}");
    }

    // Only GET and HEAD; unknown paths 404; heads are bounded.
    let (status, head, _) =
        raw_request(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    assert_eq!(status, 405, "{head}");
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let (status, head, _) = raw_request(port, b"PUT /report.json HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(status, 405, "{head}");
    let (status, head, body) = raw_request(port, b"HEAD /report.json HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!((status, body.len()), (200, 0), "{head}");
    assert_eq!(try_get(port, "/etc/passwd").unwrap().0, 404);
    assert_eq!(try_get(port, "/debug/pprof/../../report.json").unwrap().0, 404);
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(90)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    assert!(big.len() > 20_000);
    match raw_request(port, &big) {
        Ok((status, head, _)) => assert_eq!(status, 431, "a 20 KB request head: {head}"),
        Err(e) => println!("a 20 KB request head: connection ended without an answer ({e})"),
    }
    // Still serving after all that.
    get(port, "/metrics");

    let stopping = Instant::now();
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let (code, stderr) = daemon.wait_exit(Duration::from_secs(8));
    println!(
        "tracer serve exited {:.2} s after SIGTERM (detaching the probes is most of it)",
        stopping.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "exit status after SIGTERM: {stderr}");
    assert!(stderr.contains("all probes detached"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "still listening after exit");
    assert_released(&held, "tracer serve");
    drop(target);
}

#[test]
fn stops_by_itself_when_the_target_exits_and_logs_push_failures_once() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 6);
    let pid = target.pid().to_string();
    let port = free_port();
    // Nothing listens here: every push fails; the daemon says so once.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut daemon =
        Daemon::start(&["-p", &pid, "--listen", &format!("127.0.0.1:{port}"), "-i", "500ms", "--push", &dead]);
    daemon.wait_answering(port);
    let held = bpf_ids_held_by(daemon.child.id());
    let (code, stderr) = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("stopped (finalization)") || stderr.contains("stopped (target_exited)"),
        "stopped because the target ended: {stderr}"
    );
    assert!(stderr.contains("all probes detached"), "{stderr}");
    assert_eq!(stderr.matches("failed").count(), 1, "push failures logged once: {stderr}");
    assert_released(&held, "tracer serve");
    drop(target);
}

/// One request the fake Pyroscope received.
#[derive(Debug, Clone)]
struct Ingested {
    request_line: String,
    head: String,
    body: Vec<u8>,
}

/// A tiny HTTP listener that records every request and answers 200 (503 to the first
/// `fail_first` requests).
fn fake_pyroscope(fail_first: usize) -> (u16, Arc<Mutex<Vec<Ingested>>>) {
    fake_pyroscope_over(fail_first, None)
}

/// [`fake_pyroscope`], speaking https with `tls` when given: a connection whose handshake fails
/// records nothing.
fn fake_pyroscope_over(fail_first: usize, tls: Option<Arc<rustls::ServerConfig>>) -> (u16, Arc<Mutex<Vec<Ingested>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
            match &tls {
                Some(config) => {
                    let conn = rustls::ServerConnection::new(Arc::clone(config)).unwrap();
                    let mut stream = rustls::StreamOwned::new(conn, stream);
                    answer_ingest(&mut stream, fail_first, &sink);
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }
                None => answer_ingest(&mut { stream }, fail_first, &sink),
            }
        }
    });
    (port, seen)
}

/// Reads one request from `stream`, records it and answers it.
fn answer_ingest(stream: &mut impl ReadWrite, fail_first: usize, sink: &Mutex<Vec<Ingested>>) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i + 4);
        }
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
            _ => break None,
        }
    };
    let Some(head_end) = head_end else { return };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let mut seen = sink.lock().unwrap();
    let answer: &[u8] = if seen.len() < fail_first {
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    };
    let _ = stream.write_all(answer);
    let _ = stream.flush();
    seen.push(Ingested {
        request_line: head.lines().next().unwrap_or("").to_string(),
        head: head.clone(),
        body: bytes[head_end..].to_vec(),
    });
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A private CA made for this run (its PEM) and the ingest server's TLS config: a certificate
/// for 127.0.0.1 signed by that CA.
fn private_ca_and_server() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "tracer test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server.signed_by(&key, &ca).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server.der().clone(), ca.der().clone()], key.into())
        .unwrap();
    (ca.pem(), Arc::new(config))
}

#[test]
fn pushes_the_profile_to_a_pyroscope_ingest_endpoint() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 120);
    let pid = target.pid();
    let (ingest_port, seen) = fake_pyroscope(0);
    let port = free_port();
    let push = format!("http://127.0.0.1:{ingest_port}");
    let mut daemon =
        Daemon::start(&["-p", &pid.to_string(), "--listen", &format!("127.0.0.1:{port}"), "-i", "1s", "--push", &push]);
    daemon.wait_answering(port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "fewer than 4 pushes in 30 s: {}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGINT) };
    let (code, stderr) = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(code, 0, "{stderr}");
    let pushes = seen.lock().unwrap().clone();
    let want = format!("POST /ingest?name=tracer.python%7Bpid%3D{pid}%2Chostname%3D");
    let mut last_until = 0u64;
    for p in &pushes {
        assert!(p.request_line.starts_with(&want), "{}", p.request_line);
        assert!(
            p.request_line.contains("&format=pprof") && p.request_line.ends_with(" HTTP/1.1"),
            "{}",
            p.request_line
        );
        assert!(p.head.to_ascii_lowercase().contains("content-type: application/octet-stream"), "{}", p.head);
        let query = p.request_line.split(['?', ' ']).nth(2).unwrap();
        let param = |k: &str| -> u64 {
            query.split('&').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok()).unwrap()
        };
        let (from, until) = (param("from"), param("until"));
        assert!(
            from < until && from >= last_until.saturating_sub(1),
            "from {from} until {until} (previous until {last_until})"
        );
        last_until = until;
        assert_eq!(&p.body[..2], &[0x1f, 0x8b], "body is a gzipped profile");
    }
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("pushed.pb.gz");
    std::fs::write(&file, &pushes.last().unwrap().body).unwrap();
    let top = pprof_top(file.to_str().unwrap());
    println!("go tool pprof -top of the last push:\n{top}");
    assert!(top.contains("leak_small"), "{top}");
    drop(target);
}

#[test]
fn clear_errors_before_attaching() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 60);
    let pid = target.pid().to_string();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["serve", "-p", &pid, "--listen", &addr], "cannot listen on"),
        (
            &["serve", "-p", &pid, "--listen", "127.0.0.1:0", "--push", "ftp://pyroscope:4040"],
            "only http:// and https://",
        ),
        (&["serve", "-p", "0", "--listen", "127.0.0.1:0"], "not a valid PID"),
        (&["serve", "-p", "999999999", "--listen", "127.0.0.1:0"], ""),
    ];
    for (args, message) in cases {
        let (code, _out, err) = run_tracer(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.lines().any(|l| l.starts_with("error: ") && l.contains(message)), "{args:?}: {err}");
        assert!(err.lines().any(|l| l.starts_with("hint: ")), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A private CA that cannot be read stops the daemon before anything is attached.
    let out = Command::new(tracer_bin())
        .args(["serve", "-p", &pid, "--listen", "127.0.0.1:0", "--push", "https://127.0.0.1:1"])
        .env("TRACER_PUSH_CA", "/nonexistent/ca.pem")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.lines().any(|l| l.starts_with("error: TRACER_PUSH_CA=/nonexistent/ca.pem")), "{err}");
    assert!(err.lines().any(|l| l.starts_with("hint: ") && l.contains("PEM")), "{err}");
    assert!(!err.contains("serving on") && !err.contains("panicked"), "{err}");
    drop(taken);
    drop(target);
}

/// A child process killed (and reaped) when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The section of `pid` in a host-mode report (`{"schema":1,"processes":[...]}`).
fn section(report: &Value, pid: u32) -> Option<&Value> {
    report["processes"].as_array()?.iter().find(|p| p["target"]["pid"].as_u64() == Some(pid as u64))
}

/// `go tool pprof -top -tagfocus=pid=^PID$ URL`: the profile narrowed to one process by its label
/// (anchored: a bare number would be read as a numeric range).
fn pprof_top_of_pid(url: &str, pid: u32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-top", &format!("-tagfocus=pid=^{pid}$"), url])
        .env("PPROF_TMPDIR", dir.path())
        .env("HOME", dir.path())
        .output()
        .expect("go tool pprof");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "go tool pprof -tagfocus=pid={pid} failed:\n{text}");
    text
}

/// `serve --all --match MARKER`: a CPython process started before the daemon and one started
/// after it (which then exits normally) are served as separate profiles, each leak under its own
/// PID with its file:line and block size; the exited one keeps its last report; a non-Python
/// process carrying the marker gets no probe.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one end-to-end scenario: three processes started, scraped and ended in order"
)]
fn serve_all_serves_each_process_under_its_own_pid() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let all = pythons();
    let Some(first) = all.iter().find(|p| p.minor == 11).cloned() else {
        println!("skipped: no CPython 3.11");
        return;
    };
    let later = all
        .iter()
        .find(|p| p.minor == 12)
        .or_else(|| all.iter().find(|p| p.minor == 13))
        .cloned()
        .unwrap_or_else(|| first.clone());
    let marker = format!("tracer-serve-all-{}", std::process::id());
    // Extra arguments are ignored by the fixtures: they only make the command lines unique.
    let mut before =
        Command::new(&first.path).arg(fixture(FIXTURE)).args(["120", &marker]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(before.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let before = Spawned(before);
    let native = Spawned(
        Command::new("perl")
            .args(["-e", "my $end = time + 60; while (time < $end) { my $x = 'a' x 100000; }", &marker])
            .spawn()
            .unwrap(),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = Daemon::start(&["--all", "--match", &marker, "--listen", &listen, "-i", "1s"]);
    daemon.wait_answering(port);
    let held = bpf_ids_held_by(daemon.child.id());
    std::thread::sleep(Duration::from_secs(1));
    // Started after the daemon; leaks for 12 s, then exits normally (finalization).
    let mut after = Command::new(&later.path)
        .arg(fixture("exit_leak.py"))
        .args(["12", &marker])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let after_pid = after.id();
    let deadline = Instant::now() + Duration::from_secs(40);
    while after.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "exit_leak.py did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Retired at its finalization; one interval later the served report has it.
    std::thread::sleep(Duration::from_secs(2));

    assert_eq!(
        malloc_first_byte(native.0.id()),
        malloc_first_byte(std::process::id()),
        "the non-Python process has no probe in its malloc"
    );
    assert_eq!(malloc_first_byte(before.0.id()), 0xcc, "the traced process has its probe");

    let (head, json) = get(port, "/report.json");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let report: Value = serde_json::from_slice(&json).expect("report.json is JSON");
    assert_eq!(report["schema"], 1);
    assert!(section(&report, native.0.id()).is_none(), "the non-Python process is not traced: {report:#}");
    let small_line = line_of(FIXTURE, "KEPT_SMALL.append");
    let exit_line = line_of("exit_leak.py", "KEPT[COUNT] = bytearray(4096)");

    let a = section(&report, before.0.id())
        .unwrap_or_else(|| panic!("pid {} (started before) has a section: {report:#}", before.0.id()));
    assert_eq!(a["final_view"], "live");
    assert!(a["target"]["cmdline"].as_str().unwrap().contains(&marker));
    let small: Vec<&Value> =
        suspects_at(a, "leak_small", FIXTURE, small_line).into_iter().filter(|s| s["allocator"] == "malloc").collect();
    assert!(sum(&small, "outstanding_count") > 500, "leak_small under pid {}: {a:#}", before.0.id());
    assert!(small.iter().all(|s| s["outstanding_bytes"].as_u64().unwrap() % 1001 == 0), "1001-byte blocks: {small:#?}");
    assert!(small.iter().any(|s| s["verdict"] == "leak"), "leak_small is a leak: {small:#?}");
    assert!(
        suspects_at(a, "remember", "exit_leak.py", exit_line).is_empty(),
        "the other process's leak is not in this one's report"
    );

    let b = section(&report, after_pid)
        .unwrap_or_else(|| panic!("pid {after_pid} (started after, exited) keeps a section: {report:#}"));
    assert!(b["final_view"] == "finalization" || b["final_view"] == "target_exited", "{}", b["final_view"]);
    assert_eq!(b["target"]["python"].as_str().unwrap().split('.').nth(1).unwrap(), later.minor.to_string());
    let kept: Vec<&Value> = suspects_at(b, "remember", "exit_leak.py", exit_line)
        .into_iter()
        .filter(|s| s["allocator"] == "malloc")
        .collect();
    assert!(sum(&kept, "outstanding_count") > 300, "remember() under pid {after_pid}: {b:#}");
    assert!(kept.iter().all(|s| s["outstanding_bytes"].as_u64().unwrap() % 4097 == 0), "4097-byte blocks: {kept:#?}");
    assert!(
        kept.iter().any(|s| matches!(s["verdict"].as_str(), Some("leak" | "growing"))),
        "remember() grows: {kept:#?}"
    );
    assert!(
        suspects_at(b, "leak_small", FIXTURE, small_line).is_empty(),
        "the first process's leak is not in this one's report"
    );
    println!(
        "pid {} leak_small: {} bytes in {} blocks ({}); exited pid {after_pid} remember: {} bytes in {} blocks ({}, final view {})",
        before.0.id(),
        sum(&small, "outstanding_bytes"),
        sum(&small, "outstanding_count"),
        small[0]["verdict"],
        sum(&kept, "outstanding_bytes"),
        sum(&kept, "outstanding_count"),
        kept[0]["verdict"],
        b["final_view"]
    );

    // Later intervals do not touch the report of the process that ended.
    std::thread::sleep(Duration::from_secs(3));
    let again: Value = serde_json::from_slice(&get(port, "/report.json").1).unwrap();
    assert_eq!(section(&again, after_pid), Some(b), "the exited process's report is kept as it was");
    let a2 = section(&again, before.0.id()).unwrap();
    assert!(a2["duration_s"].as_f64() > a["duration_s"].as_f64(), "the live one moves on");

    let text = String::from_utf8(get(port, "/metrics").1).unwrap();
    let samples = parse_prometheus(&text);
    for (pid, function, line) in [(before.0.id(), "leak_small", small_line), (after_pid, "remember", exit_line)] {
        let pid_s = pid.to_string();
        let s = samples
            .iter()
            .find(|s| {
                s.name == "tracer_suspect_outstanding_bytes"
                    && s.label("pid") == Some(pid_s.as_str())
                    && s.label("function") == Some(function)
                    && s.label("line") == Some(line.to_string().as_str())
            })
            .unwrap_or_else(|| panic!("no series for {function} under pid {pid}:\n{text}"));
        assert!(s.value > 100_000.0, "{s:?}");
        assert!(
            samples.iter().any(|s| s.name == "tracer_outstanding_bytes"
                && s.label("pid") == Some(pid_s.as_str())
                && s.value > 100_000.0),
            "{text}"
        );
    }
    for s in samples.iter().filter(|s| {
        s.name.starts_with("tracer_suspect")
            || s.name.starts_with("tracer_holder")
            || s.name.starts_with("tracer_outstanding")
    }) {
        assert!(s.label("pid").is_some(), "per-process series without a pid label: {s:?}");
    }

    let url = format!("http://{listen}/debug/pprof/heap");
    let top_a = pprof_top_of_pid(&url, before.0.id());
    assert!(top_a.contains("leak_small") && !top_a.contains("remember"), "pprof, pid {}:\n{top_a}", before.0.id());
    let top_b = pprof_top_of_pid(&url, after_pid);
    assert!(top_b.contains("remember") && !top_b.contains("leak_small"), "pprof, pid {after_pid}:\n{top_b}");
    println!("go tool pprof -top -tagfocus=pid={after_pid} {url}:\n{top_b}");

    let txt = String::from_utf8(get(port, "/report.txt").1).unwrap();
    assert!(
        txt.contains(&format!("== PID {}:", before.0.id())) && txt.contains(&format!("== PID {after_pid}:")),
        "{txt}"
    );
    let svg = String::from_utf8(get(port, "/flamegraph.svg").1).unwrap();
    assert!(
        svg.contains(&format!("pid {}", before.0.id())) && svg.contains(&format!("pid {after_pid}")),
        "flame graph roots per process"
    );

    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let (code, stderr) = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("pid {after_pid} ended")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_released(&held, "tracer serve --all");
    drop((before, native));
}

/// `/metrics` scraped every second from the first interval on: the leaking line is one series
/// (function, file, line) all along, whose value only grows, while its verdict (a gauge of its
/// own) changes from growing or stable to leak.
#[test]
fn metrics_keep_a_line_in_one_series_across_a_verdict_change() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 120);
    let pid = target.pid().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Probes attached all the time (no windows): the verdict moves as fast as it can.
    let mut daemon = Daemon::start(&["-p", &pid, "--listen", &listen, "-i", "1s", "--window", "off"]);
    let small_line = line_of(FIXTURE, "KEPT_SMALL.append").to_string();
    daemon.wait_answering(port);
    let mut identities = std::collections::BTreeSet::new();
    let (mut values, mut verdicts) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(40) {
        let (status, _, body) = try_get(port, "/metrics").unwrap();
        if status == 200 {
            let text = String::from_utf8(body).unwrap();
            let samples = parse_prometheus(&text);
            let of_line =
                |s: &&PromSample| s.label("function") == Some("leak_small") && s.label("line") == Some(&small_line);
            for s in samples.iter().filter(of_line) {
                if s.name == "tracer_suspect_outstanding_bytes" {
                    identities.insert(format!("{:?}", s.labels));
                    values.push(s.value);
                } else if s.name == "tracer_suspect_verdict" {
                    verdicts.push(s.value);
                }
            }
            if verdicts.last() == Some(&3.0) && verdicts.iter().any(|&v| v < 3.0) && values.len() >= 5 {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    println!("leak_small line {small_line}: {} scrapes, verdicts {verdicts:?}, bytes {values:?}", values.len());
    assert_eq!(identities.len(), 1, "one series for the line: {identities:?}");
    assert!(values.windows(2).all(|w| w[1] >= w[0]), "outstanding bytes of a leaking line only grow: {values:?}");
    assert!(verdicts.iter().any(|&v| v < 3.0), "the verdict started below leak: {verdicts:?}");
    assert_eq!(verdicts.last(), Some(&3.0), "and ended as leak: {verdicts:?}");
    drop(daemon);
    drop(target);
}

/// `/` is a live page: loaded in a real headless Chromium once both leaks are judged, it has no
/// console error, its leak table names the fixture's leaking lines, its chart has one series for
/// the outstanding memory and one per leaking line and holder (as `/live.json` lists them), and
/// it embeds the flame graph.
#[test]
fn live_page_loads_in_chromium_with_the_leaks_and_their_chart() {
    if !require_root() {
        return;
    }
    let Some(browser) = chromium::chromium() else {
        println!("skipped: no chromium (apt-get install chromium): the live page was not loaded");
        return;
    };
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 120);
    let pid = target.pid().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = Daemon::start(&["-p", &pid, "--listen", &listen, "-i", "1s", "--window", "off"]);
    daemon.wait_answering(port);
    let small_line = line_of(FIXTURE, "KEPT_SMALL.append");
    let started = Instant::now();
    let live = loop {
        let (_, body) = get(port, "/live.json");
        let live: Value = serde_json::from_slice(&body).expect("live.json is JSON");
        let leaks = live["processes"][0]["leaks"].as_array().cloned().unwrap_or_default();
        if leaks.iter().filter(|l| l["verdict"] == "leak").count() >= 2 || started.elapsed() > Duration::from_secs(40) {
            break live;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let p = &live["processes"][0];
    let series = p["chart"]["series"].as_array().unwrap();
    println!(
        "live.json after {:.0} s: {} series, leaks {:#}",
        started.elapsed().as_secs_f64(),
        series.len(),
        p["leaks"]
    );
    let leak_lines = p["leaks"].as_array().unwrap().iter().filter(|l| l["verdict"] == "leak").count();
    let leak_holders = p["holders"].as_array().unwrap().iter().filter(|h| h["verdict"] == "leak").count();
    assert!(leak_lines >= 2, "leak_small and leak_big are leaks: {p:#}");
    assert_eq!(series.len(), 1 + leak_lines + leak_holders, "{p:#}");
    assert!(p["rss"].as_str().unwrap().ends_with("iB"), "RSS in human units: {}", p["rss"]);

    let page = chromium::load(&browser, &format!("http://{listen}/"), 1280, 1600);
    println!("chromium console: {:?}", page.console);
    assert!(page.errors().is_empty(), "console errors: {:?}", page.errors());
    let blocked = |m: &&String| m.contains("Refused") || m.contains("Content Security Policy");
    assert!(!page.console.iter().any(|m| blocked(&m)), "CSP refusals: {:?}", page.console);
    let dom = &page.dom;
    let table = dom.split("<table class=\"leaks\">").nth(1).expect("a leak table").split("</table>").next().unwrap();
    assert!(table.contains("leak_small (") && table.contains(&format!(":{small_line})")), "{table}");
    assert!(table.contains("leak_big ("), "{table}");
    // The page reads /live.json itself, later: a leak judged in between adds a series.
    let (_, body) = get(port, "/live.json");
    let after: Value = serde_json::from_slice(&body).expect("live.json is JSON");
    let series_after = after["processes"][0]["chart"]["series"].as_array().map_or(0, Vec::len);
    let (lo, hi) = (series.len().min(series_after), series.len().max(series_after));
    let drawn = dom.matches("class=\"series ").count();
    assert!((lo..=hi).contains(&drawn), "series drawn in the chart {drawn} vs /live.json {lo}..={hi}: {dom}");
    assert!(dom.contains("<object id=\"flame\""), "the flame graph is embedded");
    assert!(dom.contains("resident memory (RSS)"), "header with RSS");
    drop(daemon);
    drop(target);
}

/// `--push-name`, `--push-tag`, bearer auth and the tenant from the environment (never argv),
/// and a push that fails with 503 twice is retried with backoff and lands, with no warning.
#[test]
fn pushes_with_a_name_tags_credentials_and_retries() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 120);
    let pid = target.pid();
    let (ingest_port, seen) = fake_pyroscope(2);
    let port = free_port();
    let push = format!("http://127.0.0.1:{ingest_port}");
    let args = [
        "-p",
        &pid.to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "-i",
        "5s",
        "--push",
        &push,
        "--push-name",
        "checkout.api",
        "--push-tag",
        "env=test",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [("TRACER_PUSH_TOKEN", "s3cret"), ("TRACER_PUSH_TENANT", "team-a")];
    let mut daemon = Daemon::start_with_env(&args, &env);
    daemon.wait_answering(port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "fewer than 3 requests in 30 s: {}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let pushes = seen.lock().unwrap().clone();
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGINT) };
    let (code, stderr) = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(code, 0, "{stderr}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let name = format!("checkout.api%7Bpid%3D{pid}%2Chostname%3D{}%2Cenv%3Dtest%7D", host.trim());
    for p in &pushes[..3] {
        assert!(p.request_line.contains(&format!("name={name}&")), "{}", p.request_line);
        assert!(p.head.contains("Authorization: Bearer s3cret\r\n"), "{}", p.head);
        assert!(p.head.contains("X-Scope-OrgID: team-a\r\n"), "{}", p.head);
    }
    // The first interval's push was refused twice (503) and sent again: one push, three times.
    assert_eq!(pushes[0].request_line, pushes[1].request_line, "a retry sends the same push");
    assert_eq!(pushes[1].request_line, pushes[2].request_line, "a retry sends the same push");
    assert!(!stderr.contains("failed"), "a push that lands after retries is not a failure: {stderr}");
    assert!(!stderr.contains("s3cret"), "credentials are never printed: {stderr}");
    drop(target);
}

/// `--push https://127.0.0.1:PORT` to an ingest server whose certificate a private CA made for
/// this run signed, trusted through TRACER_PUSH_CA: the profile lands with its name, tags and
/// basic auth header, and names the fixture's leaking function.
#[test]
fn pushes_over_https_trusting_a_private_ca() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 120);
    let pid = target.pid();
    let (ca_pem, server_tls) = private_ca_and_server();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let (ingest_port, seen) = fake_pyroscope_over(0, Some(server_tls));
    let port = free_port();
    let push = format!("https://127.0.0.1:{ingest_port}");
    let args = [
        "-p",
        &pid.to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "-i",
        "1s",
        "--push",
        &push,
        "--push-name",
        "checkout.api",
        "--push-tag",
        "env=tls",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [
        ("TRACER_PUSH_USER", "ingest"),
        ("TRACER_PUSH_PASSWORD", "s3cret"),
        ("TRACER_PUSH_CA", ca_file.to_str().unwrap()),
    ];
    let mut daemon = Daemon::start_with_env(&args, &env);
    daemon.wait_answering(port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "fewer than 3 https pushes in 30 s: {}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGINT) };
    let (code, stderr) = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(code, 0, "{stderr}");
    let pushes = seen.lock().unwrap().clone();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let name = format!("checkout.api%7Bpid%3D{pid}%2Chostname%3D{}%2Cenv%3Dtls%7D", host.trim());
    for p in &pushes {
        assert!(p.request_line.starts_with(&format!("POST /ingest?name={name}&")), "{}", p.request_line);
        assert!(p.request_line.contains("&format=pprof"), "{}", p.request_line);
        assert!(p.head.contains(&format!("Host: 127.0.0.1:{ingest_port}\r\n")), "{}", p.head);
        // base64("ingest:s3cret")
        assert!(p.head.contains("Authorization: Basic aW5nZXN0OnMzY3JldA==\r\n"), "{}", p.head);
        assert_eq!(&p.body[..2], &[0x1f, 0x8b], "body is a gzipped profile");
    }
    let file = dir.path().join("pushed.pb.gz");
    std::fs::write(&file, &pushes.last().unwrap().body).unwrap();
    let top = pprof_run(&["-top", "-lines"], file.to_str().unwrap());
    println!("go tool pprof -top -lines of the last https push:\n{top}");
    // The leaking line of the fixture: `KEPT_SMALL.append(bytearray(1000))`.
    assert!(top.lines().any(|l| l.contains("leak_small") && l.contains("two_leaks.py:17")), "{top}");
    assert!(!stderr.contains("failed"), "{stderr}");
    assert!(!stderr.contains("s3cret") && !stderr.contains("aW5nZXN0"), "credentials are never printed: {stderr}");
    drop(target);
}

/// The same https server without TRACER_PUSH_CA: its certificate is refused, no byte of the
/// profile or the credentials reaches it, the failure is one warning line naming the host, the
/// TLS error and the fix, and the daemon still runs to the target's end and detaches.
#[test]
fn https_push_to_an_untrusted_certificate_fails_with_a_hint() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 6);
    let pid = target.pid().to_string();
    let (_, server_tls) = private_ca_and_server();
    let (ingest_port, seen) = fake_pyroscope_over(0, Some(server_tls));
    let port = free_port();
    let push = format!("https://127.0.0.1:{ingest_port}");
    let args = ["-p", &pid, "--listen", &format!("127.0.0.1:{port}"), "-i", "500ms", "--push", &push];
    let mut daemon = Daemon::start_with_env(&args, &[("TRACER_PUSH_TOKEN", "s3cret")]);
    daemon.wait_answering(port);
    let held = bpf_ids_held_by(daemon.child.id());
    let (code, stderr) = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("stopped (finalization)") || stderr.contains("stopped (target_exited)"),
        "stopped because the target ended: {stderr}"
    );
    assert!(stderr.contains("all probes detached"), "{stderr}");
    let failures: Vec<&str> = stderr.lines().filter(|l| l.contains("failed")).collect();
    assert_eq!(failures.len(), 1, "push failures logged once: {stderr}");
    let line = failures[0];
    println!("the warning: {line}");
    assert!(line.contains(&format!("push to https://127.0.0.1:{ingest_port}/ingest failed")), "{line}");
    assert!(line.contains("TLS handshake with 127.0.0.1") && line.contains("UnknownIssuer"), "{line}");
    assert!(line.contains("set TRACER_PUSH_CA="), "{line}");
    assert!(!stderr.contains("s3cret") && !stderr.contains("panicked"), "{stderr}");
    assert!(seen.lock().unwrap().is_empty(), "nothing is sent to a server whose certificate was refused");
    assert_released(&held, "tracer serve");
    drop(target);
}

/// 32 slow clients (connected, sending nothing) do not blind the daemon: `/metrics` answers at
/// once beside them, connections beyond the cap are answered 503 instead of queueing, and a
/// slow client is cut within its one deadline (issue 21, item 4).
#[test]
fn slow_clients_do_not_blind_metrics() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 120);
    let pid = target.pid().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = Daemon::start(&["-p", &pid, "--listen", &listen, "-i", "1s"]);
    daemon.wait_answering(port);
    let slow: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let (status, head, _) = try_get(port, "/metrics").unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(asked.elapsed() < Duration::from_secs(2), "answered beside 32 slow clients: {:?}", asked.elapsed());

    // Twice the cap of slow clients: the ones beyond it are told 503 at once.
    let more: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, head, _) = try_get(port, "/metrics").unwrap();
    assert_eq!(status, 503, "beyond the cap: {head}");
    // Each slow client is cut within its deadline (5 s): then /metrics answers again.
    let mut first = slow.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cut = Instant::now();
    let mut answer = Vec::new();
    let _ = first.read_to_end(&mut answer);
    assert!(cut.elapsed() < Duration::from_secs(6), "cut within the deadline: {:?}", cut.elapsed());
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"), "{answer:?}");
    std::thread::sleep(Duration::from_secs(1));
    drop(more);
    let (status, head, _) = try_get(port, "/metrics").unwrap();
    assert_eq!(status, 200, "{head}");
    drop(daemon);
    drop(target);
    assert_no_leftover_probes();
}

/// `--listen unix:/path`: the socket is created mode 0600 (only root connects, where a loopback
/// port is open to every local user), answers like the port does, and is removed at the end.
/// `--listen localhost:0`: a host name is accepted, and the port printed is the one bound.
#[test]
fn serves_on_a_private_unix_socket_and_names_the_bound_port() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::os::unix::net::UnixStream;
    if !require_root() {
        return;
    }
    let _g = serial();
    let Some(python) = python() else { return };
    let target = Target::start(&python, 60);
    let pid = target.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tracer.sock");
    let listen = format!("unix:{}", sock.display());
    let mut daemon = Daemon::start(&["-p", &pid, "--listen", &listen, "-i", "1s"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!("tracer serve exited ({status}): {}", daemon.stderr());
        }
        let answer = UnixStream::connect(&sock).and_then(|mut s| {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
            let mut bytes = Vec::new();
            s.read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        });
        match answer {
            Ok(text) if text.starts_with("HTTP/1.1 200") => break text,
            _ => {}
        }
        assert!(Instant::now() < deadline, "never answered on {listen}: {}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains("tracer_outstanding_bytes"), "{body}");
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "only the owner may connect");
    assert!(daemon.stderr().contains(&format!("serving on {listen} (mode 0600)")), "{}", daemon.stderr());
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let (code, stderr) = daemon.wait_exit(Duration::from_secs(8));
    assert_eq!(code, 0, "{stderr}");
    assert!(!sock.exists(), "the socket is removed at the end");

    let mut daemon = Daemon::start(&["-p", &pid, "--listen", "localhost:0", "-i", "1s"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let port: u16 = loop {
        let err = daemon.stderr();
        if let Some(port) = err
            .lines()
            .find_map(|l| l.strip_prefix("tracer: serving on http://127.0.0.1:"))
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
        {
            break port;
        }
        assert!(Instant::now() < deadline, "no bound port printed: {err}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(port, 0, "the bound port, not :0");
    daemon.wait_answering(port);
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let (code, stderr) = daemon.wait_exit(Duration::from_secs(8));
    assert_eq!(code, 0, "{stderr}");
    assert_no_leftover_probes();
    drop(target);
}
