//! Reading country range files: the RIRs' delegated statistics (`delegated-<rir>-extended-latest`) and
//! ipdeny-style CIDR lists (one country per file).
//!
//! A file is accepted whole or refused whole. A country set built from a truncated or corrupt file could lock
//! a whole country out of a service, so any doubt (a record count that does not add up, a missing final
//! newline, one malformed record) refuses the file and the caller keeps its last good copy.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::ranges::{self, cidr_range4, cidr_range6};
use super::{Country, GeoError};
use crate::addr::Cidr;

/// The address ranges of one file, per country: sorted and merged (see [`ranges::merge`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub v4: BTreeMap<Country, Vec<(u32, u32)>>,
    pub v6: BTreeMap<Country, Vec<(u128, u128)>>,
    /// Address records (or list entries) that went into the ranges.
    pub records: usize,
    /// Lines passed over on purpose: comments, blank lines, summary lines, asn records, address records that
    /// are available or reserved or have no country. Version lines are counted in neither.
    pub skipped: usize,
}

impl Parsed {
    fn merge_all(&mut self) {
        self.v4.values_mut().for_each(ranges::merge);
        self.v6.values_mut().for_each(ranges::merge);
    }
}

/// The fields of a record line, in order; named in errors.
const RECORD_FIELDS: [&str; 7] = ["registry", "cc", "type", "start", "value", "date", "status"];
/// The fields of the version line, in order, up to the record count (the ones read).
const VERSION_FIELDS: [&str; 4] = ["version", "registry", "serial", "records"];

/// One file's worth of records: the record count its version line announces, and the records that followed.
/// Several sections are accepted, so that the five registries' files concatenated still parse and check.
struct Section {
    line: usize,
    announced: u64,
    found: u64,
}

impl Section {
    fn check(&self, origin: &str) -> Result<(), GeoError> {
        if self.announced == self.found {
            return Ok(());
        }
        Err(GeoError::Truncated {
            origin: origin.to_string(),
            reason: format!(
                "the version line (line {}) announces {} records but {} follow",
                self.line, self.announced, self.found
            ),
        })
    }
}

/// One address record's range, before its status and country decide whether it is kept.
enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

/// Parses RIR delegated statistics (plain or extended): `registry|cc|type|start|value|date|status[|...]`.
/// Only `ipv4` and `ipv6` records that are `allocated` or `assigned` to a country make ranges.
pub fn parse_rir(text: &str, origin: &str) -> Result<Parsed, GeoError> {
    let body = complete_lines(text, origin)?;
    let mut out = Parsed::default();
    let mut section: Option<Section> = None;
    let mut fields: Vec<&str> = Vec::with_capacity(10);
    for (index, raw) in body.split('\n').enumerate() {
        let line = index + 1;
        let text = raw.strip_suffix('\r').unwrap_or(raw);
        if text.is_empty() || text.starts_with('#') {
            out.skipped += 1;
            continue;
        }
        fields.clear();
        fields.extend(text.split('|'));
        let err =
            |field: &'static str, reason: String| GeoError::Parse { origin: origin.to_string(), line, field, reason };
        // Only the version line starts with a number; a record starts with the registry's name.
        if text.as_bytes()[0].is_ascii_digit() {
            if let Some(done) = section.take() {
                done.check(origin)?;
            }
            if let Some(missing) = VERSION_FIELDS.get(fields.len()) {
                return Err(err(missing, format!("the version line has {} fields, at least 4 expected", fields.len())));
            }
            let announced = fields[3].parse().map_err(|_| err("records", format!("`{}` is not a count", fields[3])))?;
            section = Some(Section { line, announced, found: 0 });
            continue;
        }
        let Some(current) = section.as_mut() else {
            return Err(err(
                "version",
                "the first line that is not a comment must be the version line \
                 (`2.3|apnic|serial|records|startdate|enddate|UTCoffset`); is this an RIR statistics file?"
                    .to_string(),
            ));
        };
        // `registry|*|type|*|count|summary`: a total per type, not a record.
        if fields.get(5) == Some(&"summary") {
            out.skipped += 1;
            continue;
        }
        current.found += 1;
        if let Some(missing) = RECORD_FIELDS.get(fields.len()) {
            return Err(err(missing, format!("a record has at least 7 fields, this line has {}", fields.len())));
        }
        let (cc, kind, start, value, status) = (fields[1], fields[2], fields[3], fields[4], fields[6]);
        // The address fields are checked whatever the status: a malformed one means a damaged file.
        let range = match kind {
            "asn" => {
                out.skipped += 1;
                continue;
            }
            "ipv4" => {
                let lo = u32::from(
                    start.parse::<Ipv4Addr>().map_err(|_| err("start", format!("`{start}` is not an IPv4 address")))?,
                );
                let count: u64 =
                    value.parse().map_err(|_| err("value", format!("`{value}` is not an address count")))?;
                if count == 0 {
                    return Err(err("value", "an address count of 0".to_string()));
                }
                let hi = u64::from(lo) + (count - 1);
                let hi = u32::try_from(hi).map_err(|_| {
                    err("value", format!("{count} addresses from {start} run past the end of the IPv4 space"))
                })?;
                Range::V4(lo, hi)
            }
            "ipv6" => {
                let lo = u128::from(
                    start.parse::<Ipv6Addr>().map_err(|_| err("start", format!("`{start}` is not an IPv6 address")))?,
                );
                let len: u32 = value.parse().map_err(|_| err("value", format!("`{value}` is not a prefix length")))?;
                if len > 128 {
                    return Err(err("value", format!("prefix length /{len} is over /128")));
                }
                let host = u128::MAX.checked_shr(len).unwrap_or(0);
                if lo & host != 0 {
                    return Err(err("start", format!("{start} has bits set past its prefix length /{len}")));
                }
                Range::V6(lo, lo | host)
            }
            other => return Err(err("type", format!("`{other}` is not asn, ipv4 or ipv6"))),
        };
        match status {
            "allocated" | "assigned" => {}
            "available" | "reserved" => {
                out.skipped += 1;
                continue;
            }
            other => return Err(err("status", format!("`{other}` is not allocated, assigned, available or reserved"))),
        }
        // Registries leave the country empty (or `*`) on space that is not delegated to anyone.
        if cc.is_empty() || cc == "*" {
            out.skipped += 1;
            continue;
        }
        let country = Country::from_bytes(cc.as_bytes())
            .ok_or_else(|| err("cc", format!("`{cc}` is not a two-letter country code")))?;
        match range {
            Range::V4(lo, hi) => out.v4.entry(country).or_default().push((lo, hi)),
            Range::V6(lo, hi) => out.v6.entry(country).or_default().push((lo, hi)),
        }
        out.records += 1;
    }
    match section {
        Some(last) => last.check(origin)?,
        None => {
            return Err(GeoError::Truncated {
                origin: origin.to_string(),
                reason: "no version line (`2.3|registry|serial|records|...`); is this an RIR statistics file?"
                    .to_string(),
            })
        }
    }
    if out.records == 0 {
        return Err(GeoError::Empty { origin: origin.to_string() });
    }
    out.merge_all();
    Ok(out)
}

/// Parses a list of prefixes or addresses, one per line, all of `country` (an ipdeny-style zone file). `#`
/// starts a comment; IPv4 and IPv6 may be mixed.
pub fn parse_cidr_list(text: &str, origin: &str, country: Country) -> Result<Parsed, GeoError> {
    let body = complete_lines(text, origin)?;
    let mut out = Parsed::default();
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (index, raw) in body.split('\n').enumerate() {
        let entry = raw.split('#').next().unwrap_or(raw).trim();
        if entry.is_empty() {
            out.skipped += 1;
            continue;
        }
        let cidr: Cidr = entry.parse().map_err(|e: crate::addr::CidrError| GeoError::Parse {
            origin: origin.to_string(),
            line: index + 1,
            field: "prefix",
            reason: e.to_string(),
        })?;
        match (cidr_range4(&cidr), cidr_range6(&cidr)) {
            (Some(r), _) => v4.push(r),
            (_, Some(r)) => v6.push(r),
            (None, None) => {}
        }
        out.records += 1;
    }
    if out.records == 0 {
        return Err(GeoError::Empty { origin: origin.to_string() });
    }
    if !v4.is_empty() {
        out.v4.insert(country, v4);
    }
    if !v6.is_empty() {
        out.v6.insert(country, v6);
    }
    out.merge_all();
    Ok(out)
}

/// The text without its final newline, which must be there: a download cut off mid-file almost always ends
/// mid-line, and a file without its last newline is not trusted.
fn complete_lines<'t>(text: &'t str, origin: &str) -> Result<&'t str, GeoError> {
    if text.is_empty() {
        return Err(GeoError::Empty { origin: origin.to_string() });
    }
    text.strip_suffix('\n').ok_or_else(|| GeoError::Truncated {
        origin: origin.to_string(),
        reason: "the last line has no newline (the file was cut off)".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(s: &str) -> Country {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    fn v6(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    /// A small delegated-extended file: 6 records announced, the 6 non-summary lines after the version line.
    const RIR: &str = "\
# comment before the version line
2.3|apnic|20261120|6|19830613|20261119|+1000
apnic|*|asn|*|1|summary
apnic|*|ipv4|*|4|summary
apnic|*|ipv6|*|1|summary
apnic|JP|ipv4|198.51.100.0|256|20100101|allocated|A91A7381
apnic|jp|ipv4|198.18.0.0|768|20100101|assigned|A91A7381
apnic|JP|asn|64500|1|20100101|allocated|A91A7381
# comment between records
apnic|ZZ|ipv4|203.0.113.0|256||available
apnic||ipv4|198.18.4.0|256||reserved
apnic|AU|ipv6|2001:db8::|32|20110101|allocated|A9116F50
";

    #[test]
    fn rir_records_become_merged_ranges() {
        let p = parse_rir(RIR, "delegated-apnic-extended-latest").unwrap();
        assert_eq!(p.records, 3);
        assert_eq!(p.skipped, 2 + 3 + 1 + 2, "comments, summaries, asn, available/reserved");
        assert_eq!(
            p.v4.get(&cc("JP")),
            Some(&vec![(v4("198.18.0.0"), v4("198.18.2.255")), (v4("198.51.100.0"), v4("198.51.100.255"))])
        );
        let jp = &p.v4[&cc("JP")];
        let cidrs: Vec<String> = ranges::to_cidrs(jp).iter().map(|c| c.to_string()).collect();
        assert_eq!(cidrs, ["198.18.0.0/23", "198.18.2.0/24", "198.51.100.0/24"]);
        assert_eq!(p.v6.get(&cc("AU")), Some(&vec![(v6("2001:db8::"), v6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"))]));
        assert!(!p.v4.contains_key(&cc("ZZ")), "available space is no country's");
        assert_eq!(p.v4.len() + p.v6.len(), 2);
    }

    #[test]
    fn plain_delegated_files_and_crlf_parse_too() {
        let text = "2|arin|1700000000|2|19700101|20261119|-0500\r\n\
                    arin|*|ipv4|*|2|summary\r\n\
                    arin|US|ipv4|198.51.100.0|128|20000101|assigned\r\n\
                    arin|US|ipv4|198.51.100.128|128|20000101|allocated\r\n";
        let p = parse_rir(text, "delegated-arin-latest").unwrap();
        assert_eq!(p.v4[&cc("US")], vec![(v4("198.51.100.0"), v4("198.51.100.255"))], "adjacent /25s merge");
    }

    #[test]
    fn concatenated_files_are_checked_per_section() {
        let two = format!(
            "{RIR}2|ripencc|1700000000|1|19830705|20261119|+0100\nripencc|NL|ipv4|203.0.113.0|256|20000101|allocated\n"
        );
        let p = parse_rir(&two, "all").unwrap();
        assert_eq!(p.records, 4);
        assert!(p.v4.contains_key(&cc("NL")));
        // The first section cut short: its count no longer adds up, though the second one does.
        let cut = RIR.replace("apnic|AU|ipv6|2001:db8::|32|20110101|allocated|A9116F50\n", "");
        let spliced = format!(
            "{cut}2|ripencc|1700000000|1|19830705|20261119|+0100\nripencc|NL|ipv4|203.0.113.0|256|20000101|allocated\n"
        );
        let e = parse_rir(&spliced, "all").unwrap_err();
        assert!(e.to_string().contains("line 2) announces 6 records but 5 follow"), "{e}");
    }

    #[test]
    fn truncated_files_are_refused() {
        // A whole line missing at the end: the count is short.
        let short = RIR.replace("apnic|AU|ipv6|2001:db8::|32|20110101|allocated|A9116F50\n", "");
        let e = parse_rir(&short, "delegated-apnic-extended-latest").unwrap_err();
        assert!(matches!(e, GeoError::Truncated { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "delegated-apnic-extended-latest: truncated: the version line (line 2) announces 6 records but 5 follow; \
             the file is refused (the last good copy is kept)"
        );
        // Cut mid-line: no final newline.
        let cut = &RIR[..RIR.len() - 10];
        assert!(matches!(parse_rir(cut, "x").unwrap_err(), GeoError::Truncated { .. }));
        // Cut right after a newline, by whole lines: still caught by the count.
        let lines: Vec<&str> = RIR.lines().collect();
        let head = lines[..8].join("\n") + "\n";
        assert!(matches!(parse_rir(&head, "x").unwrap_err(), GeoError::Truncated { .. }));
        // More records than announced is as wrong as fewer.
        let extra = format!("{RIR}apnic|JP|ipv4|203.0.113.0|256|20100101|allocated|A91A7381\n");
        assert!(matches!(parse_rir(&extra, "x").unwrap_err(), GeoError::Truncated { .. }));
    }

    #[test]
    fn files_without_a_version_line_or_records_are_refused() {
        let e = parse_rir("apnic|JP|ipv4|198.51.100.0|256|20100101|allocated\n", "x").unwrap_err();
        assert!(matches!(e, GeoError::Parse { line: 1, field: "version", .. }), "{e}");
        let e = parse_rir("<html><body>Service unavailable</body></html>\n", "x").unwrap_err();
        assert!(matches!(e, GeoError::Parse { field: "version", .. }), "{e}");
        assert!(matches!(parse_rir("# only a comment\n", "x").unwrap_err(), GeoError::Truncated { .. }));
        assert!(matches!(parse_rir("", "x").unwrap_err(), GeoError::Empty { .. }));
        let nothing = "2.3|apnic|1|2|1|1|+1000\napnic|JP|asn|64500|1|20100101|allocated\napnic|ZZ|ipv4|198.51.100.0|256||available\n";
        assert!(matches!(parse_rir(nothing, "x").unwrap_err(), GeoError::Empty { .. }));
    }

    #[test]
    fn corrupt_records_name_line_and_field() {
        let bad = |from: &str, to: &str| parse_rir(&RIR.replacen(from, to, 1), "delegated-apnic-extended-latest");
        let field_at = |r: Result<Parsed, GeoError>| match r {
            Err(GeoError::Parse { line, field, .. }) => (line, field),
            other => panic!("expected a parse error, got {other:?}"),
        };
        assert_eq!(field_at(bad("198.51.100.0|256", "198.51.100.999|256")), (6, "start"));
        assert_eq!(field_at(bad("198.51.100.0|256", "198.51.100.0|25x")), (6, "value"));
        assert_eq!(field_at(bad("198.51.100.0|256", "198.51.100.0|0")), (6, "value"));
        assert_eq!(field_at(bad("198.51.100.0|256", "255.255.255.0|257")), (6, "value"));
        assert_eq!(field_at(bad("2001:db8::|32", "2001:db8::|129")), (12, "value"));
        assert_eq!(field_at(bad("2001:db8::|32", "2001:db8::1|32")), (12, "start"));
        assert_eq!(field_at(bad("2001:db8::|32", "2001:zz8::|32")), (12, "start"));
        assert_eq!(field_at(bad("|20110101|allocated|A9116F50", "")), (12, "date"));
        assert_eq!(field_at(bad("apnic|JP|ipv4|198.51.100.0", "apnic|J1|ipv4|198.51.100.0")), (6, "cc"));
        assert_eq!(field_at(bad("apnic|JP|ipv4|198.51.100.0", "apnic|JP|ipv5|198.51.100.0")), (6, "type"));
        assert_eq!(field_at(bad("20100101|assigned", "20100101|borrowed")), (7, "status"));
        assert_eq!(field_at(bad("|20261120|6|", "|20261120|six|")), (2, "records"));
        let e = bad("198.51.100.0|256", "198.51.100.0|25x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "delegated-apnic-extended-latest:6: field `value`: `25x` is not an address count; \
             the file is refused whole (the last good copy is kept)"
        );
    }

    #[test]
    fn cidr_lists_parse_mixed_families() {
        let text = "# jp.zone\n198.51.100.0/25\n198.51.100.128/25\n\n203.0.113.7 # one host\n2001:db8::/48\n::ffff:198.18.0.0/112\n";
        let p = parse_cidr_list(text, "jp.zone", cc("JP")).unwrap();
        assert_eq!(p.records, 5);
        assert_eq!(p.skipped, 2);
        assert_eq!(
            p.v4[&cc("JP")],
            vec![
                (v4("198.18.0.0"), v4("198.18.255.255")),
                (v4("198.51.100.0"), v4("198.51.100.255")),
                (v4("203.0.113.7"), v4("203.0.113.7")),
            ]
        );
        assert_eq!(p.v6[&cc("JP")], vec![(v6("2001:db8::"), v6("2001:db8:0:ffff:ffff:ffff:ffff:ffff"))]);
    }

    #[test]
    fn cidr_lists_refuse_bad_lines_empty_and_cut_files() {
        let e = parse_cidr_list("198.51.100.0/24\n198.51.100.0/33\n", "jp.zone", cc("JP")).unwrap_err();
        assert!(matches!(e, GeoError::Parse { line: 2, field: "prefix", .. }), "{e}");
        assert!(e.to_string().starts_with("jp.zone:2: field `prefix`: prefix length /33"), "{e}");
        let e = parse_cidr_list("198.51.100.0/24\nbogus\n", "jp.zone", cc("JP")).unwrap_err();
        assert!(matches!(e, GeoError::Parse { line: 2, .. }), "{e}");
        assert!(matches!(parse_cidr_list("# nothing\n\n", "x", cc("JP")).unwrap_err(), GeoError::Empty { .. }));
        assert!(matches!(parse_cidr_list("", "x", cc("JP")).unwrap_err(), GeoError::Empty { .. }));
        let e = parse_cidr_list("198.51.100.0/24\n203.0.1", "x", cc("JP")).unwrap_err();
        assert!(matches!(e, GeoError::Truncated { .. }), "{e}");
    }
}
