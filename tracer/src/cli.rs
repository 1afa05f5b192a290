//! The command line (clap lives only here) and its translation into plain configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::export::{ExportOptions, Format};

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
    #[arg(short, long, conflicts_with_all = ["command", "all"], allow_negative_numbers = true)]
    pub pid: Option<i64>,
    /// Host mode: every CPython process on the host, including those started later, each in
    /// its own report section. Processes that are not CPython never get a probe.
    #[arg(long, conflicts_with = "command")]
    pub all: bool,
    #[command(flatten)]
    pub host: HostArgs,
    /// Stop after this long (30, 30s, 500ms, 5m, 1h). Default: until Ctrl-C or the target exits.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Sampling interval for the growth time series.
    #[arg(short, long, default_value = "2s", value_parser = parse_duration)]
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
    pub fn filter(&self, all: bool, command: &str) -> anyhow::Result<Option<crate::host::HostFilter>> {
        if self.matching.is_some() && !all {
            return Err(crate::error::user_error(
                "--match selects processes in host mode",
                format!("add --all: tracer {command} --all --match REGEX"),
            ));
        }
        Ok(all.then(|| crate::host::HostFilter {
            matching: self.matching.clone(),
            exclude: self.exclude_pid.clone(),
            max_processes: self.max_processes as usize,
        }))
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A report written by `tracer record -f json`.
    pub input: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// PID of the CPython process to trace.
    #[arg(short, long, allow_negative_numbers = true, required_unless_present = "all", conflicts_with = "all")]
    pub pid: Option<i64>,
    /// Host mode: every CPython process on the host, including those started later; each is
    /// served as its own profile (pprof label `pid`, `/metrics` label `pid`).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub host: HostArgs,
    /// Address to serve on. Loopback by default: another address only when given here.
    #[arg(long, value_name = "ADDR", default_value = crate::serve::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Sampling interval: the live report is rebuilt (and pushed) this often.
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Also POST the pprof profile to this Pyroscope-compatible server at every interval
    /// (http://HOST:PORT; `/ingest` is appended).
    #[arg(long, value_name = "URL")]
    pub push: Option<String>,
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
    #[arg(long, value_name = "BYTES")]
    pub min_leak_bytes: Option<f64>,
    /// A leak must grow by at least this many bytes per second.
    #[arg(long, value_name = "BYTES_PER_S")]
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
    /// Most objects one container scan may visit.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(100..=50_000_000))]
    pub holders_budget: u64,
}

impl TracingArgs {
    pub fn criteria(&self) -> crate::leaks::Criteria {
        let mut criteria = crate::leaks::Criteria::for_bytes();
        if let Some(b) = self.min_leak_bytes {
            criteria.min_total_growth = b;
        }
        if let Some(g) = self.min_growth {
            criteria.min_growth_per_s = g;
        }
        criteria
    }

    pub fn sizes(&self) -> crate::probes::MapSizes {
        crate::probes::MapSizes { max_allocs: self.max_allocs, max_stacks: self.max_stacks }
    }

    pub fn holder_budget(&self) -> crate::python::heap::ScanBudget {
        crate::python::heap::ScanBudget { max_objects: self.holders_budget as usize, ..Default::default() }
    }
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| format!("not a regular expression: {e}"))
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s)
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
    pub fn format(&self) -> Format {
        self.format.or_else(|| self.output.as_deref().and_then(Format::from_path)).unwrap_or(Format::Text)
    }

    pub fn export_options(&self) -> ExportOptions {
        ExportOptions { all_stacks: self.all_stacks, top: self.top as usize, native_leaf: self.native_leaf }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn format_follows_extension() {
        let args = |o: &str, f: Option<Format>| OutputArgs {
            output: Some(o.into()),
            format: f,
            top: 10,
            all_stacks: false,
            native_leaf: false,
        };
        assert_eq!(args("leaks.svg", None).format(), Format::Svg);
        assert_eq!(args("x.pb.gz", None).format(), Format::Pprof);
        assert_eq!(args("x.speedscope.json", None).format(), Format::Speedscope);
        assert_eq!(args("x.json", None).format(), Format::Json);
        assert_eq!(args("x.svg", Some(Format::Json)).format(), Format::Json);
        assert_eq!(args("x.unknown", None).format(), Format::Text);
    }
}
