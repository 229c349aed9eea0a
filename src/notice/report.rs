//! The report a convergence notice carries: the attack's page (`attack_report::render_page`) from the attack's
//! start to its convergence, for the ports involved, rendered within a deadline and under a size cap; and the
//! copies handed to the exec hook, kept in `reports/` beside the store (the newest [`REPORTS_KEPT`]).
//!
//! A report is a bonus, never a condition: whatever goes wrong here, the notice still goes out, saying in one line
//! why it has no report and which command draws it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};

use super::{Notice, NoticeKind};
use crate::attack_report::Window;
use crate::config::Config;

/// How long rendering may take before the notice goes without the report. An attack of an hour on a normal store
/// renders in well under a second, but a day of ten million events takes about a minute (the report bench): the
/// admin must not wait that long to hear the attack is over.
pub const REPORT_DEADLINE: Duration = Duration::from_secs(20);
/// Largest report attached or kept. Base64 makes it a third bigger in the mail, still under Postfix's default
/// `message_size_limit` (10,240,000 bytes); the page's tables are top-N, so a real one is far smaller.
pub const MAX_REPORT_BYTES: usize = 5 * 1024 * 1024;
/// How many reports `reports/` keeps (the newest): disk use stays bounded however many attacks come and go.
pub const REPORTS_KEPT: usize = 20;
/// How often a notice waiting for an earlier render looks again.
const BUSY_POLL: Duration = Duration::from_millis(50);
/// What the kept reports' names start with; nothing else in the directory is ever removed.
const FILE_PREFIX: &str = "floodgate-report-";

/// A rendered report: its page and the name it goes by (in the mail and in `reports/`).
#[derive(Debug, Clone)]
pub struct Report {
    pub file_name: String,
    pub html: String,
}

/// Renders the reports of convergence notices from the daemon's store, with its config (services, prefix
/// lengths, country data).
#[derive(Debug, Clone)]
pub struct ReportSource {
    config: Arc<Config>,
    /// The store the daemon writes (`--db` may differ from `config.db`).
    db: PathBuf,
    dir: PathBuf,
    deadline: Duration,
    /// Set while a render runs. One that missed its deadline runs on to its end (a thread cannot be stopped, and
    /// it only reads): no other starts meanwhile, so a slow store costs one thread, not one per notice. The
    /// deadline counts from the notice's turn, waiting included.
    busy: Arc<AtomicBool>,
}

impl ReportSource {
    /// Reports of the store at `db`, kept for the hook in `reports/` beside it.
    pub fn new(config: Config, db: impl Into<PathBuf>) -> ReportSource {
        let db = db.into();
        let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("reports");
        ReportSource {
            config: Arc::new(config),
            db,
            dir,
            deadline: REPORT_DEADLINE,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The same store after a reload: the new config, and still aware of a render under way.
    pub fn reconfigured(&self, config: Config) -> ReportSource {
        ReportSource { busy: self.busy.clone(), ..ReportSource::new(config, self.db.clone()) }
    }

    /// How long a render may take (tests shorten it).
    pub fn with_deadline(mut self, d: Duration) -> ReportSource {
        self.deadline = d;
        self
    }

    /// Where the hook's copies are kept.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What a notice carries: for a convergence, its report or why there is none; nothing for other kinds.
    pub(crate) fn for_notice(&self, n: &Notice) -> Option<Result<Report, String>> {
        (n.kind == NoticeKind::Converged).then(|| self.render(n).map_err(|why| one_line(&why)))
    }

    fn render(&self, n: &Notice) -> Result<Report, String> {
        let (window, ports) = window_of(n)?;
        let hint = format!(
            "`floodgate report --since {} --until {}{}` draws it",
            window.since.to_rfc3339_opts(SecondsFormat::Secs, true),
            window.until.to_rfc3339_opts(SecondsFormat::Secs, true),
            window.port.map(|p| format!(" --port {p}")).unwrap_or_default()
        );
        // Two ports converging moments apart wait for each other's render; one that missed its deadline and runs
        // on holds the next back only until this one's deadline.
        let started = Instant::now();
        while self.busy.swap(true, Ordering::AcqRel) {
            if started.elapsed() >= self.deadline {
                return Err(format!("an earlier report is still being rendered; {hint}"));
            }
            std::thread::sleep(BUSY_POLL);
        }
        let (tx, rx) = mpsc::channel();
        let (config, db) = (self.config.clone(), self.db.clone());
        let busy = self.busy.clone();
        // No advisor section (machine: None): it would run commands, and the mail is about this attack.
        let spawned = std::thread::Builder::new().name("notice-report".into()).spawn(move || {
            let page = crate::attack_report::render_page(&db, &config, window, None, Utc::now());
            busy.store(false, Ordering::Release);
            let _ = tx.send(page);
        });
        if let Err(e) = spawned {
            self.busy.store(false, Ordering::Release);
            return Err(format!("cannot start rendering the report: {e}; {hint}"));
        }
        let html = match rx.recv_timeout(self.deadline.saturating_sub(started.elapsed())) {
            Ok(Ok(html)) => html,
            Ok(Err(e)) => return Err(format!("the report could not be rendered: {e:#}; {hint}")),
            Err(_) => {
                let took = humantime::format_duration(self.deadline);
                return Err(format!("the report took longer than {took} to render; {hint}"));
            }
        };
        if html.len() > MAX_REPORT_BYTES {
            let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
            return Err(format!(
                "the report is {:.1} MiB, more than the {:.0} MiB a notice carries; {hint}",
                mib(html.len()),
                mib(MAX_REPORT_BYTES)
            ));
        }
        Ok(Report { file_name: file_name(&ports, window.until), html })
    }

    /// Writes the report into `reports/` (made if missing, readable by the daemon's user only: it names
    /// attackers' addresses and the user names they tried) and removes all but the newest [`REPORTS_KEPT`].
    pub(crate) fn save(&self, r: &Report) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("{}: cannot make the reports directory", self.dir.display()))?;
        let path = self.dir.join(&r.file_name);
        crate::advise::sysctl_conf::write_atomically(&path, &r.html)
            .with_context(|| format!("{}: cannot write the report", path.display()))?;
        prune(&self.dir, REPORTS_KEPT).with_context(|| format!("{}: cannot remove old reports", self.dir.display()))?;
        Ok(path)
    }
}

/// The period and port(s) of the attack a convergence notice closes: from the earliest `attack_since` of its
/// parts (the policy's figures) to just past the latest convergence; one port, or every port when it merges
/// several.
fn window_of(n: &Notice) -> Result<(Window, BTreeSet<u16>), String> {
    let whole = n.with_parts();
    let mut since: Option<DateTime<Utc>> = None;
    let mut until = n.time;
    let mut ports = BTreeSet::new();
    for part in &whole.parts {
        let Some(s) = part.figures.get("attack_since").and_then(|v| v.as_str()) else { continue };
        let s = DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("the notice's attack_since `{}` is not a time: {e}", s.escape_debug()))?
            .with_timezone(&Utc);
        since = Some(since.map_or(s, |t| t.min(s)));
        until = until.max(part.time);
        if let Some(port) = part.key.as_deref().and_then(|k| k.strip_prefix("port ")).and_then(|p| p.parse().ok()) {
            ports.insert(port);
        }
    }
    let since = since.ok_or_else(|| "the notice does not say when the attack began (no attack_since)".to_string())?;
    // Whole seconds, and one past the convergence: the lift recorded in that second is in the page.
    let since = since.trunc_subsecs(0);
    let until = until.trunc_subsecs(0).max(since) + TimeDelta::seconds(1);
    let port = if ports.len() == 1 { ports.first().copied() } else { None };
    Ok((Window { since, until, port }, ports))
}

/// `floodgate-report-25-587-20261121T090000Z.html`: the ports and the end of the period, so that a directory of
/// them sorts by attack and reads at a glance.
fn file_name(ports: &BTreeSet<u16>, until: DateTime<Utc>) -> String {
    let ports: String = ports.iter().map(|p| format!("{p}-")).collect();
    format!("{FILE_PREFIX}{ports}{}.html", until.format("%Y%m%dT%H%M%SZ"))
}

/// Removes the oldest reports (by modification time, then name) beyond `keep`; other files are left alone.
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut reports = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(FILE_PREFIX) && name.ends_with(".html")) {
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        reports.push((modified, name.to_string()));
    }
    if reports.len() <= keep {
        return Ok(());
    }
    reports.sort();
    for (_, name) in &reports[..reports.len() - keep] {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// A reason on one line (an error chain can quote a path or a store message with line breaks in it).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{format_mail, Notifier, NotifyConfig};
    use super::*;
    use crate::decision::{Decision, LimitMode};
    use crate::event::{Event, Kind};
    use crate::store::{Origin, Store, StoreError};
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    /// A small recorded attack on 587: 200 sources connecting over two minutes from t0, the global limit at +30s,
    /// lifted at +5m.
    fn recorded_attack(db: &Path) {
        let mut store = Store::open(db).unwrap();
        let events: Vec<(Origin, Event)> = (0..200u32)
            .map(|i| {
                let mut e =
                    Event::new(min(0) + TimeDelta::milliseconds(i64::from(i) * 600), Kind::Connect, "test".into());
                e.addr = Some(format!("198.18.{}.{}", i / 100, i % 100 + 1).parse().unwrap());
                e.port = Some(587);
                (Origin { input: "test".into(), line: None }, e)
            })
            .collect();
        store.insert_events(&events).unwrap();
        let limit = Decision::Limit {
            port: 587,
            mode: LimitMode::Global,
            until: min(10),
            reason: "port 587: flood".into(),
            origin: "policy".into(),
            figures: None,
        };
        store.record(&[limit], min(0) + TimeDelta::seconds(30), || Ok::<_, StoreError>(())).unwrap();
        let lift = Decision::Lift {
            port: 587,
            mode: LimitMode::Global,
            reason: "port 587: attack over".into(),
            origin: "policy".into(),
        };
        store.record(&[lift], min(5), || Ok::<_, StoreError>(())).unwrap();
    }

    /// The convergence of that attack, as the policy words it.
    fn converged() -> Notice {
        Notice::new(
            NoticeKind::Converged,
            min(5),
            "floodgate on mx: port 587: attack over after 5m",
            "port 587: attack over after 5m; peak 200 distinct sources",
            json!({ "distinct": 0, "attack_since": "2026-11-21T09:00:00Z" }),
        )
        .about("port 587")
    }

    fn parsed(mail: &str) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default().parse(mail.as_bytes()).expect("a mail the parser reads")
    }

    #[test]
    fn a_convergence_mail_carries_the_attack_report_as_an_html_attachment() {
        use mail_parser::MimeHeaders;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("floodgate.db");
        recorded_attack(&db);
        let n = converged();
        let (window, _) = window_of(&n).unwrap();
        assert_eq!(window, Window { since: min(0), until: min(5) + TimeDelta::seconds(1), port: Some(587) });

        let source = ReportSource::new(crate::config::Config::default(), &db);
        let report = source.for_notice(&n).expect("a convergence has a report");
        let r = report.as_ref().unwrap();
        assert_eq!(r.file_name, "floodgate-report-587-20261121T090501Z.html");
        let mail = format_mail(&cfg(), &n, Some(&report));
        assert!(mail.lines().all(|l| l.len() <= 998) && !mail.contains('\r'));

        let m = parsed(&mail);
        assert_eq!(m.subject(), Some("floodgate on mx: port 587: attack over after 5m"));
        assert_eq!(m.header_raw("X-Floodgate-Kind").map(str::trim), Some("Converged"));
        assert_eq!(m.header_raw("Auto-Submitted").map(str::trim), Some("auto-generated"));
        assert_eq!(m.content_type().map(|c| c.ctype()), Some("multipart"));
        let text = m.body_text(0).unwrap();
        assert!(text.starts_with("port 587: attack over after 5m; peak 200 distinct sources\n\nFigures:\n"), "{text}");
        assert!(
            text.ends_with("\nThe report of this attack is attached: floodgate-report-587-20261121T090501Z.html\n"),
            "{text}"
        );
        assert_eq!(m.attachment_count(), 1);
        let page = m.attachment(0).unwrap();
        assert_eq!(page.attachment_name(), Some("floodgate-report-587-20261121T090501Z.html"));
        let ct = page.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("html")));
        let html = std::str::from_utf8(page.contents()).unwrap();
        assert_eq!(html, r.html, "the attachment decodes to the page as rendered");
        assert!(html.contains("<svg") && html.contains("587"), "the port's chart");
        // The store's attack is in it: its 200 sources and the global limit on 587.
        assert!(html.contains("198.18.0.1"), "a top source");
    }

    #[test]
    fn a_report_that_cannot_be_made_still_leaves_the_mail_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        // No store at all: the page cannot be rendered.
        let source = ReportSource::new(crate::config::Config::default(), dir.path().join("missing.db"));
        let n = converged();
        let report = source.for_notice(&n).unwrap();
        let why = report.as_ref().unwrap_err();
        assert!(why.starts_with("the report could not be rendered: "), "{why}");
        assert!(
            why.ends_with(
                "`floodgate report --since 2026-11-21T09:00:00Z --until 2026-11-21T09:05:01Z --port 587` draws it"
            ),
            "{why}"
        );
        assert!(!why.contains('\n'));

        // Sent through sendmail: delivered, without attachment, the reason in the text.
        let sendmail = dir.path().join("sendmail");
        std::fs::write(&sendmail, format!("#!/bin/sh\ncat > '{}/mail'\n", dir.path().display())).unwrap();
        std::fs::set_permissions(&sendmail, std::fs::Permissions::from_mode(0o755)).unwrap();
        let notifier = Notifier::new(NotifyConfig { sendmail, ..cfg() }).with_reports(source.clone());
        send_retrying(&notifier, &n).unwrap();
        let mail = std::fs::read_to_string(dir.path().join("mail")).unwrap();
        let m = parsed(&mail);
        assert_eq!(m.attachment_count(), 0);
        let text = m.body_text(0).unwrap();
        assert!(text.contains(&format!("\nNo report attached: {why}\n")), "{text}");

        // A notice that does not say when its attack began (not the policy's): said too.
        let mut bare = converged();
        bare.figures = json!({ "distinct": 0 });
        let why = source.for_notice(&bare).unwrap().unwrap_err();
        assert_eq!(why, "the notice does not say when the attack began (no attack_since)");

        // A render still running (another port's, or one that missed its deadline): the next waits for it, up to
        // its own deadline, then goes without.
        let db = dir.path().join("floodgate.db");
        recorded_attack(&db);
        let source = ReportSource::new(crate::config::Config::default(), &db).with_deadline(Duration::from_millis(200));
        source.busy.store(true, Ordering::Release);
        let started = Instant::now();
        let why = source.for_notice(&converged()).unwrap().unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(200), "it waited for the earlier one");
        assert!(why.starts_with("an earlier report is still being rendered; `floodgate report"), "{why}");
        // The earlier one ends while this one waits: this one renders.
        let earlier = source.busy.clone();
        let ends = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            earlier.store(false, Ordering::Release);
        });
        let source = source.with_deadline(REPORT_DEADLINE);
        assert!(source.for_notice(&converged()).unwrap().is_ok());
        ends.join().unwrap();
        // Detections carry none.
        assert!(source.for_notice(&notice(NoticeKind::DdosDetected, t0(), 1)).is_none());
    }

    #[test]
    fn the_hook_gets_the_report_as_a_file_named_in_its_environment_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state").join("floodgate.db");
        recorded_attack(&db);
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let hook = dir.path().join("hook");
        let o = out.display();
        std::fs::write(&hook, format!("#!/bin/sh\nprintf '%s' \"$FLOODGATE_REPORT\" > '{o}/env'\ncat > '{o}/json'\n"))
            .unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let source = ReportSource::new(crate::config::Config::default(), &db);
        let notifier =
            Notifier::new(NotifyConfig { mail_to: vec![], exec: Some(hook), ..cfg() }).with_reports(source.clone());
        send_retrying(&notifier, &converged()).unwrap();

        let path = PathBuf::from(std::fs::read_to_string(out.join("env")).unwrap());
        assert_eq!(path, dir.path().join("state/reports/floodgate-report-587-20261121T090501Z.html"));
        let html = std::fs::read_to_string(&path).unwrap();
        assert!(html.contains("<svg") && html.contains("587"));
        let mode = std::fs::metadata(source.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the reports name attackers: the daemon's user only ({mode:o})");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("json")).unwrap()).unwrap();
        assert_eq!(v["report"], path.display().to_string());
        assert_eq!(v["kind"], "Converged");

        // A detection: no report, no variable, no field.
        send_retrying(&notifier, &notice(NoticeKind::DdosDetected, t0(), 1)).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("env")).unwrap(), "");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("json")).unwrap()).unwrap();
        assert!(v.get("report").is_none(), "{v}");

        // A report that cannot be made: the hook still runs, told why.
        let broken = ReportSource::new(crate::config::Config::default(), dir.path().join("missing.db"));
        let hook = dir.path().join("hook");
        let notifier = Notifier::new(NotifyConfig { mail_to: vec![], exec: Some(hook), ..cfg() }).with_reports(broken);
        send_retrying(&notifier, &converged()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("json")).unwrap()).unwrap();
        assert_eq!(v["report"], serde_json::Value::Null);
        assert!(v["report_error"].as_str().unwrap().starts_with("the report could not be rendered"), "{v}");
        assert_eq!(std::fs::read_to_string(out.join("env")).unwrap(), "");
    }

    #[test]
    fn only_the_newest_reports_are_kept_and_nothing_else_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let source = ReportSource::new(crate::config::Config::default(), dir.path().join("floodgate.db"));
        std::fs::create_dir(source.dir()).unwrap();
        let other = source.dir().join("notes.html");
        std::fs::write(&other, "the admin's").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        for i in 0..REPORTS_KEPT + 5 {
            let path = source.dir().join(format!("{FILE_PREFIX}25-20261121T09{i:02}00Z.html"));
            std::fs::write(&path, "old").unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(old + Duration::from_secs(i as u64)).unwrap();
        }
        let report = Report { file_name: file_name(&BTreeSet::from([25, 587]), min(90)), html: "<svg>".into() };
        let kept = source.save(&report).unwrap();
        assert_eq!(kept, source.dir().join("floodgate-report-25-587-20261121T103000Z.html"));
        let mut names: Vec<String> =
            std::fs::read_dir(source.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names.len(), REPORTS_KEPT + 1, "{names:?}");
        assert!(names.contains(&"notes.html".to_string()));
        assert!(names.contains(&"floodgate-report-25-587-20261121T103000Z.html".to_string()));
        // The six oldest went: 00..05.
        assert_eq!(names[0], "floodgate-report-25-20261121T090600Z.html", "{names:?}");
    }
}
