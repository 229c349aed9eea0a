//! Enforcement end to end, through the CLI, against the real kernel: a server and an attacker namespace joined
//! by a veth pair, floodgate's table in the server's namespace, TCP connects from the attacker's addresses.

use std::path::PathBuf;
use std::time::Duration;

use floodgate_lab::daemon::Lab;
use floodgate_lab::netns;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const PORT: u16 = 25;
/// On the allowlist (config) though inside 203.0.113.0/24.
const ADMIN: &str = "203.0.113.10";
const SOURCES: &[&str] = &["203.0.113.7", ADMIN, "198.18.4.4", "2001:db8:1::5"];

floodgate_lab::lab_env!(
    /// The lab with limits tight enough to see: the CLI acts on kernel and store directly, no daemon.
    Env
);

impl Env {
    fn new(tag: &str) -> Env {
        let env = Env(Lab::new(tag, SOURCES, BIN));
        env.pair.listen(PORT);
        // One token per minute: a second SYN within the minute is over the limit, whatever the machine's speed.
        std::fs::write(
            env.path("floodgate.toml"),
            format!(
                "allowlist = [\"{ADMIN}\"]\n[enforce]\nsource_rate = \"1/minute\"\nsource_burst = 1\n\
                 global_rate = \"1/minute\"\nglobal_burst = 1\n[services.smtp]\nports = [{PORT}]\n"
            ),
        )
        .unwrap();
        env
    }

    fn db(&self) -> PathBuf {
        self.path("f.db")
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(out.status.code(), Some(1), "floodgate {args:?} should fail cleanly: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn connects(&self, from: &str) -> bool {
        self.pair.connects(from, PORT)
    }

    fn listed(&self) -> Vec<serde_json::Value> {
        self.ok(&["list", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn stored_bans(&self) -> i64 {
        let c = rusqlite::Connection::open(self.db()).unwrap();
        c.query_row("SELECT count(*) FROM bans", [], |r| r.get(0)).unwrap()
    }
}

#[test]
fn a_ban_blocks_and_unblock_lets_in_ipv4_and_ipv6() {
    if !netns::available("a_ban_blocks_and_unblock_lets_in_ipv4_and_ipv6") {
        return;
    }
    let env = Env::new("ban");
    for src in ["198.51.100.2", "2001:db8:1::5"] {
        assert!(env.connects(src), "{src} connects before any ban");
    }
    env.ok(&["block", "198.51.100.2", "2001:db8:1::/64", "--for", "1h", "--reason", "brute force"]);
    assert!(!env.connects("198.51.100.2"));
    assert!(!env.connects("2001:db8:1::5"), "the /64 covers it");
    assert!(env.connects("203.0.113.7"), "others still connect");
    let listed = env.listed();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["reason"], "brute force");
    env.ok(&["unblock", "198.51.100.2", "2001:db8:1::/64"]);
    assert!(env.connects("198.51.100.2"));
    assert!(env.connects("2001:db8:1::5"));
    assert!(env.listed().is_empty());
}

#[test]
fn the_allowlist_wins_inside_a_banned_prefix_and_under_the_global_limit() {
    if !netns::available("the_allowlist_wins_inside_a_banned_prefix_and_under_the_global_limit") {
        return;
    }
    let env = Env::new("allow");
    let e = env.fails(&["block", ADMIN]);
    assert!(e.contains("203.0.113.10 is on the allowlist") && e.contains("nothing was applied"), "{e}");
    env.ok(&["block", "203.0.113.0/24", "--for", "10m"]);
    assert!(!env.connects("203.0.113.7"));
    assert!(env.connects(ADMIN), "allowlisted inside a banned /24");
    env.ok(&["unblock", "203.0.113.0/24"]);

    env.ok(&["limit", "global", "25", "--for", "1m"]);
    assert!(env.connects("198.51.100.2"), "the bucket starts with one token");
    assert!(!env.connects("198.51.100.2"), "then the global limit drops");
    assert!(!env.connects("203.0.113.7"), "for everyone: it is global");
    for _ in 0..3 {
        assert!(env.connects(ADMIN), "except the allowlist");
    }
    // The drops are counted per port (what the daemon's policy reads, since conntrack never sees them).
    let drops = env.pair.server.enter(|| {
        floodgate::nft::Kernel::open().unwrap().limit_drops("floodgate", floodgate::nft::ruleset::GLOBAL_CHAIN).unwrap()
    });
    assert!(drops.get(&PORT).is_some_and(|n| *n >= 2), "dropped SYNs counted for port {PORT}: {drops:?}");
    env.ok(&["limit", "off", "25"]);
    assert!(env.connects("203.0.113.7"), "lifted");
}

#[test]
fn the_per_source_limit_counts_each_source_apart() {
    if !netns::available("the_per_source_limit_counts_each_source_apart") {
        return;
    }
    let env = Env::new("src");
    env.ok(&["limit", "source", "25", "--for", "1m"]);
    assert!(env.connects("198.51.100.2"));
    assert!(!env.connects("198.51.100.2"), "the second SYN within the minute is over this source's rate");
    assert!(env.connects("203.0.113.7"), "another source has its own bucket");
    assert!(env.connects("2001:db8:1::5"), "IPv6 sources too");
    assert!(!env.connects("2001:db8:1::5"));
    let listed = env.listed();
    assert_eq!(listed[0]["action"], "limit_source");
    let e = env.fails(&["limit", "source", "8080"]);
    assert!(e.contains("port 8080 has no limit rules"), "{e}");
}

#[test]
fn a_two_second_ban_expires_by_itself() {
    if !netns::available("a_two_second_ban_expires_by_itself") {
        return;
    }
    let env = Env::new("exp");
    env.ok(&["block", "198.18.4.4", "--for", "2s"]);
    assert!(!env.connects("198.18.4.4"));
    std::thread::sleep(Duration::from_millis(2300));
    assert!(env.connects("198.18.4.4"), "the kernel dropped the element by itself");
    assert!(env.listed().is_empty());
}

#[test]
fn reconcile_restores_bans_with_their_remaining_time_and_removes_strays() {
    if !netns::available("reconcile_restores_bans_with_their_remaining_time_and_removes_strays") {
        return;
    }
    let env = Env::new("rec");
    env.ok(&["block", "198.51.100.2", "2001:db8:1::5", "--for", "1h"]);
    assert!(!env.connects("198.51.100.2"));
    // `flush table` removes the rules: the bans stop working until floodgate repairs the table.
    env.pair.server.nft(&["flush", "table", "inet", "floodgate"]);
    assert!(env.connects("198.51.100.2"));
    let out = env.cli(&["list"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("chain prerouting has 0 rule(s), 10 expected"), "list warns of the flushed rules: {e}");
    env.ok(&["reconcile"]);
    assert!(!String::from_utf8_lossy(&env.cli(&["list"]).stderr).contains("warning"));
    assert!(!env.connects("198.51.100.2"));
    assert!(!env.connects("2001:db8:1::5"));

    // A reboot loses the whole table; an element added by hand is a stray.
    std::thread::sleep(Duration::from_millis(1500));
    env.pair.server.nft(&["delete", "table", "inet", "floodgate"]);
    assert!(env.connects("198.51.100.2"));
    env.ok(&["reconcile"]);
    env.pair.server.nft(&["add", "element", "inet", "floodgate", "ban4", "{", "198.18.9.9", "}"]);
    let out = env.cli(&["reconcile"]);
    // A ban the store does not know (a lost or replaced store, a hand edit) is never removed: adopted, loudly.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("ban not in the store, kept and adopted into it: 198.18.9.9"), "{out:?}");
    assert!(!env.connects("198.51.100.2"));
    assert!(!env.connects("2001:db8:1::5"));
    let mut listed = env.listed();
    let adopted = listed.iter().position(|l| l["target"] == "198.18.9.9").expect("the adopted ban is listed");
    let adopted = listed.remove(adopted);
    assert_eq!((adopted["in_store"].as_bool(), adopted["origin"].as_str()), (Some(true), Some("adopted")), "{adopted}");
    assert_eq!(listed.len(), 2, "{listed:?}");
    for l in &listed {
        let left = l["expires_s"].as_u64().unwrap();
        assert!((3590..3599).contains(&left), "restored with the time left, not a fresh hour: {l}");
    }
    let text = env.pair.server.nft(&["list", "set", "inet", "floodgate", "ban4"]);
    assert!(text.contains("timeout 59m5"), "re-added with the remaining time as its timeout: {text}");
}

#[test]
fn a_batch_the_kernel_refuses_leaves_kernel_and_store_unchanged() {
    if !netns::available("a_batch_the_kernel_refuses_leaves_kernel_and_store_unchanged") {
        return;
    }
    let env = Env::new("bad");
    env.ok(&["block", "198.51.100.2", "--for", "1h"]);
    // Sabotage: ban4_net redefined by hand without `interval`, so a prefix cannot be added to it.
    env.pair.server.nft(&["flush chain inet floodgate prerouting; delete set inet floodgate ban4_net; add set inet floodgate ban4_net { type ipv4_addr; flags timeout; }"]);
    let e = env.fails(&["block", "203.0.113.0/24", "198.18.4.4", "--for", "1h"]);
    assert!(e.contains("nothing was applied") && e.contains("errno"), "{e}");
    assert_eq!(env.stored_bans(), 1, "the store did not record what the kernel refused");
    let text = env.pair.server.nft(&["list", "set", "inet", "floodgate", "ban4"]);
    assert!(!text.contains("198.18.4.4"), "no part of the batch was applied: {text}");
    // A bad argument is refused before anything is written.
    let e = env.fails(&["block", "198.18.4.4", "198.51.100.300"]);
    assert!(e.contains("`198.51.100.300` is not an IP address"), "{e}");
    let e = env.fails(&["block", "198.0.0.0/8"]);
    assert!(e.contains("wider than /16"), "{e}");
    let e = env.fails(&["block", "198.18.4.4", "--for", "soon"]);
    assert!(e.contains("`soon` is not a duration"), "{e}");
    assert_eq!(env.stored_bans(), 1);
}

#[test]
fn without_cap_net_admin_the_error_says_so() {
    if !netns::available("without_cap_net_admin_the_error_says_so") {
        return;
    }
    let env = Env::new("cap");
    let cfg = env.path("floodgate.toml");
    let db = env.db();
    let out = env.pair.server.exec(&[
        "setpriv",
        "--bounding-set",
        "-net_admin",
        "--inh-caps",
        "-net_admin",
        env!("CARGO_BIN_EXE_floodgate"),
        "--config",
        cfg.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "block",
        "198.51.100.2",
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("needs root or CAP_NET_ADMIN"), "{e}");
    assert_eq!(env.stored_bans(), 0);
}
