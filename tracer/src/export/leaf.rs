//! Which frame a profile puts at the leaf.
//!
//! A report's stack is innermost first: the native function that called the allocator (e.g.
//! `_PyObject_Malloc`), then the Python frames. Profile viewers give the flat ("self") value to
//! the leaf, so with the native frame there every Python line shows 0 flat and `go tool pprof
//! -top` names only the allocator. By default pprof and speedscope therefore start the stack at
//! the innermost Python frame and keep the native frames as sample labels; `--native-leaf` keeps
//! the stack as recorded. A stack with no Python frame at all (the interpreter's own start-up, a
//! C thread) is drawn as one `[no Python frame]`, its native frames labelled the same way.

use super::NO_STACK;
use crate::report::{Frame, Suspect};

/// The label key of the libc function that allocated (`malloc`, `mmap`, ...).
pub(super) const ALLOCATOR: &str = "allocator";
/// The label key of the native frames between the allocator and the innermost Python frame.
pub(super) const NATIVE_CALLER: &str = "native_caller";

/// The one frame drawn for a stack whose frames are all native (not with `--native-leaf`).
pub(super) const NO_PYTHON_FRAME: &str = "[no Python frame]";

/// A suspect's stack as a profile draws it.
pub(super) struct ProfileStack<'a> {
    /// Innermost first; empty when there is nothing to draw but `placeholder`.
    pub frames: &'a [Frame],
    /// The one frame to draw when `frames` is empty.
    pub placeholder: &'static str,
    /// (key, value) pairs a sample carries besides its stack.
    pub labels: Vec<(&'static str, String)>,
}

/// The frames a profile draws for `suspect` and the labels that name what was left out.
pub(super) fn profile_stack(suspect: &Suspect, native_leaf: bool) -> ProfileStack<'_> {
    let mut labels = Vec::new();
    if !suspect.allocator.is_empty() {
        labels.push((ALLOCATOR, suspect.allocator.clone()));
    }
    let stack = suspect.stack.as_slice();
    if stack.is_empty() || native_leaf {
        return ProfileStack { frames: stack, placeholder: NO_STACK, labels };
    }
    let python = stack.iter().position(|f| matches!(f, Frame::Python { .. })).unwrap_or(stack.len());
    if python > 0 {
        let callers: Vec<String> = stack[..python].iter().map(Frame::label).collect();
        labels.push((NATIVE_CALLER, callers.join(" <- ")));
    }
    ProfileStack { frames: &stack[python..], placeholder: NO_PYTHON_FRAME, labels }
}
