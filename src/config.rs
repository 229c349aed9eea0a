//! The configuration file (TOML), assembled from its sections. Every key is optional: with no file at all
//! floodgate runs on the built-in mail-server preset.
//!
//! Each section's type, defaults and validation live with the component that reads it: `[sources]` in
//! `source::config`, `[parse]` in `parse::config`, `[store]` in `store::config`, `[jail]` and `[policy]` in
//! `policy::config`, `[services.NAME]` in `service`, `[enforce]` in `enforce::config`, `[geo]` in
//! `geo::config`, `[notify]` in `notice::config`, `[fleet]` in `fleet::config`, `[metrics]` in `metrics::config`. This file reads the file, runs each section's validation,
//! checks what spans sections, and reports any error with file, line and the one key; and it assembles what
//! each component is built from (`parsing`, `enforcement`, `ruleset`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::addr::Cidr;
use crate::enforce::EnforceConfig;
use crate::fleet::FleetConfig;
use crate::geo::GeoConfig;
use crate::metrics::MetricsConfig;
use crate::nft::{PortLimits, Ruleset};
use crate::notice::NotifyConfig;
use crate::parse::header::Zone;
use crate::parse::{ParseConfig, ServicePorts};
use crate::setting::{de_duration, Invalid};
use crate::source::SourcesConfig;
use crate::store::StoreConfig;

pub use crate::policy::{JailConfig, PolicyConfig, PrefixBan};
pub use crate::service::{Service, Services, SynproxyMode};
pub use crate::setting::{parse_duration, MAX_DURATION};

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
    pub jail: JailConfig,
    /// Protected services by name: their ports and, optionally, their own jail values.
    pub services: Services,
    pub enforce: EnforceConfig,
    pub sources: SourcesConfig,
    pub daemon: DaemonConfig,
    pub policy: PolicyConfig,
    pub notify: NotifyConfig,
    pub geo: GeoConfig,
    /// Hosts sharing their bans (`[fleet]`); none without the section.
    pub fleet: Option<FleetConfig>,
    /// The Prometheus endpoint (`[metrics]`); off unless `listen` is set.
    pub metrics: MetricsConfig,
}

/// `[daemon]`: the daemon itself. Its section lives here because the daemon is what assembles every other.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// The control socket the CLI talks to (mode 0600).
    pub socket: PathBuf,
    /// Batches of lines or events the pipeline may hold before sources wait (lines) or are shed (conntrack).
    pub queue: usize,
    /// Housekeeping period: expiry, statistics, store flush.
    #[serde(deserialize_with = "de_duration")]
    pub tick: Duration,
    /// How often the kernel's sets and chains are checked against the store (a dump of every set) and
    /// repaired: enforcement cannot decay silently.
    #[serde(deserialize_with = "de_duration")]
    pub verify_every: Duration,
}

impl Default for DaemonConfig {
    fn default() -> DaemonConfig {
        DaemonConfig {
            socket: PathBuf::from("/run/floodgate/floodgate.sock"),
            // Each batch holds up to 1,024 lines: 64 batches bound the backlog in memory to ~64k lines; a
            // file source simply waits beyond that (the file is its own buffer).
            queue: 64,
            tick: Duration::from_secs(1),
            verify_every: Duration::from_secs(60),
        }
    }
}

impl DaemonConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.queue == 0 {
            return Err(Invalid::new("daemon.queue", "at least 1"));
        }
        if self.tick < Duration::from_millis(100) {
            return Err(Invalid::new("daemon.tick", "at least 100ms"));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            db: PathBuf::from(DEFAULT_DB),
            timezone: Zone::Local,
            rules_dirs: Vec::new(),
            builtin_rules: true,
            allowlist: Vec::new(),
            store: StoreConfig::default(),
            parse: ParseConfig::default(),
            jail: JailConfig::default(),
            services: Services::default(),
            enforce: EnforceConfig::default(),
            sources: SourcesConfig::default(),
            daemon: DaemonConfig::default(),
            policy: PolicyConfig::default(),
            notify: NotifyConfig::default(),
            geo: GeoConfig::default(),
            fleet: None,
            metrics: MetricsConfig::default(),
        }
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
        let mut cfg: Config = toml::from_str(text).map_err(|e| invalid(crate::parse::rules::toml_reason(&e, text)))?;
        // A file that lists services replaces the preset's list entirely: no hidden defaults.
        if cfg.services.is_empty() {
            cfg.services = Services::default();
        }
        cfg.validate().map_err(|e| match line_of(text, &e.key) {
            Some(line) => invalid(format!("line {line}: {e}")),
            None => invalid(e.to_string()),
        })?;
        Ok(cfg)
    }

    /// Each section's own validation, then what spans sections.
    fn validate(&self) -> Result<(), Invalid> {
        self.services.validate()?;
        self.jail.validate()?;
        self.store.validate()?;
        self.parse.validate()?;
        self.enforce.validate()?;
        self.notify.validate()?;
        self.policy.validate()?;
        self.daemon.validate()?;
        self.sources.validate()?;
        self.geo.validate(self.services.country_restricted())?;
        if let Some(f) = &self.fleet {
            f.validate()?;
        }
        self.metrics.validate()?;
        if let Some(c) = self.allowlist.iter().find(|c| c.prefix_len() == 0) {
            return Err(Invalid::new("allowlist", format!("`{c}` would exempt every address")));
        }
        Ok(())
    }

    /// What the line parser is built from.
    pub fn parsing(&self) -> crate::parse::Setup {
        crate::parse::Setup {
            rules_dirs: self.rules_dirs.clone(),
            builtin_rules: self.builtin_rules,
            ports: self.services.ports(),
            levels: self.services.levels(self.jail.level),
        }
    }

    /// What the enforcer is built from.
    pub fn enforcement(&self) -> crate::enforce::Setup<'_> {
        crate::enforce::Setup {
            enforce: &self.enforce,
            services: &self.services,
            geo: &self.geo,
            allowlist: &self.allowlist,
            track: self.sources.conntrack,
            fleet: self.fleet.is_some(),
        }
    }

    /// The policy engine this config describes.
    pub fn policy_engine(&self) -> crate::policy::engine::Engine {
        crate::policy::engine::Engine::from_config(&self.policy, &self.jail, &self.services, &self.allowlist)
    }

    /// The table's shape.
    pub fn ruleset(&self) -> Ruleset {
        self.enforcement().ruleset()
    }

    /// The limits of every configured port.
    pub fn port_limits(&self) -> Vec<PortLimits> {
        self.enforce.port_limits(&self.services)
    }

    pub fn service_ports(&self) -> ServicePorts {
        self.services.ports()
    }

    /// The longest failure window of the jail and the services: how far back the policy's memory reaches.
    pub fn longest_findtime(&self) -> Duration {
        self.services.longest_findtime(self.jail.findtime)
    }

    /// Whether the policy built from `other` would judge the same way (jail, services, policy, allowlist): a
    /// reload that changes none of them keeps the running policy's state exactly.
    pub fn same_policy(&self, other: &Config) -> bool {
        self.jail == other.jail
            && self.services == other.services
            && self.policy == other.policy
            && self.allowlist == other.allowlist
    }
}

/// The line `key` (a dotted path as `Invalid` names it, `geo.sources[0]` for an array's item) is written on,
/// when the file writes it; a key left at its default has no line.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item: &toml_edit::Item = doc.as_item();
    let mut span = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (k, next) = item.as_table_like()?.get_key_value(name)?;
        span = k.span().or(next.span()).or(span);
        item = next;
        if let Some(i) = index {
            let at = match item {
                toml_edit::Item::ArrayOfTables(a) => a.get(i).and_then(|t| t.span()),
                toml_edit::Item::Value(toml_edit::Value::Array(a)) => a.get(i).and_then(|v| v.span()),
                _ => None,
            };
            span = at.or(span);
            // An item of an array is as deep as the line lookup goes.
            break;
        }
    }
    let start = span?.start;
    Some(text[..start.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1)
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
    use crate::nft::{Limit, Per};

    fn err(text: &str) -> String {
        Config::from_toml(text, "f.toml").unwrap_err().to_string()
    }

    #[test]
    fn country_restrictions_are_checked_and_become_geo_rules() {
        let c = Config::from_toml(
            "[services.smtp]\nports = [25]\n[services.imap]\nports = [143, 993]\ncountries = [\"jp\"]\n\
             [services.pop3]\nports = [110]\ndeny_countries = [\"CN\", \"RU\"]\n",
            "f.toml",
        )
        .unwrap();
        assert_eq!(c.services["imap"].countries, vec!["JP".parse().unwrap()]);
        let geo = c.ruleset().geo;
        assert_eq!(geo.len(), 2);
        assert_eq!((geo[0].service.as_str(), geo[0].deny, &geo[0].ports[..]), ("imap", false, &[143u16, 993][..]));
        assert_eq!((geo[1].service.as_str(), geo[1].deny), ("pop3", true));
        assert_eq!(c.geo.sources.len(), 5, "the five RIRs by default");

        let both = "[services.imap]\nports = [993]\ncountries = [\"JP\"]\ndeny_countries = [\"CN\"]\n";
        assert!(err(both).contains("exclude each other"), "{}", err(both));
        let code = "[services.imap]\nports = [993]\ncountries = [\"JPN\"]\n";
        assert!(err(code).contains("`JPN` is not a two-letter country code"), "{}", err(code));
        let name = "[services.\"i m a p\"]\nports = [993]\ncountries = [\"JP\"]\n";
        assert!(err(name).contains("nftables sets"), "{}", err(name));
        let none = "[services.imap]\nports = [993]\ncountries = [\"JP\"]\n[geo]\nsources = []\n";
        assert!(err(none).contains("at least one range source"), "{}", err(none));
        let cidr = "[geo]\nsources = [{ url = \"https://example.net/jp.zone\", format = \"cidr\" }]\n";
        assert!(err(cidr).contains("geo.sources[0]") && err(cidr).contains("country"), "{}", err(cidr));
    }

    #[test]
    fn empty_file_is_the_mail_preset() {
        let c = Config::from_toml("", "f.toml").unwrap();
        assert_eq!(c.services["smtp"].ports, vec![25]);
        assert_eq!(c.service_ports()["submission"], vec![587]);
        assert_eq!(c.store.retention, Duration::from_secs(30 * 86400));
    }

    #[test]
    fn an_endless_duration_is_refused_at_load_naming_its_line() {
        let e = Config::from_toml("[jail]\nbantime = \"100000000d\"\n", "f.toml").err().unwrap().to_string();
        assert!(e.contains("line 2") && e.contains("longer than 3650d"), "{e}");
        let e = Config::from_toml("[services.imap]\nports = [143]\nfindtime = \"99999y\"\n", "f.toml").err().unwrap();
        assert!(e.to_string().contains("longer than 3650d"), "{e}");
        assert!(Config::from_toml("[jail]\nbantime = \"3650d\"\n", "f.toml").is_ok());
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
    fn port_limits_take_the_service_value_or_the_default() {
        let c = Config::from_toml(
            "[enforce]\nsource_rate = \"5/minute\"\n[services.smtp]\nports = [25]\nglobal_rate = \"50/second\"\nglobal_burst = 60\n[services.imap]\nports = [993, 143]\n",
            "f.toml",
        )
        .unwrap();
        let l = c.port_limits();
        assert_eq!(l.iter().map(|p| p.port).collect::<Vec<_>>(), [25, 143, 993]);
        assert_eq!(l[0].global, Limit { rate: 50, per: Per::Second, burst: 60 });
        assert_eq!(l[0].per_source, Limit { rate: 5, per: Per::Minute, burst: 40 });
        assert_eq!(l[1].global, Limit { rate: 200, per: Per::Second, burst: 400 });
    }

    #[test]
    fn bad_configs_name_file_line_key_and_reason() {
        let e = err("bogus = 1\n");
        assert!(e.starts_with("f.toml: line 1: unknown field `bogus`"), "{e}");
        let cases: &[(&str, &[&str])] = &[
            ("[store]\nretention = \"forever\"\n", &["line 2", "`forever` is not a duration"]),
            ("timezone = \"Mars/Base\"\n", &["unknown time zone `Mars/Base`"]),
            ("allowlist = [\"not-an-ip\"]\n", &["`not-an-ip` is not an IP address"]),
            (
                "[services.a]\nports = [25]\n[services.b]\nports = [25]\n",
                &["services.b.ports: port 25 already belongs to service `a`"],
            ),
            ("[services.a]\nports = [70000]\n", &["line 2"]),
            ("allowlist = [\"0.0.0.0/0\"]\n", &["every address"]),
            ("[enforce]\nsource_rate = \"fast\"\n", &["line 2", "`fast` is not a rate"]),
            ("[enforce]\ntable = \"a b\"\n", &["enforce.table"]),
            ("[services.a]\nports = [25]\nglobal_burst = 0\n", &["services.a.global_burst"]),
            ("[jail]\nmaxretry = 0\n", &["jail.maxretry"]),
        ];
        for (text, needles) in cases {
            let e = err(text);
            assert!(needles.iter().all(|n| e.contains(n)), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_section_s_error_names_the_line_of_its_one_key() {
        let geo_twins = "[[geo.sources]]\nurl = \"https://example.net/a\"\nformat = \"rir\"\n\n\
                         [[geo.sources]]\nurl = \"https://example.net/jp\"\nformat = \"cidr\"\n";
        let cases = [
            (
                "# mine\n[jail]\nfindtime = \"10m\"\nbantime = \"0s\"\n",
                "f.toml: line 4: jail.bantime: must be longer than zero",
            ),
            ("[policy]\nwindow = \"60s\"\n\nprefix_v6 = 200\n", "f.toml: line 4: policy.prefix_v6: between 16 and 128"),
            (
                "[services.a]\nports = [25]\n[services.b]\nports = [26,\n 25]\n",
                "f.toml: line 4: services.b.ports: port 25",
            ),
            (geo_twins, "f.toml: line 5: geo.sources[1]:"),
            (
                "[services.imap]\nports = [993]\ncountries = [\"JP\"]\n[geo]\nsources = []\n",
                "f.toml: line 5: geo.sources:",
            ),
            ("[daemon]\nqueue = 0\n", "f.toml: line 2: daemon.queue: at least 1"),
        ];
        for (text, start) in cases {
            let e = err(text);
            assert!(e.starts_with(start), "{text:?}: {e}");
        }
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
        assert_eq!(c.ruleset(), d.ruleset());
        assert_eq!(c.sources, d.sources);
        assert_eq!(c.policy, d.policy);
        assert_eq!(c.notify, d.notify);
        assert_eq!(c.daemon, d.daemon);
        assert_eq!(c.geo, d.geo);
        assert_eq!(c.enforce.widest_prefix_v4, d.enforce.widest_prefix_v4);
        assert_eq!(c.enforce.widest_prefix_v6, d.enforce.widest_prefix_v6);
    }
}
