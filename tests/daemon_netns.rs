//! The daemon end to end, in namespaces: `floodgate run` tails a log file, a kmsg-format record file and a
//! netstat-format counter file of the test's own, bans in its namespace's kernel, and serves the CLI.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use floodgate_lab::daemon::{Daemon, Lab};
use floodgate_lab::netns;
use floodgate_lab::wait::{wait_for, within};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

floodgate_lab::lab_env!(
    /// The lab with this suite's files: a mail log, a kmsg-format record file and a netstat-format counter file.
    Env
);

impl Env {
    fn new(tag: &str) -> Env {
        let env = Env(Lab::new(tag, &["203.0.113.7", "203.0.113.8"], BIN));
        env.pair.listen(143);
        env.write_config("floodgate.toml", 3);
        std::fs::write(env.path("netstat"), netstat(0)).unwrap();
        std::fs::write(env.path("kmsg"), "").unwrap();
        env
    }

    fn write_config(&self, name: &str, maxretry: u32) {
        let p = |n: &str| self.path(n).display().to_string();
        std::fs::write(
            self.path(name),
            format!(
                "allowlist = [\"203.0.113.10\"]\n\
                 [sources]\nfiles = [\"{}\"]\nkmsg_path = \"{}\"\nnetstat_path = \"{}\"\nnetstat_interval = \"200ms\"\n\
                 [daemon]\nsocket = \"{}\"\ntick = \"200ms\"\nverify_every = \"1s\"\n\
                 [services.imap]\nports = [143]\nmaxretry = {maxretry}\n",
                p("mail.log"),
                p("kmsg"),
                p("netstat"),
                p("fg.sock")
            ),
        )
        .unwrap();
    }

    /// The store's events, read directly (WAL lets a reader in while the daemon writes).
    fn events(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let db = self.path("f.db");
        let mut cmd = vec![BIN, "--db", db.to_str().unwrap(), "events", "--json"];
        cmd.extend_from_slice(args);
        let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn append(&self, name: &str, lines: &[String]) {
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(self.path(name)).unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.fg(&["status", "--json"])).unwrap()
    }

    fn banned(&self, addr: &str) -> bool {
        self.pair.server.nft(&["list", "set", "inet", "floodgate", "ban4"]).contains(addr)
    }
}

fn netstat(overflows: u64) -> String {
    format!(
        "TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed ListenOverflows ListenDrops TCPReqQFullDoCookies TCPReqQFullDrop\n\
         TcpExt: 0 0 0 {overflows} {overflows} 0 0\n\
         IpExt: InNoRoutes\nIpExt: 0\n"
    )
}

fn failure(addr: &str, n: u32) -> String {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
    format!(
        "{now} mx dovecot[812]: imap-login: Info: Disconnected: Aborted login (auth failed, 1 attempts in 2 secs): \
         user=<u{n}>, method=PLAIN, rip={addr}, lip=198.51.100.1, session=<s{n}>"
    )
}

fn needs(test: &str) -> bool {
    netns::available(test)
}

#[test]
fn a_failure_line_appended_becomes_a_kernel_ban_and_the_cli_goes_through_the_socket() {
    if !needs("a_failure_line_appended_becomes_a_kernel_ban_and_the_cli_goes_through_the_socket") {
        return;
    }
    let env = Env::new("dban");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let d = env.start();
    assert!(env.pair.connects("203.0.113.7", 143));
    env.append("mail.log", &(0..3).map(|n| failure("203.0.113.7", n)).collect::<Vec<_>>());
    wait_for("the ban in the kernel set", Duration::from_secs(5), || env.banned("203.0.113.7"));
    assert!(!env.pair.connects("203.0.113.7", 143), "the banned source is dropped");
    assert!(env.pair.connects("203.0.113.8", 143), "others are not");
    // Allowlisted: never banned, however often it fails.
    env.append("mail.log", &(0..5).map(|n| failure("203.0.113.10", n)).collect::<Vec<_>>());
    // Enforcement does not decay: an element deleted or rules flushed by hand come back within a check.
    env.pair.server.nft(&["delete", "element", "inet", "floodgate", "ban4", "{", "203.0.113.7", "}"]);
    env.pair.server.nft(&["flush", "chain", "inet", "floodgate", "prerouting"]);
    assert!(env.pair.connects("203.0.113.7", 143));
    wait_for("the daemon's repair", Duration::from_secs(5), || env.banned("203.0.113.7"));
    wait_for("the repaired rules", Duration::from_secs(5), || !env.pair.connects("203.0.113.7", 143));
    let listed = env.fg(&["list", "--json"]);
    assert!(listed.contains("\"origin\":\"jail:imap\""), "the daemon's own ban, through the socket: {listed}");
    assert!(listed.contains("\"failures\":3"), "with the figures that led to it: {listed}");
    let out = env.fg_with("floodgate.toml", &["block", "203.0.113.8", "--for", "1m"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("carried this out on its own store"),
        "another --db is named: {said}"
    );
    assert!(env.banned("203.0.113.8"));
    let s = env.status();
    assert_eq!(s["bans_active"], 2, "{s}");
    assert!(!env.banned("203.0.113.10"));
    let file =
        s["sources"].as_array().unwrap().iter().find(|x| x["name"].as_str().unwrap().ends_with("mail.log")).unwrap();
    assert_eq!(file["lines"], 8, "{s}");
    assert_eq!(file["events"], 8, "every failure line is an event, counted for its file: {s}");
    assert_eq!(d.stop(), Some(0), "SIGTERM is a clean exit: {}", env.daemon_log());
    assert!(env.banned("203.0.113.7"), "bans stay in the kernel after the daemon stops");
    // Without the daemon, the CLI acts directly (here on a store of its own).
    let out = env.fg_with("floodgate.toml", &["status"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("floodgate is not running"), "{out:?}");
}

#[test]
fn a_restart_resumes_without_duplicates_or_gaps() {
    if !needs("a_restart_resumes_without_duplicates_or_gaps") {
        return;
    }
    let env = Env::new("dres");
    std::fs::write(env.path("mail.log"), format!("{}\n", failure("198.18.0.1", 0))).unwrap();
    let d = env.start();
    // Started at the end: the line already there is not read.
    env.append("mail.log", &[failure("198.18.0.2", 1), failure("198.18.0.3", 2)]);
    wait_for("two events", Duration::from_secs(5), || env.events(&[]).len() == 2);
    assert_eq!(d.stop(), Some(0));
    env.append("mail.log", &[failure("198.18.0.4", 3), failure("198.18.0.5", 4), failure("198.18.0.6", 5)]);
    let d = env.start();
    env.append("mail.log", &[failure("198.18.0.7", 6)]);
    wait_for("six events", Duration::from_secs(5), || env.events(&[]).len() >= 6);
    std::thread::sleep(Duration::from_millis(300));
    let mut addrs: Vec<String> = env.events(&[]).iter().map(|e| e["addr"].as_str().unwrap().to_string()).collect();
    addrs.sort();
    let want: Vec<String> = (2..=7).map(|i| format!("198.18.0.{i}")).collect();
    assert_eq!(addrs, want, "each line exactly once, including those written while the daemon was down");
    d.stop();
}

#[test]
fn a_bad_reload_keeps_the_old_config_and_a_good_one_applies() {
    if !needs("a_bad_reload_keeps_the_old_config_and_a_good_one_applies") {
        return;
    }
    let env = Env::new("drel");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let mut d = env.start();
    // The CLI reads a config of its own before it talks to the daemon: keep a good copy for it.
    std::fs::copy(env.path("floodgate.toml"), env.path("cli.toml")).unwrap();
    std::fs::write(env.path("floodgate.toml"), "[jail]\nmaxretry = \"many\"\n").unwrap();
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.alive(), "a bad config on SIGHUP does not stop the daemon");
    assert!(env.daemon_log().contains("reload refused"), "{}", env.daemon_log());
    let out = env.fg_with("cli.toml", &["reload"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("reload refused") && e.contains("line 2"), "{e}");
    // The old config (maxretry 3) still bans.
    env.append("mail.log", &(0..3).map(|n| failure("203.0.113.7", n)).collect::<Vec<_>>());
    wait_for("a ban under the old config", Duration::from_secs(5), || env.banned("203.0.113.7"));
    // A good config (maxretry 1) applies on reload.
    env.write_config("floodgate.toml", 1);
    let out = env.fg_with("cli.toml", &["reload"]);
    assert!(out.status.success(), "{out:?}");
    env.append("mail.log", &[failure("203.0.113.8", 9)]);
    wait_for("a ban under the new config", Duration::from_secs(5), || env.banned("203.0.113.8"));
    d.stop();
}

#[test]
fn kernel_records_and_counter_jumps_become_events() {
    if !needs("kernel_records_and_counter_jumps_become_events") {
        return;
    }
    let env = Env::new("dker");
    let d = env.start();
    env.append(
        "kmsg",
        &["6,9001,154110937,-;TCP: request_sock_TCP: Possible SYN flooding on port 198.51.100.1:25. Sending cookies."
            .into()],
    );
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(env.path("netstat"), netstat(1500)).unwrap();
    wait_for("syn_flood and kernel_counter events", Duration::from_secs(5), || {
        !env.events(&["--kind", "syn_flood"]).is_empty() && !env.events(&["--kind", "kernel_counter"]).is_empty()
    });
    let flood = &env.events(&["--kind", "syn_flood"])[0];
    assert_eq!(flood["port"], 25);
    let counters = env.events(&["--kind", "kernel_counter"]);
    assert!(counters.iter().any(|c| c["rule"] == "netstat.ListenOverflows" && c["count"] == 1500), "{counters:?}");
    d.stop();
}

#[test]
fn a_second_daemon_on_the_same_state_refuses_naming_the_first() {
    if !needs("a_second_daemon_on_the_same_state_refuses_naming_the_first") {
        return;
    }
    let env = Env::new("dtwo");
    let d = env.start();
    let cfg = env.path("floodgate.toml");
    let db = env.path("f.db");
    let out = env.pair.server.exec(&[BIN, "--config", cfg.to_str().unwrap(), "--db", db.to_str().unwrap(), "run"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains(&format!("another floodgate daemon (pid {})", d.pid())), "naming the first: {e}");
    // Killed hard, the daemon leaves its socket behind: the CLI notices nobody answers and acts directly.
    d.signal(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(300));
    assert!(Path::new(&env.path("fg.sock")).exists());
    let out = env.fg_with("floodgate.toml", &["list"]);
    assert!(out.status.success(), "{out:?}");
    let out = env.fg_with("floodgate.toml", &["status"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("floodgate is not running"), "stale socket: {out:?}");
}

#[test]
fn rotation_by_rename_and_by_copytruncate_loses_no_line() {
    if !needs("rotation_by_rename_and_by_copytruncate_loses_no_line") {
        return;
    }
    let env = Env::new("drot");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let d = env.start();
    let addr = |i: u32| format!("198.18.1.{i}");
    env.append("mail.log", &[failure(&addr(1), 1), failure(&addr(2), 2)]);
    wait_for("two events", Duration::from_secs(5), || env.events(&[]).len() == 2);
    // logrotate's default: rename, then a new file; the writer adds to the old one until it reopens.
    std::fs::rename(env.path("mail.log"), env.path("mail.log.1")).unwrap();
    env.append("mail.log.1", &[failure(&addr(3), 3)]);
    env.append("mail.log", &[failure(&addr(4), 4), failure(&addr(5), 5)]);
    wait_for("five events", Duration::from_secs(5), || env.events(&[]).len() == 5);
    // copytruncate: the file is copied away and truncated in place.
    std::fs::copy(env.path("mail.log"), env.path("mail.log.2")).unwrap();
    std::fs::OpenOptions::new().write(true).open(env.path("mail.log")).unwrap().set_len(0).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    env.append("mail.log", &[failure(&addr(6), 6)]);
    wait_for("six events", Duration::from_secs(5), || env.events(&[]).len() >= 6);
    std::thread::sleep(Duration::from_millis(300));
    let mut got: Vec<String> = env.events(&[]).iter().map(|e| e["addr"].as_str().unwrap().to_string()).collect();
    got.sort();
    assert_eq!(got, (1..=6).map(addr).collect::<Vec<_>>(), "every line once: {}", env.daemon_log());
    d.stop();
}

fn failures(addr: &str, from: u32, n: u32) -> Vec<String> {
    (from..from + n).map(|i| failure(addr, i)).collect()
}

#[test]
fn counts_survive_a_reload_and_a_restart_and_a_changed_jail_is_rebuilt_from_the_store() {
    if !needs("counts_survive_a_reload_and_a_restart_and_a_changed_jail_is_rebuilt_from_the_store") {
        return;
    }
    let env = Env::new("dcnt");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let d = env.start();
    let env = &env;
    let seen = |n: usize| move || env.events(&[]).len() >= n;
    // Two failures, an unchanged reload (logrotate's postrotate), one more: banned.
    env.append("mail.log", &failures("203.0.113.7", 0, 2));
    wait_for("two events", Duration::from_secs(5), seen(2));
    d.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(5), || env.daemon_log().contains("policy's state is kept"));
    env.append("mail.log", &failures("203.0.113.7", 2, 1));
    wait_for("a ban across an unchanged reload", Duration::from_secs(5), || env.banned("203.0.113.7"));
    // Two failures, a reload that changes the jail (maxretry 4): the new jail starts from the stored two.
    env.append("mail.log", &failures("203.0.113.8", 10, 2));
    wait_for("five events", Duration::from_secs(5), seen(5));
    env.write_config("floodgate.toml", 4);
    d.signal(libc::SIGHUP);
    // The reload's own line: the start logs a rebuild too.
    wait_for("the rebuild", Duration::from_secs(5), || {
        env.daemon_log().contains("configuration and rules reloaded; failure windows rebuilt")
    });
    env.append("mail.log", &failures("203.0.113.8", 12, 1));
    std::thread::sleep(Duration::from_millis(600));
    assert!(!env.banned("203.0.113.8"), "three of four\n{}\n{:#?}", env.daemon_log(), env.events(&[]));
    env.append("mail.log", &failures("203.0.113.8", 13, 1));
    if !within(Duration::from_secs(5), || env.banned("203.0.113.8")) {
        panic!("no ban across a changed reload\n{}", env.daemon_log());
    }
    // Three failures, a restart, one more: banned. The replay does not ban 203.0.113.7 again (already answered).
    env.append("mail.log", &failures("198.18.0.9", 20, 3));
    wait_for("ten events", Duration::from_secs(5), seen(10));
    assert_eq!(d.stop(), Some(0));
    let d = env.start();
    env.append("mail.log", &failures("198.18.0.9", 23, 1));
    wait_for("a ban across a restart", Duration::from_secs(5), || env.banned("198.18.0.9"));
    let bans = env.fg(&["list", "--json"]);
    assert_eq!(bans.matches("203.0.113.7").count(), 1, "{bans}");
    d.stop();
}

#[test]
fn a_crash_after_the_events_are_committed_loses_no_ban() {
    if !needs("a_crash_after_the_events_are_committed_loses_no_ban") {
        return;
    }
    let addr = |i: u32| format!("198.18.{}.{}", i / 250, i % 250 + 1);
    let mut stored_at_crash = Vec::new();
    // Killed at once, as soon as the first batch is committed, and later in the burst.
    for (round, after_ms) in [0u64, 1, 300].into_iter().enumerate() {
        let env = Env::new(&format!("dkil{round}"));
        std::fs::write(env.path("mail.log"), "").unwrap();
        let d = env.start();
        let lines: Vec<String> = (0..2000).flat_map(|i| failures(&addr(i), i * 3, 3)).collect();
        env.append("mail.log", &lines);
        if after_ms == 1 {
            wait_for("a first batch", Duration::from_secs(10), || !env.events(&["--limit", "1"]).is_empty());
        } else {
            std::thread::sleep(Duration::from_millis(after_ms));
        }
        d.signal(libc::SIGKILL);
        drop(d);
        let stored = env.events(&["--limit", "100000"]).len();
        std::fs::remove_file(env.path("fg.sock")).unwrap();
        let d = env.start();
        // Every attacker whose three failures were committed before the crash, and every one whose lines were
        // read after the restart: all 2000.
        let banned = || env.pair.server.nft(&["list", "set", "inet", "floodgate", "ban4"]).matches("198.18.").count();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while banned() < 2000 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(banned(), 2000, "after a kill -9 {after_ms} ms in ({stored} events stored): {}", env.daemon_log());
        assert_eq!(env.events(&["--limit", "100000"]).len(), 6000, "each line once ({stored} stored before the crash)");
        d.stop();
        stored_at_crash.push(stored);
    }
    // At least one crash came after some failures were committed (and their lines not read again).
    assert!(stored_at_crash.iter().any(|&n| n > 0), "{stored_at_crash:?}");
}

#[test]
fn loopback_special_and_own_addresses_are_never_banned() {
    if !needs("loopback_special_and_own_addresses_are_never_banned") {
        return;
    }
    let env = Env::new("dself");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let d = env.start();
    // A webmail user's typos through loopback, and a health check through the host's own address.
    let mut lines = failures("127.0.0.1", 0, 5);
    lines.extend(failures("::1", 5, 5));
    lines.extend(failures("198.51.100.1", 10, 5));
    lines.extend(failures("203.0.113.7", 20, 3));
    env.append("mail.log", &lines);
    wait_for("the real attacker's ban", Duration::from_secs(5), || env.banned("203.0.113.7"));
    let bans = env.fg(&["list", "--json"]);
    for a in ["127.0.0.1", "::1", "198.51.100.1"] {
        assert!(!bans.contains(&format!("\"{a}\"")), "{a} banned: {bans}");
    }
    let log = env.daemon_log();
    assert!(log.contains("127.0.0.1 is or holds loopback"), "{log}");
    assert!(log.contains("198.51.100.1 is or holds 198.51.100.1, an address of this host"), "{log}");
    for (target, why) in [
        ("127.0.0.1", "loopback"),
        ("::", "unspecified"),
        ("0.0.0.0", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("198.51.100.1", "an address of this host"),
        ("198.51.100.0/24", "an address of this host"),
        ("2001:db8::1", "an address of this host"),
    ] {
        let out = env.fg_with("floodgate.toml", &["block", target]);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && e.contains(why), "block {target}: {e}");
    }
    // What comes in on loopback is accepted before every ban: the host reaches itself through its own address
    // even with that address in a banned set put there by hand.
    env.pair.server.nft(&["add", "element", "inet", "floodgate", "ban4", "{", "198.51.100.1", "}"]);
    let ok = env.pair.server.exec(&["bash", "-c", "exec 3<>/dev/tcp/198.51.100.1/143 && echo ok"]);
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok"), "{ok:?}");
    d.stop();
}

#[test]
fn a_far_future_line_time_never_stretches_a_ban() {
    if !needs("a_far_future_line_time_never_stretches_a_ban") {
        return;
    }
    let env = Env::new("dfut");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let d = env.start();
    let future: Vec<String> = failures("203.0.113.7", 0, 3).iter().map(|l| format!("2031{}", &l[4..])).collect();
    env.append("mail.log", &future);
    wait_for("the ban", Duration::from_secs(5), || env.banned("203.0.113.7"));
    let listed: Vec<serde_json::Value> =
        env.fg(&["list", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ban = listed.iter().find(|b| b["target"] == "203.0.113.7").unwrap();
    let left = ban["expires_s"].as_u64().unwrap();
    assert!(left <= 3600, "the jail's 1 h from now, not from 2031: {ban}");
    d.stop();
}

#[test]
fn a_closed_stderr_never_stops_the_daemon() {
    if !needs("a_closed_stderr_never_stops_the_daemon") {
        return;
    }
    let env = Env::new("derr");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let (cfg, db) = (env.path("floodgate.toml"), env.path("f.db"));
    let mut child = Command::new("ip")
        .args(["netns", "exec", &env.pair.server.name, BIN, "-vv", "--config"])
        .arg(&cfg)
        .arg("--db")
        .arg(&db)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the control socket", Duration::from_secs(10), || env.path("fg.sock").exists());
    // The reader goes away (a log pipe whose other end died): every log line now fails to write.
    drop(child.stderr.take());
    env.append("mail.log", &failures("203.0.113.7", 0, 3));
    wait_for("the ban", Duration::from_secs(5), || env.banned("203.0.113.7"));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the daemon died with its stderr");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "a clean exit even with nowhere to log");
}

#[test]
fn the_control_socket_caps_connections_request_size_and_idle_time() {
    if !needs("the_control_socket_caps_connections_request_size_and_idle_time") {
        return;
    }
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let env = Env::new("dsock");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let d = env.start();
    let rss = || -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
        let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    };
    let before = rss();
    // 200 connections, each sending 3 MiB of a request that never ends, none ever finishing.
    let chunk = vec![b'x'; 3 << 20];
    let mut conns: Vec<UnixStream> = Vec::new();
    for _ in 0..200 {
        let mut c = UnixStream::connect(env.path("fg.sock")).unwrap();
        c.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
        let _ = c.write(&chunk);
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss();
    assert!(during < before + 200, "the daemon held {during} MiB (from {before}) for idle partial requests");
    // The idle ones are closed after the request timeout; the daemon answers again.
    std::thread::sleep(Duration::from_secs(11));
    let mut closed = 0;
    for c in conns.iter_mut().take(32) {
        c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut buf = [0u8; 16];
        match c.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => closed += 1,
            _ => {}
        }
    }
    assert!(closed >= 30, "idle connections closed: {closed} of 32");
    drop(conns);
    wait_for("status through the socket", Duration::from_secs(30), || {
        env.fg_with("floodgate.toml", &["status"]).status.success()
    });
    d.stop();
}

#[test]
fn a_flushed_ruleset_is_repaired_within_a_second() {
    if !needs("a_flushed_ruleset_is_repaired_within_a_second") {
        return;
    }
    let env = Env::new("dflu");
    // The periodic check a minute away: only the nftables watch can repair in time.
    let cfg = std::fs::read_to_string(env.path("floodgate.toml"))
        .unwrap()
        .replace("verify_every = \"1s\"", "verify_every = \"60s\"");
    std::fs::write(env.path("floodgate.toml"), cfg).unwrap();
    std::fs::write(env.path("mail.log"), "").unwrap();
    let d = env.start();
    env.append("mail.log", &failures("203.0.113.7", 0, 3));
    wait_for("the ban", Duration::from_secs(5), || env.banned("203.0.113.7"));
    for damage in [
        vec!["flush", "ruleset"],
        vec!["delete", "element", "inet", "floodgate", "ban4", "{", "203.0.113.7", "}"],
        vec!["flush", "chain", "inet", "floodgate", "prerouting"],
    ] {
        env.pair.server.nft(&damage);
        let t = std::time::Instant::now();
        // The table may be gone: read it without failing the test while it is.
        let list = |what: &[&str]| {
            let mut cmd = vec!["nft", "list"];
            cmd.extend_from_slice(what);
            String::from_utf8_lossy(&env.pair.server.exec(&cmd).stdout).into_owned()
        };
        wait_for(&format!("the repair after `nft {}`", damage.join(" ")), Duration::from_secs(1), || {
            list(&["set", "inet", "floodgate", "ban4"]).contains("203.0.113.7")
                && list(&["chain", "inet", "floodgate", "prerouting"]).contains("@ban4")
        });
        eprintln!("nft {}: repaired in {:?}", damage.join(" "), t.elapsed());
    }
    assert!(!env.pair.connects("203.0.113.7", 143), "dropped again");
    d.stop();
}

#[test]
fn a_full_disk_keeps_bans_in_the_kernel_and_the_store_catches_up() {
    if !needs("a_full_disk_keeps_bans_in_the_kernel_and_the_store_catches_up") {
        return;
    }
    let env = Env::new("dful");
    // The store on a small tmpfs of its own (unmounted on every exit of the test).
    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let small = env.path("small");
    std::fs::create_dir(&small).unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&small).status().unwrap();
    assert!(ok.success(), "mount tmpfs");
    let _mount = Mount(small.clone());
    let db = small.join("f.db");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let (cfg, sock, log) = (env.path("floodgate.toml"), env.path("fg.sock"), env.path("daemon.log"));
    let d = Daemon::start(&env.pair.server, BIN, &cfg, &db, &sock, &log);
    // Fill the disk to the last byte.
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", small.join("filler").display()))
        .arg("bs=64k")
        .output();
    env.append("mail.log", &failures("203.0.113.7", 0, 3));
    wait_for("the ban in the kernel", Duration::from_secs(5), || env.banned("203.0.113.7"));
    // Several verify passes (every 1 s here): the ban the store could not record stays.
    std::thread::sleep(Duration::from_secs(4));
    assert!(env.banned("203.0.113.7"), "a ban the store could not save was removed: {}", env.daemon_log());
    assert!(!env.pair.connects("203.0.113.7", 143));
    assert!(env.daemon_log().contains("store cannot record decisions"), "told loudly: {}", env.daemon_log());
    let status = env.fg(&["status"]);
    assert!(status.contains("STORE CANNOT WRITE"), "{status}");
    // Space returns: the store catches up.
    std::fs::remove_file(small.join("filler")).unwrap();
    wait_for("the ban recorded", Duration::from_secs(5), || {
        let listed = env.fg(&["list", "--json"]);
        listed.contains("\"203.0.113.7\"")
            && listed.contains("\"in_store\":true")
            && !env.fg(&["status"]).contains("CANNOT")
    });
    d.stop();
}

#[test]
fn a_floodgate_on_another_store_is_refused_and_adopts_only_when_told() {
    if !needs("a_floodgate_on_another_store_is_refused_and_adopts_only_when_told") {
        return;
    }
    let env = Env::new("down");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let d = env.start();
    env.append("mail.log", &failures("203.0.113.7", 0, 3));
    wait_for("the ban", Duration::from_secs(5), || env.banned("203.0.113.7"));
    // A second configuration: its own socket and store, the same namespace (and so the same table).
    let cfg2 = std::fs::read_to_string(env.path("floodgate.toml")).unwrap().replace("fg.sock", "fg2.sock");
    std::fs::write(env.path("two.toml"), cfg2).unwrap();
    let (cfg2, db2) = (env.path("two.toml"), env.path("two.db"));
    let two = |args: &[&str]| {
        let mut cmd = vec![BIN, "--config", cfg2.to_str().unwrap(), "--db", db2.to_str().unwrap()];
        cmd.extend_from_slice(args);
        env.pair.server.exec(&cmd)
    };
    for args in [&["run"][..], &["reconcile"], &["block", "203.0.113.8"]] {
        let out = two(args);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && e.contains("belongs to another floodgate store"), "{args:?}: {e}");
    }
    assert!(env.banned("203.0.113.7"), "the first store's ban was not touched");
    assert!(!env.banned("203.0.113.8"));
    // Reading is not owning: listing through another store works.
    assert!(two(&["list"]).status.success());
    // The first stops; the second takes over only with --adopt, and keeps (adopts) the first one's ban.
    assert_eq!(d.stop(), Some(0));
    let out = two(&["reconcile"]);
    assert!(!out.status.success(), "{out:?}");
    let out = two(&["reconcile", "--adopt"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("kept and adopted into it: 203.0.113.7"), "{said}");
    assert!(env.banned("203.0.113.7"));
    let listed = String::from_utf8_lossy(&two(&["list", "--json"]).stdout).into_owned();
    assert!(listed.contains("\"origin\":\"adopted\""), "{listed}");
    // Now the first store is the stranger.
    let out = env.fg_with("floodgate.toml", &["block", "203.0.113.9"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to another floodgate store"), "{out:?}");
}

#[test]
fn a_store_deleted_under_the_daemon_unbans_no_one_and_is_reported() {
    if !needs("a_store_deleted_under_the_daemon_unbans_no_one_and_is_reported") {
        return;
    }
    let env = Env::new("dlost");
    std::fs::write(env.path("mail.log"), "").unwrap();
    let d = env.start();
    env.append("mail.log", &failures("203.0.113.7", 0, 3));
    wait_for("the ban", Duration::from_secs(5), || env.banned("203.0.113.7"));
    for f in ["f.db", "f.db-wal", "f.db-shm"] {
        let _ = std::fs::remove_file(env.path(f));
    }
    // Verify passes (every 1 s) run against what the daemon still has open: nobody is unbanned.
    std::thread::sleep(Duration::from_secs(3));
    assert!(env.banned("203.0.113.7"), "{}", env.daemon_log());
    env.append("mail.log", &failures("203.0.113.8", 10, 3));
    wait_for("a new ban after the loss", Duration::from_secs(5), || env.banned("203.0.113.8"));
    assert!(env.daemon_log().contains("deleted or replaced"), "reported: {}", env.daemon_log());
    d.stop();
    // A restart finds an empty store at that path and a table owned by the lost one: refused, bans kept.
    let out = env.pair.server.exec(&[
        BIN,
        "--config",
        env.path("floodgate.toml").to_str().unwrap(),
        "--db",
        env.path("f.db").to_str().unwrap(),
        "run",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--adopt"), "{out:?}");
    assert!(env.banned("203.0.113.7") && env.banned("203.0.113.8"));
}
