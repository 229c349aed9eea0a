//! Lines in, events out: prefix splitting, rule matching and field extraction, with per-rule counters.
//! Never fails on input: a line that cannot be read is counted and skipped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::addr::parse_ip;
use crate::event::{Event, Kind, SynAction};
use crate::matcher::{group, Matcher, Scratch};
use crate::prefix::{self, TimeContext};

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
            last_time: None,
            stats: Stats::default(),
            hits,
        }
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
            Err(_) => {
                self.stats.lines += 1;
                self.stats.undecodable += 1;
                Outcome::Undecodable
            }
        }
    }

    pub fn parse_line(&mut self, line: &str) -> Outcome {
        self.stats.lines += 1;
        let outcome = self.classify(line);
        match &outcome {
            Outcome::Event(_) => self.stats.events += 1,
            Outcome::Unmatched => self.stats.unmatched += 1,
            Outcome::Malformed { .. } => self.stats.malformed += 1,
            Outcome::Undecodable => self.stats.undecodable += 1,
        }
        outcome
    }

    fn classify(&mut self, line: &str) -> Outcome {
        // Disjoint field borrows: no reference-count traffic per line.
        let matcher: &Matcher = &self.matcher;
        if matcher.candidates(line, &mut self.scratch).is_empty() {
            return Outcome::Unmatched;
        }
        let p = prefix::split(line, &self.ctx);
        // A line without a time of its own (a continuation, a bare message) takes the previous line's.
        let time = p.time.or(self.last_time).unwrap_or(self.ctx.reference);
        self.last_time = Some(time);
        let Some((ri, locs)) = matcher.first_match(p.message, &mut self.scratch) else {
            return Outcome::Unmatched;
        };
        let rule = &matcher.rules[ri as usize];
        let g = &rule.groups;
        let msg = p.message;
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
            .or_else(|| matcher.families[rule.family].service_for(p.program));
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
        self.hits[ri as usize] += 1;
        Outcome::Event(Box::new(Event {
            time,
            kind: rule.kind,
            failure: rule.failure,
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

fn trim_eol(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

impl LineParser {
    /// The parser a command runs with: built-in rules (unless the config turns them off), then the config's
    /// rules directories, then `extra_dirs` (`--rules`).
    pub fn from_config(
        cfg: &crate::config::Config,
        extra_dirs: &[std::path::PathBuf],
        ctx: TimeContext,
    ) -> Result<LineParser, crate::rules::RulesError> {
        let mut dirs = cfg.rules_dirs.clone();
        dirs.extend_from_slice(extra_dirs);
        let families = crate::rules::load(&dirs, cfg.builtin_rules)?;
        Ok(LineParser::new(Arc::new(Matcher::new(families)), Arc::new(cfg.service_ports()), ctx))
    }
}
