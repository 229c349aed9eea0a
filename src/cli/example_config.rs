//! What the binary derives from `examples/floodgate.toml` (compiled in): the config file a package installs as
//! `/etc/floodgate/floodgate.toml` (the documented preset with an empty allowlist) and the `floodgate.toml(5)`
//! man page, rendered from that file's own comments. One source for the file, its page and the preset (a test in
//! `config` holds the example to the preset): the page cannot drift from either.

/// The example as shipped in the source tree.
pub const EXAMPLE: &str = include_str!("../../examples/floodgate.toml");

/// The example's allowlist line: the sample addresses documentation uses, never an operator's.
const EXAMPLE_ALLOWLIST: &str = "allowlist = [\"203.0.113.10\", \"2001:db8:ad::/48\"]";

/// The file a package installs: the example with the allowlist emptied (the admin's own addresses go there
/// before the daemon is enabled; the package's post-install message says so). The sample addresses stay as a
/// comment, so the syntax is one look away.
pub fn packaged() -> String {
    // A changed example line must change this too (the test below fails): a package must never ship the
    // documentation's addresses as someone's allowlist.
    EXAMPLE.replacen(
        EXAMPLE_ALLOWLIST,
        "# For example: [\"203.0.113.10\", \"2001:db8:ad::/48\"]. Empty as installed: fill it in first.\nallowlist = []",
        1,
    )
}

/// A key of the file, as written there.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    name: String,
    /// Its value as written (several lines for a long array).
    value: String,
    /// The comment lines above it (and a trailing comment), its meaning.
    about: Vec<String>,
    /// False for a commented-out key: not set by default, the line shows how to set it.
    set: bool,
    /// Written on the line right after the key before it, under that key's comment (`kmsg_path` after `kmsg`).
    grouped: bool,
}

/// A `[section]` (the top level is the one named ""), with its prose and keys.
#[derive(Debug, Default)]
struct Section {
    name: String,
    prose: Vec<Vec<String>>,
    keys: Vec<Key>,
    /// A `# [section]` block: an example to uncomment, not part of the preset.
    commented: bool,
}

#[derive(Debug, Default)]
struct Doc {
    intro: Vec<Vec<String>>,
    sections: Vec<Section>,
}

/// `name = value` when the line is a key: a bare key and a value TOML accepts (so that prose such as
/// `format = "rir": the registries' ...` stays prose).
fn key_line(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once(" = ")?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return None;
    }
    toml::from_str::<toml::Table>(&format!("v = {value}")).ok()?;
    Some((name.to_string(), value.trim().to_string()))
}

/// Whether brackets opened on these lines are all closed (an array spanning lines ends).
fn balanced(text: &str) -> bool {
    let (mut depth, mut in_str) = (0i32, false);
    for c in text.chars() {
        match c {
            '"' => in_str = !in_str,
            '[' | '{' if !in_str => depth += 1,
            ']' | '}' if !in_str => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// A value and its trailing comment (`"x"   # why`), split where TOML would.
fn split_trailing_comment(value: &str) -> (String, Option<String>) {
    let mut in_str = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return (value[..i].trim().to_string(), Some(value[i + 1..].trim().to_string())),
            _ => {}
        }
    }
    (value.trim().to_string(), None)
}

fn parse(text: &str) -> Doc {
    let mut doc = Doc::default();
    // Comment lines since the last key or blank line: a key's meaning when a key follows them.
    let mut comments: Vec<String> = Vec::new();
    // Paragraphs closed by a blank line: the prose of the section a header opens next, or else of the current one.
    let mut paragraphs: Vec<Vec<String>> = Vec::new();
    let settle = |doc: &mut Doc, paragraphs: &mut Vec<Vec<String>>| match doc.sections.last_mut() {
        Some(s) => s.prose.append(paragraphs),
        None => doc.intro.append(paragraphs),
    };
    let mut lines = text.lines();
    // Whether the line before this one was a key's.
    let mut after_key = false;
    while let Some(raw) = lines.next() {
        let line = raw.trim_end();
        let follows_key = std::mem::take(&mut after_key);
        if line.trim().is_empty() || line.trim() == "#" {
            if !comments.is_empty() {
                paragraphs.push(std::mem::take(&mut comments));
            }
            continue;
        }
        let (body, set) = match line.strip_prefix('#') {
            Some(rest) => (rest.strip_prefix(' ').unwrap_or(rest), false),
            None => (line, true),
        };
        if body.starts_with('[') && body.ends_with(']') && !body.contains(' ') {
            let name = body.trim_matches(|c| c == '[' || c == ']').to_string();
            let mut prose = std::mem::take(&mut paragraphs);
            if !comments.is_empty() {
                prose.push(std::mem::take(&mut comments));
            }
            doc.sections.push(Section { name, prose, keys: Vec::new(), commented: !set });
            continue;
        }
        let key = if set {
            // An active line is always a key; a long array continues until its brackets close.
            let (name, mut value) =
                line.split_once(" = ").map(|(n, v)| (n.trim().to_string(), v.to_string())).unwrap_or_default();
            while !balanced(&value) {
                let Some(next) = lines.next() else { break };
                value.push('\n');
                value.push_str(next.trim());
            }
            Some((name, value))
        } else {
            key_line(body)
        };
        match key {
            Some((name, value)) => {
                settle(&mut doc, &mut paragraphs);
                let (value, trailing) = if set { (value, None) } else { split_trailing_comment(&value) };
                let mut about = std::mem::take(&mut comments);
                about.extend(trailing);
                if doc.sections.is_empty() {
                    // The top-level keys come before any header: a section of their own, first.
                    doc.sections.push(Section::default());
                }
                let section = doc.sections.last_mut().expect("a section");
                section.keys.push(Key { name, value, about, set, grouped: follows_key });
                after_key = true;
            }
            None => comments.push(body.to_string()),
        }
    }
    if !comments.is_empty() {
        paragraphs.push(comments);
    }
    settle(&mut doc, &mut paragraphs);
    doc
}

/// Text for a roff line: backslashes and a leading control character escaped.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// Marks a commented-out key in the page; the tests read it back.
const NOT_SET: &str = "(not set by default; to set it:)";

/// `floodgate.toml(5)`, rendered from the packaged file.
pub fn man_page() -> String {
    let doc = parse(&packaged());
    let mut out = String::new();
    let mut push = |line: &str| {
        out.push_str(line);
        out.push('\n');
    };
    push(&format!(".TH FLOODGATE.TOML 5 \"\" \"floodgate {}\" \"floodgate manual\"", env!("CARGO_PKG_VERSION")));
    push(".SH NAME");
    push("floodgate.toml \\- configuration of floodgate, its daemon and its commands");
    push(".SH SYNOPSIS");
    push("/etc/floodgate/floodgate.toml");
    push(".SH DESCRIPTION");
    for (i, para) in doc.intro.iter().enumerate() {
        if i > 0 {
            push(".PP");
        }
        for l in para {
            push(&roff_text(l));
        }
    }
    push(".PP");
    push("Each key below is shown with the value the installed file gives it, which is also the value it takes");
    push("when it is absent (the allowlist excepted: it is empty until the administrator fills it in).");
    push("Keys shown as not set are commented out in the file; the line after them shows how to set them.");
    push(".SH KEYS");
    for s in &doc.sections {
        let title = match (s.name.is_empty(), s.commented) {
            (true, _) => "Top level".to_string(),
            (false, false) => format!("[{}]", s.name),
            (false, true) => format!("[{}] (an example, commented out)", s.name),
        };
        push(&format!(".SS {}", roff_text(&title)));
        for para in &s.prose {
            push(".PP");
            for l in para {
                push(&roff_text(l));
            }
        }
        for k in &s.keys {
            push(".TP");
            if !k.set {
                push(&format!("\\fB{}\\fR {NOT_SET}", roff_text(&k.name)));
            }
            if k.value.contains('\n') {
                push(&format!("\\fB{}\\fR =", roff_text(&k.name)));
                for l in &k.about {
                    push(&roff_text(l));
                }
                push(".RS");
                push(".nf");
                for l in k.value.lines() {
                    push(&roff_text(l));
                }
                push(".fi");
                push(".RE");
            } else {
                push(&format!("\\fB{}\\fR = {}", roff_text(&k.name), roff_text(&k.value)));
                for l in &k.about {
                    push(&roff_text(l));
                }
            }
        }
    }
    push(".SH FILES");
    push(".TP");
    push("/etc/floodgate/floodgate.toml");
    push("This file (a conffile of the Debian package: kept on removal, removed on purge).");
    push(".TP");
    push("/var/lib/floodgate/floodgate.db");
    push("The event store, unless \\fBdb\\fR or \\fB\\-\\-db\\fR says otherwise.");
    push(".SH SEE ALSO");
    push("\\fBfloodgate\\fR(8), \\fBfloodgate\\-run\\fR(8), \\fBnft\\fR(8)");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page read back: per section title, each key's name, value text (as written, unescaped) and whether
    /// it is set. Independent of `parse`: it reads only the rendered roff.
    fn page_keys(page: &str) -> Vec<(String, String, String, bool)> {
        let unescape = |s: &str| s.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "");
        let mut keys = Vec::new();
        let mut section = String::new();
        let lines: Vec<&str> = page.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let l = lines[i];
            if l.starts_with(".SH ") {
                section.clear();
            } else if let Some(t) = l.strip_prefix(".SS ") {
                section = unescape(t);
            } else if l == ".TP" && !section.is_empty() {
                let mut head = lines[i + 1];
                let set = !head.ends_with(NOT_SET);
                if !set {
                    i += 1;
                    head = lines[i + 1];
                }
                let rest = head.strip_prefix("\\fB").expect("a key line starts bold");
                let (name, value) = rest.split_once("\\fR =").expect("key = value");
                let mut value = unescape(value.trim());
                if value.is_empty() {
                    // A multi-line value: the .nf block after its meaning.
                    let start = lines[i..].iter().position(|l| *l == ".nf").unwrap() + i + 1;
                    let end = lines[start..].iter().position(|l| *l == ".fi").unwrap() + start;
                    value = lines[start..end].iter().map(|l| unescape(l)).collect::<Vec<_>>().join("\n");
                }
                keys.push((section.clone(), unescape(name), value, set));
            }
            i += 1;
        }
        keys
    }

    fn value_of(text: &str) -> toml::Value {
        let t: toml::Table = toml::from_str(&format!("v = {text}")).unwrap_or_else(|e| panic!("`{text}`: {e}"));
        t["v"].clone()
    }

    /// Every key of the installed file as (section title as the page writes it, key, value).
    fn file_keys() -> Vec<(String, String, toml::Value)> {
        let table: toml::Table = toml::from_str(&packaged()).unwrap();
        let mut keys = Vec::new();
        fn walk(prefix: &str, t: &toml::Table, keys: &mut Vec<(String, String, toml::Value)>) {
            for (k, v) in t {
                match v {
                    toml::Value::Table(sub) => {
                        walk(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, sub, keys)
                    }
                    _ => keys.push((
                        if prefix.is_empty() { "Top level".into() } else { format!("[{prefix}]") },
                        k.clone(),
                        v.clone(),
                    )),
                }
            }
        }
        walk("", &table, &mut keys);
        keys
    }

    #[test]
    fn the_packaged_file_is_the_preset_with_an_empty_allowlist() {
        assert!(EXAMPLE.contains(EXAMPLE_ALLOWLIST), "the example's allowlist line changed: update EXAMPLE_ALLOWLIST");
        let c = crate::config::Config::from_toml(&packaged(), "packaged").unwrap();
        assert!(c.allowlist.is_empty());
        let d = crate::config::Config::default();
        assert_eq!(c.ruleset(), d.ruleset());
        assert_eq!(c.sources, d.sources);
        assert_eq!(c.policy, d.policy);
    }

    #[test]
    fn every_key_of_the_file_is_in_the_page_with_its_value_in_its_section() {
        let page = man_page();
        let documented = page_keys(&page);
        let file = file_keys();
        assert!(file.len() > 60, "only {} keys read from the example", file.len());
        for (section, key, value) in &file {
            let found = documented.iter().find(|(s, k, _, set)| s == section && k == key && *set);
            let Some((_, _, text, _)) = found else { panic!("{section} {key}: not in floodgate.toml(5)") };
            assert_eq!(&value_of(text), value, "{section} {key}: the page says {text}");
        }
        // Nothing set in the page that the file lacks.
        for (section, key, _, set) in &documented {
            if *set {
                assert!(file.iter().any(|(s, k, _)| s == section && k == key), "{section} {key}: not in the file");
            }
        }
    }

    #[test]
    fn every_key_says_what_it_means() {
        // Its own comment; or it is one of a group under one comment (`kmsg_path` right after `kmsg`, the
        // bursts after the rates); or the prose of its section, or of the family's first section (`[services]`'
        // paragraph names `ports`), names it.
        let doc = parse(&packaged());
        let family_prose = |name: &str| {
            let family = name.split('.').next().unwrap_or("");
            doc.sections
                .iter()
                .filter(|s| s.name == name || s.name.split('.').next() == Some(family))
                .flat_map(|s| s.prose.concat())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut unexplained = Vec::new();
        for s in &doc.sections {
            let prose = family_prose(&s.name);
            for (i, k) in s.keys.iter().enumerate() {
                let grouped = k.grouped && i > 0;
                if k.set && k.about.is_empty() && !grouped && !prose.contains(&format!("`{}`", k.name)) {
                    unexplained.push(format!("[{}] {}", s.name, k.name));
                }
            }
        }
        assert!(unexplained.is_empty(), "keys of examples/floodgate.toml without a meaning: {unexplained:?}");
    }

    #[test]
    fn the_keys_the_page_shows_as_not_set_are_real_keys() {
        // Gathered per section and loaded: a key the config does not know is refused (deny_unknown_fields).
        let mut by_section: Vec<(String, Vec<String>)> = Vec::new();
        for (section, key, value, set) in page_keys(&man_page()) {
            if set {
                continue;
            }
            let name = section.trim_start_matches('[').split(']').next().unwrap().to_string();
            match by_section.iter_mut().find(|(s, _)| *s == name) {
                Some((_, lines)) => lines.push(format!("{key} = {value}")),
                None => by_section.push((name, vec![format!("{key} = {value}")])),
            }
        }
        let names: Vec<&str> = by_section.iter().map(|(s, _)| s.as_str()).collect();
        for expected in ["notify", "fleet", "services.imap"] {
            assert!(names.contains(&expected), "no commented-out keys of [{expected}] in the page: {names:?}");
        }
        for (section, lines) in by_section {
            let text = format!("[{section}]\n{}\n", lines.join("\n"));
            if let Err(e) = crate::config::Config::from_toml(&text, "page") {
                panic!("the page's commented-out keys of [{section}] do not load: {e}\n{text}");
            }
        }
    }
}
