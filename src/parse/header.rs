//! The header of a log line: splits a line into its timestamp, host, program tag and message, for every header
//! shape floodgate reads: RFC 3164 (no year), RFC 3339 / ISO 8601 (rsyslog high precision, `journalctl -o
//! short-iso`, Exim's own log), RFC 5424, /dev/kmsg records, dmesg / conntrack `[seconds]` brackets, and bare
//! messages.

use chrono::{DateTime, Datelike, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// The time zone that headers without an offset (RFC 3164, ISO without offset) are read in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// The system's zone (TZ, /etc/localtime).
    Local,
    Named(chrono_tz::Tz),
    Fixed(FixedOffset),
}

impl Zone {
    /// `local`, an IANA name (`Asia/Tokyo`) or a fixed offset (`+09:00`, `UTC`).
    pub fn parse(text: &str) -> Result<Zone, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("local") {
            return Ok(Zone::Local);
        }
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset")));
        }
        if t.starts_with('+') || t.starts_with('-') {
            return parse_offset(t.as_bytes())
                .filter(|(_, used)| *used == t.len())
                .map(|(o, _)| Zone::Fixed(o))
                .ok_or_else(|| format!("`{t}` is not a UTC offset like +09:00"));
        }
        t.parse::<chrono_tz::Tz>()
            .map(Zone::Named)
            .map_err(|_| format!("unknown time zone `{t}` (use `local`, an IANA name like Asia/Tokyo, or +09:00)"))
    }

    fn to_utc(self, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
        // In an overlap take the earlier instant; a wall time inside a DST gap never happened, so read it an
        // hour later, as the clock showed it.
        self.earliest(naive).or_else(|| self.earliest(naive + Duration::hours(1)))
    }

    fn earliest(self, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
        fn utc<T: TimeZone>(r: LocalResult<DateTime<T>>) -> Option<DateTime<Utc>> {
            r.earliest().map(|t| t.with_timezone(&Utc))
        }
        match self {
            Zone::Local => utc(chrono::Local.from_local_datetime(&naive)),
            Zone::Named(tz) => utc(tz.from_local_datetime(&naive)),
            Zone::Fixed(o) => utc(o.from_local_datetime(&naive)),
        }
    }
}

/// What the header splitter needs besides the line.
#[derive(Debug, Clone, Copy)]
pub struct TimeContext {
    pub zone: Zone,
    /// "Now" for year inference: a year-less date more than a week after it belongs to the previous year.
    pub reference: DateTime<Utc>,
    /// When the kernel booted, for /dev/kmsg and dmesg times (microseconds / seconds since boot).
    pub boot_time: Option<DateTime<Utc>>,
}

impl TimeContext {
    pub fn system(zone: Zone) -> TimeContext {
        TimeContext { zone, reference: Utc::now(), boot_time: boot_time_from_proc() }
    }
}

/// `btime` from /proc/stat: the boot time in seconds since the epoch.
pub fn boot_time_from_proc() -> Option<DateTime<Utc>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: i64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    DateTime::from_timestamp(secs, 0)
}

/// A line split into its parts. `message` is what rules match against.
#[derive(Debug, Clone, PartialEq)]
pub struct Split<'a> {
    pub time: Option<DateTime<Utc>>,
    pub host: Option<&'a str>,
    /// The syslog tag without its `[pid]` (`postfix/submission/smtpd`), when the line has one.
    pub program: Option<&'a str>,
    /// The `[pid]` of the syslog tag: ties together the lines of one connection where the server forks per
    /// connection (sshd, Postfix smtpd).
    pub pid: Option<&'a str>,
    pub message: &'a str,
}

pub fn split<'a>(line: &'a str, ctx: &TimeContext) -> Split<'a> {
    let b = line.as_bytes();
    let bare = Split { time: None, host: None, program: None, pid: None, message: line };
    if b.is_empty() {
        return bare;
    }
    match b[0] {
        b'<' => split_pri(line, ctx).unwrap_or(bare),
        b'0'..=b'9' => {
            if let Some((t, used)) = parse_iso(b, ctx.zone) {
                return after_time(line, used, Some(t));
            }
            split_kmsg(line, ctx).unwrap_or(bare)
        }
        b'[' => split_bracket(line, ctx).unwrap_or(bare),
        b'A'..=b'Z' => match parse_3164(b, ctx) {
            Some((t, used)) => after_time(line, used, Some(t)),
            None => bare,
        },
        _ => bare,
    }
}

/// `<PRI>` then RFC 5424 (`1 TIMESTAMP ...`) or an RFC 3164 remainder.
fn split_pri<'a>(line: &'a str, ctx: &TimeContext) -> Option<Split<'a>> {
    let close = line[..line.len().min(5)].find('>')?;
    if close < 2 || !line[1..close].bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let rest = &line[close + 1..];
    if let Some(r5424) = rest.strip_prefix("1 ") {
        return split_5424(r5424, ctx);
    }
    Some(split(rest, ctx))
}

/// `TIMESTAMP HOST APP PROCID MSGID [SD] MSG`, `-` for nil values.
fn split_5424<'a>(rest: &'a str, ctx: &TimeContext) -> Option<Split<'a>> {
    let mut fields = [""; 5];
    let mut pos = 0usize;
    for f in fields.iter_mut() {
        let end = rest[pos..].find(' ').map(|i| pos + i).unwrap_or(rest.len());
        *f = &rest[pos..end];
        pos = (end + 1).min(rest.len());
    }
    let [ts, host, app, procid, _msgid] = fields;
    let time = if ts == "-" { None } else { Some(parse_iso(ts.as_bytes(), ctx.zone)?.0) };
    let mut msg = &rest[pos..];
    // Structured data: `-` or one or more `[...]` elements, where `\]` escapes a bracket.
    if let Some(m) = msg.strip_prefix('-') {
        msg = m.strip_prefix(' ').unwrap_or(m);
    } else {
        while msg.starts_with('[') {
            let b = msg.as_bytes();
            let mut i = 1;
            while i < b.len() && !(b[i] == b']' && b[i - 1] != b'\\') {
                i += 1;
            }
            msg = msg.get(i + 1..).unwrap_or("");
        }
        msg = msg.strip_prefix(' ').unwrap_or(msg);
    }
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    let nil = |s: &'a str| if s == "-" || s.is_empty() { None } else { Some(s) };
    Some(Split { time, host: nil(host), program: nil(app), pid: nil(procid), message: msg })
}

/// /dev/kmsg: `PRI,SEQ,USEC,FLAGS[,...];MESSAGE`.
fn split_kmsg<'a>(line: &'a str, ctx: &TimeContext) -> Option<Split<'a>> {
    let semi = line[..line.len().min(64)].find(';')?;
    let mut parts = line[..semi].split(',');
    let _pri: u32 = parts.next()?.parse().ok()?;
    let _seq: u64 = parts.next()?.parse().ok()?;
    let usec: i64 = parts.next()?.parse().ok()?;
    let time = ctx.boot_time.map(|b| b + Duration::microseconds(usec));
    Some(Split { time, host: None, program: Some("kernel"), pid: None, message: &line[semi + 1..] })
}

/// `[  154.110937] msg` (dmesg: seconds since boot) or `[1732212345.123456]\t msg` (conntrack -o timestamp:
/// seconds since the epoch). Values past 10^9 s (31 years of uptime) are taken as epoch times.
fn split_bracket<'a>(line: &'a str, ctx: &TimeContext) -> Option<Split<'a>> {
    let close = line[..line.len().min(32)].find(']')?;
    let num = line[1..close].trim();
    let (secs, frac) = num.split_once('.').unwrap_or((num, ""));
    if secs.is_empty() || !secs.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let s: i64 = secs.parse().ok()?;
    let nanos = frac_nanos(frac.as_bytes());
    let offset = Duration::seconds(s) + Duration::nanoseconds(nanos as i64);
    let time = if s >= 1_000_000_000 { DateTime::from_timestamp(s, nanos) } else { ctx.boot_time.map(|b| b + offset) };
    let message = line[close + 1..].trim_start();
    Some(Split { time, host: None, program: None, pid: None, message })
}

/// After the timestamp: ` host tag[pid]: msg`, ` tag: msg` (no host, e.g. Dovecot's log_path), or ` msg`.
fn after_time(line: &str, used: usize, time: Option<DateTime<Utc>>) -> Split<'_> {
    let rest = line[used..].trim_start_matches(' ');
    let (t1, after1) = token(rest);
    if let Some(tag) = t1.strip_suffix(':') {
        if let Some((name, pid)) = tag_with_pid(tag) {
            return Split { time, host: None, program: Some(name), pid: Some(pid), message: after1 };
        }
        // A bare `word:` without a host is Dovecot's `imap-login:`: part of the message its rules read.
        return Split { time, host: None, program: Some(tag), pid: None, message: rest };
    }
    let (t2, after2) = token(after1);
    if let Some(tag) = t2.strip_suffix(':') {
        if !t1.is_empty() && !tag.is_empty() {
            let (name, pid) = tag_with_pid(tag).map_or((tag, None), |(n, p)| (n, Some(p)));
            return Split { time, host: Some(t1), program: Some(name), pid, message: after2 };
        }
    }
    Split { time, host: None, program: None, pid: None, message: rest }
}

fn token(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], s[i + 1..].trim_start_matches(' ')),
        None => (s, ""),
    }
}

/// `name[123]` -> (`name`, `123`).
fn tag_with_pid(tag: &str) -> Option<(&str, &str)> {
    let open = tag.find('[')?;
    let pid = tag[open + 1..].strip_suffix(']')?;
    (!pid.is_empty() && pid.bytes().all(|c| c.is_ascii_digit())).then_some((&tag[..open], pid))
}

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// `Nov 21 20:37:31`, `Nov  1 20:37:31`, with an optional `.ffffff` fraction; the year is inferred.
fn parse_3164(b: &[u8], ctx: &TimeContext) -> Option<(DateTime<Utc>, usize)> {
    if b.len() < 15 || b[3] != b' ' {
        return None;
    }
    let month = MONTHS.iter().position(|m| &b[..3] == *m)? as u32 + 1;
    let day = match (b[4], b[5]) {
        (b' ', d) if d.is_ascii_digit() => u32::from(d - b'0'),
        (t, d) if t.is_ascii_digit() && d.is_ascii_digit() => u32::from(t - b'0') * 10 + u32::from(d - b'0'),
        _ => return None,
    };
    if b[6] != b' ' {
        return None;
    }
    let (h, m, s) = parse_hms(&b[7..15])?;
    let mut used = 15;
    let mut nanos = 0;
    if b.get(15) == Some(&b'.') {
        let n = b[16..].iter().take_while(|c| c.is_ascii_digit()).count();
        nanos = frac_nanos(&b[16..16 + n]);
        used = 16 + n;
    }
    let ref_year = ctx.reference.year();
    for year in [ref_year, ref_year - 1] {
        let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else { continue }; // Feb 29
        let naive = date.and_hms_nano_opt(h, m, s, nanos)?;
        let t = ctx.zone.to_utc(naive)?;
        if t <= ctx.reference + Duration::days(7) {
            return Some((t, used));
        }
    }
    None
}

fn parse_hms(b: &[u8]) -> Option<(u32, u32, u32)> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let h = two(b[0], b[1])?;
    let m = two(b[3], b[4])?;
    let s = two(b[6], b[7])?;
    (h < 24 && m < 60 && s < 61).then_some((h, m, s.min(59)))
}

fn two(a: u8, b: u8) -> Option<u32> {
    (a.is_ascii_digit() && b.is_ascii_digit()).then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
}

fn frac_nanos(digits: &[u8]) -> u32 {
    let mut n: u32 = 0;
    for i in 0..9 {
        n = n * 10 + digits.get(i).map(|d| u32::from(d - b'0')).unwrap_or(0);
    }
    n
}

/// `2026-11-21T09:00:00`, `T` or space, optional fraction, optional `Z` / `+09:00` / `+0900` / `+09`.
/// Without an offset the time is local (`zone`).
fn parse_iso(b: &[u8], zone: Zone) -> Option<(DateTime<Utc>, usize)> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let year = (two(b[0], b[1])? * 100 + two(b[2], b[3])?) as i32;
    let month = two(b[5], b[6])?;
    let day = two(b[8], b[9])?;
    let (h, m, s) = parse_hms(&b[11..19])?;
    let mut used = 19;
    let mut nanos = 0;
    if matches!(b.get(19), Some(b'.') | Some(b',')) {
        let n = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        nanos = frac_nanos(&b[20..20 + n]);
        used = 20 + n;
    }
    let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_nano_opt(h, m, s, nanos)?;
    let t = match b.get(used) {
        Some(b'Z') | Some(b'z') => {
            used += 1;
            Utc.from_utc_datetime(&naive)
        }
        Some(b'+') | Some(b'-') => {
            let (off, n) = parse_offset(&b[used..])?;
            used += n;
            off.from_local_datetime(&naive).single()?.with_timezone(&Utc)
        }
        _ => zone.to_utc(naive)?,
    };
    match b.get(used) {
        None | Some(b' ') | Some(b'\t') => Some((t, used)),
        _ => None,
    }
}

/// `+09:00`, `+0900` or `+09`; returns the offset and the bytes used.
fn parse_offset(b: &[u8]) -> Option<(FixedOffset, usize)> {
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let h = two(*b.get(1)?, *b.get(2)?)?;
    let (m, used) = match (b.get(3), b.get(4), b.get(5)) {
        (Some(b':'), Some(&x), Some(&y)) => (two(x, y)?, 6),
        (Some(&x), Some(&y), _) if x.is_ascii_digit() => (two(x, y)?, 5),
        _ => (0, 3),
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some((FixedOffset::east_opt(sign * (h * 3600 + m * 60) as i32)?, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TimeContext {
        TimeContext {
            zone: Zone::Fixed(FixedOffset::east_opt(9 * 3600).unwrap()),
            reference: Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap(),
            boot_time: Some(Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap()),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn rfc3164_with_host_and_tag() {
        let p = split("Nov 21 20:37:31 mx postfix/smtpd[20844]: connect from unknown[198.51.100.10]", &ctx());
        assert_eq!(p.time, Some(utc("2026-11-21T11:37:31Z")));
        assert_eq!(p.host, Some("mx"));
        assert_eq!(p.program, Some("postfix/smtpd"));
        assert_eq!(p.message, "connect from unknown[198.51.100.10]");
    }

    #[test]
    fn rfc3164_single_digit_day_and_fraction() {
        let p = split("Nov  1 20:38:22.227697 vm kernel: TCP: x", &ctx());
        assert_eq!(p.time, Some(utc("2026-11-01T11:38:22.227697Z")));
        assert_eq!(p.program, Some("kernel"));
        assert_eq!(p.message, "TCP: x");
    }

    #[test]
    fn rfc3164_year_rolls_back_for_dates_after_the_reference() {
        let p = split("Dec 31 23:59:59 mx sshd[1]: x", &ctx());
        assert_eq!(p.time, Some(utc("2025-12-31T14:59:59Z")));
        // A few days ahead (clock skew between hosts) stays in the reference year.
        let p = split("Nov 23 00:00:00 mx sshd[1]: x", &ctx());
        assert_eq!(p.time, Some(utc("2026-11-22T15:00:00Z")));
    }

    #[test]
    fn rfc3164_without_host_keeps_dovecot_tag_in_message() {
        let p = split("Nov 21 20:37:31 imap-login: Info: Disconnected", &ctx());
        assert_eq!(p.host, None);
        assert_eq!(p.program, Some("imap-login"));
        assert_eq!(p.message, "imap-login: Info: Disconnected");
    }

    #[test]
    fn iso_variants() {
        let c = ctx();
        let cases = [
            ("2026-11-21T09:00:00.123456+09:00 mx sshd[5]: m", "2026-11-21T00:00:00.123456Z"),
            ("2026-11-21T09:00:00+0900 mx sshd[5]: m", "2026-11-21T00:00:00Z"),
            ("2026-11-21T09:00:00Z mx sshd[5]: m", "2026-11-21T09:00:00Z"),
            ("2026-11-21T09:00:00.5-05:00 mx sshd[5]: m", "2026-11-21T14:00:00.5Z"),
            ("2026-11-21 09:00:00 mx sshd[5]: m", "2026-11-21T00:00:00Z"),
        ];
        for (line, want) in cases {
            let p = split(line, &c);
            assert_eq!(p.time, Some(utc(want)), "{line}");
            assert_eq!(p.program, Some("sshd"), "{line}");
            assert_eq!(p.message, "m", "{line}");
        }
    }

    #[test]
    fn exim_mainlog_has_no_host_or_tag() {
        let p =
            split("2026-11-21 09:00:00 H=(x) [198.51.100.20] F=<a@b> rejected RCPT <c@d>: relay not permitted", &ctx());
        assert_eq!(p.time, Some(utc("2026-11-21T00:00:00Z")));
        assert_eq!(p.host, None);
        assert!(p.message.starts_with("H=(x) [198.51.100.20]"));
    }

    #[test]
    fn rfc5424_with_and_without_structured_data() {
        let c = ctx();
        let p = split("<34>1 2026-11-21T09:00:00.003Z mx postfix/smtpd 20844 - - connect from x[198.51.100.1]", &c);
        assert_eq!(p.time, Some(utc("2026-11-21T09:00:00.003Z")));
        assert_eq!((p.host, p.program), (Some("mx"), Some("postfix/smtpd")));
        assert_eq!(p.message, "connect from x[198.51.100.1]");
        let p = split(r#"<165>1 2026-11-21T09:00:00Z mx sshd 1 ID47 [ex@1 a="b\]c"][y@2 k="v"] hello"#, &c);
        assert_eq!(p.message, "hello");
        let p = split("<13>Nov 21 20:37:31 mx sshd[2]: old style", &c);
        assert_eq!(p.time, Some(utc("2026-11-21T11:37:31Z")));
        assert_eq!(p.message, "old style");
    }

    #[test]
    fn kmsg_and_brackets() {
        let c = ctx();
        let p = split("6,341,154110937,-;TCP: request_sock_TCP: Possible SYN flooding", &c);
        assert_eq!(p.time, Some(utc("2026-11-21T00:02:34.110937Z")));
        assert_eq!(p.message, "TCP: request_sock_TCP: Possible SYN flooding");
        let p = split("[  154.110937] TCP: x", &c);
        assert_eq!(p.time, Some(utc("2026-11-21T00:02:34.110937Z")));
        assert_eq!(p.message, "TCP: x");
        let p = split("[1732212345.123456]\t    [NEW] tcp", &c);
        assert_eq!(p.time, Some(utc("2024-11-21T18:05:45.123456Z")));
        assert_eq!(p.message, "[NEW] tcp");
    }

    #[test]
    fn bare_and_odd_lines_are_messages() {
        let c = ctx();
        for line in ["", "hello world", "Nov", "Nov 99 99:99:99 x", "2026-13-40T00:00:00Z x", "[NEW] tcp", "<999999>x"]
        {
            let p = split(line, &c);
            assert_eq!(p.time, None, "{line}");
        }
    }

    #[test]
    fn zones_parse() {
        assert_eq!(Zone::parse("local").unwrap(), Zone::Local);
        assert!(matches!(Zone::parse("Asia/Tokyo").unwrap(), Zone::Named(_)));
        assert_eq!(Zone::parse("+09:00").unwrap(), Zone::Fixed(FixedOffset::east_opt(32400).unwrap()));
        assert!(Zone::parse("Mars/Base").unwrap_err().contains("Mars/Base"));
    }
}
