//! floodgate: defends Linux mail servers against brute force, DoS and spoofed-source SYN floods.
//!
//! Data flows one way, through the daemon's one stateful pipeline task ([`daemon`]):
//!
//! - [`source`]: log lines (a tailed file, the journal, /dev/kmsg) and ready-made events (TcpExt counters,
//!   conntrack netlink), each source on its own thread.
//! - [`parse`]: lines -> [`event::Event`]s by the rules in rules/*.toml (syslog header split, literal prefilter,
//!   regex). Events from the counters and conntrack netlink do not pass through it.
//! - [`store`] keeps the events and decisions (SQLite); [`policy`] turns events and a clock into decisions and
//!   alerts, with no I/O of its own.
//! - [`enforce`] makes decisions true in the kernel's sets through [`nft`] (one netlink batch), and [`notify`]
//!   tells the admin about alerts.
//!
//! Around the pipeline: [`config`], the operator's requests ([`control`]) from the commands ([`cli`]), country
//! ranges ([`geo`]) and the advisor ([`advise`]).

pub mod addr;
pub mod advise;
pub mod child;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod enforce;
pub mod event;
pub mod geo;
pub mod nft;
pub mod notify;
pub mod parse;
pub mod policy;
pub mod source;
pub mod store;
