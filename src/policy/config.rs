//! The policy's sections of the config: `[policy]` (the engine's thresholds) and `[jail]` (fail2ban's
//! per-source rule), each with its defaults and its own validation.

use std::time::Duration;

use serde::Deserialize;

use crate::parse::rules::Level;
use crate::setting::{de_duration, Invalid};

/// The policy engine's thresholds: when sources are few and real, per-source responses; when they cannot be
/// narrowed down, the global limit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The sliding window per-port figures are measured over.
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
    /// Distinct sources on one port within the window above which they cannot be narrowed down.
    pub ddos_distinct: u64,
    /// New connections per second on one port above which the port is under attack.
    pub port_rate: f64,
    /// Share of a port's traffic from its top 10 sources above which an attack is concentrated.
    pub concentrated_share: f64,
    /// New connections per second from one proven-real source (all ports) that make it a DoS source.
    pub dos_source_rate: f64,
    /// How long a port must stay calm (below half the thresholds) before its limit is lifted.
    #[serde(deserialize_with = "de_duration")]
    pub converge_after: Duration,
    /// A limit's timeout, refreshed while the attack lasts.
    #[serde(deserialize_with = "de_duration")]
    pub limit_for: Duration,
    /// Ports never put under the global limit (SMTP must keep receiving mail from the world).
    pub global_exempt: Vec<u16>,
    /// A repeat offender's ban is multiplied by this per offence, up to `max_bantime`.
    pub repeat_multiplier: u32,
    #[serde(deserialize_with = "de_duration")]
    pub max_bantime: Duration,
    /// Banned addresses within one prefix (`prefix_v4` / `prefix_v6`) after which the whole prefix is banned
    /// (0: never).
    pub prefix_after: u32,
    /// The short horizon rates are also measured over (whole seconds): a flood's start shows in its real rate
    /// within this, where the window's average would still be diluted by the calm before it.
    #[serde(deserialize_with = "de_duration")]
    pub rate_horizon: Duration,
    /// New connections per second from one network (all its hosts, all ports) that make it a DoS: several
    /// hosts of one ISP, each under `dos_source_rate`. Its proven-real hosts are banned (0: off).
    pub prefix_rate: f64,
    /// What a network is for `prefix_rate` and `prefix_after`: IPv4 and IPv6 prefix lengths.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// What a network over `prefix_rate` gets: `hosts` (its proven-real hosts are banned; with `prefix_after` of
    /// them the prefix follows) or `prefix` (the prefix at once, once one of its hosts is proven real).
    pub prefix_ban: PrefixBan,
}

/// See `PolicyConfig::prefix_ban`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixBan {
    Hosts,
    Prefix,
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            window: Duration::from_secs(60),
            // A small mail server's spoofed DDoS: ~600 addresses at detection, 1,500-2,000 at peak.
            ddos_distinct: 300,
            port_rate: 50.0,
            concentrated_share: 0.5,
            // A DoS from real hosts: a handful of them at ~20 connections a second between them.
            dos_source_rate: 10.0,
            converge_after: Duration::from_secs(300),
            limit_for: Duration::from_secs(120),
            global_exempt: vec![25],
            repeat_multiplier: 4,
            max_bantime: Duration::from_secs(7 * 86400),
            prefix_after: 5,
            rate_horizon: Duration::from_secs(3),
            // Several hosts of one ISP at ~20 new connections a second together, each under dos_source_rate.
            prefix_rate: 15.0,
            prefix_v4: 24,
            prefix_v6: 64,
            prefix_ban: PrefixBan::Hosts,
        }
    }
}

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |key: &str, reason: &str| Err(Invalid::new(format!("policy.{key}"), reason));
        if self.window < Duration::from_secs(10) {
            return bad("window", "at least 10s");
        }
        if self.ddos_distinct == 0 {
            return bad("ddos_distinct", "at least 1");
        }
        for (key, rate) in [("port_rate", self.port_rate), ("dos_source_rate", self.dos_source_rate)] {
            if !(rate > 0.0 && rate.is_finite()) {
                return bad(key, "a rate above zero");
            }
        }
        if !(0.0..=1.0).contains(&self.concentrated_share) {
            return bad("concentrated_share", "a share between 0 and 1");
        }
        let h = self.rate_horizon;
        if h < Duration::from_secs(1) || h > self.window || h.subsec_nanos() != 0 {
            return bad("rate_horizon", "whole seconds, at least 1s and at most the window");
        }
        if !(self.prefix_rate >= 0.0 && self.prefix_rate.is_finite()) {
            return bad("prefix_rate", "a rate of zero (off) or more");
        }
        if !(8..=32).contains(&self.prefix_v4) {
            return bad("prefix_v4", "between 8 and 32");
        }
        if !(16..=128).contains(&self.prefix_v6) {
            return bad("prefix_v6", "between 16 and 128");
        }
        if self.limit_for < Duration::from_secs(10) {
            return bad("limit_for", "at least 10s (it is refreshed at half its life)");
        }
        Ok(())
    }
}

/// `[jail]`: fail2ban's per-source rule, applied to every service that does not set its own values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JailConfig {
    /// Failures from one source within `findtime` that earn a ban.
    pub maxretry: u32,
    #[serde(deserialize_with = "de_duration")]
    pub findtime: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub bantime: Duration,
    /// Which rules count as failures: `normal` (what fail2ban's normal mode counts) or `aggressive` (also the
    /// judgement calls: scanners that never try to log in, 4xx spam-bot signatures).
    pub level: Level,
}

impl Default for JailConfig {
    fn default() -> JailConfig {
        JailConfig {
            maxretry: 5,
            findtime: Duration::from_secs(600),
            bantime: Duration::from_secs(3600),
            level: Level::Normal,
        }
    }
}

impl JailConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.maxretry == 0 {
            return Err(Invalid::new("jail.maxretry", "must be at least 1"));
        }
        for (key, d) in [("jail.findtime", self.findtime), ("jail.bantime", self.bantime)] {
            if d.is_zero() {
                return Err(Invalid::new(key, "must be longer than zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_names_the_one_key_that_failed() {
        let key = |p: PolicyConfig| p.validate().unwrap_err().key;
        assert_eq!(key(PolicyConfig { port_rate: 0.0, ..Default::default() }), "policy.port_rate");
        assert_eq!(key(PolicyConfig { prefix_v6: 8, ..Default::default() }), "policy.prefix_v6");
        assert_eq!(
            key(PolicyConfig { rate_horizon: Duration::from_millis(1500), ..Default::default() }),
            "policy.rate_horizon"
        );
        assert!(PolicyConfig::default().validate().is_ok());
        let jail = JailConfig { bantime: Duration::ZERO, ..Default::default() };
        assert_eq!(jail.validate().unwrap_err().key, "jail.bantime");
    }
}
