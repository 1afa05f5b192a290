//! A report as people read it (the text report): every string that came from the target passes
//! the one escaping rule (`escape`), so a name cannot forge a line or reach the terminal.

use crate::escape::{make_visible, visible};
use crate::report::{Frame, Report};

/// `r` with its target-made strings escaped (names, files, modules, command line, container
/// paths and types, census types, reasons).
pub(super) fn report(r: &Report) -> Report {
    let mut r = r.clone();
    let t = &mut r.target;
    for s in [&mut t.exe, &mut t.cmdline, &mut t.python, &mut t.libc] {
        make_visible(s);
    }
    for s in &mut r.suspects {
        make_visible(&mut s.reason);
        make_visible(&mut s.allocator);
        for f in &mut s.stack {
            match f {
                Frame::Python { function, file, .. } => {
                    make_visible(function);
                    make_visible(file);
                }
                Frame::Native { function, module } => {
                    make_visible(function);
                    make_visible(module);
                }
            }
        }
    }
    for h in &mut r.holders {
        make_visible(&mut h.path);
        make_visible(&mut h.type_name);
        make_visible(&mut h.reason);
        h.item_types =
            std::mem::take(&mut h.item_types).into_iter().map(|(k, n)| (visible(&k).into_owned(), n)).collect();
    }
    for t in &mut r.census {
        make_visible(&mut t.type_name);
        make_visible(&mut t.reason);
    }
    if let Some(e) = r.census_scan.as_mut().and_then(|c| c.error.as_mut()) {
        make_visible(e);
    }
    r
}
