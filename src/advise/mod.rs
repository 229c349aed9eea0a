//! `floodgate advise`: reads the machine (sysctls, listeners, SNMP counters, memory), the store's flood history
//! and the config, and explains what to change and why. It never changes the running system.
//!
//! [`advise`] is pure: a [`Machine`] snapshot, the [`History`] and the config in, findings out, so every rule is
//! tested on hand-built inputs. Reading lives in `machine`, `listeners` and `history`; the rules in `tuning`
//! (kernel settings and queues), `floods` (evidence of past floods) and `mail` (the config, from a mail
//! server's point of view); `servers` owns the mail servers' and sshd's own settings (whether failed logins are
//! logged at once and bounded per connection), both their reading and their rules; output in `report` (text)
//! and `sysctl_conf` (the sysctl.d drop-in).

pub mod history;
pub mod listeners;
pub mod machine;
pub mod report;
pub mod servers;
pub mod sysctl_conf;

mod floods;
mod mail;
mod tuning;

use serde::Serialize;

use crate::config::Config;
pub use history::History;
pub use machine::Machine;

/// How much a finding matters. Informational findings never ask for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A sysctl the finding recommends, for the drop-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub key: &'static str,
    pub value: String,
}

/// One thing the advisor has to say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier (`syncookies_off`), for scripts and tests.
    pub id: &'static str,
    pub severity: Severity,
    /// What it is about: a sysctl, a listener, a port, a config key.
    pub subject: String,
    pub current: String,
    pub recommended: String,
    pub why: String,
    /// The sysctl to set, when the recommendation is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysctl: Option<Setting>,
    /// A config or nftables snippet to adapt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
}

impl Finding {
    fn new(
        id: &'static str,
        severity: Severity,
        subject: impl Into<String>,
        current: impl Into<String>,
        recommended: impl Into<String>,
        why: impl Into<String>,
    ) -> Finding {
        Finding {
            id,
            severity,
            subject: subject.into(),
            current: current.into(),
            recommended: recommended.into(),
            why: why.into(),
            sysctl: None,
            snippet: None,
        }
    }

    fn sysctl(mut self, key: &'static str, value: impl ToString) -> Finding {
        self.sysctl = Some(Setting { key, value: value.to_string() });
        self
    }

    fn snippet(mut self, text: String) -> Finding {
        self.snippet = Some(text);
        self
    }
}

/// Everything the advisor finds, most severe first (in rule order within a severity). `history` is the store's
/// past, or why it could not be read.
pub fn advise(machine: &Machine, history: Result<&History, &str>, config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    tuning::check(machine, config, &mut out);
    floods::check(machine, history, config, &mut out);
    mail::check(machine, history.ok(), config, &mut out);
    servers::check(&machine.servers, config, &mut out);
    // Stable: within a severity the rules keep their order, which goes from cause to consequence.
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// The service the config names for a port, if any.
fn service_of(config: &Config, port: u16) -> Option<&str> {
    config.services.iter().find(|(_, s)| s.ports.contains(&port)).map(|(n, _)| n.as_str())
}

/// `1,234,567`: counters and byte counts read better grouped.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as KiB, MiB or GiB with one decimal.
fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::advise::listeners::Listener;
    use std::collections::BTreeMap;

    /// A machine with floodgate's recommended settings, one public listener on 25 with a large backlog, no
    /// conntrack pressure and no flood since boot: nothing to warn about.
    pub(crate) fn good() -> Machine {
        Machine {
            syncookies: Some(1),
            max_syn_backlog: Some(4096),
            somaxconn: Some(4096),
            synack_retries: Some(2),
            timestamps: Some(1),
            abort_on_overflow: Some(0),
            conntrack_max: Some(262_144),
            conntrack_count: Some(100),
            mem_total_kib: Some(4 << 20),
            mem_available_kib: Some(3 << 20),
            counters: crate::source::netstat::TRACKED
                .iter()
                .map(|(c, _)| (c.to_string(), 0))
                .collect::<BTreeMap<_, _>>(),
            listeners: Some(vec![
                listener("0.0.0.0", 25, 4096),
                listener("::", 587, 1024),
                // Loopback listeners are out of a flood's reach: their small backlogs never matter.
                listener("127.0.0.1", 10025, 4),
            ]),
            servers: servers::tests::good(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn listener(addr: &str, port: u16, backlog: u32) -> Listener {
        Listener { addr: addr.parse().unwrap(), port, backlog: Some(backlog), accept_queue: 0 }
    }

    /// A config whose global limit is possible (the preset) with an admin on the allowlist.
    pub(crate) fn config() -> Config {
        Config::from_toml("allowlist = [\"203.0.113.10\"]\n", "t.toml").unwrap()
    }

    pub(crate) fn empty_history() -> History {
        History::from_events(&[], history::tests::t0(), 0)
    }

    pub(crate) fn ids(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.id).collect()
    }

    pub(crate) fn find<'a>(findings: &'a [Finding], id: &str) -> &'a Finding {
        findings.iter().find(|f| f.id == id).unwrap_or_else(|| panic!("no finding {id} in {:?}", ids(findings)))
    }

    #[test]
    fn good_settings_give_no_warning() {
        let h = empty_history();
        let f = advise(&good(), Ok(&h), &config());
        let loud: Vec<_> = f.iter().filter(|f| f.severity > Severity::Info).collect();
        assert!(loud.is_empty(), "{loud:#?}");
        // The informational ones are there: the advisor explains even when nothing is wrong.
        for id in ["memory_for_floods", "smtp_reachable", "mail_retries", "conntrack_usage"] {
            find(&f, id);
        }
    }

    #[test]
    fn findings_come_most_severe_first() {
        let mut m = good();
        m.syncookies = Some(0);
        m.synack_retries = Some(5);
        // A warning from the flood rules, which run after the tuning rules' info findings: only the sort puts
        // it before them.
        m.counters.insert("ListenOverflows".into(), 1);
        let h = empty_history();
        let f = advise(&m, Ok(&h), &config());
        assert_eq!(f[0].id, "syncookies_off");
        assert!(f.windows(2).all(|w| w[0].severity >= w[1].severity), "{:?}", ids(&f));
    }

    #[test]
    fn no_history_is_one_info_line() {
        let f = advise(&good(), Err("no event store at /var/lib/floodgate/floodgate.db"), &config());
        let h = find(&f, "history_skipped");
        assert_eq!(h.severity, Severity::Info);
        assert!(h.current.contains("no event store"), "{h:?}");
        assert_eq!(f.iter().filter(|f| f.id == "history_skipped").count(), 1);
    }

    #[test]
    fn a_proc_tree_without_conntrack_skips_the_conntrack_finding_and_reports_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        machine::tests::fixture(dir.path(), false);
        let m = Machine::read_at(dir.path());
        let h = empty_history();
        let f = advise(&m, Ok(&h), &config());
        assert!(!ids(&f).iter().any(|id| id.starts_with("conntrack")), "{:?}", ids(&f));
        // The same tree with conntrack at 90%: critical.
        machine::tests::fixture(dir.path(), true);
        let f = advise(&Machine::read_at(dir.path()), Ok(&h), &config());
        assert_eq!(find(&f, "conntrack_near_full").severity, Severity::Critical);
        // What the fixture says otherwise: cookies off with drops, retries at 5, abort on overflow.
        for id in ["syncookies_off", "syn_drops_without_cookies", "synack_retries_high", "abort_on_overflow"] {
            assert!(find(&f, id).severity > Severity::Info, "{id}");
        }
        // Timestamps did not parse: unknown, so no finding about them.
        assert!(!ids(&f).contains(&"timestamps_off_with_cookies"));
    }

    #[test]
    fn the_servers_settings_reach_the_findings_in_severity_order() {
        let mut m = good();
        let sshd = m.servers.sshd.as_mut().unwrap();
        sshd.insert("loglevel".into(), "QUIET".into());
        sshd.insert("maxauthtries".into(), "6".into());
        m.servers.dovecot.as_mut().unwrap().insert("auth_verbose".into(), "no".into());
        let h = empty_history();
        let f = advise(&m, Ok(&h), &config());
        // The critical one first, before the kernel rules' findings; the warnings before every info.
        assert_eq!(f[0].id, "sshd_loglevel_hides_failures");
        for id in ["sshd_max_auth_tries_high", "dovecot_auth_verbose_off"] {
            assert_eq!(find(&f, id).severity, Severity::Warning);
        }
        assert!(f.windows(2).all(|w| w[0].severity >= w[1].severity), "{:?}", ids(&f));
        // The JSON report carries what was read.
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["servers"]["sshd"]["loglevel"], "QUIET");
        assert_eq!(json["servers"]["postfix"]["main"]["smtpd_client_auth_rate_limit"], "10");
    }

    #[test]
    fn numbers_are_grouped_and_sizes_human() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(80 << 20), "80.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
