//! Hand-built spoofed SYNs through a raw socket, for kernel tests that need a SYN flood: bounded in packets and
//! paced over a given time.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The spoofed range: 198.18.0.0/15 (RFC 2544 benchmarking).
pub const SPOOFED_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
pub const SPOOFED_MASK: u32 = 0xfffe_0000;
/// No flood sent through here is ever larger, whatever the caller asks.
pub const MAX_PACKETS: usize = 5_000;

pub fn spoofed(a: Ipv4Addr) -> bool {
    u32::from(a) & SPOOFED_MASK == SPOOFED_BASE
}

/// `n` distinct spoofed sources spread over both /16s of the range.
pub fn sources(n: u32) -> Vec<Ipv4Addr> {
    (0..n).map(|i| Ipv4Addr::from(SPOOFED_BASE + (i * 131 + 7) % 131_072)).collect()
}

/// The Internet checksum: the ones' complement of the ones' complement sum of 16-bit words.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for w in &mut chunks {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A bare SYN (20-byte IPv4 header, 20-byte TCP header, no options) with both checksums.
pub fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32, id: u16) -> [u8; 40] {
    let mut p = [0u8; 40];
    let (ip, tcp) = p.split_at_mut(20);
    ip[0] = 0x45; // version 4, 5 words
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[8] = 64; // TTL
    ip[9] = libc::IPPROTO_TCP as u8;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&[ip]);
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = libc::IPPROTO_TCP as u8;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let tcp_sum = checksum(&[&pseudo, tcp]);
    tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// Sends one SYN per entry of `plan` (spoofed sources only, at most [`MAX_PACKETS`]) to `dst:dport` through a
/// raw socket (IPPROTO_RAW: the header is ours), paced evenly over `over`. Returns the packets sent. Run it
/// on a thread inside the sending namespace.
pub fn flood(plan: &[Ipv4Addr], dst: Ipv4Addr, dport: u16, over: Duration) -> std::io::Result<usize> {
    assert!(plan.len() <= MAX_PACKETS, "a bounded flood: {} packets asked", plan.len());
    assert!(plan.iter().all(|a| spoofed(*a)), "only sources from 198.18.0.0/15");
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(dst).to_be() },
        sin_zero: [0; 8],
    };
    let start = Instant::now();
    let step = over / plan.len().max(1) as u32;
    // A fixed LCG: distinct source ports and sequence numbers, the same on every run.
    let mut x: u32 = 0x2545_f491;
    for (k, src) in plan.iter().enumerate() {
        let due = start + step * k as u32;
        let now = Instant::now();
        if due > now + Duration::from_millis(2) {
            std::thread::sleep(due - now);
        }
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let sport = 1024 + (x >> 16) as u16 % 60_000;
        let pkt = syn(*src, sport, dst, dport, x, k as u16);
        let r = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r != pkt.len() as isize {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(plan.len())
}
