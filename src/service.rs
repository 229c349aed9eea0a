//! A protected service (`[services.NAME]`): its ports, and what it overrides of the jail, the limits, the
//! countries and the SYN proxy. Every stage reads it (parse names events by port, the policy takes its jail
//! values, enforcement its limits), so it is a noun of its own; its section validates itself here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::geo::Country;
use crate::nft::Rate;
use crate::parse::rules::Level;
use crate::setting::{de_opt_duration, Invalid};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub ports: Vec<u16>,
    /// This service's rule level, instead of the jail's.
    pub level: Option<Level>,
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
    pub countries: Vec<Country>,
    /// These countries may not.
    #[serde(default)]
    pub deny_countries: Vec<Country>,
    /// The kernel's SYN proxy for this service's ports: `auto`, `never` or `always` (see `SynproxyMode`).
    #[serde(default)]
    pub synproxy: SynproxyMode,
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

impl Service {
    /// A service on `ports` that overrides nothing.
    pub fn on(ports: &[u16]) -> Service {
        Service {
            ports: ports.to_vec(),
            level: None,
            maxretry: None,
            findtime: None,
            bantime: None,
            source_rate: None,
            source_burst: None,
            global_rate: None,
            global_burst: None,
            countries: Vec::new(),
            deny_countries: Vec::new(),
            synproxy: SynproxyMode::Auto,
        }
    }

    /// The service's country restriction, if any: (deny, countries). `deny` false: only these countries.
    pub fn country_rule(&self) -> Option<(bool, &[Country])> {
        match (self.countries.is_empty(), self.deny_countries.is_empty()) {
            (false, _) => Some((false, &self.countries)),
            (true, false) => Some((true, &self.deny_countries)),
            (true, true) => None,
        }
    }
}

/// The protected services by name. A file that lists services replaces the preset's list entirely.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Services(BTreeMap<String, Service>);

impl std::ops::Deref for Services {
    type Target = BTreeMap<String, Service>;
    fn deref(&self) -> &BTreeMap<String, Service> {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Services {
    type Item = (&'a String, &'a Service);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Service>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<(String, Service)> for Services {
    fn from_iter<I: IntoIterator<Item = (String, Service)>>(iter: I) -> Services {
        Services(iter.into_iter().collect())
    }
}

impl Default for Services {
    /// A mail server: SMTP must accept the world, so it tolerates more before a ban; the authenticated services
    /// are stricter.
    fn default() -> Services {
        let svc = |ports: &[u16], maxretry: Option<u32>| Service { maxretry, ..Service::on(ports) };
        [
            ("smtp", svc(&[25], Some(10))),
            ("submission", svc(&[587], None)),
            ("smtps", svc(&[465], None)),
            ("imap", svc(&[143, 993], None)),
            ("pop3", svc(&[110, 995], None)),
            ("sieve", svc(&[4190], None)),
            ("ssh", svc(&[22], None)),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect()
    }
}

impl Services {
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut owner: BTreeMap<u16, &str> = BTreeMap::new();
        for (name, s) in self {
            let key = |k: &str| format!("services.{name}.{k}");
            if s.ports.is_empty() {
                return Err(Invalid::new(key("ports"), "a service needs at least one port"));
            }
            for &p in &s.ports {
                if p == 0 {
                    return Err(Invalid::new(key("ports"), "port 0 is not a port"));
                }
                if let Some(other) = owner.insert(p, name) {
                    return Err(Invalid::new(key("ports"), format!("port {p} already belongs to service `{other}`")));
                }
            }
            if s.maxretry == Some(0) {
                return Err(Invalid::new(key("maxretry"), "must be at least 1"));
            }
            if !s.countries.is_empty() && !s.deny_countries.is_empty() {
                return Err(Invalid::new(
                    key("deny_countries"),
                    "countries (allow only these) and deny_countries exclude each other; use one",
                ));
            }
            let set_name_ok =
                name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if s.country_rule().is_some() && !set_name_ok {
                return Err(Invalid::new(
                    format!("services.{name}"),
                    "a country-restricted service needs a name of at most 32 letters, digits, _ or - \
                     (it names the service's nftables sets)",
                ));
            }
            for (k, d) in [("findtime", s.findtime), ("bantime", s.bantime)] {
                if d == Some(Duration::ZERO) {
                    return Err(Invalid::new(key(k), "must be longer than zero"));
                }
            }
            for (k, b) in [("source_burst", s.source_burst), ("global_burst", s.global_burst)] {
                if b == Some(0) {
                    return Err(Invalid::new(key(k), "a burst of 0 drops the first packet; at least 1"));
                }
            }
        }
        Ok(())
    }

    /// Each service's ports, for naming events by the port they arrived on.
    pub fn ports(&self) -> crate::parse::ServicePorts {
        self.iter().map(|(n, s)| (n.clone(), s.ports.clone())).collect()
    }

    /// Which rule levels count as failures: each service's own, else the jail's `default`.
    pub fn levels(&self, default: Level) -> crate::parse::Levels {
        crate::parse::Levels {
            default,
            per_service: self.iter().filter_map(|(n, s)| Some((n.clone(), s.level?))).collect(),
        }
    }

    /// The longest failure window of the services and the jail's `default`: how far back the policy's memory
    /// reaches.
    pub fn longest_findtime(&self, default: Duration) -> Duration {
        self.values().filter_map(|s| s.findtime).chain([default]).max().unwrap_or_default()
    }

    /// Each configured port's SYN proxy setting.
    pub fn synproxy_modes(&self) -> BTreeMap<u16, SynproxyMode> {
        self.values().flat_map(|s| s.ports.iter().map(|&p| (p, s.synproxy))).collect()
    }

    /// Whether any service takes connections only from (or not from) some countries.
    pub fn country_restricted(&self) -> bool {
        self.values().any(|s| s.country_rule().is_some())
    }
}

fn de_opt_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}
