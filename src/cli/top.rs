//! `floodgate top`: the running daemon at a glance, refreshed every second in the terminal: ports with their
//! mode, rate and distinct sources, bans per second, the sources' rates and the latest decisions. Read-only
//! (the daemon's `status`, through the control socket); q or Ctrl-C quits and gives the terminal back.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::control::Request;
use crate::daemon::status::Status;
use crate::os::terminal::{stopped, Screen};

/// The width everything is laid out for: readable in a plain 80-column terminal.
const WIDTH: usize = 80;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Time between refreshes.
    #[arg(long, default_value = "1s", value_parser = crate::setting::parse_duration)]
    pub every: Duration,
}

pub fn run(ctx: &super::Setup, args: Args) -> Result<()> {
    let socket = ctx.config.daemon.socket.clone();
    let ask = || -> Result<Status> {
        let r = crate::daemon::client::send(&socket, &Request::Status)?
            .ok_or_else(|| anyhow::anyhow!("{}", crate::control::NOT_RUNNING))?;
        if !r.ok {
            anyhow::bail!("{}", r.error);
        }
        serde_json::from_value(r.data).context("reading the daemon's status")
    };
    // The first answer before the screen changes: a daemon that is down is said on a normal terminal.
    let mut prev = (ask()?, Instant::now());
    let screen = Screen::open().context("taking the terminal")?;
    let mut shown = prev.0.clone();
    let mut bans_per_s = 0.0;
    loop {
        screen.draw(&render(&shown, bans_per_s, chrono::Utc::now()))?;
        let until = Instant::now() + args.every;
        while Instant::now() < until {
            if stopped() {
                return Ok(());
            }
            if let Some(b'q' | b'Q' | 3) = screen.key(until.saturating_duration_since(Instant::now()))? {
                return Ok(());
            }
        }
        let now = ask()?;
        let dt = prev.1.elapsed().as_secs_f64().max(1e-3);
        bans_per_s = now.bans_made.saturating_sub(prev.0.bans_made) as f64 / dt;
        shown = now.clone();
        prev = (now, Instant::now());
    }
}

/// The screen for one status, every line at most `WIDTH` columns.
pub fn render(s: &Status, bans_per_s: f64, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut o = String::new();
    let up = humantime::format_duration(Duration::from_secs(s.uptime_s));
    let _ = writeln!(
        o,
        "floodgate top  pid {}  up {up}  {}  (q quits)",
        s.pid,
        now.with_timezone(&chrono::Local).format("%H:%M:%S")
    );
    let _ = writeln!(
        o,
        "bans {} in force, {:.1}/s   queue {}/{}   tracked sources {}",
        s.bans_active, bans_per_s, s.queued, s.queue_capacity, s.tracked_sources
    );
    for p in &s.problems {
        let _ = writeln!(o, "! {p}");
    }
    o.push('\n');
    let _ = writeln!(o, "{:<6} {:<12} {:<17} {:>10} {:>10}  UNTIL", "PORT", "SERVICE", "MODE", "NEW/S", "SOURCES");
    for p in &s.ports {
        let until = p.until.map(|u| u.with_timezone(&chrono::Local).format("%H:%M:%S").to_string()).unwrap_or_default();
        let _ = writeln!(
            o,
            "{:<6} {:<12} {:<17} {:>10.1} {:>10}  {until}",
            p.port,
            cut(&p.service, 12),
            cut(&p.mode, 17),
            p.new_per_s,
            p.distinct
        );
    }
    o.push('\n');
    let _ = writeln!(o, "{:<46} {:>10} {:>10} {:>10}", "SOURCE", "LINES/S", "EVENTS/S", "SHED");
    for src in &s.sources {
        let name = if src.waiting { format!("{} (waiting)", src.name) } else { src.name.clone() };
        let _ = writeln!(
            o,
            "{:<46} {:>10.1} {:>10.1} {:>10}",
            cut_left(&name, 46),
            src.lines_per_s,
            src.events_per_s,
            src.shed
        );
    }
    o.push('\n');
    let _ = writeln!(o, "LATEST DECISIONS");
    if s.recent.is_empty() {
        let _ = writeln!(o, "  none since the daemon started");
    }
    for d in s.recent.iter().rev() {
        let at = d.at.with_timezone(&chrono::Local).format("%H:%M:%S");
        let _ = writeln!(o, "  {at} {:<14} {:<40} {}", cut(&d.what, 14), cut(&d.target, 40), cut(&d.origin, 12));
    }
    o.lines().map(|l| cut(l, WIDTH)).collect::<Vec<_>>().join("\n") + "\n"
}

/// At most `n` characters, the end replaced by `~` when cut.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('~');
    out
}

/// At most `n` characters, keeping the end (a path's file name), the start replaced by `~`.
fn cut_left(s: &str, n: usize) -> String {
    let len = s.chars().count();
    if len <= n {
        return s.to_string();
    }
    let mut out = String::from("~");
    out.extend(s.chars().skip(len - n + 1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::status::{PortStatus, RecentDecision, SourceStatus};

    fn status() -> Status {
        let t = chrono::Utc::now();
        serde_json::from_value::<Status>(serde_json::json!({
            "pid": 42, "started": t, "uptime_s": 3600, "sources": [], "queued": 0, "queue_capacity": 64,
            "lines_parsed": 0, "events_stored": 0, "unmatched": 0, "malformed": 0, "bans_active": 600,
            "bans_made": 612, "refused_allowlisted": 0, "apply_errors": 0, "tracked_sources": 1500, "ports": []
        }))
        .map(|mut s| {
            s.ports = vec![PortStatus {
                port: 587,
                service: "submission-with-a-long-name".into(),
                mode: "global limit".into(),
                until: Some(t),
                new_per_s: 1523.4,
                distinct: 1800,
            }];
            s.sources = vec![SourceStatus {
                name: "/var/log/some/very/long/directory/structure/that/goes/on/mail.log".into(),
                lines: 10,
                events: 5,
                lines_per_s: 20.0,
                events_per_s: 10.0,
                lag_bytes: 0,
                lost: 0,
                shed: 0,
                waiting: false,
            }];
            s.recent = vec![RecentDecision {
                at: t,
                what: "limit_global".into(),
                target: "587".into(),
                origin: "policy".into(),
            }];
            s
        })
        .unwrap()
    }

    #[test]
    fn every_line_fits_80_columns_and_shows_the_port_the_rate_and_the_latest_decision() {
        let text = render(&status(), 12.5, chrono::Utc::now());
        for l in text.lines() {
            assert!(l.chars().count() <= WIDTH, "{l:?} is {} columns", l.chars().count());
        }
        assert!(text.contains("bans 600 in force, 12.5/s"), "{text}");
        let port = text.lines().find(|l| l.starts_with("587")).unwrap();
        assert!(port.contains("global limit") && port.contains("1523.4") && port.contains("1800"), "{port}");
        assert!(port.contains("submission-~"), "a long service name is cut, visibly: {port}");
        assert!(text.contains("~"), "the long path keeps its end");
        assert!(text.contains("mail.log"), "{text}");
        assert!(
            text.lines().any(|l| l.contains("limit_global") && l.contains("587") && l.contains("policy")),
            "{text}"
        );
    }
}
