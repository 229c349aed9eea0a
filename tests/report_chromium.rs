//! `floodgate report` as a person sees it: a recorded attack (a DoS from a few hosts, password guessing, then a
//! spoofed DDoS from hundreds of sources of 198.18.0.0/15 rotating through /24s, until the port converges) is
//! replayed through the real policy engine on a virtual clock, its events and decisions recorded in a store as
//! the daemon records them; the report of that store is opened in headless Chromium and the screenshot must show
//! charts: many colours, the rate line, and the shaded period of the global limit.
//!
//! Without Chromium (Debian package `chromium`) the test skips loudly; under CI=true it fails instead.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use floodgate::attack_report::{self, Window};
use floodgate::config::Config;
use floodgate::decision::{Decision, LimitMode};
use floodgate::event::{Event, Kind, SynAction};
use floodgate::policy::engine::replay;
use floodgate::store::{Origin, Store, StoreError};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap()
}

fn at(ms: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::milliseconds(ms)
}

fn event(ms: i64, kind: Kind, rule: &str, addr: IpAddr, port: u16) -> Event {
    let mut e = Event::new(at(ms), kind, Arc::from(rule));
    e.addr = Some(addr);
    e.port = Some(port);
    e.local_addr = Some("198.51.100.1".parse().unwrap());
    e
}

/// The attack's events, in time order.
fn attack() -> Vec<Event> {
    let mut ev = Vec::new();
    // 0-40 s: three hosts guess IMAP passwords (the jail's), one with a user name an attacker chose as markup.
    for (h, host) in ["203.0.113.5", "203.0.113.6", "203.0.113.7"].iter().enumerate() {
        for k in 0..8 {
            let mut e = event(
                k * 5000 + h as i64 * 300,
                Kind::AuthFailure,
                "dovecot.login_auth_failed",
                host.parse().unwrap(),
                993,
            );
            e.service = Some(Arc::from("imap"));
            e.user = Some(if h == 0 { "<script>alert(1)</script>".into() } else { format!("user{k}") });
            ev.push(e);
        }
    }
    // 10-40 s: a DoS: two hosts open 30 SMTP connections a second each (log lines: proven real).
    for ms in (10_000..40_000).step_by(33) {
        for host in ["198.51.100.20", "198.51.100.21"] {
            ev.push(event(ms, Kind::Connect, "postfix.connect", host.parse().unwrap(), 25));
        }
    }
    // 60-240 s: spoofed SYNs on 587 at 200/s from 198.18.0.0/15, moving to a new /24 every 15 s, 100 sources in
    // each; the kernel says so, and sends cookies.
    for (i, ms) in (60_000..240_000).step_by(5).enumerate() {
        let net = (ms - 60_000) / 15_000;
        let addr = IpAddr::from([198, 18 + (net / 256) as u8, (net * 7 % 256) as u8, (i % 100 + 1) as u8]);
        ev.push(event(ms, Kind::ConnNew, "conntrack.new", addr, 587));
    }
    let mut syn = Event::new(at(61_000), Kind::SynFlood, Arc::from("kernel.syn_flood"));
    syn.port = Some(587);
    syn.local_addr = Some("198.51.100.1".parse().unwrap());
    syn.syn_action = Some(SynAction::Cookies);
    ev.push(syn);
    for s in (60..240).step_by(10) {
        let mut c = Event::new(at(s * 1000), Kind::KernelCounter, Arc::from("netstat.TCPReqQFullDoCookies"));
        c.count = 900;
        ev.push(c);
    }
    // Then a little normal traffic, until the port has been calm for converge_after.
    for s in (250..700).step_by(20) {
        ev.push(event(s * 1000, Kind::Connect, "postfix.connect", "203.0.113.50".parse().unwrap(), 587));
    }
    ev.sort_by_key(|e| e.time);
    ev
}

/// Records the attack as the daemon would: every event, and every decision at its time.
fn record(path: &Path) -> Vec<(DateTime<Utc>, Decision)> {
    let events = attack();
    let cfg = Config { allowlist: vec!["203.0.113.10".parse().unwrap()], ..Default::default() };
    let r = replay(&mut cfg.policy_engine(), &events, Duration::from_secs(1), at(900_000));
    let mut store = Store::open(path).unwrap();
    let origin = Origin { input: Arc::from("/var/log/mail.log"), line: None };
    let rows: Vec<(Origin, Event)> = events.into_iter().map(|e| (origin.clone(), e)).collect();
    store.insert_events(&rows).unwrap();
    for (t, d) in &r.decisions {
        store.record(std::slice::from_ref(d), *t, || Ok::<_, StoreError>(())).unwrap();
    }
    r.decisions
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
}

#[test]
fn the_report_of_a_recorded_attack_shows_its_charts_in_a_browser() {
    let Some(browser) = chromium() else {
        floodgate_lab::skip::skip(
            "the_report_of_a_recorded_attack_shows_its_charts_in_a_browser",
            "chromium (Debian package `chromium`)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("attack.db");
    let decisions = record(&db);
    // The recorded attack has the shape the report is for: the policy limited 587 globally and lifted it once
    // calm (convergence), and banned the guessers.
    let limited =
        decisions.iter().any(|(_, d)| matches!(d, Decision::Limit { port: 587, mode: LimitMode::Global, .. }));
    let lifted = decisions.iter().any(|(_, d)| matches!(d, Decision::Lift { port: 587, .. }));
    let bans = decisions.iter().filter(|(_, d)| matches!(d, Decision::Ban { .. })).count();
    assert!(limited && lifted && bans >= 3, "limit {limited}, lift {lifted}, {bans} bans: {decisions:#?}");

    let config = Config::default();
    let window = Window { since: at(-60_000), until: at(900_000), port: None };
    let page = attack_report::render_page(&db, &config, window, None, at(900_000)).unwrap();
    assert!(!page.contains("<script>alert(1)"), "the attacker's user name is escaped");
    let html = dir.path().join("report.html");
    std::fs::write(&html, &page).unwrap();
    let png = dir.path().join("shot.png");
    let profile = dir.path().join("profile");
    let out = Command::new("timeout")
        .arg("120")
        .arg(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,2400")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("running chromium");
    assert!(png.exists(), "no screenshot: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));

    // To look at it yourself: REPORT_SCREENSHOT=/tmp/report.png keeps a copy (and the page beside it).
    if let Some(keep) = std::env::var_os("REPORT_SCREENSHOT") {
        std::fs::copy(&png, &keep).unwrap();
        std::fs::copy(&html, Path::new(&keep).with_extension("html")).unwrap();
    }
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 2400));
    let channels = info.color_type.samples();
    let pixels: Vec<[u8; 3]> = buf[..info.buffer_size()].chunks(channels).map(|p| [p[0], p[1], p[2]]).collect();
    let non_white = pixels.iter().filter(|p| p.iter().any(|c| *c < 240)).count();
    let colours: std::collections::HashSet<[u8; 3]> = pixels.iter().copied().collect();
    let near =
        |p: &[u8; 3], c: [u8; 3], tol: i16| p.iter().zip(c).all(|(a, b)| (i16::from(*a) - i16::from(b)).abs() <= tol);
    // The rate line (#1f77b4), the distinct-sources line (#2ca02c), and the global limit's shading (#d62728 at
    // 18% over white).
    let rate_line = pixels.iter().filter(|p| near(p, [0x1f, 0x77, 0xb4], 6)).count();
    let distinct_line = pixels.iter().filter(|p| near(p, [0x2c, 0xa0, 0x2c], 6)).count();
    let shaded = pixels.iter().filter(|p| near(p, [248, 216, 216], 4)).count();
    eprintln!(
        "screenshot {}: {non_white} non-white pixels of {}, {} colours; rate line {rate_line}, distinct line \
         {distinct_line}, global-limit shading {shaded}",
        png.display(),
        pixels.len(),
        colours.len()
    );
    assert!(non_white > pixels.len() / 50, "{non_white} non-white pixels: blank page");
    assert!(colours.len() > 100, "{} colours: no charts", colours.len());
    assert!(rate_line > 500, "the rate line is not drawn ({rate_line} pixels)");
    assert!(distinct_line > 500, "the distinct-sources line is not drawn ({distinct_line} pixels)");
    assert!(shaded > 5_000, "the global limit's period is not shaded ({shaded} pixels)");
}
