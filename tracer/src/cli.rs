//! The command line (clap lives only here) and its translation into plain configuration
//! (`config.rs`): `into_config` methods, which hold the checks that span several flags.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::config::{
    Destination, HoldersMode, Listen, PushTarget, RecordCommand, RecordConfig, ServeConfig, Targets, TracingConfig,
    WindowMode, WindowSpec, DEFAULT_LISTEN,
};
use crate::error::{user_error, UserError};
use crate::export::{ExportOptions, Format};
use crate::host::HostFilter;

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Find the Python lines that leak memory in a running CPython process (eBPF, no restart)"
)]
pub struct Cli {
    /// More detail on stderr (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace a running process (-p PID) or a command (-- python app.py) and report its leaks.
    Record(RecordArgs),
    /// Re-render a saved JSON report into another format.
    Report(ReportArgs),
    /// Trace a running process (or with --all every CPython process) continuously and serve the
    /// live report over HTTP (/debug/pprof/heap, /flamegraph.svg, /report.json, /metrics).
    Serve(ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout: tracer(1), or tracer-SUBCOMMAND(1).
    #[command(hide = true)]
    Man { subcommand: Option<String> },
}

#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Write the report here instead of stdout; the extension picks the format
    /// (.json .folded .svg .pb.gz .pprof .speedscope.json .txt).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// text, json, folded, svg, pprof or speedscope (default: from -o's extension, else text).
    #[arg(short, long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// Suspects shown in detail in the text report.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub top: u64,
    /// Flame formats: every live stack, not only the leaking and growing ones.
    #[arg(long)]
    pub all_stacks: bool,
    /// pprof and speedscope: keep the native allocating frame as the leaf (by default the
    /// innermost Python line is the leaf and the native frames become sample labels).
    #[arg(long)]
    pub native_leaf: bool,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// PID of the CPython process to trace.
    #[arg(short, long, conflicts_with_all = ["command", "all"], allow_negative_numbers = true, value_parser = parse_pid)]
    pub pid: Option<u32>,
    /// Host mode: every CPython process on the host, including those started later, each in
    /// its own report section. Processes that are not CPython never get a probe.
    #[arg(long, conflicts_with = "command")]
    pub all: bool,
    #[command(flatten)]
    pub host: HostArgs,
    /// Stop after this long (30, 30s, 500ms, 5m, 1h). Default: until Ctrl-C or the target exits.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Sampling interval for the growth time series (at least 100ms).
    #[arg(short, long, default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Exit with status 3 when at least one suspect is a leak.
    #[arg(long)]
    pub fail_on_leak: bool,
    #[command(flatten)]
    pub tracing: TracingArgs,
    /// Also trace processes the target forks (multiprocessing workers), each in its own report
    /// section.
    #[arg(long)]
    pub follow_forks: bool,
    /// Launch mode: start the command with PYTHONMALLOC=malloc so objects of 512 bytes or less
    /// are tracked by stack too (slower; see README).
    #[arg(long, requires = "command")]
    pub python_malloc: bool,
    /// Only read the target's containers (the holders view): no probes at all, the cheapest
    /// first look at a production process.
    #[arg(long, conflicts_with = "no_holders")]
    pub holders_only: bool,
    /// Do not read the target's containers.
    #[arg(long)]
    pub no_holders: bool,
    /// No progress line on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// The command to launch and trace from its first line of Python.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Host mode's filters, the same for `record --all` and `serve --all`.
#[derive(Args, Debug, Clone)]
pub struct HostArgs {
    /// Host mode: only processes whose command line matches this regular expression.
    #[arg(long = "match", value_name = "REGEX", value_parser = parse_regex)]
    pub matching: Option<regex::Regex>,
    /// Host mode: never trace this process (repeatable).
    #[arg(long, value_name = "PID")]
    pub exclude_pid: Vec<u32>,
    /// Host mode: trace at most this many processes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_processes: u64,
}

impl HostArgs {
    /// The filter when `--all` was given; `--match` without `--all` is an error a person can fix.
    fn filter(&self, all: bool, command: &str) -> Result<Option<HostFilter>> {
        if self.matching.is_some() && !all {
            return Err(user_error(
                "--match selects processes in host mode",
                format!("add --all: tracer {command} --all --match REGEX"),
            ));
        }
        Ok(all.then(|| HostFilter {
            matching: self.matching.clone(),
            exclude: self.exclude_pid.clone(),
            max_processes: self.max_processes as usize,
        }))
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A report written by `tracer record -f json` (`-`: read it from stdin).
    pub input: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// PID of the CPython process to trace.
    #[arg(
        short,
        long,
        allow_negative_numbers = true,
        required_unless_present = "all",
        conflicts_with = "all",
        value_parser = parse_pid
    )]
    pub pid: Option<u32>,
    /// Host mode: every CPython process on the host, including those started later; each is
    /// served as its own profile (pprof label `pid`, `/metrics` label `pid`).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub host: HostArgs,
    /// Address to serve on: IP:PORT, HOST:PORT, or unix:/path for a Unix socket created mode
    /// 0600 (only root connects). Loopback by default: another address only when given here.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: Listen,
    /// Sampling interval: the live report is rebuilt (and pushed) this often (at least 100ms).
    #[arg(short, long, default_value = "10s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Also POST the pprof profile to this Pyroscope-compatible server at every interval
    /// (http://HOST:PORT or https://HOST[:PORT]; `/ingest` is appended). https trusts the host's
    /// CA store, plus the PEM file named by TRACER_PUSH_CA (a private CA).
    #[arg(long, value_name = "URL")]
    pub push: Option<String>,
    /// Application name of the pushed profiles (default tracer.python). Credentials come from
    /// the environment only: TRACER_PUSH_TOKEN (bearer), or TRACER_PUSH_USER and
    /// TRACER_PUSH_PASSWORD (basic); TRACER_PUSH_TENANT sets X-Scope-OrgID.
    #[arg(long, value_name = "NAME", requires = "push")]
    pub push_name: Option<String>,
    /// A label of the pushed profiles, KEY=VALUE (repeatable; hostname=<this host> unless given).
    #[arg(long, value_name = "KEY=VALUE", requires = "push")]
    pub push_tag: Vec<String>,
    /// Suspects shown in detail in /report.txt, and stacks drawn when nothing leaks.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub top: u64,
    /// /flamegraph.svg: every live stack, not only the leaking and growing ones.
    #[arg(long)]
    pub all_stacks: bool,
    #[command(flatten)]
    pub tracing: TracingArgs,
    /// Do not read the target's containers.
    #[arg(long)]
    pub no_holders: bool,
}

/// What `record` and `serve` both take: leak thresholds, sampling, table sizes, scan budget.
#[derive(Args, Debug, Clone)]
pub struct TracingArgs {
    /// A leak must have at least this many outstanding bytes.
    #[arg(long, value_name = "BYTES", value_parser = parse_threshold)]
    pub min_leak_bytes: Option<f64>,
    /// A leak must grow by at least this many bytes per second.
    #[arg(long, value_name = "BYTES_PER_S", value_parser = parse_threshold)]
    pub min_growth: Option<f64>,
    /// Sample allocations by bytes: each allocation of S bytes is recorded with probability
    /// S/N (always when S >= N) and counted as N bytes, so totals are unbiased estimates. 0
    /// records every allocation.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=(1 << 40)))]
    pub sample_bytes: u64,
    /// Capacity of the outstanding-allocation table.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(16..=(1 << 26)))]
    pub max_allocs: u32,
    /// Capacity of the distinct-stack table.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(16..=(1 << 22)))]
    pub max_stacks: u32,
    /// Show strings read from the target's memory (dict keys in holder paths) as they are; by
    /// default each is shown as its type and a short hash (`CACHE[<str #5d41402a>]`).
    #[arg(long)]
    pub show_target_strings: bool,
    /// Take --max-allocs/--max-stacks sizes whose kernel memory exceeds a quarter of the
    /// host's available memory (refused otherwise).
    #[arg(long)]
    pub force: bool,
    /// Most objects one container scan may visit.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(100..=50_000_000))]
    pub holders_budget: u64,
    /// Probe windows: attach the allocation and free probes only ON out of every EVERY
    /// (e.g. 1s/10s: about a tenth of the cost), `auto` (1s/10s, and only while the heap grows;
    /// serve's default; `auto:ON/EVERY` for other windows) or `off` (all the time; record's
    /// default). Rates are scaled to the whole timeline.
    #[arg(long, value_name = "ON/EVERY|auto|off")]
    pub window: Option<String>,
    /// Most objects one census scan (every tracked object, counted by type) may visit; 0: no
    /// census. A scan cut short says so in the report, with what it skipped.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pub census_budget: u64,
}

impl TracingArgs {
    fn config(&self, default_window: WindowMode) -> Result<TracingConfig> {
        let window = match &self.window {
            Some(text) => WindowMode::parse(text, parse_duration)?,
            None => default_window,
        };
        let mut criteria = crate::leaks::Criteria::for_bytes();
        if let Some(b) = self.min_leak_bytes {
            criteria.min_total_growth = b;
        }
        if let Some(g) = self.min_growth {
            criteria.min_growth_per_s = g;
        }
        Ok(TracingConfig {
            criteria,
            window,
            sample_bytes: self.sample_bytes,
            sizes: crate::probes::MapSizes { max_allocs: self.max_allocs, max_stacks: self.max_stacks },
            holder_budget: crate::python::heap::ScanBudget {
                max_objects: self.holders_budget as usize,
                ..Default::default()
            },
            force: self.force,
            show_target_strings: self.show_target_strings,
            census_budget: (self.census_budget > 0)
                .then(|| crate::python::census::CensusBudget { max_objects: self.census_budget, ..Default::default() }),
        })
    }
}

/// The one place a `RecordConfig` is made (for `record` and `serve`): no duration, no forks,
/// no progress line; `record` sets those it has.
fn record_config(targets: Targets, interval: Duration, tracing: TracingConfig, holders: HoldersMode) -> RecordConfig {
    RecordConfig { targets, duration: None, interval, tracing, holders, follow_forks: false, progress: false }
}

impl RecordArgs {
    pub fn into_config(self) -> Result<RecordCommand> {
        if self.pid.is_none() && self.command.is_empty() && !self.all {
            return Err(user_error(
                "nothing to trace",
                "give a PID (tracer record -p PID) or a command (tracer record -- python3 app.py)",
            ));
        }
        let host = self.host.filter(self.all, "record")?;
        let targets = match (host, self.pid) {
            (Some(filter), _) => Targets::Host(filter),
            (None, Some(pid)) => Targets::Pid(pid),
            (None, None) => Targets::Launch { argv: self.command, python_malloc: self.python_malloc },
        };
        let holders = if self.holders_only {
            HoldersMode::Only
        } else if self.no_holders {
            HoldersMode::Off
        } else {
            HoldersMode::On
        };
        let config = RecordConfig {
            duration: self.duration,
            follow_forks: self.follow_forks,
            progress: !self.quiet,
            ..record_config(targets, self.interval, self.tracing.config(WindowMode::Off)?, holders)
        };
        Ok(RecordCommand { config, destination: self.output.destination(), fail_on_leak: self.fail_on_leak })
    }
}

impl ServeArgs {
    pub fn into_config(self) -> Result<ServeConfig> {
        let host = self.host.filter(self.all, "serve")?;
        let targets = match (host, self.pid) {
            (Some(filter), _) => Targets::Host(filter),
            (None, Some(pid)) => Targets::Pid(pid),
            (None, None) => {
                return Err(user_error(
                    "nothing to serve",
                    "give a PID (tracer serve -p PID) or --all for every CPython process",
                ))
            }
        };
        let push = match self.push.as_deref() {
            Some(url) => Some(
                PushTarget::parse(url)?
                    .named(self.push_name.as_deref(), &self.push_tag, &crate::procfs::hostname())?
                    .with_credentials(|k| std::env::var(k).ok())?,
            ),
            None => None,
        };
        let holders = if self.no_holders { HoldersMode::Off } else { HoldersMode::On };
        let tracing = self.tracing.config(WindowMode::Auto(WindowSpec::AUTO))?;
        Ok(ServeConfig {
            record: record_config(targets, self.interval, tracing, holders),
            listen: self.listen,
            push,
            export: ExportOptions { all_stacks: self.all_stacks, top: self.top as usize, ..ExportOptions::default() },
        })
    }
}

/// `--listen`: a bad address is an `error:`/`hint:` pair.
fn parse_listen(s: &str) -> Result<Listen, Box<dyn std::error::Error + Send + Sync>> {
    Ok(Listen::parse(s)?)
}

/// A PID: a positive 32-bit number. A number that is not one is an `error:`/`hint:` pair (a
/// [`UserError`], which `main` prints as such); anything else is clap's "invalid value".
fn parse_pid(s: &str) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    let n: i128 = s.parse()?;
    match u32::try_from(n) {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(Box::new(UserError::new(
            format!("{s} is not a valid PID"),
            "PIDs are positive numbers; find yours with `pgrep -f app.py`",
        ))),
    }
}

/// The [`UserError`] a flag's parser reported, if that is why the command line was refused.
pub fn user_error_of(e: &clap::Error) -> Option<&UserError> {
    std::error::Error::source(e)?.downcast_ref::<UserError>()
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| format!("not a regular expression: {e}"))
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s)
}

/// The shortest sampling interval: below it the tracer busy-loops and a live report is rebuilt
/// faster than it can be served.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_INTERVAL {
        return Err(format!("interval `{s}` is too short (at least 100ms)"));
    }
    Ok(d)
}

/// A leak threshold: a finite number, zero or more (`inf`, `NaN`, `1e400` would silently mean
/// "no minimum" or "never").
fn parse_threshold(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a threshold (a finite number, 0 or more)")),
    }
}

/// `30` (seconds), `30s`, `500ms`, `5m`, `1h`, `1.5s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (try 30s, 500ms, 5m)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{s}` (use ms, s, m or h)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 86400.0 {
        return Err(format!("duration `{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl OutputArgs {
    fn destination(&self) -> Destination {
        Destination::new(
            self.output.clone(),
            self.format,
            ExportOptions {
                all_stacks: self.all_stacks,
                top: self.top as usize,
                native_leaf: self.native_leaf,
                ..ExportOptions::default()
            },
        )
    }
}

impl ReportArgs {
    /// The saved report to read, and where its re-rendering goes.
    pub fn into_config(self) -> (PathBuf, Destination) {
        let destination = self.output.destination();
        (self.input, destination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_thresholds_have_bounds() {
        assert!(parse_interval("1ns").is_err() && parse_interval("99ms").is_err());
        assert_eq!(parse_interval("100ms"), Ok(Duration::from_millis(100)));
        for bad in ["inf", "NaN", "1e400", "-1", "x"] {
            assert!(parse_threshold(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_threshold("65536"), Ok(65536.0));
        assert_eq!(parse_threshold("0"), Ok(0.0));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tracer").chain(args.iter().copied()))
    }

    fn record(args: &[&str]) -> Result<RecordCommand> {
        match parse(args)?.command {
            Command::Record(r) => r.into_config(),
            other => panic!("not record: {other:?}"),
        }
    }

    fn serve(args: &[&str]) -> Result<ServeConfig> {
        match parse(args)?.command {
            Command::Serve(s) => s.into_config(),
            other => panic!("not serve: {other:?}"),
        }
    }

    fn message(e: anyhow::Error) -> String {
        e.downcast::<UserError>().map(|u| u.message).unwrap_or_else(|e| format!("not a user error: {e:#}"))
    }

    #[test]
    fn definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn a_pid_that_is_not_one_is_a_user_error_with_a_hint() {
        for bad in ["0", "-5", "4294967296"] {
            let e = parse(&["record", "-p", bad]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            let u = user_error_of(&e).unwrap_or_else(|| panic!("{bad}: {e}"));
            assert_eq!(u.message, format!("{bad} is not a valid PID"));
            assert!(u.hint.contains("pgrep"), "{}", u.hint);
            let e = parse(&["serve", "-p", bad]).unwrap_err();
            assert!(user_error_of(&e).is_some(), "serve -p {bad}: {e}");
        }
        // Not a number at all: clap's own "invalid value" error.
        let e = parse(&["record", "-p", "abc"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(user_error_of(&e).is_none());
        assert!(e.to_string().contains("invalid value 'abc'"), "{e}");
    }

    #[test]
    fn long_and_short_flags_are_the_same() {
        let short = record(&["-v", "record", "-p", "42", "-d", "5s", "-i", "1s", "-o", "x.svg", "-q"]).unwrap();
        let long =
            record(&["record", "--pid", "42", "--duration", "5s", "--interval", "1s", "--output", "x.svg", "--quiet"])
                .unwrap();
        for c in [&short, &long] {
            assert!(matches!(c.config.targets, Targets::Pid(42)));
            assert_eq!(c.config.duration, Some(Duration::from_secs(5)));
            assert_eq!(c.config.interval, Duration::from_secs(1));
            assert!(!c.config.progress);
            assert_eq!(c.destination.format, Format::Svg);
        }
    }

    #[test]
    fn which_processes() {
        let launch = record(&["record", "--python-malloc", "--", "python3", "app.py"]).unwrap();
        match launch.config.targets {
            Targets::Launch { argv, python_malloc } => {
                assert_eq!(argv, ["python3", "app.py"]);
                assert!(python_malloc);
            }
            other => panic!("{other:?}"),
        }
        let host = record(&["record", "--all", "--match", "gunicorn", "--exclude-pid", "7"]).unwrap();
        match host.config.targets {
            Targets::Host(f) => {
                assert_eq!(f.exclude, [7]);
                assert!(f.matching.is_some_and(|re| re.is_match("gunicorn app")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(message(record(&["record"]).unwrap_err()), "nothing to trace");
        assert_eq!(
            message(record(&["record", "-p", "1", "--match", "x"]).unwrap_err()),
            "--match selects processes in host mode"
        );
        let conflict = parse(&["record", "-p", "1", "--", "python3"]).unwrap_err();
        assert_eq!(conflict.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn serve_config() {
        let s = serve(&["serve", "-p", "42"]).unwrap();
        assert!(matches!(s.record.targets, Targets::Pid(42)));
        assert_eq!(s.listen, Listen::Tcp(DEFAULT_LISTEN.parse().unwrap()));
        assert_eq!(s.record.duration, None);
        assert_eq!(s.record.interval, Duration::from_secs(10));
        assert_eq!(s.record.tracing.window, WindowMode::Auto(WindowSpec::AUTO), "serve: auto windows by default");
        assert!(serve(&["serve", "--all"]).unwrap().record.targets.is_host());
        assert_eq!(parse(&["serve"]).unwrap_err().kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let refused = message(serve(&["serve", "-p", "1", "--push", "ftp://x"]).unwrap_err());
        assert!(refused.contains("only http:// and https://"), "{refused}");
        let https = serve(&["serve", "-p", "1", "--push", "https://profiles.example.com"]).unwrap().push.unwrap();
        assert_eq!((https.tls, https.authority.as_str()), (true, "profiles.example.com:443"));
    }

    #[test]
    fn thresholds_reach_the_criteria() {
        let c = record(&["record", "-p", "1", "--min-leak-bytes", "5000", "--min-growth", "7", "--sample-bytes", "64"])
            .unwrap();
        assert_eq!(c.config.tracing.criteria.min_total_growth, 5000.0);
        assert_eq!(c.config.tracing.criteria.min_growth_per_s, 7.0);
        assert_eq!(c.config.tracing.sample_bytes, 64);
    }

    #[test]
    fn window_arguments() {
        let parse = |t: &str| WindowMode::parse(t, parse_duration);
        let s = |on, every| WindowSpec { on: Duration::from_millis(on), every: Duration::from_millis(every) };
        assert_eq!(parse("1s/10s").unwrap(), WindowMode::Fixed(s(1000, 10_000)));
        assert_eq!(parse("500ms/5s").unwrap(), WindowMode::Fixed(s(500, 5000)));
        assert_eq!(parse("auto").unwrap(), WindowMode::Auto(WindowSpec::AUTO));
        assert_eq!(parse("auto:1s/3s").unwrap(), WindowMode::Auto(s(1000, 3000)));
        assert!(parse("auto:auto").is_err());
        let r = record(&["record", "-p", "1"]).unwrap();
        assert_eq!(r.config.tracing.window, WindowMode::Off, "record traces all the time by default");
        let v = record(&["record", "-p", "1", "--window", "1s/10s"]).unwrap();
        assert_eq!(v.config.tracing.window, WindowMode::Fixed(s(1000, 10_000)));
        assert_eq!(parse("off").unwrap(), WindowMode::Off);
        for (bad, says) in [
            ("10s", "not ON/EVERY"),
            ("10s/1s", "not shorter than its period"),
            ("1s/1s", "not shorter"),
            ("50ms/1s", "under 200 ms"),
            ("1x/10s", "unknown unit"),
            ("/10s", "not a duration"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
            assert!(e.downcast_ref::<crate::error::UserError>().is_some(), "{bad}: an error: and hint: pair");
        }
    }
}
