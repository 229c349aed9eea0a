//! Whether a source delivers what the kernel says happened. The conntrack source can be configured and still
//! deliver nothing (events switched off with net.netfilter.nf_conntrack_events = 0, a subscription refused, a
//! socket the kernel stopped serving): every `CONNTRACK_CHECK` its events are compared with the connections
//! the kernel created (the `track` chain's counter), and a silent source is a problem said in the log and in
//! `status`.

use std::time::{Duration, Instant};

/// The period over which conntrack's events are compared with the connections the kernel created.
const CONNTRACK_CHECK: Duration = Duration::from_secs(10);
/// New connections within one period that make a silent source a problem (a few could be lost to timing).
const CONNTRACK_SILENT_AFTER: u64 = 10;
/// How often a lasting conntrack problem is logged again.
const CONNTRACK_NAG: Duration = Duration::from_secs(300);

/// The conntrack source's health, from its counters and the kernel's.
#[derive(Debug, Default)]
pub struct ConntrackHealth {
    last: Option<(Instant, u64, u64)>,
    problem: Option<String>,
    last_logged: Option<Instant>,
}

impl ConntrackHealth {
    /// Takes the source's event count, whether it is still waiting for its subscription, and the kernel's count
    /// of new connections.
    pub fn observe(&mut self, events: u64, waiting: bool, tracked: u64) {
        let Some((at, tracked0, events0)) = self.last else {
            self.last = Some((Instant::now(), tracked, events));
            return;
        };
        if at.elapsed() < CONNTRACK_CHECK {
            return;
        }
        self.last = Some((Instant::now(), tracked, events));
        let created = tracked.saturating_sub(tracked0);
        let delivered = events.saturating_sub(events0);
        self.problem = if waiting {
            Some(
                "the conntrack source cannot subscribe to the kernel's events (CAP_NET_ADMIN, nf_conntrack_netlink?)"
                    .into(),
            )
        } else if created >= CONNTRACK_SILENT_AFTER && delivered == 0 {
            let events_sysctl = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_events")
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            let hint = if events_sysctl == "0" {
                "net.netfilter.nf_conntrack_events is 0: the kernel sends no events (sysctl -w net.netfilter.nf_conntrack_events=1)".to_string()
            } else {
                format!("net.netfilter.nf_conntrack_events is {events_sysctl:?}")
            };
            Some(format!(
                "conntrack delivers nothing: the kernel created {created} new TCP connections in the last {}s and the \
                 conntrack source received no event; {hint}",
                CONNTRACK_CHECK.as_secs()
            ))
        } else {
            None
        };
        if let Some(p) = &self.problem {
            if self.last_logged.is_none_or(|t| t.elapsed() >= CONNTRACK_NAG) {
                self.last_logged = Some(Instant::now());
                tracing::error!(problem = %p, "the conntrack source sees nothing; DoS sources cannot be proven real by their handshakes");
            }
        } else {
            self.last_logged = None;
        }
    }

    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}
