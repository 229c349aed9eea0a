//! A child process waited for with a deadline (hooks, mail commands, the mail servers' config tools): polled
//! with a growing pause, so a quick command costs about a millisecond and a slow one no busy loop.

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
