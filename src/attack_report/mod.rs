//! The attack report (`floodgate report`): the store's record of a period as plain figures, ready to draw.
//! (Not the advisor's text report, which is `advise::report`.)
//!
//! Data flows one way: [`AttackReport::read`] reads the window's events and conntrack minutes once, in one
//! sequential pass split over two threads (`scan`, folding them into the bounded sketches of `sketch`, merged
//! at the end: a day of ten million events in about three seconds, in a few MiB), and the few decisions with
//! small queries; `svg` draws charts from the figures and
//! `html` lays out the one self-contained page. Counts are exact; distinct sources past a few hundred and the
//! top lists past a few thousand entries are estimates, and [`Estimated`] says so for the page to tell. Everything an attacker chose (user names,
//! decision reasons quoting them) stays a plain string here; escaping it is the page's job, done in one place.

pub mod html;
mod scan;
mod sketch;
pub mod svg;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};

use crate::addr::{ip_from_bytes, Cidr};
use crate::advise::{Finding, Severity};
use crate::decision::LimitMode;
use crate::geo::{Country, GeoDb};
use crate::service::Services;
use crate::store::Store;

/// How many rows the top-N tables keep.
pub const TOP: usize = 20;
/// SYN-flood lines listed one by one; the rest are counted.
pub const SYN_LINES_LISTED: usize = 100;
/// Decisions listed one by one (the latest).
pub const DECISIONS_LISTED: usize = 40;
/// About this many buckets across the period: enough resolution for a chart 1,000 pixels wide, few enough rows.
const TARGET_BUCKETS: u64 = 150;
/// conntrack's counts are stored per minute: a finer bucket would show minute-long steps as spikes.
const MIN_BUCKET: Duration = Duration::from_secs(60);

/// The period and port the report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Only this local port (None: every port).
    pub port: Option<u16>,
}

/// What the report needs besides the store: the services (port names, the jail's bans to their ports), the
/// prefix lengths the policy aggregates at, country data when loaded, and the advisor's findings.
pub struct Context<'a> {
    pub services: &'a Services,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    pub geo: Option<&'a GeoDb>,
    pub findings: Vec<Finding>,
}

/// Where a ban came from, as the operator thinks of it (the store keeps the policy's finer origin string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BanOrigin {
    /// A service's jail: failures per source (`jail:<service>`).
    Jail,
    /// A source, or a network's hosts, opening connections too fast (`policy:dos`, `policy:prefix_dos`).
    Dos,
    /// Enough banned hosts in one network: the network (`policy:prefix`).
    Prefix,
    /// The operator (`manual`; `operator` for a fleet-wide block).
    Manual,
    /// Another host of the fleet.
    Fleet,
    /// Anything else (`adopted`: found in the kernel, not in the store).
    Other,
}

impl BanOrigin {
    pub const ALL: [BanOrigin; 6] =
        [BanOrigin::Jail, BanOrigin::Dos, BanOrigin::Prefix, BanOrigin::Manual, BanOrigin::Fleet, BanOrigin::Other];

    /// The origin class of a `decisions.origin` string (see policy/engine.rs and policy/jail.rs).
    pub fn of(origin: &str) -> BanOrigin {
        match origin {
            "jail" => BanOrigin::Jail,
            o if o.starts_with("jail:") => BanOrigin::Jail,
            "policy:dos" | "policy:prefix_dos" => BanOrigin::Dos,
            "policy:prefix" => BanOrigin::Prefix,
            crate::decision::MANUAL | "operator" => BanOrigin::Manual,
            o if o == "fleet" || o.starts_with("fleet:") => BanOrigin::Fleet,
            _ => BanOrigin::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BanOrigin::Jail => "jail",
            BanOrigin::Dos => "dos",
            BanOrigin::Prefix => "prefix",
            BanOrigin::Manual => "manual",
            BanOrigin::Fleet => "fleet",
            BanOrigin::Other => "other",
        }
    }
}

/// A period during which a port was under a limit (or the SYN proxy), from the decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPeriod {
    pub mode: LimitMode,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A moment marked on a port's chart. Alerts are not stored; the decisions they come with are: a limit switched
/// on is the DDoS alert, the policy's lift is the convergence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub time: DateTime<Utc>,
    pub kind: MarkKind,
    /// The decision's reason (may quote what an attacker sent: escaped when drawn).
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    Alert,
    Converged,
}

/// One local port over the period.
#[derive(Debug, Clone, PartialEq)]
pub struct PortChart {
    pub port: u16,
    pub service: Option<String>,
    /// New connections (log `connect` lines and conntrack NEW) per second, per bucket.
    pub new_per_s: Vec<f64>,
    /// Distinct source addresses per bucket.
    pub distinct: Vec<u64>,
    /// Bans per bucket that concern this port: its service's jail, plus every ban not tied to a port.
    pub bans: Vec<u64>,
    pub limits: Vec<LimitPeriod>,
    pub marks: Vec<Mark>,
}

impl PortChart {
    pub fn is_empty(&self) -> bool {
        self.new_per_s.iter().all(|v| *v == 0.0) && self.limits.is_empty() && self.marks.is_empty()
    }
}

/// A source address ranked by what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    pub addr: IpAddr,
    /// Events plus conntrack connections.
    pub events: u64,
    pub failures: u64,
    pub banned: bool,
    pub country: Option<Country>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixRow {
    pub prefix: Cidr,
    pub events: u64,
    pub sources: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryRow {
    pub country: Option<Country>,
    pub events: u64,
    pub sources: u64,
}

/// One kernel "Possible SYN flooding" line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynFloodLine {
    pub time: DateTime<Utc>,
    pub port: Option<u16>,
    pub local_addr: Option<IpAddr>,
    /// The kernel sent cookies (true) or dropped requests (false).
    pub cookies: bool,
}

/// A kernel counter's recorded rises per bucket: netstat.* (SYN cookies, queue drops) and nft.limit_* (what
/// floodgate's own limit rules dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSeries {
    pub name: String,
    pub per_bucket: Vec<u64>,
}

impl CounterSeries {
    pub fn total(&self) -> u64 {
        self.per_bucket.iter().sum()
    }
}

/// A decision as listed in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    pub time: DateTime<Utc>,
    pub action: String,
    pub target: String,
    pub origin: String,
    pub reason: String,
}

/// Which figures are estimates rather than exact counts (each false: exact). The page says so next to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimated {
    /// Some distinct-source count (a port's bucket, a prefix's or a country's sources) passed
    /// `sketch::EXACT_LIMIT` and is a HyperLogLog estimate (about 1.6% standard error).
    pub distinct: bool,
    /// More distinct sources than `scan::TOP_CAPACITY`: the top sources' counts are lower bounds (what each
    /// surely sent), and a source near the bottom of the list may be missing.
    pub sources: bool,
    /// The same for the prefixes (`scan::PREFIX_CAPACITY` counters).
    pub prefixes: bool,
    /// The same for the user names.
    pub users: bool,
}

/// Everything the page shows, as figures.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackReport {
    pub window: Window,
    pub bucket: Duration,
    /// Bucket i covers [since + i * bucket, since + (i + 1) * bucket) clipped to `until`.
    pub buckets: usize,
    pub events: u64,
    pub failures: u64,
    pub ports: Vec<PortChart>,
    /// Bans made per bucket, by origin (origins with none left out).
    pub bans: Vec<(BanOrigin, Vec<u64>)>,
    pub top_sources: Vec<SourceRow>,
    pub top_prefixes: Vec<PrefixRow>,
    /// None: no country data loaded.
    pub countries: Option<Vec<CountryRow>>,
    /// User names tried in failed logins, with their attempts (attacker-chosen text).
    pub users: Vec<(String, u64)>,
    pub syn_lines: Vec<SynFloodLine>,
    pub syn_lines_total: u64,
    pub counters: Vec<CounterSeries>,
    pub decisions: Vec<DecisionRow>,
    pub findings: Vec<Finding>,
    pub estimated: Estimated,
}

fn us(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_us(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

/// The bucket width for a period: about [`TARGET_BUCKETS`] buckets, a whole number of minutes, at least one.
pub fn bucket_for(span: Duration) -> Duration {
    let minutes = (span.as_secs().div_ceil(TARGET_BUCKETS * 60) as i64).max(1);
    // Round up to a width people read easily on an axis.
    let nice = [1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 240, 360, 720, 1440];
    let m = nice.iter().copied().find(|n| *n >= minutes).unwrap_or(minutes);
    Duration::from_secs(m as u64 * 60).max(MIN_BUCKET)
}

impl AttackReport {
    /// Reads the report of `window` from `store` (opened read-only by the caller).
    pub fn read(store: &Store, window: Window, cx: Context) -> Result<AttackReport> {
        AttackReport::read_split(store, window, cx, SPLIT_ROWS)
    }

    /// [`AttackReport::read`], reading the events on two threads past `split_rows` ids.
    fn read_split(store: &Store, window: Window, cx: Context, split_rows: i64) -> Result<AttackReport> {
        anyhow::ensure!(window.until > window.since, "the report's period is empty (--until is not after --since)");
        let span = (window.until - window.since).to_std().unwrap_or_default();
        let bucket = bucket_for(span);
        let buckets = span.as_micros().div_ceil(bucket.as_micros()) as usize;
        let path = store.path();
        let ctx = |what: &str| format!("{path}: reading {what} for the report");
        let q = Query::new(store.reader(), &window, bucket, buckets).with_context(|| ctx("the window"))?;
        let scope = scan::Scope {
            lo_us: q.lo,
            bucket_us: q.bucket_us,
            buckets,
            port: window.port,
            prefix_v4: cx.prefix_v4,
            prefix_v6: cx.prefix_v6,
        };
        let mut tally = scan::Tally::new(scope, cx.geo);
        // A second connection for the other core; without one (an in-memory store, or it cannot be opened)
        // the pass runs on one thread, to the same result.
        let helper = store
            .another_reader()
            .and_then(|opened| opened.map_err(|e| tracing::debug!(error = %e, "the report reads on one thread")).ok());
        q.scan(&mut tally, helper, split_rows).with_context(|| ctx("the events"))?;
        let decisions = q.limit_decisions().with_context(|| ctx("the limits"))?;
        let ban_rows = q.bans_by_origin().with_context(|| ctx("the bans"))?;
        let ports = q.port_charts(&tally, cx.services, &decisions, &ban_rows);
        let mut bans: BTreeMap<BanOrigin, Vec<u64>> = BTreeMap::new();
        for (b, origin, n) in &ban_rows {
            bans.entry(BanOrigin::of(origin)).or_insert_with(|| vec![0; buckets])[*b] += n;
        }
        for (b, n) in q.fleet_bans().with_context(|| ctx("the fleet's bans"))? {
            bans.entry(BanOrigin::Fleet).or_insert_with(|| vec![0; buckets])[b] += n;
        }
        let mut top_sources = Vec::new();
        for (addr, events, failures) in tally.sources.top(TOP, |a, b| a.cmp(b)) {
            top_sources.push(SourceRow {
                addr: *addr,
                events,
                failures: *failures,
                banned: q.was_banned(*addr).with_context(|| ctx("the bans of a source"))?,
                country: cx.geo.and_then(|g| g.lookup(*addr)),
            });
        }
        let top_prefixes = tally
            .prefixes
            .top(TOP, |a, b| a.cmp(b))
            .into_iter()
            .map(|(prefix, events, sources)| PrefixRow { prefix: *prefix, events, sources: sources.count() })
            .collect();
        let countries = tally.countries.as_ref().map(|by| {
            let mut rows: Vec<CountryRow> = by
                .iter()
                .map(|(country, (events, sources))| CountryRow {
                    country: *country,
                    events: *events,
                    sources: sources.count(),
                })
                .collect();
            rows.sort_by(|a, b| b.events.cmp(&a.events).then(a.country.cmp(&b.country)));
            rows.truncate(TOP);
            rows
        });
        let users = tally.users.top(TOP, |a, b| a.cmp(b)).into_iter().map(|(u, n, _)| (u.clone(), n)).collect();
        let syn_lines = tally.syn_lines();
        let involved: BTreeSet<u16> =
            ports.iter().map(|p| p.port).chain(syn_lines.iter().filter_map(|l| l.port)).collect();
        Ok(AttackReport {
            window,
            bucket,
            buckets,
            events: tally.events,
            failures: tally.failures,
            bans: bans.into_iter().filter(|(_, v)| v.iter().any(|n| *n > 0)).collect(),
            top_sources,
            top_prefixes,
            countries,
            users,
            syn_lines,
            syn_lines_total: tally.syn_total,
            counters: q.counters(&tally.counters).with_context(|| ctx("the kernel counters' names"))?,
            decisions: q.latest_decisions().with_context(|| ctx("the decisions"))?,
            findings: findings_for(cx.findings, &involved),
            estimated: tally.estimated(),
            ports,
        })
    }

    /// The start of bucket `i`.
    pub fn bucket_start(&self, i: usize) -> DateTime<Utc> {
        self.window.since + crate::policy::span(self.bucket * i as u32)
    }
}

/// The page for `window` of the store at `db`: the config's services and prefix lengths, its country data when
/// loaded, and the advisor's findings on `machine` with the store's flood history (None: no advisor section).
/// What both `floodgate report` and the convergence notice render.
pub fn render_page(
    db: &std::path::Path,
    config: &crate::config::Config,
    window: Window,
    machine: Option<&crate::advise::Machine>,
    now: DateTime<Utc>,
) -> Result<String> {
    let store = Store::open_read_only(db).context("opening the event store for the report")?;
    // Country data is optional: without a copy (or with a damaged one) the report says none is loaded.
    let geo = GeoDb::load_dir(&config.geo.dir, &config.geo.sources)
        .map(|(g, _)| g)
        .map_err(|e| tracing::debug!(error = %e, "no country data for the report"))
        .ok();
    let findings = match machine {
        Some(m) => {
            let history = crate::advise::History::read(&store, now).map_err(|e| format!("cannot read the store: {e}"));
            crate::advise::advise(m, history.as_ref().map_err(String::as_str), config)
        }
        None => Vec::new(),
    };
    let cx = Context {
        services: &config.services,
        prefix_v4: config.policy.prefix_v4,
        prefix_v6: config.policy.prefix_v6,
        geo: geo.as_ref(),
        findings,
    };
    let report = AttackReport::read(&store, window, cx)?;
    Ok(html::render(&report, now))
}

/// The advisor's findings that matter to this attack: every warning and critical one (a machine-wide setting
/// such as SYN cookies concerns every port), and informational ones that name a port involved.
pub fn findings_for(findings: Vec<Finding>, ports: &BTreeSet<u16>) -> Vec<Finding> {
    let names_port = |f: &Finding| {
        ports.iter().any(|p| {
            let s = &f.subject;
            s.contains(&format!("port {p} ")) || s.ends_with(&format!("port {p}")) || s.contains(&format!(":{p} "))
        })
    };
    findings.into_iter().filter(|f| f.severity >= Severity::Warning || names_port(f)).collect()
}

/// The reads, all bounded by the window (and the port, when one is asked for): the one pass over the events
/// ([`Query::scan`]) and small queries on the decisions.
struct Query<'a> {
    conn: &'a Connection,
    /// The ids the window's events lie between (see [`Query::new`]); None: no event in the window.
    ids: Option<(i64, i64)>,
    /// The conntrack minutes in the window, through their time index or by a scan of the table.
    minutes_in: &'static str,
    /// How many conntrack minutes the window holds (of every kind).
    minute_rows: i64,
    lo: i64,
    hi: i64,
    bucket_us: i64,
    buckets: usize,
    port: Option<i64>,
}

fn addr_of(v: ValueRef) -> Option<IpAddr> {
    match v {
        ValueRef::Blob(b) => ip_from_bytes(b),
        _ => None,
    }
}

fn port_of(v: ValueRef) -> Option<u16> {
    match v {
        ValueRef::Integer(p) => u16::try_from(p).ok(),
        _ => None,
    }
}

/// Folds the events of times `lo..hi` (of `port`, when one is asked for) and ids `first..=last`, read through
/// `conn` (see [`Query::scan`]).
fn scan_events(
    conn: &Connection,
    (lo, hi, port): (i64, i64, Option<i64>),
    (first, last): (i64, i64),
    tally: &mut scan::Tally,
) -> rusqlite::Result<()> {
    let mut st = conn.prepare(
        "SELECT ts_us, kind, failure, addr, port, user, count, rule, local_addr, detail FROM events
         WHERE id BETWEEN ?4 AND ?5 AND +ts_us >= ?1 AND +ts_us < ?2 AND (?3 IS NULL OR port IS NULL OR port = ?3)",
    )?;
    let mut rows = st.query(params![lo, hi, port, first, last])?;
    while let Some(r) = rows.next()? {
        // Each value read costs a few calls into SQLite (a quarter of the pass at 10M rows): the columns only
        // some kinds use are read for those rows alone.
        let kind: i64 = r.get(1)?;
        let failure = r.get::<_, i64>(2)? != 0;
        let rare = kind == scan::SYN_FLOOD || kind == scan::KERNEL_COUNTER;
        let row = scan::EventRow {
            ts_us: r.get(0)?,
            kind,
            failure,
            addr: addr_of(r.get_ref(3)?),
            port: port_of(r.get_ref(4)?),
            user: match failure.then(|| r.get_ref(5)).transpose()? {
                Some(ValueRef::Text(t)) => std::str::from_utf8(t).ok(),
                _ => None,
            },
            count: r.get::<_, i64>(6)?.max(0) as u64,
            rule: if rare { r.get(7)? } else { 0 },
            local_addr: if rare { addr_of(r.get_ref(8)?) } else { None },
            detail: if rare { r.get(9)? } else { None },
        };
        tally.event(&row);
    }
    Ok(())
}

/// Folds the conntrack minutes of new connections of times `lo..hi` (of `port`, when one is asked for); `minutes`
/// is [`Query::minutes_in`].
fn scan_minutes(
    conn: &Connection,
    minutes: &str,
    (lo, hi, port): (i64, i64, Option<i64>),
    tally: &mut scan::Tally,
) -> rusqlite::Result<()> {
    let mut st = conn.prepare(&format!(
        "SELECT addr, port, minute, count FROM conn_minutes WHERE {minutes} AND kind = ?3 AND (?4 IS NULL OR port = ?4)"
    ))?;
    let mut rows = st.query(params![lo, hi, CONN_NEW, port])?;
    while let Some(r) = rows.next()? {
        if let (Some(addr), Some(port)) = (addr_of(r.get_ref(0)?), port_of(r.get_ref(1)?)) {
            tally.conn_new(addr, port, r.get(2)?, r.get::<_, i64>(3)?.max(0) as u64);
        }
    }
    Ok(())
}

/// A limit period as read from the decisions (times in microseconds).
struct Held {
    port: u16,
    mode: LimitMode,
    from: i64,
    /// None: still on at the window's end.
    to: Option<i64>,
    /// The policy lifted it: the convergence summary.
    converged: Option<String>,
}

/// conntrack's new connections, stored per minute in conn_minutes: with the log's `connect` lines (see
/// `scan`), what the policy counts for its rates.
const CONN_NEW: i64 = 16;

/// Windows of more event ids than this are read by two threads (see [`Query::scan`]); below it a second
/// connection and thread cost more than they save.
const SPLIT_ROWS: i64 = 200_000;

impl<'a> Query<'a> {
    /// The query plans that keep a day of ten million events to seconds. SQLite would walk the time index and
    /// fetch every row from the table by its id, one B-tree descent each; the events' ids follow their arrival,
    /// so the window's rows lie in one id range, read as a sequential scan of the table and filtered by time.
    /// The range comes from `event_minutes` (each minute's first and last id, kept with the events: a day is
    /// 1,440 rows to read); a store of an older schema, read as it is, gets it from the time index instead
    /// (exact too, but a walk over every entry of the window: 2.5 s at 10M events). conntrack's minutes are
    /// keyed by source: their time index helps only when the window holds a small part of them (under 1/8),
    /// otherwise the table is scanned (`+minute` keeps SQLite off the index).
    fn new(conn: &'a Connection, window: &Window, bucket: Duration, buckets: usize) -> rusqlite::Result<Query<'a>> {
        let (lo, hi) = (us(&window.since), us(&window.until));
        let indexed: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'event_minutes')",
            [],
            |r| r.get(0),
        )?;
        let range = if indexed {
            // A minute overlaps the window if it starts before its end and ends after its start.
            "SELECT min(first_id), max(last_id) FROM event_minutes WHERE minute > ?1 - 60000000 AND minute < ?2"
        } else {
            "SELECT min(id), max(id) FROM events WHERE ts_us >= ?1 AND ts_us < ?2"
        };
        let (first, last): (Option<i64>, Option<i64>) =
            conn.query_row(range, params![lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let in_window: i64 = conn.query_row(
            "SELECT count(*) FROM conn_minutes WHERE minute >= ?1 AND minute < ?2",
            params![lo, hi],
            |r| r.get(0),
        )?;
        let all: i64 = conn.query_row("SELECT count(*) FROM conn_minutes", [], |r| r.get(0))?;
        let minutes_in =
            if in_window * 8 > all { "+minute >= ?1 AND +minute < ?2" } else { "minute >= ?1 AND minute < ?2" };
        Ok(Query {
            conn,
            ids: first.zip(last),
            minutes_in,
            minute_rows: in_window,
            lo,
            hi,
            bucket_us: bucket.as_micros() as i64,
            buckets,
            port: window.port.map(i64::from),
        })
    }

    fn bucket(&self, b: i64) -> usize {
        (b.max(0) as usize).min(self.buckets.saturating_sub(1))
    }

    /// The one pass: the window's events in id order (a sequential read of the table, only the columns the
    /// report needs; rows of other ports are dropped by SQLite, except the kernel counters of no port), then its
    /// conntrack minutes. Values are borrowed from the statement: nothing is allocated per row.
    ///
    /// With `helper` (a second connection to the same file) and more than `split_rows` ids ([`SPLIT_ROWS`]), the second half
    /// of the ids is read on another thread into a sibling tally, merged afterwards: the read and the folding
    /// are both CPU work, so two cores take about half the time. Each connection reads its own snapshot; rows
    /// written meanwhile have ids past the range, so only a prune running at that moment could make the halves
    /// disagree (about rows older than the retention).
    fn scan(&self, tally: &mut scan::Tally, helper: Option<Store>, split_rows: i64) -> rusqlite::Result<()> {
        let times = (self.lo, self.hi, self.port);
        let minutes = self.minutes_in;
        let Some((first, last)) = self.ids else {
            return scan_minutes(self.conn, minutes, times, tally);
        };
        match helper {
            Some(helper) if last - first >= split_rows => {
                // Even shares: this thread reads the first ids, the other the rest and the conntrack minutes.
                let rows = last - first + 1;
                let mid = first + ((rows + self.minute_rows) / 2).clamp(1, rows) - 1;
                let mut theirs = tally.sibling();
                std::thread::scope(|s| {
                    let theirs = &mut theirs;
                    let other = s.spawn(move || {
                        scan_events(helper.reader(), times, (mid + 1, last), theirs)?;
                        scan_minutes(helper.reader(), minutes, times, theirs)
                    });
                    let mine = scan_events(self.conn, times, (first, mid), tally);
                    let other = other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    mine.and(other)
                })?;
                tally.merge(theirs);
                Ok(())
            }
            _ => {
                scan_events(self.conn, times, (first, last), tally)?;
                scan_minutes(self.conn, minutes, times, tally)
            }
        }
    }

    /// New connections and distinct sources per port and bucket (from the pass), with the limits, their marks
    /// and the bans.
    fn port_charts(
        &self,
        tally: &scan::Tally,
        services: &Services,
        limits: &[Held],
        ban_rows: &[(usize, String, u64)],
    ) -> Vec<PortChart> {
        let mut charts: BTreeMap<u16, PortChart> = BTreeMap::new();
        let service_of = |port: u16| services.iter().find(|(_, s)| s.ports.contains(&port)).map(|(n, _)| n.clone());
        let empty = |port: u16, n: usize| PortChart {
            port,
            service: service_of(port),
            new_per_s: vec![0.0; n],
            distinct: vec![0; n],
            bans: vec![0; n],
            limits: Vec::new(),
            marks: Vec::new(),
        };
        for (&port, t) in &tally.ports {
            let c = charts.entry(port).or_insert_with(|| empty(port, self.buckets));
            for (b, n) in t.new.iter().enumerate() {
                c.new_per_s[b] = *n as f64 / self.bucket_seconds(b);
            }
            for (b, d) in t.distinct.iter().enumerate() {
                c.distinct[b] = d.count();
            }
        }
        for Held { port, mode, from, to, converged } in limits {
            if self.port.is_some_and(|p| p != i64::from(*port)) {
                continue;
            }
            let c = charts.entry(*port).or_insert_with(|| empty(*port, self.buckets));
            let from = (*from).max(self.lo);
            let to = to.unwrap_or(self.hi).min(self.hi);
            if to > from {
                c.limits.push(LimitPeriod { mode: *mode, from: from_us(from), to: from_us(to) });
            }
            if let Some(summary) = converged.as_ref().filter(|_| to < self.hi) {
                c.marks.push(Mark { time: from_us(to), kind: MarkKind::Converged, text: summary.clone() });
            }
        }
        // The alert: where a limit period begins inside the window (the mode change the DDoS alert reports).
        for c in charts.values_mut() {
            let starts: Vec<Mark> = c
                .limits
                .iter()
                .filter(|l| us(&l.from) > self.lo)
                .map(|l| Mark {
                    time: l.from,
                    kind: MarkKind::Alert,
                    text: format!("port {}: {} limit on", c.port, l.mode.as_str()),
                })
                .collect();
            c.marks.extend(starts);
            c.marks.sort_by_key(|m| m.time);
        }
        // Bans: a jail's go to its service's ports; the others (DoS, prefix, manual) are not tied to one port.
        for (b, origin, n) in ban_rows {
            let jail_ports: Option<&[u16]> =
                origin.strip_prefix("jail:").and_then(|svc| services.get(svc)).map(|s| s.ports.as_slice());
            for c in charts.values_mut() {
                if jail_ports.is_none_or(|ps| ps.contains(&c.port)) {
                    c.bans[*b] += n;
                }
            }
        }
        charts.into_values().collect()
    }

    /// The length of bucket `b` in seconds: the last one may be cut short by the window's end.
    fn bucket_seconds(&self, b: usize) -> f64 {
        let start = self.lo + b as i64 * self.bucket_us;
        ((start + self.bucket_us).min(self.hi) - start).max(1) as f64 / 1e6
    }

    /// Limit periods overlapping the window. A refresh extends its period; a lift ends it; a lapse ends it at
    /// its `until`.
    fn limit_decisions(&self) -> rusqlite::Result<Vec<Held>> {
        let mut st = self.conn.prepare(
            "SELECT ts_us, action, target, until_us, origin, reason FROM decisions
             WHERE ts_us < ?2 AND (action LIKE 'limit\\_%' ESCAPE '\\' OR action LIKE 'lift\\_%' ESCAPE '\\')
               AND (ts_us >= ?1 OR until_us >= ?1)
             ORDER BY ts_us, id",
        )?;
        let rows = st.query_map(params![self.lo, self.hi], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut open: HashMap<(u16, LimitMode), (i64, i64)> = HashMap::new();
        let mut out = Vec::new();
        for row in rows {
            let (ts, action, target, until, origin, reason) = row?;
            let (Ok(port), Some((verb, mode))) = (target.parse::<u16>(), action.split_once('_')) else { continue };
            let Some(mode) = LimitMode::parse(mode) else { continue };
            match verb {
                "limit" => {
                    let until = until.unwrap_or(self.hi);
                    match open.get_mut(&(port, mode)) {
                        // A refresh while on: the period goes on to the new end.
                        Some((_, end)) if *end >= ts => *end = until,
                        Some(&mut (from, end)) => {
                            out.push(Held { port, mode, from, to: Some(end), converged: None });
                            open.insert((port, mode), (ts, until));
                        }
                        None => {
                            open.insert((port, mode), (ts, until));
                        }
                    }
                }
                "lift" => {
                    if let Some((from, end)) = open.remove(&(port, mode)) {
                        // The policy's lift of a limit still on is the convergence; its reason is the summary.
                        let converged = (origin == "policy" && ts <= end).then_some(reason);
                        out.push(Held { port, mode, from, to: Some(ts.min(end)), converged });
                    }
                }
                _ => {}
            }
        }
        for ((port, mode), (from, end)) in open {
            out.push(Held { port, mode, from, to: (end < self.hi).then_some(end), converged: None });
        }
        out.sort_by_key(|l| (l.port, l.from));
        Ok(out)
    }

    /// Bans made per bucket and origin string.
    fn bans_by_origin(&self) -> rusqlite::Result<Vec<(usize, String, u64)>> {
        let mut st = self.conn.prepare(
            "SELECT (ts_us - ?1) / ?3, origin, COUNT(*) FROM decisions
             WHERE action = 'ban' AND ts_us >= ?1 AND ts_us < ?2 GROUP BY 1, 2",
        )?;
        let rows = st.query_map(params![self.lo, self.hi, self.bucket_us], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
        })?;
        rows.map(|r| r.map(|(b, o, n)| (self.bucket(b), o, n as u64))).collect()
    }

    /// Other hosts' bans applied here, by when they were applied. The store keeps only the live ones (a
    /// remote ban is state, not a decision of this host: see store/decisions.rs), so lifted ones are not shown.
    fn fleet_bans(&self) -> rusqlite::Result<Vec<(usize, u64)>> {
        let mut st = self.conn.prepare(
            "SELECT (since_us - ?1) / ?3, COUNT(*) FROM remote_bans WHERE since_us >= ?1 AND since_us < ?2 GROUP BY 1",
        )?;
        let rows = st
            .query_map(params![self.lo, self.hi, self.bucket_us], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| r.map(|(b, n)| (self.bucket(b), n as u64))).collect()
    }

    /// Whether a ban covering exactly this address was decided in the window.
    fn was_banned(&self, addr: IpAddr) -> rusqlite::Result<bool> {
        self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM decisions WHERE target = ?1 AND ts_us >= ?2 AND ts_us < ?3 AND action = 'ban')",
            params![addr.to_string(), self.lo, self.hi],
            |r| r.get(0),
        )
    }

    /// The kernel counters' series under their names (the pass keeps the `labels` ids: a handful).
    fn counters(&self, by_rule: &BTreeMap<i64, Vec<u64>>) -> rusqlite::Result<Vec<CounterSeries>> {
        let mut st = self.conn.prepare("SELECT name FROM labels WHERE id = ?1")?;
        let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (rule, per_bucket) in by_rule {
            let name: String = st.query_row([rule], |r| r.get(0))?;
            by.insert(name, per_bucket.clone());
        }
        Ok(by.into_iter().map(|(name, per_bucket)| CounterSeries { name, per_bucket }).collect())
    }

    fn latest_decisions(&self) -> rusqlite::Result<Vec<DecisionRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT ts_us, action, target, origin, reason FROM decisions WHERE ts_us >= ?1 AND ts_us < ?2
             ORDER BY ts_us DESC, id DESC LIMIT {DECISIONS_LISTED}"
        ))?;
        let rows = st.query_map(params![self.lo, self.hi], |r| {
            Ok(DecisionRow {
                time: from_us(r.get(0)?),
                action: r.get(1)?,
                target: r.get(2)?,
                origin: r.get(3)?,
                reason: r.get(4)?,
            })
        })?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::decision::Decision;
    use crate::event::{Event, Kind};
    use crate::store::{Origin, StoreError};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap()
    }

    fn at(s: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(s)
    }

    fn ev(s: i64, kind: Kind, addr: &str, port: u16) -> (Origin, Event) {
        let mut e = Event::new(at(s), kind, Arc::from(format!("test.{}", kind.as_str())));
        e.addr = Some(addr.parse().unwrap());
        e.port = Some(port);
        (Origin { input: Arc::from("test"), line: None }, e)
    }

    fn decide(store: &mut Store, s: i64, d: Decision) {
        store.record(&[d], at(s), || Ok::<_, StoreError>(())).unwrap();
    }

    fn ban(target: &str, origin: &str, reason: &str) -> Decision {
        Decision::Ban {
            cidr: target.parse().unwrap(),
            until: Some(at(3600)),
            reason: reason.into(),
            origin: origin.into(),
            figures: None,
        }
    }

    fn limit(port: u16, mode: LimitMode, until_s: i64) -> Decision {
        Decision::Limit {
            port,
            mode,
            until: at(until_s),
            reason: "flood".into(),
            origin: "policy".into(),
            figures: None,
        }
    }

    fn services() -> Services {
        Services::default()
    }

    fn read(store: &Store, window: Window, findings: Vec<Finding>) -> AttackReport {
        let services = services();
        let cx = Context { services: &services, prefix_v4: 24, prefix_v6: 64, geo: None, findings };
        AttackReport::read(store, window, cx).unwrap()
    }

    /// The report read on one thread, and on two whatever the window's size (a store in a file: the second
    /// thread opens its own connection).
    fn read_both_ways(store: &Store, window: Window) -> [AttackReport; 2] {
        let services = services();
        [i64::MAX, 0].map(|split_rows| {
            let cx = Context { services: &services, prefix_v4: 24, prefix_v6: 64, geo: None, findings: vec![] };
            AttackReport::read_split(store, window, cx, split_rows).unwrap()
        })
    }

    fn file_store(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("report.db")).unwrap()
    }

    fn ten_minutes() -> Window {
        Window { since: t0(), until: at(600), port: None }
    }

    #[test]
    fn buckets_are_whole_round_minutes_about_150_to_a_period() {
        assert_eq!(bucket_for(Duration::from_secs(600)), Duration::from_secs(60));
        assert_eq!(bucket_for(Duration::from_secs(6 * 3600)), Duration::from_secs(300));
        assert_eq!(bucket_for(Duration::from_secs(86400)), Duration::from_secs(600));
        assert_eq!(bucket_for(Duration::from_secs(10)), Duration::from_secs(60));
    }

    #[test]
    fn connections_and_distinct_sources_per_bucket_join_log_lines_and_conntrack() {
        let mut store = Store::open_in_memory().unwrap();
        let mut events = Vec::new();
        // Minute 0: 120 connect lines from 3 hosts on port 25.
        for i in 0..120 {
            events.push(ev(i / 2, Kind::Connect, ["198.51.100.7", "198.51.100.8", "203.0.113.9"][i as usize % 3], 25));
        }
        // Minute 2: 600 conntrack NEW from 600 spoofed sources on 587 (stored per minute), plus one source twice.
        for i in 0..600u32 {
            events.push(ev(
                120 + i64::from(i) / 10,
                Kind::ConnNew,
                &format!("198.18.{}.{}", i / 250, i % 250 + 1),
                587,
            ));
        }
        events.push(ev(121, Kind::ConnNew, "198.18.0.1", 587));
        // Outside the window: not counted.
        events.push(ev(-5, Kind::Connect, "198.51.100.7", 25));
        events.push(ev(600, Kind::Connect, "198.51.100.7", 25));
        // Not a new connection.
        events.push(ev(30, Kind::AuthFailure, "198.51.100.7", 25));
        store.insert_events(&events).unwrap();
        let r = read(&store, ten_minutes(), vec![]);
        assert_eq!((r.bucket, r.buckets), (Duration::from_secs(60), 10));
        let ports: Vec<u16> = r.ports.iter().map(|p| p.port).collect();
        assert_eq!(ports, [25, 587]);
        let p25 = &r.ports[0];
        assert_eq!(p25.service.as_deref(), Some("smtp"));
        assert_eq!(p25.new_per_s[0], 2.0);
        assert_eq!(p25.distinct[0], 3);
        assert!(p25.new_per_s[1..].iter().all(|v| *v == 0.0), "{:?}", p25.new_per_s);
        let p587 = &r.ports[1];
        assert_eq!(p587.new_per_s[2], 601.0 / 60.0, "connection counts are exact");
        // 600 sources is past the exact range (sketch::EXACT_LIMIT): estimated, 1.6% standard error, so 5% is
        // three deviations.
        const { assert!(600 > sketch::EXACT_LIMIT) };
        assert!(p587.distinct[2].abs_diff(600) <= 30, "{}", p587.distinct[2]);
        assert_eq!(p587.distinct.iter().filter(|d| **d > 0).count(), 1);
        assert!(r.estimated.distinct, "and the page is told");
        assert!(!r.estimated.sources && !r.estimated.prefixes && !r.estimated.users);
        assert_eq!(r.events, 120 + 1, "the connects and the failure in the window (conntrack is aggregated apart)");
        assert_eq!(r.failures, 1);
    }

    #[test]
    fn a_limit_refreshed_then_lifted_is_one_shaded_period_with_its_alert_and_convergence() {
        let mut store = Store::open_in_memory().unwrap();
        store.insert_events(&[ev(100, Kind::Connect, "198.18.0.1", 587)]).unwrap();
        decide(&mut store, 120, limit(587, LimitMode::Global, 720));
        decide(&mut store, 180, limit(587, LimitMode::Global, 780));
        let summary = "port 587: attack over after 4m; peak 600 distinct sources";
        decide(
            &mut store,
            360,
            Decision::Lift { port: 587, mode: LimitMode::Global, reason: summary.into(), origin: "policy".into() },
        );
        // A per-source limit that lapses at its end: a period, but no convergence.
        decide(&mut store, 420, limit(25, LimitMode::Source, 480));
        // One that began before the window and is still on after it: clipped at both ends.
        decide(&mut store, -60, limit(993, LimitMode::Source, 900));
        let r = read(&store, ten_minutes(), vec![]);
        let p587 = r.ports.iter().find(|p| p.port == 587).unwrap();
        assert_eq!(p587.limits, [LimitPeriod { mode: LimitMode::Global, from: at(120), to: at(360) }]);
        let kinds: Vec<(DateTime<Utc>, MarkKind)> = p587.marks.iter().map(|m| (m.time, m.kind)).collect();
        assert_eq!(kinds, [(at(120), MarkKind::Alert), (at(360), MarkKind::Converged)]);
        assert_eq!(p587.marks[1].text, summary);
        let p25 = r.ports.iter().find(|p| p.port == 25).unwrap();
        assert_eq!(p25.limits, [LimitPeriod { mode: LimitMode::Source, from: at(420), to: at(480) }]);
        assert_eq!(p25.marks.iter().map(|m| m.kind).collect::<Vec<_>>(), [MarkKind::Alert]);
        let p993 = r.ports.iter().find(|p| p.port == 993).unwrap();
        assert_eq!(p993.limits, [LimitPeriod { mode: LimitMode::Source, from: at(0), to: at(600) }]);
        assert!(p993.marks.is_empty(), "it began before the window: no alert inside it");
        assert!(!p993.is_empty(), "a limit alone is something to draw");
        // --port keeps that port only.
        let only = read(&store, Window { port: Some(25), ..ten_minutes() }, vec![]);
        assert_eq!(only.ports.iter().map(|p| p.port).collect::<Vec<_>>(), [25]);
    }

    #[test]
    fn bans_are_counted_per_bucket_by_origin_and_a_jail_s_only_on_its_ports() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .insert_events(&[ev(10, Kind::Connect, "198.51.100.7", 25), ev(10, Kind::Connect, "198.51.100.7", 993)])
            .unwrap();
        decide(&mut store, 70, ban("198.51.100.7", "jail:imap", "5 failures"));
        decide(&mut store, 130, ban("198.51.100.8", "policy:dos", "DoS"));
        decide(&mut store, 140, ban("198.51.100.9", "policy:prefix_dos", "DoS from a network"));
        decide(&mut store, 150, ban("198.51.100.0/24", "policy:prefix", "3 addresses"));
        decide(&mut store, 310, ban("203.0.113.5", "manual", "by hand"));
        decide(&mut store, 320, ban("203.0.113.6", "adopted", "found in the kernel"));
        decide(&mut store, 700, ban("203.0.113.7", "manual", "after the window"));
        decide(
            &mut store,
            400,
            Decision::Remote {
                cidr: "203.0.113.77".parse().unwrap(),
                until: None,
                host: "mx2".into(),
                reason: "r".into(),
            },
        );
        let r = read(&store, ten_minutes(), vec![]);
        let by: BTreeMap<BanOrigin, Vec<u64>> = r.bans.iter().cloned().collect();
        let at_bucket = |b: usize| {
            let mut v = vec![0; 10];
            v[b] = 1;
            v
        };
        assert_eq!(by[&BanOrigin::Jail], at_bucket(1));
        assert_eq!(by[&BanOrigin::Dos], {
            let mut v = vec![0; 10];
            v[2] = 2;
            v
        });
        assert_eq!(by[&BanOrigin::Prefix], at_bucket(2));
        assert_eq!(by[&BanOrigin::Manual], at_bucket(5));
        assert_eq!(by[&BanOrigin::Other], at_bucket(5));
        assert_eq!(by[&BanOrigin::Fleet], at_bucket(6));
        let p25 = r.ports.iter().find(|p| p.port == 25).unwrap();
        let p993 = r.ports.iter().find(|p| p.port == 993).unwrap();
        assert_eq!(p993.bans[1], 1, "the imap jail's ban is on 993");
        assert_eq!(p25.bans[1], 0, "and not on 25");
        assert_eq!(p25.bans[2], 3, "bans tied to no port are on every port");
        assert!(r.top_sources.iter().find(|s| s.addr.to_string() == "198.51.100.7").unwrap().banned);
    }

    #[test]
    fn top_sources_prefixes_and_users_are_ranked_and_cut_at_top_n() {
        let mut store = Store::open_in_memory().unwrap();
        let mut events = Vec::new();
        // 30 hosts of 198.51.100.0/24, host i with i + 1 failed logins as user "u{i % 3}".
        for i in 0..30u32 {
            for k in 0..=i {
                let mut e = ev(i64::from(k), Kind::AuthFailure, &format!("198.51.100.{}", i + 1), 993);
                e.1.user = Some(format!("u{}", i % 3));
                events.push(e);
            }
        }
        // A spoofed flood: 400 sources of 198.18.7.0/24, 2 conntrack NEW each (by conntrack only).
        for i in 0..800u32 {
            events.push(ev(200, Kind::ConnNew, &format!("198.18.7.{}", i % 200 + 1), 25));
        }
        events.push(ev(200, Kind::ConnNew, "2001:db8:1:2::7", 25));
        store.insert_events(&events).unwrap();
        let r = read(&store, ten_minutes(), vec![]);
        assert_eq!(r.top_sources.len(), TOP);
        assert_eq!(r.top_sources[0].addr.to_string(), "198.51.100.30");
        assert_eq!((r.top_sources[0].events, r.top_sources[0].failures), (30, 30));
        assert!(r.top_sources.windows(2).all(|w| w[0].events >= w[1].events));
        let prefixes: Vec<(String, u64, u64)> =
            r.top_prefixes.iter().map(|p| (p.prefix.to_string(), p.events, p.sources)).collect();
        assert_eq!(
            prefixes,
            [
                ("198.18.7.0/24".to_string(), 800, 200),
                ("198.51.100.0/24".to_string(), 465, 30),
                ("2001:db8:1:2::/64".to_string(), 1, 1)
            ]
        );
        // u0: hosts 0, 3, ..., 27 -> 1 + 4 + ... + 28 = 145; u1: 155; u2: 165.
        assert_eq!(r.users, [("u2".to_string(), 165), ("u1".to_string(), 155), ("u0".to_string(), 145)]);
        assert_eq!(r.estimated, Estimated::default(), "a few hundred sources: every figure exact");
        let page = html::render(&r, at(600));
        assert!(page.contains("Exact: at most 4,096 distinct sources"), "the page says the list is exact");
        assert!(!page.contains("An estimate"));
    }

    /// The one pass against an exact computation (plain maps over the same events) on a few thousand events of
    /// random sources, ports, kinds and times: counts equal, distinct counts equal (all below the exact limit),
    /// the tops equal, for the whole window and for one port.
    #[test]
    fn the_one_pass_equals_an_exact_computation_on_a_few_thousand_events_on_one_thread_or_two() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = file_store(&dir);
        let mut state = 0x5eed_u64;
        let mut next = |below: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % below
        };
        let kinds = [Kind::Connect, Kind::AuthFailure, Kind::Disconnect, Kind::ConnNew, Kind::Rejected];
        let ports = [25u16, 587, 993];
        let mut events = Vec::new();
        for _ in 0..4000 {
            let kind = kinds[next(kinds.len() as u64) as usize];
            // 300 sources, a few busier: 203.0.113.0/24, 198.51.100.0/24 and 2001:db8:5::/64.
            let n = if next(4) == 0 { next(10) } else { next(300) };
            let addr = match n % 3 {
                0 => format!("203.0.113.{}", n / 3 + 1),
                1 => format!("198.51.100.{}", n / 3 + 1),
                _ => format!("2001:db8:5::{:x}", n + 1),
            };
            let mut e = ev(next(700) as i64 - 50, kind, &addr, ports[next(3) as usize]);
            if kind == Kind::AuthFailure {
                e.1.user = Some(format!("user{}", next(30)));
            }
            events.push(e);
        }
        store.insert_events(&events).unwrap();
        for port in [None, Some(587)] {
            let window = Window { port, ..ten_minutes() };
            let [r, split] = read_both_ways(&store, window);
            // Two halves merged are the one pass, to the last figure, while nothing is estimated.
            assert_eq!(split, r, "port {port:?}");
            assert_eq!(r.estimated, Estimated::default());
            // The exact figures, from the events themselves (conntrack's are stored per minute: bucketed alike).
            let inside: Vec<&Event> = events
                .iter()
                .map(|(_, e)| e)
                .filter(|e| e.time >= window.since && e.time < window.until)
                .filter(|e| port.is_none_or(|p| e.port == Some(p)))
                .collect();
            let logged = inside.iter().filter(|e| e.kind != Kind::ConnNew);
            assert_eq!(r.events, logged.clone().count() as u64);
            assert_eq!(r.failures, logged.filter(|e| e.failure).count() as u64);
            let bucket = |e: &Event| ((e.time - window.since).num_seconds() / 60) as usize;
            let mut new: BTreeMap<(u16, usize), u64> = BTreeMap::new();
            let mut distinct: BTreeMap<(u16, usize), BTreeSet<IpAddr>> = BTreeMap::new();
            let mut sources: BTreeMap<IpAddr, (u64, u64)> = BTreeMap::new();
            let mut prefixes: BTreeMap<Cidr, (u64, BTreeSet<IpAddr>)> = BTreeMap::new();
            let mut users: BTreeMap<String, u64> = BTreeMap::new();
            for e in &inside {
                let (addr, p) = (e.addr.unwrap(), e.port.unwrap());
                if matches!(e.kind, Kind::Connect | Kind::ConnNew) {
                    *new.entry((p, bucket(e))).or_default() += 1;
                    distinct.entry((p, bucket(e))).or_default().insert(addr);
                }
                let failed = u64::from(e.failure);
                let s = sources.entry(addr).or_default();
                s.0 += 1;
                s.1 += failed;
                let prefix = Cidr::new(addr, if addr.is_ipv4() { 24 } else { 64 }).unwrap();
                let pr = prefixes.entry(prefix).or_default();
                pr.0 += 1;
                pr.1.insert(addr);
                if let Some(u) = &e.user {
                    *users.entry(u.clone()).or_default() += 1;
                }
            }
            for c in &r.ports {
                for b in 0..r.buckets {
                    let n = new.get(&(c.port, b)).copied().unwrap_or(0);
                    assert_eq!(c.new_per_s[b], n as f64 / 60.0, "port {} bucket {b}", c.port);
                    let d = distinct.get(&(c.port, b)).map_or(0, |s| s.len() as u64);
                    assert_eq!(c.distinct[b], d, "port {} bucket {b}", c.port);
                }
            }
            let charted: BTreeSet<u16> = new.keys().map(|(p, _)| *p).collect();
            assert_eq!(r.ports.iter().map(|c| c.port).collect::<BTreeSet<u16>>(), charted);
            let mut want: Vec<(IpAddr, u64, u64)> = sources.iter().map(|(a, (n, f))| (*a, *n, *f)).collect();
            want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(TOP);
            let got: Vec<(IpAddr, u64, u64)> = r.top_sources.iter().map(|s| (s.addr, s.events, s.failures)).collect();
            assert_eq!(got, want, "port {port:?}");
            let mut want: Vec<(Cidr, u64, u64)> = prefixes.iter().map(|(p, (n, s))| (*p, *n, s.len() as u64)).collect();
            want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(TOP);
            let got: Vec<(Cidr, u64, u64)> = r.top_prefixes.iter().map(|p| (p.prefix, p.events, p.sources)).collect();
            assert_eq!(got, want);
            let mut want: Vec<(String, u64)> = users.into_iter().collect();
            want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(TOP);
            assert_eq!(r.users, want);
        }
    }

    #[test]
    fn past_the_sketches_capacity_the_page_says_the_tops_are_estimates_on_one_thread_or_two() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = file_store(&dir);
        // 5,000 distinct sources of 198.18.0.0/15, one failed login each as a distinct user, and one heavy one.
        let mut events: Vec<(Origin, Event)> = (0..5000u32)
            .map(|i| {
                let mut e = ev(60, Kind::AuthFailure, &format!("198.18.{}.{}", i / 250, i % 250 + 1), 993);
                e.1.user = Some(format!("u{i}"));
                e
            })
            .collect();
        events.extend((0..50).map(|_| ev(70, Kind::AuthFailure, "203.0.113.66", 993)));
        store.insert_events(&events).unwrap();
        for r in read_both_ways(&store, ten_minutes()) {
            assert_eq!(r.events, 5050, "totals stay exact");
            assert!(r.estimated.sources && r.estimated.users && !r.estimated.prefixes);
            assert_eq!(r.top_sources[0].addr.to_string(), "203.0.113.66", "a heavy source is surely listed");
            assert!(r.top_sources[0].events <= 50, "and its count is a lower bound");
            assert!(r.top_sources[0].events >= 45, "close to what it sent: {}", r.top_sources[0].events);
            // 198.18.0.0/24 .. 198.18.19.0/24 hold 250 hosts each: exact.
            assert_eq!(r.top_prefixes[0].sources, 250);
            let page = html::render(&r, at(600));
            assert!(page.contains("An estimate: more than 4,096 distinct sources"));
            assert!(page.contains("An estimate: more than 4,096 distinct user names"));
            assert!(page.contains("Exact: at most 1,024 distinct prefixes"));
        }
    }

    #[test]
    fn syn_flood_lines_and_kernel_counters_are_read() {
        let mut store = Store::open_in_memory().unwrap();
        let kernel = |s: i64, rule: &str, port: Option<u16>, count: u32| {
            let mut e = Event::new(at(s), Kind::KernelCounter, Arc::from(rule));
            e.port = port;
            e.count = count;
            (Origin { input: Arc::from("netstat"), line: None }, e)
        };
        let syn = |s: i64, action: crate::event::SynAction| {
            let mut e = Event::new(at(s), Kind::SynFlood, Arc::from("kernel.syn_flood"));
            e.port = Some(587);
            e.local_addr = Some("198.51.100.1".parse().unwrap());
            e.syn_action = Some(action);
            (Origin { input: Arc::from("kmsg"), line: None }, e)
        };
        store
            .insert_events(&[
                syn(125, crate::event::SynAction::Cookies),
                syn(130, crate::event::SynAction::Dropping),
                kernel(130, "netstat.TCPReqQFullDoCookies", None, 4000),
                kernel(190, "netstat.TCPReqQFullDoCookies", None, 500),
                kernel(190, "nft.limit_global", Some(587), 250),
            ])
            .unwrap();
        let r = read(&store, ten_minutes(), vec![]);
        assert_eq!(r.syn_lines_total, 2);
        assert_eq!(r.syn_lines[0].time, at(125));
        assert_eq!(r.syn_lines[0].port, Some(587));
        assert_eq!(r.syn_lines[0].local_addr, Some("198.51.100.1".parse().unwrap()));
        assert_eq!((r.syn_lines[0].cookies, r.syn_lines[1].cookies), (true, false));
        let counters: Vec<(&str, u64, u64, u64)> =
            r.counters.iter().map(|c| (c.name.as_str(), c.per_bucket[2], c.per_bucket[3], c.total())).collect();
        assert_eq!(counters, [("netstat.TCPReqQFullDoCookies", 4000, 500, 4500), ("nft.limit_global", 0, 250, 250)]);
        // The port filter keeps machine-wide counters and the port's own.
        let other = read(&store, Window { port: Some(25), ..ten_minutes() }, vec![]);
        assert_eq!(other.syn_lines_total, 0);
        assert_eq!(
            other.counters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["netstat.TCPReqQFullDoCookies"]
        );
    }

    #[test]
    fn the_advisor_s_findings_are_kept_for_the_ports_involved_and_the_machine() {
        let f = |id: &'static str, severity: Severity, subject: &str| Finding {
            id,
            severity,
            subject: subject.into(),
            current: String::new(),
            recommended: String::new(),
            why: String::new(),
            sysctl: None,
            snippet: None,
        };
        let all = vec![
            f("syncookies_off", Severity::Critical, "net.ipv4.tcp_syncookies"),
            f("repeated_syn_floods", Severity::Info, "port 587 (submission)"),
            f("repeated_syn_floods", Severity::Info, "port 5870 (other)"),
            f("listener_backlog_small", Severity::Info, "listener 198.51.100.1:587 (submission)"),
            f("smtp_reachable", Severity::Info, "port 25"),
        ];
        let kept: Vec<String> = findings_for(all, &BTreeSet::from([587])).into_iter().map(|f| f.subject).collect();
        assert_eq!(
            kept,
            ["net.ipv4.tcp_syncookies", "port 587 (submission)", "listener 198.51.100.1:587 (submission)"]
        );
    }

    #[test]
    fn an_empty_period_is_reported_as_empty_in_words() {
        let store = Store::open_in_memory().unwrap();
        let r = read(&store, ten_minutes(), vec![]);
        assert!(r.ports.is_empty() && r.bans.is_empty() && r.top_sources.is_empty() && r.counters.is_empty());
        let page = html::render(&r, at(600));
        for said in [
            "No new connections recorded in this period",
            "No bans were made in this period.",
            "No source addresses recorded in this period.",
            "No country data loaded",
            "No failed logins naming a user",
            "No \"Possible SYN flooding\" lines",
            "No kernel counter rises recorded",
        ] {
            assert!(page.contains(&html::escape(said)), "missing {said:?}");
        }
        assert!(!page.contains("<svg"), "no empty axes drawn");
        let bad = Window { since: at(10), until: at(10), port: None };
        let services = services();
        let cx = Context { services: &services, prefix_v4: 24, prefix_v6: 64, geo: None, findings: vec![] };
        assert!(AttackReport::read(&store, bad, cx).is_err());
    }

    #[test]
    fn what_an_attacker_chose_is_shown_as_text_never_as_markup() {
        let mut store = Store::open_in_memory().unwrap();
        let evil_user = "<script>alert('x')</script>";
        let evil_reason = "\"><img src=x onerror=alert(1)><svg onload=alert(2)>";
        let mut e = ev(30, Kind::AuthFailure, "198.51.100.7", 993);
        e.1.user = Some(evil_user.into());
        store.insert_events(&[e, ev(31, Kind::Connect, "198.51.100.7", 993)]).unwrap();
        decide(&mut store, 40, ban("198.51.100.7", "jail:imap", evil_reason));
        let findings = vec![Finding {
            id: "x",
            severity: Severity::Warning,
            subject: "<b>subject</b>".into(),
            current: "&".into(),
            recommended: "'".into(),
            why: "<i>".into(),
            sysctl: None,
            snippet: Some("</pre><script>".into()),
        }];
        let r = read(&store, ten_minutes(), findings);
        assert_eq!(r.users[0].0, evil_user, "the data keeps the text as it was");
        let page = html::render(&r, at(600));
        for injected in ["<script", "<img", "onerror=alert(1)>", "<svg onload", "<b>subject", "<i>"] {
            assert!(!page.contains(injected), "{injected} reached the page as markup");
        }
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(page.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        // Self-contained: nothing to fetch, nothing to run.
        for outside in ["http://", "https://", "<link", "<script", "<iframe", "url("] {
            let outside_svg_ns = page.replace("http://www.w3.org/2000/svg", "");
            assert!(!outside_svg_ns.contains(outside), "{outside}");
        }
        assert!(page.contains("<svg"), "the port's chart is drawn");
    }
}
