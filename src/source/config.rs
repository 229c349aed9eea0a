//! `[sources]`: what `floodgate run` reads, with its validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::setting::{de_duration, Invalid};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Log files, tailed like `tail -F` (rotation by rename or copytruncate; a missing file is waited for).
    pub files: Vec<PathBuf>,
    /// On first sight of a file, read it from the beginning instead of only what is appended.
    pub from_start: bool,
    /// Kernel records (SYN flooding, conntrack table full) from /dev/kmsg.
    pub kmsg: bool,
    pub kmsg_path: PathBuf,
    /// SNMP counters (/proc/net/netstat) polled every `netstat_interval`: what measures a SYN flood after the
    /// kernel's one warning line.
    pub netstat: bool,
    pub netstat_path: PathBuf,
    #[serde(deserialize_with = "de_duration")]
    pub netstat_interval: Duration,
    /// Conntrack NEW and DESTROY events over netlink (off by default: the busiest source by far).
    pub conntrack: bool,
    /// `journalctl -f -o json` as a child, for hosts without log files; `journald_args` narrows it.
    pub journald: bool,
    pub journald_args: Vec<String>,
}

impl Default for SourcesConfig {
    fn default() -> SourcesConfig {
        SourcesConfig {
            // Debian's rsyslog: MTA and IMAP/POP logs in mail.log, sshd in auth.log.
            files: vec![PathBuf::from("/var/log/mail.log"), PathBuf::from("/var/log/auth.log")],
            from_start: false,
            kmsg: true,
            kmsg_path: PathBuf::from("/dev/kmsg"),
            netstat: true,
            netstat_path: PathBuf::from("/proc/net/netstat"),
            netstat_interval: Duration::from_secs(1),
            conntrack: false,
            journald: false,
            journald_args: Vec::new(),
        }
    }
}

impl SourcesConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.netstat_interval < Duration::from_millis(100) {
            return Err(Invalid::new("sources.netstat_interval", "at least 100ms"));
        }
        Ok(())
    }
}
