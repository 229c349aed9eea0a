//! Just enough of the client side of SMTP (EHLO, AUTH PLAIN, QUIT), IMAP (LOGIN) and POP3 (USER, PASS) to make
//! the lab's real servers log what a user or a password guesser causes, from a chosen source address. Blocking,
//! every step under a timeout; callers run them inside a namespace (`Netns::enter`).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long any one server reply may take. Dovecot answers a failed login at once (auth_failure_delay = 0).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long QUIT's answer is waited for (see smtp_auth_plain).
const QUIT_TIMEOUT: Duration = Duration::from_millis(500);

/// One SMTP reply: its code and its text (the lines joined).
#[derive(Debug, Clone)]
pub struct SmtpReply {
    pub code: u16,
    pub text: String,
}

/// Opens a TCP connection from `from` (an address of the calling thread's namespace) to `to`. A connect that
/// gets no answer within `timeout` is an error of kind TimedOut: that is how a dropped SYN looks from here.
pub fn connect(from: IpAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(from, 0).into()).map_err(|e| context(e, format!("bind {from}")))?;
    sock.connect_timeout(&to.into(), timeout).map_err(|e| context(e, format!("connect {from} -> {to}")))?;
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    Ok(stream)
}

/// Connects, reads the banner, says EHLO, tries `AUTH PLAIN` with `user` and `password`, says QUIT, and
/// returns the reply to AUTH (235 accepted, 535 refused). Any other failure is an error naming the step.
pub fn smtp_auth_plain(
    from: IpAddr,
    to: SocketAddr,
    user: &str,
    password: &str,
    connect_timeout: Duration,
) -> io::Result<SmtpReply> {
    let stream = connect(from, to, connect_timeout)?;
    let mut smtp = Smtp { reader: BufReader::new(stream.try_clone()?), writer: stream, peer: to };
    smtp.expect("banner", 220)?;
    smtp.send("EHLO client.example.net")?;
    let ehlo = smtp.expect("EHLO", 250)?;
    if !ehlo.text.lines().any(|l| l.to_ascii_uppercase().starts_with("AUTH")) {
        return Err(io::Error::other(format!("{to} offers no AUTH after EHLO: {}", ehlo.text)));
    }
    let token = base64(format!("\0{user}\0{password}").as_bytes());
    smtp.send(&format!("AUTH PLAIN {token}"))?;
    let auth = smtp.reply("AUTH PLAIN")?;
    // QUIT's answer does not matter, and may never come: a failure that completes a jail gets this very
    // address banned, and a ban drops every packet, the established connection's too. A short wait, then go.
    let _ = smtp.writer.set_read_timeout(Some(QUIT_TIMEOUT));
    let _ = smtp.send("QUIT").and_then(|_| smtp.reply("QUIT"));
    Ok(auth)
}

/// Connects, reads the banner (220) and says QUIT: a mail client reaching an MTA that still serves, without
/// needing AUTH (the lab's smtpd on 25 offers none). Returns the banner.
pub fn smtp_banner(from: IpAddr, to: SocketAddr, connect_timeout: Duration) -> io::Result<SmtpReply> {
    let stream = connect(from, to, connect_timeout)?;
    let mut smtp = Smtp { reader: BufReader::new(stream.try_clone()?), writer: stream, peer: to };
    let banner = smtp.expect("banner", 220)?;
    let _ = smtp.writer.set_read_timeout(Some(QUIT_TIMEOUT));
    let _ = smtp.send("QUIT").and_then(|_| smtp.reply("QUIT"));
    Ok(banner)
}

struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    peer: SocketAddr,
}

impl Smtp {
    fn send(&mut self, line: &str) -> io::Result<()> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| context(e, format!("send to {}", self.peer)))
    }

    /// One reply, continuation lines (`250-...`) included.
    fn reply(&mut self, step: &str) -> io::Result<SmtpReply> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n =
                self.reader.read_line(&mut line).map_err(|e| context(e, format!("{step} reply from {}", self.peer)))?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} closed the connection before its {step} reply (so far: {text:?})", self.peer),
                ));
            }
            let line = line.trim_end();
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let Some(code) = code else {
                return Err(io::Error::other(format!("{step} reply from {}: not SMTP: {line:?}", self.peer)));
            };
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(SmtpReply { code, text: text.join("\n") });
            }
        }
    }

    fn expect(&mut self, step: &str, code: u16) -> io::Result<SmtpReply> {
        let r = self.reply(step)?;
        if r.code != code {
            return Err(io::Error::other(format!(
                "{step}: {} answered {} {}, expected {code}",
                self.peer, r.code, r.text
            )));
        }
        Ok(r)
    }
}

/// Connects and reads the greeting, which must start with `ok` (`* OK` for IMAP, `+OK` for POP3); returns the
/// reading and the writing side.
fn greeted(
    from: IpAddr,
    to: SocketAddr,
    connect_timeout: Duration,
    protocol: &str,
    ok: &str,
) -> io::Result<(BufReader<TcpStream>, TcpStream)> {
    let stream = connect(from, to, connect_timeout)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let greeting = read_line(&mut reader, to, "greeting")?;
    if !greeting.starts_with(ok) {
        return Err(io::Error::other(format!("{to} {protocol} greeting: {greeting:?}")));
    }
    Ok((reader, stream))
}

/// `a1 LOGIN user password` after the greeting; returns the tagged answer (`a1 OK ...` or `a1 NO ...`), then
/// logs out.
pub fn imap_login(
    from: IpAddr,
    to: SocketAddr,
    user: &str,
    password: &str,
    connect_timeout: Duration,
) -> io::Result<String> {
    let (mut reader, mut writer) = greeted(from, to, connect_timeout, "IMAP", "* OK")?;
    writer.write_all(format!("a1 LOGIN {user} {password}\r\n").as_bytes())?;
    let answer = loop {
        let line = read_line(&mut reader, to, "LOGIN")?;
        if line.starts_with("a1 ") {
            break line;
        }
    };
    let _ = writer.write_all(b"a2 LOGOUT\r\n");
    Ok(answer)
}

/// USER and PASS after the greeting; returns the answer to PASS (`+OK ...` or `-ERR ...`), then quits.
pub fn pop3_login(
    from: IpAddr,
    to: SocketAddr,
    user: &str,
    password: &str,
    connect_timeout: Duration,
) -> io::Result<String> {
    let (mut reader, mut writer) = greeted(from, to, connect_timeout, "POP3", "+OK")?;
    writer.write_all(format!("USER {user}\r\n").as_bytes())?;
    let user_answer = read_line(&mut reader, to, "USER")?;
    if !user_answer.starts_with("+OK") {
        return Err(io::Error::other(format!("{to} refused USER: {user_answer:?}")));
    }
    writer.write_all(format!("PASS {password}\r\n").as_bytes())?;
    let answer = read_line(&mut reader, to, "PASS")?;
    let _ = writer.write_all(b"QUIT\r\n");
    Ok(answer)
}

fn read_line(reader: &mut BufReader<TcpStream>, peer: SocketAddr, step: &str) -> io::Result<String> {
    let mut line = String::new();
    let n = reader.read_line(&mut line).map_err(|e| context(e, format!("{step} from {peer}")))?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{peer} closed the connection before {step}"),
        ));
    }
    Ok(line.trim_end().to_string())
}

/// Keeps the error's kind (a TimedOut connect must stay one) and says what was being done.
fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Standard base64 with padding (RFC 4648), for AUTH PLAIN's initial response.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
