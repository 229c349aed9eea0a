//! `[notify]`: who gets mail, which hook runs, how often either may fire; with its validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{hostname, MAX_GATHER};
use crate::setting::{de_duration, Invalid};

/// The `[notify]` section. With no `mail_to` and no `exec`, nothing is sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Recipients, e.g. `["root"]` or `["admin@example.org"]`. Empty: no mail.
    pub mail_to: Vec<String>,
    pub mail_from: String,
    /// The MTA's sendmail-compatible program (Postfix, Exim, OpenSMTPD and sendmail all provide one).
    pub sendmail: PathBuf,
    /// `HOST:PORT` of the local MTA's SMTP service: when set, mail goes there (plain SMTP, no login, no TLS)
    /// instead of through `sendmail`. For a daemon in a sandbox: the packaged unit's (no new privileges, a
    /// read-only /var) keeps Postfix's setgid postdrop and Exim's spool out of reach, a connection to port 25
    /// is not.
    pub smtp: Option<String>,
    /// A program run for every message with the notice as JSON on stdin (a chat webhook, a pager).
    pub exec: Option<PathBuf>,
    /// A second notice of the same kind about the same thing (a port, an address) within this interval is held
    /// and merged into the next message; news about another thing is not held.
    #[serde(deserialize_with = "de_duration")]
    pub min_interval: Duration,
    /// How long a notice that may go out waits for siblings of its kind, so that a burst (the policy decides port
    /// by port, tick by tick) makes one message. 0: no waiting.
    #[serde(deserialize_with = "de_duration")]
    pub gather: Duration,
    /// At most this many messages an hour, all kinds together.
    pub max_per_hour: u32,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            mail_to: Vec::new(),
            mail_from: default_mail_from(),
            sendmail: PathBuf::from("/usr/sbin/sendmail"),
            smtp: None,
            exec: None,
            min_interval: Duration::from_secs(10 * 60),
            gather: Duration::from_secs(1),
            max_per_hour: 12,
        }
    }
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

    /// What to tell the admin at start when mail would go through `sendmail` from a process with no_new_privs
    /// (the packaged unit's NoNewPrivileges): Postfix's setgid postdrop and Exim's setuid binary lose their
    /// privileges there and cannot queue the mail, so every notice would fail.
    pub fn sandbox_warning(&self, no_new_privs: bool) -> Option<String> {
        (no_new_privs && !self.mail_to.is_empty() && self.smtp.is_none()).then(|| {
            format!(
                "notify: mail goes through {} but this process runs with no_new_privs (systemd's NoNewPrivileges):                  the MTA's setgid/setuid queueing program cannot queue it; set notify.smtp = \"127.0.0.1:25\" (with \
                 full addresses) and check with `floodgate notify --test`",
                self.sendmail.display()
            )
        })
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        for a in &self.mail_to {
            check_address("notify.mail_to", a)?;
        }
        check_address("notify.mail_from", &self.mail_from)?;
        if !self.sendmail.is_absolute() {
            return Err(Invalid::new(
                "notify.sendmail",
                format!("`{}` is not an absolute path; write e.g. /usr/sbin/sendmail", self.sendmail.display()),
            ));
        }
        if let Some(server) = &self.smtp {
            smtp_server(server)?;
            // SMTP has no local names: the MTA is not the one that would qualify them, as sendmail does.
            let unqualified = |key: &str, a: &str| {
                Invalid::new(
                    key,
                    format!(
                        "`{a}` has no domain: mail over SMTP (notify.smtp) needs a full address, e.g. {a}@localhost"
                    ),
                )
            };
            for a in &self.mail_to {
                if !a.contains('@') {
                    return Err(unqualified("notify.mail_to", a));
                }
            }
            if !self.mail_from.contains('@') {
                return Err(unqualified("notify.mail_from", &self.mail_from));
            }
        }
        if let Some(exec) = &self.exec {
            if !exec.is_absolute() {
                return Err(Invalid::new("notify.exec", format!("`{}` is not an absolute path", exec.display())));
            }
        }
        if self.min_interval.is_zero() {
            return Err(Invalid::new(
                "notify.min_interval",
                "must be longer than zero (an attack would mail once per notice)",
            ));
        }
        if self.gather > MAX_GATHER {
            return Err(Invalid::new(
                "notify.gather",
                format!(
                    "`{}` is longer than {}: every message would wait that long; write e.g. 1s",
                    humantime::format_duration(self.gather),
                    humantime::format_duration(MAX_GATHER)
                ),
            ));
        }
        if self.max_per_hour == 0 {
            return Err(Invalid::new(
                "notify.max_per_hour",
                "at least 1 (to send nothing, leave mail_to and exec unset)",
            ));
        }
        Ok(())
    }
}

/// `notify.smtp` as host and port: `127.0.0.1:25`, `[::1]:25`, `localhost:25`.
pub fn smtp_server(server: &str) -> Result<(String, u16), Invalid> {
    let bad =
        |why: &str| Invalid::new("notify.smtp", format!("`{}` {why}; write e.g. 127.0.0.1:25", server.escape_debug()));
    let (host, port) = server.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| bad("has no valid port"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b)) {
        return Err(bad("is not a host name or address with a port"));
    }
    Ok((host.to_string(), port))
}

/// One plain address (`user@domain`, or a local name like `root`). With `sendmail -t` the headers choose the
/// recipients, so a line break smuggled into an address would add recipients (`\nBcc: ...`): refused here, and
/// stripped again when the mail is formatted.
fn check_address(key: &str, a: &str) -> Result<(), Invalid> {
    let bad = |why: &str| {
        Invalid::new(
            key,
            format!("`{}` is not a mail address ({why}); write e.g. admin@example.org or root", a.escape_debug()),
        )
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

#[cfg(test)]
mod tests {
    use super::super::test_support::cfg;
    use super::*;

    #[test]
    fn config_defaults_parse_and_validate() {
        let d = NotifyConfig::default();
        assert_eq!(d.min_interval, Duration::from_secs(600));
        assert_eq!(d.gather, Duration::from_secs(1));
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
        let c: NotifyConfig = toml::from_str("gather = \"0s\"\n").unwrap();
        assert_eq!(c.gather, Duration::ZERO, "no waiting");
        c.validate().unwrap();
        NotifyConfig { gather: Duration::from_secs(60), ..cfg() }.validate().unwrap();
        let e = toml::from_str::<NotifyConfig>("min_interval = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("`soon` is not a duration"), "{e}");
        assert!(toml::from_str::<NotifyConfig>("mail = []\n").is_err());

        let bad = |c: NotifyConfig| c.validate().unwrap_err().to_string();
        let e = bad(NotifyConfig { mail_to: vec!["admin@example.org\nBcc: victim@example.net".into()], ..cfg() });
        assert!(e.starts_with("notify.mail_to: `admin@example.org\\nBcc: victim@example.net`"), "{e}");
        assert!(bad(NotifyConfig { mail_to: vec!["Admin <a@b>".into()], ..cfg() }).contains("notify.mail_to"));
        assert!(bad(NotifyConfig { mail_to: vec!["a@".into()], ..cfg() }).contains("local@domain"));
        assert!(bad(NotifyConfig { mail_from: "x\r".into(), ..cfg() }).contains("notify.mail_from"));
        assert!(bad(NotifyConfig { sendmail: "sendmail".into(), ..cfg() }).contains("notify.sendmail"));
        assert!(bad(NotifyConfig { exec: Some("hook.sh".into()), ..cfg() }).contains("notify.exec"));
        assert!(bad(NotifyConfig { max_per_hour: 0, ..cfg() }).contains("notify.max_per_hour"));
        assert!(bad(NotifyConfig { min_interval: Duration::ZERO, ..cfg() }).contains("notify.min_interval"));
        let e = bad(NotifyConfig { gather: Duration::from_secs(61), ..cfg() });
        assert!(e.starts_with("notify.gather: `1m 1s` is longer than 1m"), "{e}");
    }

    #[test]
    fn smtp_needs_a_host_a_port_and_full_addresses() {
        let smtp = |s: &str| NotifyConfig { smtp: Some(s.into()), ..cfg() };
        for ok in ["127.0.0.1:25", "[::1]:25", "localhost:587"] {
            smtp(ok).validate().unwrap();
        }
        assert_eq!(smtp_server("[::1]:25").unwrap(), ("::1".to_string(), 25));
        let bad = |c: NotifyConfig| c.validate().unwrap_err().to_string();
        for (server, why) in [("127.0.0.1", "no port"), ("127.0.0.1:0", "no valid port"), (":25", "not a host")] {
            let e = bad(smtp(server));
            assert!(e.starts_with("notify.smtp: ") && e.contains(why), "{server}: {e}");
        }
        let e = bad(NotifyConfig { mail_to: vec!["root".into()], ..smtp("127.0.0.1:25") });
        assert!(e.starts_with("notify.mail_to: `root` has no domain") && e.contains("root@localhost"), "{e}");
        let e = bad(NotifyConfig { mail_from: "root".into(), ..smtp("127.0.0.1:25") });
        assert!(e.starts_with("notify.mail_from: `root` has no domain"), "{e}");
        // Under no_new_privs, mail through sendmail is warned about at start; over SMTP or without mail, not.
        let w = NotifyConfig { mail_to: vec!["root".into()], ..cfg() }.sandbox_warning(true).unwrap();
        assert!(w.contains("no_new_privs") && w.contains("notify.smtp = \"127.0.0.1:25\""), "{w}");
        assert!(cfg().sandbox_warning(false).is_none());
        assert!(smtp("127.0.0.1:25").sandbox_warning(true).is_none());
        assert!(NotifyConfig { mail_to: vec![], ..cfg() }.sandbox_warning(true).is_none());
        // Through sendmail, local names stay fine.
        NotifyConfig { mail_to: vec!["root".into()], ..cfg() }.validate().unwrap();
    }
}
