//! Clocks: the one the BPF side stamps allocations and events with, and wall-clock times.

/// CLOCK_MONOTONIC in nanoseconds, as `bpf_ktime_get_ns` reads it.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The wall-clock time of `instant`, in seconds since the Unix epoch.
pub fn unix_time_s(instant: std::time::Instant) -> Option<f64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(now.checked_sub(instant.elapsed())?.as_secs_f64())
}
