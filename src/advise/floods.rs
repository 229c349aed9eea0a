//! Rules about floods that already happened: the SNMP counters since boot, and the store's history of
//! SYN-flood lines and counter rises. A port flooded again and again gets the standing defences: the global
//! limit (or, for SMTP, floodgate's SYN proxy with the kernel settings it needs), with snippets to adapt.

use super::history::History;
use super::{grouped, service_of, Finding, Machine, Severity};
use crate::config::Config;
use crate::event::format_time;
use crate::nft::Rate;

/// Floods on one port within the history's window from which standing defences pay off.
const REPEATED_EPISODES: u32 = 2;
const SMTP: u16 = 25;

pub(super) fn check(m: &Machine, history: Result<&History, &str>, config: &Config, out: &mut Vec<Finding>) {
    counters(m, out);
    match history {
        Ok(h) => past(h, config, out),
        Err(reason) => out.push(Finding::new(
            "history_skipped",
            Severity::Info,
            "flood history",
            reason,
            "run the daemon (or `floodgate parse --save` the kernel log) to record floods",
            "Without the store's record of past SYN floods the advisor cannot tell which ports are flooded \
             repeatedly; everything else above stands.",
        )),
    }
}

fn counters(m: &Machine, out: &mut Vec<Finding>) {
    let dropped = m.counter("TCPReqQFullDrop");
    if dropped > 0 && m.syncookies == Some(0) {
        out.push(
            Finding::new(
                "syn_drops_without_cookies",
                Severity::Critical,
                "TcpExt.TCPReqQFullDrop",
                format!("{} connection requests dropped since boot", grouped(dropped)),
                "net.ipv4.tcp_syncookies = 1",
                format!(
                    "The kernel already turned away {} SYNs because a listener's SYN queue was full and cookies \
                     are off. Each one was a peer (or a spoofed packet) refused; with cookies on, the real ones \
                     would have been answered.",
                    grouped(dropped)
                ),
            )
            .sysctl("net.ipv4.tcp_syncookies", 1),
        );
    }
    let overflows = m.counter("ListenOverflows");
    if overflows > 0 {
        out.push(Finding::new(
            "listen_overflows",
            Severity::Warning,
            "TcpExt.ListenOverflows",
            format!("{} since boot", grouped(overflows)),
            "a larger listen backlog and enough processes to accept",
            "Completed handshakes were dropped because a service's accept queue was full: the service did not \
             accept connections as fast as they came. A spoofed flood cannot do that (it never completes a \
             handshake); real clients or a botnet did. Raise the service's backlog and process limit if memory \
             allows, and limit the sources with floodgate.",
        ));
    }
    let shown: Vec<String> =
        m.counters.iter().filter(|(_, v)| **v > 0).map(|(c, v)| format!("{c} {}", grouped(*v))).collect();
    if !shown.is_empty() {
        out.push(Finding::new(
            "snmp_flood_counters",
            Severity::Info,
            "SNMP counters (TcpExt, this network namespace)",
            shown.join(", "),
            "nothing to change; floodgate's netstat source records each rise",
            "These count since boot. SyncookiesSent and TCPReqQFullDoCookies rise when a SYN queue overflowed \
             and cookies answered; TCPReqQFullDrop when it overflowed with cookies off; SyncookiesRecv counts \
             peers that completed a handshake from a cookie, SyncookiesFailed ACKs with a bad cookie; \
             ListenDrops counts every SYN or connection a listener dropped.",
        ));
    }
}

fn past(h: &History, config: &Config, out: &mut Vec<Finding>) {
    let since = format_time(&h.since);
    for p in &h.ports {
        let service = service_of(config, p.port).map(|s| format!(" ({s})")).unwrap_or_default();
        let subject = format!("port {}{service}", p.port);
        let mut current = format!(
            "{} SYN flood{} on {} day{} since {since} (last {})",
            p.episodes,
            if p.episodes == 1 { "" } else { "s" },
            p.days,
            if p.days == 1 { "" } else { "s" },
            format_time(&p.last)
        );
        if p.dropping > 0 {
            current.push_str(&format!("; {} with cookies off (requests dropped)", p.dropping));
        }
        if p.episodes < REPEATED_EPISODES {
            out.push(Finding::new(
                "syn_flood_seen",
                Severity::Info,
                subject,
                current,
                "nothing yet; a second flood would call for standing defences",
                "One flood is an event; the kernel answered it. The daemon's policy limits a port while a flood \
                 lasts.",
            ));
            continue;
        }
        // SMTP stays off the global limit even where the config forgot to exempt it (smtp_global_limit says so).
        let exempt = config.policy.global_exempt.contains(&p.port) || p.port == SMTP;
        let (recommended, limit) = if exempt {
            (
                format!(
                    "floodgate's SYN proxy for port {} (synproxy = \"auto\", with the kernel settings below); keep \
                     it off the global limit (policy.global_exempt)",
                    p.port
                ),
                format!(
                    "Port {} stays off the global limit: {}, so floodgate answers a spoofed flood there with the \
                     kernel's SYN proxy when the kernel allows it, else with the per-source limit, which spoofed \
                     sources never trip.",
                    p.port,
                    if p.port == SMTP { "it must keep receiving mail from the world" } else { "the config exempts it" }
                ),
            )
        } else {
            (
                format!("the global-limit policy for port {} (synproxy = \"always\" if it must stay open)", p.port),
                format!(
                    "A spoofed flood cannot be narrowed down by source: the global limit (everyone but the \
                     allowlist) is what holds it, so port {} must be in a service and not in \
                     policy.global_exempt, with an admin allowlist.",
                    p.port
                ),
            )
        };
        let why = format!(
            "Floods come back to this port. {limit} The SYN proxy (nft synproxy, kernel 5.3+) answers SYNs for \
             the service from netfilter with cookies that keep window scaling and SACK, and hands the service \
             only completed handshakes: a spoofed flood never reaches its queue, every real client is served. \
             floodgate switches it on and off in its own table; the kernel needs \
             net.netfilter.nf_conntrack_tcp_loose = 0 (conntrack then no longer picks up connections in mid-stream, \
             e.g. after a conntrack flush) and net.ipv4.tcp_timestamps = 1. `floodgate status` says whether it can."
        );
        let mut snippet = String::new();
        if !exempt {
            snippet.push_str(&global_limit_snippet(p.port, config));
            snippet.push('\n');
        }
        snippet.push_str(&synproxy_snippet(p.port));
        out.push(
            Finding::new("repeated_syn_floods", Severity::Warning, subject, current, recommended, why).snippet(snippet),
        );
    }
    // The kernel prints its line once per listening socket: floods that came back on the same socket show only
    // in the counters.
    let overflow = ["TCPReqQFullDoCookies", "TCPReqQFullDrop"];
    let recorded: Vec<String> = overflow
        .iter()
        .filter_map(|c| h.counter(c))
        .map(|c| {
            format!("{} +{} in {} episode(s), last {}", c.counter, grouped(c.total), c.episodes, format_time(&c.last))
        })
        .collect();
    if !recorded.is_empty() {
        out.push(Finding::new(
            "recorded_floods",
            Severity::Info,
            "SYN-queue overflows recorded by the daemon",
            recorded.join("; "),
            "see the per-port findings",
            format!(
                "Counter rises the daemon recorded since {since}. The kernel names the port only the first time \
                 a listening socket floods; later floods on the same socket show only here."
            ),
        ));
    }
}

/// The config that lets the policy put `port` under the global limit, with the rates in force for it.
fn global_limit_snippet(port: u16, config: &Config) -> String {
    let service = service_of(config, port);
    let global = config.port_limits().into_iter().find(|l| l.port == port).map(|l| l.global);
    let (rate, burst) = match global {
        Some(g) => (Rate { count: g.rate, per: g.per }.to_string(), g.burst),
        None => (config.enforce.global_rate.to_string(), config.enforce.global_burst),
    };
    let name = service.map(str::to_string).unwrap_or_else(|| format!("port_{port}"));
    let ports: Vec<u16> = match service.and_then(|s| config.services.get(s)) {
        Some(s) => s.ports.clone(),
        None => vec![port],
    };
    let exempt: Vec<String> = config.policy.global_exempt.iter().filter(|&&p| p != port).map(u16::to_string).collect();
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    // The admin addresses already configured, or a documentation address to replace.
    let allow = if config.allowlist.is_empty() {
        "\"203.0.113.10\"".to_string()
    } else {
        config.allowlist.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
    };
    format!(
        "# floodgate.toml: port {port} may go under the global limit when the policy sees a flood it cannot\n\
         # narrow down (or at once, by hand: floodgate limit global {port} --for 1h)\n\
         allowlist = [{allow}]     # your admin addresses: accepted before any limit\n\
         [services.{name}]\n\
         ports = [{}]\n\
         global_rate = \"{rate}\"    # new connections a second the service can serve during a flood\n\
         global_burst = {burst}\n\
         [policy]\n\
         global_exempt = [{}]       # {port} not listed\n",
        ports.join(", "),
        exempt.join(", ")
    )
}

/// What floodgate's SYN proxy for `port` needs: the kernel settings, and the service setting that keeps it.
fn synproxy_snippet(port: u16) -> String {
    format!(
        "# floodgate's SYN proxy for port {port}: synproxy = \"auto\" (the default) in the port's [services.NAME]\n\
         # switches it on under a spoofed flood, \"always\" keeps it on. The kernel must allow it:\n\
         # /etc/sysctl.d/90-floodgate-synproxy.conf, then `sysctl --system`\n\
         net.netfilter.nf_conntrack_tcp_loose = 0\n\
         net.ipv4.tcp_timestamps = 1\n"
    )
}

#[cfg(test)]
mod tests {
    use super::super::history::tests::{rise, syn_line, t0};
    use super::super::tests::{config, find, good, ids};
    use super::*;
    use crate::event::SynAction;

    fn run(m: &Machine, h: &History, c: &Config) -> Vec<Finding> {
        let mut out = Vec::new();
        check(m, Ok(h), c, &mut out);
        out
    }

    fn history(events: &[crate::event::Event]) -> History {
        History::from_events(events, t0() - chrono::Duration::days(30), 0)
    }

    #[test]
    fn drops_with_cookies_off_are_critical_evidence() {
        let mut m = good();
        m.counters.insert("TCPReqQFullDrop".into(), 1900);
        m.counters.insert("ListenDrops".into(), 1900);
        // Cookies on now: the drops happened while they were off; informational.
        let f = run(&m, &history(&[]), &config());
        assert!(!ids(&f).contains(&"syn_drops_without_cookies"));
        let c = find(&f, "snmp_flood_counters");
        assert_eq!(c.severity, Severity::Info);
        assert_eq!(c.current, "ListenDrops 1,900, TCPReqQFullDrop 1,900");
        m.syncookies = Some(0);
        let f = run(&m, &history(&[]), &config());
        let d = find(&f, "syn_drops_without_cookies");
        assert_eq!(d.severity, Severity::Critical);
        assert_eq!(d.sysctl.as_ref().unwrap().value, "1");
        assert!(d.current.starts_with("1,900 "));
    }

    #[test]
    fn quiet_counters_say_nothing_and_listen_overflows_warn() {
        let f = run(&good(), &history(&[]), &config());
        assert!(f.is_empty(), "{:?}", ids(&f));
        let mut m = good();
        m.counters.insert("ListenOverflows".into(), 12);
        let f = run(&m, &history(&[]), &config());
        assert_eq!(find(&f, "listen_overflows").severity, Severity::Warning);
    }

    #[test]
    fn a_port_flooded_twice_gets_the_global_limit_and_synproxy() {
        let h = history(&[
            syn_line(587, 0, SynAction::Cookies),
            syn_line(587, 30, SynAction::Cookies),
            syn_line(993, 2, SynAction::Cookies),
        ]);
        let f = run(&good(), &h, &config());
        let r = find(&f, "repeated_syn_floods");
        assert_eq!(r.severity, Severity::Warning);
        assert_eq!(r.subject, "port 587 (submission)");
        assert!(r.current.starts_with("2 SYN floods on 2 days"), "{}", r.current);
        assert_eq!(r.recommended, "the global-limit policy for port 587 (synproxy = \"always\" if it must stay open)");
        let snippet = r.snippet.as_deref().unwrap();
        assert!(snippet.contains("net.netfilter.nf_conntrack_tcp_loose = 0"), "{snippet}");
        assert!(snippet.contains("global_rate = \"200/second\""), "{snippet}");
        // A single flood is informational.
        let once = f.iter().find(|f| f.id == "syn_flood_seen").unwrap();
        assert_eq!((once.severity, once.subject.as_str()), (Severity::Info, "port 993 (imap)"));
        assert_eq!(f.iter().filter(|f| f.severity > Severity::Info).count(), 1, "{:?}", ids(&f));
    }

    #[test]
    fn the_config_snippet_is_a_valid_config_that_allows_the_global_limit() {
        let c = config();
        let snippet = global_limit_snippet(587, &c);
        let parsed = Config::from_toml(&snippet, "snippet").unwrap_or_else(|e| panic!("{e}\n{snippet}"));
        assert!(!parsed.policy.global_exempt.contains(&587));
        assert!(parsed.policy.global_exempt.contains(&25));
        assert_eq!(parsed.services["submission"].ports, vec![587]);
        assert_eq!(parsed.allowlist, c.allowlist, "the configured admin addresses are kept");
        // A port no service has gets one of its own.
        let snippet = global_limit_snippet(2525, &c);
        let parsed = Config::from_toml(&snippet, "snippet").unwrap_or_else(|e| panic!("{e}\n{snippet}"));
        assert_eq!(parsed.services["port_2525"].ports, vec![2525]);
    }

    #[test]
    fn smtp_flooded_twice_keeps_the_per_source_limit_and_gets_synproxy() {
        let h = history(&[syn_line(25, 0, SynAction::Dropping), syn_line(25, 5, SynAction::Cookies)]);
        let f = run(&good(), &h, &config());
        let r = find(&f, "repeated_syn_floods");
        assert_eq!(r.subject, "port 25 (smtp)");
        assert!(r.current.contains("1 with cookies off"), "{}", r.current);
        assert!(r.recommended.starts_with("floodgate's SYN proxy for port 25"), "{}", r.recommended);
        let snippet = r.snippet.as_deref().unwrap();
        assert!(!snippet.contains("[policy]"), "no global limit for SMTP: {snippet}");
        assert!(snippet.contains("SYN proxy for port 25") && snippet.contains("nf_conntrack_tcp_loose = 0"));
    }

    #[test]
    fn smtp_is_never_recommended_for_the_global_limit_even_if_the_config_allows_it() {
        let c = Config::from_toml("allowlist = [\"203.0.113.10\"]\n[policy]\nglobal_exempt = []\n", "t").unwrap();
        let h = history(&[syn_line(25, 0, SynAction::Cookies), syn_line(25, 5, SynAction::Cookies)]);
        let f = run(&good(), &h, &c);
        let r = find(&f, "repeated_syn_floods");
        assert!(r.recommended.starts_with("floodgate's SYN proxy for port 25"), "{}", r.recommended);
        assert!(!r.snippet.as_deref().unwrap().contains("[policy]"));
    }

    #[test]
    fn counter_rises_are_reported_and_history_absence_is_one_line() {
        let h = history(&[rise("TCPReqQFullDoCookies", 0, 1000), rise("TCPReqQFullDoCookies", 600, 5)]);
        let f = run(&good(), &h, &config());
        let r = find(&f, "recorded_floods");
        assert_eq!(r.severity, Severity::Info);
        assert!(r.current.starts_with("TCPReqQFullDoCookies +1,005 in 2 episode(s)"), "{}", r.current);
        let mut out = Vec::new();
        check(&good(), Err("no event store"), &config(), &mut out);
        assert_eq!(ids(&out), ["history_skipped"]);
    }
}
