//! The policy engine: per-source or global responses, spoof-aware, converging by itself. Pure: events and a
//! clock in, decisions and alerts out.
//!
//! The deciding question is not "is it spoofed?" but "can the sources be narrowed
//! down?". Per port, new connections are measured over a sliding window with bounded memory: distinct sources
//! (a HyperLogLog sketch), total rate, and the share of the top sources. Few, concentrated sources: a
//! per-source response (bans for sources proven real, the hashlimit-style per-source limit for the port). Too
//! many sources, or a high total rate while every source stays slow: the global limit (limit-style; the
//! allowlist is accepted before it). When the trigger has stayed below half its threshold for `converge_after`,
//! the limit is no longer refreshed and lapses, and the admin is told how it went.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use super::alert::{Alert, AlertKind};
use super::evidence::{impossible, Evidence};
use super::jail::Jail;
use super::sketch::{Figures, HeavyHitters, PortTraffic, Recent};
use super::{span, Policy};
use super::{JailConfig, PolicyConfig, PrefixBan};
use crate::addr::Cidr;
use crate::decision::{Decision, LimitMode};
use crate::event::{Event, Kind};
use crate::service::{Services, SynproxyMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Normal,
    PerSource,
    Global,
    /// The kernel's SYN proxy: a spoofed flood on a port that must stay open to the world.
    Synproxy,
}

impl Mode {
    fn limit(self) -> LimitMode {
        match self {
            Mode::Global => LimitMode::Global,
            Mode::Synproxy => LimitMode::Synproxy,
            Mode::Normal | Mode::PerSource => LimitMode::Source,
        }
    }
}

/// A network's recent activity: since when it has been active (its rate is not diluted by the quiet before),
/// and when it was last seen (an idle network is forgotten).
#[derive(Debug, Clone, Copy)]
struct Active {
    since: DateTime<Utc>,
    last: DateTime<Utc>,
}

/// A network's rate is taken over at least this long: `prefix_rate` x 2 s of connections, not one busy second
/// of an office's mail clients starting together.
const PREFIX_MIN_SPAN: Duration = Duration::from_secs(2);

struct PortState {
    traffic: PortTraffic,
    /// New connections (and what the port's limit or proxy absorbed) in 100 ms buckets: the onset's real rate.
    recent: Recent,
    /// When the port's figures were last judged between ticks (at most every `CHECK_EVERY`).
    last_check: Option<DateTime<Utc>>,
    mode: Mode,
    since: Option<DateTime<Utc>>,
    calm_since: Option<DateTime<Utc>>,
    limit_until: Option<DateTime<Utc>>,
    spoof_proof: Option<(IpAddr, &'static str)>,
    syn_flood_seen: Option<DateTime<Utc>>,
    /// Packets the port's limit dropped (before conntrack could see them), within the window.
    dropped: std::collections::VecDeque<(DateTime<Utc>, u64)>,
    peak_distinct: u64,
    peak_rate: f64,
    bans: u64,
}

/// The rate that decided, and over which horizon, so a notice quotes what fired and not a diluted average.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_s: f64,
    over: Duration,
}

impl Rate {
    fn text(&self) -> String {
        format!("{:.0} new connections/s over the last {}", self.per_s, humantime::format_duration(self.over))
    }
}

pub struct Engine {
    t: Arc<PolicyConfig>,
    /// Bans the policy makes itself (DoS sources, prefixes) last the jail's default bantime.
    bantime: Duration,
    jail: Jail,
    evidence: Evidence,
    allowlist: Vec<Cidr>,
    ours: Vec<IpAddr>,
    ports: HashMap<u16, PortState>,
    /// All new connections per source over all ports, for DoS sources: over the window, and over the short
    /// horizon (a DoS is seen in seconds, not after a window's average catches up).
    sources: HeavyHitters,
    /// When `sources` first saw anything: its rates are over the span it covers, not a whole window at start.
    sources_since: Option<DateTime<Utc>>,
    /// All new connections per network (`prefix_v4` / `prefix_v6`, keyed by its first address) over the short
    /// horizon: an ISP's hosts that are each under `dos_source_rate`.
    recent_prefixes: HeavyHitters,
    /// Since when each network has been active (bounded): its rate is over that span.
    prefix_active: HashMap<Cidr, Active>,
    /// Bans per source so far (bounded), for repeat offenders.
    offences: HashMap<IpAddr, u32>,
    /// Sources banned and still banned, so a DoS source is not banned twice.
    banned_until: HashMap<IpAddr, DateTime<Utc>>,
    /// Recent bans per prefix, for prefix aggregation (bounded).
    by_prefix: HashMap<Cidr, Vec<DateTime<Utc>>>,
    prefixes_banned: HashMap<Cidr, DateTime<Utc>>,
    /// Each configured port's SYN proxy setting; a port not listed is `never`.
    synproxy: BTreeMap<u16, SynproxyMode>,
    /// Whether the kernel can proxy SYNs here (conntrack, tcp_timestamps, tcp_loose = 0, an MSS), or why not.
    /// The daemon checks and tells; until it does, the proxy is not used.
    synproxy_ready: Result<(), String>,
    /// `synproxy = always` ports: until when the proxy was last switched on.
    always_until: HashMap<u16, DateTime<Utc>>,
    alerts: Vec<Alert>,
}

const MAX_OFFENDERS: usize = 100_000;
/// Between ticks a port's figures are judged at most this often, when its last second looks like a flood.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Networks whose activity is remembered at most.
const MAX_PREFIXES: usize = 16_384;
/// Heavy-hitter counters per slice for the short-horizon source and network rates.
const RECENT_TOP_K: usize = 128;
const SECOND: Duration = Duration::from_secs(1);

impl Engine {
    pub fn new(t: PolicyConfig, jail: Jail, allowlist: Vec<Cidr>) -> Engine {
        let window = t.window;
        let horizon = t.rate_horizon.max(SECOND);
        let slices = horizon.as_secs().clamp(1, 60) as usize;
        let recent = || {
            HeavyHitters::new(horizon, slices, RECENT_TOP_K).unwrap_or_else(|_| {
                HeavyHitters::new(Duration::from_secs(3), 3, RECENT_TOP_K).expect("a valid fixed shape")
            })
        };
        Engine {
            bantime: jail.bantime(),
            evidence: Evidence::new(Duration::from_secs(6 * 3600)),
            jail,
            allowlist,
            ours: Vec::new(),
            ports: HashMap::new(),
            sources: HeavyHitters::by_seconds(window),
            sources_since: None,
            recent_prefixes: recent(),
            prefix_active: HashMap::new(),
            offences: HashMap::new(),
            banned_until: HashMap::new(),
            by_prefix: HashMap::new(),
            prefixes_banned: HashMap::new(),
            synproxy: BTreeMap::new(),
            synproxy_ready: Err("the kernel's prerequisites were not checked".into()),
            always_until: HashMap::new(),
            alerts: Vec::new(),
            t: Arc::new(t),
        }
    }

    /// The engine the config's sections describe: thresholds, the jail and each service's values, the admin
    /// addresses it never acts on.
    pub fn from_config(policy: &PolicyConfig, jail: &JailConfig, services: &Services, allowlist: &[Cidr]) -> Engine {
        let mut e = Engine::new(policy.clone(), Jail::from_config(jail, services), allowlist.to_vec());
        e.synproxy = services.synproxy_modes();
        e
    }

    /// Each port's SYN proxy setting (`from_config` takes them from the services).
    pub fn set_synproxy_modes(&mut self, modes: BTreeMap<u16, SynproxyMode>) {
        self.synproxy = modes;
    }

    /// What the daemon found the kernel can do: Ok when the SYN proxy works here, or why it does not.
    pub fn set_synproxy_ready(&mut self, ready: Result<(), String>) {
        self.synproxy_ready = ready;
    }

    /// Alerts produced since the last call.
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }

    /// The operator unbanned these (`floodgate unblock`; None: all): the policy no longer takes them for banned,
    /// so their next failures ban them again, and an innocent address starts over as a first offender.
    pub fn released(&mut self, targets: Option<&[Cidr]>) {
        match targets {
            None => {
                self.banned_until.clear();
                self.prefixes_banned.clear();
                self.offences.clear();
            }
            Some(targets) => {
                self.banned_until.retain(|a, _| !targets.iter().any(|t| t.contains(*a)));
                self.offences.retain(|a, _| !targets.iter().any(|t| t.contains(*a)));
                self.prefixes_banned.retain(|p, _| !targets.iter().any(|t| t.covers(p) || p.covers(t)));
            }
        }
    }

    /// Each watched port's new connections per second over the window (what its limit dropped included) and
    /// its distinct sources, for the metrics.
    pub fn port_traffic(&self, now: DateTime<Utc>) -> HashMap<u16, (f64, u64)> {
        let window = self.t.window.as_secs_f64().max(1.0);
        let horizon = now - span(self.t.window);
        self.ports
            .iter()
            .map(|(&port, p)| {
                let f = p.traffic.figures(now);
                let dropped: u64 = p.dropped.iter().filter(|(at, _)| *at >= horizon).map(|(_, n)| *n).sum();
                (port, (f.rate_per_s + dropped as f64 / window, f.distinct))
            })
            .collect()
    }

    /// Failing sources the jail forgot to make room, since the start.
    pub fn evicted(&self) -> u64 {
        self.jail.evicted
    }

    pub fn mode(&self, port: u16) -> Mode {
        self.ports.get(&port).map_or(Mode::Normal, |p| p.mode)
    }

    fn allowed(&self, addr: IpAddr) -> bool {
        self.allowlist.iter().any(|a| a.contains(addr))
    }

    /// The network `addr` belongs to, for prefix rates and prefix bans.
    fn network(&self, addr: IpAddr) -> Option<Cidr> {
        let addr = crate::addr::normalise(addr);
        Cidr::new(addr, if addr.is_ipv4() { self.t.prefix_v4 } else { self.t.prefix_v6 })
    }

    /// Whether `port` may go to the SYN proxy now, or why not.
    fn synproxy_possible(&self, port: u16) -> Result<(), String> {
        match self.synproxy.get(&port).copied().unwrap_or(SynproxyMode::Never) {
            SynproxyMode::Never => Err(format!("synproxy = \"never\" for port {port}")),
            _ => self.synproxy_ready.clone(),
        }
    }

    fn port(&mut self, port: u16) -> &mut PortState {
        let window = self.t.window;
        let horizon = self.t.rate_horizon.max(SECOND);
        self.ports.entry(port).or_insert_with(|| PortState {
            traffic: PortTraffic::new(window),
            recent: Recent::new(horizon),
            last_check: None,
            mode: Mode::Normal,
            since: None,
            calm_since: None,
            limit_until: None,
            spoof_proof: None,
            syn_flood_seen: None,
            dropped: std::collections::VecDeque::new(),
            peak_distinct: 0,
            peak_rate: 0.0,
            bans: 0,
        })
    }

    /// A ban for bantime, multiplied for a repeat offender; never for an allowlisted address.
    fn ban(
        &mut self,
        addr: IpAddr,
        base: Duration,
        (reason, origin, figures): (String, String, Option<String>),
        now: DateTime<Utc>,
        out: &mut Vec<Decision>,
    ) {
        if self.allowed(addr) || self.banned_until.get(&addr).is_some_and(|u| *u > now) {
            return;
        }
        if self.offences.len() >= MAX_OFFENDERS && !self.offences.contains_key(&addr) {
            self.offences.clear();
        }
        let n = self.offences.entry(addr).or_insert(0);
        let factor = self.t.repeat_multiplier.max(1).saturating_pow(*n);
        *n += 1;
        let d = base.saturating_mul(factor).min(self.t.max_bantime);
        let until = now + span(d);
        let reason = if factor > 1 { format!("{reason}; offence {} (ban x{factor})", *n) } else { reason };
        self.banned_until.insert(addr, until);
        out.push(Decision::Ban { cidr: Cidr::host(addr), until: Some(until), reason, origin, figures });
        self.aggregate(addr, now, out);
    }

    /// Whether a ban of `prefix` would cover an allowlisted address.
    fn holds_allowed(&self, prefix: &Cidr) -> bool {
        self.allowlist.iter().any(|a| a.contains(prefix.addr()) || prefix.contains(a.addr()))
    }

    /// 3. Enough banned addresses in one network: the prefix is banned, unless it holds an allowlisted address.
    fn aggregate(&mut self, addr: IpAddr, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        if self.t.prefix_after == 0 {
            return;
        }
        let Some(prefix) = self.network(addr) else { return };
        if self.prefixes_banned.get(&prefix).is_some_and(|u| *u > now) {
            return;
        }
        let horizon = now - span(self.t.window * 10);
        if self.by_prefix.len() >= MAX_OFFENDERS && !self.by_prefix.contains_key(&prefix) {
            // Once per tick at most (see tick): a full table costs nothing per ban.
            return;
        }
        let times = self.by_prefix.entry(prefix).or_default();
        times.retain(|t| *t >= horizon);
        times.push(now);
        if (times.len() as u32) < self.t.prefix_after {
            return;
        }
        let n = times.len();
        self.by_prefix.remove(&prefix);
        if self.holds_allowed(&prefix) {
            return;
        }
        let until = now + span(self.bantime);
        self.prefixes_banned.insert(prefix, until);
        out.push(Decision::Ban {
            cidr: prefix,
            until: Some(until),
            reason: format!(
                "{n} addresses of {prefix} banned within {}",
                humantime::format_duration(self.t.window * 10)
            ),
            origin: "policy:prefix".into(),
            figures: Some(serde_json::json!({"banned_in_prefix": n, "prefix": prefix.to_string()}).to_string()),
        });
    }

    fn limit(
        &mut self,
        port: u16,
        mode: LimitMode,
        (reason, figures): (String, Option<String>),
        now: DateTime<Utc>,
        out: &mut Vec<Decision>,
    ) {
        let until = now + span(self.t.limit_for);
        self.port(port).limit_until = Some(until);
        out.push(Decision::Limit { port, mode, until, reason, origin: "policy".into(), figures });
    }

    fn figures_json(f: &Figures, p: &PortState, rate: Rate, port_rate: f64) -> serde_json::Value {
        serde_json::json!({
            "rate_per_s": (rate.per_s * 10.0).round() / 10.0,
            "rate_over_s": rate.over.as_secs_f64(),
            "port_rate": port_rate,
            "distinct": f.distinct,
            "window_rate_per_s": (f.rate_per_s * 10.0).round() / 10.0,
            "top_share": (f.top_share * 100.0).round() / 100.0,
            "max_per_source_rate": (f.max_per_source_rate * 10.0).round() / 10.0,
            "max_per_source": f.top.first().map_or(0, |(_, n)| *n),
            "top": f.top.iter().take(5).map(|(a, n)| format!("{a} x{n}")).collect::<Vec<_>>(),
            "spoof_proof": p.spoof_proof.map(|(a, why)| format!("{a}: {why}")),
            "syn_flood": p.syn_flood_seen.is_some(),
        })
    }

    /// The port's rate over the last second, the short horizon and the window (with what its limit dropped),
    /// the highest of them: the one a decision quotes.
    fn port_rate(p: &PortState, f: &Figures, dropped_rate: f64, t: &PolicyConfig, now: DateTime<Utc>) -> Rate {
        let horizon = t.rate_horizon.max(SECOND);
        // The window's figures are over the span it covers so far (a fresh start covers less than the window).
        let covered = if f.rate_per_s > 0.0 {
            Duration::from_secs_f64((f.total as f64 / f.rate_per_s).clamp(1.0, t.window.as_secs_f64()))
        } else {
            t.window
        };
        let rates = [
            Rate { per_s: p.recent.rate(now, SECOND), over: SECOND },
            Rate { per_s: p.recent.rate(now, horizon), over: horizon },
            Rate { per_s: f.rate_per_s + dropped_rate, over: covered },
        ];
        // The highest; on a tie the shortest horizon, the one that shows it soonest.
        rates.into_iter().fold(rates[0], |best, r| if r.per_s > best.per_s { r } else { best })
    }

    /// What a response does, and what it does not, for the admin's mail.
    fn response_text(port: u16, mode: Mode, f: &Figures, synproxy_refused: Option<&str>) -> String {
        let busiest = f.top.first().map_or(0, |(_, n)| *n);
        match mode {
            Mode::Global => format!(
                "Response: a global limit on new connections to port {port} (one rate shared by everyone but the \
                 allowlist; [enforce] global_rate). It stops: the flood's excess beyond that rate, whatever its \
                 sources, spoofed or not. It does not stop: legitimate clients competing with the flood for the \
                 rate while the attack lasts (allowlisted addresses always pass)."
            ),
            Mode::Synproxy => format!(
                "Response: the kernel's SYN proxy on port {port}: every SYN is answered with a cookie by netfilter and \
                 the listener only ever sees completed handshakes. It stops: spoofed SYNs from reaching the \
                 listener's queue, while every real client (mail servers included) is still served. It does not \
                 stop: a flood of completed handshakes (those come from real sources, which are banned when they \
                 exceed dos_source_rate)."
            ),
            Mode::PerSource => {
                let mut t = format!(
                    "Response: a per-source limit on new connections to port {port} (each address, each IPv6 /64, has \
                     its own rate; [enforce] source_rate). It stops: a few fast sources. It does not stop: many slow \
                     sources, nor spoofed ones: a spoofed address sends only a few SYNs (here the busiest source sent \
                     {busiest} in the window), far under any per-source rate; SYN cookies \
                     (net.ipv4.tcp_syncookies = 1) are what keeps the listener answering."
                );
                if let Some(why) = synproxy_refused {
                    t.push_str(&format!(" The SYN proxy, which would stop it, was not used: {why}."));
                }
                t
            }
            Mode::Normal => String::new(),
        }
    }

    /// Decides one port's mode from its figures, with hysteresis.
    fn decide_port(&mut self, port: u16, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        let t = Arc::clone(&self.t);
        let exempt = t.global_exempt.contains(&port);
        let synproxy = self.synproxy_possible(port);
        let p = self.ports.get_mut(&port).expect("port state exists");
        p.last_check = Some(now);
        let f = p.traffic.figures(now);
        // What the limit dropped never reached conntrack: it counts toward the port's rate.
        let horizon = now - span(t.window);
        while p.dropped.front().is_some_and(|(at, _)| *at < horizon) {
            p.dropped.pop_front();
        }
        let dropped_rate = p.dropped.iter().map(|(_, n)| *n).sum::<u64>() as f64 / t.window.as_secs_f64().max(1.0);
        let rate = Self::port_rate(p, &f, dropped_rate, &t, now);
        let window_rate = f.rate_per_s + dropped_rate;
        let kernel_flood = p.syn_flood_seen.is_some_and(|s| now - s < span(t.window));
        let many = f.distinct >= t.ddos_distinct;
        let fast = rate.per_s >= t.port_rate || kernel_flood;
        // Diffuse: the rate is high though no source is fast: per-source limits would catch nothing.
        let diffuse = fast && f.max_per_source_rate < t.dos_source_rate && f.top_share < t.concentrated_share;
        let concentrated = fast && f.top_share >= t.concentrated_share;
        let spoofed = many || diffuse || (p.spoof_proof.is_some() && fast);
        let want = if spoofed {
            match (exempt, &synproxy) {
                (false, _) => Mode::Global,
                (true, Ok(())) => Mode::Synproxy,
                (true, Err(_)) => Mode::PerSource,
            }
        } else if concentrated {
            Mode::PerSource
        } else {
            Mode::Normal
        };
        let short = p.recent.rate(now, t.rate_horizon.max(SECOND));
        let calm = f.distinct < t.ddos_distinct / 2
            && window_rate < t.port_rate / 2.0
            && short < t.port_rate / 2.0
            && !kernel_flood;
        if p.mode == Mode::Normal {
            if want == Mode::Normal {
                return; // a quiet port: nothing to record or decide
            }
            // An attack starts: its record (peaks, bans) starts with it.
            p.peak_distinct = 0;
            p.peak_rate = 0.0;
            p.bans = 0;
        }
        p.peak_distinct = p.peak_distinct.max(f.distinct);
        p.peak_rate = p.peak_rate.max(rate.per_s);
        let figures = Self::figures_json(&f, p, rate, t.port_rate);
        let escalates = want != Mode::Normal
            && (p.mode == Mode::Normal || (p.mode == Mode::PerSource && matches!(want, Mode::Global | Mode::Synproxy)));
        if escalates {
            p.mode = want;
            p.since.get_or_insert(now);
            p.calm_since = None;
            // Say which trigger fired: the admin reads this in the mail.
            let why = if many {
                format!(
                    "too many sources to narrow down ({} distinct >= ddos_distinct {})",
                    f.distinct, t.ddos_distinct
                )
            } else if let (Some((a, what)), true) = (p.spoof_proof, fast) {
                format!("a fast flood with spoofed sources ({a} is {what})")
            } else if diffuse {
                "a high rate from sources that are each slow (per-source limits would catch nothing)".to_string()
            } else {
                "a few concentrated sources".to_string()
            };
            let kind = if spoofed { AlertKind::DdosDetected } else { AlertKind::DosDetected };
            let trigger = if kernel_flood && rate.per_s < t.port_rate {
                format!("the kernel reported a SYN flood; {}", rate.text())
            } else {
                format!("{} (port_rate {})", rate.text(), t.port_rate)
            };
            let summary = format!(
                "port {port}: {why}: {trigger}; {} distinct sources in {}, top 10 share {:.0}%",
                f.distinct,
                humantime::format_duration(t.window),
                f.top_share * 100.0
            );
            let refused = match (&synproxy, exempt && spoofed) {
                (Err(why), true) => Some(why.as_str()),
                _ => None,
            };
            let detail = Self::response_text(port, want, &f, refused);
            let mut figures = figures;
            if let serde_json::Value::Object(m) = &mut figures {
                m.insert("response".into(), want.limit().as_str().into());
                if let Some(why) = refused {
                    m.insert("synproxy_not_used".into(), why.into());
                }
            }
            self.alerts.push(Alert {
                kind,
                port: Some(port),
                key: format!("port {port}"),
                time: now,
                summary: summary.clone(),
                detail,
                figures: figures.clone(),
            });
            self.limit(port, want.limit(), (summary, Some(figures.to_string())), now, out);
            return;
        }
        let mode = p.mode;
        if !calm {
            p.calm_since = None;
            // Kept on: refreshed at half its life, so it lapses by itself if floodgate stops.
            if p.limit_until.is_some_and(|u| u - now < span(t.limit_for / 2)) {
                let why = (format!("port {port}: attack goes on"), Some(figures.to_string()));
                self.limit(port, mode.limit(), why, now, out);
            }
            return;
        }
        let calm_since = *p.calm_since.get_or_insert(now);
        if now - calm_since < span(t.converge_after) {
            // Calm, but not for long enough yet; the limit is still refreshed until convergence.
            if p.limit_until.is_some_and(|u| u - now < span(t.limit_for / 2)) {
                let why = (format!("port {port}: converging"), Some(figures.to_string()));
                self.limit(port, mode.limit(), why, now, out);
            }
            return;
        }
        let started = p.since.unwrap_or(now);
        let what = match mode {
            Mode::Global => "global limit lifted",
            Mode::Synproxy => "SYN proxy lifted",
            _ => "per-source limit lifted",
        };
        let summary = format!(
            "port {port}: attack over after {}; peak {} distinct sources, {:.0} new connections/s; {} bans; {what}",
            // Whole seconds: the admin reads this in a mail.
            humantime::format_duration(std::time::Duration::from_secs(
                (now - started).to_std().unwrap_or_default().as_secs()
            )),
            p.peak_distinct,
            p.peak_rate,
            p.bans
        );
        let detail = format!(
            "Calm for {} (below half of every threshold): port {port} is back to normal.",
            humantime::format_duration(t.converge_after)
        );
        // When the attack began: the convergence notice carries the report of the attack, from here to now.
        let mut figures = figures;
        if let serde_json::Value::Object(m) = &mut figures {
            m.insert("attack_since".into(), started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into());
        }
        p.mode = Mode::Normal;
        p.since = None;
        p.calm_since = None;
        p.limit_until = None;
        p.spoof_proof = None;
        // A `synproxy = always` port keeps its proxy: only its attack is over.
        let always = mode == Mode::Synproxy && self.synproxy.get(&port) == Some(&SynproxyMode::Always);
        if !always {
            out.push(Decision::Lift { port, mode: mode.limit(), reason: summary.clone(), origin: "policy".into() });
        }
        self.alerts.push(Alert {
            kind: AlertKind::Converged,
            port: Some(port),
            key: format!("port {port}"),
            time: now,
            summary,
            detail,
            figures,
        });
    }

    /// 2b. A network whose hosts together open more than `prefix_rate` new connections a second (each of them
    /// possibly under `dos_source_rate`): its proven-real hosts are banned, or the network (`prefix_ban`). Spoofed
    /// sources in one network prove nothing and are never banned: without a real host there is no ban.
    fn prefix_dos(&mut self, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        if self.t.prefix_rate <= 0.0 {
            return;
        }
        let horizon_s = self.recent_prefixes.span(now).as_secs_f64().max(1.0);
        // Further down than the busiest few: a spoofed flood over many networks must not hide a real one.
        let hot: Vec<(IpAddr, u64)> = self.recent_prefixes.top(now, 64);
        // The hosts that make the networks' rates are among the heaviest sources of the same horizon.
        let (sources, _) = self.sources.top_recent(now, RECENT_TOP_K, self.t.rate_horizon.max(SECOND));
        for (first, n) in hot {
            let Some(net) = self.network(first) else { continue };
            // Over the time the network has been active, within the horizon: a DoS that started 2 s ago is
            // measured over 2 s, not diluted by the quiet second before it.
            // A network first seen busy at this tick has been active for at most the last tick's second.
            let full = self.prefix_active.len() >= MAX_PREFIXES;
            let since = match self.prefix_active.get_mut(&net) {
                Some(a) => {
                    a.last = now;
                    a.since
                }
                None if !full => {
                    self.prefix_active.insert(net, Active { since: now - span(SECOND), last: now });
                    now - span(SECOND)
                }
                None => now - span(self.t.rate_horizon),
            };
            let active_s = (now - since).num_milliseconds() as f64 / 1000.0;
            let span_s = active_s.clamp(PREFIX_MIN_SPAN.as_secs_f64(), horizon_s.max(PREFIX_MIN_SPAN.as_secs_f64()));
            let rate = n as f64 / span_s;
            if rate < self.t.prefix_rate {
                continue;
            }
            // A banned network is answered; otherwise each new host that joins the attack is banned in turn
            // (those already banned are skipped by `ban`), and a notice goes out only when a ban was made.
            if self.prefixes_banned.get(&net).is_some_and(|u| *u > now) {
                continue;
            }
            // The hosts that make the network's rate: each with a fair share of it (a quarter of an even split
            // at least). A neighbour that connected once while another host of its network flooded is not one.
            let seen: Vec<(IpAddr, u64)> = sources.iter().filter(|(a, _)| net.contains(*a)).copied().collect();
            let active = seen.len().max(1) as u64;
            let real: Vec<IpAddr> = seen
                .iter()
                .filter(|(a, c)| *c >= 3 && c * active * 4 >= n && self.evidence.is_real(*a) && !self.allowed(*a))
                .map(|(a, _)| *a)
                .collect();
            if real.is_empty() {
                continue; // SYN-only evidence never bans: these may all be spoofed.
            }
            let over = humantime::format_duration(Duration::from_secs(span_s.round() as u64));
            let reason = format!(
                "DoS from {net}: {rate:.0} new connections/s from {} of its hosts over all ports over the last {over} \
                 (prefix_rate {})",
                seen.len(),
                self.t.prefix_rate
            );
            let figures = serde_json::json!({
                "network": net.to_string(),
                "rate_per_s": (rate * 10.0).round() / 10.0,
                "rate_over_s": span_s,
                "prefix_rate": self.t.prefix_rate,
                "hosts_seen": seen.iter().map(|(a, c)| format!("{a} x{c}")).collect::<Vec<_>>(),
                "hosts_proven_real": real.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            });
            let before = out.len();
            let whole = self.t.prefix_ban == PrefixBan::Prefix && !self.holds_allowed(&net);
            if whole {
                let until = now + span(self.bantime);
                self.prefixes_banned.insert(net, until);
                out.push(Decision::Ban {
                    cidr: net,
                    until: Some(until),
                    reason: reason.clone(),
                    origin: "policy:prefix_dos".into(),
                    figures: Some(figures.to_string()),
                });
            } else {
                for a in &real {
                    let why = (reason.clone(), "policy:prefix_dos".to_string(), Some(figures.to_string()));
                    self.ban(*a, self.bantime, why, now, out);
                }
            }
            let banned: Vec<String> = out[before..]
                .iter()
                .filter_map(|d| match d {
                    Decision::Ban { cidr, .. } => Some(cidr.to_string()),
                    _ => None,
                })
                .collect();
            if banned.is_empty() {
                continue;
            }
            let bantime = humantime::format_duration(self.bantime);
            let detail = if whole {
                format!(
                    "Response: the network {net} is banned for {bantime} (policy.prefix_ban = \"prefix\"). It stops: \
                     every host of {net}. It does not stop: the same attack from another network."
                )
            } else {
                format!(
                    "Response: the hosts of {net} proven real (a completed handshake or a log line) are banned for \
                     {bantime}: {}. It stops: those hosts. It does not stop: other hosts of {net} (with \
                     policy.prefix_after = {} of them banned the whole network is; policy.prefix_ban = \"prefix\" bans \
                     it at once).",
                    banned.join(", "),
                    self.t.prefix_after
                )
            };
            self.alerts.push(Alert {
                kind: AlertKind::DosDetected,
                port: None,
                key: net.to_string(),
                time: now,
                summary: format!(
                    "network {net}: {rate:.0} new connections/s from {} hosts over all ports; banned {}",
                    seen.len(),
                    banned.join(", ")
                ),
                detail,
                figures,
            });
        }
    }

    /// `synproxy = always` ports: switched on, and refreshed like a limit, while the kernel can proxy.
    fn keep_always(&mut self, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        if self.synproxy_ready.is_err() {
            return;
        }
        let ports: Vec<u16> =
            self.synproxy.iter().filter(|(_, m)| **m == SynproxyMode::Always).map(|(p, _)| *p).collect();
        let life = span(self.t.limit_for);
        for port in ports {
            if self.always_until.get(&port).is_some_and(|u| *u - now >= life / 2) {
                continue;
            }
            let until = now + life;
            self.always_until.insert(port, until);
            out.push(Decision::Limit {
                port,
                mode: LimitMode::Synproxy,
                until,
                reason: format!("port {port}: synproxy = \"always\""),
                origin: "policy".into(),
                figures: None,
            });
        }
    }
}

impl Policy for Engine {
    fn observe(&mut self, ev: &Event, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        self.evidence.observe(ev);
        if let Some(local) = ev.local_addr {
            if !self.ours.contains(&local) && self.ours.len() < 64 {
                self.ours.push(local);
            }
        }
        // 1. Failures per source and service (fail2ban's rule), with repeat offenders banned longer.
        let mut jailed = Vec::new();
        self.jail.observe(ev, now, &mut jailed);
        for d in jailed {
            if let Decision::Ban { cidr, until, reason, origin, figures } = d {
                let base = until.map_or(self.bantime, |u| (u - now).to_std().unwrap_or(self.bantime));
                self.ban(cidr.addr(), base, (reason, origin, figures), now, out);
                // Counted for an attack's summary; a quiet port's bans are the jail's business alone.
                if let Some(p) = ev.port.and_then(|port| self.ports.get_mut(&port)) {
                    if p.mode != Mode::Normal {
                        p.bans += 1;
                    }
                }
            }
        }
        // The limit rules' and the SYN proxy's counters (read by the daemon): what they absorbed never reached
        // conntrack, yet it is the attack going on.
        if ev.kind == Kind::KernelCounter && ev.rule.starts_with("nft.limit_") {
            if let Some(port) = ev.port {
                let p = self.port(port);
                p.dropped.push_back((ev.time, u64::from(ev.count)));
                p.recent.add(now, ev.count);
            }
            return;
        }
        // 6. The kernel's SYN-flood line names the listener's port.
        if ev.kind == Kind::SynFlood {
            if let Some(port) = ev.port {
                self.port(port).syn_flood_seen = Some(ev.time);
                self.decide_port(port, now, out);
            }
            return;
        }
        // 4. New connections per port, and per source and per network over all ports.
        let (Some(addr), Some(port)) = (ev.addr, ev.port) else { return };
        if !matches!(ev.kind, Kind::ConnNew | Kind::Connect) || self.allowed(addr) {
            return;
        }
        let why = impossible(addr, &self.ours);
        let port_rate = self.t.port_rate;
        let p = self.port(port);
        p.traffic.observe(addr, now);
        p.recent.add(now, 1);
        if p.spoof_proof.is_none() {
            p.spoof_proof = why.map(|why| (addr, why));
        }
        // A flood's onset is judged as it comes, not at the next tick: the listener's SYN queue can fill within
        // a second (at most every CHECK_EVERY, and only when the last second looks like a flood).
        // The last second's count is looked at most every CHECK_EVERY too: it costs a sum per look.
        if matches!(p.mode, Mode::Normal | Mode::PerSource) && p.last_check.is_none_or(|t| now - t >= span(CHECK_EVERY))
        {
            p.last_check = Some(now);
            if p.recent.count(now, SECOND) as f64 >= port_rate {
                self.decide_port(port, now, out);
            }
        }
        self.sources.insert(addr, 1, now);
        self.sources_since.get_or_insert(now);
        if let Some(net) = self.network(addr) {
            self.recent_prefixes.insert(net.addr(), 1, now);
        }
    }

    fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        self.jail.tick(now, out);
        self.evidence.tick(now);
        self.banned_until.retain(|_, u| *u > now);
        self.prefixes_banned.retain(|_, u| *u > now);
        let horizon = now - span(self.t.window * 10);
        self.by_prefix.retain(|_, v| v.last().is_some_and(|t| *t >= horizon));
        let seen_after = now - span(self.t.rate_horizon.max(SECOND) * 2);
        self.prefix_active.retain(|_, a| a.last >= seen_after);
        // 2. DoS from one or a few sources: fast sources across all ports, banned only if proven real. Rates
        // over the short horizon (a DoS shows in seconds) and over the window (a steady one), the higher.
        // Per-source rates over the time the window actually covers (it fills up after a start).
        let window_span = self.sources.span_since(now, self.sources_since).as_secs_f64().max(1.0);
        let (recent, recent_span) = self.sources.top_recent(now, 20, self.t.rate_horizon.max(SECOND));
        let recent_span = recent_span.as_secs_f64().max(1.0);
        let mut fast: BTreeMap<IpAddr, (f64, f64)> = BTreeMap::new();
        for (addr, n) in self.sources.top(now, 20) {
            fast.insert(addr, (n as f64 / window_span, window_span));
        }
        for (addr, n) in recent {
            let rate = n as f64 / recent_span;
            let e = fast.entry(addr).or_insert((0.0, 0.0));
            if rate > e.0 {
                *e = (rate, recent_span);
            }
        }
        for (addr, (rate, over_s)) in fast {
            if rate < self.t.dos_source_rate {
                continue;
            }
            if !self.evidence.is_real(addr) {
                continue; // SYN-only evidence never bans: the address may be spoofed.
            }
            let over = humantime::format_duration(Duration::from_secs(over_s.round() as u64));
            let reason = format!(
                "DoS: {rate:.0} new connections/s over all ports over the last {over} (dos_source_rate {}; proven real)",
                self.t.dos_source_rate
            );
            let before = out.len();
            let figures = serde_json::json!({
                "addr": addr.to_string(),
                "rate_per_s": (rate * 10.0).round() / 10.0,
                "rate_over_s": over_s,
                "dos_source_rate": self.t.dos_source_rate,
                "evidence": "proven real (completed handshake or application event)",
            });
            self.ban(addr, self.bantime, (reason, "policy:dos".into(), Some(figures.to_string())), now, out);
            if out.len() > before {
                self.alerts.push(Alert {
                    kind: AlertKind::DosDetected,
                    port: None,
                    key: addr.to_string(),
                    time: now,
                    summary: format!("{addr}: {rate:.0} new connections/s over all ports over the last {over}; banned"),
                    detail: format!(
                        "Response: {addr} is banned for {} (it completed handshakes, so it is not spoofed). It stops:                          this address. It does not stop: other hosts of its network (see policy.prefix_rate).",
                        humantime::format_duration(self.bantime)
                    ),
                    figures,
                });
            }
        }
        self.prefix_dos(now, out);
        self.keep_always(now, out);
        let ports: Vec<u16> = self.ports.keys().copied().collect();
        for port in ports {
            self.decide_port(port, now, out);
        }
    }

    fn tracked(&self) -> usize {
        self.jail.tracked() + self.evidence.len() + self.offences.len()
    }
}

/// What a replayed trace decided: for scenario tests.
#[derive(Debug, Default)]
pub struct Replay {
    pub decisions: Vec<(DateTime<Utc>, Decision)>,
    pub alerts: Vec<Alert>,
}

/// Replays events on a virtual clock: each event at its own time, a tick every `tick` of virtual time.
pub fn replay(engine: &mut Engine, events: &[Event], tick: Duration, until: DateTime<Utc>) -> Replay {
    let mut r = Replay::default();
    let Some(first) = events.first().map(|e| e.time) else { return r };
    let mut next_tick = first + span(tick);
    let mut out = Vec::new();
    let flush = |t: DateTime<Utc>, out: &mut Vec<Decision>, r: &mut Replay| {
        r.decisions.extend(out.drain(..).map(|d| (t, d)));
    };
    for ev in events {
        while next_tick <= ev.time {
            engine.tick(next_tick, &mut out);
            flush(next_tick, &mut out, &mut r);
            next_tick += span(tick);
        }
        engine.observe(ev, ev.time, &mut out);
        flush(ev.time, &mut out, &mut r);
    }
    while next_tick <= until {
        engine.tick(next_tick, &mut out);
        flush(next_tick, &mut out, &mut r);
        next_tick += span(tick);
    }
    r.alerts = engine.take_alerts();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn failure(addr: &str, at: i64) -> Event {
        let mut e = Event::new(Utc.timestamp_opt(1_800_000_000 + at, 0).unwrap(), Kind::AuthFailure, Arc::from("t.r"));
        e.failure = true;
        e.addr = Some(addr.parse().unwrap());
        e.service = Some(Arc::from("imap"));
        e
    }

    #[test]
    fn an_unblocked_address_is_banned_again_at_its_next_attack() {
        let mut engine =
            Engine::from_config(&PolicyConfig::default(), &JailConfig::default(), &Services::default(), &[]);
        let now = Utc.timestamp_opt(1_800_000_100, 0).unwrap();
        let mut out = Vec::new();
        let attack = |engine: &mut Engine, from: i64, out: &mut Vec<Decision>| {
            for at in from..from + 5 {
                engine.observe(&failure("198.51.100.9", at), now, out);
            }
        };
        attack(&mut engine, 0, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        // Still banned in the policy's eyes: a second attack makes no second decision.
        attack(&mut engine, 10, &mut out);
        assert_eq!(out.len(), 1);
        // The operator unblocks it; the policy must not go on thinking it is banned.
        engine.released(Some(&["198.51.100.9".parse().unwrap()]));
        attack(&mut engine, 20, &mut out);
        assert_eq!(out.len(), 2, "banned again after `unblock`: {out:?}");
        let Decision::Ban { reason, .. } = &out[1] else { panic!() };
        assert!(!reason.contains("offence"), "a first offence again: {reason}");
    }
}
