//! `floodgate limit`: switches a port's rate limit on by hand (what the policy engine does on its own): `source`
//! limits each source (hashlimit-style), `global` limits everyone together but the allowlist (limit-style).
//! A limit always has an end: if nobody refreshes it, it lapses by itself.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::Utc;

use crate::config::parse_duration;
use crate::enforce::Enforcer;
use crate::store::{Decision, LimitMode};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    Source,
    Global,
    /// Lifts the limits on the ports.
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
    let d = parse_duration(&args.duration).map_err(|e| anyhow::anyhow!("--for: {e}"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(7 * 86400) {
        bail!("--for: a limit lasts between 1s and 7d (refresh it to keep it longer)");
    }
    let mut store = ctx.open_store()?;
    let mut enforcer = Enforcer::open(&ctx.config)?;
    for p in &args.ports {
        if !enforcer.limit_ports().contains(p) {
            bail!(
                "port {p} has no limit rules: limits exist for the configured services' ports {:?}",
                enforcer.limit_ports()
            );
        }
    }
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(d).context("--for")?;
    let origin = "manual".to_string();
    let decisions: Vec<Decision> = args
        .ports
        .iter()
        .flat_map(|&port| match args.mode {
            Mode::Source => vec![Decision::Limit {
                port,
                mode: LimitMode::Source,
                until,
                reason: args.reason.clone(),
                origin: origin.clone(),
            }],
            Mode::Global => vec![Decision::Limit {
                port,
                mode: LimitMode::Global,
                until,
                reason: args.reason.clone(),
                origin: origin.clone(),
            }],
            Mode::Off => [LimitMode::Source, LimitMode::Global]
                .into_iter()
                .map(|mode| Decision::Lift { port, mode, reason: args.reason.clone(), origin: origin.clone() })
                .collect(),
        })
        .collect();
    enforcer.decide(&mut store, &decisions, now)?;
    match args.mode {
        Mode::Off => eprintln!("limits lifted on {:?}", args.ports),
        Mode::Source => eprintln!("per-source limit on port(s) {:?} for {}", args.ports, humantime::format_duration(d)),
        Mode::Global => eprintln!("global limit on port(s) {:?} for {}", args.ports, humantime::format_duration(d)),
    }
    Ok(())
}
