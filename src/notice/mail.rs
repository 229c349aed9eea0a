//! The mail as `sendmail -t` takes it: headers no notice text can bend (line breaks flattened, non-ASCII
//! subjects RFC 2047-encoded), lines cut at RFC 5322's limit.

use super::*;

/// Formats the message for `sendmail -t`: headers, a blank line, the body; LF line endings (sendmail converts).
///
/// Nothing that reaches a header can carry a line break: the subject and the addresses are flattened here
/// whatever validation did or did not happen before.
pub fn format_mail(cfg: &NotifyConfig, n: &Notice) -> String {
    let to: Vec<String> = cfg.mail_to.iter().map(|a| header_address(a)).collect();
    let mut m = String::new();
    m.push_str(&format!("From: {}\n", header_address(&cfg.mail_from)));
    m.push_str(&format!("To: {}\n", to.join(", ")));
    m.push_str(&format!("Subject: {}\n", encode_subject(&n.subject)));
    m.push_str(&format!("Date: {}\n", n.time.to_rfc2822()));
    m.push_str("MIME-Version: 1.0\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\n");
    m.push_str("Content-Transfer-Encoding: 8bit\n");
    // RFC 3834: vacation responders and the like must not answer it.
    m.push_str("Auto-Submitted: auto-generated\n");
    m.push_str(&format!("X-Floodgate-Kind: {}\n", n.kind.as_str()));
    m.push('\n');
    let mut body = n.body.replace("\r\n", "\n").replace('\r', "\n");
    if !n.figures.is_null() {
        if !body.is_empty() && !body.ends_with('\n') {
            body.push('\n');
        }
        let figures = serde_json::to_string_pretty(&n.figures).unwrap_or_else(|_| n.figures.to_string());
        body.push_str(&format!("\nFigures:\n{figures}\n"));
    }
    for line in body.lines() {
        push_wrapped(&mut m, line);
    }
    m
}

/// Addresses with everything that could end or bend a header line taken out.
fn header_address(a: &str) -> String {
    a.chars().filter(|c| !c.is_control() && !c.is_whitespace() && *c != ',').collect()
}

/// The subject on one line: control characters (CR, LF, tab, NUL...) and Unicode line separators become
/// spaces, runs of spaces one; long subjects are cut; non-ASCII is RFC 2047-encoded.
fn encode_subject(subject: &str) -> String {
    let flat: String =
        subject.chars().map(|c| if c.is_control() || c == '\u{2028}' || c == '\u{2029}' { ' ' } else { c }).collect();
    let mut words = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() > MAX_SUBJECT_CHARS {
        // An ASCII mark: a cut ASCII subject stays readable to filters rather than turning into encoded words.
        words = words.chars().take(MAX_SUBJECT_CHARS - 3).collect::<String>() + "...";
    }
    if words.is_ascii() {
        return words;
    }
    // Encoded words of at most 39 bytes of text (52 of base64, 64 with the markers), cut between characters and
    // folded onto continuation lines: even after `Subject: ` a line stays under RFC 2047's 76 characters.
    let mut encoded = Vec::new();
    let mut chunk = String::new();
    for c in words.chars() {
        if chunk.len() + c.len_utf8() > 39 {
            encoded.push(format!("=?utf-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        encoded.push(format!("=?utf-8?B?{}?=", base64(chunk.as_bytes())));
    }
    encoded.join("\n ")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Appends `line` and a newline, split into pieces of at most 998 bytes (between characters): a longer line
/// would be refused or broken arbitrarily by the MTA.
fn push_wrapped(out: &mut String, mut line: &str) {
    while line.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
        line = &line[cut..];
    }
    out.push_str(line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use NoticeKind::*;

    #[test]
    fn format_mail_has_the_headers_and_the_body() {
        let c = NotifyConfig { mail_to: vec!["root".into(), "admin@example.org".into()], ..cfg() };
        let mail = format_mail(&c, &notice(DdosDetected, t0(), 5000));
        assert_eq!(header(&mail, "From"), Some("floodgate@mx"));
        assert_eq!(header(&mail, "To"), Some("root, admin@example.org"));
        assert_eq!(header(&mail, "Subject"), Some("DdosDetected on mx"));
        assert_eq!(header(&mail, "Date"), Some("Sat, 21 Nov 2026 09:00:00 +0000"));
        assert_eq!(header(&mail, "Content-Type"), Some("text/plain; charset=utf-8"));
        assert_eq!(header(&mail, "Auto-Submitted"), Some("auto-generated"));
        assert_eq!(header(&mail, "X-Floodgate-Kind"), Some("DdosDetected"));
        let (_, body) = mail.split_once("\n\n").unwrap();
        assert!(body.starts_with("Port 25 is flooded.\n\nFigures:\n{\n  \"pps\": 5000\n}\n"), "{body}");
        assert!(!mail.contains('\r'));
    }

    #[test]
    fn format_mail_flattens_injected_line_breaks() {
        let c = NotifyConfig { mail_to: vec!["admin@example.org\r\nBcc: victim@example.net".into()], ..cfg() };
        let mut n = notice(DosDetected, t0(), 1);
        n.subject = "Attack from user\r\nBcc: victim@example.net\n\nfake body\u{2028}x".into();
        n.body = "line one\r\n.\r\nline three".into();
        let mail = format_mail(&c, &n);
        let (head, body) = mail.split_once("\n\n").unwrap();
        assert!(!head.lines().any(|l| l.starts_with("Bcc")), "{head}");
        assert_eq!(header(&mail, "Subject"), Some("Attack from user Bcc: victim@example.net fake body x"));
        assert_eq!(header(&mail, "To"), Some("admin@example.orgBcc:victim@example.net"));
        assert_eq!(head.lines().count(), 9, "{head}");
        assert!(body.starts_with("line one\n.\nline three\n"), "{body}");
    }

    #[test]
    fn format_mail_encodes_a_non_ascii_subject_and_wraps_long_lines() {
        assert_eq!([base64(b"Man"), base64(b"Ma"), base64(b"M"), base64(b"")], ["TWFu", "TWE=", "TQ==", ""]);
        let mut n = notice(DosDetected, t0(), 1);
        n.subject = "Überlast auf mx.example.de — ".repeat(3);
        n.body = "é".repeat(1000);
        let mail = format_mail(&cfg(), &n);
        let (head, body) = mail.split_once("\n\n").unwrap();
        assert!(head.is_ascii(), "{head}");
        let subject: Vec<&str> = head.lines().skip_while(|l| !l.starts_with("Subject:")).take(3).collect();
        assert!(subject[0].starts_with("Subject: =?utf-8?B?w5xiZXJsYXN0"), "{subject:?}");
        assert!(subject[1].starts_with(" =?utf-8?B?"), "folded: {subject:?}");
        assert!(head.lines().all(|l| l.len() <= 78), "{head}");
        assert!(body.lines().all(|l| l.len() <= MAX_LINE_BYTES));
        assert_eq!(body.lines().take(3).map(|l| l.chars().count()).sum::<usize>(), 1000);
    }
}
