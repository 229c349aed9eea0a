//! `make bench`: the fleet's propagation, in private namespaces (the host's ruleset is never touched). Two
//! daemons (the release binary) share their bans through a real `nats-server -js` (Debian's 2.9) on a link of
//! their own. mx1's imap service bans on one failure (`maxretry = 1`); for BENCH_FLEET_PROBES (default 1,000)
//! attacker addresses from 198.18.0.0/15, one at a time, the bench appends one Dovecot failure line to mx1's log
//! and looks for the address in mx2's `fleet4` set (a dump of the set every ~200 µs, from inside mx2's
//! namespace) until it is there (timeout 5 s). Latency = from just before the write to the dump that finds it:
//! log line on mx1 -> parse -> ban in mx1's kernel and store -> bucket -> watch on mx2 -> mx2's gate -> mx2's
//! kernel. Prints p50, p90, p99 and max. Needs root and nats-server; without them, prints why and exits.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use floodgate::nft::Kernel;
use floodgate_lab::daemon::DaemonFiles;
use floodgate_lab::nats::{self, Nats};
use floodgate_lab::netns::{self, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_SLEEP: Duration = Duration::from_micros(200);

fn write_config(files: &DaemonFiles, host: &str, server: &str) {
    let (socket, log) = (files.path("fg.sock"), files.path("mail.log"));
    std::fs::write(&log, "").unwrap();
    let text = format!(
        "[sources]\nfiles = [\"{}\"]\nkmsg = false\nnetstat = false\n[services.imap]\nports = [143]\nmaxretry = 1\n\
         [daemon]\nsocket = \"{}\"\n[fleet]\nservers = [\"nats://{server}:4222\"]\nhost = \"{host}\"\n",
        log.display(),
        socket.display()
    );
    std::fs::write(files.path("floodgate.toml"), text).unwrap();
}

fn connected(files: &DaemonFiles, ns: &Netns) -> bool {
    let out = files.fg_with(ns, "floodgate.toml", &["status", "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|s| s["fleet"]["connected"] == true)
}

fn failure(addr: Ipv4Addr, n: usize) -> String {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
    format!(
        "{now} mx1 dovecot[812]: imap-login: Info: Disconnected: Aborted login (auth failed, 1 attempts in 2 secs): \
         user=<u{n}>, method=PLAIN, rip={addr}, lip=198.51.100.1, session=<s{n}>\n"
    )
}

fn main() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("fleet: skipped: needs root (network namespaces)");
        return;
    }
    if !nats::installed() {
        println!("fleet: skipped: needs nats-server (apt-get install nats-server)");
        return;
    }
    let probes: usize = std::env::var("BENCH_FLEET_PROBES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let (mx1, mx2) = (Netns::new("bfl1"), Netns::new("bfl2"));
    let server = nats::link(&mx1, &mx2, &format!("{}", std::process::id() % 10000));
    let (f1, f2) = (DaemonFiles::new(BIN), DaemonFiles::new(BIN));
    let _nats = Nats::start(&mx1, server, &f1.path("nats"));
    write_config(&f1, "mx1", server);
    write_config(&f2, "mx2", server);
    let _d1 = f1.start(&mx1);
    let _d2 = f2.start(&mx2);
    let ready = floodgate_lab::wait::within(Duration::from_secs(15), || connected(&f1, &mx1) && connected(&f2, &mx2));
    assert!(ready, "the fleet did not connect:\n{}\n{}", f1.daemon_log(), f2.daemon_log());

    let log_path = f1.path("mail.log");
    let latencies = mx2.enter(move || {
        let mut k = Kernel::open().expect("netlink socket in mx2");
        let mut log = std::fs::OpenOptions::new().append(true).open(&log_path).unwrap();
        let mut out = Vec::with_capacity(probes);
        for n in 0..probes {
            let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + n as u32);
            let line = failure(addr, n);
            let t = Instant::now();
            log.write_all(line.as_bytes()).unwrap();
            loop {
                let have = k.elements("floodgate", "fleet4").unwrap_or_default();
                if have.iter().any(|e| e.key.to_string() == addr.to_string()) {
                    out.push(t.elapsed());
                    break;
                }
                assert!(t.elapsed() < PROBE_TIMEOUT, "{addr} never reached mx2's fleet4 set");
                std::thread::sleep(POLL_SLEEP);
            }
        }
        out
    });
    let mut sorted = latencies.clone();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "fleet: propagation, failure line on mx1 -> element in mx2's kernel set, {} bans one at a time: \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (set dumps every 0.2 ms included; goal p99 < 50 ms)",
        sorted.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(*sorted.last().unwrap())
    );

    // A host joining a fleet that holds many live bans: BENCH_FLEET_JOIN (default 100,000) verdicts of another
    // host put into the bucket, then mx2 started afresh (a new store, its table removed): the time from its
    // start until its fleet4 set holds them all.
    let join: u32 = std::env::var("BENCH_FLEET_JOIN").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    drop(_d2);
    mx2.enter(|| Kernel::open().unwrap().delete_table("floodgate").unwrap());
    let published = Instant::now();
    let cfg = floodgate::fleet::FleetConfig {
        servers: vec![format!("nats://{server}:4222")],
        host: "mx9".into(),
        ..Default::default()
    };
    mx1.enter(move || publish(cfg, join));
    println!(
        "fleet: join: {join} verdicts of host mx9 put into the bucket in {:.2} s",
        published.elapsed().as_secs_f64()
    );
    let f3 = DaemonFiles::new(BIN);
    write_config(&f3, "mx2", server);
    let want = join as usize + probes;
    let t = Instant::now();
    let _d3 = f3.start(&mx2);
    let (took, held) = mx2.enter(move || {
        let mut k = Kernel::open().expect("netlink socket in mx2");
        loop {
            let held = k.elements("floodgate", "fleet4").map(|e| e.len()).unwrap_or(0);
            if held >= want || t.elapsed() > Duration::from_secs(120) {
                return (t.elapsed(), held);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    println!(
        "fleet: join: a fresh mx2 holds {held} of {want} fleet bans in its kernel {:.2} s after its start (goal < 2 s)",
        took.as_secs_f64()
    );
    let _ = netns::run(&["true"]);
}

/// `n` verdicts of one host put into the bucket, 256 at a time.
fn publish(cfg: floodgate::fleet::FleetConfig, n: u32) {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let kv = floodgate::fleet::link::open(&cfg).await.expect("the bucket");
        let now = chrono::Utc::now();
        futures_util::stream::iter(0..n)
            .map(|i| {
                let v = floodgate::fleet::link::from_ban(
                    "mx9",
                    floodgate::addr::Cidr::host(std::net::IpAddr::V4(Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(198, 18, 16, 0)) + i,
                    ))),
                    Some(now + chrono::Duration::hours(1)),
                    now,
                    "bench",
                    "jail",
                );
                let kv = kv.clone();
                async move { kv.put(v.key(), v.encode().into()).await.expect("put") }
            })
            .buffer_unordered(256)
            .collect::<Vec<_>>()
            .await;
    });
}
