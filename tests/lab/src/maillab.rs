//! A real mail stack for end-to-end tests: Postfix (smtpd on 25, submission on 587 with SASL through Dovecot)
//! and Dovecot (IMAP on 143, POP3 on 110), started inside a test's server namespace from configuration written
//! into a temporary directory, logging to files there, and stopped on drop with nothing left running.
//!
//! Nothing of the host's mail setup is used or changed: Postfix runs with `-c DIR` (its own main.cf, master.cf,
//! queue and data directories under the temp dir), Dovecot with `-c FILE` (its own base_dir and state_dir
//! there). Only the packages' binaries and Postfix's meta files (/etc/postfix/postfix-files, which `postfix
//! check` reads to create the queue) come from the host. The recipe and the real log lines it produces are in
//! the project's notes on mail logs; the choices that matter for tests are commented where they are made.

pub mod client;

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netns::Netns;
use crate::skip;
use crate::wait::within_every;

/// The lab's one mailbox user and the password Dovecot accepts for it.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";
/// What Postfix calls itself (the `mx` in every log line's prefix).
pub const HOSTNAME: &str = "mx.example.test";
/// The ports the lab serves, with the service names floodgate's preset gives them.
pub const PORTS: [(u16, &str); 4] = [(25, "smtp"), (587, "submission"), (143, "imap"), (110, "pop3")];

/// Mail to any address of this domain lands in the lab's notices Maildir ([`MailLab::notices`]).
pub const NOTICES_DOMAIN: &str = "notices.example.test";
/// Programs the lab runs; a missing one means the packages are not installed.
const BINARIES: [&str; 3] = ["/usr/sbin/postfix", "/usr/sbin/dovecot", "/usr/lib/postfix/sbin/master"];
/// Executables under these paths, inside the lab's namespace, belong to the lab (and are stopped with it).
const EXE_PREFIXES: [&str; 3] = ["/usr/lib/postfix/", "/usr/lib/dovecot/", "/usr/sbin/dovecot"];
/// How often the lab's waits look again.
const POLL: Duration = Duration::from_millis(50);
/// Lines of each log quoted when something fails.
const TAIL_LINES: usize = 40;

/// True when Postfix and Dovecot are installed. Without them the test skips with a message, except under CI
/// (`CI=true`), where a skipped end-to-end test would be a silent hole: there it fails and says what to install.
pub fn available(test: &str) -> bool {
    let missing: Vec<&str> = BINARIES.iter().copied().filter(|b| !Path::new(b).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "missing {} (apt-get install postfix dovecot-core dovecot-imapd dovecot-pop3d, with a policy-rc.d that \
         keeps apt from starting them on the host: see .ci/run)",
        missing.join(", ")
    );
    skip::skip(test, &format!("a real Postfix and Dovecot: {why}"))
}

/// A running Postfix + Dovecot inside one network namespace. Dropping it stops both and kills whatever of
/// theirs is left in the namespace.
pub struct MailLab {
    ns: String,
    /// The namespace's inode (as /proc/PID/ns/net names it), so that the lab's processes can be found on drop
    /// even if the namespace's name is already gone.
    ns_inode: u64,
    dir: tempfile::TempDir,
}

impl MailLab {
    /// Writes the configuration, starts Postfix and Dovecot in `ns`, and returns once all four ports listen.
    /// Panics, naming what failed and quoting the logs, if they do not come up within 20 s.
    pub fn start(ns: &Netns) -> MailLab {
        let dir = tempfile::Builder::new().prefix("floodgate-maillab-").tempdir().expect("the lab's temp dir");
        // Postfix's daemons (user postfix) chdir into the queue and Dovecot's (dovecot, dovenull, nobody) reach
        // their sockets and the mail store through this directory: it must be searchable by them.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ns_inode = std::fs::metadata(format!("/run/netns/{}", ns.name))
            .unwrap_or_else(|e| panic!("namespace {}: {e}", ns.name))
            .ino();
        let lab = MailLab { ns: ns.name.clone(), ns_inode, dir };
        lab.write_postfix();
        lab.write_dovecot();
        lab.start_dovecot();
        lab.start_postfix();
        lab.wait_listening(Duration::from_secs(20));
        lab
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Postfix's own log (`maillog_file`, written by postlogd): smtpd and submission lines.
    pub fn postfix_log(&self) -> PathBuf {
        self.path("postfix.log")
    }

    /// Dovecot's `log_path`: auth, imap-login and pop3-login lines.
    pub fn dovecot_log(&self) -> PathBuf {
        self.path("dovecot.log")
    }

    /// The messages delivered to [`NOTICES_DOMAIN`], as received (oldest first).
    pub fn notices(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path("notices/new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort_by_key(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
        files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect()
    }

    pub fn postfix_log_text(&self) -> String {
        std::fs::read_to_string(self.postfix_log()).unwrap_or_default()
    }

    pub fn dovecot_log_text(&self) -> String {
        std::fs::read_to_string(self.dovecot_log()).unwrap_or_default()
    }

    /// The last lines of both logs, for assertion messages: what the real servers saw.
    pub fn log_tails(&self) -> String {
        format!(
            "--- {} (last {TAIL_LINES} lines)\n{}\n--- {} (last {TAIL_LINES} lines)\n{}",
            self.postfix_log().display(),
            tail(&self.postfix_log_text(), TAIL_LINES),
            self.dovecot_log().display(),
            tail(&self.dovecot_log_text(), TAIL_LINES)
        )
    }

    fn write_postfix(&self) {
        let d = self.dir.path().display().to_string();
        let conf = self.path("postfix");
        std::fs::create_dir(&conf).unwrap();
        // The queue must belong to root (postfix check creates its subdirectories with the right owners); the
        // data directory to the mail owner.
        std::fs::create_dir(self.path("spool")).unwrap();
        std::fs::create_dir(self.path("data")).unwrap();
        let (uid, gid) = user_ids("postfix");
        std::os::unix::fs::chown(self.path("data"), Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(self.path("data"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let main_cf = format!(
            "# floodgate's mail lab: a private Postfix instance (postfix -c {d}/postfix), nothing shared with the host.
compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
# Postfix >= 3.4 logs through postlogd to this file: no syslog in the namespace needed. postlogd only writes under
# maillog_file_prefixes (default /var and /dev/stdout), so the lab's own directory is added.
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
myhostname = {HOSTNAME}
mydomain = example.test
myorigin = $myhostname
mydestination = $myhostname, localhost
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
# No DNS in the namespace: clients show as unknown[ADDR], as on a server whose reverse lookups fail.
smtpd_peername_lookup = no
# Plain AUTH without TLS: the lab has no certificate, and what is tested is the log line, not the cipher.
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_sasl_type = dovecot
smtpd_sasl_path = {d}/dovecot-run/auth-postfix
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated reject_unauth_destination
# Nothing ever leaves the lab.
default_transport = error
relay_transport = error
biff = no
# The admin's mailbox for floodgate's notices (NOTICES_DOMAIN): virtual(8) delivers any address of that domain
# into one Maildir in the lab's directory, as the postfix user.
virtual_mailbox_domains = {NOTICES_DOMAIN}
virtual_mailbox_base = {d}
virtual_mailbox_maps = static:notices/
virtual_minimum_uid = {uid}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
"
        );
        std::fs::create_dir(self.path("notices")).unwrap();
        std::os::unix::fs::chown(self.path("notices"), Some(uid), Some(gid)).unwrap();
        // chroot (the fifth column) off everywhere: a chrooted smtpd could not reach Dovecot's socket in the
        // temp dir, nor postlogd its log file.
        let master_cf = "\
smtp       inet  n       -       n       -       -       smtpd
submission inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
";
        std::fs::write(conf.join("main.cf"), main_cf).unwrap();
        std::fs::write(conf.join("master.cf"), master_cf).unwrap();
    }

    fn write_dovecot(&self) {
        let d = self.dir.path().display().to_string();
        let conf = self.path("dovecot");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(conf.join("users"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).unwrap();
        // Mailboxes belong to the lab's one system user (nobody): a successful IMAP or POP3 login opens them.
        std::fs::create_dir(self.path("mail")).unwrap();
        let (uid, gid) = user_ids("nobody");
        std::os::unix::fs::chown(self.path("mail"), Some(uid), Some(gid)).unwrap();
        let dovecot_conf = format!(
            "# floodgate's mail lab: a private Dovecot (dovecot -c {d}/dovecot/dovecot.conf), nothing shared with the host.
base_dir = {d}/dovecot-run
state_dir = {d}/dovecot-state
log_path = {d}/dovecot.log
protocols = imap pop3
listen = *
ssl = no
# Plain logins without TLS, for the lab only (no certificate).
disable_plaintext_auth = no
auth_mechanisms = plain login
# Dovecot delays every failed login by 2 s by default; an attack run would take minutes. The other delay, the
# per-address penalty kept by anvil, is switched off after start (see MailLab::start_dovecot).
auth_failure_delay = 0
# The `passwd-file(alice,ADDR): Password mismatch` lines.
auth_verbose = yes
first_valid_uid = 1
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/dovecot/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 143
  }}
  # No TLS listeners: no certificate in the lab.
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 110
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
# Postfix's submission service asks Dovecot to check passwords through this socket (smtpd_sasl_path).
service auth {{
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
"
        );
        std::fs::write(conf.join("dovecot.conf"), dovecot_conf).unwrap();
    }

    fn start_dovecot(&self) {
        let conf = self.path("dovecot/dovecot.conf");
        self.start_daemon("dovecot", &["dovecot", "-c", conf.to_str().unwrap()]);
        // Dovecot's auth process delays the logins of an address that failed before by 2, 4, 8... up to 15 s
        // (the anvil "auth penalty"), which would turn three failed attempts into twelve seconds. No setting
        // turns it off; the auth process skips it silently when the anvil-auth-penalty socket is missing
        // (ENOENT) when it starts, which is on the first login, after this. Removed here, before any client.
        let penalty = self.path("dovecot-run/anvil-auth-penalty");
        if !within_every(Duration::from_secs(10), POLL, || penalty.exists()) {
            panic!("dovecot did not create {} within 10 s\n{}", penalty.display(), self.log_tails());
        }
        std::fs::remove_file(&penalty).unwrap_or_else(|e| panic!("{}: {e}", penalty.display()));
    }

    fn start_postfix(&self) {
        let conf = self.path("postfix");
        // `postfix start` runs `postfix check` first, which creates the queue's subdirectories with the owners
        // Postfix requires (from /etc/postfix/postfix-files). It must run inside the namespace: outside, it was
        // seen to exit 1 without a word.
        self.start_daemon("postfix", &["postfix", "-c", conf.to_str().unwrap(), "start"]);
    }

    /// Runs a command that starts a daemon (`dovecot`, `postfix start`) in the namespace and waits, at most
    /// 30 s, for it to return. Its output goes to `NAME-start.out` in the lab's directory, not to a pipe: the
    /// daemon it leaves behind inherits the descriptors, and a pipe would never reach end of file.
    fn start_daemon(&self, name: &str, cmd: &[&str]) {
        let out_path = self.path(&format!("{name}-start.out"));
        let out = std::fs::File::create(&out_path).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(cmd)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("ip netns exec {} {cmd:?}: {e}", self.ns));
        let mut status = None;
        within_every(Duration::from_secs(30), POLL, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let said = std::fs::read_to_string(&out_path).unwrap_or_default();
        match status {
            Some(s) if s.success() => {}
            Some(s) => panic!("{cmd:?} in {} failed ({s}): {said}\n{}", self.ns, self.log_tails()),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{cmd:?} in {} did not return within 30 s: {said}\n{}", self.ns, self.log_tails())
            }
        }
    }

    /// Waits until 25, 587, 143 and 110 listen in the namespace. Asked of the kernel (`ss`), not by connecting:
    /// a probe would leave connect/disconnect lines in the logs the tests read.
    fn wait_listening(&self, timeout: Duration) {
        let mut listening = String::new();
        let all = within_every(timeout, POLL, || {
            let out = self.exec(&["ss", "-Hltn"]);
            listening = String::from_utf8_lossy(&out.stdout).into_owned();
            PORTS.iter().all(|(port, _)| {
                listening.lines().any(|l| l.split_whitespace().nth(3).is_some_and(|a| a.ends_with(&format!(":{port}"))))
            })
        });
        if !all {
            panic!(
                "the lab's ports {:?} not all listening in {} within {timeout:?}; listening:\n{listening}\n{}",
                PORTS.map(|p| p.0),
                self.ns,
                self.log_tails()
            );
        }
    }

    fn exec(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {cmd:?}: {e}", self.ns))
    }

    /// The lab's processes still alive: those in its namespace running a Postfix or Dovecot executable.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let want = format!("net:[{}]", self.ns_inode);
        let mut found = Vec::new();
        let Ok(procs) = std::fs::read_dir("/proc") else { return found };
        for entry in procs.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let in_ns = std::fs::read_link(entry.path().join("ns/net")).is_ok_and(|l| l.to_string_lossy() == want);
            if !in_ns {
                continue;
            }
            let exe = std::fs::read_link(entry.path().join("exe")).map(|p| p.display().to_string()).unwrap_or_default();
            if EXE_PREFIXES.iter().any(|p| exe.starts_with(p)) {
                found.push((pid, exe));
            }
        }
        found
    }

    /// Stops Postfix and Dovecot the way an operator would, then kills what did not go. Dovecot's master was
    /// seen to exit leaving its log, auth and stats processes behind, so what counts is the namespace's process
    /// list, not the masters' exit.
    fn stop(&self) -> Result<(), String> {
        let conf = self.path("postfix");
        let _ = self.exec(&["postfix", "-c", conf.to_str().unwrap(), "stop"]);
        if let Some(pid) =
            std::fs::read_to_string(self.path("dovecot-run/master.pid")).ok().and_then(|s| s.trim().parse::<i32>().ok())
        {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if within_every(Duration::from_secs(5), POLL, || self.processes().is_empty()) {
            return Ok(());
        }
        let left = self.processes();
        for (pid, _) in &left {
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if within_every(Duration::from_secs(5), POLL, || self.processes().is_empty()) {
            Err(format!("killed (SIGKILL) what was left 5 s after stopping: {left:?}"))
        } else {
            Err(format!("still running after SIGKILL: {:?}", self.processes()))
        }
    }
}

impl Drop for MailLab {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("mail lab in {}: {e}", self.ns);
        }
    }
}

/// The uid and gid of a system user (postfix, nobody), which the packages create. getpwnam_r: tests run on
/// several threads at once, and getpwnam's static result is not theirs to share.
fn user_ids(name: &str) -> (u32, u32) {
    let c = CString::new(name).unwrap();
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    assert!(
        r == 0 && !found.is_null(),
        "no system user {name} (errno {r}): are the postfix and dovecot packages installed?"
    );
    (pw.pw_uid, pw.pw_gid)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
