//! The compiled rule set: a literal prefilter (an Aho-Corasick DFA pass over the line) picks the few rules that
//! could match, and only those run their regex. Most lines of a mail log are normal traffic and never reach
//! a regex.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use memchr::memmem;
use regex::bytes::{CaptureLocations, Regex};

use super::rules::Family;
use crate::event::Kind;

/// Capture group indices of the names floodgate understands.
#[derive(Debug, Default, Clone, Copy)]
pub struct Groups {
    pub addr: Option<usize>,
    pub port: Option<usize>,
    pub user: Option<usize>,
    pub service: Option<usize>,
    pub laddr: Option<usize>,
    pub action: Option<usize>,
    pub assured: Option<usize>,
    pub count: Option<usize>,
    pub session: Option<usize>,
}

impl Groups {
    fn of(re: &Regex) -> Groups {
        let mut g = Groups::default();
        for (i, name) in re.capture_names().enumerate() {
            let slot = match name {
                Some("addr") => &mut g.addr,
                Some("port") => &mut g.port,
                Some("user") => &mut g.user,
                Some("service") => &mut g.service,
                Some("laddr") => &mut g.laddr,
                Some("action") => &mut g.action,
                Some("assured") => &mut g.assured,
                Some("count") => &mut g.count,
                Some("session") => &mut g.session,
                _ => continue,
            };
            *slot = Some(i);
        }
        g
    }
}

#[derive(Debug)]
pub struct Rule {
    pub id: Arc<str>,
    pub kind: Kind,
    pub failure: bool,
    pub family: usize,
    pub regex: Regex,
    pub groups: Groups,
    /// Required literals other than the prefilter's anchor.
    pub others: Vec<memmem::Finder<'static>>,
    pub service: Option<Arc<str>>,
    pub attempt: Option<super::rules::Attempt>,
    pub level: super::rules::Level,
}

#[derive(Debug)]
pub struct FamilyInfo {
    pub name: String,
    pub service: Option<Arc<str>>,
    pub program_services: Vec<(String, Arc<str>)>,
    pub attempts_per_pid: bool,
}

impl FamilyInfo {
    /// The service a line belongs to from its syslog program tag, or the family's default.
    pub fn service_for(&self, program: Option<&str>) -> Option<Arc<str>> {
        if let Some(p) = program {
            if let Some((_, s)) = self.program_services.iter().find(|(prefix, _)| p.starts_with(prefix.as_str())) {
                return Some(s.clone());
            }
        }
        self.service.clone()
    }
}

pub struct Matcher {
    pub rules: Vec<Rule>,
    pub families: Vec<FamilyInfo>,
    prefilter: Prefilter,
    /// For each prefilter pattern, the rules it anchors, and those of every pattern it contains.
    pattern_rules: Vec<Vec<u32>>,
    /// Rules without a literal: they run on every line.
    always: Vec<u32>,
}

/// Per-caller scratch space, so that matching allocates nothing per line.
pub struct Scratch {
    candidates: Vec<u32>,
    seen: Vec<u64>,
    locs: Vec<CaptureLocations>,
}

impl Matcher {
    pub fn new(families: Vec<Family>) -> Matcher {
        let mut rules = Vec::new();
        let mut infos = Vec::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_rules: Vec<Vec<u32>> = Vec::new();
        let mut always = Vec::new();
        for (fi, fam) in families.into_iter().enumerate() {
            infos.push(FamilyInfo {
                name: fam.name.clone(),
                service: fam.spec.service.as_deref().map(Arc::from),
                program_services: fam
                    .spec
                    .program_services
                    .iter()
                    .map(|p| (p.program.clone(), Arc::from(p.service.as_str())))
                    .collect(),
                attempts_per_pid: fam.spec.attempts_per_pid,
            });
            for r in fam.rules {
                let idx = rules.len() as u32;
                let mut lits = r.literals.clone();
                // The longest literal is usually the rarest: it anchors the prefilter.
                lits.sort_by_key(|l| std::cmp::Reverse(l.len()));
                match lits.first() {
                    Some(anchor) => match patterns.iter().position(|p| p == anchor) {
                        Some(pi) => pattern_rules[pi].push(idx),
                        None => {
                            patterns.push(anchor.clone());
                            pattern_rules.push(vec![idx]);
                        }
                    },
                    None => always.push(idx),
                }
                let others = lits.iter().skip(1).map(|l| memmem::Finder::new(l.as_bytes()).into_owned()).collect();
                rules.push(Rule {
                    id: Arc::from(r.full_id.as_str()),
                    kind: r.kind,
                    failure: r.failure,
                    family: fi,
                    groups: Groups::of(&r.regex),
                    regex: r.regex,
                    others,
                    service: r.service.as_deref().map(Arc::from),
                    attempt: r.attempt,
                    level: r.level,
                });
            }
        }
        // A pattern found in a line implies every pattern it contains: give it their rules too, so that the
        // search may report only the longest pattern at each position.
        let closed: Vec<Vec<u32>> = patterns
            .iter()
            .map(|p| {
                let mut rs: Vec<u32> = patterns
                    .iter()
                    .enumerate()
                    .filter(|(_, q)| memmem::find(p.as_bytes(), q.as_bytes()).is_some())
                    .flat_map(|(j, _)| pattern_rules[j].iter().copied())
                    .collect();
                rs.sort_unstable();
                rs.dedup();
                rs
            })
            .collect();
        let prefilter = Prefilter::new(&patterns);
        Matcher { rules, families: infos, prefilter, pattern_rules: closed, always }
    }

    pub fn scratch(&self) -> Scratch {
        Scratch {
            candidates: Vec::with_capacity(16),
            seen: vec![0; self.rules.len().div_ceil(64)],
            locs: self.rules.iter().map(|r| r.regex.capture_locations()).collect(),
        }
    }

    /// Rules whose literals all occur in `line`, in rule order. Cheap: one automaton pass, no regex.
    pub fn candidates<'s>(&self, line: &str, scratch: &'s mut Scratch) -> &'s [u32] {
        scratch.candidates.clear();
        let Scratch { candidates, seen, .. } = scratch;
        self.prefilter.each_match(line.as_bytes(), |pi| {
            for &ri in &self.pattern_rules[pi] {
                let (w, bit) = (ri as usize / 64, 1u64 << (ri % 64));
                if seen[w] & bit == 0 {
                    seen[w] |= bit;
                    candidates.push(ri);
                }
            }
        });
        for &ri in &scratch.candidates {
            scratch.seen[ri as usize / 64] = 0;
        }
        scratch.candidates.extend_from_slice(&self.always);
        let bytes = line.as_bytes();
        scratch.candidates.retain(|&ri| self.rules[ri as usize].others.iter().all(|f| f.find(bytes).is_some()));
        if scratch.candidates.len() > 1 {
            scratch.candidates.sort_unstable();
        }
        &scratch.candidates
    }

    /// Runs the candidates' regexes over `message` in rule order; the first match wins.
    pub fn first_match<'s>(&self, message: &str, scratch: &'s mut Scratch) -> Option<(u32, &'s CaptureLocations)> {
        let Scratch { candidates, locs, .. } = scratch;
        let hit = candidates.iter().copied().find(|&ri| {
            self.rules[ri as usize].regex.captures_read(&mut locs[ri as usize], message.as_bytes()).is_some()
        })?;
        Some((hit, &locs[hit as usize]))
    }
}

/// Finds which literal patterns occur in a line: one leftmost-longest DFA search, restarted just where another
/// pattern could begin overlapping the one found. Every position where a pattern starts is visited, and the
/// longest pattern there stands for those it contains (its rules include theirs). Measured faster here than
/// an overlapping search or SIMD Teddy in groups of 64 (tests/benches/parse.rs).
struct Prefilter {
    dfa: AhoCorasick,
    /// Per pattern: how far past a match's start the next search may begin.
    skip: Vec<usize>,
}

impl Prefilter {
    fn new(patterns: &[String]) -> Prefilter {
        let dfa = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::DFA))
            .build(patterns)
            .expect("literal patterns always build");
        Prefilter { dfa, skip: patterns.iter().map(|p| overlap_skip(p, patterns)).collect() }
    }

    fn each_match(&self, hay: &[u8], mut f: impl FnMut(usize)) {
        let mut at = 0;
        while at < hay.len() {
            let Some(m) = self.dfa.find(Input::new(hay).span(at..hay.len())) else { break };
            let pi = m.pattern().as_usize();
            f(pi);
            at = m.start() + self.skip[pi];
        }
    }
}

/// The smallest k >= 1 such that some pattern could start k bytes into `p` and run past its end (a suffix of
/// `p` is a proper prefix of it), or `p.len()` when none can.
fn overlap_skip(p: &str, patterns: &[String]) -> usize {
    let pb = p.as_bytes();
    (1..pb.len())
        .find(|&k| {
            let suffix = &pb[k..];
            patterns.iter().any(|q| q.len() > suffix.len() && q.as_bytes().starts_with(suffix))
        })
        .unwrap_or(pb.len().max(1))
}

/// The text of group `g` in `message`, if the group took part in the match.
pub fn group<'m>(locs: &CaptureLocations, g: Option<usize>, message: &'m str) -> Option<&'m str> {
    let (s, e) = locs.get(g?)?;
    // ASCII-only classes match single bytes, so a group could in theory cut a multi-byte character: dropped.
    message.get(s..e)
}
