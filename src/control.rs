//! The operator's requests (block, unblock, list, allow, limit, reconcile) and how they are carried out. The
//! CLI sends a `Request` to the daemon's control socket when the daemon runs, and carries it out itself with
//! the same `handle` when it does not, so both paths behave alike. One JSON object per line each way.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::addr::Cidr;
use crate::config::{parse_duration, Config};
use crate::decision::{Decision, LimitMode, MANUAL};
use crate::enforce::Enforcer;
use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Block {
        targets: Vec<String>,
        /// A duration, `forever`, or none for the config's jail.bantime.
        #[serde(default, rename = "for")]
        duration: Option<String>,
        reason: String,
    },
    Unblock {
        targets: Vec<String>,
        #[serde(default)]
        all: bool,
        reason: String,
    },
    List,
    AllowAdd {
        targets: Vec<String>,
        #[serde(default)]
        comment: Option<String>,
    },
    AllowDel {
        targets: Vec<String>,
    },
    AllowList,
    Limit {
        mode: LimitSwitch,
        ports: Vec<u16>,
        #[serde(rename = "for")]
        duration: String,
        reason: String,
    },
    Reconcile,
    /// Answered by the daemon only.
    Status,
    /// Answered by the daemon only: reload config and rules.
    Reload,
}

/// What `limit` does to a port: one of the limits, the SYN proxy, or off (all of them lifted). On the wire as
/// `"source"`, `"global"`, `"synproxy"`, `"off"`; the CLI takes the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LimitSwitch {
    /// Per source (hashlimit-style).
    Source,
    /// Everyone but the allowlist together (limit-style).
    Global,
    /// The kernel's SYN proxy (needs nf_conntrack_tcp_loose = 0; `floodgate status` says whether it can).
    Synproxy,
    /// Lifts the limits (and the SYN proxy) on the ports.
    Off,
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// A line for the operator (stderr).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The result (list rows, status), for stdout.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    /// The store the daemon acted on (set by the daemon), so a client named another `--db` learns it was not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
}

impl Request {
    /// Whether carrying it out writes floodgate's table (and so needs to own it); reading does not.
    pub fn writes_kernel(&self) -> bool {
        !matches!(self, Request::List | Request::AllowList | Request::Status | Request::Reload)
    }
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Response {
        Response { ok: true, message: message.into(), error: String::new(), data: serde_json::Value::Null, db: None }
    }

    pub fn data(message: impl Into<String>, data: serde_json::Value) -> Response {
        Response { data, ..Response::ok(message) }
    }

    pub fn error(e: &anyhow::Error) -> Response {
        Response { ok: false, message: String::new(), error: format!("{e:#}"), data: serde_json::Value::Null, db: None }
    }
}

/// The answer to a request only the daemon can answer, when it does not run.
pub const NOT_RUNNING: &str = "floodgate is not running (start it with `floodgate run`)";

/// What a request is carried out with.
pub struct Context<'a> {
    pub config: &'a Config,
    pub store: &'a mut Store,
    pub enforcer: &'a mut Enforcer,
    pub now: DateTime<Utc>,
}

/// Parses targets; every bad one is named, none applied.
pub fn parse_targets(targets: &[String]) -> Result<Vec<Cidr>> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for t in targets {
        match t.parse::<Cidr>() {
            Ok(c) => out.push(c),
            Err(e) => bad.push(e.to_string()),
        }
    }
    refuse(bad)?;
    out.sort();
    out.dedup();
    if out.is_empty() {
        bail!("nothing to do: give addresses or prefixes");
    }
    Ok(out)
}

/// Fails with every reason listed (the first 20), when there are any.
pub fn refuse(bad: Vec<String>) -> Result<()> {
    if bad.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{} bad target(s), nothing was applied:", bad.len());
    for b in bad.iter().take(20) {
        msg.push_str("\n  ");
        msg.push_str(b);
    }
    if bad.len() > 20 {
        msg.push_str(&format!("\n  ... and {} more", bad.len() - 20));
    }
    bail!(msg)
}

/// `forever` (None) or a duration between a second and ten years.
pub fn parse_for(text: &str) -> Result<Option<Duration>> {
    match text.trim() {
        "forever" | "permanent" => Ok(None),
        t => {
            let d = parse_duration(t).map_err(|e| anyhow::anyhow!("--for: {e}, or `forever`"))?;
            if d < Duration::from_secs(1) {
                bail!("--for: `{t}` is shorter than a second");
            }
            // The kernel keeps timeouts in milliseconds within 64 bits of jiffies; ten years is far inside.
            if d > Duration::from_secs(10 * 365 * 86400) {
                bail!("--for: `{t}` is longer than ten years; use `forever`");
            }
            Ok(Some(d))
        }
    }
}

/// Carries out a request; errors come back as a failed `Response`.
pub fn handle(req: &Request, cx: Context) -> Response {
    run(req, cx).unwrap_or_else(|e| Response::error(&e))
}

fn run(req: &Request, cx: Context) -> Result<Response> {
    let Context { config, store, enforcer, now } = cx;
    match req {
        Request::Block { targets, duration, reason } => {
            let duration = match duration {
                Some(t) => parse_for(t)?,
                None => Some(config.jail.bantime),
            };
            let targets = parse_targets(targets)?;
            let stored_allow: Vec<Cidr> = store.allowlist()?.iter().map(|a| a.cidr).collect();
            refuse(targets.iter().filter_map(|c| enforcer.refuse_ban(c, &stored_allow)).collect())?;
            let until = match duration {
                Some(d) => Some(now + chrono::Duration::from_std(d).context("--for: too long")?),
                None => None,
            };
            let decisions: Vec<Decision> = targets
                .iter()
                .map(|&cidr| Decision::Ban {
                    cidr,
                    until,
                    reason: reason.clone(),
                    origin: MANUAL.into(),
                    figures: None,
                })
                .collect();
            let report = enforcer.decide(store, &decisions, now)?;
            let how_long =
                duration.map_or("until unblocked".to_string(), |d| format!("for {}", humantime::format_duration(d)));
            let c = &report.changes;
            Ok(Response::ok(format!(
                "blocked {} target(s) {how_long} (kernel: {} added, {} refreshed, {} removed)",
                targets.len(),
                c.added,
                c.refreshed,
                c.removed
            )))
        }
        Request::Unblock { targets, all, reason } => {
            let state = store.enforced(now)?;
            let targets: Vec<Cidr> = if *all {
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
                .map(|&cidr| Decision::Unban { cidr, reason: reason.clone(), origin: MANUAL.into() })
                .collect();
            let report = enforcer.decide(store, &decisions, now)?;
            Ok(Response::ok(format!(
                "unblocked {} target(s) (kernel: {} removed, {} added)",
                targets.len(),
                report.changes.removed,
                report.changes.added
            )))
        }
        Request::List => {
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
        Request::AllowAdd { targets, comment } => {
            let targets = allow_targets(targets)?;
            let state = store.enforced(now)?;
            let decisions: Vec<Decision> = targets
                .iter()
                .map(|&cidr| Decision::Allow { cidr, comment: comment.clone(), origin: MANUAL.into() })
                .collect();
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
        Request::AllowDel { targets } => {
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
        Request::AllowList => {
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
        Request::Limit { mode, ports, duration, reason } => {
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
            if *mode == LimitSwitch::Synproxy {
                if let Err(why) = enforcer.synproxy_ready() {
                    bail!("the SYN proxy cannot be used here: {why}");
                }
                if let Some(p) = ports.iter().find(|p| !enforcer.synproxy_ports().contains(p)) {
                    bail!("port {p} may not use the SYN proxy (its service has synproxy = \"never\")");
                }
            }
            let (mode, modes) = (*mode, mode.modes());
            let until = now + chrono::Duration::from_std(d).context("--for")?;
            let decisions: Vec<Decision> = ports
                .iter()
                .flat_map(|&port| {
                    modes.iter().map(move |&m| match mode {
                        LimitSwitch::Off => {
                            Decision::Lift { port, mode: m, reason: reason.clone(), origin: MANUAL.into() }
                        }
                        _ => Decision::Limit {
                            port,
                            mode: m,
                            until,
                            reason: reason.clone(),
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
        Request::Reconcile => {
            let r = enforcer.reconcile(store, now)?;
            let c = &r.changes;
            let mut lines: Vec<String> =
                c.strays.iter().map(|s| format!("stray (not in the store), removed: {s}")).collect();
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
        Request::Status | Request::Reload => bail!("{NOT_RUNNING}"),
    }
}

fn allow_targets(targets: &[String]) -> Result<Vec<Cidr>> {
    let targets = parse_targets(targets)?;
    if let Some(c) = targets.iter().find(|c| c.prefix_len() == 0) {
        bail!("{c} would exempt every address; nothing was applied");
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let r =
            Request::Block { targets: vec!["198.51.100.7".into()], duration: Some("1h".into()), reason: "x".into() };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"cmd":"block","targets":["198.51.100.7"],"for":"1h","reason":"x"}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert_eq!(serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(), Request::Status);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"format_disk"}"#).is_err());
    }

    #[test]
    fn durations_and_forever() {
        assert_eq!(parse_for("forever").unwrap(), None);
        assert_eq!(parse_for("2s").unwrap(), Some(Duration::from_secs(2)));
        assert!(parse_for("soon").unwrap_err().to_string().contains("`soon` is not a duration"));
        assert!(parse_for("20y").is_err());
    }
}
