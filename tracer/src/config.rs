//! What a command asks for, with the command line already interpreted: plain data, no clap.
//! `cli.rs` builds these; `record`, `serve`, `session` and `output` read them.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use base64::prelude::{Engine as _, BASE64_STANDARD};

use crate::error::{user_error, UserError};
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
    pub listen: Listen,
    pub push: Option<PushTarget>,
    pub export: ExportOptions,
}

/// `--listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    /// `unix:/path`, an `IP:PORT`, or `HOST:PORT` with a host name that resolves (its first
    /// address).
    pub fn parse(s: &str) -> Result<Listen, UserError> {
        let hint = "give IP:PORT (127.0.0.1:6060), HOST:PORT (localhost:6060) or unix:/path/to.sock";
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() || path.contains('\0') {
                return Err(UserError::new(format!("{s:?} names no socket path"), hint));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Listen::Tcp(addr));
        }
        if !s.contains(':') {
            return Err(UserError::new(format!("{s:?} has no port"), hint));
        }
        match s.to_socket_addrs() {
            Ok(mut addrs) => match addrs.next() {
                Some(addr) => Ok(Listen::Tcp(addr)),
                None => Err(UserError::new(format!("{s:?} resolves to no address"), hint)),
            },
            Err(e) => Err(UserError::new(format!("cannot listen on {s:?}: {e}"), hint)),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `--push http[s]://host[:port][/prefix]`, where `/ingest` is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// `https://`: the push goes over TLS (serve/push/tls.rs).
    pub tls: bool,
    /// `host:port` to connect to.
    pub authority: String,
    /// The Host header.
    pub host_header: String,
    /// The host alone (no port, no brackets): the TLS server name the certificate must carry.
    pub server_name: String,
    /// Path prefix without a trailing slash.
    pub prefix: String,
    /// The application name (`--push-name`, default `tracer.python`).
    pub name: String,
    /// Labels added to the name (`--push-tag k=v`; `hostname` by default).
    pub tags: Vec<(String, String)>,
    /// The `Authorization` header value, from the environment only (never argv).
    pub auth: Option<String>,
    /// The tenant (`X-Scope-OrgID`), from `TRACER_PUSH_TENANT`.
    pub tenant: Option<String>,
    /// A PEM file of CA certificates trusted besides the host's store, from `TRACER_PUSH_CA`
    /// (https only).
    pub ca_file: Option<PathBuf>,
}

/// The default application name of a push.
pub const PUSH_NAME: &str = "tracer.python";

/// A push name or tag key: letters, digits, `_`, `.`, `-`, not empty, not starting with a digit.
fn push_word(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl PushTarget {
    /// `--push-name` and `--push-tag k=v` (a `hostname` tag is added unless given), checked.
    pub fn named(mut self, name: Option<&str>, tags: &[String], hostname: &str) -> Result<PushTarget> {
        let name = name.unwrap_or(PUSH_NAME);
        if !push_word(name) {
            return Err(user_error(
                format!("--push-name {name:?}: not an application name"),
                "use letters, digits, '.', '_' and '-', e.g. --push-name checkout.api",
            ));
        }
        self.name = name.to_string();
        for tag in tags {
            let (k, v) = tag.split_once('=').unwrap_or((tag, ""));
            let bad_value =
                v.is_empty() || v.contains(['{', '}', ',', '=', '"', '\\']) || v.chars().any(char::is_control);
            if !push_word(k) || bad_value || k == "pid" || k == "mode" {
                return Err(user_error(
                    format!("--push-tag {tag:?}: not a tag"),
                    "give KEY=VALUE (KEY of letters, digits, '_', '.'; not pid or mode; VALUE without {},=\"), e.g. --push-tag env=prod",
                ));
            }
            self.tags.push((k.to_string(), v.to_string()));
        }
        if !self.tags.iter().any(|(k, _)| k == "hostname") && !hostname.is_empty() {
            self.tags.insert(0, ("hostname".to_string(), hostname.to_string()));
        }
        Ok(self)
    }

    /// Credentials, tenant and private CA from the environment: `TRACER_PUSH_TOKEN` (bearer), or
    /// `TRACER_PUSH_USER` and `TRACER_PUSH_PASSWORD` (basic; Grafana Cloud: the stack's user id
    /// and an access token), `TRACER_PUSH_TENANT` (`X-Scope-OrgID`) and `TRACER_PUSH_CA` (a PEM
    /// file, read when the pusher starts).
    pub fn with_credentials(mut self, env: impl Fn(&str) -> Option<String>) -> Result<PushTarget> {
        let set = |k: &str| env(k).filter(|v| !v.is_empty());
        let (token, user, password) = (set("TRACER_PUSH_TOKEN"), set("TRACER_PUSH_USER"), set("TRACER_PUSH_PASSWORD"));
        self.auth = match (token, user, password) {
            (Some(_), Some(_), _) => return Err(user_error(
                "both TRACER_PUSH_TOKEN and TRACER_PUSH_USER are set",
                "set TRACER_PUSH_TOKEN for bearer auth, or TRACER_PUSH_USER and TRACER_PUSH_PASSWORD for basic auth",
            )),
            (Some(t), None, _) => Some(format!("Bearer {t}")),
            (None, Some(u), Some(p)) => Some(format!("Basic {}", BASE64_STANDARD.encode(format!("{u}:{p}")))),
            (None, Some(_), None) => {
                return Err(user_error(
                    "TRACER_PUSH_USER is set without TRACER_PUSH_PASSWORD",
                    "set both for basic auth",
                ))
            }
            (None, None, _) => None,
        };
        if self.auth.as_deref().is_some_and(|a| a.chars().any(char::is_control)) {
            return Err(user_error("the push credentials hold a control character", "check TRACER_PUSH_* variables"));
        }
        self.tenant = set("TRACER_PUSH_TENANT");
        if self.tenant.as_deref().is_some_and(|t| t.chars().any(char::is_control)) {
            return Err(user_error("TRACER_PUSH_TENANT holds a control character", "give the tenant id only"));
        }
        self.ca_file = set("TRACER_PUSH_CA").map(PathBuf::from);
        Ok(self)
    }
}

impl PushTarget {
    pub fn parse(url: &str) -> Result<PushTarget> {
        let hint = "give the server's base URL, e.g. --push https://pyroscope.example.com or \
                    --push http://pyroscope:4040 (/ingest is appended)";
        // Errors show the URL without its credentials: they go to logs.
        let shown = without_userinfo(url);
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => {
                return Err(user_error(format!("--push {shown}: only http:// and https:// URLs are supported"), hint))
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(user_error(
                format!("--push {shown}: credentials in the URL are not accepted (ps shows them)"),
                "set TRACER_PUSH_USER and TRACER_PUSH_PASSWORD (or TRACER_PUSH_TOKEN) in the environment instead",
            ));
        }
        if authority.is_empty() || path.contains(['?', '#']) {
            return Err(user_error(format!("--push {shown}: not a base URL"), hint));
        }
        let host = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => &authority[..i],
            _ => authority,
        };
        let server_name = host.trim_start_matches('[').trim_end_matches(']');
        if server_name.is_empty() || (tls && rustls::pki_types::ServerName::try_from(server_name).is_err()) {
            return Err(user_error(format!("--push {shown}: {server_name:?} is not a host name or address"), hint));
        }
        let default_port = if tls { 443 } else { 80 };
        Ok(PushTarget {
            tls,
            authority: if host.len() < authority.len() {
                authority.to_string()
            } else {
                format!("{authority}:{default_port}")
            },
            host_header: authority.to_string(),
            server_name: server_name.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
            name: PUSH_NAME.to_string(),
            tags: Vec::new(),
            auth: None,
            tenant: None,
            ca_file: None,
        })
    }

    /// The ingest URL, for messages: `https://host:port/prefix/ingest` (never with credentials).
    pub fn ingest_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}/ingest", self.host_header, self.prefix)
    }
}

/// `url` with anything before an `@` in its authority replaced by `***`.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_errors_never_show_credentials() {
        for url in ["http://user:s3cret@x:4040", "https://user:s3cret@x/p", "ftp://s3cret@x", "user:s3cret@x"] {
            let e = PushTarget::parse(url).unwrap_err();
            let u = e.downcast_ref::<UserError>().unwrap();
            assert!(!format!("{} {}", u.message, u.hint).contains("s3cret"), "{url}: {} / {}", u.message, u.hint);
            assert!(u.message.contains("***@x"), "{}", u.message);
        }
    }

    #[test]
    fn parses_addresses_names_and_sockets() {
        assert_eq!(Listen::parse("127.0.0.1:0").unwrap(), Listen::Tcp("127.0.0.1:0".parse().unwrap()));
        assert_eq!(Listen::parse("[::1]:6060").unwrap(), Listen::Tcp("[::1]:6060".parse().unwrap()));
        match Listen::parse("localhost:6060").unwrap() {
            Listen::Tcp(addr) => assert!(addr.ip().is_loopback() && addr.port() == 6060, "{addr}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(Listen::parse("unix:/run/t.sock").unwrap(), Listen::Unix("/run/t.sock".into()));
        assert_eq!(Listen::parse("unix:/run/t.sock").unwrap().to_string(), "unix:/run/t.sock");
        for bad in ["unix:", "localhost", "6060", "no-such-host.invalid:80"] {
            let e = Listen::parse(bad).unwrap_err();
            assert!(e.hint.contains("unix:/path"), "{bad}: {e} / {}", e.hint);
        }
    }

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
        assert_eq!((t.authority.as_str(), t.server_name.as_str(), t.tls), ("[::1]:4040", "::1", false));
        let t = PushTarget::parse("https://profiles.example.com/p").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.host_header.as_str(), t.server_name.as_str(), t.tls),
            ("profiles.example.com:443", "profiles.example.com", "profiles.example.com", true)
        );
        assert_eq!(t.ingest_url(), "https://profiles.example.com/p/ingest");
        let t = PushTarget::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!((t.authority.as_str(), t.server_name.as_str()), ("127.0.0.1:8443", "127.0.0.1"));
        let t = PushTarget::parse("https://[::1]").unwrap();
        assert_eq!((t.authority.as_str(), t.server_name.as_str()), ("[::1]:443", "::1"));
        for bad in
            ["ftp://x", "x:4040", "http://user:pw@x", "http://", "https://:443", "https://bad_name!/", "http://x/?a"]
        {
            assert!(PushTarget::parse(bad).is_err(), "{bad}");
        }
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

    #[test]
    fn push_names_tags_and_credentials() {
        let t = PushTarget::parse("http://p:4040").unwrap();
        let named = t.clone().named(Some("checkout.api"), &["env=prod".into()], "web-1").unwrap();
        assert_eq!(named.name, "checkout.api");
        assert_eq!(named.tags, [("hostname".into(), "web-1".into()), ("env".into(), "prod".into())]);
        let own_host = t.clone().named(None, &["hostname=h".into()], "web-1").unwrap();
        assert_eq!((own_host.name.as_str(), own_host.tags.len()), (PUSH_NAME, 1));
        for bad in ["env", "env=", "=x", "pid=3", "a=b,c", "a=}", "1a=b"] {
            assert!(t.clone().named(None, &[bad.into()], "h").is_err(), "{bad}");
        }
        assert!(t.clone().named(Some("a b"), &[], "h").is_err());
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
        };
        let basic = t.clone().with_credentials(env(&[("TRACER_PUSH_USER", "123"), ("TRACER_PUSH_PASSWORD", "glc_x")]));
        assert_eq!(basic.unwrap().auth.as_deref(), Some("Basic MTIzOmdsY194"));
        let bearer = t.clone().with_credentials(env(&[("TRACER_PUSH_TOKEN", "tok"), ("TRACER_PUSH_TENANT", "team-a")]));
        let bearer = bearer.unwrap();
        assert_eq!((bearer.auth.as_deref(), bearer.tenant.as_deref()), (Some("Bearer tok"), Some("team-a")));
        assert!(t.clone().with_credentials(env(&[("TRACER_PUSH_USER", "u")])).is_err());
        assert!(t.clone().with_credentials(env(&[("TRACER_PUSH_USER", "u"), ("TRACER_PUSH_TOKEN", "t")])).is_err());
        let ca = t.clone().with_credentials(env(&[("TRACER_PUSH_CA", "/etc/ca.pem")])).unwrap();
        assert_eq!(ca.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(t.with_credentials(env(&[])).unwrap().auth, None);
    }
}
