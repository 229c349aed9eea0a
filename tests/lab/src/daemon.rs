//! `floodgate run` in a namespace on a test's own files, and the CLI beside it: the set-up every suite that
//! drives the binary shares. The binary is the caller's `env!("CARGO_BIN_EXE_floodgate")`, handed in, since only
//! floodgate's own test targets know it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::child::KillOnDrop;
use crate::netns::{Netns, Pair};
use crate::wait::wait_for;

/// A test's floodgate files in a temporary directory, under the names the namespace tests use:
/// `floodgate.toml` (the test writes it), `f.db` (the store), `fg.sock`, `daemon.log`.
pub struct DaemonFiles {
    pub dir: tempfile::TempDir,
    /// The floodgate binary under test.
    pub bin: &'static str,
}

impl DaemonFiles {
    pub fn new(bin: &'static str) -> DaemonFiles {
        DaemonFiles { dir: tempfile::tempdir().unwrap(), bin }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `floodgate run` in `ns` on these files.
    pub fn start(&self, ns: &Netns) -> Daemon {
        let (cfg, db, sock, log) =
            (self.path("floodgate.toml"), self.path("f.db"), self.path("fg.sock"), self.path("daemon.log"));
        Daemon::start(ns, self.bin, &cfg, &db, &sock, &log)
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    /// The CLI in `ns` with the config and store named (files of this directory); its output unchecked.
    pub fn run(&self, ns: &Netns, config: &str, db: &str, args: &[&str]) -> Output {
        let (cfg, db) = (self.path(config), self.path(db));
        let mut cmd = vec![self.bin, "--config", cfg.to_str().unwrap(), "--db", db.to_str().unwrap()];
        cmd.extend_from_slice(args);
        ns.exec(&cmd)
    }

    /// The CLI in `ns` with `config` and a db the daemon does not use: an answer that shows the daemon's state
    /// came through the socket. Output unchecked.
    pub fn fg_with(&self, ns: &Netns, config: &str, args: &[&str]) -> Output {
        self.run(ns, config, "not-the-daemons.db", args)
    }

    /// [`DaemonFiles::fg_with`] on the daemon's config; fails the test (quoting the daemon's log) when the
    /// command fails.
    pub fn fg(&self, ns: &Netns, args: &[&str]) -> String {
        let out = self.fg_with(ns, "floodgate.toml", args);
        assert!(
            out.status.success(),
            "floodgate {args:?}: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The lab most suites build: a server/attacker [`Pair`] and floodgate's files, the daemon and the CLI run in
/// the server namespace. Suites wrap it in an `Env` of their own (their config, their checks) that derefs to it.
pub struct Lab {
    pub pair: Pair,
    pub files: DaemonFiles,
}

impl Lab {
    /// A pair whose attacker owns `sources` (see [`Pair::new`]) and an empty files directory.
    pub fn new(tag: &str, sources: &[&str], bin: &'static str) -> Lab {
        Lab { pair: Pair::new(tag, sources), files: DaemonFiles::new(bin) }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.files.path(name)
    }

    /// `floodgate run` in the server namespace.
    pub fn start(&self) -> Daemon {
        self.files.start(&self.pair.server)
    }

    pub fn daemon_log(&self) -> String {
        self.files.daemon_log()
    }

    /// The CLI through the daemon's socket, with `config`; output unchecked.
    pub fn fg_with(&self, config: &str, args: &[&str]) -> Output {
        self.files.fg_with(&self.pair.server, config, args)
    }

    /// The CLI through the daemon's socket; fails the test when the command fails.
    pub fn fg(&self, args: &[&str]) -> String {
        self.files.fg(&self.pair.server, args)
    }

    /// The CLI in the server namespace on `floodgate.toml` and the store `f.db` itself, no daemon running;
    /// output unchecked.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.files.run(&self.pair.server, "floodgate.toml", "f.db", args)
    }

    /// [`Lab::cli`], failing the test when the command fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "floodgate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `floodgate run` in a namespace, killed on drop.
pub struct Daemon {
    child: KillOnDrop,
    log: std::path::PathBuf,
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
        let mut d = Daemon { child: KillOnDrop::new(child), log: log.to_path_buf() };
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
        // SAFETY: kill has no memory preconditions; the pid is our own child's (not yet reaped while we hold it).
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

/// `lab_env!(Env)`: a suite's `struct Env(Lab)` that derefs to the [`Lab`], so that the suite's own methods (its
/// config, its checks) sit beside the shared ones: `env.fg(..)`, `env.pair`, `env.path(..)` as on the lab.
/// Built with `Env(Lab::new(..))`. Doc comments before the name go to the struct.
#[macro_export]
macro_rules! lab_env {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        struct $name($crate::daemon::Lab);

        impl ::std::ops::Deref for $name {
            type Target = $crate::daemon::Lab;
            fn deref(&self) -> &$crate::daemon::Lab {
                &self.0
            }
        }
    };
}
