//! An exclusive advisory lock on an open file (flock(2)), held until the file is closed.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes the lock without waiting; `Err` with `WouldBlock` when another process holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: flock(2) takes an fd and flags and touches no memory of ours; the fd is owned by `file`, which
    // outlives the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
