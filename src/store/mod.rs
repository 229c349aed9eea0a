//! The event store: SQLite in WAL mode, schema from migrations/ applied in order and tracked by
//! `PRAGMA user_version`. Inserts are batched in one transaction; growth is bounded by retention and by
//! aggregating conntrack events per source, port and minute.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::addr::{ip_bytes, ip_from_bytes, Cidr};
use crate::event::{Event, Kind, SynAction};

pub mod config;
mod decisions;
pub use config::StoreConfig;
pub use decisions::{Allowed, Ban, Enforced, LimitOn, RemoteBan};

/// Schema migrations, in order. The version of migration i is i + 1.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_initial", include_str!("../../migrations/0001_initial.sql")),
    ("0002_enforcement", include_str!("../../migrations/0002_enforcement.sql")),
    ("0003_kernel_counter", include_str!("../../migrations/0003_kernel_counter.sql")),
    ("0004_store_id", include_str!("../../migrations/0004_store_id.sql")),
    ("0005_conn_assured", include_str!("../../migrations/0005_conn_assured.sql")),
    ("0006_fleet", include_str!("../../migrations/0006_fleet.sql")),
    ("0007_event_minutes", include_str!("../../migrations/0007_event_minutes.sql")),
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: the database is at schema version {found}, this floodgate knows up to {known}; upgrade floodgate (the database was left unchanged)")]
    TooNew { path: String, found: i64, known: i64 },
    #[error("{path}: {context}: {cause}")]
    Sql { path: String, context: String, cause: rusqlite::Error },
    #[error("{path}: {what}: the database was altered outside floodgate")]
    Corrupt { path: String, what: String },
    #[error("{path}: cannot create its directory: {cause}")]
    Dir { path: String, cause: std::io::Error },
}

/// Where an event came from: the input's name and, for files, the 1-based line.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub input: Arc<str>,
    pub line: Option<u64>,
}

/// An event read back from the store.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub since: Option<DateTime<Utc>>,
    pub cidr: Option<Cidr>,
    pub kind: Option<Kind>,
    pub limit: Option<usize>,
}

pub struct Store {
    conn: Connection,
    path: String,
    labels: HashMap<String, i64>,
}

fn ts_us(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_us(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

const MINUTE_US: i64 = 60_000_000;

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|cause| StoreError::Dir { path: shown.clone(), cause })?;
        }
        private_file(path, &shown)?;
        let conn = Connection::open(path).map_err(|source| sql(&shown, "cannot open", source))?;
        let store = Store::init(conn, shown)?;
        store.quick_check()?;
        Ok(store)
    }

    /// SQLite's quick check (every page readable, structure sound): a damaged store is refused at start with
    /// what to do, instead of failing later at random.
    pub fn quick_check(&self) -> Result<(), StoreError> {
        let mut st = self.conn.prepare("PRAGMA quick_check(5)").map_err(|e| sql(&self.path, "quick check", e))?;
        let found: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| sql(&self.path, "quick check", e))?;
        if found.len() == 1 && found[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            path: self.path.clone(),
            what: format!("quick check: {}: {CORRUPT_HELP}", found.join("; ")),
        })
    }

    /// Opens an existing store read-only: nothing is created, migrated or written, so a reader (the advisor)
    /// never alters a daemon's database. A schema newer than this floodgate is refused as by [`Store::open`];
    /// an older one is read as it is (every schema has the events, labels and allowlist tables).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|source| sql(&shown, "cannot open", source))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| sql(&shown, "busy timeout", e))?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql(&shown, "reading schema version", e))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew { path: shown, found, known: SCHEMA_VERSION });
        }
        Ok(Store { conn, path: shown, labels: HashMap::new() })
    }

    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| sql(":memory:", "cannot open", source))?;
        Store::init(conn, ":memory:".into())
    }

    fn init(conn: Connection, path: String) -> Result<Store, StoreError> {
        let ctx = |c: &str| {
            let p = path.clone();
            let c = c.to_string();
            move |source| sql(&p, &c, source)
        };
        conn.busy_timeout(Duration::from_secs(5)).map_err(ctx("busy timeout"))?;
        let found: i64 =
            conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(ctx("reading schema version"))?;
        // Checked before anything is written, WAL mode included: a newer database is never altered.
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew { path, found, known: SCHEMA_VERSION });
        }
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).map_err(ctx("enabling WAL"))?;
        // 16 MiB of page cache per connection: inserts of 1M events ran as fast as with 64 MiB (store bench, within
        // noise), and the daemon's peak memory is bounded by it (the daemon bench's one million distinct sources).
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA cache_size=-16384;").map_err(ctx("pragmas"))?;
        let mut store = Store { conn, path, labels: HashMap::new() };
        store.migrate(found)?;
        Ok(store)
    }

    fn migrate(&mut self, found: i64) -> Result<(), StoreError> {
        for (i, (name, text)) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= found {
                continue;
            }
            let tx = self.conn.transaction().map_err(|e| sql(&self.path, name, e))?;
            tx.execute_batch(text).map_err(|e| sql(&self.path, &format!("migration {name}"), e))?;
            tx.pragma_update(None, "user_version", version).map_err(|e| sql(&self.path, name, e))?;
            tx.commit().map_err(|e| sql(&self.path, name, e))?;
            tracing::info!(db = %self.path, migration = name, "applied migration");
        }
        Ok(())
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// This store's id (random, made when the store was created or upgraded to schema 4).
    pub fn id(&self) -> Result<String, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| r.get(0))
            .map_err(|e| sql(&self.path, "reading the store id", e))
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| sql(&self.path, "schema version", e))
    }

    fn label(&mut self, name: &str) -> Result<i64, rusqlite::Error> {
        if let Some(&id) = self.labels.get(name) {
            return Ok(id);
        }
        self.conn.prepare_cached("INSERT OR IGNORE INTO labels (name) VALUES (?1)")?.execute([name])?;
        let id: i64 =
            self.conn.prepare_cached("SELECT id FROM labels WHERE name = ?1")?.query_row([name], |r| r.get(0))?;
        self.labels.insert(name.to_string(), id);
        Ok(id)
    }

    /// Writes a batch of events in one transaction: all of them or, on error, none.
    pub fn insert_events(&mut self, events: &[(Origin, Event)]) -> Result<(), StoreError> {
        self.insert_inner(events, &[], Utc::now()).map_err(|e| sql(&self.path, "inserting events", e))
    }

    /// Inserts events and records where each input stands after them, in one transaction: a restart resumes
    /// right after the last line whose events are stored (no line read twice, none skipped).
    pub fn insert_events_at(
        &mut self,
        events: &[(Origin, Event)],
        positions: &[(&str, u64, u64)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.insert_inner(events, positions, now).map_err(|e| sql(&self.path, "inserting events", e))
    }

    fn insert_inner(
        &mut self,
        events: &[(Origin, Event)],
        positions: &[(&str, u64, u64)],
        now: DateTime<Utc>,
    ) -> Result<(), rusqlite::Error> {
        // Labels first, outside the statements' borrow; a rollback below leaves at most unused labels.
        let mut ids = Vec::with_capacity(events.len());
        for (o, e) in events {
            let input = self.label(&o.input)?;
            let rule = self.label(&e.rule)?;
            let service = match &e.service {
                Some(s) => Some(self.label(s)?),
                None => None,
            };
            ids.push((input, rule, service));
        }
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (ts_us, kind, failure, input, line, rule, addr, local_addr, port, service, user, count, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            let mut agg = tx.prepare_cached(
                "INSERT INTO conn_minutes (addr, port, kind, minute, count, assured, local_addr) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (addr, port, kind, minute) DO UPDATE SET count = count + excluded.count, assured = assured + excluded.assured",
            )?;
            // Minute -> (first id, last id) of the rows written, for event_minutes.
            let mut spans: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for ((o, e), (input, rule, service)) in events.iter().zip(ids) {
                let t = ts_us(&e.time);
                let detail: Option<i64> = match (e.syn_action, e.assured) {
                    (Some(SynAction::Cookies), _) => Some(1),
                    (Some(SynAction::Dropping), _) => Some(2),
                    (None, Some(a)) => Some(i64::from(a)),
                    (None, None) => None,
                };
                if let (true, Some(addr), Some(port)) = (e.kind.is_aggregated(), e.addr, e.port) {
                    agg.execute(params![
                        ip_bytes(addr),
                        port,
                        e.kind.code(),
                        t - t.rem_euclid(MINUTE_US),
                        e.count,
                        i64::from(e.assured == Some(true)) * i64::from(e.count),
                        e.local_addr.map(ip_bytes),
                    ])?;
                    continue;
                }
                ins.execute(params![
                    t,
                    e.kind.code(),
                    e.failure,
                    input,
                    o.line.map(|l| l as i64),
                    rule,
                    e.addr.map(ip_bytes),
                    e.local_addr.map(ip_bytes),
                    e.port,
                    service,
                    e.user,
                    e.count,
                    detail,
                ])?;
                let (id, minute) = (tx.last_insert_rowid(), t - t.rem_euclid(MINUTE_US));
                let (first, last) = spans.entry(minute).or_insert((id, id));
                *first = (*first).min(id);
                *last = (*last).max(id);
            }
            let mut span = tx.prepare_cached(
                "INSERT INTO event_minutes (minute, first_id, last_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (minute) DO UPDATE SET first_id = min(first_id, excluded.first_id), last_id = max(last_id, excluded.last_id)",
            )?;
            for (minute, (first, last)) in spans {
                span.execute(params![minute, first, last])?;
            }
            let mut pos = tx.prepare_cached(
                "INSERT INTO positions (input, inode, offset, updated_us) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (input) DO UPDATE SET inode = excluded.inode, offset = excluded.offset, updated_us = excluded.updated_us",
            )?;
            for (input, inode, offset) in positions {
                pos.execute(params![input, *inode as i64, *offset as i64, ts_us(&now)])?;
            }
        }
        tx.commit()
    }

    /// Deletes events older than `retention` before `now`. Returns how many rows went.
    pub fn prune(&mut self, now: DateTime<Utc>, retention: Duration) -> Result<usize, StoreError> {
        let cutoff = ts_us(&now) - retention.as_micros() as i64;
        let run = |conn: &Connection| -> Result<usize, rusqlite::Error> {
            let a = conn.execute("DELETE FROM events WHERE ts_us < ?1", [cutoff])?;
            let b = conn.execute("DELETE FROM conn_minutes WHERE minute < ?1", [cutoff])?;
            // Minutes wholly before the cutoff hold no event any more (not counted: they are an index).
            conn.execute("DELETE FROM event_minutes WHERE minute + ?2 <= ?1", params![cutoff, MINUTE_US])?;
            Ok(a + b)
        };
        run(&self.conn).map_err(|e| sql(&self.path, "pruning", e))
    }

    /// Events matching `f`, oldest first (the newest `limit` when a limit is set).
    pub fn query_events(&self, f: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        self.query_inner(f).map_err(|e| sql(&self.path, "querying events", e))
    }

    fn query_inner(&self, f: &EventFilter) -> Result<Vec<StoredEvent>, rusqlite::Error> {
        let since = f.since.as_ref().map(ts_us).unwrap_or(i64::MIN);
        let (lo, hi) = match &f.cidr {
            Some(c) => {
                let (lo, hi) = c.range_bytes();
                (Some(lo), Some(hi))
            }
            None => (None, None),
        };
        let kind = f.kind.map(|k| k.code());
        let limit = f.limit.map(|l| l as i64).unwrap_or(-1);
        let mut out = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT * FROM (
               SELECT e.id, e.ts_us, e.kind, e.failure, i.name, e.line, r.name, e.addr, e.local_addr, e.port, s.name,
                      e.user, e.count, e.detail
               FROM events e
               LEFT JOIN labels i ON i.id = e.input
               LEFT JOIN labels r ON r.id = e.rule
               LEFT JOIN labels s ON s.id = e.service
               WHERE e.ts_us >= ?1
                 AND (?2 IS NULL OR (e.addr BETWEEN ?2 AND ?3 AND length(e.addr) = length(?2)))
                 AND (?4 IS NULL OR e.kind = ?4)
               UNION ALL
               SELECT NULL, c.minute, c.kind, 0, NULL, NULL, NULL, c.addr, c.local_addr, c.port, NULL,
                      NULL, c.count, c.assured
               FROM conn_minutes c
               WHERE c.minute >= ?1
                 AND (?2 IS NULL OR (c.addr BETWEEN ?2 AND ?3 AND length(c.addr) = length(?2)))
                 AND (?4 IS NULL OR c.kind = ?4)
               ORDER BY 2 DESC LIMIT ?5
             ) ORDER BY 2 ASC",
        )?;
        let mut rows = stmt.query(params![since, lo, hi, kind, limit])?;
        while let Some(r) = rows.next()? {
            let id: Option<i64> = r.get(0)?;
            let kind = Kind::from_code(r.get(2)?).unwrap_or(Kind::Connect);
            let detail: Option<i64> = r.get(13)?;
            let count: i64 = r.get(12)?;
            let aggregated = id.is_none();
            let (syn_action, assured) = match kind {
                Kind::SynFlood => (
                    detail.and_then(|d| {
                        [None, Some(SynAction::Cookies), Some(SynAction::Dropping)].get(d as usize).copied().flatten()
                    }),
                    None,
                ),
                // An aggregated conn_destroy row counts how many of its connections were assured.
                Kind::ConnDestroy if aggregated => (None, detail.map(|d| d > 0)),
                Kind::ConnDestroy => (None, detail.map(|d| d != 0)),
                Kind::ConnAssured => (None, Some(true)),
                _ => (None, None),
            };
            let rule: Option<String> = r.get(6)?;
            let addr: Option<Vec<u8>> = r.get(7)?;
            let laddr: Option<Vec<u8>> = r.get(8)?;
            let service: Option<String> = r.get(10)?;
            out.push(StoredEvent {
                id,
                input: r.get(4)?,
                line: r.get::<_, Option<i64>>(5)?.map(|l| l as u64),
                event: Event {
                    time: from_us(r.get(1)?),
                    kind,
                    failure: r.get(3)?,
                    rule: Arc::from(rule.unwrap_or_else(|| format!("conntrack.{kind}_per_minute")).as_str()),
                    addr: addr.as_deref().and_then(ip_from_bytes),
                    local_addr: laddr.as_deref().and_then(ip_from_bytes),
                    port: r.get(9)?,
                    service: service.as_deref().map(Arc::from),
                    user: r.get(11)?,
                    count: u32::try_from(count).unwrap_or(u32::MAX),
                    syn_action,
                    assured,
                },
            });
        }
        Ok(out)
    }

    /// Failure events with a source since `since`, oldest first: what the policy's windows are rebuilt from at a
    /// start or a reload that changes them. Capped at `limit` (the newest kept), so a store full of a flood cannot
    /// stall a start.
    pub fn failures_since(&self, since: DateTime<Utc>, limit: usize) -> Result<Vec<Event>, StoreError> {
        let run = || -> Result<Vec<Event>, rusqlite::Error> {
            let mut st = self.conn.prepare_cached(
                "SELECT * FROM (
                   SELECT e.ts_us, e.kind, e.addr, e.local_addr, e.port, s.name, e.count, r.name, e.id
                   FROM events e
                   LEFT JOIN labels r ON r.id = e.rule
                   LEFT JOIN labels s ON s.id = e.service
                   WHERE e.ts_us >= ?1 AND e.failure = 1 AND e.addr IS NOT NULL
                   ORDER BY e.ts_us DESC, e.id DESC LIMIT ?2
                 ) ORDER BY 1 ASC, 9 ASC",
            )?;
            let mut rows = st.query(params![ts_us(&since), limit as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let kind = Kind::from_code(r.get(1)?).unwrap_or(Kind::AuthFailure);
                let rule: Option<String> = r.get(7)?;
                let mut ev = Event::new(from_us(r.get(0)?), kind, Arc::from(rule.as_deref().unwrap_or("stored")));
                ev.failure = true;
                ev.addr = r.get::<_, Option<Vec<u8>>>(2)?.as_deref().and_then(ip_from_bytes);
                ev.local_addr = r.get::<_, Option<Vec<u8>>>(3)?.as_deref().and_then(ip_from_bytes);
                ev.port = r.get(4)?;
                ev.service = r.get::<_, Option<String>>(5)?.as_deref().map(Arc::from);
                ev.count = u32::try_from(r.get::<_, i64>(6)?).unwrap_or(u32::MAX);
                out.push(ev);
            }
            Ok(out)
        };
        run().map_err(|e| sql(&self.path, "reading recent failures", e))
    }

    /// The latest ban or unban of each single address decided since `since`: failures before it were acted on.
    pub fn last_acted(&self, since: DateTime<Utc>) -> Result<HashMap<std::net::IpAddr, DateTime<Utc>>, StoreError> {
        let run = || -> Result<HashMap<std::net::IpAddr, DateTime<Utc>>, rusqlite::Error> {
            let mut st = self.conn.prepare_cached(
                "SELECT target, max(ts_us) FROM decisions
                 WHERE ts_us >= ?1 AND action IN ('ban', 'unban') GROUP BY target",
            )?;
            let mut rows = st.query([ts_us(&since)])?;
            let mut out = HashMap::new();
            while let Some(r) = rows.next()? {
                let target: String = r.get(0)?;
                if let Ok(c) = target.parse::<Cidr>() {
                    if c.is_host() {
                        out.insert(c.addr(), from_us(r.get(1)?));
                    }
                }
            }
            Ok(out)
        };
        run().map_err(|e| sql(&self.path, "reading recent decisions", e))
    }

    /// The database's size in bytes (cheap: no table is read).
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|b| b as u64)
            .map_err(|e| sql(&self.path, "size", e))
    }

    /// The connection itself, for a reader that aggregates in SQL over millions of rows (the attack report:
    /// GROUP BY time buckets, top-N with LIMIT) instead of loading events. Such a reader runs SELECTs only; it
    /// opens the store with [`Store::open_read_only`], so SQLite refuses a write anyway.
    pub fn reader(&self) -> &Connection {
        &self.conn
    }

    /// Another read-only connection to this store's file, for a reader that splits its work over threads
    /// (None: the store is in memory, nothing else can open it).
    pub fn another_reader(&self) -> Option<Result<Store, StoreError>> {
        let file = self.conn.path().filter(|p| !p.is_empty())?;
        Some(Store::open_read_only(Path::new(file)))
    }

    /// Rows stored (events plus aggregated conntrack minutes) and the database's size in bytes.
    pub fn usage(&self) -> Result<(u64, u64), StoreError> {
        let q = |s: &str| self.conn.query_row(s, [], |r| r.get::<_, i64>(0)).map_err(|e| sql(&self.path, "usage", e));
        let rows = q("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM conn_minutes)")?;
        Ok((rows as u64, self.size_bytes()?))
    }

    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| sql(&self.path, "checkpoint", e))
    }

    /// The stored read position of a tailed input: (inode, byte offset).
    pub fn position(&self, input: &str) -> Result<Option<(u64, u64)>, StoreError> {
        self.conn
            .query_row("SELECT inode, offset FROM positions WHERE input = ?1", [input], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .optional()
            .map_err(|e| sql(&self.path, "reading position", e))
    }

    pub fn set_position(&self, input: &str, inode: u64, offset: u64, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO positions (input, inode, offset, updated_us) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (input) DO UPDATE SET inode = excluded.inode, offset = excluded.offset, updated_us = excluded.updated_us",
                params![input, inode as i64, offset as i64, ts_us(&now)],
            )
            .map(|_| ())
            .map_err(|e| sql(&self.path, "writing position", e))
    }
}

/// What to do with a damaged store: the kernel keeps its bans meanwhile, and a new store adopts them.
const CORRUPT_HELP: &str =
    "the database file is damaged. Stop floodgate, move the file (and its -wal and -shm) aside, \
     and start again: the bans in the kernel stay in force and the new store adopts them; `sqlite3 OLD .recover` \
     may save the old events";

fn sql(path: &str, context: &str, source: rusqlite::Error) -> StoreError {
    let corrupt = matches!(
        source.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    );
    if corrupt {
        return StoreError::Corrupt { path: path.to_string(), what: format!("{context}: {source}: {CORRUPT_HELP}") };
    }
    StoreError::Sql { path: path.to_string(), context: context.to_string(), cause: source }
}

/// Creates the store file readable by its owner only (it holds user names and addresses); an existing one
/// readable by everyone loses that. SQLite gives the -wal and -shm files the database file's mode.
fn private_file(path: &Path, shown: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir_err = |cause| StoreError::Dir { path: shown.to_string(), cause };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode();
            if mode & 0o007 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o770)).map_err(dir_err)?;
                tracing::warn!(db = %shown, "the store was readable by every local user; now owner and group only");
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(drop)
            .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(dir_err(e)) }),
        Err(e) => Err(dir_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ev(kind: Kind, addr: &str, secs: i64) -> Event {
        Event {
            time: Utc.timestamp_opt(1_763_700_000 + secs, 0).unwrap(),
            kind,
            failure: kind.is_failure_by_default(),
            rule: Arc::from("test.rule"),
            addr: Some(addr.parse().unwrap()),
            local_addr: None,
            port: Some(25),
            service: Some(Arc::from("smtp")),
            user: Some("alice".into()),
            count: 1,
            syn_action: None,
            assured: if kind == Kind::ConnDestroy { Some(secs % 2 == 0) } else { None },
        }
    }

    fn origin(line: u64) -> Origin {
        Origin { input: Arc::from("mail.log"), line: Some(line) }
    }

    #[test]
    fn events_round_trip_and_filter_by_cidr_kind_and_time() {
        let mut s = Store::open_in_memory().unwrap();
        let batch = vec![
            (origin(1), ev(Kind::AuthFailure, "198.51.100.7", 0)),
            (origin(2), ev(Kind::Connect, "198.51.100.8", 10)),
            (origin(3), ev(Kind::AuthFailure, "203.0.113.1", 20)),
            (origin(4), ev(Kind::AuthFailure, "2001:db8::1", 30)),
        ];
        s.insert_events(&batch).unwrap();
        let all = s.query_events(&EventFilter::default()).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].event, batch[0].1);
        assert_eq!(all[0].input.as_deref(), Some("mail.log"));
        assert_eq!(all[0].line, Some(1));
        let f = EventFilter { cidr: Some("198.51.100.0/24".parse().unwrap()), ..Default::default() };
        assert_eq!(s.query_events(&f).unwrap().len(), 2);
        let f = EventFilter { cidr: Some("2001:db8::/32".parse().unwrap()), ..Default::default() };
        assert_eq!(s.query_events(&f).unwrap()[0].event.addr, Some("2001:db8::1".parse().unwrap()));
        let f = EventFilter { kind: Some(Kind::AuthFailure), since: Some(batch[1].1.time), ..Default::default() };
        assert_eq!(s.query_events(&f).unwrap().len(), 2);
        let f = EventFilter { limit: Some(1), ..Default::default() };
        assert_eq!(s.query_events(&f).unwrap()[0].event.addr, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn conntrack_events_aggregate_per_source_port_and_minute() {
        let mut s = Store::open_in_memory().unwrap();
        let batch: Vec<_> = (0..100)
            .map(|i| {
                (origin(i), ev(if i % 2 == 0 { Kind::ConnNew } else { Kind::ConnDestroy }, "198.18.0.1", i as i64))
            })
            .collect();
        s.insert_events(&batch).unwrap();
        let (rows, _) = s.usage().unwrap();
        // 100 seconds span two minutes: 2 kinds x 2 minutes at most.
        assert!(rows <= 4, "{rows} rows");
        let got = s.query_events(&EventFilter { kind: Some(Kind::ConnNew), ..Default::default() }).unwrap();
        assert_eq!(got.iter().map(|e| e.event.count).sum::<u32>(), 50);
        assert!(got.iter().all(|e| e.id.is_none() && e.event.rule.as_ref() == "conntrack.conn_new_per_minute"));
    }

    #[test]
    fn the_store_is_private_and_a_damaged_one_is_refused_saying_what_to_do() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        {
            let mut s = Store::open(&path).unwrap();
            let batch: Vec<_> = (0..3000)
                .map(|i| (origin(i), ev(Kind::AuthFailure, &format!("198.18.{}.{}", i / 250, i % 250), 0)))
                .collect();
            s.insert_events(&batch).unwrap();
            s.checkpoint().unwrap();
        }
        for f in ["f.db", "f.db-wal", "f.db-shm"] {
            if let Ok(m) = std::fs::metadata(dir.path().join(f)) {
                assert_eq!(m.permissions().mode() & 0o077, 0, "{f} readable by others");
            }
        }
        // A store readable by everyone is tightened at open.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o007, 0);
        // Random bytes in the middle of the file.
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 64 * 1024, "{}", bytes.len());
        let mid = bytes.len() / 2;
        for (i, b) in bytes[mid..mid + 8192].iter_mut().enumerate() {
            *b = (i * 7919 % 251) as u8;
        }
        std::fs::write(&path, bytes).unwrap();
        let e = Store::open(&path).err().expect("a damaged store is refused").to_string();
        assert!(e.contains("damaged") && e.contains("move the file"), "{e}");
    }

    #[test]
    fn retention_deletes_old_events() {
        let mut s = Store::open_in_memory().unwrap();
        s.insert_events(&[
            (origin(1), ev(Kind::AuthFailure, "198.51.100.7", 0)),
            (origin(2), ev(Kind::AuthFailure, "198.51.100.7", 7200)),
        ])
        .unwrap();
        let now = Utc.timestamp_opt(1_763_700_000 + 7200 + 1800, 0).unwrap();
        assert_eq!(s.prune(now, Duration::from_secs(3600)).unwrap(), 1);
        assert_eq!(s.query_events(&EventFilter::default()).unwrap().len(), 1);
    }

    /// Events whose id is outside its minute's range in event_minutes (what a reader by id range would miss).
    fn uncovered(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM event_minutes m
               WHERE m.minute = e.ts_us - ((e.ts_us % 60000000) + 60000000) % 60000000 AND e.id BETWEEN m.first_id AND m.last_id)",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn minutes(conn: &Connection) -> Vec<(i64, i64, i64)> {
        let mut st = conn.prepare("SELECT minute, first_id, last_id FROM event_minutes ORDER BY minute").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn every_event_lies_in_its_minute_s_id_range_through_lag_prune_and_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let mut s = Store::open(&path).unwrap();
        // Out of time order, as a lagging input writes: minute 3's rows have ids on both sides of minute 0's.
        let secs = [200, 10, 30, 190, 130, 70, 5, 250, 199];
        let batch: Vec<_> = secs
            .iter()
            .enumerate()
            .map(|(i, t)| (origin(i as u64), ev(Kind::AuthFailure, "198.51.100.7", *t)))
            .collect();
        s.insert_events(&batch[..4]).unwrap();
        s.insert_events(&batch[4..]).unwrap();
        // Before 1970 (a clock never set): the minute is the floor, in Rust and in the SQL alike.
        let mut old = ev(Kind::AuthFailure, "198.51.100.8", 0);
        old.time = Utc.timestamp_opt(-30, 0).unwrap();
        s.insert_events(&[(origin(99), old)]).unwrap();
        assert_eq!(uncovered(s.reader()), 0);
        let built = minutes(s.reader());
        assert_eq!(built.len(), 6, "minutes -1, 0, 1, 2, 3, 4: {built:?}");
        assert_eq!(built[0].0, -60_000_000);
        let minute3 = built
            .iter()
            .find(|(m, _, _)| *m == ts_us(&batch[0].1.time) - ts_us(&batch[0].1.time).rem_euclid(MINUTE_US))
            .unwrap();
        assert_eq!((minute3.1, minute3.2), (1, 9), "rows 1, 4 and 9 are minute 3's");

        // A store of schema 6 is brought up with the same ranges, built from its events.
        s.reader().execute_batch("DROP TABLE event_minutes; PRAGMA user_version = 6;").unwrap();
        drop(s);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(minutes(s.reader()), built);

        // A prune drops the minutes wholly before the cutoff and keeps the rest covering.
        let now = Utc.timestamp_opt(1_763_700_000 + 120 + 3600, 0).unwrap();
        s.prune(now, Duration::from_secs(3600)).unwrap();
        assert_eq!(uncovered(s.reader()), 0);
        let left: Vec<i64> = minutes(s.reader()).iter().map(|(m, _, _)| *m).collect();
        assert_eq!(left.len(), 3, "minutes 2, 3 and 4 stay: {left:?}");
    }

    #[test]
    fn a_newer_database_is_refused_and_left_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        drop(Store::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let before = std::fs::read(&path).unwrap();
        let e = Store::open(&path).err().unwrap().to_string();
        assert!(e.contains("schema version 99") && e.contains(&format!("knows up to {SCHEMA_VERSION}")), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_read_only_store_reads_and_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let mut s = Store::open(&path).unwrap();
        s.insert_events(&[(origin(1), ev(Kind::AuthFailure, "198.51.100.7", 0))]).unwrap();
        s.checkpoint().unwrap();
        drop(s);
        let before = std::fs::read(&path).unwrap();
        let mut r = Store::open_read_only(&path).unwrap();
        assert_eq!(r.query_events(&EventFilter::default()).unwrap().len(), 1);
        assert!(r.insert_events(&[(origin(2), ev(Kind::AuthFailure, "198.51.100.8", 1))]).is_err());
        drop(r);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(Store::open_read_only(&dir.path().join("absent.db")).is_err());
        assert!(!dir.path().join("absent.db").exists(), "nothing created");
    }

    #[test]
    fn reopening_keeps_data_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/f.db");
        let mut s = Store::open(&path).unwrap();
        s.insert_events(&[(origin(1), ev(Kind::AuthFailure, "198.51.100.7", 0))]).unwrap();
        s.set_position("mail.log", 42, 1000, Utc::now()).unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.query_events(&EventFilter::default()).unwrap().len(), 1);
        assert_eq!(s.position("mail.log").unwrap(), Some((42, 1000)));
    }
}
