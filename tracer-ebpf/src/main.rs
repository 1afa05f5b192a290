//! The BPF programs: thin probe shims on the target's libc allocator entry points, over a few
//! helpers that record mechanism only (addresses, sizes, times, raw Python frames). Userspace
//! decides what any of it means.
//!
//! - `maps`: the maps and the globals userspace sets before loading;
//! - `alloc`: an allocation call's entry and return, recording and releasing blocks;
//! - `pystack`: the calling thread's Python frames;
//! - `lifecycle`: interpreter finalization, fork and exec;
//! - `programs`: the probe shims, generated from `tracer_ebpf::for_each_allocator!`;
//! - `diag`: diagnostics on rare paths (aya-log), off unless userspace asks.
//!
//! Every helper is `#[inline(always)]`: each program carries all of its work inline. Compare the
//! programs' instruction counts (docs/probes.md "Measuring a change") before changing that.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod alloc;
#[cfg(target_arch = "bpf")]
mod diag;
#[cfg(target_arch = "bpf")]
mod lifecycle;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod pystack;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
