//! Policy: events and a clock in, decisions out. Pure (no I/O), so it runs on virtual time in tests and can
//! replay the store. The daemon talks to it only through `Policy`, so the full engine can replace the jail.

pub mod alert;
pub mod config;
pub mod engine;
pub mod evidence;
pub mod jail;
pub mod sketch;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::decision::Decision;
use crate::event::Event;

pub use config::{JailConfig, PolicyConfig, PrefixBan};

pub trait Policy: Send {
    /// Takes one event into account; decisions it leads to are pushed to `out`.
    fn observe(&mut self, event: &Event, now: DateTime<Utc>, out: &mut Vec<Decision>);
    /// Called every tick: windows slide, state ages out, limits are refreshed or left to lapse.
    fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Decision>);
    /// How many sources the policy is tracking (memory it holds), for `status`.
    fn tracked(&self) -> usize;
}

/// A std duration as a chrono one, saturating (config durations are bounded; "forever" never overflows).
pub(crate) fn span(d: Duration) -> chrono::Duration {
    // Bounded like every configured duration, so a time plus a span can never leave the calendar (a panic).
    chrono::Duration::from_std(d.min(crate::setting::MAX_DURATION)).unwrap_or(chrono::Duration::MAX)
}
