//! The HTTP side of `serve`: a small HTTP/1.1 responder that never executes anything on
//! request: one request per connection, `GET`/`HEAD` only (405 otherwise), request heads bounded
//! to [`MAX_HEAD`] bytes (431 beyond), one deadline per connection, at most [`MAX_CONNECTIONS`]
//! at once (503 beyond). Routes only format the last snapshot; `/` is the live page (`page/`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};

use crate::export::{ExportOptions, Format};
use crate::report::{Report, Reports};

use super::listen::{Conn, Listener};
use super::Snapshot;

/// Longest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once; beyond, a connection is answered 503 at once and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections being told 503 at once; beyond, a connection is closed unanswered.
const MAX_SHED: usize = 64;
/// One deadline per connection, for the request head, the response and the drain together:
/// a slow client holds its slot this long at most (Prometheus' scrape timeout is 10 s).
const DEADLINE: Duration = Duration::from_secs(5);
/// The part of it a client has to send its request head (408 after).
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// What is taken (and discarded) of what a client still sends after its response.
const DRAIN_BYTES: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_millis(200);

/// The last snapshot, as the daemon publishes it (`None` before the first interval).
pub type Shared = watch::Receiver<Option<Arc<Snapshot>>>;

/// Accepts every connection at once: up to [`MAX_CONNECTIONS`] are served, each within its
/// [`DEADLINE`]; the others are answered 503 (shed), so that a queue of slow clients never
/// hides the daemon from a scraper.
pub async fn accept_loop(listener: Listener, state: Shared, opts: ExportOptions) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let shedding = Arc::new(Semaphore::new(MAX_SHED));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            let state = state.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(DEADLINE, handle(stream, peer, &state, &opts)).await;
                drop(permit);
            });
        } else if let Ok(permit) = shedding.clone().try_acquire_owned() {
            log::debug!("{peer}: 503, {MAX_CONNECTIONS} connections already");
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), shed(stream)).await;
                drop(permit);
            });
        }
    }
}

/// Answers 503 without reading the request.
async fn shed(mut stream: Box<dyn Conn>) -> std::io::Result<()> {
    stream.write_all(&Response::text(503, "too many connections; retry shortly\n").bytes()).await?;
    stream.shutdown().await
}

async fn handle(mut stream: Box<dyn Conn>, peer: String, state: &Shared, opts: &ExportOptions) {
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
    if stream.write_all(&response.bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    // Take (and discard) what the client still sends, so that closing does not reset the
    // connection before it read the answer; a little, briefly.
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    while drained < DRAIN_BYTES {
        match tokio::time::timeout(DRAIN_TIME, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
}

/// Reads up to the blank line ending the request head, never more than [`MAX_HEAD`] bytes.
async fn read_head(stream: &mut Box<dyn Conn>) -> std::io::Result<Head> {
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
        "/live.json",
        "/live.js",
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
                .header("Content-Security-Policy", PAGE_CSP)
        }
        "/live.js" => return Response::new(200, "text/javascript; charset=utf-8", LIVE_JS.as_bytes().to_vec()),
        "/live.json" => return Response::new(200, "application/json", snap.live().into_bytes()),
        "/metrics" => {
            return Response::new(200, "text/plain; version=0.0.4; charset=utf-8", snap.metrics().into_bytes())
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
    crate::escape::markup(s)
}

/// The live page: everything it shows comes from `/live.json` (fetched by `live.js`); the
/// first paint already has the header, so the page says what it traces before any script runs.
fn index_html(snap: &Snapshot) -> String {
    let title = match &snap.view {
        Reports::One(r) => {
            format!("pid {} <code>{}</code> (CPython {})", r.target.pid, command(r), html_escape(&r.target.python))
        }
        Reports::Many(m) => format!("{} CPython processes (host mode)", m.processes.len()),
    };
    PAGE_HTML.replace("{{TITLE}}", &title)
}

fn command(r: &Report) -> String {
    html_escape(if r.target.cmdline.is_empty() { &r.target.exe } else { &r.target.cmdline })
}

/// No CDN, no external font, no inline script: scripts and data from this daemon only; the
/// flame graph is its own document in an `<object>`.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
                        object-src 'self'; frame-src 'self'; img-src 'self' data:";
const PAGE_HTML: &str = include_str!("page/index.html");
const LIVE_JS: &str = include_str!("page/live.js");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::live_report as report;
    use crate::report::{FinalView, MultiReport, SCHEMA};

    fn snapshot() -> Snapshot {
        Snapshot { view: Reports::One(report()), built_unix_s: 1.7e9, build_s: 0.01, samples: 3, tracks: vec![] }
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
    fn host_mode_serves_one_section_per_process() {
        let mut other = report();
        other.target.pid = 43;
        other.final_view = Some(FinalView::Finalization);
        let view = Reports::Many(MultiReport { schema: SCHEMA, processes: vec![report(), other], skipped: vec![] });
        let snap = Snapshot { view, built_unix_s: 1.7e9, build_s: 0.01, samples: 3, tracks: vec![] };
        let json: serde_json::Value =
            serde_json::from_slice(&route("/report.json", Some(&snap), &ExportOptions::default()).body).unwrap();
        assert_eq!(json["processes"].as_array().map(|p| p.len()), Some(2));
        let txt = String::from_utf8(route("/report.txt", Some(&snap), &ExportOptions::default()).body).unwrap();
        assert!(txt.contains("== PID 42:") && txt.contains("== PID 43:"), "{txt}");
        let html = index_html(&snap);
        assert!(html.contains("2 CPython processes"), "{html}");
        let live: serde_json::Value =
            serde_json::from_slice(&route("/live.json", Some(&snap), &ExportOptions::default()).body).unwrap();
        assert_eq!(live["processes"].as_array().map(|p| p.len()), Some(2));
        let metrics = String::from_utf8(route("/metrics", Some(&snap), &ExportOptions::default()).body).unwrap();
        assert!(metrics.contains(r#"tracer_processes{state="ended"} 1"#), "{metrics}");
    }
}
