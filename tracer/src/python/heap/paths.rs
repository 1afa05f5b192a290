//! Paths a person would type for what the scanner reaches: `mod.NAME`, `mod.Cls.NAME`,
//! `mod.FUNC<closure>.NAME`, `mod.REGISTRY["jobs"]`, with names that are not identifiers quoted.

/// How a namespace's names join its owner's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameStyle {
    /// Attributes: `owner.name` (dunder names skipped).
    Attr,
    /// Dict keys: `owner["key"]`.
    Key,
    /// Attributes of a root that is not a module: `asyncio event loop → _scheduled`.
    Root,
}

/// The path of `name` under `prefix` in `style`; `None` for interpreter plumbing (dunder
/// attributes).
pub(crate) fn child_path(prefix: &str, name: &str, style: NameStyle) -> Option<String> {
    match style {
        NameStyle::Attr | NameStyle::Root if is_dunder(name) => None,
        NameStyle::Root if is_identifier(name) => Some(format!("{prefix} → {name}")),
        NameStyle::Root => Some(format!("{prefix} → {}", quote(name))),
        NameStyle::Attr => Some(attr_path(prefix, name)),
        NameStyle::Key => Some(format!("{prefix}[{}]", crate::redact::target_string("str", name))),
    }
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) if c == '_' || c.is_alphabetic() => {}
        _ => return false,
    }
    cs.all(|c| c == '_' || c.is_alphanumeric())
}

pub(crate) fn is_dunder(s: &str) -> bool {
    s.len() > 4 && s.starts_with("__") && s.ends_with("__")
}

pub(crate) fn module_name_ok(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_identifier)
}

/// `prefix.name` for identifiers, `prefix["odd name"]` otherwise.
pub(crate) fn attr_path(prefix: &str, name: &str) -> String {
    if is_identifier(name) {
        format!("{prefix}.{name}")
    } else {
        format!("{prefix}[{}]", quote(name))
    }
}

/// A Python-style double-quoted literal, control characters escaped.
pub(crate) fn quote(s: &str) -> String {
    crate::redact::python_quote(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_formatting() {
        assert_eq!(attr_path("m", "x"), "m.x");
        assert_eq!(attr_path("m", "a b"), "m[\"a b\"]");
        assert_eq!(quote("q\"\n"), "\"q\\\"\\x0a\"");
        assert!(is_dunder("__builtins__") && !is_dunder("__") && !is_dunder("_x_"));
        assert!(module_name_ok("a.b_c") && !module_name_ok("a..b") && !module_name_ok(""));
    }
}
