//! Replays every tests/samples/*.txt through the real rules. Each log line is followed by the event it must
//! give (`=> kind=... rule=... addr=...`) or `=> none`. Fields an expectation does not name must be absent
//! (failure defaults to the kind's default, count to 1; time is checked only when given; a value with spaces
//! is written in double quotes). `=> malformed FIELD`
//! expects a rule to match but the field not to parse.

use std::path::Path;

use chrono::{TimeZone, Utc};
use floodgate::config::Config;
use floodgate::event::{format_time, Event};
use floodgate::parse::header::{TimeContext, Zone};
use floodgate::parse::{LineParser, Outcome};

fn parser() -> LineParser {
    let ctx = TimeContext {
        zone: Zone::parse("UTC").unwrap(),
        reference: Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap(),
        boot_time: Some(Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap()),
    };
    // FLOODGATE_RULES_DIR: a rules directory tried on top of the built-in rules (same-named files replace them),
    // so a rules file can be checked against its samples without rebuilding.
    let extra: Vec<std::path::PathBuf> = std::env::var_os("FLOODGATE_RULES_DIR").map(Into::into).into_iter().collect();
    LineParser::from_config(Config::default().parsing(), &extra, ctx).unwrap()
}

/// Splits an expectation at spaces, except inside double quotes: `user="x from 203.0.113.5 port 22"` is one
/// token (attacker-chosen user names hold spaces).
fn tokens(text: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn samples_dir() -> std::path::PathBuf {
    std::env::var_os("FLOODGATE_SAMPLES_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples"))
}

fn fields(ev: &Event) -> Vec<(String, String)> {
    let mut f = vec![
        ("kind".to_string(), ev.kind.to_string()),
        ("rule".to_string(), ev.rule.to_string()),
        ("failure".to_string(), ev.failure.to_string()),
        ("count".to_string(), ev.count.to_string()),
        ("time".to_string(), format_time(&ev.time)),
    ];
    let mut opt = |k: &str, v: Option<String>| {
        f.push((k.to_string(), v.unwrap_or_else(|| "-".to_string())));
    };
    opt("addr", ev.addr.map(|a| a.to_string()));
    opt("laddr", ev.local_addr.map(|a| a.to_string()));
    opt("port", ev.port.map(|p| p.to_string()));
    opt("service", ev.service.as_deref().map(str::to_string));
    opt("user", ev.user.clone());
    opt("syn_action", ev.syn_action.map(|a| a.as_str().to_string()));
    opt("assured", ev.assured.map(|a| a.to_string()));
    f
}

fn check_file(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut p = parser();
    let mut errors = Vec::new();
    let mut checked = 0;
    let mut pending: Option<(usize, String)> = None;
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some(expect) = line.strip_prefix("=>") {
            let Some((ln, log)) = pending.take() else {
                errors.push(format!("{name}:{n}: expectation without a log line before it"));
                continue;
            };
            checked += 1;
            let outcome = p.parse_line(&log);
            let expect = expect.trim();
            match (&outcome, expect) {
                (Outcome::Event(_), "none") | (Outcome::Malformed { .. }, "none") => {
                    errors.push(format!("{name}:{ln}: expected no event, got {outcome:?}"))
                }
                (_, "none") => {}
                (Outcome::Malformed { field, .. }, e) if e.starts_with("malformed ") => {
                    if e != format!("malformed {field}") {
                        errors.push(format!("{name}:{ln}: want `{e}`, got malformed {field}"));
                    }
                }
                (Outcome::Event(ev), _) => {
                    let got = fields(ev);
                    let mut want: Vec<(String, String)> = Vec::new();
                    for kv in tokens(expect) {
                        let Some((k, v)) = kv.split_once('=') else {
                            errors.push(format!("{name}:{n}: bad expectation `{kv}`"));
                            continue;
                        };
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                        want.push((k.to_string(), v.to_string()));
                    }
                    for (k, gv) in &got {
                        let wv = want.iter().find(|(wk, _)| wk == k).map(|(_, v)| v.as_str());
                        let ok = match (k.as_str(), wv) {
                            ("time", None) => true,
                            ("failure", None) => gv == &ev.kind.is_failure_by_default().to_string(),
                            ("count", None) => gv == "1",
                            (_, None) => gv == "-",
                            (_, Some(w)) => gv == w,
                        };
                        if !ok {
                            errors.push(format!(
                                "{name}:{ln}: field {k}: want {}, got {gv}",
                                wv.unwrap_or("absent/default")
                            ));
                        }
                    }
                    for (k, _) in &want {
                        if !got.iter().any(|(gk, _)| gk == k) {
                            errors.push(format!("{name}:{n}: unknown expectation key `{k}`"));
                        }
                    }
                }
                _ => errors.push(format!("{name}:{ln}: expected an event ({expect}), got {outcome:?}")),
            }
        } else if line.starts_with('#') || line.trim().is_empty() {
            continue;
        } else {
            if let Some((ln, _)) = pending.replace((n, line.to_string())) {
                errors.push(format!("{name}:{ln}: log line without an `=>` expectation"));
            }
        }
    }
    if let Some((ln, _)) = pending {
        errors.push(format!("{name}:{ln}: log line without an `=>` expectation"));
    }
    (checked, errors)
}

#[test]
fn every_sample_gives_its_expected_event() {
    let dir = samples_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "txt"));
    files.sort();
    let mut all_errors = Vec::new();
    let mut total = 0;
    for f in &files {
        let (n, errs) = check_file(f);
        assert!(n > 0, "{} has no samples", f.display());
        total += n;
        all_errors.extend(errs);
    }
    assert!(all_errors.is_empty(), "{} sample mismatches:\n{}", all_errors.len(), all_errors.join("\n"));
    eprintln!("{total} sample lines checked in {} files", files.len());
}

#[test]
fn every_builtin_rule_is_exercised_by_a_sample() {
    let dir = samples_dir();
    let mut text = String::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "txt") {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    let p = parser();
    let missing: Vec<_> = p
        .matcher()
        .rules
        .iter()
        .filter(|r| !text.contains(&format!("rule={} ", r.id)) && !text.contains(&format!("rule={}\n", r.id)))
        .map(|r| r.id.to_string())
        .collect();
    assert!(missing.is_empty(), "rules without a sample line: {missing:?}");
}
