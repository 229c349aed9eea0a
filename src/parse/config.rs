//! What parsing is set up from: `[parse]` with its validation, and `Setup`, the rules and the services'
//! ports and levels a `LineParser` is built from.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Levels, ServicePorts};
use crate::setting::Invalid;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParseConfig {
    /// Longer lines are counted as overlong and skipped, never buffered whole.
    pub max_line_bytes: usize,
}

impl Default for ParseConfig {
    fn default() -> ParseConfig {
        ParseConfig { max_line_bytes: 64 * 1024 }
    }
}

impl ParseConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_line_bytes < 256 {
            return Err(Invalid::new("parse.max_line_bytes", "at least 256 bytes"));
        }
        Ok(())
    }
}

/// What a `LineParser` is built from.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Rules directories after the built-in rules; a file named like a built-in one replaces it.
    pub rules_dirs: Vec<PathBuf>,
    /// Whether the rules compiled into the binary are loaded.
    pub builtin_rules: bool,
    /// Each service's ports: events are named by the port they arrived on.
    pub ports: ServicePorts,
    /// Which rule levels count as failures, per service.
    pub levels: Levels,
}
