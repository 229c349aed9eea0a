//! The pipeline's one stateful task: lines are parsed into events, events are stored (with the inputs'
//! positions, in one transaction) and shown to the policy, and the policy's decisions reach the kernel in one
//! netlink batch per drain of the queue. Control requests are served here too, between batches, so the store
//! and the kernel have a single writer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

use super::health::ConntrackHealth;
use super::status::{PortStatus, RecentDecision, SourceStatus, Status};
use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::decision::Decision;
use crate::enforce::{EnforceError, Enforcer};
use crate::event::Event;
use crate::fleet::link::FromFleet;
use crate::fleet::member::Member;
use crate::notice::{Notice, Notifier, ReportSource, Throttle};
use crate::parse::header::TimeContext;
use crate::parse::{LineParser, Outcome};
use crate::policy::engine::Engine;
use crate::policy::Policy;
use crate::source::{Feed, Position, SourceStats};
use crate::store::{Origin, Store};

/// A source as the pipeline sees it: its counters (read, never written here), the events parsed from its
/// lines (counted here: a line source cannot count them), and the last snapshot, for rates.
pub struct SourceEntry {
    pub name: String,
    pub stats: Arc<SourceStats>,
    parsed: u64,
    last: (u64, u64),
    rates: (f64, f64),
}

impl SourceEntry {
    pub fn new(name: String, stats: Arc<SourceStats>) -> SourceEntry {
        SourceEntry { name, stats, parsed: 0, last: (0, 0), rates: (0.0, 0.0) }
    }

    /// Lines read, and events: those the source made itself and those parsed from its lines.
    fn counts(&self) -> (u64, u64) {
        (self.stats.lines.load(Ordering::Relaxed), self.stats.events.load(Ordering::Relaxed) + self.parsed)
    }
}

pub struct Pipeline {
    pub config: Config,
    config_path: Option<PathBuf>,
    parser: LineParser,
    policy: Engine,
    throttle: Throttle,
    /// The reports convergence notices carry, from the store with this config.
    reports: ReportSource,
    /// Decide, record and notify, never touch the kernel (`floodgate run --dry-run`).
    pub dry_run: bool,
    pub store: Store,
    pub enforcer: Enforcer,
    pending: Vec<(Origin, Event)>,
    positions: HashMap<Arc<str>, Position>,
    decisions: Vec<Decision>,
    last_input: Option<Arc<str>>,
    pub sources: Vec<SourceEntry>,
    started: Instant,
    started_at: DateTime<Utc>,
    last_tick: Instant,
    last_verify: Instant,
    events_stored: u64,
    bans_made: u64,
    refused_allowlisted: u64,
    apply_errors: u64,
    /// Decisions in force in the kernel that the store could not record yet (it could not write).
    unrecorded: Vec<Decision>,
    last_nag: Option<Instant>,
    /// The store file's identity at start (device, inode): a file deleted or replaced under the daemon is noticed.
    store_file: Option<(u64, u64)>,
    /// When the SYN proxy's prerequisites were last checked, and what was found.
    synproxy_checked: Option<Instant>,
    synproxy_ready: Result<(), String>,
    /// Whether the conntrack source delivers what the kernel tracks (see `check_conntrack`).
    conntrack_health: ConntrackHealth,
    /// This host in the fleet, with `[fleet]`.
    pub fleet: Option<Member>,
    /// What the metrics count beyond `status`.
    tally: crate::metrics::Tally,
    /// When each line (or event batch) that produced a decision still on its way to the kernel arrived.
    arrivals: Vec<Instant>,
    /// The latest decisions carried out (`RECENT` at most), for `floodgate top`.
    recent: std::collections::VecDeque<RecentDecision>,
}

/// Decisions `status` lists.
const RECENT: usize = 10;

/// How often the SYN proxy's prerequisites are read again (an admin fixing a sysctl is noticed within this).
const SYNPROXY_CHECK: std::time::Duration = std::time::Duration::from_secs(10);
fn file_id(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// How often a store that cannot write is reported while decisions wait for it.
const UNRECORDED_NAG: std::time::Duration = std::time::Duration::from_secs(10);

/// Most stored failures a start or reload replays (the newest): bounded so a store full of a flood cannot stall
/// a start; far more than the jail's table holds.
const REPLAY_MAX: usize = 500_000;
/// Fleet bans applied at once up to this many are logged one by one; more (a join, a catch-up) in one line.
const FLEET_LOG_EACH: usize = 16;

pub fn parser_for(config: &Config) -> Result<LineParser> {
    LineParser::from_config(config.parsing(), &[], TimeContext::system(config.timezone)).context("loading the rules")
}

impl Pipeline {
    pub fn new(config: Config, config_path: Option<PathBuf>, store: Store, enforcer: Enforcer) -> Result<Pipeline> {
        let parser = parser_for(&config)?;
        let policy = config.policy_engine();
        let throttle = Throttle::new(&config.notify);
        let reports = ReportSource::new(config.clone(), store.path());
        let store_file = file_id(store.path());
        let mut pipeline = Pipeline {
            config,
            config_path,
            parser,
            policy,
            throttle,
            reports,
            dry_run: false,
            store,
            enforcer,
            pending: Vec::new(),
            positions: HashMap::new(),
            decisions: Vec::new(),
            last_input: None,
            sources: Vec::new(),
            started: Instant::now(),
            started_at: Utc::now(),
            last_tick: Instant::now(),
            last_verify: Instant::now(),
            events_stored: 0,
            bans_made: 0,
            refused_allowlisted: 0,
            apply_errors: 0,
            unrecorded: Vec::new(),
            last_nag: None,
            store_file,
            synproxy_checked: None,
            synproxy_ready: Err("not checked yet".into()),
            conntrack_health: ConntrackHealth::default(),
            fleet: None,
            tally: crate::metrics::Tally::default(),
            arrivals: Vec::new(),
            recent: std::collections::VecDeque::new(),
        };
        pipeline.check_synproxy();
        Ok(pipeline)
    }

    /// Takes one batch from a source: lines are parsed, events shown to the policy. Nothing is written yet.
    pub fn feed(&mut self, feed: Feed) {
        let now = Utc::now();
        match feed {
            Feed::Lines { input, lines, first_line, position, source, at } => {
                if self.last_input.as_ref() != Some(&input) {
                    self.parser.start_input();
                    self.last_input = Some(input.clone());
                }
                let before = self.pending.len();
                for (i, line) in lines.iter().enumerate() {
                    if let Outcome::Event(mut ev) = self.parser.parse_bytes(line) {
                        not_after(&mut ev, now);
                        self.hit(&ev.rule);
                        let before = self.decisions.len();
                        self.policy.observe(&ev, now, &mut self.decisions);
                        if self.decisions.len() > before {
                            self.arrivals.push(at);
                        }
                        let origin = Origin { input: input.clone(), line: first_line.map(|f| f + i as u64) };
                        self.pending.push((origin, *ev));
                    }
                }
                let parsed = (self.pending.len() - before) as u64;
                if let Some(s) = self.sources.iter_mut().find(|s| Arc::ptr_eq(&s.stats, &source)) {
                    s.parsed += parsed;
                }
                if let Some(p) = position {
                    self.positions.insert(input, p);
                }
            }
            Feed::Events { input, events, at } => {
                for mut ev in events {
                    not_after(&mut ev, now);
                    self.hit(&ev.rule);
                    let before = self.decisions.len();
                    self.policy.observe(&ev, now, &mut self.decisions);
                    if self.decisions.len() > before {
                        self.arrivals.push(at);
                    }
                    self.pending.push((Origin { input: input.clone(), line: None }, ev));
                }
            }
        }
    }

    /// Counts an event under its rule (a lookup, no allocation, once the rule has been seen).
    fn hit(&mut self, rule: &Arc<str>) {
        match self.tally.rule_hits.get_mut(rule) {
            Some(n) => *n += 1,
            None => {
                self.tally.rule_hits.insert(rule.clone(), 1);
            }
        }
    }

    /// Decisions are in the kernel: counted, and the latency of the lines behind them observed.
    fn enforced(&mut self, decisions: &[Decision]) {
        self.tally.decided(decisions);
        for at in self.arrivals.drain(..) {
            self.tally.latency.observe(at.elapsed());
        }
        self.remember(decisions, Utc::now());
    }

    /// Keeps the latest decisions for `status`: one by one, or a big batch (a fleet joining) as one line.
    fn remember(&mut self, decisions: &[Decision], now: DateTime<Utc>) {
        let one = |d: &Decision| {
            let (what, target, origin) = match d {
                Decision::Ban { cidr, origin, .. } => ("ban".to_string(), cidr.to_string(), origin.clone()),
                Decision::Unban { cidr, origin, .. } => ("unban".into(), cidr.to_string(), origin.clone()),
                Decision::Limit { port, mode, origin, .. } => {
                    (format!("limit_{}", mode.as_str()), port.to_string(), origin.clone())
                }
                Decision::Lift { port, mode, origin, .. } => {
                    (format!("lift_{}", mode.as_str()), port.to_string(), origin.clone())
                }
                Decision::Allow { cidr, origin, .. } => ("allow".into(), cidr.to_string(), origin.clone()),
                Decision::Disallow { cidr, origin } => ("disallow".into(), cidr.to_string(), origin.clone()),
                Decision::Remote { cidr, host, .. } => ("fleet_ban".into(), cidr.to_string(), host.clone()),
                Decision::RemoteLift { cidr, .. } => ("fleet_lift".into(), cidr.to_string(), "fleet".into()),
            };
            RecentDecision { at: now, what, target, origin }
        };
        if decisions.len() > RECENT {
            let mut r = one(&decisions[0]);
            r.what = format!("{} x{}", r.what, decisions.len());
            r.target = format!("{} ...", r.target);
            self.recent.push_back(r);
        } else {
            self.recent.extend(decisions.iter().map(one));
        }
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    /// Whether enough has piled up to write before the queue is drained.
    pub fn full(&self) -> bool {
        self.pending.len() >= self.config.store.batch_size
    }

    /// Writes what `feed` gathered: events and positions in one store transaction, then the decisions in one
    /// kernel batch. A failure is logged and retried at the next flush; sources are never stopped by it.
    pub fn flush(&mut self) {
        let now = Utc::now();
        if !self.pending.is_empty() || !self.positions.is_empty() {
            let positions: Vec<(&str, u64, u64)> =
                self.positions.iter().map(|(k, p)| (k.as_ref(), p.inode, p.offset)).collect();
            match self.store.insert_events_at(&self.pending, &positions, now) {
                Ok(()) => {
                    self.events_stored += self.pending.len() as u64;
                    self.pending.clear();
                    self.positions.clear();
                }
                Err(e) => {
                    tracing::error!(error = %e, events = self.pending.len(), "cannot store events; retrying");
                    // Bounded: a store that stays broken must not hold a flood in memory.
                    if self.pending.len() > 16 * self.config.store.batch_size {
                        self.pending.clear();
                    }
                }
            }
        }
        self.apply_decisions(now);
    }

    fn apply_decisions(&mut self, now: DateTime<Utc>) {
        if self.decisions.is_empty() {
            return;
        }
        // The allowlist (and the host's own addresses) always win, whatever the policy says.
        let mut decisions = std::mem::take(&mut self.decisions);
        match self.enforcer.screen(&self.store, &mut decisions) {
            Ok(refused) => {
                for r in refused {
                    match (&mut self.fleet, r.remote) {
                        (Some(f), true) => {
                            tracing::info!(cidr = %r.cidr, why = %r.why, reason = %r.reason, "fleet ban not applied here");
                            f.gate_refused(1);
                        }
                        _ => {
                            tracing::info!(cidr = %r.cidr, why = %r.why, reason = %r.reason, "ban not made");
                            self.refused_allowlisted += 1;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the allowlist; decisions wait");
                self.apply_errors += 1;
                self.decisions = decisions;
                return;
            }
        }
        if decisions.is_empty() {
            // All refused: nothing of them goes to the kernel, there is no latency to measure.
            self.arrivals.clear();
            return;
        }
        if self.dry_run {
            self.arrivals.clear();
            match self.store.record(&decisions, now, || Ok::<_, crate::store::StoreError>(())) {
                Ok(()) => {
                    for d in &decisions {
                        tracing::warn!(decision = ?d, "dry run: recorded, not enforced");
                    }
                }
                Err(e) => tracing::error!(error = %e, "dry run: cannot record decisions"),
            }
            return;
        }
        match self.enforcer.decide(&mut self.store, &decisions, now) {
            Ok(_) => {
                self.enforced(&decisions);
                let remote = decisions.iter().filter(|d| matches!(d, Decision::Remote { .. })).count();
                for d in &decisions {
                    match d {
                        Decision::Ban { cidr, until, reason, origin, .. } => {
                            self.bans_made += 1;
                            let until = until.map_or("forever".to_string(), |u| crate::event::format_time(&u));
                            tracing::warn!(%cidr, %until, %reason, %origin, "banned");
                        }
                        Decision::Remote { cidr, until, host, reason } if remote <= FLEET_LOG_EACH => {
                            let until = until.map_or("forever".to_string(), |u| crate::event::format_time(&u));
                            tracing::info!(%cidr, %until, %host, %reason, "banned by the fleet");
                        }
                        _ => {}
                    }
                }
                if remote > FLEET_LOG_EACH {
                    // A host joining a fleet takes its whole state at once: one line, not a hundred thousand.
                    tracing::info!(bans = remote, "banned by the fleet (`floodgate list --fleet` shows each)");
                }
                if let Some(f) = &mut self.fleet {
                    f.applied(decisions.iter().filter(|d| matches!(d, Decision::Remote { .. })).count());
                    f.local_decided(&decisions, now);
                }
            }
            Err(EnforceError::Store(e)) => {
                // The store cannot write (disk full, read-only): the kernel protects all the same, and the
                // decisions wait in memory until the store takes them.
                self.apply_errors += 1;
                match self.enforcer.enforce_only(&self.store, &decisions, now) {
                    Ok(_) => {
                        self.enforced(&decisions);
                        self.bans_made += decisions.iter().filter(|d| matches!(d, Decision::Ban { .. })).count() as u64;
                        tracing::error!(
                            error = %e, decisions = decisions.len(), waiting = self.unrecorded.len() + decisions.len(),
                            "the store cannot record decisions: enforced in the kernel only, recorded when the store can write"
                        );
                        self.unrecorded.extend(decisions);
                    }
                    Err(k) => {
                        tracing::error!(store = %e, kernel = %k, "cannot record nor apply decisions; retrying");
                        self.decisions = decisions;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, decisions = decisions.len(), "cannot apply decisions; retrying");
                self.apply_errors += 1;
                self.decisions = decisions;
            }
        }
    }

    /// Decisions enforced while the store could not write are recorded as soon as it can; until then the
    /// operator hears about them every `UNRECORDED_NAG`.
    fn record_unrecorded(&mut self, now: DateTime<Utc>) {
        if self.unrecorded.is_empty() {
            return;
        }
        match self.store.record(&self.unrecorded, now, || Ok::<_, crate::store::StoreError>(())) {
            Ok(()) => {
                tracing::warn!(
                    decisions = self.unrecorded.len(),
                    "the store writes again: decisions enforced meanwhile are recorded"
                );
                self.unrecorded.clear();
            }
            Err(e) => {
                if self.last_nag.is_none_or(|t| t.elapsed() >= UNRECORDED_NAG) {
                    self.last_nag = Some(Instant::now());
                    tracing::error!(
                        error = %e, waiting = self.unrecorded.len(),
                        "the store still cannot write (disk full?): bans are enforced in the kernel only; free space"
                    );
                }
            }
        }
    }

    /// Alerts become notices, throttled and aggregated; sending happens off the pipeline's thread.
    fn notify(&mut self, now: DateTime<Utc>) {
        let mut out: Vec<Notice> = Vec::new();
        for a in self.policy.take_alerts() {
            tracing::warn!(kind = a.kind.as_str(), port = ?a.port, summary = %a.summary, "alert");
            out.extend(self.throttle.offer(Notice::from_alert(&a), now));
        }
        out.extend(self.throttle.tick(now));
        self.send_notices(out);
    }

    /// What the throttle releases now, sent (before a reload replaces it).
    fn flush_notices(&mut self, now: DateTime<Utc>) {
        let out = self.throttle.tick(now);
        self.send_notices(out);
    }

    fn send_notices(&self, out: Vec<Notice>) {
        if out.is_empty() || !self.config.notify.is_enabled() {
            return;
        }
        // The report is rendered on the sending thread too: the pipeline never waits for it.
        let notifier = Notifier::new(self.config.notify.clone()).with_reports(self.reports.clone());
        let counts = self.tally.notices.clone();
        std::thread::spawn(move || {
            for n in out {
                match notifier.send(&n) {
                    Ok(()) => counts.sent.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::error!(error = %e, kind = n.kind.as_str(), "cannot notify");
                        counts.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    }

    /// Reads the SYN proxy's prerequisites again (every `SYNPROXY_CHECK`) and tells the policy; a change is logged.
    fn check_synproxy(&mut self) {
        if self.synproxy_checked.is_some_and(|t| t.elapsed() < SYNPROXY_CHECK) {
            return;
        }
        self.synproxy_checked = Some(Instant::now());
        let ready = self.enforcer.synproxy_ready();
        if ready != self.synproxy_ready {
            match &ready {
                Ok(()) => tracing::info!(
                    "the SYN proxy can be used (synproxy = \"auto\" ports switch to it under a spoofed flood)"
                ),
                Err(why) => {
                    tracing::warn!(%why, "the SYN proxy cannot be used; a spoofed flood on a port exempt from the global limit gets the per-source limit only")
                }
            }
        }
        self.synproxy_ready = ready.clone();
        self.policy.set_synproxy_ready(ready);
    }

    /// Conntrack configured, the kernel creating connections, and no event arriving: said loudly (log and status).
    fn check_conntrack(&mut self) {
        if !self.config.sources.conntrack || self.dry_run {
            return;
        }
        let Some(src) = self.sources.iter().find(|s| s.name == "conntrack") else { return };
        let events = src.counts().1;
        let waiting = src.stats.waiting.load(Ordering::Relaxed);
        let Ok(tracked) = self.enforcer.tracked_connections() else { return };
        self.conntrack_health.observe(events, waiting, tracked);
    }

    /// What the fleet's link passed: remote verdicts through the same gate as local bans, then enforced.
    pub fn fleet(&mut self, m: FromFleet) {
        let Some(f) = &mut self.fleet else { return };
        let now = Utc::now();
        let store = &self.store;
        let read = |what: &str| {
            store.enforced(now).map_err(|e| tracing::error!(error = %e, "cannot read {what} from the store")).ok()
        };
        let remote = f.take(
            m,
            now,
            || read("the fleet's bans").map(|s| s.remote.iter().map(|r| r.cidr).collect()).unwrap_or_default(),
            || read("the local bans").map(|s| s.bans.iter().map(|b| (b.cidr, b.since)).collect()).unwrap_or_default(),
        );
        // A local ban lifted by the fleet's operator: the policy must not go on taking it for banned.
        let released: Vec<crate::addr::Cidr> = remote
            .iter()
            .filter_map(|d| match d {
                Decision::Unban { cidr, .. } => Some(*cidr),
                _ => None,
            })
            .collect();
        if !released.is_empty() {
            self.policy.released(Some(&released));
        }
        // Through the same gate as every ban, in `apply_decisions`.
        self.decisions.extend(remote);
        self.apply_decisions(now);
    }

    /// Housekeeping: windows slide, ended bans leave the store, rates are measured.
    pub fn tick(&mut self) {
        let now = Utc::now();
        self.parser.ctx.reference = now;
        self.check_synproxy();
        self.check_conntrack();
        self.policy.tick(now, &mut self.decisions);
        if let Some(f) = &mut self.fleet {
            self.decisions.extend(f.tick(now));
        }
        self.record_unrecorded(now);
        self.flush();
        self.notify(now);
        if let Err(e) = self.store.expire(now) {
            tracing::error!(error = %e, "cannot expire decisions");
        }
        if self.last_verify.elapsed() >= self.config.daemon.verify_every {
            self.last_verify = Instant::now();
            self.periodic(now);
        }
        let secs = self.last_tick.elapsed().as_secs_f64().max(1e-3);
        self.last_tick = Instant::now();
        for s in &mut self.sources {
            let cur = s.counts();
            s.rates = ((cur.0 - s.last.0.min(cur.0)) as f64 / secs, (cur.1 - s.last.1.min(cur.1)) as f64 / secs);
            s.last = cur;
        }
    }

    /// Every `daemon.verify_every`: old events pruned, and (enforcing) the kernel checked against the store.
    fn periodic(&mut self, now: DateTime<Utc>) {
        let path = self.store.path().to_string();
        let id = file_id(&path);
        match (self.store_file, id) {
            (None, _) => self.store_file = id,
            (Some(was), now_id) if Some(was) != now_id => tracing::error!(
                db = %path,
                "the store file was deleted or replaced while floodgate runs: this daemon goes on with the file it \
                 opened (bans and events continue), but a restart will open what is at that path now; its table \
                 stays owned by this store, so a restart on a new store needs --adopt"
            ),
            _ => {}
        }
        // Events older than store.retention go; both tables are indexed by time.
        match self.store.prune(now, self.config.store.retention) {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned events older than store.retention"),
            Err(e) => tracing::error!(error = %e, "cannot prune old events"),
        }
        self.verify(now, "the periodic check");
    }

    /// Someone else changed floodgate's table (the nftables watch): checked against the store and repaired now.
    pub fn repair(&mut self) {
        self.verify(Utc::now(), "an outside change of the table");
    }

    /// Checks the kernel against the store and repairs it (never while dry-running); `why` names the occasion.
    fn verify(&mut self, now: DateTime<Utc>, why: &str) {
        if self.dry_run {
            return;
        }
        self.last_verify = Instant::now();
        match self.enforcer.verify(&mut self.store, now) {
            Ok(r) if r.installed || r.changes != Default::default() => {
                let c = &r.changes;
                tracing::warn!(
                    repaired = r.installed,
                    restored = c.added,
                    refreshed = c.refreshed,
                    strays = c.removed,
                    adopted = c.kept.len(),
                    "the kernel had drifted from the store ({why}); corrected"
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.apply_errors += 1;
                tracing::error!(error = %e, "cannot verify the kernel against the store ({why})");
            }
        }
    }

    /// Serves a control request (status and reload here; the rest as the CLI would, directly).
    pub fn control(&mut self, req: &Request, queued: usize, capacity: usize) -> Response {
        let mut response = self.serve_request(req, queued, capacity);
        response.db = Some(self.store.path().to_string());
        response
    }

    fn serve_request(&mut self, req: &Request, queued: usize, capacity: usize) -> Response {
        match req {
            Request::Status => match self.status(queued, capacity) {
                Ok(s) => Response::data(String::new(), serde_json::to_value(&s).unwrap_or_default()),
                Err(e) => Response::error(&e),
            },
            Request::Reload => match self.reload() {
                Ok(()) => Response::ok("configuration and rules reloaded"),
                Err(e) => Response::error(&e),
            },
            Request::Metrics => match self.metrics(queued, capacity) {
                Ok(s) => Response::ok(crate::metrics::render(&s)),
                Err(e) => Response::error(&e),
            },
            _ if self.dry_run => Response::error(&anyhow::anyhow!(
                "the daemon runs with --dry-run and does not touch the kernel; stop it to act directly"
            )),
            _ => {
                // Pending events first, so what the operator sees includes them.
                self.flush();
                let cx = control::Context {
                    config: &self.config,
                    store: &mut self.store,
                    enforcer: &mut self.enforcer,
                    now: Utc::now(),
                };
                let response = control::handle(req, cx);
                if let (true, Request::Block { targets, .. }) = (response.ok, req) {
                    let v4 = targets.iter().filter(|t| !t.contains(':')).count() as u64;
                    self.tally.blocked(v4, targets.len() as u64 - v4);
                    let what = if targets.len() == 1 { "ban".to_string() } else { format!("ban x{}", targets.len()) };
                    let target = targets.first().cloned().unwrap_or_default();
                    self.recent.push_back(RecentDecision { at: Utc::now(), what, target, origin: "manual".into() });
                    if self.recent.len() > RECENT {
                        self.recent.pop_front();
                    }
                }
                if let Some(f) = &mut self.fleet {
                    // Bans the operator made or lifted here are this host's verdicts too.
                    if response.ok && matches!(req, Request::Block { .. } | Request::Unblock { .. }) {
                        f.resync();
                    }
                }
                if let (true, Request::Unblock { targets, all, .. }) = (response.ok, req) {
                    // The policy must not go on taking them for banned, or their next attack is let through.
                    if *all {
                        self.policy.released(None);
                    } else {
                        let cidrs: Vec<crate::addr::Cidr> = targets.iter().filter_map(|t| t.parse().ok()).collect();
                        self.policy.released(Some(&cidrs));
                    }
                }
                response
            }
        }
    }

    /// Loads the config and rules again; on any error the running ones stay and the error is returned.
    pub fn reload(&mut self) -> Result<()> {
        let r = self.reload_config();
        match r {
            Ok(()) => self.tally.reloads_ok += 1,
            Err(_) => self.tally.reloads_failed += 1,
        }
        r
    }

    fn reload_config(&mut self) -> Result<()> {
        let config =
            Config::load(self.config_path.as_deref()).context("reload refused, the running configuration stays")?;
        let parser = parser_for(&config).context("reload refused, the running configuration stays")?;
        if config.db != self.config.db || config.daemon.socket != self.config.daemon.socket {
            tracing::warn!("db and daemon.socket changes take effect at the next start");
        }
        if config.metrics != self.config.metrics {
            tracing::warn!("[metrics] changes take effect at the next start");
        }
        self.enforcer.reconfigure(&config.enforcement()).context("reload: applying the new table shape")?;
        let same_policy = config.same_policy(&self.config);
        if config.notify != self.config.notify {
            // Held notices of the old throttle go out now rather than be lost with it.
            self.flush_notices(Utc::now());
            self.throttle = Throttle::new(&config.notify);
        }
        self.parser = parser;
        self.reports = self.reports.reconfigured(config.clone());
        self.config = config;
        if same_policy {
            // A reload that leaves the jail alone (logrotate's nightly one) keeps every count exactly.
            tracing::info!("configuration and rules reloaded; the policy's state is kept");
        } else {
            // A new policy starts from the store's record of recent failures, not from nothing.
            self.policy = self.config.policy_engine();
            self.policy.set_synproxy_ready(self.synproxy_ready.clone());
            let replayed = self.rebuild_windows().context("reload: rebuilding the failure windows")?;
            tracing::info!(replayed, "configuration and rules reloaded; failure windows rebuilt from the store");
        }
        Ok(())
    }

    /// Shows the policy the failures the store holds within the longest findtime, oldest first, except those a
    /// later ban or unban of the same address already answered: after a start (a crash included) or a reload
    /// that rebuilt the policy, every committed failure counts again, and an attacker whose failures were
    /// stored before the daemon died is banned now. Returns how many events were replayed.
    pub fn rebuild_windows(&mut self) -> Result<usize> {
        let now = Utc::now();
        let horizon = now - crate::policy::span(self.config.longest_findtime());
        let acted = self.store.last_acted(horizon)?;
        let events = self.store.failures_since(horizon, REPLAY_MAX)?;
        let mut replayed = 0;
        for ev in &events {
            let answered = ev.addr.and_then(|a| acted.get(&a)).is_some_and(|t| *t >= ev.time);
            if !answered {
                self.policy.observe(ev, now, &mut self.decisions);
                replayed += 1;
            }
        }
        Ok(replayed)
    }

    pub fn status(&self, queued: usize, capacity: usize) -> Result<Status> {
        let now = Utc::now();
        let (bans_active, limits) = self.store.summary(now)?;
        let mut ports = PortStatus::of_services(&self.config.services, &limits);
        let traffic = self.policy.port_traffic(now);
        for p in &mut ports {
            (p.new_per_s, p.distinct) = traffic.get(&p.port).copied().unwrap_or((0.0, 0));
        }
        Ok(Status {
            pid: std::process::id(),
            started: self.started_at,
            uptime_s: self.started.elapsed().as_secs(),
            sources: self.sources.iter().map(|s| SourceStatus::of(&s.name, &s.stats, s.counts(), s.rates)).collect(),
            queued,
            queue_capacity: capacity,
            lines_parsed: self.parser.stats.lines,
            events_stored: self.events_stored,
            unmatched: self.parser.stats.unmatched,
            malformed: self.parser.stats.malformed,
            bans_active,
            bans_made: self.bans_made,
            refused_allowlisted: self.refused_allowlisted,
            apply_errors: self.apply_errors,
            unrecorded: self.unrecorded.len(),
            evicted: self.policy.evicted(),
            tracked_sources: self.policy.tracked(),
            ports,
            problems: self.conntrack_health.problem().into_iter().map(str::to_string).collect(),
            fleet: self.fleet.as_ref().map(Member::status),
            synproxy: match &self.synproxy_ready {
                Ok(()) => "ready".into(),
                Err(why) => format!("not possible: {why}"),
            },
            recent: self.recent.iter().cloned().collect(),
        })
    }

    /// What a scrape shows: the status's counters, the tally, the ports' figures, the bans in force by origin
    /// and the kernel's drop counters (left out when they cannot be read, never shown as zeros).
    pub fn metrics(&mut self, queued: usize, capacity: usize) -> Result<crate::metrics::Snapshot> {
        use crate::metrics::{family, origin_kind, PortFigures, Snapshot, SourceFigures};
        let now = Utc::now();
        let mut bans_active: std::collections::BTreeMap<(&'static str, &'static str), u64> = Default::default();
        for (origin, v4, n) in self.store.bans_by_origin(now)? {
            *bans_active.entry((origin_kind(&origin), family(v4))).or_default() += n;
        }
        // The mode is what is in force (the store's limits, as `status` shows it); the traffic is the policy's view.
        let (_, limits) = self.store.summary(now)?;
        let traffic = self.policy.port_traffic(now);
        let ports = PortStatus::of_services(&self.config.services, &limits)
            .into_iter()
            .map(|p| {
                let (new_per_s, distinct) = traffic.get(&p.port).copied().unwrap_or((0.0, 0));
                let mode = match p.mode.as_str() {
                    "global limit" => "global",
                    "SYN proxy" => "synproxy",
                    "per-source limit" => "source",
                    _ => "normal",
                };
                PortFigures { port: p.port, service: p.service, mode, new_per_s, distinct }
            })
            .collect();
        let drops = if self.dry_run {
            None
        } else {
            self.enforcer.drop_figures().map_err(|e| tracing::debug!(error = %e, "metrics: kernel counters")).ok()
        };
        let t = &self.tally;
        Ok(Snapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            commit: env!("FLOODGATE_GIT_COMMIT").to_string(),
            started_unix: self.started_at.timestamp(),
            sources: self
                .sources
                .iter()
                .map(|s| {
                    let (lines, events) = s.counts();
                    SourceFigures {
                        name: s.name.clone(),
                        lines,
                        events,
                        lag_bytes: s.stats.lag_bytes.load(Ordering::Relaxed),
                        lost: s.stats.lost.load(Ordering::Relaxed),
                        shed: s.stats.shed.load(Ordering::Relaxed),
                    }
                })
                .collect(),
            lines_parsed: self.parser.stats.lines,
            unmatched: self.parser.stats.unmatched,
            malformed: self.parser.stats.malformed,
            rule_hits: t.rule_hits.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            queued,
            queue_capacity: capacity,
            events_stored: self.events_stored,
            store_bytes: self.store.size_bytes().ok(),
            bans_active: bans_active.into_iter().map(|((o, f), n)| (o, f, n)).collect(),
            bans_made: t.bans.iter().map(|(k, n)| (*k, *n)).collect(),
            decisions: t.decisions.iter().map(|(k, n)| (*k, *n)).collect(),
            refused: self.refused_allowlisted,
            apply_errors: self.apply_errors,
            ports,
            drops,
            latency: t.latency.clone(),
            notices_sent: t.notices.sent.load(Ordering::Relaxed),
            notices_failed: t.notices.failed.load(Ordering::Relaxed),
            notices_held: self.throttle.held(),
            reloads_ok: t.reloads_ok,
            reloads_failed: t.reloads_failed,
            tracked_sources: self.policy.tracked(),
        })
    }

    /// Writes what is pending; the kernel's bans stay (they carry their own timeouts).
    pub fn shutdown(&mut self) {
        self.flush();
        if let Err(e) = self.store.checkpoint() {
            tracing::warn!(error = %e, "store checkpoint at exit");
        }
    }
}

/// A line's time is the writer's word (a wrong clock, a forged syslog header): it may place an event in the
/// past, never after now, or a ban or a window would stretch beyond what the clock allows.
fn not_after(ev: &mut Event, now: DateTime<Utc>) {
    if ev.time > now {
        ev.time = now;
    }
}
