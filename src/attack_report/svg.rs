//! The attack report's charts: inline SVG drawn from figures per time bucket, with no script and no external
//! resource, so the page renders the same in a browser, a mail client or a file viewer. Every text that goes
//! into the drawing (labels, tooltips) passes through [`escape`].

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::html::escape;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 28.0;

/// The time axis shared by every chart of one report.
#[derive(Debug, Clone, Copy)]
pub struct Axis {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub bucket: Duration,
    pub buckets: usize,
}

impl Axis {
    fn x(&self, t: DateTime<Utc>) -> f64 {
        let span = (self.until - self.since).num_microseconds().unwrap_or(1).max(1) as f64;
        let at = (t - self.since).num_microseconds().unwrap_or(0) as f64;
        LEFT + (at / span).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn bucket_start(&self, i: usize) -> DateTime<Utc> {
        self.since + crate::policy::span(self.bucket * i as u32)
    }

    /// The middle of bucket `i` (clipped to the window's end for the last one).
    fn bucket_x(&self, i: usize) -> f64 {
        let a = self.x(self.bucket_start(i));
        let b = self.x((self.bucket_start(i + 1)).min(self.until));
        (a + b) / 2.0
    }

    fn bucket_width(&self) -> f64 {
        (WIDTH - LEFT - RIGHT) / self.buckets.max(1) as f64
    }
}

/// A series on a line chart, one value per bucket.
pub struct Line<'a> {
    pub label: &'a str,
    pub colour: &'static str,
    pub values: &'a [f64],
}

/// A shaded period (a limit in force).
pub struct Band {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub colour: &'static str,
    pub label: String,
}

/// A moment marked by a vertical line (an alert, a convergence).
pub struct Moment {
    pub at: DateTime<Utc>,
    pub colour: &'static str,
    /// One letter drawn at the top of the line.
    pub letter: char,
    pub label: String,
}

/// A line chart over the axis, with shaded periods, marked moments, and optional ticks along the bottom (bans
/// per bucket, their height relative to the largest).
pub fn line_chart(
    axis: &Axis,
    y_label: &str,
    lines: &[Line],
    bands: &[Band],
    moments: &[Moment],
    ticks: Option<(&str, &'static str, &[u64])>,
) -> String {
    let max = lines.iter().flat_map(|l| l.values.iter().copied()).fold(0.0_f64, f64::max);
    let top = nice_ceiling(max);
    let mut s = open(y_label);
    frame(&mut s, axis, top);
    for b in bands {
        let (x0, x1) = (axis.x(b.from), axis.x(b.to));
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.18"><title>{}</title></rect>"#,
            (x1 - x0).max(1.0),
            HEIGHT - TOP - BOTTOM,
            b.colour,
            escape(&b.label)
        );
    }
    if let Some((label, colour, counts)) = ticks {
        let most = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
        let w = (axis.bucket_width() * 0.6).max(1.0);
        for (i, n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            let h = 4.0 + (*n as f64 / most) * (HEIGHT - TOP - BOTTOM) * 0.2;
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}" fill="{colour}"><title>{} {}: {n}</title></rect>"#,
                axis.bucket_x(i) - w / 2.0,
                HEIGHT - BOTTOM - h,
                escape(label),
                time_label(axis.bucket_start(i), axis)
            );
        }
    }
    for l in lines {
        let points: Vec<String> =
            l.values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", axis.bucket_x(i), y(*v, top))).collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></polyline>"#,
            points.join(" "),
            l.colour,
            escape(l.label)
        );
    }
    for m in moments {
        let x = axis.x(m.at);
        let _ = write!(
            s,
            r#"<g><title>{}</title><line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="{c}" stroke-width="2" stroke-dasharray="5,3"/><text x="{:.1}" y="{:.1}" font-size="11" fill="{c}">{}</text></g>"#,
            escape(&m.label),
            HEIGHT - BOTTOM,
            x + 3.0,
            TOP + 10.0,
            escape(&m.letter.to_string()),
            c = m.colour,
        );
    }
    s.push_str("</svg>");
    s
}

/// A stacked bar chart over the axis: one bar per bucket, a coloured piece per series.
pub fn stacked_bars(axis: &Axis, y_label: &str, series: &[(&str, &'static str, &[u64])]) -> String {
    let totals: Vec<u64> =
        (0..axis.buckets).map(|i| series.iter().map(|(_, _, v)| v.get(i).copied().unwrap_or(0)).sum()).collect();
    let top = nice_ceiling(totals.iter().copied().max().unwrap_or(0) as f64);
    let mut s = open(y_label);
    frame(&mut s, axis, top);
    let w = (axis.bucket_width() * 0.8).max(1.0);
    for i in 0..axis.buckets {
        let mut base = 0u64;
        for (label, colour, values) in series {
            let n = values.get(i).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let (y0, y1) = (y(base as f64, top), y((base + n) as f64, top));
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{y1:.1}" width="{w:.1}" height="{:.1}" fill="{colour}"><title>{} {}: {n}</title></rect>"#,
                axis.bucket_x(i) - w / 2.0,
                (y0 - y1).max(0.5),
                escape(label),
                time_label(axis.bucket_start(i), axis)
            );
            base += n;
        }
    }
    s.push_str("</svg>");
    s
}

fn open(y_label: &str) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{l}" font-family="sans-serif"><rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/><text x="4" y="{:.1}" font-size="11" fill="#444" transform="rotate(-90 10 {:.1})">{l}</text>"##,
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        l = escape(y_label)
    )
}

/// Grid, y labels (0 to `top`), time labels.
fn frame(s: &mut String, axis: &Axis, top: f64) {
    for k in 0..=4 {
        let v = top * f64::from(k) / 4.0;
        let yy = y(v, top);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#444">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            yy + 4.0,
            short_number(v)
        );
    }
    let ticks = 6;
    for k in 0..=ticks {
        let t = axis.since + (axis.until - axis.since) * k / ticks;
        let x = axis.x(t);
        let anchor = match k {
            0 => "start",
            k if k == ticks => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999999"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="{anchor}" fill="#444">{}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 4.0,
            HEIGHT - 8.0,
            time_label(t, axis)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#444444"/>"##,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM
    );
}

fn y(v: f64, top: f64) -> f64 {
    HEIGHT - BOTTOM - (v / top.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0) * (HEIGHT - TOP - BOTTOM)
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten at or above `v` (at least 1): a y axis in round steps.
pub fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * p).find(|c| *c >= v).unwrap_or(10.0 * p)
}

fn short_number(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.0}k", v / 1e3),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v if v >= 10.0 || v == 0.0 => format!("{v:.0}"),
        v => format!("{v:.1}"),
    }
}

/// HH:MM within a day, with the date when the period is longer.
fn time_label(t: DateTime<Utc>, axis: &Axis) -> String {
    if axis.until - axis.since > chrono::Duration::hours(24) {
        t.format("%m-%d %H:%M").to_string()
    } else {
        t.format("%H:%M").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn axis() -> Axis {
        let since = Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap();
        Axis { since, until: since + chrono::Duration::minutes(10), bucket: Duration::from_secs(60), buckets: 10 }
    }

    #[test]
    fn nice_ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(2100.0), 2500.0);
    }

    #[test]
    fn a_line_chart_draws_its_series_bands_and_moments_with_escaped_labels() {
        let a = axis();
        let values = [0.0, 5.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let svg = line_chart(
            &a,
            "new connections/s",
            &[Line { label: "rate <b>", colour: "#1f77b4", values: &values }],
            &[Band {
                from: a.since,
                to: a.since + chrono::Duration::minutes(2),
                colour: "#ff7f0e",
                label: "limit".into(),
            }],
            &[Moment {
                at: a.since + chrono::Duration::minutes(5),
                colour: "#2ca02c",
                letter: 'C',
                label: "x\"><script>".into(),
            }],
            Some(("bans", "#d62728", &[0, 3, 0, 0, 0, 0, 0, 0, 0, 0])),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("rate &lt;b&gt;"), "{svg}");
        assert!(!svg.contains("<script>") && svg.contains("x&quot;&gt;&lt;script&gt;"));
        // The band spans 2 of 10 minutes of the 920-pixel plot.
        assert!(svg.contains(r#"width="184.0""#), "{svg}");
        // The peak (10, in bucket 2) is at the top of a 0..10 axis.
        assert!(svg.contains(&format!("{:.1},{TOP:.1}", LEFT + 2.5 * 92.0)), "{svg}");
        assert!(svg.contains("bans 09:01: 3"), "{svg}");
    }

    #[test]
    fn stacked_bars_stack_each_bucket() {
        let a = axis();
        let jail = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let dos = [3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let svg = stacked_bars(&a, "bans", &[("jail", "#1", &jail), ("dos", "#2", &dos)]);
        // 4 in all on a 0..5 axis (plot 178 px high): the jail piece is 35.6 px, the dos piece 106.8 px on top.
        assert!(svg.contains(r##"height="35.6" fill="#1""##), "{svg}");
        assert!(svg.contains(r##"height="106.8" fill="#2""##), "{svg}");
    }
}
