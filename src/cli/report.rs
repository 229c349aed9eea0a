//! `floodgate report`: what the store recorded over a period, drawn as one self-contained HTML page (inline SVG
//! and CSS, no script, nothing fetched), on stdout or into a file. Reads the store read-only and the machine
//! for the advisor's findings; changes nothing.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{SubsecRound, Utc};

use crate::advise::Machine;
use crate::attack_report::{self, Window};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The period's start: a duration back from now (`1h`, `2d`) or an RFC 3339 time.
    #[arg(long, value_name = "DUR|TIME", default_value = "24h")]
    pub since: String,
    /// The period's end: a duration back from now or an RFC 3339 time (default: now).
    #[arg(long, value_name = "DUR|TIME")]
    pub until: Option<String>,
    /// Only this local port.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Write the page to this file (written whole, then renamed into place) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE.html")]
    pub output: Option<PathBuf>,
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    let now = Utc::now().trunc_subsecs(0);
    let since = super::events::parse_since(&args.since, now).context("--since")?;
    let until = match &args.until {
        Some(u) => super::events::parse_since(u, now).context("--until")?,
        None => now,
    };
    if until <= since {
        anyhow::bail!("--until ({until}) must be after --since ({since})");
    }
    if !ctx.db.exists() {
        anyhow::bail!(
            "{}: no event store yet (record events with `floodgate parse --save FILE` or the daemon, or point --db at one)",
            ctx.db.display()
        );
    }
    let machine = Machine::read_live();
    let page = attack_report::render_page(
        &ctx.db,
        &ctx.config,
        Window { since, until, port: args.port },
        Some(&machine),
        now,
    )?;
    match &args.output {
        Some(path) => crate::advise::sysctl_conf::write_atomically(path, &page)
            .with_context(|| format!("{}: cannot write the report", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(page.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}
