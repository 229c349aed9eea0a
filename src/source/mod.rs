//! Sources: what the machine already says about an attack, read live. Each source runs on its own blocking
//! thread (a tokio blocking task) and feeds the pipeline through a bounded channel: log lines are sent with
//! backpressure (a file is its own buffer: falling behind loses nothing), counter and conntrack events are
//! offered and shed when the pipeline is full (counted, shown by `floodgate status`).

pub mod config;
pub mod conntrack;
pub mod file;
pub mod journald;
pub mod kmsg;
pub mod netstat;
pub mod nft_counters;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::event::Event;

pub use config::SourcesConfig;

/// Where a file input stands after a batch of lines: the pipeline stores it with the batch's events, so a
/// restart resumes exactly after the last line it recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The file's identity (inode; for /dev/kmsg a hash of the boot id).
    pub inode: u64,
    /// Bytes consumed (for /dev/kmsg: the sequence number of the last record).
    pub offset: u64,
}

/// What a source sends to the pipeline.
#[derive(Debug)]
pub enum Feed {
    /// Raw lines (without their newline) for the parser. `first_line` numbers them (1-based) for files.
    /// `source` names the sender (its counters' identity): the pipeline counts the events it parses from these
    /// lines for it, in its own memory.
    Lines {
        input: Arc<str>,
        lines: Vec<Vec<u8>>,
        first_line: Option<u64>,
        position: Option<Position>,
        source: Arc<SourceStats>,
        /// When the source had read them: where the decision latency the metrics show starts.
        at: std::time::Instant,
    },
    /// Events a source produced itself (kernel counters, conntrack).
    Events { input: Arc<str>, events: Vec<Event>, at: std::time::Instant },
}

/// Counters a source keeps for `floodgate status`; the pipeline reads them, the source writes them.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub lines: AtomicU64,
    pub events: AtomicU64,
    /// Records the source could not read (kmsg records overwritten before they were read, conntrack ENOBUFS).
    pub lost: AtomicU64,
    /// Events offered while the pipeline was full, and dropped on purpose.
    pub shed: AtomicU64,
    /// Bytes written to the input but not yet read (files), the backlog.
    pub lag_bytes: AtomicU64,
    /// Set while the input is missing (a file not created yet) or failing; cleared when it reads again.
    pub waiting: AtomicBool,
    /// Set once the source has taken its starting position (file opened and positioned, counters baselined,
    /// socket bound): from then on, nothing written to the input is missed. The daemon opens its control
    /// socket only when every source is ready or waiting.
    pub ready: AtomicBool,
}

impl SourceStats {
    /// Ready, or known to be waiting for its input.
    pub fn settled(&self) -> bool {
        self.ready.load(Ordering::Relaxed) || self.waiting.load(Ordering::Relaxed)
    }
}

/// The sending end a source holds.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Feed>,
    pub stats: Arc<SourceStats>,
}

impl Sink {
    pub fn new(tx: mpsc::Sender<Feed>, stats: Arc<SourceStats>) -> Sink {
        Sink { tx, stats }
    }

    /// Sends lines, waiting while the pipeline is full. False when the pipeline is gone (shutting down).
    pub fn send_lines(
        &self,
        input: &Arc<str>,
        lines: Vec<Vec<u8>>,
        first_line: Option<u64>,
        position: Option<Position>,
    ) -> bool {
        let n = lines.len() as u64;
        let at = std::time::Instant::now();
        let feed = Feed::Lines { input: input.clone(), lines, first_line, position, source: self.stats.clone(), at };
        let ok = self.tx.blocking_send(feed).is_ok();
        if ok {
            self.stats.lines.fetch_add(n, Ordering::Relaxed);
        }
        ok
    }

    /// Offers events; when the pipeline is full they are dropped and counted as shed. Never blocks.
    pub fn offer_events(&self, input: &Arc<str>, events: Vec<Event>) {
        let n = events.len() as u64;
        match self.tx.try_send(Feed::Events { input: input.clone(), events, at: std::time::Instant::now() }) {
            Ok(()) => {
                self.stats.events.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.shed.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Sends events, waiting while the pipeline is full (for events that must not be shed).
    pub fn send_events(&self, input: &Arc<str>, events: Vec<Event>) -> bool {
        let n = events.len() as u64;
        let ok =
            self.tx.blocking_send(Feed::Events { input: input.clone(), events, at: std::time::Instant::now() }).is_ok();
        if ok {
            self.stats.events.fetch_add(n, Ordering::Relaxed);
        }
        ok
    }

    pub fn lost(&self, n: u64) {
        self.stats.lost.fetch_add(n, Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Shared stop flag: sources check it between reads (every read waits at most `Stop::POLL`).
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// The longest a source may block before looking at the flag again.
    pub const POLL: Duration = Duration::from_millis(200);

    pub fn new() -> Stop {
        Stop::default()
    }

    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps `total` in steps of at most `POLL`. False when stopped meanwhile.
    pub fn sleep(&self, total: Duration) -> bool {
        self.sleep_until(std::time::Instant::now() + total)
    }

    /// Sleeps until `deadline` in steps of at most `POLL`. False when stopped meanwhile.
    pub fn sleep_until(&self, deadline: std::time::Instant) -> bool {
        loop {
            if self.is_stopped() {
                return false;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Stop::POLL));
        }
    }
}
