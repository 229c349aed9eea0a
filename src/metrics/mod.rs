//! The daemon's numbers in the Prometheus text format (`[metrics] listen`, `GET /metrics`).
//!
//! The pipeline keeps a `Tally` of what happens on its thread (it is the only writer, so plain integers); a
//! scrape asks the pipeline for a `Snapshot` between two batches, like `floodgate status`, and `render` writes
//! it out. Conventions: a `floodgate_` prefix, `_total` on counters, seconds and bytes, HELP and TYPE for every
//! family, and labels only from bounded sets (port, service, origin, family, rule, source name): never an
//! address, so a flood of a million sources is still a handful of series.

pub mod config;
pub mod serve;

pub use config::MetricsConfig;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::decision::Decision;

/// Upper bounds of the decision latency histogram, in seconds: a ban is typically in the kernel a millisecond
/// after its line arrives; the top buckets catch a stalled store or kernel.
const LATENCY_BOUNDS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A cumulative histogram with fixed bounds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: [u64; LATENCY_BOUNDS.len()],
    count: u64,
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: [0; LATENCY_BOUNDS.len()], count: 0, sum: 0.0 }
    }
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (c, b) in self.counts.iter_mut().zip(LATENCY_BOUNDS) {
            if s <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }
}

/// Notices leave on a thread of their own; it counts here.
#[derive(Debug, Default)]
pub struct NoticeCounts {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
}

/// What the pipeline counts for the metrics, beyond what `status` already shows.
#[derive(Debug, Default)]
pub struct Tally {
    /// Events per rule that produced them (the parser's and the sources' own rules: a bounded set).
    pub rule_hits: BTreeMap<Arc<str>, u64>,
    /// Bans made, by origin (jail, dos, prefix, manual, fleet) and family.
    pub bans: BTreeMap<(&'static str, &'static str), u64>,
    /// Decisions carried out, by kind.
    pub decisions: BTreeMap<&'static str, u64>,
    /// From a line's arrival (read by its source) to its decision being in the kernel.
    pub latency: Histogram,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub notices: Arc<NoticeCounts>,
}

/// The origin a ban is counted under: the jail, the DoS policy (per address), a prefix the policy banned, the
/// operator, or another host of the fleet.
pub fn origin_kind(origin: &str) -> &'static str {
    match origin {
        o if o.starts_with("jail") => "jail",
        o if o.starts_with("policy:prefix") => "prefix",
        o if o.starts_with("policy") => "dos",
        crate::decision::MANUAL => "manual",
        "fleet" => "fleet",
        _ => "other",
    }
}

impl Tally {
    /// Counts decisions the kernel (and the store) took.
    pub fn decided(&mut self, decisions: &[Decision]) {
        for d in decisions {
            let (kind, ban) = match d {
                Decision::Ban { cidr, origin, .. } => ("ban", Some((origin_kind(origin), cidr))),
                Decision::Unban { .. } => ("unban", None),
                Decision::Limit { mode, .. } => (limit_kind(mode.as_str()), None),
                Decision::Lift { .. } => ("lift", None),
                Decision::Allow { .. } => ("allow", None),
                Decision::Disallow { .. } => ("disallow", None),
                Decision::Remote { cidr, .. } => ("fleet_ban", Some(("fleet", cidr))),
                Decision::RemoteLift { .. } => ("fleet_lift", None),
            };
            *self.decisions.entry(kind).or_default() += 1;
            if let Some((origin, cidr)) = ban {
                *self.bans.entry((origin, family(cidr.addr().is_ipv4()))).or_default() += 1;
            }
        }
    }

    /// Counts bans an operator made through the control socket.
    pub fn blocked(&mut self, v4: u64, v6: u64) {
        *self.decisions.entry("ban").or_default() += v4 + v6;
        *self.bans.entry(("manual", "ipv4")).or_default() += v4;
        *self.bans.entry(("manual", "ipv6")).or_default() += v6;
    }
}

fn limit_kind(mode: &str) -> &'static str {
    match mode {
        "source" => "limit_source",
        "global" => "limit_global",
        "synproxy" => "limit_synproxy",
        _ => "limit_other",
    }
}

pub fn family(v4: bool) -> &'static str {
    if v4 {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// A source's counters.
#[derive(Debug, Clone)]
pub struct SourceFigures {
    pub name: String,
    pub lines: u64,
    pub events: u64,
    pub lag_bytes: u64,
    pub lost: u64,
    pub shed: u64,
}

/// A protected port: its mode and its traffic over the policy's window.
#[derive(Debug, Clone)]
pub struct PortFigures {
    pub port: u16,
    pub service: String,
    pub mode: &'static str,
    /// New connections per second over the window (what conntrack saw plus what the limits dropped).
    pub new_per_s: f64,
    /// Distinct sources in the window (an estimate).
    pub distinct: u64,
}

/// What one of floodgate's drop rules dropped.
#[derive(Debug, Clone)]
pub struct DropFigures {
    /// ban, ban_prefix, fleet, fleet_prefix, country, limit_source, limit_global.
    pub rule: &'static str,
    pub family: Option<&'static str>,
    pub service: Option<String>,
    pub port: Option<u16>,
    pub packets: u64,
    pub bytes: u64,
}

/// Everything a scrape shows, gathered by the pipeline.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: String,
    pub commit: String,
    pub started_unix: i64,
    pub sources: Vec<SourceFigures>,
    pub lines_parsed: u64,
    pub unmatched: u64,
    pub malformed: u64,
    pub rule_hits: Vec<(String, u64)>,
    pub queued: usize,
    pub queue_capacity: usize,
    pub events_stored: u64,
    pub store_bytes: Option<u64>,
    /// Bans in force, by origin and family.
    pub bans_active: Vec<(&'static str, &'static str, u64)>,
    pub bans_made: Vec<((&'static str, &'static str), u64)>,
    pub decisions: Vec<(&'static str, u64)>,
    pub refused: u64,
    pub apply_errors: u64,
    pub ports: Vec<PortFigures>,
    /// None when the kernel's counters could not be read (dry run, no table yet): the families are left out
    /// rather than shown as zero.
    pub drops: Option<Vec<DropFigures>>,
    pub latency: Histogram,
    pub notices_sent: u64,
    pub notices_failed: u64,
    pub notices_held: usize,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub tracked_sources: usize,
}

/// One metric family being written: HELP and TYPE once, then its samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP floodgate_{name} {help}\n# TYPE floodgate_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str("floodgate_");
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped. Source names and
/// services come from the config, but nothing here relies on that.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A float as Prometheus reads it (no exponent surprises, integers without a fraction).
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "NaN".into()
    }
}

/// The exposition of `s`, in the Prometheus text format 0.0.4.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(8192));
    o.family("build_info", "gauge", "The running floodgate: its version and the commit it was built from.");
    o.sample("build_info", &[("version", &s.version), ("commit", &s.commit)], 1);
    o.one("start_time_seconds", "gauge", "When the daemon started, in seconds since the epoch.", s.started_unix);

    // One family per source counter, each a sample per source.
    type Get = fn(&SourceFigures) -> u64;
    let per_source: [(&str, &str, &str, Get); 5] = [
        ("source_lines_total", "counter", "Lines each source read.", |f| f.lines),
        ("source_events_total", "counter", "Events from each source (parsed from its lines or made by it).", |f| {
            f.events
        }),
        ("source_lag_bytes", "gauge", "Bytes written to a source's input and not read yet.", |f| f.lag_bytes),
        ("source_lost_total", "counter", "Records a source could not read (overwritten or overflowed).", |f| f.lost),
        ("source_shed_total", "counter", "Events a source dropped on purpose while the pipeline was full.", |f| f.shed),
    ];
    for (name, kind, help, get) in per_source {
        o.family(name, kind, help);
        for src in &s.sources {
            o.sample(name, &[("source", &src.name)], get(src));
        }
    }

    o.family("parse_lines_total", "counter", "Lines given to the parser, by result.");
    let matched = s.lines_parsed.saturating_sub(s.unmatched + s.malformed);
    o.sample("parse_lines_total", &[("result", "matched")], matched);
    o.sample("parse_lines_total", &[("result", "unmatched")], s.unmatched);
    o.sample("parse_lines_total", &[("result", "malformed")], s.malformed);
    o.family("rule_hits_total", "counter", "Events each rule produced.");
    for (rule, n) in &s.rule_hits {
        o.sample("rule_hits_total", &[("rule", rule)], n);
    }

    o.one("queue_depth", "gauge", "Batches waiting for the pipeline.", s.queued);
    o.one("queue_capacity", "gauge", "Batches the pipeline queue holds before sources wait or shed.", s.queue_capacity);
    o.one("store_events_written_total", "counter", "Events written to the store.", s.events_stored);
    if let Some(b) = s.store_bytes {
        o.one("store_size_bytes", "gauge", "Size of the SQLite store.", b);
    }
    o.one("tracked_sources", "gauge", "Source addresses the policy holds state for.", s.tracked_sources);

    o.family("bans_active", "gauge", "Bans in force, by origin and family.");
    for (origin, fam, n) in &s.bans_active {
        o.sample("bans_active", &[("origin", origin), ("family", fam)], n);
    }
    o.family("bans_total", "counter", "Bans made since the daemon started, by origin and family.");
    for ((origin, fam), n) in &s.bans_made {
        o.sample("bans_total", &[("origin", origin), ("family", fam)], n);
    }
    o.family("decisions_total", "counter", "Decisions carried out since the daemon started, by kind.");
    for (kind, n) in &s.decisions {
        o.sample("decisions_total", &[("kind", kind)], n);
    }
    o.one("bans_refused_total", "counter", "Bans not made: allowlisted, the host's own or too wide.", s.refused);
    o.one("apply_errors_total", "counter", "Decisions the store or the kernel could not take at once.", s.apply_errors);

    o.family("port_mode", "gauge", "Each protected port's mode: 1 for the mode it is in.");
    for p in &s.ports {
        let port = p.port.to_string();
        o.sample("port_mode", &[("port", &port), ("service", &p.service), ("mode", p.mode)], 1);
    }
    o.family("port_new_connections_per_second", "gauge", "New connections per second over the policy's window.");
    for p in &s.ports {
        let port = p.port.to_string();
        o.sample("port_new_connections_per_second", &[("port", &port), ("service", &p.service)], num(p.new_per_s));
    }
    o.family("port_distinct_sources", "gauge", "Distinct sources over the policy's window (an estimate).");
    for p in &s.ports {
        let port = p.port.to_string();
        o.sample("port_distinct_sources", &[("port", &port), ("service", &p.service)], p.distinct);
    }

    if let Some(drops) = &s.drops {
        type Count = fn(&DropFigures) -> u64;
        let families: [(&str, &str, Count); 2] = [
            ("kernel_dropped_packets_total", "Packets each of floodgate's drop rules dropped.", |d| d.packets),
            ("kernel_dropped_bytes_total", "Bytes each of floodgate's drop rules dropped.", |d| d.bytes),
        ];
        for (name, help, count) in families {
            o.family(name, "counter", help);
            for d in drops {
                let labels = drop_labels(d);
                let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                o.sample(name, &labels, count(d));
            }
        }
    }

    let h = "decision_latency_seconds";
    o.family(h, "histogram", "From a line's arrival to its decision being in the kernel.");
    for (b, c) in LATENCY_BOUNDS.iter().zip(s.latency.counts) {
        o.sample(&format!("{h}_bucket"), &[("le", &num(*b))], c);
    }
    o.sample(&format!("{h}_bucket"), &[("le", "+Inf")], s.latency.count);
    o.sample(&format!("{h}_sum"), &[], num(s.latency.sum));
    o.sample(&format!("{h}_count"), &[], s.latency.count);

    o.one("notifications_sent_total", "counter", "Notices (mail or hook) sent.", s.notices_sent);
    o.one("notifications_failed_total", "counter", "Notices that could not be sent.", s.notices_failed);
    o.one(
        "notifications_held",
        "gauge",
        "Notices the throttle holds back, to merge or for the hourly budget.",
        s.notices_held,
    );
    o.family("reloads_total", "counter", "Configuration reloads, by outcome.");
    o.sample("reloads_total", &[("outcome", "ok")], s.reloads_ok);
    o.sample("reloads_total", &[("outcome", "failed")], s.reloads_failed);
    o.0
}

fn drop_labels(d: &DropFigures) -> Vec<(&'static str, String)> {
    let mut l = vec![("rule", d.rule.to_string())];
    if let Some(f) = d.family {
        l.push(("family", f.to_string()));
    }
    if let Some(s) = &d.service {
        l.push(("service", s.clone()));
    }
    if let Some(p) = d.port {
        l.push(("port", p.to_string()));
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut latency = Histogram::default();
        latency.observe(Duration::from_micros(800));
        latency.observe(Duration::from_millis(30));
        Snapshot {
            version: "0.1.0".into(),
            commit: "abc1234".into(),
            sources: vec![SourceFigures {
                name: "/var/log/mail.log".into(),
                lines: 10,
                events: 4,
                lag_bytes: 0,
                lost: 0,
                shed: 1,
            }],
            lines_parsed: 10,
            unmatched: 5,
            malformed: 1,
            rule_hits: vec![("dovecot.auth_failed".into(), 4)],
            bans_active: vec![("jail", "ipv4", 2)],
            bans_made: vec![(("jail", "ipv4"), 3)],
            decisions: vec![("ban", 3)],
            ports: vec![PortFigures {
                port: 25,
                service: "smtp \"x\"".into(),
                mode: "normal",
                new_per_s: 0.5,
                distinct: 7,
            }],
            drops: Some(vec![DropFigures {
                rule: "ban",
                family: Some("ipv4"),
                service: None,
                port: None,
                packets: 9,
                bytes: 540,
            }]),
            latency,
            ..Snapshot::default()
        }
    }

    #[test]
    fn every_family_is_announced_once_before_its_samples_and_counters_end_in_total() {
        let text = render(&snapshot());
        let mut announced = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let (name, kind) = (it.next().unwrap(), it.next().unwrap());
                assert!(announced.insert(name.to_string()), "{name} announced twice");
                assert!(name.starts_with("floodgate_"));
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}: a counter's name ends in _total");
                }
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
                assert!(announced.contains(name) || announced.contains(family), "{line}: sample before its TYPE");
            }
        }
        assert!(text.contains("floodgate_parse_lines_total{result=\"matched\"} 4\n"));
        assert!(text.contains("floodgate_kernel_dropped_packets_total{rule=\"ban\",family=\"ipv4\"} 9\n"));
        assert!(text.contains("floodgate_decision_latency_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("floodgate_decision_latency_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("floodgate_decision_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("service=\"smtp \\\"x\\\"\""), "label values are escaped");
    }

    #[test]
    fn unreadable_kernel_counters_are_left_out_not_shown_as_zero() {
        let s = Snapshot { drops: None, ..snapshot() };
        assert!(!render(&s).contains("kernel_dropped"));
    }

    #[test]
    fn bans_are_counted_by_origin_and_family() {
        let mut t = Tally::default();
        let ban = |c: &str, origin: &str| Decision::Ban {
            cidr: c.parse().unwrap(),
            until: None,
            reason: "r".into(),
            origin: origin.into(),
            figures: None,
        };
        t.decided(&[
            ban("198.51.100.7", "jail:imap"),
            ban("2001:db8::7", "policy"),
            ban("203.0.113.0/24", "policy:prefix"),
            Decision::Unban { cidr: "198.51.100.7".parse().unwrap(), reason: "r".into(), origin: "manual".into() },
        ]);
        t.blocked(2, 0);
        assert_eq!(t.bans.get(&("jail", "ipv4")), Some(&1));
        assert_eq!(t.bans.get(&("dos", "ipv6")), Some(&1));
        assert_eq!(t.bans.get(&("prefix", "ipv4")), Some(&1));
        assert_eq!(t.bans.get(&("manual", "ipv4")), Some(&2));
        assert_eq!(t.decisions.get("ban"), Some(&5));
        assert_eq!(t.decisions.get("unban"), Some(&1));
    }
}
