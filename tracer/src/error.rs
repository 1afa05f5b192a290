//! Errors a person can fix: one `error:` line and one `hint:` line, then a non-zero exit.

use std::fmt;

#[derive(Debug)]
pub struct UserError {
    pub message: String,
    pub hint: String,
}

impl UserError {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { message: message.into(), hint: hint.into() }
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for UserError {}

/// Shorthand: `Err(user_error("...", "..."))?`.
pub fn user_error(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    UserError::new(message, hint).into()
}

/// A hint that depends on whether the tracer runs as root: telling root to "run as root" helps
/// nobody.
pub fn as_root_or(not_root: &str, root: &str) -> String {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 { root } else { not_root }.to_string()
}
