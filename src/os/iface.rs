//! The host's network interfaces as the calling thread's network namespace sees them: getifaddrs(3) for their
//! names, flags and addresses, SIOCGIFMTU for their MTU (not /sys, which shows the namespace it was mounted in).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One entry of getifaddrs: an interface with one of its addresses (or none, for the link itself).
#[derive(Debug, Clone)]
pub struct IfEntry {
    pub name: Vec<u8>,
    /// IFF_* flags.
    pub flags: libc::c_int,
    /// An IPv4 or IPv6 address; `None` for other families and entries without one.
    pub addr: Option<IpAddr>,
}

impl IfEntry {
    pub fn is_up(&self) -> bool {
        self.flags & libc::IFF_UP != 0
    }

    pub fn is_loopback(&self) -> bool {
        self.flags & libc::IFF_LOOPBACK != 0
    }
}

/// Every entry getifaddrs lists, copied out of the C list (which is freed before returning).
pub fn entries() -> io::Result<Vec<IfEntry>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes one pointer into `head`, a list we own until freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed; we only read it.
        let ifa = unsafe { &*cur };
        let name = if ifa.ifa_name.is_null() {
            Vec::new()
        } else {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list, copied out before the list is freed.
            unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_bytes().to_vec()
        };
        // SAFETY: ifa_addr is null or points to a sockaddr of the family its sa_family names, owned by the list.
        let addr = unsafe { ip_of(ifa.ifa_addr) };
        out.push(IfEntry { name, flags: ifa.ifa_flags as libc::c_int, addr });
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs, nothing borrowed from it outlives this line, and it is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The address in a sockaddr from getifaddrs.
///
/// # Safety
/// `sa` is null or points to a valid sockaddr whose `sa_family` says which sockaddr_* it really is.
unsafe fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `sa` points to a valid sockaddr, whose first field is the family.
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: an AF_INET address from getifaddrs is a whole sockaddr_in (the caller's guarantee).
            let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            Some(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 address from getifaddrs is a whole sockaddr_in6 (the caller's guarantee).
            let sin6 = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

/// The MTUs of the named interfaces, of those that could be read (an interface gone meanwhile is left out).
pub fn mtus(names: &[Vec<u8>]) -> Vec<u32> {
    // SAFETY: socket(2) takes plain integers; the fd it returns is owned (and closed) by `sock` below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Vec::new();
    }
    // SAFETY: `fd` was just returned by socket(2), is open and owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = Vec::new();
    for name in names {
        // SAFETY: ifreq is plain old data (a name array and a union of integers and sockaddrs): all zeroes is a
        // valid value, and the name is then NUL-terminated.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= req.ifr_name.len() {
            continue;
        }
        for (d, s) in req.ifr_name.iter_mut().zip(name) {
            *d = *s as libc::c_char;
        }
        // SAFETY: `req` is a valid ifreq with a NUL-terminated name that lives for the call; SIOCGIFMTU only
        // writes ifru_mtu inside it. The fd is owned by `sock`.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } == 0 {
            // SAFETY: a successful SIOCGIFMTU set the union's ifru_mtu member, and any int is a valid c_int.
            out.push(unsafe { req.ifr_ifru.ifru_mtu } as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_with_its_address_and_mtu() {
        let entries = entries().unwrap();
        let lo: Vec<&IfEntry> = entries.iter().filter(|e| e.is_loopback()).collect();
        assert!(!lo.is_empty(), "{entries:?}");
        if lo.iter().any(|e| e.is_up()) {
            assert!(lo.iter().any(|e| e.addr.is_some_and(|a| a.is_loopback())), "{entries:?}");
            assert_eq!(mtus(&[lo[0].name.clone()]).len(), 1);
        }
        assert!(mtus(&[b"no-such-if0".to_vec()]).is_empty());
    }
}
