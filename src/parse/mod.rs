//! Lines in, events out: the `LineParser` splits a line's syslog header ([`header`]), picks the rules whose
//! literals it holds and runs their regexes ([`matcher`], built from [`rules`] files), and turns the first match
//! into an `Event` with per-rule counters. [`lines`] reads the lines with bounded memory. Never fails on input: a
//! line that cannot be read is counted and skipped.

pub mod config;
pub mod header;
pub mod lines;
pub mod matcher;
pub mod rules;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::addr::parse_ip;
use crate::event::{Event, Kind, SynAction};
use header::TimeContext;
use matcher::{group, Matcher, Scratch};
use rules::{Attempt, Level};

pub use config::{ParseConfig, Setup};

/// Service name -> its ports, from the config. A service with exactly one port gives events their port.
pub type ServicePorts = HashMap<String, Vec<u16>>;

/// What became of a line.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Event(Box<Event>),
    /// No rule matched: normal traffic.
    Unmatched,
    /// Not UTF-8.
    Undecodable,
    /// A rule matched but a field did not parse (`unknown[unknown]`, a port of 99999).
    Malformed {
        rule: Arc<str>,
        field: &'static str,
        value: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub lines: u64,
    pub events: u64,
    pub unmatched: u64,
    pub undecodable: u64,
    pub malformed: u64,
    pub overlong: u64,
}

/// Remembers which address a session id belongs to, for logs (OpenSMTPD) that name the client only on the
/// connect line. Bounded: two generations, the older dropped when the newer fills.
struct Sessions {
    current: HashMap<(usize, String), IpAddr>,
    previous: HashMap<(usize, String), IpAddr>,
}

const SESSIONS_PER_GENERATION: usize = 50_000;

/// Which session of which client a failure line belongs to: the family, the client, and the rule's `session`
/// capture or (for servers that fork per connection) the syslog pid. Attacker text never takes part: the
/// session and pid are written by the server.
type LedgerKey = (usize, IpAddr, Option<Box<str>>);

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Attempts announced by `each` lines.
    each: u32,
    /// Attempts counted so far.
    counted: u32,
}

/// The attempt ledger: what each session has already been counted for, so that a server that logs one attempt
/// in several lines (a per-attempt line, then a summary when the connection closes) has it counted once, and as
/// soon as the first line says so. Bounded like `Sessions`: two generations.
#[derive(Default)]
struct Ledger {
    current: HashMap<LedgerKey, Tally>,
    previous: HashMap<LedgerKey, Tally>,
}

impl Ledger {
    /// How many of the attempts this line stands for are new.
    fn count(&mut self, key: LedgerKey, attempt: Attempt, count: u32) -> u32 {
        let mut tally = self.current.remove(&key).or_else(|| self.previous.remove(&key)).unwrap_or_default();
        let implied = match attempt {
            Attempt::Each => {
                tally.each = tally.each.saturating_add(count);
                tally.each
            }
            Attempt::Total | Attempt::Final => count,
        };
        let new = implied.saturating_sub(tally.counted);
        tally.counted = tally.counted.max(implied);
        if attempt != Attempt::Final {
            if self.current.len() >= SESSIONS_PER_GENERATION {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(key, tally);
        }
        new
    }
}

/// Which rule levels count as failures, per service (`level` in the service's config; the jail's otherwise).
#[derive(Debug, Clone, Default)]
pub struct Levels {
    pub default: Level,
    pub per_service: HashMap<String, Level>,
}

impl Levels {
    fn of(&self, service: Option<&str>) -> Level {
        service.and_then(|s| self.per_service.get(s)).copied().unwrap_or(self.default)
    }
}

impl Sessions {
    fn insert(&mut self, key: (usize, String), addr: IpAddr) {
        if self.current.len() >= SESSIONS_PER_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, addr);
    }

    fn get(&self, key: &(usize, String)) -> Option<IpAddr> {
        self.current.get(key).or_else(|| self.previous.get(key)).copied()
    }
}

pub struct LineParser {
    matcher: Arc<Matcher>,
    ports: Arc<ServicePorts>,
    pub ctx: TimeContext,
    scratch: Scratch,
    sessions: Sessions,
    ledger: Ledger,
    levels: Levels,
    last_time: Option<DateTime<Utc>>,
    pub stats: Stats,
    /// Events per rule, indexed like `Matcher::rules`.
    pub hits: Vec<u64>,
}

impl LineParser {
    pub fn new(matcher: Arc<Matcher>, ports: Arc<ServicePorts>, ctx: TimeContext) -> LineParser {
        let scratch = matcher.scratch();
        let hits = vec![0; matcher.rules.len()];
        LineParser {
            matcher,
            ports,
            ctx,
            scratch,
            sessions: Sessions { current: HashMap::new(), previous: HashMap::new() },
            ledger: Ledger::default(),
            levels: Levels::default(),
            last_time: None,
            stats: Stats::default(),
            hits,
        }
    }

    /// Sets which rule levels count as failures per service.
    pub fn with_levels(mut self, levels: Levels) -> LineParser {
        self.levels = levels;
        self
    }

    /// The rules, shareable with threads that pre-match lines (`prematch`).
    pub fn matcher_arc(&self) -> Arc<Matcher> {
        self.matcher.clone()
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Forgets the time carried over from the previous line (call between files).
    pub fn start_input(&mut self) {
        self.last_time = None;
    }

    /// Counts a line that was too long to read whole.
    pub fn overlong(&mut self) {
        self.stats.lines += 1;
        self.stats.overlong += 1;
    }

    pub fn parse_bytes(&mut self, bytes: &[u8]) -> Outcome {
        let bytes = trim_eol(bytes);
        match std::str::from_utf8(bytes) {
            Ok(line) => self.parse_line(line),
            Err(_) => self.counted(Outcome::Undecodable),
        }
    }

    pub fn parse_line(&mut self, line: &str) -> Outcome {
        let pre = prematch(&self.matcher, &self.ctx, line, &mut self.scratch);
        let outcome = self.finish(line, pre);
        self.counted(outcome)
    }

    /// Counts one line's outcome in the stats.
    fn counted(&mut self, outcome: Outcome) -> Outcome {
        self.stats.lines += 1;
        match &outcome {
            Outcome::Event(_) => self.stats.events += 1,
            Outcome::Unmatched => self.stats.unmatched += 1,
            Outcome::Malformed { .. } => self.stats.malformed += 1,
            Outcome::Undecodable => self.stats.undecodable += 1,
        }
        outcome
    }

    /// Takes a line `prematch` looked at (on this thread or another) to its outcome: the stateful half of
    /// parsing (the previous line's time, sessions, the attempt ledger), in input order.
    pub fn finish_bytes(&mut self, bytes: &[u8], pre: Prematch) -> Outcome {
        // Only a matched line needs its text again (decoded once more: cheap next to a regex, and a quarter of
        // lines at most); the rest were judged by the pre-matching thread.
        let outcome = match pre {
            Prematch::Undecodable => Outcome::Undecodable,
            Prematch::Rule(_) => match std::str::from_utf8(trim_eol(bytes)) {
                Ok(line) => self.finish(line, pre),
                Err(_) => Outcome::Undecodable,
            },
            Prematch::None | Prematch::NoRule { .. } => self.finish("", pre),
        };
        self.counted(outcome)
    }

    fn finish(&mut self, line: &str, pre: Prematch) -> Outcome {
        let matcher: &Matcher = &self.matcher;
        let (time, m) = match pre {
            Prematch::Undecodable => return Outcome::Undecodable,
            Prematch::None => return Outcome::Unmatched,
            Prematch::NoRule { time } => {
                self.last_time = Some(time.or(self.last_time).unwrap_or(self.ctx.reference));
                return Outcome::Unmatched;
            }
            Prematch::Rule(m) => (m.time, m),
        };
        // A line without a time of its own (a continuation, a bare message) takes the previous line's.
        let time = time.or(self.last_time).unwrap_or(self.ctx.reference);
        self.last_time = Some(time);
        let ri = m.rule;
        let locs = &m.locs;
        let p_program = m.program.as_ref().map(|p| p.get(line));
        let p_pid = m.pid.as_ref().map(|p| p.get(line));
        let msg = m.message.get(line);
        let rule = &matcher.rules[ri as usize];
        let g = &rule.groups;
        let malformed = |field: &'static str, value: &str| Outcome::Malformed {
            rule: rule.id.clone(),
            field,
            value: value.to_string(),
        };

        let mut addr = None;
        if let Some(text) = group(locs, g.addr, msg) {
            match parse_ip(text) {
                Some(ip) => addr = Some(ip),
                None => return malformed("addr", text),
            }
        }
        let local_addr = match group(locs, g.laddr, msg) {
            Some(text) => match parse_ip(text) {
                Some(ip) => Some(ip),
                None => return malformed("laddr", text),
            },
            None => None,
        };
        let port = match group(locs, g.port, msg) {
            Some(text) => match text.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return malformed("port", text),
            },
            None => None,
        };
        let count = match group(locs, g.count, msg) {
            Some(text) => match text.parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => return malformed("count", text),
            },
            None => 1,
        };
        if let Some(session) = group(locs, g.session, msg) {
            let key = (rule.family, session.to_string());
            match addr {
                Some(ip) => self.sessions.insert(key, ip),
                None => addr = self.sessions.get(&key),
            }
        }
        if rule.failure && addr.is_none() {
            // A failure whose source is unknown (session never seen) cannot count against anyone.
            return malformed("addr", group(locs, g.session, msg).unwrap_or(""));
        }
        let service = group(locs, g.service, msg)
            .map(Arc::from)
            .or_else(|| rule.service.clone())
            .or_else(|| matcher.families[rule.family].service_for(p_program));
        let port = port.or_else(|| {
            let ports = self.ports.get(service.as_deref()?)?;
            (ports.len() == 1).then(|| ports[0])
        });
        let user = group(locs, g.user, msg).filter(|u| !u.is_empty()).map(str::to_string);
        let syn_action = group(locs, g.action, msg).and_then(|a| {
            if a.contains("ookie") {
                Some(SynAction::Cookies)
            } else if a.contains("rop") {
                Some(SynAction::Dropping)
            } else {
                None
            }
        });
        let assured =
            (rule.kind == Kind::ConnDestroy || g.assured.is_some()).then(|| group(locs, g.assured, msg).is_some());
        // A judgement call counts only where the operator asked for that level.
        let mut failure = rule.failure && rule.level <= self.levels.of(service.as_deref());
        let mut count = count;
        // A signal rule with `attempt` is an excuse: an attempt that failed through the server's fault (its auth
        // backend down) is entered in the ledger as seen, so a summary line of the same session does not count it.
        let excuse = !rule.failure && rule.attempt.is_some();
        // A per-attempt line whose rule names a session, but which carries none here, cannot be joined to the
        // other lines of its attempt (Dovecot's auth process answering Postfix's SASL, which logs the same guess
        // itself): a signal, so one attempt written by two processes never counts twice.
        let unjoinable = rule.attempt == Some(Attempt::Each)
            && g.session.is_some()
            && group(locs, g.session, msg).is_none_or(str::is_empty)
            && !matcher.families[rule.family].attempts_per_pid;
        if unjoinable {
            failure = false;
        }
        if let (true, Some(attempt), Some(ip)) = (failure || excuse, rule.attempt, addr) {
            let session = group(locs, g.session, msg)
                .or_else(|| if matcher.families[rule.family].attempts_per_pid { p_pid } else { None })
                .map(Box::from);
            match self.ledger.count((rule.family, ip, session), attempt, count) {
                _ if excuse => {}
                // Every attempt this line tells of was counted by an earlier line: context only.
                0 => failure = false,
                new => count = new,
            }
        }
        self.hits[ri as usize] += 1;
        Outcome::Event(Box::new(Event {
            time,
            kind: rule.kind,
            failure,
            rule: rule.id.clone(),
            addr,
            local_addr,
            port,
            service,
            user,
            count,
            syn_action,
            assured,
        }))
    }
}

/// What the pure half of parsing found in a line: no candidate rule, candidates but no match (the line's time
/// still counts as the last one seen), or a rule's match with where its parts are. Made without any parser
/// state, so lines can be pre-matched on several threads and finished in order on one.
pub enum Prematch {
    /// Not UTF-8.
    Undecodable,
    None,
    NoRule {
        time: Option<DateTime<Utc>>,
    },
    Rule(Box<RuleMatch>),
}

pub struct RuleMatch {
    rule: u32,
    time: Option<DateTime<Utc>>,
    program: Option<Part>,
    pid: Option<Part>,
    message: Part,
    /// The capture groups, as offsets into the message.
    locs: regex::bytes::CaptureLocations,
}

/// A piece of the header: where it is in the line, or (a name the header splitter supplies, `kernel`) its text.
enum Part {
    At(std::ops::Range<usize>),
    Text(Box<str>),
}

impl Part {
    fn of(line: &str, s: &str) -> Part {
        let (base, at) = (line.as_ptr() as usize, s.as_ptr() as usize);
        if at >= base && at + s.len() <= base + line.len() {
            Part::At(at - base..at - base + s.len())
        } else {
            Part::Text(s.into())
        }
    }

    fn get<'a>(&'a self, line: &'a str) -> &'a str {
        match self {
            Part::At(r) => line.get(r.clone()).unwrap_or_default(),
            Part::Text(t) => t,
        }
    }
}

/// The pure half of parsing one line (its end of line already trimmed): candidate rules, the header, the first
/// rule whose regex matches. Any thread, any order: `scratch` is the caller's.
pub fn prematch(matcher: &Matcher, ctx: &TimeContext, line: &str, scratch: &mut Scratch) -> Prematch {
    if matcher.candidates(line, scratch).is_empty() {
        return Prematch::None;
    }
    let p = header::split(line, ctx);
    let Some((ri, locs)) = matcher.first_match(p.message, scratch) else {
        return Prematch::NoRule { time: p.time };
    };
    Prematch::Rule(Box::new(RuleMatch {
        rule: ri,
        time: p.time,
        program: p.program.map(|s| Part::of(line, s)),
        pid: p.pid.map(|s| Part::of(line, s)),
        message: Part::of(line, p.message),
        locs: locs.clone(),
    }))
}

/// `prematch` on raw bytes (as read).
pub fn prematch_bytes(matcher: &Matcher, ctx: &TimeContext, bytes: &[u8], scratch: &mut Scratch) -> Prematch {
    match std::str::from_utf8(trim_eol(bytes)) {
        Ok(line) => prematch(matcher, ctx, line, scratch),
        Err(_) => Prematch::Undecodable,
    }
}

fn trim_eol(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

impl LineParser {
    /// The parser a command runs with: built-in rules (unless the config turns them off), then the config's
    /// rules directories, then `extra_dirs` (`--rules`).
    pub fn from_config(
        setup: Setup,
        extra_dirs: &[std::path::PathBuf],
        ctx: TimeContext,
    ) -> Result<LineParser, rules::RulesError> {
        let mut dirs = setup.rules_dirs;
        dirs.extend_from_slice(extra_dirs);
        let families = rules::load(&dirs, setup.builtin_rules)?;
        Ok(LineParser::new(Arc::new(Matcher::new(families)), Arc::new(setup.ports), ctx).with_levels(setup.levels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const RULES: &str = r#"
[family]
attempts_per_pid = true
[[rule]]
id = "invalid"
kind = "auth_failure"
attempt = "total"
literals = ["Invalid user "]
regex = '^Invalid user .* from (?P<addr>[0-9.]+)$'
[[rule]]
id = "failed"
kind = "auth_failure"
attempt = "each"
literals = ["Failed password"]
regex = '^Failed password for .* from (?P<addr>[0-9.]+)$'
[[rule]]
id = "summary"
kind = "auth_failure"
attempt = "final"
literals = ["attempts):"]
regex = '^Closed \((?P<count>\d+) attempts\): (?P<addr>[0-9.]+)$'
[[rule]]
id = "scan"
kind = "protocol_error"
level = "aggressive"
literals = ["Scanned by"]
regex = '^Scanned by (?P<addr>[0-9.]+)$'
"#;

    fn parser(levels: Levels) -> LineParser {
        let fam = rules::check_file("t.toml", "t.toml", RULES).unwrap();
        let ctx = TimeContext {
            zone: header::Zone::parse("UTC").unwrap(),
            reference: Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap(),
            boot_time: None,
        };
        LineParser::new(Arc::new(Matcher::new(vec![fam])), Arc::new(crate::service::Services::default().ports()), ctx)
            .with_levels(levels)
    }

    /// (failure, count) of the event a line gives.
    fn counted(p: &mut LineParser, line: &str) -> (bool, u32) {
        match p.parse_line(line) {
            Outcome::Event(e) => (e.failure, e.count),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn every_attempt_counts_once_and_at_once_per_session() {
        let mut p = parser(Levels::default());
        let pfx = "Nov 21 10:00:00 mx sshd[100]: ";
        // The name line announces one attempt; the first Failed line is that attempt, the second a new one.
        assert_eq!(counted(&mut p, &format!("{pfx}Invalid user x from 198.51.100.7")), (true, 1));
        assert_eq!(counted(&mut p, &format!("{pfx}Failed password for x from 198.51.100.7")), (false, 1));
        assert_eq!(counted(&mut p, &format!("{pfx}Failed password for x from 198.51.100.7")), (true, 1));
        // The summary says 3: one more than the lines before it told.
        assert_eq!(counted(&mut p, &format!("{pfx}Closed (3 attempts): 198.51.100.7")), (true, 1));
        // The session is over: the same pid's next connection starts afresh.
        assert_eq!(counted(&mut p, &format!("{pfx}Closed (2 attempts): 198.51.100.7")), (true, 2));
        // Another pid is another connection, another address another client.
        assert_eq!(counted(&mut p, "Nov 21 10:00:01 mx sshd[101]: Failed password for x from 198.51.100.7"), (true, 1));
        assert_eq!(counted(&mut p, "Nov 21 10:00:01 mx sshd[100]: Failed password for x from 198.51.100.8"), (true, 1));
    }

    #[test]
    fn aggressive_rules_count_only_where_asked() {
        let mut p = parser(Levels::default());
        assert_eq!(counted(&mut p, "Scanned by 198.51.100.9"), (false, 1));
        let mut p = parser(Levels { default: Level::Aggressive, per_service: HashMap::new() });
        assert_eq!(counted(&mut p, "Scanned by 198.51.100.9"), (true, 1));
    }
}
