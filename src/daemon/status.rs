//! `floodgate status`: what the daemon is doing, as it reports it over the control socket.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;

use crate::decision::LimitMode;
use crate::service::Services;
use crate::source::SourceStats;
use crate::store::LimitOn;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceStatus {
    pub name: String,
    pub lines: u64,
    pub events: u64,
    pub lines_per_s: f64,
    pub events_per_s: f64,
    /// Bytes written to the input and not read yet.
    pub lag_bytes: u64,
    pub lost: u64,
    pub shed: u64,
    /// The input is missing or failing (a log file not created yet).
    pub waiting: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortStatus {
    pub port: u16,
    pub service: String,
    /// normal, per-source limit, or global limit.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// New connections per second over the policy's window, and distinct sources (an estimate).
    #[serde(default)]
    pub new_per_s: f64,
    #[serde(default)]
    pub distinct: u64,
}

/// One of the latest decisions carried out, for `floodgate top`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentDecision {
    pub at: DateTime<Utc>,
    /// ban, unban, limit_global, ... (a batch: "ban x4096").
    pub what: String,
    pub target: String,
    pub origin: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub started: DateTime<Utc>,
    pub uptime_s: u64,
    pub sources: Vec<SourceStatus>,
    /// Batches waiting in the pipeline's queue, and its capacity.
    pub queued: usize,
    pub queue_capacity: usize,
    pub lines_parsed: u64,
    pub events_stored: u64,
    pub unmatched: u64,
    pub malformed: u64,
    pub bans_active: usize,
    pub bans_made: u64,
    /// Decisions the policy made against allowlisted addresses, refused.
    pub refused_allowlisted: u64,
    /// Kernel or store errors while applying decisions (retried at the next tick).
    pub apply_errors: u64,
    /// Decisions enforced in the kernel that the store could not record yet (it cannot write).
    #[serde(default)]
    pub unrecorded: usize,
    /// Failing sources the policy forgot to make room (its table was full, or one /24 or /64 held its share).
    #[serde(default)]
    pub evicted: u64,
    pub tracked_sources: usize,
    pub ports: Vec<PortStatus>,
    /// Things that are wrong and need the admin (a configured source that delivers nothing).
    #[serde(default)]
    pub problems: Vec<String>,
    /// This host in the fleet, with `[fleet]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::fleet::member::FleetStatus>,
    /// Whether the SYN proxy can be used here, or why not.
    #[serde(default)]
    pub synproxy: String,
    /// The latest decisions carried out, newest last.
    #[serde(default)]
    pub recent: Vec<RecentDecision>,
}

impl SourceStatus {
    /// A source's line as `status` shows it: lines and events so far, its other counters now, and its rates
    /// (lines/s, events/s) at the last tick.
    pub fn of(
        name: &str,
        stats: &SourceStats,
        (lines, events): (u64, u64),
        (lines_per_s, events_per_s): (f64, f64),
    ) -> SourceStatus {
        SourceStatus {
            name: name.to_string(),
            lines,
            events,
            lines_per_s,
            events_per_s,
            lag_bytes: stats.lag_bytes.load(Ordering::Relaxed),
            lost: stats.lost.load(Ordering::Relaxed),
            shed: stats.shed.load(Ordering::Relaxed),
            waiting: stats.waiting.load(Ordering::Relaxed),
        }
    }
}

impl PortStatus {
    /// Every service's ports, each with the strongest limit in force on it, by port.
    pub fn of_services(services: &Services, limits: &[LimitOn]) -> Vec<PortStatus> {
        let mut ports = Vec::new();
        for (service, s) in services {
            for &port in &s.ports {
                let on = |m: LimitMode| limits.iter().find(|l| l.port == port && l.mode == m);
                let (mode, until) = match (on(LimitMode::Global), on(LimitMode::Synproxy), on(LimitMode::Source)) {
                    (Some(g), _, _) => ("global limit", Some(g.until)),
                    (None, Some(p), _) => ("SYN proxy", Some(p.until)),
                    (None, None, Some(s)) => ("per-source limit", Some(s.until)),
                    _ => ("normal", None),
                };
                ports.push(PortStatus {
                    port,
                    service: service.clone(),
                    mode: mode.into(),
                    until,
                    new_per_s: 0.0,
                    distinct: 0,
                });
            }
        }
        ports.sort_by_key(|p| p.port);
        ports
    }
}

impl Status {
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let up = humantime::format_duration(std::time::Duration::from_secs(self.uptime_s));
        let _ = writeln!(
            s,
            "floodgate running, pid {}, up {up} (since {})",
            self.pid,
            self.started.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let _ = writeln!(
            s,
            "pipeline: {} lines parsed, {} events stored, {} unmatched, {} malformed; queue {}/{}",
            self.lines_parsed, self.events_stored, self.unmatched, self.malformed, self.queued, self.queue_capacity
        );
        let _ = writeln!(
            s,
            "bans: {} active, {} made since start; {} refused (allowlisted); {} apply errors; {} sources tracked",
            self.bans_active, self.bans_made, self.refused_allowlisted, self.apply_errors, self.tracked_sources
        );
        for p in &self.problems {
            let _ = writeln!(s, "PROBLEM: {p}");
        }
        if !self.synproxy.is_empty() {
            let _ = writeln!(s, "SYN proxy: {}", self.synproxy);
        }
        if let Some(f) = &self.fleet {
            let link = match (f.connected, &f.last_error) {
                (true, _) => "connected".to_string(),
                (false, Some(e)) => format!("NOT CONNECTED ({e}); local protection goes on"),
                (false, None) => "connecting".to_string(),
            };
            let _ = writeln!(
                s,
                "fleet: host {} {link}; published {}, withdrawn {}; received {}, applied {}, held {}; refused {} \
                 (entries) {} (limits) {} (this host's gate), {} from a newer floodgate; {} host(s) heard \
                 (`floodgate fleet status`)",
                f.host,
                f.published,
                f.withdrawn,
                f.received,
                f.applied,
                f.held,
                f.refused_entries,
                f.refused_limits,
                f.refused_gate,
                f.newer,
                f.peers.len()
            );
        }
        if self.unrecorded > 0 {
            let _ = writeln!(
                s,
                "STORE CANNOT WRITE: {} decision(s) enforced in the kernel only, recorded when it can (disk full?)",
                self.unrecorded
            );
        }
        if self.evicted > 0 {
            let _ = writeln!(s, "{} failing source(s) evicted from a full failure table", self.evicted);
        }
        let _ = writeln!(
            s,
            "\n{:<28} {:>10} {:>9} {:>10} {:>9} {:>10} {:>8} {:>8}",
            "SOURCE", "LINES", "LINES/S", "EVENTS", "EVENTS/S", "LAG", "LOST", "SHED"
        );
        for src in &self.sources {
            let name = if src.waiting { format!("{} (waiting)", src.name) } else { src.name.clone() };
            let _ = writeln!(
                s,
                "{name:<28} {:>10} {:>9.1} {:>10} {:>9.1} {:>10} {:>8} {:>8}",
                src.lines, src.lines_per_s, src.events, src.events_per_s, src.lag_bytes, src.lost, src.shed
            );
        }
        let _ = writeln!(s, "\n{:<8} {:<12} MODE", "PORT", "SERVICE");
        for p in &self.ports {
            let until = p.until.map(|u| format!(" until {}", u.format("%H:%M:%S UTC"))).unwrap_or_default();
            let _ = writeln!(s, "{:<8} {:<12} {}{until}", p.port, p.service, p.mode);
        }
        s
    }
}
