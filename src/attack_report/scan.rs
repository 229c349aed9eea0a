//! The report's one pass over the window: every event row and conntrack minute is read once, in table order,
//! and folded into bounded aggregates (`Tally`). What SQLite's GROUP BY did with a temp B-tree per query and
//! per row (14 s for the distinct sources per bucket, 25 s for the top sources at 10M events) is done here with
//! the sketches of `sketch`.
//!
//! Memory is bounded whatever the number of distinct sources (4 KiB = one `Distinct` at most):
//! - per port with connections and per bucket (at most about 150 buckets), one `Distinct`: ports x 150 x 4 KiB,
//!   600 KiB a port at worst. The ports are the server's own (log `connect` lines and conntrack's watched
//!   ports), not the sources';
//! - top sources: [`TOP_CAPACITY`] counters (about 100 bytes each: under 0.5 MiB);
//! - top prefixes: [`PREFIX_CAPACITY`] counters, each with a `Distinct`: under 4.2 MiB;
//! - top users: [`TOP_CAPACITY`] counters, names cut at [`USER_KEY_BYTES`]: under 1 MiB;
//! - countries: at most 26 x 26 codes (and "unknown"), each with a `Distinct`: under 2.7 MiB;
//! - SYN-flood lines: twice [`SYN_LINES_LISTED`]; kernel counters: rules x buckets x 8 bytes.
//!
//! Exact where cheap (every count per bucket, the totals, the SYN lines and counters), estimated where exactness
//! would cost memory in proportion to the sources (distinct counts past `sketch::EXACT_LIMIT`, top lists past
//! their capacity); [`Tally::estimated`] says which.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::addr::{normalise, Cidr};
use crate::geo::{Country, GeoDb};

use super::sketch::{Distinct, Top};
use super::{Estimated, SynFloodLine, SYN_LINES_LISTED};

/// Counters for the top sources and users: any source with more than 1/4096 of the window's traffic is surely
/// listed, and a few thousand is more than the distinct sources of most days, so most reports stay exact.
pub const TOP_CAPACITY: usize = 4096;
/// Counters for the top prefixes: fewer, each carrying a `Distinct` (4 KiB at most).
pub const PREFIX_CAPACITY: usize = 1024;
/// User names are attacker-chosen and unbounded in length: longer ones are counted under their first bytes
/// (cut at a character boundary), which bounds the users' table and the page alike.
pub const USER_KEY_BYTES: usize = 128;
/// Direct-mapped cache of country lookups (a busy source is looked up once, not per row).
const GEO_CACHE: usize = 4096;

/// Kinds as stored (`kinds` table).
const CONNECT: i64 = 11;
pub const SYN_FLOOD: i64 = 14;
pub const KERNEL_COUNTER: i64 = 18;

/// The window the pass folds: bucket geometry, the port asked for, and the policy's prefix lengths.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub lo_us: i64,
    pub bucket_us: i64,
    pub buckets: usize,
    pub port: Option<u16>,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
}

impl Scope {
    fn bucket(&self, ts_us: i64) -> usize {
        (((ts_us - self.lo_us) / self.bucket_us).max(0) as usize).min(self.buckets.saturating_sub(1))
    }

    fn port_matches(&self, port: Option<u16>) -> bool {
        self.port.is_none() || port == self.port
    }
}

/// One row of `events`, borrowed from the statement (no allocation per row). `rule`, `local_addr` and `detail`
/// are read for the kinds that use them only (SYN-flood lines and kernel counters), `user` for failures only.
#[derive(Debug, Clone, Copy)]
pub struct EventRow<'r> {
    pub ts_us: i64,
    pub kind: i64,
    pub failure: bool,
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub user: Option<&'r str>,
    pub count: u64,
    pub rule: i64,
    pub local_addr: Option<IpAddr>,
    pub detail: Option<i64>,
}

/// One port's connections per bucket.
#[derive(Debug, Clone)]
pub struct PortTally {
    pub new: Vec<u64>,
    pub distinct: Vec<Distinct>,
}

/// What the pass found.
pub struct Tally<'g> {
    scope: Scope,
    geo: Option<&'g GeoDb>,
    geo_cache: Vec<Option<(IpAddr, Option<Country>)>>,
    pub events: u64,
    pub failures: u64,
    pub ports: BTreeMap<u16, PortTally>,
    /// Companion: the source's failures.
    pub sources: Top<IpAddr, u64>,
    /// Companion: the prefix's distinct sources.
    pub prefixes: Top<Cidr, Distinct>,
    pub users: Top<String, ()>,
    /// None: no country data.
    pub countries: Option<HashMap<Option<Country>, (u64, Distinct)>>,
    pub syn_total: u64,
    /// (time, order read, line): the earliest ones, pruned as it goes.
    syn: Vec<(i64, u64, SynFloodLine)>,
    /// Kernel counter rises per `labels.id` of the counter and bucket.
    pub counters: BTreeMap<i64, Vec<u64>>,
}

impl<'g> Tally<'g> {
    pub fn new(scope: Scope, geo: Option<&'g GeoDb>) -> Tally<'g> {
        let geo = geo.filter(|g| !g.is_empty());
        Tally {
            scope,
            geo,
            geo_cache: if geo.is_some() { vec![None; GEO_CACHE] } else { Vec::new() },
            events: 0,
            failures: 0,
            ports: BTreeMap::new(),
            sources: Top::new(TOP_CAPACITY),
            prefixes: Top::new(PREFIX_CAPACITY),
            users: Top::new(TOP_CAPACITY),
            countries: geo.map(|_| HashMap::new()),
            syn_total: 0,
            syn: Vec::new(),
            counters: BTreeMap::new(),
        }
    }

    /// An empty tally of the same window and the same hashing, to fold another part of the rows (on another
    /// thread) and [`Tally::merge`] back.
    pub fn sibling(&self) -> Tally<'g> {
        Tally {
            sources: self.sources.sibling(),
            prefixes: self.prefixes.sibling(),
            users: self.users.sibling(),
            ..Tally::new(self.scope, self.geo)
        }
    }

    /// Folds in `other`, a [`Tally::sibling`] that saw other rows of the window: every figure as if one tally
    /// had seen them all (counts add up, distinct sets unite, tops merge; see [`Top::merge`]).
    pub fn merge(&mut self, other: Tally<'g>) {
        self.events += other.events;
        self.failures += other.failures;
        for (port, theirs) in other.ports {
            match self.ports.entry(port) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(theirs);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let mine = o.get_mut();
                    for (n, t) in mine.new.iter_mut().zip(theirs.new) {
                        *n += t;
                    }
                    for (d, t) in mine.distinct.iter_mut().zip(&theirs.distinct) {
                        d.merge(t);
                    }
                }
            }
        }
        self.sources.merge(other.sources, |mine, theirs| *mine += theirs);
        self.prefixes.merge(other.prefixes, |mine, theirs| mine.merge(&theirs));
        self.users.merge(other.users, |_, _| ());
        if let (Some(mine), Some(theirs)) = (self.countries.as_mut(), other.countries) {
            for (country, (events, sources)) in theirs {
                let (n, d) = mine.entry(country).or_default();
                *n += events;
                d.merge(&sources);
            }
        }
        // The other's lines were read after this one's: their order numbers follow.
        let read = self.syn_total;
        self.syn_total += other.syn_total;
        self.syn.extend(other.syn.into_iter().map(|(ts, seq, line)| (ts, seq + read, line)));
        self.prune_syn();
        for (rule, theirs) in other.counters {
            let mine = self.counters.entry(rule).or_insert_with(|| vec![0; theirs.len()]);
            for (n, t) in mine.iter_mut().zip(theirs) {
                *n += t;
            }
        }
    }

    /// Folds one event row (already inside the window's times; rows of other ports may come, and are sorted out
    /// here: the kernel counters of no port belong to every port's report).
    pub fn event(&mut self, e: &EventRow) {
        let scope = self.scope;
        if e.kind == KERNEL_COUNTER && (scope.port.is_none() || e.port.is_none() || e.port == scope.port) {
            let b = scope.bucket(e.ts_us);
            self.counters.entry(e.rule).or_insert_with(|| vec![0; scope.buckets])[b] += e.count;
        }
        if !scope.port_matches(e.port) {
            return;
        }
        self.events += e.count;
        if e.failure {
            self.failures += e.count;
            if let Some(user) = e.user {
                self.users.add(cut(user, USER_KEY_BYTES), e.count);
            }
        }
        if e.kind == SYN_FLOOD {
            self.syn_line(e);
        }
        if let Some(addr) = e.addr {
            let connect = match e.port {
                Some(port) if e.kind == CONNECT => Some(port),
                _ => None,
            };
            self.source(addr, e.ts_us, e.count, if e.failure { e.count } else { 0 }, connect);
        }
    }

    /// Folds one conntrack minute of new connections (already of the window's minutes).
    pub fn conn_new(&mut self, addr: IpAddr, port: u16, minute_us: i64, count: u64) {
        if self.scope.port_matches(Some(port)) {
            self.source(addr, minute_us, count, 0, Some(port));
        }
    }

    /// A source's activity: its rank, its network's, its country's, and (`connect_port`: a new connection) the
    /// port's chart.
    fn source(&mut self, addr: IpAddr, ts_us: i64, count: u64, failures: u64, connect_port: Option<u16>) {
        let addr = normalise(addr);
        let hash = Distinct::hash(addr);
        if let Some(port) = connect_port {
            let buckets = self.scope.buckets;
            let p = self
                .ports
                .entry(port)
                .or_insert_with(|| PortTally { new: vec![0; buckets], distinct: vec![Distinct::default(); buckets] });
            let b = self.scope.bucket(ts_us);
            p.new[b] += count;
            p.distinct[b].insert_hash(hash);
        }
        *self.sources.add_hashed(hash, &addr, count) += failures;
        let len = if addr.is_ipv4() { self.scope.prefix_v4 } else { self.scope.prefix_v6 };
        if let Some(prefix) = Cidr::new(addr, len) {
            // Prefixes of one family share a length: the network address alone identifies one.
            self.prefixes.add_hashed(Distinct::hash(prefix.addr()), &prefix, count).insert_hash(hash);
        }
        if let Some(geo) = self.geo {
            let slot = hash as usize % GEO_CACHE;
            let country = match self.geo_cache[slot] {
                Some((cached, country)) if cached == addr => country,
                _ => {
                    let country = geo.lookup(addr);
                    self.geo_cache[slot] = Some((addr, country));
                    country
                }
            };
            if let Some(countries) = self.countries.as_mut() {
                let (events, sources) = countries.entry(country).or_default();
                *events += count;
                sources.insert_hash(hash);
            }
        }
    }

    fn syn_line(&mut self, e: &EventRow) {
        self.syn_total += 1;
        let line = SynFloodLine {
            time: super::from_us(e.ts_us),
            port: e.port,
            local_addr: e.local_addr,
            // detail 2 is "Dropping request"; anything else the kernel said was cookies.
            cookies: e.detail != Some(2),
        };
        self.syn.push((e.ts_us, self.syn_total, line));
        if self.syn.len() >= 2 * SYN_LINES_LISTED {
            self.prune_syn();
        }
    }

    /// Keeps the earliest lines (rows come in id order, which is nearly but not surely time order).
    fn prune_syn(&mut self) {
        self.syn.sort_by_key(|(ts, seq, _)| (*ts, *seq));
        self.syn.truncate(SYN_LINES_LISTED);
    }

    /// The earliest SYN-flood lines, in time order.
    pub fn syn_lines(&mut self) -> Vec<SynFloodLine> {
        self.prune_syn();
        self.syn.iter().map(|(_, _, l)| l.clone()).collect()
    }

    /// Which of the figures are estimates.
    pub fn estimated(&self) -> Estimated {
        let buckets = self.ports.values().flat_map(|p| p.distinct.iter());
        let prefixes = self.prefixes.iter().map(|(_, _, d)| d);
        let countries = self.countries.iter().flat_map(|c| c.values().map(|(_, d)| d));
        Estimated {
            distinct: buckets.chain(prefixes).chain(countries).any(|d| !d.is_exact()),
            sources: !self.sources.is_exact(),
            prefixes: !self.prefixes.is_exact(),
            users: !self.users.is_exact(),
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;

    #[test]
    fn the_kind_codes_are_the_store_s() {
        assert_eq!(CONNECT, Kind::Connect.code());
        assert_eq!(SYN_FLOOD, Kind::SynFlood.code());
        assert_eq!(KERNEL_COUNTER, Kind::KernelCounter.code());
        assert_eq!(super::super::CONN_NEW, Kind::ConnNew.code());
    }

    #[test]
    fn long_user_names_are_cut_at_a_character_boundary() {
        assert_eq!(cut("admin", USER_KEY_BYTES), "admin");
        let long = "é".repeat(100);
        let got = cut(&long, USER_KEY_BYTES);
        assert_eq!(got.len(), USER_KEY_BYTES);
        assert_eq!(cut("aé", 2), "a", "never inside a character");
    }

    #[test]
    fn the_earliest_syn_lines_are_kept_whatever_the_order_read() {
        let scope = Scope { lo_us: 0, bucket_us: 60_000_000, buckets: 10, port: None, prefix_v4: 24, prefix_v6: 64 };
        let mut tally = Tally::new(scope, None);
        // Read latest first: 500 lines, times 499 s down to 0 s.
        for i in (0..500i64).rev() {
            let row = EventRow {
                ts_us: i * 1_000_000,
                kind: SYN_FLOOD,
                failure: false,
                addr: None,
                port: Some(587),
                user: None,
                count: 1,
                rule: 1,
                local_addr: None,
                detail: Some(2),
            };
            tally.event(&row);
        }
        assert_eq!(tally.syn_total, 500);
        let lines = tally.syn_lines();
        assert_eq!(lines.len(), SYN_LINES_LISTED);
        let secs: Vec<i64> = lines.iter().map(|l| l.time.timestamp()).collect();
        assert_eq!(secs, (0..SYN_LINES_LISTED as i64).collect::<Vec<_>>());
        assert!(lines.iter().all(|l| !l.cookies && l.port == Some(587)));
    }
}
