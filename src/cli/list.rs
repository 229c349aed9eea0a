//! `floodgate list`: what the kernel enforces now, joined with the store's reasons; and `floodgate
//! reconcile`, which makes the kernel match the store again.

use std::io::{self, BufWriter, Write};

use anyhow::Result;

use crate::control::Request;
use crate::enforce::Listed;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Only the fleet's bans (other hosts' verdicts applied here), with the host each came from.
    #[arg(long)]
    pub fleet: bool,
}

fn human(secs: Option<u64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
    }
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    let response = ctx.execute(Request::List)?;
    let mut listed: Vec<Listed> = serde_json::from_value(response.data)?;
    if args.fleet {
        listed.retain(|l| l.action == "fleet_ban");
    }
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
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Take over a table that another floodgate store owns (its bans are adopted into this store). Only
    /// without a running daemon (a daemon owns its table already).
    #[arg(long)]
    pub adopt: bool,
}

pub fn run_reconcile(ctx: &super::Setup, args: ReconcileArgs) -> Result<()> {
    let ctx = super::Setup { adopt: args.adopt, ..ctx.clone() };
    ctx.execute(Request::Reconcile)?;
    Ok(())
}
