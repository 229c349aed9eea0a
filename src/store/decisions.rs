//! Decisions: bans, rate limits and the allowlist as the store holds them. Each change is a row in `decisions`
//! (the history) and an update of the current state (`bans`, `limits`, `allowlist`), written in one transaction
//! that commits only if the kernel accepted the matching batch.

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};

use super::{from_us, sql, ts_us, Store, StoreError};
use crate::addr::Cidr;
use crate::decision::{Decision, LimitMode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub cidr: Cidr,
    pub since: DateTime<Utc>,
    /// None: until unblocked.
    pub until: Option<DateTime<Utc>>,
    pub reason: String,
    pub origin: String,
    /// What led to it (JSON), when the policy recorded figures.
    pub figures: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitOn {
    pub port: u16,
    pub mode: LimitMode,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub reason: String,
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub cidr: Cidr,
    pub added: DateTime<Utc>,
    pub comment: Option<String>,
}

/// Another fleet host's ban, as this host applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBan {
    pub cidr: Cidr,
    pub host: String,
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
    pub reason: String,
}

/// What is in force at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforced {
    pub bans: Vec<Ban>,
    pub limits: Vec<LimitOn>,
    pub allowlist: Vec<Allowed>,
    /// Other fleet hosts' bans (empty without a fleet).
    pub remote: Vec<RemoteBan>,
}

fn parse_cidr(path: &str, text: &str) -> Result<Cidr, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt { path: path.to_string(), what: format!("bad address `{text}`") })
}

fn read_limits(tx: &rusqlite::Connection, path: &str, now: DateTime<Utc>) -> Result<Vec<LimitOn>, StoreError> {
    let q = |e| sql(path, "reading limits", e);
    let mut limits = Vec::new();
    let mut st = tx
        .prepare_cached("SELECT port, mode, since_us, until_us, reason, origin FROM limits WHERE until_us > ?1")
        .map_err(q)?;
    let rows = st
        .query_map([ts_us(&now)], |r| {
            Ok((
                r.get::<_, u16>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .map_err(q)?;
    for row in rows {
        let (port, mode, since, until, reason, origin) = row.map_err(q)?;
        let mode = LimitMode::parse(&mode)
            .ok_or_else(|| StoreError::Corrupt { path: path.to_string(), what: format!("bad limit mode `{mode}`") })?;
        limits.push(LimitOn { port, mode, since: from_us(since), until: from_us(until), reason, origin });
    }
    Ok(limits)
}

fn read(tx: &rusqlite::Connection, path: &str, now: DateTime<Utc>) -> Result<Enforced, StoreError> {
    let now_us = ts_us(&now);
    let q = |e| sql(path, "reading enforced state", e);
    let mut bans = Vec::new();
    let mut st = tx
        .prepare_cached(
            "SELECT b.cidr, b.since_us, b.until_us, b.reason, b.origin, d.figures FROM bans b
             LEFT JOIN decisions d ON d.id = b.decision_id WHERE b.until_us IS NULL OR b.until_us > ?1",
        )
        .map_err(q)?;
    let rows = st
        .query_map([now_us], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })
        .map_err(q)?;
    for row in rows {
        let (cidr, since, until, reason, origin, figures) = row.map_err(q)?;
        bans.push(Ban {
            cidr: parse_cidr(path, &cidr)?,
            since: from_us(since),
            until: until.map(from_us),
            reason,
            origin,
            figures,
        });
    }
    let limits = read_limits(tx, path, now)?;
    let allowlist = read_allowlist(tx, path)?;
    let remote = read_remote(tx, path, now)?;
    Ok(Enforced { bans, limits, allowlist, remote })
}

fn read_remote(tx: &rusqlite::Connection, path: &str, now: DateTime<Utc>) -> Result<Vec<RemoteBan>, StoreError> {
    let q = |e| sql(path, "reading the fleet's bans", e);
    let mut st = tx
        .prepare_cached(
            "SELECT cidr, host, since_us, until_us, reason FROM remote_bans WHERE until_us IS NULL OR until_us > ?1",
        )
        .map_err(q)?;
    let rows = st
        .query_map([ts_us(&now)], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<i64>>(3)?, r.get(4)?))
        })
        .map_err(q)?;
    let mut out = Vec::new();
    for row in rows {
        let (cidr, host, since, until, reason) = row.map_err(q)?;
        out.push(RemoteBan {
            cidr: parse_cidr(path, &cidr)?,
            host,
            since: from_us(since),
            until: until.map(from_us),
            reason,
        });
    }
    Ok(out)
}

fn read_allowlist(tx: &rusqlite::Connection, path: &str) -> Result<Vec<Allowed>, StoreError> {
    let q = |e| sql(path, "reading the allowlist", e);
    let mut st = tx.prepare_cached("SELECT cidr, added_us, comment FROM allowlist").map_err(q)?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get(2)?))).map_err(q)?;
    let mut out = Vec::new();
    for row in rows {
        let (cidr, added, comment) = row.map_err(q)?;
        out.push(Allowed { cidr: parse_cidr(path, &cidr)?, added: from_us(added), comment });
    }
    Ok(out)
}

/// From this many decisions on, `Store::record` writes the rows while the kernel is programmed.
const CONCURRENT_FROM: usize = 256;

/// Bans per multi-row INSERT. One statement per row spent a third of a 100,000-line blocklist's store time on
/// SQLite's per-statement work (bind, step, reset); 64 rows of 8 columns stay far below its parameter limit.
const BANS_PER_STATEMENT: usize = 64;

/// A ban's columns: decision id, target, until, reason, origin, figures.
type BanRow<'a> = (i64, String, Option<i64>, &'a str, &'a str, Option<&'a str>);

/// Writes `decisions` in order: runs of bans as multi-row statements, the rest one by one.
fn write_all(tx: &Transaction, path: &str, decisions: &[Decision], now: DateTime<Utc>) -> Result<(), StoreError> {
    let mut rest = decisions;
    while let Some(first) = rest.first() {
        let run = rest.iter().take(BANS_PER_STATEMENT).take_while(|d| matches!(d, Decision::Ban { .. })).count();
        if run == BANS_PER_STATEMENT {
            write_bans(tx, path, &rest[..run], now)?;
            rest = &rest[run..];
        } else {
            write(tx, path, first, now)?;
            rest = &rest[1..];
        }
    }
    Ok(())
}

/// A run of bans, as `write` records each: a `decisions` row and the `bans` upsert pointing at it. The ids are
/// given, not left to SQLite, so that each ban names its own decision: the transaction is IMMEDIATE, nobody
/// else writes `decisions` meanwhile.
fn write_bans(tx: &Transaction, path: &str, bans: &[Decision], now: DateTime<Utc>) -> Result<(), StoreError> {
    let q = |e| sql(path, "recording decisions", e);
    let now_us = ts_us(&now);
    let first: i64 = tx
        .prepare_cached("SELECT coalesce(max(id), 0) + 1 FROM decisions")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(q)?;
    let rows: Vec<BanRow> = bans
        .iter()
        .zip(first..)
        .filter_map(|(d, id)| match d {
            Decision::Ban { cidr, until, reason, origin, figures } => Some((
                id,
                cidr.to_string(),
                until.map(|u| ts_us(&u)),
                reason.as_str(),
                origin.as_str(),
                figures.as_deref(),
            )),
            _ => None,
        })
        .collect();
    let placeholders = |n: usize| vec![format!("({})", vec!["?"; n].join(", ")); rows.len()].join(", ");
    let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 8);
    for (id, target, until, reason, origin, figures) in &rows {
        values.extend([id as &dyn rusqlite::ToSql, &now_us, &"ban", target, until, reason, origin, figures]);
    }
    tx.prepare_cached(&format!(
        "INSERT INTO decisions (id, ts_us, action, target, until_us, reason, origin, figures) VALUES {}",
        placeholders(8)
    ))
    .and_then(|mut st| st.execute(values.as_slice()))
    .map_err(q)?;
    values.clear();
    for (id, target, until, reason, origin, _) in &rows {
        values.extend([target as &dyn rusqlite::ToSql, &now_us, until, reason, origin, id]);
    }
    tx.prepare_cached(&format!(
        "INSERT INTO bans (cidr, since_us, until_us, reason, origin, decision_id) VALUES {}
         ON CONFLICT (cidr) DO UPDATE SET since_us = excluded.since_us, until_us = excluded.until_us,
         reason = excluded.reason, origin = excluded.origin, decision_id = excluded.decision_id",
        placeholders(6)
    ))
    .and_then(|mut st| st.execute(values.as_slice()))
    .map_err(q)?;
    Ok(())
}

fn write(tx: &Transaction, path: &str, d: &Decision, now: DateTime<Utc>) -> Result<(), StoreError> {
    let q = |e| sql(path, "recording a decision", e);
    let now_us = ts_us(&now);
    let (action, target, until, reason, origin): (String, String, Option<i64>, &str, &str) = match d {
        Decision::Ban { cidr, until, reason, origin, .. } => {
            ("ban".into(), cidr.to_string(), until.map(|u| ts_us(&u)), reason, origin)
        }
        Decision::Unban { cidr, reason, origin } => ("unban".into(), cidr.to_string(), None, reason, origin),
        Decision::Limit { port, mode, until, reason, origin, .. } => {
            (format!("limit_{}", mode.as_str()), port.to_string(), Some(ts_us(until)), reason, origin)
        }
        Decision::Lift { port, mode, reason, origin } => {
            (format!("lift_{}", mode.as_str()), port.to_string(), None, reason, origin)
        }
        Decision::Allow { cidr, comment, origin } => {
            ("allow".into(), cidr.to_string(), None, comment.as_deref().unwrap_or(""), origin)
        }
        Decision::Disallow { cidr, origin } => ("disallow".into(), cidr.to_string(), None, "", origin),
        Decision::Remote { cidr, until, host, reason } => {
            ("remote_ban".into(), cidr.to_string(), until.map(|u| ts_us(&u)), reason, host)
        }
        Decision::RemoteLift { cidr, reason } => ("remote_lift".into(), cidr.to_string(), None, reason, "fleet"),
    };
    let figures = match d {
        Decision::Ban { figures, .. } | Decision::Limit { figures, .. } => figures.as_deref(),
        _ => None,
    };
    // Another host's verdict is state here, not a decision of this host: its row in remote_bans is all that is
    // kept (decision_id 0), so that a host joining a fleet of 100,000 bans, or restarting in one, does not log
    // them all again. The fleet's own history is its bucket's.
    let remote = matches!(d, Decision::Remote { .. } | Decision::RemoteLift { .. });
    if !remote {
        tx.prepare_cached(
            "INSERT INTO decisions (ts_us, action, target, until_us, reason, origin, figures)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut st| st.execute(params![now_us, action, target, until, reason, origin, figures]))
        .map_err(q)?;
    }
    let id = if remote { 0 } else { tx.last_insert_rowid() };
    match d {
        Decision::Ban { .. } => {
            tx.prepare_cached(
                "INSERT INTO bans (cidr, since_us, until_us, reason, origin, decision_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (cidr) DO UPDATE SET since_us = excluded.since_us, until_us = excluded.until_us,
                 reason = excluded.reason, origin = excluded.origin, decision_id = excluded.decision_id",
            )
            .and_then(|mut st| st.execute(params![target, now_us, until, reason, origin, id]))
            .map_err(q)?;
        }
        Decision::Unban { .. } => {
            tx.execute("DELETE FROM bans WHERE cidr = ?1", [&target]).map_err(q)?;
        }
        Decision::Limit { port, mode, .. } => {
            tx.prepare_cached(
                "INSERT INTO limits (port, mode, since_us, until_us, reason, origin, decision_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (port, mode) DO UPDATE SET until_us = excluded.until_us, reason = excluded.reason,
                 origin = excluded.origin, decision_id = excluded.decision_id",
            )
            .and_then(|mut st| st.execute(params![port, mode.as_str(), now_us, until, reason, origin, id]))
            .map_err(q)?;
        }
        Decision::Lift { port, mode, .. } => {
            tx.execute("DELETE FROM limits WHERE port = ?1 AND mode = ?2", params![port, mode.as_str()]).map_err(q)?;
        }
        Decision::Allow { comment, .. } => {
            tx.execute(
                "INSERT INTO allowlist (cidr, added_us, comment) VALUES (?1, ?2, ?3)
                 ON CONFLICT (cidr) DO UPDATE SET comment = COALESCE(excluded.comment, comment)",
                params![target, now_us, comment],
            )
            .map_err(q)?;
        }
        Decision::Disallow { .. } => {
            tx.execute("DELETE FROM allowlist WHERE cidr = ?1", [&target]).map_err(q)?;
        }
        Decision::Remote { host, .. } => {
            tx.prepare_cached(
                "INSERT INTO remote_bans (cidr, host, since_us, until_us, reason, decision_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (cidr) DO UPDATE SET host = excluded.host, since_us = excluded.since_us,
                 until_us = excluded.until_us, reason = excluded.reason, decision_id = excluded.decision_id",
            )
            .and_then(|mut st| st.execute(params![target, host, now_us, until, reason, id]))
            .map_err(q)?;
        }
        Decision::RemoteLift { .. } => {
            tx.prepare_cached("DELETE FROM remote_bans WHERE cidr = ?1")
                .and_then(|mut st| st.execute([&target]))
                .map_err(q)?;
        }
    }
    Ok(())
}

impl Store {
    /// What is in force at `now`: unexpired bans and limits, and the stored allowlist.
    pub fn enforced(&self, now: DateTime<Utc>) -> Result<Enforced, StoreError> {
        read(&self.conn, &self.path, now)
    }

    /// Records `decisions` and hands the resulting state to `apply` (which writes the kernel) inside one
    /// transaction: committed only if `apply` succeeds, so the store never claims what the kernel refused.
    pub fn decide<T, E: From<StoreError>>(
        &mut self,
        decisions: &[Decision],
        now: DateTime<Utc>,
        apply: impl FnOnce(&Enforced) -> Result<T, E>,
    ) -> Result<T, E> {
        self.in_transaction(decisions, now, |tx, path| {
            let state = read(tx, path, now)?;
            apply(&state)
        })
    }

    /// Records `decisions` and runs `apply` inside one transaction, without reading the whole state back: the
    /// daemon's path for decisions it can apply from memory. Committed only if `apply` succeeds.
    ///
    /// A big batch (a blocklist, a fleet joining) writes its rows while `apply` programs the kernel on a second
    /// thread: neither reads what the other writes, and the commit still waits for both. Should the rows fail
    /// where the kernel succeeded (a full disk), the kernel holds bans the store does not: the error goes back
    /// as a store error, the state `enforce_only` is there for, and `sync` keeps such strays.
    pub fn record<T: Send, E: From<StoreError> + Send>(
        &mut self,
        decisions: &[Decision],
        now: DateTime<Utc>,
        apply: impl FnOnce() -> Result<T, E> + Send,
    ) -> Result<T, E> {
        if decisions.len() < CONCURRENT_FROM {
            return self.in_transaction(decisions, now, |_, _| apply());
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, "beginning a transaction", e))?;
        let (written, applied) = std::thread::scope(|s| {
            let kernel = s.spawn(apply);
            let written = write_all(&tx, &path, decisions, now);
            (written, kernel.join())
        });
        let out = match applied {
            Ok(out) => out?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        written?;
        tx.commit().map_err(|e| sql(&path, "committing decisions", e))?;
        Ok(out)
    }

    fn in_transaction<T, E: From<StoreError>>(
        &mut self,
        decisions: &[Decision],
        now: DateTime<Utc>,
        then: impl FnOnce(&Transaction, &str) -> Result<T, E>,
    ) -> Result<T, E> {
        let path = self.path.clone();
        // IMMEDIATE: a second floodgate deciding at the same time waits here (busy timeout) instead of computing
        // its kernel diff from a state this one is about to change.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, "beginning a transaction", e))?;
        write_all(&tx, &path, decisions, now)?;
        let out = then(&tx, &path)?;
        tx.commit().map_err(|e| sql(&path, "committing decisions", e))?;
        Ok(out)
    }

    /// The stored allowlist alone (cheap: no bans read).
    pub fn allowlist(&self) -> Result<Vec<Allowed>, StoreError> {
        read_allowlist(&self.conn, &self.path)
    }

    /// Bans in force at `now` counted by origin and family (true: IPv4); another host's bans under "fleet".
    pub fn bans_by_origin(&self, now: DateTime<Utc>) -> Result<Vec<(String, bool, u64)>, StoreError> {
        let q = |e| sql(&self.path, "counting bans", e);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT origin, instr(cidr, ':') = 0, count(*) FROM bans WHERE until_us IS NULL OR until_us > ?1
                 GROUP BY 1, 2
                 UNION ALL
                 SELECT 'fleet', instr(cidr, ':') = 0, count(*) FROM remote_bans WHERE until_us IS NULL OR until_us > ?1
                 GROUP BY 2",
            )
            .map_err(q)?;
        let rows = st
            .query_map([ts_us(&now)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?, r.get::<_, i64>(2)? as u64))
            })
            .map_err(q)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q)
    }

    /// How many bans are in force at `now`, and the limits (cheap: bans are counted, not read).
    pub fn summary(&self, now: DateTime<Utc>) -> Result<(usize, Vec<LimitOn>), StoreError> {
        let q = |e| sql(&self.path, "counting bans", e);
        let bans: i64 = self
            .conn
            .query_row("SELECT count(*) FROM bans WHERE until_us IS NULL OR until_us > ?1", [ts_us(&now)], |r| r.get(0))
            .map_err(q)?;
        let limits = read_limits(&self.conn, &self.path, now)?;
        Ok((bans as usize, limits))
    }

    /// Deletes bans and limits that have run out (the kernel has dropped them by itself); returns how many.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let now_us = ts_us(&now);
        let q = |e| sql(&self.path, "expiring decisions", e);
        let a =
            self.conn.execute("DELETE FROM bans WHERE until_us IS NOT NULL AND until_us <= ?1", [now_us]).map_err(q)?;
        let b = self.conn.execute("DELETE FROM limits WHERE until_us <= ?1", [now_us]).map_err(q)?;
        let c = self
            .conn
            .execute("DELETE FROM remote_bans WHERE until_us IS NOT NULL AND until_us <= ?1", [now_us])
            .map_err(q)?;
        Ok(a + b + c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn ban(c: &str, until: Option<i64>) -> Decision {
        Decision::Ban {
            cidr: c.parse().unwrap(),
            until: until.map(t),
            reason: "test".into(),
            origin: "manual".into(),
            figures: Some("{\"failures\":5}".into()),
        }
    }

    #[test]
    fn decisions_commit_only_when_applied() {
        let mut s = Store::open_in_memory().unwrap();
        let r: Result<(), StoreError> = s.decide(&[ban("198.51.100.7", Some(60))], t(0), |state| {
            assert_eq!(state.bans.len(), 1);
            Err(StoreError::Corrupt { path: "x".into(), what: "kernel said no".into() })
        });
        assert!(r.is_err());
        assert!(s.enforced(t(0)).unwrap().bans.is_empty(), "a refused batch leaves the store unchanged");
        let n: i64 = s.conn.query_row("SELECT count(*) FROM decisions", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        s.decide(&[ban("198.51.100.7", Some(60)), ban("203.0.113.0/24", None)], t(0), |_| Ok::<_, StoreError>(()))
            .unwrap();
        let e = s.enforced(t(30)).unwrap();
        assert_eq!(e.bans.len(), 2);
        assert_eq!(e.bans[0].figures.as_deref(), Some("{\"failures\":5}"), "the figures ride with the decision");
        // Ended bans are no longer in force, and expire() removes them.
        let e = s.enforced(t(61)).unwrap();
        assert_eq!(e.bans.iter().map(|b| b.cidr.to_string()).collect::<Vec<_>>(), ["203.0.113.0/24"]);
        assert_eq!(s.expire(t(61)).unwrap(), 1);
    }

    #[test]
    fn rebans_replace_unbans_remove_and_history_keeps_all() {
        let mut s = Store::open_in_memory().unwrap();
        let ok = |_: &Enforced| Ok::<_, StoreError>(());
        s.decide(&[ban("198.51.100.7", Some(60))], t(0), ok).unwrap();
        s.decide(&[ban("198.51.100.7", Some(600))], t(10), ok).unwrap();
        assert_eq!(s.enforced(t(100)).unwrap().bans[0].until, Some(t(600)));
        let lim = Decision::Limit {
            port: 25,
            mode: LimitMode::Global,
            until: t(30),
            reason: "flood".into(),
            origin: "manual".into(),
            figures: None,
        };
        s.decide(&[lim], t(10), ok).unwrap();
        assert_eq!(s.enforced(t(20)).unwrap().limits[0].mode, LimitMode::Global);
        let un = Decision::Unban {
            cidr: "198.51.100.7".parse().unwrap(),
            reason: "by hand".into(),
            origin: "manual".into(),
        };
        s.decide(&[un], t(20), ok).unwrap();
        assert!(s.enforced(t(20)).unwrap().bans.is_empty());
        let action: String = s
            .conn
            .query_row(
                "SELECT action FROM decisions WHERE target = ?1 ORDER BY id DESC LIMIT 1",
                ["198.51.100.7"],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(action, "unban");
        let n: i64 = s.conn.query_row("SELECT count(*) FROM decisions", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 4);
    }

    #[test]
    fn a_big_batch_records_every_ban_with_its_own_decision_and_commits_only_when_applied() {
        let mut s = Store::open_in_memory().unwrap();
        s.decide(&[ban("203.0.113.9", Some(60))], t(0), |_| Ok::<_, StoreError>(())).unwrap();
        // 300 bans (runs of 64 and a tail), one address twice inside a run and an unban in the middle.
        let mut batch: Vec<Decision> =
            (0..300).map(|i| ban(&format!("198.18.{}.{}", i / 256, i % 256), Some(60 + i))).collect();
        batch[10] = ban("198.18.0.3", Some(999));
        batch[150] =
            Decision::Unban { cidr: "203.0.113.9".parse().unwrap(), reason: "r".into(), origin: "manual".into() };
        let failed: Result<(), StoreError> =
            s.record(&batch, t(1), || Err(StoreError::Corrupt { path: "x".into(), what: "kernel said no".into() }));
        assert!(failed.is_err());
        let n: i64 = s.conn.query_row("SELECT count(*) FROM decisions", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "a batch the kernel refused leaves no row");
        let applied_on = std::sync::Mutex::new(None);
        s.record(&batch, t(1), || {
            *applied_on.lock().unwrap() = Some(std::thread::current().id());
            Ok::<_, StoreError>(())
        })
        .unwrap();
        assert_ne!(
            applied_on.into_inner().unwrap(),
            Some(std::thread::current().id()),
            "the kernel's part ran beside the writes"
        );
        let n: i64 = s.conn.query_row("SELECT count(*) FROM decisions", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 301);
        let e = s.enforced(t(2)).unwrap();
        assert_eq!(e.bans.len(), 298, "299 distinct addresses banned, one unbanned");
        let until = |c: &str| e.bans.iter().find(|b| b.cidr.to_string() == c).map(|b| b.until);
        assert_eq!(until("198.18.0.3"), Some(Some(t(999))), "the later word in a run wins");
        assert_eq!(until("198.18.1.43"), Some(Some(t(60 + 299))));
        assert_eq!(until("203.0.113.9"), None);
        // Every ban points at a decision about itself, made by the batch.
        let wrong: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM bans b LEFT JOIN decisions d ON d.id = b.decision_id
                 WHERE d.target IS NOT b.cidr OR d.action IS NOT 'ban' OR d.until_us IS NOT b.until_us",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(wrong, 0);
    }
}
