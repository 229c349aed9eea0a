//! Country-restricted ports against the real kernel: IMAPS (993) reachable only from "JP", SMTP (25) open to the
//! world, the allowlist always let in. The country data is a small RIR-format file written here and fetched
//! through a file:// source, as `floodgate geo update` fetches the registries' files.

use std::path::{Path, PathBuf};

use floodgate_lab::daemon::Lab;
use floodgate_lab::netns;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

/// "JP" in the fixture (203.0.113.0/24), "DE" (198.18.0.0/15), and the admin: DE but allowlisted.
const JP: &str = "203.0.113.5";
const DE: &str = "198.18.7.7";
const ADMIN: &str = "198.18.9.9";
const JP6: &str = "2001:db8:1::5";

/// A delegated-extended file: version line, summaries, then records (`records` counts them all).
fn rir_file(records: &[&str]) -> String {
    let mut s = format!("2.3|test|20261121|{}|19830101|20261120|+0000\n", records.len());
    s.push_str("test|*|ipv4|*|2|summary\ntest|*|ipv6|*|1|summary\n");
    for r in records {
        s.push_str(r);
        s.push('\n');
    }
    s
}

const GOOD: &[&str] = &[
    "apnic|JP|ipv4|203.0.113.0|256|20100101|allocated|A1",
    "ripencc|DE|ipv4|198.18.0.0|131072|20100101|allocated|B2",
    "apnic|JP|ipv6|2001:db8:1::|48|20100101|assigned|A1",
    "apnic||ipv4|198.51.100.0|256||available",
];

floodgate_lab::lab_env!(
    /// The lab with one country-restricted port and a fixture RIR file fetched through file://.
    Env
);

impl Env {
    fn new(tag: &str) -> Env {
        let env = Env(Lab::new(tag, &[JP, DE, ADMIN, JP6], BIN));
        env.pair.listen(25);
        env.pair.listen(993);
        let src = env.source();
        std::fs::write(&src, rir_file(GOOD)).unwrap();
        std::fs::write(
            env.path("floodgate.toml"),
            format!(
                "allowlist = [\"{ADMIN}\"]\n\
                 [services.smtp]\nports = [25]\n\
                 [services.imap]\nports = [993]\ncountries = [\"JP\"]\n\
                 [geo]\ndir = \"{}\"\ntimeout = \"5s\"\nsources = [{{ url = \"file://{}\" }}]\n",
                env.path("geo").display(),
                src.display()
            ),
        )
        .unwrap();
        env
    }

    fn source(&self) -> PathBuf {
        self.path("delegated-test-extended-latest")
    }

    /// Who gets through to 993 and to 25, as (JP on 993, DE on 993, DE on 25, admin on 993).
    fn reach(&self) -> (bool, bool, bool, bool) {
        let c = |from: &str, port: u16| self.pair.connects(from, port);
        (c(JP, 993), c(DE, 993), c(DE, 25), c(ADMIN, 993))
    }
}

fn cached(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("geo").join("delegated-test-extended-latest")).unwrap_or_default()
}

#[test]
fn a_port_restricted_to_one_country_drops_the_others_and_keeps_smtp_open() {
    if !netns::available("a_port_restricted_to_one_country_drops_the_others_and_keeps_smtp_open") {
        return;
    }
    let env = Env::new("geo");
    // Before any data the restricted port stays open: never an empty allow set.
    env.ok(&["reconcile"]);
    assert_eq!(env.reach(), (true, true, true, true), "no ranges loaded yet: nothing restricted");

    let out = env.ok(&["geo", "update"]);
    assert!(out.contains("updated") && out.contains("imap") && out.contains("enforced"), "{out}");
    assert_eq!(env.reach(), (true, false, true, true), "JP in, DE out on 993; 25 open to all; the admin in");
    assert!(env.pair.connects(JP6, 993), "IPv6 ranges load too");

    // The drop happens in the kernel, counted on floodgate's rule.
    let listing = env.pair.server.nft(&["list", "chain", "inet", "floodgate", "prerouting"]);
    assert!(listing.contains("@geo_imap_ports") && listing.contains("!= @geo4_imap"), "{listing}");

    let lookup = env.ok(&["geo", "lookup", DE, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&lookup).unwrap();
    assert_eq!(v["country"], "DE");
    let imap = v["services"].as_array().unwrap().iter().find(|s| s["service"] == "imap").unwrap();
    assert_eq!(imap["allowed"], false, "{lookup}");
    let smtp = v["services"].as_array().unwrap().iter().find(|s| s["service"] == "smtp").unwrap();
    assert_eq!(smtp["allowed"], true, "{lookup}");
}

#[test]
fn a_truncated_or_corrupt_download_keeps_the_old_sets_and_a_flush_is_repaired() {
    if !netns::available("a_truncated_or_corrupt_download_keeps_the_old_sets_and_a_flush_is_repaired") {
        return;
    }
    let env = Env::new("geobad");
    env.ok(&["geo", "update"]);
    let good = cached(env.files.dir.path());
    assert!(good.contains("203.0.113.0"));

    // Truncated: the last records missing (the version line's count says so), then a corrupt field.
    let full = rir_file(GOOD);
    let cut = &full[..full.rfind("apnic|JP|ipv6").unwrap()];
    for (what, text) in [
        ("truncated", cut.to_string()),
        ("corrupt", rir_file(GOOD).replace("203.0.113.0|256", "203.0.113.0|2x6")),
        ("empty", String::new()),
    ] {
        std::fs::write(env.source(), text).unwrap();
        let out = env.cli(&["geo", "update"]);
        assert!(!out.status.success(), "{what}: a failed source makes the command fail");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("FAILED") && stdout.contains("last good copy"), "{what}: {stdout}");
        assert_eq!(cached(env.files.dir.path()), good, "{what}: the last good copy is kept byte for byte");
        assert_eq!(env.reach(), (true, false, true, true), "{what}: the sets still hold the good data");
    }

    // Someone flushes the switch: reconcile loads the sets again from the last good copy.
    env.pair.server.nft(&["flush", "set", "inet", "floodgate", "geo_imap_ports"]);
    assert!(env.pair.connects(DE, 993), "with the switch off the port is open");
    env.ok(&["reconcile"]);
    assert_eq!(env.reach(), (true, false, true, true), "restored by reconcile");
}
