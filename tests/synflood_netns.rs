//! A spoofed SYN flood against the real kernel: `floodgate run` in a server namespace with conntrack on, an
//! attacker namespace sending hand-built SYNs from 198.18.0.0/15 through a raw socket, and the daemon's answer
//! checked from the outside: the global limit on the flooded port (in its status and in the kernel's set), the
//! allowlisted client still served under it, no spoofed source banned, and the port back to normal once the
//! flood has stopped. Everything stays inside the namespaces; the flood is bounded in packets and time.

mod netns;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use netns::{Daemon, Pair};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PORT: u16 = 587;
const ALLOWED: &str = "203.0.113.10";
/// The spoofed range: 198.18.0.0/15 (RFC 2544 benchmarking), 131,072 addresses.
const SPOOFED_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const SPOOFED_MASK: u32 = 0xfffe_0000;
/// Distinct spoofed sources; source i sends 1 + i % 3 SYNs, so about 2,000 packets in all.
const FLOOD_SOURCES: u32 = 1_000;
/// What the flood may never exceed, whatever the plan above says.
const MAX_PACKETS: usize = 5_000;
const FLOOD_FOR: Duration = Duration::from_millis(3_500);

struct Env {
    pair: Pair,
    dir: tempfile::TempDir,
    /// The server's end of the veth pair.
    server_veth: String,
}

impl Env {
    fn new(tag: &str) -> Env {
        let pair = Pair::new(tag, &[ALLOWED]);
        pair.listen(PORT);
        let dir = tempfile::tempdir().unwrap();
        let out = netns::run(&["ip", "-n", &pair.server.name, "-br", "link", "show", "type", "veth"]);
        let server_veth = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|n| n.split('@').next())
            .expect("the server's veth")
            .to_string();
        let env = Env { pair, dir, server_veth };
        env.prepare_server();
        env.write_config();
        std::fs::write(env.path("mail.log"), "").unwrap();
        env
    }

    /// Server-side kernel settings, all inside the server namespace.
    fn prepare_server(&self) {
        let s = &self.pair.server;
        let v = &self.server_veth;
        // The spoofed sources arrive on the veth and are routed back through it: no reverse-path drop.
        for key in ["all", "default", v.as_str()] {
            let out = s.exec(&["sysctl", "-q", "-w", &format!("net.ipv4.conf.{key}.rp_filter=0")]);
            assert!(out.status.success(), "sysctl rp_filter ({key}): {}", String::from_utf8_lossy(&out.stderr));
        }
        // The Pair routes 198.18.0.0/15 on-link: each spoofed source would cost an unanswered ARP entry (a
        // thousand of them, against neighbour-table limits the namespace may share with the host). Through the
        // attacker's address instead, the SYN-ACKs leave by one neighbour and the attacker drops them.
        s.ip(&["route", "replace", "198.18.0.0/15", "via", "198.51.100.2", "dev", v]);
        // Conntrack only tracks in a namespace once some rule uses `ct`; floodgate's own table has none.
        // Priority 0: after floodgate's raw-priority chain, so what floodgate drops is never tracked.
        s.nft(&["add", "table", "inet", "fgtest"]);
        s.nft(&["add", "chain", "inet", "fgtest", "c", "{ type filter hook prerouting priority 0; }"]);
        s.nft(&["add", "rule", "inet", "fgtest", "c", "ct", "state", "new", "counter"]);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
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

    fn start(&self) -> Daemon {
        let (cfg, db, sock, log) =
            (self.path("floodgate.toml"), self.path("f.db"), self.path("fg.sock"), self.path("daemon.log"));
        Daemon::start(&self.pair.server, BIN, &cfg, &db, &sock, &log)
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    /// The CLI in the server namespace with the daemon's config and a db the daemon does not use: what it
    /// shows came through the socket.
    fn fg(&self, args: &[&str]) -> String {
        let cfg = self.path("floodgate.toml");
        let db = self.path("not-the-daemons.db");
        let mut cmd = vec![BIN, "--config", cfg.to_str().unwrap(), "--db", db.to_str().unwrap()];
        cmd.extend_from_slice(args);
        let out: Output = self.pair.server.exec(&cmd);
        assert!(
            out.status.success(),
            "floodgate {args:?}: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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
            .filter(|t| t.split('/').next().and_then(|a| a.parse::<Ipv4Addr>().ok()).is_some_and(spoofed))
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
            "conn_new events in the store: {n}, first: {first:#?}\nfgtest counter: {}\ndaemon log:\n{}",
            self.pair.server.nft(&["list", "chain", "inet", "fgtest", "c"]),
            self.daemon_log()
        )
    }
}

fn within(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn spoofed(a: Ipv4Addr) -> bool {
    u32::from(a) & SPOOFED_MASK == SPOOFED_BASE
}

/// A thread that has entered `ns` and keeps running there (Netns::enter joins at once).
/// The Internet checksum: the ones' complement of the ones' complement sum of 16-bit words.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for w in &mut chunks {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A bare SYN (20-byte IPv4 header, 20-byte TCP header, no options) with both checksums.
fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32, id: u16) -> [u8; 40] {
    let mut p = [0u8; 40];
    let (ip, tcp) = p.split_at_mut(20);
    ip[0] = 0x45; // version 4, 5 words
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[8] = 64; // TTL
    ip[9] = libc::IPPROTO_TCP as u8;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&[ip]);
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = libc::IPPROTO_TCP as u8;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let tcp_sum = checksum(&[&pseudo, tcp]);
    tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// The flood's plan: (source, SYN number) in send order, rounds over the sources so that distinct sources
/// rise from the first packet on. Source i is 198.18.0.0 + 131 i + 7, spread over both /16s of the range.
fn flood_plan() -> Vec<Ipv4Addr> {
    let source = |i: u32| Ipv4Addr::from(SPOOFED_BASE + i * 131 + 7);
    let mut plan = Vec::new();
    for round in 0..3 {
        plan.extend((0..FLOOD_SOURCES).filter(|i| i % 3 >= round).map(source));
    }
    assert!(plan.len() <= MAX_PACKETS && plan.iter().all(|a| spoofed(*a)));
    plan
}

/// Sends the plan's SYNs to the server through a raw socket (IPPROTO_RAW: the header is ours), paced evenly
/// over `FLOOD_FOR`. Returns the packets sent.
fn flood(plan: Vec<Ipv4Addr>) -> std::io::Result<usize> {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(SERVER).to_be() },
        sin_zero: [0; 8],
    };
    let start = Instant::now();
    let step = FLOOD_FOR / plan.len() as u32;
    // A fixed LCG: distinct source ports and sequence numbers, the same on every run.
    let mut x: u32 = 0x2545_f491;
    for (k, src) in plan.iter().enumerate() {
        let due = start + step * k as u32;
        let now = Instant::now();
        if due > now + Duration::from_millis(2) {
            std::thread::sleep(due - now);
        }
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let sport = 1024 + (x >> 16) as u16 % 60_000;
        let pkt = syn(*src, sport, SERVER, PORT, x, k as u16);
        let r = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r != pkt.len() as isize {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(plan.len())
}

#[test]
fn checksums_match_a_known_header() {
    // The IPv4 example of RFC 1071's folding, on a header whose checksum is known (Wikipedia's 0xb861).
    let h = [
        0x45u8, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
        0x00, 0xc7,
    ];
    assert_eq!(checksum(&[&h]), 0xb861);
    // A packet with its checksums in place sums to zero.
    let p = syn(Ipv4Addr::new(198, 18, 3, 4), 40000, SERVER, PORT, 7, 1);
    assert_eq!(checksum(&[&p[..20]]), 0);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&p[12..16]);
    pseudo[4..8].copy_from_slice(&p[16..20]);
    pseudo[9] = 6;
    pseudo[11] = 20;
    assert_eq!(checksum(&[&pseudo, &p[20..]]), 0);
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
    let flooding = env.pair.attacker.spawn(move || flood(plan));

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
    assert!(env.pair.connects(ALLOWED, PORT));
    eprintln!(
        "{test}: {planned} SYNs from {FLOOD_SOURCES} sources in {flood_took:.1?}; global limit after \
         {switched_after:.1?}; normal {normal_after:.1?} after the flood; {:.1?} in all",
        started.elapsed()
    );
}
