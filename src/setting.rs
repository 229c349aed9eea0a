//! What every config section is written in: durations (`90s`, `1h30m`, `30d`) and the error a section's
//! validation gives, which names the one key that is wrong. Each component validates its own section
//! (`policy::PolicyConfig`, `enforce::EnforceConfig`, ...); `config` assembles them and adds file and line.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration floodgate takes anywhere (ten years): past it a ban is `forever`, and every time
/// computed from a duration stays far from the calendar's end, so no input can overflow the clock arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86400);

/// `30d`, `1h30m`, `90s`; at most `MAX_DURATION`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 90s, 10m, 1h30m, 30d"))?;
    if d > MAX_DURATION {
        return Err(format!("`{text}` is longer than 3650d, the longest floodgate takes (a ban can be `forever`)"));
    }
    Ok(d)
}

/// For `#[serde(deserialize_with)]`: a duration written as text.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// For optional keys (`#[serde(default, deserialize_with)]`).
pub fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// A section's value that parsed but cannot be used: the one key (its full dotted path, e.g.
/// `services.imap.ports`) and why, in words that say what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid { key: key.into(), reason: reason.into() }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded_and_errors_say_what_to_write() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("3650d").is_ok());
        assert!(parse_duration("3651d").unwrap_err().contains("longer than 3650d"));
        assert!(parse_duration("soon").unwrap_err().contains("write e.g. 90s"));
        assert_eq!(
            Invalid::new("jail.maxretry", "must be at least 1").to_string(),
            "jail.maxretry: must be at least 1"
        );
    }
}
