//! `[fleet]`: which NATS servers carry the fleet's bucket, who this host is in it, and what it accepts from
//! the others; with its validation. Without the section nothing of the fleet runs.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::setting::{de_duration, Invalid};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// NATS servers, any number (`nats://host:4222`, or `tls://` for TLS); the client fails over between them.
    pub servers: Vec<String>,
    /// This host's name in the fleet: its bans are published under it, and other hosts show it. Default: the
    /// hostname.
    pub host: String,
    /// A NATS credentials file (`.creds`: JWT and nkey seed), as `nsc` writes it.
    pub credentials: Option<PathBuf>,
    /// Or a user and password.
    pub user: Option<String>,
    pub password: Option<String>,
    /// The key-value bucket the fleet shares (created with `max_age` if missing).
    pub bucket: String,
    /// Whether port limits are shared too, for fleets behind one address (anycast, a load balancer). Not built
    /// yet: only `false` is accepted, so that nobody believes limits are shared when they are not.
    pub share_limits: bool,
    /// The longest another host's ban is applied here; a longer one (`forever` included) is cut to it.
    #[serde(deserialize_with = "de_duration")]
    pub max_remote_bantime: Duration,
    /// Verdicts one origin host may push per minute before the rest are refused (a compromised host must not be
    /// able to cut this one off from the world).
    pub max_per_minute: u32,
}

impl Default for FleetConfig {
    fn default() -> FleetConfig {
        FleetConfig {
            servers: Vec::new(),
            host: crate::notice::hostname(),
            credentials: None,
            user: None,
            password: None,
            bucket: "floodgate".into(),
            share_limits: false,
            max_remote_bantime: Duration::from_secs(7 * 86400),
            // A large botnet's brute force makes a few hundred bans a minute on one host; a compromised host
            // pushing a /0's worth is stopped well before it matters.
            max_per_minute: 2000,
        }
    }
}

/// A fleet name: what NATS keys may carry (`[-/_=.a-zA-Z0-9]`), without the separators, at most 64 bytes.
pub fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl FleetConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.servers.is_empty() {
            return Err(Invalid::new("fleet.servers", "at least one server, e.g. [\"nats://198.51.100.100:4222\"]"));
        }
        for (i, s) in self.servers.iter().enumerate() {
            let scheme_ok = ["nats://", "tls://"].iter().any(|p| s.starts_with(p) && s.len() > p.len());
            if !scheme_ok {
                return Err(Invalid::new(
                    format!("fleet.servers[{i}]"),
                    format!("`{s}` is not a server address; write nats://HOST:4222 or tls://HOST:4222"),
                ));
            }
        }
        if !name_ok(&self.host) {
            return Err(Invalid::new(
                "fleet.host",
                format!("`{}` is not a fleet host name: 1-64 letters, digits, _ or -", self.host.escape_debug()),
            ));
        }
        if !name_ok(&self.bucket) {
            return Err(Invalid::new("fleet.bucket", "1-64 letters, digits, _ or -"));
        }
        if self.credentials.is_some() && self.user.is_some() {
            return Err(Invalid::new("fleet.user", "either credentials or user and password, not both"));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(Invalid::new("fleet.password", "a user needs a password, and a password a user"));
        }
        if self.max_remote_bantime < Duration::from_secs(60) {
            return Err(Invalid::new("fleet.max_remote_bantime", "at least 1m"));
        }
        if self.share_limits {
            return Err(Invalid::new(
                "fleet.share_limits",
                "sharing port limits is not built yet; leave it false (limits stay local)",
            ));
        }
        if self.max_per_minute == 0 {
            return Err(Invalid::new("fleet.max_per_minute", "at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(text: &str) -> Result<FleetConfig, String> {
        let c: FleetConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map(|()| c).map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_validates_each_key_by_name() {
        let ok = fleet("servers = [\"nats://198.51.100.100:4222\", \"tls://nats.example.net:4222\"]\nhost = \"mx1\"\n")
            .unwrap();
        assert_eq!((ok.bucket.as_str(), ok.max_remote_bantime), ("floodgate", Duration::from_secs(7 * 86400)));
        let cases = [
            ("host = \"mx1\"\n", "fleet.servers:"),
            ("servers = [\"198.51.100.100\"]\n", "fleet.servers[0]:"),
            ("servers = [\"nats://a:4222\"]\nhost = \"mx 1\"\n", "fleet.host:"),
            ("servers = [\"nats://a:4222\"]\nhost = \"a.b\"\n", "fleet.host:"),
            ("servers = [\"nats://a:4222\"]\nhost = \"m\"\nbucket = \"x>\"\n", "fleet.bucket:"),
            ("servers = [\"nats://a:4222\"]\nhost = \"m\"\nuser = \"u\"\n", "fleet.password:"),
            (
                "servers = [\"nats://a:4222\"]\nhost = \"m\"\ncredentials = \"/c\"\nuser = \"u\"\npassword = \"p\"\n",
                "fleet.user:",
            ),
            ("servers = [\"nats://a:4222\"]\nhost = \"m\"\nshare_limits = true\n", "fleet.share_limits:"),
            (
                "servers = [\"nats://a:4222\"]\nhost = \"m\"\nmax_remote_bantime = \"10s\"\n",
                "fleet.max_remote_bantime:",
            ),
            ("servers = [\"nats://a:4222\"]\nhost = \"m\"\nmax_per_minute = 0\n", "fleet.max_per_minute:"),
        ];
        for (text, key) in cases {
            let e = fleet(text).unwrap_err();
            assert!(e.starts_with(key), "{text:?}: {e}");
        }
        assert!(fleet("servers = []\nbogus = 1\n").unwrap_err().contains("unknown field `bogus`"));
    }
}
