//! `make bench`: the fleet's bucket at internet scale on one machine, in private namespaces (the host's ruleset
//! is never touched): one `nats-server -js` (Debian's 2.9) in one namespace, every client in another, across a
//! veth link. No daemon runs; the clients speak floodgate's own wire format (`fleet::link::from_ban`,
//! `Verdict::key`/`encode`, `verdict::decode`) to the bucket `fleet::link::open` makes.
//!
//! - fill: BENCH_SIM_HOSTS (default 100) host identities h000.. put their own bans, all at once from tokio tasks
//!   over BENCH_SIM_CONNECTIONS (default 4) client connections, BENCH_SIM_INFLIGHT (default 16) puts in flight
//!   per host, until the bucket holds BENCH_SIM_BANS (default 1,000,000) live bans. Every host bans the same
//!   targets (a botnet seen by the whole fleet): 3 in 4 an address from 198.18.0.0/15, 1 in 4 a /64 of
//!   2001:db8::/32. Prints the publish rate and the server's memory (VmRSS, VmHWM) and store on disk;
//! - bursts: a watcher on a connection of its own (`kv.watch(">")`: new messages only) while BENCH_SIM_BURSTS
//!   (default 10) bursts of BENCH_SIM_BURST (default 1,000) new bans, spread across the hosts, are put at once.
//!   Latency = from just before a put to the watcher receiving its key; p50, p99, max over all bursts;
//! - resync: a fresh client reads the whole bucket as a joining host does (an ordered push consumer on the
//!   bucket's stream from the oldest value held: every live key once) and decodes every value with
//!   `verdict::decode`; prints the time, the rate and the refusals (there should be none).
//!
//! Scales down for CI with the env vars (e.g. BENCH_SIM_BANS=20000). Needs root and nats-server; without them,
//! prints why and exits.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use floodgate::addr::Cidr;
use floodgate::fleet::verdict::{self, Entry};
use floodgate::fleet::FleetConfig;
use floodgate_lab::nats::{self, Nats};
use floodgate_lab::netns::Netns;
use futures_util::StreamExt;

/// A burst's keys must all reach the watcher within this.
const BURST_TIMEOUT: Duration = Duration::from_secs(30);
/// Between bursts: the watcher idle again, as between two waves of an attack.
const BURST_GAP: Duration = Duration::from_millis(100);
/// The resync must end within this.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(300);

/// The run's sizes, from the environment.
#[derive(Clone, Copy)]
struct Sizes {
    bans: usize,
    hosts: usize,
    connections: usize,
    inflight: usize,
    bursts: usize,
    burst: usize,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("fleet_sim: skipped: needs root (network namespaces)");
        return;
    }
    if !nats::installed() {
        println!("fleet_sim: skipped: needs nats-server (apt-get install nats-server)");
        return;
    }
    let started = Instant::now();
    let sizes = Sizes {
        bans: env("BENCH_SIM_BANS", 1_000_000),
        hosts: env("BENCH_SIM_HOSTS", 100).clamp(1, 1000),
        connections: env("BENCH_SIM_CONNECTIONS", 4).max(1),
        inflight: env("BENCH_SIM_INFLIGHT", 16).max(1),
        bursts: env("BENCH_SIM_BURSTS", 10),
        burst: env("BENCH_SIM_BURST", 1_000),
    };
    let per_host = sizes.bans.div_ceil(sizes.hosts) + (sizes.bursts * sizes.burst).div_ceil(sizes.hosts);
    assert!(per_host <= MAX_TARGETS, "{per_host} targets per host needed, at most {MAX_TARGETS}: more BENCH_SIM_HOSTS");

    let (server_ns, client_ns) = (Netns::new("bsim-s"), Netns::new("bsim-c"));
    let server = nats::link(&server_ns, &client_ns, &format!("{}", std::process::id() % 10000));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("nats");
    let _nats = Nats::start(&server_ns, server, &store);
    let pid = nats_pid(&store).expect("the nats-server process");
    let idle = floodgate_lab::proc_memory::memory_of(pid);
    let cfg =
        FleetConfig { servers: vec![format!("nats://{server}:4222")], host: "bench".into(), ..Default::default() };
    let store_dir = store.clone();
    client_ns.enter(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(simulate(cfg, sizes, pid, idle, store_dir))
    });
    println!("fleet_sim: whole run {:.1} s", started.elapsed().as_secs_f64());
}

async fn simulate(cfg: FleetConfig, sizes: Sizes, pid: i32, idle: (u64, u64), store: PathBuf) {
    let hosts: Vec<String> = (0..sizes.hosts).map(|i| format!("h{i:03}")).collect();
    let mut conns = Vec::new();
    for _ in 0..sizes.connections {
        conns.push(floodgate::fleet::link::open(&cfg).await.expect("the bucket"));
    }
    let made = Utc::now();
    let until = made + chrono::Duration::hours(1);

    // Fill: host i holds targets 0..share(i), all hosts at once.
    let share = |i: usize| sizes.bans / sizes.hosts + usize::from(i < sizes.bans % sizes.hosts);
    let cpu = Cpu::now(pid);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let (kv, host, n, inflight) = (conns[i % conns.len()].clone(), host.clone(), share(i), sizes.inflight);
        tasks.push(tokio::spawn(async move {
            futures_util::stream::iter(0..n)
                .map(|j| put(&kv, &host, j, until, made))
                .buffer_unordered(inflight)
                .collect::<Vec<_>>()
                .await;
        }));
    }
    for task in tasks {
        task.await.expect("a host's publisher");
    }
    let fill = t.elapsed();
    let fill_cpu = cpu.since(pid);
    let held = conns[0].stream.get_info().await.expect("the bucket's stream").state.messages;
    assert_eq!(held, sizes.bans as u64, "the bucket holds {held} values after the fill, not {}", sizes.bans);
    let (rss, hwm) = floodgate_lab::proc_memory::memory_of(pid);
    println!(
        "fleet_sim: fill: {} hosts put {} live bans over {} connections ({} in flight per host) in {:.1} s: {:.0} puts/s \
         (CPU: server {fill_cpu})",
        sizes.hosts,
        sizes.bans,
        sizes.connections,
        sizes.inflight,
        fill.as_secs_f64(),
        sizes.bans as f64 / fill.as_secs_f64()
    );
    println!(
        "fleet_sim: server memory: VmRSS {} MiB holding {} bans (idle {} MiB, peak VmHWM {} MiB), {:.0} bytes of RSS \
         per ban; store on disk {} MiB",
        rss / 1024,
        sizes.bans,
        idle.0 / 1024,
        hwm / 1024,
        (rss.saturating_sub(idle.0) * 1024) as f64 / sizes.bans.max(1) as f64,
        disk_bytes(&store) >> 20
    );

    // Bursts, seen by a watcher of new messages on its own connection.
    let watcher = floodgate::fleet::link::open(&FleetConfig { host: "watcher".into(), ..cfg.clone() })
        .await
        .expect("the watcher's bucket");
    let mut watch = watcher.watch(">").await.expect("kv.watch");
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watching = tokio::spawn(async move {
        while let Some(e) = watch.next().await {
            let e = e.expect("the watch");
            if seen_tx.send((e.key, Instant::now())).is_err() {
                return;
            }
        }
    });
    let (mut latencies, mut burst_acks) = (Vec::new(), Vec::new());
    for b in 0..sizes.bursts {
        let mut sent: HashMap<String, Instant> = HashMap::with_capacity(sizes.burst);
        let t = Instant::now();
        let puts = (0..sizes.burst).map(|k| {
            // Spread over the hosts; each new to its host (its targets after the fill's and earlier bursts').
            let (i, round) = (k % sizes.hosts, k / sizes.hosts);
            let j = share(i) + b * sizes.burst.div_ceil(sizes.hosts) + round;
            let v = floodgate::fleet::link::from_ban(&hosts[i], target(j), Some(until), made, "bench", "jail");
            let (key, value, kv) = (v.key(), v.encode(), conns[i % conns.len()].clone());
            sent.insert(key.clone(), Instant::now());
            async move { kv.put(key, value.into()).await.expect("put") }
        });
        futures_util::future::join_all(puts.collect::<Vec<_>>()).await;
        burst_acks.push(t.elapsed());
        while !sent.is_empty() {
            let (key, at) = tokio::time::timeout(BURST_TIMEOUT, seen.recv())
                .await
                .unwrap_or_else(|_| panic!("burst {b}: {} puts never reached the watcher", sent.len()))
                .expect("the watcher stopped");
            if let Some(put_at) = sent.remove(&key) {
                latencies.push(at.saturating_duration_since(put_at));
            }
        }
        tokio::time::sleep(BURST_GAP).await;
    }
    watching.abort();
    let total = sizes.bans + sizes.bursts * sizes.burst;
    if !latencies.is_empty() {
        latencies.sort();
        burst_acks.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "fleet_sim: propagation, put -> watcher ({} bursts of {} puts across {} hosts, bucket at {}..{} bans): \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; a whole burst acknowledged in {:.1} ms (median)",
            sizes.bursts,
            sizes.burst,
            sizes.hosts,
            sizes.bans,
            total,
            ms(at(0.5)),
            ms(at(0.99)),
            ms(*latencies.last().unwrap()),
            ms(burst_acks[burst_acks.len() / 2])
        );
    }

    // Resync: a fresh client reads every live key once and decodes it.
    let fresh = floodgate::fleet::link::open(&FleetConfig { host: "fresh".into(), ..cfg.clone() })
        .await
        .expect("the fresh client's bucket");
    let cpu = Cpu::now(pid);
    let t = Instant::now();
    let read = tokio::time::timeout(RESYNC_TIMEOUT, resync(&fresh, Utc::now())).await.expect("the resync ended");
    let took = t.elapsed();
    let resync_cpu = cpu.since(pid);
    let (rss, hwm) = floodgate_lab::proc_memory::memory_of(pid);
    println!(
        "fleet_sim: resync: a fresh client read and decoded {} keys (of {total}) in {:.2} s: {:.0} keys/s; {} bans, \
         {} refused, {} other (CPU: server {resync_cpu})",
        read.keys,
        took.as_secs_f64(),
        read.keys as f64 / took.as_secs_f64(),
        read.bans,
        read.refused.len(),
        read.keys - read.bans - read.refused.len()
    );
    if let Some((key, why)) = read.refused.first() {
        println!("fleet_sim: resync: first refusal: {key}: {why}");
    }
    println!("fleet_sim: server memory after the resync: VmRSS {} MiB, peak VmHWM {} MiB", rss / 1024, hwm / 1024);
    assert_eq!(read.keys, total, "the resync read {} keys, the bucket holds {total}", read.keys);
}

/// Targets per host: 3 in 4 are addresses of 198.18.0.0/15 (131,072 of them).
const MAX_TARGETS: usize = (1 << 17) / 3 * 4;

/// A host's `j`-th target: 3 in 4 an address of 198.18.0.0/15, 1 in 4 a /64 of 2001:db8::/32.
fn target(j: usize) -> Cidr {
    if j % 4 == 3 {
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, (j >> 16) as u16, j as u16, 0, 0, 0, 0);
        Cidr::new(IpAddr::V6(v6), 64).expect("a /64")
    } else {
        let v4 = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (j / 4 * 3 + j % 4) as u32;
        Cidr::host(IpAddr::V4(Ipv4Addr::from(v4)))
    }
}

async fn put(kv: &kv::Store, host: &str, j: usize, until: DateTime<Utc>, made: DateTime<Utc>) {
    let v = floodgate::fleet::link::from_ban(host, target(j), Some(until), made, "bench", "jail");
    kv.put(v.key(), v.encode().into()).await.expect("put");
}

/// What a fresh client read of the bucket.
struct Read {
    keys: usize,
    bans: usize,
    refused: Vec<(String, String)>,
}

/// Every live key once, as a joining host reads them (see `reader` in src/fleet/link.rs): an ordered push
/// consumer from the oldest value held, until none is pending.
async fn resync(kv: &kv::Store, now: DateTime<Utc>) -> Read {
    use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
    let consumer = kv
        .stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: kv_inbox(),
            description: Some("fleet_sim: resync".into()),
            filter_subject: format!("{}>", kv.prefix),
            replay_policy: ReplayPolicy::Instant,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("the resync's consumer");
    let mut read = Read { keys: 0, bans: 0, refused: Vec::new() };
    if consumer.cached_info().num_pending == 0 {
        return read;
    }
    let mut messages = consumer.messages().await.expect("the resync's messages");
    while let Some(m) = messages.next().await {
        let m = m.expect("a message of the resync");
        let pending = m.info().expect("a JetStream message").pending;
        let key = m.subject.strip_prefix(kv.prefix.as_str()).unwrap_or_default();
        read.keys += 1;
        match verdict::decode(key, Some(&m.payload), now) {
            Ok(Entry::Ban(_)) => read.bans += 1,
            Ok(_) => {}
            Err(e) => read.refused.push((key.to_string(), e.to_string())),
        }
        if pending == 0 {
            break;
        }
    }
    read
}

/// A private delivery subject for a push consumer (what `Client::new_inbox` makes).
fn kv_inbox() -> String {
    format!("_INBOX.fleet_sim.{}.{}", std::process::id(), Utc::now().timestamp_nanos_opt().unwrap_or_default())
}

/// The nats-server whose store is `store` (`ip netns exec` execs it in place, but the lab keeps the child).
fn nats_pid(store: &Path) -> Option<i32> {
    let store = store.to_str()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_nats = args.first().is_some_and(|a| a.ends_with(b"nats-server"));
        (is_nats && args.contains(&store.as_bytes())).then_some(pid)
    })
}

/// CPU time (user plus system) of the server and of this process (the clients), at one moment.
struct Cpu {
    server: Duration,
    clients: Duration,
}

impl Cpu {
    fn now(server: i32) -> Cpu {
        Cpu { server: cpu_time(&server.to_string()), clients: cpu_time("self") }
    }

    /// What each used since `self`, printed as `server 1.2 s, clients 3.4 s`.
    fn since(&self, server: i32) -> String {
        let now = Cpu::now(server);
        format!(
            "{:.1} s, clients {:.1} s",
            now.server.saturating_sub(self.server).as_secs_f64(),
            now.clients.saturating_sub(self.clients).as_secs_f64()
        )
    }
}

/// User plus system CPU time of `/proc/<pid>` (`self`: this process); zero when unreadable.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// The bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => disk_bytes(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}
