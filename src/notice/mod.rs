//! Notices to the admin: a DoS or DDoS detected, an attack over (filters lifted).
//!
//! A notice ([`Notice`], made from a policy alert) and the `[notify]` section ([`NotifyConfig`]: who gets mail,
//! which hook runs, how often either may fire) live here; the rest has a file each:
//! - [`Throttle`] (throttle.rs), pure (notices and a clock in, messages out), which decides what goes out and when. An attack
//!   must never turn floodgate into a mail flood of its own: a notice of one kind about one thing (its key: a
//!   port, an address) goes out at most once per `min_interval`, everything at most `max_per_hour`; news about
//!   another thing goes out at once, after waiting up to `gather` for its siblings so that a burst makes one
//!   message. What is held back is merged into one message per kind that keeps every notice's subject, body and
//!   figures as a part of its own (past `MAX_KEYS_PER_KIND` keys, notices are only counted and named).
//! - `format_mail` (mail.rs): the message as `sendmail -t` takes it (built by `mail-builder`), headers that no
//!   text can bend, and a convergence's report attached.
//! - [`ReportSource`] (report.rs): the report of the attack a convergence closes, rendered from the store within a
//!   deadline, and the copies kept for the hook.
//! - [`Notifier`] (send.rs), the I/O: a mail piped to the local `sendmail -t -i` and/or an exec hook fed the notice as
//!   JSON on stdin, each killed if it has not finished within a timeout (a wedged MTA must not wedge the daemon).
//!
//! `Notifier::send` blocks for up to twice its timeout, plus the report's deadline for a convergence: the daemon
//! calls it from a thread of its own.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

mod config;
mod mail;
mod report;
mod send;
mod throttle;

pub use config::NotifyConfig;
pub use mail::format_mail;
pub use report::{Report, ReportSource, MAX_REPORT_BYTES, REPORTS_KEPT, REPORT_DEADLINE};
pub use send::{Notifier, REPORT_ENV};
pub use throttle::Throttle;

/// How long sendmail or the hook may run before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest Subject kept: the rest of the story belongs in the body.
pub(crate) const MAX_SUBJECT_CHARS: usize = 200;
/// RFC 5322's hard limit on a line, without its line ending (the tests check the mail keeps it).
#[cfg(test)]
pub(crate) const MAX_LINE_BYTES: usize = 998;
/// How much of a failing program's stderr is quoted in the error.
pub(crate) const MAX_STDERR_BYTES: usize = 4096;
/// Most keys of one kind held whole at once. Past them a notice is only counted and its key named (up to
/// `MAX_OVERFLOW_NAMES`): an attacker making a new key every second must not grow the daemon's memory.
pub const MAX_KEYS_PER_KIND: usize = 64;
/// Most names of keys merged without their text kept per kind; past them the keys are only counted.
pub(crate) const MAX_OVERFLOW_NAMES: usize = 256;
/// Most keys remembered per kind as recently told, and as announced detections.
pub(crate) const MAX_REMEMBERED_KEYS: usize = 4096;
/// Longest `gather`: it delays every message, detections included.
pub(crate) const MAX_GATHER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NoticeKind {
    DosDetected,
    DdosDetected,
    /// The attack is over and the filters were lifted.
    Converged,
}

impl NoticeKind {
    pub(crate) const ALL: [NoticeKind; 3] = [NoticeKind::DosDetected, NoticeKind::DdosDetected, NoticeKind::Converged];

    /// The name used in `X-Floodgate-Kind` (the same as in the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::DosDetected => "DosDetected",
            NoticeKind::DdosDetected => "DdosDetected",
            NoticeKind::Converged => "Converged",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            NoticeKind::DosDetected => 0,
            NoticeKind::DdosDetected => 1,
            NoticeKind::Converged => 2,
        }
    }

    pub(crate) fn is_detection(self) -> bool {
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

    /// Says what the notice is about, so that it is throttled apart from notices about other things.
    pub fn about(mut self, key: impl Into<String>) -> Notice {
        self.key = Some(key.into());
        self
    }

    /// The notice as sent: with its parts, or as its own single part if it never went through the throttle.
    pub(crate) fn with_parts(&self) -> std::borrow::Cow<'_, Notice> {
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

/// This machine's name (empty if unreadable), for the notices' subjects and the sender address.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Notices and configs the tests of every file here share.
    #![allow(dead_code)]

    use super::*;

    use serde_json::json;

    /// A header's value in a formatted mail (its first line, if folded).
    pub(crate) fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
        let head = mail.split("\n\n").next().unwrap();
        head.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
    }

    /// A header's value unfolded (RFC 5322 2.2.3: the line breaks before continuation lines taken out).
    pub(crate) fn unfolded_header(mail: &str, name: &str) -> Option<String> {
        let head = mail.split("\n\n").next().unwrap();
        let mut lines = head.lines().skip_while(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")).is_none());
        let mut value = lines.next()?[name.len() + 2..].to_string();
        for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
            value.push_str(l);
        }
        Some(value)
    }

    /// The mail without its Message-ID line, which is new at every formatting.
    pub(crate) fn without_message_id(mail: &str) -> String {
        mail.lines().filter(|l| !l.starts_with("Message-ID: ")).map(|l| format!("{l}\n")).collect()
    }

    pub(crate) fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_251_600, 0).unwrap()
    }

    pub(crate) fn min(m: i64) -> DateTime<Utc> {
        t0() + TimeDelta::minutes(m)
    }

    pub(crate) fn notice(kind: NoticeKind, at: DateTime<Utc>, pps: u64) -> Notice {
        Notice::new(kind, at, format!("{} on mx", kind.as_str()), "Port 25 is flooded.", json!({ "pps": pps }))
    }

    /// The defaults, with recipients.
    pub(crate) fn defaults() -> NotifyConfig {
        NotifyConfig {
            mail_to: vec!["admin@example.org".into()],
            mail_from: "floodgate@mx".into(),
            ..Default::default()
        }
    }

    /// Sends, retrying while a script just written fails to start with ETXTBSY (another test's fork still
    /// holds it open).
    pub(crate) fn send_retrying(notifier: &super::Notifier, n: &Notice) -> anyhow::Result<()> {
        for _ in 0..50 {
            match notifier.send(n) {
                Err(e) if e.to_string().contains("Text file busy") => std::thread::sleep(Duration::from_millis(20)),
                other => return other,
            }
        }
        notifier.send(n)
    }

    /// No gathering and a 15m interval: the tests written for one key per kind read minute by minute.
    pub(crate) fn cfg() -> NotifyConfig {
        NotifyConfig { min_interval: Duration::from_secs(15 * 60), gather: Duration::ZERO, ..defaults() }
    }

    pub(crate) fn about(kind: NoticeKind, at: DateTime<Utc>, key: &str, pps: u64) -> Notice {
        Notice::new(
            kind,
            at,
            format!("{} on {key}", kind.as_str()),
            format!("{key}: {pps} pps."),
            json!({ "pps": pps }),
        )
        .about(key)
    }

    pub(crate) fn ms(n: i64) -> DateTime<Utc> {
        t0() + TimeDelta::milliseconds(n)
    }

    pub(crate) fn keys(n: &Notice) -> Vec<&str> {
        n.parts.iter().map(|p| super::throttle::key_name(&p.key)).collect()
    }

    /// Every notice a message stands for: its parts, the detections' folded lifts, the ones kept only as a count.
    pub(crate) fn accounted(n: &Notice) -> u64 {
        let parts: u64 = n.parts.iter().map(|p| u64::from(p.repeats) + u64::from(p.filters_lifted_between)).sum();
        parts + n.figures["merged_without_text"].as_u64().unwrap_or(0)
    }

    pub(crate) fn kinds(out: &[Notice]) -> Vec<NoticeKind> {
        out.iter().map(|n| n.kind).collect()
    }
}
