//! The `floodgate` binary as an operator runs it: parse, parse --save, events, and its errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn floodgate(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

struct Env {
    dir: tempfile::TempDir,
    config: String,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("floodgate.toml");
    std::fs::write(&config, "timezone = \"UTC\"\n").unwrap();
    Env { config: config.display().to_string(), dir }
}

impl Env {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A rules directory holding one file; returns the directory.
    fn rules_dir(&self, file: &str, text: &str) -> String {
        let rules = self.path("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(format!("{rules}/{file}"), text).unwrap();
        rules
    }
}

const LOG: &str = "Nov 21 09:00:00 mx postfix/smtpd[1]: connect from unknown[198.51.100.13]\n\
Nov 21 09:00:01 mx postfix/qmgr[2]: ABC: removed\n\
Nov 21 09:00:02 mx postfix/submission/smtpd[3]: warning: unknown[198.51.100.13]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=alice\n";

#[test]
fn parse_json_gives_one_object_per_event_and_a_summary_on_stderr() {
    let e = env();
    let log = e.path("mail.log");
    let mut data = LOG.as_bytes().to_vec();
    data.extend_from_slice(b"\xff\xfe not utf-8\n\0\0\0 nul bytes\n");
    data.extend(std::iter::repeat_n(b'x', 1 << 20));
    data.extend_from_slice(b"\nNov 21 09:00:03 mx sshd[9]: Failed password for root from 2001:db8::7 port 4 ssh2");
    std::fs::write(&log, &data).unwrap();
    let out = floodgate(&["--config", &e.config, "parse", "--format", "json", &log], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 3, "{stdout}");
    let auth = &events[1];
    assert_eq!(auth["file"], log.as_str());
    assert_eq!(auth["line"], 3);
    assert_eq!(auth["time"], "2026-11-21T09:00:02Z");
    assert_eq!(auth["kind"], "auth_failure");
    assert_eq!(auth["failure"], true);
    assert_eq!(auth["rule"], "postfix.sasl_auth_failed");
    assert_eq!(auth["addr"], "198.51.100.13");
    assert_eq!(auth["port"], 587);
    assert_eq!(auth["service"], "submission");
    assert_eq!(auth["user"], "alice");
    assert!(events[0].get("user").is_none(), "absent values are omitted");
    // The truncated last line (no newline) still counts.
    assert_eq!(events[2]["addr"], "2001:db8::7");
    assert_eq!(events[2]["line"], 7);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("7 lines, 3 events, 2 unmatched, 1 undecodable, 1 overlong, 0 malformed"), "{stderr}");
    assert!(stderr.contains("postfix.sasl_auth_failed"), "{stderr}");
    assert!(stderr.contains("lines/s"), "{stderr}");
}

#[test]
fn parse_reads_stdin_saves_and_events_queries_the_store() {
    let e = env();
    let db = e.path("store/f.db");
    let out = floodgate(&["--config", &e.config, "--db", &db, "parse", "--save", "-"], Some(LOG.as_bytes()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("-:1 2026-11-21T09:00:00Z connect addr=198.51.100.13 port=25 service=smtp"), "{text}");

    let out = floodgate(&["--config", &e.config, "--db", &db, "events", "--json", "--kind", "auth_failure"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["input"], "-");
    assert_eq!(rows[0]["line"], 3);
    assert_eq!(rows[0]["user"], "alice");

    let out = floodgate(&["--config", &e.config, "--db", &db, "events", "--addr", "203.0.113.0/24"], None);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let out = floodgate(
        &["--config", &e.config, "--db", &db, "events", "--addr", "198.51.100.0/24", "--since", "2026-11-21T09:00:01Z"],
        None,
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
}

#[test]
fn bad_inputs_are_refused_with_a_clear_reason() {
    let e = env();
    // A bad rules file: file, rule id and reason.
    let rules = e.rules_dir("mine.toml", "[[rule]]\nid = \"x\"\nkind = \"auth_failure\"\nregex = \"(?P<addr>[\"\n");
    let out = floodgate(&["--config", &e.config, "parse", "--rules", &rules, "-"], Some(b""));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("mine.toml: rule `mine.x`: bad regex"), "{err}");

    // A bad config: file, line, key.
    let bad = e.path("bad.toml");
    std::fs::write(&bad, "[store]\nretention = \"soon\"\n").unwrap();
    let out = floodgate(&["--config", &bad, "parse", "-"], Some(b""));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.toml: line 2") && err.contains("`soon` is not a duration"), "{err}");

    // No store yet, a bad filter, a missing file.
    let out = floodgate(&["--config", &e.config, "--db", &e.path("none.db"), "events"], None);
    assert!(String::from_utf8(out.stderr).unwrap().contains("no event store yet"));
    let out = floodgate(&["--config", &e.config, "--db", &e.path("none.db"), "events", "--kind", "bogus"], None);
    assert!(String::from_utf8(out.stderr).unwrap().contains("unknown event kind `bogus`"));
    let out = floodgate(&["--config", &e.config, "parse", &e.path("missing.log")], None);
    assert!(String::from_utf8(out.stderr).unwrap().contains("missing.log: cannot open"));
}

#[test]
fn a_user_rules_dir_adds_a_family_without_recompiling() {
    let e = env();
    let rules = e.rules_dir(
        "myapp.toml",
        "[family]\nservice = \"smtp\"\n[[rule]]\nid = \"bad_login\"\nkind = \"auth_failure\"\nliterals = [\"bad login\"]\nregex = 'bad login from (?P<addr>\\S+)'\n",
    );
    let out = floodgate(
        &["--config", &e.config, "parse", "--rules", &rules, "--format", "json", "-"],
        Some(b"myapp: bad login from ::ffff:203.0.113.4\n"),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rule"], "myapp.bad_login");
    assert_eq!(v["addr"], "203.0.113.4");
    assert_eq!(v["port"], 25);
}

#[test]
fn rotated_gzip_logs_are_read_and_a_corrupt_one_is_a_clear_error() {
    let e = env();
    let gz = e.path("mail.log.2.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(LOG.as_bytes()).unwrap();
    enc.finish().unwrap();
    let out = floodgate(&["--config", &e.config, "parse", "--format", "json", &gz], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);

    let bad = e.path("broken.log.gz");
    std::fs::write(&bad, b"this is not gzip\n").unwrap();
    let out = floodgate(&["--config", &e.config, "parse", &bad], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("broken.log.gz: read error"));
}

#[test]
fn parse_shows_unmatched_lines_one_rule_and_each_rules_level() {
    let e = env();
    let log = e.path("mail.log");
    let text = format!(
        "{LOG}Nov 21 09:00:04 mx postfix/smtpd[4]: NOQUEUE: reject: RCPT from unknown[198.51.100.14]: 450 4.7.1 Client host rejected: cannot find your hostname, [198.51.100.14]; from=<a@example.org> to=<b@example.net> proto=ESMTP helo=<x>\n"
    );
    std::fs::write(&log, text).unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--config", &e.config, "parse"];
        all.extend_from_slice(args);
        all.push(&log);
        let out = floodgate(&all, None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // Every event says its rule's level; the 4xx spam-bot signature is a judgement call.
    let events = run(&[]);
    assert!(events.contains("rule=postfix.sasl_auth_failed level=normal"), "{events}");
    assert!(events.contains("level=aggressive"), "{events}");
    // Unmatched: only the qmgr line, with its file and line number.
    let missed = run(&["--unmatched"]);
    assert_eq!(missed.trim(), format!("{log}:2: Nov 21 09:00:01 mx postfix/qmgr[2]: ABC: removed"));
    // One rule: its events, and with --unmatched everything it did not match (as JSON objects).
    let one = run(&["--rule", "postfix.sasl_auth_failed"]);
    assert_eq!(one.lines().count(), 1, "{one}");
    let not_it = run(&["--rule", "postfix.sasl_auth_failed", "--unmatched", "--format", "json"]);
    let lines: Vec<u64> = not_it
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [1, 2, 4], "{not_it}");
    let out = floodgate(&["--config", &e.config, "parse", "--rule", "postfix.nope", &log], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("postfix.sasl_auth_failed"), "the family's rules are named: {err}");
}

#[test]
fn parse_on_several_threads_gives_exactly_the_sequential_events_in_input_order() {
    use floodgate::parse::{LineParser, Outcome};
    // Every sample line of every family, over and over: many batches, sessions and ledgers that span them.
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let mut lines = Vec::new();
    for f in std::fs::read_dir(&samples).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        lines.extend(
            text.lines().filter(|l| !l.starts_with("=>") && !l.starts_with('#') && !l.is_empty()).map(String::from),
        );
    }
    lines.sort();
    let mut all = Vec::new();
    for round in 0..30 {
        all.extend(lines.iter().cloned());
        all.push(format!("not a log line {round}"));
    }
    let e = env();
    let log = e.path("big.log");
    std::fs::write(&log, all.join("\n") + "\n").unwrap();
    let out = floodgate(&["--config", &e.config, "parse", "--format", "json", &log], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<(u64, String, bool, u64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["rule"].as_str().unwrap().to_string(),
                v["failure"].as_bool().unwrap(),
                v["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let cfg = floodgate::config::Config::load(Some(std::path::Path::new(&e.config))).unwrap();
    let ctx = floodgate::parse::header::TimeContext::system(cfg.timezone);
    let mut p = LineParser::from_config(cfg.parsing(), &[], ctx).unwrap();
    let want: Vec<(u64, String, bool, u64)> = all
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match p.parse_line(l) {
            Outcome::Event(ev) => Some((i as u64 + 1, ev.rule.to_string(), ev.failure, u64::from(ev.count))),
            _ => None,
        })
        .collect();
    assert!(all.len() > 3 * 4096, "several batches: {}", all.len());
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want, "the same events, counts and order as one thread gives");
}
