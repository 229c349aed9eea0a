//! `floodgate limit`: switches a port's rate limit on by hand (what the policy does on its own): `source`
//! limits each source (hashlimit-style), `global` limits everyone together but the allowlist (limit-style),
//! `synproxy` puts the kernel's SYN proxy in front of it (for ports whose service allows it).
//! A limit always has an end: if nobody refreshes it, it lapses by itself.

use anyhow::Result;

use crate::control::Request;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    Source,
    Global,
    /// The kernel's SYN proxy (needs nf_conntrack_tcp_loose = 0; `floodgate status` says whether it can).
    Synproxy,
    /// Lifts the limits (and the SYN proxy) on the ports.
    Off,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    pub mode: Mode,
    #[arg(value_name = "PORT", required = true)]
    pub ports: Vec<u16>,
    /// How long the limit stays on unless refreshed.
    #[arg(long = "for", value_name = "DUR", default_value = "10m")]
    pub duration: String,
    #[arg(long, default_value = "limited by hand")]
    pub reason: String,
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    let mode = match args.mode {
        Mode::Source => "source",
        Mode::Global => "global",
        Mode::Synproxy => "synproxy",
        Mode::Off => "off",
    };
    ctx.execute(Request::Limit { mode: mode.into(), ports: args.ports, duration: args.duration, reason: args.reason })?;
    Ok(())
}
