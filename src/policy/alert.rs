//! What the policy tells the admin: an attack detected (a DoS from real sources, a DDoS that cannot be narrowed
//! down) or over. The daemon hands alerts to the notifier, which throttles and sends them.

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Sources proven real, few: banned or limited per source.
    DosDetected,
    /// Sources that cannot be narrowed down (too many, too slow each, or spoofed): a port-wide response.
    DdosDetected,
    /// The attack is over and the port's response was lifted.
    Converged,
}

impl AlertKind {
    /// The name in traces and logs: dos_detected, ddos_detected, converged.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::DosDetected => "dos_detected",
            AlertKind::DdosDetected => "ddos_detected",
            AlertKind::Converged => "converged",
        }
    }
}

/// Something the admin should hear about (the daemon turns it into mail or a hook call, rate-limited).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub port: Option<u16>,
    /// What the alert is about, for merging notices: "port 25", a network, an address.
    pub key: String,
    pub time: DateTime<Utc>,
    /// One line: what happened, with the figures that decided.
    pub summary: String,
    /// What was done, and what that does and does not stop.
    pub detail: String,
    pub figures: serde_json::Value,
}
