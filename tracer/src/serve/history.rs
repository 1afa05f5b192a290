//! What the live page charts over time: per process its outstanding bytes, and the bytes of
//! each line and holder once it was judged `leak` or `growing` (kept from then on, so a line
//! has its history when it turns into a leak). Bounded: [`MAX_POINTS`] per series, the oldest
//! dropped; at most [`MAX_TRACKS`] series.

use std::collections::VecDeque;

use crate::export::live::{leak_lines, Track, TrackKind};
use crate::report::{Reports, Verdict};

/// Points kept per series (an hour at `-i 5s`).
pub const MAX_POINTS: usize = 720;
/// Series kept in all (new lines and holders past it are not charted).
pub const MAX_TRACKS: usize = 200;

/// One series: (pid, what it follows, its line or path, its points).
type Kept = (u32, TrackKind, String, VecDeque<(f64, f64)>);

#[derive(Debug, Default)]
pub struct History {
    tracks: Vec<Kept>,
}

impl History {
    /// Adds the values of one snapshot, at each process's own time since tracing started.
    pub fn record(&mut self, reports: &Reports) {
        for r in reports.as_slice() {
            let (pid, t) = (r.target.pid, r.duration_s);
            self.push(pid, TrackKind::Total, "", t, r.totals.outstanding_bytes as f64);
            for (line, _, bytes, _, _) in leak_lines(r) {
                self.push(pid, TrackKind::Line, &line, t, bytes as f64);
            }
            for h in r.holders.iter().filter(|h| matches!(h.verdict, Verdict::Leak | Verdict::Growing)) {
                self.push(pid, TrackKind::Holder, &h.path, t, h.retained_bytes_est as f64);
            }
        }
    }

    fn push(&mut self, pid: u32, kind: TrackKind, key: &str, t: f64, v: f64) {
        let at = self.tracks.iter().position(|(p, k, name, _)| *p == pid && *k == kind && name == key);
        let at = match at {
            Some(i) => i,
            None if self.tracks.len() < MAX_TRACKS => {
                self.tracks.push((pid, kind, key.to_string(), VecDeque::new()));
                self.tracks.len() - 1
            }
            None => return,
        };
        let points = &mut self.tracks[at].3;
        if points.back().is_some_and(|p| p.0 >= t) {
            return; // a process that ended keeps its last report: no new point
        }
        if points.len() == MAX_POINTS {
            points.pop_front();
        }
        points.push_back((t, v));
    }

    /// The series, as the live page's exporter takes them.
    pub fn tracks(&self) -> Vec<Track> {
        self.tracks
            .iter()
            .map(|(pid, kind, key, points)| Track {
                pid: *pid,
                kind: *kind,
                key: key.clone(),
                points: points.iter().copied().collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::live_report as report;

    #[test]
    fn keeps_leaking_lines_and_holders_and_is_bounded() {
        let mut h = History::default();
        for i in 0..(MAX_POINTS + 10) {
            let mut r = report();
            r.duration_s = i as f64;
            h.record(&Reports::One(r));
        }
        let tracks = h.tracks();
        let kinds: Vec<TrackKind> = tracks.iter().map(|t| t.kind).collect();
        assert_eq!(kinds, [TrackKind::Total, TrackKind::Line, TrackKind::Holder]);
        assert!(tracks.iter().all(|t| t.points.len() == MAX_POINTS));
        assert_eq!(tracks[0].points[0].0, 10.0);
        // the same time again (an ended process): no new point
        h.record(&Reports::One(report()));
        assert_eq!(h.tracks()[0].points.len(), MAX_POINTS);
    }
}
