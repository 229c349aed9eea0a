//! The mail servers' and sshd's own settings that decide whether floodgate sees a failed login when it happens
//! (visible) and how many guesses one connection can make (bounded): Dovecot's `auth_verbose` and
//! `auth_failure_delay`, Postfix's `smtpd_hard_error_limit` and `smtpd_client_auth_rate_limit` (anvil), sshd's
//! `MaxAuthTries` and `LogLevel`; and the rules that recommend the values that let floodgate act in time.
//!
//! Reading asks each server for its effective settings (`doveconf KEY...`, `postconf -x KEY...`, `postconf -Px`,
//! `sshd -T`), so includes, defaults and macros are resolved by the server itself, never re-parsed here. A server
//! whose command is not installed is absent (None, nothing said); one whose command fails or hangs is unknown,
//! with a note saying why. The rules ([`check`]) are pure, like the rest of the advisor.
//!
//! What the rules rely on, checked in the servers' own documentation and source:
//! - Dovecot 2.3 (conf.d/10-logging.conf, 10-auth.conf as shipped by Debian's 2.3.19) and 2.4 (the settings
//!   reference, doc.dovecot.org 2.4): `auth_verbose` (default no: "log unsuccessful authentication attempts") and
//!   `auth_failure_delay` (default 2 secs: "delay before replying to failed authentications") keep their names in
//!   2.4, which renamed many others. `auth_debug = yes` turns auth_verbose on (src/auth/auth-settings.c:
//!   `if (set->debug) set->verbose = TRUE`; 2.4 docs: "also enables auth_verbose"); 2.4 deprecates auth_debug
//!   (kept for compatibility), so it is asked for alone if the joint query fails. 2.3's doveconf prints nothing for
//!   a name it does not know; 2.4's fails: either way an unknown name is simply missing from the map. Without
//!   auth_verbose the only line about a failed login is the login process's `(auth failed, N attempts in M secs)`,
//!   written when the connection closes (THC-Hydra against the mail lab, tests/hydra_netns.rs: 30 of 30 guesses before the ban).
//! - Postfix postconf(5) (3.7.11, installed here): `smtpd_hard_error_limit` (default "normal: 20, overload: 1"; the
//!   server disconnects when it is reached), `smtpd_client_auth_rate_limit` (default 0 = no limit: AUTH commands
//!   per client per `anvil_rate_time_unit`, default 60s, "regardless of whether or not Postfix actually accepts
//!   those commands"), `smtpd_client_event_limit_exceptions` (default $mynetworks: exempt). `postconf -x` expands
//!   `${stress?{1}:{20}}` to the value in force. Postfix logs each SASL failure at once, and an anvil refusal as
//!   `AUTH command rate limit exceeded`, which rules/postfix.toml counts.
//! - sshd_config(5) (OpenSSH 9.2): `MaxAuthTries` default 6; `LogLevel` QUIET, FATAL, ERROR, INFO, VERBOSE,
//!   DEBUG1-3, default INFO. auth.c `auth_log()`: a failed password is logged at INFO, a failed key at VERBOSE
//!   until the connection's failures reach MaxAuthTries / 2; `Invalid user` is INFO. So QUIET, FATAL and ERROR log
//!   no failed attempt at all. `sshd -T` prints the global settings (lowercase `key value`); Match blocks are not
//!   applied without `-C`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Finding, Severity};
use crate::config::Config;

/// What is asked of `doveconf`.
const DOVECOT_KEYS: [&str; 3] = ["auth_verbose", "auth_debug", "auth_failure_delay"];
/// What is asked of `postconf` (main.cf) and kept from `postconf -P` (master.cf overrides).
const POSTFIX_KEYS: [&str; 5] = [
    "smtpd_hard_error_limit",
    "smtpd_client_auth_rate_limit",
    "anvil_rate_time_unit",
    "smtpd_sasl_auth_enable",
    "smtpd_client_event_limit_exceptions",
];
/// What is kept from `sshd -T`. `challengeresponseauthentication` is what OpenSSH before 8.7 prints instead of
/// `kbdinteractiveauthentication`.
const SSHD_KEYS: [&str; 5] = [
    "maxauthtries",
    "loglevel",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "challengeresponseauthentication",
];

/// A server command that hangs (a broken config include on NFS, an sshd waiting for entropy) must not hang the
/// advisor: after this it is killed and its server is reported unknown.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The outputs asked for are a few lines; anything beyond this is not read.
const MAX_OUTPUT_BYTES: u64 = 1 << 20;
/// Where server commands live when they are not on PATH (sbin is often missing from a non-root PATH).
const SBIN_DIRS: [&str; 5] = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"];

/// A recommended rate: a real client authenticates once per connection, so 10 a minute leaves room for a phone
/// and a laptop behind one NAT while a guesser gets 10 guesses a minute however many connections it opens.
const RECOMMENDED_AUTH_RATE: u32 = 10;
/// Dovecot's default failure delay: the floor the rule holds to.
const DOVECOT_DEFAULT_FAILURE_DELAY: Duration = Duration::from_secs(2);
/// The MaxAuthTries recommended when the jail allows more: enough for a user whose agent offers two keys and
/// then a password.
const RECOMMENDED_MAX_AUTH_TRIES: u32 = 3;

/// Dovecot's IMAP, POP3 and ManageSieve ports: where its login processes listen.
const DOVECOT_PORTS: [u16; 5] = [110, 143, 993, 995, 4190];
/// Postfix's smtpd: SMTP, submissions, submission.
const POSTFIX_PORTS: [u16; 3] = [25, 465, 587];
const SSH_PORTS: [u16; 1] = [22];

/// The settings as each server reports them (only the keys above), each None when the server is absent or could
/// not be asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerSettings {
    /// `doveconf auth_verbose auth_debug auth_failure_delay`.
    pub dovecot: Option<BTreeMap<String, String>>,
    pub postfix: Option<Postfix>,
    /// `sshd -T`, lowercase keys.
    pub sshd: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Postfix {
    /// main.cf with defaults, expanded (`postconf -x KEY...`).
    pub main: BTreeMap<String, String>,
    /// master.cf `-o` overrides of the same keys (`postconf -Px`), by `service/type` (`submission/inet`).
    pub services: BTreeMap<String, BTreeMap<String, String>>,
}

impl ServerSettings {
    /// Asks the installed servers; what cannot be asked is explained in `notes`.
    pub fn read_live(notes: &mut Vec<String>) -> ServerSettings {
        ServerSettings::read_with(&find_program, notes)
    }

    /// Asks the servers whose commands `find` locates (a test passes its own finder).
    pub(crate) fn read_with(find: &dyn Fn(&str) -> Option<PathBuf>, notes: &mut Vec<String>) -> ServerSettings {
        let dovecot = find("doveconf").and_then(|p| read_dovecot(&p, notes));
        let postfix = find("postconf").and_then(|p| read_postfix(&p, notes));
        let sshd = find("sshd").and_then(|p| read_sshd(&p, notes));
        ServerSettings { dovecot, postfix, sshd }
    }
}

fn read_dovecot(doveconf: &Path, notes: &mut Vec<String>) -> Option<BTreeMap<String, String>> {
    match run(doveconf, &DOVECOT_KEYS) {
        Ok(out) => Some(only(parse_key_values(&out), &DOVECOT_KEYS)),
        Err(RunError::Failed(joint)) => {
            // Dovecot 2.4 refuses the whole query when it does not know one name (auth_debug is deprecated
            // there): asked one by one, a retired name costs only itself.
            let mut found = BTreeMap::new();
            for key in DOVECOT_KEYS {
                match run(doveconf, &[key]) {
                    Ok(out) => found.extend(only(parse_key_values(&out), &DOVECOT_KEYS)),
                    Err(e) => tracing::debug!(key, error = %e, "doveconf: setting not read"),
                }
            }
            if found.is_empty() {
                notes.push(format!("Dovecot's settings unknown: {joint}"));
                return None;
            }
            Some(found)
        }
        Err(e) => {
            notes.push(format!("Dovecot's settings unknown: {e}"));
            None
        }
    }
}

fn read_postfix(postconf: &Path, notes: &mut Vec<String>) -> Option<Postfix> {
    // -x: the value in force, with `$name` and `${stress?...}` expanded.
    let mut args = vec!["-x"];
    args.extend(POSTFIX_KEYS);
    let main = match run(postconf, &args) {
        Ok(out) => only(parse_key_values(&out), &POSTFIX_KEYS),
        Err(e) => {
            notes.push(format!("Postfix's settings unknown: {e}"));
            return None;
        }
    };
    let services = match run(postconf, &["-Px"]) {
        Ok(out) => parse_service_overrides(&out),
        Err(e) => {
            // main.cf alone still answers the rules; say that master.cf was not seen.
            notes.push(format!("Postfix's master.cf overrides unknown (main.cf values used): {e}"));
            BTreeMap::new()
        }
    };
    Some(Postfix { main, services })
}

fn read_sshd(sshd: &Path, notes: &mut Vec<String>) -> Option<BTreeMap<String, String>> {
    match run(sshd, &["-T"]) {
        Ok(out) => Some(only(parse_sshd_t(&out), &SSHD_KEYS)),
        Err(e) => {
            // The usual cause: sshd -T loads the host keys, which only root can read.
            notes.push(format!("sshd's settings unknown (sshd -T needs root and the host keys): {e}"));
            None
        }
    }
}

/// The program on PATH or in the usual sbin directories, if it is an executable file.
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

#[derive(Debug)]
enum RunError {
    /// It could not start, or exited unsuccessfully: asking again differently may work.
    Failed(String),
    /// It was killed at the deadline: asking again would only wait again.
    TimedOut(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Failed(s) | RunError::TimedOut(s) => f.write_str(s),
        }
    }
}

/// Runs `program args` and returns its standard output, if it exits successfully within [`COMMAND_TIMEOUT`].
fn run(program: &Path, args: &[&str]) -> Result<String, RunError> {
    let shown = format!("`{} {}`", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        // Untranslated messages, so notes read the same everywhere.
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RunError::Failed(format!("cannot run {shown}: {e}")))?;
    // Both pipes are drained on their own threads, so a child writing more than a pipe holds cannot block while
    // the deadline below runs.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let _ = (&mut pipe).take(MAX_OUTPUT_BYTES).read_to_end(&mut kept);
                let _ = std::io::copy(&mut pipe, &mut std::io::sink());
                let _ = tx.send(kept);
            });
        }
        rx
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));

    let status = match crate::os::child::wait_until(&mut child, Instant::now() + COMMAND_TIMEOUT) {
        Ok(Some(status)) => status,
        waited => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(match waited {
                Err(e) => RunError::Failed(format!("waiting for {shown} failed: {e}")),
                _ => RunError::TimedOut(format!(
                    "{shown} did not finish within {}; killed it",
                    humantime::format_duration(COMMAND_TIMEOUT)
                )),
            });
        }
    };
    // The pipes close when the child exits; a grandchild holding one open is not waited for.
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default()).into_owned()
    };
    let (out, err) = (collect(stdout), collect(stderr));
    if !status.success() {
        let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
        let err: String = err.chars().take(300).collect();
        return Err(RunError::Failed(if err.is_empty() {
            format!("{shown} failed ({status})")
        } else {
            format!("{shown} failed ({status}): {err}")
        }));
    }
    if !err.trim().is_empty() {
        // postconf warns on stderr about an unknown name and still succeeds: worth a debug line, not a note.
        tracing::debug!(command = %shown, stderr = %err.trim(), "server command wrote to stderr");
    }
    Ok(out)
}

/// Top-level `key = value` lines: the output of `doveconf KEY...`, `doveconf -n`, `postconf KEY...`,
/// `postconf -n`, `postconf -P`. Comments and nested sections (`passdb { ... }`) are skipped; the value is kept
/// as printed (quotes included).
pub(crate) fn parse_key_values(text: &str) -> BTreeMap<String, String> {
    let mut depth = 0usize;
    let mut found = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // `passdb {`, `namespace inbox {`, 2.4's `passdb pam {`: a section, never a `key = value` whose value
        // happens to end in a brace.
        if line.ends_with('{') && !line.contains(" =") {
            depth += 1;
            continue;
        }
        if line == "}" {
            depth = depth.saturating_sub(1);
            continue;
        }
        if depth > 0 {
            continue;
        }
        if let Some((key, value)) = line.split_once(" =") {
            let key = key.trim();
            if !key.is_empty() && !key.contains(char::is_whitespace) {
                found.insert(key.to_string(), value.trim().to_string());
            }
        }
    }
    found
}

/// `sshd -T`: lowercase `key value` lines. The first line of a repeated key (listenaddress, acceptenv) wins;
/// the keys read here appear once.
pub(crate) fn parse_sshd_t(text: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if !key.is_empty() && !key.starts_with('#') {
            found.entry(key.to_ascii_lowercase()).or_insert_with(|| value.trim().to_string());
        }
    }
    found
}

/// `postconf -P`: `service/type/parameter = value`, kept for the parameters this module reads, by
/// `service/type`.
pub(crate) fn parse_service_overrides(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (key, value) in parse_key_values(text) {
        let Some((service, param)) = key.rsplit_once('/') else { continue };
        if service.contains('/') && POSTFIX_KEYS.contains(&param) {
            found.entry(service.to_string()).or_default().insert(param.to_string(), value);
        }
    }
    found
}

fn only(mut map: BTreeMap<String, String>, keys: &[&str]) -> BTreeMap<String, String> {
    map.retain(|k, _| keys.contains(&k.as_str()));
    map
}

/// A boolean as Dovecot, Postfix and sshd print one.
fn yes(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A time as Dovecot (`2 secs`, `500 msecs`, `1 min`, `0`) or Postfix (`60s`, `1m`, `60`) prints it. A bare
/// number is in seconds for both of the settings read here.
pub(crate) fn duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let digits = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let n: u64 = value[..digits].parse().ok()?;
    let unit_ms: u64 = match value[digits..].trim().to_ascii_lowercase().as_str() {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 604_800_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(unit_ms)?))
}

/// The jails of the services on `ports`: (service, maxretry), or the jail's own when no service has them.
fn jails(config: &Config, ports: &[u16]) -> Vec<(String, u32)> {
    let found: Vec<(String, u32)> = config
        .services
        .iter()
        .filter(|(_, s)| s.ports.iter().any(|p| ports.contains(p)))
        .map(|(name, s)| (name.clone(), s.maxretry.unwrap_or(config.jail.maxretry)))
        .collect();
    if found.is_empty() {
        vec![("[jail]".to_string(), config.jail.maxretry)]
    } else {
        found
    }
}

/// The strictest jail on these ports: the allowance a connection must not exceed.
fn strictest(config: &Config, ports: &[u16]) -> (String, u32) {
    jails(config, ports).into_iter().min_by_key(|(_, n)| *n).expect("jails() is never empty")
}

/// The most lenient: for a server-wide bound that must not cut below any of its services' jails.
fn most_lenient(config: &Config, ports: &[u16]) -> (String, u32) {
    jails(config, ports).into_iter().max_by_key(|(_, n)| *n).expect("jails() is never empty")
}

/// The rules, for each server that was read.
pub(super) fn check(s: &ServerSettings, config: &Config, out: &mut Vec<Finding>) {
    if let Some(d) = &s.dovecot {
        dovecot(d, config, out);
    }
    if let Some(p) = &s.postfix {
        postfix(p, config, out);
    }
    if let Some(t) = &s.sshd {
        sshd(t, config, out);
    }
}

fn dovecot(d: &BTreeMap<String, String>, config: &Config, out: &mut Vec<Finding>) {
    let (service, maxretry) = strictest(config, &DOVECOT_PORTS);
    let verbose = d.get("auth_verbose").and_then(|v| yes(v));
    let debug = d.get("auth_debug").and_then(|v| yes(v)).unwrap_or(false);
    // auth_debug turns auth_verbose on inside the auth process: the per-attempt lines are there.
    if verbose == Some(false) && !debug {
        out.push(
            Finding::new(
                "dovecot_auth_verbose_off",
                Severity::Warning,
                "Dovecot auth_verbose",
                "auth_verbose = no: a failed login is logged only when its connection closes",
                "auth_verbose = yes in /etc/dovecot/conf.d/10-logging.conf",
                format!(
                    "Without it Dovecot writes nothing about a failed login until the client disconnects: the login \
                     process's `(auth failed, N attempts in M secs)` line. A guesser that keeps its connection open \
                     tries password after password unseen, and floodgate's ban comes after the fact; THC-Hydra \
                     against a Dovecot 2.3 POP3 under floodgate made all 30 of its guesses before the ban and found \
                     the password. With auth_verbose = yes the auth process writes one line per failed attempt at \
                     once (`passwd-file(user,ip,<session>): Password mismatch`, `pam(user,ip,<session>): \
                     pam_authenticate() failed`), floodgate counts each as it happens and bans at the {maxretry}th \
                     ({service} maxretry), which also cuts the open connection; the closing line then adds only the \
                     attempts no earlier line counted. The lines name the user tried, never the password (unless \
                     auth_verbose_passwords is set). Same name in Dovecot 2.3 and 2.4."
                ),
            )
            .snippet(
                "# /etc/dovecot/conf.d/10-logging.conf (Dovecot 2.3 and 2.4)\nauth_verbose = yes\n\
                 # then: systemctl reload dovecot\n"
                    .into(),
            ),
        );
    }
    if let Some(raw) = d.get("auth_failure_delay") {
        match duration(raw) {
            Some(delay) if delay < DOVECOT_DEFAULT_FAILURE_DELAY => out.push(
                Finding::new(
                    "dovecot_auth_failure_delay_low",
                    Severity::Warning,
                    "Dovecot auth_failure_delay",
                    format!("auth_failure_delay = {raw}"),
                    "auth_failure_delay = 2 secs in /etc/dovecot/conf.d/10-auth.conf",
                    format!(
                        "Dovecot holds the reply to a failed login for this long (default 2 secs, and anvil's auth \
                         penalty adds up to 15 s more per address), so one connection can make at most one guess \
                         per delay. At {raw} a guesser goes as fast as the password database answers: its \
                         {maxretry} guesses ({service} maxretry) and more are made within moments, and every \
                         connection it already has open goes on guessing while floodgate reads the lines and bans. \
                         The delay is the time floodgate has between one source's guesses; a real user who mistypes \
                         waits 2 seconds once."
                    ),
                )
                .snippet(
                    "# /etc/dovecot/conf.d/10-auth.conf (Dovecot 2.3 and 2.4)\nauth_failure_delay = 2 secs\n\
                     # then: systemctl reload dovecot\n"
                        .into(),
                ),
            ),
            Some(_) => {}
            None => tracing::debug!(value = %raw, "Dovecot auth_failure_delay: not a time"),
        }
    }
}

fn postfix(p: &Postfix, config: &Config, out: &mut Vec<Finding>) {
    const SASL: &str = "smtpd_sasl_auth_enable";
    const RATE: &str = "smtpd_client_auth_rate_limit";
    const HARD: &str = "smtpd_hard_error_limit";
    let number = |v: Option<&String>| v.and_then(|v| v.trim().parse::<u32>().ok());
    let sasl_main = p.main.get(SASL).and_then(|v| yes(v));
    let rate_main = number(p.main.get(RATE));
    let unit = p.main.get("anvil_rate_time_unit").and_then(|v| duration(v)).unwrap_or(Duration::from_secs(60));
    let unit = humantime::format_duration(unit).to_string();

    // Where AUTH is offered, and the rate limit each place has: main.cf (every service without its own setting)
    // and each master.cf service that overrides either setting.
    let mut offered: Vec<(String, Option<u32>)> = Vec::new();
    if sasl_main == Some(true) {
        offered.push(("main.cf".into(), rate_main));
    }
    for (service, o) in &p.services {
        if !(o.contains_key(SASL) || o.contains_key(RATE)) {
            continue;
        }
        if o.get(SASL).and_then(|v| yes(v)).or(sasl_main) == Some(true) {
            offered.push((service.clone(), number(o.get(RATE)).or(rate_main)));
        }
    }
    let unlimited: Vec<&str> =
        offered.iter().filter(|(_, rate)| *rate == Some(0)).map(|(place, _)| place.as_str()).collect();
    if !unlimited.is_empty() {
        let (service, maxretry) = strictest(config, &POSTFIX_PORTS);
        let in_main = unlimited.contains(&"main.cf");
        let services: Vec<&str> = unlimited.iter().copied().filter(|p| *p != "main.cf").collect();
        let mut snippet = String::new();
        let recommended = if in_main {
            snippet.push_str(&format!("postconf -e '{RATE} = {RECOMMENDED_AUTH_RATE}'\n"));
            format!("{RATE} = {RECOMMENDED_AUTH_RATE} (postconf -e)")
        } else {
            format!("-o {RATE}={RECOMMENDED_AUTH_RATE} on {} in master.cf", services.join(", "))
        };
        if !services.is_empty() {
            snippet.push_str(&format!(
                "# /etc/postfix/master.cf, under the line of {}:\n  -o {RATE}={RECOMMENDED_AUTH_RATE}\n",
                services.join(", ")
            ));
        }
        snippet.push_str("postfix reload\n");
        let exempt = p.main.get("smtpd_client_event_limit_exceptions").map(String::as_str).unwrap_or("$mynetworks");
        let exempt = if exempt.is_empty() { "none" } else { exempt };
        out.push(
            Finding::new(
                "postfix_no_auth_rate_limit",
                Severity::Warning,
                "Postfix smtpd_client_auth_rate_limit",
                format!("0 (no limit) where AUTH is offered: {}", unlimited.join(", ")),
                recommended,
                format!(
                    "Postfix logs each failed AUTH at once and floodgate bans at the {maxretry}th ({service} \
                     maxretry), but nothing in Postfix itself bounds how fast one client may guess: a tool with \
                     several connections open has a guess in flight on each, and a log that reaches floodgate late \
                     (syslog buffering, journald rate limiting, floodgate restarting) leaves the guessing \
                     unchecked. The limit is counted by anvil per client address across all its connections, {} \
                     AUTH commands per {unit} (anvil_rate_time_unit), accepted or not; beyond it Postfix refuses \
                     AUTH and logs `AUTH command rate limit exceeded`, which floodgate counts as a failure. A real \
                     client authenticates once per connection. Clients in smtpd_client_event_limit_exceptions \
                     ({exempt}) are exempt, so webmail on the host is unaffected.",
                    RECOMMENDED_AUTH_RATE
                ),
            )
            .snippet(snippet),
        );
    }

    if let Some(hard) = number(p.main.get(HARD)) {
        let (service, allowance) = most_lenient(config, &POSTFIX_PORTS);
        if hard > allowance {
            let overrides: Vec<String> =
                p.services.iter().filter_map(|(s, o)| o.get(HARD).map(|v| format!("{s} {v}"))).collect();
            let overrides =
                if overrides.is_empty() { String::new() } else { format!(" (master.cf: {})", overrides.join(", ")) };
            out.push(
                Finding::new(
                    "postfix_hard_error_limit_high",
                    Severity::Warning,
                    "Postfix smtpd_hard_error_limit",
                    format!("{HARD} = {hard}{overrides}"),
                    format!("{HARD} = {allowance} (postconf -e)"),
                    format!(
                        "Every failed AUTH and every rejected command is an error, and Postfix disconnects a client \
                         only at this limit: one connection can make {hard} failed attempts, more than floodgate's \
                         most lenient mail jail allows any source ({allowance}, {service} maxretry). Floodgate sees \
                         each failure line at once, but the server's own bound is what still holds when the ban is \
                         late (a delayed log, parallel connections already open). At {allowance} Postfix ends the \
                         connection where floodgate would ban, so each further batch costs a new connection, which \
                         floodgate's per-source limit meters. A real MTA that reaches it gets a 421 and retries \
                         the rest from its queue."
                    ),
                )
                .snippet(format!("postconf -e '{HARD} = {allowance}'\npostfix reload\n")),
            );
        }
    }
}

fn sshd(t: &BTreeMap<String, String>, config: &Config, out: &mut Vec<Finding>) {
    if let Some(level) = t.get("loglevel") {
        let level = level.to_ascii_uppercase();
        if matches!(level.as_str(), "QUIET" | "FATAL" | "ERROR") {
            out.push(
                Finding::new(
                    "sshd_loglevel_hides_failures",
                    Severity::Critical,
                    "sshd LogLevel",
                    format!("LogLevel {level}: no failed login is logged"),
                    "LogLevel VERBOSE in /etc/ssh/sshd_config",
                    format!(
                        "At {level} sshd writes no `Failed password`, `Invalid user` or `maximum authentication \
                         attempts exceeded` line: floodgate cannot see a single guess against sshd and never bans \
                         anyone for it. INFO (the default) logs every failed password and `Invalid user`, and failed \
                         keys once a connection's failures reach MaxAuthTries / 2; VERBOSE logs every failed key too, \
                         with its fingerprint, so key-guessing scanners are counted from their first attempt."
                    ),
                )
                .snippet(
                    "# /etc/ssh/sshd_config.d/floodgate.conf (Debian reads sshd_config.d/*.conf first; sshd keeps \
                     the first value it reads)\nLogLevel VERBOSE\n# then: sshd -t && systemctl reload ssh\n"
                        .into(),
                ),
            );
        }
    }
    let Some(tries) = t.get("maxauthtries").and_then(|v| v.trim().parse::<u32>().ok()) else { return };
    // With neither passwords nor keyboard-interactive (PAM) accepted there is no password to guess: a key
    // cannot be guessed, so a connection's tries do not matter to a brute force.
    let accepts = |key: &str| t.get(key).and_then(|v| yes(v));
    let passwords = [
        accepts("passwordauthentication"),
        accepts("kbdinteractiveauthentication"),
        accepts("challengeresponseauthentication"),
    ];
    if passwords.iter().all(|a| *a != Some(true)) && passwords.iter().any(|a| a.is_some()) {
        return;
    }
    let (service, maxretry) = strictest(config, &SSH_PORTS);
    if tries <= maxretry {
        return;
    }
    let recommended = RECOMMENDED_MAX_AUTH_TRIES.min(maxretry);
    out.push(
        Finding::new(
            "sshd_max_auth_tries_high",
            Severity::Warning,
            "sshd MaxAuthTries",
            format!("MaxAuthTries {tries}"),
            format!("MaxAuthTries {recommended} in /etc/ssh/sshd_config"),
            format!(
                "sshd closes a connection after {tries} failed attempts, floodgate bans a source after {maxretry} \
                 ({service} maxretry): one connection holds more guesses than the jail allows any source. \
                 Floodgate sees each `Failed password` line at once, but the server's own bound is what still \
                 holds when the ban is late (a log that reaches floodgate late, connections already open). At \
                 {recommended} sshd ends the connection within the jail's count, so each further guess costs a new \
                 connection, which floodgate's per-source limit meters. A lower value also makes sshd log failed \
                 keys at INFO sooner (from MaxAuthTries / 2); a user whose agent offers many keys sets \
                 IdentitiesOnly in their client."
            ),
        )
        .snippet(format!(
            "# /etc/ssh/sshd_config.d/floodgate.conf (Debian reads sshd_config.d/*.conf first; sshd keeps the first \
             value it reads)\nMaxAuthTries {recommended}\n# then: sshd -t && systemctl reload ssh\n"
        )),
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::tests::{config, ids};
    use super::*;

    /// `doveconf -n` on this project's Debian 12 machine (Dovecot 2.3.19.1), unchanged but for the hostname.
    const DOVECONF_N: &str = "\
# 2.3.19.1 (9b53102964): /etc/dovecot/dovecot.conf
# Pigeonhole version 0.5.19 (4eae2f79)
# OS: Linux 6.18.44-fc-v1045 x86_64 Debian 12.11 
# Hostname: vm
mail_location = mbox:~/mail:INBOX=/var/mail/%u
mail_privileged_group = mail
namespace inbox {
  inbox = yes
  location = 
  mailbox Drafts {
    special_use = \\Drafts
  }
  mailbox Junk {
    special_use = \\Junk
  }
  prefix = 
}
passdb {
  driver = pam
}
protocols = \" imap pop3\"
ssl_cert = </etc/dovecot/private/dovecot.pem
ssl_client_ca_dir = /etc/ssl/certs
ssl_dh = # hidden, use -P to show it
ssl_key = # hidden, use -P to show it
userdb {
  driver = passwd
}";

    /// `doveconf auth_verbose auth_debug auth_failure_delay` on the same machine (defaults).
    const DOVECONF_KEYS: &str = "auth_verbose = no\nauth_debug = no\nauth_failure_delay = 2 secs\n";

    /// `postconf -n` on the same machine (Postfix 3.7.11, Debian's "Local only").
    const POSTCONF_N: &str = "\
alias_database = hash:/etc/aliases
alias_maps = hash:/etc/aliases
append_dot_mydomain = no
biff = no
compatibility_level = 3.6
inet_interfaces = loopback-only
mydestination = mx.example.test, $myhostname, vm, localhost.localdomain, localhost
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
relayhost =
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
";

    /// `postconf -x KEY...` on the same machine: defaults, expanded.
    const POSTCONF_X: &str = "\
smtpd_hard_error_limit = 20
smtpd_client_auth_rate_limit = 0
anvil_rate_time_unit = 60s
smtpd_sasl_auth_enable = no
smtpd_client_event_limit_exceptions = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
";

    /// `postconf -Px` with Debian's submission block uncommented.
    const POSTCONF_P: &str = "\
relay/unix/syslog_name = postfix/relay
submission/inet/syslog_name = postfix/submission
submission/inet/smtpd_tls_security_level = encrypt
submission/inet/smtpd_sasl_auth_enable = yes
submission/inet/smtpd_client_restrictions = permit_sasl_authenticated,reject
smtps/inet/smtpd_sasl_auth_enable = yes
smtps/inet/smtpd_client_auth_rate_limit = 5
";

    /// `sshd -T` of Debian 12's OpenSSH 9.2p1 with its shipped sshd_config (head and tail of 91 lines).
    const SSHD_T: &str = "\
port 22
addressfamily any
listenaddress [::]:22
listenaddress 0.0.0.0:22
usepam yes
logingracetime 120
x11displayoffset 10
maxauthtries 6
maxsessions 10
permitrootlogin without-password
pubkeyauthentication yes
passwordauthentication yes
kbdinteractiveauthentication no
loglevel INFO
syslogfacility AUTH
authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2
acceptenv LANG
acceptenv LC_*
subsystem sftp /usr/lib/openssh/sftp-server
maxstartups 10:30:100
";

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Every server present with settings that let floodgate act in time under [`config`] (maxretry 5).
    pub(crate) fn good() -> ServerSettings {
        ServerSettings {
            dovecot: Some(map(&[("auth_verbose", "yes"), ("auth_debug", "no"), ("auth_failure_delay", "2 secs")])),
            postfix: Some(Postfix {
                main: map(&[
                    ("smtpd_hard_error_limit", "10"),
                    ("smtpd_client_auth_rate_limit", "10"),
                    ("anvil_rate_time_unit", "60s"),
                    ("smtpd_sasl_auth_enable", "yes"),
                ]),
                services: BTreeMap::new(),
            }),
            sshd: Some(map(&[("maxauthtries", "3"), ("loglevel", "INFO"), ("passwordauthentication", "yes")])),
        }
    }

    fn run_check(s: &ServerSettings) -> Vec<Finding> {
        let mut out = Vec::new();
        check(s, &config(), &mut out);
        out
    }

    #[test]
    fn doveconf_outputs_parse_top_level_only() {
        let n = parse_key_values(DOVECONF_N);
        assert_eq!(n.get("mail_privileged_group").map(String::as_str), Some("mail"));
        assert_eq!(n.get("protocols").map(String::as_str), Some("\" imap pop3\""));
        assert_eq!(n.get("ssl_dh").map(String::as_str), Some("# hidden, use -P to show it"));
        // Nested sections' keys are not top-level settings.
        assert!(!n.contains_key("driver") && !n.contains_key("inbox") && !n.contains_key("special_use"), "{n:?}");
        // A value that ends in a brace is a value, not a section.
        assert_eq!(parse_key_values("a = {\nb = 1\n")["b"], "1");
        // An empty value is still a setting.
        assert_eq!(n.get("mail_location").map(String::as_str), Some("mbox:~/mail:INBOX=/var/mail/%u"));
        let k = parse_key_values(DOVECONF_KEYS);
        assert_eq!(k.len(), 3);
        assert_eq!(duration(&k["auth_failure_delay"]), Some(Duration::from_secs(2)));
        assert_eq!(yes(&k["auth_verbose"]), Some(false));
    }

    #[test]
    fn postconf_outputs_parse_with_their_services() {
        let n = parse_key_values(POSTCONF_N);
        assert_eq!(n.get("relayhost").map(String::as_str), Some(""));
        assert_eq!(n.get("mynetworks").map(String::as_str), Some("127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128"));
        let x = only(parse_key_values(POSTCONF_X), &POSTFIX_KEYS);
        assert_eq!(x.len(), 5);
        assert_eq!(x["smtpd_hard_error_limit"], "20");
        assert_eq!(duration(&x["anvil_rate_time_unit"]), Some(Duration::from_secs(60)));
        // Unexpanded (`postconf -d` without -x), the default is a macro, not a number: the rule then skips it.
        let d = parse_key_values("smtpd_hard_error_limit = ${stress?{1}:{20}}\n");
        assert_eq!(d["smtpd_hard_error_limit"], "${stress?{1}:{20}}");
        let p = parse_service_overrides(POSTCONF_P);
        assert_eq!(p.keys().collect::<Vec<_>>(), ["smtps/inet", "submission/inet"]);
        assert_eq!(p["submission/inet"], map(&[("smtpd_sasl_auth_enable", "yes")]));
        assert_eq!(p["smtps/inet"]["smtpd_client_auth_rate_limit"], "5");
    }

    #[test]
    fn sshd_t_parses_lowercase_keys_first_value_kept() {
        let t = parse_sshd_t(SSHD_T);
        assert_eq!(t["maxauthtries"], "6");
        assert_eq!(t["loglevel"], "INFO");
        assert_eq!(t["listenaddress"], "[::]:22");
        assert_eq!(t["authorizedkeysfile"], ".ssh/authorized_keys .ssh/authorized_keys2");
        assert_eq!(only(t, &SSHD_KEYS).len(), 4);
    }

    #[test]
    fn times_parse_in_both_servers_spellings() {
        for (text, ms) in [
            ("2 secs", 2000),
            ("0", 0),
            ("500 msecs", 500),
            ("500ms", 500),
            ("1 min", 60_000),
            ("60s", 60_000),
            ("1m", 60_000),
            ("1h", 3_600_000),
            ("60", 60_000),
        ] {
            assert_eq!(duration(text), Some(Duration::from_millis(ms)), "{text}");
        }
        assert_eq!(duration("soon"), None);
        assert_eq!(duration("2 fortnights"), None);
    }

    #[test]
    fn good_settings_give_nothing_and_absent_servers_nothing() {
        assert!(run_check(&good()).is_empty(), "{:#?}", run_check(&good()));
        assert!(run_check(&ServerSettings::default()).is_empty());
    }

    #[test]
    fn dovecot_default_logging_warns_and_auth_debug_counts_as_verbose() {
        let mut s = good();
        s.dovecot = Some(parse_key_values(DOVECONF_KEYS));
        let f = run_check(&s);
        assert_eq!(ids(&f), ["dovecot_auth_verbose_off"]);
        let v = &f[0];
        assert_eq!(v.severity, Severity::Warning);
        assert!(v.recommended.starts_with("auth_verbose = yes in /etc/dovecot/conf.d/10-logging.conf"), "{v:?}");
        assert!(v.snippet.as_deref().unwrap().contains("\nauth_verbose = yes\n"));
        // Tied to the config's jail: the preset's imap jail is maxretry 5.
        assert!(v.why.contains("bans at the 5th"), "{}", v.why);
        // auth_debug = yes turns auth_verbose on: no finding.
        s.dovecot.as_mut().unwrap().insert("auth_debug".into(), "yes".into());
        assert!(run_check(&s).is_empty());
        // Unknown (not printed): no finding either.
        s.dovecot = Some(map(&[("auth_failure_delay", "2 secs")]));
        assert!(run_check(&s).is_empty());
    }

    #[test]
    fn dovecot_failure_delay_below_the_default_warns() {
        let mut s = good();
        for (value, fires) in [("0", true), ("500 msecs", true), ("1 secs", true), ("2 secs", false), ("5s", false)] {
            s.dovecot.as_mut().unwrap().insert("auth_failure_delay".into(), value.into());
            let f = run_check(&s);
            assert_eq!(ids(&f) == ["dovecot_auth_failure_delay_low"], fires, "{value}: {:?}", ids(&f));
            if fires {
                assert_eq!(f[0].current, format!("auth_failure_delay = {value}"));
                assert!(f[0].recommended.starts_with("auth_failure_delay = 2 secs"));
            }
        }
    }

    #[test]
    fn postfix_auth_rate_limit_warns_only_where_auth_is_offered_without_one() {
        // This machine's defaults: SASL off everywhere, so no AUTH to guess; the hard limit of 20 is above the
        // preset's most lenient mail jail (smtp, 10).
        let mut s = good();
        s.postfix = Some(Postfix { main: parse_key_values(POSTCONF_X), services: BTreeMap::new() });
        assert_eq!(ids(&run_check(&s)), ["postfix_hard_error_limit_high"]);
        // Debian's submission block turns SASL on for submission only: the main.cf rate (0) applies there.
        s.postfix.as_mut().unwrap().services = parse_service_overrides(POSTCONF_P);
        let f = run_check(&s);
        let r = super::super::tests::find(&f, "postfix_no_auth_rate_limit");
        assert_eq!(r.severity, Severity::Warning);
        // smtps has its own limit of 5: only submission is named.
        assert_eq!(r.current, "0 (no limit) where AUTH is offered: submission/inet");
        assert_eq!(r.recommended, "-o smtpd_client_auth_rate_limit=10 on submission/inet in master.cf");
        assert!(r.why.contains("10 AUTH commands per 1m (anvil_rate_time_unit)"), "{}", r.why);
        assert!(r.why.contains("(127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128)"), "{}", r.why);
        // SASL on in main.cf: postconf -e.
        let mut main = parse_key_values(POSTCONF_X);
        main.insert("smtpd_sasl_auth_enable".into(), "yes".into());
        s.postfix = Some(Postfix { main: main.clone(), services: BTreeMap::new() });
        let f = run_check(&s);
        let r = super::super::tests::find(&f, "postfix_no_auth_rate_limit");
        assert_eq!(r.recommended, "smtpd_client_auth_rate_limit = 10 (postconf -e)");
        assert!(r.snippet.as_deref().unwrap().starts_with("postconf -e 'smtpd_client_auth_rate_limit = 10'\n"));
        // With a limit: no finding.
        main.insert("smtpd_client_auth_rate_limit".into(), "10".into());
        s.postfix = Some(Postfix { main, services: BTreeMap::new() });
        assert!(!ids(&run_check(&s)).contains(&"postfix_no_auth_rate_limit"));
    }

    #[test]
    fn postfix_hard_error_limit_is_held_to_the_most_lenient_mail_jail() {
        let mut s = good();
        let set = |s: &mut ServerSettings, v: &str| {
            s.postfix.as_mut().unwrap().main.insert("smtpd_hard_error_limit".into(), v.into());
        };
        set(&mut s, "20");
        let f = run_check(&s);
        assert_eq!(ids(&f), ["postfix_hard_error_limit_high"]);
        assert_eq!(f[0].current, "smtpd_hard_error_limit = 20");
        assert_eq!(f[0].recommended, "smtpd_hard_error_limit = 10 (postconf -e)");
        assert!(f[0].why.contains("(10, smtp maxretry)"), "{}", f[0].why);
        set(&mut s, "10");
        assert!(run_check(&s).is_empty());
        // A macro that did not expand is not a number: skipped, not guessed.
        set(&mut s, "${stress?{1}:{20}}");
        assert!(run_check(&s).is_empty());
        // A stricter config lowers the allowance.
        let c = Config::from_toml("[jail]\nmaxretry = 3\n[services.smtp]\nports = [25]\n", "t").unwrap();
        let mut out = Vec::new();
        set(&mut s, "5");
        check(&s, &c, &mut out);
        assert_eq!(ids(&out), ["postfix_hard_error_limit_high"]);
        assert_eq!(out[0].recommended, "smtpd_hard_error_limit = 3 (postconf -e)");
    }

    #[test]
    fn sshd_defaults_warn_above_the_jail_and_quiet_logging_is_critical() {
        let mut s = good();
        s.sshd = Some(only(parse_sshd_t(SSHD_T), &SSHD_KEYS));
        let f = run_check(&s);
        assert_eq!(ids(&f), ["sshd_max_auth_tries_high"]);
        assert_eq!(
            (f[0].current.as_str(), f[0].recommended.as_str()),
            ("MaxAuthTries 6", "MaxAuthTries 3 in /etc/ssh/sshd_config")
        );
        assert!(f[0].why.contains("bans a source after 5 (ssh maxretry)"), "{}", f[0].why);
        assert!(f[0].snippet.as_deref().unwrap().contains("\nMaxAuthTries 3\n"));
        // At or below the jail's count: nothing.
        s.sshd.as_mut().unwrap().insert("maxauthtries".into(), "5".into());
        assert!(run_check(&s).is_empty());
        // Keys only: nothing to guess, no finding whatever MaxAuthTries is.
        let t = s.sshd.as_mut().unwrap();
        t.insert("maxauthtries".into(), "6".into());
        t.insert("passwordauthentication".into(), "no".into());
        assert!(run_check(&s).is_empty());
        // ... but keyboard-interactive (PAM passwords) is a password prompt too.
        s.sshd.as_mut().unwrap().insert("kbdinteractiveauthentication".into(), "yes".into());
        assert_eq!(ids(&run_check(&s)), ["sshd_max_auth_tries_high"]);
        // Log levels: QUIET, FATAL and ERROR hide failures (critical); INFO, VERBOSE and DEBUG do not.
        for (level, hides) in
            [("QUIET", true), ("FATAL", true), ("ERROR", true), ("INFO", false), ("VERBOSE", false), ("DEBUG3", false)]
        {
            let mut s = good();
            s.sshd.as_mut().unwrap().insert("loglevel".into(), level.into());
            let f = run_check(&s);
            assert_eq!(ids(&f) == ["sshd_loglevel_hides_failures"], hides, "{level}: {:?}", ids(&f));
            if hides {
                assert_eq!(f[0].severity, Severity::Critical);
                assert_eq!(f[0].recommended, "LogLevel VERBOSE in /etc/ssh/sshd_config");
            }
        }
    }

    #[test]
    fn missing_commands_mean_absent_servers_and_failing_ones_a_note() {
        let mut notes = Vec::new();
        let s = ServerSettings::read_with(&|_| None, &mut notes);
        assert_eq!(s, ServerSettings::default());
        assert!(notes.is_empty(), "{notes:?}");
        // A command that exists but fails: unknown, and said so once per server.
        let fail = PathBuf::from("/bin/false");
        let s = ServerSettings::read_with(&|_| Some(fail.clone()), &mut notes);
        assert_eq!(s, ServerSettings::default());
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].starts_with("Dovecot's settings unknown: `/bin/false auth_verbose"), "{notes:?}");
        assert!(notes[1].starts_with("Postfix's settings unknown: `/bin/false -x"), "{notes:?}");
        assert!(notes[2].starts_with("sshd's settings unknown (sshd -T needs root"), "{notes:?}");
        // A command that succeeds with nothing to say: present, with no values (rules then skip).
        let mut notes = Vec::new();
        let ok = PathBuf::from("/bin/true");
        let s = ServerSettings::read_with(&|_| Some(ok.clone()), &mut notes);
        assert_eq!(s.dovecot, Some(BTreeMap::new()));
        assert_eq!(s.postfix, Some(Postfix::default()));
        assert!(notes.is_empty(), "{notes:?}");
        assert!(run_check(&s).is_empty());
    }

    /// The live machine's Postfix and Dovecot (installed here and in CI): what the reader parsed equals what
    /// `postconf -hx KEY` and `doveconf -h KEY` print for each key. Skipped when they are not installed, except
    /// under CI=true, where that is a failure.
    #[test]
    fn the_live_servers_read_as_their_own_commands_print_them() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let (Some(postconf), Some(doveconf)) = (find_program("postconf"), find_program("doveconf")) else {
            assert!(
                !ci,
                "CI=true: postconf and doveconf must be installed (.ci/run installs postfix and dovecot-core)"
            );
            eprintln!("skipped: postconf or doveconf not installed (apt-get install postfix dovecot-core)");
            return;
        };
        let mut notes = Vec::new();
        let s = ServerSettings::read_live(&mut notes);
        let dovecot = s.dovecot.as_ref().unwrap_or_else(|| panic!("Dovecot not read: {notes:?}"));
        let postfix = s.postfix.as_ref().unwrap_or_else(|| panic!("Postfix not read: {notes:?}"));
        let h = |program: &Path, args: &[&str]| {
            let out = Command::new(program).args(args).env("LC_ALL", "C").output().unwrap();
            assert!(out.status.success(), "{} {args:?}: {out:?}", program.display());
            String::from_utf8(out.stdout).unwrap().trim_end_matches('\n').to_string()
        };
        for key in DOVECOT_KEYS {
            assert_eq!(dovecot.get(key).map(String::as_str), Some(h(&doveconf, &["-h", key]).as_str()), "{key}");
        }
        for key in POSTFIX_KEYS {
            assert_eq!(postfix.main.get(key).map(String::as_str), Some(h(&postconf, &["-hx", key]).as_str()), "{key}");
        }
        // Expanded and parsed: Postfix's defaults here are numbers the rules can use.
        assert!(postfix.main["smtpd_hard_error_limit"].parse::<u32>().is_ok(), "{postfix:?}");
        assert!(duration(&dovecot["auth_failure_delay"]).is_some(), "{dovecot:?}");
    }
}
