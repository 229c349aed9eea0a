//! The throttle: which notices go out now, which wait, and how waiting ones are merged (see the module above).

use super::*;

/// What a notice is about (see `Notice::key`); None is one key of its own.
type Key = Option<String>;

/// A notice about a key held back (or gathering siblings), merged with the later ones about the same key.
#[derive(Debug)]
struct HeldPart {
    /// The latest notice about the key, whole, with how many were folded into it.
    part: Part,
    /// When the first of them happened.
    first_time: DateTime<Utc>,
    /// When the first of them was offered: `gather` runs from here, and a part released later than `gather`
    /// after it was held back.
    offered: DateTime<Utc>,
}

/// Notices about keys beyond `MAX_KEYS_PER_KIND`: only counted, so memory stays bounded however many keys an
/// attacker makes.
#[derive(Debug, Default)]
struct Overflow {
    notices: u32,
    /// The keys' names (`-` for none), each once, up to `MAX_OVERFLOW_NAMES`.
    names: Vec<String>,
    /// Some keys were not named: the list was full.
    more_keys: bool,
    /// When the first of them was offered.
    since: Option<DateTime<Utc>>,
    /// When the latest of them happened.
    latest: Option<DateTime<Utc>>,
}

impl Overflow {
    fn add(&mut self, key: &Key, notices: u32, time: DateTime<Utc>, now: DateTime<Utc>) {
        self.notices = self.notices.saturating_add(notices);
        let name = key_name(key);
        if !self.names.iter().any(|n| *n == name) {
            if self.names.len() < MAX_OVERFLOW_NAMES {
                self.names.push(name.to_string());
            } else {
                self.more_keys = true;
            }
        }
        self.since.get_or_insert(now);
        self.latest = Some(self.latest.map_or(time, |t| t.max(time)));
    }

    /// The sentence telling the admin what was merged without its text and where to find it.
    ///
    /// The names follow on lines of their own, a few per line: up to `MAX_OVERFLOW_NAMES` of them on one line
    /// would be cut anywhere by the mail's line limit.
    fn note(&self, others: bool) -> String {
        let (lead, more, other) = if others { ("And ", "more ", "other ") } else { ("", "", "") };
        let keys =
            if self.more_keys { format!("more than {}", self.names.len()) } else { self.names.len().to_string() };
        let mut note = format!(
            "{lead}{} {more}notice(s) about {keys} {other}key(s) were merged without their text (at most \
             {MAX_KEYS_PER_KIND} keys of a kind are kept whole): `floodgate events` has them. The keys:",
            self.notices
        );
        let etc = self.more_keys.then_some("...");
        let mut line = String::new();
        for name in self.names.iter().map(String::as_str).chain(etc) {
            if !line.is_empty() && line.len() + name.len() > 72 {
                note.push_str(&format!("\n  {line}"));
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(name);
            line.push(',');
        }
        line.pop();
        note.push_str(&format!("\n  {line}"));
        note
    }
}

pub(crate) fn key_name(key: &Key) -> &str {
    key.as_deref().unwrap_or("-")
}

#[derive(Debug, Default)]
struct KindState {
    /// When each key was last told of. A key missing, or told of `min_interval` ago or longer, is due at once;
    /// such entries are forgotten when a message goes out.
    last_sent: HashMap<Key, DateTime<Utc>>,
    /// At most `MAX_KEYS_PER_KIND`, in the order they were first offered.
    held: Vec<HeldPart>,
    overflow: Overflow,
}

/// Decides what to send and when. Pure (no I/O, the clock is a parameter), so it is tested with virtual time.
///
/// Every notice is delivered, possibly late and merged, with its own text (past `MAX_KEYS_PER_KIND` keys, at
/// least counted and named): an admin must be able to trust that silence means nothing happened.
#[derive(Debug)]
pub struct Throttle {
    min_interval: Duration,
    min_interval_delta: TimeDelta,
    gather: TimeDelta,
    max_per_hour: u32,
    /// Times of the messages sent in the last hour, oldest first.
    sent: VecDeque<DateTime<Utc>>,
    kinds: [KindState; NoticeKind::ALL.len()],
    /// Keys whose detection the admin was last told of, not its end (with when): the next Converged about one of
    /// them answers it.
    announced: HashMap<Key, DateTime<Utc>>,
}

impl Throttle {
    pub fn new(cfg: &NotifyConfig) -> Self {
        Throttle {
            min_interval: cfg.min_interval,
            min_interval_delta: TimeDelta::from_std(cfg.min_interval).unwrap_or(TimeDelta::MAX),
            gather: TimeDelta::from_std(cfg.gather).unwrap_or(TimeDelta::MAX),
            max_per_hour: cfg.max_per_hour.max(1),
            sent: VecDeque::new(),
            kinds: Default::default(),
            announced: HashMap::new(),
        }
    }

    /// Offers a notice; returns the messages to send now (possibly this one merged with others, and any held
    /// message whose time has come).
    ///
    /// A notice of the same kind and key as one sent less than `min_interval` ago is held and merged; a notice
    /// that may go out waits up to `gather` for siblings of its kind; `tick` releases both. Converged is not
    /// bound by its own `min_interval` when it answers a detection of its key the admin was told of (the admin
    /// must learn that the filters were lifted): there is at most one such Converged per detection told, so it
    /// needs no limit of its own. It still waits for `max_per_hour`, and for a held detection of its key to go
    /// out first.
    pub fn offer(&mut self, n: Notice, now: DateTime<Utc>) -> Vec<Notice> {
        let Notice { kind, key, time, subject, body, figures, parts: _ } = n;
        let mut lifted = 0;
        if kind.is_detection() && !self.announced.contains_key(&key) {
            // A Converged still held here ends an attack on this key the admin has not heard of yet, and this
            // detection starts the next one: mailing "filters lifted" after this would tell the admin the wrong
            // state. It is mentioned in the detection's message instead.
            let converged = &mut self.kinds[NoticeKind::Converged.index()].held;
            if let Some(i) = converged.iter().position(|h| h.part.key == key) {
                let c = converged.remove(i).part;
                lifted = c.repeats.saturating_add(c.filters_lifted_between);
            }
        }
        let state = &mut self.kinds[kind.index()];
        if let Some(h) = state.held.iter_mut().find(|h| h.part.key == key) {
            let p = &mut h.part;
            p.repeats = p.repeats.saturating_add(1);
            p.filters_lifted_between = p.filters_lifted_between.saturating_add(lifted);
            (p.time, p.subject, p.body, p.figures) = (time, subject, body, figures);
        } else if state.held.len() < MAX_KEYS_PER_KIND {
            let part = Part { key, time, subject, body, figures, repeats: 1, filters_lifted_between: lifted };
            state.held.push(HeldPart { part, first_time: time, offered: now });
        } else {
            state.overflow.add(&key, lifted.saturating_add(1), time, now);
        }
        self.release(now)
    }

    /// Releases held messages whose time has come. Call it every daemon tick.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Notice> {
        self.release(now)
    }

    /// How many notices the throttle is holding back, all kinds (for `status`): one per key held, plus those
    /// merged without their text.
    pub fn held(&self) -> usize {
        self.kinds.iter().map(|k| k.held.len() + k.overflow.notices as usize).sum()
    }

    fn release(&mut self, now: DateTime<Utc>) -> Vec<Notice> {
        let hour_ago = now - TimeDelta::seconds(3600);
        // Entries after `now` mean the clock stepped back: dropping them lets mail through rather than holding
        // it for as long as the step.
        self.sent.retain(|&t| t > hour_ago && t <= now);
        let mut out = Vec::new();
        while self.sent.len() < self.max_per_hour as usize {
            // Oldest first, so that a Converged held for the budget still precedes a later detection.
            let next = NoticeKind::ALL.into_iter().filter_map(|k| self.ready(k, now).map(|t| (t, k.index()))).min();
            let Some((_, index)) = next else { break };
            let kind = NoticeKind::ALL[index];
            let due: Vec<bool> = self.kinds[index].held.iter().map(|h| self.is_due(kind, &h.part.key, now)).collect();
            let state = &mut self.kinds[index];
            let (parts, kept): (Vec<_>, Vec<_>) =
                std::mem::take(&mut state.held).into_iter().zip(due).partition(|(_, due)| *due);
            state.held = kept.into_iter().map(|(h, _)| h).collect();
            let parts: Vec<HeldPart> = parts.into_iter().map(|(h, _)| h).collect();
            let overflow = std::mem::take(&mut state.overflow);

            let interval = self.min_interval_delta;
            state.last_sent.retain(|_, t| *t <= now && now - *t < interval);
            state.last_sent.extend(parts.iter().map(|h| (h.part.key.clone(), now)));
            forget_oldest(&mut state.last_sent);
            for h in &parts {
                if kind.is_detection() {
                    self.announced.insert(h.part.key.clone(), now);
                } else if kind == NoticeKind::Converged {
                    self.announced.remove(&h.part.key);
                }
            }
            forget_oldest(&mut self.announced);
            self.sent.push_back(now);
            out.push(self.aggregate(kind, parts, overflow, now));
        }
        out
    }

    /// Whether a held part of this kind and key may go out now (the budget aside).
    fn is_due(&self, kind: NoticeKind, key: &Key, now: DateTime<Utc>) -> bool {
        if kind == NoticeKind::Converged {
            if self.announced.contains_key(key) {
                return true;
            }
            // The end of an attack is told after its start, never before.
            let detection_held =
                |(s, k): (&KindState, NoticeKind)| k.is_detection() && s.held.iter().any(|h| h.part.key == *key);
            if self.kinds.iter().zip(NoticeKind::ALL).any(detection_held) {
                return false;
            }
        }
        match self.kinds[kind.index()].last_sent.get(key) {
            None => true,
            // A clock that stepped back does not hold mail until it catches up.
            Some(&t) => now < t || now - t >= self.min_interval_delta,
        }
    }

    /// When the kind's next message is ready: the time of its oldest due part, once one of its due parts has
    /// waited `gather` for its siblings. None if nothing of this kind may go yet.
    fn ready(&self, kind: NoticeKind, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // A clock that stepped back does not hold mail either.
        let gathered = |offered: DateTime<Utc>| now < offered || now - offered >= self.gather;
        let state = &self.kinds[kind.index()];
        if state.held.is_empty() {
            // Only counted notices left (their kind's parts were folded into detections): nothing to wait for.
            return state.overflow.since.filter(|&s| gathered(s)).and(state.overflow.latest);
        }
        let mut oldest: Option<DateTime<Utc>> = None;
        let mut waited = false;
        for h in state.held.iter().filter(|h| self.is_due(kind, &h.part.key, now)) {
            oldest = Some(oldest.map_or(h.part.time, |t| t.min(h.part.time)));
            waited |= gathered(h.offered);
        }
        oldest.filter(|_| waited)
    }

    /// Turns the due parts of one kind into one message: every part's subject, body and figures, in time order,
    /// and why it comes late.
    fn aggregate(&self, kind: NoticeKind, mut held: Vec<HeldPart>, overflow: Overflow, now: DateTime<Utc>) -> Notice {
        held.sort_by_key(|h| h.part.time);
        let limits = format!(
            "floodgate tells of the same thing at most once per {} for each kind, and sends at most {} messages an \
             hour (notify.min_interval, notify.max_per_hour).",
            humantime::format_duration(self.min_interval),
            self.max_per_hour
        );
        let waited_longer = |offered: DateTime<Utc>| now - offered > self.gather;
        let held_back = held
            .iter()
            .map(|h| h.offered)
            .chain(overflow.since.filter(|_| overflow.notices > 0))
            .filter(|&t| waited_longer(t))
            .min();
        let mut notes = Vec::new();
        let mut n = match held.as_slice() {
            [] => {
                // Every whole part was folded away: the counted notices still reach the admin.
                let subject =
                    format!("floodgate: {} {} notice(s) merged without their text", overflow.notices, kind.as_str());
                let figures = serde_json::json!({ "merged_without_text": overflow.notices });
                let part = Part {
                    key: None,
                    time: overflow.latest.unwrap_or(now),
                    subject: subject.clone(),
                    body: overflow.note(false),
                    figures: figures.clone(),
                    repeats: 0,
                    filters_lifted_between: 0,
                };
                let body = part.body.clone();
                Notice { kind, key: None, time: part.time, subject, body, figures, parts: vec![part] }
            }
            [one] => {
                let p = &one.part;
                let mut subject = p.subject.clone();
                let mut figures = p.figures.clone();
                if p.repeats > 1 {
                    let more = p.repeats - 1;
                    subject = format!("{subject} (and {more} more)");
                    let about = p.key.as_ref().map(|k| format!(" about {k}")).unwrap_or_default();
                    notes.push(format!(
                        "{} notices of this kind{about} since {}; this is the latest (at {}). {limits}",
                        p.repeats,
                        rfc3339(one.first_time),
                        rfc3339(p.time)
                    ));
                    insert(&mut figures, "and_more", more.into());
                } else if let Some(since) = held_back {
                    notes.push(format!("Held back since {}. {limits}", rfc3339(since)));
                }
                if p.filters_lifted_between > 0 {
                    notes.push(format!(
                        "Meanwhile the filters were lifted {} time(s) and imposed again: the attack is on.",
                        p.filters_lifted_between
                    ));
                    insert(&mut figures, "filters_lifted_between", p.filters_lifted_between.into());
                }
                let (key, time, body) = (p.key.clone(), p.time, p.body.clone());
                Notice { kind, key, time, subject, body, figures, parts: vec![p.clone()] }
            }
            [first, rest @ ..] => {
                let others: Vec<&str> = rest.iter().map(|h| key_name(&h.part.key)).collect();
                let subject = format!("{} (and {} more: {})", first.part.subject, others.len(), others.join(", "));
                let mut body = String::new();
                let mut figures = serde_json::Map::new();
                for h in &held {
                    let p = &h.part;
                    if !body.is_empty() {
                        body.push('\n');
                    }
                    let about = p.key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default();
                    let repeats = if p.repeats > 1 {
                        format!(
                            " ({} notices since {}, latest at {})",
                            p.repeats,
                            rfc3339(h.first_time),
                            rfc3339(p.time)
                        )
                    } else {
                        String::new()
                    };
                    body.push_str(&format!("== {about}{}{repeats} ==\n", p.subject));
                    body.push_str(&p.body);
                    if !body.ends_with('\n') {
                        body.push('\n');
                    }
                    if p.filters_lifted_between > 0 {
                        notes.push(format!(
                            "Meanwhile the filters on {} were lifted {} time(s) and imposed again: the attack is on.",
                            key_name(&p.key),
                            p.filters_lifted_between
                        ));
                    }
                    figures.insert(key_name(&p.key).to_string(), p.figures.clone());
                }
                if let Some(since) = held_back {
                    notes.insert(0, format!("Held back since {}. {limits}", rfc3339(since)));
                }
                let time = held.iter().map(|h| h.part.time).max().unwrap_or(now);
                let parts = held.iter().map(|h| h.part.clone()).collect();
                Notice { kind, key: None, time, subject, body, figures: figures.into(), parts }
            }
        };
        if overflow.notices > 0 && !held.is_empty() {
            notes.push(overflow.note(true));
            insert(&mut n.figures, "merged_without_text", overflow.notices.into());
        }
        if !notes.is_empty() {
            if !n.body.is_empty() && !n.body.ends_with('\n') {
                n.body.push('\n');
            }
            n.body.push_str("\n-- \n");
            n.body.push_str(&notes.join("\n"));
            n.body.push('\n');
        }
        n
    }
}

/// Adds a figure of the throttle's own beside the notice's (figures that are not an object are left alone).
fn insert(figures: &mut serde_json::Value, name: &str, value: serde_json::Value) {
    if let serde_json::Value::Object(m) = figures {
        m.insert(name.into(), value);
    }
}

/// Keeps at most `MAX_REMEMBERED_KEYS` entries, forgetting the oldest: memory stays bounded however many keys
/// an attack makes, and a key forgotten at worst gets its next notice out early, still within `max_per_hour`.
fn forget_oldest(map: &mut HashMap<Key, DateTime<Utc>>) {
    let excess = map.len().saturating_sub(MAX_REMEMBERED_KEYS);
    if excess == 0 {
        return;
    }
    let mut by_age: Vec<(DateTime<Utc>, Key)> = map.iter().map(|(k, t)| (*t, k.clone())).collect();
    by_age.sort_unstable();
    for (_, k) in by_age.into_iter().take(excess) {
        map.remove(&k);
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;
    use NoticeKind::*;

    #[test]
    fn throttle_sends_the_first_notice_at_once() {
        let mut t = Throttle::new(&cfg());
        let out = t.offer(notice(DosDetected, t0(), 1), t0());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].subject, "DosDetected on mx");
        assert_eq!(out[0].body, "Port 25 is flooded.", "nothing to explain for a notice sent on time");
        assert_eq!(out[0].figures, json!({ "pps": 1 }));
        assert_eq!(out[0].key, None);
        assert_eq!(out[0].parts.len(), 1, "a notice alone is its own single part");
        let p = &out[0].parts[0];
        assert_eq!((p.subject.as_str(), p.body.as_str(), p.repeats), ("DosDetected on mx", "Port 25 is flooded.", 1));
        assert_eq!((p.time, &p.figures), (t0(), &json!({ "pps": 1 })));
    }

    #[test]
    fn throttle_holds_repeats_and_releases_one_aggregate_with_the_count() {
        let mut t = Throttle::new(&cfg());
        assert_eq!(t.offer(notice(DosDetected, t0(), 1), t0()).len(), 1);
        assert!(t.offer(notice(DosDetected, min(1), 2), min(1)).is_empty());
        assert!(t.offer(notice(DosDetected, min(2), 3), min(2)).is_empty());
        assert_eq!(t.held(), 1);
        assert!(t.tick(min(14)).is_empty(), "15m have not passed");
        let out = t.tick(min(15));
        assert_eq!(out.len(), 1);
        let n = &out[0];
        assert_eq!(n.subject, "DosDetected on mx (and 1 more)");
        assert!(n.body.starts_with("Port 25 is flooded.\n"), "{}", n.body);
        assert!(n.body.contains("2 notices of this kind since 2026-11-21T09:01:00Z"), "{}", n.body);
        assert_eq!(n.figures, json!({ "pps": 3, "and_more": 1 }), "the latest figures");
        assert_eq!(n.time, min(2));
        assert_eq!(n.parts.len(), 1);
        assert_eq!((n.parts[0].repeats, &n.parts[0].figures), (2, &json!({ "pps": 3 })), "the part: the latest");
        assert!(t.tick(min(16)).is_empty(), "released once");
        // The interval runs from the aggregate.
        assert!(t.offer(notice(DosDetected, min(20), 4), min(20)).is_empty());
        let out = t.tick(min(30));
        assert_eq!(out.len(), 1);
        assert!(out[0].body.contains("Held back since 2026-11-21T09:20:00Z"), "{}", out[0].body);
    }

    #[test]
    fn throttle_kinds_are_independent() {
        let mut t = Throttle::new(&cfg());
        assert_eq!(kinds(&t.offer(notice(DosDetected, t0(), 1), t0())), [DosDetected]);
        assert_eq!(kinds(&t.offer(notice(DdosDetected, min(1), 1), min(1))), [DdosDetected]);
        assert!(t.offer(notice(DosDetected, min(2), 1), min(2)).is_empty());
        assert!(t.offer(notice(DdosDetected, min(2), 1), min(2)).is_empty());
        assert_eq!(kinds(&t.tick(min(15))), [DosDetected]);
        assert_eq!(kinds(&t.tick(min(16))), [DdosDetected]);
    }

    #[test]
    fn throttle_max_per_hour_caps_the_total_and_merges_the_rest() {
        let c = NotifyConfig { min_interval: Duration::from_secs(60), max_per_hour: 3, ..cfg() };
        let mut t = Throttle::new(&c);
        let mut sent = 0;
        for m in (0..20).step_by(2) {
            sent += t.offer(notice(DdosDetected, min(m), m as u64), min(m)).len();
        }
        assert_eq!(sent, 3, "0, 2 and 4; 6..18 merged");
        assert!(t.tick(min(59)).is_empty());
        let out = t.tick(min(60));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].subject, "DdosDetected on mx (and 6 more)");
        assert_eq!(out[0].figures["pps"], 18);
    }

    /// Hours of every kind every 10 s: never more than max_per_hour in any hour, never a kind twice within
    /// min_interval (Converged excepted: it answers a detection), and nothing lost.
    #[test]
    fn throttle_bounds_hold_under_a_long_attack() {
        let c = NotifyConfig { min_interval: Duration::from_secs(300), max_per_hour: 5, ..cfg() };
        let mut t = Throttle::new(&c);
        let mut sent: Vec<(DateTime<Utc>, Notice)> = Vec::new();
        let mut offered = 0u32;
        for s in (0..3 * 3600).step_by(10) {
            let now = t0() + TimeDelta::seconds(s);
            let kind = NoticeKind::ALL[(s / 10) as usize % NoticeKind::ALL.len()];
            offered += 1;
            sent.extend(t.offer(notice(kind, now, 0), now).into_iter().map(|n| (now, n)));
            sent.extend(t.tick(now).into_iter().map(|n| (now, n)));
        }
        for (i, (at, _)) in sent.iter().enumerate() {
            let in_hour = sent[i..].iter().filter(|(b, _)| *b - *at < TimeDelta::seconds(3600)).count();
            assert!(in_hour <= 5, "{in_hour} messages in the hour from {at}");
        }
        for k in [DosDetected, DdosDetected] {
            let times: Vec<_> = sent.iter().filter(|(_, n)| n.kind == k).map(|(at, _)| *at).collect();
            assert!(times.windows(2).all(|w| w[1] - w[0] >= TimeDelta::seconds(300)), "{k:?}: {times:?}");
        }
        let mut end = t0() + TimeDelta::seconds(3 * 3600);
        while t.held() > 0 {
            end += TimeDelta::seconds(60);
            sent.extend(t.tick(end).into_iter().map(|n| (end, n)));
        }
        let accounted: u64 = sent
            .iter()
            .map(|(_, n)| {
                assert_eq!(
                    1 + n.figures["and_more"].as_u64().unwrap_or(0)
                        + n.figures["filters_lifted_between"].as_u64().unwrap_or(0),
                    accounted(n),
                    "one key: the top-level figures count what the parts count"
                );
                accounted(n)
            })
            .sum();
        assert_eq!(accounted, u64::from(offered), "every notice is delivered or counted in one");
    }

    #[test]
    fn throttle_delivers_converged_after_a_sent_detection_even_within_its_interval() {
        let mut t = Throttle::new(&cfg());
        assert_eq!(kinds(&t.offer(notice(DosDetected, t0(), 1), t0())), [DosDetected]);
        assert_eq!(kinds(&t.offer(notice(Converged, min(1), 1), min(1))), [Converged]);
        // A second wave: its detection is held by the interval, and its end waits for it...
        assert!(t.offer(notice(DosDetected, min(2), 1), min(2)).is_empty());
        assert!(t.offer(notice(Converged, min(3), 1), min(3)).is_empty());
        // ...then goes out right after it, though the last Converged went out less than 15m ago.
        assert_eq!(kinds(&t.tick(min(15))), [DosDetected, Converged]);
        // A detection sent at once is answered at once.
        assert_eq!(kinds(&t.offer(notice(DdosDetected, min(16), 1), min(16))), [DdosDetected]);
        assert_eq!(kinds(&t.offer(notice(Converged, min(17), 1), min(17))), [Converged]);
    }

    #[test]
    fn throttle_converged_respects_max_per_hour_but_is_delivered_eventually() {
        let c = NotifyConfig { max_per_hour: 1, ..cfg() };
        let mut t = Throttle::new(&c);
        assert_eq!(t.offer(notice(DosDetected, t0(), 1), t0()).len(), 1);
        assert!(t.offer(notice(Converged, min(1), 1), min(1)).is_empty());
        assert!(t.tick(min(30)).is_empty());
        let out = t.tick(min(60));
        assert_eq!(kinds(&out), [Converged]);
        assert!(out[0].body.contains("Held back since 2026-11-21T09:01:00Z"), "{}", out[0].body);
    }

    #[test]
    fn throttle_folds_an_unannounced_lift_into_the_next_detection() {
        let mut t = Throttle::new(&cfg());
        t.offer(notice(DosDetected, t0(), 1), t0());
        t.offer(notice(Converged, min(1), 1), min(1));
        assert!(t.offer(notice(DosDetected, min(2), 2), min(2)).is_empty());
        assert!(t.offer(notice(Converged, min(3), 2), min(3)).is_empty());
        assert!(t.offer(notice(DosDetected, min(4), 3), min(4)).is_empty());
        // The attack is on again: a "filters lifted" after the detection would mislead.
        let out = t.tick(min(15));
        assert_eq!(kinds(&out), [DosDetected]);
        assert!(out[0].body.contains("lifted 1 time(s)"), "{}", out[0].body);
        assert_eq!(out[0].figures["filters_lifted_between"], 1);
        assert_eq!(kinds(&t.offer(notice(Converged, min(20), 3), min(20))), [Converged]);
    }

    /// The field test: four ports in the same second were one message with three of them reduced to a count,
    /// and their ends came a quarter of an hour late.
    #[test]
    fn throttle_gathers_a_burst_into_one_message_that_keeps_every_part() {
        let mut t = Throttle::new(&defaults());
        let ports = ["port 25", "port 110", "port 587", "port 995"];
        for (i, port) in (0..).zip(ports) {
            let at = ms(200 * i);
            assert!(t.offer(about(DdosDetected, at, port, 1000 * (i as u64 + 1)), at).is_empty(), "gathering");
        }
        assert_eq!(t.held(), 4);
        assert!(t.tick(ms(999)).is_empty(), "the first waits its gather");
        let out = t.tick(ms(1000));
        assert_eq!(out.len(), 1, "one message for the burst");
        let n = &out[0];
        assert_eq!(keys(n), ports);
        assert_eq!(n.subject, "DdosDetected on port 25 (and 3 more: port 110, port 587, port 995)");
        assert_eq!((n.kind, &n.key, n.time), (DdosDetected, &None, ms(600)));
        for (i, (p, port)) in (1..).zip(n.parts.iter().zip(ports)) {
            assert_eq!(p.figures, json!({ "pps": 1000 * i }), "{port}");
            assert_eq!((p.repeats, p.subject.clone()), (1, format!("DdosDetected on {port}")));
            assert_eq!(n.figures[port], p.figures, "top-level figures by key");
            assert!(n.body.contains(&format!("== {port}: DdosDetected on {port} ==\n{port}: {} pps.\n", 1000 * i)));
        }
        assert_eq!(n.figures.as_object().unwrap().len(), 4);
        assert!(!n.body.contains("-- \n"), "nothing held back: nothing to explain\n{}", n.body);
        assert_eq!(t.held(), 0);

        // The attack ends port by port over three seconds: each end is told within seconds, none lost.
        let mut ends = Vec::new();
        for s in 0..=3 {
            let at = t0() + TimeDelta::seconds(30 + s);
            let port = ports[s as usize];
            ends.extend(t.offer(
                Notice::new(Converged, at, format!("{port} calm"), format!("{port} is calm"), json!({})).about(port),
                at,
            ));
            ends.extend(t.tick(at));
        }
        ends.extend(t.tick(t0() + TimeDelta::seconds(34)));
        assert_eq!(t.held(), 0, "all told by 4s after the first");
        assert!(kinds(&ends).iter().all(|&k| k == Converged));
        let told: Vec<&str> = ends.iter().flat_map(keys).collect();
        assert_eq!(told, ports);
        for port in ports {
            assert!(ends.iter().any(|n| n.body.contains(&format!("{port} is calm"))), "{port}: {ends:?}");
        }
        assert!(ends.len() < 4, "ends a second apart share messages: {}", ends.len());
    }

    #[test]
    fn throttle_holds_a_repeat_about_the_same_key_but_not_news_about_another() {
        let mut t = Throttle::new(&cfg());
        assert_eq!(keys(&t.offer(about(DosDetected, t0(), "port 25", 1), t0())[0]), ["port 25"]);
        assert!(t.offer(about(DosDetected, min(1), "port 25", 2), min(1)).is_empty(), "a repeat is held");
        assert!(t.offer(about(DosDetected, min(3), "port 25", 3), min(3)).is_empty());
        let out = t.offer(about(DosDetected, min(2), "port 110", 4), min(2));
        assert_eq!(out.len(), 1, "another port is news");
        assert_eq!((keys(&out[0]), out[0].key.as_deref()), (vec!["port 110"], Some("port 110")));
        assert_eq!(out[0].body, "port 110: 4 pps.");
        assert_eq!(t.held(), 1);
        assert!(t.tick(min(14)).is_empty());
        let out = t.tick(min(15));
        assert_eq!(out.len(), 1);
        let n = &out[0];
        assert_eq!(n.subject, "DosDetected on port 25 (and 1 more)");
        assert!(n.body.starts_with("port 25: 3 pps.\n\n-- \n2 notices of this kind about port 25 since"), "{}", n.body);
        assert_eq!(n.figures, json!({ "pps": 3, "and_more": 1 }));
        assert_eq!(n.parts[0].repeats, 2);
        // port 110 was told at 2m: a repeat of it is held until 17m.
        assert!(t.offer(about(DosDetected, min(16), "port 110", 5), min(16)).is_empty());
        assert_eq!(keys(&t.tick(min(17))[0]), ["port 110"]);
    }

    #[test]
    fn throttle_tells_the_end_of_an_attack_on_a_key_after_its_start_key_by_key() {
        let mut t = Throttle::new(&cfg());
        t.offer(about(DosDetected, t0(), "port 25", 1), t0());
        t.offer(about(DosDetected, t0(), "port 110", 1), t0());
        assert_eq!(kinds(&t.offer(about(Converged, min(1), "port 25", 0), min(1))), [Converged]);
        // port 25 again: its detection is held by the interval, and its end waits for it...
        assert!(t.offer(about(DosDetected, min(2), "port 25", 2), min(2)).is_empty());
        assert!(t.offer(about(Converged, min(3), "port 25", 0), min(3)).is_empty());
        // ...while port 110's end answers its own detection at once.
        let out = t.offer(about(Converged, min(4), "port 110", 0), min(4));
        assert_eq!((kinds(&out), keys(&out[0])), (vec![Converged], vec!["port 110"]));
        // A third wave on port 25 before anything was told: the lift in between is folded into it.
        assert!(t.offer(about(DosDetected, min(5), "port 25", 3), min(5)).is_empty());
        let out = t.tick(min(15));
        assert_eq!(kinds(&out), [DosDetected]);
        assert_eq!(out[0].parts[0].filters_lifted_between, 1);
        assert!(out[0].body.contains("lifted 1 time(s)"), "{}", out[0].body);
        assert_eq!(kinds(&t.offer(about(Converged, min(16), "port 25", 0), min(16))), [Converged]);
    }

    #[test]
    fn throttle_merges_everything_due_once_the_budget_allows() {
        let c = NotifyConfig { max_per_hour: 2, ..cfg() };
        let mut t = Throttle::new(&c);
        assert_eq!(t.offer(about(DosDetected, t0(), "port 1", 1), t0()).len(), 1);
        assert_eq!(t.offer(about(DdosDetected, t0(), "port 1", 1), t0()).len(), 1);
        for p in 2..6 {
            assert!(t.offer(about(DosDetected, min(p), &format!("port {p}"), p as u64), min(p)).is_empty());
            assert!(t.offer(about(DdosDetected, min(p), &format!("port {p}"), p as u64), min(p)).is_empty());
        }
        let out = t.tick(min(60));
        assert_eq!(kinds(&out), [DosDetected, DdosDetected], "one message per kind");
        for n in &out {
            assert_eq!(keys(n), ["port 2", "port 3", "port 4", "port 5"]);
            assert!(n.body.contains("Held back since 2026-11-21T09:02:00Z"), "{}", n.body);
            assert!(n.body.contains("== port 5: "), "{}", n.body);
        }
    }

    /// An attacker making a new key every second for an hour: the budget holds, memory stays bounded, and every
    /// notice is still accounted for.
    #[test]
    fn throttle_bounds_hold_against_a_new_key_every_second() {
        let mut t = Throttle::new(&defaults());
        let mut sent: Vec<(DateTime<Utc>, Notice)> = Vec::new();
        for s in 0..3600 {
            let now = t0() + TimeDelta::seconds(s);
            sent.extend(
                t.offer(about(DdosDetected, now, &format!("port {}", s + 1), 1), now).into_iter().map(|n| (now, n)),
            );
            sent.extend(t.tick(now).into_iter().map(|n| (now, n)));
            assert!(t
                .kinds
                .iter()
                .all(|k| k.held.len() <= MAX_KEYS_PER_KIND && k.overflow.names.len() <= MAX_OVERFLOW_NAMES));
        }
        let mut end = t0() + TimeDelta::seconds(3600);
        while t.held() > 0 && end < t0() + TimeDelta::days(2) {
            end += TimeDelta::seconds(60);
            sent.extend(t.tick(end).into_iter().map(|n| (end, n)));
        }
        assert_eq!(t.held(), 0);
        for (i, (at, _)) in sent.iter().enumerate() {
            let in_hour = sent[i..].iter().filter(|(b, _)| *b - *at < TimeDelta::seconds(3600)).count();
            assert!(in_hour <= 12, "{in_hour} messages in the hour from {at}");
        }
        assert_eq!(sent.iter().map(|(_, n)| accounted(n)).sum::<u64>(), 3600, "every notice delivered or counted");
        let last = &sent.last().unwrap().1;
        assert_eq!(last.parts.len(), MAX_KEYS_PER_KIND);
        assert!(last.body.contains("more notice(s) about more than 256 other key(s) were merged"), "{}", last.body);
        assert!(last.body.contains("The keys:\n  port "), "{}", last.body);
        assert!(last.body.contains(", ...\n"), "{}", last.body);
        assert!(last.body.lines().all(|l| l.len() <= 200), "{}", last.body);
        assert!(last.body.contains("`floodgate events` has them"));
        assert!(t.kinds.iter().all(|k| k.last_sent.len() <= MAX_REMEMBERED_KEYS));
        let mail = format_mail(&defaults(), last, None);
        // Past 77 characters the library writes even an ASCII subject as encoded words: read it as a client does.
        let raw = unfolded_header(&mail, "Subject").unwrap();
        assert!(raw.starts_with("=?us-ascii?"), "cut, still ASCII: {raw}");
        let parsed = mail_parser::MessageParser::default().parse(mail.as_bytes()).unwrap();
        let subject = parsed.subject().unwrap();
        assert!(subject.starts_with("DdosDetected on port ") && subject.ends_with("..."), "cut: {subject}");
        assert_eq!(subject.len(), MAX_SUBJECT_CHARS);
    }

    #[test]
    fn throttle_delivers_notices_counted_without_a_part_of_their_own() {
        let c = NotifyConfig { max_per_hour: 1, ..cfg() };
        let mut t = Throttle::new(&c);
        assert_eq!(t.offer(about(DosDetected, t0(), "x", 0), t0()).len(), 1, "the budget is spent");
        for p in 0..MAX_KEYS_PER_KIND + 2 {
            assert!(t.offer(about(Converged, min(1), &format!("port {p}"), 0), min(1)).is_empty());
        }
        // Detections of every held port fold their ends away, leaving only the two counted.
        for p in 0..MAX_KEYS_PER_KIND {
            assert!(t.offer(about(DosDetected, min(2), &format!("port {p}"), 0), min(2)).is_empty());
        }
        assert_eq!(t.held(), MAX_KEYS_PER_KIND + 2);
        // Oldest first: the counted ends happened before the detections.
        let out = t.tick(min(60));
        assert_eq!(kinds(&out), [Converged]);
        assert_eq!(out[0].parts.len(), 1);
        assert_eq!(accounted(&out[0]), 2);
        assert!(out[0].body.starts_with("2 notice(s) about 2 key(s) were merged"), "{}", out[0].body);
        assert!(out[0].body.ends_with("The keys:\n  port 64, port 65"), "{}", out[0].body);
        assert_eq!(kinds(&t.tick(min(120))), [DosDetected]);
        assert_eq!(t.held(), 0);
    }
}
