//! `floodgate block` and `floodgate unblock`: bans by hand (see control.rs for how they are carried out).
//! A blocklist file is read here, so its errors name the caller's file and line.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::addr::Cidr;
use crate::control::{refuse, Request};

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
    /// On every host of the fleet ([fleet]), through the bucket, with the operator's credentials; each host
    /// still applies its own allowlist and caps.
    #[arg(long)]
    pub everywhere: bool,
    #[command(flatten)]
    pub credentials: super::fleet::Credentials,
    /// What was done, as JSON.
    #[arg(long)]
    pub json: bool,
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
    /// On every host of the fleet: every ban of the targets made until now, the hosts' own included.
    #[arg(long, conflicts_with = "all")]
    pub everywhere: bool,
    #[command(flatten)]
    pub credentials: super::fleet::Credentials,
    /// What was done, as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The arguments plus the file's lines, checked: every bad one is reported (by file and line), none applied.
fn targets(args: &[String], file: Option<&PathBuf>) -> Result<Vec<String>> {
    let mut out = args.to_vec();
    let mut bad = Vec::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            match line.parse::<Cidr>() {
                Ok(c) => out.push(c.to_string()),
                Err(e) => bad.push(format!("{}: line {}: {e}", path.display(), i + 1)),
            }
        }
    }
    refuse(bad)?;
    Ok(out)
}

pub fn run_block(ctx: &super::Setup, args: BlockArgs) -> Result<()> {
    let targets = targets(&args.targets, args.file.as_ref())?;
    // Checked here too, so a typo fails before anything is sent anywhere.
    if let Some(d) = &args.duration {
        crate::control::parse_for(d)?;
    }
    if args.everywhere {
        let d = match &args.duration {
            None => ctx.config.jail.bantime,
            Some(d) => crate::setting::parse_duration(d).map_err(|e| anyhow::anyhow!("--for: {e}"))?,
        };
        return super::fleet::block_everywhere(ctx, &args.credentials, &targets, d, &args.reason, args.json);
    }
    let r = ctx.execute(Request::Block { targets, duration: args.duration, reason: args.reason })?;
    if args.json {
        println!("{}", r.data);
    }
    Ok(())
}

pub fn run_unblock(ctx: &super::Setup, args: UnblockArgs) -> Result<()> {
    if args.everywhere {
        return super::fleet::unblock_everywhere(ctx, &args.credentials, &args.targets, args.json);
    }
    let r = ctx.execute(Request::Unblock { targets: args.targets, all: args.all, reason: args.reason })?;
    if args.json {
        println!("{}", r.data);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocklist_with_one_bad_line_is_refused_whole_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(&path, "# spammers\n198.51.100.7\n203.0.113.0/24  # a whole /24\nnot-an-ip\n").unwrap();
        let e = targets(&[], Some(&path)).unwrap_err().to_string();
        assert!(e.contains("list.txt: line 4: `not-an-ip` is not an IP address"), "{e}");
        assert!(e.contains("nothing was applied"), "{e}");
        std::fs::write(&path, "# spammers\n198.51.100.7\n203.0.113.0/24  # a whole /24\n").unwrap();
        assert_eq!(targets(&[], Some(&path)).unwrap(), ["198.51.100.7", "203.0.113.0/24"]);
    }
}
