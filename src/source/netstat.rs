//! The netstat source: the kernel's SYN-queue and listen-queue SNMP counters (/proc/net/netstat, `TcpExt:`),
//! polled at a fixed interval and turned into `kernel_counter` events carrying each counter's increase.
//!
//! The kernel prints "Possible SYN flooding" once per listener and rate-limits it; these counters keep counting
//! for as long as the flood lasts, so they are what measures it (see notes/kernel.md). They are per network
//! namespace: the file read is the one of the namespace floodgate runs in.
//!
//! Parsing and the delta step are pure functions; only `run` reads the file and the clock.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Sink, Stop};
use crate::event::{Event, Kind, SynAction};

const INPUT: &str = "netstat";

/// The `TcpExt` counters watched, and what the kernel did when each one rose.
pub const TRACKED: [(&str, SynAction); 7] = [
    // The SYN queue overflowed and a cookie was sent instead of queueing the request.
    ("TCPReqQFullDoCookies", SynAction::Cookies),
    // The SYN queue overflowed with cookies off: the request was dropped.
    ("TCPReqQFullDrop", SynAction::Dropping),
    ("SyncookiesSent", SynAction::Cookies),
    // ACKs carrying a valid cookie (real peers completing a handshake during a flood).
    ("SyncookiesRecv", SynAction::Cookies),
    // ACKs carrying an invalid cookie.
    ("SyncookiesFailed", SynAction::Cookies),
    // The accept queue was full: completed handshakes dropped.
    ("ListenOverflows", SynAction::Dropping),
    ("ListenDrops", SynAction::Dropping),
];

/// Polls the SNMP counters file and reports increases of the tracked counters.
#[derive(Debug)]
pub struct NetstatSource {
    path: PathBuf,
    interval: Duration,
}

impl NetstatSource {
    pub fn new(path: PathBuf, interval: Duration) -> Self {
        NetstatSource { path, interval }
    }

    /// Polls until `stop` is set or the pipeline goes away. Blocking: run it on a blocking thread. The first
    /// successful read is the baseline; an unreadable file marks the input as waiting and is read again at the
    /// next interval.
    pub fn run(self, sink: Sink, stop: Stop) {
        let input: Arc<str> = Arc::from(INPUT);
        let mut baseline: Option<HashMap<&'static str, u64>> = None;
        // Each distinct problem is logged once: the same malformed file is read every second.
        let mut warned: HashSet<String> = HashSet::new();
        let mut next = Instant::now();
        loop {
            if stop.is_stopped() || sink.is_closed() {
                return;
            }
            match std::fs::read_to_string(&self.path) {
                Ok(text) => {
                    if sink.stats.waiting.swap(false, Ordering::Relaxed) {
                        tracing::info!(file = %self.path.display(), "netstat: counters readable again");
                    }
                    let (current, problems) = parse_checked(&text);
                    for problem in problems {
                        if warned.insert(problem.clone()) {
                            tracing::warn!(file = %self.path.display(), %problem, "netstat: field skipped");
                        }
                    }
                    match baseline.as_mut() {
                        None => {
                            baseline = Some(tracked(&current));
                            sink.stats.ready.store(true, Ordering::Relaxed);
                        }
                        Some(base) => {
                            let events: Vec<Event> =
                                advance(base, &current).into_iter().map(|r| r.event(Utc::now())).collect();
                            if !events.is_empty() && !sink.send_events(&input, events) {
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    if !sink.stats.waiting.swap(true, Ordering::Relaxed) {
                        tracing::warn!(file = %self.path.display(), error = %e,
                            "netstat: cannot read the SNMP counters; SYN floods are measured only by kernel lines \
                             until it reads again");
                    }
                }
            }
            // A fixed cadence, so a slow read does not stretch the interval the counts stand for.
            next += self.interval;
            let now = Instant::now();
            if next < now {
                next = now;
            }
            if !stop.sleep_until(next) {
                return;
            }
        }
    }
}

/// `Prefix.Name` -> value for every counter in the file. Problems are skipped; see [`parse_checked`].
pub fn parse(text: &str) -> HashMap<String, u64> {
    parse_checked(text).0
}

/// Like [`parse`], also describing each skipped problem (a header line without its values line, a pair of lines
/// of different lengths, a value that is not a number) for the caller to log with the file's name.
pub fn parse_checked(text: &str) -> (HashMap<String, u64>, Vec<String>) {
    let mut counters = HashMap::new();
    let mut problems = Vec::new();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty()).peekable();
    while let Some(header) = lines.next() {
        let Some((prefix, names)) = header.split_once(':') else {
            problems.push(format!("line without a `Prefix:`: {}", clip(header)));
            continue;
        };
        // The values line repeats the header's prefix; anything else means the pair is broken.
        let values = match lines.peek().and_then(|l| l.split_once(':')) {
            Some((p, values)) if p == prefix => {
                lines.next();
                values
            }
            _ => {
                problems.push(format!("{prefix}: header without a values line"));
                continue;
            }
        };
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            problems.push(format!(
                "{prefix}: {} names but {} values; the whole group skipped",
                names.len(),
                values.len()
            ));
            continue;
        }
        for (name, value) in names.iter().zip(values) {
            match value.parse::<u64>() {
                Ok(v) => {
                    counters.insert(format!("{prefix}.{name}"), v);
                }
                Err(_) => problems.push(format!("{prefix}.{name}: `{}` is not a counter", clip(value))),
            }
        }
    }
    (counters, problems)
}

/// An increase of one tracked counter since the previous poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rise {
    /// The counter's name without its `TcpExt.` prefix.
    pub counter: &'static str,
    pub delta: u64,
    pub action: SynAction,
}

impl Rise {
    /// The `kernel_counter` event for it; `rule` is `netstat.<counter>`.
    pub fn event(&self, time: DateTime<Utc>) -> Event {
        Event {
            time,
            kind: Kind::KernelCounter,
            failure: false,
            rule: Arc::from(format!("netstat.{}", self.counter)),
            addr: None,
            local_addr: None,
            port: None,
            service: None,
            user: None,
            count: u32::try_from(self.delta).unwrap_or(u32::MAX),
            syn_action: Some(self.action),
            assured: None,
        }
    }
}

/// The tracked counters present in a parsed file.
pub(crate) fn tracked(current: &HashMap<String, u64>) -> HashMap<&'static str, u64> {
    TRACKED.iter().filter_map(|(name, _)| current.get(&format!("TcpExt.{name}")).map(|v| (*name, *v))).collect()
}

/// The delta step: the tracked counters that rose since `baseline`, which becomes `current`. A counter that
/// went down (its namespace recreated, counters reset) or appeared only now is a new baseline, not a rise; one
/// missing from `current` (skipped as malformed) keeps its old value, so its next rise spans both intervals.
pub fn advance(baseline: &mut HashMap<&'static str, u64>, current: &HashMap<String, u64>) -> Vec<Rise> {
    let mut rises = Vec::new();
    for (name, action) in TRACKED {
        let Some(&now) = current.get(&format!("TcpExt.{name}")) else { continue };
        if let Some(before) = baseline.insert(name, now) {
            if now > before {
                rises.push(Rise { counter: name, delta: now - before, action });
            }
        }
    }
    rises
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Feed, SourceStats};
    use std::path::Path;
    use tokio::sync::mpsc;

    /// A trimmed /proc/net/netstat with the tracked counters at the given values.
    fn netstat(overflows: u64, cookies: u64) -> String {
        format!(
            "TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts ListenOverflows ListenDrops \
             TCPReqQFullDoCookies TCPReqQFullDrop\n\
             TcpExt: {cookies} 3 0 12 {overflows} {overflows} {cookies} 0\n\
             IpExt: InNoRoutes InTruncatedPkts\n\
             IpExt: 0 0\n\
             MPTcpExt: MPCapableSYNRX\n\
             MPTcpExt: 0\n"
        )
    }

    #[test]
    fn parse_reads_every_group_with_its_prefix() {
        let c = parse(&netstat(7, 100));
        assert_eq!(c["TcpExt.ListenOverflows"], 7);
        assert_eq!(c["TcpExt.SyncookiesSent"], 100);
        assert_eq!(c["TcpExt.SyncookiesRecv"], 3);
        assert_eq!(c["IpExt.InNoRoutes"], 0);
        assert_eq!(c["MPTcpExt.MPCapableSYNRX"], 0);
        assert_eq!(c.len(), 11);
    }

    #[test]
    fn parse_skips_broken_pairs_and_non_numbers() {
        let text = "TcpExt: A B C\nTcpExt: 1 2\nIpExt: X Y\nIpExt: 5 nope\nLonely: Z\nMPTcpExt: M\nMPTcpExt: 9\n";
        let (c, problems) = parse_checked(text);
        assert_eq!(c, HashMap::from([("IpExt.X".into(), 5), ("MPTcpExt.M".into(), 9)]));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("TcpExt") && problems[0].contains("3 names but 2 values"));
        assert!(problems[1].contains("IpExt.Y") && problems[1].contains("nope"));
        assert!(problems[2].contains("Lonely"));
        assert!(parse("").is_empty());
        assert!(parse("garbage without colon\n").is_empty());
    }

    #[test]
    fn advance_reports_rises_and_rebaselines_on_resets() {
        let mut base = tracked(&parse(&netstat(10, 100)));
        assert!(advance(&mut base, &parse(&netstat(10, 100))).is_empty());

        let rises = advance(&mut base, &parse(&netstat(15, 160)));
        let by_name: HashMap<_, _> = rises.iter().map(|r| (r.counter, (r.delta, r.action))).collect();
        assert_eq!(by_name.len(), 4, "{rises:?}");
        assert_eq!(by_name["ListenOverflows"], (5, SynAction::Dropping));
        assert_eq!(by_name["ListenDrops"], (5, SynAction::Dropping));
        assert_eq!(by_name["SyncookiesSent"], (60, SynAction::Cookies));
        assert_eq!(by_name["TCPReqQFullDoCookies"], (60, SynAction::Cookies));

        // Counters reset (namespace recreated): a new baseline, no event; the next rise counts from it.
        assert!(advance(&mut base, &parse(&netstat(2, 1))).is_empty());
        let rises = advance(&mut base, &parse(&netstat(3, 1)));
        assert_eq!(
            rises.iter().map(|r| (r.counter, r.delta)).collect::<Vec<_>>(),
            [("ListenOverflows", 1), ("ListenDrops", 1)]
        );

        // A counter missing from one read keeps its value; its rise shows up when it is back.
        let mut partial = parse(&netstat(9, 1));
        partial.remove("TcpExt.ListenDrops");
        advance(&mut base, &partial);
        let rises = advance(&mut base, &parse(&netstat(9, 1)));
        assert_eq!(rises.iter().map(|r| (r.counter, r.delta)).collect::<Vec<_>>(), [("ListenDrops", 6)]);
    }

    #[test]
    fn a_rise_becomes_a_kernel_counter_event() {
        let t = Utc::now();
        let e = Rise { counter: "TCPReqQFullDrop", delta: 1 << 40, action: SynAction::Dropping }.event(t);
        assert_eq!(e.kind, Kind::KernelCounter);
        assert_eq!(&*e.rule, "netstat.TCPReqQFullDrop");
        assert_eq!(e.count, u32::MAX);
        assert_eq!(e.syn_action, Some(SynAction::Dropping));
        assert!(!e.failure && e.addr.is_none() && e.port.is_none());
        assert_eq!(e.time, t);
    }

    fn write_atomically(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_counter_jump_in_the_file_becomes_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netstat");
        write_atomically(&path, &netstat(0, 0));
        let (tx, mut rx) = mpsc::channel(16);
        let stats = Arc::new(SourceStats::default());
        let sink = Sink::new(tx, stats.clone());
        let stop = Stop::new();
        let source = NetstatSource::new(path.clone(), Duration::from_millis(50));
        let s = stop.clone();
        let thread = std::thread::spawn(move || source.run(sink, s));

        // Several polls of the baseline: nothing to report.
        std::thread::sleep(Duration::from_millis(250));
        assert!(rx.try_recv().is_err());
        let text = netstat(0, 0).replace("TcpExt: 0 3 0 12 0 0 0 0", "TcpExt: 0 3 0 12 7 0 0 0");
        assert_eq!(parse(&text)["TcpExt.ListenOverflows"], 7);
        write_atomically(&path, &text);
        // Several more polls, so a second (wrong) event would have time to show up.
        std::thread::sleep(Duration::from_millis(400));
        stop.stop();
        thread.join().unwrap();

        let mut events = Vec::new();
        while let Ok(feed) = rx.try_recv() {
            match feed {
                Feed::Events { input, events: e, .. } => {
                    assert_eq!(&*input, "netstat");
                    events.extend(e);
                }
                Feed::Lines { .. } => panic!("netstat sends events only"),
            }
        }
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(&*events[0].rule, "netstat.ListenOverflows");
        assert_eq!(events[0].count, 7);
        assert_eq!(events[0].syn_action, Some(SynAction::Dropping));
        assert_eq!(stats.events.load(Ordering::Relaxed), 1);
        assert!(!stats.waiting.load(Ordering::Relaxed));
    }

    #[test]
    fn a_missing_file_waits_without_events() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let stats = Arc::new(SourceStats::default());
        let stop = Stop::new();
        let source = NetstatSource::new(dir.path().join("absent"), Duration::from_millis(20));
        let (sink, s) = (Sink::new(tx, stats.clone()), stop.clone());
        let thread = std::thread::spawn(move || source.run(sink, s));
        std::thread::sleep(Duration::from_millis(100));
        assert!(stats.waiting.load(Ordering::Relaxed));
        stop.stop();
        thread.join().unwrap();
        assert!(rx.try_recv().is_err());
    }
}
