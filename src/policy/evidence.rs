//! Spoof evidence: which sources are known to be real, and which addresses cannot be real sources at all.
//!
//! A source that completed a TCP handshake (conntrack ASSURED) or produced any application-level event (an SMTP
//! AUTH failure needs a handshake first) exists. A source seen only as SYNs may be spoofed: banning it punishes
//! an innocent address and fills the set, so SYN-only evidence never bans. An impossible source (a network
//! address like x.x.x.0, a bogon, one of our own addresses) proves that a flood is spoofed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::addr::normalise;
use crate::event::{Event, Kind};

/// Real sources remembered at most: beyond it the stalest are forgotten (a forgotten real source only loses
/// the right to be banned on conntrack evidence alone; log failures still ban it).
pub const MAX_REAL: usize = 100_000;

pub struct Evidence {
    real: HashMap<IpAddr, DateTime<Utc>>,
    keep: Duration,
    /// When a full table was last pruned: at most once a minute, so a full table costs O(1) per event, not a
    /// scan (a botnet with real handshakes must not slow the engine to a crawl).
    last_prune: Option<DateTime<Utc>>,
}

impl Evidence {
    pub fn new(keep: Duration) -> Evidence {
        Evidence { real: HashMap::new(), keep, last_prune: None }
    }

    /// Takes what the event proves about its source.
    pub fn observe(&mut self, ev: &Event) {
        let Some(addr) = ev.addr else { return };
        let proves = match ev.kind {
            Kind::ConnDestroy => ev.assured == Some(true),
            Kind::ConnAssured => true,
            Kind::ConnNew | Kind::SynFlood | Kind::KernelCounter | Kind::ConntrackTableFull => false,
            // Every log event of an MTA, IMAP/POP server or sshd comes after a completed handshake.
            _ => true,
        };
        if !proves {
            return;
        }
        let addr = normalise(addr);
        if let Some(seen) = self.real.get_mut(&addr) {
            if ev.time > *seen {
                *seen = ev.time;
            }
            return;
        }
        if self.real.len() >= MAX_REAL {
            if self.last_prune.is_some_and(|t| ev.time - t < chrono::Duration::seconds(60)) {
                return;
            }
            self.last_prune = Some(ev.time);
            self.forget_before(ev.time - super::span(self.keep));
            if self.real.len() >= MAX_REAL {
                return;
            }
        }
        self.real.insert(addr, ev.time);
    }

    pub fn is_real(&self, addr: IpAddr) -> bool {
        self.real.contains_key(&normalise(addr))
    }

    pub fn forget_before(&mut self, horizon: DateTime<Utc>) {
        self.real.retain(|_, seen| *seen >= horizon);
    }

    pub fn tick(&mut self, now: DateTime<Utc>) {
        self.forget_before(now - super::span(self.keep));
    }

    pub fn len(&self) -> usize {
        self.real.len()
    }

    pub fn is_empty(&self) -> bool {
        self.real.is_empty()
    }
}

/// Why `addr` cannot be a real source on the Internet, if it cannot: a network address (x.x.x.0: a random
/// spoofed source lands on one now and then, a real host never does), a bogon, or one of `ours`.
pub fn impossible(addr: IpAddr, ours: &[IpAddr]) -> Option<&'static str> {
    let addr = normalise(addr);
    if ours.contains(&addr) {
        return Some("one of this server's own addresses");
    }
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            if o[0] == 0 || o[0] == 127 || o[0] >= 224 {
                Some("a bogon (0/8, 127/8, multicast or reserved)")
            } else if o[3] == 0 {
                Some("a network address (x.x.x.0)")
            } else if o[3] == 255 {
                Some("a broadcast address (x.x.x.255)")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if a.is_unspecified() || a.is_loopback() || a.is_multicast() {
                Some("a bogon (unspecified, loopback or multicast)")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::sync::Arc;

    fn ev(kind: Kind, addr: &str, assured: Option<bool>, at: i64) -> Event {
        let mut e = Event::new(Utc.timestamp_opt(1_800_000_000 + at, 0).unwrap(), kind, Arc::from("t"));
        e.addr = Some(addr.parse().unwrap());
        e.assured = assured;
        e
    }

    #[test]
    fn only_a_completed_handshake_or_an_application_event_proves_a_source() {
        let mut ev_ = Evidence::new(Duration::from_secs(3600));
        ev_.observe(&ev(Kind::ConnNew, "198.18.0.1", None, 0));
        ev_.observe(&ev(Kind::ConnDestroy, "198.18.0.2", Some(false), 0));
        assert!(!ev_.is_real("198.18.0.1".parse().unwrap()), "a SYN proves nothing");
        assert!(!ev_.is_real("198.18.0.2".parse().unwrap()), "a handshake that never completed proves nothing");
        ev_.observe(&ev(Kind::ConnDestroy, "198.51.100.3", Some(true), 0));
        ev_.observe(&ev(Kind::AuthFailure, "198.51.100.4", None, 0));
        assert!(ev_.is_real("198.51.100.3".parse().unwrap()));
        assert!(ev_.is_real("::ffff:198.51.100.4".parse().unwrap()), "mapped addresses are the same source");
        ev_.tick(Utc.timestamp_opt(1_800_000_000 + 7200, 0).unwrap());
        assert!(ev_.is_empty(), "forgotten after `keep`");
    }

    #[test]
    fn impossible_sources() {
        let ours: Vec<IpAddr> = vec!["198.51.100.1".parse().unwrap()];
        let i = |s: &str| impossible(s.parse().unwrap(), &ours);
        assert!(i("203.0.113.0").unwrap().contains("network address"));
        assert!(i("127.0.0.5").is_some());
        assert!(i("198.51.100.1").unwrap().contains("own"));
        assert!(i("240.1.2.3").is_some());
        assert_eq!(i("203.0.113.7"), None);
        assert_eq!(i("2001:db8::7"), None);
        assert!(i("::1").is_some());
    }
}
