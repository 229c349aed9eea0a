//! What the store remembers of past SYN floods: per port, the kernel's "Possible SYN flooding" lines grouped
//! into episodes; per SNMP counter, its recorded rises (the daemon's netstat source), also in episodes; and how
//! many allowlist entries were added with `floodgate allow add`.
//!
//! The kernel prints its SYN-flood line once per listening socket, so a line is where a flood began, not how
//! long it lasted; the counter rises are what shows a flood that came back on the same socket.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::event::{Event, Kind, SynAction};
use crate::store::{EventFilter, Store, StoreError};

/// How far back the advisor looks.
pub const WINDOW: Duration = Duration::from_secs(30 * 86400);
/// Lines or rises closer together than this belong to one flood.
pub const EPISODE_GAP: Duration = Duration::from_secs(3600);

/// The SYN-flood history of one local port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortFloods {
    pub port: u16,
    /// Kernel lines recorded (one per listening socket and flood).
    pub lines: u32,
    /// Lines more than [`EPISODE_GAP`] apart count as separate floods.
    pub episodes: u32,
    /// Distinct UTC days with a line.
    pub days: u32,
    /// Lines saying "Dropping request" (cookies were off).
    pub dropping: u32,
    #[serde(serialize_with = "ser_time")]
    pub first: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    pub last: DateTime<Utc>,
}

/// The recorded rises of one SNMP counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterFloods {
    /// The TcpExt name (TCPReqQFullDoCookies, ...).
    pub counter: String,
    pub total: u64,
    pub episodes: u32,
    #[serde(serialize_with = "ser_time")]
    pub first: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    pub last: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct History {
    #[serde(serialize_with = "ser_time")]
    pub since: DateTime<Utc>,
    pub ports: Vec<PortFloods>,
    pub counters: Vec<CounterFloods>,
    /// Entries added with `floodgate allow add` (the config's own are in the config).
    pub stored_allowlist: usize,
}

impl History {
    /// Reads the last [`WINDOW`] before `now` from the store.
    pub fn read(store: &Store, now: DateTime<Utc>) -> Result<History, StoreError> {
        let since = now - chrono::Duration::from_std(WINDOW).unwrap_or_default();
        let mut events = Vec::new();
        for kind in [Kind::SynFlood, Kind::KernelCounter] {
            let f = EventFilter { since: Some(since), kind: Some(kind), ..EventFilter::default() };
            events.extend(store.query_events(&f)?.into_iter().map(|s| s.event));
        }
        Ok(History::from_events(&events, since, store.allowlist()?.len()))
    }

    /// Builds the history from events (any order); events before `since` and of other kinds are ignored.
    pub fn from_events(events: &[Event], since: DateTime<Utc>, stored_allowlist: usize) -> History {
        let mut lines: BTreeMap<u16, Vec<&Event>> = BTreeMap::new();
        let mut rises: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
        for e in events.iter().filter(|e| e.time >= since) {
            match (e.kind, e.port) {
                (Kind::SynFlood, Some(port)) => lines.entry(port).or_default().push(e),
                // `netstat.TCPReqQFullDoCookies`: the counter is what follows the source's prefix.
                (Kind::KernelCounter, _) => {
                    let name = e.rule.rsplit('.').next().unwrap_or(&e.rule);
                    if crate::source::netstat::TRACKED.iter().any(|(n, _)| *n == name) {
                        rises.entry(name).or_default().push(e);
                    }
                }
                _ => {}
            }
        }
        let ports = lines
            .into_iter()
            .map(|(port, mut evs)| {
                evs.sort_by_key(|e| e.time);
                let times: Vec<DateTime<Utc>> = evs.iter().map(|e| e.time).collect();
                PortFloods {
                    port,
                    lines: evs.len() as u32,
                    episodes: episodes(&times),
                    days: times.iter().map(|t| t.date_naive()).collect::<BTreeSet<NaiveDate>>().len() as u32,
                    dropping: evs.iter().filter(|e| e.syn_action == Some(SynAction::Dropping)).count() as u32,
                    first: times[0],
                    last: times[times.len() - 1],
                }
            })
            .collect();
        let counters = rises
            .into_iter()
            .map(|(name, mut evs)| {
                evs.sort_by_key(|e| e.time);
                let times: Vec<DateTime<Utc>> = evs.iter().map(|e| e.time).collect();
                CounterFloods {
                    counter: name.to_string(),
                    total: evs.iter().map(|e| u64::from(e.count)).sum(),
                    episodes: episodes(&times),
                    first: times[0],
                    last: times[times.len() - 1],
                }
            })
            .collect();
        History { since, ports, counters, stored_allowlist }
    }

    pub fn port(&self, port: u16) -> Option<&PortFloods> {
        self.ports.iter().find(|p| p.port == port)
    }

    pub fn counter(&self, name: &str) -> Option<&CounterFloods> {
        self.counters.iter().find(|c| c.counter == name)
    }
}

/// Sorted times into runs separated by more than [`EPISODE_GAP`].
fn episodes(sorted: &[DateTime<Utc>]) -> u32 {
    let gap = chrono::Duration::from_std(EPISODE_GAP).unwrap_or_default();
    match sorted.first() {
        None => 0,
        Some(_) => 1 + sorted.windows(2).filter(|w| w[1] - w[0] > gap).count() as u32,
    }
}

fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::event::format_time(t))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Origin;
    use chrono::TimeZone;
    use std::sync::Arc;

    pub(crate) fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }

    /// A kernel SYN-flood line for `port`, `hours` after t0.
    pub(crate) fn syn_line(port: u16, hours: i64, action: SynAction) -> Event {
        let mut e = Event::new(t0() + chrono::Duration::hours(hours), Kind::SynFlood, Arc::from("kernel.syn_flood_v4"));
        e.port = Some(port);
        e.local_addr = Some("198.51.100.1".parse().unwrap());
        e.syn_action = Some(action);
        e
    }

    pub(crate) fn rise(counter: &str, minutes: i64, count: u32) -> Event {
        let mut e = Event::new(
            t0() + chrono::Duration::minutes(minutes),
            Kind::KernelCounter,
            Arc::from(format!("netstat.{counter}")),
        );
        e.count = count;
        e
    }

    #[test]
    fn lines_group_into_episodes_per_port() {
        let events = [
            syn_line(25, 0, SynAction::Cookies),
            // Same flood, another listener (IPv6) a few minutes later.
            syn_line(25, 0, SynAction::Cookies),
            syn_line(25, 26, SynAction::Dropping),
            syn_line(25, 50, SynAction::Cookies),
            syn_line(587, 3, SynAction::Cookies),
            // Before the window: ignored.
            syn_line(993, -24 * 40, SynAction::Cookies),
        ];
        let h = History::from_events(&events, t0() - chrono::Duration::days(30), 2);
        assert_eq!(h.ports.len(), 2);
        let p = h.port(25).unwrap();
        assert_eq!((p.lines, p.episodes, p.days, p.dropping), (4, 3, 3, 1));
        assert_eq!(p.first, t0());
        assert_eq!(p.last, t0() + chrono::Duration::hours(50));
        assert_eq!(h.port(587).unwrap().episodes, 1);
        assert!(h.port(993).is_none());
        assert_eq!(h.stored_allowlist, 2);
    }

    #[test]
    fn counter_rises_sum_and_group_and_unknown_counters_are_ignored() {
        let events = [
            rise("TCPReqQFullDoCookies", 0, 500),
            rise("TCPReqQFullDoCookies", 1, 700),
            rise("TCPReqQFullDoCookies", 300, 10),
            rise("ListenOverflows", 5, 3),
            // floodgate's own limit counters are not kernel flood evidence of this kind.
            rise("limit_global", 5, 3),
        ];
        let h = History::from_events(&events, t0() - chrono::Duration::days(1), 0);
        let c = h.counter("TCPReqQFullDoCookies").unwrap();
        assert_eq!((c.total, c.episodes), (1210, 2));
        assert_eq!(h.counter("ListenOverflows").unwrap().total, 3);
        assert_eq!(h.counters.len(), 2);
    }

    #[test]
    fn reads_from_the_store() {
        let mut store = Store::open_in_memory().unwrap();
        let origin = Origin { input: Arc::from("kern.log"), line: Some(1) };
        let now = Utc::now();
        let mut old = syn_line(25, 0, SynAction::Cookies);
        old.time = now - chrono::Duration::days(3);
        let mut recent = syn_line(25, 0, SynAction::Dropping);
        recent.time = now - chrono::Duration::hours(2);
        let mut counter = rise("TCPReqQFullDrop", 0, 40);
        counter.time = recent.time;
        let mut ancient = syn_line(587, 0, SynAction::Cookies);
        ancient.time = now - chrono::Duration::days(45);
        let batch: Vec<_> = [old, recent, counter, ancient].into_iter().map(|e| (origin.clone(), e)).collect();
        store.insert_events(&batch).unwrap();
        let h = History::read(&store, now).unwrap();
        assert_eq!(h.ports.len(), 1);
        let p = h.port(25).unwrap();
        assert_eq!((p.lines, p.episodes, p.dropping), (2, 2, 1));
        assert_eq!(h.counter("TCPReqQFullDrop").unwrap().total, 40);
        assert_eq!(h.stored_allowlist, 0);
    }
}
