//! Notifications to the admin: a DoS or DDoS detected, an attack over (filters lifted), a storm of bans.
//!
//! This module owns three things:
//! - [`NotifyConfig`], the `[notify]` section: who gets mail, which hook runs, how often either may fire.
//! - [`Throttle`], pure (notices and a clock in, messages out), which decides what goes out and when. An attack
//!   must never turn floodgate into a mail flood of its own: each kind goes out at most once per
//!   `min_interval`, everything at most `max_per_hour`; what is held back is merged into one message per kind.
//! - [`Notifier`], the I/O: a mail piped to the local `sendmail -t -i` and/or an exec hook fed the notice as
//!   JSON on stdin, each killed if it has not finished within a timeout (a wedged MTA must not wedge the daemon).
//!
//! `Notifier::send` blocks for up to twice its timeout: the daemon calls it from a blocking thread.

use std::collections::VecDeque;
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
    /// When it happened (for an aggregate: when the latest merged notice happened).
    pub time: DateTime<Utc>,
    pub subject: String,
    pub body: String,
    /// What led to it (rates, sources, thresholds), for the admin and for hooks.
    pub figures: serde_json::Value,
}

impl Notice {
    pub fn new(
        kind: NoticeKind,
        time: DateTime<Utc>,
        subject: impl Into<String>,
        body: impl Into<String>,
        figures: serde_json::Value,
    ) -> Notice {
        Notice { kind, time, subject: subject.into(), body: body.into(), figures }
    }
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
    /// At most one message of each kind per this interval; what comes in between is merged into the next.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub min_interval: Duration,
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
            min_interval: Duration::from_secs(15 * 60),
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

/// Notices held back for one kind: the latest kept whole, the others only counted, so memory stays bounded
/// however long an attack lasts.
#[derive(Debug)]
struct Held {
    latest: Notice,
    /// How many notices are merged, the latest included.
    count: u32,
    first_time: DateTime<Utc>,
    /// When the first of them was offered: a notice released later than that was held back.
    held_since: DateTime<Utc>,
    /// Convergences folded into this detection (see `Throttle::offer`).
    lifted_between: u32,
}

#[derive(Debug, Default)]
struct KindState {
    last_sent: Option<DateTime<Utc>>,
    held: Option<Held>,
}

/// Decides what to send and when. Pure (no I/O, the clock is a parameter), so it is tested with virtual time.
///
/// Every notice is delivered, possibly late and merged: an admin must be able to trust that silence means
/// nothing happened.
#[derive(Debug)]
pub struct Throttle {
    min_interval: Duration,
    min_interval_delta: TimeDelta,
    max_per_hour: u32,
    /// Times of the messages sent in the last hour, oldest first.
    sent: VecDeque<DateTime<Utc>>,
    kinds: [KindState; 4],
    /// The admin was last told of a detection, not of its end: the next Converged answers it.
    attack_announced: bool,
}

impl Throttle {
    pub fn new(cfg: &NotifyConfig) -> Self {
        Throttle {
            min_interval: cfg.min_interval,
            min_interval_delta: TimeDelta::from_std(cfg.min_interval).unwrap_or(TimeDelta::MAX),
            max_per_hour: cfg.max_per_hour.max(1),
            sent: VecDeque::new(),
            kinds: Default::default(),
            attack_announced: false,
        }
    }

    /// Offers a notice; returns the messages to send now (this one, possibly merged with held ones, and any
    /// other held message whose time has come).
    ///
    /// A notice of a kind sent less than `min_interval` ago is held and merged; `tick` releases it. Converged is
    /// not bound by its own `min_interval` when it answers a detection the admin was told of (the admin must
    /// learn that the filters were lifted): there is at most one such Converged per detection message, so it
    /// needs no limit of its own. It still waits for `max_per_hour`, and for a held detection to go out first.
    pub fn offer(&mut self, n: Notice, now: DateTime<Utc>) -> Vec<Notice> {
        let mut lifted = 0;
        if n.kind.is_detection() && !self.attack_announced {
            // A Converged still held here ends an attack the admin has not heard of yet, and this detection
            // starts the next one: mailing "filters lifted" after this would tell the admin the wrong state.
            // It is mentioned in the detection's message instead.
            if let Some(c) = self.kinds[NoticeKind::Converged.index()].held.take() {
                lifted = c.count.saturating_add(c.lifted_between);
            }
        }
        let slot = &mut self.kinds[n.kind.index()].held;
        match slot {
            Some(h) => {
                h.count = h.count.saturating_add(1);
                h.lifted_between = h.lifted_between.saturating_add(lifted);
                h.latest = n;
            }
            None => {
                *slot = Some(Held { first_time: n.time, latest: n, count: 1, held_since: now, lifted_between: lifted })
            }
        }
        self.release(now)
    }

    /// Releases held messages whose interval has passed. Call it every daemon tick.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Notice> {
        self.release(now)
    }

    /// How many messages the throttle is holding back (for `status`).
    pub fn held(&self) -> usize {
        self.kinds.iter().filter(|k| k.held.is_some()).count()
    }

    fn release(&mut self, now: DateTime<Utc>) -> Vec<Notice> {
        let hour_ago = now - TimeDelta::seconds(3600);
        // Entries after `now` mean the clock stepped back: dropping them lets mail through rather than holding
        // it for as long as the step.
        self.sent.retain(|&t| t > hour_ago && t <= now);
        let mut out = Vec::new();
        while self.sent.len() < self.max_per_hour as usize {
            // Oldest first, so that a Converged held for the budget still precedes a later detection.
            let next = NoticeKind::ALL
                .into_iter()
                .filter(|&k| self.releasable(k, now))
                .filter_map(|k| self.kinds[k.index()].held.as_ref().map(|h| (h.latest.time, k.index())))
                .min();
            let Some((_, index)) = next else { break };
            let kind = NoticeKind::ALL[index];
            let state = &mut self.kinds[index];
            let Some(held) = state.held.take() else { break };
            state.last_sent = Some(now);
            self.sent.push_back(now);
            if kind.is_detection() {
                self.attack_announced = true;
            } else if kind == NoticeKind::Converged {
                self.attack_announced = false;
            }
            out.push(self.aggregate(held, now));
        }
        out
    }

    fn releasable(&self, kind: NoticeKind, now: DateTime<Utc>) -> bool {
        let state = &self.kinds[kind.index()];
        if state.held.is_none() {
            return false;
        }
        if kind == NoticeKind::Converged {
            if self.attack_announced {
                return true;
            }
            // The end of an attack is told after its start, never before.
            if self.kinds.iter().zip(NoticeKind::ALL).any(|(s, k)| k.is_detection() && s.held.is_some()) {
                return false;
            }
        }
        match state.last_sent {
            None => true,
            // A clock that stepped back does not hold mail until it catches up.
            Some(t) => now < t || now - t >= self.min_interval_delta,
        }
    }

    /// Turns what was held into one message: the latest notice, its subject saying how many more there were and
    /// its body why it comes late.
    fn aggregate(&self, held: Held, now: DateTime<Utc>) -> Notice {
        let Held { latest: mut n, count, first_time, held_since, lifted_between } = held;
        let mut notes = Vec::new();
        let limits = format!(
            "floodgate sends at most one message of each kind per {} and {} an hour (notify.min_interval, \
             notify.max_per_hour).",
            humantime::format_duration(self.min_interval),
            self.max_per_hour
        );
        if count > 1 {
            let more = count - 1;
            n.subject = format!("{} (and {more} more)", n.subject);
            notes.push(format!(
                "{count} notices of this kind since {}; this is the latest (at {}). {limits}",
                rfc3339(first_time),
                rfc3339(n.time)
            ));
            if let serde_json::Value::Object(m) = &mut n.figures {
                m.insert("and_more".into(), more.into());
            }
        } else if held_since < now {
            notes.push(format!("Held back since {}. {limits}", rfc3339(held_since)));
        }
        if lifted_between > 0 {
            notes.push(format!(
                "Meanwhile the filters were lifted {lifted_between} time(s) and imposed again: the attack is on."
            ));
            if let serde_json::Value::Object(m) = &mut n.figures {
                m.insert("filters_lifted_between".into(), lifted_between.into());
            }
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
            let mut json = serde_json::to_vec(n)?;
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
        words = words.chars().take(MAX_SUBJECT_CHARS - 1).collect::<String>() + "…";
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

    fn cfg() -> NotifyConfig {
        NotifyConfig {
            mail_to: vec!["admin@example.org".into()],
            mail_from: "floodgate@mx".into(),
            ..Default::default()
        }
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
                1 + n.figures["and_more"].as_u64().unwrap_or(0)
                    + n.figures["filters_lifted_between"].as_u64().unwrap_or(0)
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

    #[test]
    fn config_defaults_parse_and_validate() {
        let d = NotifyConfig::default();
        assert_eq!(d.min_interval, Duration::from_secs(900));
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
