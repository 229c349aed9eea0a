//! Country-restricted ports in the kernel: each restricted service's address ranges in its two interval sets,
//! swapped in one batch (one kernel transaction: a packet sees the old sets or the new ones, never a half-loaded
//! set), and its switch set holding its ports only while those ranges are loaded.
//!
//! Fail-open on missing data, on purpose: a service whose countries have no ranges (no download yet, every
//! copy refused) keeps its ports open and is reported, because an allow-only rule over an empty set would cut
//! the service off from everyone but the allowlist.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use super::Setup;
use crate::geo::fetch::Source;
use crate::geo::{Country, GeoDb};
use crate::nft::ruleset::GeoRule;
use crate::nft::{Key, SetOp};

use super::{EnforceError, Enforcer};

/// What the country sets are built from: the config's part of it, and what the last load found.
#[derive(Debug, Clone, Default)]
pub(super) struct GeoPlan {
    dir: PathBuf,
    sources: Vec<Source>,
    /// Per restricted service: its countries (allowed, or denied: the rule says which).
    countries: Vec<(String, Vec<Country>)>,
    /// The services enforced after the last load, and the cache files it read (name, modified, length): a
    /// change in either is a reason to load again.
    active: Vec<String>,
    seen: Vec<(String, Option<SystemTime>, u64)>,
}

impl GeoPlan {
    pub(super) fn from_config(c: &Setup) -> GeoPlan {
        let countries = c
            .services
            .iter()
            .filter(|(_, s)| !s.countries.is_empty() || !s.deny_countries.is_empty())
            .map(|(n, s)| {
                (n.clone(), if s.countries.is_empty() { s.deny_countries.clone() } else { s.countries.clone() })
            })
            .collect();
        GeoPlan { dir: c.geo.dir.clone(), sources: c.geo.sources.clone(), countries, ..GeoPlan::default() }
    }

    /// Whether the config part differs (a reload that must load the sets again).
    pub(super) fn same_config(&self, other: &GeoPlan) -> bool {
        self.dir == other.dir && self.sources == other.sources && self.countries == other.countries
    }

    fn cache_state(&self) -> Vec<(String, Option<SystemTime>, u64)> {
        self.sources
            .iter()
            .map(|s| {
                let name = s.cache_name();
                let meta = std::fs::metadata(self.dir.join(&name)).ok();
                (name, meta.as_ref().and_then(|m| m.modified().ok()), meta.map_or(0, |m| m.len()))
            })
            .collect()
    }
}

/// One restricted service's ranges (sorted, merged, inclusive), ready to load.
#[derive(Debug, Clone)]
pub struct GeoSets {
    pub rule: GeoRule,
    pub v4: Vec<(u32, u32)>,
    pub v6: Vec<(u128, u128)>,
}

/// What a load did, per service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GeoLoaded {
    pub service: String,
    pub ports: Vec<u16>,
    pub deny: bool,
    pub ranges_v4: usize,
    pub ranges_v6: usize,
    /// The switch is on: the restriction is enforced.
    pub active: bool,
}

impl std::fmt::Display for GeoLoaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let state = if self.active { "enforced" } else { "NOT enforced: no ranges for its countries (ports open)" };
        write!(
            f,
            "country sets of {} (ports {}): {} IPv4 and {} IPv6 ranges loaded; {state}",
            self.service,
            ports.join(", "),
            self.ranges_v4,
            self.ranges_v6
        )
    }
}

impl Enforcer {
    /// Replaces the country sets of every service in `sets` in one batch; see the module comment for why a
    /// service without ranges stays open.
    pub fn load_geo(&mut self, sets: &[GeoSets]) -> Result<Vec<GeoLoaded>, EnforceError> {
        let mut ops = Vec::new();
        let mut out = Vec::new();
        for s in sets {
            let r = &s.rule;
            // Named once: the names are interned behind a lock, and a deny-list holds ~10^5 ranges.
            let (set4, set6, switch) = (r.set4(), r.set6(), r.switch());
            ops.extend([SetOp::Flush { set: set4 }, SetOp::Flush { set: set6 }, SetOp::Flush { set: switch }]);
            let range4 =
                |&(lo, hi): &(u32, u32)| Key::Range(IpAddr::from(lo.to_be_bytes()), IpAddr::from(hi.to_be_bytes()));
            let range6 =
                |&(lo, hi): &(u128, u128)| Key::Range(IpAddr::from(lo.to_be_bytes()), IpAddr::from(hi.to_be_bytes()));
            ops.extend(s.v4.iter().map(|r4| SetOp::Add { set: set4, key: range4(r4), timeout: None }));
            ops.extend(s.v6.iter().map(|r6| SetOp::Add { set: set6, key: range6(r6), timeout: None }));
            let active = !(s.v4.is_empty() && s.v6.is_empty());
            if active {
                ops.extend(r.ports.iter().map(|&p| SetOp::Add { set: switch, key: Key::Port(p), timeout: None }));
            } else {
                tracing::warn!(service = %r.service, "no country ranges loaded: the service's ports stay open to all");
            }
            out.push(GeoLoaded {
                service: r.service.clone(),
                ports: r.ports.clone(),
                deny: r.deny,
                ranges_v4: s.v4.len(),
                ranges_v6: s.v6.len(),
                active,
            });
        }
        let table = self.ruleset.table.clone();
        match self.kernel.apply(&table, &ops) {
            // No table yet, or one from a config without these services: install the shape, then load.
            Err(e) if e.errno() == Some(libc::ENOENT) => {
                self.install()?;
                self.kernel.apply(&table, &ops)?;
            }
            r => r?,
        }
        Ok(out)
    }

    /// Builds every restricted service's sets from the last good copies in `geo.dir` and loads them in one
    /// batch. Without restricted services, nothing to do.
    pub fn sync_geo(&mut self) -> Result<Vec<GeoLoaded>, EnforceError> {
        if self.ruleset.geo.is_empty() {
            return Ok(Vec::new());
        }
        let seen = self.geo.cache_state();
        let (db, warnings) = GeoDb::load_dir(&self.geo.dir, &self.geo.sources)?;
        for w in warnings {
            tracing::warn!("country ranges: {w}");
        }
        let sets: Vec<GeoSets> = self
            .ruleset
            .geo
            .iter()
            .map(|rule| {
                let countries =
                    self.geo.countries.iter().find(|(n, _)| *n == rule.service).map_or(&[][..], |(_, c)| &c[..]);
                let (v4, v6) = db.ranges(countries);
                GeoSets { rule: rule.clone(), v4, v6 }
            })
            .collect();
        let loaded = self.load_geo(&sets)?;
        self.geo.active = loaded.iter().filter(|l| l.active).map(|l| l.service.clone()).collect();
        self.geo.seen = seen;
        Ok(loaded)
    }

    /// Loads the country sets again if the kernel lost some that were loaded (a flush, a table deleted by
    /// hand) or if the cache files changed (`floodgate geo update` ran). Cheap when nothing changed: a dump of
    /// each switch set and a stat of each cache file.
    pub fn check_geo(&mut self) -> Result<Option<Vec<GeoLoaded>>, EnforceError> {
        if self.ruleset.geo.is_empty() {
            return Ok(None);
        }
        let lost = self.geo_unloaded()?.into_iter().any(|s| self.geo.active.contains(&s));
        if lost || self.geo.cache_state() != self.geo.seen {
            return self.sync_geo().map(Some);
        }
        Ok(None)
    }

    /// The restricted services whose switch lacks some of their ports (never loaded, or lost to a flush or a
    /// table deleted by hand): what needs `load_geo` again.
    pub fn geo_unloaded(&mut self) -> Result<Vec<String>, EnforceError> {
        let table = self.ruleset.table.clone();
        let mut out = Vec::new();
        for r in self.ruleset.geo.clone() {
            let have: Vec<Key> = match self.kernel.elements(&table, r.switch()) {
                Ok(e) => e.into_iter().map(|e| e.key).collect(),
                Err(crate::nft::NftError::Missing { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            if r.ports.iter().any(|p| !have.contains(&Key::Port(*p))) {
                out.push(r.service.clone());
            }
        }
        Ok(out)
    }
}
