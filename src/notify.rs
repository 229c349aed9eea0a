//! Notifications to the admin: a DoS or DDoS detected, an attack over (filters lifted), a storm of bans.
//!
//! This module owns three things:
//! - [`NotifyConfig`], the `[notify]` section: who gets mail, which hook runs, how often either may fire.
//! - [`Throttle`], pure (notices and a clock in, messages out), which decides what goes out and when. An attack
//!   must never turn floodgate into a mail flood of its own: a notice of one kind about one thing (its key: a
//!   port, an address) goes out at most once per `min_interval`, everything at most `max_per_hour`; news about
//!   another thing goes out at once, after waiting up to `gather` for its siblings so that a burst makes one
//!   message. What is held back is merged into one message per kind that keeps every notice's subject, body and
//!   figures as a part of its own (past `MAX_KEYS_PER_KIND` keys, notices are only counted and named).
//! - [`Notifier`], the I/O: a mail piped to the local `sendmail -t -i` and/or an exec hook fed the notice as
//!   JSON on stdin, each killed if it has not finished within a timeout (a wedged MTA must not wedge the daemon).
//!
//! `Notifier::send` blocks for up to twice its timeout: the daemon calls it from a blocking thread.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Deserialize;

/// How long sendmail or the hook may run before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest Subject kept: the rest of the story belongs in the body.
const MAX_SUBJECT_CHARS: usize = 200;
/// RFC 5322's hard limit on a line, without its line ending.
const MAX_LINE_BYTES: usize = 998;
/// How much of a failing program's stderr is quoted in the error.
const MAX_STDERR_BYTES: usize = 4096;
/// Most keys of one kind held whole at once. Past them a notice is only counted and its key named (up to
/// `MAX_OVERFLOW_NAMES`): an attacker making a new key every second must not grow the daemon's memory.
pub const MAX_KEYS_PER_KIND: usize = 64;
/// Most names of keys merged without their text kept per kind; past them the keys are only counted.
const MAX_OVERFLOW_NAMES: usize = 256;
/// Most keys remembered per kind as recently told, and as announced detections.
const MAX_REMEMBERED_KEYS: usize = 4096;
/// Longest `gather`: it delays every message, detections included.
const MAX_GATHER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NoticeKind {
    DosDetected,
    DdosDetected,
    /// The attack is over and the filters were lifted.
    Converged,
    BanStorm,
}

impl NoticeKind {
    const ALL: [NoticeKind; 4] =
        [NoticeKind::DosDetected, NoticeKind::DdosDetected, NoticeKind::Converged, NoticeKind::BanStorm];

    /// The name used in `X-Floodgate-Kind` (the same as in the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::DosDetected => "DosDetected",
            NoticeKind::DdosDetected => "DdosDetected",
            NoticeKind::Converged => "Converged",
            NoticeKind::BanStorm => "BanStorm",
        }
    }

    fn index(self) -> usize {
        match self {
            NoticeKind::DosDetected => 0,
            NoticeKind::DdosDetected => 1,
            NoticeKind::Converged => 2,
            NoticeKind::BanStorm => 3,
        }
    }

    fn is_detection(self) -> bool {
        matches!(self, NoticeKind::DosDetected | NoticeKind::DdosDetected)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Notice {
    pub kind: NoticeKind,
    /// What it is about ("port 25", "203.0.113.0/24", "198.51.100.7"): the throttle holds back a repeat about the
    /// same thing, never news about another. None: about nothing in particular (such notices share one key); also
    /// a message merging several keys, whose `parts` name them.
    pub key: Option<String>,
    /// When it happened (for an aggregate: when the latest merged notice happened).
    pub time: DateTime<Utc>,
    pub subject: String,
    pub body: String,
    /// What led to it (rates, sources, thresholds), for the admin and for hooks. For a message merging several
    /// keys: an object mapping each key (`-` for none) to its part's figures.
    pub figures: serde_json::Value,
    /// Everything the message tells, one part per key in time order, each with its own text and figures: hook
    /// consumers read these rather than the merged subject and body. Empty until the throttle releases it (the
    /// hook still gets one part, see `Notifier::send`).
    pub parts: Vec<Part>,
}

impl Notice {
    pub fn new(
        kind: NoticeKind,
        time: DateTime<Utc>,
        subject: impl Into<String>,
        body: impl Into<String>,
        figures: serde_json::Value,
    ) -> Notice {
        Notice { kind, key: None, time, subject: subject.into(), body: body.into(), figures, parts: Vec::new() }
    }

    /// Says what the notice is about, so that it is throttled apart from notices about other things.
    /// A policy alert as the admin reads it: the host and the summary in the subject, the summary and what was
    /// done (and what that does and does not stop) in the body, the figures beside it, keyed by what it is about.
    pub fn from_alert(a: &crate::policy::alert::Alert) -> Notice {
        use crate::policy::alert::AlertKind;
        let kind = match a.kind {
            AlertKind::DosDetected => NoticeKind::DosDetected,
            AlertKind::DdosDetected => NoticeKind::DdosDetected,
            AlertKind::Converged => NoticeKind::Converged,
        };
        let subject = format!("floodgate on {}: {}", hostname(), a.summary);
        let body = if a.detail.is_empty() { a.summary.clone() } else { format!("{}\n\n{}", a.summary, a.detail) };
        // The figures travel beside the body: the mail prints them once, the hook gets them as JSON.
        Notice::new(kind, a.time, subject, body, a.figures.clone()).about(a.key.clone())
    }

    pub fn about(mut self, key: impl Into<String>) -> Notice {
        self.key = Some(key.into());
        self
    }

    /// The notice as sent: with its parts, or as its own single part if it never went through the throttle.
    fn with_parts(&self) -> std::borrow::Cow<'_, Notice> {
        if !self.parts.is_empty() {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut whole = self.clone();
        whole.parts.push(Part {
            key: self.key.clone(),
            time: self.time,
            subject: self.subject.clone(),
            body: self.body.clone(),
            figures: self.figures.clone(),
            repeats: 1,
            filters_lifted_between: 0,
        });
        std::borrow::Cow::Owned(whole)
    }
}

/// What one message tells about one key.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Part {
    pub key: Option<String>,
    /// When the latest notice folded into it happened.
    pub time: DateTime<Utc>,
    pub subject: String,
    pub body: String,
    pub figures: serde_json::Value,
    /// How many notices about this key were folded into this part, the latest's content kept: 1 is just this
    /// one. 0 only for the part standing for notices merged without their text (see `MAX_KEYS_PER_KIND`).
    pub repeats: u32,
    /// Convergences of this key folded into this detection (see `Throttle::offer`): the filters were lifted and
    /// imposed again that many times in between.
    pub filters_lifted_between: u32,
}

/// The `[notify]` section. With no `mail_to` and no `exec`, nothing is sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Recipients, e.g. `["root"]` or `["admin@example.org"]`. Empty: no mail.
    pub mail_to: Vec<String>,
    pub mail_from: String,
    /// The MTA's sendmail-compatible program (Postfix, Exim, OpenSMTPD and sendmail all provide one).
    pub sendmail: PathBuf,
    /// A program run for every message with the notice as JSON on stdin (a chat webhook, a pager).
    pub exec: Option<PathBuf>,
    /// A second notice of the same kind about the same thing (a port, an address) within this interval is held
    /// and merged into the next message; news about another thing is not held.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub min_interval: Duration,
    /// How long a notice that may go out waits for siblings of its kind, so that a burst (the policy decides port
    /// by port, tick by tick) makes one message. 0: no waiting.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub gather: Duration,
    /// At most this many messages an hour, all kinds together.
    pub max_per_hour: u32,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            mail_to: Vec::new(),
            mail_from: default_mail_from(),
            sendmail: PathBuf::from("/usr/sbin/sendmail"),
            exec: None,
            min_interval: Duration::from_secs(10 * 60),
            gather: Duration::from_secs(1),
            max_per_hour: 12,
        }
    }
}

/// This machine's name (empty if unreadable), for the notices' subjects and the sender address.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

/// `floodgate@<hostname>` so the admin can filter on it; plain `root` if the hostname is unusable in an address.
fn default_mail_from() -> String {
    let host = hostname();
    let host = host.as_str();
    let usable = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with(['-', '.']);
    if usable {
        format!("floodgate@{host}")
    } else {
        "root".to_string()
    }
}

impl NotifyConfig {
    /// Whether anything would be sent at all.
    pub fn is_enabled(&self) -> bool {
        !self.mail_to.is_empty() || self.exec.is_some()
    }

    pub fn validate(&self) -> Result<(), String> {
        for a in &self.mail_to {
            check_address("notify.mail_to", a)?;
        }
        check_address("notify.mail_from", &self.mail_from)?;
        if !self.sendmail.is_absolute() {
            return Err(format!(
                "notify.sendmail: `{}` is not an absolute path; write e.g. /usr/sbin/sendmail",
                self.sendmail.display()
            ));
        }
        if let Some(exec) = &self.exec {
            if !exec.is_absolute() {
                return Err(format!("notify.exec: `{}` is not an absolute path", exec.display()));
            }
        }
        if self.min_interval.is_zero() {
            return Err("notify.min_interval: must be longer than zero (an attack would mail once per notice)".into());
        }
        if self.gather > MAX_GATHER {
            return Err(format!(
                "notify.gather: `{}` is longer than {}: every message would wait that long; write e.g. 1s",
                humantime::format_duration(self.gather),
                humantime::format_duration(MAX_GATHER)
            ));
        }
        if self.max_per_hour == 0 {
            return Err("notify.max_per_hour: at least 1 (to send nothing, leave mail_to and exec unset)".into());
        }
        Ok(())
    }
}

/// One plain address (`user@domain`, or a local name like `root`). With `sendmail -t` the headers choose the
/// recipients, so a line break smuggled into an address would add recipients (`\nBcc: ...`): refused here, and
/// stripped again when the mail is formatted.
fn check_address(key: &str, a: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!("{key}: `{}` is not a mail address ({why}); write e.g. admin@example.org or root", a.escape_debug())
    };
    if a.is_empty() {
        return Err(bad("empty"));
    }
    if a.len() > 254 {
        return Err(bad("longer than 254 bytes"));
    }
    if a.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("no spaces or line breaks"));
    }
    if a.starts_with('-') {
        return Err(bad("it would read as an option"));
    }
    if a.contains(['<', '>', ',', ';', ':', '"', '(', ')', '[', ']', '\\']) {
        return Err(bad("one bare address: no display name, no list"));
    }
    if let Some((local, domain)) = a.split_once('@') {
        if local.is_empty() || domain.is_empty() || domain.contains('@') {
            return Err(bad("expected local@domain"));
        }
    }
    Ok(())
}

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

fn key_name(key: &Key) -> &str {
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
    kinds: [KindState; 4],
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

/// Sends messages: mail through `sendmail -t -i`, and/or the exec hook.
#[derive(Debug, Clone)]
pub struct Notifier {
    cfg: NotifyConfig,
    timeout: Duration,
}

impl Notifier {
    pub fn new(cfg: NotifyConfig) -> Self {
        Notifier { cfg, timeout: DEFAULT_TIMEOUT }
    }

    /// How long each program may run before it is killed (tests shorten it).
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Mails the notice and runs the hook. One failing does not stop the other; the error names what failed.
    pub fn send(&self, n: &Notice) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        if !self.cfg.mail_to.is_empty() {
            let mail = format_mail(&self.cfg, n);
            // -t: recipients from the headers (validated, and flattened by format_mail); -i: a line holding a
            // single dot is text, not the end of the message.
            if let Err(e) = run("notify.sendmail", &self.cfg.sendmail, &["-t", "-i"], mail.into_bytes(), self.timeout) {
                failures.push(e);
            }
        }
        if let Some(exec) = &self.cfg.exec {
            // Hook consumers can always read `parts`, even for a notice that never went through the throttle.
            let mut json = serde_json::to_vec(&*n.with_parts())?;
            json.push(b'\n');
            if let Err(e) = run("notify.exec", exec, &[], json, self.timeout) {
                failures.push(e);
            }
        }
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0)),
            _ => Err(anyhow!("{}; {}", failures[0], failures[1])),
        }
    }
}

/// Runs `program args` with `input` on stdin; an error unless it exits successfully within `timeout`.
fn run(key: &str, program: &Path, args: &[&str], input: Vec<u8>, timeout: Duration) -> anyhow::Result<()> {
    let shown = std::iter::once(program.display().to_string()).chain(args.iter().map(|a| a.to_string()));
    let shown = shown.collect::<Vec<_>>().join(" ");
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    // A group of its own: the timeout kills the whole group, so what a hook started (a curl stuck on a dead
    // webhook) does not outlive it and keep its pipes open.
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| anyhow!("{key}: cannot run `{}`: {e}", program.display()))?;

    // Writing and reading happen on their own threads: a child that reads nothing or writes a lot cannot block
    // us on a full pipe, and the deadline below stays in force. Neither thread is joined blindly: one stuck on
    // a pipe that an escaped grandchild holds open simply ends when that pipe closes.
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            // A child that exits without reading all of it is judged by its exit status, not by EPIPE here.
            let _ = stdin.write_all(&input);
        });
    }
    let (stderr_tx, stderr_rx) = mpsc::channel();
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut stderr).take(MAX_STDERR_BYTES as u64).read_to_end(&mut kept);
            // Drained to the end so the child never blocks writing to it.
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            let _ = stderr_tx.send(kept);
        });
    }

    let status = match crate::child::wait_until(&mut child, Instant::now() + timeout) {
        Ok(Some(status)) => status,
        waited => {
            kill_group(&mut child);
            let _ = child.wait();
            return Err(match waited {
                Err(e) => anyhow!("{key}: waiting for `{shown}` failed: {e}; killed it"),
                _ => {
                    anyhow!("{key}: `{shown}` did not finish within {}; killed it", humantime::format_duration(timeout))
                }
            });
        }
    };
    if status.success() {
        return Ok(());
    }
    let stderr = stderr_rx.recv_timeout(Duration::from_millis(500)).unwrap_or_default();
    let stderr = one_line(&String::from_utf8_lossy(&stderr), 500);
    if stderr.is_empty() {
        Err(anyhow!("{key}: `{shown}` failed ({status})"))
    } else {
        Err(anyhow!("{key}: `{shown}` failed ({status}): {stderr}"))
    }
}

fn kill_group(child: &mut std::process::Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours. The child is not reaped yet, so its
        // pid (which is also its group id, see process_group(0)) cannot have been reused.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    // In case the group kill was refused; harmless if the child is already dead.
    let _ = child.kill();
}

/// Formats the message for `sendmail -t`: headers, a blank line, the body; LF line endings (sendmail converts).
///
/// Nothing that reaches a header can carry a line break: the subject and the addresses are flattened here
/// whatever validation did or did not happen before.
pub fn format_mail(cfg: &NotifyConfig, n: &Notice) -> String {
    let to: Vec<String> = cfg.mail_to.iter().map(|a| header_address(a)).collect();
    let mut m = String::new();
    m.push_str(&format!("From: {}\n", header_address(&cfg.mail_from)));
    m.push_str(&format!("To: {}\n", to.join(", ")));
    m.push_str(&format!("Subject: {}\n", encode_subject(&n.subject)));
    m.push_str(&format!("Date: {}\n", n.time.to_rfc2822()));
    m.push_str("MIME-Version: 1.0\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\n");
    m.push_str("Content-Transfer-Encoding: 8bit\n");
    // RFC 3834: vacation responders and the like must not answer it.
    m.push_str("Auto-Submitted: auto-generated\n");
    m.push_str(&format!("X-Floodgate-Kind: {}\n", n.kind.as_str()));
    m.push('\n');
    let mut body = n.body.replace("\r\n", "\n").replace('\r', "\n");
    if !n.figures.is_null() {
        if !body.is_empty() && !body.ends_with('\n') {
            body.push('\n');
        }
        let figures = serde_json::to_string_pretty(&n.figures).unwrap_or_else(|_| n.figures.to_string());
        body.push_str(&format!("\nFigures:\n{figures}\n"));
    }
    for line in body.lines() {
        push_wrapped(&mut m, line);
    }
    m
}

/// Addresses with everything that could end or bend a header line taken out.
fn header_address(a: &str) -> String {
    a.chars().filter(|c| !c.is_control() && !c.is_whitespace() && *c != ',').collect()
}

/// The subject on one line: control characters (CR, LF, tab, NUL...) and Unicode line separators become
/// spaces, runs of spaces one; long subjects are cut; non-ASCII is RFC 2047-encoded.
fn encode_subject(subject: &str) -> String {
    let flat: String =
        subject.chars().map(|c| if c.is_control() || c == '\u{2028}' || c == '\u{2029}' { ' ' } else { c }).collect();
    let mut words = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() > MAX_SUBJECT_CHARS {
        // An ASCII mark: a cut ASCII subject stays readable to filters rather than turning into encoded words.
        words = words.chars().take(MAX_SUBJECT_CHARS - 3).collect::<String>() + "...";
    }
    if words.is_ascii() {
        return words;
    }
    // Encoded words of at most 39 bytes of text (52 of base64, 64 with the markers), cut between characters and
    // folded onto continuation lines: even after `Subject: ` a line stays under RFC 2047's 76 characters.
    let mut encoded = Vec::new();
    let mut chunk = String::new();
    for c in words.chars() {
        if chunk.len() + c.len_utf8() > 39 {
            encoded.push(format!("=?utf-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        encoded.push(format!("=?utf-8?B?{}?=", base64(chunk.as_bytes())));
    }
    encoded.join("\n ")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Appends `line` and a newline, split into pieces of at most 998 bytes (between characters): a longer line
/// would be refused or broken arbitrarily by the MTA.
fn push_wrapped(out: &mut String, mut line: &str) {
    while line.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
        line = &line[cut..];
    }
    out.push_str(line);
    out.push('\n');
}

/// `text` on one line of at most `max` characters, for quoting a program's stderr in an error.
fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        flat.chars().take(max).collect::<String>() + "…"
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_251_600, 0).unwrap()
    }

    fn min(m: i64) -> DateTime<Utc> {
        t0() + TimeDelta::minutes(m)
    }

    fn notice(kind: NoticeKind, at: DateTime<Utc>, pps: u64) -> Notice {
        Notice::new(kind, at, format!("{} on mx", kind.as_str()), "Port 25 is flooded.", json!({ "pps": pps }))
    }

    /// The defaults, with recipients.
    fn defaults() -> NotifyConfig {
        NotifyConfig {
            mail_to: vec!["admin@example.org".into()],
            mail_from: "floodgate@mx".into(),
            ..Default::default()
        }
    }

    /// No gathering and a 15m interval: the tests written for one key per kind read minute by minute.
    fn cfg() -> NotifyConfig {
        NotifyConfig { min_interval: Duration::from_secs(15 * 60), gather: Duration::ZERO, ..defaults() }
    }

    fn about(kind: NoticeKind, at: DateTime<Utc>, key: &str, pps: u64) -> Notice {
        Notice::new(
            kind,
            at,
            format!("{} on {key}", kind.as_str()),
            format!("{key}: {pps} pps."),
            json!({ "pps": pps }),
        )
        .about(key)
    }

    fn ms(n: i64) -> DateTime<Utc> {
        t0() + TimeDelta::milliseconds(n)
    }

    fn keys(n: &Notice) -> Vec<&str> {
        n.parts.iter().map(|p| key_name(&p.key)).collect()
    }

    /// Every notice a message stands for: its parts, the detections' folded lifts, the ones kept only as a count.
    fn accounted(n: &Notice) -> u64 {
        let parts: u64 = n.parts.iter().map(|p| u64::from(p.repeats) + u64::from(p.filters_lifted_between)).sum();
        parts + n.figures["merged_without_text"].as_u64().unwrap_or(0)
    }

    fn kinds(out: &[Notice]) -> Vec<NoticeKind> {
        out.iter().map(|n| n.kind).collect()
    }

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
        assert_eq!(kinds(&t.offer(notice(BanStorm, min(1), 1), min(1))), [BanStorm]);
        assert_eq!(kinds(&t.offer(notice(DdosDetected, min(1), 1), min(1))), [DdosDetected]);
        assert!(t.offer(notice(DosDetected, min(2), 1), min(2)).is_empty());
        assert!(t.offer(notice(BanStorm, min(2), 1), min(2)).is_empty());
        assert_eq!(kinds(&t.tick(min(15))), [DosDetected]);
        assert_eq!(kinds(&t.tick(min(16))), [BanStorm]);
    }

    #[test]
    fn throttle_max_per_hour_caps_the_total_and_merges_the_rest() {
        let c = NotifyConfig { min_interval: Duration::from_secs(60), max_per_hour: 3, ..cfg() };
        let mut t = Throttle::new(&c);
        let mut sent = 0;
        for m in (0..20).step_by(2) {
            sent += t.offer(notice(BanStorm, min(m), m as u64), min(m)).len();
        }
        assert_eq!(sent, 3, "0, 2 and 4; 6..18 merged");
        assert!(t.tick(min(59)).is_empty());
        let out = t.tick(min(60));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].subject, "BanStorm on mx (and 6 more)");
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
            let kind = NoticeKind::ALL[(s / 10) as usize % 4];
            offered += 1;
            sent.extend(t.offer(notice(kind, now, 0), now).into_iter().map(|n| (now, n)));
            sent.extend(t.tick(now).into_iter().map(|n| (now, n)));
        }
        for (i, (at, _)) in sent.iter().enumerate() {
            let in_hour = sent[i..].iter().filter(|(b, _)| *b - *at < TimeDelta::seconds(3600)).count();
            assert!(in_hour <= 5, "{in_hour} messages in the hour from {at}");
        }
        for k in [DosDetected, DdosDetected, BanStorm] {
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
        assert_eq!(t.offer(about(DdosDetected, t0(), "port 1", 1), t0()).len(), 1);
        assert_eq!(t.offer(about(BanStorm, t0(), "port 1", 1), t0()).len(), 1);
        for p in 2..6 {
            assert!(t.offer(about(DdosDetected, min(p), &format!("port {p}"), p as u64), min(p)).is_empty());
            assert!(t.offer(about(BanStorm, min(p), &format!("port {p}"), p as u64), min(p)).is_empty());
        }
        let out = t.tick(min(60));
        assert_eq!(kinds(&out), [DdosDetected, BanStorm], "one message per kind");
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
        let mail = format_mail(&defaults(), last);
        let subject = header(&mail, "Subject").unwrap();
        assert!(
            subject.starts_with("DdosDetected on port ") && subject.ends_with("..."),
            "cut, still ASCII: {subject}"
        );
        assert_eq!(subject.len(), MAX_SUBJECT_CHARS);
    }

    #[test]
    fn throttle_delivers_notices_counted_without_a_part_of_their_own() {
        let c = NotifyConfig { max_per_hour: 1, ..cfg() };
        let mut t = Throttle::new(&c);
        assert_eq!(t.offer(about(BanStorm, t0(), "x", 0), t0()).len(), 1, "the budget is spent");
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

    #[test]
    fn config_defaults_parse_and_validate() {
        let d = NotifyConfig::default();
        assert_eq!(d.min_interval, Duration::from_secs(600));
        assert_eq!(d.gather, Duration::from_secs(1));
        assert_eq!(d.max_per_hour, 12);
        assert_eq!(d.sendmail, PathBuf::from("/usr/sbin/sendmail"));
        assert!(d.mail_from == "root" || d.mail_from.starts_with("floodgate@"), "{}", d.mail_from);
        assert!(!d.is_enabled());
        d.validate().unwrap();

        let c: NotifyConfig = toml::from_str(
            "mail_to = [\"root\", \"admin@example.org\"]\nmin_interval = \"1h30m\"\nexec = \"/usr/local/bin/hook\"\n",
        )
        .unwrap();
        assert_eq!(c.min_interval, Duration::from_secs(5400));
        assert!(c.is_enabled());
        c.validate().unwrap();
        let c: NotifyConfig = toml::from_str("gather = \"0s\"\n").unwrap();
        assert_eq!(c.gather, Duration::ZERO, "no waiting");
        c.validate().unwrap();
        NotifyConfig { gather: Duration::from_secs(60), ..cfg() }.validate().unwrap();
        let e = toml::from_str::<NotifyConfig>("min_interval = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("`soon` is not a duration"), "{e}");
        assert!(toml::from_str::<NotifyConfig>("mail = []\n").is_err());

        let bad = |c: NotifyConfig| c.validate().unwrap_err();
        let e = bad(NotifyConfig { mail_to: vec!["admin@example.org\nBcc: victim@example.net".into()], ..cfg() });
        assert!(e.starts_with("notify.mail_to: `admin@example.org\\nBcc: victim@example.net`"), "{e}");
        assert!(bad(NotifyConfig { mail_to: vec!["Admin <a@b>".into()], ..cfg() }).contains("notify.mail_to"));
        assert!(bad(NotifyConfig { mail_to: vec!["a@".into()], ..cfg() }).contains("local@domain"));
        assert!(bad(NotifyConfig { mail_from: "x\r".into(), ..cfg() }).contains("notify.mail_from"));
        assert!(bad(NotifyConfig { sendmail: "sendmail".into(), ..cfg() }).contains("notify.sendmail"));
        assert!(bad(NotifyConfig { exec: Some("hook.sh".into()), ..cfg() }).contains("notify.exec"));
        assert!(bad(NotifyConfig { max_per_hour: 0, ..cfg() }).contains("notify.max_per_hour"));
        assert!(bad(NotifyConfig { min_interval: Duration::ZERO, ..cfg() }).contains("notify.min_interval"));
        let e = bad(NotifyConfig { gather: Duration::from_secs(61), ..cfg() });
        assert!(e.starts_with("notify.gather: `1m 1s` is longer than 1m"), "{e}");
    }

    fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
        let head = mail.split("\n\n").next().unwrap();
        head.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
    }

    #[test]
    fn format_mail_has_the_headers_and_the_body() {
        let c = NotifyConfig { mail_to: vec!["root".into(), "admin@example.org".into()], ..cfg() };
        let mail = format_mail(&c, &notice(DdosDetected, t0(), 5000));
        assert_eq!(header(&mail, "From"), Some("floodgate@mx"));
        assert_eq!(header(&mail, "To"), Some("root, admin@example.org"));
        assert_eq!(header(&mail, "Subject"), Some("DdosDetected on mx"));
        assert_eq!(header(&mail, "Date"), Some("Sat, 21 Nov 2026 09:00:00 +0000"));
        assert_eq!(header(&mail, "Content-Type"), Some("text/plain; charset=utf-8"));
        assert_eq!(header(&mail, "Auto-Submitted"), Some("auto-generated"));
        assert_eq!(header(&mail, "X-Floodgate-Kind"), Some("DdosDetected"));
        let (_, body) = mail.split_once("\n\n").unwrap();
        assert!(body.starts_with("Port 25 is flooded.\n\nFigures:\n{\n  \"pps\": 5000\n}\n"), "{body}");
        assert!(!mail.contains('\r'));
    }

    #[test]
    fn format_mail_flattens_injected_line_breaks() {
        let c = NotifyConfig { mail_to: vec!["admin@example.org\r\nBcc: victim@example.net".into()], ..cfg() };
        let mut n = notice(DosDetected, t0(), 1);
        n.subject = "Attack from user\r\nBcc: victim@example.net\n\nfake body\u{2028}x".into();
        n.body = "line one\r\n.\r\nline three".into();
        let mail = format_mail(&c, &n);
        let (head, body) = mail.split_once("\n\n").unwrap();
        assert!(!head.lines().any(|l| l.starts_with("Bcc")), "{head}");
        assert_eq!(header(&mail, "Subject"), Some("Attack from user Bcc: victim@example.net fake body x"));
        assert_eq!(header(&mail, "To"), Some("admin@example.orgBcc:victim@example.net"));
        assert_eq!(head.lines().count(), 9, "{head}");
        assert!(body.starts_with("line one\n.\nline three\n"), "{body}");
    }

    #[test]
    fn format_mail_encodes_a_non_ascii_subject_and_wraps_long_lines() {
        assert_eq!([base64(b"Man"), base64(b"Ma"), base64(b"M"), base64(b"")], ["TWFu", "TWE=", "TQ==", ""]);
        let mut n = notice(DosDetected, t0(), 1);
        n.subject = "Überlast auf mx.example.de — ".repeat(3);
        n.body = "é".repeat(1000);
        let mail = format_mail(&cfg(), &n);
        let (head, body) = mail.split_once("\n\n").unwrap();
        assert!(head.is_ascii(), "{head}");
        let subject: Vec<&str> = head.lines().skip_while(|l| !l.starts_with("Subject:")).take(3).collect();
        assert!(subject[0].starts_with("Subject: =?utf-8?B?w5xiZXJsYXN0"), "{subject:?}");
        assert!(subject[1].starts_with(" =?utf-8?B?"), "folded: {subject:?}");
        assert!(head.lines().all(|l| l.len() <= 78), "{head}");
        assert!(body.lines().all(|l| l.len() <= MAX_LINE_BYTES));
        assert_eq!(body.lines().take(3).map(|l| l.chars().count()).sum::<usize>(), 1000);
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A script just written can fail to start with ETXTBSY while another test's fork still holds it open.
    fn send(notifier: &Notifier, n: &Notice) -> anyhow::Result<()> {
        for _ in 0..50 {
            match notifier.send(n) {
                Err(e) if e.to_string().contains("Text file busy") => std::thread::sleep(Duration::from_millis(20)),
                other => return other,
            }
        }
        notifier.send(n)
    }

    #[test]
    fn notifier_pipes_the_mail_to_sendmail_with_t_and_i() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let sendmail = script(dir.path(), "sendmail", &format!("printf '%s\\n' \"$@\" > '{d}/args'\ncat > '{d}/mail'"));
        let c = NotifyConfig { sendmail, ..cfg() };
        let n = notice(DosDetected, t0(), 7);
        send(&Notifier::new(c.clone()), &n).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("args")).unwrap(), "-t\n-i\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("mail")).unwrap(), format_mail(&c, &n));
    }

    #[test]
    fn notifier_runs_the_hook_with_the_notice_as_json_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let hook = script(dir.path(), "hook", &format!("cat > '{}/json'", dir.path().display()));
        let c = NotifyConfig { mail_to: vec![], exec: Some(hook), ..cfg() };
        send(&Notifier::new(c), &notice(BanStorm, t0(), 9)).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("json")).unwrap()).unwrap();
        assert_eq!(v["kind"], "BanStorm");
        assert_eq!(v["subject"], "BanStorm on mx");
        assert_eq!(v["time"], "2026-11-21T09:00:00Z");
        assert_eq!(v["figures"], json!({ "pps": 9 }));
        assert_eq!(v["key"], serde_json::Value::Null);
        let part = json!({
            "key": null, "time": "2026-11-21T09:00:00Z", "subject": "BanStorm on mx", "body": "Port 25 is flooded.",
            "figures": { "pps": 9 }, "repeats": 1, "filters_lifted_between": 0,
        });
        assert_eq!(v["parts"], json!([part]), "a notice sent alone is its own single part");

        // A merged message: every part, each with its own figures.
        let mut t = Throttle::new(&NotifyConfig { gather: Duration::from_secs(1), ..cfg() });
        t.offer(about(DdosDetected, t0(), "port 25", 1), t0());
        t.offer(about(DdosDetected, t0(), "port 110", 2), t0());
        let out = t.tick(ms(1000));
        assert_eq!(out.len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let hook = script(dir.path(), "hook", &format!("cat > '{}/json'", dir.path().display()));
        send(&Notifier::new(NotifyConfig { mail_to: vec![], exec: Some(hook), ..cfg() }), &out[0]).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("json")).unwrap()).unwrap();
        assert_eq!(v["parts"][0]["key"], "port 25");
        assert_eq!(v["parts"][0]["figures"], json!({ "pps": 1 }));
        assert_eq!(v["parts"][1]["key"], "port 110");
        assert_eq!(v["parts"][1]["body"], "port 110: 2 pps.");
        assert_eq!(v["figures"], json!({ "port 25": { "pps": 1 }, "port 110": { "pps": 2 } }));
    }

    #[test]
    fn notifier_kills_a_program_that_hangs() {
        let dir = tempfile::tempdir().unwrap();
        // Not `exec sleep`: the sleep is the script's child, killed with its group.
        let hook = script(dir.path(), "hook", "sleep 1000");
        let c = NotifyConfig { mail_to: vec![], exec: Some(hook.clone()), ..cfg() };
        let started = Instant::now();
        let e = send(&Notifier::new(c).with_timeout(Duration::from_millis(300)), &notice(DosDetected, t0(), 1))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(e.contains(&format!("notify.exec: `{}` did not finish within 300ms", hook.display())), "{e}");
    }

    #[test]
    fn notifier_names_a_missing_program() {
        let c = NotifyConfig { sendmail: "/nonexistent/floodgate-test/sendmail".into(), ..cfg() };
        let e = Notifier::new(c).send(&notice(DosDetected, t0(), 1)).unwrap_err().to_string();
        assert!(e.starts_with("notify.sendmail: cannot run `/nonexistent/floodgate-test/sendmail`:"), "{e}");
    }

    #[test]
    fn notifier_runs_the_hook_even_when_mail_fails() {
        let dir = tempfile::tempdir().unwrap();
        let sendmail = script(dir.path(), "sendmail", "cat > /dev/null\necho 'queue full' >&2\nexit 75");
        let hook = script(dir.path(), "hook", &format!("cat > '{}/json'", dir.path().display()));
        let c = NotifyConfig { sendmail: sendmail.clone(), exec: Some(hook), ..cfg() };
        let e = send(&Notifier::new(c), &notice(Converged, t0(), 1)).unwrap_err().to_string();
        assert_eq!(e, format!("notify.sendmail: `{} -t -i` failed (exit status: 75): queue full", sendmail.display()));
        assert!(dir.path().join("json").exists());
    }
}
