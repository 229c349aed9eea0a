//! `floodgate run`: the daemon. Sources (each on its own blocking thread) feed one pipeline task through a
//! bounded channel: parse -> store + policy -> decisions -> kernel. The control socket serves the CLI; SIGHUP
//! reloads config and rules (a bad one is refused and the old one keeps running); SIGTERM writes what is
//! pending and exits, leaving the kernel's bans in place (they carry their own timeouts).

pub mod client;
mod health;
mod lock;
mod pipeline;
pub(crate) mod server;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::control::{Request, Response};
use crate::enforce::Enforcer;
use crate::fleet::link::{FromFleet, LinkStats};
use crate::fleet::member::Member;
use crate::source::{self, Feed, Position, Sink, SourceStats, Stop};
use crate::store::Store;
use pipeline::{Pipeline, SourceEntry};

/// The longest the start waits for its sources to take their positions.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A control request on its way to the pipeline, with where the answer goes.
pub struct ControlMsg {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// The running sources of one configuration.
struct Running {
    stop: Stop,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops the sources. Their queued batches are fed meanwhile: a source blocked on a full queue must be
    /// able to finish, and what it read is kept.
    async fn stop(self, rx: &mut mpsc::Receiver<Feed>, pipeline: &mut Pipeline) {
        self.stop.stop();
        for mut h in self.handles {
            loop {
                tokio::select! {
                    _ = &mut h => break,
                    Some(f) = rx.recv() => tokio::task::block_in_place(|| pipeline.feed(f)),
                }
            }
        }
        tokio::task::block_in_place(|| pipeline.flush());
    }
}

/// Starts every configured source; positions come from the store so each resumes where it was.
fn start_sources(
    config: &Config,
    store: &Store,
    tx: &mpsc::Sender<Feed>,
    enforcing: bool,
) -> (Running, Vec<SourceEntry>) {
    let stop = Stop::new();
    let mut handles = Vec::new();
    let mut entries = Vec::new();
    let resume = |name: &str| match store.position(name) {
        Ok(Some((inode, offset))) => Some(Position { inode, offset }),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(input = name, error = %e, "cannot read the stored position; starting fresh");
            None
        }
    };
    let mut spawn = |name: String, run: Box<dyn FnOnce(Sink, Stop) + Send>| {
        let stats = Arc::new(SourceStats::default());
        let sink = Sink::new(tx.clone(), stats.clone());
        let stop = stop.clone();
        handles.push(tokio::task::spawn_blocking(move || run(sink, stop)));
        entries.push(SourceEntry::new(name, stats));
    };
    let s = &config.sources;
    for path in &s.files {
        let name = path.display().to_string();
        let src = source::file::FileSource::new(path.clone(), config.parse.max_line_bytes, s.from_start, resume(&name));
        spawn(name, Box::new(move |sink, stop| src.run(sink, stop)));
    }
    if s.kmsg {
        let src = source::kmsg::KmsgSource::new(s.kmsg_path.clone(), resume("kmsg"));
        spawn("kmsg".into(), Box::new(move |sink, stop| src.run(sink, stop)));
    }
    if s.netstat {
        let src = source::netstat::NetstatSource::new(s.netstat_path.clone(), s.netstat_interval);
        spawn("netstat".into(), Box::new(move |sink, stop| src.run(sink, stop)));
    }
    if s.conntrack {
        let src = source::conntrack::ConntrackSource::new();
        spawn("conntrack".into(), Box::new(move |sink, stop| src.run(sink, stop)));
    }
    if s.journald {
        let src = source::journald::JournaldSource::new(s.journald_args.clone());
        spawn("journald".into(), Box::new(move |sink, stop| src.run(sink, stop)));
    }
    // What floodgate's own limits absorb: measured only where it enforces (a dry run has no table to read).
    if enforcing {
        let src = source::nft_counters::NftCountersSource::new(config.enforce.table.clone(), config.daemon.tick);
        spawn("nft".into(), Box::new(move |sink, stop| src.run(sink, stop)));
    }
    (Running { stop, handles }, entries)
}

/// Watches the kernel's nftables notifications on a thread of its own: a change of floodgate's table by anyone
/// else wakes the pipeline for a repair at once. Without the watch (no permission, old kernel), the periodic
/// verify still repairs, later.
fn watch_table(pipeline: &mut Pipeline) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel::<()>(1);
    if pipeline.dry_run {
        return rx;
    }
    let table = pipeline.enforcer.table().to_string();
    let ours = pipeline.enforcer.portid();
    // The socket cannot cross threads: opened on the watch's own, which says when it listens.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("nft-watch".into())
        .spawn(move || {
            let mut watch = match crate::nft::watch::Watch::open() {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch nftables changes; outside changes are repaired at the periodic verify");
                    let _ = ready_tx.send(None);
                    return;
                }
            };
            // Floodgate's own large batches mute the watch: the kernel then builds no notification per element.
            let _ = ready_tx.send(watch.mute().map_err(|e| tracing::warn!(error = %e, "cannot mute the nftables watch")).ok());
            let step = std::time::Duration::from_millis(250);
            while !tx.is_closed() {
                match watch.wait(&table, ours, step) {
                    Ok(true) => {
                        // A flush is many messages: let them arrive, then one repair for all.
                        while let Ok(true) = watch.wait(&table, ours, std::time::Duration::from_millis(30)) {}
                        let _ = tx.try_send(());
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "nftables watch failed; repairs wait for the periodic verify");
                        return;
                    }
                }
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "cannot start the nftables watch"))
        .ok();
    if let Ok(Some(mute)) = ready_rx.recv_timeout(std::time::Duration::from_secs(2)) {
        pipeline.enforcer.set_mute(mute);
    }
    rx
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config: Config, config_path: Option<PathBuf>, db: PathBuf, dry_run: bool, adopt: bool) -> Result<()> {
    let _lock = lock::acquire(&db)?;
    let no_new_privs = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])));
    if let Some(warning) = config.notify.sandbox_warning(no_new_privs) {
        tracing::warn!("{warning}");
    }
    let store = Store::open(&db).context("opening the event store")?;
    let mut enforcer = Enforcer::open(&config.enforcement())?;
    if !dry_run {
        enforcer.claim(&store, adopt)?;
    }
    enforcer.keep_mirror();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("floodgate")
        .build()
        .context("starting the runtime")?;
    rt.block_on(serve(config, config_path, db, store, enforcer, dry_run))
}

/// With `[fleet]` (and not a dry run): the link to the fleet's servers on a task of its own, and this host as
/// the pipeline's member. What the link receives comes back through the returned channel.
fn join_fleet(pipeline: &mut Pipeline, db: &std::path::Path) -> mpsc::Receiver<FromFleet> {
    // Without a fleet: a channel nobody sends on, so the loop below needs no special case.
    let (from_tx, from_rx) = mpsc::channel(64);
    let Some(cfg) = pipeline.config.fleet.clone().filter(|_| !pipeline.dry_run) else { return from_rx };
    let (to_tx, to_rx) = mpsc::channel(4096);
    let stats = Arc::new(LinkStats::default());
    pipeline.fleet = Some(Member::new(&cfg, to_tx, stats.clone()));
    tokio::spawn(crate::fleet::link::run(cfg, db.to_path_buf(), to_rx, from_tx, stats));
    from_rx
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    db: PathBuf,
    mut store: Store,
    mut enforcer: Enforcer,
    dry_run: bool,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    if dry_run {
        tracing::warn!("dry run: decisions are recorded and notified, the kernel is never touched");
    } else {
        // The kernel first: whatever the store says is in force is in force before anything new is read.
        let report = tokio::task::block_in_place(|| enforcer.reconcile(&mut store, Utc::now()))?;
        tracing::info!(
            restored = report.changes.added,
            refreshed = report.changes.refreshed,
            strays = report.changes.removed,
            "table inet {} reconciled with the store",
            enforcer.table()
        );
    }
    let capacity = config.daemon.queue;
    let (tx, mut rx) = mpsc::channel::<Feed>(capacity);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlMsg>(64);
    let socket_path = config.daemon.socket.clone();
    let mut pipeline = Pipeline::new(config, config_path, store, enforcer)?;
    pipeline.dry_run = dry_run;
    // Before any new line: the failures the store already holds count again (a restart or a crash never
    // forgets them), and bans they earn are made now.
    let replayed =
        tokio::task::block_in_place(|| pipeline.rebuild_windows()).context("rebuilding the failure windows")?;
    tokio::task::block_in_place(|| pipeline.flush());
    tracing::info!(replayed, "failure windows rebuilt from the store");
    let mut from_fleet = join_fleet(&mut pipeline, &db);
    let (mut running, entries) = start_sources(&pipeline.config, &pipeline.store, &tx, !pipeline.dry_run);
    pipeline.sources = entries;
    // Last: a socket that answers means a daemon whose sources have taken their positions (so a line written
    // after the socket appears is never skipped as "before the start").
    let settle = std::time::Instant::now();
    while !pipeline.sources.iter().all(|s| s.stats.settled()) && settle.elapsed() < SETTLE_WAIT {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for s in pipeline.sources.iter().filter(|s| !s.stats.settled()) {
        tracing::warn!(source = %s.name, "source not ready yet; serving anyway");
    }
    let listener = match server::bind(&socket_path) {
        Ok(l) => l,
        Err(e) => {
            running.stop(&mut rx, &mut pipeline).await;
            return Err(e);
        }
    };
    tokio::spawn(server::serve(listener, ctl_tx.clone()));
    if let Some(addr) = pipeline.config.metrics.listen {
        // The metrics are a view: a port that cannot be had is said loudly, and protection goes on without it.
        match crate::metrics::serve::bind(addr).await {
            Ok(l) => {
                tracing::info!("metrics at http://{addr}/metrics");
                tokio::spawn(crate::metrics::serve::serve(l, ctl_tx.clone()));
            }
            Err(e) => tracing::error!(error = format!("{e:#}"), "metrics not served"),
        }
    }
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut repairs = watch_table(&mut pipeline);
    let mut tick = tokio::time::interval(pipeline.config.daemon.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(socket = %socket_path.display(), sources = pipeline.sources.len(), "floodgate running");

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let sources_before = pipeline.config.sources.clone();
                match tokio::task::block_in_place(|| pipeline.reload()) {
                    Ok(()) if pipeline.config.sources != sources_before => {
                        running.stop(&mut rx, &mut pipeline).await;
                        let (r, entries) = start_sources(&pipeline.config, &pipeline.store, &tx, !pipeline.dry_run);
                        running = r;
                        pipeline.sources = entries;
                    }
                    Ok(()) => {}
                    Err(e) => tracing::error!("{e:#}"),
                }
            }
            Some(msg) = ctl_rx.recv() => {
                let queued = capacity - tx.capacity();
                let sources_before = pipeline.config.sources.clone();
                let response = tokio::task::block_in_place(|| pipeline.control(&msg.request, queued, capacity));
                if msg.request == Request::Reload && response.ok && pipeline.config.sources != sources_before {
                    running.stop(&mut rx, &mut pipeline).await;
                    let (r, entries) = start_sources(&pipeline.config, &pipeline.store, &tx, !pipeline.dry_run);
                    running = r;
                    pipeline.sources = entries;
                }
                let _ = msg.reply.send(response);
            }
            Some(feed) = rx.recv() => {
                tokio::task::block_in_place(|| {
                    pipeline.feed(feed);
                    // Everything already queued joins this batch: under load batches grow, and the store and
                    // the kernel are written once per drain rather than once per line.
                    while !pipeline.full() {
                        match rx.try_recv() {
                            Ok(f) => pipeline.feed(f),
                            Err(_) => break,
                        }
                    }
                    pipeline.flush();
                });
            }
            Some(()) = repairs.recv() => tokio::task::block_in_place(|| pipeline.repair()),
            Some(m) = from_fleet.recv() => tokio::task::block_in_place(|| pipeline.fleet(m)),
            _ = tick.tick() => tokio::task::block_in_place(|| pipeline.tick()),
        }
    }
    tracing::info!("stopping: writing what is pending; the kernel's bans stay, with their timeouts");
    running.stop(&mut rx, &mut pipeline).await;
    while let Ok(f) = rx.try_recv() {
        pipeline.feed(f);
    }
    tokio::task::block_in_place(|| pipeline.shutdown());
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}
