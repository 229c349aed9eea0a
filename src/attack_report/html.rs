//! The attack report's page: one self-contained HTML document (inline CSS and SVG, no script, nothing fetched),
//! readable in a browser or as a mail attachment. A chart without data says so in words. Every string from the
//! store goes through [`escape`]: user names, reasons and addresses can be chosen by an attacker, and the page
//! must show them as text, never as markup.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::scan::{PREFIX_CAPACITY, TOP_CAPACITY};
use super::sketch::EXACT_LIMIT;
use super::svg::{self, Axis, Band, Line, Moment};
use super::{AttackReport, BanOrigin, MarkKind};
use crate::decision::LimitMode;

/// Text made safe for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters have no business in a page (and NUL is not allowed in HTML at all).
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;background:#fff;max-width:1100px}\
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}\
h3{font-size:15px;margin:18px 0 4px}p.empty{color:#666;font-style:italic;background:#f6f6f6;padding:10px}\
table{border-collapse:collapse;margin:6px 0;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;\
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.bar{display:inline-block;height:10px;background:#1f77b4}.legend span{display:inline-block;margin-right:14px;\
font-size:12px}.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}\
.sev-critical{color:#b00020;font-weight:bold}.sev-warning{color:#a05a00;font-weight:bold}.sev-info{color:#555}\
.meta{color:#555;font-size:13px}pre{background:#f6f6f6;padding:6px;font-size:12px;white-space:pre-wrap}";

fn limit_colour(mode: LimitMode) -> &'static str {
    match mode {
        LimitMode::Source => "#ff7f0e",
        LimitMode::Global => "#d62728",
        LimitMode::Synproxy => "#9467bd",
    }
}

fn origin_colour(o: BanOrigin) -> &'static str {
    match o {
        BanOrigin::Jail => "#1f77b4",
        BanOrigin::Dos => "#d62728",
        BanOrigin::Prefix => "#9467bd",
        BanOrigin::Manual => "#7f7f7f",
        BanOrigin::Fleet => "#17becf",
        BanOrigin::Other => "#bcbd22",
    }
}

const COUNTER_COLOURS: [&str; 8] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn legend(items: &[(&str, &str)]) -> String {
    let mut s = String::from(r#"<div class="legend">"#);
    for (colour, label) in items {
        let _ = write!(s, r#"<span><i style="background:{colour}"></i>{}</span>"#, escape(label));
    }
    s.push_str("</div>");
    s
}

fn empty(s: &mut String, text: &str) {
    let _ = write!(s, r#"<p class="empty">{}</p>"#, escape(text));
}

/// The whole page.
pub fn render(r: &AttackReport, generated: DateTime<Utc>) -> String {
    let axis = Axis { since: r.window.since, until: r.window.until, bucket: r.bucket, buckets: r.buckets };
    let mut s = String::with_capacity(64 * 1024);
    let scope = match r.window.port {
        Some(p) => format!("port {p}"),
        None => "all ports".to_string(),
    };
    let _ = write!(
        s,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"><title>floodgate report: {}</title><style>{STYLE}</style></head><body>"#,
        escape(&format!("{} to {}", time(r.window.since), time(r.window.until)))
    );
    let bans_total: u64 = r.bans.iter().flat_map(|(_, v)| v.iter()).sum();
    let _ = write!(
        s,
        r#"<h1>floodgate: the attack as a picture</h1><p class="meta">{} to {} ({}), {} buckets of {}. Generated {}.</p><p>{} events ({} failures), {} ports with new connections, {} bans, {} kernel SYN-flood lines.</p>"#,
        time(r.window.since),
        time(r.window.until),
        escape(&scope),
        r.buckets,
        humantime::format_duration(r.bucket),
        time(generated),
        grouped(r.events),
        grouped(r.failures),
        r.ports.iter().filter(|p| p.new_per_s.iter().any(|v| *v > 0.0)).count(),
        grouped(bans_total),
        grouped(r.syn_lines_total),
    );

    ports(&mut s, r, &axis);
    bans(&mut s, r, &axis);
    sources(&mut s, r);
    kernel(&mut s, r, &axis);
    decisions(&mut s, r);
    findings(&mut s, r);
    s.push_str("</body></html>\n");
    s
}

fn ports(s: &mut String, r: &AttackReport, axis: &Axis) {
    s.push_str("<h2>Connections per port</h2>");
    s.push_str(&legend(&[
        ("#1f77b4", "new connections/s"),
        ("#2ca02c", "distinct sources per bucket"),
        (limit_colour(LimitMode::Source), "per-source limit (shaded)"),
        (limit_colour(LimitMode::Global), "global limit (shaded)"),
        (limit_colour(LimitMode::Synproxy), "SYN proxy (shaded)"),
        ("#8b0000", "bans (ticks)"),
        ("#ff7f0e", "A: alert (limit on)"),
        ("#2ca02c", "C: converged"),
    ]));
    if r.ports.is_empty() {
        empty(
            s,
            "No new connections recorded in this period: neither log `connect` lines nor conntrack's new \
             connections, and no limit switched on.",
        );
        return;
    }
    if r.estimated.distinct {
        let _ = write!(
            s,
            r#"<p class="meta">Distinct sources (per bucket, per prefix, per country) are exact up to {} and
            estimates above (HyperLogLog, about 1.6% standard error).</p>"#,
            grouped(EXACT_LIMIT as u64)
        );
    }
    for p in &r.ports {
        let name = match &p.service {
            Some(svc) => format!("Port {} ({svc})", p.port),
            None => format!("Port {}", p.port),
        };
        let _ = write!(s, "<h3>{}</h3>", escape(&name));
        if p.is_empty() {
            empty(s, &format!("No new connections recorded on port {} in this period.", p.port));
            continue;
        }
        let peak_rate = p.new_per_s.iter().copied().fold(0.0, f64::max);
        let peak_distinct = p.distinct.iter().copied().max().unwrap_or(0);
        let _ = write!(
            s,
            r#"<p class="meta">peak {peak_rate:.1} new connections/s, {} distinct sources in one bucket; {} bans</p>"#,
            grouped(peak_distinct),
            grouped(p.bans.iter().sum())
        );
        let bands: Vec<Band> = p
            .limits
            .iter()
            .map(|l| Band {
                from: l.from,
                to: l.to,
                colour: limit_colour(l.mode),
                label: format!("{} limit {} to {}", l.mode.as_str(), time(l.from), time(l.to)),
            })
            .collect();
        let moments: Vec<Moment> = p
            .marks
            .iter()
            .map(|m| match m.kind {
                MarkKind::Alert => Moment { at: m.time, colour: "#ff7f0e", letter: 'A', label: m.text.clone() },
                MarkKind::Converged => Moment { at: m.time, colour: "#2ca02c", letter: 'C', label: m.text.clone() },
            })
            .collect();
        let distinct: Vec<f64> = p.distinct.iter().map(|d| *d as f64).collect();
        s.push_str(&svg::line_chart(
            axis,
            "new connections/s",
            &[Line { label: "new connections/s", colour: "#1f77b4", values: &p.new_per_s }],
            &bands,
            &moments,
            Some(("bans", "#8b0000", &p.bans)),
        ));
        s.push_str(&svg::line_chart(
            axis,
            "distinct sources",
            &[Line { label: "distinct sources per bucket", colour: "#2ca02c", values: &distinct }],
            &bands,
            &moments,
            None,
        ));
        for m in &p.marks {
            let what = match m.kind {
                MarkKind::Alert => "alert",
                MarkKind::Converged => "converged",
            };
            let _ = write!(s, r#"<p class="meta">{} {what}: {}</p>"#, time(m.time), escape(&m.text));
        }
    }
}

fn bans(s: &mut String, r: &AttackReport, axis: &Axis) {
    s.push_str("<h2>Bans over time, by origin</h2>");
    if r.bans.is_empty() {
        empty(s, "No bans were made in this period.");
        return;
    }
    let items: Vec<(&str, &str)> = r.bans.iter().map(|(o, _)| (origin_colour(*o), o.as_str())).collect();
    s.push_str(&legend(&items));
    let series: Vec<(&str, &'static str, &[u64])> =
        r.bans.iter().map(|(o, v)| (o.as_str(), origin_colour(*o), v.as_slice())).collect();
    s.push_str(&svg::stacked_bars(axis, "bans per bucket", &series));
    let totals: Vec<String> =
        r.bans.iter().map(|(o, v)| format!("{}: {}", o.as_str(), grouped(v.iter().sum()))).collect();
    let _ = write!(s, r#"<p class="meta">{}</p>"#, escape(&totals.join(", ")));
}

fn bar(n: u64, most: u64) -> String {
    let w = if most == 0 { 0 } else { (n * 200).div_ceil(most) };
    format!(r#"<span class="bar" style="width:{w}px"></span>"#)
}

/// One ranked row: its name (plain text), its weight (drawn as a bar against the heaviest) and further cells
/// (plain text, right-aligned numbers or not).
struct Ranked {
    name: String,
    weight: u64,
    cells: Vec<(String, bool)>,
}

/// A table of ranked rows, heaviest first, under `heads` (name, weight, then one per further cell); every string
/// is escaped here.
fn ranked_table(s: &mut String, heads: &[&str], rows: Vec<Ranked>) {
    let most = rows.first().map_or(0, |r| r.weight);
    s.push_str("<table><tr>");
    for (i, h) in heads.iter().enumerate() {
        let _ = write!(s, "<th>{}</th>", escape(h));
        if i == 1 {
            s.push_str("<th></th>");
        }
    }
    s.push_str("</tr>");
    for r in rows {
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td class="n">{}</td><td>{}</td>"#,
            escape(&r.name),
            grouped(r.weight),
            bar(r.weight, most)
        );
        for (cell, number) in r.cells {
            let _ = write!(s, "<td{}>{}</td>", if number { r#" class="n""# } else { "" }, escape(&cell));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}

fn sources(s: &mut String, r: &AttackReport) {
    const WEIGHT: &str = "events + connections";
    s.push_str("<h2>Top sources</h2>");
    if r.top_sources.is_empty() {
        empty(s, "No source addresses recorded in this period.");
    } else {
        let rows = r.top_sources.iter().map(|t| Ranked {
            name: t.addr.to_string(),
            weight: t.events,
            cells: vec![
                (grouped(t.failures), true),
                ((if t.banned { "yes" } else { "" }).to_string(), false),
                (t.country.map(|c| c.as_str().to_string()).unwrap_or_default(), false),
            ],
        });
        ranked_table(s, &["source", WEIGHT, "failures", "banned", "country"], rows.collect());
        estimate_note(s, r.estimated.sources, TOP_CAPACITY, "sources", "events + connections and failures");
    }
    s.push_str("<h2>Top prefixes</h2>");
    if r.top_prefixes.is_empty() {
        empty(s, "No source networks recorded in this period.");
    } else {
        let rows = r.top_prefixes.iter().map(|t| Ranked {
            name: t.prefix.to_string(),
            weight: t.events,
            cells: vec![(grouped(t.sources), true)],
        });
        ranked_table(s, &["prefix", WEIGHT, "sources"], rows.collect());
        estimate_note(s, r.estimated.prefixes, PREFIX_CAPACITY, "prefixes", "events + connections and sources");
    }
    s.push_str("<h2>Countries</h2>");
    match &r.countries {
        None => empty(s, "No country data loaded (`floodgate geo update` loads it)."),
        Some(rows) if rows.is_empty() => empty(s, "No source addresses recorded in this period."),
        Some(rows) => {
            let rows = rows.iter().map(|c| Ranked {
                name: c.country.map_or_else(|| "unknown".to_string(), |c| c.as_str().to_string()),
                weight: c.events,
                cells: vec![(grouped(c.sources), true)],
            });
            ranked_table(s, &["country", WEIGHT, "sources"], rows.collect());
        }
    }
    s.push_str("<h2>User names tried</h2>");
    if r.users.is_empty() {
        empty(s, "No failed logins naming a user in this period.");
    } else {
        let rows = r.users.iter().map(|(user, n)| Ranked { name: user.clone(), weight: *n, cells: Vec::new() });
        ranked_table(s, &["user (as the attacker sent it)", "attempts"], rows.collect());
        estimate_note(s, r.estimated.users, TOP_CAPACITY, "user names", "attempts");
    }
}

/// Says under a top list whether it is exact or, past the sketch's capacity, an estimate and in which way.
fn estimate_note(s: &mut String, estimated: bool, capacity: usize, what: &str, figures: &str) {
    let said = if estimated {
        format!(
            "An estimate: more than {} distinct {what} in this period, ranked in {} counters. The {figures} are \
             lower bounds (what each surely did while counted); an entry near the bottom may be missing.",
            grouped(capacity as u64),
            grouped(capacity as u64)
        )
    } else {
        format!("Exact: at most {} distinct {what} in this period.", grouped(capacity as u64))
    };
    let _ = write!(s, r#"<p class="meta">{}</p>"#, escape(&said));
}

fn kernel(s: &mut String, r: &AttackReport, axis: &Axis) {
    s.push_str("<h2>The kernel: SYN-flood lines and counters</h2>");
    if r.syn_lines.is_empty() {
        empty(s, "No \"Possible SYN flooding\" lines from the kernel in this period.");
    } else {
        let _ = write!(
            s,
            r#"<p class="meta">{} lines{}</p><table><tr><th>time</th><th>listener</th><th>the kernel</th></tr>"#,
            grouped(r.syn_lines_total),
            if r.syn_lines_total > r.syn_lines.len() as u64 {
                format!(" (the first {} listed)", r.syn_lines.len())
            } else {
                String::new()
            }
        );
        for l in &r.syn_lines {
            let listener = match (l.local_addr, l.port) {
                (Some(a), Some(p)) => format!("{a}:{p}"),
                (None, Some(p)) => format!("port {p}"),
                _ => "?".to_string(),
            };
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(l.time),
                escape(&listener),
                if l.cookies { "sending cookies" } else { "dropping requests" }
            );
        }
        s.push_str("</table>");
    }
    if r.counters.is_empty() {
        empty(
            s,
            "No kernel counter rises recorded in this period (SYN cookies sent, queue drops, floodgate's limit rules' drops).",
        );
        return;
    }
    let values: Vec<Vec<f64>> = r.counters.iter().map(|c| c.per_bucket.iter().map(|v| *v as f64).collect()).collect();
    let lines: Vec<Line> = r
        .counters
        .iter()
        .zip(&values)
        .enumerate()
        .map(|(i, (c, v))| Line { label: &c.name, colour: COUNTER_COLOURS[i % COUNTER_COLOURS.len()], values: v })
        .collect();
    let items: Vec<(&str, String)> = r
        .counters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (COUNTER_COLOURS[i % COUNTER_COLOURS.len()], format!("{} ({} in all)", c.name, grouped(c.total())))
        })
        .collect();
    let items: Vec<(&str, &str)> = items.iter().map(|(c, l)| (*c, l.as_str())).collect();
    s.push_str(&legend(&items));
    s.push_str(&svg::line_chart(axis, "rise per bucket", &lines, &[], &[], None));
}

fn decisions(s: &mut String, r: &AttackReport) {
    s.push_str("<h2>Latest decisions</h2>");
    if r.decisions.is_empty() {
        empty(s, "No decisions in this period.");
        return;
    }
    s.push_str("<table><tr><th>time</th><th>action</th><th>target</th><th>origin</th><th>reason</th></tr>");
    for d in &r.decisions {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(d.time),
            escape(&d.action),
            escape(&d.target),
            escape(&d.origin),
            escape(&d.reason)
        );
    }
    s.push_str("</table>");
}

fn findings(s: &mut String, r: &AttackReport) {
    s.push_str("<h2>The advisor on these ports</h2>");
    if r.findings.is_empty() {
        empty(s, "The advisor has nothing to say about these ports (or was not run for this report).");
        return;
    }
    for f in &r.findings {
        let sev = f.severity.as_str();
        let _ = write!(
            s,
            r#"<h3><span class="sev-{sev}">{}</span> [{}] {}</h3><p>now: {}<br>recommended: {}</p><p>{}</p>"#,
            escape(&sev.to_uppercase()),
            escape(f.id),
            escape(&f.subject),
            escape(&f.current),
            escape(&f.recommended),
            escape(&f.why)
        );
        if let Some(snippet) = &f.snippet {
            let _ = write!(s, "<pre>{}</pre>", escape(snippet));
        }
    }
}
