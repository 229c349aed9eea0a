//! The listening TCP sockets of the network namespace floodgate runs in, with their effective backlog.
//!
//! The backlog a listener really has is not what the service asked for: listen(2) cuts it to
//! net.core.somaxconn at the time of the call. For a listener, inet_diag reports that effective value
//! (`sk_max_ack_backlog`) as `idiag_wqueue` and the accept queue's current length as `idiag_rqueue`, so the
//! live source is a NETLINK_SOCK_DIAG dump (IPv4 and IPv6, state LISTEN only). /proc/net/tcp{,6} list the same
//! sockets without the backlog; they are the fallback, and the reader of fixture trees in tests.
//!
//! Parsing is pure (bytes or text in, listeners out) and never trusts its input to be well formed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::Serialize;

use crate::os::netlink::{Blocking, NetlinkSocket, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_DUMP, NLM_F_REQUEST};
use crate::source::conntrack::{messages, MsgHeader};

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
    /// The effective backlog (listen()'s argument after the somaxconn cap). None when read from /proc.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    /// Connections completed and waiting for accept().
    pub accept_queue: u32,
}

impl Listener {
    /// Loopback listeners cannot be reached by a flood from outside; their backlogs do not matter here.
    pub fn is_loopback(&self) -> bool {
        crate::addr::normalise(self.addr).is_loopback()
    }

    /// `198.51.100.1:25`, `[::]:465`.
    pub fn endpoint(&self) -> String {
        match self.addr {
            IpAddr::V4(a) => format!("{a}:{}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        }
    }
}

// linux/sock_diag.h, linux/inet_diag.h.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// struct inet_diag_req_v2: family, protocol, ext, pad, states (u32), inet_diag_sockid (48 bytes).
const REQ_LEN: usize = 56;
/// struct inet_diag_msg without its attributes.
const DIAG_MSG_LEN: usize = 72;
const TCP_LISTEN: u8 = 10;
/// A dump of a few thousand sockets comes in pages of this size at most.
const READ_BYTES: usize = 32 << 10;
/// A dump never takes this long; past it something is wrong and /proc is the answer.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// The listeners of this network namespace from the kernel's socket diagnostics (IPv4 then IPv6).
pub fn read_sock_diag() -> io::Result<Vec<Listener>> {
    let mut out = dump(libc::AF_INET as u8)?;
    match dump(libc::AF_INET6 as u8) {
        Ok(v6) => out.extend(v6),
        // A kernel without IPv6 has no IPv6 listeners.
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) || e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// The request: dump every TCP socket of `family` in state LISTEN.
fn request(family: u8, seq: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    v.extend_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    v.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    v.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
    v.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    v.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    v.resize(NLMSG_HDRLEN + REQ_LEN, 0); // the socket id: all zero, no filter
    v
}

fn dump(family: u8) -> io::Result<Vec<Listener>> {
    let sock = NetlinkSocket::open(libc::NETLINK_SOCK_DIAG, 0, Blocking::Yes)?;
    // Without a timeout a kernel that never answers would hang the advisor; failing to set it is not fatal.
    let _ = sock.set_recv_timeout(RECV_TIMEOUT);
    sock.send_to_kernel(&request(family, 1))?;
    let mut buf = vec![0u8; READ_BYTES];
    let mut out = Vec::new();
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sock_diag: the dump ended without DONE"));
        }
        let bytes = &buf[..n];
        match parse_page(bytes, &mut out) {
            Page::More => {}
            Page::Done => return Ok(out),
            Page::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// What one datagram of the dump said.
#[derive(Debug, PartialEq, Eq)]
enum Page {
    More,
    Done,
    Error(i32),
}

/// Appends the listeners of one datagram to `out`.
fn parse_page(buf: &[u8], out: &mut Vec<Listener>) -> Page {
    for (h, payload) in messages(buf) {
        let MsgHeader { kind, .. } = h;
        match kind {
            NLMSG_DONE => return Page::Done,
            NLMSG_ERROR => {
                let errno = payload.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes).unwrap_or(0);
                // An "error" of 0 is an acknowledgement.
                if errno != 0 {
                    return Page::Error(-errno);
                }
            }
            SOCK_DIAG_BY_FAMILY => out.extend(parse_diag_msg(payload)),
            _ => {}
        }
    }
    Page::More
}

/// One inet_diag_msg: a listener, or None when truncated, not LISTEN, or of an unknown family.
fn parse_diag_msg(p: &[u8]) -> Option<Listener> {
    if p.len() < DIAG_MSG_LEN || p[1] != TCP_LISTEN {
        return None;
    }
    let u32_at = |i: usize| -> Option<u32> { Some(u32::from_ne_bytes(p.get(i..i + 4)?.try_into().ok()?)) };
    let port = u16::from_be_bytes([p[4], p[5]]);
    let addr = match i32::from(p[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&p[8..12]).ok()?)),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?)),
        _ => return None,
    };
    Some(Listener { addr, port, accept_queue: u32_at(56)?, backlog: Some(u32_at(60)?) })
}

/// The listeners in a /proc/net/tcp or /proc/net/tcp6 text (state 0A), without their backlog: /proc shows
/// only the accept queue (`rx_queue`). Malformed lines are skipped.
pub fn parse_proc_net_tcp(text: &str) -> Vec<Listener> {
    text.lines().skip(1).filter_map(parse_proc_line).collect()
}

fn parse_proc_line(line: &str) -> Option<Listener> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = fields.next()?;
    let _remote = fields.next()?;
    if fields.next()? != "0A" {
        return None;
    }
    let (_tx, rx) = fields.next()?.split_once(':')?;
    let (addr, port) = local.split_once(':')?;
    Some(Listener {
        addr: proc_addr(addr)?,
        port: u16::from_str_radix(port, 16).ok()?,
        backlog: None,
        accept_queue: u32::from_str_radix(rx, 16).ok()?,
    })
}

/// The kernel prints an address as 32-bit words in hex, each in the machine's byte order.
fn proc_addr(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<[u8; 4]>> = (0..hex.len() / 8)
        .map(|i| hex.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok()).map(u32::to_ne_bytes))
        .collect();
    let bytes = words?.concat();
    match (hex.len(), bytes.len()) {
        (8, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?))),
        (32, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::os::netlink::test_message;

    /// An inet_diag_msg netlink message as the kernel sends it.
    pub(crate) fn diag_message(addr: IpAddr, port: u16, state: u8, rqueue: u32, wqueue: u32) -> Vec<u8> {
        let mut p = vec![0u8; DIAG_MSG_LEN];
        p[1] = state;
        p[4..6].copy_from_slice(&port.to_be_bytes());
        match addr {
            IpAddr::V4(a) => {
                p[0] = libc::AF_INET as u8;
                p[8..12].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                p[0] = libc::AF_INET6 as u8;
                p[8..24].copy_from_slice(&a.octets());
            }
        }
        p[56..60].copy_from_slice(&rqueue.to_ne_bytes());
        p[60..64].copy_from_slice(&wqueue.to_ne_bytes());
        p.extend_from_slice(&[0; 8]); // an attribute the parser ignores
        nl(SOCK_DIAG_BY_FAMILY, &p)
    }

    fn nl(kind: u16, payload: &[u8]) -> Vec<u8> {
        test_message(kind, 0x2 /* NLM_F_MULTI */, payload)
    }

    #[test]
    fn the_request_asks_for_tcp_listeners_of_one_family() {
        let r = request(libc::AF_INET6 as u8, 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16::from_ne_bytes(r[6..8].try_into().unwrap()), 0x301);
        assert_eq!(&r[16..18], &[libc::AF_INET6 as u8, 6]);
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1 << 10);
    }

    #[test]
    fn a_dump_page_gives_listeners_and_ends_on_done() {
        let mut page = diag_message("198.51.100.1".parse().unwrap(), 25, TCP_LISTEN, 3, 8);
        page.extend(diag_message("2001:db8::1".parse().unwrap(), 993, TCP_LISTEN, 0, 4096));
        // Not a listener (state 1, ESTABLISHED): skipped even if the kernel sent it.
        page.extend(diag_message("198.51.100.1".parse().unwrap(), 26, 1, 0, 0));
        let mut out = Vec::new();
        assert_eq!(parse_page(&page, &mut out), Page::More);
        assert_eq!(
            out,
            [
                Listener { addr: "198.51.100.1".parse().unwrap(), port: 25, backlog: Some(8), accept_queue: 3 },
                Listener { addr: "2001:db8::1".parse().unwrap(), port: 993, backlog: Some(4096), accept_queue: 0 },
            ]
        );
        assert_eq!(parse_page(&nl(NLMSG_DONE, &[0; 4]), &mut out), Page::Done);
        assert_eq!(parse_page(&nl(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes()), &mut out), Page::Error(libc::EPERM));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn truncated_messages_are_skipped() {
        let full = diag_message("198.51.100.1".parse().unwrap(), 25, TCP_LISTEN, 0, 8);
        let mut out = Vec::new();
        // The header claims more than is there: the walk stops, nothing is read past the end.
        assert_eq!(parse_page(&full[..40], &mut out), Page::More);
        assert!(out.is_empty());
        assert_eq!(parse_diag_msg(&full[16..60]), None);
    }

    #[test]
    fn proc_net_tcp_lists_listeners_without_backlog() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
           1: 016433C6:024B 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
           2: 016433C6:0019 026433C6:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n\
           3: garbage\n";
        let l = parse_proc_net_tcp(v4);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(
                l,
                [
                    Listener { addr: ip("127.0.0.1"), port: 25, backlog: None, accept_queue: 0 },
                    Listener { addr: ip("198.51.100.1"), port: 587, backlog: None, accept_queue: 2 },
                ]
            );
            assert!(l[0].is_loopback() && !l[1].is_loopback());
        }
        let v6 =
            "  sl  local_address                         remote_address                        st tx_queue rx_queue\n\
           0: 00000000000000000000000000000000:01D1 00000000000000000000000000000000:0000 0A 00000000:00000000 00\n\
           1: 00000000000000000000000001000000:0019 00000000000000000000000000000000:0000 0A 00000000:00000000 00\n";
        let l = parse_proc_net_tcp(v6);
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].addr, l[0].port), (ip("::"), 465));
        assert_eq!(l[0].endpoint(), "[::]:465");
        if cfg!(target_endian = "little") {
            assert_eq!(l[1].addr, ip("::1"));
            assert!(l[1].is_loopback());
        }
    }
}
