//! A real attack tool against the real mail lab (tests/maillab): THC-Hydra, 4 parallel tasks and 30 passwords
//! with the right one 20th, against Dovecot's POP3 and IMAP, Postfix's submission and an sshd (`-E` log file), while `floodgate run`
//! tails the servers' logs (maxretry 3). Dovecot runs as `floodgate advise` recommends for visibility
//! (`auth_verbose = yes`, one line per attempt at once) but without its failure delay (`auth_failure_delay =
//! 0`): the fastest guesser the lab can have. For each service: the password is never found, and the servers
//! saw at most maxretry attempts plus the ones hydra had in flight when the ban came (one per task).
//!
//! Needs root, Postfix, Dovecot and hydra; skips without them, except under CI=true.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use floodgate_lab::daemon::Daemon;
use floodgate_lab::maillab::{self, MailLab};
use floodgate_lab::netns::{self, Pair};
use floodgate_lab::skip;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const SERVER: &str = "198.51.100.1";
/// One attacker address per service (on the attacker's side of the link), so each run starts unknown.
const ATTACKERS: [&str; 4] = ["203.0.113.21", "203.0.113.22", "203.0.113.23", "203.0.113.24"];
const MAXRETRY: usize = 3;
const TASKS: usize = 4;
const HYDRA: &str = "/usr/bin/hydra";
const SSHD: &str = "/usr/sbin/sshd";

/// A private sshd in the server namespace on port 22: its own host key and config in `dir`, logging with `-E` to
/// a file (the format `sshd -E` writes: bare messages, no time or pid). Passwords allowed, no PAM; the lab's
/// user has no system account, so every guess fails as a real server's would for an unknown user. Stopped on
/// drop.
struct Sshd(std::process::Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sshd(ns: &netns::Netns, dir: &Path) -> Sshd {
    let key = dir.join("ssh_host_ed25519_key");
    let ok = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", ""]).arg("-f").arg(&key).status().unwrap();
    assert!(ok.success(), "ssh-keygen");
    std::fs::create_dir_all("/run/sshd").unwrap();
    let conf = dir.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "Port 22\nListenAddress {SERVER}\nHostKey {}\nPidFile {}\nUsePAM no\nPasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\nMaxAuthTries 3\nLogLevel VERBOSE\n",
            key.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, SSHD, "-D", "-f"])
        .arg(&conf)
        .arg("-E")
        .arg(dir.join("sshd.log"))
        .spawn()
        .unwrap();
    let log = dir.join("sshd.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("Server listening") {
        assert!(Instant::now() < deadline, "sshd did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    }
    Sshd(child)
}

fn hydra_available(test: &str) -> bool {
    if Path::new(HYDRA).exists() {
        return true;
    }
    skip::skip(test, "THC-Hydra (apt-get install hydra)")
}

/// 30 passwords, the lab's real one 20th.
fn wordlist(dir: &Path) -> PathBuf {
    let mut words: Vec<String> = (1..=30).map(|i| format!("guess{i:02}")).collect();
    words[19] = maillab::PASSWORD.to_string();
    let path = dir.join("passwords.txt");
    std::fs::write(&path, words.join("\n") + "\n").unwrap();
    path
}

/// Attempts the server logged from the attacker since `from` bytes into its log.
fn attempts(log: &Path, from: usize, marker: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.get(from..).unwrap_or_default().lines().filter(|l| l.contains(marker)).count()
}

#[test]
fn hydra_never_finds_the_password_and_every_attacker_is_banned_within_maxretry_plus_in_flight() {
    let test = "hydra_never_finds_the_password_and_every_attacker_is_banned_within_maxretry_plus_in_flight";
    if !netns::available(test) || !maillab::available(test) || !hydra_available(test) {
        return;
    }
    if !Path::new(SSHD).exists() {
        skip::skip(test, "openssh-server (sshd)");
        return;
    }
    let pair = Pair::new("hyd", &ATTACKERS);
    let lab = MailLab::start(&pair.server);
    let dir = tempfile::Builder::new().prefix("floodgate-hydra-").tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let _sshd = start_sshd(&pair.server, dir.path());
    std::fs::write(
        p("floodgate.toml"),
        format!(
            "[sources]\nfiles = [\"{}\", \"{}\", \"{}\"]\n[daemon]\nsocket = \"{}\"\ntick = \"200ms\"\n\
             [jail]\nmaxretry = {MAXRETRY}\n\
             [services.smtp]\nports = [25]\n[services.submission]\nports = [587]\n\
             [services.imap]\nports = [143]\n[services.pop3]\nports = [110]\n[services.ssh]\nports = [22]\n",
            lab.postfix_log().display(),
            lab.dovecot_log().display(),
            p("sshd.log").display(),
            p("fg.sock").display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&pair.server, BIN, &p("floodgate.toml"), &p("f.db"), &p("fg.sock"), &p("daemon.log"));
    let fg = |args: &[&str]| {
        let cfg = p("floodgate.toml");
        let mut cmd = vec![BIN, "--config", cfg.to_str().unwrap()];
        cmd.extend_from_slice(args);
        pair.server.exec(&cmd)
    };
    let words = wordlist(dir.path());
    // The attacker's link device, for the route that picks each run's source address.
    let route = pair.attacker.exec(&["ip", "-o", "route", "get", SERVER]);
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    let dev = route.split_whitespace().skip_while(|w| *w != "dev").nth(1).expect("a route to the server").to_string();
    for (i, (service, port, module, log)) in [
        ("pop3", "110", "pop3", lab.dovecot_log()),
        ("imap", "143", "imap", lab.dovecot_log()),
        ("submission", "587", "smtp", lab.postfix_log()),
        ("ssh", "22", "ssh", p("sshd.log")),
    ]
    .into_iter()
    .enumerate()
    {
        let attacker = ATTACKERS[i];
        pair.attacker.ip(&["route", "replace", &format!("{SERVER}/32"), "dev", &dev, "src", attacker]);
        let banned = || String::from_utf8_lossy(&fg(&["list"]).stdout).contains(attacker);
        // Dovecot logs one `Password mismatch` line per attempt (auth_verbose); Postfix one SASL warning.
        let marker = match module {
            "smtp" => format!("[{attacker}]: SASL"),
            "ssh" => format!("Failed password for invalid user {} from {attacker} ", maillab::USER),
            _ => format!("({},{attacker},", maillab::USER),
        };
        let from = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let started = Instant::now();
        let mut hydra = Command::new("ip")
            .args(["netns", "exec", &pair.attacker.name, HYDRA, "-l", maillab::USER, "-P"])
            .arg(&words)
            .args(["-t", &TASKS.to_string(), "-f", "-I", "-w", "5", "-s", port, SERVER, module])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group: hydra forks a child per task, and all of them go when it is killed.
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = hydra.id() as i32;
        let mut stdout = hydra.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !banned() {
            assert!(
                Instant::now() < deadline,
                "{service}: no ban within 30 s\n{}\n--- floodgate\n{}",
                lab.log_tails(),
                std::fs::read_to_string(p("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let ban_after = started.elapsed();
        // Whatever hydra still had going dies with the ban (every packet of a banned source is dropped).
        std::thread::sleep(Duration::from_secs(2));
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = hydra.wait();
        let out = reader.join().unwrap();
        let tried = attempts(&log, from, &marker);
        eprintln!("{service}: banned {ban_after:?} after hydra's start, {tried} attempts reached the server");
        assert!(
            !out.contains(&format!("password: {}", maillab::PASSWORD)),
            "{service}: hydra found the password:\n{out}\n{}",
            lab.log_tails()
        );
        assert!(tried >= 1, "{service}: hydra made no attempt the server saw:\n{out}\n{}", lab.log_tails());
        assert!(
            tried <= MAXRETRY + TASKS,
            "{service}: {tried} attempts reached the server before the ban (maxretry {MAXRETRY} + {TASKS} in flight)\n{}",
            lab.log_tails()
        );
    }
    daemon.stop();
}
