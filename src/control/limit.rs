//! `limit`: a port's limits or SYN proxy switched on by hand for a while, or lifted.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};

use super::{LimitSwitch, Response};
use crate::config::parse_duration;
use crate::decision::{Decision, LimitMode, MANUAL};
use crate::enforce::Enforcer;
use crate::store::Store;

impl LimitSwitch {
    /// The modes it switches on (or, for `Off`, lifts).
    fn modes(self) -> &'static [LimitMode] {
        match self {
            LimitSwitch::Source => &[LimitMode::Source],
            LimitSwitch::Global => &[LimitMode::Global],
            LimitSwitch::Synproxy => &[LimitMode::Synproxy],
            LimitSwitch::Off => &[LimitMode::Source, LimitMode::Global, LimitMode::Synproxy],
        }
    }
}
/// Switches ports' limits (or the SYN proxy) on for a while, or lifts them.
pub(super) fn limit(
    store: &mut Store,
    enforcer: &mut Enforcer,
    now: DateTime<Utc>,
    mode: LimitSwitch,
    ports: &[u16],
    duration: &str,
    reason: &str,
) -> Result<Response> {
    let d = parse_duration(duration).map_err(|e| anyhow::anyhow!("--for: {e}"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(7 * 86400) {
        bail!("--for: a limit lasts between 1s and 7d (refresh it to keep it longer)");
    }
    if ports.is_empty() {
        bail!("give at least one port");
    }
    for p in ports {
        if !enforcer.limit_ports().contains(p) {
            bail!(
                "port {p} has no limit rules: limits exist for the configured services' ports {:?}",
                enforcer.limit_ports()
            );
        }
    }
    if mode == LimitSwitch::Synproxy {
        if let Err(why) = enforcer.synproxy_ready() {
            bail!("the SYN proxy cannot be used here: {why}");
        }
        if let Some(p) = ports.iter().find(|p| !enforcer.synproxy_ports().contains(p)) {
            bail!("port {p} may not use the SYN proxy (its service has synproxy = \"never\")");
        }
    }
    let modes = mode.modes();
    let until = now + chrono::Duration::from_std(d).context("--for")?;
    let decisions: Vec<Decision> = ports
        .iter()
        .flat_map(|&port| {
            modes.iter().map(move |&m| match mode {
                LimitSwitch::Off => Decision::Lift { port, mode: m, reason: reason.to_string(), origin: MANUAL.into() },
                _ => Decision::Limit {
                    port,
                    mode: m,
                    until,
                    reason: reason.to_string(),
                    origin: MANUAL.into(),
                    figures: None,
                },
            })
        })
        .collect();
    enforcer.decide(store, &decisions, now)?;
    Ok(Response::ok(match mode {
        LimitSwitch::Off => format!("limits lifted on port(s) {ports:?}"),
        _ => format!("{} limit on port(s) {ports:?} for {}", modes[0].as_str(), humantime::format_duration(d)),
    }))
}
