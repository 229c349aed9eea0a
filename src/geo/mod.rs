//! Country address ranges: where an address is registered, for service ports restricted to some countries.
//!
//! The data side only: [`fetch`] downloads the registries' statistics files and keeps the last good copy of
//! each, [`parse`] reads them (RIR delegated statistics or ipdeny-style CIDR lists), [`ranges`] merges and
//! converts address ranges, and [`db::GeoDb`] answers "which country" and "which ranges". Nothing here touches
//! the kernel; the sets are written by the enforcement side from [`GeoDb::ranges`].

pub mod config;
pub mod db;
pub mod fetch;
pub mod parse;
pub mod ranges;

pub use config::GeoConfig;
pub use db::GeoDb;

use std::fmt;
use std::str::FromStr;

/// A country code as the registries write it: ISO 3166 alpha-2 ("JP"), or one of the registries' own
/// two-letter codes ("EU", "AP", "ZZ"). Always upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// The code from two ASCII letters, upper-cased; `None` for anything else.
    pub fn new(code: [u8; 2]) -> Option<Country> {
        if code.iter().all(u8::is_ascii_alphabetic) {
            Some(Country(code.map(|b| b.to_ascii_uppercase())))
        } else {
            None
        }
    }

    /// The code from the bytes of one field; `None` unless it is exactly two ASCII letters.
    pub fn from_bytes(code: &[u8]) -> Option<Country> {
        Country::new(<[u8; 2]>::try_from(code).ok()?)
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters (checked in `new`), so this is always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for Country {
    type Err = String;
    fn from_str(text: &str) -> Result<Country, String> {
        Country::from_bytes(text.as_bytes()).ok_or_else(|| format!("`{text}` is not a two-letter country code"))
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// As a string ("JP"), the way config files and JSON output write it, not as a two-byte array.
impl serde::Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Country {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Country, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why country data could not be read, parsed or fetched. Every variant names the file or URL it is about
/// (the origin); parse errors also name the line (1-based) and the field.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{origin}:{line}: field `{field}`: {reason}; the file is refused whole (the last good copy is kept)")]
    Parse { origin: String, line: usize, field: &'static str, reason: String },
    #[error("{origin}: truncated: {reason}; the file is refused (the last good copy is kept)")]
    Truncated { origin: String, reason: String },
    #[error("{origin}: no address ranges in it; an empty country set is never installed (the last good copy is kept)")]
    Empty { origin: String },
    #[error("{url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url}: larger than the limit of {limit} bytes; raise the limit if the file really is that big")]
    TooLarge { url: String, limit: u64 },
    #[error("{origin}: {reason}")]
    Source { origin: String, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes_are_two_letters_upper_cased() {
        assert_eq!("jp".parse::<Country>().unwrap().as_str(), "JP");
        assert_eq!("Eu".parse::<Country>().unwrap().to_string(), "EU");
        assert_eq!("JPN".parse::<Country>(), Err("`JPN` is not a two-letter country code".to_string()));
        assert_eq!("J1".parse::<Country>(), Err("`J1` is not a two-letter country code".to_string()));
        assert!("".parse::<Country>().is_err());
        assert!("日本".parse::<Country>().is_err());
    }

    #[test]
    fn country_serialises_as_a_string() {
        let jp: Country = "JP".parse().unwrap();
        assert_eq!(serde_json::to_string(&jp).unwrap(), "\"JP\"");
        let back: Country = serde_json::from_str("\"jp\"").unwrap();
        assert_eq!(back, jp);
        assert!(serde_json::from_str::<Country>("\"JPN\"").is_err());
    }
}
