//! `block` and `unblock`: bans made and lifted by hand.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

use super::{parse_for, parse_targets, refuse, Response};
use crate::addr::Cidr;
use crate::config::Config;
use crate::decision::{Decision, MANUAL};
use crate::enforce::Enforcer;
use crate::store::Store;

/// Bans addresses and prefixes for a duration (the jail's bantime by default) or forever.
pub(super) fn block(
    config: &Config,
    store: &mut Store,
    enforcer: &mut Enforcer,
    now: DateTime<Utc>,
    targets: &[String],
    duration: &Option<String>,
    reason: &str,
) -> Result<Response> {
    let duration = match duration {
        Some(t) => parse_for(t)?,
        None => Some(config.jail.bantime),
    };
    let targets = parse_targets(targets)?;
    let mut refused = Vec::new();
    for c in &targets {
        refused.extend(enforcer.refuse_ban(store, c)?);
    }
    refuse(refused)?;
    let until = match duration {
        Some(d) => Some(now + chrono::Duration::from_std(d).context("--for: too long")?),
        None => None,
    };
    let decisions: Vec<Decision> = targets
        .iter()
        .map(|&cidr| Decision::Ban { cidr, until, reason: reason.to_string(), origin: MANUAL.into(), figures: None })
        .collect();
    let report = enforcer.decide(store, &decisions, now)?;
    let how_long = duration.map_or("until unblocked".to_string(), |d| format!("for {}", humantime::format_duration(d)));
    let c = &report.changes;
    Ok(Response::ok(format!(
        "blocked {} target(s) {how_long} (kernel: {} added, {} refreshed, {} removed)",
        targets.len(),
        c.added,
        c.refreshed,
        c.removed
    )))
}

/// Lifts bans: the ones named (each must be banned itself), or all.
pub(super) fn unblock(
    store: &mut Store,
    enforcer: &mut Enforcer,
    now: DateTime<Utc>,
    targets: &[String],
    all: bool,
    reason: &str,
) -> Result<Response> {
    let state = store.enforced(now)?;
    let targets: Vec<Cidr> = if all {
        state.bans.iter().map(|b| b.cidr).collect()
    } else {
        let targets = parse_targets(targets)?;
        let mut bad = Vec::new();
        for t in &targets {
            if state.bans.iter().any(|b| b.cidr == *t) {
                continue;
            }
            match state.bans.iter().find(|b| b.cidr.covers(t)) {
                Some(outer) => bad.push(format!(
                    "{t} is not banned itself but is inside the ban on {}: unblock that, or `floodgate allow add {t}`",
                    outer.cidr
                )),
                None => bad.push(format!("{t} is not banned")),
            }
        }
        refuse(bad)?;
        targets
    };
    let decisions: Vec<Decision> = targets
        .iter()
        .map(|&cidr| Decision::Unban { cidr, reason: reason.to_string(), origin: MANUAL.into() })
        .collect();
    let report = enforcer.decide(store, &decisions, now)?;
    Ok(Response::ok(format!(
        "unblocked {} target(s) (kernel: {} removed, {} added)",
        targets.len(),
        report.changes.removed,
        report.changes.added
    )))
}
