//! Short source file names for frame labels, the way py-spy shows them: relative to the
//! directory Python imported them from.
//!
//! py-spy asks the live process (sys.path, `__init__.py` files); a saved report is re-rendered
//! elsewhere, so this works from the paths alone (`co_filename`, as the interpreter knows them):
//! a file under `site-packages/` or `dist-packages/` is named from there (`tornado/web.py`), one
//! of the standard library from `lib/python3.X/` (`asyncio/events.py`), and the target's own
//! files from their common directory (`app/handlers.py`). Pseudo-files such as
//! `<frozen importlib._bootstrap>` and anything else keep their name.

use crate::report::{Frame, Report};

/// How one process's files are shortened.
#[derive(Debug, Default, Clone)]
pub(super) struct ShortPaths {
    /// The directory shared by the target's own files, with its trailing `/`; empty when they
    /// share none (or only `/`).
    own_dir: String,
}

impl ShortPaths {
    pub(super) fn of(report: &Report) -> ShortPaths {
        let own = report.suspects.iter().flat_map(|s| &s.stack).filter_map(|f| match f {
            Frame::Python { file, .. } if is_own(file) => Some(file.as_str()),
            _ => None,
        });
        ShortPaths { own_dir: common_dir(own) }
    }

    /// The name to show for `file`.
    pub(super) fn short<'a>(&self, file: &'a str) -> &'a str {
        if let Some(rest) = library_relative(file) {
            return rest;
        }
        match file.strip_prefix(self.own_dir.as_str()) {
            Some(rest) if !self.own_dir.is_empty() && !rest.is_empty() => rest,
            _ => file,
        }
    }
}

/// A file of the target's own: not a library, not a pseudo-file (`<frozen os>`, `<string>`), not
/// the `?` of a code object that could no longer be read.
fn is_own(file: &str) -> bool {
    library_relative(file).is_none() && !file.starts_with('<') && file != "?"
}

/// The part of `file` after the last `site-packages/` or `dist-packages/`, or else after the
/// standard library's `lib/python3.X/` (`lib64/`, free-threaded `python3.13t/` too).
fn library_relative(file: &str) -> Option<&str> {
    for marker in ["/site-packages/", "/dist-packages/"] {
        if let Some(i) = file.rfind(marker) {
            return Some(&file[i + marker.len()..]).filter(|rest| !rest.is_empty());
        }
    }
    let mut found = None;
    for (i, _) in file.match_indices("/python3.") {
        let before = &file[..i];
        if !(before.ends_with("/lib") || before.ends_with("/lib64") || before == "lib" || before == "lib64") {
            continue;
        }
        let rest = &file[i + "/python3.".len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let after = &rest[digits..];
        let after = after.strip_prefix('t').unwrap_or(after);
        if let Some(tail) = after.strip_prefix('/').filter(|t| digits > 0 && !t.is_empty()) {
            found = Some(tail);
        }
    }
    found
}

/// The longest directory (ending in `/`) that contains every file; empty if there is none or it
/// is the root.
fn common_dir<'a>(files: impl Iterator<Item = &'a str>) -> String {
    let mut common: Option<&str> = None;
    for file in files {
        let dir = file.rfind('/').map_or("", |i| &file[..=i]);
        common = Some(match common {
            None => dir,
            Some(c) => {
                let shared = c.bytes().zip(dir.bytes()).take_while(|(a, b)| a == b).count();
                // Cut back to a whole directory.
                c[..shared].rfind('/').map_or("", |i| &c[..=i])
            }
        });
    }
    match common {
        Some(dir) if dir != "/" => dir.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shorten(own: &[&str], file: &str) -> String {
        ShortPaths { own_dir: common_dir(own.iter().copied()) }.short(file).to_string()
    }

    #[test]
    fn libraries_are_named_from_their_package() {
        let own = ["/srv/app/main.py"];
        assert_eq!(shorten(&own, "/srv/venv/lib/python3.11/site-packages/tornado/web.py"), "tornado/web.py");
        assert_eq!(shorten(&own, "/usr/lib/python3/dist-packages/requests/api.py"), "requests/api.py");
        assert_eq!(shorten(&own, "/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/events.py"), "asyncio/events.py");
        assert_eq!(shorten(&own, "/usr/lib64/python3.13t/json/decoder.py"), "json/decoder.py");
        assert_eq!(shorten(&own, "<frozen importlib._bootstrap>"), "<frozen importlib._bootstrap>");
        // Not the standard library: a directory merely named like it.
        assert_eq!(shorten(&own, "/srv/python3.11/x.py"), "/srv/python3.11/x.py");
    }

    #[test]
    fn own_files_are_named_from_their_common_directory() {
        let own = ["/srv/app/main.py", "/srv/app/handlers/upload.py"];
        assert_eq!(shorten(&own, "/srv/app/main.py"), "main.py");
        assert_eq!(shorten(&own, "/srv/app/handlers/upload.py"), "handlers/upload.py");
        // One file: its directory.
        assert_eq!(
            shorten(&["/root/x/examples/leaky_service.py"], "/root/x/examples/leaky_service.py"),
            "leaky_service.py"
        );
        // Relative as the interpreter knows it (`python examples/leaky_service.py`).
        assert_eq!(shorten(&["examples/leaky_service.py"], "examples/leaky_service.py"), "leaky_service.py");
        assert_eq!(shorten(&["app.py"], "app.py"), "app.py");
        // Sharing only the root: nothing to strip.
        let apart = ["/srv/a.py", "/opt/b/c.py"];
        assert_eq!(shorten(&apart, "/srv/a.py"), "/srv/a.py");
        // A shared prefix that is not a whole directory is not stripped.
        let similar = ["/srv/app1/a.py", "/srv/app2/b.py"];
        assert_eq!(shorten(&similar, "/srv/app1/a.py"), "app1/a.py");
    }
}
