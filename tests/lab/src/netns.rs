//! Network namespaces for kernel tests: created by the test, deleted when it ends (even on panic). Nothing here
//! touches the host's own namespace or ruleset. A [`Pair`] is the usual lab: a server and an attacker joined by a
//! veth pair.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::skip;

/// True when the test can use namespaces: root, iproute2 and nftables. Otherwise a loud skip, or under `CI=true`
/// a failure (see [`crate::skip`]).
pub fn available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let have_ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    let have_nft = Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success());
    if root && have_ip && have_nft {
        return true;
    }
    let why = if !root {
        "not root"
    } else if !have_ip {
        "no `ip` (iproute2)"
    } else {
        "no `nft` (nftables)"
    };
    skip::skip(test, &format!("root, iproute2 and nftables for network namespaces ({why})"))
}

/// For a bench: moves this whole process into a new network namespace of its own, so that what it does to the
/// kernel stays there; call it while the process is still one thread (a namespace entered later is that thread's
/// alone), and every thread and child started after it inherits the namespace. Where it cannot (not root, or the
/// kernel refuses) it prints why `bench` is skipped and returns false, for `if !private_netns("x") { return; }`.
pub fn private_netns(bench: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("{bench}: skipped: needs root (network namespace)");
        return false;
    }
    // SAFETY: unshare(2) takes a flag set and touches no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        println!("{bench}: skipped: cannot enter a new network namespace: {}", std::io::Error::last_os_error());
        return false;
    }
    true
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub name: String,
}

pub fn run(cmd: &[&str]) -> Output {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("fgt-{tag}-{}-{n}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) {
        let mut cmd = vec!["ip", "-n", &self.name];
        cmd.extend_from_slice(args);
        run(&cmd);
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        Command::new(full[0]).args(&full[1..]).output().unwrap_or_else(|e| panic!("{full:?}: {e}"))
    }

    pub fn nft(&self, args: &[&str]) -> String {
        let mut cmd = vec!["nft"];
        cmd.extend_from_slice(args);
        let out = self.exec(&cmd);
        assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a new thread that stays in this namespace for its whole life (namespaces are per thread).
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: a valid namespace descriptor, owned by `file` for the call; setns only changes this thread.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Runs `f` inside this namespace and waits for its result.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A server and an attacker namespace joined by a veth pair. The server is 198.51.100.1 and 2001:db8::1; the
/// attacker owns 198.51.100.2 and 2001:db8::2 plus whatever `sources` it is given (on its side of the link,
/// routed on-link by the server).
pub struct Pair {
    pub server: Netns,
    pub attacker: Netns,
}

impl Pair {
    pub fn new(tag: &str, sources: &[&str]) -> Pair {
        let server = Netns::new(&format!("{tag}-s"));
        let attacker = Netns::new(&format!("{tag}-a"));
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let (vs, va) =
            (format!("fgs{}{n}", std::process::id() % 100000), format!("fga{}{n}", std::process::id() % 100000));
        run(&[
            "ip",
            "link",
            "add",
            &vs,
            "netns",
            &server.name,
            "type",
            "veth",
            "peer",
            "name",
            &va,
            "netns",
            &attacker.name,
        ]);
        server.ip(&["addr", "add", "198.51.100.1/24", "dev", &vs]);
        server.ip(&["addr", "add", "2001:db8::1/64", "dev", &vs, "nodad"]);
        attacker.ip(&["addr", "add", "198.51.100.2/24", "dev", &va]);
        attacker.ip(&["addr", "add", "2001:db8::2/64", "dev", &va, "nodad"]);
        for s in sources {
            let v6 = s.contains(':');
            attacker.ip(&["addr", "add", &format!("{s}/{}", if v6 { 128 } else { 32 }), "dev", &va, "nodad"]);
        }
        server.ip(&["link", "set", &vs, "up"]);
        attacker.ip(&["link", "set", &va, "up"]);
        // The extra sources live on the attacker's side of the link: the server reaches them on-link.
        server.ip(&["route", "add", "203.0.113.0/24", "dev", &vs]);
        server.ip(&["route", "add", "198.18.0.0/15", "dev", &vs]);
        server.ip(&["-6", "route", "add", "2001:db8:1::/48", "dev", &vs]);
        attacker.ip(&["route", "add", "default", "dev", &va]);
        attacker.ip(&["-6", "route", "add", "default", "dev", &va]);
        Pair { server, attacker }
    }

    /// The server's end of the veth pair.
    pub fn server_veth(&self) -> String {
        let out = run(&["ip", "-n", &self.server.name, "-br", "link", "show", "type", "veth"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().next().and_then(|n| n.split('@').next()).expect("the server's veth").to_string()
    }

    /// Server-side settings for spoofed SYNs from 198.18.0.0/15: no reverse-path drop (they arrive on the veth and
    /// their replies leave through it), and the replies routed through the attacker's address rather than
    /// on-link, so that each spoofed source does not cost an unanswered ARP entry (a thousand of them, against
    /// neighbour-table limits the namespace may share with the host). The attacker drops the SYN-ACKs.
    pub fn route_spoofed_back(&self) {
        let veth = self.server_veth();
        for key in ["all", "default", veth.as_str()] {
            let out = self.server.exec(&["sysctl", "-q", "-w", &format!("net.ipv4.conf.{key}.rp_filter=0")]);
            assert!(out.status.success(), "sysctl rp_filter ({key}): {}", String::from_utf8_lossy(&out.stderr));
        }
        self.server.ip(&["route", "replace", "198.18.0.0/15", "via", "198.51.100.2", "dev", &veth]);
    }

    /// Starts a TCP listener in the server namespace on `port` (v4 and v6) that accepts and closes, for as long
    /// as the process lives.
    pub fn listen(&self, port: u16) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.server.spawn(move || {
            let l = TcpListener::bind(("::", port)).expect("bind");
            tx.send(()).unwrap();
            for s in l.incoming() {
                drop(s);
            }
        });
        rx.recv().unwrap();
    }

    /// Whether a TCP connection from `from` (an address the attacker owns) to the server succeeds within the
    /// timeout. A dropped SYN is retransmitted only after a second, so 700 ms separates "dropped" from "served".
    pub fn connects(&self, from: &str, port: u16) -> bool {
        let from: IpAddr = from.parse().unwrap();
        let to: IpAddr = if from.is_ipv4() { "198.51.100.1".parse().unwrap() } else { "2001:db8::1".parse().unwrap() };
        self.attacker.enter(move || connect_from(from, SocketAddr::new(to, port), Duration::from_millis(700)))
    }
}

/// A TCP connection from `from` to the server's `port`, kept open (call inside the attacker namespace).
pub fn connect_stream(from: &str, port: u16) -> TcpStream {
    let from: IpAddr = from.parse().unwrap();
    let to: IpAddr = if from.is_ipv4() { "198.51.100.1".parse().unwrap() } else { "2001:db8::1".parse().unwrap() };
    let to = SocketAddr::new(to, port);
    let sock = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(from, 0).into()).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    sock.connect_timeout(&to.into(), Duration::from_secs(2)).unwrap();
    sock.into()
}

fn connect_from(from: IpAddr, to: SocketAddr, timeout: Duration) -> bool {
    let sock = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(from, 0).into()).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    match sock.connect_timeout(&to.into(), timeout) {
        Ok(()) => {
            let _: TcpStream = sock.into();
            true
        }
        Err(_) => false,
    }
}
