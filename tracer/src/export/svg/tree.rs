//! The merged stack tree a flame graph draws, with what each box stands for: bytes, blocks,
//! growth and the verdicts of the stacks that pass through it.
//!
//! The tree also writes the folded lines inferno draws (in its own depth-first order, with
//! `no_sort`), so each box inferno emits is found again here by its depth and its offset
//! (`fg:x`): that is how `paint.rs` colours and titles boxes one by one rather than by name.

use std::collections::{BTreeMap, HashMap};

use crate::report::Verdict;

/// One frame as drawn: the label in the box, and what the tooltip adds (the full path and
/// line, the module, the command line).
#[derive(Debug, Clone)]
pub(super) struct DrawnFrame {
    pub label: String,
    pub detail: String,
}

/// One stack to draw, root first.
#[derive(Debug)]
pub(super) struct Stack {
    pub frames: Vec<DrawnFrame>,
    pub bytes: u64,
    pub count: u64,
    pub growth_bytes_per_s: f64,
    pub verdict: Verdict,
}

/// What the stacks through one box add up to.
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    pub bytes: u64,
    pub count: u64,
    pub growth_bytes_per_s: f64,
    /// Stacks by verdict, in `Verdict` order (leak first).
    pub stacks: [usize; 4],
}

impl Stats {
    fn add(&mut self, stack: &Stack) {
        self.bytes = self.bytes.saturating_add(stack.bytes);
        self.count = self.count.saturating_add(stack.count);
        if stack.growth_bytes_per_s.is_finite() {
            self.growth_bytes_per_s += stack.growth_bytes_per_s;
        }
        self.stacks[verdict_index(stack.verdict)] += 1;
    }

    /// The most severe verdict among the stacks (leak, then growing, bounded, stable).
    pub fn verdict(&self) -> Option<Verdict> {
        VERDICTS.into_iter().zip(self.stacks).find(|(_, n)| *n > 0).map(|(v, _)| v)
    }

    /// The verdicts present, most severe first.
    pub fn verdicts(&self) -> impl Iterator<Item = (Verdict, usize)> + '_ {
        VERDICTS.into_iter().zip(self.stacks).filter(|(_, n)| *n > 0)
    }
}

pub(super) const VERDICTS: [Verdict; 4] = [Verdict::Leak, Verdict::Growing, Verdict::Bounded, Verdict::Stable];

fn verdict_index(v: Verdict) -> usize {
    VERDICTS.iter().position(|x| *x == v).unwrap_or(3)
}

#[derive(Debug, Default)]
pub(super) struct Node {
    pub label: String,
    pub detail: String,
    /// 0 for the root (inferno's "all"), 1 for the outermost frames.
    pub depth: usize,
    /// Offset and width in inferno's units (`fg:x`, `fg:w`): scaled bytes.
    pub start: u64,
    pub width: u64,
    pub stats: Stats,
    /// Weight of the stacks that end at this node.
    own: u64,
    children: BTreeMap<String, usize>,
}

#[derive(Debug)]
pub(super) struct Tree {
    nodes: Vec<Node>,
    by_position: HashMap<(usize, u64), usize>,
}

impl Tree {
    /// Merges the stacks (identical label paths become one box). inferno adds weights in a
    /// usize: the absurd byte counts of a damaged saved report are scaled down together so their
    /// sum fits (the picture keeps its proportions, the tooltips keep the real bytes); a stack
    /// scaled down to nothing is left out.
    pub fn build(stacks: &[Stack]) -> Tree {
        let mut shift = 0;
        while stacks.iter().try_fold(0u64, |sum, s| sum.checked_add(s.bytes >> shift)).is_none_or(|t| t > MAX_TOTAL) {
            shift += 1;
        }
        let mut nodes = vec![Node::default()];
        for stack in stacks {
            let weight = stack.bytes >> shift;
            if weight == 0 || stack.frames.is_empty() {
                continue;
            }
            let mut at = 0;
            nodes[0].stats.add(stack);
            for (depth, frame) in stack.frames.iter().enumerate() {
                let next = nodes.len();
                let child = *nodes[at].children.entry(frame.label.clone()).or_insert(next);
                if child == next {
                    nodes.push(Node {
                        label: frame.label.clone(),
                        detail: frame.detail.clone(),
                        depth: depth + 1,
                        ..Node::default()
                    });
                }
                nodes[child].stats.add(stack);
                at = child;
            }
            nodes[at].own += weight;
        }
        let mut tree = Tree { nodes, by_position: HashMap::new() };
        tree.layout();
        tree
    }

    /// Offsets in the depth-first order of `folded`: a node's own stacks first, then its
    /// children by label.
    fn layout(&mut self) {
        let mut offset = 0u64;
        // (node, entered): a node is pushed again to close it after its children.
        let mut todo = vec![(0usize, false)];
        while let Some((i, entered)) = todo.pop() {
            if entered {
                self.nodes[i].width = offset - self.nodes[i].start;
                continue;
            }
            self.nodes[i].start = offset;
            offset += self.nodes[i].own;
            todo.push((i, true));
            todo.extend(self.nodes[i].children.values().rev().map(|&c| (c, false)));
        }
        // Unique: boxes of one depth never overlap, and none is empty.
        self.by_position = self.nodes.iter().enumerate().map(|(i, n)| ((n.depth, n.start), i)).collect();
    }

    /// The folded lines (`root;...;leaf weight`) in the order the layout assumes.
    pub fn folded(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut todo: Vec<(usize, String)> = vec![(0, String::new())];
        while let Some((i, path)) = todo.pop() {
            let node = &self.nodes[i];
            if node.own > 0 && i != 0 {
                lines.push(format!("{path} {}", node.own));
            }
            for &c in node.children.values().rev() {
                let label = &self.nodes[c].label;
                let child = if path.is_empty() { label.clone() } else { format!("{path};{label}") };
                todo.push((c, child));
            }
        }
        lines
    }

    pub fn root(&self) -> &Node {
        &self.nodes[0]
    }

    /// The box inferno draws at `depth` starting at `start`.
    pub fn at(&self, depth: usize, start: u64) -> Option<&Node> {
        self.by_position.get(&(depth, start)).map(|&i| &self.nodes[i])
    }
}

/// Keeps inferno's sums (usize, and percentages in f64) well inside their range.
const MAX_TOTAL: u64 = 1 << 52;

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(labels: &[&str], bytes: u64, verdict: Verdict) -> Stack {
        let frames = labels.iter().map(|l| DrawnFrame { label: l.to_string(), detail: String::new() }).collect();
        Stack { frames, bytes, count: 1, growth_bytes_per_s: 1.0, verdict }
    }

    #[test]
    fn shared_frames_take_the_most_severe_verdict() {
        let t = Tree::build(&[
            stack(&["main", "cache"], 100, Verdict::Bounded),
            stack(&["main", "leak"], 10, Verdict::Leak),
            stack(&["main"], 5, Verdict::Stable),
        ]);
        assert_eq!(t.folded(), ["main 5", "main;cache 100", "main;leak 10"]);
        let main = t.at(1, 0).unwrap();
        assert_eq!((main.label.as_str(), main.width, main.stats.bytes), ("main", 115, 115));
        assert_eq!(main.stats.verdict(), Some(Verdict::Leak));
        let cache = t.at(2, 5).unwrap();
        assert_eq!((cache.label.as_str(), cache.stats.verdict()), ("cache", Some(Verdict::Bounded)));
        let leak = t.at(2, 105).unwrap();
        assert_eq!((leak.label.as_str(), leak.width), ("leak", 10));
        assert_eq!(t.root().stats.stacks, [1, 0, 1, 1]);
        assert_eq!(t.root().width, 115);
    }

    #[test]
    fn absurd_weights_are_scaled_but_bytes_kept() {
        let t = Tree::build(&[stack(&["a"], u64::MAX, Verdict::Leak), stack(&["b"], u64::MAX / 2, Verdict::Leak)]);
        assert!(t.root().width <= MAX_TOTAL && t.root().width > 0);
        assert_eq!(t.root().stats.bytes, u64::MAX);
        assert_eq!(t.folded().len(), 2);
    }
}
