//! `[enforce]`: floodgate's own table and the rates its limits apply, with its validation; and `Setup`, what
//! the enforcer is built from (this section with the services, the country ranges and the allowlist).

use serde::{Deserialize, Deserializer};

use crate::addr::Cidr;
use crate::geo::GeoConfig;
use crate::nft::ruleset::{GeoRule, Synproxy};
use crate::nft::{PortLimits, Rate, Ruleset};
use crate::service::{Services, SynproxyMode};
use crate::setting::Invalid;

/// How decisions reach the kernel: floodgate's own table and the rates its limits apply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnforceConfig {
    /// The table floodgate owns (family inet). It never touches any other.
    pub table: String,
    /// `block` refuses IPv4 prefixes wider than this (a /8 typo should not cut off a continent).
    pub widest_prefix_v4: u8,
    pub widest_prefix_v6: u8,
    /// Per-source (hashlimit-style) limit on new connections: `20/second`, with its burst in packets.
    #[serde(deserialize_with = "de_rate")]
    pub source_rate: Rate,
    pub source_burst: u32,
    /// Global (limit-style) limit on new connections from everyone but the allowlist.
    #[serde(deserialize_with = "de_rate")]
    pub global_rate: Rate,
    pub global_burst: u32,
}

impl Default for EnforceConfig {
    fn default() -> EnforceConfig {
        // A legitimate mail peer opens a handful of connections a second at most; 20/s with a burst of 40 per
        // source leaves room for a busy relay. The global figure is what the server can serve in a flood.
        EnforceConfig {
            table: "floodgate".into(),
            widest_prefix_v4: 16,
            widest_prefix_v6: 32,
            source_rate: Rate { count: 20, per: crate::nft::Per::Second },
            source_burst: 40,
            global_rate: Rate { count: 200, per: crate::nft::Per::Second },
            global_burst: 400,
        }
    }
}

impl EnforceConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        let name_ok = !self.table.is_empty()
            && self.table.len() <= 64
            && self.table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(Invalid::new(
                "enforce.table",
                format!("`{}` is not a table name (letters, digits, _ and -)", self.table),
            ));
        }
        if self.widest_prefix_v4 == 0 || self.widest_prefix_v4 > 32 {
            return Err(Invalid::new("enforce.widest_prefix_v4", "between 1 and 32"));
        }
        if self.widest_prefix_v6 == 0 || self.widest_prefix_v6 > 128 {
            return Err(Invalid::new("enforce.widest_prefix_v6", "between 1 and 128"));
        }
        for (key, b) in [("enforce.source_burst", self.source_burst), ("enforce.global_burst", self.global_burst)] {
            if b == 0 {
                return Err(Invalid::new(key, "a burst of 0 drops the first packet; at least 1"));
            }
        }
        Ok(())
    }

    /// The limits of every configured port: the service's own values, else this section's.
    pub fn port_limits(&self, services: &Services) -> Vec<PortLimits> {
        let mut out: Vec<PortLimits> = services
            .values()
            .flat_map(|s| {
                let per_source =
                    s.source_rate.unwrap_or(self.source_rate).with_burst(s.source_burst.unwrap_or(self.source_burst));
                let global =
                    s.global_rate.unwrap_or(self.global_rate).with_burst(s.global_burst.unwrap_or(self.global_burst));
                s.ports.iter().map(move |&port| PortLimits { port, per_source, global })
            })
            .collect();
        out.sort_by_key(|p| p.port);
        out
    }
}

/// What the enforcer is built from: the sections of the config it reads.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    pub enforce: &'a EnforceConfig,
    pub services: &'a Services,
    pub geo: &'a GeoConfig,
    /// Admin addresses: accepted before every limit, never banned.
    pub allowlist: &'a [Cidr],
    /// Whether the table carries the rule that makes the kernel track connections (conntrack is a source).
    pub track: bool,
    /// Whether the table carries the fleet's sets (`[fleet]` is configured).
    pub fleet: bool,
}

impl Setup<'_> {
    /// The table's shape.
    pub fn ruleset(&self) -> Ruleset {
        let geo = self
            .services
            .iter()
            .filter_map(|(name, s)| {
                let (deny, _) = s.country_rule()?;
                Some(GeoRule { service: name.clone(), ports: s.ports.clone(), deny })
            })
            .collect();
        let mut synproxy_ports: Vec<u16> = self
            .services
            .values()
            .filter(|s| s.synproxy != SynproxyMode::Never)
            .flat_map(|s| s.ports.iter().copied())
            .collect();
        synproxy_ports.sort_unstable();
        Ruleset {
            table: self.enforce.table.clone(),
            ports: self.enforce.port_limits(self.services),
            geo,
            owner: None,
            track: self.track,
            fleet: self.fleet,
            // The shape of a standard Ethernet host; the daemon measures the real one (enforce::synproxy).
            synproxy: Synproxy::standard(synproxy_ports),
        }
    }
}

fn de_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}
