//! What the advisor reads from the running machine, for the network namespace it runs in: the TCP and
//! conntrack sysctls, available memory, the SNMP counters of SYN and listen queues, the listeners, and (through
//! `servers`) the mail servers' and sshd's own settings about failed logins.
//!
//! Every value is optional. A file that is missing (nf_conntrack_max without the conntrack module) or does not
//! parse means "unknown", and the finding that needs it is skipped; reading never fails as a whole. The reader
//! takes the proc root as a parameter, so tests can point it at a fixture tree.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::listeners::{self, Listener};
use super::servers::ServerSettings;

/// A snapshot of the machine as the advisor sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Machine {
    /// net.ipv4.tcp_syncookies: 0 off, 1 when a SYN queue overflows, 2 always.
    pub syncookies: Option<u32>,
    pub max_syn_backlog: Option<u32>,
    /// net.core.somaxconn: the cap on every listen() backlog.
    pub somaxconn: Option<u32>,
    pub synack_retries: Option<u32>,
    pub timestamps: Option<u32>,
    pub abort_on_overflow: Option<u32>,
    /// net.netfilter.nf_conntrack_max and _count: None when conntrack is not loaded.
    pub conntrack_max: Option<u64>,
    pub conntrack_count: Option<u64>,
    pub mem_total_kib: Option<u64>,
    pub mem_available_kib: Option<u64>,
    /// TcpExt counters since boot (of this namespace), by name without the `TcpExt.` prefix.
    pub counters: BTreeMap<String, u64>,
    /// None when no listener list could be read at all.
    pub listeners: Option<Vec<Listener>>,
    /// Dovecot's, Postfix's and sshd's settings that decide whether failed logins are logged at once and bounded
    /// per connection; each None when that server is not installed (or could not be asked: see `notes`).
    pub servers: ServerSettings,
    /// What could not be read, for the operator (missing optional files are not listed).
    pub notes: Vec<String>,
}

impl Machine {
    /// Reads the live machine: /proc, the listeners from the kernel's socket diagnostics (with their backlogs),
    /// falling back to /proc/net/tcp (without them), and the installed servers' settings.
    pub fn read_live() -> Machine {
        let proc = Path::new("/proc");
        // /proc/net/tcp lists every socket (megabytes on a flooded server): read only if sock_diag fails.
        let mut m = Machine::read_values(proc);
        match listeners::read_sock_diag() {
            Ok(l) => m.listeners = Some(l),
            Err(e) => {
                tracing::debug!(error = %e, "sock_diag dump failed");
                m.notes.push(format!(
                    "listener backlogs unknown: the socket diagnostics dump failed ({e}); listeners read from \
                     /proc/net/tcp, which does not show backlogs"
                ));
                m.listeners = proc_listeners(proc);
            }
        }
        // Not network-namespace specific: the servers report their config files, whichever namespace they
        // serve.
        m.servers = ServerSettings::read_live(&mut m.notes);
        m
    }

    /// Reads the files under `proc` (normally /proc). Listeners come from `net/tcp` and `net/tcp6`, without
    /// backlogs; no server is asked (a fixture tree has none).
    pub fn read_at(proc: &Path) -> Machine {
        let mut m = Machine::read_values(proc);
        m.listeners = proc_listeners(proc);
        m
    }

    /// Everything but the listeners.
    fn read_values(proc: &Path) -> Machine {
        let p = |rel: &str| proc.join(rel);
        let mut m = Machine {
            syncookies: value(&p("sys/net/ipv4/tcp_syncookies")),
            max_syn_backlog: value(&p("sys/net/ipv4/tcp_max_syn_backlog")),
            somaxconn: value(&p("sys/net/core/somaxconn")),
            synack_retries: value(&p("sys/net/ipv4/tcp_synack_retries")),
            timestamps: value(&p("sys/net/ipv4/tcp_timestamps")),
            abort_on_overflow: value(&p("sys/net/ipv4/tcp_abort_on_overflow")),
            conntrack_max: value(&p("sys/net/netfilter/nf_conntrack_max")),
            conntrack_count: value(&p("sys/net/netfilter/nf_conntrack_count")),
            ..Machine::default()
        };
        if let Some(text) = read(&p("meminfo")) {
            let info = parse_meminfo(&text);
            m.mem_total_kib = info.get("MemTotal").copied();
            m.mem_available_kib = info.get("MemAvailable").copied();
        }
        match read(&p("net/netstat")) {
            Some(text) => {
                let (all, problems) = crate::source::netstat::parse_checked(&text);
                for problem in problems {
                    tracing::debug!(%problem, "net/netstat: field skipped");
                }
                // The counters the daemon's netstat source watches: cookies, SYN- and listen-queue overflows.
                m.counters =
                    crate::source::netstat::tracked(&all).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            }
            None => m.notes.push(format!("{}: not readable; SNMP counters unknown", p("net/netstat").display())),
        }
        m
    }

    /// The counter's value, 0 when the kernel does not have it.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Whether the kernel answers with cookies when a SYN queue overflows (1) or always (2).
    pub fn cookies_on(&self) -> bool {
        matches!(self.syncookies, Some(1) | Some(2))
    }
}

/// The listeners of `net/tcp` and `net/tcp6` under `proc` (no backlogs); None if neither can be read.
fn proc_listeners(proc: &Path) -> Option<Vec<Listener>> {
    let mut any = false;
    let mut found = Vec::new();
    for file in ["net/tcp", "net/tcp6"] {
        if let Some(text) = read(&proc.join(file)) {
            any = true;
            found.extend(listeners::parse_proc_net_tcp(&text));
        }
    }
    any.then_some(found)
}

fn read(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::debug!(file = %path.display(), error = %e, "not read");
            None
        }
    }
}

/// One number from a sysctl file. Missing or malformed: None (logged at debug level).
fn value<T: std::str::FromStr>(path: &Path) -> Option<T> {
    let text = read(path)?;
    match text.trim().parse() {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::debug!(file = %path.display(), text = %text.trim(), "not a number");
            None
        }
    }
}

/// `Key: value kB` lines, in KiB.
fn parse_meminfo(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (key, rest) = l.split_once(':')?;
            let n = rest.split_whitespace().next()?.parse().ok()?;
            Some((key.trim(), n))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A proc tree with every file the reader looks at; `conntrack` chooses whether the module is "loaded".
    pub(crate) fn fixture(dir: &Path, conntrack: bool) {
        let w = |rel: &str, text: &str| {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        w("sys/net/ipv4/tcp_syncookies", "0\n");
        w("sys/net/ipv4/tcp_max_syn_backlog", "128\n");
        w("sys/net/core/somaxconn", "16\n");
        w("sys/net/ipv4/tcp_synack_retries", "5\n");
        w("sys/net/ipv4/tcp_timestamps", "not-a-number\n");
        w("sys/net/ipv4/tcp_abort_on_overflow", "1\n");
        if conntrack {
            w("sys/net/netfilter/nf_conntrack_max", "1000\n");
            w("sys/net/netfilter/nf_conntrack_count", "900\n");
        }
        w("meminfo", "MemTotal:        1024000 kB\nMemFree:          10000 kB\nMemAvailable:     512000 kB\n");
        w(
            "net/netstat",
            "TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts ListenOverflows ListenDrops \
             TCPReqQFullDoCookies TCPReqQFullDrop\nTcpExt: 0 0 0 0 0 1900 0 1900\nIpExt: InNoRoutes\nIpExt: 0\n",
        );
        w(
            "net/tcp",
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
               0: 00000000:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n",
        );
    }

    #[test]
    fn reads_a_proc_tree_and_leaves_what_is_missing_unknown() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), true);
        let m = Machine::read_at(dir.path());
        assert_eq!(m.syncookies, Some(0));
        assert_eq!(m.max_syn_backlog, Some(128));
        assert_eq!(m.somaxconn, Some(16));
        assert_eq!(m.synack_retries, Some(5));
        // Malformed: unknown, not an error.
        assert_eq!(m.timestamps, None);
        assert_eq!(m.abort_on_overflow, Some(1));
        assert_eq!((m.conntrack_max, m.conntrack_count), (Some(1000), Some(900)));
        assert_eq!((m.mem_total_kib, m.mem_available_kib), (Some(1_024_000), Some(512_000)));
        assert_eq!(m.counter("TCPReqQFullDrop"), 1900);
        assert_eq!(m.counter("ListenDrops"), 1900);
        assert_eq!(m.counter("SyncookiesSent"), 0);
        assert_eq!(m.counters.len(), 7);
        let l = m.listeners.as_ref().unwrap();
        assert_eq!((l.len(), l[0].port, l[0].backlog), (1, 25, None));
        assert!(m.notes.is_empty(), "{:?}", m.notes);
    }

    #[test]
    fn without_conntrack_loaded_its_values_are_unknown() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), false);
        let m = Machine::read_at(dir.path());
        assert_eq!((m.conntrack_max, m.conntrack_count), (None, None));
        assert_eq!(m.syncookies, Some(0));
    }

    #[test]
    fn an_empty_tree_is_all_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let m = Machine::read_at(dir.path());
        assert_eq!(m.syncookies, None);
        assert_eq!(m.listeners, None);
        assert!(m.counters.is_empty());
        assert_eq!(m.notes.len(), 1, "{:?}", m.notes);
    }

    #[test]
    fn the_live_machine_reads() {
        // Whatever this host's settings, /proc/sys/net/core/somaxconn exists on every Linux this runs on, and
        // the socket diagnostics dump needs no privilege.
        let m = Machine::read_live();
        assert!(m.somaxconn.is_some());
        assert!(m.listeners.is_some());
    }
}
