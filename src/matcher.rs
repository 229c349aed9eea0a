//! The compiled rule set: a literal prefilter (one Aho-Corasick pass over the line) picks the few rules that
//! could match, and only those run their regex. Most lines of a mail log are normal traffic and never reach
//! a regex.

use std::sync::Arc;

use aho_corasick::{packed, AhoCorasick, AhoCorasickKind, MatchKind, Span};
use memchr::memmem;
use regex::{CaptureLocations, Regex};

use crate::event::Kind;
use crate::rules::Family;

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
}

#[derive(Debug)]
pub struct FamilyInfo {
    pub name: String,
    pub service: Option<Arc<str>>,
    pub program_services: Vec<(String, Arc<str>)>,
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
                });
            }
        }
        // A pattern found in a line implies every pattern it contains: give it their rules too, so that the
        // SIMD search below may report only the longest pattern at each position.
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
        let hit = candidates
            .iter()
            .copied()
            .find(|&ri| self.rules[ri as usize].regex.captures_read(&mut locs[ri as usize], message).is_some())?;
        Some((hit, &locs[hit as usize]))
    }
}

/// Finds which literal patterns occur in a line. Teddy (SIMD, at most 64 patterns per searcher) in groups,
/// leftmost-longest, restarting one byte after each match start: every position where some pattern starts is
/// visited, and the longest pattern there stands for those it contains. Without SIMD, one overlapping DFA.
enum Prefilter {
    Packed(Vec<(packed::Searcher, Vec<usize>)>),
    Dfa(AhoCorasick),
}

impl Prefilter {
    fn new(patterns: &[String]) -> Prefilter {
        let mut groups = Vec::new();
        let ids: Vec<usize> = (0..patterns.len()).collect();
        for chunk in ids.chunks(64) {
            let searcher = packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostLongest)
                .builder()
                .extend(chunk.iter().map(|&i| patterns[i].as_bytes()))
                .build();
            match searcher {
                Some(s) => groups.push((s, chunk.to_vec())),
                None => {
                    groups.clear();
                    break;
                }
            }
        }
        if !groups.is_empty() || patterns.is_empty() {
            return Prefilter::Packed(groups);
        }
        let dfa = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(patterns)
            .expect("literal patterns always build");
        Prefilter::Dfa(dfa)
    }

    fn each_match(&self, hay: &[u8], mut f: impl FnMut(usize)) {
        match self {
            Prefilter::Packed(groups) => {
                for (searcher, ids) in groups {
                    let mut at = 0;
                    while at < hay.len() {
                        let Some(m) = searcher.find_in(hay, Span { start: at, end: hay.len() }) else { break };
                        f(ids[m.pattern().as_usize()]);
                        at = m.start() + 1;
                    }
                }
            }
            Prefilter::Dfa(dfa) => {
                for m in dfa.find_overlapping_iter(hay) {
                    f(m.pattern().as_usize());
                }
            }
        }
    }
}

/// The text of group `g` in `message`, if the group took part in the match.
pub fn group<'m>(locs: &CaptureLocations, g: Option<usize>, message: &'m str) -> Option<&'m str> {
    let (s, e) = locs.get(g?)?;
    Some(&message[s..e])
}
