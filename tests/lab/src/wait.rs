//! Waiting for the kernel, a daemon or a server to get somewhere: every wait polls under a deadline.

use std::time::{Duration, Instant};

/// Whether `ok` holds within `timeout` (polled every 25 ms).
pub fn within(timeout: Duration, ok: impl FnMut() -> bool) -> bool {
    within_every(timeout, Duration::from_millis(25), ok)
}

/// Whether `ok` holds within `timeout`, polled every `every`: a slower poll for checks that cost a process
/// each (the CLI through a daemon's socket).
pub fn within_every(timeout: Duration, every: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
    true
}

/// Waits until `ok`, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
