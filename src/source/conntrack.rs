//! The conntrack source: the kernel's connection-tracking NEW, UPDATE and DESTROY events, read live from a
//! NETLINK_NETFILTER socket and turned into `conn_new` / `conn_assured` / `conn_destroy` events carrying the same
//! fields as the `conntrack -E` text rules (rules/conntrack.toml): `addr` the original source, `local_addr` the
//! original destination, `port` the original destination port, `assured` on destroy.
//!
//! Why UPDATE: a source is proven real by a completed handshake, and the kernel says so in the update that sets
//! ASSURED, tens of milliseconds after the connect. DESTROY says it too, but only after TIME_WAIT (120 s) or
//! CLOSE (10 s): a host hammering every port with full handshakes would stay unproven for its whole attack.
//! Updates are many (every TCP state change of every connection, and a spoofed SYN's SYN_RECV), so they are
//! reduced here: only an update with ASSURED set becomes an event, and only the first per source within
//! `ASSURED_EVERY` (one proof per source is all the policy needs; the dedup table is bounded).
//!
//! Under a SYN flood this is the loudest input there is, so nothing here waits for the pipeline: events are
//! offered in batches and shed when it is full, and a receive buffer the kernel overran (ENOBUFS) is counted as
//! lost and read on from. The netlink parsing is a set of pure functions over bytes, tested on hand-built
//! messages; the kernel's input is never trusted to be well formed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Sink, Stop};
use crate::event::{Event, Kind};
use crate::os::netlink::{
    Blocking, NetlinkSocket, NLA_HDRLEN, NLA_TYPE_MASK, NLMSG_HDRLEN, NLMSG_MIN_TYPE, NLM_F_CREATE,
};
use crate::os::poll::wait_readable;

/// Events handed to the pipeline in one `Feed`: big enough that a flood costs few channel sends.
const BATCH_MAX: usize = 512;
/// The longest an event waits in a batch: the policy should see a flood's start promptly.
const BATCH_AGE: Duration = Duration::from_millis(50);
/// Receive buffer asked for: a flood of ~75k SYN/s overran even 8 MiB in `conntrack -E` (see notes/kernel.md).
const RCVBUF_BYTES: libc::c_int = 16 << 20;
/// Read buffer. One multicast event is a few hundred bytes; this is room for any message the kernel sends.
const READ_BYTES: usize = 64 << 10;
/// How often at most a lost-events warning is logged: under a flood ENOBUFS comes back on every read.
const LOSS_LOG_EVERY: Duration = Duration::from_secs(1);
/// A source's handshake is reported at most this often: proof lasts hours in the policy, and a real client's
/// every connection would otherwise be an event (a busy server's steady stream).
const ASSURED_EVERY: Duration = Duration::from_secs(10);
/// Sources remembered for that dedup at most; a full table is cleared (the cost: one more event per source).
const ASSURED_MEMORY: usize = 65_536;

// Multicast groups (linux/netfilter/nfnetlink.h), bound through the legacy bitmask: group g is bit g-1.
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

// Message types (linux/netfilter/nfnetlink*.h): nlmsg_type = subsystem << 8 | message.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

/// struct nfgenmsg: family, version, resource id.
const NFGENMSG_LEN: usize = 4;

// Attributes (linux/netfilter/nfnetlink_conntrack.h).
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_STATUS: u16 = 3;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// IPS_ASSURED: the connection saw traffic both ways (for TCP, a completed handshake).
const IPS_ASSURED: u32 = 1 << 2;

const IPPROTO_TCP: u8 = 6;

/// The rule ids of the text rules in rules/conntrack.toml, so a live event and a replayed one look alike.
const RULE_NEW: &str = "conntrack.new";
const RULE_DESTROY: &str = "conntrack.destroy";
const RULE_ASSURED: &str = "conntrack.assured";
const INPUT: &str = "conntrack";

/// Reads conntrack events from the kernel of the calling thread's network namespace.
#[derive(Debug, Default)]
pub struct ConntrackSource {}

impl ConntrackSource {
    pub fn new() -> Self {
        ConntrackSource {}
    }

    /// Reads until `stop` is set or the pipeline goes away. Blocking: run it on a blocking thread. Without
    /// CAP_NET_ADMIN (or without conntrack netlink in the kernel) it warns, marks the input as waiting and returns.
    pub fn run(self, sink: Sink, stop: Stop) {
        let input: Arc<str> = Arc::from(INPUT);
        let socket = match open_socket() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot subscribe to conntrack events (needs CAP_NET_ADMIN and nf_conntrack_netlink); \
                     the conntrack input stays idle"
                );
                sink.stats.waiting.store(true, Ordering::Relaxed);
                return;
            }
        };
        sink.stats.waiting.store(false, Ordering::Relaxed);
        sink.stats.ready.store(true, Ordering::Relaxed);
        let mut buf = vec![0u8; READ_BYTES];
        let mut batch: Vec<Event> = Vec::new();
        let mut batch_since = Instant::now();
        let mut loss = LossLog::default();
        let mut assured = AssuredOnce::default();

        while !stop.is_stopped() && !sink.is_closed() {
            let wait = if batch.is_empty() { Stop::POLL } else { BATCH_AGE.saturating_sub(batch_since.elapsed()) };
            if let Err(e) = wait_readable(&socket, wait) {
                if e.kind() != io::ErrorKind::Interrupted {
                    // poll on a socket we own should not fail; back off rather than spin.
                    tracing::warn!(error = %e, "conntrack: poll failed");
                    std::thread::sleep(Stop::POLL);
                }
            }
            // Drain what the kernel has queued (the socket is non-blocking), up to a full batch.
            while batch.len() < BATCH_MAX {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        if batch.is_empty() {
                            batch_since = Instant::now();
                        }
                        let now = Utc::now();
                        let datagram = &buf[..n];
                        let conns = messages(datagram).filter_map(|(h, payload)| parse_message(&h, payload));
                        let at = Instant::now();
                        batch.extend(conns.filter(|c| assured.keep(c, at)).filter_map(|c| c.into_event(now)));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        // The kernel dropped events because we fell behind; how many is not said.
                        sink.lost(1);
                        loss.note(&e);
                    }
                    Err(e) => {
                        // Not expected from a multicast-only socket; pause so a lasting error cannot spin.
                        loss.note(&e);
                        std::thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
            if batch.len() >= BATCH_MAX || (!batch.is_empty() && batch_since.elapsed() >= BATCH_AGE) {
                sink.offer_events(&input, std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            sink.offer_events(&input, batch);
        }
    }
}

/// Lets through the first ASSURED update per source within `ASSURED_EVERY`, and no other update.
#[derive(Default)]
struct AssuredOnce {
    seen: std::collections::HashMap<IpAddr, Instant>,
}

impl AssuredOnce {
    fn keep(&mut self, c: &ConnMessage, now: Instant) -> bool {
        if c.change != Change::Update {
            return true;
        }
        if !c.assured || c.proto != IPPROTO_TCP {
            return false;
        }
        let src = crate::addr::normalise(c.src);
        if self.seen.get(&src).is_some_and(|t| now.duration_since(*t) < ASSURED_EVERY) {
            return false;
        }
        if self.seen.len() >= ASSURED_MEMORY {
            self.seen.retain(|_, t| now.duration_since(*t) < ASSURED_EVERY);
            if self.seen.len() >= ASSURED_MEMORY {
                self.seen.clear();
            }
        }
        self.seen.insert(src, now);
        true
    }
}

/// Rate-limits warnings about failed reads: under a flood ENOBUFS comes back on nearly every read.
#[derive(Default)]
struct LossLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl LossLog {
    fn note(&mut self, e: &io::Error) {
        if self.last.is_some_and(|t| t.elapsed() < LOSS_LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        if e.raw_os_error() == Some(libc::ENOBUFS) {
            tracing::warn!(
                repeats = self.suppressed,
                "conntrack: the kernel dropped events (receive buffer full); counts are a lower bound"
            );
        } else {
            tracing::warn!(error = %e, repeats = self.suppressed, "conntrack: reading events failed");
        }
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

fn open_socket() -> io::Result<NetlinkSocket> {
    let groups = (1 << (NFNLGRP_CONNTRACK_NEW - 1))
        | (1 << (NFNLGRP_CONNTRACK_UPDATE - 1))
        | (1 << (NFNLGRP_CONNTRACK_DESTROY - 1));
    // Binding a multicast group is what needs CAP_NET_ADMIN (and loads nf_conntrack_netlink on demand).
    // Non-blocking, so one wake-up drains everything queued without a poll per message.
    let socket = NetlinkSocket::open(libc::NETLINK_NETFILTER, groups, Blocking::No)?;
    // FORCE ignores rmem_max but needs CAP_NET_ADMIN; we have it if the bind worked, yet fall back anyway.
    if socket.set_recv_buffer(RCVBUF_BYTES, true).is_err() {
        if let Err(e) = socket.set_recv_buffer(RCVBUF_BYTES, false) {
            tracing::warn!(error = %e, "conntrack: cannot enlarge the receive buffer; a flood will lose events");
        }
    }
    Ok(socket)
}

/// What a conntrack event says happened to the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    New,
    /// A state change of an existing entry (the handshake completing among them).
    Update,
    Destroy,
}

/// One conntrack event, reduced to the original direction's tuple and the assured bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnMessage {
    pub change: Change,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub assured: bool,
}

impl ConnMessage {
    /// The pipeline's event, or None for protocols that do not matter here. Only TCP: a mail server's UDP
    /// entries are mostly its own DNS queries, which would flood the store with events about itself.
    fn into_event(self, time: DateTime<Utc>) -> Option<Event> {
        if self.proto != IPPROTO_TCP {
            return None;
        }
        let (kind, rule, assured) = match self.change {
            Change::New => (Kind::ConnNew, RULE_NEW, None),
            Change::Update => (Kind::ConnAssured, RULE_ASSURED, Some(true)),
            Change::Destroy => (Kind::ConnDestroy, RULE_DESTROY, Some(self.assured)),
        };
        Some(Event {
            time,
            kind,
            failure: false,
            rule: Arc::from(rule),
            addr: Some(crate::addr::normalise(self.src)),
            local_addr: Some(crate::addr::normalise(self.dst)),
            port: Some(self.dport),
            service: None,
            user: None,
            count: 1,
            syn_action: None,
            assured,
        })
    }
}

/// The header fields of one netlink message that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MsgHeader {
    pub kind: u16,
    pub flags: u16,
}

/// Splits a datagram into netlink messages (header, payload). A truncated or nonsensical length ends the walk:
/// what follows cannot be framed.
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = (MsgHeader, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let len = u32::from_ne_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(rest.get(4..6)?.try_into().ok()?);
        let flags = u16::from_ne_bytes(rest.get(6..8)?.try_into().ok()?);
        if len < NLMSG_HDRLEN || len > rest.len() {
            rest = &[];
            return None;
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some((MsgHeader { kind, flags }, payload))
    })
}

/// Splits an attribute stream into (number without flag bits, payload). Stops at the first malformed header.
pub(crate) fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let len = u16::from_ne_bytes(rest.get(0..2)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(rest.get(2..4)?.try_into().ok()?) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            rest = &[];
            return None;
        }
        let payload = &rest[NLA_HDRLEN..len];
        // The last attribute's padding may be missing from the buffer.
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

fn be_u16(p: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(p.get(..2)?.try_into().ok()?))
}

fn be_u32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

/// Parses one ctnetlink message. None for anything that is not a conntrack creation, update or destruction with
/// a complete original tuple (control messages, expectations, truncated input).
pub(crate) fn parse_message(h: &MsgHeader, payload: &[u8]) -> Option<ConnMessage> {
    if h.kind < NLMSG_MIN_TYPE || h.kind >> 8 != NFNL_SUBSYS_CTNETLINK {
        return None;
    }
    let change = match h.kind & 0xff {
        // The NEW message type also carries updates; only a creation has NLM_F_CREATE.
        IPCTNL_MSG_CT_NEW if h.flags & NLM_F_CREATE != 0 => Change::New,
        IPCTNL_MSG_CT_NEW => Change::Update,
        IPCTNL_MSG_CT_DELETE => Change::Destroy,
        _ => return None,
    };
    let body = payload.get(NFGENMSG_LEN..)?;
    let orig = find(body, CTA_TUPLE_ORIG)?;
    let ip = find(orig, CTA_TUPLE_IP)?;
    let (src, dst) = tuple_addrs(ip)?;
    let l4 = find(orig, CTA_TUPLE_PROTO)?;
    let proto = *find(l4, CTA_PROTO_NUM)?.first()?;
    // Portless protocols (ICMP) have no ports: 0 stands for "none" and the caller filters by protocol anyway.
    let sport = find(l4, CTA_PROTO_SRC_PORT).and_then(be_u16).unwrap_or(0);
    let dport = find(l4, CTA_PROTO_DST_PORT).and_then(be_u16).unwrap_or(0);
    // A NEW event may omit the status; destroy events carry it. Missing means "not known to be assured".
    let status = find(body, CTA_STATUS).and_then(be_u32).unwrap_or(0);
    Some(ConnMessage { change, proto, src, dst, sport, dport, assured: status & IPS_ASSURED != 0 })
}

fn tuple_addrs(ip: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let v4 = |p: &[u8]| -> Option<IpAddr> { Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(p).ok()?))) };
    let v6 = |p: &[u8]| -> Option<IpAddr> { Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(p).ok()?))) };
    if let (Some(s), Some(d)) = (find(ip, CTA_IP_V4_SRC), find(ip, CTA_IP_V4_DST)) {
        return Some((v4(s)?, v4(d)?));
    }
    Some((v6(find(ip, CTA_IP_V6_SRC)?)?, v6(find(ip, CTA_IP_V6_DST)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::netlink::{test_message, NLA_F_NESTED, NLA_F_NET_BYTEORDER};

    /// One attribute, padded to 4 bytes, with `flags` or'ed into its type.
    fn attr(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((NLA_HDRLEN + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&(kind | flags).to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(kind, NLA_F_NESTED, &parts.concat())
    }

    fn message(kind: u16, flags: u16, attributes: &[Vec<u8>]) -> Vec<u8> {
        // nfgenmsg: family, version, res_id (big-endian).
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
        body.extend(attributes.concat());
        test_message(kind, flags, &body)
    }

    fn tuple(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let ip = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                vec![attr(CTA_IP_V4_SRC, NLA_F_NET_BYTEORDER, &s.octets()), attr(CTA_IP_V4_DST, 0, &d.octets())]
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                vec![attr(CTA_IP_V6_SRC, 0, &s.octets()), attr(CTA_IP_V6_DST, 0, &d.octets())]
            }
            _ => unreachable!(),
        };
        let l4 = vec![
            attr(CTA_PROTO_NUM, 0, &[proto]),
            attr(CTA_PROTO_SRC_PORT, NLA_F_NET_BYTEORDER, &sport.to_be_bytes()),
            attr(CTA_PROTO_DST_PORT, NLA_F_NET_BYTEORDER, &dport.to_be_bytes()),
        ];
        [nest(CTA_TUPLE_IP, &ip), nest(CTA_TUPLE_PROTO, &l4)].concat()
    }

    /// A conntrack event as the kernel sends it: original tuple, reply tuple (swapped), status.
    fn ct_event(msg: u16, flags: u16, src: &str, dst: &str, proto: u8, status: u32) -> Vec<u8> {
        let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        message(
            NFNL_SUBSYS_CTNETLINK << 8 | msg,
            flags,
            &[
                attr(CTA_TUPLE_ORIG, NLA_F_NESTED, &tuple(s, d, proto, 40000, 25)),
                attr(2 /* CTA_TUPLE_REPLY */, NLA_F_NESTED, &tuple(d, s, proto, 25, 40000)),
                attr(CTA_STATUS, NLA_F_NET_BYTEORDER, &status.to_be_bytes()),
            ],
        )
    }

    fn parse_all(buf: &[u8]) -> Vec<ConnMessage> {
        messages(buf).filter_map(|(h, p)| parse_message(&h, p)).collect()
    }

    const CREATE_EXCL: u16 = NLM_F_CREATE | 0x200;

    #[test]
    fn new_tcp_event_gives_original_source_destination_and_port() {
        let buf = ct_event(IPCTNL_MSG_CT_NEW, CREATE_EXCL, "203.0.113.7", "198.51.100.1", 6, 0x8);
        let got = parse_all(&buf);
        assert_eq!(
            got,
            vec![ConnMessage {
                change: Change::New,
                proto: 6,
                src: "203.0.113.7".parse().unwrap(),
                dst: "198.51.100.1".parse().unwrap(),
                sport: 40000,
                dport: 25,
                assured: false,
            }]
        );
        let e = got[0].clone().into_event(Utc::now()).unwrap();
        assert_eq!((e.kind, &*e.rule, e.failure, e.count), (Kind::ConnNew, "conntrack.new", false, 1));
        assert_eq!(e.addr, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(e.local_addr, Some("198.51.100.1".parse().unwrap()));
        assert_eq!((e.port, e.assured), (Some(25), None));
    }

    #[test]
    fn destroy_carries_the_assured_bit() {
        let assured = ct_event(IPCTNL_MSG_CT_DELETE, 0, "2001:db8:1::5", "2001:db8::1", 6, IPS_ASSURED | 0x8);
        let spoofed = ct_event(IPCTNL_MSG_CT_DELETE, 0, "198.18.11.33", "198.51.100.1", 6, 0x1 | 0x8);
        let both = [assured, spoofed].concat();
        let events: Vec<Event> = parse_all(&both).into_iter().filter_map(|c| c.into_event(Utc::now())).collect();
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].kind, &*events[0].rule), (Kind::ConnDestroy, "conntrack.destroy"));
        assert_eq!(events[0].addr, Some("2001:db8:1::5".parse().unwrap()));
        assert_eq!(events[0].assured, Some(true));
        assert_eq!(events[1].addr, Some("198.18.11.33".parse().unwrap()));
        assert_eq!(events[1].assured, Some(false));
    }

    #[test]
    fn ipv4_mapped_addresses_are_normalised() {
        let buf = ct_event(IPCTNL_MSG_CT_DELETE, 0, "::ffff:203.0.113.7", "::ffff:198.51.100.1", 6, 0);
        let e = parse_all(&buf).pop().unwrap().into_event(Utc::now()).unwrap();
        assert_eq!(e.addr, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(e.local_addr, Some("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn the_first_assured_update_per_source_becomes_an_event() {
        // An update is a NEW message without NLM_F_CREATE.
        let syn_recv = ct_event(IPCTNL_MSG_CT_NEW, 0, "198.18.0.9", "198.51.100.1", 6, 0x8);
        let established = ct_event(IPCTNL_MSG_CT_NEW, 0, "203.0.113.7", "198.51.100.1", 6, IPS_ASSURED | 0xa);
        let got = parse_all(&[syn_recv, established.clone(), established.clone()].concat());
        assert_eq!(got.iter().map(|c| c.change).collect::<Vec<_>>(), [Change::Update; 3]);
        let mut once = AssuredOnce::default();
        let t = Instant::now();
        let kept: Vec<Event> =
            got.into_iter().filter(|c| once.keep(c, t)).filter_map(|c| c.into_event(Utc::now())).collect();
        assert_eq!(kept.len(), 1, "a handshake that never completed proves nothing; a repeat is not news: {kept:?}");
        assert_eq!(
            (kept[0].kind, &*kept[0].rule, kept[0].assured),
            (Kind::ConnAssured, "conntrack.assured", Some(true))
        );
        assert_eq!(kept[0].addr, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(kept[0].port, Some(25));
        // After ASSURED_EVERY the same source is reported again; NEW and DESTROY always pass.
        let again = parse_all(&established).pop().unwrap();
        assert!(once.keep(&again, t + ASSURED_EVERY));
        let new =
            parse_all(&ct_event(IPCTNL_MSG_CT_NEW, CREATE_EXCL, "203.0.113.7", "198.51.100.1", 6, 0)).pop().unwrap();
        assert!(once.keep(&new, t) && once.keep(&new, t));
    }

    #[test]
    fn the_assured_dedup_table_stays_bounded() {
        let mut once = AssuredOnce::default();
        let t = Instant::now();
        for i in 0..(ASSURED_MEMORY as u32 + 10) {
            let src = IpAddr::V4(Ipv4Addr::from(0xc612_0000u32 + i));
            let c = ConnMessage {
                change: Change::Update,
                proto: IPPROTO_TCP,
                src,
                dst: "198.51.100.1".parse().unwrap(),
                sport: 1,
                dport: 25,
                assured: true,
            };
            assert!(once.keep(&c, t), "every new source is news");
        }
        assert!(once.seen.len() <= ASSURED_MEMORY);
    }

    #[test]
    fn control_messages_and_other_subsystems_are_ignored() {
        // NLMSG_ERROR, and an expectation (subsystem 2) with a conntrack-like body.
        let mut err = ct_event(IPCTNL_MSG_CT_NEW, CREATE_EXCL, "203.0.113.7", "198.51.100.1", 6, 0);
        err[4..6].copy_from_slice(&2u16.to_ne_bytes());
        assert!(parse_all(&err).is_empty());
        let expect = ct_event(IPCTNL_MSG_CT_NEW, CREATE_EXCL, "203.0.113.7", "198.51.100.1", 6, 0);
        let mut expect = expect;
        expect[4..6].copy_from_slice(&(2u16 << 8).to_ne_bytes());
        assert!(parse_all(&expect).is_empty());
    }

    #[test]
    fn only_tcp_becomes_an_event() {
        let udp = parse_all(&ct_event(IPCTNL_MSG_CT_NEW, CREATE_EXCL, "203.0.113.7", "198.51.100.1", 17, 0));
        assert_eq!(udp.len(), 1, "UDP parses");
        assert_eq!(udp[0].clone().into_event(Utc::now()), None, "but is not an event");
    }

    #[test]
    fn truncated_and_malformed_input_never_panics() {
        let good = ct_event(IPCTNL_MSG_CT_DELETE, 0, "203.0.113.7", "198.51.100.1", 6, IPS_ASSURED);
        for cut in 0..good.len() {
            let mut m = good[..cut].to_vec();
            // Also claim the full length in a shortened buffer, and a shortened length in the header.
            let _ = parse_all(&m);
            if m.len() >= 4 {
                m[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
                let _ = parse_all(&m);
            }
        }
        // Every byte corrupted in turn: attribute lengths become huge, zero or odd.
        for i in 0..good.len() {
            for b in [0u8, 1, 3, 0xff] {
                let mut m = good.clone();
                m[i] = b;
                let _ = parse_all(&m);
            }
        }
        // An attribute length below the header size ends the walk instead of looping.
        assert_eq!(attrs(&[0, 0, 1, 0, 9, 9, 9, 9]).count(), 0);
        assert_eq!(messages(&[0; 16]).count(), 0);
    }

    #[test]
    fn attribute_walk_strips_flags_and_tolerates_missing_final_padding() {
        let mut buf = attr(7, NLA_F_NESTED | NLA_F_NET_BYTEORDER, &[1, 2]);
        buf.extend(attr(CTA_PROTO_NUM, 0, &[6]));
        buf.truncate(buf.len() - 3); // the last attribute's padding
        let got: Vec<_> = attrs(&buf).collect();
        assert_eq!(got, vec![(7, &[1u8, 2][..]), (CTA_PROTO_NUM, &[6u8][..])]);
    }

    #[test]
    fn missing_tuple_parts_give_nothing() {
        let no_proto = message(
            NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE,
            0,
            &[nest(CTA_TUPLE_ORIG, &[nest(CTA_TUPLE_IP, &[attr(CTA_IP_V4_SRC, 0, &[1, 2, 3, 4])])])],
        );
        assert!(parse_all(&no_proto).is_empty());
        // A v4 source with a v6-sized destination is garbage, not a half-address.
        let (s, d) = ("203.0.113.7".parse::<Ipv4Addr>().unwrap(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        let mixed = message(
            NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE,
            0,
            &[nest(
                CTA_TUPLE_ORIG,
                &[
                    nest(CTA_TUPLE_IP, &[attr(CTA_IP_V4_SRC, 0, &s.octets()), attr(CTA_IP_V4_DST, 0, &d.octets())]),
                    nest(CTA_TUPLE_PROTO, &[attr(CTA_PROTO_NUM, 0, &[6])]),
                ],
            )],
        );
        assert!(parse_all(&mixed).is_empty());
    }
}
