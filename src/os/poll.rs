//! Waiting for one descriptor to become readable, with a timeout: how the blocking sources sleep while still
//! noticing a stop within the timeout they pass (their stop poll period).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Waits up to `timeout` for `fd` to be readable. True when a read would not block: data, end of input, or an
/// error the read will report (POLLHUP, POLLERR). False on timeout or when a signal interrupted the wait.
pub fn wait_readable(fd: &impl AsRawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll(2) reads and writes exactly the one pollfd passed, which lives on our stack for the call. The
    // fd is borrowed from its owner for the call; a number that is not open only comes back as POLLNVAL.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    Ok(r > 0 && pfd.revents != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn readable_once_written_and_at_end_of_input() {
        let (mut a, b) = UnixStream::pair().unwrap();
        assert!(!wait_readable(&b, Duration::from_millis(10)).unwrap());
        a.write_all(b"x").unwrap();
        assert!(wait_readable(&b, Duration::from_millis(1000)).unwrap());
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(wait_readable(&b, Duration::ZERO).unwrap());
    }
}
