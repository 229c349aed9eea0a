//! `make bench`: `floodgate report` over one day of a store holding 10M events (BENCH_REPORT_EVENTS scales it
//! down): the render time and the process's peak RSS during the render alone.
//!
//! The day: mail traffic from 100,000 sources of 198.18.0.0/15 and 2001:db8::/32 on five ports (connects,
//! failed logins with user names, disconnects, rejections), an hour of spoofed conntrack NEW on 587, a SYN-flood
//! line and cookie counter rises every minute of that hour, and 5,000 bans, limits and lifts. BENCH_REPORT_DB
//! keeps the store at that path and reuses it on the next run (to measure the render again without refilling).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use floodgate::attack_report::{self, Window};
use floodgate::config::Config;
use floodgate::decision::{Decision, LimitMode};
use floodgate::event::{Event, Kind, SynAction};
use floodgate::store::{Origin, Store, StoreError};
use floodgate_lab::{gen, proc_memory};

const DAY_S: i64 = 86_400;

fn main() {
    let total: u64 = std::env::var("BENCH_REPORT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("BENCH_REPORT_DB").map(PathBuf::from).unwrap_or_else(|| dir.path().join("report.db"));
    if path.exists() {
        // Opened as the daemon would first: a store of an older schema is brought up to date.
        drop(Store::open(&path).unwrap());
        println!("report: reusing the store at {}", path.display());
    } else {
        let start = Instant::now();
        fill(&path, total, t0);
        println!("report: filled {} with {total} events in {:.1} s", path.display(), start.elapsed().as_secs_f64());
    }
    let (rows, bytes) = Store::open_read_only(&path).unwrap().usage().unwrap();
    println!("report: store {rows} rows (events + conntrack minutes), {:.0} MiB", bytes as f64 / 1048576.0);

    let config = Config::default();
    let window = Window { since: t0, until: t0 + chrono::Duration::seconds(DAY_S), port: None };
    for (label, window) in [("the whole day", window), ("the day, port 587 only", Window { port: Some(587), ..window })]
    {
        // Peak RSS of the render alone: the kernel's high-water mark is reset first (clear_refs 5).
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let (rss_before, _) = proc_memory::memory();
        let start = Instant::now();
        let page = attack_report::render_page(&path, &config, window, None, window.until).unwrap();
        let secs = start.elapsed().as_secs_f64();
        let (_, hwm) = proc_memory::memory();
        println!(
            "report: {label}: rendered in {secs:.2} s, page {:.0} KiB; RSS {:.1} MiB before, peak {:.1} MiB during{}",
            page.len() as f64 / 1024.0,
            rss_before as f64 / 1024.0,
            hwm as f64 / 1024.0,
            if reset { "" } else { " (peak not reset: since the process started)" }
        );
        assert!(page.contains("<svg"), "the charts are drawn");
    }
}

/// Fills a store with `total` events over the day starting at `t0`, in batches (never all in memory).
fn fill(path: &std::path::Path, total: u64, t0: DateTime<Utc>) {
    let mut store = Store::open(path).unwrap();
    let mut r = gen::Rng::new(18);
    let input: Arc<str> = Arc::from("/var/log/mail.log");
    let kinds = [
        (Kind::Connect, "postfix.connect"),
        (Kind::AuthFailure, "dovecot.login_auth_failed"),
        (Kind::Disconnect, "postfix.disconnect"),
        (Kind::Connect, "postfix.connect"),
        (Kind::Rejected, "postfix.reject"),
        (Kind::AuthFailure, "postfix.sasl_auth_failed"),
    ];
    let rules: Vec<Arc<str>> = kinds.iter().map(|(_, r)| Arc::from(*r)).collect();
    let ports: [(u16, &str); 5] = [(25, "smtp"), (587, "submission"), (993, "imap"), (143, "imap"), (110, "pop3")];
    let services: Vec<Arc<str>> = ports.iter().map(|(_, s)| Arc::from(*s)).collect();
    let users = ["admin", "info", "test", "root", "sales", "office", "postmaster", "user"];
    let source = |n: u64| -> IpAddr {
        if n.is_multiple_of(10) {
            format!("2001:db8:{:x}::{:x}", n >> 12, (n & 0xfff) + 1).parse().unwrap()
        } else {
            IpAddr::from([198, 18 + (n >> 16) as u8 % 2, (n >> 8) as u8, n as u8])
        }
    };
    let batch = 8192u64;
    let mut i = 0u64;
    while i < total {
        let events: Vec<(Origin, Event)> = (i..(i + batch).min(total))
            .map(|j| {
                let k = r.below(kinds.len() as u64) as usize;
                let p = r.below(ports.len() as u64) as usize;
                // A skewed population: half the events from 1,000 busy sources, the rest from 100,000.
                let n = if r.below(2) == 0 { r.below(1000) } else { r.below(100_000) };
                let mut e = Event::new(
                    t0 + chrono::Duration::microseconds((j as i64) * DAY_S * 1_000_000 / total as i64),
                    kinds[k].0,
                    rules[k].clone(),
                );
                e.addr = Some(source(n));
                e.port = Some(ports[p].0);
                e.service = Some(services[p].clone());
                if kinds[k].0 == Kind::AuthFailure {
                    e.user = Some(users[r.below(users.len() as u64) as usize].to_string());
                }
                (Origin { input: input.clone(), line: Some(j + 1) }, e)
            })
            .collect();
        store.insert_events(&events).unwrap();
        i += batch;
    }
    // The attack hour (14:00): spoofed conntrack NEW on 587 from 10,000 sources a minute (stored per minute), a
    // SYN-flood line and cookie counters every minute.
    let hour = t0 + chrono::Duration::hours(14);
    for m in 0..60i64 {
        let at = hour + chrono::Duration::minutes(m);
        let mut events: Vec<(Origin, Event)> = (0..10_000u32)
            .map(|s| {
                let mut e = Event::new(at, Kind::ConnNew, Arc::from("conntrack.new"));
                e.addr = Some(IpAddr::from([198, 19, (s >> 8) as u8 ^ m as u8, s as u8]));
                e.port = Some(587);
                e.count = 5;
                (Origin { input: Arc::from("conntrack"), line: None }, e)
            })
            .collect();
        let mut syn = Event::new(at, Kind::SynFlood, Arc::from("kernel.syn_flood"));
        syn.port = Some(587);
        syn.local_addr = Some("198.51.100.1".parse().unwrap());
        syn.syn_action = Some(SynAction::Cookies);
        events.push((Origin { input: Arc::from("kmsg"), line: None }, syn));
        let mut cookies = Event::new(at, Kind::KernelCounter, Arc::from("netstat.TCPReqQFullDoCookies"));
        cookies.count = 40_000;
        events.push((Origin { input: Arc::from("netstat"), line: None }, cookies));
        store.insert_events(&events).unwrap();
    }
    // 5,000 bans over the day (jail, DoS, prefix), and the hour's global limit, refreshed, then lifted.
    let origins = ["jail:imap", "jail:smtp", "policy:dos", "policy:prefix"];
    let decisions: Vec<(DateTime<Utc>, Decision)> = (0..5000i64)
        .map(|b| {
            let at = t0 + chrono::Duration::seconds(b * DAY_S / 5000);
            let d = Decision::Ban {
                cidr: floodgate::addr::Cidr::host(source(b as u64)),
                until: Some(at + chrono::Duration::hours(1)),
                reason: "bench".into(),
                origin: origins[b as usize % origins.len()].into(),
                figures: None,
            };
            (at, d)
        })
        .chain((0..12i64).map(|k| {
            let at = hour + chrono::Duration::minutes(5 * k);
            let d = Decision::Limit {
                port: 587,
                mode: LimitMode::Global,
                until: at + chrono::Duration::minutes(10),
                reason: "DDoS".into(),
                origin: "policy".into(),
                figures: None,
            };
            (at, d)
        }))
        .chain(std::iter::once((
            hour + chrono::Duration::minutes(65),
            Decision::Lift {
                port: 587,
                mode: LimitMode::Global,
                reason: "port 587: attack over".into(),
                origin: "policy".into(),
            },
        )))
        .collect();
    for (at, d) in decisions {
        store.record(&[d], at, || Ok::<_, StoreError>(())).unwrap();
    }
    store.checkpoint().unwrap();
}
