//! The fleet's side of enforcement against the real kernel, in a namespace of its own: another host's ban goes
//! into the fleet's own sets (never over a local ban), passes the same gate as a local one (the allowlist and
//! the host's own addresses win), survives a restart from the store, and leaves when lifted.

use chrono::{Duration as Span, Utc};

use floodgate::config::Config;
use floodgate::decision::Decision;
use floodgate::enforce::Enforcer;
use floodgate::nft::ruleset::{BAN4, FLEET4, FLEET4_NET, FLEET6};
use floodgate::nft::Kernel;
use floodgate::store::Store;
use std::io::Write;
use std::time::Duration;

use floodgate_lab::daemon::DaemonFiles;
use floodgate_lab::nats::{self, Nats};
use floodgate_lab::netns::{self, Netns, Pair};

fn fleet_config() -> Config {
    let text = "allowlist = [\"203.0.113.10\"]\n[fleet]\nservers = [\"nats://198.51.100.100:4222\"]\nhost = \"mx2\"\n";
    Config::from_toml(text, "fleet.toml").unwrap()
}

fn remote(cidr: &str, host: &str, minutes: i64) -> Decision {
    Decision::Remote {
        cidr: cidr.parse().unwrap(),
        until: Some(Utc::now() + Span::minutes(minutes)),
        host: host.into(),
        reason: "auth failures".into(),
    }
}

fn elements(set: &'static str) -> Vec<String> {
    let mut k = Kernel::open().unwrap();
    k.elements("floodgate", set).unwrap().iter().map(|e| e.key.to_string()).collect()
}

#[test]
fn remote_bans_live_in_the_fleet_sets_pass_the_same_gate_and_survive_a_restart() {
    if !netns::available("remote_bans_live_in_the_fleet_sets_pass_the_same_gate_and_survive_a_restart") {
        return;
    }
    let ns = Netns::new("fleet");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.db");
    let got = ns.enter(move || {
        let cfg = fleet_config();
        let mut store = Store::open(&db).unwrap();
        let mut e = Enforcer::open(&cfg.enforcement()).unwrap();
        let now = Utc::now();
        e.reconcile(&mut store, now).unwrap();
        let mut decisions = vec![
            remote("198.51.100.7", "mx1", 10),
            remote("203.0.113.0/24", "mx3", 10),
            remote("2001:db8:1::5", "mx1", 10),
            // The gate: the allowlist and loopback win over any host's verdict.
            remote("203.0.113.10", "mx1", 10),
            remote("127.0.0.1", "mx1", 10),
        ];
        let refused = e.screen(&store, &mut decisions).unwrap();
        e.decide(&mut store, &decisions, now).unwrap();
        let first = (elements(FLEET4), elements(FLEET4_NET), elements(FLEET6), elements(BAN4));
        // A restart: a fresh enforcer over a flushed table re-applies the store's remote bans at once.
        Kernel::open().unwrap().delete_table("floodgate").unwrap();
        let mut e = Enforcer::open(&cfg.enforcement()).unwrap();
        e.reconcile(&mut store, Utc::now()).unwrap();
        let restarted = elements(FLEET4);
        let lift = Decision::RemoteLift { cidr: "198.51.100.7".parse().unwrap(), reason: "lifted by mx1".into() };
        e.decide(&mut store, &[lift], Utc::now()).unwrap();
        let lifted = elements(FLEET4);
        let stored = store.enforced(Utc::now()).unwrap().remote;
        (refused.len(), first, restarted, lifted, stored.len())
    });
    let (refused, (fleet4, fleet4_net, fleet6, ban4), restarted, lifted, stored) = got;
    assert_eq!(refused, 2, "the allowlisted address and loopback are refused");
    assert_eq!(fleet4, ["198.51.100.7"]);
    assert_eq!(fleet4_net, ["203.0.113.0/24"]);
    assert_eq!(fleet6, ["2001:db8:1::5"]);
    assert!(ban4.is_empty(), "a remote ban never lands in the local sets: {ban4:?}");
    assert_eq!(restarted, ["198.51.100.7"], "re-applied from the store after a restart");
    assert!(lifted.is_empty(), "{lifted:?}");
    assert_eq!(stored, 2, "the prefix and the IPv6 address remain");
}

/// The fleet's server, on a link between mx1's and mx2's namespaces (not an attacker's address).
const NATS_ADDR: &str = "203.0.113.253";
const GUESSER: &str = "203.0.113.7";
/// On mx2's allowlist: a ban of it published by mx1 is refused there.
const ADMIN: &str = "203.0.113.10";

/// Each host tails its own mail.log; IMAP and SMTP are the protected services; the fleet's server is at `server`.
fn write_config(files: &DaemonFiles, host: &str, allow: &str, server: &str) {
    let (socket, log) = (files.path("fg.sock"), files.path("mail.log"));
    std::fs::write(&log, "").unwrap();
    let text = format!(
        "allowlist = [{allow}]\n[sources]\nfiles = [\"{}\"]\nkmsg = false\nnetstat = false\n\
         [services.smtp]\nports = [25]\n[services.imap]\nports = [143]\n\
         [daemon]\nsocket = \"{}\"\n[fleet]\nservers = [\"nats://{server}:4222\"]\nhost = \"{host}\"\n",
        log.display(),
        socket.display()
    );
    std::fs::write(files.path("floodgate.toml"), text).unwrap();
}

/// Dovecot's line for one failed IMAP login from `addr`.
fn failure(addr: &str, n: u32) -> String {
    let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
    format!(
        "{now} mx1 dovecot[812]: imap-login: Info: Disconnected: Aborted login (auth failed, 1 attempts in 2 secs): \
         user=<u{n}>, method=PLAIN, rip={addr}, lip=198.51.100.1, session=<s{n}>\n"
    )
}

fn fleet_bans(files: &DaemonFiles, ns: &Netns) -> Vec<serde_json::Value> {
    files
        .fg(ns, &["list", "--json"])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["action"] == "fleet_ban")
        .collect()
}

/// Whether `target` is among the fleet's bans `files`' daemon applies.
fn everywhere_now(files: &DaemonFiles, ns: &Netns, target: &str) -> bool {
    fleet_bans(files, ns).iter().any(|b| b["target"] == target)
}

/// Namespaces and a nats-server: a test that lacks them skips (loudly; under CI it fails).
fn can_run(test: &str) -> bool {
    // `skip` records the skip and says false (under CI it fails the test instead).
    netns::available(test)
        && (nats::installed()
            || floodgate_lab::skip::skip(test, "nats-server (apt-get install nats-server; `make mail-deps`)"))
}

fn status(files: &DaemonFiles, ns: &Netns) -> serde_json::Value {
    serde_json::from_str(&files.fg(ns, &["status", "--json"])).unwrap()
}

/// Appends `n` failed IMAP logins from `addr` to `files`' mail log (the jail bans at five).
fn fail_logins(files: &DaemonFiles, addr: &str, n: u32) {
    let lines: String = (0..n).map(|i| failure(addr, i)).collect();
    std::fs::OpenOptions::new().append(true).open(files.path("mail.log")).unwrap().write_all(lines.as_bytes()).unwrap();
}

fn fleet_status(files: &DaemonFiles, ns: &Netns) -> serde_json::Value {
    status(files, ns)["fleet"].clone()
}

#[test]
fn a_ban_on_mx1_is_dropped_by_mx2_and_mx3_lifted_everywhere_and_survives_an_engine_outage() {
    let name = "a_ban_on_mx1_is_dropped_by_mx2_and_mx3_lifted_everywhere_and_survives_an_engine_outage";
    if !can_run(name) {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_floodgate");
    // Three mail hosts, each with an attacker beside it, and the engine in a namespace of its own.
    let sources = [GUESSER, ADMIN, "203.0.113.8", "203.0.113.9", "203.0.113.12"];
    let hosts = [Pair::new("fl1", &sources), Pair::new("fl2", &sources), Pair::new("fl3", &sources)];
    for h in &hosts {
        h.listen(25);
    }
    let engine = Netns::new("fleng");
    let servers = nats::hub(&engine, &[&hosts[0].server, &hosts[1].server, &hosts[2].server], "t");
    let files = [DaemonFiles::new(bin), DaemonFiles::new(bin), DaemonFiles::new(bin)];
    let mut nats = Nats::start(&engine, "0.0.0.0", &files[0].path("nats"));
    // mx2 has the admin's address on its allowlist.
    for (i, host) in ["mx1", "mx2", "mx3"].iter().enumerate() {
        let allow = if i == 1 { format!("\"{ADMIN}\"") } else { String::new() };
        write_config(&files[i], host, &allow, &servers[i]);
    }
    let mut daemons: Vec<_> = (0..3).map(|i| Some(files[i].start(&hosts[i].server))).collect();
    let ns = |i: usize| &hosts[i].server;
    let connected = |i: usize| fleet_status(&files[i], ns(i))["connected"] == true;
    assert!(
        floodgate_lab::wait::within(Duration::from_secs(10), || (0..3).all(connected)),
        "the fleet did not connect:\nmx1: {}\nmx2: {}\nmx3: {}",
        files[0].daemon_log(),
        files[1].daemon_log(),
        files[2].daemon_log()
    );
    assert!(hosts[1].connects(GUESSER, 25), "before any ban the guesser reaches mx2");

    // The jail on mx1 bans a password guesser (five failed logins in its log); mx2 and mx3 drop its SYNs.
    let t = std::time::Instant::now();
    fail_logins(&files[0], GUESSER, 5);
    let (mut seen, mut at) = ([false; 3], [Duration::ZERO; 3]);
    let arrived = floodgate_lab::wait::within_every(Duration::from_secs(5), Duration::from_millis(5), || {
        for i in 1..3 {
            if !seen[i] && everywhere_now(&files[i], ns(i), GUESSER) {
                (seen[i], at[i]) = (true, t.elapsed());
            }
        }
        seen[1] && seen[2]
    });
    assert!(arrived, "mx2/mx3 never applied mx1's ban:\n{}\n{}", files[1].daemon_log(), files[2].daemon_log());
    println!("propagation, log line on mx1 -> fleet set: mx2 {:?}, mx3 {:?} (5 ms polling included)", at[1], at[2]);
    assert!(at[1] < Duration::from_secs(1) && at[2] < Duration::from_secs(1), "within a second: {at:?}");
    for i in 1..3 {
        let bans = fleet_bans(&files[i], ns(i));
        assert_eq!(bans.len(), 1, "{bans:?}");
        assert_eq!(bans[0]["origin"], "fleet:mx1", "{bans:?}");
        let only: Vec<serde_json::Value> = files[i]
            .fg(ns(i), &["list", "--fleet", "--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(only, bans, "`list --fleet` is the fleet's bans alone");
        assert!(!hosts[i].connects(GUESSER, 25), "mx{} drops the guesser on mx1's word", i + 1);
    }
    assert!(fleet_bans(&files[0], ns(0)).is_empty(), "mx1's own ban stays in its own sets");

    // mx2's allowlist wins over mx1's verdict; mx3, without that allowlist, applies it.
    files[0].fg(ns(0), &["block", ADMIN, "--for", "1h"]);
    assert!(
        floodgate_lab::wait::within(Duration::from_secs(5), || fleet_status(&files[1], ns(1))["refused_gate"] == 1
            && everywhere_now(&files[2], ns(2), ADMIN)),
        "mx2 did not refuse the allowlisted address (or mx3 did not apply it): {}",
        fleet_status(&files[1], ns(1))
    );
    assert!(hosts[1].connects(ADMIN, 25));

    // Unblocked on mx1: lifted on mx2 and mx3.
    files[0].fg(ns(0), &["unblock", GUESSER, ADMIN]);
    let clear = |i: usize| fleet_bans(&files[i], ns(i)).is_empty();
    assert!(floodgate_lab::wait::within(Duration::from_secs(5), || clear(1) && clear(2)), "a lifted ban stayed");
    assert!(hosts[1].connects(GUESSER, 25) && hosts[2].connects(GUESSER, 25));

    // The engine down: mx1 still bans at once from its log; its verdict reaches mx2 once the engine is back,
    // sent once.
    let published = fleet_status(&files[0], ns(0))["published"].as_u64().unwrap();
    nats.stop();
    assert!(floodgate_lab::wait::within(Duration::from_secs(10), || !connected(0)));
    assert!(fleet_status(&files[0], ns(0))["last_error"].is_string());
    let t = std::time::Instant::now();
    fail_logins(&files[0], "203.0.113.8", 5);
    let local = floodgate_lab::wait::within_every(Duration::from_secs(5), Duration::from_millis(2), || {
        files[0].fg(ns(0), &["list", "--json"]).contains("203.0.113.8")
    });
    let local_latency = t.elapsed();
    assert!(local, "mx1 did not ban locally without the fleet:\n{}", files[0].daemon_log());
    println!("local ban on mx1 with the engine down: {local_latency:?} (2 ms polling and the CLI included)");
    assert!(local_latency < Duration::from_secs(1), "local protection waited for the fleet: {local_latency:?}");
    nats.restart();
    assert!(
        floodgate_lab::wait::within(Duration::from_secs(20), || everywhere_now(&files[1], ns(1), "203.0.113.8")),
        "mx2 never got the ban made during the outage:\nmx1: {}\nmx2: {}",
        files[0].daemon_log(),
        files[1].daemon_log()
    );
    assert!(!hosts[1].connects("203.0.113.8", 25));
    assert!(floodgate_lab::wait::within(Duration::from_secs(5), || connected(0)));
    let sent = fleet_status(&files[0], ns(0))["published"].as_u64().unwrap() - published;
    assert_eq!(sent, 1, "the ban made during the outage is sent once, and nothing else again");

    // mx2 down while mx1 bans: started again, mx2 applies the ban with the time it has left.
    assert_eq!(daemons[1].take().unwrap().stop(), Some(0));
    files[0].fg(ns(0), &["block", "203.0.113.12", "--for", "10m"]);
    std::thread::sleep(Duration::from_secs(2));
    daemons[1] = Some(files[1].start(ns(1)));
    assert!(
        floodgate_lab::wait::within(Duration::from_secs(10), || everywhere_now(&files[1], ns(1), "203.0.113.12")),
        "mx2 did not catch up after its restart:\n{}",
        files[1].daemon_log()
    );
    let left = fleet_bans(&files[1], ns(1)).into_iter().find(|b| b["target"] == "203.0.113.12").unwrap()["expires_s"]
        .as_u64()
        .unwrap();
    assert!((560..=598).contains(&left), "the remaining time, not a fresh 10m: {left} s");

    // The operator, from mx2: a block everywhere reaches every host, mx2 itself included.
    let out = files[1].fg(ns(1), &["block", "--everywhere", "203.0.113.9", "--for", "1h", "--json"]);
    let said: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(said["blocked_everywhere"], serde_json::json!(["203.0.113.9"]), "{said}");
    assert!(
        floodgate_lab::wait::within(Duration::from_secs(5), || (0..3).all(|i| everywhere_now(
            &files[i],
            ns(i),
            "203.0.113.9"
        ))),
        "the block everywhere did not reach every host"
    );
    // `fleet status`: every host by its heartbeat, with its bans in the bucket and its lag as mx3 reads it.
    let fleet: serde_json::Value = serde_json::from_str(&files[2].fg(ns(2), &["fleet", "status", "--json"])).unwrap();
    let hosts_seen: Vec<&str> =
        fleet["hosts"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(hosts_seen, ["mx1", "mx2", "mx3"], "{fleet}");
    let mx1 = &fleet["hosts"][0];
    assert!(mx1["bans_in_bucket"].as_u64().unwrap() >= 2, "{fleet}");
    assert_eq!(mx1["silent"], false, "{fleet}");
    assert!(mx1["heartbeat"]["published"].as_u64().unwrap() >= 2, "{fleet}");
    assert_eq!(fleet["operator"]["blocks"], 1, "{fleet}");
    assert!(fleet["link"]["peers"].as_array().unwrap().len() == 3, "mx3's daemon heard every host: {fleet}");
    let text = files[2].fg(ns(2), &["fleet", "status"]);
    assert!(text.contains("mx1") && text.contains("s ago"), "{text}");

    // An unblock everywhere lifts it on every host, and lifts mx1's own ban of 203.0.113.8 too.
    files[1].fg(ns(1), &["unblock", "--everywhere", "203.0.113.9", "203.0.113.8"]);
    let gone = |i: usize| {
        let all = files[i].fg(ns(i), &["list", "--json"]);
        !all.contains("203.0.113.9") && !all.contains("203.0.113.8")
    };
    assert!(
        floodgate_lab::wait::within(Duration::from_secs(5), || (0..3).all(gone)),
        "an unblock everywhere left bans:\nmx1: {}\nmx2: {}\nmx3: {}",
        files[0].fg(ns(0), &["list", "--json"]),
        files[1].fg(ns(1), &["list", "--json"]),
        files[2].fg(ns(2), &["list", "--json"])
    );
    for h in &hosts {
        assert!(h.connects("203.0.113.8", 25) && h.connects("203.0.113.9", 25));
    }
}

/// The shipped `examples/nats-server.conf` on this lab: one node (its cluster block out), listening on the
/// lab's address, its JetStream in `store`, every user's bcrypt placeholder a plain password `pw`. Its
/// permissions are the file's own.
fn shipped_conf(addr: &str, store: &std::path::Path) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/nats-server.conf");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("cluster {").expect("the example's cluster block");
    let end = start + text[start..].find("\n}\n").expect("its end") + 3;
    let text = format!("{}{}", &text[..start], &text[end..]);
    assert!(text.contains("listen: 0.0.0.0:4222") && text.contains("store_dir: /var/lib/nats"), "{text}");
    text.replace("listen: 0.0.0.0:4222", &format!("listen: {addr}:4222"))
        .replace("store_dir: /var/lib/nats", &format!("store_dir: \"{}\"", store.display()))
        .replace("\"$2a$11$REPLACE_WITH_A_BCRYPT_HASH\"", "\"pw\"")
}

/// A raw NATS publish with `user`'s credentials, as a client that ignores floodgate would send it: a delete
/// marker for `subject` (a KV delete). Returns the server's answer line.
fn raw_delete(user: &str, subject: &str) -> String {
    use std::io::{BufRead, BufReader};
    let mut s = std::net::TcpStream::connect((NATS_ADDR, 4222)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut info = String::new();
    r.read_line(&mut info).unwrap();
    let headers = "NATS/1.0\r\nKV-Operation: DEL\r\n\r\n";
    write!(
        s,
        "CONNECT {{\"user\":\"{user}\",\"pass\":\"pw\",\"verbose\":true,\"headers\":true}}\r\n\
         HPUB {subject} {} {}\r\n{headers}\r\nPING\r\n",
        headers.len(),
        headers.len()
    )
    .unwrap();
    let mut answers = String::new();
    for _ in 0..3 {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        answers.push_str(&line);
    }
    answers
}

#[test]
fn the_shipped_server_permissions_keep_each_host_to_its_own_keys() {
    let name = "the_shipped_server_permissions_keep_each_host_to_its_own_keys";
    if !can_run(name) {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_floodgate");
    let (a, b) = (Netns::new("fp1"), Netns::new("fp2"));
    assert_eq!(nats::link(&a, &b, "p"), NATS_ADDR);
    let (f1, f2) = (DaemonFiles::new(bin), DaemonFiles::new(bin));
    std::fs::write(f1.path("nats.conf"), shipped_conf(NATS_ADDR, &f1.path("nats"))).unwrap();
    let _nats = Nats::with_config(&a, NATS_ADDR, &f1.path("nats.conf"));
    for (f, host) in [(&f1, "mx1"), (&f2, "mx2")] {
        write_config(f, host, "", NATS_ADDR);
        let mut cfg = std::fs::OpenOptions::new().append(true).open(f.path("floodgate.toml")).unwrap();
        writeln!(cfg, "user = \"{host}\"\npassword = \"pw\"").unwrap();
    }
    // A host may not create the bucket; the operator does, once.
    let refused = f1.fg_with(&a, "floodgate.toml", &["fleet", "status"]);
    assert!(!refused.status.success(), "mx1's user created the bucket");
    f2.fg(&b, &["fleet", "--user", "operator", "--password", "pw", "status"]);
    let _d1 = f1.start(&a);
    let _d2 = f2.start(&b);
    let connected = |f: &DaemonFiles, ns: &Netns| status(f, ns)["fleet"]["connected"] == true;
    assert!(
        floodgate_lab::wait::within(Duration::from_secs(10), || connected(&f1, &a) && connected(&f2, &b)),
        "the hosts' users cannot work the bucket:\nmx1: {}\nmx2: {}",
        f1.daemon_log(),
        f2.daemon_log()
    );
    // What a host needs, its users may: mx1 publishes, mx2 watches and applies.
    f1.fg(&a, &["block", GUESSER, "--for", "1h"]);
    assert!(
        floodgate_lab::wait::within(Duration::from_secs(5), || !fleet_bans(&f2, &b).is_empty()),
        "mx2 did not apply mx1's ban under the shipped permissions:\n{}",
        f2.daemon_log()
    );
    // mx2's credential can neither delete mx1's ban nor write the operator's keys.
    let key = floodgate::fleet::verdict::ban_key("mx1", &GUESSER.parse().unwrap());
    let answer = b.enter(move || raw_delete("mx2", &format!("$KV.floodgate.{key}")));
    assert!(answer.contains("Permissions Violation"), "the server let mx2 delete mx1's key: {answer}");
    let own = floodgate::fleet::verdict::ban_key("mx1", &GUESSER.parse().unwrap());
    let as_mx1 = a.enter(move || raw_delete("mx1", &format!("$KV.floodgate.{own}.x")));
    assert!(!as_mx1.contains("Permissions Violation"), "mx1 may write under its own keys: {as_mx1}");
    // Heartbeats: each host writes its own under the shipped permissions, and only its own.
    let beats = || {
        let out = f2.fg_with(&b, "floodgate.toml", &["fleet", "status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    assert!(
        floodgate_lab::wait::within(Duration::from_secs(5), || beats()["hosts"][0]["heartbeat"]["host"] == "mx1"),
        "mx1's heartbeat is not in the bucket: {}",
        beats()
    );
    let forged = b.enter(|| raw_delete("mx2", "$KV.floodgate.h.mx1"));
    assert!(forged.contains("Permissions Violation"), "the server let mx2 write mx1's heartbeat: {forged}");
    let unblock = f2.fg_with(&b, "floodgate.toml", &["fleet", "unblock", GUESSER]);
    assert!(!unblock.status.success(), "mx2's user wrote a fleet-wide unblock");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!fleet_bans(&f2, &b).is_empty(), "mx1's ban is still applied on mx2");
}
