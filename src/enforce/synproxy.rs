//! Whether the kernel's SYN proxy can work on this host, and the shape it must answer SYNs with.
//!
//! nft `synproxy` answers a SYN from netfilter with a cookie and opens the connection to the listener only once
//! the client's ACK proves the handshake. It needs (kernel nf_synproxy documentation, nft wiki "Synproxy"):
//! - conntrack: the final ACK must reach it as `invalid` (no entry), and its rules hold `ct` expressions;
//! - `net.netfilter.nf_conntrack_tcp_loose = 0`: with the default 1 conntrack would pick up that ACK as a new
//!   connection and the proxy would never see it (the handshake hangs);
//! - `net.ipv4.tcp_timestamps` on: the cookie carries window scaling and SACK in the timestamp; without it
//!   clients lose both;
//! - the MSS of the interfaces (announced in the SYN-ACK) and the window scale the host's listeners would pick
//!   (the proxy does not rewrite windows, so they must match).
//!
//! Read from /proc of the calling thread's network namespace; each missing prerequisite is named with the
//! command that fixes it, and floodgate never changes a sysctl itself.

use std::path::Path;

/// What the probe found: whether the proxy may be used, and the SYN-ACK's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub ready: Result<(), String>,
    pub mss4: u16,
    pub mss6: u16,
    pub wscale: u8,
}

/// Reads the prerequisites under `proc` (normally `/proc`); `mtu` is the smallest MTU of the interfaces that are
/// up, loopback aside (None: there is none).
pub fn probe(proc: &Path, mtu: Option<u32>) -> Probe {
    let read = |rel: &str| std::fs::read_to_string(proc.join(rel)).ok().map(|s| s.trim().to_string());
    let mut missing = Vec::new();
    match read("sys/net/netfilter/nf_conntrack_tcp_loose").as_deref() {
        None => missing.push(
            "conntrack is not loaded in this network namespace (no net.netfilter.nf_conntrack_tcp_loose)".to_string(),
        ),
        Some("0") => {}
        Some(v) => missing.push(format!(
            "net.netfilter.nf_conntrack_tcp_loose is {v}, the proxy needs 0 (sysctl -w \
             net.netfilter.nf_conntrack_tcp_loose=0)"
        )),
    }
    if read("sys/net/ipv4/tcp_timestamps").as_deref() == Some("0") {
        missing.push(
            "net.ipv4.tcp_timestamps is 0, the proxy needs it on (sysctl -w net.ipv4.tcp_timestamps=1)".to_string(),
        );
    }
    let (mss4, mss6) = match mtu {
        Some(m) if m >= 1280 => ((m - 40).min(65_495) as u16, (m - 60).min(65_475) as u16),
        Some(m) => {
            missing.push(format!("the smallest interface MTU is {m}, too small for an MSS (at least 1280)"));
            (1460, 1440)
        }
        None => {
            missing.push("no network interface is up besides loopback (the MSS comes from the interface)".into());
            (1460, 1440)
        }
    };
    let rmem = read("sys/net/ipv4/tcp_rmem")
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(6 << 20);
    let rmem_max = read("sys/net/core/rmem_max").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let ready = if missing.is_empty() { Ok(()) } else { Err(missing.join("; ")) };
    Probe { ready, mss4, mss6, wscale: wscale(rmem.max(rmem_max)) }
}

/// The window scale Linux picks for a receive buffer of `space` bytes (tcp_select_initial_window): halved until
/// it fits the 16-bit window, at most 14 times.
pub fn wscale(mut space: u64) -> u8 {
    let mut w = 0;
    while space > 65_535 && w < 14 {
        space >>= 1;
        w += 1;
    }
    w
}

/// The smallest MTU among the interfaces that are up, loopback aside (through the calling thread's network
/// namespace: getifaddrs and SIOCGIFMTU, not /sys, which shows the namespace it was mounted in).
pub fn smallest_mtu() -> Option<u32> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    for e in crate::os::iface::entries().ok()? {
        if e.is_up() && !e.is_loopback() && !e.name.is_empty() && !names.contains(&e.name) {
            names.push(e.name);
        }
    }
    crate::os::iface::mtus(&names).into_iter().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{text}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn ready_only_with_every_prerequisite() {
        let good = [
            ("sys/net/netfilter/nf_conntrack_tcp_loose", "0"),
            ("sys/net/ipv4/tcp_timestamps", "1"),
            ("sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456"),
            ("sys/net/core/rmem_max", "212992"),
        ];
        let p = probe(proc_with(&good).path(), Some(1500));
        assert_eq!(p, Probe { ready: Ok(()), mss4: 1460, mss6: 1440, wscale: 7 });

        let loose = probe(proc_with(&[("sys/net/netfilter/nf_conntrack_tcp_loose", "1")]).path(), Some(9000));
        let why = loose.ready.unwrap_err();
        assert!(why.contains("nf_conntrack_tcp_loose is 1") && why.contains("sysctl -w"), "{why}");
        assert_eq!((loose.mss4, loose.mss6), (8960, 8940));

        let why = probe(proc_with(&[]).path(), None).ready.unwrap_err();
        assert!(why.contains("conntrack is not loaded"), "{why}");
        assert!(why.contains("no network interface is up"), "{why}");

        let no_ts = [good[0], ("sys/net/ipv4/tcp_timestamps", "0")];
        assert!(probe(proc_with(&no_ts).path(), Some(1500)).ready.unwrap_err().contains("tcp_timestamps is 0"));
    }

    #[test]
    fn window_scale_follows_the_largest_receive_buffer() {
        assert_eq!(wscale(65_535), 0);
        assert_eq!(wscale(6_291_456), 7, "Linux's default tcp_rmem max");
        assert_eq!(wscale(u64::MAX), 14);
    }

    #[test]
    fn the_namespace_has_an_mtu_or_none() {
        // Whatever interfaces the test machine has, a value is a plausible MTU.
        if let Some(m) = smallest_mtu() {
            assert!((68..=65_536).contains(&m), "{m}");
        }
    }
}
