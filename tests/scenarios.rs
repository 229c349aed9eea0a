//! Scenario traces replayed through the policy engine on a virtual clock, each asserting its decisions: the
//! attacks of the field report and the Q&A in shared/seeds, and what must never happen (an allowlisted address
//! banned or limited, a SYN-only source banned).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use floodgate::addr::Cidr;
use floodgate::config::Config;
use floodgate::event::{Event, Kind};
use floodgate::policy::engine::{replay, Engine, Mode, Replay};
use floodgate::policy::jail::Jail;
use floodgate::store::{Decision, LimitMode};

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
    Engine::new(floodgate::config::PolicyConfig::default(), Jail::from_config(&cfg), cfg.allowlist.clone())
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

fn limits(r: &Replay, port: u16) -> Vec<LimitMode> {
    r.decisions
        .iter()
        .filter_map(|(_, d)| match d {
            Decision::Limit { port: p, mode, .. } if *p == port => Some(*mode),
            _ => None,
        })
        .collect()
}

fn alerts(r: &Replay, kind: &str, port: Option<u16>) -> usize {
    r.alerts.iter().filter(|a| a.kind == kind && a.port == port).count()
}

/// Spoofed SYNs from `n` addresses rotating over several /24s of 198.18.0.0/15, `per_s` a second, for `secs`.
fn spoofed_flood(port: u16, n: u32, per_s: u32, secs: u32, start_ms: i64) -> Vec<Event> {
    let mut out = Vec::new();
    let mut k = 0u32;
    for s in 0..secs {
        for i in 0..per_s {
            let a = k % n;
            k += 1;
            let addr = IpAddr::from([198, 18, (a / 250) as u8 * 7 % 255, (a % 250 + 1) as u8]);
            out.push(syn(start_ms + i64::from(s) * 1000 + i64::from(i * 1000 / per_s), addr, port));
        }
    }
    out
}

#[test]
fn one_password_guesser_is_banned_and_nothing_else_happens() {
    let g = ip("198.51.100.7");
    let mut ev: Vec<Event> = (0..5).map(|i| auth_failure(i * 10_000, g, 993, "imap")).collect();
    ev.push(auth_failure(1000, ip("198.51.100.8"), 993, "imap"));
    let r = run(&mut ev, 120);
    assert_eq!(banned(&r), HashSet::from([Cidr::host(g)]));
    assert!(limits(&r, 993).is_empty());
}

#[test]
fn a_dos_from_one_isp_on_every_port_bans_its_real_hosts() {
    // The field report's first attack: a few hosts of one ISP at ~20 connections a second on all open ports.
    let hosts: Vec<IpAddr> = (1..=4).map(|h| IpAddr::from([203, 0, 113, h])).collect();
    let mut ev = Vec::new();
    for (j, h) in hosts.iter().enumerate() {
        for i in 0..(20 * 90) {
            let port = [25, 587, 110, 995][i % 4];
            ev.push(syn(i as i64 * 50 + j as i64, *h, port));
            if i % 40 == 0 {
                ev.push(assured(i as i64 * 50 + j as i64 + 30, *h, port));
            }
        }
    }
    let r = run(&mut ev, 120);
    let b = banned(&r);
    for h in &hosts {
        assert!(b.contains(&Cidr::host(*h)), "{h} proven real and fast: banned; got {b:?}");
    }
    assert!(alerts(&r, "dos_detected", None) >= 1);
    assert!(!b.contains(&"203.0.113.0/24".parse().unwrap()), "4 hosts: under prefix_after (5)");
}

#[test]
fn enough_banned_hosts_of_one_slash_24_ban_the_prefix_but_never_the_admins() {
    let mut ev = Vec::new();
    for h in 1..=6u8 {
        ev.extend(
            (0..5).map(|i| auth_failure(i64::from(h) * 100 + i * 1000, IpAddr::from([198, 51, 100, h]), 993, "imap")),
        );
        // The admin's /24: six guessers there too, but the prefix holds the admin.
        ev.extend(
            (0..5)
                .map(|i| auth_failure(i64::from(h) * 100 + i * 1000, IpAddr::from([203, 0, 113, 20 + h]), 993, "imap")),
        );
    }
    let r = run(&mut ev, 30);
    let b = banned(&r);
    assert!(b.contains(&"198.51.100.0/24".parse().unwrap()), "{b:?}");
    assert!(!b.contains(&"203.0.113.0/24".parse().unwrap()), "never a prefix holding the admin: {b:?}");
    assert_eq!(b.iter().filter(|c| c.is_host()).count(), 12, "each guesser banned itself too");
}

#[test]
fn six_hundred_spoofed_sources_turn_on_the_global_limit_and_ban_nobody() {
    let mut ev = spoofed_flood(587, 600, 200, 120, 0);
    let r = run(&mut ev, 130);
    assert_eq!(limits(&r, 587).first(), Some(&LimitMode::Global), "{:?}", r.alerts);
    assert!(banned(&r).is_empty(), "SYN-only evidence never bans");
    assert_eq!(alerts(&r, "ddos_detected", Some(587)), 1, "one notification, not one per tick");
}

#[test]
fn smtp_stays_open_to_the_world_per_source_limit_instead_of_global() {
    let mut ev = spoofed_flood(25, 600, 200, 60, 0);
    let r = run(&mut ev, 70);
    let l = limits(&r, 25);
    assert!(!l.is_empty() && l.iter().all(|m| *m == LimitMode::Source), "{l:?}");
}

#[test]
fn a_million_sources_with_one_syn_each_switch_to_global_with_bounded_memory() {
    let mut ev = Vec::with_capacity(1_000_000);
    for i in 0..1_000_000u32 {
        // 198.18.0.0/15 holds 131,072 addresses; the rest of the million comes from 100.64.0.0/10-like space.
        let addr = IpAddr::from((0x6440_0000u32 + i).to_be_bytes());
        ev.push(syn(i64::from(i) / 10, addr, 993));
    }
    let mut e = engine();
    let r = replay(&mut e, &ev, Duration::from_secs(1), at(110_000));
    assert_eq!(limits(&r, 993).first(), Some(&LimitMode::Global));
    assert!(banned(&r).is_empty());
    use floodgate::policy::Policy;
    assert!(e.tracked() < 1000, "no per-source state for SYN-only sources: {}", e.tracked());
}

#[test]
fn a_real_brute_forcer_inside_a_spoofed_flood_gets_both_responses() {
    let mut ev = spoofed_flood(587, 800, 200, 90, 0);
    let bf = ip("203.0.113.66");
    ev.extend((0..5).map(|i| auth_failure(5_000 + i * 3_000, bf, 587, "submission")));
    let r = run(&mut ev, 100);
    assert_eq!(limits(&r, 587).first(), Some(&LimitMode::Global));
    let b = banned(&r);
    assert_eq!(b, HashSet::from([Cidr::host(bf)]), "only the proven brute forcer");
}

#[test]
fn the_admin_inside_the_flood_is_never_banned_nor_counted() {
    let mut ev = spoofed_flood(587, 600, 200, 60, 0);
    let admin = ip(ADMIN);
    for i in 0..200 {
        ev.push(syn(i * 300, admin, 587));
        ev.push(assured(i * 300 + 10, admin, 587));
    }
    ev.extend((0..20).map(|i| auth_failure(i * 1000, admin, 587, "submission")));
    let r = run(&mut ev, 70);
    assert!(banned(&r).iter().all(|c| !c.contains(admin)), "{:?}", banned(&r));
}

#[test]
fn when_the_attack_stops_the_port_converges_once_with_one_notice_each_way() {
    let mut ev = spoofed_flood(587, 600, 200, 60, 0);
    // A little normal traffic afterwards.
    ev.extend((0..30).map(|i| syn(61_000 + i * 10_000, IpAddr::from([198, 51, 100, 20]), 587)));
    let mut e = engine();
    ev.sort_by_key(|e| e.time);
    let r = replay(&mut e, &ev, Duration::from_secs(1), at(60_000 + 60_000 + 300_000 + 10_000));
    assert_eq!(alerts(&r, "ddos_detected", Some(587)), 1);
    assert_eq!(alerts(&r, "converged", Some(587)), 1, "{:?}", r.alerts);
    let lift = r.decisions.iter().find(|(_, d)| matches!(d, Decision::Lift { port: 587, .. }));
    let (when, _) = lift.expect("the limit is lifted");
    assert!(*when >= at(60_000 + 300_000), "not before converge_after of calm: {when}");
    assert_eq!(e.mode(587), Mode::Normal);
    let summary = &r.alerts.iter().find(|a| a.kind == "converged").unwrap().summary;
    assert!(summary.contains("peak") && summary.contains("distinct"), "{summary}");
}

#[test]
fn a_flood_the_limit_holds_back_is_not_mistaken_for_calm() {
    // 60 s of spoofed flood turns the global limit on; then conntrack sees only what the limit lets through
    // (10/s), while the limit's counter reports 190 drops a second for ten more minutes.
    let mut ev = spoofed_flood(587, 600, 200, 60, 0);
    ev.extend(spoofed_flood(587, 100, 10, 600, 60_000));
    for s in 60..660 {
        let mut d = Event::new(at(s * 1000), Kind::KernelCounter, Arc::from("nft.limit_global"));
        d.port = Some(587);
        d.count = 190;
        ev.push(d);
    }
    let r = run(&mut ev, 1100);
    let lift = r.decisions.iter().find(|(_, d)| matches!(d, Decision::Lift { port: 587, .. })).map(|(t, _)| *t);
    let lift = lift.expect("lifted once the flood is over");
    assert!(lift >= at(660_000 + 300_000), "not while the drops go on: lifted at {lift}");
    assert_eq!(alerts(&r, "ddos_detected", Some(587)), 1, "no flapping: {:?}", r.alerts);
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
