//! floodgate: defends Linux mail servers against brute force, DoS and spoofed-source SYN floods.
//!
//! Data flows one way, through the daemon's one stateful pipeline task ([`daemon`]):
//!
//! - [`source`]: log lines (a tailed file, the journal, /dev/kmsg) and ready-made events (TcpExt counters,
//!   conntrack netlink, floodgate's own nft counters), each source on its own thread.
//! - [`parse`]: lines -> [`event::Event`]s by the rules in rules/*.toml (syslog header split, literal prefilter,
//!   regex). Events from the counters and conntrack netlink do not pass through it.
//! - [`store`] keeps the events and decisions (SQLite); [`policy`] turns events and a clock into decisions and
//!   alerts, with no I/O of its own.
//! - [`decision`]s are what the policy (or the operator) wants enforced; [`enforce`] makes them true in the
//!   kernel's sets through [`nft`] (one netlink batch) and records them in the store, and [`notice`] tells the
//!   admin about alerts.
//! - [`fleet`]: other hosts' bans come in from a shared bucket as decisions through the same gate, and this
//!   host's own bans go out to it.
//!
//! Every stage reads the protected [`service`]s. Each component's config section (type, defaults, validation)
//! lives in its own `config.rs` (`source::config`, `parse::config`, `policy::config`, ...), written in the
//! [`setting`] vocabulary (durations, the one-key error); [`config`] only assembles the file from them.
//!
//! Around the pipeline: the operator's requests ([`control`]) from the commands ([`cli`]), country ranges
//! ([`geo`]), the advisor ([`advise`]) and the attack report ([`attack_report`]: the store's record of a
//! period drawn as one HTML page). The few system calls std lacks live in [`os`], each `unsafe` with the
//! reason it is sound.

pub mod addr;
pub mod advise;
pub mod attack_report;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decision;
pub mod enforce;
pub mod event;
pub mod fleet;
pub mod geo;
pub mod metrics;
pub mod nft;
pub mod notice;
pub mod os;
pub mod parse;
pub mod policy;
pub mod service;
pub mod setting;
pub mod source;
pub mod store;
