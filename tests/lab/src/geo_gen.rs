//! A synthetic combined RIR statistics file for the geo benchmark and tests: the five registries'
//! `delegated-<rir>-extended-latest` files one after the other, each with its version and summary lines.
//! Shaped like the real ones: ~240 countries with a few holding most records, ~60% ipv4 records (256 to 65536
//! addresses, some counts not powers of two), ~25% ipv6 (/29 to /48), the rest asn; mostly allocated or
//! assigned, some available or reserved; ranges never overlap and runs of one country are often adjacent, so
//! merging matters. Deterministic: the same lines and seed give the same file. Nothing is sent anywhere; the
//! addresses are only parsed and loaded into sets.

use std::fmt::Write;

// The lab's one deterministic generator.
use crate::gen::Rng;

/// The registries and their share of the records (roughly today's).
const REGISTRIES: [(&str, u32, &str); 5] = [
    ("afrinic", 6, "+0000"),
    ("apnic", 22, "+1000"),
    ("arin", 24, "-0500"),
    ("lacnic", 12, "-0300"),
    ("ripencc", 36, "+0100"),
];

/// Real codes first (the ones that hold the most space), then made-up two-letter codes up to ~240.
const BIG_COUNTRIES: [&str; 24] = [
    "US", "CN", "JP", "DE", "GB", "KR", "BR", "FR", "CA", "IT", "AU", "NL", "RU", "IN", "ES", "SE", "TW", "MX", "PL",
    "ZA", "ID", "AR", "VN", "CH",
];

pub fn countries() -> Vec<String> {
    let mut out: Vec<String> = BIG_COUNTRIES.iter().map(|s| s.to_string()).collect();
    let mut i = 0u32;
    while out.len() < 240 {
        let code = format!("{}{}", char::from(b'A' + (i / 26 % 26) as u8), char::from(b'A' + (i % 26) as u8));
        if !out.contains(&code) && code != "ZZ" {
            out.push(code);
        }
        i += 7; // spread over the alphabet
    }
    out
}

/// Skewed choice: the first countries get most records (u^3 puts ~46% of picks in the first 10%).
fn pick_country(r: &mut Rng, n: usize) -> usize {
    let u = r.unit();
    ((u * u * u) * n as f64) as usize % n
}

const V4_COUNTS: [u64; 20] = [
    256, 256, 256, 256, 512, 512, 1024, 1024, 2048, 4096, 4096, 8192, 16384, 32768, 65536, 768, 1280, 3072, 5120, 24576,
];

/// A combined file of about `lines` lines (at least a few records per registry).
pub fn rir_file(lines: usize, seed: u64) -> String {
    let mut r = Rng::new(seed);
    let countries = countries();
    let records_total = lines.saturating_sub(REGISTRIES.len() * 4).max(REGISTRIES.len() * 4);
    let shares: u32 = REGISTRIES.iter().map(|r| r.1).sum();
    let mut out = String::with_capacity(lines * 64);
    // One cursor per family through the whole file, so no two records overlap; IPv4 from 1.0.0.0,
    // IPv6 from 2001:200::.
    let mut next4: u64 = 1 << 24;
    let mut next6: u128 = 0x2001_0200u128 << 96;
    let mut opaque = 0x1000u32;
    for (rir, share, offset) in REGISTRIES {
        let n = (records_total * share as usize / shares as usize).max(4);
        let mut asn = Vec::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut last_country = 0usize;
        let mut asn_next = 1000 + r.below(1000);
        for _ in 0..n {
            // Runs: the next record is often the same holder's country again, and then often adjacent.
            let country = if r.below(5) < 3 { last_country } else { pick_country(&mut r, countries.len()) };
            last_country = country;
            let status = match r.below(40) {
                0 => "available",
                1 => "reserved",
                2..=17 => "assigned",
                _ => "allocated",
            };
            let cc = if status == "available" || status == "reserved" { "" } else { countries[country].as_str() };
            let date = format!("{}{:02}{:02}", 1985 + r.below(41), 1 + r.below(12), 1 + r.below(28));
            let id = format!("A9{opaque:06X}");
            if r.below(2) == 0 {
                opaque += 1;
            }
            let kind = r.below(100);
            if kind < 60 && next4 < (224 << 24) - 65536 {
                let count = V4_COUNTS[r.below(V4_COUNTS.len() as u64) as usize];
                // Gaps now and then: the space between two holders.
                if r.below(5) == 0 {
                    next4 += 256 * (1 + r.below(64));
                }
                let start = std::net::Ipv4Addr::from(next4 as u32);
                next4 += count;
                v4.push(format!("{rir}|{cc}|ipv4|{start}|{count}|{date}|{status}|{id}"));
            } else if kind < 85 {
                let len = 29 + r.below(20) as u32; // /29 ../48
                let size = 1u128 << (128 - len);
                if r.below(3) == 0 {
                    next6 += 1u128 << (128 - 32); // a gap of one /32
                }
                next6 = next6.div_ceil(size) * size; // aligned to its own prefix length
                let start = std::net::Ipv6Addr::from(next6);
                next6 += size;
                v6.push(format!("{rir}|{cc}|ipv6|{start}|{len}|{date}|{status}|{id}"));
            } else {
                asn_next += 1 + r.below(4);
                asn.push(format!("{rir}|{cc}|asn|{asn_next}|1|{date}|{status}|{id}"));
            }
        }
        let records = asn.len() + v4.len() + v6.len();
        let _ = writeln!(out, "2.3|{rir}|20261120|{records}|19830613|20261119|{offset}");
        let _ = writeln!(out, "{rir}|*|asn|*|{}|summary", asn.len());
        let _ = writeln!(out, "{rir}|*|ipv4|*|{}|summary", v4.len());
        let _ = writeln!(out, "{rir}|*|ipv6|*|{}|summary", v6.len());
        for line in asn.iter().chain(&v4).chain(&v6) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
