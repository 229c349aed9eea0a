//! `make bench`: floodgate's netlink path against the `nft` command doing the same work, in a private network
//! namespace (the host's ruleset is never touched). N IPv4 addresses from 198.18.0.0/15 (BENCH_BANS, default
//! 100,000, at most 131,072) with a 1h timeout into the ban4 set (addresses: hash, timeout) of floodgate's own table:
//!
//! - insert: all N into the empty set, one netlink batch against one `nft -f` statement;
//! - refresh: every timeout of the full set reset to 2h, each in one transaction. floodgate deletes and re-adds
//!   each element; nft flushes the set and re-adds it (its fastest way to the same end state: with 1.0.6, deleting
//!   from an interval set grew superlinearly in nft itself, ~110 s for 1,000 elements out of 100,000);
//! - refresh of 100 and of 1 element of the full set, delete and add in both, as the daemon does day to day;
//! - list: the full set read back, against `nft list set`.
//!
//! Median of 5 runs each; the table is deleted and reinstalled before every run that writes. Each run is
//! checked against the kernel (element count, timeouts) so the figures are of work actually done. Needs root;
//! without it, prints why and exits.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use floodgate::config::Config;
use floodgate::nft::ruleset::BAN4;
use floodgate::nft::{Kernel, Key, Ruleset, SetOp};
use floodgate_lab::netns;

const TABLE: &str = "floodgate";
const RUNS: usize = 5;
const BAN: Duration = Duration::from_secs(3600);
const REFRESHED: Duration = Duration::from_secs(7200);

struct Bench {
    k: Kernel,
    rs: Ruleset,
    addrs: Vec<Ipv4Addr>,
    dir: tempfile::TempDir,
}

/// One line of the table: what was done to how many elements, and the median seconds of each side.
struct Row {
    name: String,
    elements: usize,
    floodgate: f64,
    nft: f64,
}

fn main() {
    // Still one thread: the new namespace is the whole process's, and every `nft` child inherits it.
    if !netns::private_netns("nft") {
        return;
    }
    let n: usize = std::env::var("BENCH_BANS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    assert!((1..=1 << 17).contains(&n), "BENCH_BANS must be 1..=131072 (198.18.0.0/15), not {n}");
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let mut b = Bench {
        k: Kernel::open().expect("netlink socket"),
        rs: Config::default().ruleset(),
        addrs: (0..n as u32).map(|i| Ipv4Addr::from(base + i)).collect(),
        dir: tempfile::tempdir().unwrap(),
    };
    let mut rows = vec![b.insert(), b.refresh_all()];
    for m in [100, 1] {
        if m < n {
            rows.push(b.refresh_some(m));
        }
    }
    rows.push(b.list());
    b.k.delete_table(TABLE).expect("delete table");

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nft_version = Command::new("nft").arg("--version").output().map(|o| o.stdout).unwrap_or_default();
    println!("nft: N = {n} IPv4 bans, kernel {}, {}", kernel.trim(), String::from_utf8_lossy(&nft_version).trim());
    println!("nft: median of {RUNS} runs in milliseconds; ratio = nft / floodgate");
    println!("nft: {:<32} {:>10} {:>10} {:>8} {:>17}", "operation", "floodgate", "nft", "ratio", "floodgate elem/s");
    for r in rows {
        let ratio = r.nft / r.floodgate;
        let ratio = if ratio >= 100.0 { format!("{ratio:.0}x") } else { format!("{ratio:.1}x") };
        println!(
            "nft: {:<32} {:>10.3} {:>10.3} {ratio:>8} {:>17.0}",
            r.name,
            r.floodgate * 1e3,
            r.nft * 1e3,
            r.elements as f64 / r.floodgate
        );
    }
}

impl Bench {
    fn insert(&mut self) -> Row {
        let n = self.addrs.len();
        let file = self.file("insert.nft", &add_statement(&self.addrs, "1h"));
        let (mut fg, mut nft) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            self.reinstall();
            let start = Instant::now();
            let ops: Vec<SetOp> = self.addrs.iter().map(|&a| add(a, BAN)).collect();
            self.k.apply(TABLE, &ops).expect("floodgate insert");
            fg.push(start.elapsed().as_secs_f64());
            self.check(&[]);

            self.reinstall();
            nft.push(nft_file(&file));
            self.check(&[]);
        }
        Row { name: "insert N (empty set)".into(), elements: n, floodgate: median(fg), nft: median(nft) }
    }

    fn refresh_all(&mut self) -> Row {
        let n = self.addrs.len();
        let file = self
            .file("refresh-all.nft", &format!("flush set inet {TABLE} {BAN4}\n{}", add_statement(&self.addrs, "2h")));
        let all: Vec<Ipv4Addr> = self.addrs.clone();
        let (floodgate, nft) = self.time_refresh(&all, &file);
        Row { name: "refresh N (nft: flush+add)".into(), elements: n, floodgate, nft }
    }

    /// Refreshes `m` addresses spread over the full set, delete and add on both sides.
    fn refresh_some(&mut self, m: usize) -> Row {
        let step = self.addrs.len() / m;
        let some: Vec<Ipv4Addr> = self.addrs.iter().step_by(step).take(m).copied().collect();
        let mut text = format!("delete element inet {TABLE} {BAN4} {{ ");
        text.push_str(&some.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(", "));
        text.push_str(" }\n");
        text.push_str(&add_statement(&some, "2h"));
        let file = self.file(&format!("refresh-{m}.nft"), &text);
        let (floodgate, nft) = self.time_refresh(&some, &file);
        Row { name: format!("refresh {m} of N (delete+add)"), elements: m, floodgate, nft }
    }

    /// The median times of refreshing `addrs` in the full set, RUNS times each way: floodgate's batch, then
    /// `file` through nft; the set is refilled before each and checked after.
    fn time_refresh(&mut self, addrs: &[Ipv4Addr], file: &Path) -> (f64, f64) {
        let (mut fg, mut nft) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            self.fill();
            let start = Instant::now();
            let ops: Vec<SetOp> = addrs.iter().flat_map(|&a| SetOp::refresh(BAN4, key(a), Some(REFRESHED))).collect();
            self.k.apply(TABLE, &ops).expect("floodgate refresh");
            fg.push(start.elapsed().as_secs_f64());
            self.check(addrs);

            self.fill();
            nft.push(nft_file(file));
            self.check(addrs);
        }
        (median(fg), median(nft))
    }

    /// Reads back the full set (as the last refresh left it).
    fn list(&mut self) -> Row {
        let n = self.addrs.len();
        let (mut fg, mut nft) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let start = Instant::now();
            let got = self.k.elements(TABLE, BAN4).expect("floodgate list");
            fg.push(start.elapsed().as_secs_f64());
            assert_eq!(got.len(), n, "floodgate listed {} elements, not {n}", got.len());

            let start = Instant::now();
            let out = Command::new("nft").args(["list", "set", "inet", TABLE, BAN4]).output().expect("run nft");
            nft.push(start.elapsed().as_secs_f64());
            assert!(out.status.success(), "nft list set: {}", String::from_utf8_lossy(&out.stderr));
            let listed = String::from_utf8_lossy(&out.stdout).matches(" expires ").count();
            assert_eq!(listed, n, "nft listed {listed} elements, not {n}");
        }
        Row { name: "list N".into(), elements: n, floodgate: median(fg), nft: median(nft) }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A fresh, empty table: the one floodgate installs.
    fn reinstall(&mut self) {
        self.k.delete_table(TABLE).expect("delete table");
        self.k.install(&self.rs).expect("install");
        assert!(self.k.elements(TABLE, BAN4).expect("list").is_empty());
    }

    /// A fresh table with all N addresses banned for 1h.
    fn fill(&mut self) {
        self.reinstall();
        let ops: Vec<SetOp> = self.addrs.iter().map(|&a| add(a, BAN)).collect();
        self.k.apply(TABLE, &ops).expect("fill");
    }

    /// The set holds exactly the N addresses: the `refreshed` ones with a 2h timeout (and more than 1h left,
    /// so the expiry was reset too), the others with 1h.
    fn check(&mut self, refreshed: &[Ipv4Addr]) {
        let n = self.addrs.len();
        let got = self.k.elements(TABLE, BAN4).expect("list");
        assert_eq!(got.len(), n, "ban4 holds {} elements, not {n}", got.len());
        let mut fresh = 0;
        for (e, &a) in got.iter().zip(&self.addrs) {
            assert_eq!(e.key, key(a), "ban4 holds {} where {a} was expected", e.key);
            if refreshed.binary_search(&a).is_ok() {
                assert_eq!(e.timeout, Some(REFRESHED), "{a} was not refreshed");
                assert!(e.expires.is_some_and(|x| x > BAN), "{a}: expiry not reset: {:?}", e.expires);
                fresh += 1;
            } else {
                assert_eq!(e.timeout, Some(BAN), "{a}: {:?}", e.timeout);
            }
        }
        assert_eq!(fresh, refreshed.len());
    }
}

fn key(a: Ipv4Addr) -> Key {
    Key::Addr(IpAddr::V4(a))
}

fn add(a: Ipv4Addr, timeout: Duration) -> SetOp {
    SetOp::Add { set: BAN4, key: key(a), timeout: Some(timeout) }
}

/// `add element inet floodgate ban4 { 198.18.0.0 timeout 1h, ... }`: one statement.
fn add_statement(addrs: &[Ipv4Addr], timeout: &str) -> String {
    let mut s = format!("add element inet {TABLE} {BAN4} {{ ");
    for (i, a) in addrs.iter().enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        write!(s, "{sep}{a} timeout {timeout}").unwrap();
    }
    s.push_str(" }\n");
    s
}

/// Runs `nft -f FILE`; the process's wall time.
fn nft_file(file: &Path) -> f64 {
    let start = Instant::now();
    let out = Command::new("nft").arg("-f").arg(file).stdin(Stdio::null()).output().expect("run nft");
    let secs = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "nft -f {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
