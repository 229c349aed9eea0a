//! `floodgate block` and `floodgate unblock`: bans by hand, recorded in the store and applied to the kernel in
//! one batch. Every argument is checked first; one bad argument means nothing is applied.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::Utc;

use crate::addr::Cidr;
use crate::config::parse_duration;
use crate::enforce::Enforcer;
use crate::store::Decision;

#[derive(Debug, clap::Args)]
pub struct BlockArgs {
    /// Addresses and prefixes (198.51.100.7, 203.0.113.0/24, 2001:db8::/64).
    #[arg(value_name = "ADDR|CIDR")]
    pub targets: Vec<String>,
    /// A blocklist: one address or prefix per line, `#` comments; applied as one batch.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// How long (`10m`, `1h`, `30d`), or `forever`; the config's jail.bantime when omitted.
    #[arg(long = "for", value_name = "DUR")]
    pub duration: Option<String>,
    /// Why, for `floodgate list` and the history.
    #[arg(long, default_value = "blocked by hand")]
    pub reason: String,
}

#[derive(Debug, clap::Args)]
pub struct UnblockArgs {
    #[arg(value_name = "ADDR|CIDR", required_unless_present = "all")]
    pub targets: Vec<String>,
    /// Lift every ban.
    #[arg(long, conflicts_with = "targets")]
    pub all: bool,
    #[arg(long, default_value = "unblocked by hand")]
    pub reason: String,
}

/// Reads targets from the arguments and the file; every bad one is reported (by file and line), none applied.
fn targets(args: &[String], file: Option<&PathBuf>) -> Result<Vec<Cidr>> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for a in args {
        match a.parse::<Cidr>() {
            Ok(c) => out.push(c),
            Err(e) => bad.push(format!("argument: {e}")),
        }
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            match line.parse::<Cidr>() {
                Ok(c) => out.push(c),
                Err(e) => bad.push(format!("{}: line {}: {e}", path.display(), i + 1)),
            }
        }
    }
    refuse(bad)?;
    out.sort();
    out.dedup();
    if out.is_empty() {
        bail!("nothing to do: give addresses or prefixes, or --file");
    }
    Ok(out)
}

/// Fails with every reason listed (the first 20), when there are any.
fn refuse(bad: Vec<String>) -> Result<()> {
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

/// `forever` or a duration.
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

pub fn run_block(ctx: &super::Setup, args: BlockArgs) -> Result<()> {
    let duration = match &args.duration {
        Some(t) => parse_for(t)?,
        None => Some(ctx.config.jail.bantime),
    };
    let targets = targets(&args.targets, args.file.as_ref())?;
    let mut store = ctx.open_store()?;
    let mut enforcer = Enforcer::open(&ctx.config)?;
    let now = Utc::now();
    let stored_allow: Vec<Cidr> = store.enforced(now)?.allowlist.iter().map(|a| a.cidr).collect();
    refuse(targets.iter().filter_map(|c| enforcer.refuse_ban(c, &stored_allow)).collect())?;
    let until = match duration {
        Some(d) => Some(now + chrono::Duration::from_std(d).context("--for: too long")?),
        None => None,
    };
    let decisions: Vec<Decision> = targets
        .iter()
        .map(|&cidr| Decision::Ban { cidr, until, reason: args.reason.clone(), origin: "manual".into() })
        .collect();
    let report = enforcer.decide(&mut store, &decisions, now)?;
    let how_long = duration.map_or("until unblocked".to_string(), |d| format!("for {}", humantime::format_duration(d)));
    let c = &report.changes;
    eprintln!(
        "blocked {} target(s) {how_long} (kernel: {} added, {} refreshed, {} removed)",
        targets.len(),
        c.added,
        c.refreshed,
        c.removed
    );
    Ok(())
}

pub fn run_unblock(ctx: &super::Setup, args: UnblockArgs) -> Result<()> {
    let mut store = ctx.open_store()?;
    let now = Utc::now();
    let state = store.enforced(now)?;
    let targets: Vec<Cidr> = if args.all {
        state.bans.iter().map(|b| b.cidr).collect()
    } else {
        let targets = targets(&args.targets, None)?;
        let mut bad = Vec::new();
        for t in &targets {
            if state.bans.iter().any(|b| b.cidr == *t) {
                continue;
            }
            match state.bans.iter().find(|b| b.cidr.contains(t.addr()) && b.cidr.prefix_len() <= t.prefix_len()) {
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
    let mut enforcer = Enforcer::open(&ctx.config)?;
    let decisions: Vec<Decision> = targets
        .iter()
        .map(|&cidr| Decision::Unban { cidr, reason: args.reason.clone(), origin: "manual".into() })
        .collect();
    let report = enforcer.decide(&mut store, &decisions, now)?;
    eprintln!(
        "unblocked {} target(s) (kernel: {} removed, {} added)",
        targets.len(),
        report.changes.removed,
        report.changes.added
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_forever() {
        assert_eq!(parse_for("forever").unwrap(), None);
        assert_eq!(parse_for("2s").unwrap(), Some(Duration::from_secs(2)));
        assert!(parse_for("soon").unwrap_err().to_string().contains("`soon` is not a duration"));
        assert!(parse_for("20y").is_err());
    }

    #[test]
    fn a_blocklist_with_one_bad_line_is_refused_whole_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(&path, "# spammers\n198.51.100.7\n203.0.113.0/24  # a whole /24\nnot-an-ip\n").unwrap();
        let e = targets(&[], Some(&path)).unwrap_err().to_string();
        assert!(e.contains("list.txt: line 4: `not-an-ip` is not an IP address"), "{e}");
        assert!(e.contains("nothing was applied"), "{e}");
        std::fs::write(&path, "# spammers\n198.51.100.7\n203.0.113.0/24  # a whole /24\n198.51.100.7\n").unwrap();
        assert_eq!(targets(&[], Some(&path)).unwrap().len(), 2);
    }
}
