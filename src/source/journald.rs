//! The journald source, for hosts whose mail logs live only in the journal: `journalctl -f -o json` run as a
//! child process, each entry turned into the syslog-style line the parser already reads
//! (`2026-11-21T09:00:00.123456+00:00 mx postfix/smtpd[4117]: warning: ...`).
//!
//! The child is supervised: when it cannot start or exits, the input is marked waiting and it is started again
//! after a back-off (1 s doubling to 30 s). A restart continues after the last entry read (`--after-cursor`), so
//! entries written while journalctl was down are not skipped; the first start reads only new entries, like a
//! file tailed from its end. The child is killed when the source stops.

use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat};
use serde_json::Value;

use super::{Sink, Stop};
use crate::os::child::wait_until;
use crate::os::poll::wait_readable;
use crate::parse::lines::{Line, LineBuffer};

const INPUT: &str = "journald";
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest JSON entry kept; longer ones are skipped. `--all` lifts journalctl's 4 KiB cap on field values, so
/// this bound is ours.
const MAX_ENTRY_BYTES: usize = 1 << 20;
/// How long a child that closed its output is given to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Follows the journal through a `journalctl` child.
#[derive(Debug)]
pub struct JournaldSource {
    args: Vec<String>,
    program: PathBuf,
}

impl JournaldSource {
    /// `args` narrow what is read, e.g. `["-u", "postfix"]`; they follow floodgate's own arguments.
    pub fn new(args: Vec<String>) -> Self {
        JournaldSource { args, program: PathBuf::from("journalctl") }
    }

    /// Runs another program in journalctl's place (tests use a script printing canned entries).
    pub fn with_program(mut self, program: PathBuf) -> Self {
        self.program = program;
        self
    }

    fn command(&self, cursor: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.program);
        // --all: without it, fields over 4 KiB come out as null, and an attacker could hide a line by making it
        // long (a huge user name).
        cmd.args(["-f", "-o", "json", "--all"]);
        match cursor {
            // --no-tail: with -f and a cursor journalctl would otherwise show only 10 entries (systemd #4739).
            Some(c) => cmd.arg(format!("--after-cursor={c}")).arg("--no-tail"),
            None => cmd.args(["--since", "now"]),
        };
        cmd.args(&self.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Reads until `stop` is set or the pipeline goes away. Blocking: run it on a blocking thread.
    pub fn run(self, sink: Sink, stop: Stop) {
        let input: Arc<str> = Arc::from(INPUT);
        let mut cursor: Option<String> = None;
        let mut backoff = BACKOFF_FIRST;
        loop {
            if stop.is_stopped() || sink.is_closed() {
                return;
            }
            let started_with_cursor = cursor.is_some();
            match self.command(cursor.as_deref()).spawn() {
                Err(e) => {
                    tracing::warn!(program = %self.program.display(), error = %e, retry_in = ?backoff,
                        "journald: cannot start journalctl (is systemd's journalctl installed and in PATH?); \
                         retrying");
                }
                Ok(child) => {
                    sink.stats.waiting.store(false, Ordering::Relaxed);
                    sink.stats.ready.store(true, Ordering::Relaxed);
                    let started = Instant::now();
                    let mut follow = Follow { child: Guard(child), sink: &sink, stop: &stop, input: &input };
                    match follow.run(&mut cursor) {
                        Ended::Stopped => return,
                        Ended::Exited { status, entries } => {
                            if entries > 0 || started.elapsed() >= BACKOFF_MAX {
                                backoff = BACKOFF_FIRST;
                            }
                            if started_with_cursor && entries == 0 {
                                // The cursor may be what it choked on (the journal vacuumed past it): next time
                                // start from now rather than fail forever.
                                cursor = None;
                            }
                            tracing::warn!(program = %self.program.display(), %status, entries, retry_in = ?backoff,
                                "journald: journalctl exited; restarting it");
                        }
                    }
                }
            }
            sink.stats.waiting.store(true, Ordering::Relaxed);
            if !stop.sleep(backoff) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

enum Ended {
    Stopped,
    Exited { status: String, entries: u64 },
}

/// Kills and reaps the child however reading ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Follow<'a> {
    child: Guard,
    sink: &'a Sink,
    stop: &'a Stop,
    input: &'a Arc<str>,
}

impl Follow<'_> {
    fn run(&mut self, cursor: &mut Option<String>) -> Ended {
        if let Some(stderr) = self.child.0.stderr.take() {
            // journalctl explains its failures on stderr ("No journal files were found", permissions): pass them
            // on. The thread ends when the child's stderr closes.
            let spawned = std::thread::Builder::new().name("journalctl-stderr".into()).spawn(move || {
                for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
                    tracing::warn!(message = %String::from_utf8_lossy(&line), "journald: journalctl says");
                }
            });
            if let Err(e) = spawned {
                tracing::debug!(error = %e, "journald: cannot forward journalctl's stderr");
            }
        }
        let Some(mut stdout) = self.child.0.stdout.take() else {
            return self.exited(0);
        };
        // Entries longer than the bound are skipped, never held whole.
        let mut entry_lines = LineBuffer::new(MAX_ENTRY_BYTES);
        let mut entries = 0u64;
        loop {
            if self.stop.is_stopped() || self.sink.is_closed() {
                return Ended::Stopped;
            }
            match wait_readable(&stdout, Stop::POLL) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "journald: poll on journalctl's output failed");
                    return self.exited(entries);
                }
            }
            let n = match stdout.read(entry_lines.spare()) {
                Ok(0) => return self.exited(entries),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "journald: reading journalctl's output failed");
                    return self.exited(entries);
                }
            };
            entry_lines.filled(n);
            let mut lines = Vec::new();
            while let Some(line) = entry_lines.next_line() {
                let entry = match line {
                    Line::Text([]) => continue,
                    Line::Text(entry) => entry,
                    Line::TooLong(bytes) => {
                        tracing::debug!(bytes, "journald: overlong entry skipped");
                        continue;
                    }
                };
                entries += 1;
                match serde_json::from_slice::<Value>(entry) {
                    Ok(value) => {
                        if let Some(c) = value.get("__CURSOR").and_then(Value::as_str) {
                            *cursor = Some(c.to_string());
                        }
                        lines.extend(convert(&value).map(String::into_bytes));
                    }
                    Err(e) => tracing::debug!(error = %e, "journald: entry that is not JSON skipped"),
                }
            }
            if !lines.is_empty() && !self.sink.send_lines(self.input, lines, None, None) {
                return Ended::Stopped;
            }
        }
    }

    /// The child closed its output: collect its exit status (killing it if it lingers).
    fn exited(&mut self, entries: u64) -> Ended {
        let status = match wait_until(&mut self.child.0, Instant::now() + EXIT_GRACE) {
            Ok(Some(s)) => s.to_string(),
            Ok(None) => {
                let _ = self.child.0.kill();
                match self.child.0.wait() {
                    Ok(s) => format!("output closed, killed ({s})"),
                    Err(e) => format!("output closed, killed ({e})"),
                }
            }
            Err(e) => format!("unknown ({e})"),
        };
        Ended::Exited { status, entries }
    }
}

/// One `journalctl -o json` entry as a syslog-style line:
/// `<RFC 3339 time, microseconds, +00:00> <_HOSTNAME> <SYSLOG_IDENTIFIER>[<_PID>]: <MESSAGE>`.
/// None when it is not JSON, has no MESSAGE, or no usable `__REALTIME_TIMESTAMP`.
pub fn entry_to_line(json: &str) -> Option<String> {
    convert(&serde_json::from_str(json).ok()?)
}

fn convert(entry: &Value) -> Option<String> {
    let fields = entry.as_object()?;
    let message = value_text(fields.get("MESSAGE")?)?;
    let micros: i64 = value_text(fields.get("__REALTIME_TIMESTAMP")?)?.trim().parse().ok()?;
    let time = DateTime::from_timestamp_micros(micros)?;
    let mut line = time.to_rfc3339_opts(SecondsFormat::Micros, false);
    if let Some(host) = fields.get("_HOSTNAME").and_then(value_text).filter(|h| !h.is_empty()) {
        line.push(' ');
        line.push_str(&token(&host));
    }
    // The tag as syslog would have written it; _COMM when the program set no identifier.
    let ident = ["SYSLOG_IDENTIFIER", "_COMM"]
        .iter()
        .find_map(|k| fields.get(*k).and_then(value_text).filter(|s| !s.is_empty()))
        .map(|s| token(&s))
        .unwrap_or_else(|| "-".to_string());
    line.push(' ');
    line.push_str(&ident);
    let pid = ["_PID", "SYSLOG_PID"].iter().find_map(|k| {
        fields.get(*k).and_then(value_text).filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    if let Some(pid) = pid {
        line.push('[');
        line.push_str(&pid);
        line.push(']');
    }
    line.push_str(": ");
    // One entry is one line: a multi-line message stays whole (rsyslog would escape the newlines as #012).
    let message = message.trim_end_matches(['\n', '\r']);
    line.extend(message.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }));
    Some(line)
}

/// A field's value as text: a string; an array of bytes (journalctl's form for values that are not UTF-8),
/// decoded lossily; for a field set several times (an array of values), the first one.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            let bytes: Option<Vec<u8>> = items.iter().map(|i| i.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
            Some(String::from_utf8_lossy(&bytes?).into_owned())
        }
        Value::Array(items) => items.first().and_then(value_text),
        _ => None,
    }
}

/// A host name or tag kept as one space-free token, so the line still splits where the parser expects.
fn token(s: &str) -> String {
    s.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Feed, SourceStats};
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use tokio::sync::mpsc;

    const ENTRY: &str = r#"{"__CURSOR":"s=1;i=1","__REALTIME_TIMESTAMP":"1795251600123456","_HOSTNAME":"mx","SYSLOG_IDENTIFIER":"postfix/smtpd","_PID":"4117","MESSAGE":"warning: unknown[198.51.100.7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"}"#;

    #[test]
    fn an_entry_becomes_a_syslog_line() {
        assert_eq!(
            entry_to_line(ENTRY).as_deref(),
            Some(
                "2026-11-21T09:00:00.123456+00:00 mx postfix/smtpd[4117]: warning: unknown[198.51.100.7]: SASL LOGIN \
                 authentication failed: UGFzc3dvcmQ6"
            )
        );
    }

    #[test]
    fn entry_variants() {
        // The kernel: no pid.
        let kernel = r#"{"__REALTIME_TIMESTAMP":"0","_HOSTNAME":"vm","SYSLOG_IDENTIFIER":"kernel","MESSAGE":"TCP: request_sock_TCP: Possible SYN flooding on port 0.0.0.0:25. Sending cookies."}"#;
        assert_eq!(
            entry_to_line(kernel).as_deref(),
            Some(
                "1970-01-01T00:00:00.000000+00:00 vm kernel: TCP: request_sock_TCP: Possible SYN flooding on port \
                 0.0.0.0:25. Sending cookies."
            )
        );
        // A message that is not UTF-8 comes as an array of bytes; _COMM stands in for a missing identifier.
        let bytes = r#"{"__REALTIME_TIMESTAMP":"1000000","_COMM":"dovecot","_PID":"7","MESSAGE":[104,105,255,10]}"#;
        assert_eq!(entry_to_line(bytes).as_deref(), Some("1970-01-01T00:00:01.000000+00:00 dovecot[7]: hi\u{fffd}"));
        // A field set twice: its first value. Newlines inside a message do not split the entry.
        let multi = r#"{"__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":["a b","c"],"MESSAGE":"one\ntwo"}"#;
        assert_eq!(entry_to_line(multi).as_deref(), Some("1970-01-01T00:00:00.000001+00:00 a_b: one two"));
        let anonymous = r#"{"__REALTIME_TIMESTAMP":"1","MESSAGE":"x","_PID":"nope"}"#;
        assert_eq!(entry_to_line(anonymous).as_deref(), Some("1970-01-01T00:00:00.000001+00:00 -: x"));
        // Skipped: no MESSAGE, a MESSAGE journalctl left out (null), no time, not JSON, not an object.
        assert_eq!(entry_to_line(r#"{"__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"x"}"#), None);
        assert_eq!(entry_to_line(r#"{"__REALTIME_TIMESTAMP":"1","MESSAGE":null}"#), None);
        assert_eq!(entry_to_line(r#"{"MESSAGE":"x"}"#), None);
        assert_eq!(entry_to_line(r#"{"__REALTIME_TIMESTAMP":"soon","MESSAGE":"x"}"#), None);
        assert_eq!(entry_to_line("{not json"), None);
        assert_eq!(entry_to_line("[1,2]"), None);
    }

    #[test]
    fn lines_parse_back_with_their_time_host_and_program() {
        use crate::parse::header::{split, TimeContext, Zone};
        let ctx = TimeContext { zone: Zone::Local, reference: chrono::Utc::now(), boot_time: None };
        let line = entry_to_line(ENTRY).unwrap();
        let p = split(&line, &ctx);
        assert_eq!(p.time, DateTime::from_timestamp_micros(1_795_251_600_123_456));
        assert_eq!(p.host, Some("mx"));
        assert_eq!(p.program, Some("postfix/smtpd"));
        assert!(p.message.starts_with("warning: unknown[198.51.100.7]"));
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-journalctl");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn start(source: JournaldSource) -> (mpsc::Receiver<Feed>, Arc<SourceStats>, Stop, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(16);
        let stats = Arc::new(SourceStats::default());
        let sink = Sink::new(tx, stats.clone());
        let stop = Stop::new();
        let s = stop.clone();
        (rx, stats, stop, std::thread::spawn(move || source.run(sink, s)))
    }

    fn lines(rx: &mut mpsc::Receiver<Feed>, want: usize, timeout: Duration) -> Vec<String> {
        let until = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < want && Instant::now() < until {
            match rx.try_recv() {
                Ok(Feed::Lines { input, lines, .. }) => {
                    assert_eq!(&*input, "journald");
                    out.extend(lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()));
                }
                Ok(Feed::Events { .. }) => panic!("journald sends lines only"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        out
    }

    #[test]
    fn a_fake_journalctl_feeds_lines_and_is_killed_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        let args_file = dir.path().join("args");
        let pid_file = dir.path().join("pid");
        let second = r#"{"__REALTIME_TIMESTAMP":"1795251601000000","_HOSTNAME":"mx","SYSLOG_IDENTIFIER":"dovecot","_PID":"9","MESSAGE":"auth: x"}"#;
        let body = format!(
            "echo \"$@\" > '{}'\necho $$ > '{}'\nprintf '%s\\n' '{ENTRY}' '{{\"no\":\"message\"}}' '{second}'\nexec sleep 30",
            args_file.display(),
            pid_file.display()
        );
        let program = script(dir.path(), &body);
        let source = JournaldSource::new(vec!["-u".into(), "postfix".into()]).with_program(program);
        let (mut rx, stats, stop, thread) = start(source);
        // Generous: a just-written script can fail with ETXTBSY once, and the source retries after 1 s.
        let got = lines(&mut rx, 2, Duration::from_secs(5));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("2026-11-21T09:00:00.123456+00:00 mx postfix/smtpd[4117]: warning:"));
        assert_eq!(got[1], "2026-11-21T09:00:01.000000+00:00 mx dovecot[9]: auth: x");
        assert_eq!(stats.lines.load(Ordering::Relaxed), 2);
        assert!(!stats.waiting.load(Ordering::Relaxed));
        let args = std::fs::read_to_string(&args_file).unwrap();
        assert_eq!(args.trim(), "-f -o json --all --since now -u postfix");

        let t0 = Instant::now();
        stop.stop();
        thread.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1));
        // The child (sleep, exec'd in place of the script) is gone: signal 0 finds no such process.
        let pid: libc::pid_t = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // SAFETY: kill with signal 0 only checks for the process's existence.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "journalctl child still running after stop");
    }

    #[test]
    fn an_exiting_journalctl_is_restarted_after_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let args_file = dir.path().join("args");
        let body = format!("echo \"$@\" >> '{}'\nprintf '%s\\n' '{ENTRY}'\nexit 3", args_file.display());
        let source = JournaldSource::new(Vec::new()).with_program(script(dir.path(), &body));
        let (mut rx, stats, stop, thread) = start(source);
        let got = lines(&mut rx, 2, Duration::from_secs(6));
        assert_eq!(got.len(), 2, "{got:?}");
        stop.stop();
        thread.join().unwrap();
        let args = std::fs::read_to_string(&args_file).unwrap();
        let runs: Vec<&str> = args.lines().collect();
        assert!(runs.len() >= 2, "{runs:?}");
        assert_eq!(runs[0], "-f -o json --all --since now");
        assert_eq!(runs[1], "-f -o json --all --after-cursor=s=1;i=1 --no-tail");
        assert_eq!(stats.lines.load(Ordering::Relaxed), got.len() as u64);
    }

    #[test]
    fn a_missing_program_waits_and_stops_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let source = JournaldSource::new(Vec::new()).with_program(dir.path().join("no-such-journalctl"));
        let (_rx, stats, stop, thread) = start(source);
        std::thread::sleep(Duration::from_millis(100));
        assert!(stats.waiting.load(Ordering::Relaxed));
        let t0 = Instant::now();
        stop.stop();
        thread.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
