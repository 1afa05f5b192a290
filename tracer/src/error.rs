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
