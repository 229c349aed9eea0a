//! The country database: every country's address ranges, merged, built from the sources' last good copies.
//! Answers which country an address is registered to and which ranges a set of countries holds.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use super::fetch::Source;
use super::parse::Parsed;
use super::ranges::{self, RangeInt, Ranges4, Ranges6};
use super::{Country, GeoError};
use crate::addr::normalise;

#[derive(Clone, Default)]
pub struct GeoDb {
    /// Per country, sorted and merged; a country is present only with at least one range.
    v4: BTreeMap<Country, Vec<(u32, u32)>>,
    v6: BTreeMap<Country, Vec<(u128, u128)>>,
    /// All countries' ranges in one sorted list for lookups, built on the first lookup after a change.
    index: OnceLock<Index>,
}

/// Non-overlapping ranges with their country, sorted by start address.
#[derive(Clone, Default)]
struct Index {
    v4: Vec<(u32, u32, Country)>,
    v6: Vec<(u128, u128, Country)>,
}

impl GeoDb {
    pub fn new() -> GeoDb {
        GeoDb::default()
    }

    /// Adds a file's ranges: each country's ranges become the union of what it had and what the file holds.
    pub fn add(&mut self, p: Parsed) {
        union_into(&mut self.v4, p.v4);
        union_into(&mut self.v6, p.v6);
        self.index = OnceLock::new();
    }

    /// Builds the database from the last good copy of each source in `dir` (as [`super::fetch::update`]
    /// stores them). A source with no copy yet is a warning, not an error, so that a fresh install starts;
    /// a copy that cannot be read or parsed is an error (it was valid when stored, so something altered it).
    pub fn load_dir(dir: &Path, sources: &[Source]) -> Result<(GeoDb, Vec<String>), GeoError> {
        let mut db = GeoDb::new();
        let mut warnings = Vec::new();
        for source in sources {
            let path = dir.join(source.cache_name());
            let shown = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    warnings.push(format!(
                        "{shown}: no copy of {} yet (it is fetched on the next update); its countries have no ranges",
                        source.url
                    ));
                    continue;
                }
                Err(source) => return Err(GeoError::Io { path: shown, source }),
            };
            db.add(source.parse(&text, &shown)?);
        }
        Ok((db, warnings))
    }

    /// The country `ip` is registered to. IPv4-mapped IPv6 is looked up as IPv4. Where two countries' ranges
    /// overlap (which the registries' data does not do, but a CIDR list may), the range starting first wins.
    pub fn lookup(&self, ip: IpAddr) -> Option<Country> {
        let index = self.index.get_or_init(|| Index { v4: index_of(&self.v4), v6: index_of(&self.v6) });
        match normalise(ip) {
            IpAddr::V4(a) => find(&index.v4, u32::from(a)),
            IpAddr::V6(a) => find(&index.v6, u128::from(a)),
        }
    }

    /// The union of these countries' ranges, sorted and merged, per family: what a country set holds.
    /// A country with no ranges adds nothing.
    pub fn ranges(&self, countries: &[Country]) -> (Ranges4, Ranges6) {
        (union_of(&self.v4, countries), union_of(&self.v6, countries))
    }

    /// Every country with at least one range, in order.
    pub fn countries(&self) -> Vec<Country> {
        let mut all: Vec<Country> = self.v4.keys().chain(self.v6.keys()).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Merged ranges, IPv4 and IPv6, summed over the countries.
    pub fn len(&self) -> (usize, usize) {
        (self.v4.values().map(Vec::len).sum(), self.v6.values().map(Vec::len).sum())
    }
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (v4, v6) = self.len();
        f.debug_struct("GeoDb").field("countries", &self.countries().len()).field("v4", &v4).field("v6", &v6).finish()
    }
}

fn union_into<T: RangeInt>(into: &mut BTreeMap<Country, Vec<(T, T)>>, from: BTreeMap<Country, Vec<(T, T)>>) {
    for (country, mut add) in from {
        if add.is_empty() {
            continue;
        }
        let have = into.entry(country).or_default();
        if have.is_empty() {
            // Parsed ranges may come from anyone: merge rather than trust that they already are.
            ranges::merge(&mut add);
            *have = add;
        } else {
            have.append(&mut add);
            ranges::merge(have);
        }
    }
}

fn union_of<T: RangeInt>(map: &BTreeMap<Country, Vec<(T, T)>>, countries: &[Country]) -> Vec<(T, T)> {
    let mut wanted = countries.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut out: Vec<(T, T)> = wanted.iter().filter_map(|c| map.get(c)).flatten().copied().collect();
    ranges::merge(&mut out);
    out
}

fn index_of<T: RangeInt>(map: &BTreeMap<Country, Vec<(T, T)>>) -> Vec<(T, T, Country)> {
    let mut all: Vec<(T, T, Country)> =
        map.iter().flat_map(|(&c, v)| v.iter().map(move |&(lo, hi)| (lo, hi, c))).collect();
    // By start; of two ranges starting together the longer first, then by country, so the result is the same
    // whatever order the sources came in.
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let mut out: Vec<(T, T, Country)> = Vec::with_capacity(all.len());
    let mut covered_to: Option<T> = None;
    for (lo, hi, c) in all {
        match covered_to {
            Some(end) if hi <= end => {}
            Some(end) if lo <= end => {
                // Only the part past what an earlier range covers; `end < hi`, so `end + 1` exists.
                if let Some(next) = end.checked_add_one() {
                    out.push((next, hi, c));
                }
                covered_to = Some(hi);
            }
            _ => {
                out.push((lo, hi, c));
                covered_to = Some(hi);
            }
        }
    }
    out
}

fn find<T: Ord + Copy>(index: &[(T, T, Country)], x: T) -> Option<Country> {
    let after = index.partition_point(|&(lo, _, _)| lo <= x);
    let &(_, hi, c) = index.get(after.checked_sub(1)?)?;
    (hi >= x).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::parse::{parse_cidr_list, parse_rir};

    fn cc(s: &str) -> Country {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    fn db() -> GeoDb {
        let rir = "2.3|apnic|20261120|4|19830613|20261119|+1000\n\
                   apnic|*|ipv4|*|3|summary\n\
                   apnic|JP|ipv4|198.51.100.0|128|20100101|allocated|A1\n\
                   apnic|AU|ipv4|203.0.113.0|256|20100101|allocated|A2\n\
                   apnic|JP|ipv6|2001:db8::|33|20100101|allocated|A1\n\
                   apnic|KR|ipv4|198.18.0.0|131072|20100101|assigned|A3\n";
        let mut db = GeoDb::new();
        db.add(parse_rir(rir, "apnic").unwrap());
        // A second source for JP, adjacent to the first: the union merges into one range.
        db.add(parse_cidr_list("198.51.100.128/25\n2001:db8:8000::/33\n", "jp.zone", cc("JP")).unwrap());
        db
    }

    #[test]
    fn lookup_answers_per_family_and_for_mapped_addresses() {
        let db = db();
        assert_eq!(db.lookup(ip("198.51.100.7")), Some(cc("JP")));
        assert_eq!(db.lookup(ip("198.51.100.200")), Some(cc("JP")), "from the second source");
        assert_eq!(db.lookup(ip("203.0.113.255")), Some(cc("AU")));
        assert_eq!(db.lookup(ip("198.19.255.255")), Some(cc("KR")));
        assert_eq!(db.lookup(ip("2001:db8:ffff::1")), Some(cc("JP")));
        assert_eq!(db.lookup(ip("::ffff:203.0.113.9")), Some(cc("AU")), "IPv4-mapped IPv6 is IPv4");
        assert_eq!(db.lookup(ip("198.20.0.0")), None);
        assert_eq!(db.lookup(ip("2001:db9::1")), None);
        assert_eq!(db.lookup(ip("0.0.0.0")), None);
        assert_eq!(db.lookup(ip("255.255.255.255")), None);
        assert_eq!(GeoDb::new().lookup(ip("198.51.100.7")), None);
    }

    #[test]
    fn ranges_are_the_merged_union_of_the_countries() {
        let db = db();
        let (r4, r6) = db.ranges(&[cc("JP")]);
        assert_eq!(r4, vec![(v4("198.51.100.0"), v4("198.51.100.255"))]);
        assert_eq!(r6.len(), 1, "the two /33 halves are one range: {r6:?}");
        let (r4, _) = db.ranges(&[cc("AU"), cc("JP"), cc("JP"), cc("FR")]);
        assert_eq!(r4, vec![(v4("198.51.100.0"), v4("198.51.100.255")), (v4("203.0.113.0"), v4("203.0.113.255"))]);
        assert_eq!(db.ranges(&[cc("FR")]), (vec![], vec![]));
        assert_eq!(db.countries(), vec![cc("AU"), cc("JP"), cc("KR")]);
        assert_eq!(db.len(), (3, 1));
        assert!(!db.is_empty());
        assert!(GeoDb::new().is_empty());
    }

    #[test]
    fn overlapping_countries_answer_the_same_whatever_the_order() {
        let a = parse_cidr_list("198.18.0.0/16\n", "a", cc("AA")).unwrap();
        let b = parse_cidr_list("198.18.1.0/24\n198.18.255.0/24\n198.19.0.0/24\n", "b", cc("BB")).unwrap();
        let mut ab = GeoDb::new();
        ab.add(a.clone());
        ab.add(b.clone());
        let mut ba = GeoDb::new();
        ba.add(b);
        assert_eq!(ba.lookup(ip("198.18.1.1")), Some(cc("BB")), "index built before the next add");
        ba.add(a);
        for addr in ["198.18.1.1", "198.18.0.1", "198.18.255.255", "198.19.0.1", "198.19.1.0"] {
            assert_eq!(ab.lookup(ip(addr)), ba.lookup(ip(addr)), "{addr}");
        }
        assert_eq!(ab.lookup(ip("198.18.1.1")), Some(cc("AA")));
        assert_eq!(ab.lookup(ip("198.19.0.1")), Some(cc("BB")));
        assert_eq!(ab.lookup(ip("198.19.1.0")), None);
        // Each country's set still holds all of its own ranges.
        assert_eq!(ab.ranges(&[cc("BB")]).0.len(), 2);
    }
}
