//! Rules about floodgate's own config, from a mail server's point of view: the global limit needs an admin
//! allowlist, SMTP must stay reachable, and a handshake lost to a flood is recoverable for mail because MTAs
//! retry.

use super::history::History;
use super::{Finding, Machine, Severity};
use crate::config::Config;

const SMTP: u16 = 25;

pub(super) fn check(m: &Machine, history: Option<&History>, config: &Config, out: &mut Vec<Finding>) {
    allowlist(history, config, out);
    smtp(m, config, out);
}

/// The configured ports the policy may put under the global limit.
fn globally_limitable(config: &Config) -> Vec<u16> {
    let mut ports: Vec<u16> = config
        .services
        .values()
        .flat_map(|s| s.ports.iter().copied())
        .filter(|p| !config.policy.global_exempt.contains(p))
        .collect();
    ports.sort_unstable();
    ports
}

fn allowlist(history: Option<&History>, config: &Config, out: &mut Vec<Finding>) {
    let ports = globally_limitable(config);
    let stored = history.map(|h| h.stored_allowlist).unwrap_or(0);
    if ports.is_empty() || !config.allowlist.is_empty() || stored > 0 {
        return;
    }
    let list = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    let unknown = if history.is_none() { " in the config (the store was not read)" } else { "" };
    out.push(
        Finding::new(
            "global_limit_without_allowlist",
            Severity::Warning,
            "allowlist",
            format!("empty{unknown}; the global limit may apply to ports {list}"),
            "your admin addresses in `allowlist` (or `floodgate allow add ADDR`)",
            "The global limit is one token bucket for every source but the allowlist: during a spoofed flood \
             the admin's own connections compete with the flood's packets and mostly lose, just when the admin \
             needs to get in. Exempt the management addresses before the limit, as the usual iptables advice \
             puts `-s ADMIN -j RETURN` before `-m limit`.",
        )
        .snippet(
            "allowlist = [\"203.0.113.10\", \"2001:db8:1::/48\"]   # in floodgate.toml, before any [section]\n".into(),
        ),
    );
}

fn smtp(m: &Machine, config: &Config, out: &mut Vec<Finding>) {
    let served = config.services.values().any(|s| s.ports.contains(&SMTP));
    if served {
        if config.policy.global_exempt.contains(&SMTP) {
            out.push(Finding::new(
                "smtp_reachable",
                Severity::Info,
                "port 25 (policy.global_exempt)",
                "exempt from the global limit",
                "keep it so",
                "SMTP must keep receiving mail from the whole Internet. Under a flood floodgate limits port 25 per \
                 source, never for everyone at once.",
            ));
        } else {
            out.push(Finding::new(
                "smtp_global_limit",
                Severity::Warning,
                "port 25 (policy.global_exempt)",
                format!("not exempt (global_exempt = {:?})", config.policy.global_exempt),
                "global_exempt = [25]",
                "The global limit drops new connections from everyone alike: on port 25 that is the world's mail. \
                 Peers retry a lost handshake, so a delayed greeting is recoverable, but a port held shut for the \
                 length of a flood bounces nothing and delays everything. Keep SMTP on the per-source limit and \
                 put nft synproxy in front of it if it is flooded repeatedly.",
            ));
        }
    }
    let cookies = if m.cookies_on() {
        "While cookies answer a flood, a peer whose final ACK is lost finds no connection and waits for a \
         greeting that never comes; "
    } else {
        "When a flood fills a listener's queue, peers' SYNs go unanswered; "
    };
    out.push(Finding::new(
        "mail_retries",
        Severity::Info,
        "mail peers",
        "retry after a failed connection",
        "nothing to change",
        format!(
            "{cookies}a sending MTA times out and retries from its queue (Postfix and Exim keep retrying for days), \
             so a flood delays mail but does not lose it. Users' clients (submission, IMAP) simply reconnect. What \
             must not happen is SMTP refused for hours: see port 25's finding."
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::super::tests::{config, empty_history, find, good, ids};
    use super::*;

    fn run(h: Option<&History>, c: &Config) -> Vec<Finding> {
        let mut out = Vec::new();
        check(&good(), h, c, &mut out);
        out
    }

    #[test]
    fn the_preset_with_an_admin_allowlisted_is_informational_only() {
        let f = run(Some(&empty_history()), &config());
        assert!(f.iter().all(|f| f.severity == Severity::Info), "{f:#?}");
        assert_eq!(ids(&f), ["smtp_reachable", "mail_retries"]);
    }

    #[test]
    fn a_global_limit_without_allowlist_warns_unless_the_store_has_entries() {
        let c = Config::default();
        let f = run(Some(&empty_history()), &c);
        let a = find(&f, "global_limit_without_allowlist");
        assert_eq!(a.severity, Severity::Warning);
        assert!(a.current.contains("ports 22, 110, 143, 465, 587, 993, 995, 4190"), "{}", a.current);
        let snippet = a.snippet.as_deref().unwrap();
        let parsed = Config::from_toml(snippet, "snippet").unwrap();
        assert_eq!(parsed.allowlist.len(), 2);
        let mut h = empty_history();
        h.stored_allowlist = 1;
        assert!(!ids(&run(Some(&h), &c)).contains(&"global_limit_without_allowlist"));
        // Unknown store: still a warning, saying so.
        let f = run(None, &c);
        assert!(find(&f, "global_limit_without_allowlist").current.contains("the store was not read"));
        // Every port exempt: no global limit possible, nothing to say.
        let c = Config::from_toml("[services.smtp]\nports = [25]\n", "t").unwrap();
        assert!(!ids(&run(Some(&empty_history()), &c)).contains(&"global_limit_without_allowlist"));
    }

    #[test]
    fn smtp_under_the_global_limit_warns() {
        let c = Config::from_toml("allowlist = [\"203.0.113.10\"]\n[policy]\nglobal_exempt = []\n", "t").unwrap();
        let f = run(Some(&empty_history()), &c);
        let s = find(&f, "smtp_global_limit");
        assert_eq!((s.severity, s.recommended.as_str()), (Severity::Warning, "global_exempt = [25]"));
        assert!(!ids(&f).contains(&"smtp_reachable"));
        // No SMTP service: neither.
        let c = Config::from_toml("[services.imap]\nports = [993]\n[policy]\nglobal_exempt = []\n", "t").unwrap();
        let f = run(Some(&empty_history()), &c);
        assert!(!ids(&f).iter().any(|id| id.starts_with("smtp")));
        assert!(ids(&f).contains(&"mail_retries"));
    }
}
