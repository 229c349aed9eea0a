//! `floodgate events`: what the store recorded, filtered by time, address or prefix, and kind.

use std::io::{self, BufWriter, Write};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::addr::Cidr;
use crate::config::parse_duration;
use crate::event::Kind;
use crate::store::EventFilter;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only events newer than this: a duration back from now (`1h`, `2d`) or an RFC 3339 time.
    #[arg(long, value_name = "DUR|TIME")]
    pub since: Option<String>,
    /// Only events from this address or prefix.
    #[arg(long, value_name = "IP|CIDR")]
    pub addr: Option<String>,
    /// Only events of this kind (auth_failure, syn_flood, ...).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = parse_duration(text).map_err(|e| anyhow::anyhow!("--since: {e}, or an RFC 3339 time"))?;
    Ok(now - chrono::Duration::from_std(d).context("--since: duration too large")?)
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    let filter = EventFilter {
        since: args.since.as_deref().map(|s| parse_since(s, Utc::now())).transpose()?,
        cidr: args.addr.as_deref().map(|a| a.parse::<Cidr>().context("--addr")).transpose()?,
        kind: args
            .kind
            .as_deref()
            .map(|k| k.parse::<Kind>().map_err(|e| anyhow::anyhow!("--kind: {e}")))
            .transpose()?,
        limit: Some(args.limit),
    };
    let store = ctx.open_existing_store()?;
    let events = store.query_events(&filter)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for e in &events {
        if args.json {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        } else {
            let origin = match (&e.input, e.line) {
                (Some(i), Some(l)) => format!(" ({i}:{l})"),
                (Some(i), None) => format!(" ({i})"),
                _ => String::new(),
            };
            writeln!(out, "{}{origin}", super::parse::event_text(&e.event))?;
        }
    }
    out.flush()?;
    if !args.json && events.is_empty() {
        eprintln!("no events match");
    }
    Ok(())
}
