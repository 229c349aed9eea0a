//! The policy under a real attack, against the real kernel and nothing else: a server namespace with plain
//! listeners and no application log at all, `[sources] conntrack = true` and no `ct` rule of the test's own
//! (floodgate's table has to make the kernel track, as on a bare host), and attacks from the attacker namespace:
//! - three hosts of one ISP's /24 with full handshakes, ~20 connections/s in all over five ports (each host under
//!   `dos_source_rate`): banned within 3 s, one notice naming the network, another /24 still served;
//! - conntrack's own health: events arrive on a bare namespace (a handshake proven while its connection is still
//!   open), and `status` says so when the kernel's events are switched off;
//! - a spoofed SYN flood on SMTP with `synproxy = "auto"`: the SYN proxy takes the port before the listener's SYN
//!   queue fills, real SMTP sessions complete during the flood, nothing spoofed is banned, the proxy is lifted
//!   after convergence; and with a prerequisite missing, the per-source limit and a notice saying why;
//! - four ports flooded at once: four detection and four convergence summaries reach the hook, each with its own
//!   figures, within seconds.
//!
//! Floods are bounded in packets and time and come from 198.18.0.0/15 only.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate_lab::daemon::Lab;
use floodgate_lab::netns::{self, Pair};
use floodgate_lab::syn;
use floodgate_lab::wait::within_every;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const ADMIN: &str = "203.0.113.10";
/// A client of another /24 (the attacker namespace's own link address).
const OTHER: &str = "198.51.100.2";
const ISP: [&str; 3] = ["203.0.113.21", "203.0.113.22", "203.0.113.23"];
const PORTS: [u16; 5] = [25, 587, 110, 995, 80];

floodgate_lab::lab_env!(
    /// The lab with SMTP-speaking listeners and a conntrack-fed daemon that notifies through a hook.
    Env
);

impl Env {
    /// The pair, SMTP-speaking listeners on `PORTS`, the spoofed range routed back through the attacker, and a
    /// config with conntrack, a notify hook and `extra` appended (policy and service overrides).
    fn new(tag: &str, extra: &str) -> Env {
        let mut sources = ISP.to_vec();
        sources.push(ADMIN);
        let env = Env(Lab::new(tag, &sources, BIN));
        for port in PORTS {
            smtp_listener(&env.pair, port);
        }
        env.pair.route_spoofed_back();
        let hook = env.path("hook");
        std::fs::write(&hook, format!("#!/bin/sh\ncat >> '{}'\n", env.path("hook.jsonl").display())).unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(
            env.path("floodgate.toml"),
            format!(
                "allowlist = [\"{ADMIN}\"]\n\
                 [sources]\nfiles = []\nkmsg = false\nnetstat = false\nconntrack = true\n\
                 [daemon]\nsocket = \"{}\"\n\
                 [notify]\nexec = \"{}\"\n\
                 [services.smtp]\nports = [25]\n[services.submission]\nports = [587]\n\
                 [services.pop3]\nports = [110, 995]\n[services.http]\nports = [80]\n{extra}",
                env.path("fg.sock").display(),
                hook.display()
            ),
        )
        .unwrap();
        env
    }

    fn sysctl(&self, key: &str, value: &str) {
        let out = self.pair.server.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
        assert!(out.status.success(), "sysctl {key}={value}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.fg(&["status", "--json"])).unwrap()
    }

    fn port_mode(&self, port: u16) -> String {
        let s = self.status();
        let p = s["ports"].as_array().unwrap().iter().find(|p| p["port"] == port).cloned().unwrap();
        p["mode"].as_str().unwrap().to_string()
    }

    fn set(&self, name: &str) -> String {
        self.pair.server.nft(&["list", "set", "inet", "floodgate", name])
    }

    /// Every notice the hook received, in order.
    fn notices(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("hook.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The notices' parts of one kind (a merged notice carries several), as (key, body, figures).
    fn parts(&self, kind: &str) -> Vec<(String, String, serde_json::Value)> {
        self.notices()
            .iter()
            .filter(|n| n["kind"] == kind)
            .flat_map(|n| n["parts"].as_array().cloned().unwrap_or_default())
            .map(|p| {
                (
                    p["key"].as_str().unwrap_or("-").to_string(),
                    p["body"].as_str().unwrap_or("").to_string(),
                    p["figures"].clone(),
                )
            })
            .collect()
    }

    /// A TcpExt counter of the server namespace (/proc/net/netstat is per network namespace).
    fn tcpext(&self, name: &str) -> u64 {
        let out = self.pair.server.exec(&["cat", "/proc/net/netstat"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
        let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
        let i = names.split_whitespace().position(|n| n == name).unwrap_or_else(|| panic!("no {name}"));
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    }

    fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        let db = self.path("f.db");
        let out = std::process::Command::new(BIN)
            .args(["--db", db.to_str().unwrap(), "events", "--kind", kind, "--json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// A listener that speaks enough SMTP for a session (banner, any command answered 250, QUIT answered 221), one
/// thread per connection, with a listen backlog of 128 (what most daemons and language runtimes ask for).
fn smtp_listener(pair: &Pair, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    pair.server.spawn(move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        sock.set_only_v6(false).unwrap();
        sock.set_reuse_address(true).unwrap();
        sock.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into()).unwrap();
        sock.listen(128).unwrap();
        let l: std::net::TcpListener = sock.into();
        tx.send(()).unwrap();
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve_smtp(s));
        }
    });
    rx.recv().unwrap();
}

fn serve_smtp(s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    if w.write_all(b"220 mx.example.test ESMTP\r\n").is_err() {
        return;
    }
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { return };
        let reply: &[u8] = if line.eq_ignore_ascii_case("QUIT") { b"221 2.0.0 Bye\r\n" } else { b"250 ok\r\n" };
        if w.write_all(reply).is_err() || reply.starts_with(b"221") {
            return;
        }
    }
}

/// A TCP connection from `from` (an address of the attacker namespace; call inside it) to the server's `port`.
fn connect(from: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let from: IpAddr = from.parse().unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(from, 0).into())?;
    sock.connect_timeout(&SocketAddr::from((SERVER, port)).into(), timeout)?;
    Ok(sock.into())
}

/// A whole SMTP session from `from`: banner, EHLO, QUIT.
fn smtp_session(from: &str, port: u16) -> Result<(), String> {
    let s = connect(from, port, Duration::from_secs(3)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut expect = |r: &mut BufReader<TcpStream>, code: &str| -> Result<(), String> {
        line.clear();
        r.read_line(&mut line).map_err(|e| format!("reading {code}: {e}"))?;
        if line.starts_with(code) {
            Ok(())
        } else {
            Err(format!("expected {code}, got {line:?}"))
        }
    };
    expect(&mut r, "220")?;
    w.write_all(b"EHLO client.example.test\r\n").map_err(|e| e.to_string())?;
    expect(&mut r, "250")?;
    w.write_all(b"QUIT\r\n").map_err(|e| e.to_string())?;
    expect(&mut r, "221")
}

/// Whether `ok` holds within `timeout`, polled every 50 ms.
fn within(timeout: Duration, ok: impl FnMut() -> bool) -> bool {
    within_every(timeout, Duration::from_millis(50), ok)
}

#[test]
fn an_isps_hosts_together_are_banned_within_three_seconds_and_the_network_is_named() {
    let test = "an_isps_hosts_together_are_banned_within_three_seconds_and_the_network_is_named";
    if !netns::available(test) {
        return;
    }
    let env = Env::new("isp", "");
    let _daemon = env.start();
    // The other /24 is served before the attack (and is not part of it).
    env.pair.attacker.enter(|| smtp_session(OTHER, 25)).expect("a client of another /24 before the attack");

    // 20 connections a second in all: every 50 ms the next host to the next port, full handshakes, closed with a
    // FIN (read the banner, shut down) or a RST (linger 0) in turn. Each host: ~6.7/s, under dos_source_rate.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let attack = {
        let stop = stop.clone();
        env.pair.attacker.spawn(move || {
            let mut made = 0u32;
            for k in 0u32.. {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(10) {
                    break;
                }
                let due = started + Duration::from_millis(50) * k;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let (host, port) = (ISP[k as usize % 3], PORTS[k as usize % 5]);
                // A banned host's SYN is dropped: give up quickly and go on at the same pace.
                let Ok(s) = connect(host, port, Duration::from_millis(150)) else { continue };
                made += 1;
                if k % 2 == 0 {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                    let _ = (&s).read_line_once();
                    let _ = s.shutdown(std::net::Shutdown::Both);
                } else {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
                drop(s);
            }
            made
        })
    };
    let mut banned_at: [Option<Duration>; 3] = [None; 3];
    let all = within(Duration::from_secs(8), || {
        let set = env.set("ban4");
        let net = env.set("ban4_net");
        for (i, h) in ISP.iter().enumerate() {
            if banned_at[i].is_none() && (set.contains(h) || net.contains("203.0.113.0/24")) {
                banned_at[i] = Some(started.elapsed());
            }
        }
        banned_at.iter().all(Option::is_some)
    });
    stop.store(true, Ordering::Relaxed);
    let made = attack.join().unwrap();
    assert!(all, "not every ISP host banned within 8 s: {banned_at:?}\n{}", env.daemon_log());
    let last = banned_at.iter().flatten().max().copied().unwrap();
    assert!(last <= Duration::from_secs(3), "all three banned within 3 s of the start: {banned_at:?}");

    // One notice names the network.
    assert!(
        within(Duration::from_secs(5), || env
            .parts("DosDetected")
            .iter()
            .any(|(_, b, _)| b.contains("203.0.113.0/24"))),
        "no notice names 203.0.113.0/24: {:#?}",
        env.notices()
    );
    let naming: Vec<_> =
        env.parts("DosDetected").into_iter().filter(|(_, b, _)| b.contains("203.0.113.0/24")).collect();
    assert_eq!(naming.len(), 1, "one notice about the network: {naming:#?}");
    assert_eq!(naming[0].2["network"], "203.0.113.0/24", "{:?}", naming[0].2);
    // The other /24 is still served, and the admin too; no spoofed or unrelated address was banned.
    env.pair.attacker.enter(|| smtp_session(OTHER, 25)).expect("a client of another /24 after the bans");
    env.pair.attacker.enter(|| smtp_session(ADMIN, 587)).expect("the admin after the bans");
    assert!(!env.set("ban4").contains(OTHER));
    eprintln!("{test}: {made} connections; banned at {banned_at:?}");
}

/// Reads one line (the banner) and ignores it: a client that closes with unread data would send a RST.
trait ReadLineOnce {
    fn read_line_once(self) -> std::io::Result<usize>;
}

impl ReadLineOnce for &TcpStream {
    fn read_line_once(self) -> std::io::Result<usize> {
        let mut line = String::new();
        BufReader::new(self).read_line(&mut line)
    }
}

#[test]
fn conntrack_on_a_bare_namespace_delivers_and_a_silent_one_is_reported() {
    let test = "conntrack_on_a_bare_namespace_delivers_and_a_silent_one_is_reported";
    if !netns::available(test) {
        return;
    }
    let env = Env::new("ctb", "");
    let _daemon = env.start();
    // A connection held open: its handshake is proven while it lasts (an UPDATE with ASSURED), not at its end.
    let held = env.pair.attacker.enter(|| {
        let s = connect(OTHER, 25, Duration::from_secs(2)).unwrap();
        let _ = (&s).read_line_once();
        s
    });
    let t = Instant::now();
    let proven = within(Duration::from_secs(5), || env.events("conn_assured").iter().any(|e| e["addr"] == OTHER));
    assert!(proven, "no conn_assured for {OTHER} while its connection is open\n{}", env.daemon_log());
    eprintln!("{test}: the open connection's handshake proven in the store after {:?}", t.elapsed());
    assert!(env.events("conn_new").iter().any(|e| e["addr"] == OTHER), "conn_new arrives too");
    assert!(env.events("conn_destroy").iter().all(|e| e["addr"] != OTHER), "the connection is still open");
    drop(held);
    assert!(env.status()["problems"].as_array().unwrap().is_empty(), "{}", env.status());

    // The kernel stops sending events (the admin's sysctl, a broken setup): connections go on, nothing arrives.
    env.sysctl("net.netfilter.nf_conntrack_events", "0");
    let reported = within(Duration::from_secs(45), || {
        for _ in 0..4 {
            let _ = env.pair.attacker.enter(|| smtp_session(OTHER, 110));
        }
        env.status()["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("nf_conntrack_events is 0"))
    });
    assert!(reported, "status never reported the silent conntrack source: {}\n{}", env.status(), env.daemon_log());
    let text = env.fg(&["status"]);
    assert!(text.contains("PROBLEM: conntrack delivers nothing"), "{text}");
    assert!(env.daemon_log().contains("the conntrack source sees nothing"), "logged loudly too");
}

/// `sources` spoofed addresses over eight /24s of 198.18.0.0/15, `rounds` SYNs each, sources in turn.
fn eight_slash24s(sources: u32, rounds: u32) -> Vec<Ipv4Addr> {
    let per = sources / 8;
    let addr = |i: u32| Ipv4Addr::from(syn::SPOOFED_BASE + (i % 8) * 256 * 7 + 1 + (i / 8) % per.min(250));
    let mut plan = Vec::new();
    for _ in 0..rounds {
        plan.extend((0..sources).map(addr));
    }
    assert!(plan.len() <= syn::MAX_PACKETS && plan.iter().all(|a| syn::spoofed(*a)));
    plan
}

const FAST: &str = "[policy]\nwindow = \"10s\"\nconverge_after = \"4s\"\nlimit_for = \"10s\"\n";

#[test]
fn a_spoofed_flood_on_smtp_goes_to_the_syn_proxy_and_real_sessions_complete() {
    let test = "a_spoofed_flood_on_smtp_goes_to_the_syn_proxy_and_real_sessions_complete";
    if !netns::available(test) {
        return;
    }
    let env = Env::new("spx", FAST);
    // The proxy's prerequisites, as an admin following `floodgate advise` sets them.
    env.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0");
    env.sysctl("net.ipv4.tcp_timestamps", "1");
    let _daemon = env.start();
    assert!(within(Duration::from_secs(3), || env.status()["synproxy"] == "ready"), "{}", env.status());
    env.pair.attacker.enter(|| smtp_session(OTHER, 25)).expect("an SMTP session before the flood");
    let before = ["TCPReqQFullDoCookies", "TCPReqQFullDrop", "ListenOverflows"].map(|c| env.tcpext(c));

    // 1,500 spoofed sources in eight /24s, three SYNs each, ~600/s.
    let plan = eight_slash24s(1_500, 3);
    let flooding = env.pair.attacker.spawn(move || syn::flood(&plan, SERVER, 25, Duration::from_millis(7_500)));
    assert!(
        within(Duration::from_secs(5), || env.set("synproxy_ports").contains("25")),
        "no SYN proxy on 25\n{}",
        env.daemon_log()
    );
    // Real clients during the flood: a mail server of another /24 and the admin complete whole SMTP sessions.
    let mut sessions = 0;
    while !flooding.is_finished() {
        env.pair.attacker.enter(|| smtp_session(OTHER, 25)).expect("an SMTP session during the flood");
        env.pair.attacker.enter(|| smtp_session(ADMIN, 25)).expect("the admin's SMTP session during the flood");
        sessions += 2;
        std::thread::sleep(Duration::from_millis(200));
    }
    flooding.join().unwrap().expect("the flood");
    assert!(env.port_mode(25) == "SYN proxy", "{}", env.status());
    let after = ["TCPReqQFullDoCookies", "TCPReqQFullDrop", "ListenOverflows"].map(|c| env.tcpext(c));
    assert_eq!(before, after, "the listener's SYN queue never filled (cookies, drops, overflows flat)");
    let spoofed: Vec<String> = ["ban4", "ban4_net"]
        .iter()
        .map(|s| env.set(s))
        .filter(|s| s.contains("198.18.") || s.contains("198.19."))
        .collect();
    assert!(spoofed.is_empty(), "nothing spoofed banned: {spoofed:?}");
    let detected = env.parts("DdosDetected");
    assert!(detected.iter().any(|(k, b, _)| k == "port 25" && b.contains("SYN proxy")), "{detected:#?}");

    // Calm: the proxy is lifted after convergence and a notice says so.
    assert!(
        within(Duration::from_secs(40), || !env.set("synproxy_ports").contains("25")),
        "the SYN proxy was never lifted\n{}",
        env.daemon_log()
    );
    assert!(
        within(Duration::from_secs(5), || env
            .parts("Converged")
            .iter()
            .any(|(k, b, _)| k == "port 25" && b.contains("SYN proxy lifted"))),
        "{:#?}",
        env.notices()
    );
    env.pair.attacker.enter(|| smtp_session(OTHER, 25)).expect("an SMTP session after the flood");
    eprintln!("{test}: {sessions} real SMTP sessions completed during the flood");
}

#[test]
fn without_the_proxys_prerequisites_smtp_gets_the_per_source_limit_and_the_notice_says_why() {
    let test = "without_the_proxys_prerequisites_smtp_gets_the_per_source_limit_and_the_notice_says_why";
    if !netns::available(test) {
        return;
    }
    let env = Env::new("spn", FAST);
    env.sysctl("net.netfilter.nf_conntrack_tcp_loose", "1");
    let _daemon = env.start();
    assert!(
        within(Duration::from_secs(3), || env.status()["synproxy"]
            .as_str()
            .unwrap()
            .contains("nf_conntrack_tcp_loose is 1")),
        "{}",
        env.status()
    );
    let plan = eight_slash24s(800, 2);
    env.pair
        .attacker
        .spawn(move || syn::flood(&plan, SERVER, 25, Duration::from_millis(3_000)))
        .join()
        .unwrap()
        .unwrap();
    assert!(within(Duration::from_secs(5), || env.set("limit_source_ports").contains("25")), "{}", env.daemon_log());
    assert!(!env.set("synproxy_ports").contains("25"));
    assert!(!env.set("limit_global_ports").contains("25"), "SMTP is never under the global limit");
    assert!(
        within(Duration::from_secs(5), || env.parts("DdosDetected").iter().any(|(k, b, f)| k == "port 25"
            && b.contains("per-source limit")
            && b.contains("nf_conntrack_tcp_loose is 1")
            && f["synproxy_not_used"].as_str().is_some())),
        "{:#?}",
        env.notices()
    );
}

#[test]
fn four_ports_flooded_at_once_give_four_detections_and_four_convergences() {
    let test = "four_ports_flooded_at_once_give_four_detections_and_four_convergences";
    if !netns::available(test) {
        return;
    }
    let env = Env::new("four", FAST);
    let _daemon = env.start();
    let ports = [587u16, 110, 995, 80];
    let started = Instant::now();
    let floods: Vec<_> = ports
        .iter()
        .map(|&port| {
            let plan = eight_slash24s(600, 2);
            env.pair.attacker.spawn(move || syn::flood(&plan, SERVER, port, Duration::from_millis(2_500)))
        })
        .collect();
    for f in floods {
        f.join().unwrap().unwrap();
    }
    let keys = |kind: &str| -> Vec<String> {
        let mut k: Vec<String> = env.parts(kind).into_iter().map(|(k, _, _)| k).collect();
        k.sort();
        k.dedup();
        k
    };
    let want: Vec<String> = {
        let mut w: Vec<String> = ports.iter().map(|p| format!("port {p}")).collect();
        w.sort();
        w
    };
    assert!(
        within(Duration::from_secs(8), || keys("DdosDetected") == want),
        "detections: {:?}\n{:#?}",
        keys("DdosDetected"),
        env.notices()
    );
    let detected_after = started.elapsed();
    for (k, body, figures) in env.parts("DdosDetected") {
        let port: u16 = k.trim_start_matches("port ").parse().unwrap();
        assert!(body.contains(&format!("port {port}")), "{body}");
        assert!(
            figures["rate_per_s"].as_f64().unwrap() > 0.0 && figures["distinct"].as_u64().unwrap() > 0,
            "{figures}"
        );
        assert!(body.contains("global limit"), "what was done: {body}");
    }
    assert!(
        within(Duration::from_secs(45), || keys("Converged") == want),
        "convergences: {:?}\n{:#?}",
        keys("Converged"),
        env.notices()
    );
    eprintln!(
        "{test}: four detections {detected_after:?} after the floods' start; four convergences {:?}",
        started.elapsed()
    );
}
