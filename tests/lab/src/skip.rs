//! What a kernel suite does where it cannot run (no root, no nftables, no Postfix...): it skips, and says so
//! loudly, because a green `cargo test` with the kernel suites skipped proves nothing about them.
//!
//! - a banner on stderr, written past the test harness's output capture so that a plain `cargo test` shows it;
//! - one line per skipped test appended to the file named by `FLOODGATE_SKIP_LOG`, which `make test` clears
//!   before the run and counts after it (its summary line);
//! - under `CI=true` no skip at all: the test fails, naming what CI must install.

use std::io::Write;
use std::sync::Once;

/// The file (one line per skipped test: suite, test, what it needs; tab-separated) that `make test` counts.
pub const LOG_ENV: &str = "FLOODGATE_SKIP_LOG";

/// Whether this run is CI's, where a skip would be a silent hole.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `test` cannot run here: it `needs` something this machine lacks. Under `CI=true` this fails the test;
/// otherwise it records the skip, prints it past the harness's capture and returns false, for
/// `if !available(test) { return; }`.
pub fn skip(test: &str, needs: &str) -> bool {
    let suite = suite();
    record(&suite, test, needs);
    if ci() {
        panic!("{test}: needs {needs}; CI (CI=true) must provide it, a skipped kernel test there is a hole");
    }
    static BANNER: Once = Once::new();
    // io::stderr() directly, not eprintln!: libtest captures the macros' output of passing tests, and a skip
    // is a passing test.
    let mut err = std::io::stderr().lock();
    BANNER.call_once(|| {
        let rule = "=".repeat(100);
        let _ = writeln!(
            err,
            "\n{rule}\nSKIPPED: kernel tests of {suite} are NOT running here; their `ok` below proves nothing.\n\
             Run them as root with what they need installed (`make deps mail-deps`, then `make test` as root);\n\
             `make test` counts the skips at the end, and CI=true turns every skip into a failure.\n{rule}"
        );
    });
    let _ = writeln!(err, "SKIPPED {test}: needs {needs}");
    false
}

/// This test binary's suite: its file name without cargo's hash (`daemon_netns-0123abcd` -> `daemon_netns`).
fn suite() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe.as_ref().and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => stem,
    }
}

/// Appends the skip to `$FLOODGATE_SKIP_LOG` when it is set. One short write on an O_APPEND file: the lines
/// of tests skipping on several threads at once do not interleave.
fn record(suite: &str, test: &str, needs: &str) {
    let Some(path) = std::env::var_os(LOG_ENV) else { return };
    let line = format!("{suite}\t{test}\t{needs}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        let _ = writeln!(std::io::stderr(), "{}: {e} (the skip of {test} is not counted)", path.to_string_lossy());
    }
}
