//! Rules files (rules/*.toml): loading, validation, and the built-in set compiled into the binary.
//!
//! One file per program family. Its stem is the family name, and a rule's full id is `family.id`. A file in a
//! user's rules directory with the same name as a built-in file replaces it; other files add families.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::event::Kind;

/// The rules shipped with floodgate, embedded so that the binary works with no files installed.
pub const BUILTIN: &[(&str, &str)] = &[
    ("kernel.toml", include_str!("../rules/kernel.toml")),
    ("conntrack.toml", include_str!("../rules/conntrack.toml")),
    ("postfix.toml", include_str!("../rules/postfix.toml")),
    ("dovecot.toml", include_str!("../rules/dovecot.toml")),
    ("exim.toml", include_str!("../rules/exim.toml")),
    ("sendmail.toml", include_str!("../rules/sendmail.toml")),
    ("courier.toml", include_str!("../rules/courier.toml")),
    ("opensmtpd.toml", include_str!("../rules/opensmtpd.toml")),
    ("sshd.toml", include_str!("../rules/sshd.toml")),
    ("cyrus.toml", include_str!("../rules/cyrus.toml")),
    ("qmail.toml", include_str!("../rules/qmail.toml")),
    ("uwimap.toml", include_str!("../rules/uwimap.toml")),
    ("perdition.toml", include_str!("../rules/perdition.toml")),
    ("solidpop3d.toml", include_str!("../rules/solidpop3d.toml")),
];

/// Named captures a rule's regex may use; any other name is refused, so a typo cannot silently drop a field.
pub const CAPTURES: &[&str] = &["addr", "port", "user", "service", "laddr", "action", "assured", "count", "session"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub family: FamilySpec,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilySpec {
    #[serde(default)]
    pub description: String,
    /// Service for this family's events when neither the rule nor the line names one.
    pub service: Option<String>,
    /// Service by syslog program tag, first matching prefix wins (`postfix/submission/` -> submission).
    #[serde(default)]
    pub program_services: Vec<ProgramService>,
    /// The server forks one process per connection (sshd, Postfix smtpd): the syslog pid ties a connection's
    /// lines together in the attempt ledger when a rule has no `session` capture.
    #[serde(default)]
    pub attempts_per_pid: bool,
}

/// How a failure line relates to the other lines about the same session, so that every attempt counts once and
/// as soon as it is logged (see `parser::Ledger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attempt {
    /// The line is `count` new attempts, logged as they happen.
    Each,
    /// The line says the session has made `count` attempts so far (at least one when it has no count).
    Total,
    /// As `Total`, and the session is over.
    Final,
}

/// How sure a rule is that its line is an attack. `Aggressive` rules are judgement calls (scanners that never
/// try to log in, 4xx spam-bot signatures): they count only for services set to `level = "aggressive"`, and are
/// recorded as signals elsewhere. fail2ban's normal and aggressive modes draw the same line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    Normal,
    Aggressive,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Aggressive => "aggressive",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramService {
    pub program: String,
    pub service: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub kind: String,
    pub regex: String,
    /// Strings that every matching line contains. The longest feeds the literal prefilter; rules without any
    /// run on every line, which is slow.
    #[serde(default)]
    pub literals: Vec<String>,
    /// Overrides the kind's default (failures count against the source, signals do not).
    pub failure: Option<bool>,
    pub service: Option<String>,
    /// Takes part in the attempt ledger. On a signal rule (`failure = false`) it excuses: the attempt is entered
    /// as seen and counts nothing, so a later summary of the same session does not count it either (a SASL
    /// failure caused by the server's auth backend, followed by Postfix's `auth=0/1` summary).
    pub attempt: Option<Attempt>,
    #[serde(default)]
    pub level: Level,
}

/// A rules file that has been read and checked, ready to compile.
#[derive(Debug)]
pub struct Family {
    pub name: String,
    pub origin: String,
    pub spec: FamilySpec,
    pub rules: Vec<CheckedRule>,
}

#[derive(Debug)]
pub struct CheckedRule {
    pub full_id: String,
    pub kind: Kind,
    pub failure: bool,
    pub regex: regex::bytes::Regex,
    pub literals: Vec<String>,
    pub service: Option<String>,
    pub attempt: Option<Attempt>,
    pub level: Level,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {reason}", .rule.as_ref().map(|r| format!(": rule `{r}`")).unwrap_or_default())]
pub struct RulesError {
    pub file: String,
    pub rule: Option<String>,
    pub reason: String,
}

impl RulesError {
    fn new(file: &str, rule: Option<&str>, reason: impl Into<String>) -> RulesError {
        RulesError { file: file.to_string(), rule: rule.map(str::to_string), reason: reason.into() }
    }
}

/// Reads the built-in rules, then every `*.toml` in `dirs` (in order, files sorted by name). A later file with
/// the same name replaces an earlier one.
pub fn load(dirs: &[PathBuf], builtin: bool) -> Result<Vec<Family>, RulesError> {
    let mut texts: BTreeMap<String, (String, String)> = BTreeMap::new();
    if builtin {
        for (name, text) in BUILTIN {
            texts.insert(name.to_string(), (format!("builtin rules/{name}"), text.to_string()));
        }
    }
    for dir in dirs {
        for path in toml_files(dir)? {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| RulesError::new(&shown, None, format!("cannot read: {e}")))?;
            texts.insert(name, (shown, text));
        }
    }
    // Families in file-name order; a line's candidate rules are tried in that order, so rules of different
    // families never compete for a line unless their literals overlap.
    // Compiling some 200 regexes is most of a command's start-up: the files are checked on every core.
    let texts: Vec<(String, (String, String))> = texts.into_iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4).min(texts.len().max(1));
    let mut checked: Vec<Option<Result<Family, RulesError>>> = (0..texts.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let texts = &texts;
                scope.spawn(move || {
                    (t..texts.len())
                        .step_by(threads)
                        .map(|i| (i, check_file(&texts[i].0, &texts[i].1 .0, &texts[i].1 .1)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, r) in h.join().expect("a rules-checking thread panicked") {
                checked[i] = Some(r);
            }
        }
    });
    let mut families = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for ((_, (origin, _)), family) in texts.iter().zip(checked) {
        let family = family.expect("every file was checked")?;
        for r in &family.rules {
            if let Some(other) = seen.insert(r.full_id.clone(), origin.clone()) {
                return Err(RulesError::new(origin, Some(&r.full_id), format!("id already defined in {other}")));
            }
        }
        families.push(family);
    }
    Ok(families)
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, RulesError> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| RulesError::new(&shown, None, format!("cannot read rules directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| RulesError::new(&shown, None, e.to_string()))?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses and validates one rules file. `name` is its file name (`postfix.toml`), `origin` how to name it in
/// errors (its path).
pub fn check_file(name: &str, origin: &str, text: &str) -> Result<Family, RulesError> {
    let family_name = name.strip_suffix(".toml").unwrap_or(name).to_string();
    if !valid_id(&family_name) {
        return Err(RulesError::new(
            origin,
            None,
            "file name must be lower-case letters, digits, `_` or `-` plus .toml",
        ));
    }
    let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::new(origin, None, toml_reason(&e, text)))?;
    if file.rules.is_empty() {
        return Err(RulesError::new(origin, None, "no [[rule]] entries"));
    }
    let mut rules = Vec::with_capacity(file.rules.len());
    let mut ids = std::collections::HashSet::new();
    for spec in file.rules {
        let full_id = format!("{family_name}.{}", spec.id);
        let err = |reason: String| RulesError::new(origin, Some(&full_id), reason);
        if !valid_id(&spec.id) {
            return Err(err("id must be lower-case letters, digits, `_` or `-`".into()));
        }
        if !ids.insert(spec.id.clone()) {
            return Err(err("duplicate id in this file".into()));
        }
        let kind: Kind = spec.kind.parse().map_err(&err)?;
        let regex = compile(&spec.regex).map_err(|e| err(format!("bad regex: {e}")))?;
        let names: Vec<&str> = regex.capture_names().flatten().collect();
        if let Some(bad) = names.iter().find(|n| !CAPTURES.contains(n)) {
            return Err(err(format!("unknown capture name `{bad}` (known: {})", CAPTURES.join(", "))));
        }
        let failure = spec.failure.unwrap_or(kind.is_failure_by_default());
        if failure && !names.contains(&"addr") && !names.contains(&"session") {
            return Err(err(
                "a failure rule needs an `addr` (or `session`) capture: whom would it count against?".into()
            ));
        }
        if kind == Kind::SynFlood && !names.contains(&"port") {
            return Err(err("a syn_flood rule needs a `port` capture (the listener's port)".into()));
        }
        if let Some(empty) = spec.literals.iter().find(|l| l.is_empty()) {
            return Err(err(format!("empty literal {empty:?}")));
        }
        rules.push(CheckedRule {
            full_id,
            kind,
            failure,
            regex,
            literals: spec.literals,
            service: spec.service,
            attempt: spec.attempt,
            level: spec.level,
        });
    }
    Ok(Family { name: family_name, origin: origin.to_string(), spec: file.family, rules })
}

/// A rule's regex, matched against the line's bytes with ASCII classes (`\w`, `\d`, `\s` and `.` match single
/// bytes). Log lines are ASCII where it matters, and the Unicode tables of `\w` and `\d` would cost about 25 MB
/// of automata over the built-in rules against 3 MB this way (measured with a counting allocator).
pub fn compile(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(pattern).unicode(false).build()
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// A TOML error as "line N: message", the form every floodgate input error takes.
pub fn toml_reason(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        check_file("t.toml", "t.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn builtin_rules_load() {
        let fams = load(&[], true).unwrap();
        assert_eq!(fams.len(), BUILTIN.len());
        assert!(fams.iter().all(|f| !f.rules.is_empty()));
    }

    #[test]
    fn bad_files_are_refused_with_file_rule_and_reason() {
        let e = err("[[rule]]\nid = \"a\"\nkind = \"auth_failure\"\nregex = \"(\"\n");
        assert!(e.starts_with("t.toml: rule `t.a`: bad regex"), "{e}");
        let e = err("[[rule]]\nid = \"a\"\nkind = \"nope\"\nregex = \"x\"\n");
        assert!(e.contains("rule `t.a`") && e.contains("unknown event kind `nope`"), "{e}");
        let e = err("[[rule]]\nid = \"a\"\nkind = \"auth_failure\"\nregex = \"x\"\n");
        assert!(e.contains("needs an `addr`"), "{e}");
        let e = err("[[rule]]\nid = \"a\"\nkind = \"connect\"\nregex = \"(?P<adr>x)\"\n");
        assert!(e.contains("unknown capture name `adr`"), "{e}");
        let e = err("[[rule]]\nid = \"a\"\nkind = \"connect\"\nregex = \"x\"\nbogus = 1\n");
        assert!(e.starts_with("t.toml: line 5: unknown field `bogus`"), "{e}");
        let e = err("[[rule]]\nid = \"a\"\nkind = \"connect\"\nregex = \"x\"\n[[rule]]\nid = \"a\"\nkind = \"connect\"\nregex = \"y\"\n");
        assert!(e.contains("duplicate id"), "{e}");
        let e = err("[[rule]]\nid = \"a\"\nkind = \"syn_flood\"\nregex = \"x\"\n");
        assert!(e.contains("needs a `port` capture"), "{e}");
    }

    #[test]
    fn a_user_file_replaces_the_builtin_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sshd.toml"),
            "[[rule]]\nid = \"mine\"\nkind = \"connect\"\nregex = \"hello (?P<addr>\\\\S+)\"\n",
        )
        .unwrap();
        let fams = load(&[dir.path().to_path_buf()], true).unwrap();
        let sshd = fams.iter().find(|f| f.name == "sshd").unwrap();
        assert_eq!(sshd.rules.len(), 1);
        assert_eq!(sshd.rules[0].full_id, "sshd.mine");
        assert!(sshd.origin.ends_with("sshd.toml") && !sshd.origin.starts_with("builtin"));
    }
}
