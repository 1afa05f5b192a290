//! Writing a report where the user asked, in the format they asked; never losing it.

use std::io::Write;

use anyhow::Result;

use crate::cli::OutputArgs;
use crate::error::user_error;
use crate::export;
use crate::report::{MultiReport, Report};

/// A saved JSON report: one process or several.
// One value at a time (per program run, or per interval in `serve`): the size difference of the
// variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Saved {
    One(Report),
    Many(MultiReport),
}

pub fn parse_saved(text: &str) -> Result<Saved> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let schema = value.get("schema").and_then(|s| s.as_u64());
    if schema != Some(crate::report::SCHEMA as u64) {
        anyhow::bail!("unsupported schema {schema:?} (expected {})", crate::report::SCHEMA);
    }
    if value.get("processes").is_some() {
        Ok(Saved::Many(serde_json::from_value(value)?))
    } else {
        Ok(Saved::One(serde_json::from_value(value)?))
    }
}

pub fn write_report(report: &Report, out: &OutputArgs) -> Result<()> {
    write_with(out, |w| export::write(out.format(), report, &out.export_options(), w))
}

pub fn write_saved(saved: &Saved, out: &OutputArgs) -> Result<()> {
    match saved {
        Saved::One(r) => write_report(r, out),
        Saved::Many(m) => write_with(out, |w| export::write_multi(out.format(), m, &out.export_options(), w)),
    }
}

/// Renders into memory first, so that a file that cannot be written costs nothing: the
/// report then goes to stdout, and the error (with its hint) makes the exit status non-zero
/// so that a script notices the file is missing.
fn write_with(out: &OutputArgs, render: impl Fn(&mut dyn Write) -> Result<()>) -> Result<()> {
    let mut buf = Vec::new();
    render(&mut buf)?;
    let failed = match &out.output {
        None => None,
        Some(path) => match std::fs::write(path, &buf) {
            Ok(()) => {
                eprintln!("tracer: report written to {}", path.display());
                return Ok(());
            }
            Err(e) => Some(user_error(
                format!("cannot write {}: {e}", path.display()),
                "the report was printed on stdout instead; pass -o a path in a writable directory",
            )),
        },
    };
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    lock.write_all(&buf)?;
    lock.flush()?;
    failed.map_or(Ok(()), Err)
}
