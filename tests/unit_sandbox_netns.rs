//! The systemd unit proven, not only verified: `examples/floodgate.service` (the very file the package installs)
//! is read, and its ExecStart runs under the sandbox the unit asks for, reproduced by hand inside a network
//! namespace: a private mount namespace (`unshare`) for ProtectSystem, ProtectHome, PrivateTmp, the read-only,
//! read-write, state and runtime paths and the kernel tunables, and `setpriv` for the capability bounding set,
//! the ambient capabilities and no_new_privs. The daemon must still read its logs, write its store and program
//! nftables (its table appears in the namespace, a guesser is banned), and a process with its privileges in its
//! mount namespace can write nowhere else.
//!
//! Every directive of the unit's [Service] is either reproduced here or named below with the reason it is not
//! (the syscall and device filters are seccomp and cgroup programs `setpriv` cannot express; `systemd-analyze
//! verify` in `make deb-check` covers their syntax): a directive added to the unit that this test does not know
//! fails it, so the proof cannot silently go stale.
//!
//! The host is never touched: /etc, /var and /usr are overlays inside the private mount namespace (upper layers in
//! the test's temporary directory), /run a fresh tmpfs, and the test's own log, state and runtime directories are
//! bound where the unit expects them; the binary under test is bound over the ExecStart path.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use floodgate_lab::child::KillOnDrop;
use floodgate_lab::netns::{self, Netns};
use floodgate_lab::skip;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const UNIT: &str = include_str!("../examples/floodgate.service");

/// Directives that are service management, not sandboxing: nothing to reproduce.
const MANAGEMENT: [&str; 5] = ["Type", "ExecReload", "Restart", "RestartSec", "TimeoutStopSec"];

/// Directives not reproduced, and why.
const NOT_REPRODUCED: [(&str, &str); 13] = [
    ("DevicePolicy", "a cgroup device filter; the one device it allows, /dev/kmsg, is read here"),
    ("DeviceAllow", "a cgroup device filter (see DevicePolicy)"),
    ("ProtectKernelModules", "drops CAP_SYS_MODULE, which the bounding set lacks anyway"),
    ("ProtectClock", "a syscall and device filter"),
    ("ProtectHostname", "a UTS namespace: the daemon never sets the hostname"),
    ("RestrictNamespaces", "a syscall filter"),
    ("RestrictRealtime", "a syscall filter"),
    ("RestrictSUIDSGID", "a syscall filter"),
    ("LockPersonality", "a syscall filter"),
    ("MemoryDenyWriteExecute", "a syscall filter"),
    ("SystemCallArchitectures", "a syscall filter"),
    ("SystemCallFilter", "a syscall filter"),
    ("RestrictAddressFamilies", "a syscall filter"),
];

/// The sandbox a unit asks for, as this test reproduces it.
#[derive(Debug, Default)]
struct Sandbox {
    exec_start: Vec<String>,
    bounding: Vec<String>,
    ambient: Vec<String>,
    no_new_privs: bool,
    protect_system_strict: bool,
    protect_home: Option<String>,
    private_tmp: bool,
    protect_kernel_tunables: bool,
    protect_control_groups: bool,
    /// (path, writable), from ReadOnlyPaths=, ReadWritePaths=, StateDirectory=, RuntimeDirectory=.
    paths: Vec<(String, bool)>,
    state_dirs: Vec<String>,
    runtime_dirs: Vec<String>,
    runtime_mode: Option<String>,
}

fn yes(v: &str) -> bool {
    matches!(v, "yes" | "true" | "on" | "1")
}

/// `cap_net_admin` for setpriv from `CAP_NET_ADMIN`.
fn cap_name(c: &str) -> String {
    c.strip_prefix("CAP_").unwrap_or(c).to_ascii_lowercase()
}

impl Sandbox {
    /// Reads the [Service] section; panics on a directive it does not know, naming it.
    fn from_unit(unit: &str) -> Sandbox {
        let mut s = Sandbox::default();
        let mut in_service = false;
        for line in unit.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            if !in_service {
                continue;
            }
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not a directive: {line}"));
            let words = || value.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            match key {
                "ExecStart" => {
                    assert!(
                        !value.starts_with(['-', '@', '+', '!', ':']),
                        "ExecStart prefixes are not reproduced: {value}"
                    );
                    s.exec_start = words();
                }
                "CapabilityBoundingSet" => s.bounding.extend(words().iter().map(|c| cap_name(c))),
                "AmbientCapabilities" => s.ambient.extend(words().iter().map(|c| cap_name(c))),
                "NoNewPrivileges" => s.no_new_privs = yes(value),
                "ProtectSystem" => match value {
                    "strict" => s.protect_system_strict = true,
                    "no" | "false" => {}
                    other => panic!("ProtectSystem={other} is not reproduced by this test: extend it"),
                },
                "ProtectHome" => s.protect_home = (!matches!(value, "no" | "false")).then(|| value.to_string()),
                "PrivateTmp" => s.private_tmp = yes(value),
                "PrivateDevices" => assert!(!yes(value), "PrivateDevices would hide /dev/kmsg, which the daemon reads"),
                "ProtectKernelTunables" => s.protect_kernel_tunables = yes(value),
                "ProtectControlGroups" => s.protect_control_groups = yes(value),
                "ReadOnlyPaths" => s.paths.extend(words().into_iter().map(|p| (p, false))),
                "ReadWritePaths" => s.paths.extend(words().into_iter().map(|p| (p, true))),
                "StateDirectory" => s.state_dirs.extend(words()),
                "RuntimeDirectory" => s.runtime_dirs.extend(words()),
                "RuntimeDirectoryMode" => s.runtime_mode = Some(value.to_string()),
                k if MANAGEMENT.contains(&k) || NOT_REPRODUCED.iter().any(|(d, _)| *d == k) => {}
                other => panic!(
                    "{other}= is in the unit but this test neither reproduces it nor says why not: add it to \
                     Sandbox::from_unit or NOT_REPRODUCED"
                ),
            }
        }
        assert!(!s.exec_start.is_empty(), "no ExecStart in the unit");
        s
    }

    /// setpriv's arguments for the unit's capabilities and no_new_privs.
    fn setpriv(&self) -> Vec<String> {
        let set = |caps: &[String]| {
            std::iter::once("-all".to_string())
                .chain(caps.iter().map(|c| format!("+{c}")))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut args = vec!["setpriv".to_string()];
        if !self.bounding.is_empty() {
            args.extend(["--bounding-set".to_string(), set(&self.bounding)]);
        }
        args.extend(["--inh-caps".to_string(), set(&self.ambient), "--ambient-caps".to_string(), set(&self.ambient)]);
        if self.no_new_privs {
            args.push("--no-new-privs".to_string());
        }
        args.push("--".to_string());
        args
    }

    /// The shell script that builds the unit's view of the system in a fresh mount namespace, then execs the
    /// daemon through setpriv. `t` holds the test's files: the config, and log/, state/, run/ to bind.
    fn script(&self, t: &Path) -> String {
        let t = t.display();
        let program = &self.exec_start[0];
        assert!(program.starts_with("/usr/"), "ExecStart's program {program} is expected under /usr");
        let mut sh = vec![
            "set -eu".to_string(),
            // The host as the unit sees it, made in this namespace only.
            format!(
                "for d in etc var usr; do mkdir -p {t}/ovl/$d/u {t}/ovl/$d/w; \
                 mount -t overlay overlay -o lowerdir=/$d,upperdir={t}/ovl/$d/u,workdir={t}/ovl/$d/w /$d; done"
            ),
            "mount -t tmpfs -o mode=0755 tmpfs /run".to_string(),
            format!("mkdir -p /etc/floodgate && cp {t}/floodgate.toml /etc/floodgate/floodgate.toml"),
            format!("mount --bind {t}/log /var/log"),
            format!("mkdir -p \"$(dirname {program})\" && touch {program} && mount --bind {BIN} {program}"),
        ];
        let mut rules: Vec<(String, bool)> = self.paths.clone();
        for d in &self.state_dirs {
            sh.push(format!("mkdir -p /var/lib/{d} && mount --bind {t}/state /var/lib/{d}"));
            rules.push((format!("/var/lib/{d}"), true));
        }
        for d in &self.runtime_dirs {
            sh.push(format!("mkdir -p /run/{d} && mount --bind {t}/run /run/{d}"));
            if let Some(mode) = &self.runtime_mode {
                sh.push(format!("chmod {mode} /run/{d}"));
            }
            rules.push((format!("/run/{d}"), true));
        }
        if let Some(home) = &self.protect_home {
            let how = match home.as_str() {
                "yes" | "true" => "mount -t tmpfs -o mode=000 tmpfs \"$p\"",
                "read-only" => "mount --bind \"$p\" \"$p\" && mount -o remount,bind,ro \"$p\"",
                "tmpfs" => "mount -t tmpfs -o mode=0755,ro tmpfs \"$p\"",
                other => panic!("ProtectHome={other} is not reproduced by this test: extend it"),
            };
            sh.push(format!("for p in /home /root /run/user; do [ -d \"$p\" ] || continue; {how}; done"));
        }
        if self.protect_system_strict {
            // Every mount read-only but the API file systems (/dev, /proc, /sys), as systemd's "strict".
            sh.push(
                "awk '{print $5}' /proc/self/mountinfo | while read -r mp; do case \"$mp\" in \
                 /dev|/dev/*|/proc|/proc/*|/sys|/sys/*) continue;; esac; \
                 mountpoint -q \"$mp\" || continue; \
                 mount -o remount,bind,ro \"$mp\" || { echo \"cannot make $mp read-only\" >&2; exit 1; }; done"
                    .to_string(),
            );
        }
        // The most specific path wins, as in systemd: shorter paths first. `-` marks a path that may be missing.
        rules.sort_by_key(|(p, _)| p.trim_start_matches('-').matches('/').count());
        for (p, writable) in rules {
            let (p, optional) = match p.strip_prefix('-') {
                Some(p) => (p.to_string(), true),
                None => (p, false),
            };
            let flag = if writable { "rw" } else { "ro" };
            let mount = format!("mount --bind {p} {p} && mount -o remount,bind,{flag} {p}");
            sh.push(if optional { format!("if [ -e {p} ]; then {mount}; fi") } else { mount });
        }
        if self.private_tmp {
            sh.push("mount -t tmpfs -o mode=1777 tmpfs /tmp && mount -t tmpfs -o mode=1777 tmpfs /var/tmp".to_string());
        }
        if self.protect_kernel_tunables {
            sh.push("mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys".to_string());
            sh.push("mount -o remount,bind,ro /sys".to_string());
        }
        if self.protect_control_groups {
            sh.push("if mountpoint -q /sys/fs/cgroup; then mount -o remount,bind,ro /sys/fs/cgroup; fi".to_string());
        }
        let mut exec = self.setpriv();
        exec.extend(self.exec_start.iter().cloned());
        sh.push(format!("exec {}", exec.join(" ")));
        sh.join("\n")
    }
}

#[test]
fn every_directive_of_the_unit_is_reproduced_or_named() {
    let s = Sandbox::from_unit(UNIT);
    assert_eq!(s.exec_start, ["/usr/bin/floodgate", "run"], "the package installs the binary as /usr/bin/floodgate");
    assert!(s.protect_system_strict && s.no_new_privs && s.private_tmp);
    assert!(s.bounding.contains(&"net_admin".to_string()), "{:?}", s.bounding);
    assert!(s.paths.contains(&("/var/log".to_string(), false)), "{:?}", s.paths);
    // A directive this test does not know fails it.
    let e =
        std::panic::catch_unwind(|| Sandbox::from_unit("[Service]\nExecStart=/usr/bin/floodgate run\nBindPaths=/x\n"))
            .unwrap_err();
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("BindPaths"), "{msg}");
}

/// The tools the sandbox is made with; a loud skip (a failure under CI=true) without them.
fn tools_available(test: &str) -> bool {
    if !netns::available(test) {
        return false;
    }
    let have = |tool: &str| {
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
    };
    let overlay = std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay"));
    if ["setpriv", "unshare", "nsenter", "awk"].iter().all(|t| have(t)) && overlay {
        return true;
    }
    skip::skip(test, "util-linux (setpriv, unshare, nsenter) and overlayfs to reproduce the unit's sandbox")
}

/// Runs `sh -c script` in the daemon's mount and network namespaces with the daemon's privileges (the unit's
/// setpriv); its exit status.
fn as_the_daemon(pid: u32, sandbox: &Sandbox, script: &str) -> std::process::Output {
    let pid = pid.to_string();
    let mut cmd = vec!["nsenter".to_string(), "-t".into(), pid, "-m".into(), "-n".into(), "--".into()];
    cmd.extend(sandbox.setpriv());
    cmd.extend(["sh".to_string(), "-c".into(), script.to_string()]);
    Command::new(&cmd[0]).args(&cmd[1..]).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn wait(what: &str, deadline: Duration, log: &Path, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}; daemon log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_packaged_unit_runs_the_daemon_under_its_own_sandbox() {
    let test = "the_packaged_unit_runs_the_daemon_under_its_own_sandbox";
    if !tools_available(test) {
        return;
    }
    let sandbox = Sandbox::from_unit(UNIT);
    let ns = Netns::new("unit");
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    // The config the package installs: the preset (files /var/log/mail.log and auth.log), allowlist empty.
    let out = Command::new(BIN).args(["generate", "config"]).arg(t.join("floodgate.toml")).output().unwrap();
    assert!(out.status.success(), "generate config: {}", String::from_utf8_lossy(&out.stderr));
    for d in ["log", "state", "run"] {
        std::fs::create_dir(t.join(d)).unwrap();
    }
    let mail_log = t.join("log/mail.log");
    std::fs::write(&mail_log, "").unwrap();
    std::fs::write(t.join("log/auth.log"), "").unwrap();
    let daemon_log = t.join("daemon.log");

    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(sandbox.script(t))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&daemon_log).unwrap())
        .spawn()
        .unwrap();
    // ip netns exec, unshare, sh and setpriv each exec the next: this pid ends as the daemon's.
    let pid = child.id();
    let mut child = KillOnDrop::new(child);
    let running = |child: &mut KillOnDrop| {
        let status = child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            status.is_none(),
            "the daemon exited ({status:?}):\n{}",
            std::fs::read_to_string(&daemon_log).unwrap_or_default()
        );
    };

    // nftables programmed: the table appears in the namespace. The socket: the runtime directory is writable.
    wait("floodgate's table in the namespace", Duration::from_secs(20), &daemon_log, || {
        running(&mut child);
        ns.exec(&["nft", "list", "table", "inet", "floodgate"]).status.success()
    });
    wait("the control socket in /run/floodgate", Duration::from_secs(10), &daemon_log, || {
        running(&mut child);
        t.join("run/floodgate.sock").exists()
    });

    // Its logs read: a password guesser in /var/log/mail.log (read-only to it) is banned. The file is read from its
    // end on first sight, so lines go on being appended until the ban shows.
    let line = |n: u32| {
        format!(
            "{} mx dovecot[812]: imap-login: Info: Disconnected: Aborted login (auth failed, 1 attempts in 2 secs): \
             user=<admin>, method=PLAIN, rip=198.51.100.66, lip=198.51.100.1, session=<s{n}>\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S+00:00")
        )
    };
    let mut n = 0;
    wait("the guesser's ban in the kernel", Duration::from_secs(30), &daemon_log, || {
        running(&mut child);
        n += 1;
        let mut f = std::fs::OpenOptions::new().append(true).open(&mail_log).unwrap();
        std::io::Write::write_all(&mut f, line(n).as_bytes()).unwrap();
        let set = ns.exec(&["nft", "list", "set", "inet", "floodgate", "ban4"]);
        String::from_utf8_lossy(&set.stdout).contains("198.51.100.66")
    });

    // Its store written: the events and the ban are in /var/lib/floodgate/floodgate.db (the test's state dir).
    let db = t.join("state/floodgate.db");
    let events = Command::new(BIN).arg("--db").arg(&db).args(["events", "--addr", "198.51.100.66"]).output().unwrap();
    assert!(events.status.success(), "floodgate events: {}", String::from_utf8_lossy(&events.stderr));
    assert!(String::from_utf8_lossy(&events.stdout).contains("198.51.100.66"), "no events in the store");

    // Its privileges: exactly the unit's capabilities, and no_new_privs.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("").to_string();
    let mask = |caps: &[String]| {
        caps.iter().fold(0u64, |m, c| {
            m | 1
                << match c.as_str() {
                    "net_admin" => 12,
                    "syslog" => 34,
                    "dac_read_search" => 2,
                    other => panic!("capability {other}: add its number"),
                }
        })
    };
    assert_eq!(u64::from_str_radix(&field("CapEff:"), 16).unwrap(), mask(&sandbox.bounding), "{status}");
    assert_eq!(u64::from_str_radix(&field("CapBnd:"), 16).unwrap(), mask(&sandbox.bounding), "{status}");
    assert_eq!(field("NoNewPrivs:"), if sandbox.no_new_privs { "1" } else { "0" });

    // Nowhere else to write: with its privileges, in its mount namespace, a write succeeds only where the unit
    // allows one (the first three: proof that the probe itself works), and fails everywhere else.
    for (path, allowed) in [
        ("/var/lib/floodgate/probe", true),
        ("/run/floodgate/probe", true),
        ("/tmp/probe", true),
        ("/etc/floodgate-probe", false),
        ("/etc/floodgate/probe", false),
        ("/usr/floodgate-probe", false),
        ("/usr/bin/floodgate", false),
        ("/var/log/floodgate-probe", false),
        ("/var/log/mail.log", false),
        ("/var/floodgate-probe", false),
        ("/var/lib/floodgate-probe", false),
        ("/run/floodgate-probe", false),
        ("/boot/floodgate-probe", false),
        ("/root/floodgate-probe", false),
        ("/floodgate-probe", false),
    ] {
        let out = as_the_daemon(pid, &sandbox, &format!("echo probe >> {path}"));
        assert_eq!(
            out.status.success(),
            allowed,
            "writing {path} as the daemon: {} ({})",
            if allowed { "refused" } else { "allowed" },
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // And it can read what it must: its config (read-only) and the log.
    let read = as_the_daemon(pid, &sandbox, "cat /etc/floodgate/floodgate.toml /var/log/mail.log >/dev/null");
    assert!(read.status.success(), "reading config and log as the daemon: {}", String::from_utf8_lossy(&read.stderr));

    let log = std::fs::read_to_string(&daemon_log).unwrap_or_default();
    for trouble in ["Permission denied", "Read-only file system", "Operation not permitted"] {
        assert!(!log.contains(trouble), "the daemon met `{trouble}` in its sandbox:\n{log}");
    }
    // SIGTERM, as systemctl stop: the daemon exits 0 and its ban stays in the kernel.
    // SAFETY: kill(2) on our own child's pid, still unreaped (KillOnDrop holds it).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let status = child.take().unwrap().wait().unwrap();
    assert!(status.success(), "the daemon's exit on SIGTERM: {status:?}\n{log}");
    let set = ns.nft(&["list", "set", "inet", "floodgate", "ban4"]);
    assert!(set.contains("198.51.100.66"), "the ban went with the daemon:\n{set}");
}
