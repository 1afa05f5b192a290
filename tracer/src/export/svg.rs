//! A flame graph of outstanding bytes by stack (inferno), built from the folded lines.

use std::io::Write;

use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Options};

use super::text::seconds;
use super::{folded, Selection};
use crate::report::Report;

const TITLE: &str = "Outstanding memory by Python stack";

pub(super) fn write(reports: &[Report], selection: &Selection<'_>, out: &mut dyn Write) -> anyhow::Result<()> {
    let subtitle = subtitle(reports, selection);
    let lines = fit_total(folded::lines(selection));
    if lines.is_empty() {
        // inferno refuses an empty graph; say plainly that there is nothing to draw.
        return write_empty(&subtitle, out);
    }
    let mut opts = Options::default();
    opts.title = TITLE.to_string();
    opts.subtitle = Some(subtitle);
    opts.count_name = "bytes".to_string();
    opts.name_type = "Frame:".to_string();
    opts.colors = Palette::Basic(BasicPalette::Mem);
    // Colour by name, so one frame keeps its colour from one graph to the next.
    opts.hash = true;
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)?;
    Ok(())
}

/// inferno adds up every stack's weight in a usize: the absurd byte counts of a damaged saved
/// report would overflow it. Such weights are scaled down together (the picture keeps its
/// proportions); real ones are left alone.
fn fit_total(lines: Vec<String>) -> Vec<String> {
    let weight = |l: &str| l.rsplit_once(' ').and_then(|(_, w)| w.parse::<u64>().ok()).unwrap_or(0);
    let mut shift = 0;
    while lines.iter().try_fold(0u64, |sum, l| sum.checked_add(weight(l) >> shift)).is_none() {
        shift += 1;
    }
    if shift == 0 {
        return lines;
    }
    lines
        .into_iter()
        .filter_map(|l| {
            let (stack, w) = l.rsplit_once(' ')?;
            let w = w.parse::<u64>().ok()? >> shift;
            (w > 0).then(|| format!("{stack} {w}"))
        })
        .collect()
}

fn subtitle(reports: &[Report], selection: &Selection<'_>) -> String {
    let duration = reports.iter().map(|r| r.duration_s).fold(0.0, f64::max);
    match reports {
        [r] => {
            let command = if r.target.cmdline.is_empty() { &r.target.exe } else { &r.target.cmdline };
            let mut parts = vec![format!("pid {}", r.target.pid)];
            if !r.target.python.is_empty() {
                parts.push(format!("python {}", r.target.python));
            }
            parts.push(seconds(duration));
            if !command.is_empty() {
                parts.push(command.clone());
            }
            parts.push(format!("({})", selection.what));
            parts.join("  ")
        }
        _ => {
            let pids: Vec<String> = reports.iter().map(|r| r.target.pid.to_string()).collect();
            format!("pids {}  {}  ({})", pids.join(", "), seconds(duration), selection.what)
        }
    }
}

fn write_empty(subtitle: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let line = |y: u32, size: u32, text: &str| {
        format!(
            "<text x=\"600\" y=\"{y}\" text-anchor=\"middle\" font-family=\"Verdana\" \
             font-size=\"{size}\">{}</text>\n",
            escape(text)
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

fn escape(s: &str) -> String {
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
