//! Rules files (rules/*.toml): loading, validation (including the proof that a rule's `literals` are required by
//! its regex, so the prefilter never skips a line the rule would match), and the built-in set compiled into the
//! binary.
//!
//! One file per program family. Its stem is the family name, and a rule's full id is `family.id`. A file in a
//! user's rules directory with the same name as a built-in file replaces it; other files add families.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use regex_syntax::hir::{Class, Hir, HirKind, Literal};
use serde::Deserialize;

use crate::event::Kind;

/// The rules shipped with floodgate, embedded so that the binary works with no files installed.
pub const BUILTIN: &[(&str, &str)] = &[
    ("kernel.toml", include_str!("../../rules/kernel.toml")),
    ("conntrack.toml", include_str!("../../rules/conntrack.toml")),
    ("postfix.toml", include_str!("../../rules/postfix.toml")),
    ("dovecot.toml", include_str!("../../rules/dovecot.toml")),
    ("exim.toml", include_str!("../../rules/exim.toml")),
    ("sendmail.toml", include_str!("../../rules/sendmail.toml")),
    ("courier.toml", include_str!("../../rules/courier.toml")),
    ("opensmtpd.toml", include_str!("../../rules/opensmtpd.toml")),
    ("sshd.toml", include_str!("../../rules/sshd.toml")),
    ("cyrus.toml", include_str!("../../rules/cyrus.toml")),
    ("qmail.toml", include_str!("../../rules/qmail.toml")),
    ("uwimap.toml", include_str!("../../rules/uwimap.toml")),
    ("perdition.toml", include_str!("../../rules/perdition.toml")),
    ("solidpop3d.toml", include_str!("../../rules/solidpop3d.toml")),
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
/// as soon as it is logged (see `parse::Ledger`).
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
    /// run on every line, which is slow. Each must be required by the regex (checked at load, see `requires`).
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
        let hir = syntax(&spec.regex).map_err(|e| err(format!("bad regex: {e}")))?;
        if let Some(lit) = spec.literals.iter().find(|l| !requires(&hir, l.as_bytes())) {
            return Err(err(format!(
                "`literals` entry {lit:?} is not required by the regex: a line without it could match, and the \
                 prefilter would skip it"
            )));
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

/// The pattern as `compile` reads it (Unicode off; bytes, so `utf8` off as `regex::bytes` sets it): the tree the
/// literal check walks must be the one that runs.
fn syntax(pattern: &str) -> Result<Hir, String> {
    regex_syntax::ParserBuilder::new().unicode(false).utf8(false).build().parse(pattern).map_err(|e| e.to_string())
}

/// Whether every string `hir` matches contains `lit`. The prefilter skips a line that lacks any of a rule's
/// literals, so a literal the regex does not need would silently lose the lines that match without it.
///
/// The regex runs on the message after the header and the prefilter on the whole line, which holds the message:
/// what every match contains, every matching line contains.
///
/// Conservative: `true` is a proof, `false` may only mean "not proven". It follows every way a match can go (see
/// [`shapes`]): bytes spelled out in a row, through captures, zero-width assertions, optional parts, alternations
/// and classes of up to `SMALL_CLASS` bytes, so `: (?:Info: )?invalid` requires `: invalid` and
/// `(?:LOGOUT|TIMEOUT),` requires `OUT,`. It does not look inside wider classes, across the copies of a
/// repetition, or through more than `MAX_SHAPES` ways at once (those are merged into what they share). Case
/// matters, as it does to the prefilter: `(?i:quit)` does not require `quit`. A rule refused for a literal that is
/// required in a way this does not see can name a shorter one.
fn requires(hir: &Hir, lit: &[u8]) -> bool {
    shapes(hir, lit).iter().all(|s| s.contains)
}

/// One way a match can look, as far as the literal check needs: every match of a piece of regex fits one of
/// its shapes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    /// The match starts with these bytes.
    starts: Vec<u8>,
    /// The match ends with these bytes (they may overlap `starts`).
    ends: Vec<u8>,
    /// `starts` is the whole match (then `ends` equals it).
    exact: bool,
    /// The match contains the literal.
    contains: bool,
}

impl Shape {
    /// Any bytes at all (a wide class): nothing known.
    fn unknown() -> Shape {
        Shape { starts: Vec::new(), ends: Vec::new(), exact: false, contains: false }
    }

    fn exact(bytes: Vec<u8>, lit: &[u8]) -> Shape {
        let contains = has(&bytes, lit);
        Shape { starts: bytes.clone(), ends: bytes, exact: true, contains }
    }

    /// A match of `self` followed by a match of `next`.
    fn then(&self, next: &Shape, lit: &[u8]) -> Shape {
        if self.exact && next.exact {
            return Shape::exact([&self.starts[..], &next.starts[..]].concat(), lit);
        }
        let starts = if self.exact { [&self.starts[..], &next.starts[..]].concat() } else { self.starts.clone() };
        let ends = if next.exact { [&self.ends[..], &next.ends[..]].concat() } else { next.ends.clone() };
        // Where the two meet, the end of one and the start of the other are adjacent in the match.
        let joint = [&self.ends[..], &next.starts[..]].concat();
        let contains = self.contains || next.contains || has(&joint, lit) || has(&starts, lit) || has(&ends, lit);
        Shape { starts, ends, exact: false, contains }
    }
}

/// Past this many shapes a piece's are merged into one (what they all share), so that a regex with many optional
/// parts costs little to check. Merging only forgets, so the check stays sound.
const MAX_SHAPES: usize = 64;

/// Classes of at most this many bytes are followed byte by byte (`[.:]`, `[Qq]`); wider ones (`\d`, `\S`) say
/// nothing.
const SMALL_CLASS: usize = 8;

fn has(hay: &[u8], lit: &[u8]) -> bool {
    memchr::memmem::find(hay, lit).is_some()
}

/// The shapes every match of `hir` fits. No shapes at all means it never matches (an empty class).
fn shapes(hir: &Hir, lit: &[u8]) -> Vec<Shape> {
    match hir.kind() {
        // Zero-width: an assertion consumes nothing, so what is on either side stays adjacent.
        HirKind::Empty | HirKind::Look(_) => vec![Shape::exact(Vec::new(), lit)],
        HirKind::Literal(Literal(bytes)) => vec![Shape::exact(bytes.to_vec(), lit)],
        HirKind::Class(class) => class_shapes(class, lit),
        HirKind::Capture(capture) => shapes(&capture.sub, lit),
        HirKind::Concat(parts) => parts.iter().fold(vec![Shape::exact(Vec::new(), lit)], |before, part| {
            let after = shapes(part, lit);
            bounded(before.iter().flat_map(|b| after.iter().map(|a| b.then(a, lit))).collect())
        }),
        HirKind::Alternation(branches) => bounded(branches.iter().flat_map(|b| shapes(b, lit)).collect()),
        HirKind::Repetition(rep) => {
            let once = shapes(&rep.sub, lit);
            let mut out = Vec::new();
            if rep.min == 0 {
                out.push(Shape::exact(Vec::new(), lit));
            }
            match rep.max {
                Some(0) => {}
                Some(1) => out.extend(once),
                // Several copies: the first starts the match and the last ends it, whatever lies between.
                _ => out.extend(merged(&once).map(|m| Shape { exact: false, ..m })),
            }
            bounded(out)
        }
    }
}

/// A class of a few bytes is as good as that many literals; a wider one says nothing.
fn class_shapes(class: &Class, lit: &[u8]) -> Vec<Shape> {
    let bytes: Vec<u8> = match class {
        Class::Bytes(c) => c.iter().flat_map(|r| r.start()..=r.end()).take(SMALL_CLASS + 1).collect(),
        Class::Unicode(_) => match class.literal() {
            Some(bytes) => return vec![Shape::exact(bytes, lit)],
            None if class.is_empty() => return Vec::new(),
            None => return vec![Shape::unknown()],
        },
    };
    if bytes.len() > SMALL_CLASS {
        return vec![Shape::unknown()];
    }
    bytes.into_iter().map(|b| Shape::exact(vec![b], lit)).collect()
}

/// `shapes` without repeats, merged into one when there are too many.
fn bounded(mut shapes: Vec<Shape>) -> Vec<Shape> {
    shapes.sort();
    shapes.dedup();
    if shapes.len() <= MAX_SHAPES {
        return shapes;
    }
    merged(&shapes).into_iter().collect()
}

/// One shape that every one of `shapes` fits: their common start and end, containing the literal only if all do.
fn merged(shapes: &[Shape]) -> Option<Shape> {
    let first = shapes.first()?;
    let mut m = Shape { exact: false, ..first.clone() };
    for s in &shapes[1..] {
        let common = m.starts.iter().zip(&s.starts).take_while(|(a, b)| a == b).count();
        m.starts.truncate(common);
        let common = m.ends.iter().rev().zip(s.ends.iter().rev()).take_while(|(a, b)| a == b).count();
        m.ends.drain(..m.ends.len() - common);
        m.contains &= s.contains;
    }
    Some(m)
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

    fn required(regex: &str, lit: &str) -> bool {
        requires(&syntax(regex).unwrap(), lit.as_bytes())
    }

    #[test]
    fn a_literal_the_regex_spells_out_is_required() {
        assert!(required(r"^Failed password for .* from (?P<addr>[0-9.]+)$", "Failed password"));
        assert!(required(r"^Closed \((?P<count>\d+) attempts\): (?P<addr>[0-9.]+)$", "attempts):"));
        // Inside a required capture, and across a zero-width assertion.
        assert!(required(r"^x (?P<user>user=\S+) from", "user="));
        assert!(required(r"lost\b from", "lost from"));
        // Across optional parts, when each way through them leaves it whole.
        assert!(required(
            r"\): (?:Info: )?(?:request \[\d+\]: )?(?:[\w-]+: )?invalid credentials$",
            ": invalid credentials"
        ));
        assert!(required(r"(?: Ci=\d+)? (?:TFO )?lost\b", " lost"));
        // In every branch of an alternation, or where every branch ends with its start.
        assert!(required(r"^(?:LOGOUT|TIMEOUT), ip=", "OUT, ip="));
        assert!(required(r"(?:vpopmail user not found|system user not found) (?P<user>\S+)", " not found "));
        // A repetition of at least one copy starts and ends with that copy.
        assert!(required(r"from (?:\[\d+\])+: x", "]: x"));
    }

    #[test]
    fn a_literal_in_one_branch_of_an_alternation_is_refused() {
        assert!(!required(r"^(?:Failed password|Invalid user) .* from (?P<addr>\S+)", "Failed password"));
        assert!(!required(r"^(?:Failed|Invalid) (?:password|user)", "Failed"));
        // The same alternation of single bytes is a class: still refused.
        assert!(!required(r"^[ab]c", "ac"));
    }

    #[test]
    fn a_literal_under_an_optional_part_is_refused() {
        assert!(!required(r"^(?:error: )?Received disconnect", "error: "));
        assert!(!required(r"^Received disconnect: .*\[preauth\]$", " [preauth]"));
        assert!(!required(r"from client ?(?P<addr>\S+)", "client "));
        assert!(!required(r"^x(?:yz)*", "yz"));
        // Case-insensitive text matches other spellings, and the prefilter is case-sensitive.
        assert!(!required(r": (?i:quit)$", "QUIT"));
        assert!(required(r": (?i:quit)$", ": "));
    }

    #[test]
    fn an_unrequired_literal_is_refused_naming_file_rule_and_literal() {
        let e = err("[[rule]]\nid = \"a\"\nkind = \"connect\"\nliterals = [\"from \", \"error: \"]\nregex = '^(?:error: )?connect from (?P<addr>\\S+)'\n");
        assert_eq!(
            e,
            "t.toml: rule `t.a`: `literals` entry \"error: \" is not required by the regex: a line without it could \
             match, and the prefilter would skip it"
        );
        let ok = "[[rule]]\nid = \"a\"\nkind = \"connect\"\nliterals = [\"connect from \"]\nregex = '^(?:error: )?connect from (?P<addr>\\S+)'\n";
        assert!(check_file("t.toml", "t.toml", ok).is_ok());
    }

    /// Soundness against the regex engine itself: for random small regexes, every literal the check accepts is in
    /// every short string the regex matches anywhere in.
    #[test]
    fn an_accepted_literal_is_in_every_matching_string() {
        const ALPHABET: &[u8] = b"ab: ";
        fn gen(rng: &mut u64, depth: u32) -> String {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            let pick = if depth == 0 { *rng % 6 } else { *rng % 14 };
            let sub = |rng: &mut u64| gen(rng, depth - 1);
            match pick {
                0 => "a".into(),
                1 => "b".into(),
                2 => ":".into(),
                3 => " ".into(),
                4 => "[ab]".into(),
                5 => ".".into(),
                6..=8 => format!("{}{}", sub(rng), sub(rng)),
                9 => format!("(?:{}|{})", sub(rng), sub(rng)),
                10 => format!("(?:{})?", sub(rng)),
                11 => format!("(?:{})*", sub(rng)),
                12 => format!("(?:{})+", sub(rng)),
                _ => format!("({}){{2}}", sub(rng)),
            }
        }
        let mut strings: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=5 {
            let longer: Vec<Vec<u8>> = strings
                .iter()
                .filter(|s| s.len() == len - 1)
                .flat_map(|s| ALPHABET.iter().map(move |&c| [&s[..], &[c]].concat()))
                .collect();
            strings.extend(longer);
        }
        let literals: Vec<Vec<u8>> = strings.iter().filter(|s| (1..=3).contains(&s.len())).cloned().collect();
        let (mut rng, mut accepted) = (0x9e37_79b9_7f4a_7c15u64, 0);
        for _ in 0..1000 {
            let pattern = gen(&mut rng, 3);
            let (re, hir) = (compile(&pattern).unwrap(), syntax(&pattern).unwrap());
            let matching: Vec<&Vec<u8>> = strings.iter().filter(|s| re.is_match(s)).collect();
            for lit in literals.iter().filter(|l| requires(&hir, l)) {
                accepted += 1;
                let missing = matching.iter().find(|s| !has(s, lit));
                assert!(
                    missing.is_none(),
                    "{pattern}: {:?} accepted, but {missing:?} matches",
                    lit.escape_ascii().to_string()
                );
            }
        }
        assert!(accepted > 600, "only {accepted} literals accepted: the test proves little");
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
