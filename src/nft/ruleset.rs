//! The shape of floodgate's own table: its sets, chains and rules, from the config. rules/nftables/floodgate.nft
//! is the readable copy of what this builds with the default config (a test keeps the two equal).
//!
//! Everything hangs off one base chain at raw priority (-300), ahead of conntrack (-200): a banned or
//! rate-limited SYN is dropped before conntrack allocates an entry for it, which is what keeps a spoofed flood
//! from filling the conntrack table. The price: packets dropped here never reach conntrack, so conntrack NEW
//! events stop counting an attack once it is being dropped. The drop rules carry counters for that reason: they
//! are how the rest of floodgate sees that a suppressed attack goes on.

use super::batch::{Batch, Hook, SetDef};
use super::expr::{Expr, Limit};

pub const ALLOW4: &str = "allow4";
pub const ALLOW6: &str = "allow6";
/// Banned single addresses: hash sets (O(1) per packet, cheap to write at any size).
pub const BAN4: &str = "ban4";
pub const BAN6: &str = "ban6";
/// Banned prefixes: interval sets. Kept apart from the addresses because an interval set is a tree whose every
/// transaction costs time in proportion to its size (about 10 ms at 100,000 elements, measured), and a flood's
/// bans are addresses; prefixes stay few.
pub const BAN4_NET: &str = "ban4_net";
pub const BAN6_NET: &str = "ban6_net";
/// Other fleet hosts' bans, as this host applies them: the same shapes as the local ban sets.
pub const FLEET4: &str = "fleet4";
pub const FLEET6: &str = "fleet6";
pub const FLEET4_NET: &str = "fleet4_net";
pub const FLEET6_NET: &str = "fleet6_net";
/// Ports whose per-source (hashlimit-style) limit is on; each element times out unless refreshed.
pub const SOURCE_PORTS: &str = "limit_source_ports";
/// Ports whose global (limit-style) limit is on; each element times out unless refreshed.
pub const GLOBAL_PORTS: &str = "limit_global_ports";

/// Ports switched to the kernel's SYN proxy; each element times out unless refreshed, like the limits.
pub const SYNPROXY_PORTS: &str = "synproxy_ports";

const BASE_CHAIN: &str = "prerouting";
pub const SOURCE_CHAIN: &str = "limit_source";
pub const GLOBAL_CHAIN: &str = "limit_global";
/// Per SYN-proxy-able port: its SYNs counted (the measure of a flood the proxy absorbs) and left untracked.
pub const SYNPROXY_CHAIN: &str = "synproxy_syn";
/// Input hook, after conntrack: the SYN proxy itself.
pub const INPUT_CHAIN: &str = "input";
/// Input hook: `ct state new` counted, which is also what switches conntrack on (see `Ruleset::track`).
pub const TRACK_CHAIN: &str = "track";
/// Raw priority: before conntrack (see the module comment).
const PRIORITY_RAW: i32 = -300;
const PRIORITY_FILTER: i32 = 0;

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const TCP: u8 = 6;
const ARPHRD_LOOPBACK: u16 = 772;
const TYPE_IPV4: u32 = 7;
const TYPE_IPV6: u32 = 8;
const TYPE_SERVICE: u32 = 13;
/// Most sources a meter tracks per port and family; beyond that the per-source limit stops adding sources (a
/// flood that diverse is the global limit's job).
const METER_SIZE: u32 = 65536;

/// The rates for one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLimits {
    pub port: u16,
    /// New connections per source (IPv4 address, IPv6 /64).
    pub per_source: Limit,
    /// New connections from everyone together (the allowlist is accepted before it).
    pub global: Limit,
}

/// A drop rule's named counter, and what it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounter {
    pub name: String,
    /// ban, ban_prefix, fleet, fleet_prefix, country.
    pub rule: &'static str,
    /// ipv4 or ipv6.
    pub family: &'static str,
    /// The service a country rule restricts.
    pub service: Option<String>,
}

/// The named counter of the rule dropping what `set` holds.
fn drop_counter(set: &str) -> String {
    format!("drop_{set}")
}

/// A service whose ports take new connections only from some countries (`deny: false`), or from all but some
/// (`deny: true`). Its address ranges live in two interval sets; its ports go into its switch set only once
/// those sets are loaded, so a service without range data is never cut off by an empty set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoRule {
    pub service: String,
    pub ports: Vec<u16>,
    pub deny: bool,
}

impl GeoRule {
    pub fn set4(&self) -> &'static str {
        intern(format!("geo4_{}", self.service))
    }

    pub fn set6(&self) -> &'static str {
        intern(format!("geo6_{}", self.service))
    }

    /// The switch: the service's ports while its country sets are loaded.
    pub fn switch(&self) -> &'static str {
        intern(format!("geo_{}_ports", self.service))
    }
}

/// Set names built from the config (one per geo-restricted service) as `&'static str`, like the fixed ones, so
/// set operations stay cheap to copy. Each distinct name is leaked once; there are as many as services.
fn intern(name: String) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.get(name.as_str()) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.insert(leaked);
    leaked
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub table: String,
    pub ports: Vec<PortLimits>,
    pub geo: Vec<GeoRule>,
    /// The store that owns the table: written as an empty chain `owner_<id>`, so a floodgate with another store
    /// (a second daemon, a replaced database) notices it is not the owner instead of treating the first one's
    /// bans as strays.
    pub owner: Option<String>,
    /// `[sources] conntrack` is on: a rule with a `ct` expression, because the kernel tracks connections in a
    /// network namespace only once some rule asks for it, and a host without a stateful ruleset would otherwise
    /// send floodgate no conntrack events at all. Its counter (new connections conntrack created) is what the
    /// daemon compares with the events it receives.
    pub track: bool,
    /// The SYN proxy's machinery, for the ports that may use it (`synproxy` not `never`). Its rules hold a `ct`
    /// and a `synproxy` expression, so they too switch conntrack on.
    pub synproxy: Option<Synproxy>,
    /// `[fleet]` is configured: sets of their own for other hosts' bans (so `list` tells them apart and a
    /// remote ban never overwrites a local one), dropped right after the local bans.
    pub fleet: bool,
}

/// What the SYN proxy answers a SYN with: the MSS the interfaces allow, and the window scale the host's own
/// listeners would choose (the proxy's choice must match theirs, it does not rewrite windows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synproxy {
    pub ports: Vec<u16>,
    pub mss4: u16,
    pub mss6: u16,
    pub wscale: u8,
}

impl Synproxy {
    /// A standard Ethernet host (MTU 1500, Linux's default buffers): what `floodgate.nft` shows.
    pub fn standard(ports: Vec<u16>) -> Option<Synproxy> {
        (!ports.is_empty()).then_some(Synproxy { ports, mss4: 1460, mss6: 1440, wscale: 7 })
    }
}

/// Owner markers are chains named `OWNER_PREFIX` + the store's id.
pub const OWNER_PREFIX: &str = "owner_";

fn saddr4() -> Expr {
    Expr::Payload { base: libc::NFT_PAYLOAD_NETWORK_HEADER as u32, offset: 12, len: 4 }
}

fn saddr6() -> Expr {
    Expr::Payload { base: libc::NFT_PAYLOAD_NETWORK_HEADER as u32, offset: 8, len: 16 }
}

fn dport() -> Expr {
    Expr::Payload { base: libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, offset: 2, len: 2 }
}

/// `tcp flags & (fin|syn|rst|ack) == syn`: a new connection attempt, the packet a SYN flood is made of.
fn tcp_syn() -> Vec<Expr> {
    vec![
        Expr::L4proto(TCP),
        Expr::Payload { base: libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, offset: 13, len: 1 },
        Expr::Mask(vec![0x17]),
        Expr::Equals(vec![0x02]),
    ]
}

impl Ruleset {
    pub fn meter_name(family: u8, port: u16) -> String {
        format!("meter{family}_{port}")
    }

    fn meter_timeout_ms(limit: &Limit) -> u64 {
        // An idle source is forgotten after a minute, or two periods of a slower rate.
        (2 * limit.per.seconds()).max(60) * 1000
    }

    /// Writes the whole shape into `b`. Every message creates-if-missing (no EXCL), and the chains are flushed
    /// and refilled, so the same batch installs a fresh table and repairs an existing one without touching the
    /// elements of its sets.
    pub fn write(&self, b: &mut Batch) {
        let t = self.table.as_str();
        b.add_table(t);
        let interval = libc::NFT_SET_INTERVAL as u32;
        let timeout = libc::NFT_SET_TIMEOUT as u32;
        let sets = [
            (ALLOW4, TYPE_IPV4, 4, interval),
            (ALLOW6, TYPE_IPV6, 16, interval),
            (BAN4, TYPE_IPV4, 4, timeout),
            (BAN6, TYPE_IPV6, 16, timeout),
            (BAN4_NET, TYPE_IPV4, 4, interval | timeout),
            (BAN6_NET, TYPE_IPV6, 16, interval | timeout),
            (SOURCE_PORTS, TYPE_SERVICE, 2, timeout),
            (GLOBAL_PORTS, TYPE_SERVICE, 2, timeout),
            (SYNPROXY_PORTS, TYPE_SERVICE, 2, timeout),
        ];
        let geo = self.geo.iter().flat_map(|g| {
            [(g.set4(), TYPE_IPV4, 4, interval), (g.set6(), TYPE_IPV6, 16, interval), (g.switch(), TYPE_SERVICE, 2, 0)]
        });
        let fleet = [
            (FLEET4, TYPE_IPV4, 4, timeout),
            (FLEET6, TYPE_IPV6, 16, timeout),
            (FLEET4_NET, TYPE_IPV4, 4, interval | timeout),
            (FLEET6_NET, TYPE_IPV6, 16, interval | timeout),
        ];
        let fleet = fleet.into_iter().filter(|_| self.fleet);
        for (name, key_type, key_len, flags) in sets.into_iter().chain(fleet).chain(geo) {
            b.add_set(t, &SetDef { name, key_type, key_len, flags, timeout_ms: None, size: None });
        }
        for p in &self.ports {
            for (family, key_type, key_len) in [(4u8, TYPE_IPV4, 4), (6, TYPE_IPV6, 16)] {
                let name = Self::meter_name(family, p.port);
                b.add_set(
                    t,
                    &SetDef {
                        name: &name,
                        key_type,
                        key_len,
                        flags: timeout | libc::NFT_SET_EVAL as u32,
                        timeout_ms: Some(Self::meter_timeout_ms(&p.per_source)),
                        size: Some(METER_SIZE),
                    },
                );
            }
        }
        b.add_chain(t, BASE_CHAIN, Some(&Hook { hooknum: libc::NF_INET_PRE_ROUTING as u32, priority: PRIORITY_RAW }));
        b.add_chain(t, SOURCE_CHAIN, None);
        b.add_chain(t, GLOBAL_CHAIN, None);
        b.add_chain(t, SYNPROXY_CHAIN, None);
        // Always there, empty when unused: a reload that turns them off flushes them, and an empty chain holds no
        // `ct` expression, so conntrack is not kept on for nothing.
        let input = Hook { hooknum: libc::NF_INET_LOCAL_IN as u32, priority: PRIORITY_FILTER };
        b.add_chain(t, INPUT_CHAIN, Some(&input));
        b.add_chain(t, TRACK_CHAIN, Some(&input));
        if let Some(id) = &self.owner {
            b.add_chain(t, &format!("{OWNER_PREFIX}{id}"), None);
        }
        for chain in [BASE_CHAIN, SOURCE_CHAIN, GLOBAL_CHAIN, SYNPROXY_CHAIN, INPUT_CHAIN, TRACK_CHAIN] {
            b.flush_chain(t, chain);
        }
        // Before the rules that name them.
        for c in self.drop_counters() {
            b.add_counter(t, &c.name);
        }
        for (chain, text, exprs) in self.rules_conntrack() {
            b.add_rule(t, chain, &exprs, &text);
        }
        for (text, exprs) in self.rules_base() {
            b.add_rule(t, BASE_CHAIN, &exprs, &text);
        }
        for p in &self.ports {
            for (text, exprs) in Self::rules_source(p) {
                b.add_rule(t, SOURCE_CHAIN, &exprs, &text);
            }
            let mut exprs = vec![Expr::L4proto(TCP), dport(), Expr::Equals(p.port.to_be_bytes().to_vec())];
            exprs.extend([Expr::LimitOver(p.global), Expr::Counter, Expr::Drop]);
            b.add_rule(t, GLOBAL_CHAIN, &exprs, &format!("tcp dport {} limit rate over ... drop", p.port));
        }
    }

    /// The named counters of the drop rules ahead of the limits: the ban sets' (local and fleet) and the country
    /// rules', each with what it counts, for the metrics. The limits' drops are counted per port by their own
    /// rules (`Kernel::limit_drops`).
    pub fn drop_counters(&self) -> Vec<DropCounter> {
        let c = |set: &str, rule, family, service: Option<&str>| DropCounter {
            name: drop_counter(set),
            rule,
            family,
            service: service.map(str::to_string),
        };
        let mut out = vec![
            c(BAN4, "ban", "ipv4", None),
            c(BAN6, "ban", "ipv6", None),
            c(BAN4_NET, "ban_prefix", "ipv4", None),
            c(BAN6_NET, "ban_prefix", "ipv6", None),
        ];
        if self.fleet {
            out.extend([
                c(FLEET4, "fleet", "ipv4", None),
                c(FLEET6, "fleet", "ipv6", None),
                c(FLEET4_NET, "fleet_prefix", "ipv4", None),
                c(FLEET6_NET, "fleet_prefix", "ipv6", None),
            ]);
        }
        for g in &self.geo {
            out.push(c(g.set4(), "country", "ipv4", Some(&g.service)));
            out.push(c(g.set6(), "country", "ipv6", Some(&g.service)));
        }
        out
    }

    /// The number of rules each chain holds when the table is intact.
    pub fn expected_rules(&self) -> Vec<(&'static str, usize)> {
        let mut out = vec![
            (BASE_CHAIN, self.rules_base().len()),
            (SOURCE_CHAIN, 2 * self.ports.len()),
            (GLOBAL_CHAIN, self.ports.len()),
        ];
        for chain in [SYNPROXY_CHAIN, INPUT_CHAIN, TRACK_CHAIN] {
            out.push((chain, self.rules_conntrack().iter().filter(|(c, _, _)| *c == chain).count()));
        }
        out
    }

    /// The rules that need conntrack (and so switch it on): the SYN proxy's and the tracking counter.
    ///
    /// The SYN proxy (notes: nft wiki, "Synproxy"): at raw priority a SYN to a proxied port is left untracked;
    /// after conntrack, on input, the untracked SYN and the invalid final ACK (no entry: tcp_loose=0) go to
    /// `synproxy`, which answers with a cookie, checks the ACK and only then opens the real connection to the
    /// listener. Any other invalid packet to the port is dropped.
    fn rules_conntrack(&self) -> Vec<(&'static str, String, Vec<Expr>)> {
        let mut out = Vec::new();
        if let Some(sp) = &self.synproxy {
            for &port in &sp.ports {
                let exprs = vec![
                    Expr::L4proto(TCP),
                    dport(),
                    Expr::Equals(port.to_be_bytes().to_vec()),
                    Expr::Counter,
                    Expr::Notrack,
                ];
                out.push((SYNPROXY_CHAIN, format!("tcp dport {port} counter notrack"), exprs));
            }
            for (proto, mss, ip) in [(NFPROTO_IPV4, sp.mss4, "ipv4"), (NFPROTO_IPV6, sp.mss6, "ipv6")] {
                let exprs = vec![
                    Expr::Nfproto(proto),
                    Expr::L4proto(TCP),
                    dport(),
                    Expr::Lookup(SYNPROXY_PORTS.into()),
                    Expr::CtState(super::expr::CT_INVALID | super::expr::CT_UNTRACKED),
                    Expr::Synproxy { mss, wscale: sp.wscale },
                ];
                out.push((INPUT_CHAIN, format!("meta nfproto {ip} tcp dport @{SYNPROXY_PORTS} synproxy"), exprs));
            }
            let exprs = vec![
                Expr::L4proto(TCP),
                dport(),
                Expr::Lookup(SYNPROXY_PORTS.into()),
                Expr::CtState(super::expr::CT_INVALID),
                Expr::Counter,
                Expr::Drop,
            ];
            out.push((INPUT_CHAIN, format!("tcp dport @{SYNPROXY_PORTS} ct state invalid drop"), exprs));
        }
        if self.track {
            let mut exprs = tcp_syn();
            exprs.extend([Expr::CtState(super::expr::CT_NEW), Expr::Counter]);
            out.push((TRACK_CHAIN, "tcp flags syn ct state new counter".into(), exprs));
        }
        out
    }

    /// Loopback and the allowlist first, then bans, then the country restrictions, then the switches into the limit chains.
    fn rules_base(&self) -> Vec<(String, Vec<Expr>)> {
        let v4 = |set: &str, verdict: Vec<Expr>| {
            let mut e = vec![Expr::Nfproto(NFPROTO_IPV4), saddr4(), Expr::Lookup(set.into())];
            e.extend(verdict);
            (format!("ip saddr @{set}"), e)
        };
        let v6 = |set: &str, verdict: Vec<Expr>| {
            let mut e = vec![Expr::Nfproto(NFPROTO_IPV6), saddr6(), Expr::Lookup(set.into())];
            e.extend(verdict);
            (format!("ip6 saddr @{set}"), e)
        };
        let switch = |set: &str, chain: &str| {
            let mut e = tcp_syn();
            e.extend([dport(), Expr::Lookup(set.into()), Expr::Jump(chain.into())]);
            (format!("tcp dport @{set} jump {chain}"), e)
        };
        // A new connection to a restricted port from outside the allowed countries (or from a denied one).
        let geo = |g: &GeoRule, v6: bool| {
            let (proto, saddr, set, ip) =
                if v6 { (NFPROTO_IPV6, saddr6(), g.set6(), "ip6") } else { (NFPROTO_IPV4, saddr4(), g.set4(), "ip") };
            let mut e = tcp_syn();
            e.extend([dport(), Expr::Lookup(g.switch().into()), Expr::Nfproto(proto), saddr]);
            e.push(if g.deny { Expr::Lookup(set.into()) } else { Expr::LookupNot(set.into()) });
            e.extend([Expr::NamedCounter(drop_counter(set)), Expr::Drop]);
            let op = if g.deny { "" } else { "!= " };
            (format!("tcp dport @{} {ip} saddr {op}@{set} drop", g.switch()), e)
        };
        let mut rules = vec![
            // The host talking to itself (webmail to IMAP, Postfix to its content filter, even through its public
            // address) is never dropped or limited, whatever is banned or limited.
            ("meta iiftype loopback accept".to_string(), vec![Expr::IifType(ARPHRD_LOOPBACK), Expr::Accept]),
            v4(ALLOW4, vec![Expr::Accept]),
            v6(ALLOW6, vec![Expr::Accept]),
            v4(BAN4, vec![Expr::NamedCounter(drop_counter(BAN4)), Expr::Drop]),
            v6(BAN6, vec![Expr::NamedCounter(drop_counter(BAN6)), Expr::Drop]),
            v4(BAN4_NET, vec![Expr::NamedCounter(drop_counter(BAN4_NET)), Expr::Drop]),
            v6(BAN6_NET, vec![Expr::NamedCounter(drop_counter(BAN6_NET)), Expr::Drop]),
        ];
        if self.fleet {
            rules.extend([
                v4(FLEET4, vec![Expr::NamedCounter(drop_counter(FLEET4)), Expr::Drop]),
                v6(FLEET6, vec![Expr::NamedCounter(drop_counter(FLEET6)), Expr::Drop]),
                v4(FLEET4_NET, vec![Expr::NamedCounter(drop_counter(FLEET4_NET)), Expr::Drop]),
                v6(FLEET6_NET, vec![Expr::NamedCounter(drop_counter(FLEET6_NET)), Expr::Drop]),
            ]);
        }
        for g in &self.geo {
            rules.push(geo(g, false));
            rules.push(geo(g, true));
        }
        rules.push(switch(SOURCE_PORTS, SOURCE_CHAIN));
        rules.push(switch(GLOBAL_PORTS, GLOBAL_CHAIN));
        if self.synproxy.is_some() {
            rules.push(switch(SYNPROXY_PORTS, SYNPROXY_CHAIN));
        }
        rules
    }

    /// One rule per family: IPv4 sources are metered per address, IPv6 sources per /64 (one host commonly owns a
    /// whole /64, so metering per /128 would let it rotate through addresses).
    fn rules_source(p: &PortLimits) -> Vec<(String, Vec<Expr>)> {
        let port = || [Expr::L4proto(TCP), dport(), Expr::Equals(p.port.to_be_bytes().to_vec())];
        let mut v4: Vec<Expr> = port().into();
        v4.extend([Expr::Nfproto(NFPROTO_IPV4), saddr4()]);
        v4.extend([Expr::Meter { set: Self::meter_name(4, p.port), limit: p.per_source }, Expr::Counter, Expr::Drop]);
        let mut v6: Vec<Expr> = port().into();
        let mut mask = vec![0xffu8; 8];
        mask.extend([0u8; 8]);
        v6.extend([Expr::Nfproto(NFPROTO_IPV6), saddr6(), Expr::Mask(mask)]);
        v6.extend([Expr::Meter { set: Self::meter_name(6, p.port), limit: p.per_source }, Expr::Counter, Expr::Drop]);
        vec![
            (format!("tcp dport {} update @meter4_{} {{ ip saddr limit ... }} drop", p.port, p.port), v4),
            (format!("tcp dport {} update @meter6_{} {{ ip6 saddr /64 limit ... }} drop", p.port, p.port), v6),
        ]
    }
}
