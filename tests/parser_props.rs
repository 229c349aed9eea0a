//! Property tests: the parser survives any input, and the literal prefilter never loses a rule that could match.

use std::sync::{Arc, OnceLock};

use chrono::{TimeZone, Utc};
use floodgate::config::Config;
use floodgate::parse::header::{TimeContext, Zone};
use floodgate::parse::lines::{Line, LineReader};
use floodgate::parse::matcher::Matcher;
use floodgate::parse::rules;
use floodgate::parse::{LineParser, Outcome};
use proptest::prelude::*;

fn ctx() -> TimeContext {
    TimeContext {
        zone: Zone::parse("UTC").unwrap(),
        reference: Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap(),
        boot_time: Some(Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap()),
    }
}

/// Compiled once: building the rule set per case would dominate the run time.
struct Shared {
    matcher: Arc<Matcher>,
    /// Each rule's literals, indexed like `matcher.rules`.
    rule_literals: Vec<Vec<String>>,
    all_literals: Vec<String>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let families = rules::load(&[], true).unwrap();
        let rule_literals: Vec<Vec<String>> =
            families.iter().flat_map(|f| f.rules.iter().map(|r| r.literals.clone())).collect();
        let mut all_literals: Vec<String> = rule_literals.iter().flatten().cloned().collect();
        all_literals.sort();
        all_literals.dedup();
        Shared { matcher: Arc::new(Matcher::new(families)), rule_literals, all_literals }
    })
}

fn parser() -> LineParser {
    LineParser::new(shared().matcher.clone(), Arc::new(Config::default().service_ports()), ctx())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes, NULs, invalid UTF-8, huge or empty lines: every line is counted exactly once, nothing panics.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut p = parser();
        let mut r = LineReader::new(&data[..], 512);
        let mut n = 0u64;
        while let Some(line) = r.next_line().unwrap() {
            n += 1;
            match line {
                Line::Text(b) => { let _ = p.parse_bytes(b); }
                Line::TooLong(_) => p.overlong(),
            }
        }
        let s = &p.stats;
        prop_assert_eq!(s.lines, n);
        prop_assert_eq!(s.lines, s.events + s.unmatched + s.undecodable + s.malformed + s.overlong);
    }

    /// Lines stitched from rule literals, prefixes and noise: the rules that reach a regex are exactly those whose
    /// every literal occurs in the line (the prefilter is complete and precise).
    #[test]
    fn prefilter_finds_exactly_the_rules_whose_literals_occur(
        picks in proptest::collection::vec((0usize..10_000, 0usize..4, "[ a-z\\[\\]:.=<>0-9]{0,6}"), 0..8)
    ) {
        let sh = shared();
        let lits = &sh.all_literals;
        let mut line = String::new();
        for (i, cut, noise) in &picks {
            let l = &lits[i % lits.len()];
            // Sometimes only part of a literal, to probe overlaps and near misses.
            let end = if *cut == 0 { l.len().saturating_sub(1) } else { l.len() };
            line.push_str(l.get(..end).unwrap_or(l));
            line.push_str(noise);
        }
        let want: Vec<u32> = sh
            .rule_literals
            .iter()
            .enumerate()
            .filter(|(_, lits)| !lits.is_empty() && lits.iter().all(|l| line.contains(l.as_str())))
            .map(|(i, _)| i as u32)
            .collect();
        let mut scratch = sh.matcher.scratch();
        let got = sh.matcher.candidates(&line, &mut scratch).to_vec();
        prop_assert_eq!(got, want, "line: {:?}", line);
    }
}

#[test]
fn a_malformed_line_is_counted_and_the_next_one_still_parses() {
    let mut p = parser();
    let bad = p.parse_line(
        "Nov 21 09:00:00 mx postfix/smtpd[1]: warning: unknown[unknown]: SASL PLAIN authentication failed: x",
    );
    assert!(matches!(bad, Outcome::Malformed { field: "addr", .. }), "{bad:?}");
    assert!(matches!(p.parse_bytes(b"\xff\xfe garbage\n"), Outcome::Undecodable));
    let good = p.parse_line("Nov 21 09:00:01 mx postfix/smtpd[1]: connect from unknown[198.51.100.9]");
    let Outcome::Event(ev) = good else { panic!("{good:?}") };
    assert_eq!(ev.addr, Some("198.51.100.9".parse().unwrap()));
    assert_eq!((p.stats.malformed, p.stats.undecodable, p.stats.events), (1, 1, 1));
}
