//! In-pod capture plumbing shared by ztunnel and ambit-cni (DESIGN §3
//! "In-pod capture").
//!
//! - [`netns`]: network namespaces as fds, running code inside one (the
//!   only module with `unsafe`);
//! - [`socket`]: listeners and dial sockets created inside a pod's netns;
//! - [`rules`]: the redirect rules in a pod's netns (nftables, or iptables
//!   where nftables does not work);
//! - [`enroll`]: the CNI plugin ↔ ztunnel protocol (SEQPACKET, prost, fd
//!   passing).

pub mod enroll;
#[doc(hidden)]
pub mod fuzzing;
pub mod locate;
pub mod netns;
pub mod rules;
pub mod socket;
#[cfg(feature = "test-util")]
pub mod testing;

pub use netns::{NetNs, NetNsError, NetNsId};
pub use socket::ZTUNNEL_MARK;
