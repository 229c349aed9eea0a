//! Sending: the mail through `sendmail -t -i` and the exec hook, each a child killed at its deadline.

use super::*;

/// Sends messages: mail through `sendmail -t -i`, and/or the exec hook; a convergence with its attack's report
/// when reports are on (`with_reports`).
#[derive(Debug, Clone)]
pub struct Notifier {
    cfg: NotifyConfig,
    timeout: Duration,
    reports: Option<ReportSource>,
}

/// The variable naming the report's file in the exec hook's environment.
pub const REPORT_ENV: &str = "FLOODGATE_REPORT";

impl Notifier {
    pub fn new(cfg: NotifyConfig) -> Self {
        Notifier { cfg, timeout: DEFAULT_TIMEOUT, reports: None }
    }

    /// How long each program may run before it is killed (tests shorten it).
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// A convergence carries the report of its attack, rendered from `reports`' store.
    pub fn with_reports(mut self, reports: ReportSource) -> Self {
        self.reports = Some(reports);
        self
    }

    /// Mails the notice and runs the hook. One failing does not stop the other; the error names what failed.
    /// A report that cannot be rendered or kept is said in the mail and the hook's JSON, never an error here.
    pub fn send(&self, n: &Notice) -> anyhow::Result<()> {
        let report = self.reports.as_ref().and_then(|r| r.for_notice(n));
        if let Some(Err(why)) = &report {
            tracing::warn!(kind = n.kind.as_str(), key = n.key.as_deref(), "the notice goes without its report: {why}");
        }
        let mut failures = Vec::new();
        if !self.cfg.mail_to.is_empty() {
            let mail = format_mail(&self.cfg, n, report.as_ref());
            // -t: recipients from the headers (validated, and flattened by format_mail); -i: a line holding a
            // single dot is text, not the end of the message.
            let sent = match &self.cfg.smtp {
                Some(server) => submit(server, &self.cfg, &mail, self.timeout),
                None => run("notify.sendmail", &self.cfg.sendmail, &["-t", "-i"], &[], mail.into_bytes(), self.timeout),
            };
            if let Err(e) = sent {
                failures.push(e);
            }
        }
        if let Some(exec) = &self.cfg.exec {
            // Hook consumers can always read `parts`, even for a notice that never went through the throttle.
            let mut json = serde_json::to_value(&*n.with_parts())?;
            let mut env = Vec::new();
            if let (Some(report), Some(reports), serde_json::Value::Object(fields)) =
                (&report, &self.reports, &mut json)
            {
                // The hook gets a file, not the page: it may only want the path (to link or attach it).
                let kept = report.as_ref().map_err(String::clone).and_then(|r| {
                    reports.save(r).map_err(|e| {
                        tracing::warn!(error = format!("{e:#}"), "the hook goes without the report");
                        format!("{e:#}")
                    })
                });
                match kept {
                    Ok(path) => {
                        fields.insert("report".into(), path.display().to_string().into());
                        env.push((REPORT_ENV, path.into_os_string()));
                    }
                    Err(why) => {
                        fields.insert("report".into(), serde_json::Value::Null);
                        fields.insert("report_error".into(), why.into());
                    }
                }
            }
            let mut json = serde_json::to_vec(&json)?;
            json.push(b'\n');
            if let Err(e) = run("notify.exec", exec, &[], &env, json, self.timeout) {
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

/// Hands `mail` (as `format_mail` writes it) to the MTA at `server` over SMTP: the envelope from `mail_from` to
/// every `mail_to` (the headers say the same), each step of the dialogue within `timeout`.
fn submit(server: &str, cfg: &NotifyConfig, mail: &str, timeout: Duration) -> anyhow::Result<()> {
    use lettre::transport::smtp::extension::ClientId;
    use lettre::{Address, SmtpTransport, Transport};
    let (host, port) = super::config::smtp_server(server).map_err(|e| anyhow!("{e}"))?;
    let address = |key: &str, a: &str| a.parse::<Address>().map_err(|e| anyhow!("{key}: `{a}`: {e}"));
    let from = address("notify.mail_from", &cfg.mail_from)?;
    let to = cfg.mail_to.iter().map(|a| address("notify.mail_to", a)).collect::<anyhow::Result<Vec<_>>>()?;
    let envelope = lettre::address::Envelope::new(Some(from), to).map_err(|e| anyhow!("notify.smtp: {e}"))?;
    let hostname = super::hostname();
    let hello = if hostname.is_empty() { ClientId::default() } else { ClientId::Domain(hostname) };
    // builder_dangerous: plain SMTP, no TLS and no login, which is what the local MTA's port 25 takes.
    let transport = SmtpTransport::builder_dangerous(host).port(port).timeout(Some(timeout)).hello_name(hello).build();
    // SMTP lines end in CRLF; the message is written with LF for sendmail. lettre doubles a leading dot.
    let wire = mail.replace('\n', "\r\n");
    transport.send_raw(&envelope, wire.as_bytes()).map_err(|e| anyhow!("notify.smtp: {server}: {e}"))?;
    Ok(())
}

/// Runs `program args` with `env` added to its environment and `input` on stdin; an error unless it exits
/// successfully within `timeout`.
fn run(
    key: &str,
    program: &Path,
    args: &[&str],
    env: &[(&str, std::ffi::OsString)],
    input: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let shown = std::iter::once(program.display().to_string()).chain(args.iter().map(|a| a.to_string()));
    let shown = shown.collect::<Vec<_>>().join(" ");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
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

    let status = match crate::os::child::wait_until(&mut child, Instant::now() + timeout) {
        Ok(Some(status)) => status,
        waited => {
            crate::os::child::kill_group(&mut child);
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
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use NoticeKind::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn an_smtp_server_that_is_not_there_is_an_error_naming_it_and_the_hook_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        // A port nobody listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let hook = script(dir.path(), "hook", &format!("cat > '{}/hook.json'", dir.path().display()));
        let c = NotifyConfig { smtp: Some(format!("127.0.0.1:{port}")), exec: Some(hook), ..cfg() };
        let e = send_retrying(&Notifier::new(c).with_timeout(Duration::from_secs(5)), &notice(DosDetected, min(0), 1))
            .unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with(&format!("notify.smtp: 127.0.0.1:{port}: ")), "{e}");
        assert!(dir.path().join("hook.json").exists(), "the hook ran all the same");
    }

    #[test]
    fn notifier_pipes_the_mail_to_sendmail_with_t_and_i() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let sendmail = script(dir.path(), "sendmail", &format!("printf '%s\\n' \"$@\" > '{d}/args'\ncat > '{d}/mail'"));
        let c = NotifyConfig { sendmail, ..cfg() };
        let n = notice(DosDetected, t0(), 7);
        send_retrying(&Notifier::new(c.clone()), &n).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("args")).unwrap(), "-t\n-i\n");
        // Each formatting makes a new Message-ID; everything else is the same bytes.
        let sent = std::fs::read_to_string(dir.path().join("mail")).unwrap();
        assert_eq!(without_message_id(&sent), without_message_id(&format_mail(&c, &n, None)));
        assert_eq!(sent.lines().filter(|l| l.starts_with("Message-ID: <")).count(), 1, "{sent}");
    }

    #[test]
    fn notifier_runs_the_hook_with_the_notice_as_json_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let hook = script(dir.path(), "hook", &format!("cat > '{}/json'", dir.path().display()));
        let c = NotifyConfig { mail_to: vec![], exec: Some(hook), ..cfg() };
        send_retrying(&Notifier::new(c), &notice(DdosDetected, t0(), 9)).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("json")).unwrap()).unwrap();
        assert_eq!(v["kind"], "DdosDetected");
        assert_eq!(v["subject"], "DdosDetected on mx");
        assert_eq!(v["time"], "2026-11-21T09:00:00Z");
        assert_eq!(v["figures"], json!({ "pps": 9 }));
        assert_eq!(v["key"], serde_json::Value::Null);
        let part = json!({
            "key": null, "time": "2026-11-21T09:00:00Z", "subject": "DdosDetected on mx", "body": "Port 25 is flooded.",
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
        send_retrying(&Notifier::new(NotifyConfig { mail_to: vec![], exec: Some(hook), ..cfg() }), &out[0]).unwrap();
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
        let e =
            send_retrying(&Notifier::new(c).with_timeout(Duration::from_millis(300)), &notice(DosDetected, t0(), 1))
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
        let e = send_retrying(&Notifier::new(c), &notice(Converged, t0(), 1)).unwrap_err().to_string();
        assert_eq!(e, format!("notify.sendmail: `{} -t -i` failed (exit status: 75): queue full", sendmail.display()));
        assert!(dir.path().join("json").exists());
    }
}
