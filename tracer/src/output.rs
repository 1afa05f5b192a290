//! Writing reports where the user asked (a `Destination`), in the format they asked; never
//! losing them.

use std::io::Write;

use anyhow::Result;

use crate::config::Destination;
use crate::error::{user_error, UserError};
use crate::export;
use crate::report::Reports;
use crate::safe_write;

/// Before a recording: the destination can be written (`safe_write::check`), and a format that
/// differs from what the file name says is said (`-o x.svg -f json` writes JSON into x.svg).
pub fn check(dest: &Destination) -> Result<()> {
    let Some(path) = &dest.path else { return Ok(()) };
    safe_write::check(path)?;
    if let Some(named) = export::Format::from_path(path).filter(|&f| f != dest.format) {
        eprintln!(
            "tracer: warning: writing {} into {} (its name says {})",
            dest.format.name(),
            path.display(),
            named.name()
        );
    }
    Ok(())
}

/// Renders into memory first, so that a file that cannot be written costs nothing: the
/// report then goes to stdout, and the error (with its hint) makes the exit status non-zero
/// so that a script notices the file is missing.
pub fn write(reports: &Reports, dest: &Destination) -> Result<()> {
    let mut buf = Vec::new();
    export::write_reports(dest.format, reports, &dest.options, &mut buf)?;
    let failed = match &dest.path {
        None => None,
        Some(path) => match safe_write::write(path, &buf) {
            Ok(()) => {
                eprintln!("tracer: report written to {}", path.display());
                return Ok(());
            }
            Err(e) => {
                let hint = e.downcast_ref::<UserError>().map_or_else(String::new, |u| format!("{}; ", u.hint));
                Some(user_error(format!("{e}"), format!("{hint}the report was printed on stdout instead")))
            }
        },
    };
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    lock.write_all(&buf)?;
    lock.flush()?;
    failed.map_or(Ok(()), Err)
}
