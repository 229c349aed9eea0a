//! `floodgate allow add|del|list`: the admin allowlist. Allowed sources are accepted before any ban or limit
//! (so also during a global limit), and `block` refuses them. Entries come from the config and from here.

use std::io::{self, BufWriter, Write};

use anyhow::Result;

use crate::control::Request;

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

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    match args {
        Args::Add { targets, comment } => {
            ctx.execute(Request::AllowAdd { targets, comment })?;
        }
        Args::Del { targets } => {
            ctx.execute(Request::AllowDel { targets })?;
        }
        Args::List { json } => {
            let r = ctx.execute(Request::AllowList)?;
            let rows = r.data.as_array().cloned().unwrap_or_default();
            let mut out = BufWriter::new(io::stdout().lock());
            for row in rows {
                if json {
                    serde_json::to_writer(&mut out, &row)?;
                    writeln!(out)?;
                } else {
                    let f = |k: &str| row.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    writeln!(out, "{:<40} {:<24} {}", f("cidr"), f("source"), f("comment"))?;
                }
            }
            out.flush()?;
        }
    }
    Ok(())
}
