//! Where `serve` listens, bound: a TCP address or a Unix socket (`unix:/run/tracer.sock`,
//! `config::Listen`) created mode 0600, so that only its owner (root) can connect, where a
//! loopback port is open to every local user.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

pub use crate::config::Listen;
use crate::error::user_error;

/// A connection, whichever the listener.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// A bound listener.
pub enum Listener {
    Tcp(TcpListener),
    /// The socket, and its inode: removed at the end only if it is still the one created.
    Unix(UnixListener, PathBuf, u64),
}

impl Listener {
    /// Binds `listen`. A Unix socket is created mode 0600 (never readable by others, not even
    /// for an instant); a stale socket left at the path by an earlier daemon is replaced, any
    /// other file is refused.
    pub async fn bind(listen: &Listen) -> anyhow::Result<Listener> {
        let taken = |e: std::io::Error| {
            user_error(
                format!("cannot listen on {listen}: {e}"),
                "pick a free address with --listen 127.0.0.1:PORT or unix:/path (or stop whatever uses it)",
            )
        };
        match listen {
            Listen::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).await.map_err(taken)?)),
            Listen::Unix(path) => {
                remove_stale_socket(path).map_err(taken)?;
                // SAFETY: umask only changes the process's file creation mask; no other thread
                // creates files while the daemon starts.
                let old = unsafe { libc::umask(0o177) };
                let bound = UnixListener::bind(path);
                unsafe { libc::umask(old) };
                let listener = bound.map_err(taken)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(taken)?;
                let ino = std::fs::symlink_metadata(path).map_err(taken)?.ino();
                Ok(Listener::Unix(listener, path.clone(), ino))
            }
        }
    }

    /// What to print: the bound address (`--listen 127.0.0.1:0` picks a free port).
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => format!("http://{addr}/"),
                Err(_) => "http://?/".to_string(),
            },
            Listener::Unix(_, path, _) => format!("unix:{} (mode 0600)", path.display()),
        }
    }

    /// The next connection and a name for it in logs.
    pub async fn accept(&self) -> std::io::Result<(Box<dyn Conn>, String)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                Ok((Box::new(stream), peer.to_string()))
            }
            Listener::Unix(l, _, _) => {
                let (stream, _) = l.accept().await?;
                Ok((Box::new(stream), "unix".to_string()))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path, ino) = self {
            if std::fs::symlink_metadata(&*path).is_ok_and(|m| m.ino() == *ino && m.file_type().is_socket()) {
                let _ = std::fs::remove_file(&*path);
            }
        }
    }
}

/// A socket nobody listens on any more (a daemon that was killed) is removed; anything else at
/// the path stays and makes the bind fail.
fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the path exists and is not a socket"));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another process listens on it")),
        Err(_) => std::fs::remove_file(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_unix_socket_is_private_and_removed_at_the_end() {
        let dir = std::env::temp_dir().join(format!("tracer-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(Listener::bind(&Listen::Unix(path.clone())).await.is_err(), "a regular file is not replaced");
        std::fs::remove_file(&path).unwrap();
        let listener = Listener::bind(&Listen::Unix(path.clone())).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(Listener::bind(&Listen::Unix(path.clone())).await.is_err(), "a live socket is not taken over");
        drop(listener);
        assert!(!path.exists(), "removed when the daemon ends");
        // A stale socket (its daemon was killed) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let again = Listener::bind(&Listen::Unix(path.clone())).await.unwrap();
        drop(again);
        let _ = std::fs::remove_dir(&dir);
    }
}
