//! `make bench`: events/s ingested into the SQLite store in batches, and database bytes per event.

use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use floodgate::event::{Event, Kind};
use floodgate::store::{Origin, Store};
use floodgate_lab::gen;

fn main() {
    let total: usize = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let batch_size = 4096;
    let mut r = gen::Rng::new(7);
    let input: Arc<str> = Arc::from("/var/log/mail.log");
    let rules: Vec<Arc<str>> =
        ["postfix.sasl_auth_failed", "postfix.connect", "dovecot.login_auth_failed", "postfix.relay_denied"]
            .iter()
            .map(|s| Arc::from(*s))
            .collect();
    let smtp: Arc<str> = Arc::from("smtp");
    let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
    let events: Vec<(Origin, Event)> = (0..total)
        .map(|i| {
            let k = r.below(4) as usize;
            let kind = [Kind::AuthFailure, Kind::Connect, Kind::AuthFailure, Kind::RelayDenied][k];
            let addr = std::net::IpAddr::from([198, 51, 100, (r.below(254) + 1) as u8]);
            (
                Origin { input: input.clone(), line: Some(i as u64 + 1) },
                Event {
                    time: t0 + chrono::Duration::milliseconds(i as i64 * 5),
                    kind,
                    failure: kind.is_failure_by_default(),
                    rule: rules[k].clone(),
                    addr: Some(addr),
                    local_addr: None,
                    port: Some(25),
                    service: Some(smtp.clone()),
                    user: (kind == Kind::AuthFailure).then(|| "alice".to_string()),
                    count: 1,
                    syn_action: None,
                    assured: None,
                },
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let mut store = Store::open(&path).unwrap();
    let (secs, (rows, bytes)) = timed_insert(&mut store, &events, batch_size);
    println!("store: {total} events in batches of {batch_size}: {secs:.3} s = {:.0} events/s", total as f64 / secs);
    println!(
        "store: {rows} rows, {:.1} MiB on disk = {:.1} bytes/event (with indexes)",
        bytes as f64 / 1048576.0,
        bytes as f64 / total as f64
    );

    // A flood of conntrack NEW events from 5,000 spoofed sources, aggregated per source, port and minute.
    let flood: Vec<(Origin, Event)> = (0..total)
        .map(|i| {
            let n = r.below(5000) as u32;
            let addr = std::net::IpAddr::from([198, 18, (n >> 8) as u8, n as u8]);
            (
                Origin { input: Arc::from("conntrack"), line: None },
                Event {
                    time: t0 + chrono::Duration::microseconds(i as i64 * 20),
                    kind: Kind::ConnNew,
                    failure: false,
                    rule: Arc::from("conntrack.new"),
                    addr: Some(addr),
                    local_addr: None,
                    port: Some(25),
                    service: None,
                    user: None,
                    count: 1,
                    syn_action: None,
                    assured: None,
                },
            )
        })
        .collect();
    let (secs, (rows2, bytes2)) = timed_insert(&mut store, &flood, batch_size);
    println!(
        "store: {total} conntrack events (5,000 sources, 20 s) in {secs:.3} s = {:.0} events/s, aggregated into {} rows (+{:.1} MiB)",
        total as f64 / secs,
        rows2 - rows,
        (bytes2 as f64 - bytes as f64) / 1048576.0
    );
}

/// Inserts `events` in batches of `batch_size`; the seconds that took, then the store's rows and bytes on disk
/// after a checkpoint.
fn timed_insert(store: &mut Store, events: &[(Origin, Event)], batch_size: usize) -> (f64, (u64, u64)) {
    let start = Instant::now();
    for chunk in events.chunks(batch_size) {
        store.insert_events(chunk).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    store.checkpoint().unwrap();
    (secs, store.usage().unwrap())
}
