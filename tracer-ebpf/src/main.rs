//! The BPF programs: thin probe shims on the target's libc allocator entry points, over a few
//! helpers that record mechanism only (addresses, sizes, times, raw Python frames). Userspace
//! decides what any of it means.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
