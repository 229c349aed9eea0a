//! The fleet: hosts sharing ban verdicts through a key-value bucket (NATS JetStream), so an attacker banned on
//! one mail server is banned on all of them.
//!
//! - [`verdict`]: the wire format of one bucket entry (keys `b.<host>.<target>`, `o.<target>`, `u.<target>`,
//!   JSON values), and every reason an entry is not believed. Pure.
//! - [`merge`]: the receiving side's board of the other hosts' verdicts: the latest end wins, an unblock
//!   everywhere wins over both, caps and a pace per host. Pure.
//! - [`link`]: the connection to the NATS servers (the only I/O here): publishes this host's bans, watches the
//!   bucket, and reconnects and resynchronises after an outage without ever holding up local protection.
//! - [`member`]: this host as the pipeline holds it: bucket entries in, decisions out; its own bans offered to
//!   the link.
//! - [`config`]: the `[fleet]` section.
//!
//! What a remote verdict becomes is decided in the pipeline, through the same gate as a local ban (the
//! allowlist, the host's own addresses, the widest prefix), into sets of their own.

pub mod config;
pub mod link;
pub mod member;
pub mod merge;
pub mod verdict;

pub use config::FleetConfig;
