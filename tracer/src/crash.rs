//! When the tracer itself fails (a bug): one readable `error:`/`hint:` pair instead of a bare
//! Rust panic message, and the reassurance that matters on a production host. The probes go
//! away in every case: unwinding drops them, and the kernel closes the links' descriptors when
//! the process ends (also under panic=abort or SIGKILL). The safety test proves it through the
//! hidden hook below.

use std::time::Duration;

/// Test hook, existing only for the safety test `a_panicking_tracer_detaches`: when set to a
/// number of seconds, `record` panics that long after its probes are attached.
pub const PANIC_AFTER_ATTACH_ENV: &str = "TRACER_TEST_PANIC_AFTER_ATTACH";

/// Replaces the default panic message with an `error:` and a `hint:` line (the default hook
/// still runs when RUST_BACKTRACE asks for a backtrace).
pub fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: tracer failed: {what}{at}");
        eprintln!(
            "hint: this is a bug in tracer; the target was not changed and its probes are removed as tracer exits; \
             please report it with the output of RUST_BACKTRACE=1"
        );
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
        }
    }));
}

/// The delay after attaching at which the test hook panics, when it is set.
pub fn panic_after_attach() -> Option<Duration> {
    let value = std::env::var(PANIC_AFTER_ATTACH_ENV).ok()?;
    value.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
}
