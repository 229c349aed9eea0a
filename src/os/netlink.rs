//! A netlink socket owned as an fd ([`NetlinkSocket`]): opened for one protocol (NETLINK_NETFILTER for
//! conntrack events and nftables notifications, NETLINK_SOCK_DIAG for the listening sockets), bound to its
//! multicast groups, and closed when dropped. It moves datagrams; what is in them is parsed by its users, over
//! plain bytes (no alignment assumed).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

// Message framing (linux/netlink.h) as it is on the wire, for the users that build and parse messages: a
// message type or flag set is a u16 there, where the libc crate has c_int.
/// The message header: length (u32), type, flags (u16 each), sequence number, port id (u32 each).
pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
/// Types below this are netlink control messages (NOOP, ERROR, DONE, OVERRUN), not a protocol's own.
pub const NLMSG_MIN_TYPE: u16 = 0x10;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
/// NLM_F_ROOT | NLM_F_MATCH: every object, not one.
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
/// The attribute header: length and type (u16 each).
pub const NLA_HDRLEN: usize = 4;
/// Flag bits the kernel may set in nla_type; the attribute's number is what remains ([`NLA_TYPE_MASK`]).
pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
}

/// Whether reads wait for a datagram or come back with `WouldBlock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    Yes,
    No,
}

impl NetlinkSocket {
    /// Opens a socket for `protocol` (NETLINK_*) and binds it to the multicast `groups`, given as the legacy
    /// bitmask (group g is bit g-1; 0 for none). The kernel picks the port id.
    pub fn open(protocol: libc::c_int, groups: u32, blocking: Blocking) -> io::Result<NetlinkSocket> {
        let nonblock = if blocking == Blocking::No { libc::SOCK_NONBLOCK } else { 0 };
        // SAFETY: socket(2) takes plain integers; the fd it returns is owned by `fd` below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC | nonblock, protocol) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by socket(2), is open, and nothing else owns it.
        let socket = NetlinkSocket { fd: unsafe { OwnedFd::from_raw_fd(raw) } };
        let mut addr = kernel_address();
        addr.nl_groups = groups;
        // SAFETY: `addr` is a valid sockaddr_nl that lives for the call, and the length passed is its size.
        let r = unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// Asks for a receive buffer of `bytes`. `force` (SO_RCVBUFFORCE) goes past net.core.rmem_max but needs
    /// CAP_NET_ADMIN.
    pub fn set_recv_buffer(&self, bytes: libc::c_int, force: bool) -> io::Result<()> {
        self.set_option(if force { libc::SO_RCVBUFFORCE } else { libc::SO_RCVBUF }, &bytes)
    }

    /// A blocking read gives up with `WouldBlock` after `timeout` (to the microsecond).
    pub fn set_recv_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        self.set_option(libc::SO_RCVTIMEO, &tv)
    }

    /// A second handle on the same socket (dup(2)): its group memberships are the socket's.
    pub fn try_clone(&self) -> io::Result<NetlinkSocket> {
        Ok(NetlinkSocket { fd: self.fd.try_clone()? })
    }

    /// Joins (`true`) or leaves multicast `group` (1-based, as NFNLGRP_* are numbered).
    pub fn membership(&self, group: u32, join: bool) -> io::Result<()> {
        let option = if join { libc::NETLINK_ADD_MEMBERSHIP } else { libc::NETLINK_DROP_MEMBERSHIP };
        self.set_option_at(libc::SOL_NETLINK, option, &(group as libc::c_int))
    }

    /// A SOL_SOCKET option whose value is a `T` (an int, a timeval).
    fn set_option<T: Copy>(&self, option: libc::c_int, value: &T) -> io::Result<()> {
        self.set_option_at(libc::SOL_SOCKET, option, value)
    }

    fn set_option_at<T: Copy>(&self, level: libc::c_int, option: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to a live T for the call and the length passed is exactly its size; the kernel
        // only reads it. The fd is owned by `self`.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                option,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sends one datagram (a request of one or more messages) to the kernel.
    pub fn send_to_kernel(&self, datagram: &[u8]) -> io::Result<()> {
        let to = kernel_address();
        // SAFETY: the data pointer is valid for `datagram.len()` bytes and `to` is a valid sockaddr_nl of the
        // length passed, both living for the call; the kernel only reads them. The fd is owned by `self`.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                datagram.as_ptr().cast(),
                datagram.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != datagram.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "netlink: the request was sent in part"));
        }
        Ok(())
    }

    /// Reads one datagram into `buf` and returns its length (cut to `buf`'s length if it was longer). On a
    /// non-blocking socket with nothing queued: `WouldBlock`. ENOBUFS means the kernel dropped messages for us.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which is valid and exclusively ours for
        // the call. The fd is owned by `self`.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// The kernel's address (port 0), no groups.
fn kernel_address() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain old data (integers and padding), for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

impl AsFd for NetlinkSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetlinkSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// One message framed as the kernel frames it (sequence number and port id 0), for tests that hand-build the
/// datagrams their parser reads.
#[cfg(test)]
pub(crate) fn test_message(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(NLMSG_HDRLEN + payload.len());
    v.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&[0; 8]); // seq, pid
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_blocking_socket_with_nothing_queued_would_block() {
        // NETLINK_ROUTE without groups needs no privilege.
        let s = NetlinkSocket::open(libc::NETLINK_ROUTE, 0, Blocking::No).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(s.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        s.set_recv_buffer(1 << 16, false).unwrap();
        s.set_recv_timeout(Duration::from_secs(1)).unwrap();
    }
}
