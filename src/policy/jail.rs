//! fail2ban's rule, per source and service: `maxretry` failures within `findtime` earn a ban for `bantime`.
//! What the daemon applies until the policy engine replaces it. Memory is bounded: at most `MAX_TRACKED`
//! (source, service) pairs; stale ones age out every tick.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{span, Policy};
use crate::addr::Cidr;
use crate::config::Config;
use crate::event::Event;
use crate::store::Decision;

/// An attacker picks its addresses: without a bound, tracking them would be a DoS vector of its own.
pub const MAX_TRACKED: usize = 200_000;

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
    failures: HashMap<(IpAddr, Arc<str>), VecDeque<DateTime<Utc>>>,
    /// Pairs not tracked because the table was full.
    pub untracked: u64,
}

impl Jail {
    pub fn new(default: Rule, per_service: HashMap<Arc<str>, Rule>) -> Jail {
        Jail { default, per_service, failures: HashMap::new(), untracked: 0 }
    }

    pub fn from_config(cfg: &Config) -> Jail {
        let j = &cfg.jail;
        let default = Rule { maxretry: j.maxretry, findtime: j.findtime, bantime: j.bantime };
        let per_service = cfg
            .services
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
        if !self.failures.contains_key(&key) && self.failures.len() >= MAX_TRACKED {
            self.untracked += 1;
            return;
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
        self.failures.remove(&key);
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
        self.failures.retain(|_, times| times.back().is_some_and(|t| *t >= horizon));
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
