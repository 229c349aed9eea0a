//! The mail as `sendmail -t` takes it, built by `mail-builder`: headers no notice text can bend (line breaks
//! flattened, non-ASCII subjects RFC 2047-encoded, long lines transfer-encoded), and for a convergence the
//! attack's report as an HTML attachment.

use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::MessageBuilder;

use super::report::Report;
use super::*;

/// Formats the message for `sendmail -t`: headers, a blank line, the body (a text part, and the report as an
/// attachment when there is one); LF line endings (sendmail converts).
///
/// `report`: what a convergence carries (see `ReportSource::for_notice`): the report, attached and announced in
/// the text, or why there is none, said in the text; None for other notices.
///
/// Nothing that reaches a header can carry a line break: the subject and the addresses are flattened here
/// whatever validation did or did not happen before, and the library encodes what is left.
pub fn format_mail(cfg: &NotifyConfig, n: &Notice, report: Option<&Result<Report, String>>) -> String {
    let to: Vec<Address> = cfg.mail_to.iter().map(|a| Address::new_address(None::<&str>, header_address(a))).collect();
    let mut body = n.body.replace("\r\n", "\n").replace('\r', "\n");
    if !n.figures.is_null() {
        if !body.is_empty() && !body.ends_with('\n') {
            body.push('\n');
        }
        let figures = serde_json::to_string_pretty(&n.figures).unwrap_or_else(|_| n.figures.to_string());
        body.push_str(&format!("\nFigures:\n{figures}\n"));
    }
    match report {
        Some(Ok(r)) => body.push_str(&format!("\nThe report of this attack is attached: {}\n", r.file_name)),
        Some(Err(why)) => body.push_str(&format!("\nNo report attached: {why}\n")),
        None => {}
    }
    let mut message = MessageBuilder::new()
        .from(Address::new_address(None::<&str>, header_address(&cfg.mail_from)))
        .to(Address::new_list(to))
        .subject(flat_subject(&n.subject))
        .date(n.time.timestamp())
        // RFC 3834: vacation responders and the like must not answer it.
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .header("X-Floodgate-Kind", Raw::new(n.kind.as_str()))
        .text_body(body);
    if let Some(Ok(r)) = report {
        let html = ContentType::new("text/html").attribute("charset", "utf-8");
        message = message.attachment(html, r.file_name.as_str(), r.html.as_str());
    }
    let mut out = Vec::new();
    message.serialize(&mut out);
    // The builder writes CRLF, as SMTP does; sendmail wants the local convention and converts itself. Every CR
    // it wrote ends a line: the text had its own CRs turned into LFs above, and the rest is transfer-encoded.
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

/// Addresses with everything that could end or bend a header line, or close the `<...>` they are written in,
/// taken out.
fn header_address(a: &str) -> String {
    a.chars().filter(|c| !c.is_control() && !c.is_whitespace() && !matches!(c, ',' | '<' | '>')).collect()
}

/// The subject on one line: control characters (CR, LF, tab, NUL...) and Unicode line separators become
/// spaces, runs of spaces one; long subjects are cut. The library encodes non-ASCII (RFC 2047) and folds.
fn flat_subject(subject: &str) -> String {
    let flat: String =
        subject.chars().map(|c| if c.is_control() || c == '\u{2028}' || c == '\u{2029}' { ' ' } else { c }).collect();
    let words = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() > MAX_SUBJECT_CHARS {
        // An ASCII mark: a cut ASCII subject stays ASCII (the library Q-encodes one past 77 characters as
        // us-ascii, which every client and sieve filter decodes).
        return words.chars().take(MAX_SUBJECT_CHARS - 3).collect::<String>() + "...";
    }
    words
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use NoticeKind::*;

    /// The mail read back as a mail client reads it.
    fn parsed(mail: &str) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default().parse(mail.as_bytes()).expect("a mail the parser reads")
    }

    /// The names of the header lines (continuation lines belong to the one before).
    fn header_names(head: &str) -> Vec<&str> {
        head.lines().filter(|l| !l.starts_with([' ', '\t'])).map(|l| l.split_once(':').map_or(l, |(n, _)| n)).collect()
    }

    #[test]
    fn format_mail_has_the_headers_and_the_body() {
        let c = NotifyConfig { mail_to: vec!["root".into(), "admin@example.org".into()], ..cfg() };
        let mail = format_mail(&c, &notice(DdosDetected, t0(), 5000), None);
        assert_eq!(header(&mail, "From"), Some("<floodgate@mx>"));
        assert_eq!(header(&mail, "To"), Some("<root>, <admin@example.org>"));
        assert_eq!(header(&mail, "Subject"), Some("DdosDetected on mx"));
        assert_eq!(header(&mail, "Date"), Some("Sat, 21 Nov 2026 09:00:00 +0000"));
        assert_eq!(header(&mail, "MIME-Version"), Some("1.0"));
        assert_eq!(header(&mail, "Content-Type"), Some("text/plain; charset=\"utf-8\""));
        assert_eq!(header(&mail, "Auto-Submitted"), Some("auto-generated"));
        assert_eq!(header(&mail, "X-Floodgate-Kind"), Some("DdosDetected"));
        let (_, body) = mail.split_once("\n\n").unwrap();
        assert!(body.starts_with("Port 25 is flooded.\n\nFigures:\n{\n  \"pps\": 5000\n}\n"), "{body}");
        assert!(!body.contains("report"), "only a convergence speaks of a report: {body}");
        assert!(!mail.contains('\r'));
        let m = parsed(&mail);
        assert_eq!(m.body_text(0).as_deref(), Some("Port 25 is flooded.\n\nFigures:\n{\n  \"pps\": 5000\n}\n"));
        assert_eq!(m.attachment_count(), 0);
    }

    #[test]
    fn format_mail_flattens_injected_line_breaks() {
        let c = NotifyConfig { mail_to: vec!["admin@example.org\r\nBcc: victim@example.net".into()], ..cfg() };
        let mut n = notice(DosDetected, t0(), 1);
        n.subject = "Attack from user\r\nBcc: victim@example.net\n\nfake body\u{2028}x".into();
        n.body = "line one\r\n.\r\nline three".into();
        let mail = format_mail(&c, &n, None);
        let (head, body) = mail.split_once("\n\n").unwrap();
        assert!(!head.lines().any(|l| l.starts_with("Bcc")), "{head}");
        assert_eq!(header(&mail, "Subject"), Some("Attack from user Bcc: victim@example.net fake body x"));
        assert_eq!(header(&mail, "To"), Some("<admin@example.orgBcc:victim@example.net>"));
        // Exactly the headers floodgate writes (and the library's own), each once: nothing smuggled in.
        let mut names = header_names(head);
        names.sort();
        assert_eq!(
            names,
            [
                "Auto-Submitted",
                "Content-Transfer-Encoding",
                "Content-Type",
                "Date",
                "From",
                "MIME-Version",
                "Message-ID",
                "Subject",
                "To",
                "X-Floodgate-Kind"
            ],
            "{head}"
        );
        assert!(body.starts_with("line one\n.\nline three\n"), "{body}");
        let m = parsed(&mail);
        assert_eq!(m.subject(), Some("Attack from user Bcc: victim@example.net fake body x"));
        assert!(m.header("Bcc").is_none());
    }

    #[test]
    fn format_mail_encodes_a_non_ascii_subject_and_keeps_long_lines_whole() {
        let mut n = notice(DosDetected, t0(), 1);
        n.subject = "Überlast auf mx.example.de — ".repeat(3);
        n.body = "é".repeat(1000);
        let mail = format_mail(&cfg(), &n, None);
        let (head, _) = mail.split_once("\n\n").unwrap();
        assert!(head.is_ascii(), "{head}");
        let subject: Vec<&str> = head.lines().skip_while(|l| !l.starts_with("Subject:")).take(2).collect();
        assert!(subject[0].starts_with("Subject: =?utf-8?"), "RFC 2047: {subject:?}");
        assert!(subject[1].starts_with(" =?utf-8?"), "folded: {subject:?}");
        assert!(head.lines().all(|l| l.len() <= 78), "{head}");
        // The long line is transfer-encoded, not cut: the admin reads it whole.
        assert!(mail.lines().all(|l| l.len() <= MAX_LINE_BYTES), "{mail}");
        assert!(mail.is_ascii());
        let m = parsed(&mail);
        assert_eq!(
            m.subject(),
            Some("Überlast auf mx.example.de — Überlast auf mx.example.de — Überlast auf mx.example.de —")
        );
        let text = m.body_text(0).unwrap();
        assert_eq!(text.lines().next().unwrap(), "é".repeat(1000), "{text}");
    }

    #[test]
    fn format_mail_cuts_a_long_subject_with_an_ascii_mark() {
        let mut n = notice(DosDetected, t0(), 1);
        n.subject = "a ".repeat(MAX_SUBJECT_CHARS);
        let mail = format_mail(&cfg(), &n, None);
        let subject = parsed(&mail).subject().unwrap().to_string();
        assert_eq!(subject.chars().count(), MAX_SUBJECT_CHARS);
        assert!(subject.ends_with("..."), "{subject}");
    }
}
