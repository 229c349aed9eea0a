//! `list` and `reconcile`: floodgate's table as the kernel has it, and repaired to match the store.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::Response;
use crate::enforce::Enforcer;
use crate::store::Store;

/// What the kernel enforces, joined with the store's reasons, with a warning for damaged chains.
pub(super) fn list(store: &Store, enforcer: &mut Enforcer, now: DateTime<Utc>) -> Result<Response> {
    let listed = enforcer.list(store, now)?;
    let mut notes: Vec<String> = enforcer
        .damaged_chains()?
        .into_iter()
        .map(|d| {
            format!(
                "warning: table inet {}: {d}; nothing is enforced as listed until `floodgate reconcile`",
                enforcer.table()
            )
        })
        .collect();
    let bans = listed.iter().filter(|l| l.action == "ban").count();
    notes.push(format!("{bans} ban(s), {} limit(s) in table inet {}", listed.len() - bans, enforcer.table()));
    Ok(Response::data(notes.join("\n"), serde_json::to_value(&listed)?))
}

/// Installs or repairs the table and makes its sets match the store.
pub(super) fn reconcile(store: &mut Store, enforcer: &mut Enforcer, now: DateTime<Utc>) -> Result<Response> {
    let r = enforcer.reconcile(store, now)?;
    let c = &r.changes;
    let mut lines: Vec<String> = c.strays.iter().map(|s| format!("stray (not in the store), removed: {s}")).collect();
    lines.extend(c.kept.iter().map(|(k, _)| format!("ban not in the store, kept and adopted into it: {k}")));
    lines.push(format!(
        "table inet {} installed; {} element(s) restored, {} refreshed, {} removed",
        enforcer.table(),
        c.added,
        c.refreshed,
        c.removed
    ));
    lines.extend(r.geo.iter().map(|g| g.to_string()));
    Ok(Response::data(lines.join("\n"), serde_json::to_value(&r.geo)?))
}
