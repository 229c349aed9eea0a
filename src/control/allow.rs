//! `allow add`, `allow del`, `allow list`: the admin allowlist, never banned and exempt from every limit.

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};

use super::{parse_targets, Response};
use crate::addr::Cidr;
use crate::config::Config;
use crate::decision::{Decision, MANUAL};
use crate::enforce::Enforcer;
use crate::store::Store;

/// Adds addresses or prefixes to the allowlist, noting the bans they overlap.
pub(super) fn add(
    store: &mut Store,
    enforcer: &mut Enforcer,
    now: DateTime<Utc>,
    targets: &[String],
    comment: &Option<String>,
) -> Result<Response> {
    let targets = allow_targets(targets)?;
    let state = store.enforced(now)?;
    let decisions: Vec<Decision> =
        targets.iter().map(|&cidr| Decision::Allow { cidr, comment: comment.clone(), origin: MANUAL.into() }).collect();
    enforcer.decide(store, &decisions, now)?;
    let mut lines = Vec::new();
    for t in &targets {
        for b in state.bans.iter().filter(|b| b.cidr.contains(t.addr()) || t.contains(b.cidr.addr())) {
            lines.push(format!(
                "note: {t} overlaps the ban on {} ({}); the allowlist takes precedence",
                b.cidr, b.reason
            ));
        }
    }
    lines.push(format!("allowed {} target(s)", targets.len()));
    Ok(Response::ok(lines.join("\n")))
}

/// Removes addresses or prefixes from the allowlist.
pub(super) fn del(
    config: &Config,
    store: &mut Store,
    enforcer: &mut Enforcer,
    now: DateTime<Utc>,
    targets: &[String],
) -> Result<Response> {
    let targets = allow_targets(targets)?;
    let stored = store.allowlist()?;
    for t in &targets {
        if config.allowlist.contains(t) {
            bail!("{t} is on the config's allowlist: remove it there; nothing was applied");
        }
        if !stored.iter().any(|a| a.cidr == *t) {
            bail!("{t} is not on the allowlist; nothing was applied");
        }
    }
    let decisions: Vec<Decision> =
        targets.iter().map(|&cidr| Decision::Disallow { cidr, origin: MANUAL.into() }).collect();
    enforcer.decide(store, &decisions, now)?;
    Ok(Response::ok(format!("removed {} target(s) from the allowlist", targets.len())))
}

/// The allowlist: the config's and the stored entries.
pub(super) fn list(config: &Config, store: &Store) -> Result<Response> {
    let stored = store.allowlist()?;
    let rows: Vec<serde_json::Value> = config
        .allowlist
        .iter()
        .map(|c| serde_json::json!({"cidr": c.to_string(), "source": "config", "comment": ""}))
        .chain(stored.iter().map(|a| {
            serde_json::json!({
                "cidr": a.cidr.to_string(),
                "source": format!("added {}", a.added.format("%Y-%m-%d %H:%M")),
                "comment": a.comment.clone().unwrap_or_default(),
            })
        }))
        .collect();
    Ok(Response::data("", serde_json::Value::Array(rows)))
}

fn allow_targets(targets: &[String]) -> Result<Vec<Cidr>> {
    let targets = parse_targets(targets)?;
    if let Some(c) = targets.iter().find(|c| c.prefix_len() == 0) {
        bail!("{c} would exempt every address; nothing was applied");
    }
    Ok(targets)
}
