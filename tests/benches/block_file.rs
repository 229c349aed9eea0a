//! `make bench`: `floodgate block --file` against `nft -f` doing the same kernel work, in private network
//! namespaces (the host's ruleset is never touched). BENCH_BLOCK_ADDRS (default 100,000, at most 131,072) distinct
//! addresses from 198.18.0.0/15, one per line in a blocklist file:
//!
//! - floodgate: the release binary's daemon (`floodgate run`, no sources, no fleet) in one namespace, and the CLI
//!   `floodgate block --file FILE --for 1h` through its control socket, timed until the CLI returns: reading and
//!   checking the file, the request, the daemon's screen, its store writes and its netlink batch into `ban4`;
//! - nft: in another namespace, `nft -f` of one file that makes `table inet floodgate` with a set `ban4` of type
//!   ipv4_addr, flags timeout, holding the same addresses each with `timeout 1h`.
//!
//! Both commands run through `ip netns exec`, so each side pays that once. BENCH_BLOCK_RUNS (default 3) runs from
//! fresh state (daemon stopped, table deleted, store removed); each run is checked against the kernel (element
//! count and timeouts) and the floodgate side against its store, so the figures are of work actually done. Prints
//! the medians and the ratio. Needs root and nft; without them, prints why and exits.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use floodgate::nft::ruleset::BAN4;
use floodgate::nft::{Kernel, Key};
use floodgate_lab::daemon::{Daemon, DaemonFiles};
use floodgate_lab::netns::Netns;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const TABLE: &str = "floodgate";
const BAN: Duration = Duration::from_secs(3600);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("block_file: skipped: needs root (network namespaces)");
        return;
    }
    if !std::process::Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success()) {
        println!("block_file: skipped: needs nft (apt-get install nftables)");
        return;
    }
    let started = Instant::now();
    let n = env("BENCH_BLOCK_ADDRS", 100_000);
    let runs = env("BENCH_BLOCK_RUNS", 3).max(1);
    assert!((1..=1 << 17).contains(&n), "BENCH_BLOCK_ADDRS must be 1..=131072 (198.18.0.0/15), not {n}");
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let addrs: Vec<Ipv4Addr> = (0..n as u32).map(|i| Ipv4Addr::from(base + i)).collect();

    let (fg_ns, nft_ns) = (Netns::new("bblk-fg"), Netns::new("bblk-nft"));
    let files = DaemonFiles::new(BIN);
    write_config(&files);
    let list = files.path("blocklist.txt");
    std::fs::write(&list, addrs.iter().map(|a| format!("{a}\n")).collect::<String>()).unwrap();
    let nft_file = files.path("ban4.nft");
    std::fs::write(&nft_file, nft_table(&addrs)).unwrap();

    let (mut fg, mut nft, mut fg_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        fresh(&files, &fg_ns);
        let d = files.start(&fg_ns);
        let cpu_before = cpu_time(d.pid());
        let t = Instant::now();
        let out =
            files.run(&fg_ns, "floodgate.toml", "f.db", &["block", "--file", list.to_str().unwrap(), "--for", "1h"]);
        fg.push(t.elapsed().as_secs_f64());
        fg_cpu.push((cpu_time(d.pid()) - cpu_before).as_secs_f64());
        let answer = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "floodgate block: {answer}\ndaemon log:\n{}", files.daemon_log());
        assert!(answer.contains(&format!("blocked {n} target(s)")), "floodgate block: {answer}");
        check(&fg_ns, &addrs);
        let stored = floodgate::store::Store::open_read_only(&files.path("f.db"))
            .and_then(|s| s.enforced(chrono::Utc::now()))
            .expect("the daemon's store")
            .bans
            .len();
        assert_eq!(stored, n, "the store holds {stored} bans, not {n}");
        stop(d, &files);

        nft_ns.enter(|| Kernel::open().unwrap().delete_table(TABLE).unwrap());
        let t = Instant::now();
        nft_ns.nft(&["-f", nft_file.to_str().unwrap()]);
        nft.push(t.elapsed().as_secs_f64());
        check(&nft_ns, &addrs);
    }
    fresh(&files, &fg_ns);

    let (fg_s, nft_s) = (median(fg.clone()), median(nft.clone()));
    let ms = |v: &[f64]| v.iter().map(|s| format!("{:.0}", s * 1e3)).collect::<Vec<_>>().join(", ");
    println!(
        "block_file: {n} addresses, 1h timeout, median of {runs} fresh runs: floodgate block --file {:.0} ms \
         (runs {} ms; daemon CPU {:.0} ms), nft -f {:.0} ms (runs {} ms)",
        fg_s * 1e3,
        ms(&fg),
        median(fg_cpu) * 1e3,
        nft_s * 1e3,
        ms(&nft)
    );
    println!(
        "block_file: ratio floodgate / nft = {:.2}x (goal <= 1.00x: no slower than nft -f, store writes included); \
         floodgate {:.0} addresses/s",
        fg_s / nft_s,
        n as f64 / fg_s
    );
    println!("block_file: whole run {:.1} s", started.elapsed().as_secs_f64());
}

/// No sources, no fleet: a daemon that only answers its socket.
fn write_config(files: &DaemonFiles) {
    let text = format!(
        "[sources]\nfiles = []\nkmsg = false\nnetstat = false\n[daemon]\nsocket = \"{}\"\n",
        files.path("fg.sock").display()
    );
    std::fs::write(files.path("floodgate.toml"), text).unwrap();
}

/// No table in `ns`, no store, no socket left behind.
fn fresh(files: &DaemonFiles, ns: &Netns) {
    ns.enter(|| Kernel::open().unwrap().delete_table(TABLE).unwrap());
    for name in ["f.db", "f.db-wal", "f.db-shm", "f.db.lock", "fg.sock"] {
        let _ = std::fs::remove_file(files.path(name));
    }
}

fn stop(d: Daemon, files: &DaemonFiles) {
    let code = d.stop();
    assert_eq!(code, Some(0), "the daemon exited with {code:?}:\n{}", files.daemon_log());
}

/// `ban4` in `ns` holds exactly `addrs`, each with a 1h timeout.
fn check(ns: &Netns, addrs: &[Ipv4Addr]) {
    let want: Vec<Key> = addrs.iter().map(|&a| Key::Addr(IpAddr::V4(a))).collect();
    ns.enter(move || {
        let got = Kernel::open().unwrap().elements(TABLE, BAN4).expect("list ban4");
        assert_eq!(got.len(), want.len(), "ban4 holds {} elements, not {}", got.len(), want.len());
        let mut keys: Vec<&Key> = got.iter().map(|e| &e.key).collect();
        keys.sort_by_key(|k| k.to_string().parse::<Ipv4Addr>().ok());
        for (k, w) in keys.iter().zip(&want) {
            assert_eq!(*k, w, "ban4 holds {k} where {w} was expected");
        }
        assert!(got.iter().all(|e| e.timeout == Some(BAN)), "an element of ban4 has no 1h timeout");
    });
}

/// The nft side's one file: the table, the set and its elements in one transaction.
fn nft_table(addrs: &[Ipv4Addr]) -> String {
    let mut s =
        format!("table inet {TABLE} {{\n  set {BAN4} {{\n    type ipv4_addr\n    flags timeout\n    elements = {{ ");
    for (i, a) in addrs.iter().enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        write!(s, "{sep}{a} timeout 1h").unwrap();
    }
    s.push_str(" }\n  }\n}\n");
    s
}

/// User plus system CPU time of process `pid` (0 when unreadable).
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis).
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
