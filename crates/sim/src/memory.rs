//! The process's own memory use, as the kernel reports it.

/// A `/proc/self/status` field in bytes (`"VmRSS:"`, `"VmHWM:"`), on Linux.
pub fn process_memory(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
