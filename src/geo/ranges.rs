//! Inclusive address ranges (`u32` for IPv4, `u128` for IPv6): merging, membership and the minimal CIDR
//! cover. Ranges rather than prefixes are the working form because the registries count IPv4 addresses
//! (a count need not be a power of two) and because nftables interval sets take ranges as they are.

use std::net::IpAddr;

use crate::addr::Cidr;
/// The address arithmetic lives with the address types; re-exported for the geo code that works in ranges.
pub use crate::addr::{range_to_cidrs, RangeInt};

/// Sorted merged IPv4 ranges, as a country set holds them.
pub type Ranges4 = Vec<(u32, u32)>;
/// Sorted merged IPv6 ranges, as a country set holds them.
pub type Ranges6 = Vec<(u128, u128)>;

/// Sorts the ranges and merges those that overlap or touch (`hi + 1 == next lo`), so that every address is
/// in at most one range and no two ranges could be one: the kernel sets stay as small as the data allows.
/// Ranges with `lo > hi` are dropped.
pub fn merge<T: RangeInt>(v: &mut Vec<(T, T)>) {
    v.retain(|&(lo, hi)| lo <= hi);
    v.sort_unstable();
    let mut out = 0;
    for i in 0..v.len() {
        let (lo, hi) = v[i];
        if out > 0 {
            let last = &mut v[out - 1];
            // A last range ending at the top of the address space absorbs everything after it.
            let touches = match last.1.checked_add_one() {
                Some(next) => lo <= next,
                None => true,
            };
            if touches {
                last.1 = last.1.max(hi);
                continue;
            }
        }
        v[out] = (lo, hi);
        out += 1;
    }
    v.truncate(out);
}

/// Whether `x` is in one of the ranges, which must be sorted and merged (as [`merge`] leaves them).
#[cfg(test)]
pub fn contains<T: Ord + Copy>(sorted_merged: &[(T, T)], x: T) -> bool {
    let after = sorted_merged.partition_point(|&(lo, _)| lo <= x);
    after > 0 && sorted_merged[after - 1].1 >= x
}

/// The minimal CIDR cover of sorted merged ranges, in address order: ipdeny-style output, display.
pub fn to_cidrs<T: RangeInt>(ranges: &[(T, T)]) -> Vec<Cidr> {
    ranges.iter().flat_map(|&(lo, hi)| range_to_cidrs(lo, hi)).collect()
}

/// The first and last address of a prefix as IPv4 integers, or `None` for an IPv6 prefix.
pub fn cidr_range4(c: &Cidr) -> Option<(u32, u32)> {
    match c.addr() {
        IpAddr::V4(a) => {
            let lo = u32::from(a);
            let host = u32::MAX.checked_shr(u32::from(c.prefix_len())).unwrap_or(0);
            Some((lo, lo | host))
        }
        IpAddr::V6(_) => None,
    }
}

/// The first and last address of a prefix as IPv6 integers, or `None` for an IPv4 prefix.
pub fn cidr_range6(c: &Cidr) -> Option<(u128, u128)> {
    match c.addr() {
        IpAddr::V6(a) => {
            let lo = u128::from(a);
            let host = u128::MAX.checked_shr(u32::from(c.prefix_len())).unwrap_or(0);
            Some((lo, lo | host))
        }
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    fn v6(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    fn strings(c: &[Cidr]) -> Vec<String> {
        c.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn merge_joins_overlapping_adjacent_and_nested() {
        let mut v = vec![
            (v4("203.0.113.0"), v4("203.0.113.255")),
            (v4("198.51.100.128"), v4("198.51.100.255")), // adjacent to the next one (after sorting)
            (v4("198.51.100.0"), v4("198.51.100.127")),
            (v4("198.18.0.0"), v4("198.18.0.200")),
            (v4("198.18.0.100"), v4("198.18.1.10")), // overlaps
            (v4("198.18.0.5"), v4("198.18.0.6")),    // nested
            (v4("198.18.1.12"), v4("198.18.1.20")),  // a gap of one address: stays apart
        ];
        merge(&mut v);
        assert_eq!(
            v,
            vec![
                (v4("198.18.0.0"), v4("198.18.1.10")),
                (v4("198.18.1.12"), v4("198.18.1.20")),
                (v4("198.51.100.0"), v4("198.51.100.255")),
                (v4("203.0.113.0"), v4("203.0.113.255")),
            ]
        );
        let mut dup = vec![(5u32, 9), (5, 9), (5, 7)];
        merge(&mut dup);
        assert_eq!(dup, vec![(5, 9)]);
        let mut inverted = vec![(9u32, 5), (1, 1)];
        merge(&mut inverted);
        assert_eq!(inverted, vec![(1, 1)]);
    }

    #[test]
    fn merge_at_the_top_of_the_address_space() {
        let mut v = vec![(u32::MAX, u32::MAX), (u32::MAX - 10, u32::MAX - 1), (0, 0), (1, 1)];
        merge(&mut v);
        assert_eq!(v, vec![(0, 1), (u32::MAX - 10, u32::MAX)]);
        let mut all = vec![(0u32, u32::MAX), (7, 9), (u32::MAX, u32::MAX)];
        merge(&mut all);
        assert_eq!(all, vec![(0, u32::MAX)]);
        let mut w = vec![(u128::MAX - 1, u128::MAX), (u128::MAX - 5, u128::MAX - 2), (0, u128::MAX / 2)];
        merge(&mut w);
        assert_eq!(w, vec![(0, u128::MAX / 2), (u128::MAX - 5, u128::MAX)]);
        let mut halves = vec![(u128::MAX / 2 + 1, u128::MAX), (0, u128::MAX / 2)];
        merge(&mut halves);
        assert_eq!(halves, vec![(0, u128::MAX)]);
    }

    #[test]
    fn contains_by_binary_search() {
        let mut v = vec![(v4("198.51.100.0"), v4("198.51.100.255")), (v4("203.0.113.16"), v4("203.0.113.31"))];
        merge(&mut v);
        assert!(contains(&v, v4("198.51.100.0")));
        assert!(contains(&v, v4("198.51.100.255")));
        assert!(contains(&v, v4("203.0.113.20")));
        assert!(!contains(&v, v4("203.0.113.15")));
        assert!(!contains(&v, v4("203.0.113.32")));
        assert!(!contains(&v, 0));
        assert!(!contains(&[] as &[(u32, u32)], 0));
        let w = vec![(v6("2001:db8::"), v6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"))];
        assert!(contains(&w, v6("2001:db8:1::1")));
        assert!(!contains(&w, v6("2001:db9::")));
    }

    #[test]
    fn cidrs_of_a_count_that_is_not_a_power_of_two() {
        // 768 addresses from 198.18.0.0, as a registry writes them: a /23 and a /24.
        let c = range_to_cidrs::<u32>(v4("198.18.0.0"), v4("198.18.0.0") + 767);
        assert_eq!(strings(&c), ["198.18.0.0/23", "198.18.2.0/24"]);
        let c = range_to_cidrs::<u32>(v4("198.51.100.1"), v4("198.51.100.254"));
        assert_eq!(c.len(), 14, "{:?}", strings(&c));
        assert_eq!(strings(&range_to_cidrs::<u32>(v4("203.0.113.7"), v4("203.0.113.7"))), ["203.0.113.7"]);
        assert!(range_to_cidrs::<u32>(2, 1).is_empty());
        assert_eq!(strings(&range_to_cidrs::<u32>(0, u32::MAX)), ["0.0.0.0/0"]);
        assert_eq!(strings(&range_to_cidrs::<u32>(u32::MAX, u32::MAX)), ["255.255.255.255"]);
        assert_eq!(strings(&range_to_cidrs::<u32>(1, u32::MAX)).len(), 32);
        let d = range_to_cidrs::<u128>(v6("2001:db8::"), v6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
        assert_eq!(strings(&d), ["2001:db8::/32"]);
        assert_eq!(strings(&range_to_cidrs::<u128>(0, u128::MAX)), ["::/0"]);
        assert_eq!(range_to_cidrs::<u128>(1, u128::MAX).len(), 128);
    }

    #[test]
    fn cidr_ranges() {
        let c: Cidr = "198.51.100.0/25".parse().unwrap();
        assert_eq!(cidr_range4(&c), Some((v4("198.51.100.0"), v4("198.51.100.127"))));
        assert_eq!(cidr_range6(&c), None);
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(cidr_range4(&all), Some((0, u32::MAX)));
        let d: Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!(cidr_range6(&d), Some((v6("2001:db8::"), v6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"))));
        let h: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(cidr_range6(&h), Some((v6("2001:db8::1"), v6("2001:db8::1"))));
    }

    /// Checks that the prefixes cover exactly `lo..=hi` without overlap, and that the cover is minimal: no
    /// two consecutive prefixes could be joined into one (the greedy cover is minimal exactly then).
    fn check_cover<T: RangeInt>(lo: T, hi: T, cidrs: &[Cidr], range: impl Fn(&Cidr) -> (T, T)) {
        let ranges: Vec<(T, T)> = cidrs.iter().map(&range).collect();
        assert_eq!(ranges.first().map(|r| r.0), Some(lo));
        assert_eq!(ranges.last().map(|r| r.1), Some(hi));
        for w in ranges.windows(2) {
            assert_eq!(w[0].1.checked_add_one(), Some(w[1].0), "gap or overlap between {w:?}");
        }
        for w in cidrs.windows(2) {
            let same_len = w[0].prefix_len() == w[1].prefix_len() && w[0].prefix_len() > 0;
            if same_len {
                // The parent of w[0] covers w[0] by construction: minimal means it does not also cover w[1].
                let parent = Cidr::new(w[0].addr(), w[0].prefix_len() - 1).unwrap();
                assert!(!parent.covers(&w[1]), "{} and {} could be one prefix", w[0], w[1]);
            }
        }
    }

    proptest! {
        #[test]
        fn cidrs4_cover_exactly_and_minimally(a: u32, b: u32) {
            let (lo, hi) = (a.min(b), a.max(b));
            let c = range_to_cidrs::<u32>(lo, hi);
            check_cover(lo, hi, &c, |c| cidr_range4(c).unwrap());
            prop_assert!(c.len() <= 62);
        }

        #[test]
        fn cidrs6_cover_exactly_and_minimally(a: u128, width in 0u32..=128, offset: u128) {
            // Mostly ranges of realistic width, sometimes anything.
            let span = offset.checked_shr(128 - width).unwrap_or(0);
            let lo = a;
            let hi = a.saturating_add(span);
            let c = range_to_cidrs::<u128>(lo, hi);
            check_cover(lo, hi, &c, |c| cidr_range6(c).unwrap());
            prop_assert!(c.len() <= 254);
        }

        #[test]
        fn merge_keeps_every_address_and_separates_ranges(raw in proptest::collection::vec((0u32..4096, 0u32..64), 0..40)) {
            let orig: Vec<(u32, u32)> = raw.iter().map(|&(lo, n)| (lo, lo + n)).collect();
            let mut merged = orig.clone();
            merge(&mut merged);
            for w in merged.windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0, "{:?} should have been merged", w);
            }
            for x in 0..4200u32 {
                let want = orig.iter().any(|&(lo, hi)| lo <= x && x <= hi);
                prop_assert_eq!(contains(&merged, x), want, "address {}", x);
            }
        }
    }
}
