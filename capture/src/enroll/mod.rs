//! Enrollment: how the CNI plugin hands a pod's network namespace to ztunnel.
//!
//! Transport: a unix SOCK_SEQPACKET socket (default
//! [`DEFAULT_SOCKET_PATH`]). SEQPACKET keeps message boundaries, so one
//! protobuf message is one datagram — no framing — and it is connection
//! oriented, so either side notices when the other goes away.
//!
//! Exchange: the client sends a request ([`proto::Request`]); the server
//! answers it with one [`proto::Ack`] before reading the next. `AddPod`
//! carries the netns fd by SCM_RIGHTS. A malformed request gets an error Ack
//! that names the problem; the connection stays usable.
//!
//! Who decides whether a pod is ambient: ztunnel. It has the cluster view
//! (labels on the pod and its namespace, DESIGN §3 "Labels"); the CNI plugin
//! only knows the pod's name. So the plugin sends `AddPod` for every pod and
//! ztunnel answers ENROLLED or NOT_AMBIENT ([`proto::AckStatus`]).
//!
//! - client: [`EnrollClient`] (blocking, with timeouts; for the CNI binary);
//! - server: [`EnrollListener`] / [`EnrollConnection`] (tokio) and [`serve`].

use std::path::PathBuf;
use std::time::Duration;

use crate::netns::NetNs;

mod client;
pub mod proto;
pub(crate) mod server;
#[cfg(test)]
mod tests;
pub(crate) mod wire;

pub use client::EnrollClient;
pub use server::{
    connected_pair, serve, successor_path, successor_pending, EnrollConnection, EnrollListener,
    PendingEnrollListener,
};

/// Where ztunnel listens by default.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/ambit/enroll.sock";

/// Default time the client waits to connect, and for each answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The Kubernetes pod a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub uid: String,
    pub name: String,
    pub namespace: String,
}

/// A well-formed request as the server sees it.
#[derive(Debug)]
pub enum EnrollRequest {
    /// Enroll the pod whose network namespace is `netns`.
    Add {
        pod: PodRef,
        netns: NetNs,
    },
    Delete {
        uid: String,
    },
    SnapshotDone,
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// (AddPod) listeners are up in the pod; `capture_dns`: serve DNS there.
    Enrolled { capture_dns: bool },
    /// (AddPod) the pod is not ambient: the plugin leaves it alone.
    NotAmbient,
    /// (DeletePod, SnapshotDone) done.
    Done,
    /// The request failed; the text is shown to the operator as is, so say
    /// what failed and what to check.
    Error(String),
}

/// What became of an `AddPod` (client side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    Enrolled { capture_dns: bool },
    NotAmbient,
}

/// Client-side failures.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "cannot reach ztunnel's enrollment socket {path}: {source}; check that the ztunnel pod \
         on this node is running and that the socket is mounted at that path"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "ztunnel at {path} did not answer within {after:?} while {op}; it may be overloaded or \
         stuck: check its logs"
    )]
    Timeout {
        path: PathBuf,
        op: &'static str,
        after: Duration,
    },
    #[error("enrollment with ztunnel at {path} failed while {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("ztunnel at {path} closed the connection without answering; check ztunnel's logs")]
    Closed { path: PathBuf },
    #[error("ztunnel refused the request: {message}")]
    Refused { message: String },
    #[error(
        "ztunnel sent an invalid answer: {reason}; ambit-cni and ztunnel may be different \
         versions — upgrade them together"
    )]
    BadReply { reason: String },
}

impl EnrollError {
    /// ztunnel could not be reached or did not answer (as opposed to
    /// answering "no"): worth retrying later.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Timeout { .. } | Self::Io { .. } | Self::Closed { .. }
        )
    }
}
