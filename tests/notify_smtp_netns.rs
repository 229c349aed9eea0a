//! The notices' mail over SMTP (`notify.smtp`), into a real Postfix: the way out of the packaged unit's sandbox,
//! where `sendmail` cannot queue mail (Postfix's postdrop needs its setgid bit, which no_new_privs voids, and a
//! writable /var/spool/postfix, which ProtectSystem=strict makes read-only).
//!
//! Inside a network namespace, the mail lab's Postfix listens on 127.0.0.1:25 and delivers the admin's domain
//! into a Maildir. `floodgate notify --test` runs with the unit's privileges (no_new_privs and its capability set,
//! through `setpriv`) and sends its convergence notice over SMTP: it arrives, parsed back as a mail client would,
//! with the period's report attached. (The sendmail path under those privileges is not run here: the host's
//! postdrop would retry against the host's own spool until killed.)

use std::process::Command;

use floodgate_lab::maillab::{self, MailLab, NOTICES_DOMAIN};
use floodgate_lab::netns::{self, Netns};
use floodgate_lab::wait::within_every;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
/// The unit's capabilities (examples/floodgate.service: CapabilityBoundingSet, AmbientCapabilities).
const CAPS: &str = "-all,+net_admin,+syslog,+dac_read_search";

#[test]
fn a_convergence_notice_reaches_the_admin_over_smtp_with_its_report_where_sendmail_cannot() {
    let test = "a_convergence_notice_reaches_the_admin_over_smtp_with_its_report_where_sendmail_cannot";
    if !netns::available(test) || !maillab::available(test) {
        return;
    }
    let ns = Netns::new("smtp");
    let lab = MailLab::start(&ns);
    let dir = tempfile::Builder::new().prefix("floodgate-smtp-").tempdir().unwrap();
    let db = dir.path().join("floodgate.db");
    let admin = format!("admin@{NOTICES_DOMAIN}");
    // An empty store: the report says in words that the period holds nothing.
    drop(floodgate::store::Store::open(&db).unwrap());
    let config = dir.path().join("floodgate.toml");
    std::fs::write(
        &config,
        format!(
            "[notify]\nmail_to = [\"{admin}\"]\nmail_from = \"floodgate@mx.example.test\"\nsmtp = \"127.0.0.1:25\"\n"
        ),
    )
    .unwrap();
    // `notify --test` sends one convergence notice of port 587 over the last ten minutes, as the daemon would.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "setpriv", "--no-new-privs"])
        .args([&format!("--inh-caps={CAPS}"), &format!("--ambient-caps={CAPS}"), &format!("--bounding-set={CAPS}")])
        .args(["timeout", "60", BIN, "--config"])
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .args(["notify", "--test", "--port", "587"])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "over SMTP the notice is accepted: {said}\n{}", lab.log_tails());
    let mut mails = Vec::new();
    let arrived = within_every(std::time::Duration::from_secs(20), std::time::Duration::from_millis(100), || {
        mails = lab.notices();
        !mails.is_empty()
    });
    assert!(arrived, "no mail delivered to {admin}\n{}", lab.log_tails());
    assert_eq!(mails.len(), 1, "one notice, one mail");
    let m = mail_parser::MessageParser::default().parse(mails[0].as_bytes()).expect("a mail a client reads");
    assert!(m.subject().unwrap_or_default().contains("587"), "{:?}", m.subject());
    assert_eq!(m.to().and_then(|a| a.first()).and_then(|a| a.address()), Some(admin.as_str()));
    assert_eq!(m.attachment_count(), 1, "the report is attached");
    let page = m.attachment(0).and_then(|a| a.text_contents()).unwrap_or_default();
    // The report of that port (an empty store: its sections say so in words).
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.contains("floodgate report: ") && page.contains("port 587"),
        "an HTML report of port 587: {}",
        &page[..page.len().min(300)]
    );
    // Received by Postfix's smtpd from the loopback (the lab does no reverse lookups: `unknown`), not dropped
    // into its queue by some other path.
    let log = lab.postfix_log_text();
    assert!(
        log.lines().any(|l| l.contains("smtpd[") && l.contains("client=unknown[127.0.0.1]")),
        "{}",
        lab.log_tails()
    );
    assert!(log.contains(&format!("to=<{admin}>, relay=virtual")), "{}", lab.log_tails());
}
