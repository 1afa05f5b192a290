//! The human report: what leaks first, with its Python stack and the reason for the verdict, then
//! what keeps memory alive (holders), then what was cleared and why. Fits the terminal (100 columns when not on one).

use std::fmt::Write as _;
use std::io::Write;

use super::ExportOptions;
use crate::report::{Frame, Holder, MultiReport, Report, Reports, Suspect, Verdict};
use crate::terminal::{self, middle};
use crate::units::{self, count, Unit};

/// Columns when the report does not go to a terminal (`ExportOptions::width`); on a terminal
/// its width. Reasons are wrapped, the not-leaks table split, long lines and paths shortened in
/// the middle to stay within it.
pub const WIDTH: usize = 100;
/// Frames shown per stack, innermost first; deeper stacks end with a count of the rest.
const MAX_FRAMES: usize = 16;

pub(super) fn write(report: &Report, opts: &ExportOptions, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut s = String::new();
    render(&mut s, report, opts);
    emit(&s, out)
}

pub(super) fn write_multi(multi: &MultiReport, opts: &ExportOptions, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut s = String::new();
    if multi.processes.is_empty() {
        s.push_str("tracer: no process was traced.\n");
    }
    for (i, report) in multi.processes.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        let _ = writeln!(s, "== PID {}: {} ==", report.target.pid, command(report));
        render(&mut s, report, opts);
    }
    emit(&s, out)
}

/// Writes the rendered text with trailing blanks trimmed from every line (padding of a last
/// column must not leave any).
fn emit(s: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut clean = String::with_capacity(s.len());
    for line in s.lines() {
        clean.push_str(line.trim_end());
        clean.push('\n');
    }
    out.write_all(clean.as_bytes())?;
    Ok(())
}

/// One line for the terminal when the report went to a file: `tracer: 2 leaks:
/// remember_request (leaky_service.py:29) +400 KiB/min, __main__.CACHE +100 items/s`, lines
/// named by their file's last component, or `tracer: no leak found (1 line growing)`.
pub fn verdict_line(reports: &Reports) -> String {
    let mut leaks = Vec::new();
    let mut growing = 0;
    for r in reports.as_slice() {
        for (_, verdict, _, growth, _, site) in super::live::leak_lines_with_site(r) {
            if verdict != Verdict::Leak {
                growing += 1;
                continue;
            }
            let name = match site {
                Some(Frame::Python { function, file, line, .. }) => {
                    format!("{function} ({}:{line})", file.rsplit('/').next().unwrap_or(file))
                }
                Some(f) => f.label(),
                None => "[no stack]".into(),
            };
            leaks.push(format!("{name} {}", rate(growth)));
        }
        for h in r.holders.iter() {
            match h.verdict {
                Verdict::Leak => leaks.push(format!("{} {}", h.path, units::rate(h.growth_per_s, Unit::Items))),
                Verdict::Growing => growing += 1,
                _ => {}
            }
        }
    }
    let growing = match growing {
        0 => String::new(),
        n => format!(" ({} {} growing)", count(n as u64), plural(n, "line or holder", "lines or holders")),
    };
    if leaks.is_empty() {
        return format!("tracer: no leak found{growing}");
    }
    let n = leaks.len();
    format!("tracer: {} {}: {}{growing}", count(n as u64), plural(n, "leak", "leaks"), leaks.join(", "))
}

fn command(report: &Report) -> &str {
    let t = &report.target;
    if t.cmdline.is_empty() {
        &t.exe
    } else {
        &t.cmdline
    }
}

fn render(s: &mut String, r: &Report, opts: &ExportOptions) {
    let w = opts.width;
    header(s, r, w);
    s.push('\n');

    let growing: Vec<&Suspect> = r.suspects.iter().filter(|x| x.verdict.is_growing()).collect();
    let cleared: Vec<&Suspect> = r.suspects.iter().filter(|x| !x.verdict.is_growing()).collect();
    let holders_growing = r.holders.iter().any(|h| h.verdict.is_growing());

    if let Some(i) = &r.inconclusive {
        let _ = writeln!(s, "{}", capitalized(&i.reason));
    }
    if growing.is_empty() {
        let window = units::duration(r.duration_s);
        if r.inconclusive.is_some() {
            let _ = writeln!(s, "No stack among those recorded grew steadily during the {window} window.");
        } else if holders_growing {
            let _ = writeln!(s, "No allocation stack grew steadily during the {window} window; see HOLDERS below.");
        } else {
            let _ = writeln!(s, "No leaks: nothing grew steadily during the {window} window.");
        }
    } else {
        leaks(s, &growing, opts.top, w);
    }

    if !r.holders.is_empty() {
        s.push('\n');
        holders(s, &r.holders, opts.top, w);
        if let Some(c) = &r.holders_scan {
            wrapped(s, "   ", "   ", &walk_cost(c), w);
        }
    }
    if r.census_scan.is_some() {
        s.push('\n');
        census(s, r, opts.top, w);
    }
    if !cleared.is_empty() {
        s.push('\n');
        not_leaks(s, &cleared, opts.top, w);
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// `LEAK`/`GROWING` shout; `bounded`/`stable` do not.
fn verdict_word(v: Verdict) -> String {
    if v.is_growing() {
        v.as_str().to_ascii_uppercase()
    } else {
        v.as_str().to_string()
    }
}

fn header(s: &mut String, r: &Report, w: usize) {
    let t = &r.target;
    let python = if t.python.is_empty() { "?" } else { &t.python };
    let mut when = units::duration(r.duration_s);
    if let Some(view) = r.final_view {
        let _ = write!(when, ", final view: {view}");
    }
    let mut line = format!("tracer: pid {} python {python}", t.pid);
    if !command(r).is_empty() {
        let _ = write!(line, "  {}", command(r));
    }
    let when = format!("   ({when})");
    let room = w.saturating_sub(when.chars().count()).max(20);
    let _ = writeln!(s, "{}{when}", middle(&line, room));

    let tot = &r.totals;
    let line = format!(
        "allocations {}  frees {}  outstanding {} in {} blocks",
        count(tot.allocs),
        count(tot.frees),
        bytes(tot.outstanding_bytes),
        count(tot.outstanding_count)
    );
    let lost: Vec<String> =
        tot.lost.iter().filter(|(_, &n)| n > 0).map(|(name, &n)| format!("{} {name}", count(n))).collect();
    let lost = if lost.is_empty() { "none".to_string() } else { lost.join(", ") };
    let lost = format!("lost: {lost}");
    if line.len() + 3 + lost.len() <= w {
        let _ = writeln!(s, "{line}   {lost}");
    } else {
        let _ = writeln!(s, "{line}");
        wrapped(s, "", "      ", &lost, w);
    }

    if let Some(end) = &r.command {
        let _ = writeln!(s, "the command {end}");
    }
    if r.sample_bytes > 0 {
        let _ = writeln!(
            s,
            "sampled: about one allocation per {} recorded; sizes and counts are estimates",
            bytes(r.sample_bytes)
        );
    }
    if let Some(w) = &r.windows {
        let _ = writeln!(
            s,
            "windows ({}): allocation probes attached {} of every {}; {} windows{}; allocations recorded {} of \
             the time, growth rates scaled to the whole timeline; {} frees between windows inferred from the \
             chunks' state",
            w.mode,
            units::duration(w.on_s),
            units::duration(w.every_s),
            count(w.opened),
            if w.skipped_no_growth > 0 {
                format!(", {} periods skipped (no growth)", count(w.skipped_no_growth))
            } else {
                String::new()
            },
            units::percent(w.recorded_share),
            count(w.inferred_frees),
        );
    }
    if r.final_view == Some(crate::report::FinalView::Finalization) {
        let _ = writeln!(
            s,
            "note: the interpreter began shutting down; outstanding memory is as it was before \
             module teardown"
        );
    }
}

fn leaks(s: &mut String, growing: &[&Suspect], top: usize, w: usize) {
    let _ = writeln!(s, "LEAKS AND GROWTH (ranked by leak evidence)");
    let shown = &growing[..growing.len().min(top)];
    let rank_w = shown.iter().map(|x| x.rank.to_string().len()).max().unwrap_or(1);
    let verdict_w = shown.iter().map(|x| x.verdict.as_str().len()).max().unwrap_or(4);
    let size_w = shown.iter().map(|x| bytes(x.outstanding_bytes).len()).max().unwrap_or(0);
    let count_w = shown.iter().map(|x| count(x.outstanding_count).len()).max().unwrap_or(0);
    let rate_w = shown.iter().map(|x| rate(x.growth_bytes_per_s).len()).max().unwrap_or(0);
    for (i, x) in shown.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "#{:<rank_w$} {:<verdict_w$}  score {:.2}  {:>size_w$} outstanding in {:>count_w$} blocks   \
             {:>rate_w$}   {}",
            x.rank,
            verdict_word(x.verdict),
            x.score,
            bytes(x.outstanding_bytes),
            count(x.outstanding_count),
            rate(x.growth_bytes_per_s),
            x.allocator,
        );
        if x.reason.is_empty() {
            wrapped(s, "   facts: ", "          ", &facts(x), w);
        } else {
            wrapped(s, "   why: ", "        ", &x.reason, w);
        }
        stack(s, &x.stack, w);
    }
    let hidden = growing.len() - shown.len();
    if hidden > 0 {
        if !shown.is_empty() {
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "... {} more leak or growth {} not shown (raise --top, or use -f json)",
            count(hidden as u64),
            plural(hidden, "stack", "stacks")
        );
    }
}

/// The numbers behind a verdict, for suspects whose report gave no reason.
fn facts(x: &Suspect) -> String {
    let live = if x.live_fraction > 0.0 || x.allocs == 0 {
        x.live_fraction
    } else {
        x.outstanding_count as f64 / x.allocs as f64
    };
    format!(
        "{} of {} allocations still live, oldest {}",
        units::percent(live),
        count(x.allocs),
        units::duration(x.oldest_age_s)
    )
}

fn stack(s: &mut String, frames: &[Frame], w: usize) {
    if frames.is_empty() {
        let _ = writeln!(s, "   (no stack recorded)");
        return;
    }
    for frame in frames.iter().take(MAX_FRAMES) {
        match frame {
            Frame::Python { .. } => {
                let _ = writeln!(s, "   {}", middle(&frame.label(), w.saturating_sub(3)));
            }
            Frame::Native { .. } => {
                let _ = writeln!(s, "   [native] {}", middle(&frame.label(), w.saturating_sub(12)));
            }
        }
    }
    if frames.len() > MAX_FRAMES {
        let more = frames.len() - MAX_FRAMES;
        let _ = writeln!(s, "   ... {} more outer {}", count(more as u64), plural(more, "frame", "frames"));
    }
}

fn holders(s: &mut String, all: &[Holder], top: usize, width: usize) {
    let _ = writeln!(s, "HOLDERS (what keeps memory alive)");
    let mut sorted: Vec<&Holder> = all.iter().collect();
    // Problems first; within a verdict, the report's own evidence decides. Stable otherwise.
    sorted.sort_by(|a, b| a.verdict.cmp(&b.verdict).then(b.score.total_cmp(&a.score)));
    let shown = &sorted[..sorted.len().min(top)];

    let rows: Vec<[String; 7]> = shown
        .iter()
        .map(|h| {
            [
                verdict_word(h.verdict),
                h.path.clone(),
                h.type_name.clone(),
                format!("len {}", count(h.len)),
                units::rate(h.growth_per_s, Unit::Items),
                format!("~{}", bytes(h.retained_bytes_est)),
                item_types(h),
            ]
        })
        .collect();
    let mut rows = rows;
    let w = column_widths(&rows);
    // A path that does not fit beside the figures gets a line of its own (shortened in the
    // middle only past the terminal's width), the figures under it; item types go first when
    // even the figures do not fit.
    let lead = 3 + w[0] + 2;
    let figures_w = w[2] + 2 + w[3] + 2 + w[4] + 2 + w[5];
    let own_line = lead + w[1] + 2 + figures_w + 2 + w[6] > width;
    if own_line {
        rows.iter_mut().for_each(|r| r[1] = terminal::path(&r[1], width.saturating_sub(lead).max(24)));
    }
    let beside = if own_line { 0 } else { w[1] + 2 };
    if lead + beside + figures_w + 2 + w[6] > width {
        rows.iter_mut().for_each(|r| r[6].clear());
    }
    for (h, row) in shown.iter().zip(&rows) {
        let figures = format!(
            "{:<w2$}  {:>w3$}  {:>w4$}  {:>w5$}  {}",
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
            w5 = w[5],
        );
        if own_line {
            let _ = writeln!(s, "   {:<w0$}  {}", row[0], row[1], w0 = w[0]);
            let _ = writeln!(s, "{:lead$}{}", "", figures.trim_end());
        } else {
            let _ = writeln!(s, "   {:<w0$}  {:<w1$}  {}", row[0], row[1], figures.trim_end(), w0 = w[0], w1 = w[1]);
        }
        if !h.reason.is_empty() {
            wrapped(s, "       why: ", "            ", &h.reason, width);
        }
        if let Some(o) = h.origin.as_ref().filter(|_| h.verdict.is_growing()).and_then(origin_text) {
            let _ = writeln!(s, "       newest made at {o}");
        }
    }
    let hidden = sorted.len() - shown.len();
    if hidden > 0 {
        let _ = writeln!(
            s,
            "   ... {} more {} (-f json lists them all)",
            count(hidden as u64),
            plural(hidden, "holder", "holders")
        );
    }
}

/// Live objects by type: the suspects with their reasons, then the most numerous others, then
/// what the scans cost and skipped.
fn census(s: &mut String, r: &Report, top: usize, width: usize) {
    let _ = writeln!(s, "CENSUS (live objects by type, read from the interpreter's GC lists)");
    let shown = &r.census[..r.census.len().min(top)];
    let rows: Vec<[String; 5]> = shown
        .iter()
        .map(|t| {
            [
                verdict_word(t.verdict),
                t.type_name.clone(),
                format!("{} live", count(t.count)),
                units::rate(t.growth_per_s, Unit::Items),
                format!("~{}", bytes(t.bytes_est)),
            ]
        })
        .collect();
    let w = column_widths(&rows);
    for (t, row) in shown.iter().zip(&rows) {
        let made =
            t.origin.as_ref().and_then(origin_text).map(|o| format!("   newest made at {o}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "   {:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}{made}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
        );
        if t.verdict.is_growing() && !t.reason.is_empty() {
            wrapped(s, "       why: ", "            ", &t.reason, width);
        }
    }
    if let Some(c) = &r.census_scan {
        wrapped(s, "   ", "   ", &census_cost(c), width);
    }
}

/// `app.py:42 (on_tick)`: the shown link's file (last component), line and function; `None`
/// when the object leads to no code.
fn origin_text(o: &crate::report::Origin) -> Option<String> {
    let l = o.link();
    let file = l.file.as_deref().map(|f| f.rsplit('/').next().unwrap_or(f))?;
    let line = l.line?;
    Some(match &l.function {
        Some(func) => format!("{file}:{line} ({func})"),
        None => format!("{file}:{line}"),
    })
}

/// `walk from roots: 6 scans, 18,204 objects each, 3.1 MiB read (2.0 MiB copied whole), 41 ms
/// (max 60 ms); ...`
fn walk_cost(c: &crate::report::ScanSummary) -> String {
    let whole = match c.copied_whole_per_scan {
        0 => String::new(),
        n => format!(" ({} copied whole)", bytes(n)),
    };
    let mut line = format!(
        "walk from roots: {} scans, {} objects each, {} read{whole}, {} (max {})",
        count(c.scans),
        count(c.objects_per_scan),
        bytes(c.bytes_read_per_scan),
        units::millis(c.mean_scan_s),
        units::millis(c.max_scan_s)
    );
    if c.items_not_followed_per_scan > 0 {
        let _ = write!(
            line,
            "; {} items of big containers not followed per scan (each container's newest 1,024 are)",
            count(c.items_not_followed_per_scan)
        );
    }
    line
}

/// `census: 6 scans, 91,204 objects each, 24 MiB read in 410 reads, 38 ms (max 52 ms); ...`
fn census_cost(c: &crate::report::CensusSummary) -> String {
    let mut line = format!(
        "census: {} scans, {} objects each, {} read in {} reads, {} (max {})",
        count(c.scans),
        count(c.objects_per_scan),
        bytes(c.bytes_read_per_scan),
        count(c.reads_per_scan),
        units::millis(c.mean_scan_s),
        units::millis(c.max_scan_s)
    );
    let torn = c.torn_repaired + c.tail_completions + c.torn_dropped;
    if torn > 0 {
        let _ = write!(
            line,
            "; torn reads: {} repaired, {} lists finished from the tail, {} dropped ({} scans not judged)",
            count(c.torn_repaired),
            count(c.tail_completions),
            count(c.torn_dropped),
            count(c.scans_discarded)
        );
    }
    if c.scans_cut_by_budget > 0 {
        let skipped = c.skipped_objects.map_or("an unknown number of".to_string(), count);
        let _ = write!(
            line,
            "; {} scans cut by --census-budget, the last skipped {skipped} objects",
            count(c.scans_cut_by_budget)
        );
    }
    if c.scans_paced > 0 {
        let _ = write!(line, "; {} intervals skipped to keep scans under 10% of the time", count(c.scans_paced));
    }
    if let Some(e) = &c.error {
        let _ = write!(line, "; last scan failed: {e}");
    }
    line
}

/// `(2,835 ValueError, 12 str, +3 more types)`: the most numerous item types first.
fn item_types(h: &Holder) -> String {
    if h.item_types.is_empty() {
        return String::new();
    }
    let mut types: Vec<(&String, &u64)> = h.item_types.iter().collect();
    types.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut parts: Vec<String> = types.iter().take(3).map(|(t, n)| format!("{} {t}", count(**n))).collect();
    if types.len() > 3 {
        parts.push(format!("+{} more types", types.len() - 3));
    }
    format!("({})", parts.join(", "))
}

fn not_leaks(s: &mut String, cleared: &[&Suspect], top: usize, width: usize) {
    let _ = writeln!(s, "NOT LEAKS (shown so you can see why they were cleared)");
    let shown = &cleared[..cleared.len().min(top)];
    let rows: Vec<[String; 3]> = shown
        .iter()
        .map(|x| {
            [x.verdict.as_str().to_string(), bytes(x.outstanding_bytes), middle(&where_(x), width.saturating_sub(24))]
        })
        .collect();
    let w = column_widths(&rows);
    let prefix = 3 + w[0] + 2 + w[1] + 2 + w[2] + 2;
    let one_line = shown.iter().all(|x| x.reason.is_empty() || prefix + "why: ".len() + x.reason.len() <= width);
    for (x, row) in shown.iter().zip(&rows) {
        let mut line = format!("   {:<w0$}  {:>w1$}  ", row[0], row[1], w0 = w[0], w1 = w[1]);
        if x.reason.is_empty() {
            let _ = writeln!(s, "{line}{}", row[2]);
        } else if one_line {
            let _ = writeln!(s, "{line}{:<w2$}  why: {}", row[2], x.reason, w2 = w[2]);
        } else {
            let _ = writeln!(s, "{line}{}", row[2]);
            line = " ".repeat(3 + w[0] + 2);
            wrapped(s, &format!("{line}why: "), &format!("{line}     "), &x.reason, width);
        }
    }
    let hidden = cleared.len() - shown.len();
    if hidden > 0 {
        let _ = writeln!(
            s,
            "   ... {} more cleared {} (-f json lists them all)",
            count(hidden as u64),
            plural(hidden, "stack", "stacks")
        );
    }
}

/// The line a person would look at: the innermost Python frame, else the innermost frame.
fn where_(x: &Suspect) -> String {
    x.stack
        .iter()
        .find(|f| matches!(f, Frame::Python { .. }))
        .or(x.stack.first())
        .map_or_else(|| "(no stack recorded)".to_string(), Frame::label)
}

fn column_widths<const N: usize>(rows: &[[String; N]]) -> [usize; N] {
    let mut w = [0; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            w[i] = w[i].max(cell.chars().count());
        }
    }
    w
}

/// Appends `text` after `first`, wrapped at word boundaries to `width` columns, continuation
/// lines starting with `cont`. A word longer than a line is kept whole.
fn wrapped(s: &mut String, first: &str, cont: &str, text: &str, width: usize) {
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            s.push_str(&line);
            s.push('\n');
            line = cont.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    s.push_str(&line);
    s.push('\n');
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// A size, through the one formatter.
fn bytes(n: u64) -> String {
    units::bytes(n as f64)
}

/// A rate of bytes, through the one formatter.
fn rate(bytes_per_s: f64) -> String {
    units::rate(bytes_per_s, Unit::Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_wrap_within_the_width() {
        let mut s = String::new();
        let reason = "word ".repeat(60);
        wrapped(&mut s, "   why: ", "        ", &reason, WIDTH);
        assert!(s.lines().count() > 1);
        assert!(s.lines().all(|l| l.len() <= WIDTH), "{s}");
        assert!(s.lines().skip(1).all(|l| l.starts_with("        word")));
    }
}
