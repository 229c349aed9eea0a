//! Address parsing and normalisation: IPv4-mapped IPv6 becomes IPv4, CIDR prefixes parse and range-check.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Parses an address as logs print it (`198.51.100.7`, `2001:db8::1`, `::ffff:198.51.100.7`, `[2001:db8::1]`,
/// `2001:db8::1%eth0`) and normalises IPv4-mapped IPv6 to IPv4, so one host has one identity.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let t = text.trim_start_matches('[').trim_end_matches(']');
    let t = t.split('%').next().unwrap_or(t);
    let ip = t.parse::<IpAddr>().ok()?;
    Some(normalise(ip))
}

pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// An address prefix (a single address is a /32 or /128). The stored address has its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("`{0}` is not an IP address or CIDR prefix")]
    Syntax(String),
    #[error("prefix length /{len} is out of range for `{text}` (at most /{max})")]
    Length { text: String, len: u32, max: u8 },
}

impl Cidr {
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let addr = normalise(addr);
        let max = max_len(addr);
        // A mapped address given with an IPv6 length keeps its meaning in IPv4 terms.
        if len > max {
            return None;
        }
        Some(Cidr { addr: mask(addr, len), len })
    }

    pub fn host(addr: IpAddr) -> Cidr {
        let addr = normalise(addr);
        Cidr { addr, len: max_len(addr) }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_host(&self) -> bool {
        self.len == max_len(self.addr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = normalise(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }

    /// Whether every address of `other` is in this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }

    /// Whether the two prefixes share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// Why no packet filter should ever drop or limit this prefix's sources, if it holds or lies inside an
    /// address that is never a remote client: loopback, unspecified, multicast, broadcast. A ban on one cuts the
    /// host's own connections (webmail to IMAP, Postfix to its content filter) or means nothing at all.
    pub fn special(&self) -> Option<&'static str> {
        const SPECIAL: &[(&str, &str)] = &[
            ("127.0.0.0/8", "loopback"),
            ("::1/128", "loopback"),
            ("0.0.0.0/8", "the unspecified address (this network)"),
            ("::/128", "the unspecified address"),
            ("224.0.0.0/4", "multicast"),
            ("ff00::/8", "multicast"),
            ("255.255.255.255/32", "the broadcast address"),
        ];
        SPECIAL.iter().find_map(|(net, what)| {
            let net: Cidr = net.parse().expect("a valid built-in prefix");
            self.overlaps(&net).then_some(*what)
        })
    }

    /// First and last address, as big-endian bytes (4 or 16), for range queries.
    pub fn range_bytes(&self) -> (Vec<u8>, Vec<u8>) {
        match self.addr {
            IpAddr::V4(a) => {
                let lo = u32::from(a);
                let hi = lo | host_mask32(self.len);
                (lo.to_be_bytes().to_vec(), hi.to_be_bytes().to_vec())
            }
            IpAddr::V6(a) => {
                let lo = u128::from(a);
                let hi = lo | host_mask128(self.len);
                (lo.to_be_bytes().to_vec(), hi.to_be_bytes().to_vec())
            }
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let (a, l) = match t.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (t, None),
        };
        let raw: IpAddr = a.parse().map_err(|_| CidrError::Syntax(text.to_string()))?;
        let ip = normalise(raw);
        let Some(l) = l else { return Ok(Cidr::host(ip)) };
        let len: u32 = l.parse().map_err(|_| CidrError::Syntax(text.to_string()))?;
        // `::ffff:198.51.100.0/120` means 198.51.100.0/24.
        let len = if raw.is_ipv6() && ip.is_ipv4() { len.checked_sub(96).unwrap_or(u32::MAX) } else { len };
        let max = max_len(ip);
        if len > u32::from(max) {
            return Err(CidrError::Length { text: text.to_string(), len, max });
        }
        Ok(Cidr { addr: mask(ip, len as u8), len: len as u8 })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// The address as big-endian bytes: 4 for IPv4, 16 for IPv6 (the store's representation).
pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn max_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn host_mask32(len: u8) -> u32 {
    if len >= 32 {
        0
    } else {
        u32::MAX >> len
    }
}

fn host_mask128(len: u8) -> u128 {
    if len >= 128 {
        0
    } else {
        u128::MAX >> len
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & !host_mask32(len))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !host_mask128(len))),
    }
}

/// An address as an unsigned integer of its family's width. Implemented for `u32` (IPv4) and `u128` (IPv6).
pub trait RangeInt: Copy + Ord + std::fmt::Debug {
    /// Bits in the family's addresses: 32 or 128.
    const BITS: u32;
    const MAX: Self;
    fn checked_add_one(self) -> Option<Self>;
    /// `self + 2^bits`, `None` past the end of the address space.
    fn checked_add_pow2(self, bits: u32) -> Option<Self>;
    fn wrapping_sub(self, other: Self) -> Self;
    fn trailing_zeros(self) -> u32;
    fn leading_zeros(self) -> u32;
    fn to_ip(self) -> IpAddr;
}

impl RangeInt for u32 {
    const BITS: u32 = 32;
    const MAX: u32 = u32::MAX;
    fn checked_add_one(self) -> Option<u32> {
        self.checked_add(1)
    }
    fn checked_add_pow2(self, bits: u32) -> Option<u32> {
        self.checked_add(1u32.checked_shl(bits)?)
    }
    fn wrapping_sub(self, other: u32) -> u32 {
        u32::wrapping_sub(self, other)
    }
    fn trailing_zeros(self) -> u32 {
        u32::trailing_zeros(self)
    }
    fn leading_zeros(self) -> u32 {
        u32::leading_zeros(self)
    }
    fn to_ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
}

impl RangeInt for u128 {
    const BITS: u32 = 128;
    const MAX: u128 = u128::MAX;
    fn checked_add_one(self) -> Option<u128> {
        self.checked_add(1)
    }
    fn checked_add_pow2(self, bits: u32) -> Option<u128> {
        self.checked_add(1u128.checked_shl(bits)?)
    }
    fn wrapping_sub(self, other: u128) -> u128 {
        u128::wrapping_sub(self, other)
    }
    fn trailing_zeros(self) -> u32 {
        u128::trailing_zeros(self)
    }
    fn leading_zeros(self) -> u32 {
        u128::leading_zeros(self)
    }
    fn to_ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }
}

/// The fewest prefixes that cover exactly `lo..=hi` (empty when `lo > hi`), in address order.
pub fn range_to_cidrs<T: RangeInt>(lo: T, hi: T) -> Vec<Cidr> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    let mut start = lo;
    loop {
        // The largest block aligned at `start` (its trailing zero bits) that does not run past `hi`.
        let span = hi.wrapping_sub(start); // addresses left, minus one: no overflow for the whole space
        let fits = match span.checked_add_one() {
            Some(count) => T::BITS - 1 - count.leading_zeros(),
            None => T::BITS,
        };
        let bits = start.trailing_zeros().min(fits);
        let len = (T::BITS - bits) as u8;
        out.push(Cidr::new(start.to_ip(), len).expect("a prefix length within the family's width"));
        match start.checked_add_pow2(bits) {
            Some(next) if next <= hi => start = next,
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_means_every_address_of_the_other() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(c("198.51.100.0/24").covers(&c("198.51.100.128/25")));
        assert!(c("198.51.100.0/24").covers(&c("198.51.100.0/24")));
        assert!(!c("198.51.100.128/25").covers(&c("198.51.100.0/24")), "wider, not covered");
        assert!(!c("198.51.100.0/24").covers(&c("203.0.113.7")));
        assert!(!c("2001:db8::/32").covers(&c("198.51.100.7")));
    }

    #[test]
    fn special_addresses_and_prefixes_around_them_are_named() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        for (t, what) in [
            ("127.0.0.1", "loopback"),
            ("127.5.6.7", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("0.0.0.0", "the unspecified address (this network)"),
            ("::", "the unspecified address"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "the broadcast address"),
            ("0.0.0.0/1", "loopback"),
            ("0.0.0.0/7", "the unspecified address (this network)"),
            ("96.0.0.0/3", "loopback"),
        ] {
            assert_eq!(c(t).special(), Some(what), "{t}");
        }
        for t in ["198.51.100.7", "203.0.113.0/24", "2001:db8::1", "2001:db8::/32", "128.0.0.0/2"] {
            assert_eq!(c(t).special(), None, "{t}");
        }
    }

    #[test]
    fn mapped_ipv6_becomes_ipv4() {
        assert_eq!(parse_ip("::ffff:198.51.100.7"), Some("198.51.100.7".parse().unwrap()));
        assert_eq!(parse_ip("[::ffff:198.51.100.7]"), Some("198.51.100.7".parse().unwrap()));
        assert_eq!(parse_ip("2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse_ip("fe80::1%eth0"), Some("fe80::1".parse().unwrap()));
        assert_eq!(parse_ip("unknown"), None);
        assert_eq!(parse_ip("198.51.100.256"), None);
    }

    #[test]
    fn cidr_parses_masks_and_contains() {
        let c: Cidr = "198.51.100.77/24".parse().unwrap();
        assert_eq!(c.to_string(), "198.51.100.0/24");
        assert!(c.contains("198.51.100.1".parse().unwrap()));
        assert!(c.contains("::ffff:198.51.100.1".parse().unwrap()));
        assert!(!c.contains("198.51.101.1".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        let m: Cidr = "::ffff:198.51.100.0/120".parse().unwrap();
        assert_eq!(m, c);
        let v6: Cidr = "2001:db8:1:2::5/64".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8:1:2::/64");
        assert_eq!("198.51.100.7".parse::<Cidr>().unwrap().to_string(), "198.51.100.7");
        assert!(matches!("198.51.100.0/33".parse::<Cidr>(), Err(CidrError::Length { .. })));
        assert!(matches!("bogus/8".parse::<Cidr>(), Err(CidrError::Syntax(_))));
    }

    #[test]
    fn range_bytes_cover_the_prefix() {
        let c: Cidr = "198.51.100.0/24".parse().unwrap();
        assert_eq!(c.range_bytes(), (vec![198, 51, 100, 0], vec![198, 51, 100, 255]));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.range_bytes().1, vec![255; 4]);
    }
}
