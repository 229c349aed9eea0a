//! `floodgate limit`: switches a port's rate limit on by hand (what the policy does on its own): `source`
//! limits each source (hashlimit-style), `global` limits everyone together but the allowlist (limit-style),
//! `synproxy` puts the kernel's SYN proxy in front of it (for ports whose service allows it).
//! A limit always has an end: if nobody refreshes it, it lapses by itself.

use anyhow::Result;

use crate::control::{LimitSwitch, Request};

#[derive(Debug, clap::Args)]
pub struct Args {
    pub mode: LimitSwitch,
    #[arg(value_name = "PORT", required = true)]
    pub ports: Vec<u16>,
    /// How long the limit stays on unless refreshed.
    #[arg(long = "for", value_name = "DUR", default_value = "10m")]
    pub duration: String,
    #[arg(long, default_value = "limited by hand")]
    pub reason: String,
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    ctx.execute(Request::Limit { mode: args.mode, ports: args.ports, duration: args.duration, reason: args.reason })?;
    Ok(())
}
