//! A synthetic mail log for the benchmarks: mostly normal Postfix and Dovecot traffic with ~10% abuse lines,
//! in the formats real servers print (see tests/samples). Deterministic: the same seed gives the same log.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*: fast and good enough to vary addresses and line choice.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// A value in 0..1.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn mail_log(lines: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(lines * 140);
    for i in 0..lines {
        let sec = i / 200;
        let ts = format!("Nov 21 {:02}:{:02}:{:02}", 8 + (sec / 3600) % 12, (sec / 60) % 60, sec % 60);
        let pid = 20000 + r.below(5000);
        let ip = format!("198.51.100.{}", r.below(254) + 1);
        let qid = format!("{:X}", r.next_u64() & 0x00FF_FFFF_FFFF);
        let line = if r.below(10) == 0 {
            match r.below(6) {
                0 => format!("{ts} mx postfix/smtpd[{pid}]: warning: unknown[{ip}]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=alice"),
                1 => format!("{ts} mx postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 <v@external.example>: Relay access denied; from=<s@example.net> to=<v@external.example> proto=ESMTP helo=<x>"),
                2 => format!("{ts} mx postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 550 5.1.1 <n{pid}@mx.example.test>: Recipient address rejected: User unknown in local recipient table; from=<p@example.net> to=<n{pid}@mx.example.test> proto=ESMTP helo=<h>"),
                3 => format!("{ts} mx postfix/smtpd[{pid}]: lost connection after AUTH from unknown[{ip}]"),
                4 => format!("{ts} mx dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<alice>, method=PLAIN, rip={ip}, lip=198.51.100.1, TLS, session=<gA1qVs9gu7TGM2QQ>"),
                _ => format!("{ts} mx postfix/smtpd[{pid}]: improper command pipelining after CONNECT from unknown[{ip}]: EHLO bot\\r\\n"),
            }
        } else {
            match r.below(12) {
                0 => format!("{ts} mx postfix/smtpd[{pid}]: connect from mail.example.org[{ip}]"),
                1 => format!("{ts} mx postfix/smtpd[{pid}]: disconnect from mail.example.org[{ip}] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7"),
                2 => format!("{ts} mx postfix/smtpd[{pid}]: {qid}: client=mail.example.org[{ip}]"),
                3 => format!("{ts} mx postfix/cleanup[{pid}]: {qid}: message-id=<20261121.{qid}@example.org>"),
                4 => format!("{ts} mx postfix/qmgr[{pid}]: {qid}: from=<news@example.org>, size=4{pid}, nrcpt=1 (queue active)"),
                5 => format!("{ts} mx postfix/local[{pid}]: {qid}: to=<bob@mx.example.test>, relay=local, delay=0.12, delays=0.05/0.01/0/0.06, dsn=2.0.0, status=sent (delivered to mailbox)"),
                6 => format!("{ts} mx postfix/qmgr[{pid}]: {qid}: removed"),
                7 => format!("{ts} mx postfix/smtpd[{pid}]: Anonymous TLS connection established from mail.example.org[{ip}]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"),
                8 => format!("{ts} mx dovecot: imap-login: Login: user=<bob>, method=PLAIN, rip={ip}, lip=198.51.100.1, mpid={pid}, TLS, session=<Xy{pid}>"),
                9 => format!("{ts} mx dovecot: imap(bob)<{pid}><Xy{pid}>: Logged out in=120 out=2345 deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0"),
                10 => format!("{ts} mx postfix/smtp[{pid}]: {qid}: to=<friend@example.net>, relay=mx.example.net[203.0.113.25]:25, delay=1.1, delays=0.1/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as ABC)"),
                _ => format!("{ts} mx postfix/anvil[{pid}]: statistics: max connection rate 3/60s for (smtp:{ip}) at Nov 21 08:00:00"),
            }
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}
