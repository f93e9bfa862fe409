//! Why the datapath could not do something, in kinds the agent acts on: "not permitted" and
//! "unsupported" mean "run without eBPF and say so" (condition `EbpfUnavailable`), a broken
//! object is a build defect, the rest are operational failures.
use std::error::Error as StdError;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// No CAP_BPF / CAP_NET_ADMIN (or CAP_SYS_ADMIN on older kernels), or BPF disabled.
    #[error("eBPF is not permitted for this process ({op}): {detail}")]
    NotPermitted { op: &'static str, detail: String },
    /// The kernel lacks BPF, a map or program type, or tc clsact.
    #[error("the kernel does not support what the eBPF datapath needs ({op}): {detail}")]
    Unsupported { op: &'static str, detail: String },
    /// The object does not parse, or the verifier rejects a program.
    #[error("the eBPF object is broken: {0}")]
    BrokenObject(String),
    #[error("no network interface named {0:?} (to carry the mesh traffic)")]
    NoSuchInterface(String),
    #[error("{op} failed: {detail}")]
    Kernel { op: &'static str, detail: String },
    #[error("invalid fault: {0}")]
    InvalidFault(String),
    /// Earliest-departure-time delay needs the fq qdisc, which holds packets until their
    /// skb->tstamp; without it the kernel would send them at once.
    #[error(
        "delay needs the fq qdisc as the interface's root qdisc (earliest departure time); \
         it is not enabled on this interface, so delay faults are refused"
    )]
    DelayUnsupported,
}

impl DatapathError {
    /// A one-word CamelCase reason, for the `EbpfUnavailable` condition and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            DatapathError::NotPermitted { .. } => "NotPermitted",
            DatapathError::Unsupported { .. } => "KernelUnsupported",
            DatapathError::BrokenObject(_) => "BrokenObject",
            DatapathError::NoSuchInterface(_) => "NoSuchInterface",
            DatapathError::Kernel { .. } => "KernelError",
            DatapathError::InvalidFault(_) => "InvalidFault",
            DatapathError::DelayUnsupported => "DelayUnsupported",
        }
    }

    /// Whether this host cannot run the datapath at all (as opposed to a failure worth
    /// retrying or fixing).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DatapathError::NotPermitted { .. } | DatapathError::Unsupported { .. }
        )
    }

    /// Sorts a kernel-facing failure by the errno at the bottom of its source chain.
    pub(crate) fn from_kernel(op: &'static str, error: &(dyn StdError + 'static)) -> Self {
        let detail = chain(error);
        match errno(error) {
            Some(libc::EPERM | libc::EACCES) => DatapathError::NotPermitted { op, detail },
            // 524 is the kernel's ENOTSUPP, which leaks to user space from BPF paths.
            Some(libc::ENOSYS | libc::EOPNOTSUPP | 524) => DatapathError::Unsupported { op, detail },
            _ => DatapathError::Kernel { op, detail },
        }
    }
}

/// The error and its sources, joined, so the one line an operator sees says everything.
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let part = next.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = next.source();
    }
    text
}

fn errno(error: &(dyn StdError + 'static)) -> Option<i32> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        if let Some(netlink) = error.downcast_ref::<aya::sys::NetlinkError>()
            && let Some(code) = netlink.raw_os_error()
        {
            return Some(code);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] io::Error);

    #[test]
    fn permission_errors_anywhere_in_the_chain_mean_not_permitted() {
        let error = Outer(io::Error::from_raw_os_error(libc::EPERM));
        let sorted = DatapathError::from_kernel("map create", &error);
        assert_eq!(sorted.reason(), "NotPermitted");
        assert!(sorted.is_unavailable());
        assert!(sorted.to_string().contains("outer"), "{sorted}");
    }

    #[test]
    fn missing_kernel_features_mean_unsupported() {
        let error = Outer(io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(
            DatapathError::from_kernel("bpf", &error).reason(),
            "KernelUnsupported"
        );
    }

    #[test]
    fn other_errnos_are_operational_failures_not_unavailability() {
        let error = Outer(io::Error::from_raw_os_error(libc::EBUSY));
        let sorted = DatapathError::from_kernel("attach", &error);
        assert_eq!(sorted.reason(), "KernelError");
        assert!(!sorted.is_unavailable());
    }
}
