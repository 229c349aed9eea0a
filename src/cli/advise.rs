//! `floodgate advise`: reads this network namespace's TCP and conntrack settings, listeners, SNMP counters and
//! memory, plus the store's flood history when there is a store, and explains what to change. It changes
//! nothing; `--sysctl-conf PATH` writes the recommended sysctls to a drop-in for the operator to review.
//! Exit status 0 whatever it finds (it is an advisor); nonzero only when it cannot do its job.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{SubsecRound, Utc};

use crate::advise::{self, sysctl_conf, History, Machine};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON document: findings, what was read, the history, notes.
    #[arg(long)]
    pub json: bool,
    /// Write the recommended sysctl changes to this sysctl.d file for review (never applied).
    #[arg(long, value_name = "PATH")]
    pub sysctl_conf: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    findings: &'a [advise::Finding],
    machine: &'a Machine,
    history: Option<&'a History>,
    notes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    sysctl_conf: Option<String>,
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    // Whole seconds: the time is shown to people (the history's start, the drop-in's header).
    let now = Utc::now().trunc_subsecs(0);
    let machine = Machine::read_live();
    let history = read_history(ctx, now);
    let findings = advise::advise(&machine, history.as_ref().map_err(String::as_str), &ctx.config);
    let mut notes = machine.notes.clone();
    if let Err(reason) = &history {
        notes.push(format!("flood history skipped: {reason}"));
    }
    let written = match &args.sysctl_conf {
        Some(path) => {
            let text = sysctl_conf::render(&findings, now);
            sysctl_conf::write_atomically(path, &text)
                .with_context(|| format!("{}: cannot write the sysctl drop-in", path.display()))?;
            Some(path.display().to_string())
        }
        None => None,
    };
    let mut out = io::stdout().lock();
    if args.json {
        let report = Report {
            findings: &findings,
            machine: &machine,
            history: history.as_ref().ok(),
            notes: &notes,
            sysctl_conf: written,
        };
        // Rendered first, so a closed pipe (`| head`) surfaces as the io error main.rs stays quiet about.
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        out.write_all(text.as_bytes())?;
    } else {
        // The history's absence is already a finding; the notes are about the machine.
        out.write_all(advise::report::render(&findings, &machine.notes, written.as_deref()).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// The store's flood history, or why there is none. A missing store is not created just for advice.
fn read_history(ctx: &super::Setup, now: chrono::DateTime<Utc>) -> Result<History, String> {
    if !ctx.db.exists() {
        return Err(format!("no event store at {}", ctx.db.display()));
    }
    let store = Store::open_read_only(&ctx.db).map_err(|e| format!("cannot read the event store: {e}"))?;
    History::read(&store, now).map_err(|e| format!("cannot read the event store: {e}"))
}
