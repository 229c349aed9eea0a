//! Rule expressions, built through nftnl-sys: the safe nftnl API has no limit or dynset (per-source meter).
//! Each rule loads into register 1 and matches or acts on it, the way nft itself compiles the same text.

use std::ffi::CString;

use nftnl_sys as sys;

/// A rate: `rate` packets per `per`, `burst` packets above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate: u64,
    pub per: Per,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    pub fn seconds(self) -> u64 {
        match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        }
    }
}

/// A rate of packets without its burst, as a config writes it: `20/second`, `600/minute`, `1000/hour`.
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

impl Rate {
    /// This rate with its burst, as a rule applies it.
    pub fn with_burst(self, burst: u32) -> Limit {
        Limit { rate: self.count, per: self.per, burst }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta nfproto == v` (ipv4 = 2, ipv6 = 10): the dependency an inet table needs before an address match.
    Nfproto(u8),
    /// `meta l4proto == v` (tcp = 6).
    L4proto(u8),
    /// `meta iiftype == v` (ARPHRD_*, host byte order): the kind of interface the packet came in on.
    IifType(u16),
    /// Loads `len` bytes at `offset` of the network (base 1) or transport (base 2) header into register 1.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    /// Register 1 &= mask.
    Mask(Vec<u8>),
    /// Register 1 == value, else the rule stops.
    Equals(Vec<u8>),
    /// Register 1 is in the named set, else the rule stops.
    Lookup(String),
    /// Register 1 is NOT in the named set, else the rule stops (`!= @set`).
    LookupNot(String),
    /// `update @set { <register 1> limit rate over ... }`: continues only for a key over its own rate.
    Meter {
        set: String,
        limit: Limit,
    },
    /// `limit rate over ...`: continues only when the one shared bucket is empty.
    LimitOver(Limit),
    /// `ct state` has one of the bits of `mask` (NF_CT_STATE_*_BIT), else the rule stops.
    CtState(u32),
    /// `notrack`: conntrack leaves the packet alone (it reaches `synproxy` as untracked).
    Notrack,
    /// `synproxy mss M wscale W timestamp sack-perm`: the kernel answers the SYN with a cookie and hands the
    /// listener only a completed handshake.
    Synproxy {
        mss: u16,
        wscale: u8,
    },
    Counter,
    /// `counter name "NAME"`: counts into the table's named counter object, which `Kernel::counters` reads by
    /// name (the metrics' per-rule drops) without dumping rules.
    NamedCounter(String),
    Accept,
    Drop,
    Jump(String),
}

/// NF_CT_STATE_INVALID_BIT, NF_CT_STATE_BIT(IP_CT_NEW), NF_CT_STATE_UNTRACKED_BIT (linux/netfilter/nf_conntrack_common.h).
pub const CT_INVALID: u32 = 1;
pub const CT_NEW: u32 = 1 << 3;
pub const CT_UNTRACKED: u32 = 1 << 6;
/// NF_SYNPROXY_OPT_MSS | _WSCALE | _SACK_PERM | _TIMESTAMP: what `mss .. wscale .. timestamp sack-perm` sets.
const SYNPROXY_FLAGS: u32 = 0x01 | 0x02 | 0x04 | 0x08;

/// NFT_OBJECT_COUNTER (linux/netfilter/nf_tables.h).
pub const NFT_OBJECT_COUNTER: u32 = 1;

const REG1: u32 = libc::NFT_REG_1 as u32;

fn cstr(s: &str) -> CString {
    // Names come from floodgate's own constants and validated config: never with a NUL.
    CString::new(s).unwrap_or_default()
}

/// Allocates the nftnl expressions for one `Expr` (some compile to two) and hands them to `push`.
///
/// # Safety
/// `push` must take ownership of every pointer (add it to a rule, which frees it).
pub unsafe fn build(e: &Expr, push: &mut dyn FnMut(*mut sys::nftnl_expr)) {
    // SAFETY: each expression comes from alloc() (never null) and goes to `push`, which the caller guarantees takes
    // ownership; the CStrings and byte slices passed to nftnl outlive the calls, which copy them.
    unsafe {
        match e {
            Expr::Nfproto(v) => {
                push(meta(libc::NFT_META_NFPROTO as u32));
                push(cmp_eq(&[*v]));
            }
            Expr::L4proto(v) => {
                push(meta(libc::NFT_META_L4PROTO as u32));
                push(cmp_eq(&[*v]));
            }
            Expr::IifType(v) => {
                push(meta(libc::NFT_META_IIFTYPE as u32));
                push(cmp_eq(&v.to_ne_bytes()));
            }
            Expr::Payload { base, offset, len } => {
                let x = alloc("payload");
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_PAYLOAD_DREG as u16, REG1);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_PAYLOAD_BASE as u16, *base);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_PAYLOAD_OFFSET as u16, *offset);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_PAYLOAD_LEN as u16, *len);
                push(x);
            }
            Expr::Mask(mask) => {
                let x = alloc("bitwise");
                let zero = vec![0u8; mask.len()];
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_BITWISE_SREG as u16, REG1);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_BITWISE_DREG as u16, REG1);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_BITWISE_LEN as u16, mask.len() as u32);
                sys::nftnl_expr_set(x, sys::NFTNL_EXPR_BITWISE_MASK as u16, mask.as_ptr().cast(), mask.len() as u32);
                sys::nftnl_expr_set(x, sys::NFTNL_EXPR_BITWISE_XOR as u16, zero.as_ptr().cast(), zero.len() as u32);
                push(x);
            }
            Expr::Equals(v) => push(cmp_eq(v)),
            Expr::Lookup(set) | Expr::LookupNot(set) => {
                let x = alloc("lookup");
                let name = cstr(set);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_LOOKUP_SREG as u16, REG1);
                sys::nftnl_expr_set_str(x, sys::NFTNL_EXPR_LOOKUP_SET as u16, name.as_ptr());
                if matches!(e, Expr::LookupNot(_)) {
                    sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_LOOKUP_FLAGS as u16, libc::NFT_LOOKUP_F_INV as u32);
                }
                push(x);
            }
            Expr::Meter { set, limit } => {
                let x = alloc("dynset");
                let name = cstr(set);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_DYNSET_SREG_KEY as u16, REG1);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_DYNSET_OP as u16, libc::NFT_DYNSET_OP_UPDATE as u32);
                sys::nftnl_expr_set_str(x, sys::NFTNL_EXPR_DYNSET_SET_NAME as u16, name.as_ptr());
                // The dynset takes ownership of the nested limit.
                sys::nftnl_expr_set(x, sys::NFTNL_EXPR_DYNSET_EXPR as u16, limit_over(limit).cast(), 0);
                push(x);
            }
            Expr::LimitOver(limit) => push(limit_over(limit)),
            Expr::CtState(mask) => {
                let x = alloc("ct");
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_CT_KEY as u16, libc::NFT_CT_STATE as u32);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_CT_DREG as u16, REG1);
                push(x);
                build(&Expr::Mask(mask.to_ne_bytes().to_vec()), push);
                push(cmp(libc::NFT_CMP_NEQ as u32, &[0; 4]));
            }
            Expr::Notrack => push(alloc("notrack")),
            Expr::Synproxy { mss, wscale } => {
                let x = alloc("synproxy");
                sys::nftnl_expr_set_u16(x, sys::NFTNL_EXPR_SYNPROXY_MSS as u16, *mss);
                sys::nftnl_expr_set_u8(x, sys::NFTNL_EXPR_SYNPROXY_WSCALE as u16, *wscale);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_SYNPROXY_FLAGS as u16, SYNPROXY_FLAGS);
                push(x);
            }
            Expr::Counter => push(alloc("counter")),
            Expr::NamedCounter(name) => {
                let x = alloc("objref");
                let name = cstr(name);
                sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_OBJREF_IMM_TYPE as u16, NFT_OBJECT_COUNTER);
                sys::nftnl_expr_set_str(x, sys::NFTNL_EXPR_OBJREF_IMM_NAME as u16, name.as_ptr());
                push(x);
            }
            Expr::Accept => push(verdict(libc::NF_ACCEPT, None)),
            Expr::Drop => push(verdict(libc::NF_DROP, None)),
            Expr::Jump(chain) => push(verdict(libc::NFT_JUMP, Some(chain))),
        }
    }
}

/// # Safety
/// The caller owns the returned expression and must hand it to a rule (which frees it) or free it.
unsafe fn alloc(name: &str) -> *mut sys::nftnl_expr {
    let n = cstr(name);
    // SAFETY: `n` is a NUL-terminated CString that outlives the call; a null result is handled below.
    let x = unsafe { sys::nftnl_expr_alloc(n.as_ptr()) };
    if x.is_null() {
        // Only on out-of-memory: nothing sensible to continue with.
        std::process::abort();
    }
    x
}

/// # Safety
/// The caller owns the returned expression and must hand it to a rule (which frees it) or free it.
unsafe fn meta(key: u32) -> *mut sys::nftnl_expr {
    // SAFETY: `x` is a live expression from alloc(); only integers are set on it.
    unsafe {
        let x = alloc("meta");
        sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_META_KEY as u16, key);
        sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_META_DREG as u16, REG1);
        x
    }
}

/// # Safety
/// The caller owns the returned expression and must hand it to a rule (which frees it) or free it.
unsafe fn cmp_eq(data: &[u8]) -> *mut sys::nftnl_expr {
    // SAFETY: same contract as cmp(), passed on to the caller.
    unsafe { cmp(libc::NFT_CMP_EQ as u32, data) }
}

/// # Safety
/// The caller owns the returned expression and must hand it to a rule (which frees it) or free it.
unsafe fn cmp(op: u32, data: &[u8]) -> *mut sys::nftnl_expr {
    // SAFETY: `x` is a live expression from alloc(); `data` is valid for the length passed and nftnl copies it.
    unsafe {
        let x = alloc("cmp");
        sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_CMP_SREG as u16, REG1);
        sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_CMP_OP as u16, op);
        sys::nftnl_expr_set(x, sys::NFTNL_EXPR_CMP_DATA as u16, data.as_ptr().cast(), data.len() as u32);
        x
    }
}

/// # Safety
/// The caller owns the returned expression and must hand it to a rule (which frees it) or free it.
unsafe fn limit_over(l: &Limit) -> *mut sys::nftnl_expr {
    // SAFETY: `x` is a live expression from alloc(); only integers are set on it.
    unsafe {
        let x = alloc("limit");
        sys::nftnl_expr_set_u64(x, sys::NFTNL_EXPR_LIMIT_RATE as u16, l.rate);
        sys::nftnl_expr_set_u64(x, sys::NFTNL_EXPR_LIMIT_UNIT as u16, l.per.seconds());
        sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_LIMIT_BURST as u16, l.burst);
        sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_LIMIT_TYPE as u16, libc::NFT_LIMIT_PKTS as u32);
        sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_LIMIT_FLAGS as u16, libc::NFT_LIMIT_F_INV as u32);
        x
    }
}

/// # Safety
/// The caller owns the returned expression and must hand it to a rule (which frees it) or free it.
unsafe fn verdict(code: i32, chain: Option<&str>) -> *mut sys::nftnl_expr {
    // SAFETY: `x` is a live expression from alloc(); the chain's CString outlives the call, which copies it.
    unsafe {
        let x = alloc("immediate");
        sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_IMM_DREG as u16, libc::NFT_REG_VERDICT as u32);
        sys::nftnl_expr_set_u32(x, sys::NFTNL_EXPR_IMM_VERDICT as u16, code as u32);
        if let Some(c) = chain {
            let name = cstr(c);
            sys::nftnl_expr_set_str(x, sys::NFTNL_EXPR_IMM_CHAIN as u16, name.as_ptr());
        }
        x
    }
}
