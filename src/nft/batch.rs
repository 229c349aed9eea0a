//! One netlink batch in one contiguous buffer: BATCH_BEGIN, the messages, BATCH_END. The kernel applies it as
//! one transaction. Every message asks for an ACK and is remembered by sequence number, so a failure can be
//! traced back to the operation (and, inside a message of a thousand elements, to the element) that caused it.

use std::ffi::CString;

use nftnl_sys as sys;

use super::expr::{self, Expr};

/// Room reserved for each message while it is built: an attribute nest is at most 64 KiB, and element chunks
/// are sized to stay well below that.
const MSG_ROOM: usize = 1 << 17;
const NFPROTO_INET: u16 = libc::NFPROTO_INET as u16;
/// Elements per NEWSETELEM/DELSETELEM message: IPv6 elements with timeouts take about 56 bytes each.
pub const ELEMENTS_PER_MSG: usize = 1000;

/// What a message did, for error messages.
#[derive(Debug, Clone)]
pub enum What {
    Object(String),
    /// Elements of one set; `items` holds the caller's item number of each element in the message's order (a
    /// CIDR is two elements, start and end, with the same item).
    Elements {
        adding: bool,
        set: String,
        items: Vec<u32>,
    },
}

pub struct Msg {
    pub seq: u32,
    pub start: usize,
    pub what: What,
}

pub struct Batch {
    buf: Vec<u8>,
    next_seq: u32,
    pub msgs: Vec<Msg>,
    set_ids: u32,
}

/// One set element as the kernel stores it: a key, and for interval sets whether it closes an interval.
pub struct RawElem {
    pub key: [u8; 16],
    pub key_len: usize,
    pub interval_end: bool,
    pub timeout_ms: Option<u64>,
}

/// A set's definition.
pub struct SetDef<'a> {
    pub name: &'a str,
    /// nft datatype id, for `nft list` to print keys readably: 7 ipv4_addr, 8 ipv6_addr, 13 inet_service.
    pub key_type: u32,
    pub key_len: u32,
    pub flags: u32,
    pub timeout_ms: Option<u64>,
    pub size: Option<u32>,
}

/// A base chain's hook, or none for a regular chain.
pub struct Hook {
    pub hooknum: u32,
    pub priority: i32,
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// A new nftnl set naming `table` and `set` (family inet): the start of every set and element message.
/// The caller frees it with nftnl_set_free.
/// # Safety
/// The caller frees the returned set with nftnl_set_free.
unsafe fn set_named(table: &CString, set: &CString) -> *mut sys::nftnl_set {
    // SAFETY: the set is freshly allocated and only given pointers to CStrings that outlive the calls (nftnl copies
    // them).
    unsafe {
        let s = sys::nftnl_set_alloc();
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, set.as_ptr());
        sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, NFPROTO_INET as u32);
        s
    }
}

impl Batch {
    pub fn new(first_seq: u32) -> Batch {
        let mut b = Batch { buf: Vec::with_capacity(1 << 16), next_seq: first_seq, msgs: Vec::new(), set_ids: 0 };
        // SAFETY: `buf` is the start of the MSG_ROOM zeroed bytes raw() reserved; BATCH_BEGIN is a header and a
        // nfgenmsg.
        b.raw(|buf, seq| unsafe { sys::nftnl_batch_begin(buf, seq) });
        b
    }

    /// Sequence numbers of the messages that expect a reply.
    pub fn seqs(&self) -> Vec<u32> {
        self.msgs.iter().map(|m| m.seq).collect()
    }

    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Closes the batch (BATCH_END).
    pub fn finish(&mut self) {
        // SAFETY: as for BATCH_BEGIN: a header and a nfgenmsg written inside the room raw() reserved.
        self.raw(|buf, seq| unsafe { sys::nftnl_batch_end(buf, seq) });
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn message_bytes(&self, m: &Msg) -> &[u8] {
        let len = u32::from_ne_bytes(self.buf[m.start..m.start + 4].try_into().unwrap_or([0; 4])) as usize;
        &self.buf[m.start..(m.start + len).min(self.buf.len())]
    }

    /// Writes one message with `build` at the end of the buffer and returns its start offset.
    fn raw(&mut self, build: impl FnOnce(*mut libc::c_char, u32) -> *mut libc::nlmsghdr) -> (usize, u32) {
        let start = self.buf.len();
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.buf.resize(start + MSG_ROOM, 0);
        let nlh = build(self.buf[start..].as_mut_ptr().cast(), seq);
        // SAFETY: every `build` given to raw() (batch begin and end, push) returns the header nftnl wrote at the
        // start of the room resized above, so `nlh` is valid, aligned (messages start at multiples of 4) and not
        // freed.
        let len = unsafe { (*nlh).nlmsg_len } as usize;
        assert!(len <= MSG_ROOM, "netlink message of {len} bytes overflowed its room");
        self.buf.truncate(start + ((len + 3) & !3));
        (start, seq)
    }

    fn push(&mut self, kind: i32, flags: i32, what: What, payload: impl FnOnce(*mut libc::nlmsghdr)) {
        let flags = (flags | libc::NLM_F_ACK) as u16;
        // SAFETY: `buf` is the start of the MSG_ROOM bytes raw() reserved; the header is written there and `payload`
        // builds the body after it (each caller's SAFETY says how it stays inside).
        let (start, seq) = self.raw(|buf, seq| unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(buf, kind as u16, NFPROTO_INET, flags, seq);
            payload(nlh);
            nlh
        });
        self.msgs.push(Msg { seq, start, what });
    }

    pub fn add_table(&mut self, table: &str) {
        self.table_msg(libc::NFT_MSG_NEWTABLE, libc::NLM_F_CREATE, format!("create table {table}"), table);
    }

    pub fn delete_table(&mut self, table: &str) {
        self.table_msg(libc::NFT_MSG_DELTABLE, 0, format!("delete table {table}"), table);
    }

    fn table_msg(&mut self, kind: i32, flags: i32, what: String, table: &str) {
        let name = cstr(table);
        // SAFETY: `nlh` is the header nftnl_nlmsg_build_hdr just wrote into this message's room (MSG_ROOM bytes, far
        // more than one message takes); the nftnl object is allocated, given pointers to CStrings that outlive the
        // call, serialised into that room and freed here, once.
        self.push(kind, flags, What::Object(what), |nlh| unsafe {
            let t = sys::nftnl_table_alloc();
            sys::nftnl_table_set_str(t, sys::NFTNL_TABLE_NAME as u16, name.as_ptr());
            sys::nftnl_table_set_u32(t, sys::NFTNL_TABLE_FAMILY as u16, NFPROTO_INET as u32);
            sys::nftnl_table_nlmsg_build_payload(nlh, t);
            sys::nftnl_table_free(t);
        });
    }

    /// A named counter object (`counter NAME { }`); an existing one is left as it is, its counts kept.
    pub fn add_counter(&mut self, table: &str, name: &str) {
        let (t, n) = (cstr(table), cstr(name));
        // SAFETY: as table_msg: the header's room is far larger than a counter object, the CStrings outlive the
        // call, and the nftnl object is serialised and freed here, once.
        self.push(
            libc::NFT_MSG_NEWOBJ,
            libc::NLM_F_CREATE,
            What::Object(format!("add counter {name}")),
            |nlh| unsafe {
                let o = sys::nftnl_obj_alloc();
                sys::nftnl_obj_set_str(o, sys::NFTNL_OBJ_TABLE as u16, t.as_ptr());
                sys::nftnl_obj_set_str(o, sys::NFTNL_OBJ_NAME as u16, n.as_ptr());
                sys::nftnl_obj_set_u32(o, sys::NFTNL_OBJ_FAMILY as u16, NFPROTO_INET as u32);
                sys::nftnl_obj_set_u32(o, sys::NFTNL_OBJ_TYPE as u16, super::expr::NFT_OBJECT_COUNTER);
                sys::nftnl_obj_nlmsg_build_payload(nlh, o);
                sys::nftnl_obj_free(o);
            },
        );
    }

    pub fn add_chain(&mut self, table: &str, chain: &str, hook: Option<&Hook>) {
        let (t, c, filter) = (cstr(table), cstr(chain), cstr("filter"));
        self.push(
            libc::NFT_MSG_NEWCHAIN,
            libc::NLM_F_CREATE,
            What::Object(format!("create chain {chain}")),
            // SAFETY: `nlh` is the header nftnl_nlmsg_build_hdr just wrote into this message's room (MSG_ROOM bytes,
            // far more than one message takes); the nftnl object is allocated, given pointers to CStrings that
            // outlive the call, serialised into that room and freed here, once.
            |nlh| unsafe {
                let ch = sys::nftnl_chain_alloc();
                sys::nftnl_chain_set_str(ch, sys::NFTNL_CHAIN_TABLE as u16, t.as_ptr());
                sys::nftnl_chain_set_str(ch, sys::NFTNL_CHAIN_NAME as u16, c.as_ptr());
                sys::nftnl_chain_set_u32(ch, sys::NFTNL_CHAIN_FAMILY as u16, NFPROTO_INET as u32);
                if let Some(h) = hook {
                    sys::nftnl_chain_set_u32(ch, sys::NFTNL_CHAIN_HOOKNUM as u16, h.hooknum);
                    sys::nftnl_chain_set_s32(ch, sys::NFTNL_CHAIN_PRIO as u16, h.priority);
                    sys::nftnl_chain_set_str(ch, sys::NFTNL_CHAIN_TYPE as u16, filter.as_ptr());
                    sys::nftnl_chain_set_u32(ch, sys::NFTNL_CHAIN_POLICY as u16, libc::NF_ACCEPT as u32);
                }
                sys::nftnl_chain_nlmsg_build_payload(nlh, ch);
                sys::nftnl_chain_free(ch);
            },
        );
    }

    /// Deletes a chain (it must hold no rules and be referenced by none).
    pub fn delete_chain(&mut self, table: &str, chain: &str) {
        let (t, c) = (cstr(table), cstr(chain));
        // SAFETY: `nlh` is the header nftnl_nlmsg_build_hdr just wrote into this message's room (MSG_ROOM bytes, far
        // more than one message takes); the nftnl object is allocated, given pointers to CStrings that outlive the
        // call, serialised into that room and freed here, once.
        self.push(libc::NFT_MSG_DELCHAIN, 0, What::Object(format!("delete chain {chain}")), |nlh| unsafe {
            let ch = sys::nftnl_chain_alloc();
            sys::nftnl_chain_set_str(ch, sys::NFTNL_CHAIN_TABLE as u16, t.as_ptr());
            sys::nftnl_chain_set_str(ch, sys::NFTNL_CHAIN_NAME as u16, c.as_ptr());
            sys::nftnl_chain_set_u32(ch, sys::NFTNL_CHAIN_FAMILY as u16, NFPROTO_INET as u32);
            sys::nftnl_chain_nlmsg_build_payload(nlh, ch);
            sys::nftnl_chain_free(ch);
        });
    }

    /// Removes every rule of a chain (nft's `flush chain`).
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        let (t, c) = (cstr(table), cstr(chain));
        // SAFETY: `nlh` is the header nftnl_nlmsg_build_hdr just wrote into this message's room (MSG_ROOM bytes, far
        // more than one message takes); the nftnl object is allocated, given pointers to CStrings that outlive the
        // call, serialised into that room and freed here, once.
        self.push(libc::NFT_MSG_DELRULE, 0, What::Object(format!("flush chain {chain}")), |nlh| unsafe {
            let r = sys::nftnl_rule_alloc();
            sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, t.as_ptr());
            sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_CHAIN as u16, c.as_ptr());
            sys::nftnl_rule_set_u32(r, sys::NFTNL_RULE_FAMILY as u16, NFPROTO_INET as u32);
            sys::nftnl_rule_nlmsg_build_payload(nlh, r);
            sys::nftnl_rule_free(r);
        });
    }

    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr], text: &str) {
        let (t, c) = (cstr(table), cstr(chain));
        let what = What::Object(format!("add rule to {chain}: {text}"));
        // SAFETY: `nlh` is the header nftnl_nlmsg_build_hdr just wrote into this message's room (MSG_ROOM bytes, far
        // more than one message takes); the nftnl object is allocated, given pointers to CStrings that outlive the
        // call, serialised into that room and freed here, once. expr::build hands every expression it allocates to
        // the rule, which frees them with it.
        self.push(libc::NFT_MSG_NEWRULE, libc::NLM_F_CREATE | libc::NLM_F_APPEND, what, |nlh| unsafe {
            let r = sys::nftnl_rule_alloc();
            sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, t.as_ptr());
            sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_CHAIN as u16, c.as_ptr());
            sys::nftnl_rule_set_u32(r, sys::NFTNL_RULE_FAMILY as u16, NFPROTO_INET as u32);
            for e in exprs {
                expr::build(e, &mut |x| sys::nftnl_rule_add_expr(r, x));
            }
            sys::nftnl_rule_nlmsg_build_payload(nlh, r);
            sys::nftnl_rule_free(r);
        });
    }

    pub fn add_set(&mut self, table: &str, def: &SetDef) {
        self.set_ids += 1;
        let id = self.set_ids;
        let (t, n) = (cstr(table), cstr(def.name));
        self.push(
            libc::NFT_MSG_NEWSET,
            libc::NLM_F_CREATE,
            What::Object(format!("create set {}", def.name)),
            // SAFETY: `nlh` is the header nftnl_nlmsg_build_hdr just wrote into this message's room (MSG_ROOM bytes,
            // far more than one message takes); the nftnl object is allocated, given pointers to CStrings that
            // outlive the call, serialised into that room and freed here, once.
            |nlh| unsafe {
                let s = set_named(&t, &n);
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, def.flags);
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, def.key_type);
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, def.key_len);
                if let Some(ms) = def.timeout_ms {
                    sys::nftnl_set_set_u64(s, sys::NFTNL_SET_TIMEOUT as u16, ms);
                }
                if let Some(size) = def.size {
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DESC_SIZE as u16, size);
                }
                sys::nftnl_set_nlmsg_build_payload(nlh, s);
                sys::nftnl_set_free(s);
            },
        );
    }

    /// Adds (with NLM_F_EXCL: an element already present is an error, so a stale view of the kernel is caught,
    /// not papered over) or deletes elements of one set, chunked into messages of ELEMENTS_PER_MSG.
    pub fn elements(&mut self, table: &str, set: &str, adding: bool, elems: &[(RawElem, u32)]) {
        for chunk in elems.chunks(ELEMENTS_PER_MSG) {
            let (t, n) = (cstr(table), cstr(set));
            let items = chunk.iter().map(|(_, item)| *item).collect();
            let what = What::Elements { adding, set: set.to_string(), items };
            let (kind, flags) = if adding {
                (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE | libc::NLM_F_EXCL)
            } else {
                (libc::NFT_MSG_DELSETELEM, 0)
            };
            // SAFETY: `nlh` is the header nftnl_nlmsg_build_hdr just wrote into this message's room (MSG_ROOM bytes,
            // far more than one message takes); the nftnl object is allocated, given pointers to CStrings that
            // outlive the call, serialised into that room and freed here, once. Each element belongs to the set once
            // added; ELEMENTS_PER_MSG keeps a chunk well inside the room.
            self.push(kind, flags, what, |nlh| unsafe {
                let s = set_named(&t, &n);
                for (el, _) in chunk {
                    let e = sys::nftnl_set_elem_alloc();
                    sys::nftnl_set_elem_set(
                        e,
                        sys::NFTNL_SET_ELEM_KEY as u16,
                        el.key.as_ptr().cast(),
                        el.key_len as u32,
                    );
                    if el.interval_end {
                        sys::nftnl_set_elem_set_u32(
                            e,
                            sys::NFTNL_SET_ELEM_FLAGS as u16,
                            libc::NFT_SET_ELEM_INTERVAL_END as u32,
                        );
                    }
                    if let Some(ms) = el.timeout_ms {
                        sys::nftnl_set_elem_set_u64(e, sys::NFTNL_SET_ELEM_TIMEOUT as u16, ms);
                    }
                    sys::nftnl_set_elem_add(s, e);
                }
                sys::nftnl_set_elems_nlmsg_build_payload(nlh, s);
                sys::nftnl_set_free(s);
            });
        }
    }

    /// Empties a set (DELSETELEM without an element list).
    pub fn flush_set(&mut self, table: &str, set: &str) {
        let (t, n) = (cstr(table), cstr(set));
        // SAFETY: `nlh` is the header nftnl_nlmsg_build_hdr just wrote into this message's room (MSG_ROOM bytes, far
        // more than one message takes); the nftnl object is allocated, given pointers to CStrings that outlive the
        // call, serialised into that room and freed here, once.
        self.push(libc::NFT_MSG_DELSETELEM, 0, What::Object(format!("flush set {set}")), |nlh| unsafe {
            let s = set_named(&t, &n);
            sys::nftnl_set_elems_nlmsg_build_payload(nlh, s);
            sys::nftnl_set_free(s);
        });
    }
}

/// A get or dump request, built into a buffer of its own (requests are small: a table and a name or two).
fn request(kind: i32, flags: i32, seq: u32, payload: impl FnOnce(*mut libc::nlmsghdr)) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: the header is built at the start of a zeroed 4 KiB buffer that outlives the block, `payload` fills a
    // small body (see each caller), and nlmsg_len is read back from the header just written.
    let len = unsafe {
        let nlh = sys::nftnl_nlmsg_build_hdr(buf.as_mut_ptr().cast(), kind as u16, NFPROTO_INET, flags as u16, seq);
        payload(nlh);
        (*nlh).nlmsg_len as usize
    };
    buf.truncate(len);
    buf
}

/// A dump request for the named counters of a table.
pub fn get_counters_request(table: &str, seq: u32) -> Vec<u8> {
    let t = cstr(table);
    // SAFETY: `nlh` is the header of request()'s 4 KiB buffer, far more than a table name takes; the nftnl object
    // gets a pointer to a CString that outlives the call, is serialised and freed here, once.
    request(libc::NFT_MSG_GETOBJ, libc::NLM_F_DUMP | libc::NLM_F_ACK, seq, |nlh| unsafe {
        let o = sys::nftnl_obj_alloc();
        sys::nftnl_obj_set_str(o, sys::NFTNL_OBJ_TABLE as u16, t.as_ptr());
        sys::nftnl_obj_set_u32(o, sys::NFTNL_OBJ_TYPE as u16, super::expr::NFT_OBJECT_COUNTER);
        sys::nftnl_obj_nlmsg_build_payload(nlh, o);
        sys::nftnl_obj_free(o);
    })
}

/// A named counter of a NEWOBJ message: its table, name, packets and bytes. None for another object type.
pub fn parse_counter(msg: &[u8]) -> Option<(String, String, u64, u64)> {
    // SAFETY: `msg` is one whole netlink message (Messages checked nlmsg_len against the datagram) that outlives the
    // block; the nftnl object is allocated here, read only through nftnl's getters while alive, strings copied
    // out before it is freed, once (every return path frees it).
    unsafe {
        let o = sys::nftnl_obj_alloc();
        if sys::nftnl_obj_nlmsg_parse(msg.as_ptr().cast(), o) < 0
            || sys::nftnl_obj_get_u32(o, sys::NFTNL_OBJ_TYPE as u16) != super::expr::NFT_OBJECT_COUNTER
        {
            sys::nftnl_obj_free(o);
            return None;
        }
        let text = |attr: u32| {
            let p = sys::nftnl_obj_get_str(o, attr as u16);
            if p.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let out = (
            text(sys::NFTNL_OBJ_TABLE),
            text(sys::NFTNL_OBJ_NAME),
            sys::nftnl_obj_get_u64(o, sys::NFTNL_OBJ_CTR_PKTS as u16),
            sys::nftnl_obj_get_u64(o, sys::NFTNL_OBJ_CTR_BYTES as u16),
        );
        sys::nftnl_obj_free(o);
        Some(out)
    }
}

/// A dump request for every chain (filtered by table on our side).
pub fn get_chains_request(seq: u32) -> Vec<u8> {
    request(libc::NFT_MSG_GETCHAIN, libc::NLM_F_DUMP | libc::NLM_F_ACK, seq, |_| {})
}

/// The (table, name) of a NEWCHAIN message of the inet family.
pub fn parse_chain(msg: &[u8]) -> Option<(String, String)> {
    // SAFETY: `msg` is one whole netlink message (Messages checked nlmsg_len against the datagram) that outlives the
    // block; the nftnl object is allocated here, read only through nftnl's getters while alive, strings and data
    // copied out before it is freed, once (every return path frees it).
    unsafe {
        let ch = sys::nftnl_chain_alloc();
        let out = if sys::nftnl_chain_nlmsg_parse(msg.as_ptr().cast(), ch) < 0
            || sys::nftnl_chain_get_u32(ch, sys::NFTNL_CHAIN_FAMILY as u16) != NFPROTO_INET as u32
        {
            None
        } else {
            let get = |attr: u32| {
                let p = sys::nftnl_chain_get_str(ch, attr as u16);
                (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
            };
            get(sys::NFTNL_CHAIN_TABLE).zip(get(sys::NFTNL_CHAIN_NAME))
        };
        sys::nftnl_chain_free(ch);
        out
    }
}

/// A dump request for the elements of one set.
pub fn get_elements_request(table: &str, set: &str, seq: u32) -> Vec<u8> {
    let (t, n) = (cstr(table), cstr(set));
    // SAFETY: `nlh` is the header of request()'s 4 KiB buffer, far more than a table and a name or two take; the
    // nftnl object gets pointers to CStrings that outlive the call, is serialised and freed here, once.
    request(libc::NFT_MSG_GETSETELEM, libc::NLM_F_DUMP | libc::NLM_F_ACK, seq, |nlh| unsafe {
        let s = set_named(&t, &n);
        sys::nftnl_set_elems_nlmsg_build_payload(nlh, s);
        sys::nftnl_set_free(s);
    })
}

/// A request for one set's definition.
pub fn get_set_request(table: &str, set: &str, seq: u32) -> Vec<u8> {
    let (t, n) = (cstr(table), cstr(set));
    // SAFETY: `nlh` is the header of request()'s 4 KiB buffer, far more than a table and a name or two take; the
    // nftnl object gets pointers to CStrings that outlive the call, is serialised and freed here, once.
    request(libc::NFT_MSG_GETSET, libc::NLM_F_ACK, seq, |nlh| unsafe {
        let s = set_named(&t, &n);
        sys::nftnl_set_nlmsg_build_payload(nlh, s);
        sys::nftnl_set_free(s);
    })
}

/// The flags (NFT_SET_*) of a NEWSET message.
pub fn parse_set_flags(msg: &[u8]) -> Option<u32> {
    // SAFETY: `msg` is one whole netlink message (Messages checked nlmsg_len against the datagram) that outlives the
    // block; the nftnl object is allocated here, read only through nftnl's getters while alive, strings and data
    // copied out before it is freed, once (every return path frees it).
    unsafe {
        let s = sys::nftnl_set_alloc();
        let flags = (sys::nftnl_set_nlmsg_parse(msg.as_ptr().cast(), s) >= 0
            && sys::nftnl_set_is_set(s, sys::NFTNL_SET_FLAGS as u16))
        .then(|| sys::nftnl_set_get_u32(s, sys::NFTNL_SET_FLAGS as u16));
        sys::nftnl_set_free(s);
        flags
    }
}

/// A dump request for the rules of one chain.
pub fn get_rules_request(table: &str, chain: &str, seq: u32) -> Vec<u8> {
    let (t, c) = (cstr(table), cstr(chain));
    // SAFETY: `nlh` is the header of request()'s 4 KiB buffer, far more than a table and a name or two take; the
    // nftnl object gets pointers to CStrings that outlive the call, is serialised and freed here, once.
    request(libc::NFT_MSG_GETRULE, libc::NLM_F_DUMP | libc::NLM_F_ACK, seq, |nlh| unsafe {
        let r = sys::nftnl_rule_alloc();
        sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, t.as_ptr());
        sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_CHAIN as u16, c.as_ptr());
        sys::nftnl_rule_nlmsg_build_payload(nlh, r);
        sys::nftnl_rule_free(r);
    })
}

/// What a rule of a limit chain counted: the port its `tcp dport` compares with, and its counter's packets.
/// None for a rule without both.
pub fn parse_rule_port_counter(msg: &[u8]) -> Option<(u16, u64)> {
    match parse_rule_counter(msg)? {
        (Some(port), packets, _) => Some((port, packets)),
        _ => None,
    }
}

/// A rule's counter (packets, bytes), with its `tcp dport == PORT` if it has one.
pub fn parse_rule_counter(msg: &[u8]) -> Option<(Option<u16>, u64, u64)> {
    // SAFETY: `msg` is one whole netlink message (Messages checked nlmsg_len against the datagram) that outlives the
    // block; the nftnl object is allocated here, read only through nftnl's getters while alive, strings and data
    // copied out before it is freed, once (every return path frees it). The CMP data pointer is valid for the `len`
    // nftnl reports, copied at once.
    unsafe {
        let r = sys::nftnl_rule_alloc();
        if sys::nftnl_rule_nlmsg_parse(msg.as_ptr().cast(), r) < 0 {
            sys::nftnl_rule_free(r);
            return None;
        }
        let it = sys::nftnl_expr_iter_create(r);
        let (mut port, mut packets, mut bytes) = (None, None, 0);
        let mut e = sys::nftnl_expr_iter_next(it);
        while !e.is_null() {
            let name = sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16);
            let name = if name.is_null() { "" } else { std::ffi::CStr::from_ptr(name).to_str().unwrap_or("") };
            match name {
                // The rule's only two-byte comparison is `tcp dport == PORT`.
                "cmp" => {
                    let mut len = 0u32;
                    let p = sys::nftnl_expr_get(e, sys::NFTNL_EXPR_CMP_DATA as u16, &mut len);
                    if !p.is_null() && len == 2 {
                        let b = std::slice::from_raw_parts(p.cast::<u8>(), 2);
                        port = Some(u16::from_be_bytes([b[0], b[1]]));
                    }
                }
                "counter" => {
                    packets = Some(sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_CTR_PACKETS as u16));
                    bytes = sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_CTR_BYTES as u16);
                }
                _ => {}
            }
            e = sys::nftnl_expr_iter_next(it);
        }
        sys::nftnl_expr_iter_destroy(it);
        sys::nftnl_rule_free(r);
        Some((port, packets?, bytes))
    }
}

/// One element read back from the kernel.
#[derive(Debug, Clone)]
pub struct DumpedElem {
    pub key: Vec<u8>,
    pub interval_end: bool,
    pub timeout_ms: Option<u64>,
    pub expires_ms: Option<u64>,
}

/// Parses one NEWSETELEM dump message into its elements.
pub fn parse_elements(msg: &[u8], out: &mut Vec<DumpedElem>) -> bool {
    // SAFETY: `msg` is one whole netlink message (Messages checked nlmsg_len against the datagram) that outlives the
    // block; the nftnl object is allocated here, read only through nftnl's getters while alive, strings and data
    // copied out before it is freed, once (every return path frees it). Element keys are valid for the `len` nftnl
    // reports and copied at once.
    unsafe {
        let s = sys::nftnl_set_alloc();
        if sys::nftnl_set_elems_nlmsg_parse(msg.as_ptr().cast(), s) < 0 {
            sys::nftnl_set_free(s);
            return false;
        }
        let it = sys::nftnl_set_elems_iter_create(s);
        let mut e = sys::nftnl_set_elems_iter_next(it);
        while !e.is_null() {
            let mut len = 0u32;
            let p = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY as u16, &mut len);
            let key = if p.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(p.cast::<u8>(), len as usize).to_vec()
            };
            let flags = if sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_FLAGS as u16) {
                sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16)
            } else {
                0
            };
            let get64 = |attr: u32| {
                sys::nftnl_set_elem_is_set(e, attr as u16).then(|| sys::nftnl_set_elem_get_u64(e, attr as u16))
            };
            out.push(DumpedElem {
                key,
                interval_end: flags & libc::NFT_SET_ELEM_INTERVAL_END as u32 != 0,
                timeout_ms: get64(sys::NFTNL_SET_ELEM_TIMEOUT),
                expires_ms: get64(sys::NFTNL_SET_ELEM_EXPIRATION),
            });
            e = sys::nftnl_set_elems_iter_next(it);
        }
        sys::nftnl_set_elems_iter_destroy(it);
        sys::nftnl_set_free(s);
    }
    true
}

/// Which element of an element message sits at `offset` (the extended ACK's pointer into the message).
pub fn element_at(msg: &[u8], offset: u32) -> Option<usize> {
    const NFGENMSG_LEN: usize = 4;
    const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    let mut pos = 16 + NFGENMSG_LEN;
    while pos + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[pos], msg[pos + 1]]) as usize;
        let kind = u16::from_ne_bytes([msg[pos + 2], msg[pos + 3]]) & 0x3fff;
        if len < 4 {
            return None;
        }
        if kind == NFTA_SET_ELEM_LIST_ELEMENTS {
            let mut inner = pos + 4;
            let end = (pos + len).min(msg.len());
            let mut index = 0;
            while inner + 4 <= end {
                let l = u16::from_ne_bytes([msg[inner], msg[inner + 1]]) as usize;
                if l < 4 {
                    return None;
                }
                if inner as u32 == offset {
                    return Some(index);
                }
                index += 1;
                inner += (l + 3) & !3;
            }
            return None;
        }
        pos += (len + 3) & !3;
    }
    None
}
