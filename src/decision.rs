//! Decisions: what the policy (or the operator) wants enforced, as one value per change: a ban, an unban, a
//! port's limit or SYN proxy switched on or lifted, an allowlist change. The policy produces them, the enforcer
//! applies them to the kernel and the store records them, together or not at all; this module depends on
//! neither, so the pure policy does not import the store.

use chrono::{DateTime, Utc};

use crate::addr::Cidr;

/// The origin of a decision the operator made by hand (the CLI, the control socket).
pub const MANUAL: &str = "manual";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitMode {
    /// Per source (hashlimit-style): each address (IPv6: each /64) gets its own rate.
    Source,
    /// Global (limit-style): one rate for everyone but the allowlist.
    Global,
    /// The kernel's SYN proxy: SYNs answered with cookies, the listener sees completed handshakes only.
    Synproxy,
}

impl LimitMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitMode::Source => "source",
            LimitMode::Global => "global",
            LimitMode::Synproxy => "synproxy",
        }
    }

    pub fn parse(s: &str) -> Option<LimitMode> {
        match s {
            "source" => Some(LimitMode::Source),
            "global" => Some(LimitMode::Global),
            "synproxy" => Some(LimitMode::Synproxy),
            _ => None,
        }
    }
}

/// One change of what is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bans (or re-bans, replacing the earlier end and reason) an address or prefix. `figures`: what led to it
    /// (JSON: counts, distinct sources, concentration, evidence), kept with the decision.
    Ban {
        cidr: Cidr,
        until: Option<DateTime<Utc>>,
        reason: String,
        origin: String,
        figures: Option<String>,
    },
    Unban {
        cidr: Cidr,
        reason: String,
        origin: String,
    },
    /// Switches a port's limit on, or extends it.
    Limit {
        port: u16,
        mode: LimitMode,
        until: DateTime<Utc>,
        reason: String,
        origin: String,
        figures: Option<String>,
    },
    Lift {
        port: u16,
        mode: LimitMode,
        reason: String,
        origin: String,
    },
    Allow {
        cidr: Cidr,
        comment: Option<String>,
        origin: String,
    },
    Disallow {
        cidr: Cidr,
        origin: String,
    },
    /// Applies another fleet host's ban (after this host's own checks) in the fleet's sets, or replaces the one
    /// applied for the target before. `host` is whose verdict it is.
    Remote {
        cidr: Cidr,
        until: Option<DateTime<Utc>>,
        host: String,
        reason: String,
    },
    /// No fleet host bans the target any more (lifted, unblocked everywhere, or refused on a second look).
    RemoteLift {
        cidr: Cidr,
        reason: String,
    },
}
