//! Shows a growing container and the allocation line that fills it together. The link is the
//! source itself: the allocating line names the container (`FAILED.append(...)`,
//! `self.pending.add(...)`, `CACHE[key] = ...`), read from the target's own files.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::report::{Frame, Holder, Suspect};
use crate::units::count;

/// Source lines of the target's files, read through its root and working directory.
struct Sources {
    pid: u32,
    files: HashMap<String, Option<Vec<String>>>,
}

impl Sources {
    fn line(&mut self, file: &str, line: u32) -> Option<&str> {
        let pid = self.pid;
        let lines = self.files.entry(file.to_string()).or_insert_with(|| {
            let path = if file.starts_with('/') {
                PathBuf::from(format!("/proc/{pid}/root{file}"))
            } else {
                PathBuf::from(format!("/proc/{pid}/cwd/{file}"))
            };
            // A process that has ended (its report is built after it exits) leaves no /proc
            // entry: its files are then read as the tracer sees them.
            std::fs::read_to_string(path)
                .or_else(|_| std::fs::read_to_string(file))
                .ok()
                .map(|t| t.lines().map(str::to_string).collect())
        });
        lines.as_ref()?.get((line as usize).checked_sub(1)?).map(String::as_str)
    }
}

/// The name a line of code would use for the container: the last attribute of its path (for
/// `mod.REGISTRY["jobs"]`, the dict's own name).
fn container_name(path: &str) -> Option<&str> {
    let last = path.rsplit('.').next()?;
    let name = last.split('[').next()?.split('<').next()?;
    (name.len() >= 3).then_some(name)
}

fn names(line: &str, name: &str) -> bool {
    line.match_indices(name).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + name.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

/// Appends to the reasons of each growing container and each growing allocation line that
/// names it, so that a reader sees both together.
pub fn link(pid: u32, suspects: &mut [Suspect], holders: &mut [Holder]) {
    let mut sources = Sources { pid, files: HashMap::new() };
    for holder in holders.iter_mut().filter(|h| h.verdict.is_growing()) {
        let Some(name) = container_name(&holder.path) else { continue };
        let mut filled_at = Vec::new();
        for suspect in suspects.iter_mut().filter(|s| s.verdict.is_growing()) {
            let Some(Frame::Python { function, file, line, .. }) =
                suspect.stack.iter().find(|f| matches!(f, Frame::Python { .. }))
            else {
                continue;
            };
            let site = format!("{function} ({file}:{line})");
            if sources.line(file, *line).is_some_and(|text| names(text, name)) {
                let kept_by =
                    format!("; kept alive by {} ({} of {})", holder.path, holder.type_name, count(holder.len));
                suspect.reason.push_str(&kept_by);
                crate::leaks::merge_tests(&mut holder.tests, &suspect.tests);
                filled_at.push(site);
            }
        }
        if !filled_at.is_empty() {
            holder.reason.push_str(&format!("; filled at {}", filled_at.join(", ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_containers() {
        assert_eq!(container_name("__main__.FAILED_REQUESTS"), Some("FAILED_REQUESTS"));
        assert_eq!(container_name("app.DISPATCHER.pending"), Some("pending"));
        assert_eq!(container_name("mod.REGISTRY[\"jobs\"]"), Some("REGISTRY"));
        assert_eq!(container_name("__main__.HIT<closure>.seen"), Some("seen"));
    }

    #[test]
    fn a_line_names_a_container_as_a_whole_word() {
        assert!(names("    FAILED.append(sys.exc_info())", "FAILED"));
        assert!(names("self.pending.add((a, b))", "pending"));
        assert!(!names("FAILED_REQUESTS.append(x)", "FAILED"));
        assert!(!names("unpending = 1", "pending"));
    }
}
