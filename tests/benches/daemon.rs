//! `make bench`: the daemon end to end, in a private network namespace (the host's ruleset is never touched).
//! The release binary runs `floodgate run` on a config of its own: one log file, no kernel sources, the imap
//! service with `maxretry = 1` (one failure line is one ban). The bench writes to that file as a mail server
//! would and measures:
//!
//! - ban latency: BENCH_PROBES (default 1,000) attacker addresses from 198.18.0.0/15, one at a time: one Dovecot
//!   failure line appended, then the address looked up in the kernel's `ban4` set every ~100 µs until it is
//!   there (timeout 2 s; see `Lookup` for why not a dump of the set). Latency = from just before the write to
//!   the lookup that finds it; p50, p90, p99, max;
//! - sustained: BENCH_RATE lines/s (default 10,000) for BENCH_SECONDS (default 10), 100 lines every 10 ms,
//!   95% Postfix `connect from` lines (signals: stored, never counted against anyone) and 5% failure lines from
//!   new addresses (so the daemon keeps banning while it reads); then the achieved rate end to end (until
//!   `floodgate status` counts every line parsed), the daemon's CPU time over that span (share of one core) and
//!   its memory (VmRSS, VmHWM);
//! - scraped: the same sustained load once more while a scraper GETs `/metrics` (`[metrics] listen`) every
//!   100 ms, 150 times Prometheus' default pace: the achieved rate and CPU beside the unscraped run's, and each
//!   scrape's round trip (p50 / max) and size;
//! - peak: BENCH_LINES lines (default 1,000,000) of the same mix written as fast as possible, and the time
//!   until `floodgate status` counts them all parsed.
//!
//! "Parsed" is what `floodgate status --json` (the CLI, through the control socket) reports as `lines_parsed`.
//! A status call costs the pipeline a read of every ban in force, so it is asked only when the daemon's CPU time
//! stands still (see `Daemon::wait_parsed`), never in a tight loop. The daemon is stopped with SIGTERM at the end
//! and must exit 0. Needs root; without it, prints why and exits.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use floodgate::nft::{Kernel, Key};
use floodgate::os::netlink::{
    Blocking, NetlinkSocket, NLA_F_NESTED, NLA_HDRLEN, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_ACK, NLM_F_REQUEST,
};
use floodgate_lab::child::KillOnDrop;
use floodgate_lab::netns;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const TABLE: &str = "floodgate";
const SET: &str = "ban4";
/// 198.18.0.0/15: every attacker address of the run is a new one from here.
const ATTACKERS: u32 = 1 << 17;
/// One line in this many is a failure line (5%).
const FAILURE_EVERY: u64 = 20;
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const POLL_SLEEP: Duration = Duration::from_micros(100);
/// Sustained phase: one chunk of lines every this long.
const PACE: Duration = Duration::from_millis(10);
/// While waiting for the daemon to parse all lines: how often its CPU time is read, how long it must stand still
/// before the status is asked, and how often the status is asked anyway (see `Daemon::wait_parsed`).
const CPU_SAMPLE: Duration = Duration::from_millis(5);
const QUIET: Duration = Duration::from_millis(30);
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Peak phase: bytes per write(2).
const WRITE_CHUNK: usize = 4 << 20;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // Still one thread: the new namespace is the whole process's, and the daemon child inherits it.
    if !netns::private_netns("daemon") {
        return;
    }
    // The metrics listener is on loopback, which a new namespace has down.
    let lo = Command::new("ip").args(["link", "set", "lo", "up"]).status().expect("ip link set lo up");
    assert!(lo.success(), "ip link set lo up");
    let probes = env("BENCH_PROBES", 1_000) as usize;
    let seconds = env("BENCH_SECONDS", 10);
    let rate = env("BENCH_RATE", 10_000);
    let peak_lines = env("BENCH_LINES", 1_000_000);
    let distinct_lines = env("BENCH_DISTINCT", 1_000_000);
    let sustained_lines = rate * seconds;
    let attackers = probes as u64 + (2 * sustained_lines + peak_lines) / FAILURE_EVERY;
    assert!(
        attackers <= u64::from(ATTACKERS),
        "{attackers} attacker addresses needed, 198.18.0.0/15 holds {ATTACKERS}: lower BENCH_LINES or BENCH_SECONDS"
    );

    let mut d = Daemon::start("");
    let mut log = Log::open(&d.path("mail.log"));
    let mut k = Kernel::open().expect("netlink socket");

    let latency = ban_latency(&mut d, &mut log, &mut k, probes);
    let sustained = sustained(&mut d, &mut log, rate, seconds);
    let scraper = Scraper::start(SCRAPE_EVERY);
    let scraped = self::sustained(&mut d, &mut log, rate, seconds);
    let scrapes = scraper.stop();
    let peak = peak(&mut d, &mut log, peak_lines);
    // The status's own cost, the daemon idle with every ban of the run in force.
    d.status_calls.clear();
    let mut end = serde_json::Value::Null;
    for _ in 0..11 {
        end = d.status();
    }
    let status_idle = median(&d.status_calls);
    let exit = d.stop();
    // A fresh daemon, so that its peak memory (VmHWM) is this phase's alone: on a fresh store, so the table the
    // first one leaves (its bans stay in force, owned by its store) is removed first, or the new one would refuse
    // it as another floodgate's.
    k.delete_table(TABLE).expect("delete the first daemon's table");
    let distinct = (distinct_lines > 0).then(|| {
        let mut d = Daemon::start("[services.smtp]\nports = [25]\n");
        let mut log = Log::open(&d.path("mail.log"));
        let r = distinct_sources(&mut d, &mut log, distinct_lines);
        d.stop();
        r
    });

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "daemon: release binary, kernel {}, {} CPUs; one file source, imap maxretry = 1, bantime 1h",
        kernel.trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("daemon: {:<58} {:>30}", "figure", "value");
    let row = |name: &str, value: String| println!("daemon: {name:<58} {value:>30}");
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    let l = &latency;
    row(
        &format!("ban latency, {} addresses: p50 / p90 / p99 / max", l.samples.len() + l.timeouts),
        format!("{} / {} / {} / {} ms", ms(l.pct(50.0)), ms(l.pct(90.0)), ms(l.pct(99.0)), ms(l.pct(100.0))),
    );
    row(
        &format!("ban latency: p50 of the first / last {} probes", (l.samples.len() / 10).max(1)),
        format!("{} / {} ms", ms(l.first_last.0), ms(l.first_last.1)),
    );
    row("ban latency: timeouts (no ban within 2 s)", l.timeouts.to_string());
    row("ban latency: kernel polled by", format!("{} every ~100 µs", l.how));
    row(&format!("ban latency: one ban4 dump at {} elements", l.set_size), format!("{} ms", ms(l.dump)));
    let s = &sustained;
    row(
        &format!("sustained, {} lines over {seconds} s: offered / achieved", s.lines),
        format!("{:.0} / {:.0} lines/s", s.offered, s.achieved),
    );
    row("sustained: writer behind schedule at most", format!("{} ms", ms(s.behind)));
    row("sustained: last line written -> all parsed", format!("{} ms", ms(s.drain)));
    row("sustained: daemon CPU (utime+stime, % of one core)", format!("{:.1} %", s.cpu_pct));
    row("sustained: daemon VmRSS / VmHWM at the end", format!("{:.1} / {:.1} MiB", s.rss.0, s.rss.1));
    row(
        &format!("scraped every {} ms: achieved / CPU (unscraped)", SCRAPE_EVERY.as_millis()),
        format!("{:.0} lines/s, {:.1} % ({:.0}, {:.1} %)", scraped.achieved, scraped.cpu_pct, s.achieved, s.cpu_pct),
    );
    row(
        &format!("scraped: {} scrapes ({} failed), round trip p50 / max", scrapes.times.len(), scrapes.failed),
        format!("{} / {} ms", ms(median(&scrapes.times)), ms(scrapes.times.iter().max().copied().unwrap_or_default())),
    );
    row("scraped: exposition size", format!("{} bytes", scrapes.bytes));
    let p = &peak;
    row(
        &format!("peak, {} lines ({:.0} MiB) written in", p.lines, p.bytes as f64 / (1 << 20) as f64),
        format!("{:.3} s", p.write.as_secs_f64()),
    );
    row(
        "peak: first write -> all parsed",
        format!("{:.3} s = {:.0} lines/s", p.parsed.as_secs_f64(), p.lines as f64 / p.parsed.as_secs_f64()),
    );
    row(
        "peak: status calls while waiting: count, median round trip",
        format!("{} calls, {} ms", p.polls.0, ms(p.polls.1)),
    );
    row("peak: daemon CPU (% of one core)", format!("{:.1} %", p.cpu_pct));
    row("peak: daemon VmRSS / VmHWM at the end", format!("{:.1} / {:.1} MiB", p.rss.0, p.rss.1));
    let n = |k: &str| end[k].as_u64().unwrap_or(0);
    row(
        &format!("status round trip (CLI run) at {} bans, idle, median", n("bans_active")),
        format!("{} ms", ms(status_idle)),
    );
    row(
        "status: lines parsed / events stored / unmatched",
        format!("{} / {} / {}", n("lines_parsed"), n("events_stored"), n("unmatched")),
    );
    row(
        "status: bans made / active / apply errors",
        format!("{} / {} / {}", n("bans_made"), n("bans_active"), n("apply_errors")),
    );
    if let Some(p) = &distinct {
        row(
            &format!("distinct: {} sources, one connect each, all parsed in", p.lines),
            format!("{:.3} s = {:.0} lines/s", p.parsed.as_secs_f64(), p.lines as f64 / p.parsed.as_secs_f64()),
        );
        row("distinct: fresh daemon VmRSS / VmHWM (peak) at the end", format!("{:.1} / {:.1} MiB", p.rss.0, p.rss.1));
        row("distinct: policy's view of port 25", p.port25.clone());
    }
    match exit {
        Some(0) => row("SIGTERM -> exit", "0".into()),
        other => {
            row("SIGTERM -> exit", format!("{other:?}"));
            println!("daemon: warning: the daemon did not exit 0 on SIGTERM; its log:\n{}", tail(&d.log(), 40));
        }
    }
}

/// Where the daemon serves its metrics (inside the bench's private namespace).
const METRICS: &str = "127.0.0.1:9947";
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

/// A thread scraping `/metrics` at a fixed pace, as Prometheus would (only faster).
struct Scraper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Scrapes>,
}

#[derive(Default)]
struct Scrapes {
    times: Vec<Duration>,
    failed: usize,
    bytes: usize,
}

impl Scraper {
    fn start(every: Duration) -> Scraper {
        use std::io::Read as _;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Scrapes::default();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let got = std::net::TcpStream::connect(METRICS).and_then(|mut s| {
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
                    let mut text = String::new();
                    s.read_to_string(&mut text)?;
                    Ok(text)
                });
                match got {
                    Ok(text) if text.starts_with("HTTP/1.1 200") => {
                        out.times.push(t.elapsed());
                        out.bytes = text.len();
                    }
                    _ => out.failed += 1,
                }
                std::thread::sleep(every.saturating_sub(t.elapsed()));
            }
            out
        });
        Scraper { stop, thread }
    }

    fn stop(self) -> Scrapes {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("scraper thread")
    }
}

/// The daemon under test, killed if the bench ends early.
struct Daemon {
    child: KillOnDrop,
    pid: i32,
    dir: tempfile::TempDir,
    /// Round trips of the `floodgate status` calls made so far.
    status_calls: Vec<Duration>,
}

impl Daemon {
    /// `extra`: more config, appended.
    fn start(extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).display().to_string();
        let config = format!(
            "[sources]\nfiles = [\"{}\"]\nfrom_start = true\nkmsg = false\nnetstat = false\n\
             [daemon]\nsocket = \"{}\"\n[metrics]\nlisten = \"{METRICS}\"\n\
             [services.imap]\nports = [143]\nmaxretry = 1\nbantime = \"1h\"\n{extra}",
            p("mail.log"),
            p("fg.sock")
        );
        // from_start: the socket appears once the sources are spawned, not once the file source has opened the
        // file; started at the end, it could open the file after the first line was written and skip it. The file
        // is empty at start, so reading it from the beginning reads only what the bench writes.
        std::fs::write(dir.path().join("floodgate.toml"), config).expect("write config");
        std::fs::write(dir.path().join("mail.log"), "").expect("create mail.log");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("create daemon.log");
        let child = Command::new(BIN)
            .arg("-v")
            .arg("--config")
            .arg(dir.path().join("floodgate.toml"))
            .arg("--db")
            .arg(dir.path().join("f.db"))
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        let pid = child.id() as i32;
        let mut d = Daemon { child: KillOnDrop::new(child), pid, dir, status_calls: Vec::new() };
        // The socket is bound last: once it exists, the sources are started (not necessarily reading yet: see
        // from_start above).
        let sock = d.path("fg.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            d.check_alive();
            if Instant::now() > deadline {
                panic!("daemon: no control socket after 10 s; its log:\n{}", tail(&d.log(), 40));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    fn check_alive(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait().expect("wait") {
                *self.child = None;
                panic!("daemon: the daemon exited ({status}); its log:\n{}", tail(&self.log(), 40));
            }
        }
    }

    /// `floodgate status --json`, through the control socket.
    fn status(&mut self) -> serde_json::Value {
        self.check_alive();
        let start = Instant::now();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(self.path("floodgate.toml"))
            .arg("--db")
            .arg(self.path("f.db"))
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .output()
            .expect("run floodgate status");
        self.status_calls.push(start.elapsed());
        assert!(out.status.success(), "floodgate status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Waits until `lines_parsed` reaches `lines`; the moment a status call showed it, or None after `timeout`.
    ///
    /// A status call is not free for the daemon: the pipeline serves it between batches, and it reads every ban
    /// in force from the store (~50 ms at 50,000 bans). Polled every few milliseconds it would take a good part
    /// of the pipeline's time, so the status is asked only once the daemon's CPU time has stood still for
    /// `QUIET` (it has nothing left to do, or waits on the disk), or `STATUS_EVERY` after the last call. The
    /// moment found is late by at most about `QUIET` and one status round trip.
    fn wait_parsed(&mut self, lines: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut cpu = self.cpu();
        let mut changed = Instant::now();
        let mut asked = Instant::now();
        loop {
            std::thread::sleep(CPU_SAMPLE);
            let now = Instant::now();
            let c = self.cpu();
            if c != cpu {
                (cpu, changed) = (c, now);
            }
            if now - changed < QUIET && now - asked < STATUS_EVERY {
                continue;
            }
            let s = self.status();
            let done = Instant::now();
            if s["lines_parsed"].as_u64().unwrap_or(0) >= lines {
                return Some(done);
            }
            if done > deadline {
                println!(
                    "daemon: warning: {lines} lines not parsed after {timeout:?}; status: {s}\ndaemon: log:\n{}",
                    tail(&self.log(), 20)
                );
                return None;
            }
            // The status call moved the CPU time itself: quiet is measured again from here.
            (cpu, changed, asked) = (self.cpu(), done, done);
        }
    }

    /// CPU time (utime + stime) from /proc/PID/stat, in seconds.
    fn cpu(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).expect("read /proc/PID/stat");
        // Fields after the command name (which may hold spaces) start with the 3rd, the state.
        let after = &stat[stat.rfind(')').expect("stat format") + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
        ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    /// VmRSS and VmHWM in MiB.
    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("read /proc/PID/status");
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    /// SIGTERM; the exit code (None: killed by a signal or still running after 30 s, then killed).
    fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                println!("daemon: warning: still running 30 s after SIGTERM; killing it");
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The log file the daemon tails, as the bench writes it.
struct Log {
    file: std::fs::File,
    /// Lines written since the start.
    lines: u64,
    /// Lines of the mixed traffic so far, which picks every 20th as a failure.
    mixed: u64,
    /// Attacker addresses used so far.
    attackers: u32,
}

impl Log {
    fn open(path: &Path) -> Log {
        let file = std::fs::OpenOptions::new().append(true).open(path).expect("open mail.log");
        Log { file, lines: 0, mixed: 0, attackers: 0 }
    }

    fn attacker(&mut self) -> Ipv4Addr {
        let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + self.attackers);
        self.attackers += 1;
        a
    }

    fn write(&mut self, buf: &[u8], lines: u64) {
        self.file.write_all(buf).expect("append to mail.log");
        self.file.flush().expect("flush mail.log");
        self.lines += lines;
    }

    /// `n` lines of the mix into `buf`: Postfix connects from a /24 of regular clients, every 20th line a
    /// Dovecot failure from a new attacker.
    fn mix(&mut self, buf: &mut Vec<u8>, n: u64) {
        let ts = now();
        for _ in 0..n {
            self.mixed += 1;
            if self.mixed.is_multiple_of(FAILURE_EVERY) {
                let a = self.attacker();
                failure(buf, &ts, a, self.mixed);
            } else {
                let _ = writeln!(
                    buf,
                    "{ts} mx postfix/smtpd[{}]: connect from unknown[198.51.100.{}]",
                    20000 + self.mixed % 5000,
                    self.mixed % 254 + 1
                );
            }
        }
    }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// The line tests/daemon_netns.rs writes: one failed IMAP login.
fn failure(buf: &mut Vec<u8>, ts: &str, addr: Ipv4Addr, n: u64) {
    let _ = writeln!(
        buf,
        "{ts} mx dovecot[812]: imap-login: Info: Disconnected: Aborted login (auth failed, 1 attempts in 2 secs): \
         user=<u{n}>, method=PLAIN, rip={addr}, lip=198.51.100.1, session=<s{n}>"
    );
}

struct Latency {
    /// How the kernel was polled.
    how: &'static str,
    /// Sorted.
    samples: Vec<Duration>,
    /// Medians of the first and of the last tenth of the probes, in the order made: the growth with the set.
    first_last: (Duration, Duration),
    timeouts: usize,
    set_size: usize,
    /// Median time of one dump of the set as it is at the end.
    dump: Duration,
}

impl Latency {
    /// The `p`th percentile (nearest rank); zero without samples.
    fn pct(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil() as usize;
        self.samples[rank.clamp(1, self.samples.len()) - 1]
    }
}

/// One address looked up in `ban4` without a dump: NFT_MSG_GETSETELEM for its key (what `nft get element`
/// sends), answered from the hash in constant time whatever the set's size.
///
/// The poll does not use `Kernel::elements`: a dump comes in parts, and when the daemon adds an element between
/// two parts (it does, right when the address being waited for is banned) the dump comes out inconsistent and
/// `elements` reads it again after a 10 ms sleep. Polled that way, ~8% of the probes at 1,000 elements came out
/// 10 ms late, the bench's own sleep. BENCH_POLL=dump polls with `elements` all the same, for comparison.
struct Lookup {
    sock: NetlinkSocket,
    seq: u32,
    buf: Vec<u8>,
}

// linux/netfilter/nf_tables.h; not in the libc crate.
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;

impl Lookup {
    fn open() -> Lookup {
        let sock = NetlinkSocket::open(libc::NETLINK_NETFILTER, 0, Blocking::Yes).expect("netlink socket");
        Lookup { sock, seq: 0, buf: vec![0; 16 << 10] }
    }

    /// Whether `addr` is in set `ban4` of table `inet floodgate` now.
    fn contains(&mut self, addr: Ipv4Addr) -> bool {
        fn attr(m: &mut Vec<u8>, kind: u16, data: &[u8]) {
            m.extend_from_slice(&((NLA_HDRLEN + data.len()) as u16).to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(data);
            m.resize(m.len().next_multiple_of(4), 0);
        }
        fn nest(m: &mut Vec<u8>, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) {
            let at = m.len();
            attr(m, kind | NLA_F_NESTED, &[]);
            inner(m);
            let len = (m.len() - at) as u16;
            m[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self.seq = self.seq.wrapping_add(1);
        let mut m = vec![0u8; NLMSG_HDRLEN];
        // nfgenmsg: family, version, resource id.
        m.extend_from_slice(&[libc::NFPROTO_INET as u8, 0, 0, 0]);
        attr(&mut m, NFTA_SET_ELEM_LIST_TABLE, format!("{TABLE}\0").as_bytes());
        attr(&mut m, NFTA_SET_ELEM_LIST_SET, format!("{SET}\0").as_bytes());
        nest(&mut m, NFTA_SET_ELEM_LIST_ELEMENTS, |m| {
            nest(m, NFTA_LIST_ELEM, |m| nest(m, NFTA_SET_ELEM_KEY, |m| attr(m, NFTA_DATA_VALUE, &addr.octets())))
        });
        let kind = (libc::NFNL_SUBSYS_NFTABLES << 8 | libc::NFT_MSG_GETSETELEM) as u16;
        let flags = NLM_F_REQUEST | NLM_F_ACK;
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m[6..8].copy_from_slice(&flags.to_ne_bytes());
        m[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        self.sock.send_to_kernel(&m).expect("netlink send");
        let element = (libc::NFNL_SUBSYS_NFTABLES << 8 | libc::NFT_MSG_NEWSETELEM) as u16;
        let mut found = false;
        loop {
            let n = self.sock.recv(&mut self.buf).expect("netlink recv");
            assert!(n > 0, "netlink recv: end of file");
            let b = &self.buf[..n];
            let mut at = 0;
            while at + NLMSG_HDRLEN <= b.len() {
                let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
                let (len, kind) = (u32_at(at) as usize, u16::from_ne_bytes([b[at + 4], b[at + 5]]));
                if len < NLMSG_HDRLEN {
                    break;
                }
                if u32_at(at + 8) == self.seq {
                    if kind == NLMSG_ERROR {
                        // The ACK (0), or the error: ENOENT when the element (or the set) is not there.
                        match -(u32_at(at + NLMSG_HDRLEN) as i32) {
                            0 => return found,
                            libc::ENOENT => return false,
                            e => panic!("daemon: looking up {addr} in {SET}: {}", std::io::Error::from_raw_os_error(e)),
                        }
                    }
                    found |= kind == element;
                }
                at += len.next_multiple_of(4);
            }
        }
    }
}

/// How the ban latency phase looks at the kernel.
enum Poll {
    Lookup(Lookup),
    Dump,
}

impl Poll {
    fn banned(&mut self, k: &mut Kernel, addr: Ipv4Addr) -> bool {
        match self {
            Poll::Lookup(l) => l.contains(addr),
            Poll::Dump => match k.elements(TABLE, SET) {
                Ok(e) => e.binary_search_by(|x| x.key.cmp(&Key::Addr(IpAddr::V4(addr)))).is_ok(),
                Err(e) => panic!("daemon: dumping {SET}: {e}"),
            },
        }
    }
}

fn ban_latency(d: &mut Daemon, log: &mut Log, k: &mut Kernel, probes: usize) -> Latency {
    let mut poll = match std::env::var("BENCH_POLL").as_deref() {
        Ok("dump") => Poll::Dump,
        _ => Poll::Lookup(Lookup::open()),
    };
    assert!(!poll.banned(k, Ipv4Addr::new(192, 0, 2, 1)), "an address never banned was found in {SET}");
    let mut samples = Vec::with_capacity(probes);
    let mut timeouts = 0;
    let mut buf = Vec::new();
    let mut probed = Vec::with_capacity(probes);
    for i in 0..probes {
        let a = log.attacker();
        probed.push(a);
        buf.clear();
        failure(&mut buf, &now(), a, i as u64);
        let t0 = Instant::now();
        log.write(&buf, 1);
        loop {
            if poll.banned(k, a) {
                samples.push(t0.elapsed());
                break;
            }
            if t0.elapsed() > PROBE_TIMEOUT {
                timeouts += 1;
                if timeouts == 1 {
                    println!("daemon: warning: {a} not banned within {PROBE_TIMEOUT:?}; log:\n{}", tail(&d.log(), 20));
                }
                d.check_alive();
                break;
            }
            std::thread::sleep(POLL_SLEEP);
        }
    }
    let tenth = (samples.len() / 10).max(1).min(samples.len());
    let first_last = (median(&samples[..tenth]), median(&samples[samples.len() - tenth..]));
    samples.sort();
    // The lookups checked against a full dump: every address seen banned is in it.
    let set = k.elements(TABLE, SET).expect("dump");
    let listed = probed.iter().filter(|&&a| set.binary_search_by(|x| x.key.cmp(&Key::Addr(IpAddr::V4(a)))).is_ok());
    assert!(listed.count() >= samples.len(), "an address seen banned is missing from the dump of {SET}");
    let mut dumps: Vec<Duration> = (0..21)
        .map(|_| {
            let t = Instant::now();
            k.elements(TABLE, SET).expect("dump");
            t.elapsed()
        })
        .collect();
    dumps.sort();
    let how = if matches!(poll, Poll::Dump) { "set dump" } else { "element lookup" };
    Latency { how, samples, first_last, timeouts, set_size: set.len(), dump: dumps[dumps.len() / 2] }
}

struct Sustained {
    lines: u64,
    offered: f64,
    achieved: f64,
    /// The most the writer fell behind its schedule.
    behind: Duration,
    /// From the last write to the status counting it.
    drain: Duration,
    cpu_pct: f64,
    rss: (f64, f64),
}

fn sustained(d: &mut Daemon, log: &mut Log, rate: u64, seconds: u64) -> Sustained {
    let chunks = seconds * 1000 / PACE.as_millis() as u64;
    let per_chunk = rate * PACE.as_millis() as u64 / 1000;
    let mut buf = Vec::new();
    let mut behind = Duration::ZERO;
    let cpu0 = d.cpu();
    let start = Instant::now();
    for c in 0..chunks {
        let due = start + PACE * c as u32;
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        } else {
            behind = behind.max(now - due);
        }
        buf.clear();
        log.mix(&mut buf, per_chunk);
        log.write(&buf, per_chunk);
    }
    let written = Instant::now();
    let done = d.wait_parsed(log.lines, Duration::from_secs(60)).unwrap_or_else(Instant::now);
    let cpu = d.cpu() - cpu0;
    let wall = (done - start).as_secs_f64();
    let lines = chunks * per_chunk;
    Sustained {
        lines,
        offered: lines as f64 / (written - start).as_secs_f64(),
        achieved: lines as f64 / wall,
        behind,
        drain: done - written,
        cpu_pct: cpu / wall * 100.0,
        rss: d.memory(),
    }
}

struct Peak {
    /// Status calls made while waiting for the lines to be parsed: how many, median round trip.
    polls: (usize, Duration),
    lines: u64,
    bytes: usize,
    write: Duration,
    parsed: Duration,
    cpu_pct: f64,
    rss: (f64, f64),
    /// The distinct phase only: the status's figures for port 25.
    port25: String,
}

fn peak(d: &mut Daemon, log: &mut Log, lines: u64) -> Peak {
    // Made beforehand, so the writer is never what is measured.
    let mut buf = Vec::with_capacity(lines as usize * 150);
    log.mix(&mut buf, lines);
    burst(d, log, &buf, lines, Duration::from_secs(120))
}

/// Appends `buf` (`lines` lines) as fast as possible and waits until the daemon has parsed it all.
fn burst(d: &mut Daemon, log: &mut Log, buf: &[u8], lines: u64, timeout: Duration) -> Peak {
    let cpu0 = d.cpu();
    let start = Instant::now();
    for chunk in buf.chunks(WRITE_CHUNK) {
        // Chunks end mid-line: the daemon holds a partial line until its newline comes.
        log.file.write_all(chunk).expect("append to mail.log");
    }
    log.file.flush().expect("flush mail.log");
    log.lines += lines;
    let write = start.elapsed();
    d.status_calls.clear();
    let done = d.wait_parsed(log.lines, timeout).unwrap_or_else(Instant::now);
    let parsed = done - start;
    Peak {
        polls: (d.status_calls.len(), median(&d.status_calls)),
        lines,
        bytes: buf.len(),
        write,
        parsed,
        cpu_pct: (d.cpu() - cpu0) / parsed.as_secs_f64() * 100.0,
        rss: d.memory(),
        port25: String::new(),
    }
}

/// One million distinct sources in the policy's window: Postfix `connect from` lines (port 25), each from an
/// address of its own (one /64 each of 2001:db8::/32, so neither an address nor a /64 repeats), written as fast
/// as possible. What the daemon keeps per source is what this measures.
fn distinct_sources(d: &mut Daemon, log: &mut Log, lines: u64) -> Peak {
    let ts = now();
    let mut buf = Vec::with_capacity(lines as usize * 90);
    for i in 0..lines {
        let _ = writeln!(
            buf,
            "{ts} mx postfix/smtpd[{}]: connect from unknown[2001:db8:{:x}:{:x}::1]",
            20000 + i % 5000,
            (i >> 16) & 0xffff,
            i & 0xffff
        );
    }
    let mut p = burst(d, log, &buf, lines, Duration::from_secs(180));
    // Let a tick or two pass, so the figures include the policy's decision on the port.
    std::thread::sleep(Duration::from_secs(2));
    let status = d.status();
    let tracked = status["tracked_sources"].as_u64().unwrap_or(0);
    p.port25 = status["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["port"] == 25))
        .map_or_else(|| "not reported".into(), |p| format!("mode {}, {tracked} sources tracked", p["mode"]));
    p.rss = d.memory();
    p
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut s = String::new();
    for l in &lines[lines.len().saturating_sub(n)..] {
        let _ = writeln!(s, "  {l}");
    }
    s
}
