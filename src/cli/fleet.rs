//! `floodgate fleet`: the operator's view of the fleet and its fleet-wide verdicts. `status` shows this host's
//! link (from the daemon) and what the bucket holds per host; `block` and `unblock` write the operator's keys
//! (`o.<target>`, `u.<target>`), which every host applies through its own gate. They need credentials that may
//! write those keys: `--credentials` or `--user`/`--password`, else the `[fleet]` section's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use futures_util::StreamExt;

use crate::addr::Cidr;
use crate::control::Request;
use crate::fleet::verdict::{self, Verdict};
use crate::fleet::FleetConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: FleetCommand,
    /// Credentials for the bucket (a NATS .creds file), instead of the config's: the operator's.
    #[arg(long, global = true, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    #[arg(long, global = true, requires = "password")]
    pub user: Option<String>,
    #[arg(long, global = true, requires = "user")]
    pub password: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// This host's link (from the running daemon) and the bucket's bans per host.
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
    },
    /// Lift every host's ban of the targets made until now, the hosts' own bans included.
    Unblock {
        #[arg(required = true)]
        targets: Vec<String>,
    },
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    let Some(mut cfg) = ctx.config.fleet.clone() else {
        bail!("no [fleet] section in the configuration: this host is not in a fleet (see examples/floodgate.toml)");
    };
    if args.credentials.is_some() || args.user.is_some() {
        (cfg.credentials, cfg.user, cfg.password) =
            (args.credentials.clone(), args.user.clone(), args.password.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    match args.command {
        FleetCommand::Status { json } => {
            // The daemon's view first; a stopped daemon is said, the bucket is still read.
            let link = ctx.execute(Request::Status).ok().and_then(|r| r.data.get("fleet").cloned());
            let per_host = rt.block_on(bans_per_host(&cfg))?;
            if json {
                println!("{}", serde_json::json!({ "link": link, "bucket": cfg.bucket, "bans_per_host": per_host }));
                return Ok(());
            }
            match &link {
                Some(l) => println!("this host ({}): {}", cfg.host, l),
                None => println!("this host ({}): the daemon is not running or not in the fleet", cfg.host),
            }
            println!("bucket {} on {}:", cfg.bucket, cfg.servers.join(", "));
            for (key, n) in &per_host {
                println!("  {key:<24} {n} ban(s)");
            }
            Ok(())
        }
        FleetCommand::Block { targets, duration, reason } => {
            let d = crate::setting::parse_duration(&duration).map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            let now = Utc::now();
            let until = now + crate::policy::span(d);
            let verdicts: Vec<Verdict> = parse(&targets)?
                .into_iter()
                .map(|target| Verdict {
                    host: cfg.host.clone(),
                    target,
                    until: Some(until),
                    made: now,
                    reason: reason.clone(),
                    origin: "operator".into(),
                    figures: None,
                })
                .collect();
            rt.block_on(async {
                let kv = crate::fleet::link::open(&cfg).await?;
                for v in &verdicts {
                    kv.put(verdict::block_key(&v.target), v.encode().into())
                        .await
                        .with_context(|| format!("{}: writing the fleet-wide block", v.target))?;
                }
                anyhow::Ok(())
            })?;
            eprintln!("blocked {} target(s) on every host of the fleet", verdicts.len());
            Ok(())
        }
        FleetCommand::Unblock { targets } => {
            let targets = parse(&targets)?;
            let now = Utc::now();
            rt.block_on(async {
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
            eprintln!("unblocked {} target(s) on every host of the fleet", targets.len());
            Ok(())
        }
    }
}

fn parse(targets: &[String]) -> Result<Vec<Cidr>> {
    targets.iter().map(|t| t.parse::<Cidr>().map_err(|e| anyhow::anyhow!("{t}: {e}"))).collect()
}

/// Live keys in the bucket by who wrote them: `b.<host>` per host, `o` (blocks) and `u` (unblocks) the operator's.
async fn bans_per_host(cfg: &FleetConfig) -> Result<BTreeMap<String, u64>> {
    let kv = crate::fleet::link::open(cfg).await?;
    let mut keys = kv.keys().await.context("listing the bucket's keys")?;
    let mut out = BTreeMap::new();
    while let Some(k) = keys.next().await {
        let k = k.context("listing the bucket's keys")?;
        let owner = match k.split('.').collect::<Vec<_>>()[..] {
            ["b", host, ..] => format!("b.{host}"),
            [kind, ..] => kind.to_string(),
            [] => continue,
        };
        *out.entry(owner).or_insert(0) += 1;
    }
    Ok(out)
}
