//! The netlink layer against the real kernel, in namespaces of its own: the ruleset installs, element
//! batches are one transaction, timeouts and CIDR intervals read back as written.

use std::time::Duration;

use floodgate::addr::Cidr;
use floodgate::config::Config;
use floodgate::nft::ruleset::{BAN4, BAN4_NET, BAN6, BAN6_NET, GLOBAL_PORTS};
use floodgate::nft::{Kernel, Key, SetOp};
use floodgate_lab::netns::{self, Netns};

/// An address for the hash sets, a prefix for the interval sets.
fn net(s: &str) -> Key {
    if s.contains('/') {
        Key::Net(s.parse::<Cidr>().unwrap())
    } else {
        Key::Addr(s.parse().unwrap())
    }
}

fn add(set: &'static str, s: &str, secs: u64) -> SetOp {
    SetOp::Add { set, key: net(s), timeout: Some(Duration::from_secs(secs)) }
}

#[test]
fn installs_and_reads_back_elements() {
    if !netns::available("installs_and_reads_back_elements") {
        return;
    }
    let ns = Netns::new("nft");
    let rs = Config::default().ruleset();
    let got = ns.enter(move || {
        let mut k = Kernel::open().unwrap();
        k.install(&rs).unwrap();
        // Installing again is a repair, not an error.
        k.install(&rs).unwrap();
        k.apply(
            "floodgate",
            &[
                add(BAN4, "198.51.100.7", 600),
                add(BAN4_NET, "203.0.113.0/24", 60),
                add(BAN6_NET, "2001:db8:1::/64", 600),
                SetOp::Add { set: GLOBAL_PORTS, key: Key::Port(25), timeout: Some(Duration::from_secs(30)) },
            ],
        )
        .unwrap();
        let mut bans = k.elements("floodgate", BAN4).unwrap();
        bans.extend(k.elements("floodgate", BAN4_NET).unwrap());
        (bans, k.elements("floodgate", BAN6_NET).unwrap(), k.elements("floodgate", GLOBAL_PORTS).unwrap())
    });
    let keys: Vec<String> = got.0.iter().map(|e| e.key.to_string()).collect();
    assert_eq!(keys, ["198.51.100.7", "203.0.113.0/24"]);
    assert_eq!(got.0[1].timeout, Some(Duration::from_secs(60)));
    assert!(got.0[1].expires.unwrap() <= Duration::from_secs(60));
    assert_eq!(got.1[0].key.to_string(), "2001:db8:1::/64");
    assert_eq!(got.2[0].key, Key::Port(25));
    let text = ns.nft(&["list", "table", "inet", "floodgate"]);
    println!("{text}");
    assert!(text.contains("198.51.100.7 timeout 10m expires"), "{text}");
}

fn v4(i: u32) -> String {
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + i).to_string()
}

#[test]
fn one_bad_element_in_a_large_batch_applies_nothing_and_is_named() {
    if !netns::available("one_bad_element_in_a_large_batch_applies_nothing_and_is_named") {
        return;
    }
    let ns = Netns::new("bad");
    let rs = Config::default().ruleset();
    let (err, after) = ns.enter(move || {
        let mut k = Kernel::open().unwrap();
        k.install(&rs).unwrap();
        k.apply("floodgate", &[add(BAN4, &v4(12_345), 600)]).unwrap();
        // 20,000 elements (about 700 KiB: far past the 128 KiB where a split send would break the batch), one
        // of which is already present.
        let ops: Vec<SetOp> = (0..20_000).map(|i| add(BAN4, &v4(i), 600)).collect();
        let err = k.apply("floodgate", &ops).unwrap_err();
        (err, k.elements("floodgate", BAN4).unwrap())
    });
    assert_eq!(err.errno(), Some(libc::EEXIST));
    let text = err.to_string();
    assert!(text.contains("adding 198.18.48.57 to ban4"), "the error names the element: {text}");
    assert!(text.contains("nothing was applied"), "{text}");
    assert_eq!(after.len(), 1, "none of the 19,999 good elements went in");
}

#[test]
fn big_batches_apply_whole_and_refresh_resets_timeouts() {
    if !netns::available("big_batches_apply_whole_and_refresh_resets_timeouts") {
        return;
    }
    let ns = Netns::new("big");
    let rs = Config::default().ruleset();
    let (n, before, after, overlap) = ns.enter(move || {
        let mut k = Kernel::open().unwrap();
        k.install(&rs).unwrap();
        let mut ops: Vec<SetOp> = (0..20_000).map(|i| add(BAN4, &v4(i), 60)).collect();
        ops.extend((0..5_000).map(|i| add(BAN6, &format!("2001:db8:2::{i:x}"), 60)));
        k.apply("floodgate", &ops).unwrap();
        let n = (k.elements("floodgate", BAN4).unwrap().len(), k.elements("floodgate", BAN6).unwrap().len());
        let before = k.elements("floodgate", BAN4).unwrap()[0].timeout;
        let refresh: Vec<SetOp> =
            (0..20_000).flat_map(|i| SetOp::refresh(BAN4, net(&v4(i)), Some(Duration::from_secs(3600)))).collect();
        k.apply("floodgate", &refresh).unwrap();
        let after = k.elements("floodgate", BAN4).unwrap();
        // The kernel does not merge overlapping prefixes: it refuses them (the enforcer flattens first).
        k.apply("floodgate", &[add(BAN4_NET, "198.18.0.0/24", 60)]).unwrap();
        let overlap = k.apply("floodgate", &[add(BAN4_NET, "198.18.0.128/25", 60)]).unwrap_err();
        (n, before, after, overlap)
    });
    assert_eq!(n, (20_000, 5_000));
    assert_eq!(before, Some(Duration::from_secs(60)));
    assert_eq!(after.len(), 20_000);
    assert!(after.iter().all(|e| e.timeout == Some(Duration::from_secs(3600))), "every timeout was reset");
    assert_eq!(overlap.errno(), Some(libc::EEXIST));
}

#[test]
fn a_missing_table_is_reported_as_such() {
    if !netns::available("a_missing_table_is_reported_as_such") {
        return;
    }
    let ns = Netns::new("miss");
    let e = ns.enter(|| Kernel::open().unwrap().elements("floodgate", BAN4).unwrap_err());
    assert!(e.to_string().contains("does not exist"), "{e}");
}

/// The readable copy in rules/nftables/ is what the code builds.
#[test]
fn the_readable_copy_of_the_ruleset_matches_the_kernel() {
    if !netns::available("the_readable_copy_of_the_ruleset_matches_the_kernel") {
        return;
    }
    let ns = Netns::new("shape");
    let rs = Config::default().ruleset();
    ns.enter(move || Kernel::open().unwrap().install(&rs).unwrap());
    let counters = regex::Regex::new(r"counter packets \d+ bytes \d+").unwrap();
    let listed = counters.replace_all(&ns.nft(&["list", "table", "inet", "floodgate"]), "counter").into_owned();
    let copy = include_str!("../rules/nftables/floodgate.nft");
    let copy: String = copy.lines().filter(|l| !l.trim_start().starts_with('#')).map(|l| format!("{l}\n")).collect();
    assert_eq!(listed.trim(), copy.trim(), "rules/nftables/floodgate.nft is out of date");
}
