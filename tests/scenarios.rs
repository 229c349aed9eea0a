//! Scenario traces (`tests/scenarios/*.trace`, format in `scenarios/trace.rs`) replayed through the policy
//! engine on a virtual clock, each asserting its decisions: the attacks of the field report and the Q&A in
//! shared/seeds, and what must never happen (an allowlisted address banned or limited, a SYN-only source banned).
//! Then a property test: whatever the event stream, no decision bans an allowlisted address.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use floodgate::addr::Cidr;
use floodgate::config::Config;
use floodgate::decision::Decision;
use floodgate::event::{Event, Kind};
use floodgate::policy::engine::{replay, Engine, Replay};

#[path = "scenarios/trace.rs"]
mod trace;

const ADMIN: &str = "203.0.113.10";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap()
}

fn at(ms: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::milliseconds(ms)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn engine() -> Engine {
    let cfg = Config { allowlist: vec![ADMIN.parse().unwrap()], ..Default::default() };
    cfg.policy_engine()
}

fn syn(ms: i64, addr: IpAddr, port: u16) -> Event {
    let mut e = Event::new(at(ms), Kind::ConnNew, Arc::from("conntrack.new"));
    e.addr = Some(addr);
    e.port = Some(port);
    e.local_addr = Some(ip("198.51.100.1"));
    e
}

fn assured(ms: i64, addr: IpAddr, port: u16) -> Event {
    let mut e = Event::new(at(ms), Kind::ConnDestroy, Arc::from("conntrack.destroy"));
    e.addr = Some(addr);
    e.port = Some(port);
    e.assured = Some(true);
    e
}

fn auth_failure(ms: i64, addr: IpAddr, port: u16, service: &str) -> Event {
    let mut e = Event::new(at(ms), Kind::AuthFailure, Arc::from("dovecot.login_auth_failed"));
    e.failure = true;
    e.addr = Some(addr);
    e.port = Some(port);
    e.service = Some(Arc::from(service));
    e
}

fn run(events: &mut [Event], until_s: i64) -> Replay {
    events.sort_by_key(|e| e.time);
    replay(&mut engine(), events, Duration::from_secs(1), at(until_s * 1000))
}

fn banned(r: &Replay) -> HashSet<Cidr> {
    r.decisions
        .iter()
        .filter_map(|(_, d)| match d {
            Decision::Ban { cidr, .. } => Some(*cidr),
            _ => None,
        })
        .collect()
}

/// The replay's alerts as the admin gets them: offered to the default notify throttle at their own time, the
/// throttle ticked every virtual second (as the daemon does), until `until`.
fn told(r: &Replay, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, floodgate::notice::Notice)> {
    let mut throttle = floodgate::notice::Throttle::new(&floodgate::notice::NotifyConfig::default());
    let mut alerts = r.alerts.clone();
    alerts.sort_by_key(|a| a.time);
    let mut out = Vec::new();
    let mut next = 0;
    let mut now = t0();
    while now <= until {
        while next < alerts.len() && alerts[next].time <= now {
            let n = floodgate::notice::Notice::from_alert(&alerts[next]);
            out.extend(throttle.offer(n, now).into_iter().map(|m| (now, m)));
            next += 1;
        }
        out.extend(throttle.tick(now).into_iter().map(|m| (now, m)));
        now += chrono::Duration::seconds(1);
    }
    out
}

/// Replays `tests/scenarios/NAME.trace` on a virtual clock (a tick every second) and checks its expectations.
fn replay_trace(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(format!("{name}.trace"));
    let t = trace::load(&path, t0()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config { allowlist: t.allow.clone(), ..Default::default() };
    let mut e = cfg.policy_engine();
    if t.synproxy_ready {
        e.set_synproxy_ready(Ok(()));
    }
    let r = replay(&mut e, &t.events, Duration::from_secs(1), t0() + chrono::Duration::from_std(t.until).unwrap());
    use floodgate::policy::Policy;
    let notices = told(&r, t0() + chrono::Duration::from_std(t.until).unwrap());
    let outcome =
        trace::Outcome { replay: &r, notices: &notices, t0: t0(), mode: &|p| e.mode(p), tracked: e.tracked() };
    let failed: Vec<String> = t
        .expects
        .iter()
        .filter_map(|x| {
            x.check(&outcome).err().map(|why| format!("{}:{}: `{}`: {why}", path.display(), x.line, x.text))
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { replay_trace(stringify!($name)); })*
        const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

scenarios!(
    one_password_guesser,
    dos_from_one_isp,
    prefix_aggregation,
    six_hundred_spoofed_sources,
    smtp_stays_open,
    one_million_sources,
    brute_forcer_inside_flood,
    admin_inside_flood,
    convergence,
    limit_holds_back_flood,
    convergence_summary_counts_the_attack_only,
    isp_hosts_together,
    isp_spoofed_network,
    smtp_synproxy,
    four_ports_notices,
);

#[test]
fn every_trace_file_is_replayed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|x| x == "trace") {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            assert!(LISTED.contains(&stem.as_str()), "{} is not in scenarios!(...)", path.display());
        }
    }
}

mod allowlist_always_wins {
    use super::*;
    use proptest::prelude::*;

    /// Addresses around the admin's (same /24, same /16) so that prefix decisions would catch it if they could.
    fn pool() -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = (0..6).map(|i| IpAddr::from([203, 0, 113, 8 + i])).collect();
        v.extend((0..4).map(|i| IpAddr::from([198, 18, 0, 1 + i])));
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the event stream, no decision bans an allowlisted address.
        #[test]
        fn no_decision_bans_an_allowlisted_address(
            stream in proptest::collection::vec((0usize..10, 0u8..3, 0usize..4, 0i64..120_000), 1..600),
        ) {
            let pool = pool();
            let ports = [25u16, 587, 993, 110];
            let mut ev: Vec<Event> = stream
                .iter()
                .map(|&(a, k, p, ms)| {
                    let addr = pool[a];
                    match k {
                        0 => syn(ms, addr, ports[p]),
                        1 => assured(ms, addr, ports[p]),
                        _ => auth_failure(ms, addr, ports[p], "imap"),
                    }
                })
                .collect();
            let r = run(&mut ev, 200);
            let admin = ip(ADMIN);
            for c in banned(&r) {
                prop_assert!(!c.contains(admin), "{c} covers the admin");
            }
        }
    }
}
