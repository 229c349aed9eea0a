//! The host's own addresses, which floodgate never bans (fail2ban's `ignoreself`): a failure logged with the
//! server's own address as the client (a local webmail, a content filter, a health check through the public
//! address) must not cut the host off from itself. Read from the kernel's interfaces (getifaddrs), so an
//! address added later is known after the next refresh (reload, verify).

use std::net::IpAddr;

use crate::addr::normalise;

/// Every address configured on an interface of this network namespace, deduplicated and sorted.
pub fn own_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = crate::os::iface::entries()?.into_iter().filter_map(|e| e.addr).map(normalise).collect();
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
