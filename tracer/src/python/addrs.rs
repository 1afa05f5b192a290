//! Hash sets and maps keyed by addresses in the target, with a hasher made for them (SipHash
//! costs more than the census and the walk's other work per object).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for addresses: one multiply, then the product's well-mixed high half folded into
/// the low bits (the table's index; object addresses share their low bits).
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        let h = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

pub type AddrSet = HashSet<u64, BuildHasherDefault<AddrHasher>>;
pub type AddrMap<V> = HashMap<u64, V, BuildHasherDefault<AddrHasher>>;
