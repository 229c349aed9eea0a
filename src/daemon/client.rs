//! The CLI's side of the control socket: one request line out, one response line back.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::control::{Request, Response};

/// Sends `req` to the daemon listening on `socket`. None when no daemon listens there (no socket, or a stale
/// one left by a daemon that died): the caller then acts directly.
pub fn send(socket: &Path, req: &Request) -> Result<Option<Response>> {
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("{}: permission denied: the daemon's control socket is root's (run as root)", socket.display())
        }
        Err(e) => return Err(e).with_context(|| format!("{}: cannot connect to the daemon", socket.display())),
    };
    // A 100k-element blocklist takes well under a minute; a daemon that does not answer in two is stuck.
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).with_context(|| format!("{}: sending to the daemon", socket.display()))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .with_context(|| format!("{}: reading the daemon's answer", socket.display()))?;
    if reply.is_empty() {
        bail!("{}: the daemon closed the connection without answering", socket.display());
    }
    let r: Response =
        serde_json::from_str(&reply).with_context(|| format!("{}: unreadable answer", socket.display()))?;
    Ok(Some(r))
}
