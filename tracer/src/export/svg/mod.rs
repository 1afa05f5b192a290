//! A flame graph of outstanding bytes by stack that says what leaks: inferno draws it, and
//! `paint.rs` colours each box by the most severe verdict among the stacks through it (leak red,
//! growing orange, bounded and stable grey), titles it with that verdict, bytes, blocks and
//! growth, and adds a legend. Labels put the function first (`cache_upload (leaky_service.py:35)`)
//! and inferno cuts them on the right, so a narrow box keeps the function's name; file names are
//! shortened as py-spy does (`paths.rs`), the full path is in the tooltip.
//!
//! Every string here can come from the target (function and file names, the command line): all
//! of it goes through [`visible`] before it reaches the XML, so the SVG always parses.

use std::io::Write;

use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Options, TextTruncateDirection};

use super::paths::ShortPaths;
use super::{Chosen, Selection, NO_STACK};
use crate::report::{Frame, Report, Verdict};
use crate::units::{bytes, count, duration as seconds};

mod paint;
mod tree;

use tree::{DrawnFrame, Stack, Tree};

const TITLE: &str = "Outstanding memory by Python stack";

pub(super) fn write(reports: &[Report], selection: &Selection<'_>, out: &mut dyn Write) -> anyhow::Result<()> {
    let subtitle = subtitle(reports, selection);
    let tree = Tree::build(&stacks(reports, selection));
    let lines = tree.folded();
    if lines.is_empty() {
        // inferno refuses an empty graph; say plainly that there is nothing to draw.
        return write_empty(&subtitle, out);
    }
    let mut opts = Options::default();
    opts.title = TITLE.to_string();
    opts.subtitle = Some(subtitle);
    opts.count_name = "bytes".to_string();
    opts.name_type = "Frame:".to_string();
    // Only for a box `paint` would not find: every other box gets its verdict's colour.
    opts.colors = Palette::Basic(BasicPalette::Mem);
    opts.hash = true;
    // The function comes first in a label: cut the file part, keep the name.
    opts.text_truncate_direction = TextTruncateDirection::Right;
    // `tree` laid the boxes out in this order; `paint` finds them again by position.
    opts.no_sort = true;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)?;
    let svg = String::from_utf8(svg)?;
    paint::paint(&svg, &tree, &legend(selection), out)
}

/// The selected stacks as drawn: labels with short file names, root first.
fn stacks(reports: &[Report], selection: &Selection<'_>) -> Vec<Stack> {
    // File names are shortened per process: each has its own files.
    let paths: Vec<(&Report, ShortPaths)> = reports.iter().map(|r| (r, ShortPaths::of(r))).collect();
    let no_paths = ShortPaths::default();
    selection
        .samples
        .iter()
        .filter(|s| s.suspect.outstanding_bytes > 0)
        .map(|sample| {
            let paths = paths.iter().find(|(r, _)| std::ptr::eq(*r, sample.report)).map_or(&no_paths, |(_, p)| p);
            let suspect = sample.suspect;
            let mut frames = Vec::with_capacity(suspect.stack.len() + 2);
            if let Some(pid) = sample.pid {
                frames.push(drawn(format!("pid {pid}"), sample.report.target.cmdline.clone()));
            }
            if suspect.stack.is_empty() {
                frames.push(drawn(NO_STACK.to_string(), String::new()));
            }
            frames.extend(suspect.stack.iter().rev().map(|f| frame(f, paths)));
            Stack {
                frames,
                bytes: suspect.outstanding_bytes,
                count: suspect.outstanding_count,
                growth_bytes_per_s: suspect.growth_bytes_per_s,
                verdict: suspect.verdict,
            }
        })
        .collect()
}

fn frame(frame: &Frame, paths: &ShortPaths) -> DrawnFrame {
    match frame {
        Frame::Python { function, file, line, .. } => {
            drawn(format!("{function} ({}:{line})", paths.short(file)), format!("{file}:{line}"))
        }
        Frame::Native { module, .. } => drawn(frame.label(), module.clone()),
    }
}

/// A frame whose label is safe for the folded lines inferno reads (`;` separates frames, a line
/// holds one stack, a leading `# ` makes a comment) and for XML.
fn drawn(label: String, detail: String) -> DrawnFrame {
    let mut label = visible(label.trim()).replace(';', ",");
    if label.is_empty() {
        label = "?".into();
    }
    if label.starts_with('#') {
        label.replace_range(..1, "\\x23");
    }
    DrawnFrame { label, detail: visible(&detail) }
}

/// `s` with every character XML 1.0 cannot carry, every other control character and every bidi
/// control written as an escape (`crate::escape`).
fn visible(s: &str) -> String {
    crate::escape::visible(s).into_owned()
}

/// `pid 4242 · CPython 3.11.7 · python3 app.py · 60.0 s · 12.4 MiB outstanding in 2,345 blocks`.
fn subtitle(reports: &[Report], selection: &Selection<'_>) -> String {
    let duration = reports.iter().map(|r| r.duration_s).fold(0.0, f64::max);
    let outstanding = reports.iter().fold(0u64, |sum, r| sum.saturating_add(r.totals.outstanding_bytes));
    let blocks = reports.iter().fold(0u64, |sum, r| sum.saturating_add(r.totals.outstanding_count));
    let mut parts = Vec::new();
    match reports {
        [r] => {
            parts.push(format!("pid {}", r.target.pid));
            if !r.target.python.is_empty() {
                parts.push(format!("CPython {}", r.target.python));
            }
            let command = if r.target.cmdline.is_empty() { &r.target.exe } else { &r.target.cmdline };
            if !command.is_empty() {
                parts.push(middle_cut(&short_command(command), 60));
            }
        }
        _ => {
            let pids: Vec<String> = reports.iter().map(|r| r.target.pid.to_string()).collect();
            parts.push(middle_cut(&format!("{} processes: pids {}", reports.len(), pids.join(", ")), 70));
        }
    }
    parts.push(seconds(duration));
    parts.push(format!("{} outstanding in {} blocks", bytes(outstanding as f64), count(blocks)));
    if let Some(i) = reports.iter().find_map(|r| r.inconclusive.as_ref()) {
        parts.push(i.reason.clone());
    }
    // The legend says which verdicts are drawn; only this choice needs saying here.
    if let Chosen::Largest(top) = selection.chosen {
        parts.push(format!("no leaks: the {top} largest stacks"));
    }
    visible(&parts.join(" \u{b7} "))
}

/// The command line with the program's directory left out: `python3 app.py`.
fn short_command(command: &str) -> String {
    let (program, args) = command.split_once(' ').unwrap_or((command, ""));
    let program = program.rsplit('/').next().filter(|p| !p.is_empty()).unwrap_or(program);
    if args.is_empty() {
        program.to_string()
    } else {
        format!("{program} {args}")
    }
}

/// `s` cut to `max` characters by taking out its middle.
fn middle_cut(s: &str, max: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= max {
        return s.to_string();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    let mut cut: String = chars[..head].iter().collect();
    cut.push('\u{2026}');
    cut.extend(&chars[chars.len() - tail..]);
    cut
}

/// The legend row: one swatch per colour with what is drawn in it.
fn legend(selection: &Selection<'_>) -> String {
    let mut drawn = [(0usize, 0u64); 3];
    for sample in selection.samples.iter().filter(|s| s.suspect.outstanding_bytes > 0) {
        let i = match sample.suspect.verdict {
            Verdict::Leak => 0,
            Verdict::Growing => 1,
            Verdict::Bounded | Verdict::Stable => 2,
        };
        drawn[i].0 += 1;
        drawn[i].1 = drawn[i].1.saturating_add(sample.suspect.outstanding_bytes);
    }
    let entries = [(Verdict::Leak, "leak"), (Verdict::Growing, "growing"), (Verdict::Bounded, "bounded / stable")];
    // One centred line that flows with the window's width; a coloured square before each entry.
    let mut svg =
        format!("<text id=\"legend\" x=\"50%\" y=\"{}\" text-anchor=\"middle\">", 4 * 12 + paint::LEGEND_HEIGHT);
    for (i, ((verdict, name), (stacks, total))) in entries.into_iter().zip(drawn).enumerate() {
        let what = match stacks {
            0 if verdict == Verdict::Bounded && selection.chosen == Chosen::Growing => {
                "not drawn (--all-stacks draws them)".to_string()
            }
            0 => "none drawn".to_string(),
            1 => format!("1 stack, {}", bytes(total as f64)),
            n => format!("{n} stacks, {}", bytes(total as f64)),
        };
        let gap = if i == 0 { "" } else { "\u{2003}\u{2003}" };
        svg.push_str(&format!(
            "{gap}<tspan class=\"{class}\" fill=\"{fill}\">\u{25a0}</tspan>\u{a0}{name}: {what}",
            class = verdict.as_str(),
            fill = paint::swatch(verdict),
            what = xml_escape(&what),
        ));
    }
    svg.push_str("</text>");
    svg
}

fn write_empty(subtitle: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let line = |y: u32, size: u32, text: &str| {
        format!(
            "<text x=\"600\" y=\"{y}\" text-anchor=\"middle\" font-family=\"Verdana\" \
             font-size=\"{size}\">{}</text>\n",
            xml_escape(&visible(text))
        )
    };
    let svg = format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"100\" viewBox=\"0 0 1200 100\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n\
         <rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#eef2ee\"/>\n\
         {}{}{}</svg>\n",
        line(24, 17, TITLE),
        line(48, 12, subtitle),
        line(80, 14, "No outstanding memory in the selected stacks."),
    );
    out.write_all(svg.as_bytes())?;
    Ok(())
}

fn xml_escape(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    escaped
}
