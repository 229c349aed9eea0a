//! The operator's command line: one module per command, all sharing the global options.

pub mod advise;
pub mod allow;
pub mod block;
pub mod events;
pub mod example_config;
pub mod fleet;
pub mod generate;
pub mod geo;
pub mod limit;
pub mod list;
pub mod notify;
pub mod parse;
pub mod report;
pub mod top;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::enforce::Enforcer;
use crate::store::Store;

/// `floodgate --version`: the version and the commit it was built from (build.rs; "unknown" outside a git
/// checkout), so that a report names the exact tree.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("FLOODGATE_GIT_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(name = "floodgate", version = VERSION, about = "Defends mail servers against brute force, DoS and spoofed SYN floods")]
pub struct Cli {
    /// Configuration file (with no file, the built-in mail-server preset).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The event store; overrides the config's `db`.
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse log files into events: the rule tester (what fail2ban-regex is to fail2ban).
    Parse(parse::Args),
    /// Query the events in the store.
    Events(events::Args),
    /// Read this machine's TCP and conntrack settings, listeners and flood history, and explain what to change
    /// (changes nothing).
    Advise(advise::Args),
    /// Draw what the store recorded over a period as one self-contained HTML page (charts per port, bans by
    /// origin, top sources, the kernel's SYN-flood lines, the advisor's findings).
    Report(report::Args),
    /// Send a test notice through the configured mail and hook (`--test`): a convergence with its report.
    Notify(notify::Args),
    /// Ban addresses or prefixes (one kernel batch for all of them).
    Block(block::BlockArgs),
    /// Lift bans.
    Unblock(block::UnblockArgs),
    /// What is enforced now: read from the kernel, joined with the store's reasons.
    List(list::Args),
    /// The admin allowlist: never banned, exempt from every limit.
    #[command(subcommand)]
    Allow(allow::Args),
    /// Switch a port's rate limit on (source: per source; global: everyone but the allowlist; synproxy: the
    /// kernel's SYN proxy) or off.
    Limit(limit::Args),
    /// Install or repair floodgate's table and make its sets match the store (after a reboot or a flush).
    Reconcile(list::ReconcileArgs),
    /// Run the daemon: tail the sources, store events, ban, serve the CLI on the control socket.
    Run(RunArgs),
    /// What the running daemon is doing: sources, rates, lag, shed events, port modes, bans.
    Status(StatusArgs),
    /// The running daemon at a glance, refreshed every second: ports, modes, rates, distinct sources, bans/s,
    /// the latest decisions (q or Ctrl-C quits).
    Top(top::Args),
    /// Ask the running daemon to reload its configuration and rules (as SIGHUP does).
    Reload(ReloadArgs),
    /// Country ranges for country-restricted ports: update (download and load), load, lookup.
    Geo(geo::Args),
    /// Several hosts sharing their bans ([fleet]): status, and the operator's fleet-wide block and unblock.
    Fleet(fleet::Args),
    /// Man pages, completions and the packaged config, for packaging (hidden: see cli::generate).
    #[command(hide = true)]
    Generate(generate::Args),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Decide, record and notify, but never touch the kernel.
    #[arg(long)]
    pub dry_run: bool,
    /// Take over a table that another floodgate store owns (its bans are adopted into this store).
    #[arg(long)]
    pub adopt: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

/// What every command starts from: the checked config and where the store is.
#[derive(Clone)]
pub struct Setup {
    pub config: Config,
    /// The file the config came from (None: the default path), for the daemon's reloads.
    pub config_path: Option<PathBuf>,
    pub db: PathBuf,
    /// `reconcile --adopt`: acting directly, take over a table another store owns.
    pub adopt: bool,
}

impl Cli {
    pub fn context(&self) -> Result<Setup> {
        let config = Config::load(self.config.as_deref())?;
        let db = self.db.clone().unwrap_or_else(|| config.db.clone());
        Ok(Setup { config, config_path: self.config.clone(), db, adopt: false })
    }
}

impl Setup {
    /// Opens the store, creating it if it does not exist.
    pub fn open_store(&self) -> Result<Store> {
        Store::open(&self.db).with_context(|| {
            // The store and the kernel are root's; the likeliest cause of a failure here is not being root.
            if !crate::os::user::is_root() {
                "opening the event store (floodgate's commands need root: run them with sudo)".to_string()
            } else {
                "opening the event store".to_string()
            }
        })
    }

    /// Carries out a request: through the daemon's control socket when the daemon runs, directly on store and
    /// kernel when it does not. Prints the response's message on stderr; fails with its error.
    pub fn execute(&self, req: Request) -> Result<Response> {
        let response = match crate::daemon::client::send(&self.config.daemon.socket, &req)? {
            Some(r) => {
                // The daemon acts on its own store: a different --db given here was not used, and must be said.
                if let Some(daemon_db) = r.db.as_deref() {
                    let same = |a: &std::path::Path, b: &std::path::Path| {
                        a == b
                            || std::fs::canonicalize(a).ok().is_some_and(|a| std::fs::canonicalize(b).ok() == Some(a))
                    };
                    if !same(&self.db, std::path::Path::new(daemon_db)) {
                        eprintln!(
                            "note: the running daemon carried this out on its own store {daemon_db}, not on {} \
                             (stop the daemon to act on another store directly)",
                            self.db.display()
                        );
                    }
                }
                r
            }
            // Said before anything is opened: no store created, no root needed, to learn the daemon is down.
            None if matches!(req, Request::Status | Request::Reload | Request::Metrics) => {
                anyhow::bail!("{}", control::NOT_RUNNING)
            }
            None => {
                let mut store = self.open_store()?;
                let mut enforcer = Enforcer::open(&self.config.enforcement())?;
                if req.writes_kernel() {
                    enforcer.claim(&store, self.adopt)?;
                }
                let cx = control::Context {
                    config: &self.config,
                    store: &mut store,
                    enforcer: &mut enforcer,
                    now: chrono::Utc::now(),
                };
                control::handle(&req, cx)
            }
        };
        if !response.ok {
            anyhow::bail!("{}", response.error);
        }
        if !response.message.is_empty() {
            eprintln!("{}", response.message);
        }
        Ok(response)
    }

    /// Opens an existing store; a missing one is an error that says how to make one.
    pub fn open_existing_store(&self) -> Result<Store> {
        if !self.db.exists() {
            anyhow::bail!(
                "{}: no event store yet (record events with `floodgate parse --save FILE`, or point --db at one)",
                self.db.display()
            );
        }
        self.open_store()
    }
}

pub fn run(cli: Cli) -> Result<()> {
    // Packaging reads no config: it must work on a build machine with none, or with a broken one.
    if let Command::Generate(args) = cli.command {
        return generate::run(args);
    }
    let ctx = cli.context()?;
    match cli.command {
        Command::Parse(args) => parse::run(&ctx, args),
        Command::Events(args) => events::run(&ctx, args),
        Command::Advise(args) => advise::run(&ctx, args),
        Command::Report(args) => report::run(&ctx, args),
        Command::Notify(args) => notify::run(&ctx, args),
        Command::Block(args) => block::run_block(&ctx, args),
        Command::Unblock(args) => block::run_unblock(&ctx, args),
        Command::List(args) => list::run(&ctx, args),
        Command::Allow(args) => allow::run(&ctx, args),
        Command::Limit(args) => limit::run(&ctx, args),
        Command::Reconcile(args) => list::run_reconcile(&ctx, args),
        // `--db` goes as the parameter; the config keeps the file's `db`, so a reload compares like with like.
        Command::Run(args) => {
            crate::daemon::run(ctx.config.clone(), ctx.config_path.clone(), ctx.db.clone(), args.dry_run, args.adopt)
        }
        Command::Status(args) => {
            let r = ctx.execute(Request::Status)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r.data)?);
            } else {
                let s: crate::daemon::status::Status = serde_json::from_value(r.data)?;
                print!("{}", s.render());
            }
            Ok(())
        }
        Command::Reload(_) => ctx.execute(Request::Reload).map(|_| ()),
        Command::Top(args) => top::run(&ctx, args),
        Command::Geo(args) => geo::run(&ctx, args),
        Command::Fleet(args) => fleet::run(&ctx, args),
        Command::Generate(_) => unreachable!("handled before the config is read"),
    }
}

#[cfg(test)]
mod tests {
    /// clap checks the whole command tree (unique names, valid `requires`) only when asked, or when the binary
    /// meets the faulty command at run time: asked here, for every command at once.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
