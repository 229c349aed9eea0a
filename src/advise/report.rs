//! The advisor's text output: findings grouped by severity, each as `[id] subject: current -> recommended`
//! followed by its reason (wrapped) and any snippet, then the notes on what could not be read.

use super::sysctl_conf::wrap;
use super::{Finding, Severity};

const WIDTH: usize = 100;
const INDENT: &str = "    ";

/// Renders the findings and notes for a terminal. `sysctl_conf` names the drop-in if one was written.
pub fn render(findings: &[Finding], notes: &[String], sysctl_conf: Option<&str>) -> String {
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (critical, warning, info) = (count(Severity::Critical), count(Severity::Warning), count(Severity::Info));
    let mut out = format!(
        "floodgate advise: {critical} critical, {warning} warning{}, {info} informational \
         (this network namespace, read only)\n",
        if warning == 1 { "" } else { "s" }
    );
    for severity in [Severity::Critical, Severity::Warning, Severity::Info] {
        let group: Vec<&Finding> = findings.iter().filter(|f| f.severity == severity).collect();
        if group.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{}\n", severity.as_str().to_uppercase()));
        for f in group {
            let head = format!("  [{}] {}: {} -> {}", f.id, f.subject, f.current, f.recommended);
            if head.chars().count() <= WIDTH {
                out.push_str(&head);
                out.push('\n');
            } else {
                // Too long for one line: the subject, then what it is and what it should be, each wrapped.
                out.push_str(&format!("  [{}] {}\n", f.id, f.subject));
                for (label, text) in [("now: ", &f.current), ("recommended: ", &f.recommended)] {
                    let hang = " ".repeat(label.len());
                    for (i, line) in wrap(text, WIDTH - INDENT.len() - label.len()).into_iter().enumerate() {
                        out.push_str(INDENT);
                        out.push_str(if i == 0 { label } else { &hang });
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
            }
            for line in wrap(&f.why, WIDTH - INDENT.len()) {
                out.push_str(INDENT);
                out.push_str(&line);
                out.push('\n');
            }
            if let Some(snippet) = &f.snippet {
                for line in snippet.lines() {
                    out.push_str(INDENT);
                    out.push('|');
                    if !line.is_empty() {
                        out.push(' ');
                        out.push_str(line);
                    }
                    out.push('\n');
                }
            }
        }
    }
    for note in notes {
        out.push_str(&format!("\nnote: {note}\n"));
    }
    let changes = findings.iter().filter(|f| f.severity > Severity::Info && f.sysctl.is_some()).count();
    match sysctl_conf {
        Some(path) => out.push_str(&format!("\nThe recommended sysctl changes are in {path}, for review.\n")),
        None if changes > 0 => {
            out.push_str("\n`floodgate advise --sysctl-conf FILE` writes the recommended sysctl changes for review.\n")
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{config, empty_history, good};
    use super::*;

    #[test]
    fn groups_by_severity_with_reasons_wrapped() {
        let mut m = good();
        m.syncookies = Some(0);
        m.abort_on_overflow = Some(1);
        let h = empty_history();
        let f = super::super::advise(&m, Ok(&h), &config());
        let text = render(&f, &["listener backlogs unknown".into()], None);
        assert!(text.starts_with("floodgate advise: 1 critical, 1 warning, "), "{text}");
        let (c, w, i) =
            (text.find("\nCRITICAL\n").unwrap(), text.find("\nWARNING\n").unwrap(), text.find("\nINFO\n").unwrap());
        assert!(c < w && w < i);
        assert!(text.contains("  [syncookies_off] net.ipv4.tcp_syncookies: 0 (off) -> 1\n"), "{text}");
        assert!(text.contains("  [abort_on_overflow] net.ipv4.tcp_abort_on_overflow: 1 -> 0\n"), "{text}");
        assert!(text.contains("\nnote: listener backlogs unknown\n"));
        assert!(text.contains("--sysctl-conf FILE"));
        assert!(text.lines().filter(|l| !l.contains('|')).all(|l| l.chars().count() <= WIDTH), "{text}");
        // The memory finding's figures do not fit on its first line: they follow it, labelled.
        assert!(text.contains("  [memory_for_floods] MemAvailable\n    now: "), "{text}");
        assert!(text.contains("\n    recommended: keep cookies on"), "{text}");
    }

    #[test]
    fn good_settings_show_no_warning_section() {
        let h = empty_history();
        let text = render(&super::super::advise(&good(), Ok(&h), &config()), &[], Some("/tmp/x.conf"));
        assert!(text.starts_with("floodgate advise: 0 critical, 0 warnings, "), "{text}");
        assert!(!text.contains("\nWARNING\n") && !text.contains("\nCRITICAL\n"));
        assert!(text.contains("in /tmp/x.conf, for review"));
    }
}
