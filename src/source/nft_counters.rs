//! The nft counters source: the drop counters of floodgate's own limit rules and the SYN proxy's SYN counter,
//! read at a fixed interval and turned into `kernel_counter` events carrying each rise (rule
//! `nft.limit_source` / `nft.limit_global` / `nft.limit_synproxy`, the port).
//!
//! Why a source: floodgate's limits drop at raw priority, before conntrack, and the SYN proxy leaves SYNs
//! untracked, so once a port is limited conntrack no longer sees its attack. These counters are the only measure
//! of what goes on behind a limit; fed to the policy like any other event, they keep a held-back flood from being
//! taken for calm. Read through a netlink socket of the source's own (the enforcer's stays with the pipeline).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::{Sink, Stop};
use crate::decision::LimitMode;
use crate::event::{Event, Kind};
use crate::nft::ruleset::{GLOBAL_CHAIN, SOURCE_CHAIN, SYNPROXY_CHAIN};
use crate::nft::Kernel;

const INPUT: &str = "nft";

/// The chains whose per-port counters are read, and what each measures.
const CHAINS: [(&str, LimitMode); 3] =
    [(SOURCE_CHAIN, LimitMode::Source), (GLOBAL_CHAIN, LimitMode::Global), (SYNPROXY_CHAIN, LimitMode::Synproxy)];

#[derive(Debug)]
pub struct NftCountersSource {
    table: String,
    interval: Duration,
}

impl NftCountersSource {
    pub fn new(table: String, interval: Duration) -> Self {
        NftCountersSource { table, interval }
    }

    /// Reads until `stop` is set or the pipeline goes away. Blocking: run it on a blocking thread. A table that
    /// cannot be read (not installed yet, no permission) marks the input as waiting and is read again later.
    pub fn run(self, sink: Sink, stop: Stop) {
        let input: Arc<str> = Arc::from(INPUT);
        let mut kernel: Option<Kernel> = None;
        let mut last: HashMap<(u16, LimitMode), u64> = HashMap::new();
        let mut next = Instant::now();
        loop {
            if stop.is_stopped() || sink.is_closed() {
                return;
            }
            if kernel.is_none() {
                kernel =
                    Kernel::open().map_err(|e| tracing::debug!(error = %e, "nft counters: no netlink socket")).ok();
            }
            if let Some(k) = kernel.as_mut() {
                match read(k, &self.table) {
                    Ok(counts) => {
                        sink.stats.waiting.store(false, Ordering::Relaxed);
                        sink.stats.ready.store(true, Ordering::Relaxed);
                        let events = rises(&mut last, counts);
                        if !events.is_empty() && !sink.send_events(&input, events) {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the limit counters");
                        sink.stats.waiting.store(true, Ordering::Relaxed);
                        kernel = None;
                    }
                }
            }
            next += self.interval;
            if !stop.sleep_until(next) {
                return;
            }
            if next < Instant::now() {
                next = Instant::now();
            }
        }
    }
}

fn read(k: &mut Kernel, table: &str) -> Result<Vec<(u16, LimitMode, u64)>, crate::nft::NftError> {
    let mut out = Vec::new();
    for (chain, mode) in CHAINS {
        for (port, packets) in k.limit_drops(table, chain)? {
            out.push((port, mode, packets));
        }
    }
    Ok(out)
}

/// Each counter's rise since the last reading, as events. A first reading, or a counter that went down (the
/// chain was refilled by a repair), only sets the baseline.
fn rises(last: &mut HashMap<(u16, LimitMode), u64>, counts: Vec<(u16, LimitMode, u64)>) -> Vec<Event> {
    let now = Utc::now();
    let mut events = Vec::new();
    for (port, mode, packets) in counts {
        let rise = match last.insert((port, mode), packets) {
            Some(before) if packets > before => packets - before,
            _ => continue,
        };
        let mut ev = Event::new(now, Kind::KernelCounter, Arc::from(format!("nft.limit_{}", mode.as_str())));
        ev.port = Some(port);
        ev.count = u32::try_from(rise).unwrap_or(u32::MAX);
        events.push(ev);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rises_after_a_baseline_and_a_reset_is_a_new_baseline() {
        let mut last = HashMap::new();
        assert!(rises(&mut last, vec![(587, LimitMode::Global, 100)]).is_empty(), "the first reading");
        let e = rises(&mut last, vec![(587, LimitMode::Global, 350), (25, LimitMode::Synproxy, 9)]);
        assert_eq!(e.len(), 1);
        assert_eq!((&*e[0].rule, e[0].port, e[0].count), ("nft.limit_global", Some(587), 250));
        assert!(rises(&mut last, vec![(587, LimitMode::Global, 20)]).is_empty(), "a reset counter");
        let e = rises(&mut last, vec![(587, LimitMode::Global, 25), (25, LimitMode::Synproxy, 10)]);
        let got: Vec<_> = e.iter().map(|e| (e.rule.to_string(), e.count)).collect();
        assert_eq!(got, [("nft.limit_global".to_string(), 5), ("nft.limit_synproxy".to_string(), 1)]);
    }
}
