//! `floodgate fleet`: the operator's view of the fleet and its fleet-wide verdicts. `status` shows every host
//! (its last heartbeat, lag, counts, bans in the bucket) and this host's link; `block` and `unblock` (also
//! `floodgate block --everywhere`, `floodgate unblock --everywhere`) write the operator's keys (`o.<target>`,
//! `u.<target>`), which every host applies through its own gate. They need credentials that may write those
//! keys: `--credentials` or `--user`/`--password`, else the `[fleet]` section's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use crate::addr::Cidr;
use crate::control::Request;
use crate::fleet::member::FleetStatus;
use crate::fleet::verdict::{self, Entry, Verdict};
use crate::fleet::FleetConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: FleetCommand,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// Who writes to the bucket, instead of the `[fleet]` section's credentials: the operator's.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Credentials {
    /// Credentials for the fleet's bucket (a NATS .creds file): the operator's, for fleet-wide changes.
    #[arg(long = "credentials", id = "credentials", global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A user of the fleet's servers (with --password), instead of a .creds file.
    #[arg(long, global = true, requires = "password")]
    pub user: Option<String>,
    #[arg(long, global = true, requires = "user")]
    pub password: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Every host (last heartbeat, lag, counts, bans in the bucket) and this host's link.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Ban targets on every host of the fleet (each still applies its own allowlist and caps).
    Block {
        #[arg(required = true)]
        targets: Vec<String>,
        /// How long: `1h`, `7d` (each host caps it at its max_remote_bantime).
        #[arg(long = "for", value_name = "DURATION", default_value = "1d")]
        duration: String,
        #[arg(long, default_value = "blocked everywhere by the operator")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Lift every host's ban of the targets made until now, the hosts' own bans included.
    Unblock {
        #[arg(required = true)]
        targets: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

/// A host silent for this many heartbeats is shown as silent.
const SILENT_AFTER: u32 = 3;

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    match args.command {
        FleetCommand::Status { json } => status(ctx, &args.credentials, json),
        FleetCommand::Block { targets, duration, reason, json } => {
            let d = crate::setting::parse_duration(&duration).map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            block_everywhere(ctx, &args.credentials, &targets, d, &reason, json)
        }
        FleetCommand::Unblock { targets, json } => unblock_everywhere(ctx, &args.credentials, &targets, json),
    }
}

/// The `[fleet]` section with the command line's credentials, if any, in place of its own.
fn fleet_config(ctx: &super::Setup, creds: &Credentials) -> Result<FleetConfig> {
    let Some(mut cfg) = ctx.config.fleet.clone() else {
        bail!("no [fleet] section in the configuration: this host is not in a fleet (see examples/floodgate.toml)");
    };
    if creds.file.is_some() || creds.user.is_some() {
        (cfg.credentials, cfg.user, cfg.password) = (creds.file.clone(), creds.user.clone(), creds.password.clone());
    }
    Ok(cfg)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")
}

/// `o.<target>` for each target: every host bans it (through its own gate) for `duration`.
pub fn block_everywhere(
    ctx: &super::Setup,
    creds: &Credentials,
    targets: &[String],
    duration: std::time::Duration,
    reason: &str,
    json: bool,
) -> Result<()> {
    let cfg = fleet_config(ctx, creds)?;
    let now = Utc::now();
    let until = now + crate::policy::span(duration);
    let verdicts: Vec<Verdict> = parse(targets)?
        .into_iter()
        .map(|target| Verdict {
            host: cfg.host.clone(),
            target,
            until: Some(until),
            made: now,
            reason: reason.to_string(),
            origin: "operator".into(),
            figures: None,
        })
        .collect();
    runtime()?.block_on(async {
        let kv = crate::fleet::link::open(&cfg).await?;
        for v in &verdicts {
            kv.put(verdict::block_key(&v.target), v.encode().into())
                .await
                .with_context(|| format!("{}: writing the fleet-wide block", v.target))?;
        }
        anyhow::Ok(())
    })?;
    let listed: Vec<String> = verdicts.iter().map(|v| v.target.to_string()).collect();
    if json {
        println!("{}", serde_json::json!({ "blocked_everywhere": listed, "until": until, "bucket": cfg.bucket }));
    } else {
        eprintln!("blocked {} target(s) on every host of the fleet until {until}", listed.len());
    }
    Ok(())
}

/// `u.<target>` for each target: every ban of it made until now, on every host, stops applying.
pub fn unblock_everywhere(ctx: &super::Setup, creds: &Credentials, targets: &[String], json: bool) -> Result<()> {
    let cfg = fleet_config(ctx, creds)?;
    let targets = parse(targets)?;
    let now = Utc::now();
    runtime()?.block_on(async {
        let kv = crate::fleet::link::open(&cfg).await?;
        for t in &targets {
            // A fleet-wide block of it, if any, goes too.
            let _ = kv.delete(verdict::block_key(t)).await;
            kv.put(verdict::unblock_key(t), verdict::encode_unblock(t, now).into())
                .await
                .with_context(|| format!("{t}: writing the fleet-wide unblock"))?;
        }
        anyhow::Ok(())
    })?;
    let listed: Vec<String> = targets.iter().map(ToString::to_string).collect();
    if json {
        println!("{}", serde_json::json!({ "unblocked_everywhere": listed, "made": now, "bucket": cfg.bucket }));
    } else {
        eprintln!("unblocked {} target(s) on every host of the fleet", listed.len());
    }
    Ok(())
}

/// One host as `fleet status` shows it: what the bucket holds of it, and what this host's daemon heard.
#[derive(Debug, Default, serde::Serialize)]
struct HostRow {
    host: String,
    bans_in_bucket: u64,
    heartbeat: Option<verdict::Beat>,
    /// Seconds since its last heartbeat, by this host's clock.
    heard_secs_ago: Option<i64>,
    silent: bool,
    lag_ms: Option<f64>,
}

fn status(ctx: &super::Setup, creds: &Credentials, json: bool) -> Result<()> {
    let cfg = fleet_config(ctx, creds)?;
    // The daemon's view first; a stopped daemon is said, the bucket is still read.
    let link: Option<FleetStatus> = ctx
        .execute(Request::Status)
        .ok()
        .and_then(|r| r.data.get("fleet").cloned())
        .and_then(|f| serde_json::from_value(f).ok());
    let now = Utc::now();
    let bucket = runtime()?.block_on(read_bucket(&cfg, now))?;
    let mut rows: BTreeMap<String, HostRow> = BTreeMap::new();
    for (host, n) in &bucket.bans {
        rows.entry(host.clone())
            .or_insert_with(|| HostRow { host: host.clone(), ..Default::default() })
            .bans_in_bucket = *n;
    }
    for (host, beat) in bucket.beats {
        let row = rows.entry(host.clone()).or_insert_with(|| HostRow { host: host.clone(), ..Default::default() });
        let ago = (now - beat.at).num_seconds();
        row.heard_secs_ago = Some(ago);
        row.silent = ago > (crate::fleet::link::HEARTBEAT * SILENT_AFTER).as_secs() as i64;
        row.heartbeat = Some(beat);
    }
    for p in link.iter().flat_map(|l| &l.peers) {
        if let Some(row) = rows.get_mut(&p.host) {
            row.lag_ms = p.lag_ms;
        }
    }
    for row in rows.values_mut().filter(|r| r.heartbeat.is_none()) {
        row.silent = true;
    }
    if json {
        let out = serde_json::json!({
            "host": cfg.host,
            "link": link,
            "bucket": cfg.bucket,
            "servers": cfg.servers,
            "hosts": rows.values().collect::<Vec<_>>(),
            "operator": { "blocks": bucket.blocks, "unblocks": bucket.unblocks },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    match &link {
        Some(l) => println!(
            "this host ({}): {}; published {}, applied {}, refused {} (entries {}, limits {}, gate {}), held {}{}",
            l.host,
            if l.connected { "connected" } else { "NOT connected" },
            l.published,
            l.applied,
            l.refused_entries + l.refused_limits + l.refused_gate,
            l.refused_entries,
            l.refused_limits,
            l.refused_gate,
            l.held,
            l.last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
        ),
        None => println!("this host ({}): the daemon is not running or not in the fleet", cfg.host),
    }
    println!(
        "bucket {} on {}: operator blocks {}, unblocks {}",
        cfg.bucket,
        cfg.servers.join(", "),
        bucket.blocks,
        bucket.unblocks
    );
    println!(
        "{:<20} {:>8} {:>14} {:>9} {:>10} {:>9} {:>8} {:>8}  version",
        "host", "bans", "heard", "lag", "published", "applied", "refused", "held"
    );
    for r in rows.values() {
        let heard = match (r.heard_secs_ago, r.silent) {
            (Some(s), false) => format!("{s}s ago"),
            (Some(s), true) => {
                format!("SILENT {}", humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64)))
            }
            (None, _) => "never".to_string(),
        };
        let lag = r.lag_ms.map(|l| format!("{l:.1} ms")).unwrap_or_else(|| "-".into());
        let b = r.heartbeat.clone().unwrap_or_default();
        println!(
            "{:<20} {:>8} {:>14} {:>9} {:>10} {:>9} {:>8} {:>8}  {}",
            r.host, r.bans_in_bucket, heard, lag, b.published, b.applied, b.refused, b.held, b.version
        );
    }
    Ok(())
}

/// What the bucket holds, by writer.
#[derive(Default)]
struct Bucket {
    bans: BTreeMap<String, u64>,
    beats: BTreeMap<String, verdict::Beat>,
    blocks: u64,
    unblocks: u64,
}

async fn read_bucket(cfg: &FleetConfig, now: DateTime<Utc>) -> Result<Bucket> {
    let kv = crate::fleet::link::open(cfg).await?;
    let mut keys = kv.keys().await.context("listing the bucket's keys")?;
    let mut out = Bucket::default();
    let mut beat_keys = Vec::new();
    while let Some(k) = keys.next().await {
        let k = k.context("listing the bucket's keys")?;
        match k.split('.').collect::<Vec<_>>()[..] {
            ["b", host, ..] => *out.bans.entry(host.to_string()).or_insert(0) += 1,
            ["o", ..] => out.blocks += 1,
            ["u", ..] => out.unblocks += 1,
            ["h", ..] => beat_keys.push(k.clone()),
            _ => {}
        }
    }
    for k in beat_keys {
        let value = kv.get(&k).await.with_context(|| format!("reading {k}"))?;
        // A heartbeat this floodgate does not believe is left out, as the daemon would.
        if let Ok(Entry::Heartbeat { host, beat: Some(b) }) = verdict::decode(&k, value.as_deref(), now) {
            out.beats.insert(host, b);
        }
    }
    Ok(out)
}

fn parse(targets: &[String]) -> Result<Vec<Cidr>> {
    targets.iter().map(|t| t.parse::<Cidr>().map_err(|e| anyhow::anyhow!("{t}: {e}"))).collect()
}
