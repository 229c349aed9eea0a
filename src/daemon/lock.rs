//! One daemon per state: an exclusive lock on `<db>.lock`, holding the owner's pid so a second daemon can say
//! which process it would have fought with.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Held for the daemon's lifetime; the kernel releases the lock when the process ends, however it ends.
pub struct StateLock {
    _file: File,
}

pub fn acquire(db: &Path) -> Result<StateLock> {
    let path = PathBuf::from(format!("{}.lock", db.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create its directory", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("{}: cannot open the lock file", path.display()))?;
    if crate::os::lock::try_lock_exclusive(&file).is_err() {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        bail!(
            "another floodgate daemon (pid {}) already runs on {}; stop it first (lock: {})",
            pid.trim(),
            db.display(),
            path.display()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()?;
    Ok(StateLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_state_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.db");
        let first = acquire(&db).unwrap();
        let e = acquire(&db).err().unwrap().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        assert!(acquire(&db).is_ok(), "released with its holder");
    }
}
