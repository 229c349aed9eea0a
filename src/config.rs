//! The configuration file (TOML). Every key is optional: with no file at all floodgate runs on the built-in
//! mail-server preset. Unknown keys and bad values are refused with file, line, key and reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::addr::Cidr;
use crate::parser::ServicePorts;
use crate::prefix::Zone;

pub const DEFAULT_CONFIG: &str = "/etc/floodgate/floodgate.toml";
pub const DEFAULT_DB: &str = "/var/lib/floodgate/floodgate.db";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The event store (SQLite). `--db` overrides it.
    pub db: PathBuf,
    /// Zone for log timestamps without an offset: `local`, an IANA name, or `+09:00`.
    #[serde(deserialize_with = "de_zone")]
    pub timezone: Zone,
    /// Extra rules directories; a file named like a built-in one (postfix.toml) replaces it.
    pub rules_dirs: Vec<PathBuf>,
    /// Whether the rules compiled into the binary are loaded.
    pub builtin_rules: bool,
    /// Admin addresses and prefixes: never banned, never limited.
    #[serde(deserialize_with = "de_cidrs")]
    pub allowlist: Vec<Cidr>,
    pub store: StoreConfig,
    pub parse: ParseConfig,
    /// fail2ban's per-source rule, applied to every service that does not set its own values.
    pub jail: Jail,
    /// Protected services by name: their ports and, optionally, their own jail values.
    pub services: BTreeMap<String, Service>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Events older than this are deleted.
    #[serde(deserialize_with = "de_duration")]
    pub retention: Duration,
    /// Events kept per batch before a write; a flood is stored in few large transactions.
    pub batch_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParseConfig {
    /// Longer lines are counted as overlong and skipped, never buffered whole.
    pub max_line_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jail {
    /// Failures from one source within `findtime` that earn a ban.
    pub maxretry: u32,
    #[serde(deserialize_with = "de_duration")]
    pub findtime: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub bantime: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub ports: Vec<u16>,
    pub maxretry: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub findtime: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub bantime: Option<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        let svc = |ports: &[u16], maxretry: Option<u32>| Service {
            ports: ports.to_vec(),
            maxretry,
            findtime: None,
            bantime: None,
        };
        // The field report's mail server: SMTP must accept the world, so it tolerates more before a ban;
        // the authenticated services are stricter.
        let services = BTreeMap::from([
            ("smtp".to_string(), svc(&[25], Some(10))),
            ("submission".to_string(), svc(&[587], None)),
            ("smtps".to_string(), svc(&[465], None)),
            ("imap".to_string(), svc(&[143, 993], None)),
            ("pop3".to_string(), svc(&[110, 995], None)),
            ("sieve".to_string(), svc(&[4190], None)),
            ("ssh".to_string(), svc(&[22], None)),
        ]);
        Config {
            db: PathBuf::from(DEFAULT_DB),
            timezone: Zone::Local,
            rules_dirs: Vec::new(),
            builtin_rules: true,
            allowlist: Vec::new(),
            store: StoreConfig::default(),
            parse: ParseConfig::default(),
            jail: Jail::default(),
            services,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig { retention: Duration::from_secs(30 * 86400), batch_size: 4096 }
    }
}

impl Default for ParseConfig {
    fn default() -> ParseConfig {
        ParseConfig { max_line_bytes: 64 * 1024 }
    }
}

impl Default for Jail {
    fn default() -> Jail {
        Jail { maxretry: 5, findtime: Duration::from_secs(600), bantime: Duration::from_secs(3600) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {cause}")]
    Read { file: String, cause: std::io::Error },
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
}

impl Config {
    /// Loads `path`. With no path, the default file is read if it exists, else the built-in preset is used.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::from_toml(&text, &path.display().to_string()),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(cause) => Err(ConfigError::Read { file: path.display().to_string(), cause }),
        }
    }

    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid { file: file.to_string(), reason };
        let mut cfg: Config = toml::from_str(text).map_err(|e| invalid(crate::rules::toml_reason(&e, text)))?;
        // A file that lists services replaces the preset's list entirely: no hidden defaults.
        if cfg.services.is_empty() {
            cfg.services = Config::default().services;
        }
        cfg.validate().map_err(invalid)?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let mut owner: BTreeMap<u16, &str> = BTreeMap::new();
        for (name, s) in &self.services {
            if s.ports.is_empty() {
                return Err(format!("services.{name}.ports: a service needs at least one port"));
            }
            for &p in &s.ports {
                if p == 0 {
                    return Err(format!("services.{name}.ports: port 0 is not a port"));
                }
                if let Some(other) = owner.insert(p, name) {
                    return Err(format!("services.{name}.ports: port {p} already belongs to service `{other}`"));
                }
            }
            if s.maxretry == Some(0) {
                return Err(format!("services.{name}.maxretry: must be at least 1"));
            }
            for (key, d) in [("findtime", s.findtime), ("bantime", s.bantime)] {
                if d == Some(Duration::ZERO) {
                    return Err(format!("services.{name}.{key}: must be longer than zero"));
                }
            }
        }
        if self.jail.maxretry == 0 {
            return Err("jail.maxretry: must be at least 1".into());
        }
        if self.jail.findtime.is_zero() || self.jail.bantime.is_zero() {
            return Err("jail.findtime / jail.bantime: must be longer than zero".into());
        }
        if self.store.retention < Duration::from_secs(3600) {
            return Err("store.retention: keep at least 1h of events".into());
        }
        if self.store.batch_size == 0 {
            return Err("store.batch_size: must be at least 1".into());
        }
        if self.parse.max_line_bytes < 256 {
            return Err("parse.max_line_bytes: at least 256 bytes".into());
        }
        if let Some(c) = self.allowlist.iter().find(|c| c.prefix_len() == 0) {
            return Err(format!("allowlist: `{c}` would exempt every address"));
        }
        Ok(())
    }

    pub fn service_ports(&self) -> ServicePorts {
        self.services.iter().map(|(n, s)| (n.clone(), s.ports.clone())).collect()
    }
}

/// `30d`, `1h30m`, `90s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 90s, 10m, 1h30m, 30d"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_zone<'de, D: Deserializer<'de>>(d: D) -> Result<Zone, D::Error> {
    let s = String::deserialize(d)?;
    Zone::parse(&s).map_err(serde::de::Error::custom)
}

fn de_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter().map(|s| s.parse::<Cidr>().map_err(serde::de::Error::custom)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text, "f.toml").unwrap_err().to_string()
    }

    #[test]
    fn empty_file_is_the_mail_preset() {
        let c = Config::from_toml("", "f.toml").unwrap();
        assert_eq!(c.services["smtp"].ports, vec![25]);
        assert_eq!(c.service_ports()["submission"], vec![587]);
        assert_eq!(c.store.retention, Duration::from_secs(30 * 86400));
    }

    #[test]
    fn values_parse() {
        let c = Config::from_toml(
            "timezone = \"Asia/Tokyo\"\nallowlist = [\"203.0.113.10\", \"2001:db8::/48\"]\n[store]\nretention = \"7d\"\n[services.smtp]\nports = [25, 2525]\nbantime = \"2h\"\n",
            "f.toml",
        )
        .unwrap();
        assert_eq!(c.allowlist.len(), 2);
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services["smtp"].bantime, Some(Duration::from_secs(7200)));
    }

    #[test]
    fn bad_configs_name_file_line_key_and_reason() {
        let e = err("bogus = 1\n");
        assert!(e.starts_with("f.toml: line 1: unknown field `bogus`"), "{e}");
        let e = err("[store]\nretention = \"forever\"\n");
        assert!(e.contains("line 2") && e.contains("`forever` is not a duration"), "{e}");
        let e = err("timezone = \"Mars/Base\"\n");
        assert!(e.contains("unknown time zone `Mars/Base`"), "{e}");
        let e = err("allowlist = [\"not-an-ip\"]\n");
        assert!(e.contains("`not-an-ip` is not an IP address"), "{e}");
        let e = err("[services.a]\nports = [25]\n[services.b]\nports = [25]\n");
        assert!(e.contains("services.b.ports: port 25 already belongs to service `a`"), "{e}");
        let e = err("[services.a]\nports = [70000]\n");
        assert!(e.contains("line 2"), "{e}");
        let e = err("allowlist = [\"0.0.0.0/0\"]\n");
        assert!(e.contains("every address"), "{e}");
        let e = err("[jail]\nmaxretry = 0\n");
        assert!(e.contains("jail.maxretry"), "{e}");
    }

    #[test]
    fn missing_default_file_means_defaults_but_missing_explicit_file_is_an_error() {
        let e = Config::load(Some(Path::new("/nonexistent/floodgate.toml"))).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/floodgate.toml: cannot read"), "{e}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid_and_is_the_preset() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/floodgate.toml");
        let c = Config::load(Some(Path::new(path))).unwrap();
        let d = Config::default();
        assert_eq!(c.service_ports(), d.service_ports());
        assert_eq!(c.db, d.db);
        assert_eq!(c.store.retention, d.store.retention);
        assert_eq!(c.jail.maxretry, d.jail.maxretry);
        assert_eq!(c.allowlist.len(), 2);
    }
}
