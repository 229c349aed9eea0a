//! `make bench`: the policy engine (src/policy/engine.rs) alone, on one thread and a virtual clock, as the
//! daemon drives it: every event through `Policy::observe`, `Policy::tick` once per virtual second. Prints
//! figures; asserts nothing about speed.
//!
//! - memory, measured first and in a child process (this binary again, with BENCH_POLICY_CHILD=memory), so that
//!   nothing the trace below allocates raises the high-water mark, which never goes down: VmRSS and VmHWM from
//!   /proc/self/status before the engine, after `Engine::new`, and after BENCH_SOURCES (default 1,000,000)
//!   distinct sources sent one SYN each to port 993 within one window (over 50 s, a tick every second; each
//!   event is made, observed and dropped, never held). Then the same engine with `MAX_REAL` (100,000) distinct
//!   real sources on top (one auth failure each: the spoof evidence at its cap, as many jail entries), and what
//!   one more new real source costs once the evidence is at its cap.
//! - throughput: BENCH_EVENTS (default 10,000,000) events generated up front (not timed) over 30 virtual
//!   minutes: events/s through the engine overall, per phase and in ticks alone, the decisions it made by kind,
//!   its alerts by kind and each port's alerts in time (the modes switching and converging).
//!
//! The trace, the same shares in every phase: 70% conn_new, 5% conn_destroy (assured: real clients), 5% auth
//! failures, 20% log signals (LoginOk, and Postfix's Connect lines, at most ~4/s since they count as new
//! connections: 0.1% of the whole). 4,000 normal clients on ports 25, 587, 993 and 110, a drifting
//! few hundred of them active at a time, keep ~25 new connections/s (and ~4 Connect lines/s) throughout; 300
//! brute forcers, ~30 active at a time, send the auth failures (so bans happen). Phases:
//!
//! - 0-5 min, quiet: 36 events/s;
//! - 5-10 min, DoS from one /24: 10 hosts of 203.0.113.0/24 at ~25 new connections/s each over the four ports,
//!   proven real by their handshakes; 400 events/s;
//! - 10-20 min, DDoS: all the other events (~16,400/s at the default size), the new connections a spoofed flood
//!   rotating over 400,000 addresses from 198.18.0.0/15 on, over the four ports;
//! - 20-30 min, quiet again: the ports calm down and converge (after `converge_after`, 5 min).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use floodgate::config::Config;
use floodgate::decision::{Decision, LimitMode};
use floodgate::event::{Event, Kind};
use floodgate::policy::engine::{Engine, Mode};
use floodgate::policy::evidence::MAX_REAL;
use floodgate::policy::Policy;
use floodgate_lab::gen;
use floodgate_lab::proc_memory::memory;

const CHILD_ENV: &str = "BENCH_POLICY_CHILD";
/// This server's address, as conntrack reports it for the new connections.
const OURS: [u8; 4] = [198, 51, 100, 1];
const PORTS: [u16; 4] = [25, 587, 993, 110];
const NORMAL: u32 = 4_000;
/// Normal clients active at a time (a window drifting over the 4,000), so that a quiet port sees ~100 distinct
/// sources a minute, under half of `ddos_distinct` (300), and can converge.
const ACTIVE: u32 = 320;
const BRUTE: u32 = 300;
const BRUTE_ACTIVE: u32 = 30;
const DOS_HOSTS: u8 = 10;
const FLOOD: u32 = 400_000;
/// Normal new connections and Connect lines per second, whatever the phase.
const NORMAL_CONN_RATE: f64 = 25.0;
const CONNECT_RATE: f64 = 3.6;
const QUIET_RATE: f64 = 36.0;
const DOS_RATE: f64 = 400.0;
const TRACE_SECS: i64 = 1800;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn t0() -> DateTime<Utc> {
    // A multiple of 10 s: the sketches' slices start on whole ten seconds after it.
    Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap()
}

fn at_ns(ns: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::nanoseconds(ns)
}

fn v4(bits: u32) -> IpAddr {
    IpAddr::from(bits.to_be_bytes())
}

fn engine() -> Engine {
    let cfg = Config {
        allowlist: vec!["203.0.113.10".parse().unwrap(), "192.0.2.0/28".parse().unwrap()],
        ..Default::default()
    };
    cfg.policy_engine()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn row(name: &str, value: String) {
    println!("policy: {name:<62} {value:>40}");
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        memory_child();
        return;
    }
    println!("policy: {:<62} {:>40}", "figure", "value");
    let status = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, "memory")
        .status()
        .expect("run the memory child");
    assert!(status.success(), "memory child: {status}");
    throughput();
}

/// Ticks every virtual second up to `until`, discarding decisions and alerts.
fn tick_until(e: &mut Engine, next_tick: &mut DateTime<Utc>, until: DateTime<Utc>, out: &mut Vec<Decision>) {
    while *next_tick <= until {
        e.tick(*next_tick, out);
        out.clear();
        *next_tick += chrono::Duration::seconds(1);
    }
}

fn memory_child() {
    let sources = env("BENCH_SOURCES", 1_000_000) as u32;
    let (rss0, hwm0) = memory();
    let mut e = engine();
    let (rss1, _) = memory();
    let mut out = Vec::new();
    let rule: Arc<str> = Arc::from("conntrack.new");
    let mut next_tick = t0() + chrono::Duration::seconds(1);
    let span_ns: i64 = 50_000_000_000;
    let start = Instant::now();
    for i in 0..sources {
        let t = at_ns(i64::from(i) * span_ns / i64::from(sources.max(1)));
        tick_until(&mut e, &mut next_tick, t, &mut out);
        let mut ev = Event::new(t, Kind::ConnNew, rule.clone());
        // 100.64.0.0/10 and on: a million addresses, every one new.
        ev.addr = Some(v4(0x6440_0000 + i));
        ev.port = Some(993);
        ev.local_addr = Some(IpAddr::from(OURS));
        e.observe(&ev, t, &mut out);
        out.clear();
    }
    tick_until(&mut e, &mut next_tick, t0() + chrono::Duration::seconds(55), &mut out);
    let syn_secs = start.elapsed().as_secs_f64();
    let (rss2, hwm2) = memory();
    let alerts: Vec<&str> = e.take_alerts().iter().map(|a| a.kind.as_str()).collect();

    row("memory: process before the engine: VmRSS / VmHWM", format!("{} / {}", mib(rss0), mib(hwm0)));
    row("memory: Engine::new", format!("+{} KiB", rss1.saturating_sub(rss0)));
    row(
        &format!("memory: {sources} distinct SYN sources on 993 in 50 s, + ticks"),
        format!("{:.2} s = {:.2} M events/s", syn_secs, f64::from(sources) / syn_secs / 1e6),
    );
    row(
        "memory: then: port 993 mode; alerts; engine.tracked()",
        format!("{:?}; {}; {}", e.mode(993), alerts.join(","), e.tracked()),
    );
    row(
        "memory: then: VmRSS (engine's growth) / VmHWM",
        format!("{} (+{}) / {}", mib(rss2), mib(rss2.saturating_sub(rss0)), mib(hwm2)),
    );

    // Real sources on top: one auth failure each, 10 s on (within findtime, so the jail keeps them all).
    let rule: Arc<str> = Arc::from("dovecot.login_auth_failed");
    let imap: Arc<str> = Arc::from("imap");
    let real = MAX_REAL as u32;
    let extra = 1_000u32;
    let mut per_event = [0.0f64; 2];
    for (part, range) in [(0, 0..real), (1, real..real + extra)] {
        let n = range.len() as f64;
        let start = Instant::now();
        for i in range {
            let t = t0() + chrono::Duration::seconds(60) + chrono::Duration::microseconds(i64::from(i) * 300);
            tick_until(&mut e, &mut next_tick, t, &mut out);
            let mut ev = Event::new(t, Kind::AuthFailure, rule.clone());
            ev.addr = Some(v4(0x2d00_0000 + i));
            ev.port = Some(993);
            ev.service = Some(imap.clone());
            e.observe(&ev, t, &mut out);
            out.clear();
        }
        per_event[part] = start.elapsed().as_secs_f64() / n;
    }
    let (rss3, hwm3) = memory();
    row(
        &format!("memory: + {real} distinct real sources: VmRSS (growth) / VmHWM"),
        format!("{} (+{}) / {}", mib(rss3), mib(rss3.saturating_sub(rss2)), mib(hwm3)),
    );
    row(
        "memory: an auth failure from a new source, evidence below / at cap",
        format!("{:.2} / {:.1} µs", per_event[0] * 1e6, per_event[1] * 1e6),
    );
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Quiet,
    Dos,
    Ddos,
}

struct Phase {
    name: &'static str,
    stage: Stage,
    start_s: i64,
    end_s: i64,
    events: usize,
}

/// The shared `Arc<str>`s the events point to, as the parser would hand them out.
struct Names {
    conn_new: Arc<str>,
    conn_destroy: Arc<str>,
    connect: Arc<str>,
    sasl: Arc<str>,
    dovecot_fail: Arc<str>,
    dovecot_login: Arc<str>,
    services: [Arc<str>; 4],
}

fn service_of(port: u16) -> usize {
    PORTS.iter().position(|p| *p == port).expect("one of PORTS")
}

fn normal_addr(c: u32) -> IpAddr {
    // 81.0.0.0 on, 250 hosts per /24 (.1-.250).
    v4(0x5100_0000 + (c / 250) * 256 + c % 250 + 1)
}

fn brute_addr(b: u32) -> IpAddr {
    v4(0x2d40_0000 + (b / 200) * 256 + b % 200 + 1)
}

fn trace(total: usize, seed: u64) -> (Vec<Event>, Vec<Phase>) {
    let quiet_dos = QUIET_RATE * 900.0 + DOS_RATE * 300.0;
    // A small BENCH_EVENTS scales the quiet and DoS phases down so that the DDoS still gets half.
    let scale = (total as f64 / (2.0 * quiet_dos)).min(1.0);
    let quiet = |s: f64| (QUIET_RATE * s * scale) as usize;
    let dos = (DOS_RATE * 300.0 * scale) as usize;
    let ddos = total - quiet(300.0) - dos - quiet(600.0);
    let phases = vec![
        Phase { name: "quiet", stage: Stage::Quiet, start_s: 0, end_s: 300, events: quiet(300.0) },
        Phase { name: "DoS from one /24", stage: Stage::Dos, start_s: 300, end_s: 600, events: dos },
        Phase { name: "DDoS, spoofed", stage: Stage::Ddos, start_s: 600, end_s: 1200, events: ddos },
        Phase { name: "quiet again", stage: Stage::Quiet, start_s: 1200, end_s: 1800, events: quiet(600.0) },
    ];
    let n = Names {
        conn_new: Arc::from("conntrack.new"),
        conn_destroy: Arc::from("conntrack.destroy"),
        connect: Arc::from("postfix.connect"),
        sasl: Arc::from("postfix.sasl_auth_failed"),
        dovecot_fail: Arc::from("dovecot.login_auth_failed"),
        dovecot_login: Arc::from("dovecot.login_ok"),
        services: [Arc::from("smtp"), Arc::from("submission"), Arc::from("imap"), Arc::from("pop3")],
    };
    let ours = IpAddr::from(OURS);
    let mut r = gen::Rng::new(seed);
    let mut flood = 0u32;
    let mut events = Vec::with_capacity(total);
    for p in &phases {
        let dur_ns = (p.end_s - p.start_s) as f64 * 1e9;
        let density = p.events as f64 / (p.end_s - p.start_s) as f64;
        let normal_share = (NORMAL_CONN_RATE / (0.70 * density)).min(1.0);
        let connect_share = (CONNECT_RATE / (0.20 * density)).min(0.5);
        for k in 0..p.events {
            let ns = p.start_s * 1_000_000_000 + ((k as f64 + 0.5) * dur_ns / p.events as f64) as i64;
            let time = at_ns(ns);
            let secs = ns / 1_000_000_000;
            let active = |r: &mut gen::Rng, pool: u32, active: u32| {
                ((secs as u64 * u64::from(pool) / TRACE_SECS as u64 + r.below(u64::from(active))) % u64::from(pool))
                    as u32
            };
            let dos_host = |r: &mut gen::Rng| IpAddr::from([203, 0, 113, 21 + r.below(u64::from(DOS_HOSTS)) as u8]);
            let roll = r.below(100);
            let ev = if roll < 70 {
                let mut e = Event::new(time, Kind::ConnNew, n.conn_new.clone());
                e.local_addr = Some(ours);
                if p.stage == Stage::Quiet || r.unit() < normal_share {
                    let c = active(&mut r, NORMAL, ACTIVE);
                    e.addr = Some(normal_addr(c));
                    e.port = Some(PORTS[(c % 4) as usize]);
                } else if p.stage == Stage::Dos {
                    e.addr = Some(dos_host(&mut r));
                    e.port = Some(PORTS[r.below(4) as usize]);
                } else {
                    e.addr = Some(v4(0xc612_0000 + flood % FLOOD));
                    flood += 1;
                    e.port = Some(PORTS[r.below(4) as usize]);
                }
                e
            } else if roll < 75 {
                let mut e = Event::new(time, Kind::ConnDestroy, n.conn_destroy.clone());
                e.local_addr = Some(ours);
                e.assured = Some(true);
                if p.stage == Stage::Dos && r.below(2) == 0 {
                    e.addr = Some(dos_host(&mut r));
                    e.port = Some(PORTS[r.below(4) as usize]);
                } else {
                    let c = active(&mut r, NORMAL, ACTIVE);
                    e.addr = Some(normal_addr(c));
                    e.port = Some(PORTS[(c % 4) as usize]);
                }
                e
            } else if roll < 80 {
                let b = active(&mut r, BRUTE, BRUTE_ACTIVE);
                let port = PORTS[(b % 4) as usize];
                let rule = if port == 25 || port == 587 { &n.sasl } else { &n.dovecot_fail };
                let mut e = Event::new(time, Kind::AuthFailure, rule.clone());
                e.failure = true;
                e.addr = Some(brute_addr(b));
                e.port = Some(port);
                e.service = Some(n.services[service_of(port)].clone());
                e.user = Some("info".to_string());
                e
            } else if r.unit() < connect_share {
                let mut e = Event::new(time, Kind::Connect, n.connect.clone());
                // Postfix's own clients: those on port 25.
                let c = active(&mut r, NORMAL, ACTIVE);
                e.addr = Some(normal_addr(c - c % 4));
                e.port = Some(25);
                e.service = Some(n.services[0].clone());
                e
            } else {
                // Mailbox users log in from anywhere in the pool; logins are not new connections to count.
                let c = r.below(u64::from(NORMAL)) as u32;
                let port = [587, 587, 993, 110][(c % 4) as usize];
                let mut e = Event::new(time, Kind::LoginOk, n.dovecot_login.clone());
                e.addr = Some(normal_addr(c));
                e.port = Some(port);
                e.service = Some(n.services[service_of(port)].clone());
                e.user = Some(format!("user{c}"));
                e
            };
            events.push(ev);
        }
    }
    (events, phases)
}

#[derive(Default)]
struct Tally {
    bans_jail: u64,
    bans_dos: u64,
    /// Prefix bans (policy:prefix) and any other origin.
    bans_other: u64,
    limits_global: u64,
    limits_source: u64,
    lifts: u64,
    other: u64,
}

impl Tally {
    fn take(&mut self, out: &mut Vec<Decision>) {
        for d in out.drain(..) {
            match d {
                Decision::Ban { origin, .. } if origin.starts_with("jail") => self.bans_jail += 1,
                Decision::Ban { origin, .. } if origin == "policy:dos" => self.bans_dos += 1,
                Decision::Ban { .. } => self.bans_other += 1,
                Decision::Limit { mode: LimitMode::Global, .. } => self.limits_global += 1,
                Decision::Limit { .. } => self.limits_source += 1,
                Decision::Lift { .. } => self.lifts += 1,
                _ => self.other += 1,
            }
        }
    }
}

fn throughput() {
    let total = env("BENCH_EVENTS", 10_000_000);
    let start = Instant::now();
    let (events, phases) = trace(total, 11);
    let gen_secs = start.elapsed().as_secs_f64();
    let mut kinds = [0usize; Kind::ALL.len()];
    for e in &events {
        kinds[e.kind.code() as usize - 1] += 1;
    }
    let share =
        |k: Kind| format!("{k} {:.1}%", 100.0 * kinds[k.code() as usize - 1] as f64 / events.len().max(1) as f64);
    row(
        &format!("trace: {total} events over 30 min, generated (not timed) in"),
        format!("{gen_secs:.2} s, {} MiB of Event", (events.len() * std::mem::size_of::<Event>()) >> 20),
    );
    row(
        "trace: shares",
        [Kind::ConnNew, Kind::ConnDestroy, Kind::AuthFailure, Kind::Connect, Kind::LoginOk].map(share).join(", "),
    );

    let mut e = engine();
    let mut out = Vec::new();
    let mut tally = Tally::default();
    let mut alerts: Vec<(i64, &'static str, Option<u16>)> = Vec::new();
    let one_s = chrono::Duration::seconds(1);
    let mut next_tick = t0() + one_s;
    let (mut ticks, mut tick_time, mut tick_max) = (0u64, Duration::ZERO, Duration::ZERO);
    let mut tick = |e: &mut Engine, now: DateTime<Utc>, out: &mut Vec<Decision>, tally: &mut Tally| {
        let t = Instant::now();
        e.tick(now, out);
        let d = t.elapsed();
        ticks += 1;
        tick_time += d;
        tick_max = tick_max.max(d);
        tally.take(out);
        for a in e.take_alerts() {
            alerts.push(((a.time - t0()).num_seconds(), a.kind.as_str(), a.port));
        }
    };
    let mut per_phase = Vec::new();
    let mut first = 0;
    let start = Instant::now();
    for p in &phases {
        let phase_start = Instant::now();
        for ev in &events[first..first + p.events] {
            while next_tick <= ev.time {
                tick(&mut e, next_tick, &mut out, &mut tally);
                next_tick += one_s;
            }
            e.observe(ev, ev.time, &mut out);
            if !out.is_empty() {
                tally.take(&mut out);
            }
        }
        first += p.events;
        per_phase.push(phase_start.elapsed());
    }
    while next_tick <= t0() + chrono::Duration::seconds(TRACE_SECS) {
        tick(&mut e, next_tick, &mut out, &mut tally);
        next_tick += one_s;
    }
    let wall = start.elapsed().as_secs_f64();

    row(
        "trace: wall time (observe + tick), events/s",
        format!("{wall:.3} s = {:.2} M events/s, {:.0} ns/event", total as f64 / wall / 1e6, wall * 1e9 / total as f64),
    );
    let observe_secs = wall - tick_time.as_secs_f64();
    row(
        "trace: observe alone (wall time less the ticks)",
        format!("{observe_secs:.3} s = {:.2} M events/s", total as f64 / observe_secs / 1e6),
    );
    for (p, d) in phases.iter().zip(&per_phase) {
        let s = d.as_secs_f64();
        row(
            &format!("trace: {}-{} min {}: {} events", p.start_s / 60, p.end_s / 60, p.name, p.events),
            format!("{s:.3} s = {:.2} M events/s", p.events as f64 / s.max(1e-9) / 1e6),
        );
    }
    row(
        &format!("trace: {ticks} ticks: total / mean / max"),
        format!(
            "{:.1} ms / {:.1} µs / {:.1} µs",
            tick_time.as_secs_f64() * 1e3,
            tick_time.as_secs_f64() * 1e6 / ticks.max(1) as f64,
            tick_max.as_secs_f64() * 1e6
        ),
    );
    let t = &tally;
    row(
        "trace: decisions: bans (jail / DoS / prefix)",
        format!("{} ({} / {} / {})", t.bans_jail + t.bans_dos + t.bans_other, t.bans_jail, t.bans_dos, t.bans_other),
    );
    row(
        "trace: decisions: limits (global / per source), lifts, other",
        format!(
            "{} ({} / {}), {}, {}",
            t.limits_global + t.limits_source,
            t.limits_global,
            t.limits_source,
            t.lifts,
            t.other
        ),
    );
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, kind, _) in &alerts {
        *by_kind.entry(kind).or_default() += 1;
    }
    row("trace: alerts by kind", by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
    for port in PORTS {
        let seen: Vec<String> = alerts
            .iter()
            .filter(|a| a.2 == Some(port))
            .map(|(s, kind, _)| format!("{kind} {}:{:02}", s / 60, s % 60))
            .collect();
        let mode = match e.mode(port) {
            Mode::Normal => "normal",
            Mode::PerSource => "per source",
            Mode::Global => "global",
            Mode::Synproxy => "SYN proxy",
        };
        row(&format!("trace: port {port}: alerts at (mm:ss), mode at the end"), format!("{}; {mode}", seen.join(", ")));
    }
    row("trace: engine.tracked() at the end", e.tracked().to_string());
}
