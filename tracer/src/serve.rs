//! `tracer serve`: the daemon. Traces one process continuously (the `record` session without a
//! duration), rebuilds a live report at every interval with the same `build_report` path, and
//! serves it over HTTP in the formats the fleet's tools scrape:
//!
//! - `/debug/pprof/heap` (and `/debug/pprof/allocs`): the gzipped profile.proto of the pprof
//!   exporter, the Go `net/http/pprof` convention `go tool pprof`, Parca and Pyroscope read;
//! - `/flamegraph.svg`, `/report.json`, `/report.txt`: the other exporters;
//! - `/metrics`: Prometheus text exposition (format 0.0.4);
//! - `/`: a small HTML index linking them.
//!
//! With `--all` (host mode) the session traces every matching CPython process and the snapshot is
//! one report per process (`{"schema":1,"processes":[...]}`): pprof samples carry `pid` and
//! `cmdline` labels, per-process `/metrics` series a `pid` label, and a process that ended keeps
//! the report taken when it ended (see `session`).
//!
//! Nothing here decides what leaks: handlers only format the last report. The HTTP side is a
//! small HTTP/1.1 responder that never executes anything on request: one request per
//! connection, `GET`/`HEAD` only (405 otherwise), request heads bounded to [`MAX_HEAD`] bytes
//! (431 beyond), slow clients cut by timeouts, at most [`MAX_CONNECTIONS`] at once.
//!
//! `--push URL` also POSTs the pprof profile to a Pyroscope-compatible `URL/ingest` at every
//! interval, best effort (one push in flight at most, a timeout, failures logged once).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::{PushTarget, ServeConfig};
use crate::error::user_error;
use crate::export::{self, ExportOptions, Format};
use crate::report::{FinalView, Frame, Report, Reports};
use crate::session::driver::{self, Tick};
use crate::session::{self, Session};

/// Longest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// Time one push to `--push` may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The last live report, with what it cost to build.
pub struct Snapshot {
    /// One report (`-p`), or with `--all` one per traced process (`{"schema":1,"processes":[...]}`).
    pub view: Reports,
    /// Wall-clock time it was built (seconds since the epoch).
    pub built_unix_s: f64,
    /// Seconds spent sampling and building it.
    pub build_s: f64,
    /// Intervals sampled so far.
    pub samples: u64,
}

impl Snapshot {
    pub fn reports(&self) -> &[Report] {
        self.view.as_slice()
    }

    /// Host mode: several processes, each labelled by its PID.
    pub fn multi(&self) -> bool {
        self.view.is_many()
    }

    /// Renders the served view in `format` (one report, or one section per process).
    fn render(&self, format: Format, opts: &ExportOptions, out: &mut dyn std::io::Write) -> Result<()> {
        export::write_reports(format, &self.view, opts, out)
    }
}

type Shared = watch::Receiver<Option<Arc<Snapshot>>>;

/// `tracer serve`: the configuration to the daemon's exit status.
pub fn run(config: ServeConfig) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: ServeConfig) -> Result<()> {
    session::require_root()?;
    // Bind first: a taken port costs nothing to report, no probe was attached yet.
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        user_error(
            format!("cannot listen on {}: {e}", config.listen),
            "pick a free address with --listen 127.0.0.1:PORT (or stop whatever uses it)",
        )
    })?;
    if !config.listen.ip().is_loopback() {
        log::warn!(
            "listening on {} (not loopback): anyone who can reach it reads the target's stacks and file paths",
            config.listen
        );
    }
    let mut session = Session::start(&config.record)?;
    let (tx, rx) = watch::channel::<Option<Arc<Snapshot>>>(None);
    let acceptor = tokio::spawn(accept_loop(listener, rx, config.export));
    eprintln!("tracer: serving on http://{}/ (/debug/pprof/heap /flamegraph.svg /report.json /metrics)", config.listen);
    let pushed_as = match session.procs.first() {
        Some(first) if !session.is_host() => format!("pid={}", first.target.pid),
        _ => "mode=host".to_string(),
    };
    let pusher = config.push.map(|t| Arc::new(Pusher::new(t, pushed_as)));
    let interval = config.record.interval;
    let result = driver::drive(&mut session, interval, None, |session, tick| {
        let snapshot = Arc::new(live_snapshot(session, tick, interval));
        if let Some(p) = &pusher {
            p.push(&snapshot);
        }
        tx.send_replace(Some(snapshot));
    })
    .await;
    // Stop answering, then detach: dropping the session drops the probes.
    acceptor.abort();
    let _ = acceptor.await;
    drop(session);
    let stop = result?;
    eprintln!("tracer: stopped ({stop}); all probes detached");
    Ok(())
}

/// One interval (the session was just sampled): the whole report again ("live").
fn live_snapshot(session: &Session, tick: Tick, interval: Duration) -> Snapshot {
    let started = Instant::now();
    let view = session.reports(FinalView::Live);
    let build_s = (tick.sampling + started.elapsed()).as_secs_f64();
    let suspects: usize = view.as_slice().iter().map(|r| r.suspects.len()).sum();
    log::debug!("live report #{}: {suspects} suspects, built in {:.1} ms", tick.number, build_s * 1e3);
    static WARNED: AtomicBool = AtomicBool::new(false);
    if build_s > interval.as_secs_f64() / 2.0 && !WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "building the live report took {:.0} ms, more than half the interval (-i {:.1}s); consider a longer -i \
             (its cost grows with the outstanding allocations: /metrics tracer_report_build_seconds)",
            build_s * 1e3,
            interval.as_secs_f64()
        );
    }
    Snapshot { view, built_unix_s: unix_now(), build_s, samples: tick.number }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// HTTP: one request per connection, GET and HEAD, bounded heads.

async fn accept_loop(listener: TcpListener, state: Shared, opts: ExportOptions) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            handle(stream, peer, &state, &opts).await;
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, state: &Shared, opts: &ExportOptions) {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Response::text(408, "request timeout\n"),
        Ok(Err(e)) => {
            log::debug!("{peer}: {e}");
            return;
        }
        Ok(Ok(Head::TooLarge)) => Response::text(431, "request head too large\n"),
        Ok(Ok(Head::Complete(bytes))) => {
            let snapshot = state.borrow().clone();
            respond(&bytes, snapshot.as_deref(), opts)
        }
    };
    log::debug!("{peer}: {}", response.status);
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&response.bytes()).await?;
        stream.shutdown().await?;
        // Take (and discard) what the client still sends, so that closing does not reset the
        // connection before it read the answer; bounded in time and size.
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 256 * 1024 {
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
        std::io::Result::Ok(())
    })
    .await;
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
}

/// Reads up to the blank line ending the request head, never more than [`MAX_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = MAX_HEAD + 1 - buf.len();
        let want = room.min(chunk.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the request head ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf) {
            if end > MAX_HEAD {
                return Ok(Head::TooLarge);
            }
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

/// Length of the head including its terminating blank line (`\r\n\r\n`, or `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    head_only: bool,
    path: &'a str,
}

/// The request line: `GET /path?query HTTP/1.1`. Err is the status to answer with.
fn parse_request(head: &[u8]) -> Result<Request<'_>, u16> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| 400u16)?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(505);
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(400);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(405),
    };
    if !target.starts_with('/') {
        return Err(400);
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    Ok(Request { head_only, path })
}

struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    head_only: bool,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response { status, content_type, headers: Vec::new(), body, head_only: false }
    }

    fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.as_bytes().to_vec())
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The answer to one request head: only formatting of the last snapshot, nothing else.
fn respond(head: &[u8], snapshot: Option<&Snapshot>, opts: &ExportOptions) -> Response {
    let request = match parse_request(head) {
        Ok(r) => r,
        Err(405) => return Response::text(405, "only GET and HEAD\n").header("Allow", "GET, HEAD"),
        Err(status) => return Response::text(status, "bad request\n"),
    };
    let mut response = route(request.path, snapshot, opts);
    response.head_only = request.head_only;
    response
}

fn route(path: &str, snapshot: Option<&Snapshot>, opts: &ExportOptions) -> Response {
    let known = [
        "/",
        "/index.html",
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
        "/flamegraph.svg",
        "/report.json",
        "/report.txt",
        "/metrics",
    ];
    if !known.contains(&path) {
        return Response::text(404, "not found; see / for the endpoints\n");
    }
    let Some(snap) = snapshot else {
        return Response::text(503, "no sample yet; try again after the first interval\n").header("Retry-After", "1");
    };
    let render = |format: Format| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        snap.render(format, opts, &mut out)?;
        Ok(out)
    };
    let rendered = match path {
        "/" | "/index.html" => {
            return Response::new(200, "text/html; charset=utf-8", index_html(snap).into_bytes())
                .header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        }
        "/metrics" => {
            return Response::new(200, "text/plain; version=0.0.4; charset=utf-8", metrics(snap).into_bytes())
        }
        "/debug/pprof/heap" | "/debug/pprof/allocs" => render(Format::Pprof).map(|b| {
            Response::new(200, "application/octet-stream", b)
                .header("Content-Disposition", "attachment; filename=\"heap.pb.gz\"")
        }),
        "/flamegraph.svg" => render(Format::Svg).map(|b| Response::new(200, "image/svg+xml", b)),
        "/report.json" => render(Format::Json).map(|b| Response::new(200, "application/json", b)),
        "/report.txt" => render(Format::Text).map(|b| Response::new(200, "text/plain; charset=utf-8", b)),
        _ => unreachable!("checked against `known`"),
    };
    rendered.unwrap_or_else(|e| {
        log::warn!("rendering {path}: {e:#}");
        Response::text(500, "could not render this report; see the daemon's log\n")
    })
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn index_html(snap: &Snapshot) -> String {
    let links = [
        ("/debug/pprof/heap", "pprof heap profile (go tool pprof, Parca, Pyroscope)"),
        ("/flamegraph.svg", "flame graph of outstanding memory"),
        ("/report.json", "JSON report (schema 1)"),
        ("/report.txt", "text report"),
        ("/metrics", "Prometheus metrics"),
    ];
    let mut html = String::from("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>tracer</title>\n<style>body{font-family:sans-serif;margin:2em}code{background:#eee}</style></head><body>\n");
    let leaks = |r: &Report| r.suspects.iter().filter(|s| s.verdict == crate::report::Verdict::Leak).count();
    let command = |r: &Report| html_escape(if r.target.cmdline.is_empty() { &r.target.exe } else { &r.target.cmdline });
    match &snap.view {
        Reports::One(r) => {
            let _ = write!(
                html,
                "<h1>tracer: pid {}</h1>\n<p><code>{}</code> (CPython {})</p>\n<p>traced for {:.0} s, {} samples; {} outstanding bytes; {} leaking stacks</p>\n",
                r.target.pid,
                command(r),
                html_escape(&r.target.python),
                r.duration_s,
                snap.samples,
                r.totals.outstanding_bytes,
                leaks(r)
            );
        }
        Reports::Many(m) => {
            let _ = writeln!(
                html,
                "<h1>tracer: {} CPython processes (host mode)</h1>\n<p>{} samples</p>\n<ul>",
                m.processes.len(),
                snap.samples
            );
            for r in &m.processes {
                let _ = writeln!(
                    html,
                    "<li>pid {} <code>{}</code> (CPython {}, {}): {} outstanding bytes; {} leaking stacks</li>",
                    r.target.pid,
                    command(r),
                    html_escape(&r.target.python),
                    html_escape(r.final_view.map_or("", FinalView::as_str)),
                    r.totals.outstanding_bytes,
                    leaks(r)
                );
            }
            html.push_str("</ul>\n");
        }
    }
    html.push_str("<ul>\n");
    for (href, what) in links {
        let _ = writeln!(html, "<li><a href=\"{href}\">{href}</a>: {what}</li>");
    }
    html.push_str("</ul>\n</body></html>\n");
    html
}

// ---------------------------------------------------------------------------------------------
// Prometheus text exposition (format 0.0.4).

/// `"..."` content of a label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn sample_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// One metric family: HELP, TYPE, then its samples (labels as name/value pairs).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(Vec<(&str, String)>, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", label_value(v));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {}", sample_value(*value));
    }
}

/// The innermost Python frame of a stack as (function, file, line); a stack without one is
/// named by its innermost frame (file = module, line 0).
fn innermost(stack: &[Frame]) -> (String, String, u32) {
    let python = stack.iter().find_map(|f| match f {
        Frame::Python { function, file, line } => Some((function.clone(), file.clone(), *line)),
        Frame::Native { .. } => None,
    });
    python.unwrap_or_else(|| match stack.first() {
        Some(Frame::Native { function, module }) => (function.clone(), module.clone(), 0),
        Some(Frame::Python { .. }) => unreachable!("found above"),
        None => ("[no stack]".into(), String::new(), 0),
    })
}

/// A series' labels, and a suspect line's sums: (outstanding bytes, growth per s, best score).
type Labels = Vec<(&'static str, String)>;
type LineSums = (f64, f64, f64);
/// A suspect's innermost Python line and verdict: (function, file, line, verdict).
type LineKey<'a> = (String, String, u32, &'a str);

fn metrics(snap: &Snapshot) -> String {
    let (reports, multi) = (snap.reports(), snap.multi());
    // With --all every per-process series carries the process's `pid` label; one process alone
    // keeps the label-free series it always had.
    let pid_of = |r: &Report| -> Vec<(&'static str, String)> {
        if multi {
            vec![("pid", r.target.pid.to_string())]
        } else {
            vec![]
        }
    };
    let with = |r: &Report, more: Vec<(&'static str, String)>| -> Vec<(&'static str, String)> {
        let mut labels = pid_of(r);
        labels.extend(more);
        labels
    };
    let per_process = |f: &dyn Fn(&Report) -> f64| -> Vec<(Vec<(&'static str, String)>, f64)> {
        reports.iter().map(|r| (pid_of(r), f(r))).collect()
    };
    let mut out = String::new();
    let info: Vec<_> = reports
        .iter()
        .map(|r| {
            let mut labels = vec![
                ("pid", r.target.pid.to_string()),
                ("python", r.target.python.clone()),
                ("exe", r.target.exe.clone()),
                ("libc", r.target.libc.clone()),
            ];
            if multi {
                labels.push(("cmdline", r.target.cmdline.clone()));
                labels.push(("final_view", r.final_view.map_or("", FinalView::as_str).to_string()));
            }
            (labels, 1.0)
        })
        .collect();
    let help = if multi {
        "A traced process (always 1; final_view is live while it runs)."
    } else {
        "The traced process (always 1)."
    };
    family(&mut out, "tracer_target_info", "gauge", help, &info);
    if multi {
        let ended = reports.iter().filter(|r| r.final_view != Some(FinalView::Live)).count() as f64;
        let states = [
            (vec![("state", "live".to_string())], reports.len() as f64 - ended),
            (vec![("state", "ended".to_string())], ended),
        ];
        family(
            &mut out,
            "tracer_processes",
            "gauge",
            "Processes traced, by state (ended ones keep their last report).",
            &states,
        );
    }
    let duration_s = reports.iter().map(|r| r.duration_s).fold(0.0, f64::max);
    family(&mut out, "tracer_traced_seconds", "gauge", "Seconds since the tracer attached.", &[(vec![], duration_s)]);
    family(&mut out, "tracer_samples_total", "counter", "Intervals sampled.", &[(vec![], snap.samples as f64)]);
    family(
        &mut out,
        "tracer_report_build_seconds",
        "gauge",
        "Time the last interval's sampling and report took.",
        &[(vec![], snap.build_s)],
    );
    family(
        &mut out,
        "tracer_report_timestamp_seconds",
        "gauge",
        "When the served report was built (Unix time).",
        &[(vec![], snap.built_unix_s)],
    );
    family(
        &mut out,
        "tracer_outstanding_bytes",
        "gauge",
        "Bytes allocated since the tracer attached and not freed.",
        &per_process(&|r| r.totals.outstanding_bytes as f64),
    );
    family(
        &mut out,
        "tracer_outstanding_allocations",
        "gauge",
        "Allocations made since the tracer attached and not freed.",
        &per_process(&|r| r.totals.outstanding_count as f64),
    );
    // The BPF counters are kept for all traced processes together: one series each, never
    // repeated per process (the highest value: ended processes carry an older copy).
    let counter = |f: &dyn Fn(&Report) -> u64| reports.iter().map(f).max().unwrap_or(0) as f64;
    family(
        &mut out,
        "tracer_events_total",
        "counter",
        "Allocation and free events recorded (all traced processes together).",
        &[
            (vec![("kind", "alloc".into())], counter(&|r| r.totals.allocs)),
            (vec![("kind", "free".into())], counter(&|r| r.totals.frees)),
        ],
    );
    let names: std::collections::BTreeSet<&String> = reports.iter().flat_map(|r| r.totals.lost.keys()).collect();
    let lost: Vec<_> = names
        .into_iter()
        .map(|name| (vec![("counter", name.clone())], counter(&|r| r.totals.lost.get(name).copied().unwrap_or(0))))
        .collect();
    family(&mut out, "tracer_lost_total", "counter", "Events that could not be recorded, by cause.", &lost);

    let mut verdicts = Vec::new();
    let mut suspect_series: Vec<(Labels, LineSums)> = Vec::new();
    for r in reports {
        let mut by_verdict = std::collections::BTreeMap::<&str, f64>::new();
        for v in ["leak", "growing", "bounded", "stable"] {
            by_verdict.insert(v, 0.0);
        }
        // Per suspect, keyed by the innermost Python frame (and verdict): several stacks can end
        // in the same line (different callers), and one series per label set is the rule.
        let mut per_frame: Vec<(LineKey, LineSums)> = Vec::new();
        for s in &r.suspects {
            *by_verdict.entry(s.verdict.as_str()).or_default() += 1.0;
            let (function, file, line) = innermost(&s.stack);
            let key = (function, file, line, s.verdict.as_str());
            let add = (s.outstanding_bytes as f64, s.growth_bytes_per_s, s.score);
            match per_frame.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => {
                    v.0 += add.0;
                    v.1 += add.1;
                    v.2 = v.2.max(add.2);
                }
                None => per_frame.push((key, add)),
            }
        }
        verdicts.extend(by_verdict.iter().map(|(v, n)| (with(r, vec![("verdict", v.to_string())]), *n)));
        for ((function, file, line, verdict), v) in per_frame {
            let labels = with(
                r,
                vec![
                    ("function", function),
                    ("file", file),
                    ("line", line.to_string()),
                    ("verdict", verdict.to_string()),
                ],
            );
            suspect_series.push((labels, v));
        }
    }
    family(&mut out, "tracer_suspects", "gauge", "Stacks in the report, by verdict.", &verdicts);
    let pick =
        |f: fn(&(f64, f64, f64)) -> f64| -> Vec<_> { suspect_series.iter().map(|(l, v)| (l.clone(), f(v))).collect() };
    family(
        &mut out,
        "tracer_suspect_outstanding_bytes",
        "gauge",
        "Outstanding bytes of the stacks ending in this Python line (function, file, line), by verdict.",
        &pick(|v| v.0),
    );
    family(
        &mut out,
        "tracer_suspect_growth_bytes_per_second",
        "gauge",
        "Growth of the outstanding bytes of the stacks ending in this Python line, by verdict.",
        &pick(|v| v.1),
    );
    family(
        &mut out,
        "tracer_suspect_score",
        "gauge",
        "Leak evidence in [0, 1] (highest of the stacks ending in this line).",
        &pick(|v| v.2),
    );

    let mut holders: Vec<(&Report, &crate::report::Holder)> = Vec::new();
    for r in reports {
        let mut seen = std::collections::HashSet::new();
        holders
            .extend(r.holders.iter().filter(|h| seen.insert((h.path.as_str(), h.type_name.as_str()))).map(|h| (r, h)));
    }
    let holder_labels = |r: &Report, h: &crate::report::Holder| {
        with(
            r,
            vec![("path", h.path.clone()), ("type", h.type_name.clone()), ("verdict", h.verdict.as_str().to_string())],
        )
    };
    let hs = |f: fn(&crate::report::Holder) -> f64| -> Vec<_> {
        holders.iter().map(|(r, h)| (holder_labels(r, h), f(h))).collect()
    };
    family(
        &mut out,
        "tracer_holder_length",
        "gauge",
        "Items in a container of the target, by path.",
        &hs(|h| h.len as f64),
    );
    family(
        &mut out,
        "tracer_holder_growth_per_second",
        "gauge",
        "Items added per second to a container of the target.",
        &hs(|h| h.growth_per_s),
    );
    family(
        &mut out,
        "tracer_holder_retained_bytes_estimate",
        "gauge",
        "Estimated bytes kept alive by a container of the target.",
        &hs(|h| h.retained_bytes_est as f64),
    );
    out
}

// ---------------------------------------------------------------------------------------------
// --push: Pyroscope's ingest API.

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

struct Pusher {
    target: PushTarget,
    /// The label of the pushed application name: `pid=N`, or `mode=host` with --all (the
    /// profile's samples then carry a `pid` label each).
    label: String,
    in_flight: AtomicBool,
    failing: AtomicBool,
    last_until: std::sync::Mutex<u64>,
}

impl Pusher {
    fn new(target: PushTarget, label: String) -> Pusher {
        let now = unix_now() as u64;
        Pusher {
            target,
            label,
            in_flight: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            last_until: std::sync::Mutex::new(now),
        }
    }

    /// Renders the profile now and sends it in the background; skipped while the previous push
    /// is still in flight.
    fn push(self: &Arc<Self>, snapshot: &Snapshot) {
        if self.in_flight.swap(true, Ordering::AcqRel) {
            log::debug!("push: the previous one is still in flight; skipping this interval");
            return;
        }
        let mut body = Vec::new();
        if let Err(e) = snapshot.render(Format::Pprof, &ExportOptions::default(), &mut body) {
            log::warn!("push: rendering the profile: {e:#}");
            self.in_flight.store(false, Ordering::Release);
            return;
        }
        let until = unix_now() as u64;
        let from = {
            let mut last = self.last_until.lock().unwrap_or_else(|e| e.into_inner());
            let from = (*last).min(until.saturating_sub(1));
            *last = until;
            from
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = tokio::time::timeout(PUSH_TIMEOUT, this.send(body, from, until)).await;
            let result =
                result.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {} s", PUSH_TIMEOUT.as_secs())));
            match result {
                Ok(()) => {
                    if this.failing.swap(false, Ordering::AcqRel) {
                        log::warn!(
                            "push to http://{}{}/ingest works again",
                            this.target.host_header,
                            this.target.prefix
                        );
                    }
                }
                Err(e) => {
                    if !this.failing.swap(true, Ordering::AcqRel) {
                        log::warn!(
                            "push to http://{}{}/ingest failed: {e:#} (further failures are not logged until it works again)",
                            this.target.host_header,
                            this.target.prefix
                        );
                    } else {
                        log::debug!("push failed: {e:#}");
                    }
                }
            }
            this.in_flight.store(false, Ordering::Release);
        });
    }

    async fn send(&self, body: Vec<u8>, from: u64, until: u64) -> Result<()> {
        let name = format!("tracer.python{{{}}}", self.label);
        let path = format!(
            "{}/ingest?name={}&from={from}&until={until}&format=pprof&spyName=tracer",
            self.target.prefix,
            query_escape(&name)
        );
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tracer/{}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.target.host_header,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        let mut stream = TcpStream::connect(&self.target.authority)
            .await
            .with_context(|| format!("connecting to {}", self.target.authority))?;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        // The status line is all we need; read a bounded amount.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len())])
            .trim()
            .to_string();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no HTTP status in {line:?}"))?;
        if !(200..300).contains(&status) {
            anyhow::bail!("server answered {line:?}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Holder, MultiReport, Suspect, TargetInfo, Totals, Verdict, SCHEMA};

    fn report() -> Report {
        let suspect = |verdict, bytes, line| Suspect {
            rank: 1,
            verdict,
            score: 0.9,
            outstanding_bytes: bytes,
            outstanding_count: 1,
            allocs: 1,
            alloc_bytes: bytes,
            live_fraction: 1.0,
            growth_bytes_per_s: 10.0,
            oldest_age_s: 1.0,
            allocator: "malloc".into(),
            reason: String::new(),
            stack: vec![
                Frame::Native { function: "PyByteArray_Resize".into(), module: "python3.11".into() },
                Frame::Python { function: "leak \"x\"".into(), file: "/srv/a\\b.py".into(), line },
                Frame::Python { function: "main".into(), file: "/srv/a.py".into(), line: 1 },
            ],
        };
        Report {
            schema: SCHEMA,
            target: TargetInfo {
                pid: 42,
                exe: "/usr/bin/python3".into(),
                python: "3.11.2".into(),
                libc: "libc.so.6".into(),
                cmdline: "python3 <app>.py".into(),
            },
            duration_s: 12.0,
            final_view: Some(FinalView::Live),
            totals: Totals {
                allocs: 5,
                frees: 2,
                outstanding_bytes: 300,
                outstanding_count: 3,
                lost: [("map_full".to_string(), 0)].into(),
            },
            suspects: vec![
                suspect(Verdict::Leak, 100, 7),
                suspect(Verdict::Leak, 200, 7),
                suspect(Verdict::Stable, 0, 9),
            ],
            holders: vec![Holder {
                path: "__main__.KEPT".into(),
                type_name: "list".into(),
                len: 10,
                growth_per_s: 1.5,
                item_types: Default::default(),
                retained_bytes_est: 1000,
                verdict: Verdict::Leak,
                score: 0.9,
                reason: String::new(),
            }],
            holders_scan: None,
            timeline: vec![],
            sample_bytes: 0,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot { view: Reports::One(report()), built_unix_s: 1.7e9, build_s: 0.01, samples: 3 }
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Request { head_only: false, path: "/metrics" })
        );
        assert_eq!(
            parse_request(b"HEAD /debug/pprof/heap?seconds=5 HTTP/1.0\r\n\r\n"),
            Ok(Request { head_only: true, path: "/debug/pprof/heap" })
        );
        assert_eq!(parse_request(b"POST / HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(parse_request(b"DELETE /metrics HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(parse_request(b"GET /metrics\r\n\r\n"), Err(400));
        assert_eq!(parse_request(b"GET  /metrics HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(parse_request(b"GET http://x/ HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(parse_request(b"GET / HTTP/2\r\n\r\n"), Err(505));
        assert_eq!(parse_request(b"get / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(parse_request(b"\xff / HTTP/1.1\r\n\r\n"), Err(400));
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn routes() {
        let snap = snapshot();
        let opts = ExportOptions::default();
        let get = |p: &str| respond(format!("GET {p} HTTP/1.1\r\n\r\n").as_bytes(), Some(&snap), &opts);
        assert_eq!(get("/").status, 200);
        assert_eq!(get("/nope").status, 404);
        assert_eq!(get("/../etc/passwd").status, 404);
        let pprof = get("/debug/pprof/heap");
        assert_eq!(pprof.status, 200);
        assert_eq!(&pprof.body[..2], &[0x1f, 0x8b], "gzip");
        assert!(String::from_utf8_lossy(&get("/flamegraph.svg").body).contains("<svg"));
        let json: serde_json::Value = serde_json::from_slice(&get("/report.json").body).unwrap();
        assert_eq!(json["final_view"], "live");
        let head = respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", Some(&snap), &opts);
        let bytes = head.bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.ends_with("\r\n\r\n") && text.contains(&format!("Content-Length: {}", head.body.len())), "{text}");
        let post = respond(b"POST /metrics HTTP/1.1\r\n\r\n", Some(&snap), &opts);
        assert_eq!(post.status, 405);
        assert!(String::from_utf8_lossy(&post.bytes()).contains("Allow: GET, HEAD"));
        assert_eq!(respond(b"GET /metrics HTTP/1.1\r\n\r\n", None, &opts).status, 503);
    }

    #[test]
    fn index_escapes_the_command_line() {
        let html = index_html(&snapshot());
        assert!(html.contains("python3 &lt;app&gt;.py"), "{html}");
        for href in ["/debug/pprof/heap", "/flamegraph.svg", "/report.json", "/metrics"] {
            assert!(html.contains(&format!("href=\"{href}\"")), "{href}");
        }
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let text = metrics(&snapshot());
        // Two leak stacks ending in the same line are one series, summed.
        let line = r#"tracer_suspect_outstanding_bytes{function="leak \"x\"",file="/srv/a\\b.py",line="7",verdict="leak"} 300"#;
        assert!(text.lines().any(|l| l == line), "{text}");
        assert!(text.contains(r#"tracer_holder_length{path="__main__.KEPT",type="list",verdict="leak"} 10"#), "{text}");
        assert!(text.contains("tracer_lost_total{counter=\"map_full\"} 0"), "{text}");
        assert!(text.contains("tracer_outstanding_bytes 300"), "{text}");
        let mut names = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                assert!(names.insert(rest.split(' ').next().unwrap().to_string()), "family declared twice: {l}");
                continue;
            }
            if l.starts_with('#') {
                continue;
            }
            let (series, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value), "{l}");
            assert!(series.starts_with("tracer_"), "{l}");
        }
        assert_eq!(sample_value(f64::INFINITY), "+Inf");
        assert_eq!(label_value("a\nb"), "a\\nb");
    }

    #[test]
    fn host_mode_metrics_label_every_process_series_with_its_pid() {
        let mut other = report();
        other.target.pid = 43;
        other.final_view = Some(FinalView::Finalization);
        let view = Reports::Many(MultiReport { schema: SCHEMA, processes: vec![report(), other], skipped: vec![] });
        let snap = Snapshot { view, built_unix_s: 1.7e9, build_s: 0.01, samples: 3 };
        let text = metrics(&snap);
        for pid in ["42", "43"] {
            let line = format!(
                r#"tracer_suspect_outstanding_bytes{{pid="{pid}",function="leak \"x\"",file="/srv/a\\b.py",line="7",verdict="leak"}} 300"#
            );
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
            assert!(text.contains(&format!("tracer_outstanding_bytes{{pid=\"{pid}\"}} 300")), "{text}");
            assert!(
                text.contains(&format!(
                    r#"tracer_holder_length{{pid="{pid}",path="__main__.KEPT",type="list",verdict="leak"}} 10"#
                )),
                "{text}"
            );
        }
        assert!(text.contains(r#"tracer_processes{state="ended"} 1"#), "{text}");
        // Shared counters are one series, not one per process.
        assert_eq!(text.lines().filter(|l| l.starts_with("tracer_lost_total{")).count(), 1, "{text}");
        let per_process = [
            "tracer_outstanding_bytes",
            "tracer_outstanding_allocations",
            "tracer_suspects",
            "tracer_suspect_",
            "tracer_holder_",
            "tracer_target_info",
        ];
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            if per_process.iter().any(|p| l.starts_with(p)) {
                assert!(l.contains("pid=\""), "per-process series without pid: {l}");
            }
        }
        let json: serde_json::Value =
            serde_json::from_slice(&route("/report.json", Some(&snap), &ExportOptions::default()).body).unwrap();
        assert_eq!(json["processes"].as_array().map(|p| p.len()), Some(2));
        let txt = String::from_utf8(route("/report.txt", Some(&snap), &ExportOptions::default()).body).unwrap();
        assert!(txt.contains("== PID 42:") && txt.contains("== PID 43:"), "{txt}");
        assert!(index_html(&snap).contains("pid 43"));
    }

    #[test]
    fn push_names_are_query_escaped() {
        assert_eq!(query_escape("tracer.python{pid=42}"), "tracer.python%7Bpid%3D42%7D");
    }
}
