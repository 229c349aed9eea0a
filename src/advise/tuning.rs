//! Rules about the kernel's settings and queues: SYN cookies, listen backlogs and somaxconn, the SYN backlog,
//! SYN-ACK retries, timestamps, abort_on_overflow, conntrack's table and what a flood can cost in memory.
//!
//! Thresholds are constants here, each with the reason for its value; the `why` of every finding says it again
//! in the operator's terms.

use super::listeners::Listener;
use super::{grouped, human_bytes, service_of, Finding, Machine, Severity};
use crate::config::Config;

/// Below this somaxconn caps the backlog services ask for (Go, nginx and Dovecot ask for 511 or more); 4096 is
/// the kernel's default since 5.4.
const SOMAXCONN_SMALL: u32 = 1024;
const SOMAXCONN_RECOMMENDED: u32 = 4096;
/// A public listener whose queue fills after fewer half-open handshakes than this overflows on any burst.
/// Postfix's default (100) stays above it.
const LISTEN_BACKLOG_SMALL: u32 = 64;
const LISTEN_BACKLOG_RECOMMENDED: u32 = 128;
/// With cookies off, the kernel drops unproven peers once the SYN queue passes 3/4 of this.
const SYN_BACKLOG_SMALL: u32 = 1024;
const SYN_BACKLOG_RECOMMENDED: u32 = 4096;
/// Two retries: a half-open entry lives 7 s instead of 63 s at the default 5.
const SYNACK_RETRIES_MAX: u32 = 2;
/// Shares of nf_conntrack_max in use from which new connections are at risk.
const CONNTRACK_WARNING: f64 = 0.5;
const CONNTRACK_CRITICAL: f64 = 0.8;
/// Kernel memory per half-open request (the request_sock_TCP slab object on 6.x) and per conntrack entry
/// (nf_conntrack object plus its extensions), rounded up.
const REQUEST_SOCK_BYTES: u64 = 320;
const CONNTRACK_ENTRY_BYTES: u64 = 320;
/// Worst-case flood memory above this share of MemAvailable is worth a warning.
const MEMORY_SHARE_WARNING: u64 = 4;

pub(super) fn check(m: &Machine, config: &Config, out: &mut Vec<Finding>) {
    syncookies(m, out);
    queues(m, config, out);
    syn_backlog(m, out);
    synack_retries(m, out);
    timestamps(m, out);
    abort_on_overflow(m, out);
    conntrack(m, out);
    memory(m, out);
}

const SYNCOOKIES: &str = "net.ipv4.tcp_syncookies";

fn syncookies(m: &Machine, out: &mut Vec<Finding>) {
    match m.syncookies {
        Some(0) => out.push(
            Finding::new(
                "syncookies_off",
                Severity::Critical,
                SYNCOOKIES,
                "0 (off)",
                "1",
                "With cookies off, once a listener's SYN queue is full every further SYN is dropped, real peers' \
                 included: a spoofed flood of a few hundred packets a second takes the port off the net. With 1 \
                 the kernel answers from a cookie only when the queue overflows, and a cookie costs no memory: the \
                 connection's state travels in the SYN-ACK's sequence number. Turning cookies off does not save \
                 memory either (see memory_for_floods).",
            )
            .sysctl(SYNCOOKIES, 1),
        ),
        Some(2) => out.push(
            Finding::new(
                "syncookies_always",
                Severity::Warning,
                SYNCOOKIES,
                "2 (always)",
                "1",
                "2 answers every SYN with a cookie, flood or not: every connection has its MSS rounded to one of \
                 four values and loses window scaling and SACK unless timestamps are on. The kernel then never \
                 prints \"Possible SYN flooding\" (floodgate's trigger) and counts every connection as \
                 TCPReqQFullDoCookies, so a flood can no longer be told from normal traffic. 1 gives the same \
                 protection, only when a queue overflows.",
            )
            .sysctl(SYNCOOKIES, 1),
        ),
        _ => {}
    }
}

/// somaxconn and the listeners' backlogs.
fn queues(m: &Machine, config: &Config, out: &mut Vec<Finding>) {
    let Some(listeners) = m.listeners.as_ref() else { return };
    let public: Vec<&Listener> = listeners.iter().filter(|l| !l.is_loopback()).collect();
    let small_cap = m.somaxconn.filter(|&s| s < SOMAXCONN_SMALL);
    let capped: Vec<&Listener> = match small_cap {
        Some(max) => dedup(public.iter().copied().filter(|l| l.backlog == Some(max)).collect()),
        None => Vec::new(),
    };
    if let Some(max) = small_cap {
        if capped.is_empty() {
            out.push(Finding::new(
                "somaxconn_small",
                Severity::Info,
                "net.core.somaxconn",
                max.to_string(),
                format!("{SOMAXCONN_RECOMMENDED} before a service needs more"),
                format!(
                    "No public listener is at the cap now, but any service that asks for a backlog above {max} \
                     gets {max}. {SOMAXCONN_RECOMMENDED} is the kernel's default since 5.4."
                ),
            ));
        } else {
            let names = capped.iter().map(|l| l.endpoint()).collect::<Vec<_>>().join(", ");
            out.push(
                Finding::new(
                    "somaxconn_caps_listener",
                    Severity::Warning,
                    "net.core.somaxconn",
                    format!("{max} (caps {names} at {max})"),
                    SOMAXCONN_RECOMMENDED.to_string(),
                    format!(
                        "listen(2) cuts every backlog to somaxconn when the service starts listening, and that \
                         backlog is also the SYN queue's limit: these listeners overflow into cookies (or drops, \
                         with cookies off) after {max} half-open handshakes. Raise it, check the services' own \
                         backlog, and restart them (the cap is applied at listen time): {}",
                        SERVICE_BACKLOGS
                    ),
                )
                .sysctl("net.core.somaxconn", SOMAXCONN_RECOMMENDED),
            );
        }
    }
    let small: Vec<&Listener> = dedup(
        public
            .iter()
            .copied()
            .filter(|l| l.backlog.is_some_and(|b| b < LISTEN_BACKLOG_SMALL))
            .filter(|l| !capped.iter().any(|c| c.addr == l.addr && c.port == l.port))
            .collect(),
    );
    for l in small {
        let backlog = l.backlog.unwrap_or(0);
        let then = if m.syncookies == Some(0) {
            "drops every further SYN (cookies are off)"
        } else {
            "answers with cookies, which lose TCP options"
        };
        let service = service_of(config, l.port).map(|s| format!(" ({s})")).unwrap_or_default();
        out.push(Finding::new(
            "listener_backlog_small",
            Severity::Warning,
            format!("listener {}{service}", l.endpoint()),
            format!("backlog {backlog}"),
            format!("{LISTEN_BACKLOG_RECOMMENDED} or more (the service's own setting)"),
            format!(
                "A listener's backlog is also its SYN queue's limit: after {backlog} half-open handshakes the \
                 kernel {then}: a handful of simultaneous connection attempts is enough. The backlog is set by \
                 the service (and capped by somaxconn): {SERVICE_BACKLOGS} Restart the service after changing it."
            ),
        ));
    }
}

/// Where the common mail services take their listen() backlog from.
const SERVICE_BACKLOGS: &str = "Postfix listens with the larger of the service's maxproc (master.cf) and \
    default_process_limit (100); Dovecot with process_limit x client_limit of the service \
    (service imap-login { process_limit, client_limit }), at most 511.";

/// One entry per address and port (SO_REUSEPORT groups show every member).
fn dedup(mut v: Vec<&Listener>) -> Vec<&Listener> {
    v.sort_by_key(|l| (l.addr, l.port));
    v.dedup_by_key(|l| (l.addr, l.port));
    v
}

fn syn_backlog(m: &Machine, out: &mut Vec<Finding>) {
    let Some(v) = m.max_syn_backlog.filter(|&v| v < SYN_BACKLOG_SMALL) else { return };
    let key = "net.ipv4.tcp_max_syn_backlog";
    if m.syncookies == Some(0) {
        out.push(
            Finding::new(
                "syn_backlog_small",
                Severity::Warning,
                key,
                v.to_string(),
                SYN_BACKLOG_RECOMMENDED.to_string(),
                format!(
                    "With cookies off this decides who is dropped: once a SYN queue holds more than {} requests \
                     (3/4 of {v}), SYNs from peers not seen before are dropped. It costs ~{REQUEST_SOCK_BYTES} \
                     bytes per half-open entry, and only while the entries live.",
                    v - v / 4
                ),
            )
            .sysctl(key, SYN_BACKLOG_RECOMMENDED),
        );
    } else {
        out.push(Finding::new(
            "syn_backlog_small",
            Severity::Info,
            key,
            v.to_string(),
            format!("{SYN_BACKLOG_RECOMMENDED} if cookies are ever turned off"),
            "With cookies on it does not limit anything (the listen backlog does); it only matters with \
             tcp_syncookies = 0.",
        ));
    }
}

/// Seconds a half-open entry lives with `retries` SYN-ACK retransmissions (1 s, doubling, plus the last wait).
fn half_open_lifetime_secs(retries: u32) -> u64 {
    (1u64 << (retries.min(20) + 1)) - 1
}

fn synack_retries(m: &Machine, out: &mut Vec<Finding>) {
    let Some(v) = m.synack_retries.filter(|&v| v > SYNACK_RETRIES_MAX) else { return };
    let key = "net.ipv4.tcp_synack_retries";
    let (now, then) = (half_open_lifetime_secs(v), half_open_lifetime_secs(SYNACK_RETRIES_MAX));
    out.push(
        Finding::new(
            "synack_retries_high",
            Severity::Warning,
            key,
            v.to_string(),
            SYNACK_RETRIES_MAX.to_string(),
            format!(
                "The SYN-ACK is resent after 1, 2, 4, ... seconds: with {v} retries a half-open entry holds its \
                 place in the SYN queue for {now} s. A spoofed source never answers, so every spoofed SYN holds \
                 it that long; with {SYNACK_RETRIES_MAX} the entry is gone after {then} s, and the same flood \
                 fills a {}-times smaller part of the queue. A real peer whose SYN-ACK was lost resends its SYN.",
                now / then
            ),
        )
        .sysctl(key, SYNACK_RETRIES_MAX),
    );
}

fn timestamps(m: &Machine, out: &mut Vec<Finding>) {
    if m.timestamps != Some(0) || !m.cookies_on() {
        return;
    }
    let key = "net.ipv4.tcp_timestamps";
    out.push(
        Finding::new(
            "timestamps_off_with_cookies",
            Severity::Warning,
            key,
            "0 (off)",
            "1",
            "A cookie has room only for the MSS (rounded to one of four values); window scaling, SACK and ECN \
             are kept in the TCP timestamp. With timestamps off, every connection answered from a cookie during \
             a flood loses them: slow transfers for the whole connection. nft synproxy needs timestamps too.",
        )
        .sysctl(key, 1),
    );
}

fn abort_on_overflow(m: &Machine, out: &mut Vec<Finding>) {
    if m.abort_on_overflow != Some(1) {
        return;
    }
    let key = "net.ipv4.tcp_abort_on_overflow";
    out.push(
        Finding::new(
            "abort_on_overflow",
            Severity::Warning,
            key,
            "1",
            "0",
            "With 1, a completed handshake that finds the accept queue full is answered with a reset: a burst \
             becomes refused connections, which a sending MTA logs as a failure. With 0 the final ACK is \
             ignored, the peer resends it, and it gets in as soon as the service catches up.",
        )
        .sysctl(key, 0),
    );
}

fn conntrack(m: &Machine, out: &mut Vec<Finding>) {
    // Without the module loaded there is no table to fill: nothing to say.
    let (Some(max), Some(count)) = (m.conntrack_max, m.conntrack_count) else { return };
    if max == 0 {
        return;
    }
    let share = count as f64 / max as f64;
    let key = "net.netfilter.nf_conntrack_max";
    let current = format!("{} of {} entries in use ({:.0}%)", grouped(count), grouped(max), share * 100.0);
    let raise = (max * 2).max(262_144);
    let why = format!(
        "When the table is full the kernel drops new connections (\"nf_conntrack: table full, dropping packet\"), \
         whoever they come from. A spoofed flood through a stateful firewall creates one entry per SYN. \
         floodgate's own drops happen at raw priority, before conntrack, so what it drops never takes an entry; \
         raise the table for what gets through. Each entry costs ~{CONNTRACK_ENTRY_BYTES} bytes ({} for {}).",
        human_bytes(raise * CONNTRACK_ENTRY_BYTES),
        grouped(raise)
    );
    let severity = if share > CONNTRACK_CRITICAL {
        Severity::Critical
    } else if share > CONNTRACK_WARNING {
        Severity::Warning
    } else {
        out.push(Finding::new(
            "conntrack_usage",
            Severity::Info,
            key,
            current,
            "nothing to change",
            "Enough room: the table is less than half full.",
        ));
        return;
    };
    out.push(Finding::new("conntrack_near_full", severity, key, current, raise.to_string(), why).sysctl(key, raise));
}

fn memory(m: &Machine, out: &mut Vec<Finding>) {
    let Some(available_kib) = m.mem_available_kib else { return };
    let available = available_kib * 1024;
    let listeners = m.listeners.as_deref().unwrap_or_default();
    // A listener's backlog bounds its half-open requests (beyond it: cookies or drops). Unknown: somaxconn.
    let fallback = u64::from(m.somaxconn.unwrap_or(SOMAXCONN_RECOMMENDED));
    let backlogs: u64 = listeners.iter().map(|l| l.backlog.map(u64::from).unwrap_or(fallback)).sum();
    let half_open = backlogs * REQUEST_SOCK_BYTES;
    let table = m.conntrack_max.unwrap_or(0) * CONNTRACK_ENTRY_BYTES;
    let worst = half_open + table;
    let mut current = format!(
        "{} available; a flood can pin {} of half-open requests ({} listener{}, backlogs totalling {})",
        human_bytes(available),
        human_bytes(half_open),
        listeners.len(),
        if listeners.len() == 1 { "" } else { "s" },
        grouped(backlogs)
    );
    if m.conntrack_max.is_some() {
        current.push_str(&format!(" and {} for a full conntrack table", human_bytes(table)));
    }
    let why = "SYN cookies cost no memory per connection: that is their point. What a SYN flood can pin in the \
               kernel is one small request per half-open entry (at most a listener's backlog each) and one \
               conntrack entry per tracked connection, the figures above. When a server swaps during a flood \
               with cookies on, the memory most likely went to what accepts the connections cookies let \
               through: a web or mail server that starts a process per connection up to its limit. Turning \
               cookies off hides that by dropping connections at the SYN queue, real peers' included. Size the \
               services' process limits to memory (Apache MaxRequestWorkers, Postfix default_process_limit, \
               Dovecot process_limit) and let floodgate limit the flood.";
    let (severity, recommended) = if worst > available / MEMORY_SHARE_WARNING {
        (Severity::Warning, "more memory, or a smaller nf_conntrack_max and backlogs; keep cookies on")
    } else {
        (Severity::Info, "keep cookies on; size the services' process limits to memory")
    };
    out.push(Finding::new("memory_for_floods", severity, "MemAvailable", current, recommended, why));
}

#[cfg(test)]
mod tests {
    use super::super::tests::{config, find, good, ids, listener};
    use super::*;

    fn run(m: &Machine) -> Vec<Finding> {
        let mut out = Vec::new();
        check(m, &config(), &mut out);
        out
    }

    fn loud(f: &[Finding]) -> Vec<&'static str> {
        f.iter().filter(|f| f.severity > Severity::Info).map(|f| f.id).collect()
    }

    #[test]
    fn good_settings_are_quiet() {
        assert_eq!(loud(&run(&good())), Vec::<&str>::new());
    }

    #[test]
    fn syncookies_off_is_critical_and_always_is_a_warning() {
        let mut m = good();
        m.syncookies = Some(0);
        let f = find(&run(&m), "syncookies_off").clone();
        assert_eq!((f.severity, f.recommended.as_str()), (Severity::Critical, "1"));
        assert_eq!(f.sysctl.unwrap().key, "net.ipv4.tcp_syncookies");
        m.syncookies = Some(2);
        let f = run(&m);
        let a = find(&f, "syncookies_always");
        assert_eq!((a.severity, a.recommended.as_str()), (Severity::Warning, "1"));
        assert!(!ids(&f).contains(&"syncookies_off"));
        m.syncookies = None;
        assert!(!ids(&run(&m)).iter().any(|id| id.starts_with("syncookies")));
    }

    #[test]
    fn a_listener_capped_by_a_small_somaxconn_is_named() {
        let mut m = good();
        m.somaxconn = Some(16);
        m.listeners = Some(vec![
            listener("198.51.100.1", 587, 16),
            listener("198.51.100.1", 587, 16),
            listener("198.51.100.1", 25, 8),
            listener("127.0.0.1", 10025, 16),
        ]);
        let f = run(&m);
        let s = find(&f, "somaxconn_caps_listener");
        assert_eq!((s.severity, s.recommended.as_str()), (Severity::Warning, "4096"));
        assert_eq!(s.current, "16 (caps 198.51.100.1:587 at 16)");
        assert!(s.why.contains("Postfix") && s.why.contains("Dovecot"));
        // The listener asked for 8 itself: its own finding, naming the service from the config.
        let small: Vec<_> = f.iter().filter(|f| f.id == "listener_backlog_small").collect();
        assert_eq!(small.len(), 1, "{:?}", ids(&f));
        assert_eq!(small[0].subject, "listener 198.51.100.1:25 (smtp)");
        assert_eq!(small[0].current, "backlog 8");
        assert!(small[0].sysctl.is_none(), "a service setting, not a sysctl");
        assert!(!ids(&f).contains(&"somaxconn_small"));
    }

    #[test]
    fn a_small_somaxconn_without_capped_listener_is_info_and_a_large_one_is_silent() {
        let mut m = good();
        m.somaxconn = Some(512);
        let f = run(&m);
        assert_eq!(find(&f, "somaxconn_small").severity, Severity::Info);
        assert!(!ids(&f).contains(&"somaxconn_caps_listener"));
        // At the cap, but the cap is large: fine.
        let mut m = good();
        m.listeners = Some(vec![listener("0.0.0.0", 25, 4096)]);
        assert!(!ids(&run(&m)).iter().any(|id| id.starts_with("somaxconn")));
        // Backlogs unknown (read from /proc): no listener finding at all.
        let mut m = good();
        m.somaxconn = Some(16);
        for l in m.listeners.as_mut().unwrap() {
            l.backlog = None;
        }
        let f = run(&m);
        assert_eq!(find(&f, "somaxconn_small").severity, Severity::Info);
        assert!(!ids(&f).contains(&"listener_backlog_small"));
    }

    #[test]
    fn syn_backlog_matters_only_with_cookies_off() {
        let mut m = good();
        m.max_syn_backlog = Some(128);
        assert_eq!(find(&run(&m), "syn_backlog_small").severity, Severity::Info);
        m.syncookies = Some(0);
        let f = run(&m);
        let s = find(&f, "syn_backlog_small");
        assert_eq!((s.severity, s.recommended.as_str()), (Severity::Warning, "4096"));
        assert!(s.why.contains("96 requests"), "{}", s.why);
        m.max_syn_backlog = Some(1024);
        assert!(!ids(&run(&m)).contains(&"syn_backlog_small"));
    }

    #[test]
    fn synack_retries_above_two_warn_with_lifetimes() {
        let mut m = good();
        m.synack_retries = Some(5);
        let f = run(&m);
        let s = find(&f, "synack_retries_high");
        assert_eq!((s.severity, s.recommended.as_str()), (Severity::Warning, "2"));
        assert!(s.why.contains("63 s") && s.why.contains("7 s") && s.why.contains("9-times"), "{}", s.why);
        m.synack_retries = Some(2);
        assert!(!ids(&run(&m)).contains(&"synack_retries_high"));
        assert_eq!(half_open_lifetime_secs(0), 1);
        assert_eq!(half_open_lifetime_secs(255), (1 << 21) - 1);
    }

    #[test]
    fn timestamps_off_warn_only_while_cookies_are_in_use() {
        let mut m = good();
        m.timestamps = Some(0);
        assert_eq!(find(&run(&m), "timestamps_off_with_cookies").recommended, "1");
        m.syncookies = Some(2);
        assert!(ids(&run(&m)).contains(&"timestamps_off_with_cookies"));
        m.syncookies = Some(0);
        assert!(!ids(&run(&m)).contains(&"timestamps_off_with_cookies"));
        // 2: timestamps on without random offsets.
        let mut m = good();
        m.timestamps = Some(2);
        assert!(!ids(&run(&m)).contains(&"timestamps_off_with_cookies"));
    }

    #[test]
    fn abort_on_overflow_warns() {
        let mut m = good();
        m.abort_on_overflow = Some(1);
        let f = run(&m);
        assert_eq!((find(&f, "abort_on_overflow").recommended.as_str()), "0");
    }

    #[test]
    fn conntrack_thresholds_and_an_unloaded_module() {
        let mut m = good();
        m.conntrack_max = Some(1000);
        m.conntrack_count = Some(900);
        let f = run(&m);
        let c = find(&f, "conntrack_near_full");
        assert_eq!((c.severity, c.recommended.as_str()), (Severity::Critical, "262144"));
        assert!(c.why.contains("raw priority"));
        m.conntrack_max = Some(400_000);
        m.conntrack_count = Some(240_000);
        let f = run(&m);
        let c = find(&f, "conntrack_near_full");
        assert_eq!((c.severity, c.recommended.as_str()), (Severity::Warning, "800000"));
        m.conntrack_count = Some(10);
        assert_eq!(find(&run(&m), "conntrack_usage").severity, Severity::Info);
        // Not loaded: skipped, no error, no finding.
        m.conntrack_max = None;
        m.conntrack_count = None;
        assert!(!ids(&run(&m)).iter().any(|id| id.starts_with("conntrack")));
        m.conntrack_max = Some(0);
        m.conntrack_count = Some(0);
        assert!(!ids(&run(&m)).iter().any(|id| id.starts_with("conntrack")));
    }

    #[test]
    fn memory_explains_what_a_flood_costs_and_warns_when_it_would_not_fit() {
        let f = run(&good());
        let mem = find(&f, "memory_for_floods");
        assert_eq!(mem.severity, Severity::Info);
        // 4096 + 1024 + 4 backlog entries of 320 bytes; 262,144 conntrack entries of 320 bytes.
        assert!(mem.current.contains("backlogs totalling 5,124"), "{}", mem.current);
        assert!(mem.current.contains("80.0 MiB for a full conntrack table"), "{}", mem.current);
        assert!(mem.why.contains("no memory per connection"));
        let mut m = good();
        m.mem_available_kib = Some(100 << 10);
        assert_eq!(find(&run(&m), "memory_for_floods").severity, Severity::Warning);
        m.mem_available_kib = None;
        assert!(!ids(&run(&m)).contains(&"memory_for_floods"));
    }
}
