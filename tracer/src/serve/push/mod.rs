//! `serve --push URL`: POSTs the pprof profile to a Pyroscope-compatible `URL/ingest` at every
//! interval, best effort: one push in flight at most, a timeout, retries with backoff
//! ([`RETRY_DELAYS`]) on connection errors, 5xx and 429, failures logged once. The name is
//! `--push-name{pid=N,hostname=H,--push-tag...}`; credentials and tenant come from the
//! environment (`config::PushTarget::with_credentials`). `https://` URLs go over TLS (`tls`); a
//! certificate the host does not trust fails the push without retries.

mod tls;

pub use tls::Tls;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::PushTarget;
use crate::export::{ExportOptions, Format};

use super::{unix_now, Snapshot};

/// Time one push may take, its retries included.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits before the second and third attempts of a push.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(500), Duration::from_millis(1500)];

/// Why an attempt failed, and whether another one may succeed.
struct Failure {
    error: anyhow::Error,
    retry: bool,
}

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

pub struct Pusher {
    target: PushTarget,
    /// The TLS client of an `https://` target.
    tls: Option<Tls>,
    /// The label of the pushed application name: `pid=N`, or `mode=host` with --all (the
    /// profile's samples then carry a `pid` label each).
    label: String,
    in_flight: AtomicBool,
    failing: AtomicBool,
    last_until: std::sync::Mutex<u64>,
}

impl Pusher {
    pub fn new(target: PushTarget, tls: Option<Tls>, label: String) -> Pusher {
        let now = unix_now() as u64;
        Pusher {
            target,
            tls,
            label,
            in_flight: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            last_until: std::sync::Mutex::new(now),
        }
    }

    /// Renders the profile now and sends it in the background; skipped while the previous push
    /// is still in flight.
    pub fn push(self: &Arc<Self>, snapshot: &Snapshot) {
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
            let result = tokio::time::timeout(PUSH_TIMEOUT, this.send_with_retries(body, from, until)).await;
            let result =
                result.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {} s", PUSH_TIMEOUT.as_secs())));
            match result {
                Ok(()) => {
                    if this.failing.swap(false, Ordering::AcqRel) {
                        log::warn!("push to {} works again", this.target.ingest_url());
                    }
                }
                Err(e) => {
                    if !this.failing.swap(true, Ordering::AcqRel) {
                        log::warn!(
                            "push to {} failed: {e:#} (further failures are not logged until it works again)",
                            this.target.ingest_url()
                        );
                    } else {
                        log::debug!("push failed: {e:#}");
                    }
                }
            }
            this.in_flight.store(false, Ordering::Release);
        });
    }

    /// Sends, retrying after [`RETRY_DELAYS`] while the failure may pass.
    async fn send_with_retries(&self, body: Vec<u8>, from: u64, until: u64) -> Result<()> {
        let mut delays = RETRY_DELAYS.iter();
        loop {
            match self.send(&body, from, until).await {
                Ok(()) => return Ok(()),
                Err(f) => match delays.next() {
                    Some(d) if f.retry => {
                        log::debug!("push: {:#}; retrying in {} ms", f.error, d.as_millis());
                        tokio::time::sleep(*d).await;
                    }
                    _ => return Err(f.error),
                },
            }
        }
    }

    /// `name{pid=N,hostname=H,k=v}`: the application name with its labels.
    fn app_name(&self) -> String {
        let mut labels = vec![self.label.clone()];
        labels.extend(self.target.tags.iter().map(|(k, v)| format!("{k}={v}")));
        format!("{}{{{}}}", self.target.name, labels.join(","))
    }

    async fn send(&self, body: &[u8], from: u64, until: u64) -> std::result::Result<(), Failure> {
        let retry = |error: anyhow::Error| Failure { error, retry: true };
        let path = format!(
            "{}/ingest?name={}&from={from}&until={until}&format=pprof&spyName=tracer",
            self.target.prefix,
            query_escape(&self.app_name())
        );
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tracer/{}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.target.host_header,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if let Some(auth) = &self.target.auth {
            let _ = write!(head, "Authorization: {auth}\r\n");
        }
        if let Some(tenant) = &self.target.tenant {
            let _ = write!(head, "X-Scope-OrgID: {tenant}\r\n");
        }
        head.push_str("\r\n");
        let tcp = TcpStream::connect(&self.target.authority)
            .await
            .with_context(|| format!("connecting to {}", self.target.authority))
            .map_err(retry)?;
        let line = match &self.tls {
            Some(tls) => {
                let stream = tls.handshake(tcp).await?;
                exchange(stream, head.as_bytes(), body).await
            }
            None => exchange(tcp, head.as_bytes(), body).await,
        }
        .map_err(retry)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no HTTP status in {line:?}"))
            .map_err(retry)?;
        if !(200..300).contains(&status) {
            let hint = if matches!(status, 401 | 403) { " (check TRACER_PUSH_* credentials)" } else { "" };
            let error = anyhow::anyhow!("server answered {line:?}{hint}");
            return Err(Failure { error, retry: status >= 500 || status == 429 });
        }
        Ok(())
    }
}

/// Sends the request and returns the response's status line (a bounded read: it is all a push
/// needs).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, head: &[u8], body: &[u8]) -> Result<String> {
    stream.write_all(head).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_names_are_query_escaped() {
        assert_eq!(query_escape("tracer.python{pid=42}"), "tracer.python%7Bpid%3D42%7D");
    }
}
