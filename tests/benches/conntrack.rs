//! `make bench`: the conntrack source (src/source/conntrack.rs) against the real kernel, to show it stays bounded
//! in CPU and memory under a SYN flood. It subscribes to conntrack's UPDATE group too, and under a spoofed flood
//! every SYN costs an update (its SYN_RECV) that the source must read and drop; only NEW, DESTROY and the first
//! ASSURED update per source within 10 s come out.
//!
//! Each scenario gets a server and an attacker namespace joined by a veth pair (tests/netns), a listener on port
//! 25 in the server's, floodgate's own table installed there with `[sources] conntrack = true` (its `track` chain
//! is what makes the kernel track; no `ct` rule of the bench's own), and three threads: the source in the server
//! namespace, its CPU time measured (getrusage(RUSAGE_THREAD) at its start and end, and its CPU clock read from
//! outside at phase boundaries); a consumer draining the source's channel (the daemon's `queue` capacity, drained
//! faster than the daemon's pipeline would) and counting events by kind and by source range; and a listener of
//! the bench's own on the same multicast groups, counting what the kernel sent, so that "read and dropped" has a
//! figure. Nothing touches the host's namespace, ruleset or conntrack table.
//!
//! - flood: spoofed SYNs from 198.18.0.0/15 through a raw socket (tests/lab/src/syn.rs, at most 5,000 per call):
//!   FLOODS back to back, each from spoofed sources of its own: 5,000 SYNs over 2 s, 5,000 over 1 s, then
//!   5,000 as a burst over 100 ms (what the sender achieves is printed). The server namespace's SYN timeouts are
//!   cut to 5 s (its own sysctls) so that the entries' DESTROY wave comes within the bench: 10-35 s after the
//!   flood rather than minutes (the server's SYN-ACK retransmits, up to 31 s, refresh the entries that got a
//!   request socket; those answered with a cookie die first);
//! - handshakes: HANDSHAKES full TCP connections to port 25, round robin over ADDRESSES real addresses of
//!   203.0.113.0/24: conn_assured should be about one per address (the dedup), not one per connection.
//!
//! Prints figures; asserts only sanity (no conn_assured for a spoofed source, at most two per real address, the
//! source delivering at all) and exits 1 when that fails. Needs root; without it, prints why and exits.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::thread::JoinHandleExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use floodgate::config::Config;
use floodgate::event::Kind;
use floodgate::nft::Kernel;
use floodgate::os::netlink::{Blocking, NetlinkSocket, NLMSG_HDRLEN, NLM_F_CREATE};
use floodgate::source::conntrack::ConntrackSource;
use floodgate::source::{Feed, Sink, SourceStats, Stop};
use floodgate_lab::netns::Pair;
use floodgate_lab::proc_memory::memory;
use floodgate_lab::syn;
use tokio::sync::mpsc;

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The attacker's own address: the warm-up connection that proves events flow before anything is measured.
const WARM_UP: &str = "198.51.100.2";
const PORT: u16 = 25;
/// (packets, distinct sources, spread over), sent one after the other: a flood, twice its rate, then a burst that
/// tests the receive buffer and the channel (loss and shedding show there).
const FLOODS: [(usize, u32, Duration); 3] = [
    (5_000, 2_500, Duration::from_secs(2)),
    (5_000, 2_500, Duration::from_secs(1)),
    (5_000, 2_500, Duration::from_millis(100)),
];
/// The server namespace's conntrack timeouts for half-open entries (defaults 120 s and 60 s): short, so the
/// flood's entries die, and their DESTROY events arrive, while the bench still runs.
const SYN_TIMEOUT_SECS: u32 = 5;
/// How long the flood's DESTROY wave is waited for at most: the last SYN-ACK retransmit (31 s), the timeout, and
/// conntrack's GC, which reaps expired entries in steps.
const DESTROY_WAIT: Duration = Duration::from_secs(75);
const ADDRESSES: u32 = 200;
const HANDSHAKES: usize = 2_000;
/// Events count as drained once none has arrived for this long.
const QUIET: Duration = Duration::from_millis(500);

fn main() {
    if let Err(why) = can_run() {
        println!("conntrack: skipped: {why}");
        return;
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "conntrack: kernel {}, {} CPUs; source channel {} feeds (the daemon's queue), batches of <= 512 events",
        kernel.trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        Config::default().daemon.queue
    );
    let (rss, hwm) = memory();
    println!("conntrack: {:<62} {:>40}", "figure", "value");
    row("process at start: VmRSS / VmHWM", format!("{} / {}", mib(rss), mib(hwm)));

    let mut failures = Vec::new();
    flood(&mut failures);
    handshakes(&mut failures);

    if !failures.is_empty() {
        for f in &failures {
            println!("conntrack: FAILED: {f}");
        }
        std::process::exit(1);
    }
}

fn can_run() -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces)".into());
    }
    if !Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success()) {
        return Err("no `ip` (iproute2) to make the namespaces".into());
    }
    Ok(())
}

fn row(name: &str, value: String) {
    println!("conntrack: {name:<62} {value:>40}");
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// CPU time in all, per 1,000 `what` (`n` of them) and per kernel message read (`messages`).
fn cpu_per(cpu: Duration, n: u64, what: &str, messages: u64) -> String {
    format!(
        "{} = {:.2} ms/1k {what}, {:.1} µs/msg",
        ms(cpu),
        cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
        cpu.as_secs_f64() * 1e6 / messages.max(1) as f64
    )
}

/// Where an event's source address lies.
#[derive(Clone, Copy)]
enum Range {
    /// 198.18.0.0/15, the flood's.
    Spoofed = 0,
    /// 203.0.113.0/24, the handshakes'.
    Real = 1,
    /// Anything else: the warm-up connection.
    Other = 2,
}

fn range_of(addr: Option<IpAddr>) -> Range {
    match addr {
        Some(IpAddr::V4(a)) if syn::spoofed(a) => Range::Spoofed,
        Some(IpAddr::V4(a)) if a.octets()[..3] == [203, 0, 113] => Range::Real,
        _ => Range::Other,
    }
}

/// Events that came out of the source, by kind (new, assured, destroy, anything else) and range.
#[derive(Default)]
struct Counts {
    by: [[AtomicU64; 3]; 4],
    /// When the last feed came (ns since `Run::since`), to tell when the flow has stopped.
    last_ns: AtomicU64,
}

impl Counts {
    fn get(&self, kind: Kind, range: Range) -> u64 {
        self.by[kind_index(kind)][range as usize].load(Relaxed)
    }
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::ConnNew => 0,
        Kind::ConnAssured => 1,
        Kind::ConnDestroy => 2,
        _ => 3,
    }
}

/// What the kernel multicast on the three groups, as the bench's own listener read it.
#[derive(Default)]
struct Multicast {
    new: AtomicU64,
    update: AtomicU64,
    destroy: AtomicU64,
    /// Reads that failed with ENOBUFS: this listener fell behind too, so its counts are a lower bound.
    overruns: AtomicU64,
}

impl Multicast {
    /// Conntrack messages read so far, of all three kinds.
    fn total(&self) -> u64 {
        self.new.load(Relaxed) + self.update.load(Relaxed) + self.destroy.load(Relaxed)
    }
}

/// One namespace pair with the source, its consumer and the bench's multicast listener running.
struct Run {
    pair: Pair,
    stop: Stop,
    stats: Arc<SourceStats>,
    counts: Arc<Counts>,
    multicast: Arc<Multicast>,
    since: Instant,
    /// The source thread's CPU-time clock, valid until `threads` is joined.
    source_clock: libc::clockid_t,
    /// Taken when joined.
    threads: Option<Threads>,
}

struct Threads {
    /// The source returns its own CPU time (getrusage at its start and end).
    source: JoinHandle<Duration>,
    /// The consumer returns the distinct sources it saw proven (conn_assured).
    consumer: JoinHandle<HashSet<IpAddr>>,
    listener: JoinHandle<()>,
}

impl Run {
    fn start(tag: &str, sources: &[&str], flood: bool) -> Run {
        let pair = Pair::new(tag, sources);
        pair.listen(PORT);
        if flood {
            pair.route_spoofed_back();
        }
        let mut cfg = Config::default();
        cfg.sources.conntrack = true;
        let ruleset = cfg.ruleset();
        pair.server.enter(move || {
            Kernel::open().expect("netlink socket").install(&ruleset).expect("install floodgate's table")
        });
        if flood {
            // The conntrack sysctls exist once the table's `ct` expression has loaded conntrack; they are the
            // server namespace's own.
            for state in ["syn_sent", "syn_recv"] {
                write_sysctl(&pair, &format!("net/netfilter/nf_conntrack_tcp_timeout_{state}"), SYN_TIMEOUT_SECS);
            }
        }

        let stop = Stop::new();
        let multicast = Arc::new(Multicast::default());
        let listener = {
            let (m, stop) = (multicast.clone(), stop.clone());
            pair.server.spawn(move || count_multicast(&m, &stop))
        };
        let (tx, rx) = mpsc::channel(Config::default().daemon.queue);
        let stats = Arc::new(SourceStats::default());
        let sink = Sink::new(tx, stats.clone());
        let since = Instant::now();
        let counts = Arc::new(Counts::default());
        let consumer = {
            let counts = counts.clone();
            std::thread::spawn(move || consume(rx, &counts, since))
        };
        let source = {
            let stop = stop.clone();
            pair.server.spawn(move || {
                let start = thread_cpu();
                ConntrackSource::new().run(sink, stop);
                thread_cpu().saturating_sub(start)
            })
        };
        let source_clock = cpu_clock(&source);
        let threads = Some(Threads { source, consumer, listener });
        let run = Run { pair, stop, stats, counts, multicast, since, source_clock, threads };
        run.warm_up();
        run
    }

    /// Connects from the attacker's own address until the source reports it: subscribed, and the kernel
    /// tracking, before anything is measured.
    fn warm_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            assert!(
                !self.stats.waiting.load(Relaxed),
                "conntrack: the source cannot subscribe (CAP_NET_ADMIN, nf_conntrack_netlink?)"
            );
            if self.stats.ready.load(Relaxed) {
                assert!(self.pair.connects(WARM_UP, PORT), "conntrack: the listener on {PORT} does not answer");
                let seen = Instant::now() + Duration::from_millis(300);
                while Instant::now() < seen {
                    if self.counts.get(Kind::ConnNew, Range::Other) > 0 {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!(
            "conntrack: no event for a warm-up connection within 5 s (is net.netfilter.nf_conntrack_events 0?); \
             source stats: {:?}",
            self.stats
        );
    }

    /// The source thread's CPU time so far.
    fn cpu(&self) -> Duration {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: the clock belongs to a thread not joined yet, and `t` is a valid out-pointer.
        let r = unsafe { libc::clock_gettime(self.source_clock, &mut t) };
        assert_eq!(r, 0, "clock_gettime (source thread): {}", std::io::Error::last_os_error());
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    /// Waits until `done` holds, or until no feed has come for `QUIET` (and `done` still fails), or `cap`.
    /// Returns when the last feed arrived (the flow's end) and whether `done` held.
    fn drain(&self, cap: Duration, done: impl Fn(&Counts) -> bool) -> (Duration, bool) {
        let start = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let last = Duration::from_nanos(self.counts.last_ns.load(Relaxed));
            if done(&self.counts) {
                // The batch that made it true is in; anything still on its way comes within the source's 50 ms.
                std::thread::sleep(Duration::from_millis(100));
                return (last, true);
            }
            let idle = self.since.elapsed().saturating_sub(last);
            if (idle >= QUIET && start.elapsed() >= QUIET) || start.elapsed() >= cap {
                return (last, false);
            }
        }
    }

    /// Stops everything; the source's CPU time (from getrusage) and the distinct sources proven.
    fn finish(mut self) -> (Duration, HashSet<IpAddr>) {
        self.stop.stop();
        let t = self.threads.take().expect("joined once");
        let cpu = t.source.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        // The sink went with the source: the consumer's channel is closed and it ends.
        let proven = t.consumer.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        t.listener.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (cpu, proven)
    }

    /// Entries in the server namespace's conntrack table now.
    fn table_entries(&self) -> u64 {
        self.pair.server.enter(|| {
            std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        })
    }

    fn source_rows(&self, what: &str) {
        let (lost, shed) = (self.stats.lost.load(Relaxed), self.stats.shed.load(Relaxed));
        row(&format!("{what}: source: events offered / lost (ENOBUFS) / shed"), {
            format!("{} / {lost} / {shed}", self.stats.events.load(Relaxed))
        });
        let m = &self.multicast;
        row(
            &format!("{what}: kernel sent: new / update / destroy (overruns)"),
            format!(
                "{} / {} / {} ({})",
                m.new.load(Relaxed),
                m.update.load(Relaxed),
                m.destroy.load(Relaxed),
                m.overruns.load(Relaxed)
            ),
        );
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // On a panic the threads must not outlive their namespaces.
        self.stop.stop();
    }
}

/// Writes a sysctl of the server namespace: /proc/sys/net is the namespace of the thread that opens it.
fn write_sysctl(pair: &Pair, key: &str, value: u32) {
    let path = format!("/proc/sys/{key}");
    pair.server.enter(move || std::fs::write(&path, value.to_string()).unwrap_or_else(|e| panic!("{path}: {e}")));
}

/// The calling thread's CPU time (user + system).
fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain data, and getrusage only writes it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    assert_eq!(r, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The CPU-time clock of a running thread, to read its CPU time from another.
fn cpu_clock<T>(h: &JoinHandle<T>) -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the pthread_t comes from a handle not joined yet, so it names a live or joinable thread.
    let r = unsafe { libc::pthread_getcpuclockid(h.as_pthread_t(), &mut clock) };
    assert_eq!(r, 0, "pthread_getcpuclockid: {}", std::io::Error::from_raw_os_error(r));
    clock
}

/// Drains the source's channel until it closes, counting; returns the distinct sources proven.
fn consume(mut rx: mpsc::Receiver<Feed>, counts: &Counts, since: Instant) -> HashSet<IpAddr> {
    let mut proven = HashSet::new();
    while let Some(feed) = rx.blocking_recv() {
        let Feed::Events { events, .. } = feed else { panic!("conntrack: the source sent lines") };
        for e in &events {
            counts.by[kind_index(e.kind)][range_of(e.addr) as usize].fetch_add(1, Relaxed);
            if e.kind == Kind::ConnAssured {
                proven.extend(e.addr);
            }
        }
        counts.last_ns.store(since.elapsed().as_nanos() as u64, Relaxed);
    }
    proven
}

/// Counts conntrack's multicast messages by type, on a socket of its own bound to the same groups as the
/// source, until `stop`. Run it on a thread in the server namespace.
fn count_multicast(m: &Multicast, stop: &Stop) {
    // NFNLGRP_CONNTRACK_NEW, _UPDATE, _DESTROY are groups 1, 2, 3: bits 0-2 of the legacy mask.
    let sock = NetlinkSocket::open(libc::NETLINK_NETFILTER, 0b111, Blocking::Yes).expect("conntrack groups");
    // As big as the source's, so that this listener is no likelier to fall behind; and a receive timeout, so
    // the stop flag is looked at.
    let _ = sock.set_recv_buffer(16 << 20, true);
    let _ = sock.set_recv_timeout(Duration::from_millis(200));
    const NEW: u16 = 1 << 8; // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
    const DELETE: u16 = 1 << 8 | 2;
    let mut buf = vec![0u8; 64 << 10];
    while !stop.is_stopped() {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    m.overruns.fetch_add(1, Relaxed);
                }
                continue;
            }
        };
        let mut rest = &buf[..n];
        while rest.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let flags = u16::from_ne_bytes([rest[6], rest[7]]);
            if len < NLMSG_HDRLEN || len > rest.len() {
                break;
            }
            match kind {
                NEW if flags & NLM_F_CREATE != 0 => m.new.fetch_add(1, Relaxed),
                NEW => m.update.fetch_add(1, Relaxed),
                DELETE => m.destroy.fetch_add(1, Relaxed),
                _ => 0,
            };
            rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        }
    }
}

/// Plans of `packets` SYNs rounding over `sources` spoofed addresses, the `skip` first of the range left out.
fn plan(packets: usize, sources: u32, skip: u32) -> Vec<Ipv4Addr> {
    let all = syn::sources(skip + sources);
    let mine = &all[skip as usize..];
    let plan: Vec<Ipv4Addr> = mine.iter().copied().cycle().take(packets).collect();
    assert!(plan.len() <= syn::MAX_PACKETS && plan.iter().all(|a| syn::spoofed(*a)));
    plan
}

fn flood(failures: &mut Vec<String>) {
    let run = Run::start("ctb-syn", &[], true);
    let (_, hwm_before) = memory();
    let table_before = run.table_entries();
    let cpu0 = run.cpu();
    // Each flood from sources of its own: the raw-socket sender's ports repeat from call to call, and the same
    // source and port again would be a retransmission of a tracked SYN, not a new entry.
    let mut sent = Vec::new();
    let mut skip = 0;
    for (packets, sources, over) in FLOODS {
        let p = plan(packets, sources, skip);
        skip += sources;
        let started = Instant::now();
        let n = run
            .pair
            .attacker
            .enter(move || syn::flood(&p, SERVER, PORT, over))
            .unwrap_or_else(|e| panic!("conntrack: the raw-socket flood failed: {e}"));
        sent.push((n, started.elapsed()));
    }
    let flood_end = run.since.elapsed();
    let syns: usize = sent.iter().map(|s| s.0).sum();
    let table_peak = run.table_entries();
    // The NEW events: all in once the flow stops (or all SYNs are accounted for).
    run.drain(Duration::from_secs(10), |c| c.get(Kind::ConnNew, Range::Spoofed) >= syns as u64);
    let cpu_flood = run.cpu() - cpu0;
    let msgs_flood = run.multicast.total();
    let (_, hwm_flood) = memory();
    let new = run.counts.get(Kind::ConnNew, Range::Spoofed);
    // The DESTROY wave: the entries time out (SYN_TIMEOUT_SECS after their last packet, the SYN-ACK's
    // retransmits among them) and conntrack's GC reaps them.
    let waited = Instant::now();
    let all_destroyed = |c: &Counts| c.get(Kind::ConnDestroy, Range::Spoofed) >= new;
    let (mut last, mut all_in) = (Duration::ZERO, false);
    while !all_in && waited.elapsed() < DESTROY_WAIT {
        (last, all_in) = run.drain(DESTROY_WAIT.saturating_sub(waited.elapsed()), all_destroyed);
        // A pause in the wave (the GC reaps in steps) is not its end while the flood's entries remain; once they
        // are gone, what has not come by now was lost.
        if !all_in && run.table_entries() <= table_before {
            (last, all_in) = run.drain(QUIET, all_destroyed);
            break;
        }
    }
    let destroy_after = last.saturating_sub(flood_end);
    let cpu_all = run.cpu() - cpu0;
    let table_after = run.table_entries();
    let c = &run.counts;
    let (assured, destroy) = (c.get(Kind::ConnAssured, Range::Spoofed), c.get(Kind::ConnDestroy, Range::Spoofed));
    let msgs_all = run.multicast.total();

    for (i, ((n, took), (_, sources, over))) in sent.iter().zip(FLOODS).enumerate() {
        row(
            &format!("flood {}: SYNs from {sources} spoofed sources, asked over {over:?}", i + 1),
            format!("{n} in {} = {:.0}/s", ms(*took), *n as f64 / took.as_secs_f64()),
        );
    }
    row(
        "flood: conntrack entries: before / after the floods / at end",
        format!("{table_before} / {table_peak} / {table_after}"),
    );
    row("flood: events out: conn_new / conn_assured / conn_destroy", format!("{new} / {assured} / {destroy}"));
    row(
        "flood: DESTROY wave: last event after the flood's end",
        format!("{:.1} s{}", destroy_after.as_secs_f64(), if all_in { "" } else { " (not all came)" }),
    );
    run.source_rows("flood");
    row(
        &format!("flood: source CPU, {syns} SYNs until their NEW are out"),
        cpu_per(cpu_flood, syns as u64, "SYNs", msgs_flood),
    );
    row("flood: source CPU, the same + the DESTROY wave", cpu_per(cpu_all, syns as u64, "SYNs", msgs_all));
    row(
        "flood: process VmHWM: before / after the floods / at end",
        format!("{} / {} / {}", mib(hwm_before), mib(hwm_flood), mib(memory().1)),
    );
    let stats = run.stats.clone();
    let (cpu_thread, _) = run.finish();
    row("flood: source thread's CPU, start to stop (getrusage)", ms(cpu_thread));

    if assured != 0 {
        failures.push(format!("{assured} conn_assured events for spoofed sources: a SYN_RECV update got through"));
    }
    if new == 0 {
        failures.push(format!("no conn_new for {syns} spoofed SYNs; source stats {stats:?}"));
    }
}

fn handshakes(failures: &mut Vec<String>) {
    let addrs: Vec<String> = (1..=ADDRESSES).map(|i| format!("203.0.113.{i}")).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let run = Run::start("ctb-hs", &refs, false);
    let (_, hwm_before) = memory();
    let cpu0 = run.cpu();
    let from: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let started = Instant::now();
    let (ok, failed) = run.pair.attacker.enter(move || {
        let to = SocketAddr::from((SERVER, PORT));
        let mut ok = 0u64;
        for i in 0..HANDSHAKES {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
            let a = from[i % from.len()];
            sock.bind(&SocketAddr::new(a, 0).into()).unwrap_or_else(|e| panic!("bind {a}: {e}"));
            ok += u64::from(sock.connect_timeout(&to.into(), Duration::from_secs(2)).is_ok());
        }
        (ok, HANDSHAKES as u64 - ok)
    });
    let took = started.elapsed();
    run.drain(Duration::from_secs(10), |c| c.get(Kind::ConnNew, Range::Real) >= ok);
    let cpu = run.cpu() - cpu0;
    let c = &run.counts;
    let (new, assured, destroy) = (
        c.get(Kind::ConnNew, Range::Real),
        c.get(Kind::ConnAssured, Range::Real),
        c.get(Kind::ConnDestroy, Range::Real),
    );
    let msgs = run.multicast.total();

    row(
        &format!("handshakes: connections to {PORT} from {ADDRESSES} addresses: ok / failed"),
        format!("{ok} / {failed} in {} = {:.0}/s", ms(took), ok as f64 / took.as_secs_f64()),
    );
    row("handshakes: events out: conn_new / conn_assured / conn_destroy", format!("{new} / {assured} / {destroy}"));
    run.source_rows("handshakes");
    row(&format!("handshakes: source CPU, {ok} connections"), cpu_per(cpu, ok, "conns", msgs));
    row("handshakes: process VmHWM: before / after", format!("{} / {}", mib(hwm_before), mib(memory().1)));
    let (cpu_thread, proven) = run.finish();
    row("handshakes: source thread's CPU, start to stop (getrusage)", ms(cpu_thread));
    let proven_real = proven.iter().filter(|a| matches!(range_of(Some(**a)), Range::Real)).count();
    row("handshakes: distinct addresses proven (conn_assured)", format!("{proven_real} of {ADDRESSES}"));

    if assured > u64::from(ADDRESSES) * 2 {
        failures.push(format!(
            "{assured} conn_assured for {ADDRESSES} addresses: the one-per-source-per-10-s dedup does not hold"
        ));
    }
    if ok > 0 && assured == 0 {
        failures.push(format!("{ok} completed handshakes and no conn_assured"));
    }
}
