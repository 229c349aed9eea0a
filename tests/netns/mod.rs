//! Network namespaces for kernel tests: created by the test, deleted when it ends (even on panic). Nothing here
//! touches the host's own namespace or ruleset.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Stdio};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// True when the test can use namespaces. Without root it skips with a message, except under CI, where a
/// skipped kernel test would be a silent hole: there it fails.
pub fn available(test: &str) -> bool {
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
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root, iproute2 and nftables for network namespaces ({why}); CI must provide them");
    }
    eprintln!("SKIPPED {test}: needs root, iproute2 and nftables for network namespaces ({why})");
    false
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

/// Whether `ok` holds within `timeout` (polled every 25 ms).
pub fn within(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    true
}

/// Waits until `ok`, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A daemon's files in a temporary directory, under the names the namespace tests use: `floodgate.toml` (the
/// test writes it), `f.db`, `fg.sock`, `daemon.log`.
pub struct DaemonFiles {
    pub dir: tempfile::TempDir,
}

impl DaemonFiles {
    pub fn new() -> DaemonFiles {
        DaemonFiles { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// `floodgate run` in `ns` on these files.
    pub fn start(&self, ns: &Netns) -> Daemon {
        let (cfg, db, sock, log) =
            (self.path("floodgate.toml"), self.path("f.db"), self.path("fg.sock"), self.path("daemon.log"));
        Daemon::start(ns, env!("CARGO_BIN_EXE_floodgate"), &cfg, &db, &sock, &log)
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    /// The CLI in `ns` with the daemon's config and a db the daemon does not use: what it shows came through the
    /// socket. Fails the test (quoting the daemon's log) when the command fails.
    pub fn fg(&self, ns: &Netns, args: &[&str]) -> String {
        let cfg = self.path("floodgate.toml");
        let db = self.path("not-the-daemons.db");
        let mut cmd =
            vec![env!("CARGO_BIN_EXE_floodgate"), "--config", cfg.to_str().unwrap(), "--db", db.to_str().unwrap()];
        cmd.extend_from_slice(args);
        let out = ns.exec(&cmd);
        assert!(
            out.status.success(),
            "floodgate {args:?}: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `floodgate run` in a namespace, killed on drop.
pub struct Daemon {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemon {
    /// Starts `BIN -v --config CONFIG --db DB run` in `ns` (stderr to `log`) and returns once `socket` exists,
    /// which the daemon creates only when its sources have taken their positions.
    pub fn start(ns: &Netns, bin: &str, config: &Path, db: &Path, socket: &Path, log: &Path) -> Daemon {
        let err = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, bin, "-v", "--config"])
            .arg(config)
            .arg("--db")
            .arg(db)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut d = Daemon { child: Some(child), log: log.to_path_buf() };
        wait_for("the control socket", Duration::from_secs(10), || {
            assert!(d.alive(), "the daemon exited: {}", d.log());
            socket.exists()
        });
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid (`ip netns exec` execs it in place).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the daemon did not stop within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}
