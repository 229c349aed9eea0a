//! A spoofed SYN flood against the real kernel: `floodgate run` in a server namespace with conntrack on, an
//! attacker namespace sending hand-built SYNs from 198.18.0.0/15 through a raw socket, and the daemon's answer
//! checked from the outside: the global limit on the flooded port (in its status and in the kernel's set), the
//! allowlisted client still served under it, no spoofed source banned, and the port back to normal once the
//! flood has stopped. Everything stays inside the namespaces; the flood is bounded in packets and time.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use floodgate_lab::daemon::Lab;
use floodgate_lab::netns;
use floodgate_lab::syn;
use floodgate_lab::wait::within_every;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PORT: u16 = 587;
const ALLOWED: &str = "203.0.113.10";
/// Distinct spoofed sources; source i sends 1 + i % 3 SYNs, so about 2,000 packets in all.
const FLOOD_SOURCES: u32 = 1_000;
const FLOOD_FOR: Duration = Duration::from_millis(3_500);

floodgate_lab::lab_env!(
    /// The lab with a conntrack-fed daemon guarding one port.
    Env
);

impl Env {
    fn new(tag: &str) -> Env {
        let env = Env(Lab::new(tag, &[ALLOWED], BIN));
        env.pair.listen(PORT);
        // Nothing else on the server: no `ct` rule of the test's own. With `[sources] conntrack = true`
        // floodgate's table makes the kernel track, as it must on a bare host.
        env.pair.route_spoofed_back();
        env.write_config();
        std::fs::write(env.path("mail.log"), "").unwrap();
        env
    }

    fn write_config(&self) {
        let p = |n: &str| self.path(n).display().to_string();
        std::fs::write(
            self.path("floodgate.toml"),
            format!(
                "allowlist = [\"{ALLOWED}\"]\n\
                 [sources]\nfiles = [\"{}\"]\nkmsg = false\nnetstat = false\nconntrack = true\n\
                 [daemon]\nsocket = \"{}\"\ntick = \"200ms\"\n\
                 [policy]\nwindow = \"10s\"\nddos_distinct = 200\nconverge_after = \"5s\"\nlimit_for = \"10s\"\n\
                 [enforce]\nglobal_rate = \"20/second\"\nglobal_burst = 20\n\
                 [services.submission]\nports = [{PORT}]\n",
                p("mail.log"),
                p("fg.sock")
            ),
        )
        .unwrap();
    }

    fn port_mode(&self) -> String {
        let s: serde_json::Value = serde_json::from_str(&self.fg(&["status", "--json"])).unwrap();
        let ports = s["ports"].as_array().unwrap_or_else(|| panic!("no ports in the status: {s}"));
        let p = ports.iter().find(|p| p["port"] == PORT).unwrap_or_else(|| panic!("no port {PORT}: {s}"));
        p["mode"].as_str().unwrap().to_string()
    }

    fn global_ports(&self) -> String {
        self.pair.server.nft(&["list", "set", "inet", "floodgate", "limit_global_ports"])
    }

    /// Bans (as `list --json` shows them) whose target lies inside 198.18.0.0/15.
    fn spoofed_bans(&self) -> Vec<String> {
        self.fg(&["list", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["action"] == "ban")
            .filter_map(|l| l["target"].as_str().map(str::to_string))
            .filter(|t| t.split('/').next().and_then(|a| a.parse::<Ipv4Addr>().ok()).is_some_and(syn::spoofed))
            .collect()
    }

    /// The kernel's ban sets, for any address of 198.18.0.0/15.
    fn spoofed_in_kernel(&self) -> Vec<String> {
        ["ban4", "ban4_net"]
            .iter()
            .flat_map(|set| {
                let listed = self.pair.server.nft(&["list", "set", "inet", "floodgate", set]);
                listed
                    .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '/'))
                    .filter(|w| w.starts_with("198.18.") || w.starts_with("198.19."))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// What the daemon measured, for assertion messages: its log and the conntrack events in its store.
    fn diagnosis(&self) -> String {
        let db = self.path("f.db");
        let out = Command::new(BIN)
            .args(["--db", db.to_str().unwrap(), "events", "--kind", "conn_new", "--json"])
            .output()
            .unwrap();
        let events = String::from_utf8_lossy(&out.stdout);
        let n = events.lines().count();
        let first: Vec<&str> = events.lines().take(5).collect();
        format!(
            "conn_new events in the store: {n}, first: {first:#?}\nfloodgate's track chain: {}\ndaemon log:\n{}",
            self.pair.server.nft(&["list", "chain", "inet", "floodgate", "track"]),
            self.daemon_log()
        )
    }
}

/// Whether `ok` holds within `timeout`, polled every 200 ms (each poll runs the CLI).
fn within(timeout: Duration, ok: impl FnMut() -> bool) -> bool {
    within_every(timeout, Duration::from_millis(200), ok)
}

/// The flood's plan: (source, SYN number) in send order, rounds over the sources so that distinct sources
/// rise from the first packet on. Source i is 198.18.0.0 + 131 i + 7, spread over both /16s of the range.
fn flood_plan() -> Vec<Ipv4Addr> {
    let source = |i: u32| Ipv4Addr::from(syn::SPOOFED_BASE + i * 131 + 7);
    let mut plan = Vec::new();
    for round in 0..3 {
        plan.extend((0..FLOOD_SOURCES).filter(|i| i % 3 >= round).map(source));
    }
    assert!(plan.len() <= syn::MAX_PACKETS && plan.iter().all(|a| syn::spoofed(*a)));
    plan
}

#[test]
fn checksums_match_a_known_header() {
    // The IPv4 example of RFC 1071's folding, on a header whose checksum is known (Wikipedia's 0xb861).
    let h = [
        0x45u8, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
        0x00, 0xc7,
    ];
    assert_eq!(syn::checksum(&[&h]), 0xb861);
    // A packet with its checksums in place sums to zero.
    let p = syn::syn(Ipv4Addr::new(198, 18, 3, 4), 40000, SERVER, PORT, 7, 1);
    assert_eq!(syn::checksum(&[&p[..20]]), 0);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&p[12..16]);
    pseudo[4..8].copy_from_slice(&p[16..20]);
    pseudo[9] = 6;
    pseudo[11] = 20;
    assert_eq!(syn::checksum(&[&pseudo, &p[20..]]), 0);
}

#[test]
fn a_spoofed_syn_flood_turns_on_the_global_limit_and_bans_no_spoofed_source() {
    let test = "a_spoofed_syn_flood_turns_on_the_global_limit_and_bans_no_spoofed_source";
    if !netns::available(test) {
        return;
    }
    let started = Instant::now();
    let env = Env::new("syn");
    let _daemon = env.start();
    assert!(env.pair.connects(ALLOWED, PORT), "the listener answers before the flood");
    assert_eq!(env.port_mode(), "normal");

    let plan = flood_plan();
    let planned = plan.len();
    let flood_started = Instant::now();
    let flooding = env.pair.attacker.spawn(move || syn::flood(&plan, SERVER, PORT, FLOOD_FOR));

    let on = within(Duration::from_secs(10), || env.port_mode() == "global limit");
    assert!(on, "port {PORT} not under the global limit within 10 s of the flood's start\n{}", env.diagnosis());
    let switched_after = flood_started.elapsed();
    let set = env.global_ports();
    assert!(set.contains(&PORT.to_string()), "limit_global_ports: {set}");
    let listed = env.fg(&["list", "--json"]);
    let port = PORT.to_string();
    assert!(
        listed
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .any(|l| l["action"] == "limit_global" && l["target"] == port.as_str() && l["origin"] == "policy"),
        "the policy's own global limit on {PORT}: {listed}"
    );
    // Under the global limit (the flood possibly still going), the allowlisted client is served every time.
    for n in 0..5 {
        assert!(env.pair.connects(ALLOWED, PORT), "allowlisted connect {n} under the global limit failed");
    }
    assert_eq!(env.port_mode(), "global limit", "the limit held while the allowlisted client connected");

    let sent = flooding.join().unwrap().expect("the raw-socket flood");
    assert_eq!(sent, planned);
    let flood_took = flood_started.elapsed();
    assert!(flood_took < Duration::from_secs(6), "the flood is bounded in time: {flood_took:?}");
    // Let the pipeline drain what the flood left before looking for bans.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(env.spoofed_bans(), Vec::<String>::new(), "SYN-only sources are never banned\n{}", env.diagnosis());
    assert_eq!(env.spoofed_in_kernel(), Vec::<String>::new(), "no spoofed address in the kernel's ban sets");

    // Calm again: the window drains (10 s), converge_after passes (5 s), and the limit is lifted.
    let calm = within(Duration::from_secs(25), || env.port_mode() == "normal");
    assert!(calm, "port {PORT} did not return to normal within 25 s of the flood's end\n{}", env.diagnosis());
    let normal_after = flood_started.elapsed() - flood_took;
    assert!(!env.global_ports().contains(&PORT.to_string()), "lifted in the kernel too: {}", env.global_ports());
    assert_eq!(env.spoofed_bans(), Vec::<String>::new());
    // Not the allowlisted client (it gets through under the limit too): the attacker's own link address.
    assert!(env.pair.connects("198.51.100.2", PORT), "a source that is not allowlisted is served again");
    eprintln!(
        "{test}: {planned} SYNs from {FLOOD_SOURCES} sources in {flood_took:.1?}; global limit after \
         {switched_after:.1?}; normal {normal_after:.1?} after the flood; {:.1?} in all",
        started.elapsed()
    );
}
