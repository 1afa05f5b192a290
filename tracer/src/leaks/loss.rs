//! Loss is part of the verdict: when a table filled, allocations went unrecorded (or were
//! charged to no stack), and "nothing grew" may only mean "what grew was not seen". The report
//! then says so, with the flag to raise and a size that would have held them.

use std::collections::BTreeMap;

use crate::report::Inconclusive;
use crate::units::count;

/// The tables' capacities in this recording (`--max-allocs`, `--max-stacks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacities {
    pub allocs: u64,
    pub stacks: u64,
}

/// The largest values the flags accept (cli.rs).
pub const MAX_ALLOCS_LIMIT: u64 = 1 << 26;
pub const MAX_STACKS_LIMIT: u64 = 1 << 22;

/// Whether the losses in `lost` (the report's `totals.lost`) make the verdict inconclusive, and
/// what to do about it. The allocation table comes first: what it lost was not recorded at all.
pub fn inconclusive(lost: &BTreeMap<String, u64>, caps: Capacities) -> Option<Inconclusive> {
    let get = |name: &str| lost.get(name).copied().unwrap_or(0);
    let allocs = get("allocs_map_full");
    let stacks = get("stacks_map_full").saturating_add(get("stats_map_full"));
    let mut parts = Vec::new();
    let mut first = None;
    if allocs > 0 {
        let (advice, to) = advice("--max-allocs", caps.allocs, allocs, MAX_ALLOCS_LIMIT);
        parts.push(format!("{} allocations not recorded ({advice})", count(allocs)));
        first = Some((allocs, "--max-allocs", to));
    }
    if stacks > 0 {
        let (advice, to) = advice("--max-stacks", caps.stacks, stacks, MAX_STACKS_LIMIT);
        parts.push(format!("{} allocations charged to no stack ({advice})", count(stacks)));
        first = first.or(Some((stacks, "--max-stacks", to)));
    }
    let (unrecorded, flag, raise_to) = first?;
    Some(Inconclusive {
        unrecorded,
        flag: flag.to_string(),
        raise_to,
        reason: format!("inconclusive: {}", parts.join("; ")),
    })
}

/// "raise --max-allocs to M": the next power of two that would have held the capacity and
/// the losses (at least twice the capacity), within the flag's limit.
fn advice(flag: &str, capacity: u64, lost: u64, limit: u64) -> (String, u64) {
    let want = capacity.saturating_add(lost).max(capacity.saturating_mul(2)).checked_next_power_of_two();
    let to = want.unwrap_or(limit).min(limit);
    if to > capacity {
        (format!("raise {flag} to {}", count(to)), to)
    } else {
        (format!("{flag} is at its largest; record with --sample-bytes"), capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|&(n, v)| (n.to_string(), v)).collect()
    }

    const CAPS: Capacities = Capacities { allocs: 65_536, stacks: 16_384 };

    #[test]
    fn no_full_table_is_conclusive() {
        assert_eq!(inconclusive(&lost(&[("allocs_map_full", 0), ("read_fault", 9)]), CAPS), None);
    }

    #[test]
    fn a_full_allocation_table_says_how_many_and_what_to_raise() {
        let i = inconclusive(&lost(&[("allocs_map_full", 7_285)]), CAPS).unwrap();
        assert_eq!(i.reason, "inconclusive: 7,285 allocations not recorded (raise --max-allocs to 131,072)");
        assert_eq!((i.unrecorded, i.flag.as_str(), i.raise_to), (7_285, "--max-allocs", 131_072));
        let many = inconclusive(&lost(&[("allocs_map_full", 200_000)]), CAPS).unwrap();
        assert_eq!(many.raise_to, 524_288, "enough for the capacity and what was lost");
    }

    #[test]
    fn full_stack_tables_and_the_largest_sizes() {
        let i = inconclusive(&lost(&[("stacks_map_full", 10), ("stats_map_full", 5)]), CAPS).unwrap();
        assert_eq!(i.reason, "inconclusive: 15 allocations charged to no stack (raise --max-stacks to 32,768)");
        let both = inconclusive(&lost(&[("allocs_map_full", 1), ("stacks_map_full", 2)]), CAPS).unwrap();
        assert_eq!(both.flag, "--max-allocs");
        assert!(both.reason.contains("; 2 allocations charged to no stack"), "{}", both.reason);
        let top = Capacities { allocs: MAX_ALLOCS_LIMIT, stacks: 16 };
        let i = inconclusive(&lost(&[("allocs_map_full", 3)]), top).unwrap();
        assert!(i.reason.contains("--max-allocs is at its largest"), "{}", i.reason);
    }
}
