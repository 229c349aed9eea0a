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
use async_nats::jetstream::kv;
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
    /// Kept by the member, sent in this host's heartbeat.
    pub applied: AtomicU64,
    pub refused: AtomicU64,
    pub held: AtomicU64,
    /// A heartbeat could not be written (the server's permissions lack `h.<host>`): said once.
    heartbeat_failed: AtomicBool,
}

impl LinkStats {
    fn failed(&self, e: &anyhow::Error) {
        self.connected.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
    }
}

/// A resynchronisation under way, polled beside the watch.
type Syncing<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// How often this host writes its heartbeat (`h.<host>`); `fleet status` calls a host silent after three.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Puts a resynchronisation keeps in flight.
const PUTS_IN_FLIGHT: usize = 256;

/// How often the connection's state is looked at.
const CHECK: Duration = Duration::from_secs(1);

/// Entries passed to the pipeline in one message at most.
const BATCH: usize = 4096;
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
    stats: &Arc<LinkStats>,
) -> Result<()> {
    let client = connect(cfg).await?;
    let js = async_nats::jetstream::new(client.clone());
    let kv = tokio::time::timeout(OP_TIMEOUT, bucket(cfg, &js)).await.context("the bucket did not answer")??;
    let (mut watch, held) = reader(&client, &kv, ">", "watch").await?;
    // This host's keys are made equal to its store while the watch already delivers: a host joining a large
    // fleet applies the others' bans without waiting for its own to be compared. Its own messages wait until
    // then, so that what the comparison puts never overtakes a later change.
    let mut syncing: Option<Syncing> = Some(Box::pin(resync(cfg, db, &client, &kv, stats)));
    // An empty bucket sends nothing to say so.
    let mut current = held == 0;
    if current {
        send(from_fleet, FromFleet::Current).await?;
    }
    let mut pending: Vec<(String, Result<Entry, Refusal>)> = Vec::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(CHECK);
    loop {
        let quiet = tokio::time::sleep(QUIET);
        tokio::select! {
            _ = heartbeat.tick(), if syncing.is_none() => beat(cfg, &kv, stats),
            // The client reconnects on its own, silently, and a watch just stops delivering: a lost connection
            // is noticed here, said (status, log), and answered by a new session, which resynchronises.
            _ = check.tick() => if client.connection_state() != async_nats::connection::State::Connected {
                return Err(anyhow!("lost the connection to the fleet's servers"));
            },
            r = async { syncing.as_mut().expect("guarded by the branch's condition").await }, if syncing.is_some() => {
                r?;
                syncing = None;
                if !stats.connected.swap(true, Ordering::Relaxed) {
                    tracing::info!(servers = ?cfg.servers, bucket = %cfg.bucket, host = %cfg.host, "fleet connected");
                }
            }
            m = to_fleet.recv(), if syncing.is_none() => match m {
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
                Some(ToFleet::Resync) => syncing = Some(Box::pin(resync(cfg, db, &client, &kv, stats))),
            },
            m = watch.next() => {
                let m = Read::of(&kv, m.ok_or_else(|| anyhow!("the bucket's watch ended"))?.context("watching the bucket")?)?;
                stats.received.fetch_add(1, Ordering::Relaxed);
                let caught_up = m.pending == 0;
                pending.push((m.key.clone(), verdict::decode(&m.key, m.value.as_deref(), Utc::now())));
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

/// Writes this host's heartbeat on a task of its own: a server that does not answer (or whose permissions lack
/// `h.<host>`, from before heartbeats) must not hold up the bans.
fn beat(cfg: &FleetConfig, kv: &kv::Store, stats: &Arc<LinkStats>) {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let beat = verdict::Beat {
        v: verdict::FORMAT,
        host: cfg.host.clone(),
        at: Utc::now(),
        published: n(&stats.published),
        withdrawn: n(&stats.withdrawn),
        applied: n(&stats.applied),
        refused: n(&stats.refused),
        held: n(&stats.held),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let (kv, key) = (kv.clone(), verdict::heartbeat_key(&cfg.host));
    let stats = stats.clone();
    tokio::spawn(async move {
        let error = match tokio::time::timeout(OP_TIMEOUT, kv.put(&key, beat.encode().into())).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_string(),
        };
        if !stats.heartbeat_failed.swap(true, Ordering::Relaxed) {
            tracing::warn!(%key, %error, "fleet: this host's heartbeat is not written (may its credentials write \
                h.<host>? see examples/nats-server.conf); bans are shared all the same");
        }
    });
}

async fn send(tx: &mpsc::Sender<FromFleet>, m: FromFleet) -> Result<()> {
    tx.send(m).await.map_err(|_| anyhow!("the pipeline stopped"))
}

async fn put(kv: &kv::Store, v: &Verdict) -> Result<()> {
    tokio::time::timeout(OP_TIMEOUT, kv.put(v.key(), v.encode().into()))
        .await
        .context("publishing a ban: no answer")?
        .context("publishing a ban")?;
    Ok(())
}

/// This host's keys made equal to the store's live local bans: missing or changed ones put, others deleted.
async fn resync(
    cfg: &FleetConfig,
    db: &Path,
    client: &async_nats::Client,
    kv: &kv::Store,
    stats: &LinkStats,
) -> Result<()> {
    let now = Utc::now();
    let mine = local_verdicts(cfg, db, now)?;
    let held = tokio::time::timeout(OP_TIMEOUT * 4, own_keys(cfg, client, kv))
        .await
        .context("listing this host's keys: no answer")??;
    let keys_mine: std::collections::HashSet<String> = mine.iter().map(Verdict::key).collect();
    let stale: Vec<&String> = held.keys().filter(|k| !keys_mine.contains(*k)).collect();
    for k in &stale {
        tokio::time::timeout(OP_TIMEOUT, kv.delete(k)).await.context("no answer")?.context("withdrawing a ban")?;
    }
    // Unchanged values are left alone: a resynchronisation after a short outage sends only what changed.
    let changed: Vec<Verdict> =
        mine.into_iter().filter(|v| held.get(&v.key()).map(|b| &b[..]) != Some(&v.encode()[..])).collect();
    let (sent, put_now) = (changed.len(), changed.len() as u64);
    // Many at once in flight (a blocklist of 100,000 is published in seconds, not one round trip each). Each
    // future owns what it sends, so the whole stays `Send` for the session's select.
    let puts = changed.into_iter().map(|v| {
        let kv = kv.clone();
        async move { put(&kv, &v).await }
    });
    let results: Vec<Result<()>> = futures_util::stream::iter(puts).buffer_unordered(PUTS_IN_FLIGHT).collect().await;
    results.into_iter().collect::<Result<()>>()?;
    stats.published.fetch_add(put_now, Ordering::Relaxed);
    stats.withdrawn.fetch_add(stale.len() as u64, Ordering::Relaxed);
    stats.resyncs.fetch_add(1, Ordering::Relaxed);
    tracing::info!(bans = keys_mine.len(), sent, withdrawn = stale.len(), "fleet: this host's bans published");
    Ok(())
}

/// This host's live keys in the bucket with their values, read through one consumer filtered on `b.<host>.`:
/// the other hosts' keys (a large fleet's hundred thousand) are never sent.
async fn own_keys(
    cfg: &FleetConfig,
    client: &async_nats::Client,
    kv: &kv::Store,
) -> Result<std::collections::HashMap<String, Vec<u8>>> {
    let (mut messages, pending) = reader(client, kv, &format!("b.{}.>", cfg.host), "own keys").await?;
    let mut out = std::collections::HashMap::new();
    if pending == 0 {
        return Ok(out);
    }
    while let Some(m) = messages.next().await {
        let m = Read::of(kv, m.context("listing this host's keys")?)?;
        if let Some(value) = m.value {
            out.insert(m.key, value.to_vec());
        }
        if m.pending == 0 {
            break;
        }
    }
    Ok(out)
}

/// An ordered consumer of the bucket's keys under `filter` (`>` for all), from the oldest value held: with one
/// value per key, that is every live key once, then every change. (async-nats's watch asks the server for the
/// last value per key instead, which the same stream answers alike but a 2.9 server computes far more slowly
/// over a hundred thousand keys.) Returns the messages and how many the bucket held when it began.
async fn reader(
    client: &async_nats::Client,
    kv: &kv::Store,
    filter: &str,
    what: &str,
) -> Result<(async_nats::jetstream::consumer::push::Ordered, u64)> {
    use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
    let consumer = kv
        .stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some(format!("floodgate: {what}")),
            filter_subject: format!("{}{filter}", kv.prefix),
            replay_policy: ReplayPolicy::Instant,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .with_context(|| format!("reading the bucket ({what})"))?;
    let pending = consumer.cached_info().num_pending;
    Ok((consumer.messages().await.with_context(|| format!("reading the bucket ({what})"))?, pending))
}

/// One message of a reader: the key, its value (None: deleted or purged) and how many follow it.
struct Read {
    key: String,
    value: Option<bytes::Bytes>,
    pending: u64,
}

impl Read {
    fn of(kv: &kv::Store, m: async_nats::jetstream::Message) -> Result<Read> {
        let pending = m.info().map_err(|e| anyhow!("a message of the bucket: {e}"))?.pending;
        let key = m.subject.strip_prefix(kv.prefix.as_str()).unwrap_or_default().to_string();
        // A deletion or purge is a marker with a header (KV-Operation, or the server's own marker reason).
        let removed = m.headers.as_ref().is_some_and(|h| {
            h.get("KV-Operation").is_some_and(|op| op.as_str() != "PUT") || h.get("Nats-Marker-Reason").is_some()
        });
        Ok(Read { key, value: (!removed).then(|| m.payload.clone()), pending })
    }
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
