//! `nats-server -js` in a namespace for the fleet's suites and benches, killed on drop; its JetStream store (a
//! directory of the test's) outlives a restart, as a real server's does.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::child::KillOnDrop;
use crate::netns::{run, Netns};

pub struct Nats {
    child: Option<KillOnDrop>,
    ns: String,
    addr: String,
    /// The server's arguments after `nats-server`.
    args: Vec<String>,
}

/// Whether `nats-server` is installed (Debian's package `nats-server`).
pub fn installed() -> bool {
    Command::new("nats-server").arg("--version").output().is_ok_and(|o| o.status.success())
}

impl Nats {
    /// Starts a server in `ns` listening on `addr`:4222, JetStream kept in `store`; returns once it listens.
    pub fn start(ns: &Netns, addr: &str, store: &Path) -> Nats {
        let store = store.display().to_string();
        let args = ["-js", "-a", addr, "-p", "4222", "-sd", &store].map(String::from).to_vec();
        Nats::with_args(ns, addr, args)
    }

    /// Starts a server in `ns` on the configuration file `conf`, which must listen on `addr`:4222.
    pub fn with_config(ns: &Netns, addr: &str, conf: &Path) -> Nats {
        Nats::with_args(ns, addr, vec!["-c".into(), conf.display().to_string()])
    }

    fn with_args(ns: &Netns, addr: &str, args: Vec<String>) -> Nats {
        let mut n = Nats { child: None, ns: ns.name.clone(), addr: addr.to_string(), args };
        n.restart();
        n
    }

    pub fn restart(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nats-server"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (apt-get install nats-server)");
        self.child = Some(KillOnDrop::new(child));
        let up = crate::wait::within(Duration::from_secs(10), || self.listening());
        assert!(up, "nats-server did not listen on {}:4222", self.addr);
    }

    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Whether the server accepts connections (its listener, as `ss` in its namespace lists it; one per namespace).
    fn listening(&self) -> bool {
        // By port: a server on 0.0.0.0 is listed as `*` or `0.0.0.0`, depending on ss.
        let out = run(&["ip", "netns", "exec", &self.ns, "ss", "-Htln", "sport = :4222"]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }
}

/// A veth link between two namespaces for the fleet's own traffic: `a` gets 203.0.113.253/30 (where the server
/// listens), `b` 203.0.113.254/30. Returns the server's address.
pub fn link(a: &Netns, b: &Netns, tag: &str) -> &'static str {
    let (va, vb) = (format!("fl{tag}a"), format!("fl{tag}b"));
    run(&["ip", "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns", &b.name]);
    a.ip(&["addr", "add", "203.0.113.253/30", "dev", &va]);
    b.ip(&["addr", "add", "203.0.113.254/30", "dev", &vb]);
    a.ip(&["link", "set", &va, "up"]);
    b.ip(&["link", "set", &vb, "up"]);
    "203.0.113.253"
}

/// A star of veth links from `engine` (where the server runs, listening on all its addresses) to each of `hosts`:
/// host i reaches the server at 203.0.113.(241 + 4i) over a /30 of its own (more specific than any route a
/// lab's Pair sets). Returns the address each host reaches the server at, in order. At most three hosts.
pub fn hub(engine: &Netns, hosts: &[&Netns], tag: &str) -> Vec<String> {
    assert!(hosts.len() <= 3, "the hub's /30s are 203.0.113.240-251");
    let mut out = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let (ve, vh) = (format!("fh{tag}{i}e"), format!("fh{tag}{i}h"));
        run(&[
            "ip",
            "link",
            "add",
            &ve,
            "netns",
            &engine.name,
            "type",
            "veth",
            "peer",
            "name",
            &vh,
            "netns",
            &host.name,
        ]);
        let base = 240 + 4 * i;
        engine.ip(&["addr", "add", &format!("203.0.113.{}/30", base + 1), "dev", &ve]);
        host.ip(&["addr", "add", &format!("203.0.113.{}/30", base + 2), "dev", &vh]);
        engine.ip(&["link", "set", &ve, "up"]);
        host.ip(&["link", "set", &vh, "up"]);
        out.push(format!("203.0.113.{}", base + 1));
    }
    out
}
