//! The one way the tracer writes a file (`-o`, `tracer report -o`): the bytes go to a new file
//! beside the destination (mode 0600, created with `O_EXCL|O_NOFOLLOW`, so nothing planted there
//! is followed or reused), which is then renamed over it. A failed write leaves the previous file
//! as it was. A symbolic link at the destination that belongs to someone else is refused: as
//! root, following it would let that user choose which file root overwrites. A character device
//! or a FIFO (`-o /dev/stdout`, `/dev/null`, a named pipe) is written where it is: renaming a file
//! over it would replace the device node for every process on the host.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::user_error;

const HINT: &str = "pass -o a path in a directory you can write to";

/// Whether `path` can be written, checked before a recording starts (a recording can last
/// hours; finding out at its end loses it): the destination is not a foreign symbolic link nor
/// a directory, and a file can be created beside it.
pub fn check(path: &Path) -> anyhow::Result<()> {
    if destination(path)? == Destination::Stream {
        return Ok(());
    }
    let (tmp, file) = create_beside(path)?;
    drop(file);
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

/// Writes `bytes` to `path`: a new 0600 file beside it, then a rename. On any error the
/// destination is untouched and the temporary file removed.
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_with(path, |f| f.write_all(bytes))
}

fn write_with(path: &Path, fill: impl FnOnce(&mut File) -> std::io::Result<()>) -> anyhow::Result<()> {
    if destination(path)? == Destination::Stream {
        let written =
            OpenOptions::new().write(true).custom_flags(libc::O_CLOEXEC).open(path).and_then(|mut f| fill(&mut f));
        return written.map_err(|e| user_error(format!("cannot write {}: {e}", path.display()), HINT));
    }
    let (tmp, mut file) = create_beside(path)?;
    let written = fill(&mut file).and_then(|()| file.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(user_error(format!("cannot write {}: {e}", path.display()), HINT));
    }
    Ok(())
}

/// How the bytes reach the destination.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// Nothing there yet, a regular file, or a link the caller owns: a new file, renamed over it.
    Replace,
    /// A character device or a FIFO: opened and written where it is.
    Stream,
}

/// A symbolic link owned by another user (root's own links are trusted), a directory, a block
/// device or a socket is not a place to write a report. A link to a character device or a FIFO
/// is written through; any other trusted link is replaced by the file (it is not followed).
fn destination(path: &Path) -> anyhow::Result<Destination> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(Destination::Replace) };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.file_type().is_symlink() {
        if meta.uid() != me && meta.uid() != 0 {
            return Err(user_error(
                format!("{} is a symbolic link owned by uid {}: not writing through it", path.display(), meta.uid()),
                "remove the link or pass -o another path (a link planted by another user could make root overwrite any file)",
            ));
        }
        return match std::fs::metadata(path) {
            Ok(target) if is_stream(&target) => Ok(Destination::Stream),
            Ok(target) if !target.is_file() && !target.is_dir() => Err(not_a_file(path)),
            _ => Ok(Destination::Replace),
        };
    }
    if meta.is_dir() {
        return Err(user_error(format!("{} is a directory", path.display()), "pass -o a file name"));
    }
    if is_stream(&meta) {
        return Ok(Destination::Stream);
    }
    if !meta.is_file() {
        return Err(not_a_file(path));
    }
    Ok(Destination::Replace)
}

fn is_stream(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() || meta.file_type().is_fifo()
}

fn not_a_file(path: &Path) -> anyhow::Error {
    user_error(
        format!("{} is neither a regular file, a character device nor a FIFO", path.display()),
        "pass -o a file name (block devices and sockets are never written)",
    )
}

/// A new file beside `path` that nobody else can have prepared: an unused name, `O_EXCL`,
/// `O_NOFOLLOW`, mode 0600.
fn create_beside(path: &Path) -> anyhow::Result<(PathBuf, File)> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut last = None;
    for _ in 0..16 {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tracer-{}-{seq}.tmp", std::process::id()));
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        match opened {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(user_error(format!("cannot write {}: {e}", path.display()), HINT)),
        }
    }
    let e = last.map(|e| e.to_string()).unwrap_or_default();
    Err(user_error(format!("cannot write {}: {e}", path.display()), HINT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_write_replaces_the_file_with_a_private_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn an_own_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("r.txt");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write(&link, b"report").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "previous").unwrap();
        let full = write_with(&path, |f| {
            f.write_all(b"half a rep")?;
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        });
        let e = full.unwrap_err().to_string();
        assert!(e.contains("No space left on device"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "previous");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file is removed");
        assert!(check(dir.path()).is_err(), "a directory is not a destination");
        assert!(check(&dir.path().join("no/such/dir/r.json")).is_err());
        let long = dir.path().join("x".repeat(250));
        write(&long, b"a name near NAME_MAX").unwrap();
    }

    #[test]
    fn a_device_or_fifo_is_written_where_it_is_never_replaced() {
        let null = Path::new("/dev/null");
        check(null).unwrap();
        write(null, b"report").unwrap();
        let meta = std::fs::symlink_metadata(null).unwrap();
        assert!(meta.file_type().is_char_device(), "/dev/null is still the device");

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || std::fs::read_to_string(fifo).unwrap()
        });
        write(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), "through the pipe");
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

        let link = dir.path().join("to-null");
        std::os::unix::fs::symlink(null, &link).unwrap();
        write(&link, b"via an own link").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays");
    }
}
