//! The fleet's edge: one task holding the connection to the NATS servers. It keeps this host's keys in the
//! bucket equal to this host's bans (the store is the outbox: after an outage the keys are made equal again
//! from the store, so nothing waits in memory and nothing is sent twice), and it watches the bucket, passing
//! every entry, decoded, to the pipeline, which alone decides what is applied.
//!
//! Local protection never waits for this task: the pipeline only offers it messages (`try_send`), and a full
//! channel or a lost connection turns into one resynchronisation when the fleet is reachable again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use async_nats::jetstream::kv::{self, Operation};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::verdict::{self, Entry, Refusal, Verdict};
use super::FleetConfig;
use crate::addr::Cidr;
use crate::store::Store;

/// What the pipeline asks of the link.
#[derive(Debug, Clone)]
pub enum ToFleet {
    /// A local ban made or renewed.
    Publish(Verdict),
    /// A local ban lifted.
    Withdraw(Cidr),
    /// Make this host's keys equal to the store's bans again (after a manual change, or a message dropped).
    Resync,
}

/// What the link passes to the pipeline.
#[derive(Debug)]
pub enum FromFleet {
    /// Bucket entries as decoded: a refusal is counted by the pipeline, never applied.
    Entries(Vec<(String, Result<Entry, Refusal>)>),
    /// Every entry the bucket held when the watch began has been passed: what the store remembers of the fleet
    /// and the bucket no longer holds can be lifted.
    Current,
}

/// The link's state as `status` shows it.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub connected: AtomicBool,
    pub published: AtomicU64,
    pub withdrawn: AtomicU64,
    pub received: AtomicU64,
    pub resyncs: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl LinkStats {
    fn failed(&self, e: &anyhow::Error) {
        self.connected.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
    }
}

/// Entries passed to the pipeline in one message at most.
const BATCH: usize = 1024;
/// After a watch begins, the bucket counts as read once no entry came for this long (an empty bucket sends none).
const QUIET: Duration = Duration::from_millis(500);
/// Pause between attempts to reach the servers, doubled up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A bucket operation that takes longer is an outage.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `to_fleet` closes (the daemon stops). `db` is the store, opened here for reading only.
pub async fn run(
    cfg: FleetConfig,
    db: PathBuf,
    mut to_fleet: mpsc::Receiver<ToFleet>,
    from_fleet: mpsc::Sender<FromFleet>,
    stats: Arc<LinkStats>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut logged_outage = false;
    loop {
        match session(&cfg, &db, &mut to_fleet, &from_fleet, &stats).await {
            Ok(()) => return,
            Err(e) => {
                stats.failed(&e);
                if !logged_outage {
                    tracing::error!(error = %format!("{e:#}"), servers = ?cfg.servers,
                        "the fleet is unreachable; local protection goes on, this host's bans are published when it returns");
                    logged_outage = true;
                }
            }
        }
        // Messages offered meanwhile are covered by the resynchronisation at the next connection.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                m = to_fleet.recv() => if m.is_none() { return },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if stats.connected.load(Ordering::Relaxed) {
            backoff = FIRST_BACKOFF;
            logged_outage = false;
        }
    }
}

/// The bucket, opened (or created, where the credentials may) over a new connection: the CLI's way in.
pub async fn open(cfg: &FleetConfig) -> Result<kv::Store> {
    let client = connect(cfg).await?;
    let js = async_nats::jetstream::new(client);
    tokio::time::timeout(OP_TIMEOUT, bucket(cfg, &js)).await.context("the bucket did not answer")?
}

async fn connect(cfg: &FleetConfig) -> Result<async_nats::Client> {
    let mut opts =
        async_nats::ConnectOptions::new().name(format!("floodgate {}", cfg.host)).connection_timeout(OP_TIMEOUT);
    if let Some(creds) = &cfg.credentials {
        opts = opts.credentials_file(creds).await.with_context(|| format!("reading {}", creds.display()))?;
    }
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    let servers: Vec<async_nats::ServerAddr> =
        cfg.servers.iter().map(|s| s.parse().map_err(|e| anyhow!("{s}: {e}"))).collect::<Result<_>>()?;
    opts.connect(servers).await.context("connecting to the fleet's servers")
}

async fn bucket(cfg: &FleetConfig, js: &async_nats::jetstream::Context) -> Result<kv::Store> {
    if let Ok(store) = js.get_key_value(&cfg.bucket).await {
        return Ok(store);
    }
    // The bucket's stream, made the way a key-value bucket is (async-nats's create_key_value first reads the
    // account's limits, whose answer from Debian's server 2.9 it cannot parse). One value per key; an entry
    // older than the longest remote ban any host applies is of no use to anyone.
    let config = async_nats::jetstream::stream::Config {
        name: format!("KV_{}", cfg.bucket),
        description: Some("floodgate: bans shared by the fleet".into()),
        subjects: vec![format!("$KV.{}.>", cfg.bucket)],
        max_messages_per_subject: 1,
        max_age: cfg.max_remote_bantime,
        max_message_size: super::verdict::MAX_VALUE_BYTES as i32,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(_) => {}
        // Another host made it in the meantime.
        Err(e) if js.get_key_value(&cfg.bucket).await.is_ok() => tracing::debug!(error = %e, "bucket made elsewhere"),
        Err(e) => return Err(e).with_context(|| format!("creating the bucket {}", cfg.bucket)),
    }
    js.get_key_value(&cfg.bucket).await.with_context(|| format!("opening the bucket {}", cfg.bucket))
}

/// One connection's life: connect, resynchronise this host's keys, then publish and watch until an error.
async fn session(
    cfg: &FleetConfig,
    db: &Path,
    to_fleet: &mut mpsc::Receiver<ToFleet>,
    from_fleet: &mpsc::Sender<FromFleet>,
    stats: &LinkStats,
) -> Result<()> {
    let client = connect(cfg).await?;
    let js = async_nats::jetstream::new(client);
    let kv = tokio::time::timeout(OP_TIMEOUT, bucket(cfg, &js)).await.context("the bucket did not answer")??;
    let mut watch = kv.watch_with_history(">").await.context("watching the bucket")?;
    resync(cfg, db, &kv, stats).await?;
    stats.connected.store(true, Ordering::Relaxed);
    tracing::info!(servers = ?cfg.servers, bucket = %cfg.bucket, host = %cfg.host, "fleet connected");
    let mut current = false;
    let mut pending: Vec<(String, Result<Entry, Refusal>)> = Vec::new();
    loop {
        let quiet = tokio::time::sleep(QUIET);
        tokio::select! {
            m = to_fleet.recv() => match m {
                None => return Ok(()),
                Some(ToFleet::Publish(v)) => {
                    put(&kv, &v).await?;
                    stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Some(ToFleet::Withdraw(target)) => {
                    tokio::time::timeout(OP_TIMEOUT, kv.delete(verdict::ban_key(&cfg.host, &target)))
                        .await
                        .context("withdrawing a ban: no answer")?
                        .context("withdrawing a ban")?;
                    stats.withdrawn.fetch_add(1, Ordering::Relaxed);
                }
                Some(ToFleet::Resync) => resync(cfg, db, &kv, stats).await?,
            },
            e = watch.next() => {
                let entry = e.ok_or_else(|| anyhow!("the bucket's watch ended"))?.context("watching the bucket")?;
                stats.received.fetch_add(1, Ordering::Relaxed);
                let caught_up = entry.delta == 0 || entry.seen_current;
                pending.push((entry.key.clone(), decode(&entry, Utc::now())));
                if pending.len() >= BATCH || caught_up {
                    send(from_fleet, FromFleet::Entries(std::mem::take(&mut pending))).await?;
                }
                if caught_up && !current {
                    current = true;
                    send(from_fleet, FromFleet::Current).await?;
                }
            }
            _ = quiet => {
                if !pending.is_empty() {
                    send(from_fleet, FromFleet::Entries(std::mem::take(&mut pending))).await?;
                }
                if !current {
                    current = true;
                    send(from_fleet, FromFleet::Current).await?;
                }
            }
        }
    }
}

async fn send(tx: &mpsc::Sender<FromFleet>, m: FromFleet) -> Result<()> {
    tx.send(m).await.map_err(|_| anyhow!("the pipeline stopped"))
}

fn decode(entry: &kv::Entry, now: DateTime<Utc>) -> Result<Entry, Refusal> {
    let value = match entry.operation {
        Operation::Put => Some(&entry.value[..]),
        Operation::Delete | Operation::Purge => None,
    };
    verdict::decode(&entry.key, value, now)
}

async fn put(kv: &kv::Store, v: &Verdict) -> Result<()> {
    tokio::time::timeout(OP_TIMEOUT, kv.put(v.key(), v.encode().into()))
        .await
        .context("publishing a ban: no answer")?
        .context("publishing a ban")?;
    Ok(())
}

/// This host's keys made equal to the store's live local bans: missing or changed ones put, others deleted.
async fn resync(cfg: &FleetConfig, db: &Path, kv: &kv::Store, stats: &LinkStats) -> Result<()> {
    let now = Utc::now();
    let mine = local_verdicts(cfg, db, now)?;
    let keys_mine: std::collections::HashSet<String> = mine.iter().map(Verdict::key).collect();
    let prefix = format!("b.{}.", cfg.host);
    let mut keys = kv.keys().await.context("listing the bucket's keys")?;
    let mut stale = Vec::new();
    while let Some(k) = keys.next().await {
        let k = k.context("listing the bucket's keys")?;
        if k.starts_with(&prefix) && !keys_mine.contains(&k) {
            stale.push(k);
        }
    }
    for k in &stale {
        tokio::time::timeout(OP_TIMEOUT, kv.delete(k)).await.context("no answer")?.context("withdrawing a ban")?;
    }
    for v in &mine {
        // Unchanged values are left alone: a resynchronisation after a short outage sends only what changed.
        let held = tokio::time::timeout(OP_TIMEOUT, kv.get(v.key())).await.context("no answer")?.ok().flatten();
        if held.as_deref() != Some(&v.encode()[..]) {
            put(kv, v).await?;
            stats.published.fetch_add(1, Ordering::Relaxed);
        }
    }
    stats.withdrawn.fetch_add(stale.len() as u64, Ordering::Relaxed);
    stats.resyncs.fetch_add(1, Ordering::Relaxed);
    tracing::info!(bans = mine.len(), withdrawn = stale.len(), "fleet: this host's bans published");
    Ok(())
}

/// The store's live bans as this host's verdicts. Bans adopted from the kernel are this host's too.
fn local_verdicts(cfg: &FleetConfig, db: &Path, now: DateTime<Utc>) -> Result<Vec<Verdict>> {
    let store = Store::open(db).context("opening the store to publish its bans")?;
    let state = store.enforced(now).context("reading the bans to publish")?;
    Ok(state.bans.iter().map(|b| from_ban(&cfg.host, b.cidr, b.until, b.since, &b.reason, &b.origin)).collect())
}

/// A local ban as this host publishes it.
pub fn from_ban(
    host: &str,
    target: Cidr,
    until: Option<DateTime<Utc>>,
    made: DateTime<Utc>,
    reason: &str,
    origin: &str,
) -> Verdict {
    Verdict {
        host: host.to_string(),
        target,
        until,
        made,
        reason: reason.chars().take(200).collect(),
        origin: origin.chars().take(64).collect(),
        figures: None,
    }
}
