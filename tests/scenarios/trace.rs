//! The scenario trace format (`tests/scenarios/*.trace`): events on a virtual clock and what the policy must
//! have decided once they are replayed. One statement per line; `#` starts a comment.
//!
//! ```text
//! until 130s                                   # replay until this virtual time (ticks every second)
//! synproxy ready                               # the kernel can proxy SYNs (default: it cannot)
//! allow 203.0.113.10                           # the admin allowlist (any number of lines)
//! 10s        auth_failure 198.51.100.7 993 service=imap
//! 0s..50s/10s auth_failure 198.51.100.7 993 service=imap    # a series: start..end/step, end excluded
//! 0s..120s/5ms syn 198.18.0.0/15 587 sources=600           # a flood: N sources of the prefix, in turn
//! 0s..90s/50ms syn 203.0.113.1 25,587,110,995              # ports taken in turn
//! 60s..660s/1s kernel_counter - 587 rule=nft.limit_global count=190
//! expect bans = 198.51.100.7                   # see `Check` for every expectation
//! ```
//!
//! TIME is a number with a unit (us, ms, s, m, h). KIND is an event kind (`floodgate parse` names them) or
//! `syn` (conn_new) or `assured` (conn_destroy of a completed handshake). ADDR is an address, `-`, or a prefix
//! with `sources=N`: the prefix's addresses 250 to a /24 (never .0 or .255) for IPv4, one per /64 for IPv6.
//! PORT is a port, a comma-separated list, or `-`. Fields: service, rule, count, local (default 198.51.100.1,
//! this server), assured (yes/no), sources. Every error names the file, the line and the field.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use floodgate::addr::Cidr;
use floodgate::decision::{Decision, LimitMode};
use floodgate::event::{Event, Kind};
use floodgate::policy::engine::{Mode, Replay};

/// The server's own address, the local end of every connection unless `local=` says otherwise.
const SERVER: &str = "198.51.100.1";

pub struct Trace {
    pub until: Duration,
    /// `synproxy ready`: the kernel can proxy SYNs (the policy's `synproxy = "auto"` ports may switch to it).
    pub synproxy_ready: bool,
    pub allow: Vec<Cidr>,
    pub events: Vec<Event>,
    pub expects: Vec<Expect>,
}

pub struct Expect {
    pub line: usize,
    pub text: String,
    check: Check,
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn parse(s: &str) -> Option<Cmp> {
        Some(match s {
            "=" => Cmp::Eq,
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            ">" => Cmp::Gt,
            ">=" => Cmp::Ge,
            _ => return None,
        })
    }

    fn holds<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
        }
    }
}

/// What a scenario asserts about its replay.
enum Check {
    /// `expect bans = A, B` (exactly these; `none` for no ban at all), `has A, B`, `lacks A, B`.
    Bans(&'static str, Vec<Cidr>),
    /// `expect bans_within 198.18.0.0/15 = 0`: bans that overlap the prefix.
    BansWithin(Cidr, Cmp, usize),
    /// `expect host_bans = 12`: single-address bans.
    HostBans(Cmp, usize),
    /// `expect limits 587 first global`, `limits 25 all source`, `limits 993 none`.
    Limits(u16, &'static str, Option<LimitMode>),
    /// `expect alerts ddos_detected 587 = 1` (`-` for alerts about no port).
    Alerts(String, Option<u16>, Cmp, usize),
    /// `expect lift 587 >= 360s`: the first lift on the port, at or after that virtual time. `lift 587 none`.
    Lift(u16, Option<(Cmp, Duration)>),
    /// `expect mode 587 normal` (normal, source, global) when the replay ends.
    Mode(u16, Mode),
    /// `expect tracked < 1000`: per-source state the engine holds at the end.
    Tracked(Cmp, usize),
    /// `expect summary converged has peak distinct` (words) or `has "0 bans"` (a phrase): in the first such
    /// alert's summary or its detail (what was done, what it stops).
    Summary(String, Vec<String>),
    /// `expect first_ban <= 3s`: the first ban's virtual time.
    FirstBan(Cmp, Duration),
    /// The alerts as the admin gets them (through the default notify throttle, on the virtual clock):
    /// `expect notices DdosDetected keys = port 25, port 587` (every key told, each once), `notices DdosDetected
    /// messages <= 1`, `notices delay <= 3s` (every alert told within, after it happened).
    NoticeKeys(String, Vec<String>),
    NoticeMessages(String, Cmp, usize),
    NoticeDelay(Cmp, Duration),
}

/// The parts of a replay that expectations look at.
pub struct Outcome<'a> {
    pub replay: &'a Replay,
    /// What the default notify throttle released, and when (virtual time).
    pub notices: &'a [(DateTime<Utc>, floodgate::notice::Notice)],
    pub t0: DateTime<Utc>,
    pub mode: &'a dyn Fn(u16) -> Mode,
    pub tracked: usize,
}

impl Expect {
    /// Ok, or why not.
    pub fn check(&self, o: &Outcome) -> Result<(), String> {
        let bans: Vec<Cidr> = o
            .replay
            .decisions
            .iter()
            .filter_map(|(_, d)| match d {
                Decision::Ban { cidr, .. } => Some(*cidr),
                _ => None,
            })
            .collect();
        let limits = |port: u16| -> Vec<LimitMode> {
            o.replay
                .decisions
                .iter()
                .filter_map(|(_, d)| match d {
                    Decision::Limit { port: p, mode, .. } if *p == port => Some(*mode),
                    _ => None,
                })
                .collect()
        };
        let fail = |what: String| Err(what);
        match &self.check {
            Check::Bans(op, want) => {
                let have: std::collections::BTreeSet<String> = bans.iter().map(|c| c.to_string()).collect();
                let want_s: std::collections::BTreeSet<String> = want.iter().map(|c| c.to_string()).collect();
                let ok = match *op {
                    "=" => have == want_s,
                    "has" => want_s.is_subset(&have),
                    _ => want_s.is_disjoint(&have),
                };
                if !ok {
                    return fail(format!("bans made: {}", summarise(&have)));
                }
            }
            Check::BansWithin(net, cmp, n) => {
                let inside: Vec<&Cidr> = bans.iter().filter(|c| net.covers(c) || c.covers(net)).collect();
                if !cmp.holds(inside.len(), *n) {
                    return fail(format!("{} bans overlap {net}: {:?}", inside.len(), &inside[..inside.len().min(5)]));
                }
            }
            Check::HostBans(cmp, n) => {
                let hosts = bans.iter().filter(|c| c.is_host()).count();
                if !cmp.holds(hosts, *n) {
                    return fail(format!("{hosts} single-address bans"));
                }
            }
            Check::Limits(port, how, mode) => {
                let l = limits(*port);
                let ok = match (*how, mode) {
                    ("first", Some(m)) => l.first() == Some(m),
                    ("all", Some(m)) => !l.is_empty() && l.iter().all(|x| x == m),
                    _ => l.is_empty(),
                };
                if !ok {
                    return fail(format!("limits on {port}: {l:?}"));
                }
            }
            Check::Alerts(kind, port, cmp, n) => {
                let count =
                    o.replay.alerts.iter().filter(|a| a.kind.as_str() == kind.as_str() && a.port == *port).count();
                if !cmp.holds(count, *n) {
                    let all: Vec<_> = o.replay.alerts.iter().map(|a| (a.kind.as_str(), a.port)).collect();
                    return fail(format!("{count} such alerts; all alerts: {all:?}"));
                }
            }
            Check::Lift(port, when) => {
                let first = o.replay.decisions.iter().find_map(|(t, d)| match d {
                    Decision::Lift { port: p, .. } if p == port => Some(*t),
                    _ => None,
                });
                match (first, when) {
                    (None, None) => {}
                    (Some(t), None) => return fail(format!("lifted at {}", offset(o.t0, t))),
                    (None, Some(_)) => return fail("never lifted".into()),
                    (Some(t), Some((cmp, d))) => {
                        let at = (t - o.t0).to_std().unwrap_or_default();
                        if !cmp.holds(at, *d) {
                            return fail(format!("lifted at {}", offset(o.t0, t)));
                        }
                    }
                }
            }
            Check::Mode(port, want) => {
                let have = (o.mode)(*port);
                if have != *want {
                    return fail(format!("mode {have:?}"));
                }
            }
            Check::Tracked(cmp, n) => {
                if !cmp.holds(o.tracked, *n) {
                    return fail(format!("{} sources tracked", o.tracked));
                }
            }
            Check::Summary(kind, words) => {
                let Some(a) = o.replay.alerts.iter().find(|a| a.kind.as_str() == kind.as_str()) else {
                    return fail(format!("no {kind} alert"));
                };
                let text = format!("{}\n{}", a.summary, a.detail);
                if let Some(w) = words.iter().find(|w| !text.contains(w.as_str())) {
                    return fail(format!("`{w}` missing from: {text}"));
                }
            }
            Check::NoticeKeys(kind, want) => {
                let mut keys: Vec<String> = o
                    .notices
                    .iter()
                    .filter(|(_, n)| n.kind.as_str() == kind)
                    .flat_map(|(_, n)| n.parts.iter().map(|p| p.key.clone().unwrap_or_else(|| "-".into())))
                    .collect();
                keys.sort();
                let mut want = want.clone();
                want.sort();
                if keys != want {
                    return fail(format!("{kind} told about {keys:?}"));
                }
            }
            Check::NoticeMessages(kind, cmp, n) => {
                let count = o.notices.iter().filter(|(_, m)| m.kind.as_str() == kind).count();
                if !cmp.holds(count, *n) {
                    return fail(format!("{count} {kind} messages"));
                }
            }
            Check::NoticeDelay(cmp, d) => {
                for (at, n) in o.notices {
                    for p in &n.parts {
                        let delay = (*at - p.time).to_std().unwrap_or_default();
                        if !cmp.holds(delay, *d) {
                            return fail(format!("{:?} told {delay:?} after it happened", p.key));
                        }
                    }
                }
            }
            Check::FirstBan(cmp, d) => {
                let first =
                    o.replay.decisions.iter().find_map(|(t, d)| matches!(d, Decision::Ban { .. }).then_some(*t));
                let Some(t) = first else { return fail("no ban".into()) };
                if !cmp.holds((t - o.t0).to_std().unwrap_or_default(), *d) {
                    return fail(format!("first ban at {}", offset(o.t0, t)));
                }
            }
        }
        Ok(())
    }
}

fn summarise(set: &std::collections::BTreeSet<String>) -> String {
    let v: Vec<&str> = set.iter().take(10).map(String::as_str).collect();
    let more = set.len().saturating_sub(v.len());
    if set.is_empty() {
        "none".into()
    } else if more > 0 {
        format!("{} and {more} more", v.join(", "))
    } else {
        v.join(", ")
    }
}

fn offset(t0: DateTime<Utc>, t: DateTime<Utc>) -> String {
    format!("{:.3}s", (t - t0).num_milliseconds() as f64 / 1000.0)
}

pub fn load(path: &Path, t0: DateTime<Utc>) -> Result<Trace, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, t0).map_err(|(line, e)| format!("{}:{line}: {e}", path.display()))
}

pub fn parse(text: &str, t0: DateTime<Utc>) -> Result<Trace, (usize, String)> {
    let mut trace = Trace {
        until: Duration::ZERO,
        synproxy_ready: false,
        allow: Vec::new(),
        events: Vec::new(),
        expects: Vec::new(),
    };
    let mut until = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "until" => {
                let [_, d] = words[..] else { return Err((n, "`until TIME`".into())) };
                until = Some(duration(d).map_err(|e| (n, format!("until: {e}")))?);
            }
            "synproxy" => {
                let [_, "ready"] = words[..] else { return Err((n, "`synproxy ready`".into())) };
                trace.synproxy_ready = true;
            }
            "allow" => {
                let [_, a] = words[..] else { return Err((n, "`allow ADDR|CIDR`".into())) };
                trace.allow.push(a.parse().map_err(|e| (n, format!("allow: {e}")))?);
            }
            "expect" => {
                let check = expectation(&words[1..]).map_err(|e| (n, format!("expect: {e}")))?;
                trace.expects.push(Expect { line: n, text: line.to_string(), check });
            }
            _ => events(&words, t0, &mut trace.events).map_err(|e| (n, e))?,
        }
    }
    trace.until = until.ok_or((0, "no `until TIME` line".to_string()))?;
    if trace.expects.is_empty() {
        return Err((0, "no `expect` line: a scenario must assert something".into()));
    }
    trace.events.sort_by_key(|e| e.time);
    Ok(trace)
}

/// `TIME[..END/STEP] KIND ADDR PORT [field=value...]`, expanded into `out`.
fn events(words: &[&str], t0: DateTime<Utc>, out: &mut Vec<Event>) -> Result<(), String> {
    let [time, kind, addr, port, fields @ ..] = words else {
        return Err("an event is `TIME KIND ADDR PORT [field=value...]`".into());
    };
    let times = times(time).map_err(|e| format!("time `{time}`: {e}"))?;
    let (kind, mut assured) = match *kind {
        "syn" => (Kind::ConnNew, None),
        "assured" => (Kind::ConnDestroy, Some(true)),
        k => (k.parse::<Kind>().map_err(|e| format!("kind: {e}"))?, None),
    };
    let ports: Vec<Option<u16>> = if *port == "-" {
        vec![None]
    } else {
        port.split(',')
            .map(|p| p.parse().map(Some).map_err(|_| format!("port: `{p}` is not a port")))
            .collect::<Result<_, _>>()?
    };
    let (mut service, mut rule, mut count, mut sources) = (None, None, 1u32, None);
    let mut local: IpAddr = SERVER.parse().unwrap();
    for f in fields {
        let (k, v) = f.split_once('=').ok_or_else(|| format!("field `{f}`: not key=value"))?;
        let bad = |what: &str| format!("field {k}: `{v}` is not {what}");
        match k {
            "service" => service = Some(Arc::<str>::from(v)),
            "rule" => rule = Some(v.to_string()),
            "count" => count = v.parse().map_err(|_| bad("a count"))?,
            "local" => local = v.parse().map_err(|_| bad("an address"))?,
            "assured" => {
                assured = Some(match v {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(bad("yes or no")),
                })
            }
            "sources" => sources = Some(v.parse::<u64>().map_err(|_| bad("a number"))?),
            _ => return Err(format!("unknown field `{k}` (known: service, rule, count, local, assured, sources)")),
        }
    }
    let addrs = addresses(addr, sources).map_err(|e| format!("addr `{addr}`: {e}"))?;
    let rule: Arc<str> = Arc::from(rule.unwrap_or_else(|| format!("trace.{}", kind.as_str())));
    out.reserve(times.len());
    for (k, t) in times.into_iter().enumerate() {
        let mut e = Event::new(t0 + chrono::Duration::from_std(t).unwrap(), kind, rule.clone());
        e.addr = addrs.nth(k as u64);
        e.port = ports[k % ports.len()];
        e.local_addr = e.addr.map(|_| local);
        e.service = service.clone();
        e.count = count;
        e.assured = assured;
        e.failure = kind == Kind::AuthFailure;
        out.push(e);
    }
    Ok(())
}

/// One address, none, or `sources` addresses of a prefix taken in turn.
enum Addrs {
    None,
    One(IpAddr),
    V4 { base: u32, n: u64 },
    V6 { base: u128, n: u64 },
}

impl Addrs {
    fn nth(&self, k: u64) -> Option<IpAddr> {
        match *self {
            Addrs::None => None,
            Addrs::One(a) => Some(a),
            Addrs::V4 { base, n } => {
                let a = k % n;
                Some(IpAddr::from((base + (a / 250) as u32 * 256 + (a % 250) as u32 + 1).to_be_bytes()))
            }
            Addrs::V6 { base, n } => Some(IpAddr::from((base + (u128::from(k % n) << 64) + 1).to_be_bytes())),
        }
    }
}

fn addresses(text: &str, sources: Option<u64>) -> Result<Addrs, String> {
    if text == "-" {
        return Ok(Addrs::None);
    }
    let cidr: Cidr = text.parse().map_err(|e| format!("{e}"))?;
    let Some(n) = sources else {
        return if cidr.is_host() { Ok(Addrs::One(cidr.addr())) } else { Err("a prefix needs sources=N".into()) };
    };
    let len = u32::from(cidr.prefix_len());
    match cidr.addr() {
        IpAddr::V4(a) => {
            let room = if len <= 24 { 250u64 << (24 - len) } else { 0 };
            if n == 0 || n > room {
                return Err(format!("sources={n}: a /{len} holds 1..={room} (250 to a /24)"));
            }
            Ok(Addrs::V4 { base: u32::from(a), n })
        }
        IpAddr::V6(a) => {
            if len > 64 || (len > 0 && 64 - len < 64 && n > 1u64 << (64 - len)) || n == 0 {
                return Err(format!("sources={n}: one per /64 does not fit a /{len}"));
            }
            Ok(Addrs::V6 { base: u128::from(a), n })
        }
    }
}

/// `10s`, or `0s..50s/10s` (end excluded).
fn times(text: &str) -> Result<Vec<Duration>, String> {
    let Some((start, rest)) = text.split_once("..") else { return Ok(vec![duration(text)?]) };
    let (end, step) = rest.split_once('/').ok_or("a series is START..END/STEP")?;
    let (start, end, step) = (duration(start)?, duration(end)?, duration(step)?);
    if step.is_zero() || end <= start {
        return Err("a series needs a step > 0 and END after START".into());
    }
    let n = ((end - start).as_nanos() / step.as_nanos()) as usize;
    if n > 10_000_000 {
        return Err(format!("{n} events: at most 10,000,000 a line"));
    }
    Ok((0..n).map(|i| start + step * i as u32).collect())
}

fn duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(|| format!("`{text}` has no unit"))?;
    let (num, unit) = text.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("`{text}` is not a number with a unit"))?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unit `{unit}` (known: us, ms, s, m, h)")),
    };
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("`{text}`: negative or not finite"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn expectation(w: &[&str]) -> Result<Check, String> {
    let num = |s: &str| s.parse::<usize>().map_err(|_| format!("`{s}` is not a number"));
    let port = |s: &str| s.parse::<u16>().map_err(|_| format!("`{s}` is not a port"));
    let cmp = |s: &str| Cmp::parse(s).ok_or_else(|| format!("`{s}` is not one of = < <= > >="));
    let cidrs = |rest: &[&str]| -> Result<Vec<Cidr>, String> {
        let joined = rest.join(" ");
        if joined == "none" {
            return Ok(Vec::new());
        }
        joined.split(',').map(|s| s.trim().parse::<Cidr>().map_err(|e| e.to_string())).collect()
    };
    let mode = |s: &str| match s {
        "source" => Ok(LimitMode::Source),
        "global" => Ok(LimitMode::Global),
        "synproxy" => Ok(LimitMode::Synproxy),
        _ => Err(format!("`{s}`: a limit is source, global or synproxy")),
    };
    Ok(match w {
        ["bans", op @ ("=" | "has" | "lacks"), rest @ ..] => {
            let op = match *op {
                "=" => "=",
                "has" => "has",
                _ => "lacks",
            };
            Check::Bans(op, cidrs(rest)?)
        }
        ["bans_within", net, c, n] => Check::BansWithin(net.parse().map_err(|e| format!("{e}"))?, cmp(c)?, num(n)?),
        ["host_bans", c, n] => Check::HostBans(cmp(c)?, num(n)?),
        ["limits", p, "none"] => Check::Limits(port(p)?, "none", None),
        ["limits", p, how @ ("first" | "all"), m] => {
            Check::Limits(port(p)?, if *how == "first" { "first" } else { "all" }, Some(mode(m)?))
        }
        ["alerts", kind, p, c, n] => {
            Check::Alerts(kind.to_string(), if *p == "-" { None } else { Some(port(p)?) }, cmp(c)?, num(n)?)
        }
        ["lift", p, "none"] => Check::Lift(port(p)?, None),
        ["lift", p, c, t] => Check::Lift(port(p)?, Some((cmp(c)?, duration(t)?))),
        ["mode", p, m] => Check::Mode(
            port(p)?,
            match *m {
                "normal" => Mode::Normal,
                "source" => Mode::PerSource,
                "global" => Mode::Global,
                "synproxy" => Mode::Synproxy,
                _ => return Err(format!("`{m}`: a mode is normal, source, global or synproxy")),
            },
        ),
        ["tracked", c, n] => Check::Tracked(cmp(c)?, num(n)?),
        ["first_ban", c, t] => Check::FirstBan(cmp(c)?, duration(t)?),
        ["notices", "delay", c, t] => Check::NoticeDelay(cmp(c)?, duration(t)?),
        ["notices", kind, "messages", c, n] => Check::NoticeMessages(kind.to_string(), cmp(c)?, num(n)?),
        ["notices", kind, "keys", "=", rest @ ..] => {
            Check::NoticeKeys(kind.to_string(), rest.join(" ").split(',').map(|k| k.trim().to_string()).collect())
        }
        ["summary", kind, "has", words @ ..] if !words.is_empty() => {
            // Words each, or one "quoted phrase".
            let joined = words.join(" ");
            let parts = match joined.strip_prefix('"').and_then(|j| j.strip_suffix('"')) {
                Some(phrase) => vec![phrase.to_string()],
                None => words.iter().map(|s| s.to_string()).collect(),
            };
            Check::Summary(kind.to_string(), parts)
        }
        _ => {
            return Err("unknown expectation (known: bans, bans_within, host_bans, limits, alerts, lift, mode, \
                        tracked, summary, first_ban, notices)"
                .into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap()
    }

    #[test]
    fn series_floods_and_port_lists_expand_as_documented() {
        let t =
            parse("until 10s\n0s..1s/250ms syn 198.18.0.0/15 25,587 sources=251\nexpect bans = none\n", t0()).unwrap();
        assert_eq!(t.events.len(), 4);
        let a: Vec<String> = t.events.iter().map(|e| e.addr.unwrap().to_string()).collect();
        assert_eq!(a, ["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"]);
        let p: Vec<u16> = t.events.iter().map(|e| e.port.unwrap()).collect();
        assert_eq!(p, [25, 587, 25, 587]);
        assert_eq!(t.events[3].time - t.events[0].time, chrono::Duration::milliseconds(750));
        assert_eq!(addresses("198.18.0.0/15", Some(251)).unwrap().nth(250), Some("198.18.1.1".parse().unwrap()));
        assert_eq!(addresses("2001:db8::/32", Some(9)).unwrap().nth(2), Some("2001:db8:0:2::1".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let e = |s: &str| parse(s, t0()).err().unwrap();
        assert_eq!(e("until 1s\n1s syn 198.51.100.7 99999\n").0, 2);
        assert!(e("until 1s\n1s syn 198.51.100.7 99999\n").1.contains("port"));
        assert!(e("until 1s\n1s syn 198.51.100.0/24 25\n").1.contains("sources=N"));
        assert!(e("until 1s\n1s nope 198.51.100.7 25\n").1.contains("unknown event kind"));
        assert!(e("until 1s\n1s syn 198.51.100.7 25 colour=red\n").1.contains("unknown field `colour`"));
        assert!(e("until 1s\n1s syn 198.51.100.7 25 assured=true\n").1.contains("field assured"));
        assert!(e("until 1x\n").1.contains("unit"));
        assert!(e("until 1s\nexpect bans ~ 1\n").1.contains("unknown expectation"));
        assert!(e("until 1s\n1s syn 198.51.100.7 25\n").1.contains("must assert"));
        assert!(e("until 1s\n1s syn 198.18.0.0/24 25 sources=251\n").1.contains("250 to a /24"));
    }
}
