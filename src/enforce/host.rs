//! The host's own addresses, which floodgate never bans (fail2ban's `ignoreself`): a failure logged with the
//! server's own address as the client (a local webmail, a content filter, a health check through the public
//! address) must not cut the host off from itself. Read from the kernel's interfaces (getifaddrs), so an
//! address added later is known after the next refresh (reload, verify).

use std::net::IpAddr;

use crate::addr::normalise;

/// Every address configured on an interface of this network namespace, deduplicated and sorted.
pub fn own_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we own until freeifaddrs; we only read it in between.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: the family tells which sockaddr type ifa_addr points to.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes()));
            } else if family == libc::AF_INET6 {
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(normalise(IpAddr::from(sa.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_among_the_hosts_addresses() {
        // Every network namespace has lo, up in the one tests run in; the namespace tests check the other
        // interfaces' addresses (tests/daemon_netns.rs).
        let own = own_addresses().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(own.contains(&lo), "{own:?}");
        assert!(own.windows(2).all(|w| w[0] < w[1]), "sorted and deduplicated");
    }
}
