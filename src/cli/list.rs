//! `floodgate list`: what the kernel enforces now (read from floodgate's table), joined with the store's
//! reasons; and `floodgate reconcile`, which makes the kernel match the store again.

use std::io::{self, BufWriter, Write};

use anyhow::Result;
use chrono::Utc;

use crate::enforce::Enforcer;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

fn human(secs: Option<u64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
    }
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    let store = ctx.open_store()?;
    let mut enforcer = Enforcer::open(&ctx.config)?;
    let listed = enforcer.list(&store, Utc::now())?;
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        for l in &listed {
            serde_json::to_writer(&mut out, l)?;
            writeln!(out)?;
        }
    } else {
        writeln!(out, "{:<40} {:<13} {:<14} {:<10} REASON", "TARGET", "ACTION", "EXPIRES IN", "ORIGIN")?;
        for l in &listed {
            let mut reason = l.reason.clone();
            if !l.in_kernel {
                reason.push_str("  [missing from the kernel: run `floodgate reconcile`]");
            }
            let expires = if l.in_kernel { human(l.expires_s) } else { "-".into() };
            writeln!(out, "{:<40} {:<13} {:<14} {:<10} {reason}", l.target, l.action, expires, l.origin)?;
        }
    }
    out.flush()?;
    for d in enforcer.damaged_chains()? {
        eprintln!(
            "warning: table inet {}: {d}; nothing is enforced as listed until `floodgate reconcile`",
            enforcer.table()
        );
    }
    let bans = listed.iter().filter(|l| l.action == "ban").count();
    eprintln!("{bans} ban(s), {} limit(s) in table inet {}", listed.len() - bans, enforcer.table());
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {}

pub fn run_reconcile(ctx: &super::Setup, _args: ReconcileArgs) -> Result<()> {
    let mut store = ctx.open_store()?;
    let mut enforcer = Enforcer::open(&ctx.config)?;
    let r = enforcer.reconcile(&mut store, Utc::now())?;
    let c = &r.changes;
    for s in &c.strays {
        eprintln!("stray (not in the store), removed: {s}");
    }
    eprintln!(
        "table inet {} installed; {} element(s) restored, {} refreshed, {} removed",
        enforcer.table(),
        c.added,
        c.refreshed,
        c.removed
    );
    Ok(())
}
