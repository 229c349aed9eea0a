//! The operator's requests (block, unblock, list, allow, limit, reconcile) and how they are carried out. The
//! CLI sends a `Request` to the daemon's control socket when the daemon runs, and carries it out itself with
//! the same `handle` when it does not, so both paths behave alike. One JSON object per line each way.

use std::time::Duration;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod allow;
mod block;
mod limit;
mod table;

use crate::addr::Cidr;
use crate::config::{parse_duration, Config};
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
    /// Answered by the daemon only: the metrics in the Prometheus text format, as the response's message.
    Metrics,
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
        !matches!(self, Request::List | Request::AllowList | Request::Status | Request::Reload | Request::Metrics)
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
            block::block(config, store, enforcer, now, targets, duration, reason)
        }
        Request::Unblock { targets, all, reason } => block::unblock(store, enforcer, now, targets, *all, reason),
        Request::List => table::list(store, enforcer, now),
        Request::AllowAdd { targets, comment } => allow::add(store, enforcer, now, targets, comment),
        Request::AllowDel { targets } => allow::del(config, store, enforcer, now, targets),
        Request::AllowList => allow::list(config, store),
        Request::Limit { mode, ports, duration, reason } => {
            limit::limit(store, enforcer, now, *mode, ports, duration, reason)
        }
        Request::Reconcile => table::reconcile(store, enforcer, now),
        Request::Status | Request::Reload | Request::Metrics => bail!("{NOT_RUNNING}"),
    }
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
