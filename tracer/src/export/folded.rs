//! Brendan Gregg's collapsed stacks: `root;...;leaf bytes`, one line per distinct stack, weighted
//! by outstanding bytes, sorted. The input of flamegraph.pl, inferno, speedscope and many more.

use std::collections::BTreeMap;
use std::io::Write;

use super::Selection;

/// The folded lines of a selection, sorted; identical stacks are merged and stacks with no
/// outstanding bytes left out.
pub(super) fn lines(selection: &Selection<'_>) -> Vec<String> {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    for sample in &selection.samples {
        let bytes = sample.suspect.outstanding_bytes;
        if bytes == 0 {
            continue;
        }
        let labels: Vec<String> = sample.labels_root_first().iter().map(|l| frame_name(l)).collect();
        let total = stacks.entry(labels.join(";")).or_default();
        *total = total.saturating_add(bytes);
    }
    stacks.into_iter().map(|(stack, bytes)| format!("{stack} {bytes}")).collect()
}

pub(super) fn write(selection: &Selection<'_>, out: &mut dyn Write) -> anyhow::Result<()> {
    for line in lines(selection) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// A frame label made safe for the format: `;` separates frames and a line ends a stack, so
/// neither may appear inside a name.
fn frame_name(label: &str) -> String {
    label
        .chars()
        .map(|c| match c {
            ';' => ',',
            '\n' | '\r' | '\t' => ' ',
            c => c,
        })
        .collect()
}
