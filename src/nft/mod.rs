//! The kernel side: floodgate's own nftables table, written through netlink (nftnl-sys builds the messages, mnl
//! owns the socket). This is the one narrow interface to the kernel: a batch of set operations applied as one
//! transaction, the table's shape installed or repaired in one batch, and set contents read back. Nothing above
//! this module sees netlink.

mod batch;
mod expr;
pub mod ruleset;
mod socket;
pub mod watch;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

pub use expr::{Limit, Per, Rate};
pub use ruleset::{PortLimits, Ruleset};

use crate::addr::Cidr;
use batch::{Batch, RawElem, What};

/// A set element: an address (in the hash sets), a prefix (in the interval sets), a port (in the switch sets),
/// or an address range, first to last (in the country sets: a range is one interval however it aligns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Addr(IpAddr),
    Net(Cidr),
    Port(u16),
    Range(IpAddr, IpAddr),
}

impl Key {
    /// The addresses a ban set's element covers (an address is a /32 or /128); None for ports and ranges.
    pub fn cidr(&self) -> Option<Cidr> {
        match *self {
            Key::Addr(a) => Some(Cidr::host(a)),
            Key::Net(c) => Some(c),
            Key::Port(_) | Key::Range(..) => None,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Addr(a) => a.fmt(f),
            Key::Net(c) => c.fmt(f),
            Key::Port(p) => write!(f, "port {p}"),
            Key::Range(lo, hi) => write!(f, "{lo}-{hi}"),
        }
    }
}

/// One operation on one set. Adds fail if the element is present (the caller diffs against what the kernel
/// holds); a refresh is a delete and an add in the same batch, which resets the timeout on every kernel.
/// Within a batch, flushes apply first, then deletes, then adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOp {
    Add { set: &'static str, key: Key, timeout: Option<Duration> },
    Delete { set: &'static str, key: Key },
    Flush { set: &'static str },
}

impl SetOp {
    pub fn refresh(set: &'static str, key: Key, timeout: Option<Duration>) -> [SetOp; 2] {
        [SetOp::Delete { set, key }, SetOp::Add { set, key, timeout }]
    }

    fn describe(&self) -> String {
        match self {
            SetOp::Add { set, key, timeout: Some(t) } => {
                format!("adding {key} to {set} (timeout {})", humantime::format_duration(*t))
            }
            SetOp::Add { set, key, timeout: None } => format!("adding {key} to {set}"),
            SetOp::Delete { set, key } => format!("deleting {key} from {set}"),
            SetOp::Flush { set } => format!("flushing {set}"),
        }
    }
}

/// An element read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Key,
    pub timeout: Option<Duration>,
    /// Time left before the kernel drops it.
    pub expires: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("the kernel refused: writing nftables needs root or CAP_NET_ADMIN (in this network namespace)")]
    Permission,
    #[error("{what}: {} (errno {errno}); the whole batch was rolled back, nothing was applied", errno_text(*.errno))]
    Rejected { what: String, errno: i32, cause: io::Error },
    #[error("table inet {table} or its set {set} does not exist (run `floodgate reconcile` to install it)")]
    Missing { table: String, set: String },
    #[error("netlink: {0}")]
    Io(#[source] io::Error),
}

/// `File exists (EEXIST)`: the message and the name an admin looks up.
fn errno_text(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::EBUSY => "EBUSY",
        libc::ENOSPC => "ENOSPC",
        libc::ENOBUFS => "ENOBUFS",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::ERANGE => "ERANGE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOMEM => "ENOMEM",
        _ => "",
    };
    let text = io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    if name.is_empty() {
        text
    } else {
        format!("{text}, {name}")
    }
}

impl NftError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Rejected { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A connection to nftables in the caller's network namespace.
pub struct Kernel {
    sock: socket::Socket,
    seq: u32,
    /// The daemon's watch of nftables changes, muted around large batches of its own.
    mute: Option<watch::Mute>,
}

/// Set operations in one batch above which the watch is muted while it is sent.
const MUTE_ABOVE: usize = 256;

impl Kernel {
    pub fn open() -> Result<Kernel, NftError> {
        let sock = socket::Socket::open().map_err(NftError::Socket)?;
        // Distinct starting points keep a reply to an earlier, abandoned request from matching a new one.
        let seq = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1)
            as u32)
            .wrapping_mul(1000);
        Ok(Kernel { sock, seq, mute: None })
    }

    /// This socket's netlink port id: the sender the kernel names in the notifications of our own changes.
    pub fn portid(&self) -> u32 {
        self.sock.portid()
    }

    /// Installs or repairs the table's shape (sets, chains, rules) in one transaction. Set contents are kept.
    pub fn install(&mut self, rs: &Ruleset) -> Result<(), NftError> {
        let mut b = Batch::new(self.seq);
        rs.write(&mut b);
        self.run(b, &[])
    }

    /// Replaces the whole table in one transaction: deleted (if present), rebuilt, refilled with `ops`. For a
    /// table whose shape cannot be repaired in place (a set redefined by hand, a changed hook).
    pub fn rebuild(&mut self, rs: &Ruleset, ops: &[SetOp]) -> Result<(), NftError> {
        // Creating first makes the delete valid when the table does not exist, all in the same transaction.
        let mut b = Batch::new(self.seq);
        b.add_table(&rs.table);
        b.delete_table(&rs.table);
        rs.write(&mut b);
        write_ops(&mut b, &rs.table, ops);
        self.run(b, ops)
    }

    /// Applies the operations as one kernel transaction: all of them or, on any error, none.
    pub fn apply(&mut self, table: &str, ops: &[SetOp]) -> Result<(), NftError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new(self.seq);
        write_ops(&mut b, table, ops);
        match self.mute.take() {
            Some(m) if ops.len() > MUTE_ABOVE => {
                let r = m.during(|| self.run(b, ops));
                self.mute = Some(m);
                r
            }
            m => {
                self.mute = m;
                self.run(b, ops)
            }
        }
    }

    /// The daemon's nftables watch, to mute around large batches (see [`watch::Mute`]).
    pub fn set_mute(&mut self, mute: watch::Mute) {
        self.mute = Some(mute);
    }

    /// Deletes the table (and everything in it), if present.
    pub fn delete_table(&mut self, table: &str) -> Result<(), NftError> {
        let mut b = Batch::new(self.seq);
        b.add_table(table);
        b.delete_table(table);
        self.run(b, &[])
    }

    fn run(&mut self, mut b: Batch, ops: &[SetOp]) -> Result<(), NftError> {
        let first = self.seq;
        self.seq = b.next_seq().wrapping_add(1);
        let expected = b.seqs();
        b.finish();
        let bytes_sent = b.bytes().len();
        tracing::debug!(messages = expected.len(), bytes = bytes_sent, "sending nftables batch");
        let sent = self.sock.send(b.bytes());
        if let Err(e) = sent {
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) => NftError::Permission,
                Some(errno) => {
                    NftError::Rejected { what: format!("sending a batch of {bytes_sent} bytes"), errno, cause: e }
                }
                None => NftError::Io(e),
            });
        }
        let replies = self.sock.replies(first, self.seq, &expected).map_err(NftError::Io)?;
        let Some(bad) = replies.iter().filter(|r| r.errno != 0).min_by_key(|r| r.seq.wrapping_sub(first)) else {
            return Ok(());
        };
        let cause = io::Error::from_raw_os_error(bad.errno);
        if bad.errno == libc::EPERM {
            return Err(NftError::Permission);
        }
        let what = match b.msgs.iter().find(|m| m.seq == bad.seq) {
            None => "the batch".to_string(),
            Some(m) => match &m.what {
                What::Object(text) => text.clone(),
                What::Elements { adding, set, items } => {
                    let index = bad.bad_attr_offset.and_then(|off| batch::element_at(b.message_bytes(m), off));
                    match index.and_then(|i| items.get(i)).and_then(|&item| ops.get(item as usize)) {
                        Some(op) => op.describe(),
                        None => {
                            let verb = if *adding { "adding" } else { "deleting" };
                            let first = items.first().and_then(|&i| ops.get(i as usize)).map(SetOp::describe);
                            format!(
                                "{verb} one of {} elements of {set} (the first: {})",
                                items.len(),
                                first.unwrap_or_default()
                            )
                        }
                    }
                }
            },
        };
        Err(NftError::Rejected { what, errno: bad.errno, cause })
    }

    /// Sends a get or dump request (built for the next sequence number) and hands each reply to `each`.
    /// Ok(false) when the kernel answered ENOENT: the table, set or chain is not there.
    fn query(&mut self, build: impl FnOnce(u32) -> Vec<u8>, each: impl FnMut(&[u8])) -> Result<bool, NftError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        match self.sock.dump(&build(seq), seq, each) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(NftError::Permission),
            Err(e) => Err(NftError::Io(e)),
        }
    }

    /// Packets each port's limit rules have dropped so far, per chain (`limit_source`, `limit_global`). These
    /// drops happen before conntrack, so they are the only measure of an attack the limit is holding back.
    pub fn limit_drops(&mut self, table: &str, chain: &str) -> Result<HashMap<u16, u64>, NftError> {
        let mut out: HashMap<u16, u64> = HashMap::new();
        self.query(
            |seq| batch::get_rules_request(table, chain, seq),
            |msg| {
                if let Some((port, packets)) = batch::parse_rule_port_counter(msg) {
                    *out.entry(port).or_default() += packets;
                }
            },
        )?;
        Ok(out)
    }

    /// The table's named counters: name, packets, bytes (none when the table does not exist).
    pub fn counters(&mut self, table: &str) -> Result<Vec<(String, u64, u64)>, NftError> {
        let mut out = Vec::new();
        self.query(
            |seq| batch::get_counters_request(table, seq),
            |msg| {
                if let Some((t, name, packets, bytes)) = batch::parse_counter(msg) {
                    // The kernel filters by table; checked again, as a dump of every table would be wrong here.
                    if t == table {
                        out.push((name, packets, bytes));
                    }
                }
            },
        )?;
        Ok(out)
    }

    /// Packets and bytes each port's rules of a limit chain have dropped so far.
    pub fn limit_counts(&mut self, table: &str, chain: &str) -> Result<HashMap<u16, (u64, u64)>, NftError> {
        let mut out: HashMap<u16, (u64, u64)> = HashMap::new();
        self.query(
            |seq| batch::get_rules_request(table, chain, seq),
            |msg| {
                if let Some((Some(port), packets, bytes)) = batch::parse_rule_counter(msg) {
                    let e = out.entry(port).or_default();
                    e.0 += packets;
                    e.1 += bytes;
                }
            },
        )?;
        Ok(out)
    }

    /// The packets all counters of a chain counted (0 for a missing chain).
    pub fn chain_packets(&mut self, table: &str, chain: &str) -> Result<u64, NftError> {
        let mut total = 0u64;
        self.query(
            |seq| batch::get_rules_request(table, chain, seq),
            |msg| {
                if let Some((_, packets, _)) = batch::parse_rule_counter(msg) {
                    total = total.saturating_add(packets);
                }
            },
        )?;
        Ok(total)
    }

    /// A set's flags (NFT_SET_INTERVAL, NFT_SET_TIMEOUT, ...).
    pub fn set_flags(&mut self, table: &str, set: &str) -> Result<u32, NftError> {
        let mut flags = None;
        let found = self.query(
            |seq| batch::get_set_request(table, set, seq),
            |msg| flags = flags.or(batch::parse_set_flags(msg)),
        )?;
        if !found {
            return Err(NftError::Missing { table: table.into(), set: set.into() });
        }
        Ok(flags.unwrap_or(0))
    }

    /// The chains of an inet table (none when it does not exist).
    pub fn chains(&mut self, table: &str) -> Result<Vec<String>, NftError> {
        let mut out = Vec::new();
        self.query(batch::get_chains_request, |msg| {
            if let Some((t, c)) = batch::parse_chain(msg) {
                if t == table {
                    out.push(c);
                }
            }
        })?;
        Ok(out)
    }

    /// Deletes chains of a table in one transaction (empty ones: the owner markers).
    pub fn delete_chains(&mut self, table: &str, chains: &[String]) -> Result<(), NftError> {
        if chains.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new(self.seq);
        for c in chains {
            b.delete_chain(table, c);
        }
        self.run(b, &[])
    }

    /// How many rules a chain holds (a dump filtered by table and chain); 0 for a missing chain.
    pub fn rule_count(&mut self, table: &str, chain: &str) -> Result<usize, NftError> {
        let mut n = 0;
        self.query(|seq| batch::get_rules_request(table, chain, seq), |_| n += 1)?;
        Ok(n)
    }

    /// Reads a set's elements. Interval sets come back as prefixes, their start and end elements paired up.
    pub fn elements(&mut self, table: &str, set: &str) -> Result<Vec<Element>, NftError> {
        let interval = self.set_flags(table, set)? & libc::NFT_SET_INTERVAL as u32 != 0;
        // A dump comes in several parts, each resuming by count. If the set changes shape between parts (a hash
        // set still growing after a large insert, garbage collection of expired elements), some elements come
        // twice and as many are skipped. A repeated key gives that away: read again once the set has settled.
        const ATTEMPTS: u32 = 20;
        for attempt in 1..=ATTEMPTS {
            let elements = self.dump_elements(table, set, interval)?;
            let repeated = elements.windows(2).any(|w| w[0].key == w[1].key);
            if !repeated {
                return Ok(elements);
            }
            tracing::debug!(set, attempt, "inconsistent set dump (the set changed shape while read); reading again");
            std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
        }
        Err(NftError::Io(io::Error::other(format!("set {set} kept changing shape while read ({ATTEMPTS} attempts)"))))
    }

    fn dump_elements(&mut self, table: &str, set: &str, interval: bool) -> Result<Vec<Element>, NftError> {
        let mut raw = Vec::new();
        let mut bad_parse = false;
        let found = self.query(
            |seq| batch::get_elements_request(table, set, seq),
            |msg| bad_parse |= !batch::parse_elements(msg, &mut raw),
        )?;
        if !found {
            return Err(NftError::Missing { table: table.into(), set: set.into() });
        }
        if bad_parse {
            return Err(NftError::Io(io::Error::new(io::ErrorKind::InvalidData, "unparsable set element dump")));
        }
        Ok(assemble(raw, interval))
    }
}

/// Writes `ops` as element messages: flushes first, then deletes, then adds, each grouped by set, so a batch
/// of refreshes (delete + add of the same key) is two runs of large messages rather than thousands of small
/// ones. Within one transaction the order between different keys does not matter; for one key it is always
/// delete before add, which is what a refresh needs.
fn write_ops(b: &mut Batch, table: &str, ops: &[SetOp]) {
    let rank = |op: &SetOp| match op {
        SetOp::Flush { .. } => (0, ""),
        SetOp::Delete { set, .. } => (1, *set),
        SetOp::Add { set, .. } => (2, *set),
    };
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| rank(&ops[i]));
    let mut run: Vec<(RawElem, u32)> = Vec::new();
    let mut current: Option<(&'static str, bool)> = None;
    let flush = |b: &mut Batch, current: Option<(&'static str, bool)>, run: &mut Vec<(RawElem, u32)>| {
        if let (Some((set, adding)), false) = (current, run.is_empty()) {
            b.elements(table, set, adding, run);
        }
        run.clear();
    };
    for (item, op) in order.into_iter().map(|i| (i, &ops[i])) {
        let (set, key, adding, timeout) = match op {
            SetOp::Flush { set } => {
                flush(b, current.take(), &mut run);
                b.flush_set(table, set);
                continue;
            }
            SetOp::Add { set, key, timeout } => (*set, key, true, *timeout),
            SetOp::Delete { set, key } => (*set, key, false, None),
        };
        if current != Some((set, adding)) {
            flush(b, current.take(), &mut run);
            current = Some((set, adding));
        }
        // A prefix is an interval: its first address, and the address after its last flagged as the interval's
        // end (absent when the prefix runs to the top of the address space). Only the start carries the
        // timeout: the kernel expires the pair together.
        let timeout_ms = timeout.map(|t| t.as_millis().clamp(1, u64::MAX as u128) as u64);
        match key {
            Key::Port(p) => {
                let mut k = [0u8; 16];
                k[..2].copy_from_slice(&p.to_be_bytes());
                run.push((RawElem { key: k, key_len: 2, interval_end: false, timeout_ms }, item as u32));
            }
            Key::Addr(a) => {
                let bytes = crate::addr::ip_bytes(crate::addr::normalise(*a));
                let mut k = [0u8; 16];
                k[..bytes.len()].copy_from_slice(&bytes);
                run.push((RawElem { key: k, key_len: bytes.len(), interval_end: false, timeout_ms }, item as u32));
            }
            Key::Net(_) | Key::Range(..) => {
                let (start, end, len) = match key {
                    Key::Range(lo, hi) => range_keys(*lo, *hi),
                    Key::Net(c) => interval_keys(c),
                    _ => unreachable!("matched above"),
                };
                run.push((RawElem { key: start, key_len: len, interval_end: false, timeout_ms }, item as u32));
                if let Some(end) = end {
                    run.push((RawElem { key: end, key_len: len, interval_end: true, timeout_ms: None }, item as u32));
                }
            }
        }
    }
    flush(b, current.take(), &mut run);
}

/// The start key and (exclusive) end key of a prefix, and the key length.
fn interval_keys(c: &Cidr) -> ([u8; 16], Option<[u8; 16]>, usize) {
    let (lo, hi) = c.range_bytes();
    end_keys(&lo, &hi)
}

/// The same for a range of addresses, first to last (both of one family).
fn range_keys(lo: IpAddr, hi: IpAddr) -> ([u8; 16], Option<[u8; 16]>, usize) {
    let (lo, hi) = (crate::addr::normalise(lo), crate::addr::normalise(hi));
    end_keys(&crate::addr::ip_bytes(lo), &crate::addr::ip_bytes(hi))
}

fn end_keys(lo: &[u8], hi: &[u8]) -> ([u8; 16], Option<[u8; 16]>, usize) {
    let len = lo.len();
    let mut start = [0u8; 16];
    start[..len].copy_from_slice(lo);
    let mut end = [0u8; 16];
    end[..len].copy_from_slice(hi);
    // hi + 1, big-endian; overflow means the prefix reaches the last address.
    for i in (0..len).rev() {
        let (v, carry) = end[i].overflowing_add(1);
        end[i] = v;
        if !carry {
            return (start, Some(end), len);
        }
    }
    (start, None, len)
}

fn to_u128(key: &[u8]) -> u128 {
    key.iter().fold(0u128, |acc, &b| (acc << 8) | u128::from(b))
}

/// Turns dumped elements into keys: ports and addresses as they are; in an interval set, each start paired
/// with the end that follows it.
fn assemble(mut raw: Vec<batch::DumpedElem>, interval: bool) -> Vec<Element> {
    let mut out = Vec::new();
    let ms = |v: Option<u64>| v.map(Duration::from_millis);
    if !interval {
        for e in raw {
            let key = match e.key.len() {
                2 => Key::Port(u16::from_be_bytes([e.key[0], e.key[1]])),
                _ => match crate::addr::ip_from_bytes(&e.key) {
                    Some(a) => Key::Addr(a),
                    None => continue,
                },
            };
            out.push(Element { key, timeout: ms(e.timeout_ms), expires: ms(e.expires_ms) });
        }
        // A hash set dumps in hash order; callers and operators want a stable one.
        out.sort_unstable_by_key(|e| e.key);
        return out;
    }
    // By key, ends before starts at the same key (an interval ending where the next begins).
    raw.sort_by(|a, b| a.key.cmp(&b.key).then(b.interval_end.cmp(&a.interval_end)));
    let mut i = 0;
    while i < raw.len() {
        let e = &raw[i];
        if e.interval_end {
            i += 1;
            continue;
        }
        let len = e.key.len();
        let lo = to_u128(&e.key);
        let max = if len == 16 { u128::MAX } else { (1u128 << (len * 8)) - 1 };
        let hi = match raw.get(i + 1) {
            Some(n) if n.interval_end => to_u128(&n.key).saturating_sub(1),
            _ => max,
        };
        let cidrs = if len == 4 {
            crate::addr::range_to_cidrs(lo as u32, hi as u32)
        } else {
            crate::addr::range_to_cidrs(lo, hi)
        };
        for c in cidrs {
            out.push(Element { key: Key::Net(c), timeout: ms(e.timeout_ms), expires: ms(e.expires_ms) });
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn interval_keys_are_start_and_one_past_the_end() {
        let (s, e, len) = interval_keys(&c("198.51.100.0/24"));
        assert_eq!((&s[..len], &e.unwrap()[..len]), (&[198, 51, 100, 0][..], &[198, 51, 101, 0][..]));
        let (_, e, _) = interval_keys(&c("255.255.255.0/24"));
        assert!(e.is_none());
        let (s, e, len) = interval_keys(&c("2001:db8::/64"));
        assert_eq!(len, 16);
        assert_eq!(to_u128(&e.unwrap()[..16]) - to_u128(&s[..16]), 1u128 << 64);
    }

    #[test]
    fn ranges_split_into_prefixes() {
        let r = |a: &str, b: &str| {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            // Through the dump's own path: start and end keys as the kernel returns them.
            let key = |ip: IpAddr| batch::DumpedElem {
                key: crate::addr::ip_bytes(ip),
                interval_end: false,
                timeout_ms: None,
                expires_ms: None,
            };
            let (start, mut end) = (key(a), key(b));
            let (_, past, _) = range_keys(a, b);
            end.interval_end = true;
            match past {
                Some(k) => end.key = k[..end.key.len()].to_vec(),
                None => return assemble(vec![start], true).iter().map(|e| e.key.to_string()).collect::<Vec<_>>(),
            }
            assemble(vec![start, end], true).iter().map(|e| e.key.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(r("198.51.100.0", "198.51.100.255"), ["198.51.100.0/24"]);
        assert_eq!(r("198.51.100.7", "198.51.100.7"), ["198.51.100.7"]);
        assert_eq!(r("198.51.100.1", "198.51.100.4"), ["198.51.100.1", "198.51.100.2/31", "198.51.100.4"]);
        assert_eq!(r("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(r("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff"), ["2001:db8::/64"]);
        assert_eq!(r("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
    }

    #[test]
    fn dumped_intervals_pair_up_in_any_order() {
        let el = |k: &[u8], end: bool, t: Option<u64>| batch::DumpedElem {
            key: k.to_vec(),
            interval_end: end,
            timeout_ms: t,
            expires_ms: t.map(|t| t / 2),
        };
        // Reverse order, as an rbtree dump gives them; two adjacent intervals sharing a boundary key.
        let raw = vec![
            el(&[198, 51, 101, 0], true, None),
            el(&[198, 51, 100, 128], false, Some(2000)),
            el(&[198, 51, 100, 128], true, None),
            el(&[198, 51, 100, 0], false, Some(4000)),
            el(&[255, 255, 255, 0], false, None),
        ];
        let got = assemble(raw, true);
        let keys: Vec<String> = got.iter().map(|e| e.key.to_string()).collect();
        assert_eq!(keys, ["198.51.100.0/25", "198.51.100.128/25", "255.255.255.0/24"]);
        assert_eq!(got[0].timeout, Some(Duration::from_secs(4)));
        assert_eq!(got[1].expires, Some(Duration::from_secs(1)));
    }
}
