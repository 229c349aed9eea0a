//! A process's memory as the kernel counts it, for the benches' figures.

/// VmRSS and VmHWM of this process, in KiB (0 when unreadable).
pub fn memory() -> (u64, u64) {
    of("self")
}

/// VmRSS and VmHWM of process `pid` (a server the bench started), in KiB (0 when unreadable).
pub fn memory_of(pid: i32) -> (u64, u64) {
    of(&pid.to_string())
}

fn of(proc_dir: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{proc_dir}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}
