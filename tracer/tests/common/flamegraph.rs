//! Reading tracer's flame graphs back: a strict XML parse (roxmltree) and the boxes inferno drew,
//! with the class, title, fill and label text tracer gave each. Shared by the integration tests
//! and the exporters' unit tests (by path).

/// Parses `svg` as XML (its DOCTYPE allowed); panics with the parser's error otherwise.
pub fn parse_svg(svg: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions { allow_dtd: true, ..roxmltree::ParsingOptions::default() };
    roxmltree::Document::parse_with_options(svg, opts).unwrap_or_else(|e| panic!("the SVG is not XML: {e}\n{svg}"))
}

/// One box of the flame graph.
#[derive(Debug, Clone)]
pub struct SvgBox {
    /// The verdict tracer painted it with (`leak`, `growing`, `bounded`, `stable`).
    pub class: String,
    pub title: String,
    pub fill: String,
    /// The label drawn in the box (cut with `..` when narrow).
    pub text: String,
}

/// The boxes under `<svg id="frames">`.
pub fn svg_boxes(svg: &str) -> Vec<SvgBox> {
    let doc = parse_svg(svg);
    let frames = doc.descendants().find(|n| n.attribute("id") == Some("frames")).expect("frames");
    frames
        .children()
        .filter(|n| n.has_tag_name("g"))
        .map(|g| {
            let child = |tag: &str| g.children().find(|c| c.has_tag_name(tag)).unwrap();
            SvgBox {
                class: g.attribute("class").unwrap_or_default().to_string(),
                title: child("title").text().unwrap_or_default().to_string(),
                fill: child("rect").attribute("fill").unwrap().to_string(),
                text: child("text").text().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

/// The box whose label is `label`.
pub fn svg_box<'a>(boxes: &'a [SvgBox], label: &str) -> &'a SvgBox {
    let label = format!("{label} (");
    boxes.iter().find(|b| b.title.starts_with(&label)).unwrap_or_else(|| panic!("no box {label}: {boxes:#?}"))
}

/// The text of the element with this `id` and of its descendants.
pub fn text_of(doc: &roxmltree::Document<'_>, id: &str) -> String {
    let node = doc.descendants().find(|n| n.attribute("id") == Some(id)).unwrap_or_else(|| panic!("no #{id}"));
    node.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect()
}

fn rgb(fill: &str) -> (u8, u8, u8) {
    let inner = fill.strip_prefix("rgb(").and_then(|f| f.strip_suffix(')')).unwrap_or_else(|| panic!("{fill}"));
    let v: Vec<u8> = inner.split(',').map(|c| c.trim().parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

pub fn is_red(fill: &str) -> bool {
    let (r, g, b) = rgb(fill);
    r > 190 && g < 110 && b < 110
}

pub fn is_orange(fill: &str) -> bool {
    let (r, g, b) = rgb(fill);
    r > 230 && (130..200).contains(&g) && b < 90
}

pub fn is_grey(fill: &str) -> bool {
    let (r, g, b) = rgb(fill);
    r == g && b.abs_diff(r) < 10 && r > 150
}
