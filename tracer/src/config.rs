//! What a command asks for, with the command line already interpreted: plain data, no clap.
//! `cli.rs` builds these; `record`, `serve`, `session` and `output` read them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::error::user_error;
use crate::export::{ExportOptions, Format};
use crate::host::HostFilter;
use crate::leaks::Criteria;
use crate::probes::MapSizes;
use crate::python::census::CensusBudget;
use crate::python::heap::ScanBudget;

/// The default `serve --listen`: loopback only; another address must be asked for.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6060";

/// Which processes a recording traces.
#[derive(Debug, Clone)]
pub enum Targets {
    /// A running process (`-p PID`).
    Pid(u32),
    /// A command started by the tracer (`-- python3 app.py`), traced from its first line.
    Launch {
        argv: Vec<String>,
        /// Start it with PYTHONMALLOC=malloc (small objects tracked by stack too).
        python_malloc: bool,
    },
    /// Host mode (`--all`): every CPython process that passes the filter, also later ones.
    Host(HostFilter),
}

impl Targets {
    pub fn is_host(&self) -> bool {
        matches!(self, Targets::Host(_))
    }
}

/// Whether the containers of the target are scanned (the holders view), and whether the
/// allocation probes are attached at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldersMode {
    Off,
    On,
    /// No probes: only the containers are read. The cheapest first look.
    Only,
}

/// Probe windows (`--window`): when the allocation and free probes are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowMode {
    /// Always (`--window off`, `record`'s default).
    Off,
    /// `on` out of every `every` (`--window 1s/10s`).
    Fixed(WindowSpec),
    /// Like `Fixed`, but a window opens only while the process's heap grows (`--window auto`,
    /// `serve`'s default, 1s/10s; `auto:ON/EVERY` for other windows).
    Auto(WindowSpec),
}

/// A window's length and period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub on: Duration,
    pub every: Duration,
}

impl WindowSpec {
    /// `--window auto`'s windows.
    pub const AUTO: WindowSpec = WindowSpec { on: Duration::from_secs(1), every: Duration::from_secs(10) };
}

impl WindowMode {
    /// `--window off|auto|auto:ON/EVERY|ON/EVERY`; `parse_duration` reads each length.
    pub fn parse(text: &str, parse_duration: impl Fn(&str) -> Result<Duration, String>) -> Result<WindowMode> {
        let hint = "use --window ON/EVERY (e.g. 1s/10s: probes attached 1 s out of every 10 s), auto or off";
        let text = text.trim();
        match text {
            "off" | "none" => return Ok(WindowMode::Off),
            "auto" => return Ok(WindowMode::Auto(WindowSpec::AUTO)),
            _ => {}
        }
        if let Some(spec) = text.strip_prefix("auto:") {
            return match WindowMode::parse(spec, parse_duration)? {
                WindowMode::Fixed(s) => Ok(WindowMode::Auto(s)),
                _ => Err(user_error(format!("--window {text}: auto: takes ON/EVERY"), hint)),
            };
        }
        let Some((on, every)) = text.split_once('/') else {
            return Err(user_error(format!("--window {text}: not ON/EVERY"), hint));
        };
        let bad = |e: String| user_error(format!("--window {text}: {e}"), hint);
        let spec = WindowSpec { on: parse_duration(on).map_err(bad)?, every: parse_duration(every).map_err(bad)? };
        if spec.on < Duration::from_millis(200) {
            return Err(user_error(
                format!("--window {text}: a window under 200 ms is mostly spent attaching and detaching"),
                "open windows of at least 200 ms (1s/10s is a good start)",
            ));
        }
        if spec.on >= spec.every {
            return Err(user_error(
                format!("--window {text}: the window is not shorter than its period"),
                "give a period longer than the window (1s/10s), or --window off to trace all the time",
            ));
        }
        Ok(WindowMode::Fixed(spec))
    }

    /// The windows, unless the probes are attached all the time.
    pub fn spec(&self) -> Option<WindowSpec> {
        match *self {
            WindowMode::Off => None,
            WindowMode::Fixed(s) | WindowMode::Auto(s) => Some(s),
        }
    }
}

/// What `record` and `serve` both take: leak thresholds, sampling, table sizes, scan budget.
#[derive(Debug, Clone)]
pub struct TracingConfig {
    pub criteria: Criteria,
    /// Allocation-sampling period in bytes (0: every allocation).
    pub sample_bytes: u64,
    pub sizes: MapSizes,
    pub holder_budget: ScanBudget,
    /// Take table sizes beyond a quarter of the available memory.
    pub force: bool,
    /// Show dict keys read from the target as they are (`redact`).
    pub show_target_strings: bool,
    /// When the allocation and free probes are attached.
    pub window: WindowMode,
    /// Limits of one census scan; `None`: no census.
    pub census_budget: Option<CensusBudget>,
}

/// Everything a recording session needs (`record`, and `serve` without a duration).
#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub targets: Targets,
    /// Stop after this long; `None`: until a signal or the target ends.
    pub duration: Option<Duration>,
    /// Sampling interval of the time series.
    pub interval: Duration,
    pub tracing: TracingConfig,
    pub holders: HoldersMode,
    /// Also trace the processes the targets fork.
    pub follow_forks: bool,
    /// A progress line on stderr (when it is a terminal).
    pub progress: bool,
}

/// Where a report goes and in which format.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// `None`: stdout.
    pub path: Option<PathBuf>,
    pub format: Format,
    pub options: ExportOptions,
}

impl Destination {
    /// The format asked for, else the one `path`'s extension names, else text.
    pub fn new(path: Option<PathBuf>, format: Option<Format>, options: ExportOptions) -> Destination {
        let format = format.or_else(|| path.as_deref().and_then(Format::from_path)).unwrap_or(Format::Text);
        Destination { path, format, options }
    }
}

/// `tracer record`: the session, where its report goes, and the exit-status gate.
#[derive(Debug, Clone)]
pub struct RecordCommand {
    pub config: RecordConfig,
    pub destination: Destination,
    /// Exit with status 3 (`record::EXIT_LEAK_FOUND`) when a leak was found.
    pub fail_on_leak: bool,
}

/// `tracer serve`: the session without a duration, where to listen, where to push.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub record: RecordConfig,
    pub listen: SocketAddr,
    pub push: Option<PushTarget>,
    pub export: ExportOptions,
}

/// `--push http://host[:port][/prefix]`, where `/ingest` is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// `host:port` to connect to.
    pub authority: String,
    /// The Host header.
    pub host_header: String,
    /// Path prefix without a trailing slash.
    pub prefix: String,
}

impl PushTarget {
    pub fn parse(url: &str) -> Result<PushTarget> {
        let hint = "give the server's base URL, e.g. --push http://pyroscope:4040 (plain HTTP; /ingest is appended)";
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(user_error(format!("--push {url}: only http:// URLs are supported"), hint));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
            return Err(user_error(format!("--push {url}: not a base URL"), hint));
        }
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[i..].contains(']'),
            None => false,
        };
        Ok(PushTarget {
            authority: if has_port { authority.to_string() } else { format!("{authority}:80") },
            host_header: authority.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_urls() {
        let t = PushTarget::parse("http://pyroscope:4040").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.host_header.as_str(), t.prefix.as_str()),
            ("pyroscope:4040", "pyroscope:4040", "")
        );
        let t = PushTarget::parse("http://example.com/base/").unwrap();
        assert_eq!((t.authority.as_str(), t.prefix.as_str()), ("example.com:80", "/base"));
        let t = PushTarget::parse("http://[::1]:4040").unwrap();
        assert_eq!(t.authority, "[::1]:4040");
        assert!(PushTarget::parse("https://x").is_err());
        assert!(PushTarget::parse("http://user:pw@x").is_err());
        assert!(PushTarget::parse("http://").is_err());
    }

    #[test]
    fn format_follows_extension() {
        let dest = |o: &str, f: Option<Format>| Destination::new(Some(o.into()), f, ExportOptions::default()).format;
        assert_eq!(dest("leaks.svg", None), Format::Svg);
        assert_eq!(dest("x.pb.gz", None), Format::Pprof);
        assert_eq!(dest("x.speedscope.json", None), Format::Speedscope);
        assert_eq!(dest("x.json", None), Format::Json);
        assert_eq!(dest("x.svg", Some(Format::Json)), Format::Json);
        assert_eq!(dest("x.unknown", None), Format::Text);
        assert_eq!(Destination::new(None, None, ExportOptions::default()).format, Format::Text);
    }
}
