//! Pure planning: from what the store says is in force to the elements the kernel sets must hold, and from the
//! difference with what they do hold to the set operations that close it. No I/O: tested with plain values.

use std::collections::HashMap;
use std::time::Duration;

use crate::addr::Cidr;
use crate::nft::{Element, Key, SetOp};

/// A ban's end in microseconds since the epoch; `FOREVER` for a ban without one.
pub const FOREVER: i64 = i64::MAX;

/// A prefix as a number range, for nesting arithmetic over both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct P {
    v6: bool,
    lo: u128,
    len: u8,
}

impl P {
    fn of(c: &Cidr) -> P {
        let (lo, _) = c.range_bytes();
        P { v6: lo.len() == 16, lo: lo.iter().fold(0u128, |a, &b| (a << 8) | u128::from(b)), len: c.prefix_len() }
    }

    fn bits(&self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    fn hi(&self) -> u128 {
        let host = u32::from(self.bits() - self.len);
        if host >= 128 {
            u128::MAX
        } else {
            self.lo | ((1u128 << host) - 1)
        }
    }

    fn contains(&self, o: &P) -> bool {
        self.v6 == o.v6 && self.len <= o.len && self.lo <= o.lo && o.hi() <= self.hi()
    }

    fn halves(&self) -> (P, P) {
        let len = self.len + 1;
        let bit = 1u128 << u32::from(self.bits() - len);
        (P { len, ..*self }, P { lo: self.lo | bit, len, ..*self })
    }

    fn cidr(&self) -> Cidr {
        let ip = if self.v6 {
            std::net::IpAddr::from(self.lo.to_be_bytes())
        } else {
            std::net::IpAddr::from((self.lo as u32).to_be_bytes())
        };
        Cidr::new(ip, self.len).unwrap_or_else(|| Cidr::host(ip))
    }
}

/// Turns possibly nested bans into non-overlapping prefixes (an interval set holds no overlaps) such that
/// every address is banned until the latest end of the bans that cover it. A prefix inside a longer-lived ban
/// disappears; a longer-lived ban inside a shorter one splits the outer one around it.
pub fn flatten_bans(bans: &[(Cidr, i64)]) -> Vec<(Cidr, i64)> {
    let mut v: Vec<(P, i64)> = bans.iter().map(|(c, u)| (P::of(c), *u)).collect();
    // Outer prefixes before the ones they contain; the same prefix twice keeps its latest end.
    v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    v.dedup_by(|b, a| a.0 == b.0);
    // The forest of nesting: each ban's children are the bans directly inside it.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); v.len()];
    let mut roots = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for i in 0..v.len() {
        while let Some(&top) = stack.last() {
            if v[top].0.contains(&v[i].0) {
                break;
            }
            stack.pop();
        }
        match stack.last() {
            Some(&parent) => children[parent].push(i),
            None => roots.push(i),
        }
        stack.push(i);
    }
    // The latest end anywhere in each subtree, children before parents (they come later in the order).
    let mut latest: Vec<i64> = v.iter().map(|x| x.1).collect();
    for i in (0..v.len()).rev() {
        for &c in &children[i] {
            latest[i] = latest[i].max(latest[c]);
        }
    }
    let mut out = Vec::new();
    for r in roots {
        emit(r, i64::MIN, &v, &children, &latest, &mut out);
    }
    out
}

fn emit(i: usize, inherited: i64, v: &[(P, i64)], children: &[Vec<usize>], latest: &[i64], out: &mut Vec<(Cidr, i64)>) {
    let end = v[i].1.max(inherited);
    // Children whose subtree outlives this ban must stand apart; the others are covered by it.
    let apart: Vec<usize> = children[i].iter().copied().filter(|&c| latest[c] > end).collect();
    let holes: Vec<P> = apart.iter().map(|&c| v[c].0).collect();
    carve(v[i].0, &holes, end, out);
    for c in apart {
        emit(c, end, v, children, latest, out);
    }
}

/// Emits `p` minus the `holes` (disjoint prefixes inside it) as prefixes.
fn carve(p: P, holes: &[P], end: i64, out: &mut Vec<(Cidr, i64)>) {
    let inside: Vec<P> = holes.iter().copied().filter(|h| p.contains(h) || h.contains(&p)).collect();
    if inside.is_empty() {
        out.push((p.cidr(), end));
        return;
    }
    if inside.iter().any(|h| h.contains(&p)) {
        return;
    }
    let (a, b) = p.halves();
    carve(a, &inside, end, out);
    carve(b, &inside, end, out);
}

/// The allowlist without prefixes already covered by a wider one.
pub fn flatten_allow(cidrs: &[Cidr]) -> Vec<Cidr> {
    let mut v: Vec<P> = cidrs.iter().map(P::of).collect();
    v.sort();
    v.dedup();
    let mut out: Vec<P> = Vec::new();
    for p in v {
        if out.last().is_some_and(|last| last.contains(&p)) {
            continue;
        }
        out.push(p);
    }
    out.iter().map(P::cidr).collect()
}

/// An element as the kernel should hold it: the key and the time left (None: no timeout).
pub type Want = (Key, Option<Duration>);

/// Whether a kernel timeout is close enough to the wanted one to leave it alone: the clock moves between
/// the store's reading and the kernel's, so a small drift is not a reason to rewrite 100k elements.
fn close_enough(actual: Option<Duration>, want: Option<Duration>) -> bool {
    match (actual, want) {
        (None, None) => true,
        (Some(a), Some(w)) => {
            let tolerance = Duration::from_secs(2).max(w / 100);
            a.abs_diff(w) <= tolerance
        }
        _ => false,
    }
}

/// What `diff` found, besides the operations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub refreshed: usize,
    pub removed: usize,
    /// Elements the kernel held that the store does not know: reported, then removed.
    pub strays: Vec<Key>,
    /// Bans the kernel held that the store does not know, left in place with their time (a lost, swapped or
    /// full store must never unban anyone): the caller adopts them into the store.
    pub kept: Vec<(Key, Option<Duration>)>,
}

/// The operations that make `set` hold exactly `want`: adds for missing elements, delete+add for elements
/// whose time left is off, deletes for strays.
/// `keep` says which strays stay (bans nobody released): they are listed in `changes.kept`, not deleted.
pub fn diff(
    set: &'static str,
    want: &[Want],
    actual: &[Element],
    keep: &dyn Fn(&Key) -> bool,
    ops: &mut Vec<SetOp>,
    changes: &mut Changes,
) {
    let have: HashMap<Key, Option<Duration>> = actual.iter().map(|e| (e.key, e.expires.or(e.timeout))).collect();
    let wanted: HashMap<Key, Option<Duration>> = want.iter().copied().collect();
    for e in actual {
        if !wanted.contains_key(&e.key) {
            if keep(&e.key) {
                changes.kept.push((e.key, e.expires.or(e.timeout)));
                continue;
            }
            ops.push(SetOp::Delete { set, key: e.key });
            changes.removed += 1;
            changes.strays.push(e.key);
        }
    }
    for &(key, timeout) in want {
        match have.get(&key) {
            None => {
                ops.push(SetOp::Add { set, key, timeout });
                changes.added += 1;
            }
            Some(&t) if !close_enough(t, timeout) => {
                ops.extend(SetOp::refresh(set, key, timeout));
                changes.refreshed += 1;
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn flat(bans: &[(&str, i64)]) -> Vec<(String, i64)> {
        let v: Vec<(Cidr, i64)> = bans.iter().map(|(s, u)| (c(s), *u)).collect();
        let mut out: Vec<(String, i64)> = flatten_bans(&v).into_iter().map(|(c, u)| (c.to_string(), u)).collect();
        out.sort();
        out
    }

    #[test]
    fn nested_shorter_bans_vanish_and_longer_ones_split_the_outer() {
        assert_eq!(flat(&[("198.51.100.0/24", 100), ("198.51.100.7", 50)]), [("198.51.100.0/24".into(), 100)]);
        let got = flat(&[("198.51.100.0/30", 100), ("198.51.100.1", 500)]);
        assert_eq!(got, [("198.51.100.0".into(), 100), ("198.51.100.1".into(), 500), ("198.51.100.2/31".into(), 100)]);
        assert_eq!(flat(&[("2001:db8::/64", 5), ("203.0.113.0/24", 7)]).len(), 2);
        // The same prefix twice: the later end wins.
        assert_eq!(flat(&[("203.0.113.9", 5), ("203.0.113.9", 9)]), [("203.0.113.9".into(), 9)]);
    }

    #[test]
    fn allowlist_drops_covered_prefixes() {
        let got: Vec<String> =
            flatten_allow(&[c("203.0.113.5"), c("203.0.113.0/24"), c("2001:db8::/48"), c("2001:db8::1")])
                .iter()
                .map(|c| c.to_string())
                .collect();
        assert_eq!(got, ["203.0.113.0/24", "2001:db8::/48"]);
    }

    #[test]
    fn diff_adds_refreshes_and_removes_strays() {
        let k = |s: &str| Key::Net(c(s));
        let secs = Duration::from_secs;
        let actual = vec![
            Element { key: k("198.51.100.1"), timeout: Some(secs(600)), expires: Some(secs(599)) },
            Element { key: k("198.51.100.2"), timeout: Some(secs(600)), expires: Some(secs(10)) },
            Element { key: k("198.51.100.3"), timeout: None, expires: None },
        ];
        let want =
            vec![(k("198.51.100.1"), Some(secs(600))), (k("198.51.100.2"), Some(secs(600))), (k("198.51.100.4"), None)];
        let (mut ops, mut ch) = (Vec::new(), Changes::default());
        diff("ban4", &want, &actual, &|_| false, &mut ops, &mut ch);
        assert_eq!((ch.added, ch.refreshed, ch.removed), (1, 1, 1));
        assert_eq!(ch.strays, [k("198.51.100.3")]);
        // Kept strays stay in the kernel and are listed for adoption instead.
        let (mut kept_ops, mut kept) = (Vec::new(), Changes::default());
        diff("ban4", &want, &actual, &|_| true, &mut kept_ops, &mut kept);
        assert_eq!((kept.removed, kept.kept.clone()), (0, vec![(k("198.51.100.3"), None)]));
        assert!(!kept_ops.contains(&SetOp::Delete { set: "ban4", key: k("198.51.100.3") }));
        assert_eq!(ops[0], SetOp::Delete { set: "ban4", key: k("198.51.100.3") });
        assert_eq!(ops[1], SetOp::Delete { set: "ban4", key: k("198.51.100.2") });
        assert_eq!(ops[2], SetOp::Add { set: "ban4", key: k("198.51.100.2"), timeout: Some(secs(600)) });
        assert_eq!(ops[3], SetOp::Add { set: "ban4", key: k("198.51.100.4"), timeout: None });
    }

    proptest! {
        /// Every address is banned until the latest end among the bans covering it, by exactly one piece.
        #[test]
        fn flattening_keeps_each_address_latest_end(
            bans in proptest::collection::vec((0u8..=255, 24u8..=32, 1i64..6), 0..12),
        ) {
            let bans: Vec<(Cidr, i64)> = bans
                .into_iter()
                .map(|(host, len, end)| (Cidr::new([198, 51, 100, host].into(), len).unwrap(), end))
                .collect();
            let flat = flatten_bans(&bans);
            for host in 0..=255u8 {
                let ip = std::net::IpAddr::from([198, 51, 100, host]);
                let expect = bans.iter().filter(|(c, _)| c.contains(ip)).map(|(_, e)| *e).max();
                let pieces: Vec<i64> = flat.iter().filter(|(c, _)| c.contains(ip)).map(|(_, e)| *e).collect();
                prop_assert!(pieces.len() <= 1, "{ip} is in {} pieces", pieces.len());
                prop_assert_eq!(pieces.first().copied(), expect, "{}", ip);
            }
        }
    }
}
