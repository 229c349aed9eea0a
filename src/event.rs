//! The typed event: what one log line, kernel record or conntrack message says about an attack.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

/// What happened. Failures count against the source; signals are context (connections, logins, kernel state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    AuthFailure,
    RelayDenied,
    UnknownRecipient,
    Rejected,
    Pipelining,
    ProtocolError,
    DnsblListed,
    TooManyErrors,
    RateLimitExceeded,
    LostConnection,
    Connect,
    Disconnect,
    LoginOk,
    SynFlood,
    ConntrackTableFull,
    ConnNew,
    ConnDestroy,
    /// A kernel SNMP counter that rose (TCPReqQFullDoCookies, ListenOverflows, ...): `rule` names the counter,
    /// `count` the increase over the polling interval. What measures a SYN flood after its one kernel line.
    KernelCounter,
    /// A connection completed its TCP handshake (conntrack set ASSURED): its source is real, known within
    /// milliseconds of the handshake rather than when the entry dies.
    ConnAssured,
}

impl Kind {
    pub const ALL: [Kind; 19] = [
        Kind::AuthFailure,
        Kind::RelayDenied,
        Kind::UnknownRecipient,
        Kind::Rejected,
        Kind::Pipelining,
        Kind::ProtocolError,
        Kind::DnsblListed,
        Kind::TooManyErrors,
        Kind::RateLimitExceeded,
        Kind::LostConnection,
        Kind::Connect,
        Kind::Disconnect,
        Kind::LoginOk,
        Kind::SynFlood,
        Kind::ConntrackTableFull,
        Kind::ConnNew,
        Kind::ConnDestroy,
        Kind::KernelCounter,
        Kind::ConnAssured,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AuthFailure => "auth_failure",
            Kind::RelayDenied => "relay_denied",
            Kind::UnknownRecipient => "unknown_recipient",
            Kind::Rejected => "rejected",
            Kind::Pipelining => "pipelining",
            Kind::ProtocolError => "protocol_error",
            Kind::DnsblListed => "dnsbl_listed",
            Kind::TooManyErrors => "too_many_errors",
            Kind::RateLimitExceeded => "rate_limit_exceeded",
            Kind::LostConnection => "lost_connection",
            Kind::Connect => "connect",
            Kind::Disconnect => "disconnect",
            Kind::LoginOk => "login_ok",
            Kind::SynFlood => "syn_flood",
            Kind::ConntrackTableFull => "conntrack_table_full",
            Kind::ConnNew => "conn_new",
            Kind::ConnDestroy => "conn_destroy",
            Kind::KernelCounter => "kernel_counter",
            Kind::ConnAssured => "conn_assured",
        }
    }

    /// Whether an event of this kind counts against its source unless its rule says otherwise.
    /// A lost connection is a signal by default: real clients drop connections too.
    pub fn is_failure_by_default(self) -> bool {
        matches!(
            self,
            Kind::AuthFailure
                | Kind::RelayDenied
                | Kind::UnknownRecipient
                | Kind::Rejected
                | Kind::Pipelining
                | Kind::ProtocolError
                | Kind::DnsblListed
                | Kind::TooManyErrors
                | Kind::RateLimitExceeded
        )
    }

    /// Stable small integer stored in the database (see migrations/0001_initial.sql, table `kinds`).
    pub fn code(self) -> i64 {
        Kind::ALL.iter().position(|k| *k == self).expect("kind is in ALL") as i64 + 1
    }

    pub fn from_code(code: i64) -> Option<Kind> {
        usize::try_from(code - 1).ok().and_then(|i| Kind::ALL.get(i).copied())
    }

    /// High-volume kinds that the store aggregates per source, port and minute.
    pub fn is_aggregated(self) -> bool {
        matches!(self, Kind::ConnNew | Kind::ConnDestroy | Kind::ConnAssured)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown event kind `{s}` (known: {})", names.join(", "))
        })
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What the kernel did when a listener's SYN queue overflowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SynAction {
    Cookies,
    Dropping,
}

impl SynAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SynAction::Cookies => "cookies",
            SynAction::Dropping => "dropping",
        }
    }
}

/// One event. `addr` is the remote (offending) side; `local_addr` and `port` are this host's side, e.g. the
/// listener named by a SYN-flood line, which never names the attacker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(serialize_with = "ser_time")]
    pub time: DateTime<Utc>,
    pub kind: Kind,
    pub failure: bool,
    pub rule: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_addr: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Attempts this one line stands for (Dovecot's "auth failed, 3 attempts"); 1 for most lines.
    pub count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_action: Option<SynAction>,
    /// conn_destroy: whether the connection ever completed its handshake (proof the source is not spoofed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assured: Option<bool>,
}

impl Event {
    /// An event with only its time, kind and rule set: failure as the kind's default, one attempt.
    pub fn new(time: DateTime<Utc>, kind: Kind, rule: Arc<str>) -> Event {
        Event {
            time,
            kind,
            failure: kind.is_failure_by_default(),
            rule,
            addr: None,
            local_addr: None,
            port: None,
            service: None,
            user: None,
            count: 1,
            syn_action: None,
            assured: None,
        }
    }
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(t))
}

/// RFC 3339 in UTC, with a fraction only when the source had one.
pub fn format_time(t: &DateTime<Utc>) -> String {
    use chrono::SecondsFormat;
    if t.timestamp_subsec_nanos() == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_round_trip_and_names_parse() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k.code()), Some(k));
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        }
        assert_eq!(Kind::from_code(0), None);
        assert!("nonsense".parse::<Kind>().unwrap_err().contains("auth_failure"));
    }
}
