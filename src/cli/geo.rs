//! `floodgate geo`: the country ranges behind country-restricted ports. `update` downloads the configured range
//! files (the last good copy of each kept on any failure) and loads the sets; `load` loads them from the copies
//! alone; `lookup` tells an address's country and which restricted ports it may reach.

use std::net::IpAddr;

use anyhow::{Context, Result};

use crate::enforce::geo::GeoLoaded;
use crate::geo::fetch::{Limits, Outcome};
use crate::geo::GeoDb;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: GeoCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum GeoCommand {
    /// Download the range files, keep each good one, and load the country sets (one kernel transaction).
    Update {
        /// Download only; the sets are loaded at the next `geo load`, reconcile or daemon check.
        #[arg(long)]
        no_load: bool,
    },
    /// Load the country sets from the last good copies, without downloading.
    Load,
    /// Which country an address is registered in, and which restricted ports it may reach.
    Lookup {
        addr: IpAddr,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    match args.command {
        GeoCommand::Update { no_load } => {
            let g = &ctx.config.geo;
            let limits = Limits { timeout: g.timeout, max_bytes: g.max_mib << 20 };
            let mut failed = 0;
            for (name, outcome) in crate::geo::fetch::update(&g.dir, &g.sources, &limits) {
                match outcome {
                    Outcome::Updated { bytes, records } => {
                        println!("{name}: updated, {records} address records ({:.1} MiB)", bytes as f64 / 1048576.0)
                    }
                    Outcome::Unchanged => println!("{name}: unchanged"),
                    Outcome::Failed { reason } => {
                        failed += 1;
                        println!("{name}: FAILED, the last good copy is kept: {reason}");
                    }
                }
            }
            if !no_load {
                load(ctx)?;
            }
            if failed > 0 {
                anyhow::bail!(
                    "{failed} of {} sources failed to update (their last good copies are in use)",
                    g.sources.len()
                );
            }
            Ok(())
        }
        GeoCommand::Load => load(ctx),
        GeoCommand::Lookup { addr, json } => lookup(ctx, addr, json),
    }
}

/// A reconcile (through the daemon when it runs): the table installed or repaired, bans and allowlist in
/// place, and the country sets built from the last good copies, all before any restriction takes effect.
fn load(ctx: &super::Setup) -> Result<()> {
    if !ctx.config.services.values().any(|s| s.country_rule().is_some()) {
        println!("no service has `countries` or `deny_countries`: nothing to load");
        return Ok(());
    }
    let r = ctx.execute(crate::control::Request::Reconcile).context("loading the country sets")?;
    let loaded: Vec<GeoLoaded> = serde_json::from_value(r.data).unwrap_or_default();
    for l in loaded {
        println!("{l}");
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Reach {
    service: String,
    ports: Vec<u16>,
    /// Whom the service admits: "all", "only JP, KR", "all but CN".
    admits: String,
    allowed: bool,
}

fn lookup(ctx: &super::Setup, addr: IpAddr, json: bool) -> Result<()> {
    let g = &ctx.config.geo;
    let (db, warnings) = GeoDb::load_dir(&g.dir, &g.sources)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let country = db.lookup(addr);
    let allowlisted = ctx.config.allowlist.iter().any(|c| c.contains(addr));
    let list = |c: &[crate::geo::Country]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ");
    let reach: Vec<Reach> = ctx
        .config
        .services
        .iter()
        .map(|(name, s)| {
            let (admits, allowed) = match s.country_rule() {
                Some((false, only)) => (format!("only {}", list(only)), country.is_some_and(|c| only.contains(&c))),
                Some((true, deny)) => (format!("all but {}", list(deny)), !country.is_some_and(|c| deny.contains(&c))),
                None => ("all".to_string(), true),
            };
            Reach { service: name.clone(), ports: s.ports.clone(), admits, allowed: allowed || allowlisted }
        })
        .collect();
    if json {
        let v = serde_json::json!({
            "addr": addr.to_string(),
            "country": country.map(|c| c.to_string()),
            "allowlisted": allowlisted,
            "services": reach,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match country {
        Some(c) => println!("{addr}: {c}"),
        None if db.is_empty() => println!("{addr}: unknown (no range data yet: run `floodgate geo update`)"),
        None => println!("{addr}: not in any country's ranges"),
    }
    if allowlisted {
        println!("  on the allowlist: reaches every port, whatever its country");
    }
    for r in &reach {
        let ports: Vec<String> = r.ports.iter().map(u16::to_string).collect();
        let verdict = if r.allowed { "may connect" } else { "DROPPED" };
        println!("  {:<12} {:<16} admits {:<20} {verdict}", r.service, ports.join(", "), r.admits);
    }
    Ok(())
}
