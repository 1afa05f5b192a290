//! Which judged stacks and holders a report lists, in which order: every suspect (leak and
//! growing), and enough of the cleared ones that a reader sees what was cleared and why, without
//! the report growing with every short-lived stack.

use super::rank;
use crate::report::{Suspect, Verdict};

/// Cleared (bounded and stable) stacks listed besides the leak and growing ones.
pub const MAX_CLEARED_STACKS: usize = 200;
/// Stable containers listed besides the leaking, growing and bounded ones.
pub const MAX_STABLE_HOLDERS: usize = 20;

/// What listing a stack depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListedStack {
    pub verdict: Verdict,
    pub score: f64,
    pub outstanding_bytes: u64,
    /// Allocations made from it during the recording.
    pub allocs: u64,
}

impl From<&Suspect> for ListedStack {
    fn from(s: &Suspect) -> ListedStack {
        ListedStack { verdict: s.verdict, score: s.score, outstanding_bytes: s.outstanding_bytes, allocs: s.allocs }
    }
}

/// The stacks to list (indices, in report order: `rank`'s): every leak and growing one, and the
/// first `MAX_CLEARED_STACKS` cleared ones that hold memory or allocated more than once.
pub fn stacks_to_list(stacks: &[ListedStack]) -> Vec<usize> {
    let order = rank(&stacks.iter().map(|s| (s.verdict, s.score, s.outstanding_bytes as f64)).collect::<Vec<_>>());
    let mut cleared = 0usize;
    order
        .into_iter()
        .filter(|&i| {
            let s = &stacks[i];
            if s.verdict.is_growing() {
                return true;
            }
            if cleared >= MAX_CLEARED_STACKS || s.outstanding_bytes == 0 && s.allocs < 2 {
                return false;
            }
            cleared += 1;
            true
        })
        .collect()
}

/// The holders (or census types) to list (indices, in report order: `rank`'s over verdict,
/// score and size: the memory a holder keeps, a type's count): every one that is not stable,
/// and the first `MAX_STABLE_HOLDERS` stable ones, the biggest.
pub fn holders_to_list(holders: &[(Verdict, f64, u64)]) -> Vec<usize> {
    let order = rank(&holders.iter().map(|&(v, score, len)| (v, score, len as f64)).collect::<Vec<_>>());
    let mut stable = 0usize;
    order
        .into_iter()
        .filter(|&i| {
            if holders[i].0 != Verdict::Stable {
                return true;
            }
            stable += 1;
            stable <= MAX_STABLE_HOLDERS
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(verdict: Verdict, score: f64, outstanding_bytes: u64, allocs: u64) -> ListedStack {
        ListedStack { verdict, score, outstanding_bytes, allocs }
    }

    #[test]
    fn every_suspect_is_listed_first_then_cleared_stacks_that_hold_or_churn() {
        let stacks = [
            stack(Verdict::Stable, 0.0, 0, 1),     // one allocation, freed: not listed
            stack(Verdict::Bounded, 0.2, 5000, 9), // listed
            stack(Verdict::Growing, 0.4, 0, 0),    // a suspect, listed whatever it holds
            stack(Verdict::Stable, 0.0, 0, 2),     // churned: listed
            stack(Verdict::Leak, 0.9, 100, 10),    // first
            stack(Verdict::Stable, 0.01, 4096, 1), // holds memory: listed
        ];
        assert_eq!(stacks_to_list(&stacks), vec![4, 2, 1, 5, 3]);
        assert!(stacks_to_list(&[]).is_empty());
    }

    #[test]
    fn cleared_stacks_are_capped_suspects_never() {
        let mut stacks: Vec<ListedStack> =
            (0..MAX_CLEARED_STACKS as u64 + 50).map(|i| stack(Verdict::Stable, 0.0, 1000 + i, 5)).collect();
        stacks.extend((0..300).map(|_| stack(Verdict::Leak, 0.8, 10, 10)));
        let listed = stacks_to_list(&stacks);
        assert_eq!(listed.len(), 300 + MAX_CLEARED_STACKS);
        assert!(listed[..300].iter().all(|&i| stacks[i].verdict == Verdict::Leak));
        // The largest cleared ones.
        assert_eq!(listed[300], MAX_CLEARED_STACKS + 49);
        assert!(listed[300..].iter().all(|i| (50..MAX_CLEARED_STACKS + 50).contains(i)));
    }

    #[test]
    fn stable_holders_are_capped_others_never() {
        let mut holders: Vec<(Verdict, f64, u64)> = (0..30).map(|i| (Verdict::Stable, 0.0, i)).collect();
        holders.push((Verdict::Bounded, 0.1, 5));
        holders.push((Verdict::Leak, 0.9, 7));
        let listed = holders_to_list(&holders);
        assert_eq!(listed.len(), 2 + MAX_STABLE_HOLDERS);
        assert_eq!(&listed[..3], &[31, 30, 29]);
        assert_eq!(listed[2 + MAX_STABLE_HOLDERS - 1], 10);
    }
}
