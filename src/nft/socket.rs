//! The netfilter netlink socket: one sendmsg per batch, then every reply drained and sorted by sequence number.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// A reply to one message of a batch: its sequence number, errno (0 = acknowledged) and, when the kernel
/// pointed at the offending attribute (extended ACK), that attribute's offset inside the message.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub seq: u32,
    pub errno: i32,
    pub bad_attr_offset: Option<u32>,
}

pub struct Socket {
    inner: mnl::Socket,
    portid: u32,
    sndbuf: usize,
}

// SAFETY: `mnl::Socket` holds a raw pointer to libmnl's `struct mnl_socket`, a heap block of an fd and its
// bound address with no thread-local state, which this Socket owns alone; moving it to another thread is as safe
// as moving the fd. It stays !Sync, so two threads never use it at once. Send lets a big batch be programmed on
// a second thread while the store writes its rows (`Store::record`).
unsafe impl Send for Socket {}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_OFFS: u16 = 2;
/// How long to wait for replies the kernel has not queued yet. Batches are processed inside sendmsg, so this
/// only matters if that ever changes; it is a safety net, not a pace.
const REPLY_WAIT: Duration = Duration::from_secs(10);

impl Socket {
    pub fn open() -> io::Result<Socket> {
        let inner = mnl::Socket::new(mnl::Bus::Netfilter)?;
        let portid = inner.portid();
        let fd = inner.as_raw_fd();
        // CAP_ACK: errors do not echo the whole (possibly 64 KiB) message back; EXT_ACK: the kernel names the
        // offending attribute, which is how a failed element is found inside a message of a thousand.
        for opt in [libc::NETLINK_CAP_ACK, libc::NETLINK_EXT_ACK] {
            setsockopt(fd, libc::SOL_NETLINK, opt, 1)?;
        }
        // Acknowledgements of a 100k-element batch, and set dumps, must not overflow the receive buffer.
        let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
        Ok(Socket { inner, portid, sndbuf: 0 })
    }

    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// Sends the whole buffer in a single sendmsg: the kernel sees one batch, one transaction. (mnl's send_all
    /// splits at 128 KiB, and a batch split in two is two transactions, or a truncated one.)
    pub fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        let fd = self.inner.as_raw_fd();
        let need = buf.len() + 4096;
        if need > self.sndbuf {
            // SO_SNDBUFFORCE needs CAP_NET_ADMIN, which writing nftables needs anyway; without it the plain
            // option still covers small batches.
            let v = need.min(i32::MAX as usize) as i32;
            if setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v).is_err() {
                setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, v)?;
            }
            self.sndbuf = need;
        }
        // SAFETY: sockaddr_nl is plain old data (integers and padding): all zeroes is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut _, iov_len: buf.len() };
        // SAFETY: msghdr is plain old data (pointers, lengths, flags): all zeroes, null pointers and no control data,
        // is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = &mut addr as *mut _ as *mut _;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: `msg` points to `addr` and one iovec over `buf`, all alive for the call and of the lengths given;
        // sendmsg only reads them. The fd is owned by `self.inner`.
        let sent = unsafe { libc::sendmsg(fd, &msg, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != buf.len() {
            return Err(io::Error::other(format!("netlink sent {sent} of {} bytes", buf.len())));
        }
        Ok(())
    }

    /// Collects the replies to a batch whose messages carry sequence numbers `first..end`: one for each of
    /// `expected` (every message asks for an ACK), or fewer when an error came back. The kernel processes a batch
    /// inside sendmsg, so everything is queued already and this drains without waiting. A refused batch (no
    /// CAP_NET_ADMIN) is answered only for its BATCH_BEGIN, hence the range.
    pub fn replies(&self, first: u32, end: u32, expected: &[u32]) -> io::Result<Vec<Reply>> {
        let mut pending: std::collections::HashSet<u32> = expected.iter().copied().collect();
        let mut out: Vec<Reply> = Vec::with_capacity(expected.len());
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + REPLY_WAIT;
        let mut failed = false;
        while !pending.is_empty() {
            let n = match self.recv(&mut buf, if failed { None } else { Some(deadline) }) {
                Ok(n) => n,
                // After an error the rest may never be acknowledged: whatever is queued has been read.
                Err(e) if failed && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            for m in Messages::new(&buf[..n]) {
                if m.pid != self.portid || m.kind != NLMSG_ERROR {
                    continue;
                }
                let r = parse_error(m.header_and_payload)?;
                if r.seq.wrapping_sub(first) >= end.wrapping_sub(first) {
                    continue;
                }
                pending.remove(&r.seq);
                failed |= r.errno != 0;
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Reads one datagram, waiting until `deadline` at most; with no deadline, only what is queued.
    fn recv(&self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        let fd = self.inner.as_raw_fd();
        loop {
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which is ours for the call; the fd is
            // owned by `self.inner`.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            let Some(deadline) = deadline else { return Err(e) };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply from the kernel"));
            }
            // Whatever the wait says, the recv above tells.
            let _ = crate::os::poll::wait_readable(&self.inner, left.min(Duration::from_secs(1)));
        }
    }

    /// Runs a dump (or a single get) request: calls `each` with every reply message's bytes (header included)
    /// until NLMSG_DONE or the ACK. An error reply ends it with its errno.
    pub fn dump(&mut self, request: &[u8], seq: u32, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        self.send(request)?;
        let mut buf = vec![0u8; 1 << 17];
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let n = self.recv(&mut buf, Some(deadline))?;
            for m in Messages::new(&buf[..n]) {
                if m.pid != self.portid || m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let r = parse_error(m.header_and_payload)?;
                        if r.errno != 0 {
                            return Err(io::Error::from_raw_os_error(r.errno));
                        }
                        return Ok(());
                    }
                    _ => each(m.header_and_payload),
                }
            }
        }
    }
}

fn setsockopt(fd: i32, level: i32, opt: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live i32 and the length passed is its size; the kernel only reads it. The caller's fd is
    // open (owned by the socket).
    let r = unsafe {
        libc::setsockopt(fd, level, opt, &value as *const i32 as *const _, std::mem::size_of::<i32>() as u32)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

struct Message<'a> {
    kind: u16,
    seq: u32,
    pid: u32,
    header_and_payload: &'a [u8],
}

/// Walks the netlink messages of one datagram.
struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Messages { buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;
    fn next(&mut self) -> Option<Message<'a>> {
        if self.buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(self.buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let m = Message {
            kind: u16::from_ne_bytes(self.buf[4..6].try_into().ok()?),
            seq: u32::from_ne_bytes(self.buf[8..12].try_into().ok()?),
            pid: u32::from_ne_bytes(self.buf[12..16].try_into().ok()?),
            header_and_payload: &self.buf[..len],
        };
        let next = (len + 3) & !3;
        self.buf = if next >= self.buf.len() { &[] } else { &self.buf[next..] };
        Some(m)
    }
}

/// Parses an NLMSG_ERROR message: errno, the sequence number of the message it answers, and the extended-ACK
/// offset of the bad attribute when present. With CAP_ACK only the original header follows the errno.
fn parse_error(m: &[u8]) -> io::Result<Reply> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "truncated netlink error message");
    let body = m.get(NLMSG_HDRLEN..).ok_or_else(bad)?;
    let errno = -i32::from_ne_bytes(body.get(0..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let orig = body.get(4..4 + NLMSG_HDRLEN).ok_or_else(bad)?;
    let seq = u32::from_ne_bytes(orig[8..12].try_into().map_err(|_| bad())?);
    let flags = u16::from_ne_bytes(m[6..8].try_into().map_err(|_| bad())?);
    let mut bad_attr_offset = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // TLVs follow the echoed header (CAP_ACK: header only, no payload).
        let mut tlvs = body.get(4 + NLMSG_HDRLEN..).unwrap_or(&[]);
        while tlvs.len() >= 4 {
            let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
            let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
            if len < 4 || len > tlvs.len() {
                break;
            }
            if kind == NLMSGERR_ATTR_OFFS && len >= 8 {
                bad_attr_offset = Some(u32::from_ne_bytes(tlvs[4..8].try_into().map_err(|_| bad())?));
            }
            let next = (len + 3) & !3;
            tlvs = tlvs.get(next..).unwrap_or(&[]);
        }
    }
    Ok(Reply { seq, errno, bad_attr_offset })
}
