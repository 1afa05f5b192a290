//! Paints inferno's flame graph with the verdicts: each box gets the colour of the most severe
//! verdict among the stacks through it and a tooltip with that verdict, bytes, blocks and
//! growth; a legend row goes under the subtitle.
//!
//! inferno colours and titles frames by name only, so its SVG is rewritten here, event by event
//! (quick-xml, the XML library inferno writes with). A box is found in the tree by its depth
//! (the rank of its `y`) and its offset (`fg:x`), the attributes inferno's own script zooms
//! with. Everything else passes through unchanged; a box that is not found keeps inferno's
//! colour and title.

use std::collections::BTreeSet;
use std::io::Write;

use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

use super::tree::{Node, Tree};
use crate::report::Verdict;
use crate::units::{bytes, count, rate, Unit};

/// Height of the legend row added under the subtitle (two lines of inferno's 12 px font).
pub(super) const LEGEND_HEIGHT: u64 = 24;

/// Rewrites inferno's `svg` onto `out`; `legend` is inserted (as is) after the subtitle.
pub(super) fn paint(svg: &str, tree: &Tree, legend: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut reader = Reader::from_str(svg);
    let mut writer = Writer::new(out);
    let mut seen_root = false;
    let mut in_subtitle = false;
    loop {
        match reader.read_event()? {
            Event::Eof => break,
            Event::Start(e) if e.name().as_ref() == b"svg" && !seen_root => {
                seen_root = true;
                let height = attr(&e, "height").and_then(|h| h.parse::<u64>().ok());
                let view_box = attr(&e, "viewBox");
                let mut e = e.into_owned();
                if let Some(h) = height {
                    e = replace_attr(&e, "height", &(h + LEGEND_HEIGHT).to_string())?;
                }
                if let Some(grown) = view_box.as_deref().and_then(grow_view_box) {
                    e = replace_attr(&e, "viewBox", &grown)?;
                }
                writer.write_event(Event::Start(e))?;
            }
            Event::Start(e) if e.name().as_ref() == b"svg" && attr(&e, "id").as_deref() == Some("frames") => {
                writer.write_event(Event::Start(replace_attr(&e, "y", &LEGEND_HEIGHT.to_string())?))?;
                frames(&mut reader, &mut writer, tree)?;
            }
            Event::Empty(e)
                if e.name().as_ref() == b"rect" && attr(&e, "fill").as_deref() == Some("url(#background)") =>
            {
                writer.write_event(Event::Empty(shift_attr(&e, "height")?))?;
            }
            Event::Start(e) if e.name().as_ref() == b"text" => {
                let id = attr(&e, "id");
                in_subtitle = id.as_deref() == Some("subtitle");
                if matches!(id.as_deref(), Some("details" | "matched")) {
                    writer.write_event(Event::Start(shift_attr(&e, "y")?))?;
                } else {
                    writer.write_event(Event::Start(e))?;
                }
            }
            Event::End(e) if in_subtitle && e.name().as_ref() == b"text" => {
                in_subtitle = false;
                writer.write_event(Event::End(e))?;
                writer.get_mut().write_all(legend.as_bytes())?;
            }
            other => writer.write_event(other)?,
        }
    }
    Ok(())
}

/// One child of `<svg id="frames">`: a box (`<g>` with its title, rect and text) or anything
/// else inferno may put there.
enum Item {
    Box { events: Vec<Event<'static>>, start: Option<u64>, y: Option<i64> },
    Other(Event<'static>),
}

/// Reads the frames up to the end of their `<svg>`, then writes them painted.
fn frames(reader: &mut Reader<&[u8]>, writer: &mut Writer<&mut dyn Write>, tree: &Tree) -> anyhow::Result<()> {
    let mut items = Vec::new();
    let mut open: Option<(Vec<Event<'static>>, usize)> = None;
    loop {
        let event = reader.read_event()?.into_owned();
        if let Some((events, level)) = open.as_mut() {
            match &event {
                Event::Start(_) => *level += 1,
                Event::End(_) => *level -= 1,
                _ => {}
            }
            let done = *level == 0;
            events.push(event);
            if done {
                let (events, _) = open.take().unwrap_or_default();
                let rect = events.iter().find_map(|e| match e {
                    Event::Empty(r) if r.name().as_ref() == b"rect" => Some(r),
                    _ => None,
                });
                let start = rect.and_then(|r| attr(r, "fg:x")).and_then(|x| x.parse().ok());
                let y = rect.and_then(|r| attr(r, "y")).and_then(|y| y.parse().ok());
                items.push(Item::Box { events, start, y });
            }
            continue;
        }
        match event {
            Event::Start(e) if e.name().as_ref() == b"g" => open = Some((vec![Event::Start(e)], 1)),
            Event::End(e) => {
                // The end of `<svg id="frames">`.
                write_items(writer, items, tree)?;
                writer.write_event(Event::End(e))?;
                return Ok(());
            }
            Event::Eof => anyhow::bail!("inferno's SVG ended inside its frames"),
            other => items.push(Item::Other(other)),
        }
    }
}

fn write_items(writer: &mut Writer<&mut dyn Write>, items: Vec<Item>, tree: &Tree) -> anyhow::Result<()> {
    // Straight flame graphs put the root at the bottom: the larger `y`, the shallower.
    let levels: BTreeSet<i64> =
        items.iter().filter_map(|i| if let Item::Box { y, .. } = i { *y } else { None }).collect();
    let depth_of = |y: i64| levels.iter().rev().position(|l| *l == y);
    let total = tree.root().stats.bytes;
    for item in items {
        match item {
            Item::Other(e) => writer.write_event(e)?,
            Item::Box { events, start, y } => {
                let node = start.zip(y.and_then(depth_of)).and_then(|(start, depth)| tree.at(depth, start));
                match node {
                    Some(node) => write_box(writer, events, node, total)?,
                    None => events.into_iter().try_for_each(|e| writer.write_event(e))?,
                }
            }
        }
    }
    Ok(())
}

/// A box with the node's verdict class, colour and tooltip; its label text is inferno's.
fn write_box(
    writer: &mut Writer<&mut dyn Write>,
    events: Vec<Event<'static>>,
    node: &Node,
    total: u64,
) -> anyhow::Result<()> {
    let verdict = node.stats.verdict().unwrap_or(Verdict::Stable);
    let mut in_title = false;
    for (i, event) in events.into_iter().enumerate() {
        match event {
            Event::Start(e) if i == 0 => {
                writer.write_event(Event::Start(replace_attr(&e, "class", verdict.as_str())?))?
            }
            Event::Start(e) if e.name().as_ref() == b"title" => {
                in_title = true;
                writer.write_event(Event::Start(e))?;
                writer.write_event(Event::Text(BytesText::new(&tooltip(node, total))))?;
            }
            Event::End(e) if e.name().as_ref() == b"title" => {
                in_title = false;
                writer.write_event(Event::End(e))?;
            }
            _ if in_title => {}
            Event::Empty(e) if e.name().as_ref() == b"rect" => {
                writer.write_event(Event::Empty(replace_attr(&e, "fill", &color(verdict, &node.label))?))?;
            }
            other => writer.write_event(other)?,
        }
    }
    Ok(())
}

/// `label (leak, 1.5 MiB in 25 blocks, 11.2%, +128.2 KiB/s, /srv/app/leaky_service.py:35)`.
/// inferno's script takes the box's label from its title by cutting the last `(...)`, so the
/// details are one parenthesis with no `(` inside.
fn tooltip(node: &Node, total: u64) -> String {
    let s = &node.stats;
    let kinds: Vec<String> = s.verdicts().map(|(v, _)| v.as_str().to_string()).collect();
    let stacks: usize = s.stacks.iter().sum();
    let mut verdict = kinds.join(" + ");
    if stacks > 1 {
        verdict.push_str(&format!(" of {stacks} stacks"));
    }
    let pct = if total == 0 { 0.0 } else { 100.0 * s.bytes as f64 / total as f64 };
    let mut parts = vec![
        verdict,
        format!("{} in {} blocks", bytes(s.bytes as f64), count(s.count)),
        format!("{pct:.1}%"),
        rate(s.growth_bytes_per_s, Unit::Bytes),
    ];
    if !node.detail.is_empty() {
        parts.push(node.detail.clone());
    }
    let details = parts.join(", ").replace('(', "\u{ff08}").replace(')', "\u{ff09}");
    let name = if node.depth == 0 { "all" } else { node.label.as_str() };
    format!("{name} ({details})")
}

/// Red for leaks, orange for growth, grey for bounded and stable; the shade varies a little
/// with the label so that neighbouring boxes stay apart.
pub(super) fn color(verdict: Verdict, label: &str) -> String {
    let h = label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let a = (h & 0xff) as f64 / 255.0;
    let b = ((h >> 8) & 0xff) as f64 / 255.0;
    let (r, g, bl) = match verdict {
        Verdict::Leak => (205.0 + 30.0 * a, 45.0 + 45.0 * b, 35.0 + 25.0 * b),
        Verdict::Growing => (240.0 + 15.0 * a, 150.0 + 40.0 * b, 40.0 + 30.0 * b),
        Verdict::Bounded | Verdict::Stable => {
            let v = 180.0 + 28.0 * a;
            (v, v, v + 6.0 * b)
        }
    };
    format!("rgb({},{},{})", r as u8, g as u8, bl as u8)
}

/// The legend's colour of a verdict: the middle of its range.
pub(super) fn swatch(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Leak => "rgb(220,67,47)",
        Verdict::Growing => "rgb(247,170,55)",
        Verdict::Bounded | Verdict::Stable => "rgb(194,194,197)",
    }
}

fn attr(e: &BytesStart<'_>, key: &str) -> Option<String> {
    let a = e.try_get_attribute(key).ok()??;
    a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|v| v.into_owned())
}

/// `e` with `key` set to `value` (replaced where it was, else added last).
fn replace_attr(e: &BytesStart<'_>, key: &str, value: &str) -> anyhow::Result<BytesStart<'static>> {
    let name = String::from_utf8(e.name().as_ref().to_vec())?;
    let mut new = BytesStart::new(name);
    let mut replaced = false;
    for a in e.attributes() {
        let a = a?;
        if a.key.as_ref() == key.as_bytes() {
            new.push_attribute((key, value));
            replaced = true;
        } else {
            new.push_attribute(a);
        }
    }
    if !replaced {
        new.push_attribute((key, value));
    }
    Ok(new)
}

/// `e` with the number in `key` moved down by the legend's height.
fn shift_attr(e: &BytesStart<'_>, key: &str) -> anyhow::Result<BytesStart<'static>> {
    match attr(e, key).and_then(|v| v.parse::<f64>().ok()) {
        Some(v) => replace_attr(e, key, &format!("{:.2}", v + LEGEND_HEIGHT as f64)),
        None => Ok(e.clone().into_owned()),
    }
}

fn grow_view_box(view_box: &str) -> Option<String> {
    let mut parts: Vec<String> = view_box.split_whitespace().map(str::to_string).collect();
    let height: u64 = parts.get(3)?.parse().ok()?;
    parts[3] = (height + LEGEND_HEIGHT).to_string();
    Some(parts.join(" "))
}
