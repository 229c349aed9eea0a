//! `[geo]`: where the country ranges come from (`floodgate geo update`) and where their last good copies are
//! kept, with its validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::fetch::{Format, Source};
use crate::setting::{de_duration, Invalid};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoConfig {
    /// The last good copy of each source, which is what the sets are built from.
    pub dir: PathBuf,
    /// A download's time limit, connection and body together.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// The largest download accepted, in MiB (the RIRs' files are 5-40 MiB).
    pub max_mib: u64,
    /// The range files. Default: the five RIRs' delegated-extended statistics.
    pub sources: Vec<Source>,
}

impl Default for GeoConfig {
    fn default() -> GeoConfig {
        let rir = |url: &str| Source { url: url.into(), format: Format::Rir, country: None, name: None };
        GeoConfig {
            dir: PathBuf::from("/var/lib/floodgate/geo"),
            timeout: Duration::from_secs(120),
            max_mib: 128,
            sources: vec![
                rir("https://ftp.afrinic.net/stats/afrinic/delegated-afrinic-extended-latest"),
                rir("https://ftp.apnic.net/stats/apnic/delegated-apnic-extended-latest"),
                rir("https://ftp.arin.net/pub/stats/arin/delegated-arin-extended-latest"),
                rir("https://ftp.lacnic.net/pub/stats/lacnic/delegated-lacnic-extended-latest"),
                rir("https://ftp.ripe.net/pub/stats/ripencc/delegated-ripencc-extended-latest"),
            ],
        }
    }
}

impl GeoConfig {
    /// `needed`: some service is restricted to (or from) some countries, so the ranges must be obtainable.
    pub fn validate(&self, needed: bool) -> Result<(), Invalid> {
        if needed {
            if self.sources.is_empty() {
                return Err(Invalid::new("geo.sources", "country-restricted services need at least one range source"));
            }
            if self.max_mib == 0 {
                return Err(Invalid::new("geo.max_mib", "above zero"));
            }
            if self.timeout.is_zero() {
                return Err(Invalid::new("geo.timeout", "above zero"));
            }
        }
        super::fetch::validate_all(&self.sources)
    }
}
