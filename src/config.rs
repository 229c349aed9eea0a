//! The configuration file (TOML). Every key is optional: with no file at all floodgate runs on the built-in
//! mail-server preset. Unknown keys and bad values are refused with file, line, key and reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::addr::Cidr;
use crate::nft::ruleset::GeoRule;
use crate::nft::{Limit, Per, PortLimits, Ruleset};
use crate::parse::header::Zone;
use crate::parse::ServicePorts;

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
    pub enforce: Enforce,
    pub sources: Sources,
    pub daemon: Daemon,
    pub policy: PolicyConfig,
    pub notify: crate::notice::NotifyConfig,
    pub geo: GeoConfig,
}

/// Where the country ranges come from (`floodgate geo update`) and where their last good copies are kept.
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
    pub sources: Vec<crate::geo::fetch::Source>,
}

impl Default for GeoConfig {
    fn default() -> GeoConfig {
        let rir = |url: &str| crate::geo::fetch::Source {
            url: url.into(),
            format: crate::geo::fetch::Format::Rir,
            country: None,
            name: None,
        };
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

/// The policy engine's thresholds: when sources are few and real, per-source responses; when they cannot be
/// narrowed down, the global limit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The sliding window per-port figures are measured over.
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
    /// Distinct sources on one port within the window above which they cannot be narrowed down.
    pub ddos_distinct: u64,
    /// New connections per second on one port above which the port is under attack.
    pub port_rate: f64,
    /// Share of a port's traffic from its top 10 sources above which an attack is concentrated.
    pub concentrated_share: f64,
    /// New connections per second from one proven-real source (all ports) that make it a DoS source.
    pub dos_source_rate: f64,
    /// How long a port must stay calm (below half the thresholds) before its limit is lifted.
    #[serde(deserialize_with = "de_duration")]
    pub converge_after: Duration,
    /// A limit's timeout, refreshed while the attack lasts.
    #[serde(deserialize_with = "de_duration")]
    pub limit_for: Duration,
    /// Ports never put under the global limit (SMTP must keep receiving mail from the world).
    pub global_exempt: Vec<u16>,
    /// A repeat offender's ban is multiplied by this per offence, up to `max_bantime`.
    pub repeat_multiplier: u32,
    #[serde(deserialize_with = "de_duration")]
    pub max_bantime: Duration,
    /// Banned addresses within one prefix (`prefix_v4` / `prefix_v6`) after which the whole prefix is banned
    /// (0: never).
    pub prefix_after: u32,
    /// The short horizon rates are also measured over (whole seconds): a flood's start shows in its real rate
    /// within this, where the window's average would still be diluted by the calm before it.
    #[serde(deserialize_with = "de_duration")]
    pub rate_horizon: Duration,
    /// New connections per second from one network (all its hosts, all ports) that make it a DoS: the field
    /// report's ISP, several hosts each under `dos_source_rate`. Its proven-real hosts are banned (0: off).
    pub prefix_rate: f64,
    /// What a network is for `prefix_rate` and `prefix_after`: IPv4 and IPv6 prefix lengths.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// What a network over `prefix_rate` gets: `hosts` (its proven-real hosts are banned; with `prefix_after` of
    /// them the prefix follows) or `prefix` (the prefix at once, once one of its hosts is proven real).
    pub prefix_ban: PrefixBan,
}

/// See `PolicyConfig::prefix_ban`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixBan {
    Hosts,
    Prefix,
}

/// Whether a service's port may be switched to the kernel's SYN proxy (`[services.NAME] synproxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SynproxyMode {
    /// Under a spoofed flood on a port exempt from the global limit, when the kernel's prerequisites hold.
    #[default]
    Auto,
    Never,
    /// While floodgate runs (still only when the prerequisites hold).
    Always,
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            window: Duration::from_secs(60),
            // A small mail server's spoofed DDoS: ~600 addresses at detection, 1,500-2,000 at peak.
            ddos_distinct: 300,
            port_rate: 50.0,
            concentrated_share: 0.5,
            // A DoS from real hosts: a handful of them at ~20 connections a second between them.
            dos_source_rate: 10.0,
            converge_after: Duration::from_secs(300),
            limit_for: Duration::from_secs(120),
            global_exempt: vec![25],
            repeat_multiplier: 4,
            max_bantime: Duration::from_secs(7 * 86400),
            prefix_after: 5,
            rate_horizon: Duration::from_secs(3),
            // Several hosts of one ISP at ~20 new connections a second together, each under dos_source_rate.
            prefix_rate: 15.0,
            prefix_v4: 24,
            prefix_v6: 64,
            prefix_ban: PrefixBan::Hosts,
        }
    }
}

/// What `floodgate run` reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sources {
    /// Log files, tailed like `tail -F` (rotation by rename or copytruncate; a missing file is waited for).
    pub files: Vec<PathBuf>,
    /// On first sight of a file, read it from the beginning instead of only what is appended.
    pub from_start: bool,
    /// Kernel records (SYN flooding, conntrack table full) from /dev/kmsg.
    pub kmsg: bool,
    pub kmsg_path: PathBuf,
    /// SNMP counters (/proc/net/netstat) polled every `netstat_interval`: what measures a SYN flood after the
    /// kernel's one warning line.
    pub netstat: bool,
    pub netstat_path: PathBuf,
    #[serde(deserialize_with = "de_duration")]
    pub netstat_interval: Duration,
    /// Conntrack NEW and DESTROY events over netlink (off by default: the busiest source by far).
    pub conntrack: bool,
    /// `journalctl -f -o json` as a child, for hosts without log files; `journald_args` narrows it.
    pub journald: bool,
    pub journald_args: Vec<String>,
}

/// The daemon itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
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

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            // Debian's rsyslog: MTA and IMAP/POP logs in mail.log, sshd in auth.log.
            files: vec![PathBuf::from("/var/log/mail.log"), PathBuf::from("/var/log/auth.log")],
            from_start: false,
            kmsg: true,
            kmsg_path: PathBuf::from("/dev/kmsg"),
            netstat: true,
            netstat_path: PathBuf::from("/proc/net/netstat"),
            netstat_interval: Duration::from_secs(1),
            conntrack: false,
            journald: false,
            journald_args: Vec::new(),
        }
    }
}

impl Default for Daemon {
    fn default() -> Daemon {
        Daemon {
            socket: PathBuf::from("/run/floodgate/floodgate.sock"),
            // Each batch holds up to 1,024 lines: 64 batches bound the backlog in memory to ~64k lines; a
            // file source simply waits beyond that (the file is its own buffer).
            queue: 64,
            tick: Duration::from_secs(1),
            verify_every: Duration::from_secs(60),
        }
    }
}

/// How decisions reach the kernel: floodgate's own table and the rates its limits apply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Enforce {
    /// The table floodgate owns (family inet). It never touches any other.
    pub table: String,
    /// `block` refuses IPv4 prefixes wider than this (a /8 typo should not cut off a continent).
    pub widest_prefix_v4: u8,
    pub widest_prefix_v6: u8,
    /// Per-source (hashlimit-style) limit on new connections: `20/second`, with its burst in packets.
    #[serde(deserialize_with = "de_rate")]
    pub source_rate: Rate,
    pub source_burst: u32,
    /// Global (limit-style) limit on new connections from everyone but the allowlist.
    #[serde(deserialize_with = "de_rate")]
    pub global_rate: Rate,
    pub global_burst: u32,
}

/// A rate of packets: `count` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub per: Per,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per {
            Per::Second => "second",
            Per::Minute => "minute",
            Per::Hour => "hour",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(text: &str) -> Result<Rate, String> {
        let bad = || format!("`{text}` is not a rate; write e.g. 20/second, 600/minute, 1000/hour");
        let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "second" | "s" => Per::Second,
            "minute" | "m" => Per::Minute,
            "hour" | "h" => Per::Hour,
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("`{text}`: a rate of zero would drop everything; use a ban instead"));
        }
        Ok(Rate { count, per })
    }
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jail {
    /// Failures from one source within `findtime` that earn a ban.
    pub maxretry: u32,
    #[serde(deserialize_with = "de_duration")]
    pub findtime: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub bantime: Duration,
    /// Which rules count as failures: `normal` (what fail2ban's normal mode counts) or `aggressive` (also the
    /// judgement calls: scanners that never try to log in, 4xx spam-bot signatures).
    pub level: crate::parse::rules::Level,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub ports: Vec<u16>,
    /// This service's rule level, instead of the jail's.
    pub level: Option<crate::parse::rules::Level>,
    pub maxretry: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub findtime: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub bantime: Option<Duration>,
    /// This service's own limits, instead of `enforce`'s.
    #[serde(default, deserialize_with = "de_opt_rate")]
    pub source_rate: Option<Rate>,
    pub source_burst: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_rate")]
    pub global_rate: Option<Rate>,
    pub global_burst: Option<u32>,
    /// Only these countries may open connections to the service's ports (the allowlist always may).
    #[serde(default)]
    pub countries: Vec<crate::geo::Country>,
    /// These countries may not.
    #[serde(default)]
    pub deny_countries: Vec<crate::geo::Country>,
    /// The kernel's SYN proxy for this service's ports: `auto`, `never` or `always` (see `SynproxyMode`).
    #[serde(default)]
    pub synproxy: SynproxyMode,
}

impl Service {
    /// The service's country restriction, if any: (deny, countries). `deny` false: only these countries.
    pub fn country_rule(&self) -> Option<(bool, &[crate::geo::Country])> {
        match (self.countries.is_empty(), self.deny_countries.is_empty()) {
            (false, _) => Some((false, &self.countries)),
            (true, false) => Some((true, &self.deny_countries)),
            (true, true) => None,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        let svc = |ports: &[u16], maxretry: Option<u32>| Service {
            ports: ports.to_vec(),
            level: None,
            maxretry,
            findtime: None,
            bantime: None,
            source_rate: None,
            source_burst: None,
            global_rate: None,
            global_burst: None,
            countries: Vec::new(),
            deny_countries: Vec::new(),
            synproxy: SynproxyMode::Auto,
        };
        // A mail server: SMTP must accept the world, so it tolerates more before a ban;
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
            enforce: Enforce::default(),
            sources: Sources::default(),
            daemon: Daemon::default(),
            policy: PolicyConfig::default(),
            notify: crate::notice::NotifyConfig::default(),
            geo: GeoConfig::default(),
        }
    }
}

impl Default for Enforce {
    fn default() -> Enforce {
        // A legitimate mail peer opens a handful of connections a second at most; 20/s with a burst of 40 per
        // source leaves room for a busy relay. The global figure is what the server can serve in a flood.
        Enforce {
            table: "floodgate".into(),
            widest_prefix_v4: 16,
            widest_prefix_v6: 32,
            source_rate: Rate { count: 20, per: Per::Second },
            source_burst: 40,
            global_rate: Rate { count: 200, per: Per::Second },
            global_burst: 400,
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
        Jail {
            maxretry: 5,
            findtime: Duration::from_secs(600),
            bantime: Duration::from_secs(3600),
            level: crate::parse::rules::Level::Normal,
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
            if !s.countries.is_empty() && !s.deny_countries.is_empty() {
                return Err(format!(
                    "services.{name}: countries (allow only these) and deny_countries exclude each other; use one"
                ));
            }
            let restricted = s.country_rule().is_some();
            let set_name_ok =
                name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if restricted && !set_name_ok {
                return Err(format!(
                    "services.{name}: a country-restricted service needs a name of at most 32 letters, digits, _ or - \
                     (it names the service's nftables sets)"
                ));
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
        let e = &self.enforce;
        let name_ok = |n: &str| {
            !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !name_ok(&e.table) {
            return Err(format!("enforce.table: `{}` is not a table name (letters, digits, _ and -)", e.table));
        }
        if e.widest_prefix_v4 == 0 || e.widest_prefix_v4 > 32 {
            return Err("enforce.widest_prefix_v4: between 1 and 32".into());
        }
        if e.widest_prefix_v6 == 0 || e.widest_prefix_v6 > 128 {
            return Err("enforce.widest_prefix_v6: between 1 and 128".into());
        }
        let bursts = self.services.iter().flat_map(|(n, s)| {
            [
                (format!("services.{n}.source_burst"), s.source_burst),
                (format!("services.{n}.global_burst"), s.global_burst),
            ]
        });
        for (key, b) in [
            ("enforce.source_burst".to_string(), Some(e.source_burst)),
            ("enforce.global_burst".into(), Some(e.global_burst)),
        ]
        .into_iter()
        .chain(bursts)
        {
            if b == Some(0) {
                return Err(format!("{key}: a burst of 0 drops the first packet; at least 1"));
            }
        }
        self.notify.validate()?;
        let p = &self.policy;
        if p.window < Duration::from_secs(10) || p.ddos_distinct == 0 || p.port_rate <= 0.0 || p.dos_source_rate <= 0.0
        {
            return Err("policy: window at least 10s; ddos_distinct, port_rate, dos_source_rate above zero".into());
        }
        if !(0.0..=1.0).contains(&p.concentrated_share) {
            return Err("policy.concentrated_share: a share between 0 and 1".into());
        }
        if p.rate_horizon < Duration::from_secs(1) || p.rate_horizon > p.window || p.rate_horizon.subsec_nanos() != 0 {
            return Err("policy.rate_horizon: whole seconds, at least 1s and at most the window".into());
        }
        if !(p.prefix_rate >= 0.0 && p.prefix_rate.is_finite()) {
            return Err("policy.prefix_rate: a rate of zero (off) or more".into());
        }
        if !(8..=32).contains(&p.prefix_v4) || !(16..=128).contains(&p.prefix_v6) {
            return Err("policy.prefix_v4 / policy.prefix_v6: between 8 and 32 / 16 and 128".into());
        }
        if p.limit_for < Duration::from_secs(10) {
            return Err("policy.limit_for: at least 10s (it is refreshed at half its life)".into());
        }
        if self.daemon.queue == 0 {
            return Err("daemon.queue: at least 1".into());
        }
        if self.daemon.tick < Duration::from_millis(100) || self.sources.netstat_interval < Duration::from_millis(100) {
            return Err("daemon.tick / sources.netstat_interval: at least 100ms".into());
        }
        if self.services.values().any(|s| s.country_rule().is_some()) {
            if self.geo.sources.is_empty() {
                return Err("geo.sources: country-restricted services need at least one range source".into());
            }
            if self.geo.max_mib == 0 || self.geo.timeout.is_zero() {
                return Err("geo.max_mib / geo.timeout: above zero".into());
            }
        }
        crate::geo::fetch::validate_all(&self.geo.sources)?;
        if let Some(c) = self.allowlist.iter().find(|c| c.prefix_len() == 0) {
            return Err(format!("allowlist: `{c}` would exempt every address"));
        }
        Ok(())
    }

    /// Each configured port's SYN proxy setting.
    pub fn synproxy_modes(&self) -> BTreeMap<u16, SynproxyMode> {
        self.services.values().flat_map(|s| s.ports.iter().map(|&p| (p, s.synproxy))).collect()
    }

    /// The limits of every configured port, for the ruleset.
    pub fn port_limits(&self) -> Vec<PortLimits> {
        let e = &self.enforce;
        let mut out: Vec<PortLimits> = self
            .services
            .values()
            .flat_map(|s| {
                let source = s.source_rate.unwrap_or(e.source_rate);
                let global = s.global_rate.unwrap_or(e.global_rate);
                let per_source =
                    Limit { rate: source.count, per: source.per, burst: s.source_burst.unwrap_or(e.source_burst) };
                let global =
                    Limit { rate: global.count, per: global.per, burst: s.global_burst.unwrap_or(e.global_burst) };
                s.ports.iter().map(move |&port| PortLimits { port, per_source, global })
            })
            .collect();
        out.sort_by_key(|p| p.port);
        out
    }

    pub fn ruleset(&self) -> Ruleset {
        let geo = self
            .services
            .iter()
            .filter_map(|(name, s)| {
                let (deny, _) = s.country_rule()?;
                Some(GeoRule { service: name.clone(), ports: s.ports.clone(), deny })
            })
            .collect();
        let mut synproxy_ports: Vec<u16> = self
            .services
            .values()
            .filter(|s| s.synproxy != SynproxyMode::Never)
            .flat_map(|s| s.ports.iter().copied())
            .collect();
        synproxy_ports.sort_unstable();
        Ruleset {
            table: self.enforce.table.clone(),
            ports: self.port_limits(),
            geo,
            owner: None,
            track: self.sources.conntrack,
            // The shape of a standard Ethernet host; the daemon measures the real one (enforce::synproxy).
            synproxy: crate::nft::ruleset::Synproxy::standard(synproxy_ports),
        }
    }

    pub fn service_ports(&self) -> ServicePorts {
        self.services.iter().map(|(n, s)| (n.clone(), s.ports.clone())).collect()
    }

    /// Which rule levels count as failures, per service.
    pub fn levels(&self) -> crate::parse::Levels {
        crate::parse::Levels {
            default: self.jail.level,
            per_service: self.services.iter().filter_map(|(n, s)| Some((n.clone(), s.level?))).collect(),
        }
    }
}

impl Config {
    /// The longest failure window of the jail and the services: how far back the policy's memory reaches.
    pub fn longest_findtime(&self) -> Duration {
        self.services.values().filter_map(|s| s.findtime).chain([self.jail.findtime]).max().unwrap_or_default()
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

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn de_opt_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
    de_rate(d).map(Some)
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
        let e = err("[enforce]\nsource_rate = \"fast\"\n");
        assert!(e.contains("line 2") && e.contains("`fast` is not a rate"), "{e}");
        let e = err("[enforce]\ntable = \"a b\"\n");
        assert!(e.contains("enforce.table"), "{e}");
        let e = err("[services.a]\nports = [25]\nglobal_burst = 0\n");
        assert!(e.contains("services.a.global_burst"), "{e}");
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
