//! The kernel's nftables change notifications (netlink group NFNLGRP_NFTABLES): someone else deleting floodgate's
//! table, a chain's rules, a set or an element (`nft flush ruleset`, a firewall reload, a hand edit) is seen at
//! once, so the daemon repairs within a second instead of at its next periodic check.

use std::io;
use std::time::Duration;

use crate::os::netlink::{Blocking, NetlinkSocket};
use crate::os::poll::wait_readable;

const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// NFT_MSG_* that add or remove parts of a table (NEWGEN and the GET replies are not changes of a table).
const CHANGES: &[u16] = &[
    0,  // NEWTABLE
    2,  // DELTABLE
    3,  // NEWCHAIN
    5,  // DELCHAIN
    6,  // NEWRULE
    8,  // DELRULE
    9,  // NEWSET
    11, // DELSET
    12, // NEWSETELEM
    14, // DELSETELEM
];
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// Every NFT_MSG_* above names its table in attribute 1 (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE,
/// NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE).
const ATTR_TABLE: u16 = 1;
/// Receive buffer asked for (the kernel counts ~1 KiB per notification): some 30,000 at once.
const RCVBUF_BYTES: libc::c_int = 32 << 20;

/// A handle on a watch's socket that stops and restarts its notifications, for another thread: while floodgate
/// writes a large batch itself, nobody it knows of listens, so the kernel does not build one notification per
/// element (a 100,000-element batch spent most of its time allocating them, only for the watch to discard them
/// as floodgate's own). A change by someone else in that window is not seen at once; the periodic verify finds it.
pub struct Mute {
    socket: NetlinkSocket,
}

impl Mute {
    /// Runs `f` with the watch's notifications off (when leaving the group fails, with them on).
    pub fn during<T>(&self, f: impl FnOnce() -> T) -> T {
        let left = self.socket.membership(NFNLGRP_NFTABLES, false).is_ok();
        let out = f();
        if left {
            if let Err(e) = self.socket.membership(NFNLGRP_NFTABLES, true) {
                tracing::error!(error = %e, "cannot rejoin the nftables notifications; outside changes wait for the periodic verify");
            }
        }
        out
    }
}

pub struct Watch {
    socket: NetlinkSocket,
    buf: Vec<u8>,
}

impl Watch {
    /// Joins the nftables notification group (needs CAP_NET_ADMIN, as writing the table does).
    pub fn open() -> io::Result<Watch> {
        let socket = NetlinkSocket::open(libc::NETLINK_NETFILTER, 1 << (NFNLGRP_NFTABLES - 1), Blocking::No)?;
        // Every element floodgate itself adds is a notification too (one each): a fleet's hundred thousand bans
        // applied at once would overflow the default buffer, and a lost notification costs a full repair.
        if socket.set_recv_buffer(RCVBUF_BYTES, true).is_err() {
            let _ = socket.set_recv_buffer(RCVBUF_BYTES, false);
        }
        Ok(Watch { socket, buf: vec![0; 1 << 16] })
    }

    /// A handle that mutes this watch from another thread (see [`Mute`]).
    pub fn mute(&self) -> io::Result<Mute> {
        Ok(Mute { socket: self.socket.try_clone()? })
    }

    /// Waits up to `timeout` for notifications; true if one changed `table` and came from another netlink
    /// socket than `ours` (floodgate's own writes are not news). A lost notification (ENOBUFS: too many at
    /// once) counts as a change: something happened that was not seen.
    pub fn wait(&mut self, table: &str, ours: u32, timeout: Duration) -> io::Result<bool> {
        if !wait_readable(&self.socket, timeout)? {
            return Ok(false);
        }
        match self.socket.recv(&mut self.buf) {
            Ok(n) => Ok(touches(&self.buf[..n], table, ours)),
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOBUFS) => Ok(true),
                Some(libc::EAGAIN | libc::EINTR) => Ok(false),
                _ => Err(e),
            },
        }
    }
}

/// Whether any message in `buf` is a change of `table` sent by someone other than `ours`.
fn touches(mut buf: &[u8], table: &str, ours: u32) -> bool {
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return false;
        }
        let (msg, rest) = buf.split_at(len);
        buf = &rest[rest.len().min((4 - len % 4) % 4)..];
        let kind = u16_at(msg, 4);
        let pid = u32_at(msg, 12);
        if kind >> 8 != NFNL_SUBSYS_NFTABLES || !CHANGES.contains(&(kind & 0xff)) || pid == ours {
            continue;
        }
        let mut attrs = msg.get(NLMSG_HDRLEN + NFGENMSG_LEN..).unwrap_or_default();
        while attrs.len() >= 4 {
            let alen = u16_at(attrs, 0) as usize;
            if alen < 4 || alen > attrs.len() {
                break;
            }
            if u16_at(attrs, 2) & 0x3fff == ATTR_TABLE {
                let name = &attrs[4..alen];
                let name = name.split(|b| *b == 0).next().unwrap_or_default();
                if name == table.as_bytes() {
                    return true;
                }
                break;
            }
            attrs = &attrs[((alen + 3) & !3).min(attrs.len())..];
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, pid: u32, table: &str) -> Vec<u8> {
        let mut name = table.as_bytes().to_vec();
        name.push(0);
        let alen = 4 + name.len();
        let mut attr = (alen as u16).to_ne_bytes().to_vec();
        attr.extend(ATTR_TABLE.to_ne_bytes());
        attr.extend(&name);
        attr.resize((alen + 3) & !3, 0);
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + attr.len();
        let mut m = (len as u32).to_ne_bytes().to_vec();
        m.extend(((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        m.extend(0u16.to_ne_bytes());
        m.extend(1u32.to_ne_bytes());
        m.extend(pid.to_ne_bytes());
        m.extend([0u8; NFGENMSG_LEN]);
        m.extend(attr);
        m
    }

    #[test]
    fn only_others_changes_of_our_table_count() {
        assert!(touches(&msg(2, 99, "floodgate"), "floodgate", 7), "someone deleted the table");
        assert!(!touches(&msg(2, 7, "floodgate"), "floodgate", 7), "our own change");
        assert!(!touches(&msg(14, 99, "firewalld"), "floodgate", 7), "another table");
        assert!(!touches(&msg(16, 99, "floodgate"), "floodgate", 7), "NEWGEN is no change of a table");
        let mut two = msg(6, 99, "docker");
        two.extend(msg(8, 99, "floodgate"));
        assert!(touches(&two, "floodgate", 7), "the second message of a datagram");
    }
}
