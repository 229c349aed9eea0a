//! `make bench`: floodgate's netlink path against the `nft` command on the same work, in a private network
//! namespace (the host's ruleset is never touched): banning N IPv4 addresses with a timeout into the empty ban4
//! set (one batch against one `nft -f` file), refreshing all N (delete and add in one transaction, which resets
//! the timeouts), and listing the full set. Median of 5 runs each; BENCH_BANS sets N (default 100,000, at most
//! 131,072: the addresses come from 198.18.0.0/15). Needs root; without it, prints why and skips.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use floodgate::addr::Cidr;
use floodgate::config::Config;
use floodgate::nft::ruleset::BAN4;
use floodgate::nft::{Kernel, Key, Ruleset, SetOp};

const TABLE: &str = "floodgate";
const RUNS: usize = 5;
const BAN: Duration = Duration::from_secs(3600);
const REFRESHED: Duration = Duration::from_secs(7200);

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        println!("nft: skipped: needs root (network namespace)");
        return;
    }
    // Still one thread: the new namespace is the whole process's, and every `nft` child inherits it.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        println!("nft: skipped: cannot enter a new network namespace: {}", std::io::Error::last_os_error());
        return;
    }
    let n: usize = std::env::var("BENCH_BANS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    assert!((1..=1 << 17).contains(&n), "BENCH_BANS must be 1..=131072 (198.18.0.0/15), not {n}");
    let addrs: Vec<Ipv4Addr> =
        (0..n as u32).map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i)).collect();
    let rs = Config::default().ruleset();
    let mut k = Kernel::open().expect("netlink socket");
    let dir = tempfile::tempdir().unwrap();

    // a. Insert into the empty set.
    let add_file = dir.path().join("add.nft");
    std::fs::write(&add_file, add_statement(&addrs, "1h")).unwrap();
    let (mut fg_add, mut nft_add) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        reinstall(&mut k, &rs);
        let start = Instant::now();
        let ops: Vec<SetOp> =
            addrs.iter().map(|&a| SetOp::Add { set: BAN4, key: key(a), timeout: Some(BAN) }).collect();
        k.apply(TABLE, &ops).expect("floodgate apply");
        fg_add.push(start.elapsed().as_secs_f64());
        check(&mut k, n, BAN);

        reinstall(&mut k, &rs);
        nft_add.push(nft_file(&add_file));
        check(&mut k, n, BAN);
    }

    // c. Refresh all N against the full set: banned for 1h, refreshed to 2h.
    let refresh_file = dir.path().join("refresh.nft");
    let mut text = format!("delete element inet {TABLE} {BAN4} {{ ");
    text.push_str(&addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "));
    text.push_str(" }\n");
    text.push_str(&add_statement(&addrs, "2h"));
    std::fs::write(&refresh_file, text).unwrap();
    let fill: Vec<SetOp> = addrs.iter().map(|&a| SetOp::Add { set: BAN4, key: key(a), timeout: Some(BAN) }).collect();
    let (mut fg_refresh, mut nft_refresh) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        reinstall(&mut k, &rs);
        k.apply(TABLE, &fill).expect("fill");
        let start = Instant::now();
        let ops: Vec<SetOp> = addrs.iter().flat_map(|&a| SetOp::refresh(BAN4, key(a), Some(REFRESHED))).collect();
        k.apply(TABLE, &ops).expect("floodgate refresh");
        fg_refresh.push(start.elapsed().as_secs_f64());
        check(&mut k, n, REFRESHED);

        reinstall(&mut k, &rs);
        k.apply(TABLE, &fill).expect("fill");
        nft_refresh.push(nft_file(&refresh_file));
        check(&mut k, n, REFRESHED);
    }

    // d. List the full set (as refreshed above).
    let (mut fg_list, mut nft_list) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let start = Instant::now();
        let got = k.elements(TABLE, BAN4).expect("floodgate list");
        fg_list.push(start.elapsed().as_secs_f64());
        assert_eq!(got.len(), n, "floodgate listed {} elements, not {n}", got.len());

        let start = Instant::now();
        let out = Command::new("nft").args(["list", "set", "inet", TABLE, BAN4]).output().expect("run nft");
        nft_list.push(start.elapsed().as_secs_f64());
        assert!(out.status.success(), "nft list set: {}", String::from_utf8_lossy(&out.stderr));
        let listed = String::from_utf8_lossy(&out.stdout).matches(" expires ").count();
        assert_eq!(listed, n, "nft listed {listed} elements, not {n}");
    }
    k.delete_table(TABLE).expect("delete table");

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nft_version = Command::new("nft").arg("--version").output().map(|o| o.stdout).unwrap_or_default();
    println!(
        "nft: N = {n} IPv4 bans (198.18.0.0/15, timeout 1h) into ban4 (interval, timeout); kernel {}; {}",
        kernel.trim(),
        String::from_utf8_lossy(&nft_version).trim()
    );
    println!("nft: median of {RUNS} runs, seconds; ratio = nft / floodgate");
    println!("nft: {:<22} {:>10} {:>10} {:>7} {:>18}", "operation", "floodgate", "nft", "ratio", "floodgate elem/s");
    let rows = [
        ("insert N (empty set)", &mut fg_add, &mut nft_add),
        ("refresh N (1h -> 2h)", &mut fg_refresh, &mut nft_refresh),
        ("list N", &mut fg_list, &mut nft_list),
    ];
    for (name, fg, nft) in rows {
        let (fg, nft) = (median(fg), median(nft));
        println!("nft: {name:<22} {fg:>10.3} {nft:>10.3} {:>6.1}x {:>18.0}", nft / fg, n as f64 / fg);
    }
}

fn key(a: Ipv4Addr) -> Key {
    Key::Net(Cidr::host(IpAddr::V4(a)))
}

/// `add element inet floodgate ban4 { 198.18.0.0 timeout 1h, ... }`: one statement.
fn add_statement(addrs: &[Ipv4Addr], timeout: &str) -> String {
    let mut s = format!("add element inet {TABLE} {BAN4} {{ ");
    for (i, a) in addrs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("{a} timeout {timeout}"));
    }
    s.push_str(" }\n");
    s
}

/// A fresh, empty table: the one floodgate installs.
fn reinstall(k: &mut Kernel, rs: &Ruleset) {
    k.delete_table(TABLE).expect("delete table");
    k.install(rs).expect("install");
    assert!(k.elements(TABLE, BAN4).expect("list").is_empty());
}

/// Runs `nft -f FILE`; the process's wall time.
fn nft_file(file: &Path) -> f64 {
    let start = Instant::now();
    let out = Command::new("nft").arg("-f").arg(file).stdin(Stdio::null()).output().expect("run nft");
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        std::io::stderr().write_all(&out.stderr).ok();
        panic!("nft -f {} failed", file.display());
    }
    secs
}

/// The set holds exactly N elements, each with the given timeout.
fn check(k: &mut Kernel, n: usize, timeout: Duration) {
    let got = k.elements(TABLE, BAN4).expect("list");
    assert_eq!(got.len(), n, "ban4 holds {} elements, not {n}", got.len());
    assert!(got.iter().all(|e| e.timeout == Some(timeout)), "not every timeout is {timeout:?}: {:?}", got.first());
    // A reset timeout: more than the old one left (1h), when it was refreshed to 2h.
    if timeout > BAN {
        assert!(got.iter().all(|e| e.expires.is_some_and(|x| x > BAN)), "expiry not reset: {:?}", got.first());
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
