//! `[metrics]`: where the daemon serves its Prometheus metrics. Off unless `listen` is set.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::setting::Invalid;

/// The port the README and the example config suggest. Prometheus' default port allocations list has had its
/// whole exporter range (9100-9999) taken since 2023, so no number there is free to claim; 9947 is one that
/// no exporter floodgate is likely to share a mail server with uses.
pub const SUGGESTED_PORT: u16 = 9947;

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `"127.0.0.1:9947"`: an address and port to serve `GET /metrics` on. Loopback is the safe choice; any
    /// other address shows the attack figures to whoever can reach it.
    pub listen: Option<SocketAddr>,
}

impl MetricsConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        match self.listen {
            Some(a) if a.port() == 0 => Err(Invalid::new("metrics.listen", format!("`{a}` needs a port"))),
            _ => Ok(()),
        }
    }
}
