//! `floodgate status`: what the daemon is doing, as it reports it over the control socket.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    /// Whether the SYN proxy can be used here, or why not.
    #[serde(default)]
    pub synproxy: String,
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
