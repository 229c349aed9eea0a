//! This host as a member of the fleet, as the pipeline holds it: what the bucket says becomes decisions here
//! (through the board's merge rules), and the pipeline's own bans are offered to the link. No I/O beyond
//! offering messages to the link's channel, which never blocks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::link::{from_ban, FromFleet, LinkStats, ToFleet};
use super::merge::{Board, Change, Limits};
use super::verdict::{Entry, Refusal};
use super::FleetConfig;
use crate::addr::Cidr;
use crate::decision::Decision;

/// How often ended verdicts leave the board (it walks every target).
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// The most verdicts the board holds: a million live bans across the fleet, ~200 bytes each.
const MAX_ENTRIES: usize = 1_000_000;

/// What `status` shows of the fleet.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetStatus {
    pub host: String,
    pub connected: bool,
    pub last_error: Option<String>,
    pub published: u64,
    pub withdrawn: u64,
    pub received: u64,
    /// Remote verdicts held, and the effective remote bans they make.
    pub held: usize,
    pub applied: u64,
    /// Entries not believed (undecodable, forged, ended), refused by the board's limits, or by this host's gate.
    pub refused_entries: u64,
    pub refused_limits: u64,
    pub refused_gate: u64,
    /// Entries from a newer floodgate, skipped.
    pub newer: u64,
    /// Every host heard from (this one included), by its last heartbeat.
    pub peers: Vec<Peer>,
}

/// A host of the fleet as its last heartbeat showed it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub host: String,
    /// When it wrote its last heartbeat (its clock).
    pub at: DateTime<Utc>,
    /// From its writing to this host reading it, for a heartbeat read as it came (not one replayed at a start):
    /// how far behind the fleet this host is.
    pub lag_ms: Option<f64>,
    pub published: u64,
    pub applied: u64,
    pub refused: u64,
    pub held: u64,
    pub version: String,
}

pub struct Member {
    host: String,
    board: Board,
    to_link: mpsc::Sender<ToFleet>,
    link: Arc<LinkStats>,
    /// A message the link's channel could not take: one resynchronisation covers it.
    dirty: bool,
    last_expire: Instant,
    refused_entries: u64,
    refused_gate: u64,
    last_refusal_logged: Option<Instant>,
    /// The bucket has been read whole once: what comes now comes as it is written.
    current: bool,
    peers: std::collections::BTreeMap<String, Peer>,
}

impl Member {
    pub fn new(cfg: &FleetConfig, to_link: mpsc::Sender<ToFleet>, link: Arc<LinkStats>) -> Member {
        let limits = Limits {
            max_bantime: cfg.max_remote_bantime,
            per_origin_rate: cfg.max_per_minute,
            // A host's whole set of bans arrives at once when this one joins or comes back: the burst lets a
            // large fleet's state in, the rate bounds what a compromised host can push after it.
            per_origin_burst: cfg.max_per_minute.max(250_000),
            max_entries: MAX_ENTRIES,
        };
        Member {
            host: cfg.host.clone(),
            board: Board::new(cfg.host.clone(), limits),
            to_link,
            link,
            dirty: false,
            last_expire: Instant::now(),
            refused_entries: 0,
            refused_gate: 0,
            last_refusal_logged: None,
            current: false,
            peers: Default::default(),
        }
    }

    /// What the link passed, as decisions for the pipeline. `stored` is the remote bans the store holds, read
    /// only when the bucket has been read whole (`FromFleet::Current`): those the board does not hold any more
    /// were lifted while this host was away. `local` is this host's own bans with when each was made, read only
    /// for an unblock everywhere, which lifts those made before it too.
    pub fn take(
        &mut self,
        m: FromFleet,
        now: DateTime<Utc>,
        stored: impl FnOnce() -> Vec<Cidr>,
        mut local: impl FnMut() -> Vec<(Cidr, DateTime<Utc>)>,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        match m {
            FromFleet::Entries(entries) => {
                for (key, decoded) in entries {
                    let entry = match decoded {
                        Ok(e) => e,
                        // A value whose ban has ended cancels the key's earlier value, as a deletion would.
                        Err(Refusal::Expired) => match super::verdict::decode(&key, None, now) {
                            Ok(e) => e,
                            Err(_) => continue,
                        },
                        Err(why) => {
                            self.refused_entries += 1;
                            self.log_refusal(&key, &why.to_string());
                            continue;
                        }
                    };
                    match &entry {
                        Entry::Heartbeat { host, beat } => self.heard(host, beat.as_ref(), now),
                        Entry::Newer { key } => tracing::warn!(%key, "fleet: an entry from a newer floodgate, skipped"),
                        Entry::UnblockEverywhere { target, made } => {
                            out.extend(local().into_iter().filter(|(c, since)| c == target && since <= made).map(
                                |(cidr, _)| Decision::Unban {
                                    cidr,
                                    reason: "unblocked everywhere by the fleet's operator".into(),
                                    origin: "fleet".into(),
                                },
                            ));
                        }
                        _ => {}
                    }
                    let outcome = self.board.apply(entry, now);
                    if let Some(r) = outcome.refused {
                        self.log_refusal(&key, &format!("{r:?}"));
                    }
                    out.extend(outcome.changes.into_iter().map(decision));
                }
            }
            FromFleet::Current => {
                self.current = true;
                let held: std::collections::HashSet<Cidr> = self.board.effective().map(|(c, _, _)| c).collect();
                out.extend(
                    stored()
                        .into_iter()
                        .filter(|c| !held.contains(c))
                        .map(|cidr| Decision::RemoteLift { cidr, reason: "no longer in the fleet's bucket".into() }),
                );
            }
        }
        out
    }

    /// A heartbeat read: the host's last word, and its lag when read live. A deleted one: the host left.
    fn heard(&mut self, host: &str, beat: Option<&super::verdict::Beat>, now: DateTime<Utc>) {
        let Some(b) = beat else {
            self.peers.remove(host);
            return;
        };
        let lag_ms = self.current.then(|| ((now - b.at).num_microseconds().unwrap_or(0).max(0)) as f64 / 1000.0);
        self.peers.insert(
            host.to_string(),
            Peer {
                host: host.to_string(),
                at: b.at,
                lag_ms,
                published: b.published,
                applied: b.applied,
                refused: b.refused,
                held: b.held,
                version: b.version.clone(),
            },
        );
    }

    /// Refusals are counted always and logged at most once a minute: a hostile host must not flood the log.
    fn log_refusal(&mut self, key: &str, why: &str) {
        if self.last_refusal_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            self.last_refusal_logged = Some(Instant::now());
            tracing::warn!(%key, %why, "fleet: an entry refused (further ones for a minute are only counted)");
        }
    }

    /// Remote decisions this host's gate refused (the allowlist, its own addresses, too wide).
    pub fn gate_refused(&mut self, n: usize) {
        self.refused_gate += n as u64;
    }

    /// Remote decisions applied (counted where the heartbeat reads them too).
    pub fn applied(&mut self, n: usize) {
        self.link.applied.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The pipeline's own decisions, once enforced: bans published, unbans withdrawn.
    pub fn local_decided(&mut self, decisions: &[Decision], now: DateTime<Utc>) {
        for d in decisions {
            let m = match d {
                Decision::Ban { cidr, until, reason, origin, .. } => {
                    ToFleet::Publish(from_ban(&self.host, *cidr, *until, now, reason, origin))
                }
                Decision::Unban { cidr, .. } => ToFleet::Withdraw(*cidr),
                _ => continue,
            };
            self.offer(m);
        }
    }

    /// After a change the pipeline did not describe (an operator's request): the link compares all.
    pub fn resync(&mut self) {
        self.offer(ToFleet::Resync);
    }

    fn offer(&mut self, m: ToFleet) {
        if self.to_link.try_send(m).is_err() {
            self.dirty = true;
        }
    }

    /// Every tick: a resynchronisation owed is offered again, ended verdicts leave the board now and then.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Decision> {
        if self.dirty && self.to_link.try_send(ToFleet::Resync).is_ok() {
            self.dirty = false;
        }
        // What this host's heartbeat says of it.
        let c = self.board.counts();
        let refused = self.refused_entries + c.refused.rate_limited + c.refused.full + self.refused_gate;
        self.link.refused.store(refused, Ordering::Relaxed);
        self.link.held.store(self.board.held() as u64, Ordering::Relaxed);
        if self.last_expire.elapsed() < EXPIRE_EVERY {
            return Vec::new();
        }
        self.last_expire = Instant::now();
        self.board.expire(now).into_iter().map(decision).collect()
    }

    pub fn status(&self) -> FleetStatus {
        let l = &self.link;
        let c = self.board.counts();
        FleetStatus {
            host: self.host.clone(),
            connected: l.connected.load(Ordering::Relaxed),
            last_error: l.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            published: l.published.load(Ordering::Relaxed),
            withdrawn: l.withdrawn.load(Ordering::Relaxed),
            received: l.received.load(Ordering::Relaxed),
            held: self.board.held(),
            applied: l.applied.load(Ordering::Relaxed),
            refused_entries: self.refused_entries,
            refused_limits: c.refused.rate_limited + c.refused.full + c.refused.expired,
            refused_gate: self.refused_gate,
            newer: c.newer,
            peers: self.peers.values().cloned().collect(),
        }
    }
}

fn decision(c: Change) -> Decision {
    match c {
        Change::Ban { target, until, host, reason } => Decision::Remote { cidr: target, until, host, reason },
        Change::Lift { target } => Decision::RemoteLift { cidr: target, reason: "lifted in the fleet".into() },
    }
}
