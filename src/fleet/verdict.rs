//! The wire format of one entry in the fleet's key-value bucket: how a host's ban, an operator's fleet-wide
//! block or unblock is named (the key) and written (the JSON value), and the checks a receiver makes before
//! believing any of it. Every other host, and whoever holds a host's credentials, writes what is read here, so
//! decoding refuses rather than guesses, and never panics.
//!
//! Keys (NATS allows `[-/_=.a-zA-Z0-9]+`, so an address is spelled in hex):
//! - `b.<host>.<target>`: a host's own ban; deleting or purging it lifts the ban ([`Entry::Lift`]).
//! - `o.<target>`: an operator's fleet-wide block; deleting it withdraws the block ([`Entry::BlockWithdrawn`]).
//! - `u.<target>`: an operator's fleet-wide unblock; deleting it withdraws the unblock
//!   ([`Entry::UnblockWithdrawn`]): the bans still in the bucket apply again, exactly as a fresh reader of the
//!   bucket would see them.
//!
//! - `h.<host>`: a host's heartbeat ([`Beat`]), rewritten every few seconds with its counts; read for `fleet
//!   status` (last heard, lag), never applied.
//!
//! `<host>` is 1 to 64 of `[A-Za-z0-9_-]`; `<target>` is `v4_<8 hex>_<len>` or `v6_<32 hex>_<len>`, the network
//! address of the prefix in lowercase hex, with a length of at least 1 (a /0 bans the whole internet).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::addr::Cidr;

/// The format this floodgate writes. A value with a higher `v` comes from a newer floodgate: it is skipped
/// ([`Entry::Newer`]), not refused, so a fleet can be upgraded one host at a time.
pub const FORMAT: u64 = 1;

/// The largest value read. A verdict is a few hundred bytes; the limit keeps one entry from costing much.
pub const MAX_VALUE_BYTES: usize = 4096;

/// How far ahead of this host's clock another host's `made` may be: clocks drift, but not by more than this on
/// a fleet that runs NTP, and a verdict "made" in the future would outlive an unblock made before it.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

/// A ban one host decided (or an operator decided for the whole fleet), as it travels between hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The host that made it (for an operator's block: the operator's name, checked the same way).
    pub host: String,
    pub target: Cidr,
    /// `None`: forever.
    pub until: Option<DateTime<Utc>>,
    pub made: DateTime<Utc>,
    pub reason: String,
    /// What decided it on that host: a jail's name, `manual`.
    pub origin: String,
    /// What led to it (counts, evidence), kept with the decision; a JSON object.
    pub figures: Option<serde_json::Value>,
}

/// What one bucket entry (a key and its value, or its deletion) means.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// `b.<host>.<target>` written.
    Ban(Verdict),
    /// `b.<host>.<target>` deleted or purged: that host no longer bans the target.
    Lift { host: String, target: Cidr },
    /// `o.<target>` written.
    BlockEverywhere(Verdict),
    /// `o.<target>` deleted or purged.
    BlockWithdrawn { target: Cidr },
    /// `u.<target>` written: every ban of the target made at or before `made` stops applying.
    UnblockEverywhere { target: Cidr, made: DateTime<Utc> },
    /// `u.<target>` deleted or purged: the bans it overrode (if still in the bucket) apply again.
    UnblockWithdrawn { target: Cidr },
    /// `h.<host>` written (a beat) or deleted (`None`: the host left).
    Heartbeat { host: String, beat: Option<Beat> },
    /// A value from a newer floodgate (`v` above [`FORMAT`]); the caller skips it with a warning.
    Newer { key: String },
}

/// A host's heartbeat: that it is alive, when it said so, and its counts (as its `status` shows them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beat {
    pub v: u64,
    pub host: String,
    pub at: DateTime<Utc>,
    /// This host's bans written to the bucket, withdrawn from it.
    pub published: u64,
    pub withdrawn: u64,
    /// Other hosts' bans applied here; entries refused (not believed, over a limit, or by the gate).
    pub applied: u64,
    pub refused: u64,
    /// Other hosts' verdicts held now.
    pub held: u64,
    /// The floodgate version that wrote it.
    pub version: String,
}

/// The key of `host`'s heartbeat.
pub fn heartbeat_key(host: &str) -> String {
    format!("h.{host}")
}

impl Beat {
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// Why an entry was not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("value of {0} bytes is over the {MAX_VALUE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("key is not b.<host>.<target>, o.<target>, u.<target> or h.<host>: {0}")]
    BadKey(&'static str),
    #[error("value is not a version-1 fleet entry: {0}")]
    BadJson(String),
    #[error("the value's {0} is not canonical or not valid")]
    BadField(&'static str),
    #[error("the value's {0} differs from the key's")]
    Mismatch(&'static str),
    /// The key's last value says its ban is over, so an earlier value of the key no longer holds either: the
    /// caller applies the key as deleted (`decode(key, None, now)`), as a fresh reader of the bucket would see it.
    #[error("the ban has already ended")]
    Expired,
    #[error("the {0} is too far in the future (clock skew or a forged entry)")]
    TooFar(&'static str),
    #[error("the ban ends before it was made")]
    EndsBeforeMade,
}

impl Verdict {
    /// The key of this verdict as a host's own ban (`b.<host>.<target>`).
    pub fn key(&self) -> String {
        ban_key(&self.host, &self.target)
    }

    /// The JSON value. A value over [`MAX_VALUE_BYTES`] would be refused by every receiver, so the figures are
    /// dropped first and then the reason is shortened until it fits.
    pub fn encode(&self) -> Vec<u8> {
        let mut wire = VerdictWire::from(self);
        let mut bytes = to_json(&wire);
        if bytes.len() > MAX_VALUE_BYTES {
            wire.figures = None;
            bytes = to_json(&wire);
        }
        while bytes.len() > MAX_VALUE_BYTES && !wire.reason.is_empty() {
            // Escaping only lengthens text, so cutting the excess from the raw reason is always enough.
            let excess = bytes.len() - MAX_VALUE_BYTES;
            let mut keep = wire.reason.len().saturating_sub(excess);
            while !wire.reason.is_char_boundary(keep) {
                keep -= 1;
            }
            wire.reason.truncate(keep);
            bytes = to_json(&wire);
        }
        bytes
    }

    /// Whether receivers will believe this verdict as a host's ban, checked before publishing it: the same
    /// checks as [`decode`], so a host never publishes what the others refuse.
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), Refusal> {
        decode(&self.key(), Some(&self.encode()), now).map(|_| ())
    }
}

/// `b.<host>.<target>`: a host's own ban.
pub fn ban_key(host: &str, target: &Cidr) -> String {
    format!("b.{host}.{}", target_text(target))
}

/// `o.<target>`: an operator's fleet-wide block (its value is a [`Verdict`]'s encoding).
pub fn block_key(target: &Cidr) -> String {
    format!("o.{}", target_text(target))
}

/// `u.<target>`: an operator's fleet-wide unblock.
pub fn unblock_key(target: &Cidr) -> String {
    format!("u.{}", target_text(target))
}

/// The value of an unblock: `{"v":1,"target":...,"made":...}`.
pub fn encode_unblock(target: &Cidr, made: DateTime<Utc>) -> Vec<u8> {
    to_json(&UnblockWire { v: FORMAT, target: canonical(target), made })
}

/// Reads one bucket entry; `value` is `None` when the key was deleted or purged. `now` is this host's clock,
/// against which the times in the value are judged.
pub fn decode(key: &str, value: Option<&[u8]>, now: DateTime<Utc>) -> Result<Entry, Refusal> {
    if let Some(v) = value {
        if v.len() > MAX_VALUE_BYTES {
            return Err(Refusal::TooLarge(v.len()));
        }
    }
    let kind = parse_key(key)?;
    let Some(value) = value else {
        return Ok(match kind {
            Key::Ban { host, target } => Entry::Lift { host: host.to_string(), target },
            Key::Block(target) => Entry::BlockWithdrawn { target },
            Key::Unblock(target) => Entry::UnblockWithdrawn { target },
            Key::Heartbeat(host) => Entry::Heartbeat { host: host.to_string(), beat: None },
        });
    };
    // The version is read first and alone: a newer floodgate may have added fields that this one would refuse.
    let probe: Probe = serde_json::from_slice(value).map_err(|e| Refusal::BadJson(e.to_string()))?;
    if probe.v > FORMAT {
        return Ok(Entry::Newer { key: key.to_string() });
    }
    if probe.v < FORMAT {
        return Err(Refusal::BadJson(format!("version {} (the first is {FORMAT})", probe.v)));
    }
    match kind {
        Key::Ban { host, target } => {
            let verdict = read_verdict(value, target, now)?;
            if verdict.host != host {
                return Err(Refusal::Mismatch("host"));
            }
            Ok(Entry::Ban(verdict))
        }
        Key::Block(target) => Ok(Entry::BlockEverywhere(read_verdict(value, target, now)?)),
        Key::Unblock(target) => {
            let wire: UnblockWire = serde_json::from_slice(value).map_err(|e| Refusal::BadJson(e.to_string()))?;
            if wire.target != canonical(&target) {
                return Err(target_refusal(&wire.target));
            }
            if wire.made > now + MAX_CLOCK_SKEW {
                return Err(Refusal::TooFar("made"));
            }
            Ok(Entry::UnblockEverywhere { target, made: wire.made })
        }
        Key::Heartbeat(host) => {
            let beat: Beat = serde_json::from_slice(value).map_err(|e| Refusal::BadJson(e.to_string()))?;
            if beat.host != host {
                return Err(Refusal::Mismatch("host"));
            }
            if beat.at > now + MAX_CLOCK_SKEW {
                return Err(Refusal::TooFar("at"));
            }
            if beat.version.len() > 64 || beat.version.chars().any(char::is_control) {
                return Err(Refusal::BadField("version"));
            }
            Ok(Entry::Heartbeat { host: host.to_string(), beat: Some(beat) })
        }
    }
}

enum Key<'k> {
    Ban { host: &'k str, target: Cidr },
    Block(Cidr),
    Unblock(Cidr),
    Heartbeat(&'k str),
}

fn parse_key(key: &str) -> Result<Key<'_>, Refusal> {
    let mut parts = key.split('.');
    let kind = parts.next().unwrap_or_default();
    let parsed = match kind {
        "b" => {
            let host = parts.next().ok_or(Refusal::BadKey("no host"))?;
            if !valid_host(host) {
                return Err(Refusal::BadKey("host is not 1-64 of A-Z a-z 0-9 _ -"));
            }
            Key::Ban { host, target: parse_target(parts.next())? }
        }
        "o" => Key::Block(parse_target(parts.next())?),
        "u" => Key::Unblock(parse_target(parts.next())?),
        "h" => {
            let host = parts.next().ok_or(Refusal::BadKey("no host"))?;
            if !valid_host(host) {
                return Err(Refusal::BadKey("host is not 1-64 of A-Z a-z 0-9 _ -"));
            }
            Key::Heartbeat(host)
        }
        _ => return Err(Refusal::BadKey("unknown kind")),
    };
    if parts.next().is_some() {
        return Err(Refusal::BadKey("extra parts"));
    }
    Ok(parsed)
}

/// `v4_c6336407_32` -> 198.51.100.7/32. Only the one spelling [`target_text`] writes is taken (lowercase,
/// no leading zeros in the length, host bits clear, no IPv4-mapped IPv6), so one target has one key.
fn parse_target(text: Option<&str>) -> Result<Cidr, Refusal> {
    let text = text.ok_or(Refusal::BadKey("no target"))?;
    let mut parts = text.splitn(3, '_');
    let (family, hex, len) = match (parts.next(), parts.next(), parts.next()) {
        (Some(f), Some(h), Some(l)) => (f, h, l),
        _ => return Err(Refusal::BadKey("target is not v4_<hex>_<len> or v6_<hex>_<len>")),
    };
    let len: u8 = len.parse().map_err(|_| Refusal::BadKey("target length is not a number"))?;
    let addr: std::net::IpAddr = match family {
        "v4" => u32::from_str_radix(hex, 16).map(|a| std::net::Ipv4Addr::from(a).into()),
        "v6" => u128::from_str_radix(hex, 16).map(|a| std::net::Ipv6Addr::from(a).into()),
        _ => return Err(Refusal::BadKey("target family is not v4 or v6")),
    }
    .map_err(|_| Refusal::BadKey("target address is not hex"))?;
    if len == 0 {
        return Err(Refusal::BadKey("target length is 0 (the whole address space)"));
    }
    let cidr = Cidr::new(addr, len).ok_or(Refusal::BadKey("target length is out of range"))?;
    if target_text(&cidr) != text {
        return Err(Refusal::BadKey("target is not a network address in canonical form"));
    }
    Ok(cidr)
}

fn target_text(target: &Cidr) -> String {
    match target.addr() {
        std::net::IpAddr::V4(a) => format!("v4_{:08x}_{}", u32::from(a), target.prefix_len()),
        std::net::IpAddr::V6(a) => format!("v6_{:032x}_{}", u128::from(a), target.prefix_len()),
    }
}

/// The value's spelling of a target: always with its length (`198.51.100.7/32`).
fn canonical(target: &Cidr) -> String {
    format!("{}/{}", target.addr(), target.prefix_len())
}

fn target_refusal(text: &str) -> Refusal {
    if text.parse::<Cidr>().is_ok() {
        Refusal::Mismatch("target")
    } else {
        Refusal::BadField("target")
    }
}

fn valid_host(host: &str) -> bool {
    (1..=64).contains(&host.len()) && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn read_verdict(value: &[u8], target: Cidr, now: DateTime<Utc>) -> Result<Verdict, Refusal> {
    let wire: VerdictWire = serde_json::from_slice(value).map_err(|e| Refusal::BadJson(e.to_string()))?;
    if wire.target != canonical(&target) {
        return Err(target_refusal(&wire.target));
    }
    if !valid_host(&wire.host) {
        return Err(Refusal::BadField("host"));
    }
    // Control characters in text that ends up in logs and notices would let a host forge lines there.
    if wire.reason.chars().any(char::is_control) {
        return Err(Refusal::BadField("reason"));
    }
    if wire.origin.is_empty() || wire.origin.chars().any(char::is_control) {
        return Err(Refusal::BadField("origin"));
    }
    if wire.figures.as_ref().is_some_and(|f| !f.is_object()) {
        return Err(Refusal::BadField("figures"));
    }
    if wire.made > now + MAX_CLOCK_SKEW {
        return Err(Refusal::TooFar("made"));
    }
    if let Some(until) = wire.until {
        if until <= now {
            return Err(Refusal::Expired);
        }
        if until <= wire.made {
            return Err(Refusal::EndsBeforeMade);
        }
        if until > now + crate::policy::span(crate::setting::MAX_DURATION) {
            return Err(Refusal::TooFar("until"));
        }
    }
    Ok(Verdict {
        host: wire.host,
        target,
        until: wire.until,
        made: wire.made,
        reason: wire.reason,
        origin: wire.origin,
        figures: wire.figures,
    })
}

fn to_json<T: Serialize>(wire: &T) -> Vec<u8> {
    // Strings, times and a JSON value with string keys: serialising them cannot fail.
    serde_json::to_vec(wire).expect("a fleet value serialises")
}

#[derive(Deserialize)]
struct Probe {
    v: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictWire {
    v: u64,
    host: String,
    target: String,
    /// Required even when null: a writer that forgot it must not make a ban last forever.
    #[serde(deserialize_with = "present")]
    until: Option<DateTime<Utc>>,
    made: DateTime<Utc>,
    reason: String,
    origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    figures: Option<serde_json::Value>,
}

impl From<&Verdict> for VerdictWire {
    fn from(v: &Verdict) -> Self {
        VerdictWire {
            v: FORMAT,
            host: v.host.clone(),
            target: canonical(&v.target),
            until: v.until,
            made: v.made,
            reason: v.reason.clone(),
            origin: v.origin.clone(),
            figures: v.figures.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnblockWire {
    v: u64,
    target: String,
    made: DateTime<Utc>,
}

/// An `Option` that must be written (as a value or `null`): with a `deserialize_with`, serde no longer treats a
/// missing field as `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::deserialize(d)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn now() -> DateTime<Utc> {
        t("2026-12-03T12:00:00Z")
    }

    fn verdict() -> Verdict {
        Verdict {
            host: "mx1".into(),
            target: "198.51.100.7".parse().unwrap(),
            until: Some(t("2026-12-03T13:00:00Z")),
            made: t("2026-12-03T11:59:00Z"),
            reason: "sasl brute force".into(),
            origin: "jail".into(),
            figures: Some(json!({"failures": 12})),
        }
    }

    fn refusal(key: &str, value: &[u8]) -> Refusal {
        decode(key, Some(value), now()).unwrap_err()
    }

    /// The value with one field replaced (or added), as another writer might have made it.
    fn with(field: &str, to: serde_json::Value) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&verdict().encode()).unwrap();
        v[field] = to;
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn keys_spell_the_target_in_hex() {
        let v = verdict();
        assert_eq!(v.key(), "b.mx1.v4_c6336407_32");
        let net: Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!(block_key(&net), "o.v6_20010db8000000000000000000000000_32");
        assert_eq!(unblock_key(&"203.0.113.0/24".parse().unwrap()), "u.v4_cb007100_24");
    }

    #[test]
    fn the_value_is_the_documented_json() {
        let v: serde_json::Value = serde_json::from_slice(&verdict().encode()).unwrap();
        assert_eq!(
            v,
            json!({"v": 1, "host": "mx1", "target": "198.51.100.7/32", "until": "2026-12-03T13:00:00Z",
                   "made": "2026-12-03T11:59:00Z", "reason": "sasl brute force", "origin": "jail",
                   "figures": {"failures": 12}})
        );
        let forever = Verdict { until: None, figures: None, ..verdict() };
        let v: serde_json::Value = serde_json::from_slice(&forever.encode()).unwrap();
        assert_eq!(v["until"], serde_json::Value::Null);
        assert!(v.get("figures").is_none());
    }

    #[test]
    fn every_kind_of_entry_decodes() {
        let v = verdict();
        assert_eq!(decode(&v.key(), Some(&v.encode()), now()), Ok(Entry::Ban(v.clone())));
        let block = Verdict { host: "ops".into(), ..v.clone() };
        assert_eq!(decode(&block_key(&v.target), Some(&block.encode()), now()), Ok(Entry::BlockEverywhere(block)));
        let made = t("2026-12-03T11:00:00Z");
        let u = encode_unblock(&v.target, made);
        assert_eq!(
            decode(&unblock_key(&v.target), Some(&u), now()),
            Ok(Entry::UnblockEverywhere { target: v.target, made })
        );
        assert_eq!(decode(&v.key(), None, now()), Ok(Entry::Lift { host: "mx1".into(), target: v.target }));
        assert_eq!(decode(&block_key(&v.target), None, now()), Ok(Entry::BlockWithdrawn { target: v.target }));
        assert_eq!(decode(&unblock_key(&v.target), None, now()), Ok(Entry::UnblockWithdrawn { target: v.target }));
        let v6 = Verdict { target: "2001:db8:1:2::/64".parse().unwrap(), ..v };
        assert_eq!(v6.key(), "b.mx1.v6_20010db8000100020000000000000000_64");
        assert_eq!(decode(&v6.key(), Some(&v6.encode()), now()), Ok(Entry::Ban(v6)));
    }

    #[test]
    fn a_newer_format_is_skipped_with_its_unknown_fields_but_v1_refuses_them() {
        let key = verdict().key();
        let newer = br#"{"v":2,"host":"mx1","whatever":{"new":true}}"#;
        assert_eq!(decode(&key, Some(newer), now()), Ok(Entry::Newer { key: key.clone() }));
        assert!(matches!(refusal(&key, &with("whatever", json!(1))), Refusal::BadJson(_)));
        assert!(matches!(refusal(&key, &with("v", json!(0))), Refusal::BadJson(_)));
        assert!(matches!(refusal(&key, &with("v", json!("1"))), Refusal::BadJson(_)));
        let unblock = br#"{"v":1,"target":"198.51.100.7/32","made":"2026-12-03T11:00:00Z","by":"ops"}"#;
        assert!(matches!(refusal("u.v4_c6336407_32", unblock), Refusal::BadJson(_)));
    }

    #[test]
    fn garbage_and_huge_values_are_refused() {
        let key = verdict().key();
        for garbage in [&b""[..], b"\xff\xfe\x00", b"null", b"[1,2]", b"{", b"{\"v\":1}", &[b'['; 4000]] {
            assert!(matches!(refusal(&key, garbage), Refusal::BadJson(_)), "{garbage:?}");
        }
        let huge = with("reason", json!("x".repeat(5000)));
        assert_eq!(refusal(&key, &huge), Refusal::TooLarge(huge.len()));
        assert!(matches!(refusal(&key, &with("until", json!("tomorrow"))), Refusal::BadJson(_)));
        let mut missing: serde_json::Value = serde_json::from_slice(&verdict().encode()).unwrap();
        missing.as_object_mut().unwrap().remove("until");
        let missing = serde_json::to_vec(&missing).unwrap();
        assert!(matches!(refusal(&key, &missing), Refusal::BadJson(_)), "a missing until is not forever");
    }

    #[test]
    fn bad_keys_are_refused() {
        let value = verdict().encode();
        for key in [
            "",
            "b",
            "b.mx1",
            "b.mx1.v4_c6336407_32.extra",
            "b..v4_c6336407_32",
            "b.*.v4_c6336407_32",
            "b.>",
            "b.mx.1.v4_c6336407_32",
            "b.mx1.v4_C6336407_32",
            "b.mx1.v4_c633640_32",
            "b.mx1.v4_0c6336407_32",
            "b.mx1.v4_+6336407_32",
            "b.mx1.v4_c6336407_032",
            "b.mx1.v4_c6336407_33",
            "b.mx1.v4_c6336407_",
            "b.mx1.v4_c6336407",
            "b.mx1.v5_c6336407_32",
            "b.mx1.v4_c6336407_24",
            "b.mx1.v4_00000000_0",
            "b.mx1.v6_00000000000000000000ffffc6336407_128",
            "u.v4_c6336407_32.x",
            "x.v4_c6336407_32",
            "o",
            &format!("b.{}.v4_c6336407_32", "h".repeat(65)),
        ] {
            assert!(matches!(decode(key, Some(&value), now()), Err(Refusal::BadKey(_))), "{key}");
            assert!(matches!(decode(key, None, now()), Err(Refusal::BadKey(_))), "deleted {key}");
        }
    }

    #[test]
    fn key_and_value_must_agree() {
        let key = verdict().key();
        assert_eq!(refusal(&key, &with("host", json!("mx2"))), Refusal::Mismatch("host"));
        assert_eq!(refusal(&key, &with("target", json!("198.51.100.8/32"))), Refusal::Mismatch("target"));
        assert_eq!(refusal(&key, &with("target", json!("198.51.100.7"))), Refusal::Mismatch("target"));
        assert_eq!(refusal(&key, &with("target", json!("nowhere"))), Refusal::BadField("target"));
        let u = encode_unblock(&"198.51.100.8".parse().unwrap(), now());
        assert_eq!(refusal("u.v4_c6336407_32", &u), Refusal::Mismatch("target"));
        let other = Verdict { target: "203.0.113.7".parse().unwrap(), ..verdict() };
        assert_eq!(refusal("o.v4_c6336407_32", &other.encode()), Refusal::Mismatch("target"));
    }

    #[test]
    fn heartbeats_decode_and_are_checked_like_verdicts() {
        let beat = Beat { v: 1, host: "mx2".into(), at: now(), published: 3, applied: 7, ..Default::default() };
        let got = decode("h.mx2", Some(&beat.encode()), now()).unwrap();
        assert_eq!(got, Entry::Heartbeat { host: "mx2".into(), beat: Some(beat.clone()) });
        assert_eq!(decode("h.mx2", None, now()).unwrap(), Entry::Heartbeat { host: "mx2".into(), beat: None });
        assert_eq!(refusal("h.mx3", &beat.encode()), Refusal::Mismatch("host"));
        let ahead = Beat { at: now() + TimeDelta::hours(1), ..beat.clone() };
        assert_eq!(refusal("h.mx2", &ahead.encode()), Refusal::TooFar("at"));
        let forged = Beat { version: "1.0\nforged".into(), ..beat.clone() };
        assert_eq!(refusal("h.mx2", &forged.encode()), Refusal::BadField("version"));
        let mut extra = serde_json::to_value(&beat).unwrap();
        extra["surprise"] = json!(1);
        assert!(matches!(refusal("h.mx2", &serde_json::to_vec(&extra).unwrap()), Refusal::BadJson(_)));
        assert!(matches!(decode("h.mx 2", None, now()), Err(Refusal::BadKey(_))));
        assert!(matches!(decode("h.mx2.x", None, now()), Err(Refusal::BadKey(_))));
    }

    #[test]
    fn bad_text_is_refused() {
        let key = verdict().key();
        assert_eq!(refusal(&key, &with("reason", json!("line\nforged"))), Refusal::BadField("reason"));
        assert_eq!(refusal(&key, &with("origin", json!(""))), Refusal::BadField("origin"));
        assert_eq!(refusal(&key, &with("figures", json!([1]))), Refusal::BadField("figures"));
        let block = Verdict { host: "ops team".into(), ..verdict() };
        assert_eq!(refusal("o.v4_c6336407_32", &block.encode()), Refusal::BadField("host"));
    }

    #[test]
    fn times_are_judged_against_this_hosts_clock() {
        let key = verdict().key();
        assert_eq!(refusal(&key, &with("until", json!("2026-12-03T11:59:30Z"))), Refusal::Expired);
        assert_eq!(refusal(&key, &with("until", json!("2026-12-03T12:00:00Z"))), Refusal::Expired);
        assert_eq!(refusal(&key, &with("until", json!("2037-01-01T00:00:00Z"))), Refusal::TooFar("until"));
        assert_eq!(refusal(&key, &with("made", json!("2026-12-03T12:06:00Z"))), Refusal::TooFar("made"));
        let skewed = with("made", json!("2026-12-03T12:04:00Z"));
        assert!(decode(&key, Some(&skewed), now()).is_ok(), "a few minutes of skew are tolerated");
        assert_eq!(
            refusal(&key, &with("made", json!("2026-12-03T13:00:00Z"))),
            Refusal::TooFar("made"),
            "made after its end and in the future"
        );
        let v = Verdict { until: Some(t("2026-12-03T12:01:00Z")), made: t("2026-12-03T12:02:00Z"), ..verdict() };
        assert_eq!(v.check(now()), Err(Refusal::EndsBeforeMade));
        let u = encode_unblock(&verdict().target, t("2026-12-03T12:10:00Z"));
        assert_eq!(refusal("u.v4_c6336407_32", &u), Refusal::TooFar("made"));
    }

    #[test]
    fn encode_sheds_figures_then_shortens_the_reason_to_fit() {
        let big = Verdict { figures: Some(json!({"evidence": "e".repeat(5000)})), ..verdict() };
        let bytes = big.encode();
        assert!(bytes.len() <= MAX_VALUE_BYTES);
        let Ok(Entry::Ban(back)) = decode(&big.key(), Some(&bytes), now()) else { panic!("refused") };
        assert_eq!((back.figures, back.reason), (None, verdict().reason));
        let long = Verdict { reason: "\u{e9}\"".repeat(3000), ..verdict() };
        assert_eq!(long.check(now()), Ok(()));
        let Ok(Entry::Ban(back)) = decode(&long.key(), Some(&long.encode()), now()) else { panic!("refused") };
        assert!(long.reason.starts_with(&back.reason) && !back.reason.is_empty());
    }

    fn any_target() -> impl Strategy<Value = Cidr> {
        prop_oneof![
            (any::<u32>(), 1u8..=32).prop_map(|(a, l)| Cidr::new(std::net::Ipv4Addr::from(a).into(), l).unwrap()),
            // Top bits set: never an IPv4-mapped address, which Cidr turns into IPv4.
            (any::<u128>(), 1u8..=128)
                .prop_map(|(a, l)| Cidr::new(std::net::Ipv6Addr::from(a | 1 << 127).into(), l).unwrap()),
        ]
    }

    fn any_verdict() -> impl Strategy<Value = Verdict> {
        (
            "[A-Za-z0-9_-]{1,64}",
            any_target(),
            proptest::option::of(1i64..3_000 * 86_400),
            (0i64..10_000_000, 0u32..1_000_000_000),
            "\\PC{0,200}",
            "[a-z0-9_-]{1,20}",
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(host, target, ahead, (ago, nanos), reason, origin, figures)| Verdict {
                host,
                target,
                until: ahead.map(|s| now() + TimeDelta::seconds(s)),
                made: now() - TimeDelta::seconds(ago) + TimeDelta::nanoseconds(nanos.into()),
                reason,
                origin,
                figures: figures.map(|n| json!({"count": n})),
            })
    }

    proptest! {
        #[test]
        fn a_verdict_survives_the_wire(v in any_verdict()) {
            prop_assert_eq!(decode(&v.key(), Some(&v.encode()), now()), Ok(Entry::Ban(v.clone())));
            prop_assert_eq!(
                decode(&block_key(&v.target), Some(&v.encode()), now()),
                Ok(Entry::BlockEverywhere(v.clone()))
            );
            let u = encode_unblock(&v.target, v.made);
            prop_assert_eq!(
                decode(&unblock_key(&v.target), Some(&u), now()),
                Ok(Entry::UnblockEverywhere { target: v.target, made: v.made })
            );
        }

        #[test]
        fn no_input_panics(key in "[-/_=.a-zA-Z0-9*>]{0,80}", value in proptest::option::of(any::<Vec<u8>>())) {
            let _ = decode(&key, value.as_deref(), now());
        }

        #[test]
        fn no_json_value_panics(v in any_verdict(), field in "[a-z]{1,8}", to in any::<i64>()) {
            let mut value: serde_json::Value = serde_json::from_slice(&v.encode()).unwrap();
            value[field] = json!(to);
            let _ = decode(&v.key(), Some(&serde_json::to_vec(&value).unwrap()), now());
        }
    }
}
