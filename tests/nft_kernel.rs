//! The netlink layer against the real kernel, in namespaces of its own: the ruleset installs, element
//! batches are one transaction, timeouts and CIDR intervals read back as written.

mod netns;

use std::time::Duration;

use floodgate::addr::Cidr;
use floodgate::config::Config;
use floodgate::nft::ruleset::{BAN4, BAN6, GLOBAL_PORTS};
use floodgate::nft::{Key, Kernel, SetOp};
use netns::Netns;

fn net(s: &str) -> Key {
    Key::Net(s.parse::<Cidr>().unwrap())
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
                add(BAN4, "203.0.113.0/24", 60),
                add(BAN6, "2001:db8:1::/64", 600),
                SetOp::Add { set: GLOBAL_PORTS, key: Key::Port(25), timeout: Some(Duration::from_secs(30)) },
            ],
        )
        .unwrap();
        (k.elements("floodgate", BAN4).unwrap(), k.elements("floodgate", BAN6).unwrap(), k.elements("floodgate", GLOBAL_PORTS).unwrap())
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
