//! The name of the host this process runs on, for the ids it gives itself (heartbeat
//! instance, lease owner, prove consumer): one rule everywhere, so the same process is
//! recognisable in each.

/// The kernel's host name, else `$HOSTNAME`, else `/etc/hostname`, else `unknown`; spaces
/// become `_` (ids are written into space-separated values).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().replace(char::is_whitespace, "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_name_is_one_word() {
        let h = super::host_name();
        assert!(!h.is_empty() && !h.contains(char::is_whitespace), "{h:?}");
    }
}
