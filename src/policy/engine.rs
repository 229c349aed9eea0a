//! The policy engine: per-source or global responses, spoof-aware, converging by itself. Pure: events and a
//! clock in, decisions and alerts out.
//!
//! The deciding question (the Q&A in shared/seeds) is not "is it spoofed?" but "can the sources be narrowed
//! down?". Per port, new connections are measured over a sliding window with bounded memory: distinct sources
//! (a HyperLogLog sketch), total rate, and the share of the top sources. Few, concentrated sources: a
//! per-source response (bans for sources proven real, the hashlimit-style per-source limit for the port). Too
//! many sources, or a high total rate while every source stays slow: the global limit (limit-style; the
//! allowlist is accepted before it). When the trigger has stayed below half its threshold for `converge_after`,
//! the limit is no longer refreshed and lapses, and the admin is told how it went.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::evidence::{impossible, Evidence};
use super::jail::Jail;
use super::sketch::{Figures, PortTraffic};
use super::{span, Policy};
use crate::addr::Cidr;
use crate::config::{Config, PolicyConfig};
use crate::event::{Event, Kind};
use crate::store::{Decision, LimitMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Normal,
    PerSource,
    Global,
}

/// Something the admin should hear about (the daemon turns it into mail or a hook call, rate-limited).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// dos_detected, ddos_detected, converged.
    pub kind: &'static str,
    pub port: Option<u16>,
    pub time: DateTime<Utc>,
    pub summary: String,
    pub figures: serde_json::Value,
}

struct PortState {
    traffic: PortTraffic,
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

pub struct Engine {
    t: Arc<PolicyConfig>,
    /// Bans the policy makes itself (DoS sources, prefixes) last the jail's default bantime.
    bantime: Duration,
    jail: Jail,
    evidence: Evidence,
    allowlist: Vec<Cidr>,
    ours: Vec<IpAddr>,
    ports: HashMap<u16, PortState>,
    /// All new connections per source over all ports, for DoS sources.
    sources: PortTraffic,
    /// Bans per source so far (bounded), for repeat offenders.
    offences: HashMap<IpAddr, u32>,
    /// Sources banned and still banned, so a DoS source is not banned twice.
    banned_until: HashMap<IpAddr, DateTime<Utc>>,
    /// Recent bans per /24 or /64, for prefix aggregation (bounded).
    by_prefix: HashMap<Cidr, Vec<DateTime<Utc>>>,
    prefixes_banned: HashMap<Cidr, DateTime<Utc>>,
    alerts: Vec<Alert>,
}

const MAX_OFFENDERS: usize = 100_000;

impl Engine {
    pub fn new(t: PolicyConfig, jail: Jail, allowlist: Vec<Cidr>) -> Engine {
        let window = t.window;
        Engine {
            bantime: jail.bantime(),
            evidence: Evidence::new(Duration::from_secs(6 * 3600)),
            jail,
            allowlist,
            ours: Vec::new(),
            ports: HashMap::new(),
            sources: PortTraffic::new(window),
            offences: HashMap::new(),
            banned_until: HashMap::new(),
            by_prefix: HashMap::new(),
            prefixes_banned: HashMap::new(),
            alerts: Vec::new(),
            t: Arc::new(t),
        }
    }

    pub fn from_config(cfg: &Config) -> Engine {
        Engine::new(cfg.policy.clone(), Jail::from_config(cfg), cfg.allowlist.clone())
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

    fn port(&mut self, port: u16) -> &mut PortState {
        let window = self.t.window;
        self.ports.entry(port).or_insert_with(|| PortState {
            traffic: PortTraffic::new(window),
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

    /// 3. Enough banned addresses in one /24 (/64): the prefix is banned, unless it holds an allowlisted address.
    fn aggregate(&mut self, addr: IpAddr, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        if self.t.prefix_after == 0 {
            return;
        }
        let len = if addr.is_ipv4() { 24 } else { 64 };
        let Some(prefix) = Cidr::new(addr, len) else { return };
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
        if self.allowlist.iter().any(|a| a.contains(prefix.addr()) || prefix.contains(a.addr())) {
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

    fn figures_json(f: &Figures, p: &PortState) -> serde_json::Value {
        serde_json::json!({
            "distinct": f.distinct,
            "rate_per_s": (f.rate_per_s * 10.0).round() / 10.0,
            "top_share": (f.top_share * 100.0).round() / 100.0,
            "max_per_source_rate": (f.max_per_source_rate * 10.0).round() / 10.0,
            "top": f.top.iter().take(5).map(|(a, n)| format!("{a} x{n}")).collect::<Vec<_>>(),
            "spoof_proof": p.spoof_proof.map(|(a, why)| format!("{a}: {why}")),
            "syn_flood": p.syn_flood_seen.is_some(),
        })
    }

    /// Decides one port's mode from its figures, with hysteresis.
    fn decide_port(&mut self, port: u16, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        let t = Arc::clone(&self.t);
        let p = self.ports.get_mut(&port).expect("port state exists");
        let f = p.traffic.figures(now);
        // What the limit dropped never reached conntrack: it counts toward the port's rate.
        let horizon = now - span(t.window);
        while p.dropped.front().is_some_and(|(at, _)| *at < horizon) {
            p.dropped.pop_front();
        }
        let dropped_rate = p.dropped.iter().map(|(_, n)| *n).sum::<u64>() as f64 / t.window.as_secs_f64().max(1.0);
        let rate = f.rate_per_s + dropped_rate;
        let kernel_flood = p.syn_flood_seen.is_some_and(|s| now - s < span(t.window));
        let many = f.distinct >= t.ddos_distinct;
        let fast = rate >= t.port_rate || kernel_flood;
        // Diffuse: the rate is high though no source is fast: per-source limits would catch nothing.
        let diffuse = fast && f.max_per_source_rate < t.dos_source_rate && f.top_share < t.concentrated_share;
        let concentrated = fast && f.top_share >= t.concentrated_share;
        let want = if many || diffuse || (p.spoof_proof.is_some() && fast) {
            if t.global_exempt.contains(&port) {
                Mode::PerSource
            } else {
                Mode::Global
            }
        } else if concentrated {
            Mode::PerSource
        } else {
            Mode::Normal
        };
        let calm = f.distinct < t.ddos_distinct / 2 && rate < t.port_rate / 2.0 && !kernel_flood;
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
        p.peak_rate = p.peak_rate.max(rate);
        let figures = Self::figures_json(&f, p);
        match (p.mode, want) {
            // Escalation, or a first response.
            (from, to)
                if to != Mode::Normal && (from == Mode::Normal || (from == Mode::PerSource && to == Mode::Global)) =>
            {
                p.mode = to;
                p.since.get_or_insert(now);
                p.calm_since = None;
                // Say which trigger fired: the admin reads this in the mail.
                let why = if many {
                    format!("too many sources to narrow down (>= {})", t.ddos_distinct)
                } else if let (Some((a, what)), true) = (p.spoof_proof, fast) {
                    format!("a fast flood with spoofed sources ({a} is {what})")
                } else if diffuse {
                    "a high rate from sources that are each slow (per-source limits would catch nothing)".to_string()
                } else {
                    "a few concentrated sources".to_string()
                };
                let (kind, lm) = match (to, many || diffuse || p.spoof_proof.is_some()) {
                    (Mode::Global, _) => ("ddos_detected", LimitMode::Global),
                    (_, true) => ("ddos_detected", LimitMode::Source),
                    _ => ("dos_detected", LimitMode::Source),
                };
                let summary = format!(
                    "port {port}: {why}: {} distinct sources in {}, {:.0} new connections/s, top 10 share {:.0}%",
                    f.distinct,
                    humantime::format_duration(t.window),
                    f.rate_per_s,
                    f.top_share * 100.0
                );
                self.alerts.push(Alert {
                    kind,
                    port: Some(port),
                    time: now,
                    summary: summary.clone(),
                    figures: figures.clone(),
                });
                self.limit(port, lm, (summary, Some(figures.to_string())), now, out);
            }
            (mode, _) => {
                let p = self.ports.get_mut(&port).expect("port state exists");
                if !calm {
                    p.calm_since = None;
                    // Kept on: refreshed at half its life, so it lapses by itself if floodgate stops.
                    if p.limit_until.is_some_and(|u| u - now < span(t.limit_for / 2)) {
                        let lm = if mode == Mode::Global { LimitMode::Global } else { LimitMode::Source };
                        self.limit(
                            port,
                            lm,
                            (format!("port {port}: attack goes on"), Some(figures.to_string())),
                            now,
                            out,
                        );
                    }
                    return;
                }
                let calm_since = *p.calm_since.get_or_insert(now);
                if now - calm_since < span(t.converge_after) {
                    // Calm, but not for long enough yet; the limit is still refreshed until convergence.
                    if p.limit_until.is_some_and(|u| u - now < span(t.limit_for / 2)) {
                        let lm = if mode == Mode::Global { LimitMode::Global } else { LimitMode::Source };
                        self.limit(port, lm, (format!("port {port}: converging"), Some(figures.to_string())), now, out);
                    }
                    return;
                }
                let started = p.since.unwrap_or(now);
                let summary = format!(
                    "port {port}: attack over after {}; peak {} distinct sources, {:.0} new connections/s; {} bans",
                    // Whole seconds: the admin reads this in a mail.
                    humantime::format_duration(std::time::Duration::from_secs(
                        (now - started).to_std().unwrap_or_default().as_secs()
                    )),
                    p.peak_distinct,
                    p.peak_rate,
                    p.bans
                );
                let lm = if mode == Mode::Global { LimitMode::Global } else { LimitMode::Source };
                p.mode = Mode::Normal;
                p.since = None;
                p.calm_since = None;
                p.limit_until = None;
                p.spoof_proof = None;
                out.push(Decision::Lift { port, mode: lm, reason: summary.clone(), origin: "policy".into() });
                self.alerts.push(Alert { kind: "converged", port: Some(port), time: now, summary, figures });
            }
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
        // The limit rules' drops (read from their counters by the daemon).
        if ev.kind == Kind::KernelCounter && ev.rule.starts_with("nft.limit_") {
            if let Some(port) = ev.port {
                self.port(port).dropped.push_back((ev.time, u64::from(ev.count)));
            }
            return;
        }
        // 6. The kernel's SYN-flood line names the listener's port.
        if ev.kind == Kind::SynFlood {
            if let Some(port) = ev.port {
                self.port(port).syn_flood_seen = Some(ev.time);
            }
            return;
        }
        // 4. New connections per port, and per source over all ports.
        let (Some(addr), Some(port)) = (ev.addr, ev.port) else { return };
        if !matches!(ev.kind, Kind::ConnNew | Kind::Connect) || self.allowed(addr) {
            return;
        }
        let why = impossible(addr, &self.ours);
        let p = self.port(port);
        p.traffic.observe(addr, now);
        if p.spoof_proof.is_none() {
            p.spoof_proof = why.map(|why| (addr, why));
        }
        self.sources.observe(addr, now);
    }

    fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        self.jail.tick(now, out);
        self.evidence.tick(now);
        self.banned_until.retain(|_, u| *u > now);
        self.prefixes_banned.retain(|_, u| *u > now);
        let horizon = now - span(self.t.window * 10);
        self.by_prefix.retain(|_, v| v.last().is_some_and(|t| *t >= horizon));
        // 2. DoS from one or a few sources: fast sources across all ports, banned only if proven real.
        let f = self.sources.figures(now);
        // Per-source rates over the time the window actually covers (it fills up after a start).
        let per_event = if f.total > 0 { f.rate_per_s / f.total as f64 } else { 0.0 };
        for (addr, n) in f.top.iter().take(20) {
            let rate = *n as f64 * per_event;
            if rate < self.t.dos_source_rate {
                break;
            }
            if !self.evidence.is_real(*addr) {
                continue; // SYN-only evidence never bans: the address may be spoofed.
            }
            let reason = format!("DoS: {rate:.0} new connections/s over all ports (proven real)");
            let before = out.len();
            let figures = serde_json::json!({
                "rate_per_s": (rate * 10.0).round() / 10.0,
                "connections_in_window": n,
                "evidence": "proven real (completed handshake or application event)",
            });
            self.ban(*addr, self.bantime, (reason, "policy:dos".into(), Some(figures.to_string())), now, out);
            if out.len() > before {
                self.alerts.push(Alert {
                    kind: "dos_detected",
                    port: None,
                    time: now,
                    summary: format!("{addr}: {rate:.0} new connections/s over all ports; banned"),
                    figures: serde_json::json!({"addr": addr.to_string(), "rate_per_s": rate}),
                });
            }
        }
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
        let mut engine = Engine::from_config(&Config::default());
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
