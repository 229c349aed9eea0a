//! A child process waited for with a deadline (hooks, mail commands, the mail servers' config tools, a
//! journalctl that closed its output): polled with a growing pause, so a quick command costs about a millisecond
//! and a slow one no busy loop. And a child killed together with its process group.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The child's exit status, or `Ok(None)` when it is still running at `deadline` (the caller kills it).
pub fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Kills a child started as the leader of its own process group (`process_group(0)`), and everything it
/// started in that group. The caller still reaps the child.
pub fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours. The child is not reaped yet, so its
        // pid (which is also its group id, see process_group(0)) cannot have been reused.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    // In case the group kill was refused; harmless if the child is already dead.
    let _ = child.kill();
}
