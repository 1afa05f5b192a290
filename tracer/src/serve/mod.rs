//! `tracer serve`: the daemon. Traces one process (or with `--all` every CPython process)
//! continuously: the `record` session without a duration, driven by the same loop
//! (`session::driver`), rebuilds the live report at every interval with the same builder, and
//! serves it over HTTP (`http`) in the formats the fleet's tools scrape:
//!
//! - `/debug/pprof/heap` (and `/debug/pprof/allocs`): the gzipped profile.proto of the pprof
//!   exporter, the Go `net/http/pprof` convention `go tool pprof`, Parca and Pyroscope read;
//! - `/flamegraph.svg`, `/report.json`, `/report.txt`: the other exporters;
//! - `/metrics`: Prometheus text exposition (`export::prometheus`);
//! - `/`: the live page (`page/index.html`, `page/live.js`): header, chart, leak table,
//!   holders and the flame graph, refreshed from `/live.json` (`export::live`) at every interval.
//!
//! With `--all` (host mode) the snapshot is one report per process
//! (`{"schema":1,"processes":[...]}`): pprof samples carry `pid` and `cmdline` labels,
//! per-process `/metrics` series a `pid` label, and a process that ended keeps the report taken
//! when it ended (see `session`).
//!
//! Nothing here decides what leaks: handlers only format the last report. `--push URL` also
//! POSTs the pprof profile to a Pyroscope-compatible `URL/ingest` at every interval (`push`).

mod history;
mod http;
pub mod listen;
mod push;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::export::{self, prometheus, ExportOptions, Format};
use crate::report::{FinalView, Reports};
use crate::session::driver::{self, Tick};
use crate::session::{self, Session};

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
    /// What the live page charts: each series since it was first seen.
    pub tracks: Vec<export::live::Track>,
}

impl Snapshot {
    /// Renders the served view in `format` (one report, or one section per process).
    fn render(&self, format: Format, opts: &ExportOptions, out: &mut dyn std::io::Write) -> Result<()> {
        export::write_reports(format, &self.view, opts, out)
    }

    /// `/live.json`: what the live page draws.
    fn live(&self) -> String {
        export::live::write(&self.view, &self.tracks, self.samples)
    }

    /// `/metrics`: the reports' figures and the daemon's own.
    fn metrics(&self) -> String {
        let daemon =
            prometheus::Daemon { samples: self.samples, build_s: self.build_s, built_unix_s: self.built_unix_s };
        prometheus::write(self.view.as_slice(), self.view.is_many(), &daemon)
    }
}

/// `tracer serve`: the configuration to the daemon's exit status.
pub fn run(config: ServeConfig) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: ServeConfig) -> Result<()> {
    session::require_root()?;
    // Bind first: a taken port costs nothing to report, no probe was attached yet.
    let listener = listen::Listener::bind(&config.listen).await?;
    if let listen::Listen::Tcp(addr) = &config.listen {
        if !addr.ip().is_loopback() {
            log::warn!(
                "listening on {addr} (not loopback): anyone who can reach it reads the target's stacks and file paths"
            );
        }
    }
    let push_tls = match &config.push {
        Some(target) => push::Tls::for_target(target)?,
        None => None,
    };
    let mut stops = driver::Stops::new()?;
    let mut session = Session::start(&config.record)?;
    let (tx, rx) = watch::channel::<Option<Arc<Snapshot>>>(None);
    let bound = listener.describe();
    let acceptor = tokio::spawn(http::accept_loop(listener, rx, config.export));
    eprintln!("tracer: serving on {bound} (/debug/pprof/heap /flamegraph.svg /report.json /metrics)");
    let pushed_as = match session.procs.first() {
        Some(first) if !session.is_host() => format!("pid={}", first.target.pid),
        _ => "mode=host".to_string(),
    };
    let pusher = config.push.map(|t| Arc::new(push::Pusher::new(t, push_tls, pushed_as)));
    let interval = config.record.interval;
    let mut history = history::History::default();
    let result = driver::drive(&mut session, &mut stops, (interval, driver::Cadence::Fixed), None, |session, tick| {
        let mut snapshot = live_snapshot(session, tick, interval);
        history.record(&snapshot.view);
        snapshot.tracks = history.tracks();
        let snapshot = Arc::new(snapshot);
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
    Snapshot { view, built_unix_s: unix_now(), build_s, samples: tick.number, tracks: Vec::new() }
}

/// Wall-clock time, seconds since the epoch.
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
