//! Enforcement: decisions in the store made true in the kernel. Each change is recorded and applied in one step
//! (store transaction around one netlink batch: both or neither), and `reconcile` makes the kernel's sets match
//! the store again after a reboot, a `nft flush ruleset` or a crash.

pub mod config;
pub mod geo;
pub mod host;
pub mod plan;
pub mod synproxy;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::addr::Cidr;
use crate::decision::{Decision, LimitMode};
use crate::nft::ruleset::{
    ALLOW4, ALLOW6, BAN4, BAN4_NET, BAN6, BAN6_NET, FLEET4, FLEET4_NET, FLEET6, FLEET6_NET, GLOBAL_PORTS, OWNER_PREFIX,
    SOURCE_PORTS, SYNPROXY_PORTS,
};
use crate::nft::{Element, Kernel, Key, NftError, Ruleset};
use crate::store::{Enforced, Store, StoreError};
use plan::{Changes, Want, FOREVER};

pub use config::{EnforceConfig, Setup};

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error(transparent)]
    Kernel(#[from] NftError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Geo(#[from] crate::geo::GeoError),
    #[error("{0}")]
    Owner(String),
}

/// A ban `Enforcer::screen` would not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub cidr: Cidr,
    /// Why it may not be made.
    pub why: String,
    /// The ban's own reason.
    pub reason: String,
    /// Another fleet host's ban (`Decision::Remote`), not this host's own.
    pub remote: bool,
}

/// What one enforcement step changed in the kernel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// The table's shape was (re)installed.
    pub installed: bool,
    pub changes: Changes,
    /// Country sets loaded by this step, if any.
    pub geo: Vec<geo::GeoLoaded>,
}

/// One line of `floodgate list`: an element the kernel enforces, joined with the store's reason for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listed {
    /// ban, limit_source or limit_global.
    pub action: String,
    /// The address, prefix or port.
    pub target: String,
    /// Seconds the kernel will still enforce it (None: until removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_s: Option<u64>,
    pub reason: String,
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// In force in the kernel; false for something the store holds but the kernel lost (reconcile restores it).
    pub in_kernel: bool,
    /// In the store; false for a stray the next reconcile removes.
    pub in_store: bool,
    /// What led to the decision, when the policy recorded it (counts, rates, evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<serde_json::Value>,
}

/// What floodgate last wrote to each set: element -> when the kernel drops it (None: never).
type Mirror = HashMap<&'static str, HashMap<Key, Option<Instant>>>;

pub struct Enforcer {
    kernel: Kernel,
    /// Kept by the daemon (`keep_mirror`) so a decision is diffed against memory, not against a dump of every
    /// set; dropped on any kernel error and rebuilt from a dump, and refreshed by every reconcile.
    mirror: Option<Mirror>,
    keep_mirror: bool,
    ruleset: Ruleset,
    config_allow: Vec<Cidr>,
    /// The operator's allowlist as the store holds it: read once, then kept current by the `Allow` and
    /// `Disallow` decisions this enforcer records (every change to it in the daemon is one), so screening a
    /// decision costs no query. `None`: to be read.
    stored_allow: Option<Vec<Cidr>>,
    limit_ports: Vec<u16>,
    widest_v4: u8,
    widest_v6: u8,
    geo: geo::GeoPlan,
    /// The host's own addresses (never banned), refreshed at open, reconfigure and verify.
    own: Vec<std::net::IpAddr>,
    /// Set when the kernel refused the SYN proxy's rules (no nft_synproxy): the table went in without them.
    synproxy_refused: Option<String>,
}

/// The SYN proxy's shape measured on this host, for the ports that may use it.
fn measured_synproxy(mut ruleset: Ruleset) -> Ruleset {
    if let Some(sp) = &mut ruleset.synproxy {
        let p = synproxy::probe(Path::new("/proc"), synproxy::smallest_mtu());
        (sp.mss4, sp.mss6, sp.wscale) = (p.mss4, p.mss6, p.wscale);
    }
    ruleset
}

/// The host's addresses; on error (no getifaddrs) none, logged: loopback and the other special addresses are
/// refused by `Cidr::special` whatever this returns.
fn own_addresses_logged() -> Vec<std::net::IpAddr> {
    host::own_addresses().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read this host's addresses; only loopback and special addresses are protected");
        Vec::new()
    })
}

/// Bans as the four sets hold them: addresses in the hash sets as they are (a hash set and an interval set may
/// overlap: a packet is dropped if either holds its source, so an address inside a banned prefix keeps its own
/// end), prefixes flattened for the interval sets. In order: v4, v6, v4 prefixes, v6 prefixes.
fn ban_sets(bans: impl Iterator<Item = (Cidr, i64)>, now: DateTime<Utc>) -> [Vec<Want>; 4] {
    let [mut v4, mut v6, mut v4_net, mut v6_net] = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut prefixes: Vec<(Cidr, i64)> = Vec::new();
    for (cidr, until) in bans {
        match (cidr.is_host(), cidr.addr().is_ipv4()) {
            (true, true) => v4.push((Key::Addr(cidr.addr()), remaining(until, now))),
            (true, false) => v6.push((Key::Addr(cidr.addr()), remaining(until, now))),
            (false, _) => prefixes.push((cidr, until)),
        }
    }
    for (cidr, until) in plan::flatten_bans(&prefixes) {
        let w = (Key::Net(cidr), remaining(until, now));
        if cidr.addr().is_ipv4() {
            v4_net.push(w)
        } else {
            v6_net.push(w)
        }
    }
    [v4, v6, v4_net, v6_net]
}

fn remaining(until: i64, now: DateTime<Utc>) -> Option<Duration> {
    if until == FOREVER {
        return None;
    }
    let left = until.saturating_sub(now.timestamp_micros()).max(1000);
    Some(Duration::from_micros(left as u64))
}

impl Enforcer {
    pub fn open(config: &Setup) -> Result<Enforcer, EnforceError> {
        let ruleset = measured_synproxy(config.ruleset());
        Ok(Enforcer {
            kernel: Kernel::open()?,
            mirror: None,
            keep_mirror: false,
            limit_ports: ruleset.ports.iter().map(|p| p.port).collect(),
            ruleset,
            config_allow: config.allowlist.to_vec(),
            stored_allow: None,
            widest_v4: config.enforce.widest_prefix_v4,
            widest_v6: config.enforce.widest_prefix_v6,
            geo: geo::GeoPlan::from_config(config),
            own: own_addresses_logged(),
            synproxy_refused: None,
        })
    }

    /// Whether the SYN proxy can work now (its rules in the table, the sysctls it needs), or why not.
    pub fn synproxy_ready(&self) -> Result<(), String> {
        if self.ruleset.synproxy.is_none() {
            return Err("no service may use it (synproxy = \"never\" everywhere)".into());
        }
        if let Some(why) = &self.synproxy_refused {
            return Err(why.clone());
        }
        synproxy::probe(Path::new("/proc"), synproxy::smallest_mtu()).ready
    }

    /// The ports whose service may use the SYN proxy (its rules exist for them).
    pub fn synproxy_ports(&self) -> &[u16] {
        self.ruleset.synproxy.as_ref().map_or(&[], |s| &s.ports)
    }

    /// New TCP connections conntrack created so far (the `track` chain's counter; 0 without `[sources] conntrack`).
    pub fn tracked_connections(&mut self) -> Result<u64, EnforceError> {
        let table = self.ruleset.table.clone();
        Ok(self.kernel.chain_packets(&table, crate::nft::ruleset::TRACK_CHAIN)?)
    }

    /// Remember what was written, so later decisions need no set dumps (the daemon's mode).
    pub fn keep_mirror(&mut self) {
        self.keep_mirror = true;
    }

    /// Makes `store` the owner of floodgate's table: its id is written into the table at the next install. A
    /// table another store owns is refused, naming both, unless `adopt` (its marker is then removed, and its
    /// bans, unknown to this store, are adopted at the reconcile that follows).
    pub fn claim(&mut self, store: &Store, adopt: bool) -> Result<(), EnforceError> {
        let id = store.id()?;
        let mine = format!("{OWNER_PREFIX}{id}");
        let table = self.ruleset.table.clone();
        let others: Vec<String> =
            self.kernel.chains(&table)?.into_iter().filter(|c| c.starts_with(OWNER_PREFIX) && *c != mine).collect();
        if !others.is_empty() {
            let theirs = others.iter().map(|c| &c[OWNER_PREFIX.len()..]).collect::<Vec<_>>().join(", ");
            if !adopt {
                return Err(EnforceError::Owner(format!(
                    "table inet {table} belongs to another floodgate store (id {theirs}); this store, {}, is {id}. \
                     A floodgate on another --db runs in this network namespace, or this store replaced the one that \
                     made the table. Its bans stay in force. Stop the other floodgate, or pass --adopt to take the \
                     table over (its bans are adopted into this store)",
                    store.path()
                )));
            }
            tracing::warn!(table = %table, previous = %theirs, store = %id, "adopting the table of another store (--adopt)");
            self.kernel.delete_chains(&table, &others)?;
        }
        self.ruleset.owner = Some(id);
        Ok(())
    }

    /// Takes a new config (reload). The table's shape is installed again when it changed.
    pub fn reconfigure(&mut self, config: &Setup) -> Result<(), EnforceError> {
        let mut ruleset = measured_synproxy(config.ruleset());
        ruleset.owner = self.ruleset.owner.clone();
        let changed = ruleset != self.ruleset;
        self.limit_ports = ruleset.ports.iter().map(|p| p.port).collect();
        self.ruleset = ruleset;
        self.config_allow = config.allowlist.to_vec();
        self.widest_v4 = config.enforce.widest_prefix_v4;
        self.widest_v6 = config.enforce.widest_prefix_v6;
        self.mirror = None;
        self.own = own_addresses_logged();
        if changed {
            self.install()?;
        }
        let geo = geo::GeoPlan::from_config(config);
        if changed || !geo.same_config(&self.geo) {
            self.geo = geo;
            self.sync_geo_logged();
        }
        Ok(())
    }

    pub fn table(&self) -> &str {
        &self.ruleset.table
    }

    /// What each of the table's drop rules has dropped: the ban and country rules' named counters, and the
    /// limit rules' per port (both families summed).
    pub fn drop_figures(&mut self) -> Result<Vec<crate::metrics::DropFigures>, EnforceError> {
        use crate::metrics::DropFigures;
        use crate::nft::ruleset::{GLOBAL_CHAIN, SOURCE_CHAIN};
        let table = self.ruleset.table.clone();
        let counted: HashMap<String, (u64, u64)> =
            self.kernel.counters(&table)?.into_iter().map(|(name, p, b)| (name, (p, b))).collect();
        let mut out = Vec::new();
        for c in self.ruleset.drop_counters() {
            // A counter the table lacks (created by an older floodgate, repaired at the next verify) is left out.
            if let Some(&(packets, bytes)) = counted.get(&c.name) {
                out.push(DropFigures {
                    rule: c.rule,
                    family: Some(c.family),
                    service: c.service,
                    port: None,
                    packets,
                    bytes,
                });
            }
        }
        for (chain, rule) in [(SOURCE_CHAIN, "limit_source"), (GLOBAL_CHAIN, "limit_global")] {
            let mut ports: Vec<(u16, (u64, u64))> = self.kernel.limit_counts(&table, chain)?.into_iter().collect();
            ports.sort();
            for (port, (packets, bytes)) in ports {
                out.push(DropFigures { rule, family: None, service: None, port: Some(port), packets, bytes });
            }
        }
        Ok(out)
    }

    /// The netlink port id floodgate writes the kernel from (its own changes are not news to the watch).
    /// The daemon's nftables watch, muted while this enforcer writes a large batch (see `nft::watch::Mute`).
    pub fn set_mute(&mut self, mute: crate::nft::watch::Mute) {
        self.kernel.set_mute(mute);
    }

    pub fn portid(&self) -> u32 {
        self.kernel.portid()
    }

    /// Ports that have limit rules (the configured services' ports).
    pub fn limit_ports(&self) -> &[u16] {
        &self.limit_ports
    }

    /// The one gate every ban passes, the policy's and the operator's: bans that may not be made are taken out
    /// of `decisions` and returned with the reason. On a store error `decisions` is left as it was.
    pub fn screen(&mut self, store: &Store, decisions: &mut Vec<Decision>) -> Result<Vec<Refused>, StoreError> {
        self.read_allowlist(store)?;
        let mut refused = Vec::new();
        decisions.retain(|d| match d {
            Decision::Ban { cidr, reason, .. } | Decision::Remote { cidr, reason, .. } => match self.refusal(cidr) {
                Some(why) => {
                    let remote = matches!(d, Decision::Remote { .. });
                    refused.push(Refused { cidr: *cidr, why, reason: reason.clone(), remote });
                    false
                }
                None => true,
            },
            _ => true,
        });
        Ok(refused)
    }

    /// Why `cidr` may not be banned, if it may not (see `screen`).
    pub fn refuse_ban(&mut self, store: &Store, cidr: &Cidr) -> Result<Option<String>, StoreError> {
        self.read_allowlist(store)?;
        Ok(self.refusal(cidr))
    }

    fn read_allowlist(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.stored_allow.is_none() {
            self.stored_allow = Some(store.allowlist()?.iter().map(|a| a.cidr).collect());
        }
        Ok(())
    }

    /// An allowlist change recorded (or maybe recorded: an error part-way) is read back before the next screen.
    fn allowlist_changed(&mut self, decisions: &[Decision]) {
        if decisions.iter().any(|d| matches!(d, Decision::Allow { .. } | Decision::Disallow { .. })) {
            self.stored_allow = None;
        }
    }

    /// Why `cidr` may not be banned, if it may not: loopback, unspecified, multicast or broadcast, an address of
    /// this host (or a prefix holding one), too wide, or wholly on the allowlist.
    fn refusal(&self, cidr: &Cidr) -> Option<String> {
        let stored_allow = self.stored_allow.as_deref().unwrap_or_default();
        if let Some(what) = cidr.special() {
            return Some(format!("{cidr} is or holds {what}: floodgate never bans it"));
        }
        let widest = if cidr.addr().is_ipv4() { self.widest_v4 } else { self.widest_v6 };
        if cidr.prefix_len() == 0 {
            return Some(format!("{cidr} would ban every address"));
        }
        if cidr.prefix_len() < widest {
            let key = if cidr.addr().is_ipv4() { "widest_prefix_v4" } else { "widest_prefix_v6" };
            return Some(format!("{cidr} is wider than /{widest} (enforce.{key} in the config)"));
        }
        if let Some(own) = self.own.iter().find(|a| cidr.contains(**a)) {
            return Some(format!("{cidr} is or holds {own}, an address of this host: floodgate never bans it"));
        }
        let covering = |list: &[Cidr]| list.iter().find(|a| a.covers(cidr)).copied();
        if let Some(a) = covering(&self.config_allow) {
            return Some(format!("{cidr} is on the allowlist ({a}, from the config)"));
        }
        if let Some(a) = covering(stored_allow) {
            return Some(format!("{cidr} is on the allowlist ({a}; `floodgate allow del {a}` to remove it)"));
        }
        None
    }

    /// The elements each set should hold for `state` at `now`.
    fn wanted(&self, state: &Enforced, now: DateTime<Utc>) -> Vec<(&'static str, Vec<Want>)> {
        // Addresses go to the hash sets as they are: a hash set and an interval set may overlap (a packet is
        // dropped if either holds its source), so an address inside a banned prefix keeps its own end. Only
        // prefixes among themselves must be flattened, for the interval sets.
        let [ban4, ban6, ban4_net, ban6_net] =
            ban_sets(state.bans.iter().map(|b| (b.cidr, b.until.map_or(FOREVER, |u| u.timestamp_micros()))), now);
        let mut allow: Vec<Cidr> = self.config_allow.clone();
        allow.extend(state.allowlist.iter().map(|a| a.cidr));
        let (mut allow4, mut allow6) = (Vec::new(), Vec::new());
        for cidr in plan::flatten_allow(&allow) {
            let w = (Key::Net(cidr), None);
            if cidr.addr().is_ipv4() {
                allow4.push(w)
            } else {
                allow6.push(w)
            }
        }
        let (mut source, mut global, mut synproxy) = (Vec::new(), Vec::new(), Vec::new());
        let proxied = self.ruleset.synproxy.as_ref().map_or(&[][..], |s| &s.ports[..]);
        for l in &state.limits {
            if !self.limit_ports.contains(&l.port) {
                continue;
            }
            let w = (Key::Port(l.port), remaining(l.until.timestamp_micros(), now));
            match l.mode {
                LimitMode::Source => source.push(w),
                LimitMode::Global => global.push(w),
                // Only a port whose proxy rules exist: elsewhere an untracked SYN would reach nothing that answers.
                LimitMode::Synproxy if proxied.contains(&l.port) => synproxy.push(w),
                LimitMode::Synproxy => {}
            }
        }
        let mut sets = vec![
            (ALLOW4, allow4),
            (ALLOW6, allow6),
            (BAN4, ban4),
            (BAN6, ban6),
            (BAN4_NET, ban4_net),
            (BAN6_NET, ban6_net),
            (SOURCE_PORTS, source),
            (GLOBAL_PORTS, global),
            (SYNPROXY_PORTS, synproxy),
        ];
        if self.ruleset.fleet {
            let remote = state.remote.iter().map(|r| (r.cidr, r.until.map_or(FOREVER, |u| u.timestamp_micros())));
            let [f4, f6, f4_net, f6_net] = ban_sets(remote, now);
            sets.extend([(FLEET4, f4), (FLEET6, f6), (FLEET4_NET, f4_net), (FLEET6_NET, f6_net)]);
        }
        sets
    }

    /// Makes the kernel sets hold `state`, in one batch. A missing table is installed first. A ban the store
    /// does not know stays unless `release` (the prefixes being unbanned) covers it: it is reported in
    /// `changes.kept` for adoption, never silently removed.
    fn sync(&mut self, state: &Enforced, now: DateTime<Utc>, release: &[Cidr]) -> Result<Report, EnforceError> {
        let mut report = Report::default();
        let wanted = self.wanted(state, now);
        let mut ops = Vec::new();
        let clock = Instant::now();
        for (set, want) in &wanted {
            let remembered = self.mirror.as_ref().and_then(|m| m.get(set));
            let actual = match remembered {
                Some(m) => m
                    .iter()
                    .filter(|(_, end)| end.is_none_or(|end| end > clock))
                    .map(|(key, end)| Element { key: *key, timeout: None, expires: end.map(|end| end - clock) })
                    .collect(),
                None => match self.kernel.elements(&self.ruleset.table, set) {
                    Ok(a) => a,
                    Err(NftError::Missing { .. }) if !report.installed => {
                        self.install()?;
                        report.installed = true;
                        self.kernel.elements(&self.ruleset.table, set)?
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            let is_ban = [BAN4, BAN6, BAN4_NET, BAN6_NET].contains(set);
            let keep = |key: &Key| is_ban && key.cidr().is_some_and(|piece| !release.iter().any(|r| r.covers(&piece)));
            plan::diff(set, want, &actual, &keep, &mut ops, &mut report.changes);
        }
        if let Err(e) = self.kernel.apply(&self.ruleset.table, &ops) {
            self.mirror = None;
            return Err(e.into());
        }
        if self.keep_mirror {
            self.mirror = Some(
                wanted
                    .into_iter()
                    .map(|(set, want)| (set, want.into_iter().map(|(k, left)| (k, left.map(|l| clock + l))).collect()))
                    .collect(),
            );
        }
        Ok(report)
    }

    /// The country sets loaded, or why not, logged: bans and limits must not wait on country data.
    fn sync_geo_logged(&mut self) -> Vec<geo::GeoLoaded> {
        match self.sync_geo() {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "cannot load the country sets; restricted ports stay as they were");
                Vec::new()
            }
        }
    }

    /// Installs or repairs the table's shape; one whose sets were redefined by hand is rebuilt.
    pub(crate) fn install(&mut self) -> Result<(), EnforceError> {
        match self.install_shape() {
            Err(e) if self.ruleset.synproxy.is_some() => {
                // A kernel without nft_synproxy refuses the whole table: protection first, without the proxy.
                let why = format!("the kernel refused the SYN proxy's rules ({e}); is nft_synproxy available?");
                tracing::error!(%why, "installing floodgate's table without the SYN proxy");
                self.synproxy_refused = Some(why);
                self.ruleset.synproxy = None;
                self.install_shape()
            }
            other => other,
        }
    }

    fn install_shape(&mut self) -> Result<(), EnforceError> {
        match self.kernel.install(&self.ruleset) {
            Ok(()) => Ok(()),
            Err(NftError::Rejected { what, errno, .. }) => {
                tracing::warn!(%what, errno, "the table's shape cannot be repaired in place; rebuilding it");
                self.kernel.rebuild(&self.ruleset, &[])?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Installs or repairs the table, then makes its sets match the store: missing elements are re-added with
    /// their remaining time, strays removed. What a start (or `floodgate reconcile`) does.
    pub fn reconcile(&mut self, store: &mut Store, now: DateTime<Utc>) -> Result<Report, EnforceError> {
        store.expire(now)?;
        self.mirror = None;
        self.stored_allow = None;
        self.install()?;
        let state = store.enforced(now)?;
        let mut report = self.sync(&state, now, &[])?;
        self.adopt(store, &report.changes.kept, now);
        report.installed = true;
        report.geo = self.sync_geo_logged();
        Ok(report)
    }

    /// Checks the kernel against the store without trusting memory: chains flushed or edited by hand are
    /// repaired, lost elements re-added, strays removed. The daemon runs it periodically, so enforcement
    /// cannot decay silently (what cs-firewall-bouncer#509 describes).
    pub fn verify(&mut self, store: &mut Store, now: DateTime<Utc>) -> Result<Report, EnforceError> {
        self.mirror = None;
        self.own = own_addresses_logged();
        let damaged = self.damaged_chains()?;
        if !damaged.is_empty() {
            tracing::warn!(?damaged, "the table was altered outside floodgate; repairing it");
            self.install()?;
        }
        let state = store.enforced(now)?;
        let mut report = self.sync(&state, now, &[])?;
        self.adopt(store, &report.changes.kept, now);
        report.installed = !damaged.is_empty();
        match self.check_geo() {
            Ok(loaded) => report.geo = loaded.unwrap_or_default(),
            Err(e) => tracing::error!(error = %e, "cannot check the country sets"),
        }
        Ok(report)
    }

    /// Bans found in the kernel but not in the store (a lost or replaced store, a store that could not write, a
    /// ban added by hand) are taken into the store with the time the kernel still gives them, loudly. If the
    /// store cannot take them they stay in the kernel all the same, until their own timeout.
    fn adopt(&mut self, store: &mut Store, kept: &[(Key, Option<Duration>)], now: DateTime<Utc>) {
        if kept.is_empty() {
            return;
        }
        let decisions: Vec<Decision> = kept
            .iter()
            .filter_map(|(key, left)| {
                let cidr = key.cidr()?;
                let until =
                    left.and_then(|l| chrono::Duration::from_std(l).ok()).and_then(|l| now.checked_add_signed(l));
                Some(Decision::Ban {
                    cidr,
                    until,
                    reason: "found in the kernel, not in the store (adopted, not removed)".into(),
                    origin: "adopted".into(),
                    figures: None,
                })
            })
            .collect();
        let shown: Vec<String> = kept.iter().take(10).map(|(k, _)| k.to_string()).collect();
        match store.record(&decisions, now, || Ok::<_, StoreError>(())) {
            Ok(()) => tracing::warn!(
                bans = decisions.len(), first = ?shown,
                "bans in the kernel that the store did not know were adopted into it (a lost or replaced store, or a hand edit?)"
            ),
            Err(e) => tracing::error!(
                error = %e, bans = decisions.len(), first = ?shown,
                "bans in the kernel that the store does not know are kept, but the store cannot record them"
            ),
        }
    }

    /// Records `decisions` and applies their effect to the kernel: both, or (on any error) neither.
    pub fn decide(
        &mut self,
        store: &mut Store,
        decisions: &[Decision],
        now: DateTime<Utc>,
    ) -> Result<Report, EnforceError> {
        self.allowlist_changed(decisions);
        let hosts_only = decisions.iter().all(|d| match d {
            Decision::Ban { cidr, .. } | Decision::Unban { cidr, .. } => cidr.is_host(),
            Decision::Remote { cidr, .. } | Decision::RemoteLift { cidr, .. } => self.ruleset.fleet && cidr.is_host(),
            _ => false,
        });
        if self.mirror.is_some() && hosts_only {
            // The daemon's common case, a few addresses banned: applied from memory, whatever the number of
            // bans already in force. Anything unexpected falls back to the full path below.
            match store.record(decisions, now, || self.apply_hosts(decisions, now)) {
                Err(EnforceError::Kernel(e)) if matches!(e.errno(), Some(libc::ENOENT | libc::EEXIST)) => {
                    tracing::debug!(error = %e, "kernel state differed from memory; reading it back");
                    self.mirror = None;
                }
                r => return r,
            }
        }
        let from_memory = self.mirror.is_some();
        let release: Vec<Cidr> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Unban { cidr, .. } => Some(*cidr),
                _ => None,
            })
            .collect();
        match store.decide(decisions, now, |state| self.sync(state, now, &release)) {
            // The memory was stale (an element expired a moment early, a hand edit): once more from a dump.
            Err(EnforceError::Kernel(e)) if from_memory && matches!(e.errno(), Some(libc::ENOENT | libc::EEXIST)) => {
                tracing::debug!(error = %e, "kernel state differed from memory; reading it back");
                self.mirror = None;
                store.decide(decisions, now, |state| self.sync(state, now, &release))
            }
            r => r,
        }
    }

    /// Applies `decisions` to the kernel alone, when the store cannot record them (disk full, read-only): the
    /// host stays protected, and the caller keeps the decisions to record once the store can write again.
    /// The state is what the store holds with these decisions laid over it; bans applied this way earlier and
    /// not yet recorded are strays to `sync`, which keeps them.
    pub fn enforce_only(
        &mut self,
        store: &Store,
        decisions: &[Decision],
        now: DateTime<Utc>,
    ) -> Result<Report, EnforceError> {
        let mut state = store.enforced(now)?;
        let mut release = Vec::new();
        for d in decisions {
            match d {
                Decision::Ban { cidr, until, reason, origin, figures } => {
                    state.bans.retain(|b| b.cidr != *cidr);
                    state.bans.push(crate::store::Ban {
                        cidr: *cidr,
                        since: now,
                        until: *until,
                        reason: reason.clone(),
                        origin: origin.clone(),
                        figures: figures.clone(),
                    });
                }
                Decision::Unban { cidr, .. } => {
                    state.bans.retain(|b| b.cidr != *cidr);
                    release.push(*cidr);
                }
                Decision::Limit { port, mode, until, reason, origin, .. } => {
                    state.limits.retain(|l| !(l.port == *port && l.mode == *mode));
                    state.limits.push(crate::store::LimitOn {
                        port: *port,
                        mode: *mode,
                        since: now,
                        until: *until,
                        reason: reason.clone(),
                        origin: origin.clone(),
                    });
                }
                Decision::Lift { port, mode, .. } => state.limits.retain(|l| !(l.port == *port && l.mode == *mode)),
                Decision::Allow { cidr, comment, .. } => {
                    state.allowlist.push(crate::store::Allowed { cidr: *cidr, added: now, comment: comment.clone() })
                }
                Decision::Disallow { cidr, .. } => state.allowlist.retain(|a| a.cidr != *cidr),
                Decision::Remote { cidr, until, host, reason } => {
                    state.remote.retain(|r| r.cidr != *cidr);
                    state.remote.push(crate::store::RemoteBan {
                        cidr: *cidr,
                        host: host.clone(),
                        since: now,
                        until: *until,
                        reason: reason.clone(),
                    });
                }
                Decision::RemoteLift { cidr, .. } => state.remote.retain(|r| r.cidr != *cidr),
            }
        }
        self.mirror = None;
        self.sync(&state, now, &release)
    }

    /// Bans and unbans of single addresses (this host's, or the fleet's in its own sets), diffed against memory:
    /// each address's element in its hash set is added, refreshed (delete + add) or deleted. Only called with a
    /// mirror.
    fn apply_hosts(&mut self, decisions: &[Decision], now: DateTime<Utc>) -> Result<Report, EnforceError> {
        let clock = Instant::now();
        // Per address and set (the local bans' or the fleet's): the last word of this batch.
        let mut last: HashMap<(&'static str, std::net::IpAddr), Option<Option<Duration>>> = HashMap::new();
        let set_of = |cidr: &Cidr, fleet: bool| match (cidr.addr().is_ipv4(), fleet) {
            (true, false) => BAN4,
            (false, false) => BAN6,
            (true, true) => FLEET4,
            (false, true) => FLEET6,
        };
        for d in decisions {
            let (cidr, until, fleet) = match d {
                Decision::Ban { cidr, until, .. } => (cidr, Some(*until), false),
                Decision::Unban { cidr, .. } => (cidr, None, false),
                Decision::Remote { cidr, until, .. } => (cidr, Some(*until), true),
                Decision::RemoteLift { cidr, .. } => (cidr, None, true),
                _ => continue,
            };
            let left = until.map(|u| remaining(u.map_or(FOREVER, |u| u.timestamp_micros()), now));
            last.insert((set_of(cidr, fleet), cidr.addr()), left);
        }
        let mut report = Report::default();
        let mut ops = Vec::new();
        let Some(mirror) = self.mirror.as_ref() else {
            return Err(NftError::Io(std::io::Error::other("no memory of the kernel's sets")).into());
        };
        for (&(set, addr), wanted) in &last {
            let key = Key::Addr(addr);
            let have = mirror.get(set).and_then(|m| m.get(&key)).filter(|end| end.is_none_or(|e| e > clock));
            let actual: Vec<Element> =
                have.map(|end| Element { key, timeout: None, expires: end.map(|e| e - clock) }).into_iter().collect();
            let want: Vec<Want> = wanted.map(|left| (key, left)).into_iter().collect();
            plan::diff(set, &want, &actual, &|_| false, &mut ops, &mut report.changes);
        }
        // A "stray" here is only the address being unbanned: nothing to report.
        report.changes.strays.clear();
        self.kernel.apply(&self.ruleset.table, &ops)?;
        if let Some(mirror) = self.mirror.as_mut() {
            for ((set, addr), wanted) in last {
                let m = mirror.entry(set).or_default();
                match wanted {
                    Some(left) => m.insert(Key::Addr(addr), left.map(|l| clock + l)),
                    None => m.remove(&Key::Addr(addr)),
                };
            }
        }
        Ok(report)
    }

    /// Chains whose rules are not what floodgate installed (flushed or edited by hand): the sets may still hold
    /// every ban, yet nothing is enforced until a reconcile repairs them.
    pub fn damaged_chains(&mut self) -> Result<Vec<String>, EnforceError> {
        let mut out = Vec::new();
        for (chain, want) in self.ruleset.expected_rules() {
            let have = self.kernel.rule_count(&self.ruleset.table, chain)?;
            if have != want {
                out.push(format!("chain {chain} has {have} rule(s), {want} expected"));
            }
        }
        Ok(out)
    }

    /// What the kernel enforces now, joined with the store's reasons; store entries the kernel lost are
    /// included and marked.
    pub fn list(&mut self, store: &Store, now: DateTime<Utc>) -> Result<Vec<Listed>, EnforceError> {
        let state = store.enforced(now)?;
        let table = self.ruleset.table.clone();
        let mut out = Vec::new();
        let by_cidr: HashMap<Cidr, &crate::store::Ban> = state.bans.iter().map(|b| (b.cidr, b)).collect();
        let mut covered: std::collections::HashSet<Cidr> = std::collections::HashSet::new();
        for set in [BAN4, BAN6, BAN4_NET, BAN6_NET] {
            for e in self.kernel.elements(&table, set)? {
                let Some(piece) = e.key.cidr() else { continue };
                // The ban this piece comes from: the same prefix, or the narrowest stored ban around it.
                let owner = (0..=piece.prefix_len())
                    .rev()
                    .filter_map(|len| Cidr::new(piece.addr(), len))
                    .find_map(|c| by_cidr.get(&c).copied());
                if let Some(b) = owner {
                    covered.insert(b.cidr);
                }
                out.push(listed_ban(&e, piece, owner));
            }
        }
        for b in &state.bans {
            if !covered.contains(&b.cidr) {
                // Nested inside a longer ban, it is enforced by that one; otherwise the kernel lost it.
                let inside = state.bans.iter().any(|o| {
                    o.cidr != b.cidr
                        && o.cidr.covers(&b.cidr)
                        && o.until.map_or(i64::MAX, |u| u.timestamp_micros())
                            >= b.until.map_or(i64::MAX, |u| u.timestamp_micros())
                });
                if inside {
                    continue;
                }
                out.push(Listed {
                    action: "ban".into(),
                    target: b.cidr.to_string(),
                    expires_s: None,
                    reason: b.reason.clone(),
                    origin: b.origin.clone(),
                    since: Some(b.since),
                    in_kernel: false,
                    in_store: true,
                    figures: b.figures.as_deref().and_then(|f| serde_json::from_str(f).ok()),
                });
            }
        }
        for (set, mode) in [
            (SOURCE_PORTS, LimitMode::Source),
            (GLOBAL_PORTS, LimitMode::Global),
            (SYNPROXY_PORTS, LimitMode::Synproxy),
        ] {
            for e in self.kernel.elements(&table, set)? {
                let Key::Port(port) = e.key else { continue };
                let row = state.limits.iter().find(|l| l.port == port && l.mode == mode);
                out.push(Listed {
                    action: format!("limit_{}", mode.as_str()),
                    target: port.to_string(),
                    expires_s: e.expires.map(|d| d.as_secs()),
                    reason: row.map_or_else(|| "not in the store".into(), |r| r.reason.clone()),
                    origin: row.map_or_else(String::new, |r| r.origin.clone()),
                    since: row.map(|r| r.since),
                    in_kernel: true,
                    in_store: row.is_some(),
                    figures: None,
                });
            }
        }
        if self.ruleset.fleet {
            // Another host's ban: `origin` names that host, `fleet:mx1`.
            let by_cidr: HashMap<Cidr, &crate::store::RemoteBan> = state.remote.iter().map(|r| (r.cidr, r)).collect();
            for set in [FLEET4, FLEET6, FLEET4_NET, FLEET6_NET] {
                for e in self.kernel.elements(&table, set)? {
                    let Some(piece) = e.key.cidr() else { continue };
                    let row = by_cidr.get(&piece);
                    out.push(Listed {
                        action: "fleet_ban".into(),
                        target: piece.to_string(),
                        expires_s: e.expires.map(|d| d.as_secs()),
                        reason: row.map_or_else(|| "not in the store".into(), |r| r.reason.clone()),
                        origin: row.map_or_else(String::new, |r| format!("fleet:{}", r.host)),
                        since: row.map(|r| r.since),
                        in_kernel: true,
                        in_store: row.is_some(),
                        figures: None,
                    });
                }
            }
        }
        Ok(out)
    }
}

fn listed_ban(e: &Element, piece: Cidr, owner: Option<&crate::store::Ban>) -> Listed {
    Listed {
        action: "ban".into(),
        target: piece.to_string(),
        expires_s: e.expires.map(|d| d.as_secs()),
        reason: owner.map_or_else(
            || "not in the store (removed at the next reconcile)".into(),
            |b| {
                if b.cidr == piece {
                    b.reason.clone()
                } else {
                    format!("{} (part of {})", b.reason, b.cidr)
                }
            },
        ),
        origin: owner.map_or_else(String::new, |b| b.origin.clone()),
        since: owner.map(|b| b.since),
        in_kernel: true,
        in_store: owner.is_some(),
        figures: owner.and_then(|b| b.figures.as_deref()).and_then(|f| serde_json::from_str(f).ok()),
    }
}
