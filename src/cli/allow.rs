//! `floodgate allow add|del|list`: the admin allowlist. Allowed sources are accepted before any ban or limit
//! (so also during a global limit), and `block` refuses them. Entries come from the config and from here.

use std::io::{self, BufWriter, Write};

use anyhow::{bail, Result};
use chrono::Utc;

use crate::addr::Cidr;
use crate::enforce::Enforcer;
use crate::store::Decision;

#[derive(Debug, clap::Subcommand)]
pub enum Args {
    /// Adds addresses or prefixes.
    Add {
        #[arg(value_name = "ADDR|CIDR", required = true)]
        targets: Vec<String>,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Removes addresses or prefixes added with `allow add` (the config's entries stay in the config).
    Del {
        #[arg(value_name = "ADDR|CIDR", required = true)]
        targets: Vec<String>,
    },
    /// Lists the allowlist: the config's entries and the stored ones.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn parse(targets: &[String]) -> Result<Vec<Cidr>> {
    let mut out = Vec::new();
    for t in targets {
        let c: Cidr = t.parse()?;
        if c.prefix_len() == 0 {
            bail!("{c} would exempt every address; nothing was applied");
        }
        out.push(c);
    }
    Ok(out)
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    let mut store = ctx.open_store()?;
    let now = Utc::now();
    match args {
        Args::Add { targets, comment } => {
            let targets = parse(&targets)?;
            let state = store.enforced(now)?;
            let mut enforcer = Enforcer::open(&ctx.config)?;
            let decisions: Vec<Decision> = targets
                .iter()
                .map(|&cidr| Decision::Allow { cidr, comment: comment.clone(), origin: "manual".into() })
                .collect();
            enforcer.decide(&mut store, &decisions, now)?;
            for t in &targets {
                for b in state.bans.iter().filter(|b| b.cidr.contains(t.addr()) || t.contains(b.cidr.addr())) {
                    eprintln!(
                        "note: {t} overlaps the ban on {} ({}); the allowlist takes precedence",
                        b.cidr, b.reason
                    );
                }
            }
            eprintln!("allowed {} target(s)", targets.len());
        }
        Args::Del { targets } => {
            let targets = parse(&targets)?;
            let state = store.enforced(now)?;
            for t in &targets {
                if ctx.config.allowlist.contains(t) {
                    bail!("{t} is on the config's allowlist: remove it there; nothing was applied");
                }
                if !state.allowlist.iter().any(|a| a.cidr == *t) {
                    bail!("{t} is not on the allowlist; nothing was applied");
                }
            }
            let mut enforcer = Enforcer::open(&ctx.config)?;
            let decisions: Vec<Decision> =
                targets.iter().map(|&cidr| Decision::Disallow { cidr, origin: "manual".into() }).collect();
            enforcer.decide(&mut store, &decisions, now)?;
            eprintln!("removed {} target(s) from the allowlist", targets.len());
        }
        Args::List { json } => {
            let state = store.enforced(now)?;
            let mut out = BufWriter::new(io::stdout().lock());
            let rows = ctx.config.allowlist.iter().map(|c| (c.to_string(), "config".to_string(), String::new())).chain(
                state.allowlist.iter().map(|a| {
                    (
                        a.cidr.to_string(),
                        format!("added {}", a.added.format("%Y-%m-%d %H:%M")),
                        a.comment.clone().unwrap_or_default(),
                    )
                }),
            );
            for (cidr, source, comment) in rows {
                if json {
                    serde_json::to_writer(
                        &mut out,
                        &serde_json::json!({"cidr": cidr, "source": source, "comment": comment}),
                    )?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{cidr:<40} {source:<24} {comment}")?;
                }
            }
            out.flush()?;
        }
    }
    Ok(())
}
