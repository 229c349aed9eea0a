//! fail2ban's rule, per source and service: `maxretry` failures within `findtime` earn a ban for `bantime`.
//! What the daemon applies until the policy engine replaces it. Memory is bounded: at most `MAX_TRACKED`
//! (source, service) pairs, and at most `MAX_PER_PREFIX` from one /24 or /64 (the addresses one attacker can
//! hold); stale ones age out every tick. A full table evicts its least threatening entries (fewest failures,
//! then the longest quiet), counted and logged, so a new attacker is always tracked.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{span, Policy};
use crate::addr::Cidr;
use crate::decision::Decision;
use crate::event::Event;
use crate::service::Services;

use super::JailConfig;

/// An attacker picks its addresses: without a bound, tracking them would be a DoS vector of its own.
pub const MAX_TRACKED: usize = 200_000;
/// Pairs one IPv4 /24 or IPv6 /64 may hold: a /64 alone has enough addresses to fill any table.
pub const MAX_PER_PREFIX: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub maxretry: u32,
    pub findtime: Duration,
    pub bantime: Duration,
}

pub struct Jail {
    default: Rule,
    per_service: HashMap<Arc<str>, Rule>,
    /// Failure times per (source, service), oldest first.
    failures: HashMap<Pair, VecDeque<DateTime<Utc>>>,
    /// Tracked pairs per /24 or /64.
    per_prefix: HashMap<Cidr, usize>,
    max_tracked: usize,
    max_per_prefix: usize,
    /// Pairs forgotten to make room, since the start.
    pub evicted: u64,
}

/// A source and the service it failed on.
type Pair = (IpAddr, Arc<str>);

/// The prefix one holder of `addr` is assumed to control: its /24 or /64.
fn holder(addr: IpAddr) -> Cidr {
    let len = if addr.is_ipv4() { 24 } else { 64 };
    Cidr::new(addr, len).unwrap_or_else(|| Cidr::host(addr))
}

/// One pair of `addr`'s prefix is no longer tracked.
fn untrack(per_prefix: &mut HashMap<Cidr, usize>, addr: IpAddr) {
    let p = holder(addr);
    if let Some(c) = per_prefix.get_mut(&p) {
        *c -= 1;
        if *c == 0 {
            per_prefix.remove(&p);
        }
    }
}

impl Jail {
    pub fn new(default: Rule, per_service: HashMap<Arc<str>, Rule>) -> Jail {
        Jail {
            default,
            per_service,
            failures: HashMap::new(),
            per_prefix: HashMap::new(),
            max_tracked: MAX_TRACKED,
            max_per_prefix: MAX_PER_PREFIX,
            evicted: 0,
        }
    }

    /// Other bounds than the defaults (tests of eviction at a small size).
    pub fn with_bounds(mut self, max_tracked: usize, max_per_prefix: usize) -> Jail {
        self.max_tracked = max_tracked.max(1);
        self.max_per_prefix = max_per_prefix.max(1);
        self
    }

    /// Makes room for one new pair from `prefix`: when the prefix or the table is full, a quarter of what is
    /// full (the prefix's pairs, or the whole table's) goes, least threatening first: fewest failures within
    /// the window, then the longest quiet. One scan per quarter, so eviction costs little per new pair.
    fn make_room(&mut self, prefix: Cidr) {
        let in_prefix = self.per_prefix.get(&prefix).copied().unwrap_or(0);
        let (scope, cap) = if in_prefix >= self.max_per_prefix {
            (Some(prefix), self.max_per_prefix)
        } else if self.failures.len() >= self.max_tracked {
            (None, self.max_tracked)
        } else {
            return;
        };
        let mut victims: Vec<(usize, DateTime<Utc>, Pair)> = self
            .failures
            .iter()
            .filter(|((a, _), _)| scope.is_none_or(|p| p.contains(*a)))
            .map(|(k, t)| (t.len(), t.back().copied().unwrap_or_default(), k.clone()))
            .collect();
        let n = (cap / 4).max(1).min(victims.len());
        victims.select_nth_unstable_by(n.saturating_sub(1), |a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, _, key) in victims.into_iter().take(n) {
            self.forget(&key);
        }
        self.evicted += n as u64;
        match scope {
            Some(p) => tracing::warn!(
                prefix = %p, evicted = n, total = self.evicted,
                "failure table: {p} holds {cap} tracked sources, the most one /24 or /64 may; forgot its least threatening"
            ),
            None => tracing::warn!(
                evicted = n,
                total = self.evicted,
                "failure table full ({cap} sources); forgot the least threatening"
            ),
        }
    }

    fn forget(&mut self, key: &Pair) {
        if self.failures.remove(key).is_some() {
            untrack(&mut self.per_prefix, key.0);
        }
    }

    /// The jail's rule, and each service's with its own values in place of the jail's.
    pub fn from_config(j: &JailConfig, services: &Services) -> Jail {
        let default = Rule { maxretry: j.maxretry, findtime: j.findtime, bantime: j.bantime };
        let per_service = services
            .iter()
            .map(|(name, s)| {
                let rule = Rule {
                    maxretry: s.maxretry.unwrap_or(j.maxretry),
                    findtime: s.findtime.unwrap_or(j.findtime),
                    bantime: s.bantime.unwrap_or(j.bantime),
                };
                (Arc::from(name.as_str()), rule)
            })
            .collect();
        Jail::new(default, per_service)
    }

    /// The default rule's ban duration.
    pub fn bantime(&self) -> Duration {
        self.default.bantime
    }

    fn rule(&self, service: Option<&Arc<str>>) -> Rule {
        service.and_then(|s| self.per_service.get(s)).copied().unwrap_or(self.default)
    }
}

impl Policy for Jail {
    fn observe(&mut self, ev: &Event, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        let (true, Some(addr)) = (ev.failure, ev.addr) else { return };
        let service: Arc<str> = ev.service.clone().unwrap_or_else(|| Arc::from("any"));
        let rule = self.rule(ev.service.as_ref());
        let key = (addr, service.clone());
        if !self.failures.contains_key(&key) {
            let prefix = holder(addr);
            self.make_room(prefix);
            *self.per_prefix.entry(prefix).or_default() += 1;
        }
        let times = self.failures.entry(key.clone()).or_default();
        // Dovecot's "auth failed, 3 attempts" is three failures in one line.
        for _ in 0..ev.count.clamp(1, 1000) {
            times.push_back(ev.time);
        }
        let window_start = ev.time - span(rule.findtime);
        while times.front().is_some_and(|t| *t < window_start) {
            times.pop_front();
        }
        if (times.len() as u64) < u64::from(rule.maxretry) {
            return;
        }
        let n = times.len();
        self.forget(&key);
        // Counted on the events' own times (a backlog read after a restart keeps its pace); a ban whose time
        // would already be over is not made.
        let until = ev.time + span(rule.bantime);
        if until <= now {
            return;
        }
        out.push(Decision::Ban {
            cidr: Cidr::host(addr),
            until: Some(until),
            reason: format!(
                "{n} {service} failures within {} (last: {})",
                humantime::format_duration(rule.findtime),
                ev.rule
            ),
            origin: format!("jail:{service}"),
            figures: Some(
                serde_json::json!({
                    "failures": n,
                    "service": service.as_ref(),
                    "findtime_s": rule.findtime.as_secs(),
                    "maxretry": rule.maxretry,
                    "last_rule": ev.rule.as_ref(),
                    "evidence": "application log (a completed handshake)",
                })
                .to_string(),
            ),
        });
    }

    fn tick(&mut self, now: DateTime<Utc>, _out: &mut Vec<Decision>) {
        let longest = self.per_service.values().map(|r| r.findtime).chain([self.default.findtime]).max();
        let horizon = now - span(longest.unwrap_or_default());
        let per_prefix = &mut self.per_prefix;
        self.failures.retain(|(addr, _), times| {
            let keep = times.back().is_some_and(|t| *t >= horizon);
            if !keep {
                untrack(per_prefix, *addr);
            }
            keep
        });
    }

    fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn failure(addr: &str, service: &str, at: i64) -> Event {
        let mut e = Event::new(t(at), Kind::AuthFailure, Arc::from("postfix.sasl_auth_failed"));
        e.failure = true;
        e.addr = Some(addr.parse().unwrap());
        e.service = Some(Arc::from(service));
        e
    }

    fn jail() -> Jail {
        let d = Rule { maxretry: 3, findtime: Duration::from_secs(600), bantime: Duration::from_secs(3600) };
        let smtp = Rule { maxretry: 10, ..d };
        Jail::new(d, HashMap::from([(Arc::from("smtp"), smtp)]))
    }

    #[test]
    fn maxretry_failures_within_findtime_ban_for_bantime() {
        let mut j = jail();
        let mut out = Vec::new();
        for (i, at) in [0, 100, 200].iter().enumerate() {
            j.observe(&failure("198.51.100.7", "imap", *at), t(*at), &mut out);
            assert_eq!(out.len(), if i < 2 { 0 } else { 1 });
        }
        let Decision::Ban { cidr, until, origin, .. } = &out[0] else { panic!("{out:?}") };
        assert_eq!(cidr.to_string(), "198.51.100.7");
        assert_eq!(*until, Some(t(200 + 3600)));
        assert_eq!(origin, "jail:imap");
        assert_eq!(j.tracked(), 0, "a ban resets the count");
    }

    #[test]
    fn failures_outside_findtime_and_other_services_do_not_add_up() {
        let mut j = jail();
        let mut out = Vec::new();
        for at in [0, 700, 1400] {
            j.observe(&failure("198.51.100.7", "imap", at), t(at), &mut out);
        }
        assert!(out.is_empty(), "spread over more than findtime");
        for at in [2000, 2001, 2002] {
            j.observe(&failure("198.51.100.8", "smtp", at), t(at), &mut out);
        }
        assert!(out.is_empty(), "smtp has its own maxretry of 10");
        let mut e = failure("198.51.100.9", "pop3", 3000);
        e.count = 3;
        j.observe(&e, t(3000), &mut out);
        assert_eq!(out.len(), 1, "one line that stands for three attempts");
    }

    #[test]
    fn a_full_table_evicts_the_least_threatening_and_still_bans_a_new_attacker() {
        let mut j = jail().with_bounds(1000, 100);
        let mut out = Vec::new();
        // One IPv6 /64 rotating through addresses, one failure each: bounded to its 100.
        for i in 0..5000u32 {
            let a = format!("2001:db8:1:2::{:x}:{:x}", i >> 16, i & 0xffff);
            j.observe(&failure(&a, "imap", 10), t(10), &mut out);
        }
        assert!(j.tracked() <= 100, "one /64 holds at most its share: {}", j.tracked());
        assert!(j.evicted >= 4900, "evictions are counted: {}", j.evicted);
        // Two failures from a real guesser, then a flood of single failures from many /24s fills the table.
        for at in [20, 21] {
            j.observe(&failure("203.0.113.77", "imap", at), t(at), &mut out);
        }
        for i in 0..3000u32 {
            let a = format!("198.18.{}.{}", i / 200, i % 200 + 1);
            j.observe(&failure(&a, "imap", 30), t(30), &mut out);
        }
        assert!(j.tracked() <= 1000);
        assert!(out.is_empty());
        // The guesser had two failures: kept over the one-failure crowd, its third bans it.
        j.observe(&failure("203.0.113.77", "imap", 40), t(40), &mut out);
        assert_eq!(out.len(), 1, "the two earlier failures survived the eviction");
        // A brand-new attacker is tracked and banned although the table is full.
        for at in [50, 51, 52] {
            j.observe(&failure("203.0.113.99", "imap", at), t(at), &mut out);
        }
        assert_eq!(out.len(), 2, "a new attacker is still banned: {out:?}");
    }

    #[test]
    fn a_backlog_whose_ban_would_be_over_bans_nothing_and_ticks_forget() {
        let mut j = jail();
        let mut out = Vec::new();
        for at in [0, 1, 2] {
            j.observe(&failure("198.51.100.7", "imap", at), t(10_000), &mut out);
        }
        assert!(out.is_empty());
        j.observe(&failure("198.51.100.8", "imap", 9_990), t(10_000), &mut out);
        assert_eq!(j.tracked(), 1);
        j.tick(t(20_000), &mut out);
        assert_eq!(j.tracked(), 0);
    }
}
