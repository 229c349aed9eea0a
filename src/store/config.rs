//! `[store]`: how long events are kept and how many are written at once, with its validation.

use std::time::Duration;

use serde::Deserialize;

use crate::setting::{de_duration, Invalid};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Events older than this are deleted.
    #[serde(deserialize_with = "de_duration")]
    pub retention: Duration,
    /// Events kept per batch before a write; a flood is stored in few large transactions.
    pub batch_size: usize,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig { retention: Duration::from_secs(30 * 86400), batch_size: 4096 }
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.retention < Duration::from_secs(3600) {
            return Err(Invalid::new("store.retention", "keep at least 1h of events"));
        }
        if self.batch_size == 0 {
            return Err(Invalid::new("store.batch_size", "must be at least 1"));
        }
        Ok(())
    }
}
