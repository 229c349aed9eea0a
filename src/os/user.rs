//! Who floodgate runs as.

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}
