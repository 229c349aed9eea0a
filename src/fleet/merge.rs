//! The receiving side's board of the other hosts' verdicts: bucket entries and a clock in, changes of the
//! effective remote bans out. Pure, so it runs on virtual time in tests.
//!
//! For each target the effective ban is the one that ends last among the live verdicts (forever beats any time),
//! remembered with the host it came from. An operator's unblock everywhere overrides every verdict for its target
//! made at or before the unblock, whoever made it; a verdict made after the unblock applies again. The board
//! holds exactly what the bucket's last value per key says, so a board fed the whole bucket afresh (a resync)
//! reaches the same effective set as one fed every change as it came, except where a limit refused an entry.
//!
//! Limits, because every host (or whoever holds its credentials) writes what is read here: a remote host's ban
//! lasts at most `max_bantime`; each host gets a rate of new verdicts; the board holds at most `max_entries`.
//! The operator's own keys (`o.`, `u.`) are trusted as the operator is: not capped, not paced.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::addr::Cidr;
use crate::fleet::verdict::{Entry, Verdict};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The longest a remote host's ban lasts here, counted from when it was made; longer ones (forever
    /// included) are shortened to it.
    pub max_bantime: Duration,
    /// New verdicts per minute taken from each host, after a burst of `per_origin_burst`.
    pub per_origin_rate: u32,
    pub per_origin_burst: u32,
    /// Verdicts and unblocks held at most; new ones beyond are refused.
    pub max_entries: usize,
}

/// A change of the effective remote bans, for the enforcer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The target is banned (newly, or with another end, host or reason).
    Ban { target: Cidr, until: Option<DateTime<Utc>>, host: String, reason: String },
    /// No remote ban of the target is left.
    Lift { target: Cidr },
}

/// Why the board did not take an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The host published new verdicts faster than its rate.
    RateLimited,
    /// The board holds `max_entries` already.
    Full,
    /// The verdict (as capped here) has already ended.
    Expired,
}

/// What one entry did: the changes of the effective set, or why it was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub changes: Vec<Change>,
    pub refused: Option<Refused>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusedCounts {
    pub rate_limited: u64,
    pub full: u64,
    pub expired: u64,
}

/// Refusals since the board was made, in total and per publishing host (the operator's name for `o.` keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub refused: RefusedCounts,
    pub refused_by_host: BTreeMap<String, RefusedCounts>,
    /// Entries from a newer floodgate, skipped.
    pub newer: u64,
}

/// Hosts counted one by one at most; past it (a misconfigured bucket letting anyone write any host's keys) only
/// the totals grow, so the counters cannot take the memory the entry limit protects.
const MAX_COUNTED_HOSTS: usize = 4096;

pub struct Board {
    local_host: String,
    limits: Limits,
    targets: HashMap<Cidr, Target>,
    /// Verdicts and unblocks held, against `max_entries`.
    held: usize,
    /// Per host, the theoretical arrival time (GCRA, nanoseconds since the epoch) of its next verdict.
    pace: HashMap<String, i128>,
    counts: Counts,
}

/// Who wrote a verdict: one key per host per target, and one operator key per target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Publisher {
    Operator,
    Host(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    host: String,
    /// The end enforced here (capped).
    until: Option<DateTime<Utc>>,
    /// The end as published, to know a re-delivery of the same value.
    asked: Option<DateTime<Utc>>,
    made: DateTime<Utc>,
    reason: String,
}

#[derive(Debug, Default)]
struct Target {
    verdicts: BTreeMap<Publisher, Held>,
    /// When the operator's unblock everywhere was made. Overridden verdicts stay held: if the unblock is
    /// withdrawn they apply again, as they would for a fresh reader of the bucket.
    unblocked: Option<DateTime<Utc>>,
}

impl Target {
    fn effective(&self) -> Option<&Held> {
        // `max_by_key` keeps the last of equals: ties go to the publisher that sorts last, whatever the order
        // the entries came in.
        self.verdicts
            .values()
            .filter(|h| self.unblocked.is_none_or(|u| h.made > u))
            .max_by_key(|h| (h.until.is_none(), h.until))
    }

    fn size(&self) -> usize {
        self.verdicts.len() + usize::from(self.unblocked.is_some())
    }
}

impl Board {
    /// `local_host`: this host's name; its own `b.` keys are ignored (its own bans are enforced locally).
    pub fn new(local_host: impl Into<String>, limits: Limits) -> Board {
        Board {
            local_host: local_host.into(),
            limits,
            targets: HashMap::new(),
            held: 0,
            pace: HashMap::new(),
            counts: Counts::default(),
        }
    }

    pub fn apply(&mut self, entry: Entry, now: DateTime<Utc>) -> Outcome {
        match entry {
            Entry::Ban(v) if v.host == self.local_host => Outcome::default(),
            Entry::Ban(v) => self.hold(Publisher::Host(v.host.clone()), v, now),
            Entry::BlockEverywhere(v) => self.hold(Publisher::Operator, v, now),
            Entry::Lift { host, .. } if host == self.local_host => Outcome::default(),
            Entry::Lift { host, target } => self.edit(target, |t| {
                t.verdicts.remove(&Publisher::Host(host));
            }),
            Entry::BlockWithdrawn { target } => self.edit(target, |t| {
                t.verdicts.remove(&Publisher::Operator);
            }),
            // Unblocks are never refused for room: they come from the operator, and refusing one would keep a
            // ban the operator lifted.
            Entry::UnblockEverywhere { target, made } => self.edit(target, |t| t.unblocked = Some(made)),
            Entry::UnblockWithdrawn { target } => self.edit(target, |t| t.unblocked = None),
            Entry::Newer { .. } => {
                self.counts.newer += 1;
                Outcome::default()
            }
            // Liveness, not a verdict: the member keeps it for `fleet status`.
            Entry::Heartbeat { .. } => Outcome::default(),
        }
    }

    /// Drops the verdicts that have ended, returning the effective bans that went with them. The kernel expires
    /// its own elements; this keeps the board's memory bounded. It walks every target: call it now and then (a
    /// minute), not per entry.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<Change> {
        let ended = |h: &Held| h.until.is_some_and(|u| u <= now);
        let mut due: Vec<Cidr> =
            self.targets.iter().filter(|(_, t)| t.verdicts.values().any(ended)).map(|(c, _)| *c).collect();
        due.sort();
        let mut changes = Vec::new();
        for target in due {
            changes.extend(self.edit(target, |t| t.verdicts.retain(|_, h| !ended(h))).changes);
        }
        // A host whose next arrival is due has a full bucket: forgetting it changes nothing.
        let t = nanos(now);
        self.pace.retain(|_, next| *next > t);
        changes
    }

    /// Every effective remote ban, for a full resync of the kernel's set: target, end, the host it came from.
    pub fn effective(&self) -> impl Iterator<Item = (Cidr, Option<DateTime<Utc>>, &str)> + '_ {
        self.targets.iter().filter_map(|(c, t)| t.effective().map(|h| (*c, h.until, h.host.as_str())))
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Verdicts and unblocks held (for `status`).
    pub fn held(&self) -> usize {
        self.held
    }

    fn hold(&mut self, publisher: Publisher, v: Verdict, now: DateTime<Utc>) -> Outcome {
        let until = match publisher {
            Publisher::Operator => v.until,
            Publisher::Host(_) => Some(self.cap(v.made, v.until, now)),
        };
        let existing = self.targets.get(&v.target).and_then(|t| t.verdicts.get(&publisher));
        if until.is_some_and(|u| u <= now) {
            // The key's last value says the ban is over: an earlier value of it no longer holds either.
            let mut outcome = match existing {
                Some(_) => self.edit(v.target, |t| {
                    t.verdicts.remove(&publisher);
                }),
                None => Outcome::default(),
            };
            outcome.refused = Some(self.refuse(&v.host, Refused::Expired));
            return outcome;
        }
        match existing {
            // The watch delivers a key's value again after a reconnect: no change, and no cost to its host.
            Some(h) if h.asked == v.until && h.made == v.made && h.reason == v.reason && h.host == v.host => {
                return Outcome::default()
            }
            Some(_) => {}
            None if self.held >= self.limits.max_entries => return self.refused(&v.host, Refused::Full),
            None => {}
        }
        if let Publisher::Host(host) = &publisher {
            if !self.pace(host, now) {
                return self.refused(&v.host, Refused::RateLimited);
            }
        }
        let held = Held { host: v.host, until, asked: v.until, made: v.made, reason: v.reason };
        self.edit(v.target, |t| {
            t.verdicts.insert(publisher, held);
        })
    }

    /// A remote ban ends at most `max_bantime` after it was made: counted from `made` so that a resync or a
    /// re-delivery does not push the end further, and from `now` when `made` is ahead (clock skew), so that no
    /// remote ban lasts longer than the cap from now.
    fn cap(&self, made: DateTime<Utc>, until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
        let longest = made
            .min(now)
            .checked_add_signed(crate::policy::span(self.limits.max_bantime))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        until.map_or(longest, |u| u.min(longest))
    }

    /// Takes one verdict from `host`'s allowance (GCRA: a token bucket kept as one time per host).
    fn pace(&mut self, host: &str, now: DateTime<Utc>) -> bool {
        const MINUTE: i128 = 60_000_000_000;
        let interval = match self.limits.per_origin_rate {
            // No refill: the burst is all a host ever gets.
            0 => i128::MAX / 4,
            rate => MINUTE / i128::from(rate),
        };
        // A burst of 0 makes the tolerance negative: every verdict is refused.
        let tolerance = interval.saturating_mul(i128::from(self.limits.per_origin_burst) - 1);
        let t = nanos(now);
        let next = self.pace.get(host).copied().unwrap_or(t).max(t);
        if next - t > tolerance {
            return false;
        }
        self.pace.insert(host.to_string(), next.saturating_add(interval));
        true
    }

    fn refused(&mut self, host: &str, why: Refused) -> Outcome {
        Outcome { changes: Vec::new(), refused: Some(self.refuse(host, why)) }
    }

    fn refuse(&mut self, host: &str, why: Refused) -> Refused {
        let bump = |c: &mut RefusedCounts| match why {
            Refused::RateLimited => c.rate_limited += 1,
            Refused::Full => c.full += 1,
            Refused::Expired => c.expired += 1,
        };
        bump(&mut self.counts.refused);
        let by_host = &mut self.counts.refused_by_host;
        if let Some(c) = by_host.get_mut(host) {
            bump(c);
        } else if by_host.len() < MAX_COUNTED_HOSTS {
            bump(by_host.entry(host.to_string()).or_default());
        }
        why
    }

    /// Changes one target's state and reports how its effective ban changed.
    fn edit(&mut self, target: Cidr, change: impl FnOnce(&mut Target)) -> Outcome {
        let state = self.targets.entry(target).or_default();
        let shown = |t: &Target| t.effective().map(|h| (h.until, h.host.clone(), h.reason.clone()));
        let (before, size_before) = (shown(state), state.size());
        change(state);
        let (after, size_after) = (shown(state), state.size());
        self.held = self.held + size_after - size_before;
        if size_after == 0 {
            self.targets.remove(&target);
        }
        let changes = match after {
            None if before.is_some() => vec![Change::Lift { target }],
            Some((until, host, reason)) if before.as_ref() != Some(&(until, host.clone(), reason.clone())) => {
                vec![Change::Ban { target, until, host, reason }]
            }
            _ => Vec::new(),
        };
        Outcome { changes, refused: None }
    }
}

fn nanos(t: DateTime<Utc>) -> i128 {
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::TimeDelta;
    use proptest::prelude::*;

    use super::*;
    use crate::fleet::verdict::ban_key;

    fn t0() -> DateTime<Utc> {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(secs)
    }

    fn target() -> Cidr {
        "198.51.100.7".parse().unwrap()
    }

    fn generous() -> Limits {
        Limits {
            max_bantime: Duration::from_secs(30 * 86400),
            per_origin_rate: 1_000_000,
            per_origin_burst: 1_000_000,
            max_entries: 1_000_000,
        }
    }

    fn board() -> Board {
        Board::new("mx1", generous())
    }

    /// A ban by `host` of the test target, made at `made` seconds, ending at `until` seconds (`None`: forever).
    fn ban(host: &str, made: i64, until: Option<i64>) -> Entry {
        Entry::Ban(Verdict {
            host: host.into(),
            target: target(),
            until: until.map(at),
            made: at(made),
            reason: format!("{host} says so"),
            origin: "jail".into(),
            figures: None,
        })
    }

    fn block(made: i64, until: Option<i64>) -> Entry {
        match ban("ops", made, until) {
            Entry::Ban(v) => Entry::BlockEverywhere(v),
            _ => unreachable!(),
        }
    }

    fn banned(host: &str, until: Option<i64>) -> Vec<Change> {
        vec![Change::Ban {
            target: target(),
            until: until.map(at),
            host: host.into(),
            reason: format!("{host} says so"),
        }]
    }

    fn lifted() -> Vec<Change> {
        vec![Change::Lift { target: target() }]
    }

    #[test]
    fn the_latest_end_wins_and_a_lift_falls_back_to_the_next() {
        let mut b = board();
        assert_eq!(b.apply(ban("mx2", 0, Some(600)), at(0)).changes, banned("mx2", Some(600)));
        assert_eq!(b.apply(ban("mx3", 0, Some(300)), at(0)).changes, vec![], "an earlier end changes nothing");
        let month = 30 * 86400;
        assert_eq!(b.apply(ban("mx4", 0, None), at(0)).changes, banned("mx4", Some(month)), "forever, capped");
        assert_eq!(b.apply(block(0, None), at(0)).changes, banned("ops", None), "forever beats any time");
        assert_eq!(b.apply(Entry::BlockWithdrawn { target: target() }, at(1)).changes, banned("mx4", Some(month)));
        let lift = |h: &str| Entry::Lift { host: h.into(), target: target() };
        assert_eq!(b.apply(lift("mx4"), at(1)).changes, banned("mx2", Some(600)));
        assert_eq!(b.apply(lift("mx2"), at(1)).changes, banned("mx3", Some(300)));
        assert_eq!(b.apply(lift("mx3"), at(1)).changes, lifted());
        assert_eq!((b.held(), b.effective().count()), (0, 0));
    }

    #[test]
    fn unblock_everywhere_wins_over_host_bans_and_blocks_until_a_later_ban() {
        let mut b = board();
        b.apply(ban("mx2", 0, Some(600)), at(0));
        b.apply(block(0, None), at(0));
        let unblock = Entry::UnblockEverywhere { target: target(), made: at(10) };
        assert_eq!(b.apply(unblock, at(10)).changes, lifted());
        assert_eq!(b.apply(ban("mx3", 10, Some(900)), at(20)).changes, vec![], "made at the unblock: overridden");
        assert_eq!(b.apply(ban("mx3", 11, Some(900)), at(20)).changes, banned("mx3", Some(900)), "made after it");
        let withdrawn = Entry::UnblockWithdrawn { target: target() };
        assert_eq!(b.apply(withdrawn, at(30)).changes, banned("ops", None), "overridden verdicts apply again");
    }

    #[test]
    fn a_remote_ban_is_capped_from_when_it_was_made() {
        let mut b = Board::new("mx1", Limits { max_bantime: Duration::from_secs(3600), ..generous() });
        assert_eq!(b.apply(ban("mx2", 0, None), at(60)).changes, banned("mx2", Some(3600)), "forever is capped");
        assert_eq!(b.apply(ban("mx2", 0, None), at(1800)).changes, vec![], "a re-delivery does not extend it");
        assert_eq!(b.apply(ban("mx2", 0, Some(7200)), at(1800)).changes, vec![], "capped to the same end");
        let skewed = b.apply(ban("mx3", 120, None), at(60)).changes;
        assert_eq!(skewed, banned("mx3", Some(3660)), "made ahead of the clock: capped from now");
        assert_eq!(b.apply(block(0, None), at(60)).changes, banned("ops", None), "the operator is not capped");
        assert_eq!(b.apply(ban("mx4", -7200, None), at(0)).refused, Some(Refused::Expired), "capped end passed");
    }

    #[test]
    fn own_keys_are_ignored() {
        let mut b = board();
        assert_eq!(b.apply(ban("mx1", 0, None), at(0)), Outcome::default());
        assert_eq!(b.apply(Entry::Lift { host: "mx1".into(), target: target() }, at(0)), Outcome::default());
        assert_eq!(b.held(), 0);
        let block = match ban("mx1", 0, None) {
            Entry::Ban(v) => Entry::BlockEverywhere(v),
            _ => unreachable!(),
        };
        assert_eq!(b.apply(block, at(0)).changes, banned("mx1", None), "an operator's block applies here too");
    }

    #[test]
    fn a_host_over_its_rate_is_refused_and_counted() {
        let limits = Limits { per_origin_rate: 60, per_origin_burst: 2, ..generous() };
        let mut b = Board::new("mx1", limits);
        assert_eq!(b.apply(ban("mx2", 0, Some(600)), at(0)).refused, None);
        assert_eq!(b.apply(ban("mx2", 0, Some(700)), at(0)).refused, None);
        assert_eq!(b.apply(ban("mx2", 0, Some(800)), at(0)).refused, Some(Refused::RateLimited));
        assert_eq!(b.apply(ban("mx2", 0, Some(700)), at(0)).refused, None, "a re-delivery costs nothing");
        assert_eq!(b.apply(ban("mx3", 0, Some(900)), at(0)).refused, None, "each host has its own allowance");
        assert_eq!(b.apply(ban("mx2", 0, Some(800)), at(1)).refused, None, "one a second comes back");
        assert_eq!(b.apply(ban("mx2", 0, Some(850)), at(1)).refused, Some(Refused::RateLimited));
        assert_eq!(b.apply(Entry::Lift { host: "mx2".into(), target: target() }, at(1)).refused, None);
        let c = b.counts();
        assert_eq!(c.refused.rate_limited, 2);
        assert_eq!(c.refused_by_host["mx2"], RefusedCounts { rate_limited: 2, ..Default::default() });
        assert!(!c.refused_by_host.contains_key("mx3"));
        let mut none = Board::new("mx1", Limits { per_origin_burst: 0, ..generous() });
        assert_eq!(none.apply(ban("mx2", 0, None), at(0)).refused, Some(Refused::RateLimited));
    }

    #[test]
    fn past_max_entries_new_verdicts_are_refused_but_replacements_and_unblocks_are_not() {
        let mut b = Board::new("mx1", Limits { max_entries: 2, ..generous() });
        b.apply(ban("mx2", 0, Some(600)), at(0));
        b.apply(ban("mx3", 0, Some(600)), at(0));
        assert_eq!(b.apply(ban("mx4", 0, Some(900)), at(0)).refused, Some(Refused::Full));
        assert_eq!(b.apply(block(0, None), at(0)).refused, Some(Refused::Full));
        assert_eq!(b.apply(ban("mx3", 0, Some(900)), at(0)).changes, banned("mx3", Some(900)));
        let unblock = Entry::UnblockEverywhere { target: target(), made: at(1) };
        assert_eq!(b.apply(unblock, at(1)).changes, lifted());
        assert_eq!((b.held(), b.counts().refused.full), (3, 2));
        assert_eq!(b.counts().refused_by_host["ops"].full, 1);
    }

    #[test]
    fn expire_drops_ended_verdicts() {
        let mut b = board();
        b.apply(ban("mx2", 0, Some(600)), at(0));
        b.apply(ban("mx3", 0, Some(300)), at(0));
        assert_eq!(b.expire(at(300)), vec![], "the effective ban has not ended");
        assert_eq!(b.held(), 1);
        assert_eq!(b.expire(at(600)), lifted());
        assert_eq!(b.held(), 0);
        assert_eq!(b.apply(Entry::Newer { key: "b.mx2.v4_c6336407_32".into() }, at(0)), Outcome::default());
        assert_eq!(b.counts().newer, 1);
    }

    #[test]
    fn an_ended_value_replaces_the_keys_earlier_one() {
        let mut b = Board::new("mx1", Limits { max_bantime: Duration::from_secs(3600), ..generous() });
        b.apply(ban("mx2", 0, Some(600)), at(0));
        let out = b.apply(ban("mx2", -4000, None), at(10));
        assert_eq!((out.changes, out.refused), (lifted(), Some(Refused::Expired)));
    }

    /// One step of a random history of the bucket.
    #[derive(Debug, Clone)]
    enum Step {
        /// host, target, made this many seconds ago, ends this many seconds from now (None: forever).
        Publish(usize, usize, i64, Option<i64>),
        Lift(usize, usize),
        Block(usize, Option<i64>),
        WithdrawBlock(usize),
        Unblock(usize, i64),
        WithdrawUnblock(usize),
        Expire,
        Wait(i64),
    }

    const HOSTS: [&str; 4] = ["mx1", "mx2", "mx3", "mx4"];

    fn targets() -> [Cidr; 3] {
        ["198.51.100.7", "203.0.113.0/24", "2001:db8::/64"].map(|t| t.parse().unwrap())
    }

    fn any_step() -> impl Strategy<Value = Step> {
        let until = proptest::option::of(-100i64..5000);
        prop_oneof![
            4 => (0..HOSTS.len(), 0..3usize, 0i64..3000, until.clone()).prop_map(|(h, t, a, u)| Step::Publish(h, t, a, u)),
            1 => (0..HOSTS.len(), 0..3usize).prop_map(|(h, t)| Step::Lift(h, t)),
            1 => (0..3usize, until).prop_map(|(t, u)| Step::Block(t, u)),
            1 => (0..3usize).prop_map(Step::WithdrawBlock),
            1 => (0..3usize, 0i64..3000).prop_map(|(t, a)| Step::Unblock(t, a)),
            1 => (0..3usize).prop_map(Step::WithdrawUnblock),
            1 => Just(Step::Expire),
            2 => (0i64..2000).prop_map(Step::Wait),
        ]
    }

    type Set = BTreeSet<(Cidr, Option<DateTime<Utc>>, String)>;

    fn set(b: &Board) -> Set {
        b.effective().map(|(c, u, h)| (c, u, h.to_string())).collect()
    }

    proptest! {
        /// Fed every change as it came, or the bucket's last value per key afresh at the end, a board reaches
        /// the same effective set; and the changes it reported, replayed onto an empty set, give that set.
        #[test]
        fn incremental_equals_resync(steps in proptest::collection::vec(any_step(), 1..60)) {
            let limits = Limits { max_bantime: Duration::from_secs(3600), ..generous() };
            let mut board = Board::new("mx1", limits.clone());
            let mut bucket: BTreeMap<String, Entry> = BTreeMap::new();
            let mut kernel: BTreeMap<Cidr, (Option<DateTime<Utc>>, String)> = BTreeMap::new();
            let mut now = t0();
            for step in steps {
                let verdict = |host: &str, t: usize, ago: i64, until: Option<i64>| Verdict {
                    host: host.into(),
                    target: targets()[t],
                    until: until.map(|s| now + TimeDelta::seconds(s)),
                    // Never ahead of the clock: a skewed `made` is capped from arrival, which a resync cannot see.
                    made: now - TimeDelta::seconds(ago),
                    reason: "r".into(),
                    origin: "jail".into(),
                    figures: None,
                };
                let (key, entry) = match step {
                    Step::Publish(h, t, ago, until) => {
                        let v = verdict(HOSTS[h], t, ago, until);
                        (ban_key(HOSTS[h], &v.target), Some(Entry::Ban(v)))
                    }
                    Step::Lift(h, t) => {
                        let e = Entry::Lift { host: HOSTS[h].into(), target: targets()[t] };
                        (ban_key(HOSTS[h], &targets()[t]), Some(e))
                    }
                    Step::Block(t, until) => (format!("o.{t}"), Some(Entry::BlockEverywhere(verdict("ops", t, 0, until)))),
                    Step::WithdrawBlock(t) => (format!("o.{t}"), Some(Entry::BlockWithdrawn { target: targets()[t] })),
                    Step::Unblock(t, ago) => {
                        let e = Entry::UnblockEverywhere { target: targets()[t], made: now - TimeDelta::seconds(ago) };
                        (format!("u.{t}"), Some(e))
                    }
                    Step::WithdrawUnblock(t) => (format!("u.{t}"), Some(Entry::UnblockWithdrawn { target: targets()[t] })),
                    Step::Expire => {
                        replay(&mut kernel, board.expire(now));
                        continue;
                    }
                    Step::Wait(s) => {
                        now += TimeDelta::seconds(s);
                        continue;
                    }
                };
                let entry = entry.unwrap();
                let deleted = matches!(entry, Entry::Lift { .. } | Entry::BlockWithdrawn { .. } | Entry::UnblockWithdrawn { .. });
                // Decode refuses a value that has already ended, and the caller applies its key as deleted:
                // the key's last value no longer bans, for a fresh reader of the bucket either.
                let gone = match &entry {
                    Entry::Ban(v) if v.until.is_some_and(|u| u <= now) => {
                        Some(Entry::Lift { host: v.host.clone(), target: v.target })
                    }
                    Entry::BlockEverywhere(v) if v.until.is_some_and(|u| u <= now) => {
                        Some(Entry::BlockWithdrawn { target: v.target })
                    }
                    _ => None,
                };
                if let Some(gone) = gone {
                    bucket.insert(key, entry);
                    replay(&mut kernel, board.apply(gone, now).changes);
                    continue;
                }
                if deleted { bucket.remove(&key); } else { bucket.insert(key, entry.clone()); }
                let out = board.apply(entry, now);
                prop_assert!(out.refused.is_none() || out.refused == Some(Refused::Expired));
                replay(&mut kernel, out.changes);
            }
            replay(&mut kernel, board.expire(now));
            let mut fresh = Board::new("mx1", limits);
            for entry in bucket.into_values() {
                fresh.apply(entry, now);
            }
            let incremental = set(&board);
            prop_assert_eq!(&incremental, &set(&fresh));
            let replayed: Set = kernel.into_iter().map(|(c, (u, h))| (c, u, h)).collect();
            prop_assert_eq!(&incremental, &replayed);
            prop_assert!(incremental.iter().all(|(_, _, h)| h != "mx1"));
        }
    }

    fn replay(kernel: &mut BTreeMap<Cidr, (Option<DateTime<Utc>>, String)>, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Ban { target, until, host, .. } => kernel.insert(target, (until, host)),
                Change::Lift { target } => kernel.remove(&target),
            };
        }
    }
}
